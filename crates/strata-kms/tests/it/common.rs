//! Shared fixtures: a root key, a subscription's platform key, a vault.

use strata_kms::{KeyType, PlatformKey, RootKey, RootSecret, Vault};

pub const SUB: &str = "/subscriptions/00000000-0000-0000-0000-000000000001";
pub const VAULT: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg/providers/strata.keyvault/vaults/kv";
pub const DISK_A: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg/providers/strata.compute/disks/a";
pub const DISK_B: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg/providers/strata.compute/disks/b";
pub const T0: i64 = 1_800_000_000;
pub const DAY: i64 = 86_400;

pub fn root() -> RootKey {
    RootKey::from_secret(&RootSecret::generate().unwrap()).unwrap()
}

pub fn pmk(root: &RootKey) -> PlatformKey {
    root.create_platform_key(SUB, 1).unwrap().0
}

/// A vault (7-day retention) with an AES key `aes` and an EC key `ec`, sealed by a fresh PMK.
pub fn vault(purge_protection: bool) -> (Vault, PlatformKey) {
    let pmk = pmk(&root());
    let mut v = Vault::new(VAULT, 7, purge_protection).unwrap();
    v.create_key(&pmk, "aes", KeyType::Oct, None, T0)
        .into_result()
        .unwrap();
    v.create_key(&pmk, "ec", KeyType::Ec, None, T0)
        .into_result()
        .unwrap();
    (v, pmk)
}

/// Serializes and deserializes, as storing the document in the control plane would.
pub fn restart(v: &Vault) -> Vault {
    serde_json::from_str(&serde_json::to_string(v).unwrap()).unwrap()
}

/// The same envelope claiming another wrapping key: what an attacker editing the stored bytes
/// could produce.
pub fn rekey(env: &strata_kms::Envelope, key: &strata_kms::KeyRef) -> strata_kms::Envelope {
    let bytes = env.to_bytes();
    let old_len = u16::from_be_bytes([bytes[1], bytes[2]]) as usize;
    let tail = &bytes[3 + old_len + 4..];
    let mut out = vec![1u8];
    out.extend_from_slice(&(key.id.len() as u16).to_be_bytes());
    out.extend_from_slice(key.id.as_bytes());
    out.extend_from_slice(&key.version.to_be_bytes());
    out.extend_from_slice(tail);
    strata_kms::Envelope::from_bytes(&out).unwrap()
}

/// The error code of a result, or "ok".
pub fn code<T>(r: &Result<T, strata_kms::KmsError>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.code().to_string(),
    }
}
