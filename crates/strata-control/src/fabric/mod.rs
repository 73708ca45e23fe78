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

/// Stateless, single-use round nonces: `issued_at ‖ random ‖ HMAC(key, host ‖ agent key ‖
/// issued_at ‖ random)`. Issuing stores nothing, so no requester can evict another's nonce;
/// a nonce is spent (remembered until it expires) when evidence is submitted with it. The key
/// is per process: a restart invalidates outstanding nonces, which is the safe failure.
pub struct NonceMinter {
    key: ring::hmac::Key,
    spent: Mutex<HashMap<[u8; 32], i64>>,
}

/// Why a nonce was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum NonceError {
    Malformed,
    Forged,
    Expired,
    Spent,
}

const NONCE_RANDOM: usize = 16;
const NONCE_LEN: usize = 8 + NONCE_RANDOM + 32;

impl NonceMinter {
    pub fn new() -> Result<NonceMinter, SetupError> {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| SetupError::Invalid("no randomness for the nonce key".into()))?;
        Ok(NonceMinter {
            key,
            spent: Mutex::new(HashMap::new()),
        })
    }

    fn tag(&self, host: &str, agent_key: &[u8], head: &[u8]) -> ring::hmac::Tag {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(b"strata-round-nonce-v1\0");
        ctx.update(&(host.len() as u32).to_be_bytes());
        ctx.update(host.as_bytes());
        ctx.update(&(agent_key.len() as u32).to_be_bytes());
        ctx.update(agent_key);
        ctx.update(head);
        ctx.sign()
    }

    /// A fresh nonce for `host` (its store key) and the agent key it will be used with.
    pub fn mint(&self, host: &str, agent_key: &[u8], now: i64) -> Result<Vec<u8>, SetupError> {
        let mut head = Vec::with_capacity(NONCE_LEN);
        head.extend_from_slice(&now.to_be_bytes());
        let mut random = [0u8; NONCE_RANDOM];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| SetupError::Invalid("no randomness".into()))?;
        head.extend_from_slice(&random);
        let tag = self.tag(host, agent_key, &head);
        head.extend_from_slice(tag.as_ref());
        Ok(head)
    }

    /// Checks and spends `nonce`.
    pub fn spend(
        &self,
        nonce: &[u8],
        host: &str,
        agent_key: &[u8],
        now: i64,
    ) -> Result<(), NonceError> {
        if nonce.len() != NONCE_LEN {
            return Err(NonceError::Malformed);
        }
        let (head, tag) = nonce.split_at(8 + NONCE_RANDOM);
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&head[..8]);
        let issued_at = i64::from_be_bytes(issued);
        let expected = self.tag(host, agent_key, head);
        if !strata_identity::secret::constant_time_eq(expected.as_ref(), tag) {
            return Err(NonceError::Forged);
        }
        if issued_at + NONCE_TTL_SECS <= now || issued_at > now + 5 {
            return Err(NonceError::Expired);
        }
        let id: [u8; 32] = {
            let d = ring::digest::digest(&ring::digest::SHA256, nonce);
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            out
        };
        let mut spent = self.spent.lock().map_err(|_| NonceError::Spent)?;
        if spent.len() > 100_000 {
            spent.retain(|_, expiry| *expiry > now);
        }
        if spent.insert(id, issued_at + NONCE_TTL_SECS).is_some() {
            return Err(NonceError::Spent);
        }
        Ok(())
    }
}

/// Process-wide fabric state.
pub struct Fabric {
    pub config: FabricConfig,
    pub host_ca: hostca::HostCa,
    pub tpm_anchors: Vec<strata_identity::x509::Certificate>,
    pub tpm_intermediates: Vec<strata_identity::x509::Certificate>,
    pub release_keys: Vec<strata_attest::bundle::ReleaseKey>,
    /// Round nonces (stateless until spent).
    pub nonces: NonceMinter,
    /// Unauthenticated door calls, per client address and per (address, host): bounded so a
    /// flood can neither starve a host's agent nor grow memory without limit.
    pub limiter: crate::ratelimit::RateLimiter,
    /// How many refusals per client address are written to the audit log (the rest are
    /// counted in the log line only), so a flood cannot fill the Merkle log.
    pub audit_gate: crate::ratelimit::RateLimiter,
    /// Hosts an operator asked to attest now: name → time of the request.
    pub attest_requests: Mutex<HashMap<String, i64>>,
    /// What each VM's keys were last released as (host, generation, disk): a release is
    /// audited when this changes, not on every poll (`compute::door::assigned`).
    pub released: Mutex<HashMap<String, String>>,
    /// Snapshot tokens whose upload is being received (one at a time each).
    pub uploads: std::sync::Arc<Mutex<std::collections::HashSet<String>>>,
}

/// How long a nonce stays usable.
pub const NONCE_TTL_SECS: i64 = 30;
/// How long a registration challenge stays open.
pub const REGISTRATION_TTL_SECS: i64 = 120;

impl Fabric {
    pub fn load(
        store: &dyn strata_store::Store,
        root: &crate::crypto::RootKey,
        config: FabricConfig,
    ) -> Result<Fabric, SetupError> {
        if config.attestation_interval_secs == 0 || config.attestation_interval_secs > 3600 {
            return Err(SetupError::Invalid(
                "the attestation interval must be 1-3600 seconds".into(),
            ));
        }
        let host_ca = hostca::HostCa::load_or_create(store, root)?;
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
            nonces: NonceMinter::new()?,
            limiter: crate::ratelimit::RateLimiter::new(5.0, 20.0),
            audit_gate: crate::ratelimit::RateLimiter::new(1.0, 20.0),
            attest_requests: Mutex::new(HashMap::new()),
            released: Mutex::new(HashMap::new()),
            uploads: std::sync::Arc::new(Mutex::new(std::collections::HashSet::new())),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_bound_single_use_and_expire() {
        let m = NonceMinter::new().unwrap_or_else(|e| panic!("{e}"));
        let n = m
            .mint("/h1", b"key", 1000)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.spend(&n, "/h2", b"key", 1001), Err(NonceError::Forged));
        assert_eq!(m.spend(&n, "/h1", b"other", 1001), Err(NonceError::Forged));
        assert_eq!(
            m.spend(&n, "/h1", b"key", 1000 + NONCE_TTL_SECS),
            Err(NonceError::Expired)
        );
        assert_eq!(m.spend(&n, "/h1", b"key", 1001), Ok(()));
        assert_eq!(m.spend(&n, "/h1", b"key", 1002), Err(NonceError::Spent));
        let mut t = m
            .mint("/h1", b"key", 1000)
            .unwrap_or_else(|e| panic!("{e}"));
        t[3] ^= 1;
        assert_eq!(m.spend(&t, "/h1", b"key", 1001), Err(NonceError::Forged));
        assert_eq!(
            m.spend(&t[1..], "/h1", b"key", 1001),
            Err(NonceError::Malformed)
        );
        let other = NonceMinter::new().unwrap_or_else(|e| panic!("{e}"));
        let n = m
            .mint("/h1", b"key", 1000)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            other.spend(&n, "/h1", b"key", 1001),
            Err(NonceError::Forged),
            "per-process key"
        );
    }
}
