//! Root → platform key → data key, and what the associated data binds each envelope to.

use strata_kms::{Envelope, ErrorCode, KeyRef, KeyType, RootKey, RootSecret, Vault};

use crate::common::*;

const OTHER_SUB: &str = "/subscriptions/00000000-0000-0000-0000-000000000002";

#[test]
fn data_keys_round_trip_through_the_stored_platform_key() {
    let secret = RootSecret::generate().unwrap();
    let root = RootKey::from_secret(&secret).unwrap();
    let (pmk, stored) = root.create_platform_key(SUB, 1).unwrap();
    assert_eq!(pmk.key_ref(), &KeyRef::new(format!("{SUB}/platformKey"), 1));
    let (dek, env) = pmk.create_data_key(DISK_A).unwrap();

    // Restart: the root secret again (from its provider), the stored documents again.
    let stored = serde_json::from_str(&serde_json::to_string(&stored).unwrap()).unwrap();
    let env: Envelope = env.encode().parse().unwrap();
    let root =
        RootKey::from_secret(&RootSecret::from_bytes(secret.expose_secret()).unwrap()).unwrap();
    let pmk = root.open_platform_key(SUB, &stored).unwrap();
    let again = pmk.unwrap_data_key(DISK_A, &env).unwrap();
    assert_eq!(again.expose_secret(), dek.expose_secret());
    // The root id carries a check value, not the key.
    assert!(root.key_ref().id.starts_with("strata-root/"));
    assert_eq!(root.key_ref().id.len(), "strata-root/".len() + 16);
}

/// Each row moves an envelope somewhere it was not sealed for; each must fail, with the code
/// shown.
#[test]
fn associated_data_binds_every_envelope() {
    let root = root();
    let (pmk, stored) = root.create_platform_key(SUB, 1).unwrap();
    let (pmk2, stored2) = root.create_platform_key(SUB, 2).unwrap();
    let (other_pmk, _) = root.create_platform_key(OTHER_SUB, 1).unwrap();
    let (_, dek_a) = pmk.create_data_key(DISK_A).unwrap();
    let mut vault = Vault::new(VAULT, 7, false).unwrap();
    vault
        .create_key(&pmk, "aes", KeyType::Oct, None, T0)
        .into_result()
        .unwrap();
    let material: Envelope = {
        let doc = serde_json::to_value(&vault).unwrap();
        serde_json::from_value(doc["keys"]["aes"]["versions"][0]["material"].clone()).unwrap()
    };
    let material_resource = format!("{VAULT}/keys/aes/versions/1");

    let rows: Vec<(&str, Result<(), strata_kms::KmsError>)> = vec![
        ("right disk", pmk.unwrap_data_key(DISK_A, &dek_a).map(drop)),
        (
            "another disk",
            pmk.unwrap_data_key(DISK_B, &dek_a).map(drop),
        ),
        (
            "another subscription's key",
            other_pmk.unwrap_data_key(DISK_A, &dek_a).map(drop),
        ),
        (
            "the next key version",
            pmk2.unwrap_data_key(DISK_A, &dek_a).map(drop),
        ),
        (
            "relabelled as the next key version",
            pmk2.unwrap_data_key(DISK_A, &rekey(&dek_a, pmk2.key_ref()))
                .map(drop),
        ),
        (
            "vault key material presented as a disk key (another purpose)",
            pmk.unwrap_data_key(&material_resource, &material).map(drop),
        ),
        (
            "platform key opened for another subscription",
            root.open_platform_key(OTHER_SUB, &stored).map(drop),
        ),
        ("platform key v1 stored as v2 (same root key)", {
            let mut forged = stored.clone();
            forged.key.version = 2;
            root.open_platform_key(SUB, &forged).map(drop)
        }),
        ("platform key v1 material under v2's label", {
            let mut forged = stored2.clone();
            forged.wrapped = stored.wrapped.clone();
            root.open_platform_key(SUB, &forged).map(drop)
        }),
        (
            "platform key under another root",
            crate::common::root()
                .open_platform_key(SUB, &stored)
                .map(drop),
        ),
    ];
    let table: String = rows
        .iter()
        .map(|(what, r)| format!("{what:<64} {}\n", code(r)))
        .collect();
    expect_test::expect![[r#"
        right disk                                                       ok
        another disk                                                     AuthenticationFailed
        another subscription's key                                       WrongKey
        the next key version                                             WrongKey
        relabelled as the next key version                               AuthenticationFailed
        vault key material presented as a disk key (another purpose)     AuthenticationFailed
        platform key opened for another subscription                     WrongKey
        platform key v1 stored as v2 (same root key)                     AuthenticationFailed
        platform key v1 material under v2's label                        AuthenticationFailed
        platform key under another root                                  WrongKey
    "#]]
    .assert_eq(&table);

    // The message names the key and the resource, and says what went wrong.
    let err = pmk.unwrap_data_key(DISK_B, &dek_a).unwrap_err();
    assert_eq!(err.code(), ErrorCode::AuthenticationFailed);
    expect_test::expect![[r#"cannot open the data-key envelope for "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg/providers/strata.compute/disks/b" under /subscriptions/00000000-0000-0000-0000-000000000001/platformKey/versions/1: it was sealed for another resource, purpose, key or version, or it has been altered"#]].assert_eq(&err.to_string());
    let err = pmk2.unwrap_data_key(DISK_A, &dek_a).unwrap_err();
    expect_test::expect!["the envelope was sealed under /subscriptions/00000000-0000-0000-0000-000000000001/platformKey/versions/1, not /subscriptions/00000000-0000-0000-0000-000000000001/platformKey/versions/2; open it with that key"].assert_eq(&err.to_string());
}

#[test]
fn platform_and_root_rotation_rewrap_idempotently() {
    let old_root = root();
    let (pmk1, stored1) = old_root.create_platform_key(SUB, 1).unwrap();
    let (dek, env1) = pmk1.create_data_key(DISK_A).unwrap();

    // PMK rotation: v2, rewrap the DEK (twice: idempotent).
    let (pmk2, _) = old_root.create_platform_key(SUB, 2).unwrap();
    let env2 = pmk2.rewrap_data_key(&pmk1, DISK_A, &env1).unwrap();
    assert_eq!(env2.key(), pmk2.key_ref());
    assert_eq!(pmk2.rewrap_data_key(&pmk1, DISK_A, &env2).unwrap(), env2);
    assert_eq!(
        pmk2.unwrap_data_key(DISK_A, &env2).unwrap().expose_secret(),
        dek.expose_secret()
    );

    // Root rotation: reseal the stored PMK under a new root.
    let new_root = root();
    let resealed = new_root
        .rewrap_platform_key(&old_root, SUB, &stored1)
        .unwrap();
    assert_eq!(resealed.wrapped.key(), new_root.key_ref());
    assert_eq!(
        new_root
            .rewrap_platform_key(&old_root, SUB, &resealed)
            .unwrap(),
        resealed
    );
    let reopened = new_root.open_platform_key(SUB, &resealed).unwrap();
    assert_eq!(
        reopened
            .unwrap_data_key(DISK_A, &env1)
            .unwrap()
            .expose_secret(),
        dek.expose_secret()
    );
    assert_eq!(
        old_root
            .open_platform_key(SUB, &resealed)
            .unwrap_err()
            .code(),
        ErrorCode::WrongKey
    );
}
