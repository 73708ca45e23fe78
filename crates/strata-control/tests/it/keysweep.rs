//! Scheduled key rotation and purge: a key's rotation policy (Azure's shape) through the API,
//! the key sweep driven with an injected clock rotating a due key and moving its disks to the
//! new version (the disk key itself unchanged), a crash between the two phases losing nothing,
//! old versions disabled only once no disk uses them, a disabled key left alone, soft-deleted
//! keys purged only once their retention has elapsed, and every action audited as
//! `strata-system`.

use crate::harness::Server;
use serde_json::{Value, json};
use strata_control::compute::disks::{Release, release};
use strata_control::keysweep::{SweepReport, sweep};

const DAY: i64 = 86_400;

fn dek(server: &Server, disk_key: &str) -> Vec<u8> {
    match release(&server.running().app, disk_key).unwrap() {
        Release::Key(k) => k.expose_secret().to_vec(),
        Release::Withheld(why) => panic!("{disk_key} withheld: {why}"),
    }
}

/// Audit entries written by the sweep.
fn sweep_entries(server: &Server) -> Vec<strata_audit::AuditEntry> {
    let store = &server.running().app.store;
    store
        .audit_rows(0, 100_000)
        .unwrap()
        .into_iter()
        .map(|r| serde_json::from_slice::<strata_audit::AuditEntry>(&r.entry).unwrap())
        .filter(|e| e.request_id.starts_with("keysweep-"))
        .collect()
}

#[test]
fn the_key_sweep_rotates_due_keys_rewraps_their_disks_and_purges_expired_keys() {
    let server = Server::start();
    let app = || server.running().app.clone();
    let rg = server.made_rg("sweep");
    let vault = format!("{rg}/providers/Strata.KeyVault/vaults/kv");
    let (s, v) = server.admin(
        "PUT",
        &vault,
        Some(json!({ "properties": { "softDeleteRetentionInDays": 7 } })),
    );
    assert_eq!(s, 201, "{v}");

    // The policy in Azure Key Vault's shape; what is wrong is named.
    let key = format!("{vault}/keys/disk-key");
    let policy = json!({
        "lifetimeActions": [
            { "trigger": { "timeAfterCreate": "P30D" }, "action": { "type": "Rotate" } },
            { "trigger": { "timeBeforeExpiry": "P7D" }, "action": { "type": "Notify" } },
        ],
        "attributes": { "expiryTime": "P90D" },
    });
    for (bad, says) in [
        (
            json!({ "lifetimeActions": [{ "trigger": { "timeAfterCreate": "30 days" }, "action": { "type": "Rotate" } }] }),
            "ISO 8601",
        ),
        (
            json!({ "lifetimeActions": [{ "trigger": { "timeAfterCreate": "PT1H" }, "action": { "type": "Rotate" } }] }),
            "at least one day",
        ),
        (
            json!({ "lifetimeActions": [{ "trigger": { "timeAfterCreate": "P30D" }, "action": { "type": "Notify" } }] }),
            "Notify",
        ),
        (
            json!({ "lifetimeActions": [{ "trigger": {}, "action": { "type": "Rotate" } }] }),
            "exactly one",
        ),
        (
            json!({ "lifetimeActions": [{ "trigger": { "timeBeforeExpiry": "P30D" }, "action": { "type": "Rotate" } }] }),
            "expiryTime",
        ),
        (
            json!({ "lifetimeActions": [{ "trigger": { "timeAfterCreate": "P1Y" }, "action": { "type": "Rotate" } }], "attributes": { "expiryTime": "P90D" } }),
            "shorter than expiryTime",
        ),
    ] {
        let (s, v) = server.admin(
            "PUT",
            &key,
            Some(json!({ "properties": { "kty": "oct", "rotationPolicy": bad } })),
        );
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{says}: {v}"
        );
    }
    let (s, v) = server.admin(
        "PUT",
        &key,
        Some(json!({ "properties": { "kty": "oct", "rotationPolicy": policy } })),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["properties"]["rotationPolicy"], policy, "{v}");
    let v1 = &v["properties"]["versions"][0];
    assert!(
        v1["expires"].is_string(),
        "expiryTime stamps the version: {v1}"
    );

    // Two customer-key disks, made by an operator allowed to wrap with the key.
    let (oid, client_id, secret) = server.new_sp("sweep-operator");
    server.assign(&oid, "Virtual Machine Contributor", &rg);
    server.assign(&oid, "Key Vault Crypto User", &vault);
    let operator = server.sp_token(&client_id, &secret).unwrap();
    let disk = |name: &str| format!("{rg}/providers/Strata.Compute/disks/{name}");
    let mut deks = Vec::new();
    for name in ["d1", "d2"] {
        let body = json!({ "properties": { "diskSizeGB": 8, "encryption": {
            "type": "EncryptionAtRestWithCustomerKey", "keyVaultKeyId": key } } });
        let (s, v, _) = server.req("PUT", &disk(name), Some(&operator), Some(&body), &[]);
        assert_eq!(s, 201, "{v}");
        deks.push(dek(&server, &disk(name).to_ascii_lowercase()));
    }
    let key_version = |name: &str| {
        server.admin("GET", &disk(name), None).1["properties"]["encryption"]["keyVersion"].clone()
    };

    // Not yet due: nothing happens. Due (30 days later on the injected clock): the key gets
    // version 2 and both disks move to it, their data keys unchanged.
    let t0 = strata_types::time::now_unix();
    assert_eq!(sweep(&app(), t0 + 29 * DAY), SweepReport::default());
    let report = sweep(&app(), t0 + 30 * DAY + 60);
    assert_eq!(report.rotated.len(), 1, "{report:?}");
    assert_eq!(report.rewrapped.len(), 2, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    let k = server.admin("GET", &key, None).1;
    assert_eq!(k["properties"]["currentVersion"], 2, "{k}");
    assert_eq!(
        k["properties"]["versions"][0]["enabled"], true,
        "old versions stay enabled"
    );
    assert_eq!(k["properties"]["systemData"], Value::Null);
    assert_eq!(k["systemData"]["lastModifiedBy"], "strata-system", "{k}");
    for (i, name) in ["d1", "d2"].iter().enumerate() {
        assert_eq!(key_version(name), 2);
        assert_eq!(dek(&server, &disk(name).to_ascii_lowercase()), deks[i]);
    }
    // Idempotent: nothing is due until version 2 is 30 days old.
    assert_eq!(sweep(&app(), t0 + 30 * DAY + 60), SweepReport::default());

    // A crash between the phases (a rotation committed, no disk rewrapped yet — what POST
    // rotate leaves): every disk still opens, and the next sweep finishes the job.
    let (s, v) = server.admin("POST", &format!("{key}/rotate"), Some(json!({})));
    assert_eq!(
        (s, v["properties"]["currentVersion"].as_u64()),
        (200, Some(3)),
        "{v}"
    );
    for (i, name) in ["d1", "d2"].iter().enumerate() {
        assert_eq!(key_version(name), 2);
        assert_eq!(dek(&server, &disk(name).to_ascii_lowercase()), deks[i]);
    }
    // (Version 3 was made now, on the real clock: not yet due itself.)
    let report = sweep(&app(), t0 + 29 * DAY);
    assert_eq!(
        (report.rotated.len(), report.rewrapped.len()),
        (0, 2),
        "{report:?}"
    );
    for (i, name) in ["d1", "d2"].iter().enumerate() {
        assert_eq!(key_version(name), 3);
        assert_eq!(dek(&server, &disk(name).to_ascii_lowercase()), deks[i]);
    }

    // Cleanup after rotation: an old version no disk uses can be disabled; one a disk is still
    // wrapped under cannot (VersionInUse names the disk) until the disk is rewrapped; the
    // current version never.
    let patch_version = |version: u64, enabled: bool| {
        server.admin(
            "PATCH",
            &key,
            Some(json!({ "properties": { "versions": [{ "version": version, "enabled": enabled }] } })),
        )
    };
    let (s, v) = patch_version(1, false);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["properties"]["versions"][0]["enabled"], false, "{v}");
    let (s, v) = patch_version(3, false);
    assert_eq!(s, 400, "the current version: {v}");
    let (s, v) = server.admin("POST", &format!("{key}/rotate"), Some(json!({})));
    assert_eq!(
        (s, v["properties"]["currentVersion"].as_u64()),
        (200, Some(4)),
        "{v}"
    );
    assert_eq!(
        v["properties"]["versions"][0]["enabled"], false,
        "stays disabled: {v}"
    );
    let (s, v) = patch_version(3, false);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("VersionInUse")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("/disks/d"),
        "{v}"
    );
    let report = sweep(&app(), t0 + 29 * DAY);
    assert_eq!(report.rewrapped.len(), 2, "{report:?}");
    let (s, v) = patch_version(3, false);
    assert_eq!(s, 200, "{v}");
    for (i, name) in ["d1", "d2"].iter().enumerate() {
        assert_eq!(key_version(name), 4);
        assert_eq!(dek(&server, &disk(name).to_ascii_lowercase()), deks[i]);
    }

    // A disabled key is locked on purpose: not rotated, even long past due.
    let (s, v) = server.admin(
        "PATCH",
        &key,
        Some(json!({ "properties": { "enabled": false } })),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(sweep(&app(), t0 + 400 * DAY), SweepReport::default());

    // Soft-deleted keys: purge protection refuses an early purge; the sweep purges once the
    // retention has elapsed, not before.
    let gone = format!("{vault}/keys/gone");
    assert_eq!(
        server
            .admin("PUT", &gone, Some(json!({ "properties": { "kty": "EC" } })))
            .0,
        201
    );
    let (s, v) = server.admin("DELETE", &gone, None);
    assert_eq!(s, 200, "{v}");
    let (s, v) = server.admin("POST", &format!("{gone}/purge"), Some(json!({})));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("PurgeProtected")),
        "{v}"
    );
    let t1 = strata_types::time::now_unix();
    let report = sweep(&app(), t1 + 7 * DAY - 60);
    assert!(report.purged.is_empty(), "{report:?}");
    let report = sweep(&app(), t1 + 7 * DAY + 60);
    assert_eq!(report.purged.len(), 1, "{report:?}");
    assert_eq!(server.admin("GET", &gone, None).0, 404);

    // Each action is audited as the system, with the key operations it ran.
    let audit = sweep_entries(&server);
    assert!(
        audit
            .iter()
            .all(|e| e.principal_name.as_deref() == Some("strata-system"))
    );
    let count = |action: &str| {
        audit
            .iter()
            .filter(|e| e.action.ends_with(action) && e.outcome == "success")
            .count()
    };
    assert_eq!(count("keys/rotate/action"), 1, "{audit:?}");
    assert_eq!(count("disks/rewrapKey/action"), 6, "{audit:?}");
    assert_eq!(count("keys/purge/action"), 1, "{audit:?}");
    let text =
        serde_json::to_string(&audit.iter().map(|e| &e.details).collect::<Vec<_>>()).unwrap();
    assert!(
        text.contains("beginRotation") && text.contains("rewrap") && text.contains("\"purge\""),
        "{text}"
    );
}

/// The rotation policy's Notify action: once the current version is within `timeBeforeExpiry`
/// of its expiry, the sweep audits a near-expiry notice, once per version (a change to the key
/// does not repeat it); the version a rotation makes gets its own.
#[test]
fn near_expiry_is_noticed_once_per_version() {
    let server = Server::start();
    let app = || server.running().app.clone();
    let rg = server.made_rg("notice");
    let vault = server.made_vault(&rg, "kv");
    let key = format!("{vault}/keys/expiring");
    let policy = json!({
        "lifetimeActions": [
            { "trigger": { "timeBeforeExpiry": "P7D" }, "action": { "type": "Notify" } },
        ],
        "attributes": { "expiryTime": "P30D" },
    });
    let (s, v) = server.admin(
        "PUT",
        &key,
        Some(json!({ "properties": { "kty": "oct", "rotationPolicy": policy } })),
    );
    assert_eq!(s, 201, "{v}");
    let notices = || {
        sweep_entries(&server)
            .into_iter()
            .filter(|e| e.action.ends_with("keys/nearExpiry/action"))
            .map(|e| serde_json::to_value(e).unwrap())
            .collect::<Vec<_>>()
    };
    let t0 = strata_types::time::now_unix();
    // 22 days in: 8 days left, outside the window.
    assert_eq!(sweep(&app(), t0 + 22 * DAY), SweepReport::default());
    assert!(notices().is_empty());
    // 24 days in: 6 days left, one notice naming the version and its expiry.
    let report = sweep(&app(), t0 + 24 * DAY);
    assert_eq!(report.notified.len(), 1, "{report:?}");
    let n = notices();
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0]["details"]["version"], 1, "{n:?}");
    assert_eq!(n[0]["details"]["event"], "KeyNearExpiry", "{n:?}");
    assert!(
        n[0]["reason"]
            .as_str()
            .unwrap()
            .contains("version 1 expires"),
        "{n:?}"
    );
    // Not again for the same version, even after the key document changes.
    let (s, v) = server.admin("PATCH", &key, Some(json!({ "tags": { "owner": "ops" } })));
    assert_eq!(s, 200, "{v}");
    assert_eq!(sweep(&app(), t0 + 25 * DAY), SweepReport::default());
    assert_eq!(notices().len(), 1);
    // Rotated (now, on the real clock): the new version has its own 30 days and its own
    // notice, in its own window.
    let (s, v) = server.admin("POST", &format!("{key}/rotate"), Some(json!({})));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["properties"]["currentVersion"], 2, "{v}");
    assert_eq!(sweep(&app(), t0 + 22 * DAY), SweepReport::default());
    let report = sweep(&app(), t0 + 24 * DAY);
    assert_eq!(report.notified.len(), 1, "{report:?}");
    let n = notices();
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(n.iter().any(|e| e["details"]["version"] == 2), "{n:?}");
}
