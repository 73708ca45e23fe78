//! Appraisal tests: a good host passes with every key type, and every [`Failure`] variant is
//! produced by one targeted tamper (the table fails if a variant has no case).

use std::collections::BTreeSet;
use std::mem::discriminant;

use super::*;
use crate::eventlog::{EV_IPL, LogBuilder, UefiVariable};
use crate::policy::AgentReference;
use crate::testkit::{self, CLOCK, Images, QUOTED, SoftKey, evidence, policy, resign, uefi_log};
use crate::tpm::PcrSelection;

const NONCE: &[u8] = b"round nonce 0123456789abcdef0123";

fn good(key: &SoftKey) -> Evidence {
    evidence(key, &uefi_log(&Images::default()), NONCE, CLOCK)
}

fn run(key: &SoftKey, e: &Evidence) -> Verdict {
    appraise(e, &key.public(), NONCE, &policy(), Some(&previous()))
}

fn previous() -> ClockInfo {
    ClockInfo {
        clock: CLOCK.clock - 10_000,
        ..CLOCK
    }
}

fn with_attest(key: &SoftKey, e: &mut Evidence, f: impl FnOnce(&mut Attest)) {
    let mut a = Attest::parse(&e.attest).unwrap();
    f(&mut a);
    e.attest = a.encode();
    resign(key, e);
}

#[test]
fn a_good_host_passes_with_every_key_type() {
    for key in [SoftKey::ecc(), SoftKey::rsa(false), SoftKey::rsa(true)] {
        let v = run(&key, &good(&key));
        assert_eq!(v.failures, vec![], "{}", v.reason());
        assert!(v.passed && v.authentic);
        assert_eq!(v.reason(), "all checks passed");
        assert_eq!(v.clock, Some(CLOCK));
        assert_eq!(v.boot.secure_boot, Some(true));
        assert_eq!(v.boot.boot_applications.len(), 3);
        assert_eq!(v.boot.kernel, Some(Digest(HashAlg::Sha256.hash(b"kernel"))));
        assert_eq!(v.boot.kernel_path.as_deref(), Some("\\vmlinuz"));
        assert_eq!(v.boot.kernel_cmdline.as_deref(), Some("root=/dev/vda1 ro"));
        assert_eq!(v.boot.verified_pcrs, QUOTED.to_vec());
        assert_eq!(v.boot.event_count, 19);
    }
    // No previous clock (first round) is fine too.
    let key = SoftKey::ecc();
    assert!(appraise(&good(&key), &key.public(), NONCE, &policy(), None).passed);
}

/// A targeted tamper: what to change, and which failure it must produce.
struct Case {
    name: &'static str,
    key: SoftKey,
    evidence: Evidence,
    ak: Option<Public>,
    policy: ReferencePolicy,
    previous: Option<ClockInfo>,
    expect: Failure,
}

fn case(name: &'static str, expect: Failure, tamper: impl FnOnce(&mut Case)) -> Case {
    let key = SoftKey::ecc();
    let evidence = good(&key);
    let mut c = Case {
        name,
        key,
        evidence,
        ak: None,
        policy: policy(),
        previous: Some(previous()),
        expect,
    };
    tamper(&mut c);
    c
}

fn d(bytes: &[u8]) -> Digest {
    Digest(bytes.to_vec())
}

fn sha(bytes: &[u8]) -> Digest {
    Digest(HashAlg::Sha256.hash(bytes))
}

/// Evidence from a host that booted `images` (its log and PCRs agree).
fn booted(key: &SoftKey, images: Images) -> Evidence {
    evidence(key, &uefi_log(&images), NONCE, CLOCK)
}

fn cases() -> Vec<Case> {
    let golden = policy();
    vec![
        case(
            "policy without pcrs",
            Failure::Policy {
                reason: "the policy quotes no pcrs; list at least the pcrs its checks read".into(),
            },
            |c| c.policy.pcrs.clear(),
        ),
        case(
            "unrestricted key",
            Failure::AttestationKey {
                reason: "attributes 0x00040072 are not those of a restricted signing key (restricted, sign, fixedTPM; not decrypt), so its signature does not prove the tpm made the quote".into(),
            },
            |c| {
                let mut ak = c.key.public();
                ak.attributes &= !crate::tpm::attr::RESTRICTED;
                c.ak = Some(ak);
            },
        ),
        case(
            "signature junk",
            Failure::SignatureMalformed {
                error: "truncated TPMT_SIGNATURE.sigAlg: needs 2 bytes, 1 left".into(),
            },
            |c| c.evidence.signature = vec![0x00],
        ),
        case(
            "another tpm's key",
            Failure::Signature {
                reason: "the signature does not verify with this key".into(),
            },
            |c| c.evidence.signature = SoftKey::ecc().sign(&c.evidence.attest).encode(),
        ),
        case("magic", Failure::Magic { found: 0xff54_4348 }, |c| {
            with_attest(&c.key, &mut c.evidence, |a| a.magic += 1)
        }),
        case("type", Failure::AttestType { found: 0x8014 }, |c| {
            c.evidence.attest[4..6].copy_from_slice(&0x8014u16.to_be_bytes());
            resign(&c.key, &mut c.evidence);
        }),
        case(
            "attest trailing byte",
            Failure::AttestMalformed {
                error: "1 trailing bytes after TPMS_ATTEST".into(),
            },
            |c| {
                c.evidence.attest.push(0);
                resign(&c.key, &mut c.evidence);
            },
        ),
        case(
            "nonce",
            Failure::Nonce {
                expected: d(NONCE),
                actual: d(b"old nonce"),
            },
            |c| with_attest(&c.key, &mut c.evidence, |a| a.extra_data = b"old nonce".to_vec()),
        ),
        case(
            "clock not safe",
            Failure::ClockNotSafe {
                clock: ClockInfo {
                    safe: false,
                    ..CLOCK
                },
            },
            |c| with_attest(&c.key, &mut c.evidence, |a| a.clock_info.safe = false),
        ),
        case(
            "reset count decreased",
            Failure::ResetCountDecreased {
                previous: 4,
                current: 3,
            },
            |c| {
                c.previous = Some(ClockInfo {
                    reset_count: 4,
                    ..CLOCK
                })
            },
        ),
        case(
            "restart count decreased",
            Failure::RestartCountDecreased {
                previous: 1,
                current: 0,
            },
            |c| {
                c.previous = Some(ClockInfo {
                    restart_count: 1,
                    ..CLOCK
                })
            },
        ),
        case(
            "clock went backwards",
            Failure::ClockWentBackwards {
                previous: CLOCK.clock + 1,
                current: CLOCK.clock,
            },
            |c| {
                c.previous = Some(ClockInfo {
                    clock: CLOCK.clock + 1,
                    ..CLOCK
                })
            },
        ),
        case(
            "sha1 bank selected",
            Failure::PcrSelection {
                reason: "the quote selects pcrs {0} of the sha1 bank; the policy appraises only the sha256 bank".into(),
            },
            |c| {
                with_attest(&c.key, &mut c.evidence, |a| {
                    a.quote.pcr_select.push(PcrSelection::new(HashAlg::Sha1, &[0]))
                })
            },
        ),
        case(
            "pcr not quoted",
            Failure::PcrNotQuoted {
                bank: HashAlg::Sha256,
                pcr: 9,
            },
            |c| {
                c.policy.pcrs.insert(9);
            },
        ),
        case(
            "pcr value missing",
            Failure::PcrValues {
                reason: "pcr 14 is quoted but its value was not sent".into(),
            },
            |c| {
                c.evidence.pcrs.remove(&14);
            },
        ),
        case(
            "pcr value changed",
            Failure::PcrDigest {
                expected: Digest::default(), // checked by variant below
                actual: Digest::default(),
            },
            |c| {
                c.evidence.pcrs.insert(14, vec![1; 32]);
            },
        ),
        case(
            "event log junk",
            Failure::EventLog {
                error: "event #0: truncated TCG_PCClientPCREvent.pcrIndex: needs 4 bytes, 3 left".into(),
            },
            |c| c.evidence.event_log = vec![1, 2, 3],
        ),
        case(
            "log replays to other pcrs",
            Failure::PcrMismatch {
                pcr: 4,
                bank: HashAlg::Sha256,
                quoted: Digest::default(),
                replayed: Digest::default(),
            },
            |c| {
                // The TPM measured an evil kernel; the log claims the good one.
                let evil = booted(
                    &c.key,
                    Images {
                        kernel: b"evil".to_vec(),
                        ..Images::default()
                    },
                );
                c.evidence.attest = evil.attest;
                c.evidence.signature = evil.signature;
                c.evidence.pcrs = evil.pcrs;
            },
        ),
        case(
            "variable data relabelled",
            Failure::EventDataUnbound {
                pcr: 7,
                index: 3,
                event_type: EventType(EV_EFI_VARIABLE_DRIVER_CONFIG),
                expected: Digest::default(),
                actual: Digest::default(),
            },
            |c| {
                // The firmware measured SecureBoot = 0; the log shows 1 with the same digest.
                let mut b = uefi_log(&Images {
                    secure_boot: false,
                    ..Images::default()
                });
                let mut log = b.log().clone();
                log.events[2].data = UefiVariable {
                    guid: crate::eventlog::EFI_GLOBAL_VARIABLE,
                    name: "SecureBoot".into(),
                    data: vec![1],
                }
                .encode();
                b = LogBuilder::new(&[HashAlg::Sha1, HashAlg::Sha256]);
                for e in &log.events {
                    let digests = e.digests.clone();
                    b.push_with(e.pcr, e.event_type, e.data.clone(), |h| {
                        digests
                            .iter()
                            .find(|(id, _)| *id == h.alg_id())
                            .map(|(_, d)| d.clone())
                            .unwrap_or_default()
                    });
                }
                c.evidence = evidence(&c.key, &b, NONCE, CLOCK);
                // Data binding is checked for every Secure Boot variable, required or not.
                c.policy.require_secure_boot = false;
            },
        ),
        case(
            "secure boot disabled",
            Failure::SecureBootDisabled {
                index: 3,
                value: d(&[0]),
            },
            |c| {
                c.evidence = booted(
                    &c.key,
                    Images {
                        secure_boot: false,
                        ..Images::default()
                    },
                );
                // The variable digests differ too; let only the secure boot check speak.
                c.policy.pk = AllowList::Any;
            },
        ),
        case(
            "command line missing",
            Failure::EventMissing {
                class: EventClass::KernelCmdline,
                pcr: 8,
            },
            |c| {
                let mut b = uefi_log(&Images::default());
                let mut log = b.log().clone();
                log.events.pop();
                b = LogBuilder::new(&[HashAlg::Sha1, HashAlg::Sha256]);
                for e in &log.events {
                    let digests = e.digests.clone();
                    b.push_with(e.pcr, e.event_type, e.data.clone(), |h| {
                        digests
                            .iter()
                            .find(|(id, _)| *id == h.alg_id())
                            .map(|(_, d)| d.clone())
                            .unwrap_or_default()
                    });
                }
                c.evidence = evidence(&c.key, &b, NONCE, CLOCK);
            },
        ),
        case(
            "tampered kernel",
            Failure::EventNotAllowed {
                class: EventClass::BootApplication,
                pcr: 4,
                index: 18,
                event_type: EventType(EV_EFI_BOOT_SERVICES_APPLICATION),
                description: Some("\\vmlinuz".into()),
                actual: sha(b"evil"),
                allowed: golden.boot_applications.entries().unwrap().to_vec(),
            },
            |c| {
                c.evidence = booted(
                    &c.key,
                    Images {
                        kernel: b"evil".to_vec(),
                        ..Images::default()
                    },
                )
            },
        ),
        case(
            "command line",
            Failure::CmdlineNotAllowed {
                pcr: 8,
                index: 19,
                cmdline: "root=/dev/vda1 ro init=/bin/sh".into(),
                allowed: vec!["root=/dev/vda1 ro".into()],
            },
            |c| {
                c.evidence = booted(
                    &c.key,
                    Images {
                        cmdline: "root=/dev/vda1 ro init=/bin/sh".into(),
                        ..Images::default()
                    },
                )
            },
        ),
        case(
            "agent binary",
            Failure::AgentMeasurementNotAllowed {
                name: "qemu".into(),
                actual: "unreadable".into(),
                allowed: vec![sha(b"qemu")],
            },
            |c| c.evidence.agent_measurements[0].sha256 = "unreadable".into(),
        ),
        case(
            "agent binary not reported",
            Failure::AgentMeasurementMissing {
                name: "strata-agent".into(),
            },
            |c| {
                c.evidence.agent_measurements.pop();
            },
        ),
    ]
}

use crate::eventlog::{EV_EFI_BOOT_SERVICES_APPLICATION, EV_EFI_VARIABLE_DRIVER_CONFIG};

#[test]
fn every_failure_is_reachable_by_one_targeted_tamper() {
    let mut seen = BTreeSet::new();
    for c in cases() {
        let ak = c.ak.clone().unwrap_or_else(|| c.key.public());
        let v = appraise(&c.evidence, &ak, NONCE, &c.policy, c.previous.as_ref());
        assert!(!v.passed, "{}: passed", c.name);
        assert_eq!(v.failures.len(), 1, "{}: {}", c.name, v.reason());
        let got = &v.failures[0];
        assert_eq!(
            discriminant(got),
            discriminant(&c.expect),
            "{}: {got}",
            c.name
        );
        // Digests the case cannot know in advance are left empty; everything else must match.
        let redacted = match got.clone() {
            Failure::PcrDigest { .. } => Failure::PcrDigest {
                expected: Digest::default(),
                actual: Digest::default(),
            },
            Failure::PcrMismatch { pcr, bank, .. } => Failure::PcrMismatch {
                pcr,
                bank,
                quoted: Digest::default(),
                replayed: Digest::default(),
            },
            Failure::EventDataUnbound {
                pcr,
                index,
                event_type,
                ..
            } => Failure::EventDataUnbound {
                pcr,
                index,
                event_type,
                expected: Digest::default(),
                actual: Digest::default(),
            },
            other => other,
        };
        assert_eq!(redacted, c.expect, "{}", c.name);
        assert!(!got.to_string().is_empty());
        seen.insert(format!("{:?}", discriminant(got)));
    }
    // Failure has 25 variants; a new one needs a case here.
    assert_eq!(seen.len(), 25);
}

#[test]
fn failure_messages_name_the_check_pcr_event_and_digests() {
    let key = SoftKey::ecc();
    let evil = booted(
        &key,
        Images {
            kernel: b"evil".to_vec(),
            ..Images::default()
        },
    );
    let v = run(&key, &evil);
    let msg = v.failures[0].to_string();
    let golden = policy();
    let allowed: Vec<String> = golden
        .boot_applications
        .entries()
        .unwrap()
        .iter()
        .map(Digest::to_hex)
        .collect();
    assert_eq!(
        msg,
        format!(
            "boot application: pcr 4 event #18 EV_EFI_BOOT_SERVICES_APPLICATION (\\vmlinuz) has digest {}, expected one of [{}]",
            sha(b"evil"),
            allowed.join(", ")
        )
    );
    assert_eq!(v.failures[0].check(), "referenceValues");
    assert_eq!(
        v.boot.kernel,
        Some(sha(b"evil")),
        "the summary shows what booted"
    );

    // The log lies about PCR 4: the replay failure gives both values.
    let mut lying = good(&key);
    lying.attest = evil.attest.clone();
    lying.signature = evil.signature.clone();
    lying.pcrs = evil.pcrs.clone();
    let v = run(&key, &lying);
    assert_eq!(
        v.failures[0].to_string(),
        format!(
            "replay: pcr 4 (sha256) was quoted as {} but the event log replays to {}",
            d(&evil.pcrs[&4]),
            d(&good(&key).pcrs[&4])
        )
    );
    assert_eq!(
        v.boot.verified_pcrs,
        vec![0, 7, 8, 14],
        "pcr 4 is not trusted"
    );
    assert!(v.boot.boot_applications.is_empty());
}

#[test]
fn a_signature_failure_short_circuits_everything_else() {
    let key = SoftKey::rsa(false);
    let mut e = good(&key);
    // Wrong nonce, junk log, missing PCRs: none of it is reported for unsigned bytes.
    with_attest(&key, &mut e, |a| a.extra_data = b"x".to_vec());
    e.event_log.clear();
    e.pcrs.clear();
    let v = appraise(&e, &SoftKey::ecc().public(), NONCE, &policy(), None);
    assert!(!v.authentic && !v.passed);
    assert_eq!(v.failures.len(), 1);
    assert_eq!(v.failures[0].check(), "signature");
    assert_eq!(v.clock, None);
    assert_eq!(v.boot, BootSummary::default());
}

#[test]
fn several_failures_are_reported_together() {
    let key = SoftKey::ecc();
    let mut e = booted(
        &key,
        Images {
            kernel: b"evil".to_vec(),
            cmdline: "single".into(),
            ..Images::default()
        },
    );
    with_attest(&key, &mut e, |a| a.extra_data = b"replayed".to_vec());
    let v = run(&key, &e);
    let checks: Vec<&str> = v.failures.iter().map(Failure::check).collect();
    assert_eq!(checks, vec!["nonce", "referenceValues", "referenceValues"]);
    assert!(v.authentic);
    assert_eq!(v.clock, None, "a stale quote's clock must not be stored");
}

#[test]
fn clock_is_returned_only_when_fresh_and_monotonic() {
    let key = SoftKey::ecc();
    let e = good(&key);
    // Same clock as before (a replay of the previous round) is not "backwards", but its
    // nonce is wrong, so the verdict fails and the clock is not stored.
    let v = appraise(&e, &key.public(), b"next round", &policy(), Some(&CLOCK));
    assert_eq!(
        v.failures.iter().map(Failure::check).collect::<Vec<_>>(),
        vec!["nonce"]
    );
    assert_eq!(v.clock, None);
    // A later reset may restart the clock from zero.
    let prev = ClockInfo {
        clock: CLOCK.clock * 5,
        reset_count: CLOCK.reset_count - 1,
        restart_count: 9,
        safe: true,
    };
    let v = appraise(&e, &key.public(), NONCE, &policy(), Some(&prev));
    assert!(v.passed, "{}", v.reason());
    assert_eq!(v.clock, Some(CLOCK));
}

#[test]
fn any_lists_skip_a_class_and_empty_lists_deny_it() {
    let key = SoftKey::ecc();
    let e = booted(
        &key,
        Images {
            kernel: b"evil".to_vec(),
            ..Images::default()
        },
    );
    let mut p = policy();
    p.boot_applications = AllowList::Any;
    assert!(appraise(&e, &key.public(), NONCE, &p, None).passed);
    p.boot_applications = AllowList::Only(vec![]);
    let v = appraise(&e, &key.public(), NONCE, &p, None);
    assert_eq!(
        v.failures.len(),
        3,
        "shim, grub and kernel are all denied: {}",
        v.reason()
    );
    p.agent_measurements = AllowList::Only(vec![AgentReference {
        name: "qemu".into(),
        sha256: sha(b"qemu"),
    }]);
    let v = appraise(&e, &key.public(), NONCE, &p, None);
    assert!(
        v.failures.iter().any(|f| matches!(f, Failure::AgentMeasurementNotAllowed { name, allowed, .. } if name == "strata-agent" && allowed.is_empty())),
        "a binary the policy does not list is refused: {}",
        v.reason()
    );
}

#[test]
fn an_extra_extend_without_a_log_entry_is_caught() {
    // PCR 14 is quoted; the log never touches it, so it must still be zero.
    let key = SoftKey::ecc();
    let b = uefi_log(&Images::default());
    let mut values = testkit::pcr_values(b.log(), &QUOTED);
    values.insert(14, HashAlg::Sha256.extend(&[0; 32], &[7; 32]));
    let attest = testkit::attest(&values, &QUOTED, NONCE, CLOCK).encode();
    let e = Evidence {
        signature: key.sign(&attest).encode(),
        attest,
        pcrs: values,
        event_log: b.build(),
        agent_measurements: testkit::agent_measurements(),
    };
    let v = run(&key, &e);
    assert!(
        matches!(
            v.failures.as_slice(),
            [Failure::PcrMismatch { pcr: 14, .. }]
        ),
        "{}",
        v.reason()
    );
}

#[test]
fn evidence_json_is_what_the_agent_sends() {
    let key = SoftKey::ecc();
    let e = good(&key);
    let json = serde_json::to_value(&e).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        vec![
            "agentMeasurements",
            "attest",
            "eventLog",
            "pcrs",
            "signature"
        ]
    );
    assert!(json["pcrs"]["14"].is_string());
    assert_eq!(json["agentMeasurements"][0]["name"], "qemu");
    let back: Evidence = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, e);
    let mut bad = json.clone();
    bad["pcrs"]["x"] = serde_json::json!("AAAA");
    assert!(serde_json::from_value::<Evidence>(bad).is_err());
    let mut bad = json;
    bad["attest"] = serde_json::json!("not base64!");
    assert!(serde_json::from_value::<Evidence>(bad).is_err());
    // The verdict serializes with tagged failures for storage and APIs.
    let v = run(
        &key,
        &booted(
            &key,
            Images {
                secure_boot: false,
                ..Images::default()
            },
        ),
    );
    let vj = serde_json::to_value(&v).unwrap();
    assert_eq!(vj["passed"], false);
    assert!(
        vj["failures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "secureBootDisabled")
    );
}

#[test]
fn a_log_with_an_ipl_event_in_another_pcr_is_not_a_command_line() {
    let key = SoftKey::ecc();
    let mut b = uefi_log(&Images::default());
    b.event(9, EV_IPL, b"kernel_cmdline: init=/bin/sh\0".to_vec());
    let mut p = policy();
    p.pcrs.insert(9);
    let values = testkit::pcr_values(b.log(), &[0, 4, 7, 8, 9, 14]);
    let pcrs = [0, 4, 7, 8, 9, 14];
    let attest = testkit::attest(&values, &pcrs, NONCE, CLOCK).encode();
    let e = Evidence {
        signature: key.sign(&attest).encode(),
        attest,
        pcrs: values,
        event_log: b.build(),
        agent_measurements: testkit::agent_measurements(),
    };
    let v = appraise(&e, &key.public(), NONCE, &p, None);
    assert!(v.passed, "{}", v.reason());
}

proptest::proptest! {
    #[test]
    fn pcr_sets_and_selections_agree_with_btree_sets(select in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..=32)) {
        let s = PcrSelection { hash: HashAlg::Sha256, select };
        let want = s.pcrs();
        proptest::prop_assert_eq!(selected(&s).collect::<BTreeSet<u32>>(), want.clone());
        proptest::prop_assert!(selected(&s).zip(selected(&s).skip(1)).all(|(a, b)| a < b));
        let mut set = PcrSet::default();
        for p in selected(&s) {
            set.insert(p);
        }
        set.insert(256);
        set.insert(u32::MAX);
        proptest::prop_assert_eq!(set.iter().collect::<Vec<u32>>(), want.iter().copied().collect::<Vec<u32>>());
        for p in 0..300 {
            proptest::prop_assert_eq!(set.contains(p), want.contains(&p));
        }
    }
}
