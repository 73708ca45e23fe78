//! The vault's lifecycle as scripts: each line is an operation, its outcome and the audited
//! key version, snapshotted. Setup: vault `kv` (7-day retention) with AES key `aes` and EC key
//! `ec`, a DEK wrapped for disk A, a ciphertext and a signature made before the script runs.

use expect_test::{Expect, expect};
use strata_kms::{DataKey, Envelope, KeyType, Outcome, PlatformKey, Signature, Vault};

use crate::common::*;

struct World {
    vault: Vault,
    pmk: PlatformKey,
    dek: DataKey,
    wrapped: Envelope,
    ciphertext: Envelope,
    signature: Signature,
    now: i64,
}

impl World {
    fn new(purge_protection: bool) -> World {
        let (vault, pmk) = vault(purge_protection);
        let dek = DataKey::generate().unwrap();
        let wrapped = vault.wrap_key(&pmk, "aes", DISK_A, &dek).result.unwrap();
        let ciphertext = vault.encrypt(&pmk, "aes", b"hello", b"ctx").result.unwrap();
        let signature = vault.sign(&pmk, "ec", b"message").result.unwrap();
        World {
            vault,
            pmk,
            dek,
            wrapped,
            ciphertext,
            signature,
            now: T0,
        }
    }

    /// Runs one line; returns the outcome as text.
    fn run(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (v, pmk, now) = (&mut self.vault, &self.pmk, self.now);
        let key = words.get(1).copied().unwrap_or("");
        let n = || words[2].parse::<u32>().unwrap();
        let record = match words[0] {
            "advance-days" => {
                self.now += i64::from(n_at(&words, 1)) * DAY;
                return format!("now = T0 + {}d", (self.now - T0) / DAY);
            }
            "create" => {
                let kty = if words[2] == "ec" {
                    KeyType::Ec
                } else {
                    KeyType::Oct
                };
                v.create_key(pmk, key, kty, None, now).record
            }
            "wrap" => {
                let a = v.wrap_key(pmk, key, DISK_A, &self.dek);
                if let Ok(env) = &a.result {
                    self.wrapped = env.clone();
                }
                a.record
            }
            "unwrap" => {
                let a = v.unwrap_key(pmk, key, DISK_A, &self.wrapped);
                if let Ok(k) = &a.result {
                    assert_eq!(k.expose_secret(), self.dek.expose_secret());
                }
                a.record
            }
            "encrypt" => v.encrypt(pmk, key, b"hello", b"ctx").record,
            "decrypt" => {
                let a = v.decrypt(pmk, key, &self.ciphertext, b"ctx");
                if let Ok(p) = &a.result {
                    assert_eq!(p.expose_secret(), b"hello");
                }
                a.record
            }
            "sign" => v.sign(pmk, key, b"message").record,
            "verify" => {
                let a = v.verify(key, b"message", &self.signature);
                if let Ok(valid) = a.result {
                    return format!("{} -> {valid}", render(&a.record));
                }
                a.record
            }
            "rotate" => v.begin_rotation(pmk, key, now).record,
            "rewrap" => {
                let a = v.rewrap(pmk, key, DISK_A, &self.wrapped);
                if let Ok(env) = &a.result {
                    self.wrapped = env.clone();
                }
                a.record
            }
            "finish" => v.finish_rotation(key, [self.wrapped.key()]).record,
            "enable" => v.enable(key).record,
            "disable" => v.disable(key).record,
            "enable-version" => v.set_version_enabled(key, n(), true).record,
            "disable-version" => v.set_version_enabled(key, n(), false).record,
            "delete" => v.delete(key, now).record,
            "recover" => v.recover(key).record,
            "purge" => v.purge(key, now).record,
            "purge-expired" => {
                let records = v.purge_expired(now);
                return format!("purged {}", records.len());
            }
            "restart" => {
                self.vault = restart(&self.vault);
                return "vault reloaded from its JSON document".to_owned();
            }
            other => panic!("unknown command {other}"),
        };
        if !key.is_empty() {
            assert_eq!(record.key, format!("{VAULT}/keys/{key}"));
        }
        render(&record)
    }
}

fn n_at(words: &[&str], i: usize) -> u32 {
    words[i].parse().unwrap()
}

fn render(r: &strata_kms::AuditRecord) -> String {
    let version = r.version.map(|v| format!(" v{v}")).unwrap_or_default();
    match &r.outcome {
        Outcome::Success => format!("ok{version}"),
        Outcome::Failure { code, .. } => format!("{code}{version}"),
    }
}

fn check(purge_protection: bool, script: &str, expect: Expect) {
    let mut world = World::new(purge_protection);
    let mut out = String::new();
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let result = world.run(line);
        out.push_str(&format!("{line:<24} {result}\n"));
    }
    expect.assert_eq(&out);
}

#[test]
fn disabled_key_refuses_every_data_operation_until_enabled() {
    check(
        false,
        "
        disable aes
        wrap aes
        unwrap aes
        encrypt aes
        decrypt aes
        rewrap aes
        enable aes
        wrap aes
        unwrap aes
        decrypt aes
        disable ec
        sign ec
        verify ec
        enable ec
        verify ec
        ",
        expect![[r#"
            disable aes              ok v1
            wrap aes                 KeyDisabled v1
            unwrap aes               KeyDisabled v1
            encrypt aes              KeyDisabled v1
            decrypt aes              KeyDisabled v1
            rewrap aes               KeyDisabled v1
            enable aes               ok v1
            wrap aes                 ok v1
            unwrap aes               ok v1
            decrypt aes              ok v1
            disable ec               ok v1
            sign ec                  KeyDisabled v1
            verify ec                KeyDisabled v1
            enable ec                ok v1
            verify ec                ok v1 -> true
        "#]],
    );
}

#[test]
fn key_types_are_enforced() {
    check(
        false,
        "
        sign aes
        wrap ec
        encrypt ec
        # an envelope or signature made by another key is refused before the type check
        verify aes
        unwrap ec
        ",
        expect![[r#"
            sign aes                 WrongKeyType v1
            wrap ec                  WrongKeyType v1
            encrypt ec               WrongKeyType v1
            # an envelope or signature made by another key is refused before the type check
            verify aes               WrongKey v1
            unwrap ec                WrongKey v1
        "#]],
    );
}

#[test]
fn soft_delete_recover_and_purge_without_protection() {
    check(
        false,
        "
        purge aes
        delete aes
        unwrap aes
        wrap aes
        disable aes
        rotate aes
        create aes oct
        delete aes
        recover aes
        unwrap aes
        recover aes
        delete aes
        purge aes
        unwrap aes
        create aes oct
        # same name and version, new material: purging shredded the old key
        unwrap aes
        ",
        expect![[r#"
            purge aes                KeyNotDeleted
            delete aes               ok
            unwrap aes               KeyDeleted v1
            wrap aes                 KeyDeleted v1
            disable aes              KeyDeleted v1
            rotate aes               KeyDeleted
            create aes oct           KeyDeleted v1
            delete aes               KeyDeleted
            recover aes              ok
            unwrap aes               ok v1
            recover aes              KeyNotDeleted
            delete aes               ok
            purge aes                ok
            unwrap aes               KeyNotFound v1
            create aes oct           ok v1
            # same name and version, new material: purging shredded the old key
            unwrap aes               AuthenticationFailed v1
        "#]],
    );
}

#[test]
fn purge_protection_holds_for_the_retention_period() {
    check(
        true,
        "
        disable aes
        delete aes
        purge aes
        advance-days 6
        purge aes
        purge-expired
        recover aes
        unwrap aes
        enable aes
        unwrap aes
        delete aes
        advance-days 7
        restart
        purge aes
        unwrap aes
        delete ec
        advance-days 7
        purge-expired
        verify ec
        ",
        expect![[r#"
            disable aes              ok v1
            delete aes               ok
            purge aes                PurgeProtected
            advance-days 6           now = T0 + 6d
            purge aes                PurgeProtected
            purge-expired            purged 0
            recover aes              ok
            unwrap aes               KeyDisabled v1
            enable aes               ok v1
            unwrap aes               ok v1
            delete aes               ok
            advance-days 7           now = T0 + 13d
            restart                  vault reloaded from its JSON document
            purge aes                ok
            unwrap aes               KeyNotFound v1
            delete ec                ok
            advance-days 7           now = T0 + 20d
            purge-expired            purged 1
            verify ec                KeyNotFound v1
        "#]],
    );
}

#[test]
fn rotation_rewrap_and_versions() {
    check(
        false,
        "
        rotate aes
        # a second begin resumes the pending rotation
        rotate aes
        unwrap aes
        decrypt aes
        finish aes
        rewrap aes
        rewrap aes
        unwrap aes
        finish aes
        # the ciphertext was never rewrapped: its version is now disabled, not lost
        decrypt aes
        enable-version aes 1
        decrypt aes
        disable-version aes 2
        disable-version aes 1
        rotate ec
        verify ec
        sign ec
        ",
        expect![[r#"
            rotate aes               ok v2
            # a second begin resumes the pending rotation
            rotate aes               ok v2
            unwrap aes               ok v1
            decrypt aes              ok v1
            finish aes               RotationIncomplete v2
            rewrap aes               ok v2
            rewrap aes               ok v2
            unwrap aes               ok v2
            finish aes               ok v2
            # the ciphertext was never rewrapped: its version is now disabled, not lost
            decrypt aes              VersionDisabled v1
            enable-version aes 1     ok v1
            decrypt aes              ok v1
            disable-version aes 2    InvalidArgument v2
            disable-version aes 1    ok v1
            rotate ec                ok v2
            verify ec                ok v1 -> true
            sign ec                  ok v2
        "#]],
    );
}

#[test]
fn vault_wide_settings_and_policies() {
    assert!(Vault::new(VAULT, 6, false).is_err());
    assert!(Vault::new(VAULT, 91, false).is_err());
    assert!(Vault::new("", 7, false).is_err());
    let (mut vault, pmk) = vault(false);
    vault.enable_purge_protection();
    assert!(vault.purge_protection());
    for bad in ["", "has space", "under_score", &"x".repeat(128)] {
        let a = vault.create_key(&pmk, bad, KeyType::Oct, None, T0);
        assert_eq!(
            a.code(),
            Some(strata_kms::ErrorCode::InvalidArgument),
            "{bad:?}"
        );
    }
    let a = vault.create_key(&pmk, "aes", KeyType::Oct, None, T0);
    assert_eq!(a.code(), Some(strata_kms::ErrorCode::KeyAlreadyExists));
    let a = vault.set_rotation_policy("aes", Some(strata_kms::RotationPolicy::every(0)));
    assert_eq!(a.code(), Some(strata_kms::ErrorCode::InvalidArgument));
    // The audit record is JSON the control plane can store as is.
    let a = vault.disable("aes");
    expect![[r#"{"operation":"disable","key":"/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg/providers/strata.keyvault/vaults/kv/keys/aes","version":1,"outcome":{"result":"success"}}"#]].assert_eq(&serde_json::to_string(&a.record).unwrap());
    let a = vault.wrap_key(&pmk, "aes", DISK_A, &DataKey::generate().unwrap());
    expect![[r#"
        {
          "operation": "wrapKey",
          "key": "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg/providers/strata.keyvault/vaults/kv/keys/aes",
          "version": 1,
          "outcome": {
            "result": "failure",
            "code": "KeyDisabled",
            "reason": "key /subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg/providers/strata.keyvault/vaults/kv/keys/aes is disabled; enable it to use it"
          }
        }"#]].assert_eq(&serde_json::to_string_pretty(&a.record).unwrap());
}

#[test]
fn the_vault_document_holds_no_plaintext() {
    let (vault, pmk) = vault(false);
    let doc = serde_json::to_value(&vault).unwrap();
    let version = &doc["keys"]["aes"]["versions"][0];
    assert_eq!(version["enabled"], true);
    assert_eq!(version["created"], T0);
    let material: Envelope = serde_json::from_value(version["material"].clone()).unwrap();
    assert_eq!(material.key(), pmk.key_ref());
    assert!(doc["keys"]["ec"]["versions"][0]["publicKey"].is_string());
    // Another vault with the same key names cannot open this one's envelopes.
    let other = Vault::new(format!("{VAULT}2"), 7, false).unwrap();
    let mut other = other;
    other
        .create_key(&pmk, "aes", KeyType::Oct, None, T0)
        .result
        .unwrap();
    let dek = DataKey::generate().unwrap();
    let env = vault.wrap_key(&pmk, "aes", DISK_A, &dek).result.unwrap();
    assert_eq!(
        other.unwrap_key(&pmk, "aes", DISK_A, &env).code(),
        Some(strata_kms::ErrorCode::WrongKey)
    );
}

#[test]
fn vault_envelopes_are_bound_to_their_context() {
    let (mut vault, pmk) = vault(false);
    let dek = DataKey::generate().unwrap();
    let wrapped = vault.wrap_key(&pmk, "aes", DISK_A, &dek).result.unwrap();
    let ct = vault.encrypt(&pmk, "aes", b"hello", b"ctx").result.unwrap();
    let auth = Some(strata_kms::ErrorCode::AuthenticationFailed);
    assert_eq!(vault.unwrap_key(&pmk, "aes", DISK_B, &wrapped).code(), auth);
    assert_eq!(vault.decrypt(&pmk, "aes", &ct, b"ctx2").code(), auth);
    assert_eq!(vault.decrypt(&pmk, "aes", &ct, b"").code(), auth);
    // A wrapKey envelope is not a ciphertext, and the reverse.
    assert_eq!(vault.decrypt(&pmk, "aes", &wrapped, b"").code(), auth);
    assert_eq!(vault.unwrap_key(&pmk, "aes", "", &ct).code(), auth);

    // Someone with write access to the store swaps version 1's material into version 2's slot.
    vault.begin_rotation(&pmk, "aes", T0).result.unwrap();
    let mut doc = serde_json::to_value(&vault).unwrap();
    let v1 = doc["keys"]["aes"]["versions"][0]["material"].clone();
    doc["keys"]["aes"]["versions"][1]["material"] = v1;
    let forged: Vault = serde_json::from_value(doc).unwrap();
    assert_eq!(forged.wrap_key(&pmk, "aes", DISK_A, &dek).code(), auth);
    assert_eq!(forged.rewrap(&pmk, "aes", DISK_A, &wrapped).code(), auth);
    // Version 1 is untouched and still works.
    assert!(
        forged
            .unwrap_key(&pmk, "aes", DISK_A, &wrapped)
            .result
            .is_ok()
    );
}
