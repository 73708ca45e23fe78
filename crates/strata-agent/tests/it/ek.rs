//! The endorsement key and its certificate, read back from a manufactured swtpm.

use crate::support::{self, PublicKey};

#[test]
fn ek_public_and_certificate_match_and_chain_to_the_test_ca() {
    let (ca, hosts) = support::hosts(1);
    let mut tpm = hosts[0].open().unwrap();
    let ek = tpm.endorsement_key().unwrap();

    let (ty, name_alg, attrs, key) = support::parse_public(&ek.public);
    assert_eq!(ty, 0x0001, "ek is rsa");
    assert_eq!(name_alg, 0x000b, "ek name alg is sha256");
    // fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt
    assert_eq!(attrs, 0x0003_00b2);
    let PublicKey::Rsa { modulus } = key else {
        panic!("not rsa")
    };
    assert_eq!(modulus.len(), 256);

    // Name = nameAlg || SHA-256(TPMT_PUBLIC).
    let mut name = vec![0x00, 0x0b];
    name.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, &ek.public[2..]).as_ref());
    assert_eq!(ek.name, name);

    let cert = ek
        .certificate
        .expect("swtpm_setup --create-ek-cert provisions a certificate");
    let (cert_modulus, issuer) = support::cert_rsa_modulus_and_issuer(&cert);
    assert_eq!(cert_modulus, modulus, "certificate key is the ek");
    let issuer_subject = support::pem_subject(&ca.issuer_cert_pem().unwrap());
    assert_eq!(
        issuer, issuer_subject,
        "ek certificate issued by the test ca"
    );

    // The EK stays loaded while the context lives (the leak check can see it) and is
    // flushed when the context is dropped.
    let loaded = tpm.loaded_handles().unwrap();
    assert_eq!(loaded.len(), 1, "{loaded:x?}");
    assert_eq!(loaded[0] >> 24, 0x80);

    // Deterministic: a second context derives the same EK.
    drop(tpm);
    let again = hosts[0].open().unwrap().endorsement_key().unwrap();
    assert_eq!(again.public, ek.public);
    assert_eq!(
        hosts[0].open().unwrap().loaded_handles().unwrap(),
        Vec::<u32>::new()
    );
}

#[test]
fn bad_tcti_strings_are_refused_with_a_clear_error() {
    let err = strata_agent::tpm::Tpm::open("usb:/dev/nope").unwrap_err();
    assert!(err.to_string().contains("invalid tcti"), "{err}");
}
