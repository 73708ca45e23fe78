//! Snapshots end to end with a real swtpm host and real QEMU VMs: a snapshot of a running VM
//! (copied live through QMP) and of a stopped one (offline), exported still encrypted, and
//! restored into a disk whose VM boots and reads what the first VM's guest wrote. A host cannot
//! hand the control plane a plaintext "snapshot".

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fabric::{TrustedFabric, qemu_host, tiny_cache, trusted_host};
use serde_json::{Value, json};
use strata_agent::images::{ImageStore, SigningKey};
use strata_agent::vms::ControlPlane as _;

fn b64_key(text: &str) -> strata_compute::DiskKey {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    strata_compute::DiskKey::from_bytes(raw.try_into().unwrap())
}

/// The bytes `qemu-io -c "read -v OFFSET LEN"` dumped (`OFFSET:  xx xx … ascii`).
fn dumped(out: &str) -> Vec<u8> {
    out.lines()
        .filter_map(|l| l.split_once(":  "))
        .flat_map(|(_, rest)| {
            rest.split_whitespace()
                .take(16)
                .filter(|t| t.len() == 2)
                .filter_map(|t| u8::from_str_radix(t, 16).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The marker line `prefix <marker>` the guest printed on its serial console.
fn serial_marker(vm_dir: &Path, vm_id: &str, prefix: &str) -> Option<String> {
    let serial = std::fs::read_to_string(vm_dir.join(vm_id).join("serial.log")).ok()?;
    serial
        .lines()
        .filter_map(|l| l.find(prefix).map(|i| &l[i + prefix.len()..]))
        .map(|m| m.trim().to_string())
        .next_back()
}

#[test]
fn snapshots_are_encrypted_exported_encrypted_and_restore_on_a_trusted_host() {
    let cache = tiny_cache();
    let TrustedFabric {
        ca,
        good,
        server,
        keys: _keys,
    } = TrustedFabric::start(|cfg| {
        cfg.fabric.attestation_interval_secs = 60;
    });
    let (_swtpm, agent, _dir) = trusted_host(&ca, "host-1", &good, &server);
    let rg = server.made_rg("apps");

    // The host: its VM loop on the QEMU driver, with the shared tiny image.
    let tmp = tempfile::tempdir().unwrap();
    let images = Arc::new(ImageStore::new(cache, SigningKey::Snakeoil));
    let (driver, host) = qemu_host(tmp.path(), 610, images);
    let vm_dir = driver.vm_dir.clone().unwrap();
    let fabric = agent.fabric_client().unwrap();
    let wait = |path: &str, what: &str, done: &dyn Fn(&Value) -> bool| -> Value {
        let started = Instant::now();
        loop {
            host.tick(&fabric);
            let (_, v) = server.admin("GET", path, None);
            if v["properties"]["provisioningState"] == "Failed" {
                panic!("{what} failed: {v}");
            }
            if done(&v) {
                eprintln!("{what} after {:.1} s", started.elapsed().as_secs_f64());
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "{what} not in time: {v}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let running = |v: &Value| {
        v["properties"]["provisioningState"] == "Succeeded"
            && v["properties"]["powerState"] == "running"
    };
    let succeeded = |v: &Value| v["properties"]["provisioningState"] == "Succeeded";

    // A VM whose guest writes a fresh marker to its disk at every boot.
    let vm = format!("{rg}/providers/Strata.Compute/virtualMachines/source");
    let (s, v) = server.admin(
        "PUT",
        &vm,
        Some(json!({ "properties": { "storageProfile": { "image": "tiny" } } })),
    );
    assert_eq!(s, 201, "{v}");
    let vm_id = v["properties"]["vmId"].as_str().unwrap().to_string();
    wait(&vm, "the source VM running", &running);
    let marker = serial_marker(&vm_dir, &vm_id, strata_compute::image::MARKER_LINE)
        .expect("the guest printed its disk marker");
    let disk_key = {
        let list = agent.assignments(true).unwrap();
        let entry = list["virtualMachines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["vmId"] == vm_id.as_str())
            .unwrap()
            .clone();
        b64_key(entry["diskKey"].as_str().unwrap())
    };

    // Refusals first: nothing is created by them.
    let snap = |name: &str| format!("{rg}/providers/Strata.Compute/snapshots/{name}");
    for (body, code) in [
        (json!({ "properties": {} }), "CreationDataRequired"),
        (
            json!({ "properties": { "creationData": { "createOption": "Empty", "sourceResourceId": vm } } }),
            "InvalidCreateOption",
        ),
        (
            json!({ "properties": { "creationData": { "createOption": "Copy", "sourceResourceId": rg } } }),
            "InvalidSourceResourceId",
        ),
    ] {
        let (s, v) = server.admin("PUT", &snap("bad"), Some(body));
        assert_eq!((s, v["error"]["code"].as_str()), (400, Some(code)), "{v}");
    }
    assert_eq!(server.admin("GET", &snap("bad"), None).0, 404);
    // Copying a VM's disk is data access: a Reader of the VM (who may write elsewhere) gets
    // 403, and nothing is created.
    let (oid, client_id, secret) = server.new_sp("reader");
    server.assign(&oid, "Reader", &rg);
    let mine = server.rg("mine");
    assert_eq!(
        server
            .admin("PUT", &mine, Some(json!({ "location": "local" })))
            .0,
        201
    );
    server.assign(&oid, "Contributor", &mine);
    let reader = server.sp_token(&client_id, &secret).unwrap();
    let stolen = format!("{mine}/providers/Strata.Compute/snapshots/stolen");
    let body = json!({ "properties": { "creationData": { "createOption": "Copy", "sourceResourceId": vm } } });
    let (s, v, _) = server.req("PUT", &stolen, Some(&reader), Some(&body), &[]);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("LinkedAuthorizationFailed")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("virtualMachines/beginGetAccess/action"),
        "{v}"
    );
    assert_eq!(server.admin("GET", &stolen, None).0, 404);

    // A snapshot of the running VM: copied live, the VM keeps running.
    let copy = json!({ "properties": { "creationData": { "createOption": "Copy", "sourceResourceId": vm } } });
    let (s, v) = server.admin("PUT", &snap("live"), Some(copy.clone()));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Creating", "{v}");
    assert_eq!(
        v["properties"]["encryption"]["type"],
        "EncryptionAtRestWithPlatformKey"
    );
    let live = wait(&snap("live"), "the live snapshot", &succeeded);
    let (_, v) = server.admin("GET", &vm, None);
    assert!(running(&v), "the VM stopped for its snapshot: {v}");
    let digest = live["properties"]["sha256"].as_str().unwrap().to_string();
    let size = live["properties"]["sizeBytes"].as_u64().unwrap();

    // Exported: exactly the stored bytes, still encrypted. Read raw they hold no trace of the
    // marker; decrypted with the disk's key they hold it where the guest wrote it; another key
    // opens nothing.
    let (s, bytes) = server.get_bytes(&format!("{}/export", snap("live")));
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(crate::images::sha256(&bytes), digest);
    assert!(
        !contains(&bytes, marker.as_bytes()),
        "the marker is in the export"
    );
    assert!(!contains(&bytes, b"STRATA-DISK-MARKER-"));
    strata_compute::import::check_snapshot_header(&bytes[..4096]).unwrap();
    let exported = tmp.path().join("export.qcow2");
    std::fs::write(&exported, &bytes).unwrap();
    let offset = strata_compute::image::MARKER_OFFSET;
    let out = strata_compute::snapshot::qemu_io(
        &exported,
        &disk_key,
        &format!("read -v {offset} {}", marker.len()),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&dumped(&out)),
        marker,
        "the decrypted export does not hold the marker: {out}"
    );
    let wrong = strata_compute::DiskKey::from_bytes([7; 32]);
    assert!(strata_compute::snapshot::qemu_io(&exported, &wrong, "read 0 512").is_err());

    // A host cannot pass plaintext off as a snapshot: refused, the snapshot Failed, nothing
    // stored.
    let (s, v) = server.admin("PUT", &snap("forged"), Some(copy.clone()));
    assert_eq!(s, 201, "{v}");
    let token = {
        let list = agent.assignments(true).unwrap();
        list["virtualMachines"][0]["snapshots"][0]
            .as_str()
            .unwrap()
            .to_string()
    };
    let plain = tmp.path().join("plain.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&plain)
        .arg("1M")
        .status()
        .unwrap();
    assert!(made.success());
    let sink = fabric.snapshot_sink().unwrap();
    let err = sink.taken(&token, &plain).unwrap_err();
    assert!(err.contains("not LUKS-encrypted"), "{err}");
    // Nothing of it was kept: no blob under its digest, nothing half-received.
    let blobs = server
        .running()
        .app
        .images
        .blob(&"0".repeat(64))
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let plain_digest = crate::images::sha256(&std::fs::read(&plain).unwrap());
    assert!(!blobs.join(&plain_digest).exists());
    let incoming = blobs.parent().unwrap().join("incoming");
    assert_eq!(std::fs::read_dir(&incoming).unwrap().count(), 0);
    let (_, v) = server.admin("GET", &snap("forged"), None);
    assert_eq!(v["properties"]["provisioningState"], "Failed", "{v}");
    assert!(
        v["properties"]["failureReason"]
            .as_str()
            .unwrap()
            .contains("not LUKS-encrypted"),
        "{v}"
    );
    // The token is spent: the same upload again is refused as unknown.
    let err = sink.taken(&token, &plain).unwrap_err();
    assert!(err.contains("404") || err.contains("pending"), "{err}");

    // The VM stopped: the next snapshot is copied offline.
    let (s, v) = server.admin("POST", &format!("{vm}/stop"), None);
    assert!(s == 200 || s == 202, "{v}");
    wait(&vm, "the source VM stopped", &|v| {
        v["properties"]["powerState"] == "stopped"
    });
    let (s, v) = server.admin("PUT", &snap("offline"), Some(copy.clone()));
    assert_eq!(s, 201, "{v}");
    let offline = wait(&snap("offline"), "the offline snapshot", &succeeded);
    assert!(offline["properties"]["sizeBytes"].as_u64().unwrap() > 0);
    assert!(
        offline["properties"]["failureReason"].is_null(),
        "{offline}"
    );

    // Restore: a disk from the live snapshot (same size, same protection), and a VM on it. Its
    // guest finds the marker the source guest wrote, so the copy is complete and opens.
    let disk = format!("{rg}/providers/Strata.Compute/disks/restored");
    let (s, v) = server.admin(
        "PUT",
        &disk,
        Some(json!({ "properties": { "creationData": {
            "createOption": "Copy", "sourceResourceId": snap("live") } } })),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["properties"]["encryption"]["type"],
        "EncryptionAtRestWithPlatformKey"
    );
    assert!(v["properties"]["diskSizeGB"].as_u64().unwrap() >= 1, "{v}");
    let copy_vm = format!("{rg}/providers/Strata.Compute/virtualMachines/restored");
    let (s, v) = server.admin(
        "PUT",
        &copy_vm,
        Some(json!({ "properties": { "storageProfile": {
            "image": "tiny", "osDisk": { "id": disk } } } })),
    );
    assert_eq!(s, 201, "{v}");
    let copy_id = v["properties"]["vmId"].as_str().unwrap().to_string();
    wait(&copy_vm, "the restored VM running", &running);
    assert_eq!(
        serial_marker(
            &vm_dir,
            &copy_id,
            strata_compute::image::PREVIOUS_MARKER_LINE
        ),
        Some(marker.clone()),
        "the restored disk does not hold the source's marker"
    );
    // The restored disk has a LUKS header (so a master key) of its own, not the snapshot's.
    let restored_path = vm_dir.join(&copy_id).join("disk.qcow2");
    let restored_file = std::fs::read(&restored_path).unwrap();
    assert!(!contains(&restored_file, marker.as_bytes()));
    let luks_uuid = |path: &Path| {
        let out = std::process::Command::new("qemu-img")
            .args(["info", "-U", "--output=json"])
            .arg(path)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v.pointer("/format-specific/data/encrypt/uuid")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no LUKS uuid: {v}"))
    };
    assert_ne!(luks_uuid(&restored_path), luks_uuid(&exported));

    // Another Trusted host (joined now, so nothing above was placed on it) can neither send a
    // snapshot pending on host-1 nor fetch the snapshot host-1's restored VM was made from.
    let (_swtpm2, agent2, _dir2) = trusted_host(&ca, "host-2", &good, &server);
    let fabric2 = agent2.fabric_client().unwrap();
    let (s, v) = server.admin("PUT", &snap("cross"), Some(copy.clone()));
    assert_eq!(s, 201, "{v}");
    let token = agent.assignments(true).unwrap()["virtualMachines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["vmId"] == vm_id.as_str())
        .unwrap()["snapshots"][0]
        .as_str()
        .unwrap()
        .to_string();
    // (The whole export: the agent asks `Expect: 100-continue`, so the refusal arrives before
    // any of it is sent, not as a broken pipe.)
    let err = fabric2
        .snapshot_sink()
        .unwrap()
        .taken(&token, &exported)
        .unwrap_err();
    assert!(err.contains("pending on host host-2"), "{err}");
    let err = fabric2
        .snapshot_sink()
        .unwrap()
        .failed(&token, "lies")
        .unwrap_err();
    assert!(err.contains("pending on host host-2"), "{err}");
    let (_, v) = server.admin("GET", &snap("cross"), None);
    assert_eq!(v["properties"]["provisioningState"], "Creating", "{v}");
    let mut sink = Vec::new();
    let err = fabric2
        .image_fetcher()
        .unwrap()
        .fetch(&digest, size, &mut sink)
        .unwrap_err();
    assert!(err.contains("no VM assigned to host host-2"), "{err}");
    assert!(sink.is_empty());
    // host-1 takes it (offline: the source VM is stopped).
    wait(&snap("cross"), "the snapshot on its own host", &succeeded);

    // The snapshot's bytes stay while the disk made from it needs them; deleting both frees
    // them.
    let blob = blobs.join(&digest);
    assert!(blob.is_file());
    assert_eq!(server.admin("DELETE", &copy_vm, None).0, 200);
    assert_eq!(server.admin("DELETE", &snap("live"), None).0, 200);
    let (s, _) = server.get_bytes(&format!("{}/export", snap("live")));
    assert_eq!(s, 404);
    assert!(blob.is_file(), "the restored disk still names the bytes");
    assert_eq!(server.admin("DELETE", &disk, None).0, 200);
    assert!(!blob.exists(), "nothing names the bytes any more");
    assert_eq!(server.admin("DELETE", &vm, None).0, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !driver.hypervisor.list().is_empty() {
        host.tick(&fabric);
        assert!(Instant::now() < deadline, "the VMs were not deleted");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(host.wait_idle(Duration::from_secs(30)));
}
