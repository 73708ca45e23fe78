//! The placement gate: which host a new VM may land on. Pure; the compute layer calls
//! [`place`] with the hosts' current view and records the result.
//!
//! A host is a candidate only when it is Trusted, its last passing round is fresh and it is
//! not cordoned ([`super::state::placeable`]); among candidates the one with the fewest VMs
//! wins (ties by name, so placement is deterministic). A refusal lists every host with the
//! reason it was passed over.

use super::state::{HostState, placeable};

/// What the scheduler needs to know about a host.
#[derive(Clone, Debug)]
pub struct HostView {
    pub name: String,
    pub state: HostState,
    pub cordoned: bool,
    /// Seconds since the last passing attestation round (`i64::MAX` if none).
    pub last_pass_age_secs: i64,
    pub vms: usize,
    pub development: bool,
}

/// Why no host could take the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub hosts: Vec<(String, String)>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.hosts.is_empty() {
            return write!(f, "no host has joined the fabric");
        }
        write!(f, "no trusted host can take the VM:")?;
        for (h, why) in &self.hosts {
            write!(f, " {h}: {why};")?;
        }
        Ok(())
    }
}

fn why_not(h: &HostView, allow_development: bool) -> String {
    if h.development && !allow_development && h.state == HostState::Trusted {
        return "development host (software TPM); this control plane places only on hardware-trusted hosts".into();
    }
    match h.state {
        HostState::Trusted if h.cordoned => "cordoned".into(),
        HostState::Trusted => format!("attestation stale ({} s old)", h.last_pass_age_secs),
        s => format!("{} (only Trusted hosts receive VMs)", s.as_str()),
    }
}

/// Picks the host for one VM. Development (software-TPM) hosts are candidates only when
/// `allow_development` (the single-machine demo); their quotes prove nothing about hardware.
pub fn place(
    hosts: &[HostView],
    stale_after: i64,
    allow_development: bool,
) -> Result<String, Refusal> {
    hosts
        .iter()
        .filter(|h| {
            placeable(h.state, h.cordoned, h.last_pass_age_secs, stale_after)
                && (allow_development || !h.development)
        })
        .min_by(|a, b| a.vms.cmp(&b.vms).then_with(|| a.name.cmp(&b.name)))
        .map(|h| h.name.clone())
        .ok_or_else(|| Refusal {
            hosts: hosts
                .iter()
                .map(|h| (h.name.clone(), why_not(h, allow_development)))
                .collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, state: HostState, vms: usize) -> HostView {
        HostView {
            name: name.into(),
            state,
            cordoned: false,
            last_pass_age_secs: 1,
            vms,
            development: false,
        }
    }

    #[test]
    fn spreads_over_trusted_hosts_only() {
        let mut hosts = vec![
            host("a", HostState::Trusted, 0),
            host("b", HostState::Trusted, 0),
            host("c", HostState::Untrusted, 0),
            host("d", HostState::Registered, 0),
        ];
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..10 {
            let h = place(&hosts, 30, false).unwrap_or_else(|e| panic!("{e}"));
            *counts.entry(h.clone()).or_insert(0) += 1;
            if let Some(v) = hosts.iter_mut().find(|x| x.name == h) {
                v.vms += 1;
            }
        }
        assert_eq!(counts.get("a"), Some(&5));
        assert_eq!(counts.get("b"), Some(&5));
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn refusal_names_every_host_and_why() {
        let mut stale = host("s", HostState::Trusted, 0);
        stale.last_pass_age_secs = 99;
        let mut cordoned = host("k", HostState::Trusted, 0);
        cordoned.cordoned = true;
        let hosts = vec![stale, cordoned, host("q", HostState::Quarantined, 0)];
        let r = place(&hosts, 30, false)
            .err()
            .unwrap_or_else(|| panic!("placed"));
        let text = r.to_string();
        assert!(text.contains("s: attestation stale (99 s old)"), "{text}");
        assert!(text.contains("k: cordoned"), "{text}");
        assert!(text.contains("q: Quarantined"), "{text}");
        assert_eq!(
            place(&[], 30, false)
                .err()
                .map(|r| r.to_string())
                .as_deref(),
            Some("no host has joined the fabric")
        );
    }
}
