//! MakeCredential / ActivateCredential between two swtpm hosts.
//!
//! `strata_attest::credential::make_credential` did not exist when this was written, so the
//! verifier side is `Tpm::make_credential` run on the *other* host's TPM (TPM2_MakeCredential
//! is a public-key operation, so any TPM can play the verifier).

use strata_agent::tpm::{AkAlgorithm, TpmError};

use crate::support;

#[test]
fn only_the_tpm_holding_the_ek_and_ak_recovers_the_secret() {
    let (_ca, hosts) = support::hosts(2);
    let mut a = hosts[0].open().unwrap();
    let mut b = hosts[1].open().unwrap();
    let ek_a = a.endorsement_key().unwrap();
    let ek_b = b.endorsement_key().unwrap();
    assert_ne!(ek_a.public, ek_b.public);

    for alg in [AkAlgorithm::EccP256, AkAlgorithm::Rsa2048] {
        let ak_a = a.create_attestation_key(alg).unwrap();
        let secret = b"0123456789abcdef0123456789abcdef";
        let (blob, enc) = b.make_credential(&ek_a.public, &ak_a.name, secret).unwrap();

        // The host that owns the EK and the AK gets the secret back.
        let got = a.activate_credential(&ak_a, &ek_a, &blob, &enc).unwrap();
        assert_eq!(got, secret, "{alg:?}");
        // A full TPM2B (with its size prefix) is accepted too.
        let with_size = |v: &[u8]| {
            let mut out = (v.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(v);
            out
        };
        let got = a
            .activate_credential(&ak_a, &ek_a, &with_size(&blob), &with_size(&enc))
            .unwrap();
        assert_eq!(got, secret);

        // Host B refuses: claiming A's EK is caught before the TPM is asked...
        let ak_b = b.create_attestation_key(alg).unwrap();
        let err = b
            .activate_credential(&ak_b, &ek_a, &blob, &enc)
            .unwrap_err();
        assert!(matches!(err, TpmError::EkMismatch), "{err}");
        // ...and with its own EK the TPM cannot decrypt the seed.
        let err = b
            .activate_credential(&ak_b, &ek_b, &blob, &enc)
            .unwrap_err();
        assert!(
            matches!(
                err,
                TpmError::Command {
                    op: "activate credential",
                    ..
                }
            ),
            "{err}"
        );

        // A credential bound to a different AK name fails on the right TPM too.
        let (blob2, enc2) = b.make_credential(&ek_a.public, &ak_b.name, secret).unwrap();
        let err = a
            .activate_credential(&ak_a, &ek_a, &blob2, &enc2)
            .unwrap_err();
        assert!(matches!(err, TpmError::Command { .. }), "{err}");
    }

    // Failed activations flushed their sessions and keys too.
    drop((a, b));
    for host in &hosts {
        assert_eq!(
            host.open().unwrap().loaded_handles().unwrap(),
            Vec::<u32>::new()
        );
    }
}
