//! Key vaults end to end: a vault and its keys through the API, the data plane (wrap, unwrap,
//! encrypt, decrypt, sign, verify) authorized by RBAC data actions, disable/enable, rotation
//! that keeps old ciphertexts readable, soft delete with purge protection, and no key material
//! in any response or audit entry.

use crate::harness::Server;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn post(s: &Server, token: Option<&str>, path: &str, body: Value) -> (u16, Value) {
    let (status, v, _) = s.req("POST", path, token, Some(&body), &[]);
    (status, v)
}

#[test]
fn vault_keys_follow_their_lifecycle_and_only_crypto_roles_use_them() {
    let s = Server::start();
    let rg = s.rg("keys");
    assert_eq!(
        s.admin("PUT", &rg, Some(json!({ "location": "local" }))).0,
        201
    );

    // Vaults: purge protection and 90 days' retention by default; retention is bounded.
    let vault = format!("{rg}/providers/Strata.KeyVault/vaults/kv1");
    let (st, v) = s.admin("PUT", &vault, Some(json!({ "properties": {} })));
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["properties"]["enablePurgeProtection"], true);
    assert_eq!(v["properties"]["softDeleteRetentionInDays"], 90);
    let (st, v) = s.admin(
        "PUT",
        &format!("{rg}/providers/Strata.KeyVault/vaults/kv2"),
        Some(json!({ "properties": { "softDeleteRetentionInDays": 3 } })),
    );
    assert_eq!(st, 400, "{v}");
    let (st, v) = s.admin(
        "PUT",
        &vault,
        Some(json!({ "properties": { "enablePurgeProtection": false } })),
    );
    assert_eq!(st, 409, "purge protection cannot be turned off: {v}");

    // An AES key, version 1.
    let key = format!("{vault}/keys/k1");
    let (st, v) = s.admin(
        "PUT",
        &key,
        Some(
            json!({ "properties": { "kty": "oct", "rotationPolicy": { "rotateEveryDays": 30 } } }),
        ),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["properties"]["currentVersion"], 1);
    assert_eq!(v["properties"]["enabled"], true);
    // The shorthand is stored and shown in Azure's shape.
    assert_eq!(
        v["properties"]["rotationPolicy"]["lifetimeActions"][0],
        json!({ "trigger": { "timeAfterCreate": "P30D" }, "action": { "type": "Rotate" } })
    );

    // Wrap / unwrap and encrypt / decrypt round trips.
    let dek = [0x5au8; 32];
    let (st, v) = post(&s, None, &format!("{key}/wrapKey"), json!({}));
    assert_eq!(st, 401, "{v}");
    // The tenant's Owner manages but does not hold data actions: a Key Vault Administrator
    // does both.
    let (st, v) = post(
        &s,
        Some(&s.admin_token),
        &format!("{key}/wrapKey"),
        json!({ "value": b64(&dek) }),
    );
    assert_eq!(st, 403, "{v}");
    let (kv_admin_oid, kv_admin_id, kv_admin_secret) = s.new_sp("kv-admin");
    s.assign(&kv_admin_oid, "Key Vault Administrator", &vault);
    let kv_admin = s.sp_token(&kv_admin_id, &kv_admin_secret).unwrap();
    let admin = |method: &str, path: &str, body: Value| {
        let (st, v, _) = s.req(method, path, Some(&kv_admin), Some(&body), &[]);
        (st, v)
    };
    let (st, wrapped) = admin(
        "POST",
        &format!("{key}/wrapKey"),
        json!({ "alg": "A256GCM", "value": b64(&dek) }),
    );
    assert_eq!(st, 200, "{wrapped}");
    assert!(
        wrapped["kid"].as_str().unwrap().ends_with("/keys/k1/1"),
        "{wrapped}"
    );
    let w1 = wrapped["value"].as_str().unwrap().to_string();
    let (st, v) = admin(
        "POST",
        &format!("{key}/unwrapKey"),
        json!({ "alg": "A256GCM", "value": w1 }),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["value"], b64(&dek));
    let marker = b"STRATA-KV-PLAINTEXT-MARKER-0123456789";
    let (st, c) = admin(
        "POST",
        &format!("{key}/encrypt"),
        json!({ "value": b64(marker), "aad": b64(b"ctx") }),
    );
    assert_eq!(st, 200, "{c}");
    let c1 = c["value"].as_str().unwrap().to_string();
    let (st, v) = admin(
        "POST",
        &format!("{key}/decrypt"),
        json!({ "value": c1, "aad": b64(b"ctx") }),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["value"], b64(marker));
    let (st, v) = admin(
        "POST",
        &format!("{key}/decrypt"),
        json!({ "value": c1, "aad": b64(b"other") }),
    );
    assert_eq!(st, 400, "wrong aad: {v}");

    // A Key Vault Crypto User can use the key but not manage it; a Reader can do neither.
    let (crypto_oid, crypto_id, crypto_secret) = s.new_sp("crypto-user");
    s.assign(&crypto_oid, "Key Vault Crypto User", &vault);
    let crypto = s.sp_token(&crypto_id, &crypto_secret).unwrap();
    let (reader_oid, reader_id, reader_secret) = s.new_sp("kv-reader");
    s.assign(&reader_oid, "Reader", &vault);
    let reader = s.sp_token(&reader_id, &reader_secret).unwrap();
    let wrap_body = json!({ "value": b64(&dek) });
    let (st, v) = post(
        &s,
        Some(&crypto),
        &format!("{key}/wrapKey"),
        wrap_body.clone(),
    );
    assert_eq!(st, 200, "{v}");
    let (st, v) = post(
        &s,
        Some(&crypto),
        &format!("{key}/unwrapKey"),
        json!({ "value": w1 }),
    );
    assert_eq!(st, 200, "{v}");
    let (st, v) = post(&s, Some(&crypto), &format!("{key}/rotate"), json!({}));
    assert_eq!(st, 403, "{v}");
    let (st, v, _) = s.req("DELETE", &key, Some(&crypto), None, &[]);
    assert_eq!(st, 403, "{v}");
    let (st, v) = post(
        &s,
        Some(&reader),
        &format!("{key}/wrapKey"),
        wrap_body.clone(),
    );
    assert_eq!(st, 403, "{v}");
    let (st, v) = post(
        &s,
        Some(&reader),
        &format!("{key}/unwrapKey"),
        json!({ "value": w1 }),
    );
    assert_eq!(st, 403, "{v}");
    assert_eq!(s.req("GET", &key, Some(&reader), None, &[]).0, 200);

    // Disabled: every cryptographic operation is refused with KeyDisabled; enabled again: works.
    let (st, v) = admin("POST", &format!("{key}/disable"), json!({}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["properties"]["enabled"], false);
    let (st, v) = post(
        &s,
        Some(&crypto),
        &format!("{key}/wrapKey"),
        wrap_body.clone(),
    );
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error"]["code"], "KeyDisabled", "{v}");
    let (st, v) = admin("POST", &format!("{key}/unwrapKey"), json!({ "value": w1 }));
    assert_eq!(v["error"]["code"], "KeyDisabled", "{st} {v}");
    let (st, v) = admin("POST", &format!("{key}/enable"), json!({}));
    assert_eq!(st, 200, "{v}");
    let (st, v) = post(
        &s,
        Some(&crypto),
        &format!("{key}/wrapKey"),
        wrap_body.clone(),
    );
    assert_eq!(st, 200, "{v}");

    // Rotation: a new current version; what the old one wrapped still unwraps.
    let (st, v) = admin("POST", &format!("{key}/rotate"), json!({}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["properties"]["currentVersion"], 2);
    assert_eq!(v["properties"]["versions"].as_array().unwrap().len(), 2);
    let (st, v) = admin("POST", &format!("{key}/wrapKey"), wrap_body.clone());
    assert_eq!(st, 200, "{v}");
    assert!(v["kid"].as_str().unwrap().ends_with("/keys/k1/2"), "{v}");
    let (st, v) = admin("POST", &format!("{key}/unwrapKey"), json!({ "value": w1 }));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["value"], b64(&dek));
    assert!(v["kid"].as_str().unwrap().ends_with("/keys/k1/1"), "{v}");
    let (st, v) = admin(
        "POST",
        &format!("{key}/decrypt"),
        json!({ "value": c1, "aad": b64(b"ctx") }),
    );
    assert_eq!((st, &v["value"]), (200, &json!(b64(marker))), "{v}");

    // Soft delete: hidden from the list unless asked, refuses use, recoverable.
    let (st, v) = admin("DELETE", &key, json!({}));
    assert_eq!(st, 200, "{v}");
    assert!(v["properties"]["deletedDate"].is_string(), "{v}");
    let keys = format!("{vault}/keys");
    let (_, list) = s.admin("GET", &keys, None);
    assert_eq!(list["value"].as_array().unwrap().len(), 0, "{list}");
    let (_, list) = s.admin("GET", &format!("{keys}?includeDeleted=true"), None);
    assert_eq!(list["value"].as_array().unwrap().len(), 1, "{list}");
    let (st, v) = admin("POST", &format!("{key}/wrapKey"), wrap_body.clone());
    assert_eq!(
        (st, &v["error"]["code"]),
        (409, &json!("KeyDeleted")),
        "{v}"
    );
    let (st, v) = admin("POST", &format!("{key}/recover"), json!({}));
    assert_eq!(st, 200, "{v}");
    assert!(v["properties"]["deletedDate"].is_null(), "{v}");
    let (st, v) = admin("POST", &format!("{key}/unwrapKey"), json!({ "value": w1 }));
    assert_eq!(st, 200, "{v}");

    // Purge protection: purge refused, with the date it lifts; the key stays recoverable.
    let (st, _) = admin("DELETE", &key, json!({}));
    assert_eq!(st, 200);
    let (st, v) = admin("POST", &format!("{key}/purge"), json!({}));
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error"]["code"], "PurgeProtected", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    let year = strata_types::time::rfc3339(strata_types::time::now_unix() + 90 * 86_400);
    assert!(
        msg.contains(&year[..10]),
        "the message names the date: {msg}"
    );
    // Deleting the vault soft-deletes it: its keys are frozen and out of sight until the vault
    // is recovered (and a resource group holding them cannot go).
    let (st, v) = s.admin("DELETE", &vault, None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(s.admin("GET", &vault, None).0, 404);
    assert_eq!(s.admin("GET", &key, None).0, 404);
    let (st, v) = admin("POST", &format!("{key}/recover"), json!({}));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("VaultDeleted")),
        "{v}"
    );
    let (st, v) = post(
        &s,
        Some(&crypto),
        &format!("{key}/unwrapKey"),
        json!({ "value": w1 }),
    );
    assert_eq!(st, 409, "no data plane in a deleted vault: {v}");
    let (st, v) = s.admin(
        "PUT",
        &vault,
        Some(json!({ "properties": { "createMode": "recover" } })),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["properties"]["enablePurgeProtection"], true, "{v}");
    let (st, v) = s.admin("DELETE", &rg, None);
    assert_eq!(st, 409, "{v}");
    let (st, v) = admin("POST", &format!("{key}/recover"), json!({}));
    assert_eq!(st, 200, "{v}");

    // Without purge protection a soft-deleted key can be purged.
    let open_vault = format!("{rg}/providers/Strata.KeyVault/vaults/kv3");
    let (st, v) = s.admin(
        "PUT",
        &open_vault,
        Some(json!({ "properties": { "enablePurgeProtection": false, "softDeleteRetentionInDays": 7 } })),
    );
    assert_eq!(st, 201, "{v}");
    let scratch = format!("{open_vault}/keys/scratch");
    assert_eq!(
        s.admin("PUT", &scratch, Some(json!({ "properties": {} })))
            .0,
        201
    );
    assert_eq!(s.admin("DELETE", &scratch, None).0, 200);
    let (st, v) = s.admin("POST", &format!("{scratch}/purge"), Some(json!({})));
    assert_eq!(st, 204, "{v}");
    assert_eq!(s.admin("GET", &scratch, None).0, 404);

    // EC keys sign and verify.
    let ec = format!("{vault}/keys/signer");
    let (st, v) = s.admin("PUT", &ec, Some(json!({ "properties": { "kty": "EC" } })));
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["properties"]["curveName"], "P-256");
    let (st, sig) = post(
        &s,
        Some(&crypto),
        &format!("{ec}/sign"),
        json!({ "alg": "ES256", "value": b64(b"release 1.2") }),
    );
    assert_eq!(st, 200, "{sig}");
    let verify = |message: &[u8]| {
        post(
            &s,
            Some(&crypto),
            &format!("{ec}/verify"),
            json!({ "alg": "ES256", "message": b64(message), "value": sig["value"], "kid": sig["kid"] }),
        )
    };
    assert_eq!(
        verify(b"release 1.2"),
        (200, verify(b"release 1.2").1.clone())
    );
    assert_eq!(verify(b"release 1.2").1["value"], true);
    assert_eq!(verify(b"release 6.6").1["value"], false);
    let (st, v) = post(
        &s,
        Some(&crypto),
        &format!("{ec}/wrapKey"),
        wrap_body.clone(),
    );
    assert_eq!(
        (st, &v["error"]["code"]),
        (400, &json!("WrongKeyType")),
        "{v}"
    );

    // Every key operation is audited with key id, version and outcome.
    let (_, audit) = s.admin("GET", "/providers/Strata.Audit/entries?limit=1000", None);
    let entries: Vec<&Value> = audit["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["entry"])
        .collect();
    let key_ops: Vec<&Value> = entries
        .iter()
        .flat_map(|e| {
            e["details"]["keyOperations"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .collect();
    let has = |op: &str, version: u32, result: &str| {
        key_ops.iter().any(|r| {
            r["operation"] == op
                && r["version"] == version
                && r["outcome"]["result"] == result
                && r["key"].as_str().unwrap().ends_with("/keys/k1")
        })
    };
    assert!(has("createKey", 1, "success"));
    assert!(has("wrapKey", 1, "success"));
    assert!(has("wrapKey", 1, "failure"), "the disabled key's refusal");
    assert!(has("unwrapKey", 1, "success"));
    assert!(has("wrapKey", 2, "success"));
    assert!(has("beginRotation", 2, "success"));
    assert!(
        key_ops
            .iter()
            .any(|r| r["operation"] == "purge" && r["outcome"]["code"] == "PurgeProtected")
    );
    assert!(
        entries.iter().any(
            |e| e["action"] == "Strata.KeyVault/vaults/keys/wrapKey/action"
                && e["outcome"] == "denied"
        ),
        "the Reader's refusal is audited"
    );

    // No key material anywhere: not the wrapped key, the plaintexts, nor the sealed versions.
    let stored = s
        .running()
        .app
        .store
        .get(&key.to_ascii_lowercase())
        .unwrap()
        .unwrap()
        .body;
    let stored: Value = serde_json::from_str(&stored).unwrap();
    let material = stored["internal"]["vault"]["keys"]["k1"]["versions"][0]["material"]
        .as_str()
        .unwrap()
        .to_string();
    let mut seen = String::new();
    for path in [
        &vault,
        &key,
        &ec,
        &keys,
        &format!("{keys}?includeDeleted=true"),
        &rg,
    ] {
        seen.push_str(&s.admin("GET", path, None).1.to_string());
    }
    seen.push_str(
        &s.admin("GET", &format!("{rg}/resources"), None)
            .1
            .to_string(),
    );
    seen.push_str(&audit.to_string());
    for secret in [
        w1.as_str(),
        c1.as_str(),
        &b64(&dek),
        &b64(marker),
        std::str::from_utf8(marker).unwrap(),
        &material,
        &material[material.len() - 40..],
    ] {
        assert!(
            !seen.contains(secret),
            "found {secret} in a response or audit entry"
        );
    }
    assert!(
        !seen.contains("\"material\""),
        "no sealed material in any response"
    );
}

/// A deleted vault: listed under deletedVaults with its dates, its name taken until it is
/// recovered or purged, purge refused under purge protection until the scheduled date, and
/// the key sweep purging it (keys and all) once that date has passed; without purge protection
/// an explicit purge works at once.
#[test]
fn deleted_vaults_are_recovered_or_purged_with_their_keys() {
    let s = Server::start();
    let rg = s.rg("vaults");
    assert_eq!(
        s.admin("PUT", &rg, Some(json!({ "location": "local" }))).0,
        201
    );
    let vault = format!("{rg}/providers/Strata.KeyVault/vaults/kv");
    let (st, v) = s.admin(
        "PUT",
        &vault,
        Some(json!({ "properties": { "softDeleteRetentionInDays": 7 } })),
    );
    assert_eq!(st, 201, "{v}");
    let key = format!("{vault}/keys/k");
    assert_eq!(
        s.admin("PUT", &key, Some(json!({ "properties": {} }))).0,
        201
    );
    assert_eq!(s.admin("DELETE", &vault, None).0, 200);

    let deleted = format!("{rg}/providers/Strata.KeyVault/deletedVaults/kv");
    let (st, list) = s.admin(
        "GET",
        &format!("{rg}/providers/Strata.KeyVault/deletedVaults"),
        None,
    );
    assert_eq!(st, 200, "{list}");
    let d = &list["value"][0];
    assert_eq!(d["name"], "kv", "{list}");
    assert!(
        d["properties"]["vaultId"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(&vault),
        "{d}"
    );
    assert_eq!(d["properties"]["purgeProtectionEnabled"], true);
    assert!(d["properties"]["scheduledPurgeDate"].is_string(), "{d}");
    // The name is taken; a bad createMode is named; purge waits for the date.
    let (st, v) = s.admin("PUT", &vault, Some(json!({ "properties": {} })));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("VaultAlreadySoftDeleted")),
        "{v}"
    );
    let (st, v) = s.admin(
        "PUT",
        &vault,
        Some(json!({ "properties": { "createMode": "restore" } })),
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("InvalidCreateMode"))
    );
    let (st, v) = s.admin("POST", &format!("{deleted}/purge"), Some(json!({})));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("PurgeProtected")),
        "{v}"
    );
    let (st, v) = s.admin("PUT", &deleted, Some(json!({})));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("DeletedVaultsAreNotCreated")),
        "{v}"
    );
    // Nor deleted around the purge: DELETE is not a way past purge protection.
    let (st, v) = s.admin("DELETE", &deleted, None);
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (405, Some("MethodNotAllowed")),
        "{v}"
    );
    assert_eq!(s.admin("GET", &deleted, None).0, 200);
    // Its keys are out of sight and frozen meanwhile.
    assert_eq!(s.admin("GET", &key, None).0, 404);
    assert_eq!(s.admin("GET", &format!("{vault}/keys"), None).0, 404);
    let (st, v) = s.admin("POST", &format!("{key}/rotate"), Some(json!({})));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("VaultDeleted")),
        "{v}"
    );

    // The sweep: not before the date; after it, the vault and its key are gone for good.
    let app = || s.running().app.clone();
    let now = strata_types::time::now_unix();
    let report = strata_control::keysweep::sweep(&app(), now + 6 * 86_400);
    assert!(report.purged.is_empty(), "{report:?}");
    let report = strata_control::keysweep::sweep(&app(), now + 8 * 86_400);
    assert_eq!(report.purged.len(), 1, "{report:?}");
    assert_eq!(s.admin("GET", &deleted, None).0, 404);
    let store = &s.running().app.store;
    assert!(store.get(&key.to_ascii_lowercase()).unwrap().is_none());
    // The name is free again: a new, empty vault.
    assert_eq!(
        s.admin("PUT", &vault, Some(json!({ "properties": {} }))).0,
        201
    );
    assert_eq!(s.admin("GET", &key, None).0, 404);

    // Without purge protection a deleted vault can be purged at once.
    let open = format!("{rg}/providers/Strata.KeyVault/vaults/open");
    let (st, v) = s.admin(
        "PUT",
        &open,
        Some(json!({ "properties": { "enablePurgeProtection": false, "softDeleteRetentionInDays": 7 } })),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        s.admin(
            "PUT",
            &format!("{open}/keys/x"),
            Some(json!({ "properties": {} }))
        )
        .0,
        201
    );
    assert_eq!(s.admin("DELETE", &open, None).0, 200);
    let (st, v) = s.admin(
        "POST",
        &format!("{rg}/providers/Strata.KeyVault/deletedVaults/open/purge"),
        Some(json!({})),
    );
    assert_eq!(st, 200, "{v}");
    assert!(
        store
            .get(&format!("{open}/keys/x").to_ascii_lowercase())
            .unwrap()
            .is_none(),
        "the purge took the vault's key"
    );
    // Nothing holds the resource group any more.
    assert_eq!(s.admin("DELETE", &vault, None).0, 200);
    let (st, v) = s.admin("POST", &format!("{deleted}/purge"), Some(json!({})));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("PurgeProtected"))
    );
    assert_eq!(
        s.admin("DELETE", &rg, None).0,
        200,
        "an empty deleted vault goes with its group"
    );
}
