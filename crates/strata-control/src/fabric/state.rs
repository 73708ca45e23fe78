//! The host trust state machine. Pure: every transition is a function of the current state and
//! one event, and returns what the control plane must do about it.
//!
//! ```text
//!                 attestation passed
//!   Registered ───────────────────────────▶ Trusted ◀──┐ attestation passed
//!       │                                    │    │    │ (stays Trusted)
//!       │ attestation failed                 │    └────┘
//!       ▼                                    │
//!   Untrusted ◀──────────────────────────────┘ attestation failed, or no passing round
//!       │  ▲                                    within the staleness window
//!       │  └── failed / stale again (stays Untrusted)
//!       │
//!       │ attestation passed ──▶ Trusted (still cordoned if a failure cordoned it:
//!       │                        an operator uncordons after investigating)
//!       │
//!   any state ── a fresh, signed quote whose TPM clock ran backwards (state rollback), or an
//!                operator's `quarantine` ──▶ Quarantined
//!   (evidence not signed by the host's AK, or a replayed quote, changes nothing: it is not
//!    provably this round of this host)
//!
//!   Quarantined ── only an operator's `release` ──▶ Registered (must attest again)
//! ```
//!
//! Leaving Trusted for any reason revokes the host's client certificate and emits an
//! incident-grade event; a failed attestation also cordons the host. The scheduler places VMs
//! only on hosts that are Trusted, fresh and not cordoned ([`placeable`]).

use serde::{Deserialize, Serialize};

/// Where a host stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostState {
    /// Registered (its AK proved to live in its TPM) but not yet attested.
    Registered,
    /// The last attestation passed and is fresh.
    Trusted,
    /// The last attestation failed, or none passed within the staleness window.
    Untrusted,
    /// Evidence of an attack, or an operator's decision: nothing but `release` moves it.
    Quarantined,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Registered => "Registered",
            HostState::Trusted => "Trusted",
            HostState::Untrusted => "Untrusted",
            HostState::Quarantined => "Quarantined",
        }
    }

    pub fn parse(s: &str) -> Option<HostState> {
        [
            HostState::Registered,
            HostState::Trusted,
            HostState::Untrusted,
            HostState::Quarantined,
        ]
        .into_iter()
        .find(|h| h.as_str() == s)
    }
}

/// Something that happened to a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// An attestation round passed.
    Passed,
    /// An attestation round failed; `attack` when the failure itself is evidence of an attack
    /// (signature, nonce or clock), not just of a changed boot chain.
    Failed { reason: String, attack: bool },
    /// No passing round within the staleness window.
    Stale { last_pass_age_secs: i64 },
    /// An operator quarantined the host.
    Quarantine { reason: String },
    /// An operator released a quarantined host.
    Release,
}

/// What the control plane must do after a transition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Revoke the host's client certificate (it left Trusted).
    pub revoke_certificate: bool,
    /// Issue a fresh client certificate (it passed).
    pub issue_certificate: bool,
    /// Cordon the host (no new placements until an operator uncordons it).
    pub cordon: bool,
    /// Emit an incident-grade event with this reason.
    pub incident: Option<String>,
}

/// The result of applying an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: HostState,
    pub to: HostState,
    pub effects: Effects,
    /// Why the state is what it is now, for listings.
    pub reason: String,
}

/// Applies `event` to a host in `state`. Events that do not apply in a state (a passing round
/// on a quarantined host, a release of a host that is not quarantined) leave it where it is,
/// and the reason says why.
pub fn apply(state: HostState, event: &HostEvent) -> Transition {
    use HostState::*;
    let mut fx = Effects::default();
    let (to, reason) = match (state, event) {
        (Quarantined, HostEvent::Release) => (Registered, "released by an operator".to_owned()),
        (Quarantined, HostEvent::Passed) => (
            Quarantined,
            "quarantined: a passing round does not release a quarantined host".to_owned(),
        ),
        (Quarantined, HostEvent::Failed { reason, .. }) => (
            Quarantined,
            format!("quarantined; last round failed: {reason}"),
        ),
        (Quarantined, HostEvent::Stale { .. } | HostEvent::Quarantine { .. }) => {
            (Quarantined, "quarantined".to_owned())
        }
        (_, HostEvent::Release) => (state, format!("{}: not quarantined", state.as_str())),
        (_, HostEvent::Passed) => {
            fx.issue_certificate = true;
            (Trusted, "attestation passed".to_owned())
        }
        (_, HostEvent::Failed { reason, attack }) => {
            fx.cordon = true;
            fx.revoke_certificate = true;
            // One incident when trust is lost, not one per failing round of a host that is
            // already Untrusted (every round is still audited).
            if state != Untrusted || *attack {
                fx.incident = Some(format!("host attestation failed: {reason}"));
            }
            if *attack {
                (
                    Quarantined,
                    format!("attestation failed (attack): {reason}"),
                )
            } else {
                (Untrusted, format!("attestation failed: {reason}"))
            }
        }
        (Trusted, HostEvent::Stale { last_pass_age_secs }) => {
            fx.revoke_certificate = true;
            fx.incident = Some(format!(
                "host attestation is stale: no passing round for {last_pass_age_secs} s"
            ));
            (
                Untrusted,
                format!("stale: no passing round for {last_pass_age_secs} s"),
            )
        }
        (_, HostEvent::Stale { last_pass_age_secs }) => (
            state,
            format!(
                "{}: no passing round for {last_pass_age_secs} s",
                state.as_str()
            ),
        ),
        (_, HostEvent::Quarantine { reason }) => {
            fx.cordon = true;
            fx.revoke_certificate = true;
            fx.incident = Some(format!("host quarantined: {reason}"));
            (Quarantined, format!("quarantined by an operator: {reason}"))
        }
    };
    Transition {
        from: state,
        to,
        effects: fx,
        reason,
    }
}

/// Whether the scheduler may place a new VM on a host. Every condition is required.
pub fn placeable(
    state: HostState,
    cordoned: bool,
    last_pass_age_secs: i64,
    stale_after: i64,
) -> bool {
    state == HostState::Trusted && !cordoned && last_pass_age_secs <= stale_after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(attack: bool) -> HostEvent {
        HostEvent::Failed {
            reason: "PCR 4 mismatch".into(),
            attack,
        }
    }

    #[test]
    fn passing_trusts_and_issues_a_certificate() {
        for s in [
            HostState::Registered,
            HostState::Untrusted,
            HostState::Trusted,
        ] {
            let t = apply(s, &HostEvent::Passed);
            assert_eq!(t.to, HostState::Trusted);
            assert!(t.effects.issue_certificate);
            assert!(!t.effects.cordon);
        }
    }

    #[test]
    fn failing_cordons_revokes_and_raises_an_incident() {
        let t = apply(HostState::Trusted, &failed(false));
        assert_eq!(t.to, HostState::Untrusted);
        assert!(t.effects.cordon && t.effects.revoke_certificate);
        assert!(
            t.effects
                .incident
                .as_deref()
                .unwrap_or("")
                .contains("PCR 4")
        );
        let t = apply(HostState::Trusted, &failed(true));
        assert_eq!(t.to, HostState::Quarantined);
    }

    #[test]
    fn a_failing_host_raises_one_incident_not_one_per_round() {
        let first = apply(HostState::Trusted, &failed(false));
        assert!(first.effects.incident.is_some());
        let again = apply(first.to, &failed(false));
        assert_eq!(again.to, HostState::Untrusted);
        assert!(again.effects.incident.is_none());
        assert!(again.effects.cordon, "still cordoned");
    }

    #[test]
    fn quarantine_is_left_only_by_release() {
        let q = HostState::Quarantined;
        assert_eq!(apply(q, &HostEvent::Passed).to, q);
        assert!(!apply(q, &HostEvent::Passed).effects.issue_certificate);
        assert_eq!(apply(q, &failed(false)).to, q);
        assert_eq!(
            apply(
                q,
                &HostEvent::Stale {
                    last_pass_age_secs: 9
                }
            )
            .to,
            q
        );
        assert_eq!(apply(q, &HostEvent::Release).to, HostState::Registered);
        assert_eq!(
            apply(HostState::Trusted, &HostEvent::Release).to,
            HostState::Trusted
        );
    }

    #[test]
    fn staleness_only_demotes_a_trusted_host() {
        let t = apply(
            HostState::Trusted,
            &HostEvent::Stale {
                last_pass_age_secs: 31,
            },
        );
        assert_eq!(t.to, HostState::Untrusted);
        assert!(t.effects.revoke_certificate);
        assert!(!t.effects.cordon, "staleness alone does not cordon");
        let t = apply(
            HostState::Registered,
            &HostEvent::Stale {
                last_pass_age_secs: 31,
            },
        );
        assert_eq!(t.to, HostState::Registered);
        assert_eq!(t.effects, Effects::default());
    }

    #[test]
    fn placement_needs_trusted_fresh_and_uncordoned() {
        assert!(placeable(HostState::Trusted, false, 5, 30));
        assert!(!placeable(HostState::Trusted, true, 5, 30));
        assert!(!placeable(HostState::Trusted, false, 31, 30));
        for s in [
            HostState::Registered,
            HostState::Untrusted,
            HostState::Quarantined,
        ] {
            assert!(!placeable(s, false, 0, 30));
        }
    }
}
