//! `x509`: certificate parsing and chain verification, with chains made by
//! rcgen and a real swtpm EK certificate chain.

use proptest::prelude::*;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, date_time_ymd,
};
use strata_identity::x509::{Certificate, MAX_CHAIN_DEPTH, X509Error, verify_chain};

use crate::fixture;

/// 2030-01-01T00:00:00Z.
const NOW: i64 = 1_893_456_000;
/// 2020-01-01T00:00:00Z.
const Y2020: i64 = 1_577_836_800;
/// 2060-01-01T00:00:00Z (encoded as GeneralizedTime).
const Y2060: i64 = 2_840_140_800;

fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/it/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(path).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Strata Test");
    dn.push(DnType::CommonName, cn);
    dn
}

fn params(cn: &str, is_ca: IsCa) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = name(cn);
    p.is_ca = is_ca;
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2060, 1, 1);
    p
}

fn ca(cn: &str) -> CertificateParams {
    params(cn, IsCa::Ca(BasicConstraints::Unconstrained))
}

fn leaf_params(cn: &str) -> CertificateParams {
    params(cn, IsCa::ExplicitNoCa)
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

fn p384() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap()
}

fn rsa(alg: &'static rcgen::SignatureAlgorithm) -> KeyPair {
    KeyPair::from_pem_and_sign_algo(&fixture("rsa-2048.key.pem"), alg).unwrap()
}

/// A generated certificate with its parameters and key, able to issue more.
struct Node {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

impl Node {
    fn root(params: CertificateParams, key: KeyPair) -> Node {
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Node { params, key, der }
    }

    fn issue(&self, params: CertificateParams, key: KeyPair) -> Node {
        let issuer = Issuer::from_params(&self.params, &self.key);
        let der = params.signed_by(&key, &issuer).unwrap().der().to_vec();
        Node { params, key, der }
    }

    fn cert(&self) -> Certificate {
        Certificate::from_der(&self.der).unwrap()
    }
}

fn ders<'a>(chain: &[&'a Certificate]) -> Vec<&'a [u8]> {
    chain.iter().map(|c| c.der()).collect()
}

/// root (P-384) → intermediate (P-256) → leaf (P-256).
fn ec_chain() -> (Node, Node, Node) {
    let root = Node::root(ca("Test Root"), p384());
    let intermediate = root.issue(ca("Test Intermediate"), p256());
    let leaf = intermediate.issue(leaf_params("Test Leaf"), p256());
    (root, intermediate, leaf)
}

#[test]
fn ecdsa_chain_verifies() {
    let (root, intermediate, leaf) = ec_chain();
    let (root, intermediate, leaf) = (root.cert(), intermediate.cert(), leaf.cert());
    let intermediates = [intermediate.clone()];
    let anchors = [root.clone()];
    let chain = verify_chain(&leaf, &intermediates, &anchors, NOW).unwrap();
    assert_eq!(
        ders(&chain),
        vec![leaf.der(), intermediate.der(), root.der()]
    );

    assert_eq!(root.subject_summary(), "CN=Test Root, O=Strata Test");
    assert_eq!(leaf.issuer_der(), intermediate.subject_der());
    assert!(root.is_ca() && intermediate.is_ca() && !leaf.is_ca());
    assert_eq!((leaf.not_before(), leaf.not_after()), (Y2020, Y2060));
    assert!(leaf.rsa_public_key().is_none());
    assert_eq!(leaf.spki_der()[0], 0x30);
    let debug = format!("{leaf:?}");
    assert!(debug.contains("CN=Test Leaf"), "{debug}");

    // Valid at both ends of the validity period, inclusive.
    verify_chain(&leaf, &intermediates, &anchors, Y2020).unwrap();
    verify_chain(&leaf, &intermediates, &anchors, Y2060).unwrap();
}

#[test]
fn rsa_chains_verify() {
    for alg in [
        &rcgen::PKCS_RSA_SHA256,
        &rcgen::PKCS_RSA_SHA384,
        &rcgen::PKCS_RSA_SHA512,
    ] {
        let root = Node::root(ca("RSA Root"), rsa(alg));
        let intermediate = root.issue(ca("EC Intermediate"), p256());
        // An RSA leaf, like an EK (the fixture key is RSA-2048).
        let leaf = intermediate.issue(leaf_params("RSA Leaf"), rsa(alg));
        let (root, intermediate, leaf) = (root.cert(), intermediate.cert(), leaf.cert());
        let chain = verify_chain(
            &leaf,
            std::slice::from_ref(&intermediate),
            std::slice::from_ref(&root),
            NOW,
        )
        .unwrap();
        assert_eq!(chain.len(), 3);
        let (modulus, exponent) = leaf.rsa_public_key().unwrap();
        assert_eq!(modulus.len(), 256);
        assert!(modulus[0] & 0x80 != 0);
        assert_eq!(exponent, vec![0x01, 0x00, 0x01]);
    }
}

#[test]
fn openssl_self_signed_certificates_verify() {
    for name in [
        "rsa-2048.cert.pem",       // sha256WithRSAEncryption
        "ec-p256.cert.pem",        // ecdsa-with-SHA256 on P-256
        "ec-p384.cert.pem",        // ecdsa-with-SHA256 on P-384
        "rsa-pss-sha256.cert.pem", // RSASSA-PSS, SHA-256, salt 32
        "rsa-pss-sha384.cert.pem", // RSASSA-PSS, SHA-384, salt 48
    ] {
        let certs = Certificate::from_pem_bundle(&fixture(name)).unwrap();
        assert_eq!(certs.len(), 1, "{name}");
        let cert = &certs[0];
        assert!(cert.is_ca(), "{name}");
        cert.verify_signed_by(cert)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn intermediates_in_any_order_with_decoys() {
    let root = Node::root(ca("Test Root"), p256());
    let first = root.issue(ca("First"), p256());
    let second = first.issue(ca("Second"), p384());
    let leaf = second.issue(leaf_params("Leaf"), p256());
    // Same name as `first`, different key: its signature on `second` fails.
    let decoy = root.issue(ca("First"), p256());
    let unrelated = root.issue(ca("Unrelated"), p256());
    let intermediates = [unrelated.cert(), decoy.cert(), second.cert(), first.cert()];
    let anchors = [Node::root(ca("Other Root"), p256()).cert(), root.cert()];
    let leaf = leaf.cert();
    let chain = verify_chain(&leaf, &intermediates, &anchors, NOW).unwrap();
    assert_eq!(
        ders(&chain),
        vec![leaf.der(), &second.der[..], &first.der[..], &root.der[..]]
    );

    // An anchor that is itself an intermediate ends the chain there.
    let anchors = [first.cert()];
    let chain = verify_chain(&leaf, &intermediates, &anchors, NOW).unwrap();
    assert_eq!(
        ders(&chain),
        vec![leaf.der(), &second.der[..], &first.der[..]]
    );
}

#[test]
fn wrong_anchor() {
    let (_, intermediate, leaf) = ec_chain();
    let (intermediate, leaf) = (intermediate.cert(), leaf.cert());
    let intermediates = [intermediate];

    let other = Node::root(ca("Other Root"), p256()).cert();
    assert_eq!(
        verify_chain(&leaf, &intermediates, &[other], NOW),
        Err(X509Error::NoPathToAnchor {
            issuer: "CN=Test Root, O=Strata Test".into()
        })
    );

    // Right name, wrong key.
    let impostor = Node::root(ca("Test Root"), p384()).cert();
    assert_eq!(
        verify_chain(&leaf, &intermediates, &[impostor], NOW),
        Err(X509Error::BadSignature {
            subject: "CN=Test Intermediate, O=Strata Test".into()
        })
    );

    // No intermediates, no anchors.
    assert_eq!(
        verify_chain(&leaf, &[], &[], NOW),
        Err(X509Error::NoPathToAnchor {
            issuer: "CN=Test Intermediate, O=Strata Test".into()
        })
    );
}

#[test]
fn issuer_names_match_across_string_types() {
    // The CA's subject uses PrintableString; the leaf names its issuer with
    // UTF8String, different case and extra spaces (as some EK certificates do).
    let key = p256();
    let mut subject = ca("unused");
    subject.distinguished_name = DistinguishedName::new();
    subject.distinguished_name.push(
        DnType::CommonName,
        DnValue::PrintableString("TPM Root CA".try_into().unwrap()),
    );
    let anchor = Node::root(subject, key);
    let mut as_named = ca("unused");
    as_named.distinguished_name = DistinguishedName::new();
    as_named
        .distinguished_name
        .push(DnType::CommonName, "tpm  root ca ");
    let issuer = Issuer::from_params(&as_named, &anchor.key);
    let leaf = leaf_params("Leaf").signed_by(&p256(), &issuer).unwrap();
    let leaf = Certificate::from_der(leaf.der()).unwrap();
    assert_ne!(leaf.issuer_der(), anchor.cert().subject_der());
    leaf.verify_signed_by(&anchor.cert()).unwrap();
    let anchors = [anchor.cert()];
    assert_eq!(verify_chain(&leaf, &[], &anchors, NOW).unwrap().len(), 2);
}

#[test]
fn tampered_certificates() {
    let (root, intermediate, leaf) = ec_chain();
    let intermediates = [intermediate.cert()];
    let anchors = [root.cert()];

    // Last byte of the signature.
    let mut der = leaf.der.clone();
    *der.last_mut().unwrap() ^= 0x01;
    let tampered = Certificate::from_der(&der).unwrap();
    assert_eq!(
        verify_chain(&tampered, &intermediates, &anchors, NOW),
        Err(X509Error::BadSignature {
            subject: "CN=Test Leaf, O=Strata Test".into()
        })
    );

    // A byte of the signed subject name.
    let mut der = leaf.der.clone();
    let at = der.windows(9).rposition(|w| w == b"Test Leaf").unwrap();
    der[at] = b'B';
    let tampered = Certificate::from_der(&der).unwrap();
    assert_eq!(
        tampered.verify_signed_by(&intermediates[0]),
        Err(X509Error::BadSignature {
            subject: "CN=Best Leaf, O=Strata Test".into()
        })
    );
}

#[test]
fn validity_periods() {
    let (root, intermediate, _) = ec_chain();
    let mut expired = leaf_params("Expired Leaf");
    expired.not_after = date_time_ymd(2025, 1, 1);
    let leaf = intermediate.issue(expired, p256()).cert();
    let intermediates = [intermediate.cert()];
    let anchors = [root.cert()];
    assert_eq!(
        verify_chain(&leaf, &intermediates, &anchors, NOW),
        Err(X509Error::Expired {
            subject: "CN=Expired Leaf, O=Strata Test".into(),
            not_after: 1_735_689_600,
        })
    );
    assert!(verify_chain(&leaf, &intermediates, &anchors, 1_735_689_600).is_ok());

    // An intermediate that is not valid yet; 1999 is a UTCTime in the 1900s.
    let mut future = ca("Future Intermediate");
    future.not_before = date_time_ymd(2031, 1, 1);
    let mut old = ca("Old Root");
    old.not_before = date_time_ymd(1999, 6, 1);
    let root = Node::root(old, p256());
    let future = root.issue(future, p256());
    let leaf = future.issue(leaf_params("Leaf"), p256()).cert();
    assert_eq!(root.cert().not_before(), 928_195_200);
    assert_eq!(
        verify_chain(&leaf, &[future.cert()], &[root.cert()], NOW),
        Err(X509Error::NotYetValid {
            subject: "CN=Future Intermediate, O=Strata Test".into(),
            not_before: 1_924_992_000,
        })
    );

    // The anchor's validity is checked too.
    let mut expired_root = ca("Expired Root");
    expired_root.not_after = date_time_ymd(2029, 12, 31);
    let root = Node::root(expired_root, p256());
    let leaf = root.issue(leaf_params("Leaf"), p256()).cert();
    assert!(matches!(
        verify_chain(&leaf, &[], &[root.cert()], NOW),
        Err(X509Error::Expired { subject, .. }) if subject == "CN=Expired Root, O=Strata Test"
    ));
}

#[test]
fn non_ca_intermediate() {
    let root = Node::root(ca("Test Root"), p256());
    for is_ca in [IsCa::ExplicitNoCa, IsCa::NoCa] {
        let intermediate = root.issue(params("Not A CA", is_ca), p256());
        let leaf = intermediate.issue(leaf_params("Leaf"), p256()).cert();
        assert_eq!(
            verify_chain(&leaf, &[intermediate.cert()], &[root.cert()], NOW),
            Err(X509Error::NotCa {
                subject: "CN=Not A CA, O=Strata Test".into()
            })
        );
    }

    // A CA whose keyUsage does not include keyCertSign.
    let mut signer = ca("Signing Only");
    signer.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let intermediate = root.issue(signer, p256());
    let leaf = intermediate.issue(leaf_params("Leaf"), p256()).cert();
    assert_eq!(
        verify_chain(&leaf, &[intermediate.cert()], &[root.cert()], NOW),
        Err(X509Error::NotCertSigner {
            subject: "CN=Signing Only, O=Strata Test".into()
        })
    );
    // With keyCertSign it is fine.
    let mut signer = ca("Cert Signer");
    signer.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let intermediate = root.issue(signer, p256());
    let leaf = intermediate.issue(leaf_params("Leaf"), p256()).cert();
    verify_chain(&leaf, &[intermediate.cert()], &[root.cert()], NOW).unwrap();
}

#[test]
fn path_length_constraints() {
    for (max, ok) in [(0u8, false), (1, true)] {
        let root = Node::root(
            params(
                "Constrained Root",
                IsCa::Ca(BasicConstraints::Constrained(max)),
            ),
            p256(),
        );
        let intermediate = root.issue(ca("Intermediate"), p256());
        let leaf = intermediate.issue(leaf_params("Leaf"), p256()).cert();
        let (intermediates, anchors) = ([intermediate.cert()], [root.cert()]);
        let result = verify_chain(&leaf, &intermediates, &anchors, NOW);
        if ok {
            assert_eq!(result.unwrap().len(), 3);
        } else {
            assert_eq!(
                result,
                Err(X509Error::PathLenExceeded {
                    subject: "CN=Constrained Root, O=Strata Test".into(),
                    max: 0
                })
            );
            // pathLen 0 still allows signing the leaf directly.
            let direct = root.issue(leaf_params("Leaf"), p256()).cert();
            verify_chain(&direct, &[], &[root.cert()], NOW).unwrap();
        }
    }
}

#[test]
fn chain_depth_is_limited() {
    let root = Node::root(ca("Root"), p256());
    let mut nodes = vec![root];
    for i in 0..MAX_CHAIN_DEPTH {
        let next = nodes.last().unwrap().issue(ca(&format!("CA {i}")), p256());
        nodes.push(next);
    }
    let anchors = [nodes[0].cert()];
    let all: Vec<Certificate> = nodes[1..].iter().map(Node::cert).collect();

    // MAX_CHAIN_DEPTH certificates above the leaf: root + 3 intermediates.
    let leaf = nodes[MAX_CHAIN_DEPTH - 1]
        .issue(leaf_params("Leaf"), p256())
        .cert();
    let chain = verify_chain(&leaf, &all, &anchors, NOW).unwrap();
    assert_eq!(chain.len(), MAX_CHAIN_DEPTH + 1);

    // One more is too many.
    let leaf = nodes[MAX_CHAIN_DEPTH]
        .issue(leaf_params("Leaf"), p256())
        .cert();
    assert_eq!(
        verify_chain(&leaf, &all, &anchors, NOW),
        Err(X509Error::ChainTooLong {
            max: MAX_CHAIN_DEPTH
        })
    );
}

#[test]
fn cross_signed_loop_terminates() {
    let a_params = ca("Loop A");
    let b_params = ca("Loop B");
    let (a_key, b_key) = (p256(), p256());
    let a = a_params
        .signed_by(&a_key, &Issuer::from_params(&b_params, &b_key))
        .unwrap();
    let b = b_params
        .signed_by(&b_key, &Issuer::from_params(&a_params, &a_key))
        .unwrap();
    let leaf = leaf_params("Leaf")
        .signed_by(&p256(), &Issuer::from_params(&a_params, &a_key))
        .unwrap();
    let intermediates = [
        Certificate::from_der(a.der()).unwrap(),
        Certificate::from_der(b.der()).unwrap(),
    ];
    let leaf = Certificate::from_der(leaf.der()).unwrap();
    let anchors = [Node::root(ca("Root"), p256()).cert()];
    assert_eq!(
        verify_chain(&leaf, &intermediates, &anchors, NOW),
        Err(X509Error::NoPathToAnchor {
            issuer: "CN=Loop A, O=Strata Test".into()
        })
    );
}

#[test]
fn many_decoys_hit_the_search_limit() {
    let root = Node::root(ca("Root"), p256());
    let leaf = root.issue(leaf_params("Leaf"), p256()).cert();
    // 40 certificates named like the root, none with its key, none anchored.
    let decoys: Vec<Certificate> = (0..40)
        .map(|_| root.issue(ca("Root"), p256()).cert())
        .collect();
    assert!(matches!(
        verify_chain(&leaf, &decoys, &[], NOW),
        Err(X509Error::SearchLimit { .. })
    ));
}

#[test]
fn issuer_and_algorithm_mismatches() {
    let (root, intermediate, leaf) = ec_chain();
    let (root, intermediate, leaf) = (root.cert(), intermediate.cert(), leaf.cert());
    assert_eq!(
        leaf.verify_signed_by(&root),
        Err(X509Error::IssuerMismatch {
            subject: "CN=Test Leaf, O=Strata Test".into(),
            issuer: "CN=Test Intermediate, O=Strata Test".into(),
            candidate: "CN=Test Root, O=Strata Test".into(),
        })
    );
    leaf.verify_signed_by(&intermediate).unwrap();

    // An RSA CA with the EC intermediate's name cannot check ECDSA.
    let rsa_ca = Node::root(ca("Test Intermediate"), rsa(&rcgen::PKCS_RSA_SHA256)).cert();
    assert_eq!(
        leaf.verify_signed_by(&rsa_ca),
        Err(X509Error::KeyMismatch {
            subject: "CN=Test Intermediate, O=Strata Test".into(),
            algorithm: "ECDSA SHA-256".into(),
        })
    );

    // Ed25519 parses but is not supported for signatures.
    let ed = Node::root(
        ca("Ed Root"),
        KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
    );
    let ed_leaf = ed.issue(leaf_params("Leaf"), p256()).cert();
    assert_eq!(
        ed_leaf.verify_signed_by(&ed.cert()),
        Err(X509Error::UnsupportedAlgorithm("1.3.101.112".into()))
    );
    // ...but an Ed25519 leaf key is fine under an ECDSA CA.
    let (root_node, _, _) = ec_chain();
    let ed_key_leaf = root_node
        .issue(
            leaf_params("Ed Leaf"),
            KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        )
        .cert();
    verify_chain(&ed_key_leaf, &[], &[root_node.cert()], NOW).unwrap();
}

/// The TCG EK shape: empty subject, critical SAN with a directoryName of TPM
/// attributes, the EK EKU, and an unknown critical extension.
#[test]
fn ek_shaped_leaf_with_empty_subject_and_critical_san() {
    let (root, intermediate, _) = ec_chain();
    let mut p = leaf_params("unused");
    p.distinguished_name = DistinguishedName::new();
    // SEQUENCE { [4] { Name { TPMManufacturer, TPMModel, TPMVersion } } },
    // as swtpm writes it.
    let san = hex(
        "3046a444304231163014060567810502010c0b69643a30303030313031343110300e060567810502020c05737774706d31163014060567810502030c0b69643a3230313931303233",
    );
    let mut san = CustomExtension::from_oid_content(&[2, 5, 29, 17], san);
    san.set_criticality(true);
    let eku = CustomExtension::from_oid_content(&[2, 5, 29, 37], hex("300706056781050801"));
    let mut unknown =
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
    unknown.set_criticality(true);
    p.custom_extensions = vec![san, eku, unknown];
    let leaf = intermediate.issue(p, p256()).cert();

    assert_eq!(leaf.subject_der(), &[0x30, 0x00]);
    assert_eq!(leaf.subject_summary(), "(empty)");
    let (intermediates, anchors) = ([intermediate.cert()], [root.cert()]);
    let chain = verify_chain(&leaf, &intermediates, &anchors, NOW).unwrap();
    assert_eq!(chain.len(), 3);

    // An empty-subject, expired EK is still reported by name summary.
    let mut p = leaf_params("unused");
    p.distinguished_name = DistinguishedName::new();
    p.not_after = date_time_ymd(2021, 1, 1);
    let leaf = intermediate.issue(p, p256()).cert();
    assert!(matches!(
        verify_chain(&leaf, &[intermediate.cert()], &[root.cert()], NOW),
        Err(X509Error::Expired { subject, .. }) if subject == "(empty)"
    ));
}

fn swtpm_chain() -> (Certificate, Certificate, Certificate, Certificate) {
    let ek_rsa = Certificate::from_der(&fixture_bytes("swtpm-ek-rsa2048.der")).unwrap();
    let ek_ecc = Certificate::from_der(&fixture_bytes("swtpm-ek-secp384r1.der")).unwrap();
    let mut issuer = Certificate::from_pem_bundle(&fixture("swtpm-localca-issuer.pem")).unwrap();
    let mut root = Certificate::from_pem_bundle(&fixture("swtpm-localca-root.pem")).unwrap();
    assert_eq!((issuer.len(), root.len()), (1, 1));
    (ek_rsa, ek_ecc, issuer.remove(0), root.remove(0))
}

#[test]
fn swtpm_ek_certificates_verify_to_their_root() {
    let (ek_rsa, ek_ecc, issuer, root) = swtpm_chain();
    let now = ek_rsa.not_before() + 60;
    assert_eq!(ek_rsa.not_after(), 253_402_300_799); // 9999-12-31T23:59:59Z
    assert_eq!(ek_rsa.subject_summary(), "CN=unknown");
    assert_eq!(issuer.subject_summary(), "CN=swtpm-localca");
    assert_eq!(root.subject_summary(), "CN=swtpm-localca-rootca");
    assert!(!ek_rsa.is_ca() && issuer.is_ca() && root.is_ca());

    let (modulus, exponent) = ek_rsa.rsa_public_key().unwrap();
    assert_eq!(modulus.len(), 256);
    assert_eq!(exponent, vec![0x01, 0x00, 0x01]);
    assert!(ek_ecc.rsa_public_key().is_none());

    let intermediates = [issuer.clone()];
    let anchors = [root.clone()];
    for ek in [&ek_rsa, &ek_ecc] {
        let chain = verify_chain(ek, &intermediates, &anchors, now).unwrap();
        assert_eq!(ders(&chain), vec![ek.der(), issuer.der(), root.der()]);
        // The issuing CA alone as the anchor.
        let chain = verify_chain(ek, &[], &intermediates, now).unwrap();
        assert_eq!(chain.len(), 2);
    }

    // A bundle of both CAs, in any order, as intermediates and anchors.
    let bundle = format!(
        "{}{}",
        fixture("swtpm-localca-root.pem"),
        fixture("swtpm-localca-issuer.pem")
    );
    let cas = Certificate::from_pem_bundle(&bundle).unwrap();
    assert_eq!(cas.len(), 2);
    assert_eq!(
        verify_chain(&ek_rsa, &cas, std::slice::from_ref(&cas[0]), now)
            .unwrap()
            .len(),
        3
    );

    assert_eq!(
        verify_chain(&ek_rsa, &[], &anchors, now),
        Err(X509Error::NoPathToAnchor {
            issuer: "CN=swtpm-localca".into()
        })
    );
    assert!(matches!(
        verify_chain(&ek_rsa, &intermediates, &anchors, ek_rsa.not_before() - 1),
        Err(X509Error::NotYetValid { .. })
    ));
    // The EK is not a CA: nothing chains through it.
    assert_eq!(
        ek_ecc.verify_signed_by(&ek_rsa),
        Err(X509Error::IssuerMismatch {
            subject: "CN=unknown".into(),
            issuer: "CN=swtpm-localca".into(),
            candidate: "CN=unknown".into(),
        })
    );
}

#[test]
fn pem_bundles() {
    let text = format!(
        "Issuer:\n{}\nsome key:\n{}\nRoot:\n{}",
        fixture("swtpm-localca-issuer.pem"),
        fixture("ec-p256.key.pem"),
        fixture("swtpm-localca-root.pem"),
    );
    let certs = Certificate::from_pem_bundle(&text).unwrap();
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[1].subject_summary(), "CN=swtpm-localca-rootca");

    assert!(matches!(
        Certificate::from_pem_bundle(""),
        Err(X509Error::Pem(_))
    ));
    assert!(matches!(
        Certificate::from_pem_bundle(&fixture("ec-p256.key.pem")),
        Err(X509Error::Pem(_))
    ));
    assert!(matches!(
        Certificate::from_pem_bundle("-----BEGIN CERTIFICATE-----\nAAAA\n"),
        Err(X509Error::Pem(_))
    ));
    assert!(matches!(
        Certificate::from_pem_bundle(
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"
        ),
        Err(X509Error::Pem(_))
    ));
    assert!(matches!(
        Certificate::from_pem_bundle(
            "-----BEGIN CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        ),
        Err(X509Error::Pem(_))
    ));
    let second_bad = format!(
        "{}-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        fixture("swtpm-localca-root.pem")
    );
    assert!(matches!(
        Certificate::from_pem_bundle(&second_bad),
        Err(X509Error::Malformed(at)) if at.starts_with("pem block 2: ")
    ));
}

#[test]
fn malformed_certificates() {
    let der = fixture_bytes("swtpm-ek-rsa2048.der");
    let malformed =
        |bytes: &[u8]| matches!(Certificate::from_der(bytes), Err(X509Error::Malformed(_)));

    assert!(malformed(&[]));
    assert!(malformed(&[0x30, 0x00]));
    let mut trailing = der.clone();
    trailing.push(0x00);
    assert!(malformed(&trailing));
    assert!(malformed(&der[..der.len() - 1]));
    assert!(malformed(&[0x30; 20_000]));

    // tbsCertificate.signature (offset 16, sha256WithRSAEncryption) changed
    // to sha384WithRSAEncryption: no longer equal to signatureAlgorithm.
    let mut inner = der.clone();
    assert_eq!(&inner[18..29], &hex("06092a864886f70d01010b")[..]);
    inner[28] = 0x0c;
    assert!(matches!(
        Certificate::from_der(&inner),
        Err(X509Error::Malformed(at)) if at.contains("differs")
    ));

    // notAfter GeneralizedTime "99991231235959Z" → month 13.
    let mut bad_time = der.clone();
    let at = bad_time
        .windows(15)
        .position(|w| w == b"99991231235959Z")
        .unwrap();
    bad_time[at + 4..at + 6].copy_from_slice(b"13");
    assert_eq!(
        Certificate::from_der(&bad_time),
        Err(X509Error::Malformed(
            "tbsCertificate.validity.notAfter".into()
        ))
    );

    // A duplicated extension.
    let mut p = ca("Duplicate");
    p.custom_extensions = vec![CustomExtension::from_oid_content(
        &[2, 5, 29, 19],
        hex("30030101ff"),
    )];
    let dup = Node::root(p, p256());
    assert_eq!(
        Certificate::from_der(&dup.der),
        Err(X509Error::Malformed(
            "extensions: 2.5.29.19 appears twice".into()
        ))
    );
}

fn mutate(mut der: Vec<u8>, edits: Vec<(prop::sample::Index, u8)>) -> Vec<u8> {
    for (i, b) in edits {
        let i = i.index(der.len());
        der[i] = b;
    }
    der
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn from_der_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Certificate::from_der(&bytes);
        let mut framed = vec![0x30, 0x82, (bytes.len() >> 8) as u8, bytes.len() as u8];
        framed.extend_from_slice(&bytes);
        let _ = Certificate::from_der(&framed);
    }

    #[test]
    fn mutated_ek_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        ecc in any::<bool>(),
    ) {
        let name = if ecc { "swtpm-ek-secp384r1.der" } else { "swtpm-ek-rsa2048.der" };
        let der = mutate(fixture_bytes(name), edits);
        let (_, _, issuer, root) = swtpm_chain();
        if let Ok(cert) = Certificate::from_der(&der) {
            let _ = cert.subject_summary();
            let _ = cert.rsa_public_key();
            let _ = verify_chain(&cert, std::slice::from_ref(&issuer), std::slice::from_ref(&root), cert.not_before());
        }
        let keep = cut.index(der.len());
        let _ = Certificate::from_der(&der[..keep]);
    }

    #[test]
    fn mutated_ca_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let (ek, _, issuer, root) = swtpm_chain();
        let der = mutate(issuer.der().to_vec(), edits);
        if let Ok(cert) = Certificate::from_der(&der) {
            let _ = cert.subject_summary();
            let _ = ek.verify_signed_by(&cert);
            let _ = verify_chain(&ek, std::slice::from_ref(&cert), std::slice::from_ref(&root), ek.not_before());
        }
    }

    #[test]
    fn pem_bundle_never_panics(s in any::<String>()) {
        let _ = Certificate::from_pem_bundle(&s);
        let _ = Certificate::from_pem_bundle(&format!("-----BEGIN CERTIFICATE-----\n{s}\n-----END CERTIFICATE-----"));
    }
}
