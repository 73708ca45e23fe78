//! The control plane's use of the verifier (`strata-attest`): parse keys at registration,
//! MakeCredential, and one round's appraisal reduced to what the state machine needs.

use serde_json::Value;
use strata_attest::tpm::{Public, PublicKey, attr};
use strata_attest::{Failure, Verdict};

use super::policy::LoadedPolicy;

pub type Clock = strata_attest::ClockInfo;

/// An endorsement key (RSA, restricted decryption) as sent at registration.
pub struct EkPublic(Public);

impl EkPublic {
    pub fn parse(tpm2b: &[u8]) -> Result<EkPublic, String> {
        let p = Public::parse(tpm2b).map_err(|e| format!("not a TPM2B_PUBLIC: {e}"))?;
        if !matches!(p.key, PublicKey::Rsa(_)) {
            return Err("only RSA endorsement keys are supported".into());
        }
        if !p.has_attributes(attr::RESTRICTED | attr::DECRYPT | attr::FIXED_TPM) {
            return Err("the key is not a TPM-bound restricted decryption key (not an EK)".into());
        }
        Ok(EkPublic(p))
    }

    /// The RSA modulus without leading zeros (to compare with the EK certificate's key).
    pub fn modulus(&self) -> Vec<u8> {
        match &self.0.key {
            PublicKey::Rsa(k) => {
                let first = k
                    .modulus
                    .iter()
                    .position(|b| *b != 0)
                    .unwrap_or(k.modulus.len());
                k.modulus[first..].to_vec()
            }
            PublicKey::Ecc(_) => Vec::new(),
        }
    }
}

/// An attestation key: a restricted signing key created in the TPM.
pub struct AkPublic(Public);

impl AkPublic {
    pub fn parse(tpm2b: &[u8]) -> Result<AkPublic, String> {
        let p = Public::parse(tpm2b).map_err(|e| format!("not a TPM2B_PUBLIC: {e}"))?;
        let need = attr::RESTRICTED
            | attr::SIGN_ENCRYPT
            | attr::FIXED_TPM
            | attr::FIXED_PARENT
            | attr::SENSITIVE_DATA_ORIGIN;
        if !p.has_attributes(need) || p.has_attributes(attr::DECRYPT) {
            return Err(format!(
                "attributes {:#010x} are not those of an attestation key (restricted, sign, fixedTPM, fixedParent, sensitiveDataOrigin; not decrypt)",
                p.attributes
            ));
        }
        Ok(AkPublic(p))
    }

    pub fn name(&self) -> Vec<u8> {
        self.0.name()
    }

    pub fn algorithm(&self) -> &'static str {
        match self.0.key {
            PublicKey::Rsa(_) => "rsa",
            PublicKey::Ecc(_) => "ecc",
        }
    }

    pub fn public(&self) -> &Public {
        &self.0
    }
}

/// TPM2_MakeCredential in software: only the TPM holding both keys can recover `secret`.
pub fn make_credential(
    ek: &EkPublic,
    ak: &AkPublic,
    secret: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), String> {
    strata_attest::credential::make_credential(
        &ek.0,
        &ak.name(),
        secret,
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|e| e.to_string())
}

/// The bank and PCRs a host must quote.
pub fn quote_selection(p: &LoadedPolicy) -> (String, Vec<u32>) {
    (
        p.policy.bank.to_string(),
        p.policy.pcrs.iter().copied().collect(),
    )
}

/// One round's result, as the state machine and the host document need it.
pub struct Outcome {
    /// The quote verified with the host's AK: only then may the round change anything.
    pub signature_valid: bool,
    /// The quote carries this round's qualifying data (not a replay): also required before
    /// the round may change anything.
    pub fresh: bool,
    pub passed: bool,
    /// The failure itself is evidence of an attack (replayed nonce, clock rollback).
    pub attack: bool,
    pub failures: Vec<String>,
    pub clock: Option<Clock>,
    pub secure_boot: Option<bool>,
    pub events: usize,
}

/// A fresh, signed quote whose TPM clock ran backwards without a reset or restart: the TPM's
/// state was rolled back (a vTPM snapshot restored, a TPM emulated). Counters that went down
/// are not an attack by themselves (TPM2_Clear resets them) and only fail the round.
fn is_attack(f: &Failure) -> bool {
    matches!(f, Failure::ClockWentBackwards { .. })
}

/// Appraises `evidence` (the agent's JSON). Malformed evidence, or a round without a usable
/// policy (`Err` says why), is reported as a failure; without a policy the signature and the
/// nonce are still checked so that unauthenticated or replayed bytes never move a host.
pub fn appraise(
    evidence: &Value,
    ak: &AkPublic,
    qualifying: &[u8],
    policy: Result<&LoadedPolicy, &str>,
    previous: Option<&Clock>,
) -> Outcome {
    let ev: strata_attest::Evidence = match serde_json::from_value(evidence.clone()) {
        Ok(e) => e,
        Err(e) => {
            return Outcome {
                signature_valid: false,
                fresh: false,
                passed: false,
                attack: false,
                failures: vec![format!("the evidence is malformed: {e}")],
                clock: None,
                secure_boot: None,
                events: 0,
            };
        }
    };
    let policy = match policy {
        Ok(p) => p,
        Err(why) => {
            let authentic = strata_attest::tpm::Signature::parse(&ev.signature)
                .ok()
                .is_some_and(|sig| ak.public().verify(&ev.attest, &sig).is_ok());
            let fresh = strata_attest::tpm::Attest::parse(&ev.attest)
                .is_ok_and(|a| strata_attest::constant_time_eq(&a.extra_data, qualifying));
            return Outcome {
                signature_valid: authentic,
                fresh,
                passed: false,
                attack: false,
                failures: vec![why.to_string()],
                clock: None,
                secure_boot: None,
                events: 0,
            };
        }
    };
    let v: Verdict =
        strata_attest::appraise(&ev, ak.public(), qualifying, &policy.policy, previous);
    Outcome {
        signature_valid: v.authentic,
        fresh: !v
            .failures
            .iter()
            .any(|f| matches!(f, Failure::Nonce { .. })),
        passed: v.passed,
        attack: v.failures.iter().any(is_attack),
        failures: v.failures.iter().map(ToString::to_string).collect(),
        clock: v.clock,
        secure_boot: v.boot.secure_boot,
        events: v.boot.event_count,
    }
}
