//! Reference-policy release tooling: capture a golden policy from a known-good event log and
//! sign it into a bundle. Used by the development host of `strata up --dev-tpm`, the tests
//! and the benchmarks; a production release process does the same with its offline key.

use std::collections::BTreeMap;

use ring::signature::Ed25519KeyPair;
use strata_attest::bundle::{BundlePayload, ReleaseKey, SignedBundle, sign_bundle};
use strata_attest::eventlog::EventLog;
use strata_attest::policy::ReferencePolicy;
use strata_attest::{AgentMeasurement, HashAlg};

/// The PCRs a UEFI boot measures into (firmware through the kernel command line).
pub const BOOT_PCRS: [u32; 9] = [0, 1, 2, 3, 4, 5, 6, 7, 8];

/// An Ed25519 release key that signs policy bundles.
pub struct ReleaseSigner {
    key_id: String,
    pair: Ed25519KeyPair,
}

impl ReleaseSigner {
    /// A fresh key; returns it with its PKCS#8 bytes (keep them secret, mode 0600).
    pub fn generate(key_id: &str) -> Result<(ReleaseSigner, Vec<u8>), String> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "no randomness")?;
        let signer = ReleaseSigner::from_pkcs8(key_id, pkcs8.as_ref())?;
        Ok((signer, pkcs8.as_ref().to_vec()))
    }

    /// A key from its PKCS#8 bytes.
    pub fn from_pkcs8(key_id: &str, pkcs8: &[u8]) -> Result<ReleaseSigner, String> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| "not an Ed25519 PKCS#8 key")?;
        Ok(ReleaseSigner {
            key_id: key_id.to_owned(),
            pair,
        })
    }

    /// The public half, as the control plane's `--policy-release-key` file holds it.
    pub fn release_key(&self) -> ReleaseKey {
        ReleaseKey::from_key_pair(&self.key_id, &self.pair)
    }

    /// Signs `policies` as bundle `version`.
    pub fn sign(
        &self,
        version: u64,
        issued_at: &str,
        policies: BTreeMap<String, ReferencePolicy>,
    ) -> Result<SignedBundle, String> {
        let payload = BundlePayload {
            version,
            issued_at: issued_at.to_owned(),
            policies,
        };
        sign_bundle(&payload, &self.key_id, &self.pair).map_err(|e| e.to_string())
    }
}

/// A policy pinning everything `event_log` measured (SHA-256 bank, [`BOOT_PCRS`]) and the
/// agent-reported binaries `agent`.
pub fn golden_policy(
    event_log: &[u8],
    agent: &[AgentMeasurement],
) -> Result<ReferencePolicy, String> {
    let log =
        EventLog::parse(event_log).map_err(|e| format!("the event log does not parse: {e}"))?;
    Ok(ReferencePolicy::golden(
        &log,
        HashAlg::Sha256,
        &BOOT_PCRS,
        agent,
    ))
}
