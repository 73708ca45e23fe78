//! A VM's boot integrity (`properties.bootIntegrity`, like Azure's guest attestation status):
//! the guest's measured-boot event log and SHA-256 PCRs, as its host's agent lifted them from
//! the serial console (`strata_compute::image` docs: the tiny image's `/init` prints them),
//! appraised with `strata-attest`.
//!
//! ```text
//!  bootEvidence { eventLog (base64), pcrs { "n": hex } }
//!     │ base64 → EventLog::parse → replay (sha256 bank)
//!     ▼
//!  every PCR the log extends == the PCR the guest read?   no ─▶ unhealthy "PCR n …"
//!     ▼ yes
//!  PCR 7 SecureBoot variable event == 01, data bound?     no ─▶ unhealthy "… event #i"
//!     ▼ yes
//!  a boot application measured into PCR 4?                no ─▶ unhealthy
//!     ▼ yes
//!  healthy
//! ```
//!
//! VMs without a vTPM have nothing to appraise: `notApplicable`.
//!
//! **What this does not prove.** The PCR values come from the guest kernel's sysfs, not from a
//! TPM quote signed by a key the control plane trusts (the vTPM's EK/AK), so a guest kernel
//! that lies can claim any log and matching PCRs. `healthy` means: the guest kernel reported a
//! log that is internally consistent with the PCRs it reported, with secure boot on and the
//! boot application measured. Since secure boot admits only signed kernels, that kernel is one
//! the host's key signed; binding the values to the vTPM itself needs a quote (the agent can
//! create an AK in the VM's vTPM through swtpm before the guest starts, or the guest can
//! quote): a follow-up.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use strata_attest::eventlog::{EV_EFI_BOOT_SERVICES_APPLICATION, EventLog, replay};
use strata_attest::policy::EventClass;
use strata_attest::{Digest, HashAlg};

/// The longest base64 event log accepted (the tiny image's is about 20 KiB).
pub const MAX_EVENT_LOG_BASE64: usize = 256 * 1024;

/// What the agent sends in a status report (`bootEvidence`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BootEvidence {
    /// The TCG event log, base64.
    pub event_log: String,
    /// SHA-256 PCR index → hex value, as the guest read them.
    #[serde(default)]
    pub pcrs: BTreeMap<String, String>,
}

impl BootEvidence {
    /// A digest identifying this evidence (so the same evidence is appraised once).
    pub fn fingerprint(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(self.event_log.as_bytes());
        for (k, v) in &self.pcrs {
            ctx.update(b"\n");
            ctx.update(k.as_bytes());
            ctx.update(b"=");
            ctx.update(v.to_ascii_lowercase().as_bytes());
        }
        strata_attest::hex(ctx.finish().as_ref())
    }
}

/// The verdict: healthy or not, and why (a decision, never an error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appraisal {
    pub healthy: bool,
    pub reason: String,
}

impl Appraisal {
    fn unhealthy(reason: impl Into<String>) -> Self {
        Self {
            healthy: false,
            reason: reason.into(),
        }
    }

    pub fn status(&self) -> &'static str {
        if self.healthy { "healthy" } else { "unhealthy" }
    }

    /// `properties.bootIntegrity`.
    pub fn to_property(&self, checked_at: &str) -> Value {
        json!({ "status": self.status(), "reason": self.reason, "checkedAt": checked_at })
    }
}

/// `properties.bootIntegrity` of a VM without a vTPM.
pub fn not_applicable() -> Value {
    json!({ "status": "notApplicable", "reason": "the virtual machine has no vTPM" })
}

/// Appraises the evidence: exact replay of the SHA-256 bank against the reported PCRs, secure
/// boot on, a boot application measured.
pub fn appraise(evidence: &BootEvidence) -> Appraisal {
    if evidence.event_log.len() > MAX_EVENT_LOG_BASE64 {
        return Appraisal::unhealthy(format!(
            "the event log is larger than {MAX_EVENT_LOG_BASE64} bytes of base64"
        ));
    }
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&evidence.event_log) else {
        return Appraisal::unhealthy("the event log is not valid base64");
    };
    let log = match EventLog::parse(&bytes) {
        Ok(log) => log,
        Err(e) => return Appraisal::unhealthy(format!("the event log does not parse: {e}")),
    };
    let replayed = match replay(&log, HashAlg::Sha256) {
        Ok(r) => r,
        Err(e) => {
            return Appraisal::unhealthy(format!(
                "the event log does not replay in the sha256 bank: {e}"
            ));
        }
    };
    if replayed.is_empty() {
        return Appraisal::unhealthy("the event log measures nothing");
    }
    // 1. Exact replay: every PCR the log extends must hold what replaying it gives.
    let mut mismatched = Vec::new();
    for (pcr, value) in &replayed {
        let Some(reported) = evidence.pcrs.get(&pcr.to_string()) else {
            return Appraisal::unhealthy(format!(
                "the guest did not report PCR {pcr}, which the event log extends"
            ));
        };
        let Some(reported) = Digest::from_hex(reported.trim()) else {
            return Appraisal::unhealthy(format!("the guest's PCR {pcr} is not hex"));
        };
        if reported.0 != *value {
            mismatched.push((*pcr, reported, Digest(value.clone())));
        }
    }
    if let Some((pcr, reported, replay)) = mismatched.first() {
        let events = log.events.iter().filter(|e| e.pcr == *pcr).count();
        let others = match mismatched.len() {
            1 => String::new(),
            n => format!(" (and {} more PCRs)", n - 1),
        };
        return Appraisal::unhealthy(format!(
            "PCR {pcr} does not match the event log{others}: the vTPM holds {reported}, \
             replaying the log's {events} events for it gives {replay}"
        ));
    }
    // 2. Secure boot was on: the PCR 7 `SecureBoot` variable event says 01, and its data is
    //    what its digest covers (else the data could say anything).
    let secure_boot = log
        .numbered()
        .find(|(_, e)| EventClass::of(e) == Some(EventClass::SecureBoot));
    let Some((index, event)) = secure_boot else {
        return Appraisal::unhealthy(
            "the event log has no SecureBoot variable event in PCR 7: secure boot state unknown",
        );
    };
    if !event.data_is_bound(HashAlg::Sha256) {
        return Appraisal::unhealthy(format!(
            "event #{index} (PCR 7 SecureBoot variable): its data does not match its sha256 digest"
        ));
    }
    let value = match event.variable() {
        Some(Ok(v)) => v.data,
        _ => {
            return Appraisal::unhealthy(format!(
                "event #{index} (PCR 7 SecureBoot variable) does not parse"
            ));
        }
    };
    if value != [1] {
        return Appraisal::unhealthy(format!(
            "secure boot was off: event #{index} (PCR 7 SecureBoot variable) is {}",
            strata_attest::hex(&value)
        ));
    }
    // 3. The firmware measured the boot application it started.
    let apps: Vec<_> = log
        .numbered()
        .filter(|(_, e)| e.pcr == 4 && e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
        .collect();
    let Some((app_index, app)) = apps.first() else {
        return Appraisal::unhealthy("no boot application was measured into PCR 4");
    };
    let path = app
        .image_load()
        .and_then(Result::ok)
        .and_then(|l| l.file_path())
        .unwrap_or_else(|| "(loaded from memory)".to_owned());
    let pcrs: Vec<String> = replayed.keys().map(u32::to_string).collect();
    Appraisal {
        healthy: true,
        reason: format!(
            "the event log ({} events) replays exactly to PCRs {}; secure boot on; \
             boot application {path} measured (event #{app_index}); \
             reported by the guest kernel, not a signed vTPM quote",
            log.events.len(),
            pcrs.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real OVMF + swtpm capture (shim → GRUB → Linux, secure boot on) from strata-attest.
    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../strata-attest/tests/fixtures/ovmf-swtpm"
    );

    fn fixture_log() -> Vec<u8> {
        std::fs::read(format!("{FIXTURE}/binary_bios_measurements")).unwrap()
    }

    /// The guest's SHA-256 PCRs as the agent sends them.
    fn fixture_pcrs() -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(format!("{FIXTURE}/pcrs.json")).unwrap();
        let all: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_str(&text).unwrap();
        all["sha256"].clone()
    }

    fn evidence(log: &[u8], pcrs: BTreeMap<String, String>) -> BootEvidence {
        BootEvidence {
            event_log: base64::engine::general_purpose::STANDARD.encode(log),
            pcrs,
        }
    }

    /// The fixture with the sha256 digest of event `index` (numbered as in the fixture's README)
    /// changed.
    fn tampered(index: usize) -> Vec<u8> {
        let mut log = EventLog::parse(&fixture_log()).unwrap();
        let event = &mut log.events[index - 1];
        let (_, digest) = event
            .digests
            .iter_mut()
            .find(|(alg, _)| *alg == 0x000b)
            .unwrap();
        digest[0] ^= 0xff;
        log.encode()
    }

    fn check(evidence: BootEvidence, healthy: bool, reason_has: &str) {
        let a = appraise(&evidence);
        assert_eq!(a.healthy, healthy, "{}", a.reason);
        assert!(a.reason.contains(reason_has), "{}", a.reason);
    }

    #[test]
    fn the_real_log_is_healthy() {
        check(
            evidence(&fixture_log(), fixture_pcrs()),
            true,
            "replays exactly to PCRs 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14; secure boot on; \
             boot application \\EFI\\BOOT\\BOOTX64.EFI measured (event #24)",
        );
    }

    #[test]
    fn unhealthy_cases_name_the_pcr_or_event() {
        // One digest changed: the PCR it extends no longer matches the vTPM.
        check(
            evidence(&tampered(24), fixture_pcrs()),
            false,
            "PCR 4 does not match the event log: the vTPM holds c2125c97",
        );
        check(
            evidence(&tampered(4), fixture_pcrs()),
            false,
            "PCR 7 does not match the event log",
        );
        // A PCR the log extends that the guest did not report.
        let mut pcrs = fixture_pcrs();
        pcrs.remove("9");
        check(
            evidence(&fixture_log(), pcrs),
            false,
            "did not report PCR 9",
        );
        // The PCR values of another boot.
        let mut pcrs = fixture_pcrs();
        pcrs.insert("14".into(), "00".repeat(32));
        check(
            evidence(&fixture_log(), pcrs),
            false,
            "PCR 14 does not match",
        );
        check(
            BootEvidence {
                event_log: "not base64!".into(),
                pcrs: fixture_pcrs(),
            },
            false,
            "not valid base64",
        );
        check(
            evidence(&fixture_log()[..100], fixture_pcrs()),
            false,
            "does not parse",
        );
    }

    #[test]
    fn the_same_evidence_has_the_same_fingerprint() {
        let a = evidence(&fixture_log(), fixture_pcrs());
        let mut b = a.clone();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.pcrs.insert("14".into(), "00".repeat(32));
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
