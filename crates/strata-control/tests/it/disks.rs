//! Managed disks end to end with a real swtpm host: a platform-key disk and a customer-key
//! disk (the caller needs wrapKey on the vault key), a VM using the customer-key disk as its
//! OS disk, whose key is withheld from the Trusted host's assignments while the customer key is
//! disabled (the VM held Stopped with the reason) and released again once it is enabled;
//! rotation and rewrap keep the same disk key; nothing secret in any GET or audit entry.

use crate::fabric::{TrustedFabric, trusted_host};
use base64::Engine as _;
use serde_json::{Value, json};
use strata_agent::agent::Agent;

fn assignment(agent: &Agent, vm_id: &str) -> Value {
    let list = agent.assignments(true).unwrap();
    list["virtualMachines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vmId"] == vm_id)
        .unwrap_or_else(|| panic!("{vm_id} not assigned: {list}"))
        .clone()
}

fn report(agent: &Agent, id: &str, generation: u64, power: &str) {
    agent
        .report_vms(&json!({ "virtualMachines": [{
            "id": id, "generation": generation, "powerState": power,
        }] }))
        .unwrap();
}

#[test]
fn disks_are_encrypted_and_a_disabled_customer_key_locks_its_vms() {
    let TrustedFabric {
        ca,
        good,
        server,
        keys: _keys,
    } = TrustedFabric::start(|cfg| {
        cfg.fabric.attestation_interval_secs = 1;
    });
    let (swtpm, agent, _dir) = trusted_host(&ca, "host-1", &good, &server);

    let rg = server.made_rg("data");
    let vault = server.made_vault(&rg, "kv");
    let key = format!("{vault}/keys/disk-key");
    let (s, v) = server.admin("PUT", &key, Some(json!({ "properties": { "kty": "oct" } })));
    assert_eq!(s, 201, "{v}");
    let disk = |name: &str| format!("{rg}/providers/Strata.Compute/disks/{name}");

    // A platform-key disk by default; bad input names the problem.
    let (s, v) = server.admin(
        "PUT",
        &disk("plain"),
        Some(json!({ "properties": { "diskSizeGB": 8 } })),
    );
    assert_eq!(s, 201, "{v}");
    let p = &v["properties"];
    assert_eq!(p["encryption"]["type"], "EncryptionAtRestWithPlatformKey");
    assert_eq!(p["encryption"]["keyVersion"], 1);
    assert_eq!(
        (p["diskState"].as_str(), &p["managedBy"]),
        (Some("Unattached"), &Value::Null)
    );
    for (props, code) in [
        (json!({}), "DiskSizeRequired"),
        (json!({ "diskSizeGB": 0 }), "InvalidDiskSize"),
        (
            json!({ "diskSizeGB": 8, "encryption": { "type": "EncryptionAtRestWithCustomerKey" } }),
            "KeyVaultKeyRequired",
        ),
        (
            json!({ "diskSizeGB": 8, "encryption": { "type": "Rot13" } }),
            "InvalidEncryptionType",
        ),
        (
            json!({ "diskSizeGB": 8, "encryption": { "keyVaultKeyId": vault } }),
            "InvalidKeyVaultKeyId",
        ),
    ] {
        let (s, v) = server.admin("PUT", &disk("bad"), Some(json!({ "properties": props })));
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{props}: {v}"
        );
    }

    // A customer-key disk needs wrapKey on the key: the Owner manages but holds no data
    // actions, so it is refused; an operator with Key Vault Crypto User on the vault may.
    let cmk = json!({ "properties": { "diskSizeGB": 16, "encryption": {
        "type": "EncryptionAtRestWithCustomerKey", "keyVaultKeyId": key } } });
    let (s, v) = server.admin("PUT", &disk("secret"), Some(cmk.clone()));
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wrapKey/action"),
        "{v}"
    );
    assert_eq!(server.admin("GET", &disk("secret"), None).0, 404);
    let (oid, client_id, secret) = server.new_sp("disk-operator");
    server.assign(&oid, "Virtual Machine Contributor", &rg);
    server.assign(&oid, "Key Vault Crypto User", &vault);
    let operator = server.sp_token(&client_id, &secret).unwrap();
    let as_operator = |method: &str, path: &str, body: Option<Value>| {
        let (s, v, _) = server.req(method, path, Some(&operator), body.as_ref(), &[]);
        (s, v)
    };
    let (s, v) = as_operator("PUT", &disk("secret"), Some(cmk));
    assert_eq!(s, 201, "{v}");
    let e = &v["properties"]["encryption"];
    assert_eq!(e["type"], "EncryptionAtRestWithCustomerKey", "{v}");
    assert_eq!(e["keyVersion"], 1);
    assert!(
        e["keyUriWithVersion"]
            .as_str()
            .unwrap()
            .ends_with("/keys/disk-key/1"),
        "{v}"
    );
    // The encryption cannot change afterwards.
    let (s, v) = server.admin(
        "PUT",
        &disk("secret"),
        Some(json!({ "properties": { "diskSizeGB": 16 } })),
    );
    assert_eq!(s, 409, "{v}");

    // A VM with the customer-key disk as its OS disk: the disk is attached and kept.
    let vm = format!("{rg}/providers/Strata.Compute/virtualMachines/locked");
    let (s, v) = server.admin(
        "PUT",
        &vm,
        Some(json!({ "properties": { "storageProfile": {
            "image": "tiny", "osDisk": { "id": disk("secret") } } } })),
    );
    assert_eq!(s, 201, "{v}");
    let vm_id = v["properties"]["vmId"].as_str().unwrap().to_string();
    let vm_arm_id = v["id"].as_str().unwrap().to_string();
    let (_, d) = server.admin("GET", &disk("secret"), None);
    assert_eq!(d["properties"]["diskState"], "Attached", "{d}");
    assert!(
        d["properties"]["managedBy"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(&vm_arm_id)
    );
    let (s, v) = server.admin("DELETE", &disk("secret"), None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("DiskAttached"))
    );
    // A disk is the OS disk of one VM only.
    let (s, v) = server.admin(
        "PUT",
        &format!("{rg}/providers/Strata.Compute/virtualMachines/thief"),
        Some(json!({ "properties": { "storageProfile": {
            "image": "tiny", "osDisk": { "id": disk("secret") } } } })),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("DiskAttached"))
    );

    // The Trusted host gets the disk's key (unwrapped by the vault key) with the VM.
    let a = assignment(&agent, &vm_id);
    assert_eq!(a["desiredState"], "Running", "{a}");
    let disk_key = a["diskKey"].as_str().unwrap().to_string();
    let generation = a["generation"].as_u64().unwrap();
    report(&agent, &vm_arm_id, generation, "Running");
    assert_eq!(
        server.admin("GET", &vm, None).1["properties"]["powerState"],
        "running"
    );

    // Customer key disabled: the key is withheld, the VM held stopped with the reason.
    let (s, v) = server.admin("POST", &format!("{key}/disable"), None);
    assert_eq!(s, 200, "{v}");
    let a = assignment(&agent, &vm_id);
    assert_eq!(a["desiredState"], "Stopped", "{a}");
    assert!(a.get("diskKey").is_none(), "{a}");
    report(&agent, &vm_arm_id, generation, "Stopped");
    let v = server.admin("GET", &vm, None).1;
    assert_eq!(
        (
            v["properties"]["powerState"].as_str(),
            v["properties"]["failureReason"].as_str()
        ),
        (Some("stopped"), Some("customer key disabled")),
        "{v}"
    );
    // Starting it changes nothing while the key is disabled.
    assert_eq!(server.admin("POST", &format!("{vm}/start"), None).0, 200);
    let a = assignment(&agent, &vm_id);
    assert_eq!(a["desiredState"], "Stopped", "{a}");
    assert!(a.get("diskKey").is_none(), "{a}");

    // Enabled again: the same key is released and the VM runs again.
    let (s, v) = server.admin("POST", &format!("{key}/enable"), None);
    assert_eq!(s, 200, "{v}");
    let a = assignment(&agent, &vm_id);
    assert_eq!(a["desiredState"], "Running", "{a}");
    assert_eq!(a["diskKey"].as_str(), Some(disk_key.as_str()));
    report(
        &agent,
        &vm_arm_id,
        a["generation"].as_u64().unwrap(),
        "Running",
    );
    let v = server.admin("GET", &vm, None).1;
    assert_eq!(
        (
            v["properties"]["powerState"].as_str(),
            &v["properties"]["failureReason"]
        ),
        (Some("running"), &Value::Null),
        "{v}"
    );

    // The key's vault soft-deleted: the key is frozen, the disk locked ("deleted"); recovered:
    // the same key is released again.
    assert_eq!(server.admin("DELETE", &vault, None).0, 200);
    let a = assignment(&agent, &vm_id);
    assert_eq!(a["desiredState"], "Stopped", "{a}");
    assert!(a.get("diskKey").is_none(), "{a}");
    report(
        &agent,
        &vm_arm_id,
        a["generation"].as_u64().unwrap(),
        "Stopped",
    );
    assert_eq!(
        server.admin("GET", &vm, None).1["properties"]["failureReason"],
        "customer key deleted"
    );
    let (s, v) = server.admin(
        "PUT",
        &vault,
        Some(json!({ "properties": { "createMode": "recover" } })),
    );
    assert_eq!(s, 201, "{v}");
    let a = assignment(&agent, &vm_id);
    assert_eq!(a["desiredState"], "Running", "{a}");
    assert_eq!(a["diskKey"].as_str(), Some(disk_key.as_str()), "{a}");
    report(
        &agent,
        &vm_arm_id,
        a["generation"].as_u64().unwrap(),
        "Running",
    );

    // A snapshot of the VM's disk is locked by the same customer key (its own envelope of the
    // same data key, bound to the snapshot).
    let snap = format!("{rg}/providers/Strata.Compute/snapshots/secret-snap");
    let (s, v) = as_operator("PUT", &snap, Some(copy_of(&vm)));
    assert_eq!(s, 201, "{v}");
    let e = &v["properties"]["encryption"];
    assert_eq!(
        (e["type"].as_str(), &e["keyVersion"]),
        (Some("EncryptionAtRestWithCustomerKey"), &json!(1)),
        "{v}"
    );
    let a = assignment(&agent, &vm_id);
    assert_eq!(a["snapshots"].as_array().map(Vec::len), Some(1), "{a}");
    // An unattached disk has no data to copy.
    let (s, v) = as_operator(
        "PUT",
        &format!("{rg}/providers/Strata.Compute/snapshots/empty"),
        Some(copy_of(&disk("plain"))),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("DiskNotAttached")),
        "{v}"
    );

    // Rotation: the disk's envelope (version 1) still opens; rewrap moves it to version 2,
    // and the disk key itself never changes.
    let (s, v) = server.admin("POST", &format!("{key}/rotate"), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["properties"]["currentVersion"], 2);
    let a = assignment(&agent, &vm_id);
    assert_eq!(a["diskKey"].as_str(), Some(disk_key.as_str()), "{a}");
    let (s, v) = as_operator("POST", &format!("{}/rewrapKey", disk("secret")), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["properties"]["encryption"]["keyVersion"], 2, "{v}");
    let (s, v) = as_operator("POST", &format!("{}/rewrapKey", disk("secret")), None);
    assert_eq!(
        (s, &v["properties"]["encryption"]["keyVersion"]),
        (200, &json!(2))
    );
    let a = assignment(&agent, &vm_id);
    assert_eq!(a["diskKey"].as_str(), Some(disk_key.as_str()), "{a}");
    // Version 1 still wraps the snapshot's key: it cannot be disabled until the key sweep has
    // moved the snapshot too.
    let disable_v1 = || {
        server.admin(
            "PATCH",
            &key,
            Some(json!({ "properties": { "versions": [{ "version": 1, "enabled": false }] } })),
        )
    };
    let (s, v) = disable_v1();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("VersionInUse")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("snapshots/secret-snap"),
        "{v}"
    );
    let report =
        strata_control::keysweep::sweep(&server.running().app, strata_types::time::now_unix());
    assert!(
        report.rewrapped.iter().any(|r| r.ends_with("secret-snap")),
        "{report:?}"
    );
    let (_, v) = server.admin("GET", &snap, None);
    assert_eq!(v["properties"]["encryption"]["keyVersion"], 2, "{v}");
    let (s, v) = disable_v1();
    assert_eq!(s, 200, "{v}");

    // A delivered customer-key snapshot (the host's copy stood in for by an encrypted image
    // under the disk's key): a disk made from it keeps the customer key; asking for the
    // platform key instead is refused, since it would take the data from the key's owner.
    let first = assignment(&agent, &vm_id)["snapshots"][0]
        .as_str()
        .unwrap()
        .to_string();
    let snap2 = format!("{rg}/providers/Strata.Compute/snapshots/delivered");
    let (s, v) = as_operator("PUT", &snap2, Some(copy_of(&vm)));
    assert_eq!(s, 201, "{v}");
    let token = assignment(&agent, &vm_id)["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|t| *t != first)
        .unwrap()
        .to_string();
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("copy.qcow2");
    let raw: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(&disk_key)
        .unwrap()
        .try_into()
        .unwrap();
    strata_compute::snapshot::create_encrypted_image(
        &image,
        &strata_compute::DiskKey::from_bytes(raw),
        64 << 20,
    )
    .unwrap();
    use strata_agent::vms::ControlPlane as _;
    agent
        .fabric_client()
        .unwrap()
        .snapshot_sink()
        .unwrap()
        .taken(&token, &image)
        .unwrap();
    let (_, v) = server.admin("GET", &snap2, None);
    assert_eq!(v["properties"]["provisioningState"], "Succeeded", "{v}");
    let restored = format!("{rg}/providers/Strata.Compute/disks/from-cmk");
    let (s, v) = as_operator(
        "PUT",
        &restored,
        Some(json!({ "properties": {
            "creationData": { "createOption": "Copy", "sourceResourceId": snap2 },
            "encryption": { "type": "EncryptionAtRestWithPlatformKey" } } })),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("InvalidEncryption")),
        "{v}"
    );
    let (s, v) = as_operator("PUT", &restored, Some(copy_of(&snap2)));
    assert_eq!(s, 201, "{v}");
    let e = &v["properties"]["encryption"];
    assert_eq!(e["type"], "EncryptionAtRestWithCustomerKey", "{v}");
    assert!(
        e["keyVaultKeyId"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(&key),
        "{v}"
    );
    assert_eq!(v["properties"]["diskSizeGB"], 1, "{v}");
    assert_eq!(as_operator("DELETE", &restored, None).0, 200);

    // A VM on the platform-key disk gets that disk's key.
    let (s, v) = server.admin(
        "PUT",
        &format!("{rg}/providers/Strata.Compute/virtualMachines/open"),
        Some(json!({ "properties": { "storageProfile": {
            "image": "tiny", "osDisk": { "id": disk("plain") } } } })),
    );
    assert_eq!(s, 201, "{v}");
    let a = assignment(&agent, v["properties"]["vmId"].as_str().unwrap());
    let plain_key = a["diskKey"].as_str().unwrap().to_string();
    assert_ne!(plain_key, disk_key);

    // A snapshot its host never delivers fails after the limit, its token off the VM.
    let app = server.running().app.clone();
    let now = strata_types::time::now_unix();
    assert_eq!(
        strata_control::compute::snapshots::expire(&app, now + 3600),
        0
    );
    assert_eq!(
        strata_control::compute::snapshots::expire(&app, now + 4 * 3600),
        1
    );
    let (_, v) = server.admin("GET", &snap, None);
    assert_eq!(v["properties"]["provisioningState"], "Failed", "{v}");
    assert!(
        v["properties"]["failureReason"]
            .as_str()
            .unwrap()
            .contains("did not deliver the snapshot within 3 hours"),
        "{v}"
    );
    assert!(assignment(&agent, &vm_id).get("snapshots").is_none());

    // Deleting the VM keeps its disk, Unattached; then the disk may go. A snapshot its host
    // never took fails with the reason.
    let snap = format!("{rg}/providers/Strata.Compute/snapshots/late");
    let (s, v) = as_operator("PUT", &snap, Some(copy_of(&vm)));
    assert_eq!(s, 201, "{v}");
    assert_eq!(server.admin("DELETE", &vm, None).0, 200);
    let (_, v) = server.admin("GET", &snap, None);
    assert_eq!(
        (
            v["properties"]["provisioningState"].as_str(),
            v["properties"]["failureReason"].as_str()
        ),
        (
            Some("Failed"),
            Some("the VM was deleted before its host took the snapshot")
        ),
        "{v}"
    );
    let (_, d) = server.admin("GET", &disk("secret"), None);
    assert_eq!(d["properties"]["diskState"], "Unattached", "{d}");
    assert_eq!(server.admin("DELETE", &disk("secret"), None).0, 200);

    // Nothing secret in any GET or audit entry.
    let (_, list) = server.admin("GET", &format!("{rg}/providers/Strata.Compute/disks"), None);
    let (_, all) = server.admin("GET", &format!("{rg}/resources"), None);
    let (_, audit) = server.admin("GET", "/providers/Strata.Audit/entries?limit=1000", None);
    for text in [list.to_string(), all.to_string(), audit.to_string()] {
        for secret in [&disk_key, &plain_key] {
            assert!(!text.contains(secret.as_str()), "a disk key leaked");
        }
        assert!(!text.contains("dataKey"), "a wrapped disk key leaked");
    }
    // Key operations are audited with the key and version.
    assert!(
        audit.to_string().contains("\"operation\":\"rewrap\""),
        "rewrap is audited"
    );
    drop(swtpm);
}

/// The body of a snapshot or disk that copies `source`.
fn copy_of(source: &str) -> Value {
    json!({ "properties": { "creationData": { "createOption": "Copy", "sourceResourceId": source } } })
}
