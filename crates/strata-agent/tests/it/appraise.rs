//! The verifier (`strata-attest`) against real swtpm quotes: good hosts pass with RSA and ECC
//! attestation keys; a tampered kernel, a wrong nonce, a replayed quote, another TPM's key
//! and a host without Secure Boot each fail with the check named; a software
//! MakeCredential is activated by the right TPM only.

use std::collections::BTreeMap;

use strata_agent::bootplan::{BootImages, BootPlan};
use strata_agent::testhost::SwtpmHost;
use strata_agent::tpm::{AkAlgorithm, AttestationKey, PcrBank, Tpm, TpmError};
use strata_attest::eventlog::{EV_EFI_BOOT_SERVICES_APPLICATION, EventLog, EventType};
use strata_attest::policy::{AllowList, EventClass, ReferencePolicy};
use strata_attest::tpm::{Attest, Public, Signature};
use strata_attest::{AgentMeasurement, Digest, Evidence, Failure, HashAlg, appraise};

use crate::support;

const QUOTED: [u32; 5] = [0, 4, 7, 8, 14];

fn nonce() -> Vec<u8> {
    let mut n = vec![0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut n).unwrap();
    n
}

fn agent_measurements() -> Vec<AgentMeasurement> {
    vec![AgentMeasurement {
        name: "qemu-system-x86_64".into(),
        sha256: strata_attest::hex(&HashAlg::Sha256.hash(b"qemu 10.0.2")),
    }]
}

/// The reference policy for the golden boot, captured from its own log.
fn golden_policy() -> ReferencePolicy {
    let log = EventLog::parse(&BootPlan::uefi(&BootImages::default()).to_log()).unwrap();
    let p = ReferencePolicy::golden(&log, HashAlg::Sha256, &QUOTED, &agent_measurements());
    p.validate().unwrap();
    p
}

/// One round as the agent does it: quote, read the quoted PCRs, attach the log.
fn round(tpm: &mut Tpm, ak: &AttestationKey, nonce: &[u8], log: &[u8]) -> Evidence {
    let q = tpm.quote(ak, nonce, &QUOTED).unwrap();
    let pcrs: BTreeMap<u32, Vec<u8>> = tpm
        .read_pcrs(PcrBank::Sha256, &QUOTED)
        .unwrap()
        .into_iter()
        .collect();
    Evidence {
        attest: q.attest,
        signature: q.signature,
        pcrs,
        event_log: log.to_vec(),
        agent_measurements: agent_measurements(),
    }
}

fn boot(host: &SwtpmHost, images: &BootImages) -> Vec<u8> {
    host.boot(&BootPlan::uefi(images)).unwrap()
}

fn checks(failures: &[Failure]) -> Vec<&'static str> {
    failures.iter().map(Failure::check).collect()
}

#[test]
fn good_hosts_pass_and_tampering_replays_and_foreign_keys_are_named() {
    let (_ca, hosts) = support::hosts(2);
    let good_log = boot(&hosts[0], &BootImages::default());
    let evil_kernel = b"vmlinuz-6.12.0-strata with a rootkit".to_vec();
    let bad_log = boot(
        &hosts[1],
        &BootImages {
            kernel: evil_kernel.clone(),
            ..BootImages::default()
        },
    );
    let policy = golden_policy();
    let mut good = hosts[0].open().unwrap();
    let mut bad = hosts[1].open().unwrap();

    for alg in [AkAlgorithm::Rsa2048, AkAlgorithm::EccP256] {
        let ak = good.create_attestation_key(alg).unwrap();
        let public = Public::parse(&ak.public).unwrap();
        // The verifier's name computation agrees with the TPM's.
        assert_eq!(public.name(), ak.name, "{alg:?}");
        assert_eq!(public.encode_tpm2b(), ak.public);

        let n1 = nonce();
        let e1 = round(&mut good, &ak, &n1, &good_log);
        // Real TPM structures round-trip through the parsers.
        let attest = Attest::parse(&e1.attest).unwrap();
        assert_eq!(attest.encode(), e1.attest);
        assert_eq!(attest.qualified_signer, ak.qualified_name);
        assert_eq!(
            Signature::parse(&e1.signature).unwrap().encode(),
            e1.signature
        );

        let v1 = appraise(&e1, &public, &n1, &policy, None);
        assert!(v1.passed, "{alg:?}: {}", v1.reason());
        assert!(v1.authentic);
        let c1 = v1.clock.expect("a passing round yields its clock");
        assert!(c1.safe);
        assert_eq!(v1.boot.secure_boot, Some(true));
        assert_eq!(
            v1.boot.kernel,
            Some(Digest(HashAlg::Sha256.hash(&BootImages::default().kernel)))
        );
        assert_eq!(
            v1.boot.kernel_path.as_deref(),
            Some("\\vmlinuz-6.12.0-strata")
        );
        assert_eq!(v1.boot.kernel_cmdline, Some(BootImages::default().cmdline));
        assert_eq!(v1.boot.verified_pcrs, QUOTED.to_vec());

        // The evidence survives the JSON the agent sends.
        let json = serde_json::to_string(&e1).unwrap();
        let back: Evidence = serde_json::from_str(&json).unwrap();
        assert!(appraise(&back, &public, &n1, &policy, Some(&c1)).passed);

        // The next round, with the stored clock as `previous`, passes.
        std::thread::sleep(std::time::Duration::from_millis(30));
        let n2 = nonce();
        let e2 = round(&mut good, &ak, &n2, &good_log);
        let v2 = appraise(&e2, &public, &n2, &policy, Some(&c1));
        assert!(v2.passed, "{}", v2.reason());
        let c2 = v2.clock.unwrap();
        assert!(c2.clock > c1.clock, "{c1:?} then {c2:?}");

        // Wrong nonce: the quote answers another challenge.
        let v = appraise(&e2, &public, &nonce(), &policy, Some(&c1));
        assert_eq!(checks(&v.failures), vec!["nonce"], "{}", v.reason());
        assert!(matches!(&v.failures[0], Failure::Nonce { actual, .. } if actual.0 == n2));
        assert_eq!(v.clock, None);

        // Replaying round 1 in round 3: old nonce and a clock behind the stored one.
        let n3 = nonce();
        let v = appraise(&e1, &public, &n3, &policy, Some(&c2));
        assert_eq!(
            checks(&v.failures),
            vec!["nonce", "clock"],
            "{}",
            v.reason()
        );
        assert_eq!(
            v.failures[1],
            Failure::ClockWentBackwards {
                previous: c2.clock,
                current: c1.clock
            }
        );

        // A quote from another TPM's AK does not verify with this host's AK.
        let foreign = bad.create_attestation_key(alg).unwrap();
        let e = round(&mut bad, &foreign, &n3, &bad_log);
        let v = appraise(&e, &public, &n3, &policy, Some(&c2));
        assert_eq!(checks(&v.failures), vec!["signature"], "{}", v.reason());
        assert!(!v.authentic && !v.passed);
        // A signature made with the other key type is refused as such.
        let other_alg = if alg == AkAlgorithm::EccP256 {
            AkAlgorithm::Rsa2048
        } else {
            AkAlgorithm::EccP256
        };
        let other = good.create_attestation_key(other_alg).unwrap();
        let e = round(&mut good, &other, &n3, &good_log);
        let v = appraise(&e, &public, &n3, &policy, None);
        assert!(
            matches!(&v.failures[..], [Failure::Signature { .. }]),
            "{}",
            v.reason()
        );
    }

    // The tampered host's own key verifies, its log replays, and the kernel is refused by
    // name: PCR 4, event #18, expected vs actual digest.
    let ak = bad.create_attestation_key(AkAlgorithm::EccP256).unwrap();
    let n = nonce();
    let e = round(&mut bad, &ak, &n, &bad_log);
    let v = appraise(&e, &Public::parse(&ak.public).unwrap(), &n, &policy, None);
    assert!(v.authentic && !v.passed);
    let allowed = policy.boot_applications.entries().unwrap().to_vec();
    assert_eq!(
        v.failures,
        vec![Failure::EventNotAllowed {
            class: EventClass::BootApplication,
            pcr: 4,
            index: 18,
            event_type: EventType(EV_EFI_BOOT_SERVICES_APPLICATION),
            description: Some("\\vmlinuz-6.12.0-strata".into()),
            actual: Digest(HashAlg::Sha256.hash(&evil_kernel)),
            allowed: allowed.clone(),
        }]
    );
    let msg = v.failures[0].to_string();
    assert!(
        msg.starts_with("boot application: pcr 4 event #18 EV_EFI_BOOT_SERVICES_APPLICATION (\\vmlinuz-6.12.0-strata) has digest ")
            && msg.contains(&strata_attest::hex(&HashAlg::Sha256.hash(&evil_kernel)))
            && msg.contains(&allowed[2].to_hex()),
        "{msg}"
    );

    // The tampered host sending the golden log instead: the replay of PCR 4 is refused.
    let e = round(&mut bad, &ak, &n, &good_log);
    let v = appraise(&e, &Public::parse(&ak.public).unwrap(), &n, &policy, None);
    assert!(
        matches!(&v.failures[..], [Failure::PcrMismatch { pcr: 4, .. }]),
        "{}",
        v.reason()
    );

    // Drift: a PCR extended after boot with no log entry makes a good host fail at once.
    let ak = good.create_attestation_key(AkAlgorithm::EccP256).unwrap();
    good.pcr_event(14, b"something ran").unwrap();
    let n = nonce();
    let e = round(&mut good, &ak, &n, &good_log);
    let v = appraise(&e, &Public::parse(&ak.public).unwrap(), &n, &policy, None);
    assert!(
        matches!(&v.failures[..], [Failure::PcrMismatch { pcr: 14, .. }]),
        "{}",
        v.reason()
    );
}

#[test]
fn a_host_booted_without_secure_boot_fails_the_secure_boot_check() {
    let (_ca, hosts) = support::hosts(1);
    let log = boot(
        &hosts[0],
        &BootImages {
            secure_boot: false,
            ..BootImages::default()
        },
    );
    let mut tpm = hosts[0].open().unwrap();
    let ak = tpm.create_attestation_key(AkAlgorithm::EccP256).unwrap();
    let n = nonce();
    let e = round(&mut tpm, &ak, &n, &log);
    let v = appraise(
        &e,
        &Public::parse(&ak.public).unwrap(),
        &n,
        &golden_policy(),
        None,
    );
    assert_eq!(
        v.failures,
        vec![Failure::SecureBootDisabled {
            index: 3,
            value: Digest(vec![0]),
        }],
        "{}",
        v.reason()
    );
    assert_eq!(v.boot.secure_boot, Some(false));
    // With Secure Boot not required (and its variable unpinned), the same host passes.
    let mut lax = golden_policy();
    lax.require_secure_boot = false;
    assert_eq!(lax.boot_applications.entries().map(<[_]>::len), Some(3));
    let v = appraise(&e, &Public::parse(&ak.public).unwrap(), &n, &lax, None);
    assert!(v.passed, "{}", v.reason());
    assert!(matches!(lax.pk, AllowList::Only(_)));
    assert!(v.clock.is_some());
}

#[test]
fn software_make_credential_is_activated_only_by_the_tpm_with_the_ek_and_ak() {
    let (_ca, hosts) = support::hosts(2);
    let mut a = hosts[0].open().unwrap();
    let mut b = hosts[1].open().unwrap();
    let ek_a = a.endorsement_key().unwrap();
    let ek_b = b.endorsement_key().unwrap();
    let ek_a_public = Public::parse(&ek_a.public).unwrap();
    assert_eq!(
        ek_a_public.name(),
        ek_a.name,
        "the verifier computes the EK name as the TPM does"
    );
    let rng = ring::rand::SystemRandom::new();

    for alg in [AkAlgorithm::EccP256, AkAlgorithm::Rsa2048] {
        let ak_a = a.create_attestation_key(alg).unwrap();
        let secret = b"0123456789abcdef0123456789abcdef";
        let (blob, enc) =
            strata_attest::credential::make_credential(&ek_a_public, &ak_a.name, secret, &rng)
                .unwrap();
        assert_eq!(
            a.activate_credential(&ak_a, &ek_a, &blob, &enc).unwrap(),
            secret,
            "{alg:?}"
        );
        // A 16-byte secret works too (TPM2B_DIGEST of any size up to the name digest).
        let (blob16, enc16) = strata_attest::credential::make_credential(
            &ek_a_public,
            &ak_a.name,
            &secret[..16],
            &rng,
        )
        .unwrap();
        assert_eq!(
            a.activate_credential(&ak_a, &ek_a, &blob16, &enc16)
                .unwrap(),
            &secret[..16]
        );

        // Another TPM cannot: not with A's EK (caught before the TPM), not with its own.
        let ak_b = b.create_attestation_key(alg).unwrap();
        let err = b
            .activate_credential(&ak_b, &ek_a, &blob, &enc)
            .unwrap_err();
        assert!(matches!(err, TpmError::EkMismatch), "{err}");
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
        // The right TPM refuses a credential made for another key's name.
        let (blob2, enc2) =
            strata_attest::credential::make_credential(&ek_a_public, &ak_b.name, secret, &rng)
                .unwrap();
        let err = a
            .activate_credential(&ak_a, &ek_a, &blob2, &enc2)
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
    }
}
