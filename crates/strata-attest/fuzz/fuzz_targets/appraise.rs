//! The whole appraisal on arbitrary evidence JSON: never panics, and never passes (nothing
//! random is signed by the fixed key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_attest::policy::{AllowList, ReferencePolicy};
use strata_attest::tpm::{AsymScheme, EccCurve, EccPublic, Public, PublicKey, attr};
use strata_attest::{Evidence, HashAlg, appraise};

fuzz_target!(|data: &[u8]| {
    let Ok(evidence) = serde_json::from_slice::<Evidence>(data) else {
        return;
    };
    let ak = Public {
        name_alg: HashAlg::Sha256,
        attributes: attr::FIXED_TPM | attr::RESTRICTED | attr::SIGN_ENCRYPT,
        auth_policy: Vec::new(),
        key: PublicKey::Ecc(EccPublic {
            symmetric: None,
            scheme: AsymScheme::Ecdsa(HashAlg::Sha256),
            curve: EccCurve::NistP256,
            kdf: None,
            x: vec![1; 32],
            y: vec![2; 32],
        }),
    };
    let policy = ReferencePolicy {
        bank: HashAlg::Sha256,
        pcrs: [0, 4, 7].into_iter().collect(),
        require_secure_boot: true,
        pk: AllowList::Any,
        kek: AllowList::Any,
        db: AllowList::Any,
        dbx: AllowList::Any,
        firmware_blobs: AllowList::Any,
        boot_applications: AllowList::Only(Vec::new()),
        kernel_cmdlines: AllowList::Any,
        agent_measurements: AllowList::Any,
    };
    let v = appraise(&evidence, &ak, b"nonce", &policy, None);
    assert!(!v.passed);
});
