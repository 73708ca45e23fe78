//! Secret types wipe themselves, print `[redacted]`, and never show up in errors.

use strata_kms::{DataKey, Plaintext, RootSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::common::*;

fn zeroize_on_drop<T: ZeroizeOnDrop>() {}

#[test]
fn secret_types_are_zeroize_on_drop() {
    zeroize_on_drop::<RootSecret>();
    zeroize_on_drop::<DataKey>();
    zeroize_on_drop::<Plaintext>();

    let mut key = DataKey::generate().unwrap();
    assert_ne!(key.expose_secret(), &[0u8; 32]);
    key.zeroize();
    assert_eq!(key.expose_secret(), &[0u8; 32]);
}

#[test]
fn debug_redacts() {
    // A fixed secret, so the root key's check value in the snapshot is stable.
    let secret = RootSecret::from_bytes(&[0x5a; 32]).unwrap();
    let root = strata_kms::RootKey::from_secret(&secret).unwrap();
    let (pmk, _) = root.create_platform_key(SUB, 1).unwrap();
    let (dek, _) = pmk.create_data_key(DISK_A).unwrap();
    let (vault, pmk2) = vault(false);
    let ct = vault
        .encrypt(&pmk2, "aes", b"top secret", b"")
        .result
        .unwrap();
    let plain = vault.decrypt(&pmk2, "aes", &ct, b"").result.unwrap();
    assert_eq!(plain.expose_secret(), b"top secret");

    let outputs = [
        format!("{secret:?}"),
        format!("{dek:?}"),
        format!("{plain:?}"),
        format!("{root:?}"),
        format!("{pmk:?}"),
    ];
    expect_test::expect![[r#"
        RootSecret([redacted])
        DataKey([redacted])
        Plaintext([redacted])
        RootKey { kek: WrappingKey { key_ref: KeyRef { id: "strata-root/18a1ba99821d0214", version: 1 }, key: "[redacted]" } }
        PlatformKey { kek: WrappingKey { key_ref: KeyRef { id: "/subscriptions/00000000-0000-0000-0000-000000000001/platformKey", version: 1 }, key: "[redacted]" } }"#]].assert_eq(&outputs.join("\n"));
    for out in &outputs {
        for secret in [&secret.expose_secret()[..], &dek.expose_secret()[..]] {
            assert!(!out.contains(&hex(secret)), "{out}");
            assert!(!out.contains(&format!("{:?}", &secret[..4])), "{out}");
        }
        assert!(!out.contains("top secret"));
    }
}

#[test]
fn errors_carry_no_key_material_or_caller_data() {
    let (mut vault, pmk) = vault(false);
    let dek = DataKey::generate().unwrap();
    let wrapped = vault.wrap_key(&pmk, "aes", DISK_A, &dek).result.unwrap();
    let ct = vault
        .encrypt(&pmk, "aes", b"payload", b"caller-aad-secret")
        .result
        .unwrap();
    let mut errors = vec![
        vault.unwrap_key(&pmk, "aes", DISK_B, &wrapped).record,
        vault.decrypt(&pmk, "aes", &ct, b"other").record,
        vault.unwrap_key(&pmk, "ec", DISK_A, &wrapped).record,
    ];
    errors.push(vault.disable("aes").record);
    errors.push(vault.wrap_key(&pmk, "aes", DISK_A, &dek).record);
    let text = serde_json::to_string(&errors).unwrap();
    assert!(!text.contains(&hex(dek.expose_secret())));
    assert!(!text.contains("caller-aad-secret"));
    assert!(!text.contains("payload"));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
