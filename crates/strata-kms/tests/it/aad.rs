//! The associated-data encoding is a storage format: pinned byte for byte, and injective.

use expect_test::expect;
use strata_kms::{KeyRef, Purpose, associated_data};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn encoding_is_pinned() {
    let aad = associated_data(
        Purpose::DataKey,
        &KeyRef::new("/subscriptions/s/platformKey", 2),
        "disk",
        b"ctx",
    );
    // domain, format 1, "data-key", key id, version 2, resource, context: each u64-BE length-prefixed.
    expect!["000000000000000e7374726174612d6b6d732f6161640000000000000001010000000000000008646174612d6b6579000000000000001c2f737562736372697074696f6e732f732f706c6174666f726d4b657900000000000000040000000200000000000000046469736b0000000000000003637478"]
    .assert_eq(&hex(&aad));
}

#[test]
fn fields_cannot_bleed_into_each_other() {
    let k = |id: &str, v| KeyRef::new(id, v);
    let cases = [
        associated_data(Purpose::WrapKey, &k("key", 1), "ab", b"c"),
        associated_data(Purpose::WrapKey, &k("key", 1), "a", b"bc"),
        associated_data(Purpose::WrapKey, &k("key", 1), "abc", b""),
        associated_data(Purpose::WrapKey, &k("keya", 1), "b", b"c"),
        associated_data(Purpose::WrapKey, &k("key", 2), "ab", b"c"),
        associated_data(Purpose::DataKey, &k("key", 1), "ab", b"c"),
        associated_data(Purpose::Encrypt, &k("key", 1), "ab", b"c"),
    ];
    for (i, a) in cases.iter().enumerate() {
        for b in &cases[i + 1..] {
            assert_ne!(a, b);
        }
    }
}
