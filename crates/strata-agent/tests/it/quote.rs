//! Boot simulation and quotes: a good host and a host with a tampered kernel.

use strata_agent::bootplan::{BootImages, BootPlan, EV_EFI_BOOT_SERVICES_APPLICATION};
use strata_agent::tpm::{AkAlgorithm, PcrBank};

use crate::support::{self, PublicKey};

const QUOTED: [u32; 5] = [0, 4, 7, 8, 14];

fn nonce() -> Vec<u8> {
    let mut n = vec![0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut n).unwrap();
    n
}

/// SHA-256 over the concatenated expected values of `pcrs` (absent ones are zero).
fn expected_pcr_digest(plan: &BootPlan, pcrs: &[u32]) -> Vec<u8> {
    let exp = plan.expected_pcrs(PcrBank::Sha256);
    let mut buf = Vec::new();
    for p in pcrs {
        buf.extend_from_slice(exp.get(p).map_or(&[0u8; 32][..], |v| v.as_slice()));
    }
    PcrBank::Sha256.hash(&buf)
}

/// QN(AK) = 0x000B || SHA-256(QN(EK) || Name(AK)); QN(EK) = 0x000B || SHA-256(TPM_RH_ENDORSEMENT || Name(EK)).
fn qualified_name(ek_name: &[u8], ak_name: &[u8]) -> Vec<u8> {
    let qn = |parent: &[u8], name: &[u8]| {
        let mut out = vec![0x00, 0x0b];
        out.extend_from_slice(&PcrBank::Sha256.hash(&[parent, name].concat()));
        out
    };
    qn(&qn(&0x4000_000bu32.to_be_bytes(), ek_name), ak_name)
}

#[test]
fn good_boot_quotes_the_plan_and_tampered_kernel_does_not() {
    let (_ca, hosts) = support::hosts(2);
    let golden = BootPlan::uefi(&BootImages::default());
    let tampered = BootPlan::uefi(&BootImages {
        kernel: b"vmlinuz-6.12.0-strata with a rootkit".to_vec(),
        ..BootImages::default()
    });
    let good_log = hosts[0].boot(&golden).unwrap();
    let bad_log = hosts[1].boot(&tampered).unwrap();
    assert_eq!(good_log, golden.to_log());
    assert_ne!(good_log, bad_log);

    for (host, plan, alg) in [
        (&hosts[0], &golden, AkAlgorithm::EccP256),
        (&hosts[1], &tampered, AkAlgorithm::Rsa2048),
    ] {
        let mut tpm = host.open().unwrap();
        // PCRs read back equal the plan's replay in both banks.
        for bank in PcrBank::ALL {
            let expected = plan.expected_pcrs(bank);
            let pcrs: Vec<u32> = expected.keys().copied().collect();
            let read = tpm.read_pcrs(bank, &pcrs).unwrap();
            assert_eq!(read, expected.into_iter().collect::<Vec<_>>(), "{bank:?}");
        }

        let ek_name = tpm.endorsement_key().unwrap().name;
        let ak = tpm.create_attestation_key(alg).unwrap();
        let n = nonce();
        let q = tpm.quote(&ak, &n, &QUOTED).unwrap();
        let info = support::parse_quote(&q.attest);
        assert_eq!(info.magic, 0xff54_4347, "TPM_GENERATED_VALUE");
        assert_eq!(info.ty, 0x8018, "TPM_ST_ATTEST_QUOTE");
        assert_eq!(info.extra_data, n);
        assert_eq!(info.signer, ak.qualified_name, "qualified signer is the ak");
        assert_eq!(info.signer, qualified_name(&ek_name, &ak.name));
        assert_eq!(info.safe, 1);
        // sha256, 3-byte select with PCRs 0, 4, 7, 8, 14.
        assert_eq!(info.selection, vec![(0x000b, vec![0x91, 0x41, 0x00])]);
        assert_eq!(info.pcr_digest, expected_pcr_digest(plan, &QUOTED));

        let (_, _, _, key) = support::parse_public(&ak.public);
        assert!(matches!(
            (&key, alg),
            (PublicKey::Ecc { .. }, AkAlgorithm::EccP256)
                | (PublicKey::Rsa { .. }, AkAlgorithm::Rsa2048)
        ));
        assert!(
            support::verify_signature(&key, &q.attest, &q.signature),
            "{alg:?}"
        );
        let mut forged = q.attest.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert!(!support::verify_signature(&key, &forged, &q.signature));

        // A second quote: fresh nonce, clock does not go backwards.
        let q2 = tpm.quote(&ak, &nonce(), &QUOTED).unwrap();
        let info2 = support::parse_quote(&q2.attest);
        assert_ne!(info2.extra_data, info.extra_data);
        assert!(info2.clock >= info.clock);

        // A nonce longer than TPM2B_DATA allows is refused up front.
        assert!(tpm.quote(&ak, &[0; 65], &QUOTED).is_err());

        // Nothing leaked: a fresh connection sees no transient objects or sessions.
        drop(tpm);
        assert_eq!(
            host.open().unwrap().loaded_handles().unwrap(),
            Vec::<u32>::new()
        );
    }

    // Against the golden plan, the tampered host's quoted PCRs differ, and the only event
    // that differs is the kernel application on PCR 4.
    assert_ne!(
        expected_pcr_digest(&tampered, &QUOTED),
        expected_pcr_digest(&golden, &QUOTED)
    );
    let diffs: Vec<_> = golden
        .events
        .iter()
        .zip(&tampered.events)
        .filter(|(g, t)| g != t)
        .map(|(g, _)| (g.pcr, g.event_type))
        .collect();
    assert_eq!(diffs, vec![(4, EV_EFI_BOOT_SERVICES_APPLICATION)]);
}
