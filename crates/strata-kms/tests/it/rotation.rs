//! Crash safety of two-phase rotation: the control plane persists the vault document and each
//! disk's envelope; a crash can happen between any two persisted writes. After a restart from
//! whatever was persisted, every disk key must still unwrap, and resuming must finish cleanly.

use std::collections::BTreeMap;

use strata_kms::{DataKey, Envelope, ErrorCode, KeyType, RotationPolicy, Vault};

use crate::common::*;

const DISKS: usize = 12;

/// What the control plane's store holds: the vault document and each disk's envelope (JSON).
#[derive(Clone)]
struct Store {
    vault: String,
    disks: BTreeMap<String, String>,
}

impl Store {
    fn vault(&self) -> Vault {
        serde_json::from_str(&self.vault).unwrap()
    }
    fn envelope(&self, disk: &str) -> Envelope {
        serde_json::from_str(&self.disks[disk]).unwrap()
    }
}

fn disk(i: usize) -> String {
    format!("{DISK_A}-{i}")
}

/// Checks that every disk's key unwraps from the persisted state, to the key it was given.
fn assert_nothing_lost(store: &Store, pmk: &strata_kms::PlatformKey, keys: &[DataKey]) {
    let vault = store.vault();
    for (i, key) in keys.iter().enumerate() {
        let got = vault
            .unwrap_key(pmk, "aes", &disk(i), &store.envelope(&disk(i)))
            .into_result()
            .unwrap_or_else(|e| panic!("disk {i} lost its key: {e}"));
        assert_eq!(got.expose_secret(), key.expose_secret());
    }
}

#[derive(Debug, Clone, Copy)]
enum Crash {
    /// After `begin_rotation`, before the vault document was persisted.
    BeforeVaultPersisted,
    /// After the vault was persisted and `n` rewrapped envelopes were persisted.
    AfterRewraps(usize),
    /// After every rewrap, before `finish_rotation` was persisted.
    BeforeFinishPersisted,
}

fn run(crash: Crash) {
    let (vault, pmk) = vault(false);
    let keys: Vec<DataKey> = (0..DISKS).map(|_| DataKey::generate().unwrap()).collect();
    let mut store = Store {
        vault: serde_json::to_string(&vault).unwrap(),
        disks: BTreeMap::new(),
    };
    for (i, key) in keys.iter().enumerate() {
        let env = vault.wrap_key(&pmk, "aes", &disk(i), key).result.unwrap();
        store
            .disks
            .insert(disk(i), serde_json::to_string(&env).unwrap());
    }

    // Phase one.
    let mut live = store.vault();
    let target = live.begin_rotation(&pmk, "aes", T0 + DAY).result.unwrap();
    assert_eq!(target.version, 2);
    if let Crash::BeforeVaultPersisted = crash {
        // The new version never reached the store; nothing was wrapped under it.
        assert_nothing_lost(&store, &pmk, &keys);
        return resume(store, &pmk, &keys, 2);
    }
    store.vault = serde_json::to_string(&live).unwrap();

    // Rewrap, persisting each envelope.
    let stop = match crash {
        Crash::AfterRewraps(n) => n,
        _ => DISKS,
    };
    for i in 0..stop {
        let env = live
            .rewrap(&pmk, "aes", &disk(i), &store.envelope(&disk(i)))
            .result
            .unwrap();
        assert_eq!(env.key().version, 2);
        store
            .disks
            .insert(disk(i), serde_json::to_string(&env).unwrap());
    }
    // Finishing now would be refused unless everything was rewrapped.
    let refs: Vec<Envelope> = (0..DISKS).map(|i| store.envelope(&disk(i))).collect();
    let finish = live
        .clone()
        .finish_rotation("aes", refs.iter().map(Envelope::key));
    if stop < DISKS {
        assert_eq!(finish.code(), Some(ErrorCode::RotationIncomplete));
    } else {
        assert!(finish.result.is_ok());
    }
    // Crash: only `store` survives.
    assert_nothing_lost(&store, &pmk, &keys);
    resume(store, &pmk, &keys, 2)
}

/// A restarted control plane: resume the pending rotation (or start it again), rewrap all,
/// finish, and check the result.
fn resume(mut store: Store, pmk: &strata_kms::PlatformKey, keys: &[DataKey], expect: u32) {
    let mut vault = store.vault();
    let target = vault
        .begin_rotation(pmk, "aes", T0 + 2 * DAY)
        .result
        .unwrap();
    assert_eq!(target.version, expect, "resuming adds no extra version");
    assert_eq!(vault.key("aes").unwrap().versions().len(), expect as usize);
    store.vault = serde_json::to_string(&vault).unwrap();
    for i in 0..keys.len() {
        let env = vault
            .rewrap(pmk, "aes", &disk(i), &store.envelope(&disk(i)))
            .result
            .unwrap();
        store
            .disks
            .insert(disk(i), serde_json::to_string(&env).unwrap());
    }
    let refs: Vec<Envelope> = (0..keys.len()).map(|i| store.envelope(&disk(i))).collect();
    let disabled = vault
        .finish_rotation("aes", refs.iter().map(Envelope::key))
        .result
        .unwrap();
    assert_eq!(disabled, vec![1]);
    store.vault = serde_json::to_string(&vault).unwrap();
    assert_nothing_lost(&store, pmk, keys);
    let key = store.vault().key("aes").unwrap().clone();
    assert_eq!(key.current_version(), expect);
    assert!(key.pending_rotation().is_none());
    assert!(!key.version(1).unwrap().enabled());
}

#[test]
fn an_interrupted_rotation_loses_nothing_wherever_it_stops() {
    run(Crash::BeforeVaultPersisted);
    for n in 0..=DISKS {
        run(Crash::AfterRewraps(n));
    }
    run(Crash::BeforeFinishPersisted);
}

#[test]
fn a_forgotten_envelope_is_refused_not_lost() {
    // The caller finished the rotation without listing one envelope: the old version is
    // disabled, so that envelope is refused with a clear code, and re-enabling recovers it.
    let (mut vault, pmk) = vault(false);
    let dek = DataKey::generate().unwrap();
    let stale = vault.wrap_key(&pmk, "aes", DISK_A, &dek).result.unwrap();
    vault.begin_rotation(&pmk, "aes", T0).result.unwrap();
    vault.finish_rotation("aes", []).result.unwrap();
    let a = vault.unwrap_key(&pmk, "aes", DISK_A, &stale);
    assert_eq!(a.code(), Some(ErrorCode::VersionDisabled));
    expect_test::expect!["version 1 of key /subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg/providers/strata.keyvault/vaults/kv/keys/aes is disabled; enable that version to use it"].assert_eq(&a.record.outcome_reason());
    vault.set_version_enabled("aes", 1, true).result.unwrap();
    let back = vault
        .unwrap_key(&pmk, "aes", DISK_A, &stale)
        .result
        .unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
}

trait Reason {
    fn outcome_reason(&self) -> String;
}

impl Reason for strata_kms::AuditRecord {
    fn outcome_reason(&self) -> String {
        match &self.outcome {
            strata_kms::Outcome::Success => "success".to_owned(),
            strata_kms::Outcome::Failure { reason, .. } => reason.clone(),
        }
    }
}

#[test]
fn rotation_policy_due() {
    let (mut vault, pmk) = vault(false);
    let month = 30 * DAY;
    let policy = RotationPolicy::every(month);
    assert!(!policy.due(T0, None, T0 + month - 1));
    assert!(policy.due(T0, None, T0 + month));
    vault
        .set_rotation_policy("aes", Some(policy))
        .result
        .unwrap();
    vault
        .set_rotation_policy("ec", Some(policy))
        .result
        .unwrap();
    assert!(vault.keys_due(T0 + month - 1).is_empty());
    assert_eq!(vault.keys_due(T0 + month), ["aes", "ec"]);

    vault
        .begin_rotation(&pmk, "aes", T0 + month)
        .result
        .unwrap();
    vault.begin_rotation(&pmk, "ec", T0 + month).result.unwrap();
    // A pending rotation is not "due": it is resumed.
    assert!(vault.keys_due(T0 + month).is_empty());
    assert_eq!(vault.pending_rotations(), ["aes"]);
    vault.finish_rotation("aes", []).result.unwrap();
    assert!(vault.keys_due(T0 + 2 * month - 1).is_empty());
    assert_eq!(vault.keys_due(T0 + 2 * month), ["aes", "ec"]);
    // Disabled keys are not rotated (they are locked on purpose); deleted keys never.
    vault.disable("aes").result.unwrap();
    assert_eq!(vault.keys_due(T0 + 2 * month), ["ec"]);
    vault.enable("aes").result.unwrap();
    vault.delete("ec", T0).result.unwrap();
    assert_eq!(vault.keys_due(T0 + 3 * month), ["aes"]);
}

#[test]
fn expiry_time_stamps_new_versions_and_time_before_expiry_rotates_them() {
    let (mut vault, pmk) = vault(false);
    let year = 365 * DAY;
    let policy = RotationPolicy {
        rotate_before_expiry_secs: Some(30 * DAY),
        expiry_secs: Some(year),
        ..Default::default()
    };
    // Durations must be positive, triggers shorter than the expiry, and timeBeforeExpiry
    // needs an expiry.
    for bad in [
        RotationPolicy::every(0),
        RotationPolicy {
            rotate_before_expiry_secs: Some(DAY),
            ..Default::default()
        },
        RotationPolicy {
            rotate_after_secs: Some(year),
            expiry_secs: Some(year),
            ..Default::default()
        },
        RotationPolicy {
            rotate_after_secs: Some(DAY),
            rotate_before_expiry_secs: Some(DAY),
            expiry_secs: Some(year),
            ..Default::default()
        },
    ] {
        let a = vault.set_rotation_policy("aes", Some(bad));
        assert_eq!(a.code(), Some(ErrorCode::InvalidArgument), "{bad:?}");
    }
    vault
        .set_rotation_policy("aes", Some(policy))
        .result
        .unwrap();
    // The policy applies to versions made from now on (as in Azure): version 1 has no expiry,
    // so only timeAfterCreate could rotate it.
    assert_eq!(
        vault.key("aes").unwrap().version(1).unwrap().expires(),
        None
    );
    assert!(vault.keys_due(T0 + 10 * year).is_empty());
    vault.begin_rotation(&pmk, "aes", T0).result.unwrap();
    vault.finish_rotation("aes", []).result.unwrap();
    let v2 = vault.key("aes").unwrap().version(2).unwrap();
    assert_eq!(v2.expires(), Some(T0 + year));
    assert!(vault.keys_due(T0 + year - 30 * DAY - 1).is_empty());
    assert_eq!(vault.keys_due(T0 + year - 30 * DAY), ["aes"]);
    // Once version 2 has expired, new ciphertext and signatures are refused; what it already
    // wrapped still unwraps.
    let dek = DataKey::generate().unwrap();
    let env = vault.wrap_key(&pmk, "aes", DISK_A, &dek).result.unwrap();
    assert!(
        vault
            .check_unexpired("aes", strata_kms::Operation::WrapKey, T0 + year - 1)
            .result
            .is_ok()
    );
    let a = vault.check_unexpired("aes", strata_kms::Operation::WrapKey, T0 + year);
    assert_eq!(a.code(), Some(ErrorCode::KeyExpired));
    assert_eq!(a.record.version, Some(2));
    assert!(a.record.outcome != strata_kms::Outcome::Success);
    let back = vault.unwrap_key(&pmk, "aes", DISK_A, &env).result.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
    // A key created with the policy gets an expiry on version 1.
    vault
        .create_key(&pmk, "fresh", KeyType::Oct, Some(policy), T0)
        .result
        .unwrap();
    assert_eq!(
        vault.key("fresh").unwrap().version(1).unwrap().expires(),
        Some(T0 + year)
    );
}

#[test]
fn platform_key_rotation_reseals_vault_material() {
    let root = root();
    let (pmk1, _) = root.create_platform_key(SUB, 1).unwrap();
    let (pmk2, _) = root.create_platform_key(SUB, 2).unwrap();
    let mut vault = Vault::new(VAULT, 7, false).unwrap();
    vault
        .create_key(&pmk1, "aes", KeyType::Oct, None, T0)
        .result
        .unwrap();
    vault
        .create_key(&pmk1, "ec", KeyType::Ec, None, T0)
        .result
        .unwrap();
    vault.begin_rotation(&pmk1, "aes", T0).result.unwrap();
    let dek = DataKey::generate().unwrap();
    let env = vault.wrap_key(&pmk1, "aes", DISK_A, &dek).result.unwrap();
    let sig = vault.sign(&pmk1, "ec", b"m").result.unwrap();

    // A failed reseal (wrong "from" key) changes nothing.
    let before = vault.clone();
    let a = vault.rewrap_material(&pmk2, &root);
    assert_eq!(a.code(), Some(ErrorCode::WrongKey));
    assert_eq!(vault, before);

    assert_eq!(vault.rewrap_material(&pmk1, &pmk2).result.unwrap(), 3);
    assert_eq!(
        vault.rewrap_material(&pmk1, &pmk2).result.unwrap(),
        0,
        "idempotent"
    );
    let back = vault.unwrap_key(&pmk2, "aes", DISK_A, &env).result.unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
    assert!(vault.verify("ec", b"m", &sig).result.unwrap());
    assert!(vault.sign(&pmk2, "ec", b"m").result.is_ok());
    assert_eq!(
        vault.unwrap_key(&pmk1, "aes", DISK_A, &env).code(),
        Some(ErrorCode::WrongKey)
    );
}
