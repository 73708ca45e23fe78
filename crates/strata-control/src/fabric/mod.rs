//! The fabric: hosts that run VMs, how they join, and how they keep proving their boot chain.
//!
//! ```text
//! operator: PUT joinTokens/{name} ──▶ one-time token (shown once, stored as SHA-256, expires)
//!
//! agent (outbound only)                         control plane (this module)
//!   POST /fabric/v1/register ─────────────────▶ token valid? EK certificate chains to a
//!     {token, EK, EK cert, AK}                  configured TPM vendor CA? AK attributes sane?
//!                              ◀───────────────  MakeCredential(EK, name(AK), secret)
//!   TPM2_ActivateCredential (only the TPM holding both EK and AK can)
//!   POST …/register/{id}/activate {secret} ───▶ secret matches → host exists (Registered),
//!                                               token consumed, all in one audited commit
//! every N s:
//!   POST /fabric/v1/hosts/{h}/nonce {key} ────▶ fresh nonce (single use, 30 s)
//!   TPM2_Quote(qualifying = H(nonce ‖ key))
//!   POST /fabric/v1/hosts/{h}/evidence ───────▶ strata-attest appraises against the host's
//!     {quote, signature, PCRs, event log,       signed reference policy → state machine
//!      agent measurements}                      (state.rs) → on pass: a short-lived mTLS
//!                              ◀───────────────  client certificate for `key` (hostca.rs)
//!   GET /fabric/v1/hosts/{h}/assignments ─────▶ only with the host's current certificate
//!     (mTLS)                                    while the host is Trusted
//! ```
//!
//! **Invariant:** the agent door ([`door::handle`]) is the only way a host talks to the
//! control plane. Registration is authenticated by the join token plus the TPM credential
//! activation, rounds by the AK's signature over a single-use nonce, everything else by the
//! host certificate; every registration, verdict and refusal is audited.

pub mod door;
pub mod hostca;
pub mod placement;
pub mod policy;
pub mod state;
pub mod verify;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::setup::SetupError;

/// How the fabric runs.
#[derive(Clone, Debug)]
pub struct FabricConfig {
    /// Seconds between attestation rounds that agents are told to use (default 10, min 1).
    pub attestation_interval_secs: u64,
    /// PEM files with TPM vendor CA certificates (roots and intermediates) that EK
    /// certificates must chain to.
    pub tpm_ca_files: Vec<PathBuf>,
    /// Files with Ed25519 release public keys that reference-policy bundles must be signed by.
    pub release_key_files: Vec<PathBuf>,
    /// Let the scheduler place VMs on development (software-TPM) hosts. Off by default;
    /// `strata up --dev-tpm` turns it on for its single-machine demo.
    pub allow_development_placement: bool,
}

impl Default for FabricConfig {
    fn default() -> Self {
        FabricConfig {
            attestation_interval_secs: 10,
            tpm_ca_files: Vec::new(),
            release_key_files: Vec::new(),
            allow_development_placement: false,
        }
    }
}

/// A nonce handed to an agent and not yet used.
#[derive(Clone, Debug)]
pub struct PendingRound {
    pub nonce: Vec<u8>,
    pub agent_key: Vec<u8>,
    pub issued_at: i64,
}

/// Process-wide fabric state.
pub struct Fabric {
    pub config: FabricConfig,
    pub host_ca: hostca::HostCa,
    pub tpm_anchors: Vec<strata_identity::x509::Certificate>,
    pub tpm_intermediates: Vec<strata_identity::x509::Certificate>,
    pub release_keys: Vec<strata_attest::bundle::ReleaseKey>,
    /// Outstanding nonces by host key. In memory on purpose: a nonce that outlives a restart
    /// is a nonce nobody can use, which is the safe failure.
    pub rounds: Mutex<HashMap<String, Vec<PendingRound>>>,
    /// Unauthenticated door calls, per client address and per (address, host): bounded so a
    /// flood can neither starve a host's agent nor grow memory without limit.
    pub limiter: crate::ratelimit::RateLimiter,
    /// How many refusals per client address are written to the audit log (the rest are
    /// counted in the log line only), so a flood cannot fill the Merkle log.
    pub audit_gate: crate::ratelimit::RateLimiter,
    /// Hosts an operator asked to attest now: name → time of the request.
    pub attest_requests: Mutex<HashMap<String, i64>>,
}

/// How long a nonce stays usable.
pub const NONCE_TTL_SECS: i64 = 30;
/// How long a registration challenge stays open.
pub const REGISTRATION_TTL_SECS: i64 = 120;

impl Fabric {
    pub fn load(dir: &std::path::Path, config: FabricConfig) -> Result<Fabric, SetupError> {
        if config.attestation_interval_secs == 0 || config.attestation_interval_secs > 3600 {
            return Err(SetupError::Invalid(
                "the attestation interval must be 1-3600 seconds".into(),
            ));
        }
        let host_ca = hostca::HostCa::load_or_create(dir)?;
        let mut anchors = Vec::new();
        let mut intermediates = Vec::new();
        for f in &config.tpm_ca_files {
            let pem = crate::setup::read_file(f)?;
            let certs = strata_identity::x509::Certificate::from_pem_bundle(&pem)
                .map_err(|e| SetupError::Invalid(format!("{}: {e}", f.display())))?;
            if certs.is_empty() {
                return Err(SetupError::Invalid(format!(
                    "{}: no CERTIFICATE block",
                    f.display()
                )));
            }
            for c in certs {
                if c.subject_der() == c.issuer_der() {
                    anchors.push(c);
                } else {
                    intermediates.push(c);
                }
            }
        }
        let mut release_keys = Vec::new();
        for f in &config.release_key_files {
            let text = crate::setup::read_file(f)?;
            release_keys.extend(
                policy::parse_release_keys(&text)
                    .map_err(|e| SetupError::Invalid(format!("{}: {e}", f.display())))?,
            );
        }
        Ok(Fabric {
            config,
            host_ca,
            tpm_anchors: anchors,
            tpm_intermediates: intermediates,
            release_keys,
            rounds: Mutex::new(HashMap::new()),
            limiter: crate::ratelimit::RateLimiter::new(5.0, 20.0),
            audit_gate: crate::ratelimit::RateLimiter::new(1.0, 20.0),
            attest_requests: Mutex::new(HashMap::new()),
        })
    }

    pub fn interval(&self) -> i64 {
        self.config.attestation_interval_secs as i64
    }

    /// No passing round for this long makes a Trusted host Untrusted: three intervals, and
    /// never less than the interval plus five seconds of slack.
    pub fn stale_after(&self) -> i64 {
        (3 * self.interval()).max(self.interval() + 5)
    }

    /// Host certificates live as long as a passing round stays fresh.
    pub fn cert_lifetime(&self) -> i64 {
        self.stale_after()
    }
}
