//! The appraisal: one round of evidence from a host → a [`Verdict`].
//!
//! ```text
//! Evidence { attest, signature, pcrs, eventLog, agentMeasurements }
//!   1 policy           the reference policy is usable (ReferencePolicy::validate)      ─┐
//!   2 attestation key  restricted, signing, fixedTPM                                     │ any failure
//!   3 signature        TPMT_SIGNATURE parses and verifies over attest with the AK       ─┘ stops here
//!   ── from here on the bytes are known to come from the host's TPM ──
//!   4 magic, type      TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE (then the rest parses)   stops here
//!   5 nonce            extraData == this round's nonce (constant time)
//!   6 clock            safe; resetCount never decreases; within one reset/restart the
//!                      clock never goes backwards (vs the previous verified quote)
//!   7 pcr selection    only the policy bank, covering every policy PCR                  ─┐ stops
//!   8 pcr values       the values sent are exactly the quoted PCRs, and               ─┤ here
//!                      H(values in selection order) == pcrDigest                       ─┘
//!   9 event log        parses; its replay in the policy bank equals each quoted value;
//!                      a PCR that differs is named and its events are not appraised
//!  10 policy           events of the verified PCRs vs the reference policy (secure boot,
//!                      PK/KEK/db/dbx, firmware, boot applications, command line), and
//!                      the agent-reported binaries
//! ```
//!
//! One evidence can fail several checks; every failure is a [`Failure`] whose `Display`
//! names the check and, where there is one, the PCR, the event (`#n`, numbered from 1 after
//! the Spec ID header) and its type, and the expected and actual digests in hex. A
//! signature failure ends the appraisal: nothing in unsigned bytes is worth reporting.
//!
//! `Verdict::clock` is set only when the quote is proven fresh (signed, right nonce) and its
//! counters passed, so the caller can store it as the next round's `previous`. A host whose
//! counters went backwards therefore keeps failing until an operator intervenes.
//!
//! Every check runs on every call; nothing is remembered between calls. The hot path avoids
//! allocation instead: the log is parsed in place ([`LogView`]), only the quoted PCRs are
//! replayed, digests are compared as slices, and failure messages (hex, descriptions, lists)
//! are built only when a check fails.
//!
//! The quote's `qualifiedSigner` is not checked: it depends on the EK's name, which the
//! verifier does not take here; the AK signature already proves which key signed.

use std::collections::BTreeMap;

use crate::eventlog::{EV_EFI_VARIABLE_DRIVER_CONFIG, EventType, LogView, replay_selected};
use crate::hash::{Digest, HashAlg, constant_time_eq};
use crate::policy::{AllowList, EventClass, ReferencePolicy};
use crate::tpm::{
    Attest, ClockInfo, PcrSelection, Public, Signature, TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE,
    peek_header,
};

/// A binary the agent hashed and reports beside the quote (not extended into a PCR).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentMeasurement {
    /// What it is (`qemu-system-x86_64`, `strata-agent`).
    pub name: String,
    /// Lowercase hex SHA-256 of the file (anything else, such as `unreadable`, never matches).
    pub sha256: String,
}

/// What a host sends for one round. In JSON, byte fields are standard base64 and `pcrs` maps
/// the PCR index (as a string) to its base64 value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Evidence {
    /// Marshalled `TPMS_ATTEST` from TPM2_Quote.
    #[serde(with = "b64")]
    pub attest: Vec<u8>,
    /// Marshalled `TPMT_SIGNATURE` over `attest`.
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
    /// The quoted PCRs' values (policy bank), read alongside the quote.
    #[serde(with = "b64_map")]
    pub pcrs: BTreeMap<u32, Vec<u8>>,
    /// The TCG crypto-agile event log.
    #[serde(with = "b64")]
    pub event_log: Vec<u8>,
    /// Binaries the agent measured itself.
    #[serde(default)]
    pub agent_measurements: Vec<AgentMeasurement>,
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }
}

mod b64_map {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    pub fn serialize<S: serde::Serializer>(
        m: &BTreeMap<u32, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k.to_string(), STANDARD.encode(v))))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u32, Vec<u8>>, D::Error> {
        let m: BTreeMap<String, String> = serde::Deserialize::deserialize(d)?;
        m.into_iter()
            .map(|(k, v)| {
                let pcr = k.parse::<u32>().map_err(|_| {
                    serde::de::Error::custom(format!("pcr index {k:?} is not a number"))
                })?;
                let value = STANDARD.decode(v.as_bytes()).map_err(|e| {
                    serde::de::Error::custom(format!("pcr {pcr} value is not base64: {e}"))
                })?;
                Ok((pcr, value))
            })
            .collect()
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "[] (nothing is allowed)".to_owned();
    }
    let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(", "))
}

fn described(d: &Option<String>) -> String {
    d.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
}

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(
    tag = "check",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Failure {
    /// The reference policy cannot be appraised (see [`ReferencePolicy::validate`]).
    #[error("policy: {reason}")]
    Policy {
        /// Why.
        reason: String,
    },
    /// The attestation key is not one whose signature proves TPM origin.
    #[error("attestation key: {reason}")]
    AttestationKey {
        /// Why.
        reason: String,
    },
    /// The signature bytes are not a `TPMT_SIGNATURE`.
    #[error("signature: not a TPMT_SIGNATURE: {error}")]
    SignatureMalformed {
        /// The parse error.
        error: String,
    },
    /// The quote is not signed by the host's attestation key.
    #[error("signature: the quote is not signed by this host's attestation key: {reason}")]
    Signature {
        /// Why.
        reason: String,
    },
    /// `TPMS_ATTEST.magic` is not `TPM_GENERATED_VALUE`.
    #[error(
        "magic: TPMS_ATTEST starts with {found:#010x}, expected TPM_GENERATED_VALUE 0xff544347"
    )]
    Magic {
        /// The value found.
        found: u32,
    },
    /// Not a quote.
    #[error("type: the attestation is of type {found:#06x}, expected TPM_ST_ATTEST_QUOTE 0x8018")]
    AttestType {
        /// The type found.
        found: u16,
    },
    /// The signed attestation does not parse.
    #[error("attest: {error}")]
    AttestMalformed {
        /// The parse error.
        error: String,
    },
    /// The quote answers another nonce (a replay, or a quote for another round).
    #[error("nonce: the quote's extraData is {actual}, expected this round's {expected}")]
    Nonce {
        /// This round's qualifying data.
        expected: Digest,
        /// The quote's `extraData`.
        actual: Digest,
    },
    /// The TPM says its clock may have gone backwards.
    #[error("clock: the tpm reports its clock as not safe (clock {}, resetCount {}, restartCount {})", .clock.clock, .clock.reset_count, .clock.restart_count)]
    ClockNotSafe {
        /// The quote's clock.
        clock: ClockInfo,
    },
    /// resetCount is lower than in an earlier quote.
    #[error("clock: resetCount went from {previous} down to {current}")]
    ResetCountDecreased {
        /// Earlier.
        previous: u32,
        /// Now.
        current: u32,
    },
    /// restartCount is lower than in an earlier quote of the same reset.
    #[error("clock: restartCount went from {previous} down to {current} without a reset")]
    RestartCountDecreased {
        /// Earlier.
        previous: u32,
        /// Now.
        current: u32,
    },
    /// The clock is behind an earlier quote of the same reset and restart (an old quote).
    #[error(
        "clock: the quote's clock {current} is behind the previous quote's {previous} with no reset in between"
    )]
    ClockWentBackwards {
        /// Earlier clock.
        previous: u64,
        /// This quote's clock.
        current: u64,
    },
    /// The quote selects PCRs in a way the policy cannot appraise.
    #[error("pcr selection: {reason}")]
    PcrSelection {
        /// Why.
        reason: String,
    },
    /// A PCR the policy requires is not in the quote.
    #[error("pcr selection: pcr {pcr} of the {bank} bank is required by the policy but not quoted")]
    PcrNotQuoted {
        /// The bank.
        bank: HashAlg,
        /// The PCR.
        pcr: u32,
    },
    /// The PCR values sent do not correspond to the quote's selection.
    #[error("pcr values: {reason}")]
    PcrValues {
        /// Why.
        reason: String,
    },
    /// The PCR values sent are not the ones the TPM quoted.
    #[error(
        "pcr digest: the hash of the pcr values sent is {expected}, but the quote's pcrDigest is {actual}"
    )]
    PcrDigest {
        /// `H(values)`.
        expected: Digest,
        /// The quote's `pcrDigest`.
        actual: Digest,
    },
    /// The event log does not parse or has no digests for the policy bank.
    #[error("event log: {error}")]
    EventLog {
        /// Why.
        error: String,
    },
    /// Replaying the log does not give the quoted value of a PCR.
    #[error(
        "replay: pcr {pcr} ({bank}) was quoted as {quoted} but the event log replays to {replayed}"
    )]
    PcrMismatch {
        /// The PCR.
        pcr: u32,
        /// The bank.
        bank: HashAlg,
        /// The TPM's value.
        quoted: Digest,
        /// The log's value.
        replayed: Digest,
    },
    /// An event whose data the appraisal reads is not what its digest measured.
    #[error(
        "event data: pcr {pcr} event #{index} {event_type}: the data hashes to {expected} but the event extended {actual}"
    )]
    EventDataUnbound {
        /// PCR.
        pcr: u32,
        /// Event number.
        index: usize,
        /// Event type.
        event_type: EventType,
        /// `H(data)`.
        expected: Digest,
        /// The event's digest.
        actual: Digest,
    },
    /// Secure Boot is measured as disabled.
    #[error(
        "secure boot: pcr 7 event #{index} EV_EFI_VARIABLE_DRIVER_CONFIG SecureBoot is {value}, expected 01"
    )]
    SecureBootDisabled {
        /// Event number.
        index: usize,
        /// The variable's value.
        value: Digest,
    },
    /// A component the policy expects was not measured (in a verified PCR).
    #[error("{class}: the policy expects one in pcr {pcr} but the verified event log has none")]
    EventMissing {
        /// The class.
        class: EventClass,
        /// Its PCR.
        pcr: u32,
    },
    /// A measured component is not in the policy's allow-list.
    #[error("{class}: pcr {pcr} event #{index} {event_type}{} has digest {actual}, expected one of {}", described(.description), list(.allowed))]
    EventNotAllowed {
        /// The class.
        class: EventClass,
        /// PCR.
        pcr: u32,
        /// Event number.
        index: usize,
        /// Event type.
        event_type: EventType,
        /// Path, variable name, address (descriptive, not measured).
        description: Option<String>,
        /// The event's digest in the policy bank.
        actual: Digest,
        /// The policy's list.
        allowed: Vec<Digest>,
    },
    /// The kernel command line is not one the policy allows.
    #[error("kernel command line: pcr {pcr} event #{index} is {cmdline:?}, expected one of {}", list(&.allowed.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>()))]
    CmdlineNotAllowed {
        /// PCR.
        pcr: u32,
        /// Event number.
        index: usize,
        /// The measured command line.
        cmdline: String,
        /// The policy's list.
        allowed: Vec<String>,
    },
    /// An agent-reported binary is not allowed.
    #[error("agent measurement: {name} has sha256 {actual}, expected one of {}", list(.allowed))]
    AgentMeasurementNotAllowed {
        /// The binary.
        name: String,
        /// What the agent reported.
        actual: String,
        /// The policy's digests for that name.
        allowed: Vec<Digest>,
    },
    /// A binary the policy lists was not reported.
    #[error("agent measurement: {name} is required by the policy but the agent did not report it")]
    AgentMeasurementMissing {
        /// The binary.
        name: String,
    },
}

impl Failure {
    /// The check's short name (`signature`, `nonce`, `replay`, …), for metrics and states.
    pub fn check(&self) -> &'static str {
        match self {
            Failure::Policy { .. } => "policy",
            Failure::AttestationKey { .. } => "attestationKey",
            Failure::SignatureMalformed { .. } | Failure::Signature { .. } => "signature",
            Failure::Magic { .. } => "magic",
            Failure::AttestType { .. } => "type",
            Failure::AttestMalformed { .. } => "attest",
            Failure::Nonce { .. } => "nonce",
            Failure::ClockNotSafe { .. }
            | Failure::ResetCountDecreased { .. }
            | Failure::RestartCountDecreased { .. }
            | Failure::ClockWentBackwards { .. } => "clock",
            Failure::PcrSelection { .. } | Failure::PcrNotQuoted { .. } => "pcrSelection",
            Failure::PcrValues { .. } => "pcrValues",
            Failure::PcrDigest { .. } => "pcrDigest",
            Failure::EventLog { .. } => "eventLog",
            Failure::PcrMismatch { .. } => "replay",
            Failure::EventDataUnbound { .. } => "eventData",
            Failure::SecureBootDisabled { .. } => "secureBoot",
            Failure::EventMissing { .. }
            | Failure::EventNotAllowed { .. }
            | Failure::CmdlineNotAllowed { .. } => "referenceValues",
            Failure::AgentMeasurementNotAllowed { .. }
            | Failure::AgentMeasurementMissing { .. } => "agentMeasurements",
        }
    }
}

/// A measured UEFI application.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootApplication {
    /// Authenticode digest in the policy bank.
    pub digest: Digest,
    /// The file path the firmware logged (descriptive).
    pub path: Option<String>,
}

/// What the verified part of the log says about the boot (empty when the log was not
/// verified). Only events of PCRs whose replay matched the quote contribute.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootSummary {
    /// The `SecureBoot` variable as measured (last occurrence), when present and bound.
    pub secure_boot: Option<bool>,
    /// PCR 4 applications in load order (shim, GRUB, kernel).
    pub boot_applications: Vec<BootApplication>,
    /// The last PCR 4 application: the kernel in a shim → GRUB → kernel chain.
    pub kernel: Option<Digest>,
    /// The kernel's logged path.
    pub kernel_path: Option<String>,
    /// The last measured kernel command line.
    pub kernel_cmdline: Option<String>,
    /// Events in the log (after the header).
    pub event_count: usize,
    /// PCRs whose quoted value the log replays to.
    pub verified_pcrs: Vec<u32>,
}

/// The outcome of one appraisal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// Every check passed.
    pub passed: bool,
    /// The quote verified with the attestation key (a failure with `authentic == false` is
    /// not evidence about the host at all: anyone can send bytes).
    pub authentic: bool,
    /// Every failed check, in the order checked.
    pub failures: Vec<Failure>,
    /// The quote's clock, when proven fresh and monotonic: store it as the next `previous`.
    pub clock: Option<ClockInfo>,
    /// The verified boot chain.
    pub boot: BootSummary,
}

impl Verdict {
    /// The failures joined with `; `, or `all checks passed`.
    pub fn reason(&self) -> String {
        if self.failures.is_empty() {
            return "all checks passed".to_owned();
        }
        self.failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

/// Appraises one round of `evidence` from the host whose attestation key is `ak`, against
/// `policy`. `nonce` is the qualifying data the quote must carry; `previous` is the last
/// [`Verdict::clock`] stored for this host. See the module docs for the checks.
pub fn appraise(
    evidence: &Evidence,
    ak: &Public,
    nonce: &[u8],
    policy: &ReferencePolicy,
    previous: Option<&ClockInfo>,
) -> Verdict {
    let mut v = Verdict {
        passed: false,
        authentic: false,
        failures: Vec::new(),
        clock: None,
        boot: BootSummary::default(),
    };
    run(&mut v, evidence, ak, nonce, policy, previous);
    v.passed = v.failures.is_empty();
    v
}

fn run(
    v: &mut Verdict,
    evidence: &Evidence,
    ak: &Public,
    nonce: &[u8],
    policy: &ReferencePolicy,
    previous: Option<&ClockInfo>,
) {
    let f = &mut v.failures;
    if let Err(e) = policy.validate() {
        f.push(Failure::Policy {
            reason: e.to_string(),
        });
        return;
    }
    // 2. A key that is not restricted can sign anything, including a fake TPMS_ATTEST.
    if !ak.is_restricted_signing_key() {
        f.push(Failure::AttestationKey {
            reason: format!(
                "attributes {:#010x} are not those of a restricted signing key (restricted, sign, fixedTPM; not decrypt), so its signature does not prove the tpm made the quote",
                ak.attributes
            ),
        });
        return;
    }
    // 3. Signature.
    let sig = match Signature::parse(&evidence.signature) {
        Ok(s) => s,
        Err(e) => {
            f.push(Failure::SignatureMalformed { error: chain(&e) });
            return;
        }
    };
    if let Err(e) = ak.verify(&evidence.attest, &sig) {
        f.push(Failure::Signature { reason: chain(&e) });
        return;
    }
    v.authentic = true;
    // 4. Header, then the rest.
    match peek_header(&evidence.attest) {
        Err(e) => {
            f.push(Failure::AttestMalformed { error: chain(&e) });
            return;
        }
        Ok((magic, _)) if magic != TPM_GENERATED_VALUE => {
            f.push(Failure::Magic { found: magic });
            return;
        }
        Ok((_, ty)) if ty != TPM_ST_ATTEST_QUOTE => {
            f.push(Failure::AttestType { found: ty });
            return;
        }
        Ok(_) => {}
    }
    let attest = match Attest::parse(&evidence.attest) {
        Ok(a) => a,
        Err(e) => {
            f.push(Failure::AttestMalformed { error: chain(&e) });
            return;
        }
    };
    // 5. Nonce.
    let fresh = constant_time_eq(&attest.extra_data, nonce);
    if !fresh {
        f.push(Failure::Nonce {
            expected: Digest(nonce.to_vec()),
            actual: Digest(attest.extra_data.clone()),
        });
    }
    // 6. Clock.
    let monotonic = check_clock(&attest.clock_info, previous, f);
    if fresh && monotonic {
        v.clock = Some(attest.clock_info);
    }
    // 7–8. PCR selection and values.
    if !check_pcrs(&attest, &sig, evidence, policy, f) {
        return;
    }
    // From here the quoted PCRs are exactly the keys of `evidence.pcrs`, each a bank value.
    // 9. Event log: parsed in place, and only the quoted PCRs replayed (the rest of the log
    // is never appraised).
    let log = match LogView::parse(&evidence.event_log) {
        Ok(l) => l,
        Err(e) => {
            f.push(Failure::EventLog { error: chain(&e) });
            return;
        }
    };
    let quoted: Vec<u32> = evidence.pcrs.keys().copied().collect();
    let replayed = match replay_selected(&log, policy.bank, &quoted) {
        Ok(r) => r,
        Err(e) => {
            f.push(Failure::EventLog { error: chain(&e) });
            return;
        }
    };
    let mut verified = PcrSet::default();
    for ((pcr, value), expected) in evidence.pcrs.iter().zip(&replayed) {
        if expected.as_bytes() == value.as_slice() {
            verified.insert(*pcr);
        } else {
            f.push(Failure::PcrMismatch {
                pcr: *pcr,
                bank: policy.bank,
                quoted: Digest(value.clone()),
                replayed: expected.to_digest(),
            });
        }
    }
    // 10. Policy.
    v.boot = appraise_events(&log, policy, &verified, f);
    appraise_agent(&evidence.agent_measurements, &policy.agent_measurements, f);
}

/// A set of PCR indices 0–255 (all a TPM selection can name), as a bitmap.
#[derive(Debug, Clone, Copy, Default)]
struct PcrSet([u64; 4]);

impl PcrSet {
    fn insert(&mut self, pcr: u32) {
        if let Some(word) = usize::try_from(pcr / 64)
            .ok()
            .and_then(|i| self.0.get_mut(i))
        {
            *word |= 1 << (pcr % 64);
        }
    }

    fn contains(&self, pcr: u32) -> bool {
        usize::try_from(pcr / 64)
            .ok()
            .and_then(|i| self.0.get(i))
            .is_some_and(|word| word & (1 << (pcr % 64)) != 0)
    }

    /// Ascending.
    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0u32..).zip(self.0).flat_map(|(i, word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros();
                    rest &= rest - 1;
                    i * 64 + bit
                })
            })
        })
    }
}

/// The PCRs a selection names, ascending (as [`PcrSelection::pcrs`], without a set).
fn selected(s: &PcrSelection) -> impl Iterator<Item = u32> + '_ {
    (0u32..).zip(&s.select).flat_map(|(i, byte)| {
        (0..8)
            .filter(move |bit| byte & (1 << bit) != 0)
            .map(move |bit| i * 8 + bit)
    })
}

fn check_clock(cur: &ClockInfo, previous: Option<&ClockInfo>, f: &mut Vec<Failure>) -> bool {
    let before = f.len();
    if !cur.safe {
        f.push(Failure::ClockNotSafe { clock: *cur });
    }
    if let Some(p) = previous {
        if cur.reset_count < p.reset_count {
            f.push(Failure::ResetCountDecreased {
                previous: p.reset_count,
                current: cur.reset_count,
            });
        } else if cur.reset_count == p.reset_count {
            if cur.restart_count < p.restart_count {
                f.push(Failure::RestartCountDecreased {
                    previous: p.restart_count,
                    current: cur.restart_count,
                });
            } else if cur.restart_count == p.restart_count && cur.clock < p.clock {
                f.push(Failure::ClockWentBackwards {
                    previous: p.clock,
                    current: cur.clock,
                });
            }
        }
    }
    f.len() == before
}

/// Checks the selection and the values sent; true when the values sent are proven to be
/// the quoted ones.
fn check_pcrs(
    attest: &Attest,
    sig: &Signature,
    evidence: &Evidence,
    policy: &ReferencePolicy,
    f: &mut Vec<Failure>,
) -> bool {
    let before = f.len();
    let mut quoted = PcrSet::default();
    for s in &attest.quote.pcr_select {
        if s.select.iter().all(|b| *b == 0) {
            continue;
        }
        if s.hash != policy.bank {
            f.push(Failure::PcrSelection {
                reason: format!(
                    "the quote selects pcrs {:?} of the {} bank; the policy appraises only the {} bank",
                    s.pcrs(),
                    s.hash,
                    policy.bank
                ),
            });
            continue;
        }
        for p in selected(s) {
            if quoted.contains(p) {
                f.push(Failure::PcrSelection {
                    reason: format!("pcr {p} is selected twice"),
                });
            }
            quoted.insert(p);
        }
    }
    for p in &policy.pcrs {
        if !quoted.contains(*p) {
            f.push(Failure::PcrNotQuoted {
                bank: policy.bank,
                pcr: *p,
            });
        }
    }
    if let Some(p) = quoted.iter().find(|p| !evidence.pcrs.contains_key(p)) {
        f.push(Failure::PcrValues {
            reason: format!("pcr {p} is quoted but its value was not sent"),
        });
    }
    if let Some(p) = evidence.pcrs.keys().find(|p| !quoted.contains(**p)) {
        f.push(Failure::PcrValues {
            reason: format!("a value for pcr {p} was sent but the quote does not cover it"),
        });
    }
    for (p, value) in &evidence.pcrs {
        if value.len() != policy.bank.digest_len() {
            f.push(Failure::PcrValues {
                reason: format!(
                    "the value sent for pcr {p} is {} bytes; {} values are {}",
                    value.len(),
                    policy.bank,
                    policy.bank.digest_len()
                ),
            });
        }
    }
    if f.len() != before {
        return false;
    }
    // No error: every non-empty selection is of the policy bank and names each PCR once, and
    // a value was sent for each, so this is H(values in selection order).
    let expected = sig.hash().hash_inline_parts(
        attest
            .quote
            .pcr_select
            .iter()
            .flat_map(selected)
            .filter_map(|p| evidence.pcrs.get(&p))
            .map(Vec::as_slice),
    );
    if expected != *attest.quote.pcr_digest.as_slice() {
        f.push(Failure::PcrDigest {
            expected: expected.to_digest(),
            actual: Digest(attest.quote.pcr_digest.clone()),
        });
        return false;
    }
    true
}

const CLASSES: [EventClass; 8] = [
    EventClass::SecureBoot,
    EventClass::Pk,
    EventClass::Kek,
    EventClass::Db,
    EventClass::Dbx,
    EventClass::FirmwareBlob,
    EventClass::BootApplication,
    EventClass::KernelCmdline,
];

fn appraise_events(
    log: &LogView<'_>,
    policy: &ReferencePolicy,
    verified: &PcrSet,
    f: &mut Vec<Failure>,
) -> BootSummary {
    let bank = policy.bank;
    let mut boot = BootSummary {
        event_count: log.len(),
        verified_pcrs: verified.iter().collect(),
        ..BootSummary::default()
    };
    // One bit per EventClass (eight of them).
    let mut seen: u16 = 0;
    for (index, e) in log.numbered(bank) {
        if !verified.contains(e.pcr) {
            continue;
        }
        let class = EventClass::of_view(&e);
        // The data of Secure Boot configuration and command line events is read below, so
        // it must be what was measured (elsewhere data is only descriptive).
        let reads_data = (e.pcr == 7 && e.event_type == EV_EFI_VARIABLE_DRIVER_CONFIG)
            || class == Some(EventClass::KernelCmdline);
        if reads_data && !e.data_is_bound() {
            f.push(Failure::EventDataUnbound {
                pcr: e.pcr,
                index,
                event_type: e.kind(),
                expected: Digest(bank.hash(e.data)),
                actual: Digest(e.digest.map(<[u8]>::to_vec).unwrap_or_default()),
            });
            continue;
        }
        let Some(class) = class else {
            continue;
        };
        seen |= 1 << (class as u16);
        let digest: &[u8] = e.digest.unwrap_or_default();
        match class {
            EventClass::SecureBoot => {
                // The class was found from the parsed variable, so it parses.
                let value: &[u8] = e.variable_ref().map_or(&[], |var| var.data);
                boot.secure_boot = Some(value == [1]);
                if policy.require_secure_boot && value != [1] {
                    f.push(Failure::SecureBootDisabled {
                        index,
                        value: Digest(value.to_vec()),
                    });
                }
            }
            EventClass::KernelCmdline => {
                let cmdline = e.kernel_cmdline().unwrap_or_default();
                if !policy.kernel_cmdlines.allows_str(cmdline) {
                    f.push(Failure::CmdlineNotAllowed {
                        pcr: e.pcr,
                        index,
                        cmdline: cmdline.to_owned(),
                        allowed: policy
                            .kernel_cmdlines
                            .entries()
                            .unwrap_or_default()
                            .to_vec(),
                    });
                }
                boot.kernel_cmdline = Some(cmdline.to_owned());
            }
            c => {
                if c == EventClass::BootApplication {
                    let path = match e.image_load() {
                        Some(Ok(i)) => i.file_path(),
                        _ => None,
                    };
                    let digest = Digest(digest.to_vec());
                    boot.kernel = Some(digest.clone());
                    boot.kernel_path = path.clone();
                    boot.boot_applications
                        .push(BootApplication { digest, path });
                }
                if let Some(list) = policy.digests_for(c)
                    && !list.allows_bytes(digest)
                {
                    f.push(Failure::EventNotAllowed {
                        class: c,
                        pcr: e.pcr,
                        index,
                        event_type: e.kind(),
                        description: e.description(),
                        actual: Digest(digest.to_vec()),
                        allowed: list.entries().unwrap_or_default().to_vec(),
                    });
                }
            }
        }
    }
    for class in CLASSES {
        let required = match class {
            EventClass::SecureBoot => policy.require_secure_boot,
            EventClass::KernelCmdline => policy.kernel_cmdlines.requires_presence(),
            c => policy
                .digests_for(c)
                .is_some_and(AllowList::requires_presence),
        };
        if required && verified.contains(class.pcr()) && seen & (1 << (class as u16)) == 0 {
            f.push(Failure::EventMissing {
                class,
                pcr: class.pcr(),
            });
        }
    }
    boot
}

fn appraise_agent(
    reported: &[AgentMeasurement],
    policy: &AllowList<crate::policy::AgentReference>,
    f: &mut Vec<Failure>,
) {
    let Some(refs) = policy.entries() else {
        return;
    };
    for m in reported {
        let ok = Digest::from_hex(&m.sha256)
            .is_some_and(|d| refs.iter().any(|r| r.name == m.name && r.sha256 == d));
        if !ok {
            f.push(Failure::AgentMeasurementNotAllowed {
                name: m.name.clone(),
                actual: m.sha256.clone(),
                allowed: refs
                    .iter()
                    .filter(|r| r.name == m.name)
                    .map(|r| r.sha256.clone())
                    .collect(),
            });
        }
    }
    // Each configured name once, in the policy's order.
    for (i, r) in refs.iter().enumerate() {
        let first = !refs[..i].iter().any(|earlier| earlier.name == r.name);
        if first && !reported.iter().any(|m| m.name == r.name) {
            f.push(Failure::AgentMeasurementMissing {
                name: r.name.clone(),
            });
        }
    }
}

#[cfg(test)]
#[path = "appraise_tests.rs"]
mod tests;
