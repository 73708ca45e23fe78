//! The real OVMF + swtpm log (shim → GRUB → Linux, Secure Boot on) replays exactly to the
//! PCRs read inside the guest, and appraises cleanly against a policy captured from it.

use std::collections::BTreeMap;

use ring::rand::SystemRandom;
use ring::signature::{self as rs, EcdsaKeyPair, KeyPair as _};
use strata_attest::eventlog::{
    EV_EFI_BOOT_SERVICES_APPLICATION, EventLog, initial_pcr_value, replay,
};
use strata_attest::policy::{AllowList, EventClass, ReferencePolicy};
use strata_attest::tpm::{
    AsymScheme, Attest, ClockInfo, EccCurve, EccPublic, PcrSelection, Public, PublicKey, QuoteInfo,
    Signature, TPM_GENERATED_VALUE, attr,
};
use strata_attest::{Digest, Evidence, Failure, HashAlg, appraise};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ovmf-swtpm");

fn log_bytes() -> Vec<u8> {
    std::fs::read(format!("{DIR}/binary_bios_measurements")).unwrap()
}

/// `pcrs.json`: bank → PCR → value.
fn guest_pcrs() -> BTreeMap<HashAlg, BTreeMap<u32, Vec<u8>>> {
    let text = std::fs::read_to_string(format!("{DIR}/pcrs.json")).unwrap();
    let raw: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_str(&text).unwrap();
    raw.into_iter()
        .map(|(bank, pcrs)| {
            let bank = match bank.as_str() {
                "sha1" => HashAlg::Sha1,
                "sha256" => HashAlg::Sha256,
                other => panic!("unexpected bank {other}"),
            };
            let pcrs = pcrs
                .into_iter()
                .map(|(i, v)| (i.parse().unwrap(), Digest::from_hex(&v).unwrap().0))
                .collect();
            (bank, pcrs)
        })
        .collect()
}

#[test]
fn the_real_log_parses_and_re_encodes_byte_for_byte() {
    let bytes = log_bytes();
    let log = EventLog::parse(&bytes).unwrap();
    assert_eq!(
        log.events.len(),
        46,
        "47 events including the Spec ID header"
    );
    assert_eq!(log.banks(), vec![HashAlg::Sha1, HashAlg::Sha256]);
    assert_eq!(log.encode(), bytes);
    assert_eq!(
        log.startup_locality(),
        None,
        "OVMF starts the TPM from locality 0"
    );
}

#[test]
fn the_real_log_replays_exactly_to_the_guest_pcrs() {
    let log = EventLog::parse(&log_bytes()).unwrap();
    for (bank, guest) in guest_pcrs() {
        let replayed = replay(&log, bank).unwrap();
        assert_eq!(
            replayed.keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14],
            "{bank}"
        );
        for (pcr, value) in &guest {
            // PCR 10 belongs to the guest kernel's IMA log, not the firmware's.
            if *pcr == 10 {
                continue;
            }
            let expected = replayed
                .get(pcr)
                .cloned()
                .unwrap_or_else(|| initial_pcr_value(*pcr, bank));
            assert_eq!(
                Digest(expected),
                Digest(value.clone()),
                "{bank} pcr {pcr} (the DRTM pcrs 17-22 must start at all ones)"
            );
        }
    }
}

#[test]
fn the_real_log_decodes_the_boot_chain() {
    let log = EventLog::parse(&log_bytes()).unwrap();
    let numbered: Vec<_> = log.numbered().collect();
    let apps: Vec<_> = numbered
        .iter()
        .filter(|(_, e)| e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
        .map(|(i, e)| (*i, e.image_load().unwrap().unwrap().file_path()))
        .collect();
    assert_eq!(
        apps,
        vec![
            (24, Some("\\EFI\\BOOT\\BOOTX64.EFI".to_owned())),
            (30, Some("\\EFI\\BOOT\\grubx64.efi".to_owned())),
            (39, None),
            (40, None),
        ]
    );
    let cmdlines: Vec<String> = log
        .events
        .iter()
        .filter_map(|e| e.kernel_cmdline())
        .collect();
    assert_eq!(cmdlines, vec!["/vmlinuz console=ttyS0 quiet panic=-1"]);
    let sb: Vec<_> = log
        .events
        .iter()
        .filter(|e| EventClass::of(e) == Some(EventClass::SecureBoot))
        .map(|e| e.variable().unwrap().unwrap().data)
        .collect();
    assert_eq!(sb, vec![vec![1]]);
    // Every event whose data the appraisal reads is bound to its digest in both banks.
    for e in &log.events {
        if EventClass::of(e).is_some_and(|c| c.variable().is_some()) || e.kernel_cmdline().is_some()
        {
            assert!(
                e.data_is_bound(HashAlg::Sha256) && e.data_is_bound(HashAlg::Sha1),
                "{e:?}"
            );
        }
    }
}

/// A software ECDSA key standing in for the TPM's AK.
fn soft_ak() -> (EcdsaKeyPair, Public) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&rs::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&rs::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .unwrap();
    let p = pair.public_key().as_ref().to_vec();
    let public = Public {
        name_alg: HashAlg::Sha256,
        attributes: attr::FIXED_TPM
            | attr::FIXED_PARENT
            | attr::SENSITIVE_DATA_ORIGIN
            | attr::USER_WITH_AUTH
            | attr::RESTRICTED
            | attr::SIGN_ENCRYPT,
        auth_policy: vec![],
        key: PublicKey::Ecc(EccPublic {
            symmetric: None,
            scheme: AsymScheme::Ecdsa(HashAlg::Sha256),
            curve: EccCurve::NistP256,
            kdf: None,
            x: p[1..33].to_vec(),
            y: p[33..].to_vec(),
        }),
    };
    (pair, public)
}

fn quote(pair: &EcdsaKeyPair, pcrs: &BTreeMap<u32, Vec<u8>>, nonce: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let order: Vec<u32> = pcrs.keys().copied().collect();
    let concat: Vec<u8> = pcrs.values().flatten().copied().collect();
    let attest = Attest {
        magic: TPM_GENERATED_VALUE,
        qualified_signer: vec![0, 0x0b],
        extra_data: nonce.to_vec(),
        clock_info: ClockInfo {
            clock: 1,
            reset_count: 0,
            restart_count: 0,
            safe: true,
        },
        firmware_version: 0,
        quote: QuoteInfo {
            pcr_select: vec![PcrSelection::new(HashAlg::Sha256, &order)],
            pcr_digest: HashAlg::Sha256.hash(&concat),
        },
    }
    .encode();
    let sig = pair.sign(&SystemRandom::new(), &attest).unwrap();
    let sig = Signature::Ecdsa {
        hash: HashAlg::Sha256,
        r: sig.as_ref()[..32].to_vec(),
        s: sig.as_ref()[32..].to_vec(),
    };
    (attest, sig.encode())
}

#[test]
fn the_real_log_appraises_against_a_policy_captured_from_it() {
    const QUOTED: [u32; 7] = [0, 1, 4, 7, 8, 9, 14];
    let bytes = log_bytes();
    let log = EventLog::parse(&bytes).unwrap();
    let guest = &guest_pcrs()[&HashAlg::Sha256];
    let pcrs: BTreeMap<u32, Vec<u8>> = QUOTED.iter().map(|p| (*p, guest[p].clone())).collect();
    let (pair, ak) = soft_ak();
    let (attest, signature) = quote(&pair, &pcrs, b"nonce");
    let evidence = Evidence {
        attest,
        signature,
        pcrs,
        event_log: bytes,
        agent_measurements: vec![],
    };
    let policy = ReferencePolicy::golden(&log, HashAlg::Sha256, &QUOTED, &[]);
    assert!(policy.require_secure_boot);
    assert_eq!(
        policy.kernel_cmdlines,
        AllowList::Only(vec!["/vmlinuz console=ttyS0 quiet panic=-1".to_owned()])
    );
    assert_eq!(
        policy.boot_applications.entries().map(<[_]>::len),
        Some(3),
        "the kernel twice, one digest"
    );
    let v = appraise(&evidence, &ak, b"nonce", &policy, None);
    assert!(v.passed, "{}", v.reason());
    assert_eq!(v.boot.secure_boot, Some(true));
    assert_eq!(v.boot.boot_applications.len(), 4);
    assert_eq!(
        v.boot.kernel_path, None,
        "grub hands the kernel over from memory"
    );
    assert_eq!(
        v.boot.kernel_cmdline.as_deref(),
        Some("/vmlinuz console=ttyS0 quiet panic=-1")
    );

    // A policy that expects another kernel names the real kernel's events with both digests.
    let mut other = policy.clone();
    if let AllowList::Only(list) = &mut other.boot_applications {
        list.pop();
    }
    let v = appraise(&evidence, &ak, b"nonce", &other, None);
    let kernel_events: Vec<usize> = v
        .failures
        .iter()
        .map(|f| match f {
            Failure::EventNotAllowed { pcr: 4, index, .. } => *index,
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(kernel_events, vec![39, 40]);
}
