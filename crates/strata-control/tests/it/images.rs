//! Imported images end to end (no VM boots here: see `imported_image_boots` for those): the
//! declaration, the streamed upload (admitted before the body is read, size and digest checked),
//! the import checks (a qcow2 with a backing file or an external data file, an absurd virtual
//! size, a format that lies: all 400 and nothing stored), content-addressed storage, read
//! access to use an image in a VM, the OS disk size against the image's, a Trusted host
//! fetching exactly its VMs' image content over mTLS, and the bytes going once nothing names
//! them.

use std::path::Path;
use std::process::Command;

use crate::fabric::{TrustedFabric, trusted_host};
use crate::harness::Server;
use serde_json::{Value, json};
use strata_agent::images::ImageFetcher as _;

/// POSTs `bytes` to `image`/upload with `token` (none: unauthenticated).
pub(crate) fn upload(
    server: &Server,
    token: Option<&str>,
    image: &str,
    bytes: &[u8],
) -> (u16, Value) {
    let mut req = server
        .agent
        .post(&format!("{}{image}/upload", server.endpoint()))
        .header("content-type", "application/octet-stream");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut resp = req.send(bytes).unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Declares `image` for `bytes` in `format` (with their digest when `with_digest`).
pub(crate) fn declare(
    server: &Server,
    image: &str,
    format: &str,
    bytes: &[u8],
    with_digest: bool,
) -> (u16, Value) {
    let mut source = json!({ "type": "Upload", "format": format, "uploadSizeBytes": bytes.len() });
    if with_digest {
        source["sha256"] = json!(sha256(bytes));
    }
    server.admin(
        "PUT",
        image,
        Some(json!({ "properties": { "source": source } })),
    )
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    strata_attest::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn images_are_checked_stored_by_digest_and_fetched_only_by_their_vms_hosts() {
    let TrustedFabric {
        ca,
        good,
        server,
        keys: _keys,
    } = TrustedFabric::start(|cfg| {
        cfg.fabric.attestation_interval_secs = 1;
        cfg.images.max_upload_bytes = 16 << 20;
    });
    let data_dir = server
        .running()
        .profile_path
        .parent()
        .unwrap()
        .to_path_buf();
    for rg in ["golden", "apps"] {
        let (s, v) = server.admin("PUT", &server.rg(rg), Some(json!({ "location": "local" })));
        assert_eq!(s, 201, "{v}");
    }
    let image = |name: &str| {
        format!(
            "{}/providers/Strata.Compute/images/{name}",
            server.rg("golden")
        )
    };
    let files = tempfile::tempdir().unwrap();
    let token = server.admin_token.clone();

    // Declarations are checked.
    for (source, code) in [
        (json!(null), "SourceRequired"),
        (
            json!({ "format": "vmdk", "uploadSizeBytes": 10 }),
            "InvalidImageFormat",
        ),
        (json!({ "format": "raw" }), "UploadSizeRequired"),
        (
            json!({ "format": "raw", "uploadSizeBytes": 17 << 20 }),
            "InvalidUploadSize",
        ),
        (
            json!({ "format": "raw", "uploadSizeBytes": 10, "sha256": "abc" }),
            "InvalidDigest",
        ),
        (
            json!({ "type": "Url", "format": "raw", "uploadSizeBytes": 10 }),
            "InvalidImageSource",
        ),
    ] {
        let (s, v) = server.admin(
            "PUT",
            &image("bad"),
            Some(json!({ "properties": { "source": source } })),
        );
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{source}: {v}"
        );
    }

    // A raw image: declared, then uploaded with its digest checked, converted to qcow2.
    let raw: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (s, v) = declare(&server, &image("raw"), "raw", &raw, true);
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "PendingUpload", "{v}");
    assert!(v["properties"]["sha256"].is_null(), "{v}");
    // Admitted before the body is read: no token, no upload (and nothing kept).
    let (s, v) = upload(&server, None, &image("raw"), &raw);
    assert_eq!(s, 401, "{v}");
    // The declared length, exactly.
    let (s, v) = upload(&server, Some(&token), &image("raw"), &raw[..1000]);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("UploadSizeMismatch")),
        "{v}"
    );
    let (s, v) = upload(&server, Some(&token), &image("raw"), &raw);
    assert_eq!(s, 200, "{v}");
    let p = &v["properties"];
    assert_eq!(p["provisioningState"], "Succeeded", "{v}");
    assert_eq!(p["format"], "qcow2");
    assert_eq!(p["virtualSizeBytes"], 1 << 20);
    assert_eq!(p["source"]["sha256"], sha256(&raw));
    // The stored bytes are the canonical qcow2, named by their digest, the control plane's only.
    let digest = p["sha256"].as_str().unwrap().to_string();
    let blob = data_dir.join("images/sha256").join(&digest);
    let stored = std::fs::read(&blob).unwrap();
    assert_eq!(sha256(&stored), digest);
    assert_eq!(p["sizeBytes"], stored.len());
    assert!(stored.starts_with(b"QFI\xfb"));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&blob).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Once is enough.
    let (s, v) = upload(&server, Some(&token), &image("raw"), &raw);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("ImageAlreadyUploaded")),
        "{v}"
    );
    // The source cannot change; tags can.
    let (s, v) = server.admin(
        "PUT",
        &image("raw"),
        Some(json!({ "properties": { "source": { "format": "qcow2", "uploadSizeBytes": raw.len() } } })),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("PropertyChangeNotAllowed")),
        "{v}"
    );

    // A digest that does not match the bytes: refused, still pending.
    let (s, _) = server.admin(
        "PUT",
        &image("wrong-digest"),
        Some(json!({ "properties": { "source": { "format": "raw", "uploadSizeBytes": raw.len(), "sha256": "0".repeat(64) } } })),
    );
    assert_eq!(s, 201);
    let (s, v) = upload(&server, Some(&token), &image("wrong-digest"), &raw);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("UploadDigestMismatch")),
        "{v}"
    );
    assert_eq!(
        server.admin("GET", &image("wrong-digest"), None).1["properties"]["provisioningState"],
        "PendingUpload"
    );

    // Hostile qcow2 images: a backing file and an external data file naming a host file (the
    // classic read-the-host attack), a virtual size of 64 TiB, a qcow2 passed off as raw.
    // Each is refused with the reason; nothing of the host file is read into the store.
    let secret = files.path().join("host-secret");
    std::fs::write(&secret, "HOST-SECRET-".repeat(1000)).unwrap();
    let backing = files.path().join("backing.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        path_str(&secret),
        "-F",
        "raw",
        path_str(&backing),
    ]);
    let data_file = files.path().join("datafile.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", path_str(&secret)),
        path_str(&data_file),
        "1M",
    ]);
    let huge = files.path().join("huge.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", path_str(&huge), "64T"]);
    let small = files.path().join("small.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", path_str(&small), "2G"]);
    let before: Vec<_> = std::fs::read_dir(data_dir.join("images/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    for (name, file, format, expect) in [
        ("backing", &backing, "qcow2", "backing file"),
        ("datafile", &data_file, "qcow2", "external data file"),
        ("huge", &huge, "qcow2", "virtual size"),
        ("liar", &small, "raw", "is a qcow2 image, not raw"),
        ("notqcow", &secret, "qcow2", "not a qcow2 image"),
    ] {
        let bytes = std::fs::read(file).unwrap();
        let (s, v) = declare(&server, &image(name), format, &bytes, false);
        assert_eq!(s, 201, "{name}: {v}");
        let (s, v) = upload(&server, Some(&token), &image(name), &bytes);
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("InvalidImage")),
            "{name}: {v}"
        );
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(expect), "{name}: {msg}");
        assert_eq!(
            server.admin("GET", &image(name), None).1["properties"]["provisioningState"],
            "PendingUpload"
        );
    }
    let after: Vec<_> = std::fs::read_dir(data_dir.join("images/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "a refused upload stores nothing");
    for entry in walk(&data_dir.join("images")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !contains(&bytes, b"HOST-SECRET-"),
            "{} holds the host file",
            entry.display()
        );
    }
    // The failed writes are audited with their reason code.
    let (_, audit) = server.admin("GET", "/providers/Strata.Audit/entries?limit=1000", None);
    assert!(
        audit["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["entry"]["outcome"] == "failure"
                && e["entry"]["details"]["error"] == "InvalidImage"
                && e["entry"]["action"] == "Strata.Compute/images/write"),
        "{audit}"
    );

    // A qcow2 with a 2 GiB virtual size, uploaded as qcow2.
    let small_bytes = std::fs::read(&small).unwrap();
    let (s, _) = declare(&server, &image("big-disk"), "qcow2", &small_bytes, true);
    assert_eq!(s, 201);
    let (s, v) = upload(&server, Some(&token), &image("big-disk"), &small_bytes);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["properties"]["virtualSizeBytes"], 2u64 << 30, "{v}");
    let big_digest = v["properties"]["sha256"].as_str().unwrap().to_string();

    // A Trusted host to place VMs on.
    let (_swtpm, agent, _dir) = trusted_host(&ca, "host-1", &good, &server);
    let fabric = agent.fabric_client().unwrap();

    // Using an image in a VM needs read on it: a VM contributor of "apps" cannot see "golden".
    let (oid, client_id, secret_text) = server.new_sp("builder");
    server.assign(&oid, "Virtual Machine Contributor", &server.rg("apps"));
    let builder = server.sp_token(&client_id, &secret_text).unwrap();
    let vm = |name: &str| {
        format!(
            "{}/providers/Strata.Compute/virtualMachines/{name}",
            server.rg("apps")
        )
    };
    let from = |img: &str, gb: Option<u64>| {
        let mut storage = json!({ "imageReference": { "id": image(img) } });
        if let Some(gb) = gb {
            storage["osDisk"] = json!({ "diskSizeGB": gb });
        }
        json!({ "properties": { "storageProfile": storage } })
    };
    let (s, v, _) = server.req(
        "PUT",
        &vm("web"),
        Some(&builder),
        Some(&from("raw", None)),
        &[],
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("ImageNotFound")),
        "{v}"
    );
    server.assign(&oid, "Reader", &image("raw"));
    let builder = server.sp_token(&client_id, &secret_text).unwrap();
    let (s, v, _) = server.req(
        "PUT",
        &vm("web"),
        Some(&builder),
        Some(&from("raw", None)),
        &[],
    );
    assert_eq!(s, 201, "{v}");
    let sp = &v["properties"]["storageProfile"];
    assert_eq!(sp["imageReference"]["sha256"], digest, "{v}");
    assert_eq!(sp["osDisk"]["diskSizeBytes"], 1 << 20, "{v}");
    let web_vm_id = v["properties"]["vmId"].as_str().unwrap().to_string();
    // Not yet uploaded, or missing: refused.
    let (s, v) = server.admin("PUT", &vm("pending"), Some(from("backing", None)));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("ImageNotReady")),
        "{v}"
    );
    let (s, v) = server.admin("PUT", &vm("missing"), Some(from("nope", None)));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("ImageNotFound")),
        "{v}"
    );
    let (s, v) = server.admin(
        "PUT",
        &vm("both"),
        Some(json!({ "properties": { "storageProfile": { "image": "tiny", "imageReference": { "id": image("raw") } } } })),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("InvalidImage")),
        "{v}"
    );

    // The OS disk size: never below the image's virtual size; shown; handed to the host.
    let (s, v) = server.admin("PUT", &vm("tight"), Some(from("big-disk", Some(1))));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("DiskSizeTooSmall")),
        "{v}"
    );
    let (s, v) = server.admin("PUT", &vm("zero"), Some(from("big-disk", Some(0))));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("InvalidDiskSize")),
        "{v}"
    );
    let (s, v) = server.admin("PUT", &vm("roomy"), Some(from("big-disk", Some(3))));
    assert_eq!(s, 201, "{v}");
    let sp = &v["properties"]["storageProfile"];
    assert_eq!(
        (
            sp["osDisk"]["diskSizeGB"].as_u64(),
            sp["osDisk"]["diskSizeBytes"].as_u64()
        ),
        (Some(3), Some(3 << 30)),
        "{v}"
    );
    let roomy_vm_id = v["properties"]["vmId"].as_str().unwrap().to_string();
    // GET-modify-PUT of the same VM is accepted.
    let (s, v) = server.admin(
        "PUT",
        &vm("roomy"),
        Some(json!({ "properties": v["properties"] })),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = server.admin(
        "PUT",
        &vm("tiny-sized"),
        Some(json!({ "properties": { "storageProfile": { "image": "tiny", "osDisk": { "diskSizeGB": 2 } } } })),
    );
    assert_eq!(s, 201, "{v}");
    let tiny_vm_id = v["properties"]["vmId"].as_str().unwrap().to_string();

    // The host's assignments name the content by digest, and the size.
    let list = agent.assignments(true).unwrap();
    let entry = |vm_id: &str| {
        list["virtualMachines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["vmId"] == vm_id)
            .cloned()
            .unwrap_or_else(|| panic!("{list}"))
    };
    let web = entry(&web_vm_id);
    assert_eq!(web["imageContent"]["sha256"], digest, "{web}");
    assert_eq!(web["imageContent"]["sizeBytes"], stored.len(), "{web}");
    assert!(web.get("image").is_none(), "{web}");
    assert!(web.get("diskSizeBytes").is_none(), "{web}");
    assert_eq!(entry(&roomy_vm_id)["diskSizeBytes"], 3u64 << 30);
    let tiny = entry(&tiny_vm_id);
    assert_eq!(
        (tiny["image"].as_str(), tiny["diskSizeBytes"].as_u64()),
        (Some("tiny"), Some(2 << 30)),
        "{tiny}"
    );

    // The host fetches its VMs' image content over mTLS: exactly the stored bytes...
    let mut got = Vec::new();
    fabric
        .fetch(&digest, stored.len() as u64, &mut got)
        .unwrap();
    assert_eq!(sha256(&got), digest);
    // ...and nothing else: content no VM of this host uses, a name that is no digest.
    let err = fabric
        .fetch(&sha256(b"other"), 10, &mut Vec::new())
        .unwrap_err();
    assert!(
        err.contains("403") || err.contains("no VM assigned"),
        "{err}"
    );
    let err = fabric
        .fetch("../../root.key", 10, &mut Vec::new())
        .unwrap_err();
    assert!(err.contains("404") || err.contains("not found"), "{err}");
    // Without the host's certificate there is no door at all.
    let resp = server
        .agent
        .get(&format!(
            "{}/fabric/v1/hosts/host-1/images/{digest}",
            server.endpoint()
        ))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let (_, audit) = server.admin("GET", "/providers/Strata.Audit/entries?limit=2000", None);
    assert!(
        audit["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(
                |e| e["entry"]["action"] == "Strata.Compute/images/download/action"
                    && e["entry"]["details"]["sha256"] == digest.as_str()
            ),
        "the fetch is audited"
    );

    // An image deleted while a VM uses its content keeps its bytes until the VM goes too.
    assert_eq!(server.admin("DELETE", &image("raw"), None).0, 200);
    assert!(blob.exists(), "the VM still names the content");
    let mut again = Vec::new();
    fabric
        .fetch(&digest, stored.len() as u64, &mut again)
        .unwrap();
    assert_eq!(again, got);
    assert_eq!(server.admin("DELETE", &vm("web"), None).0, 200);
    assert!(!blob.exists(), "nothing names the content any more");
    // Deleting the resource group takes the rest, bytes included.
    for name in ["roomy", "tiny-sized"] {
        assert_eq!(server.admin("DELETE", &vm(name), None).0, 200);
    }
    assert!(data_dir.join("images/sha256").join(&big_digest).exists());
    assert_eq!(server.admin("DELETE", &server.rg("golden"), None).0, 200);
    assert!(!data_dir.join("images/sha256").join(&big_digest).exists());
    assert_eq!(
        std::fs::read_dir(data_dir.join("images/incoming"))
            .unwrap()
            .count(),
        0
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// One real boot end to end: the tiny disk (signed with the snakeoil key the test firmware
/// trusts) imported as a raw image through the API, a VM made from it with a larger OS disk,
/// and a Trusted swtpm host's VM loop on the QEMU driver that fetches the image over the agent
/// door (mTLS), verifies it and boots it; the control plane shows the VM running, its guest's
/// boot integrity appraised.
#[test]
fn an_imported_image_boots_on_its_trusted_host() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use strata_agent::images::{ImageStore, SigningKey};

    let raw = std::fs::read(crate::fabric::tiny_cache().join("tiny/disk.raw")).unwrap();

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
    let image = format!("{rg}/providers/Strata.Compute/images/tiny-copy");
    let (s, v) = declare(&server, &image, "raw", &raw, true);
    assert_eq!(s, 201, "{v}");
    let (s, v) = upload(&server, Some(&server.admin_token), &image, &raw);
    assert_eq!(s, 200, "{v}");
    let digest = v["properties"]["sha256"].as_str().unwrap().to_string();
    let vm = format!("{rg}/providers/Strata.Compute/virtualMachines/from-image");
    let (s, v) = server.admin(
        "PUT",
        &vm,
        Some(json!({ "properties": { "storageProfile": {
            "imageReference": { "id": image }, "osDisk": { "diskSizeGB": 1 } } } })),
    );
    assert_eq!(s, 201, "{v}");

    // The host: its VM loop on the QEMU driver, an empty image directory of its own.
    let tmp = tempfile::tempdir().unwrap();
    let host_images = tmp.path().join("images");
    let (driver, host) = crate::fabric::qemu_host(
        tmp.path(),
        600,
        Arc::new(ImageStore::new(host_images.clone(), SigningKey::Snakeoil)),
    );
    let fabric = agent.fabric_client().unwrap();
    let started = Instant::now();
    let v = loop {
        host.tick(&fabric);
        let (_, v) = server.admin("GET", &vm, None);
        let p = &v["properties"];
        if p["provisioningState"] == "Failed" {
            panic!("the VM failed: {v}");
        }
        if p["provisioningState"] == "Succeeded" && p["powerState"] == "running" {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "not running in time: {v}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    eprintln!("running after {:.1} s", started.elapsed().as_secs_f64());
    // The host holds exactly the stored content, verified, under its digest.
    let fetched =
        std::fs::read(host_images.join("sha256").join(format!("{digest}.qcow2"))).unwrap();
    assert_eq!(sha256(&fetched), digest);
    assert_eq!(
        v["properties"]["storageProfile"]["osDisk"]["diskSizeBytes"],
        1u64 << 30
    );
    let (s, d) = server.admin("POST", &format!("{vm}/retrieveBootDiagnosticsData"), None);
    assert_eq!(s, 200, "{d}");
    assert!(
        d["consoleTail"]
            .as_str()
            .unwrap()
            .contains("STRATA-GUEST-READY"),
        "{d}"
    );
    // The guest's boot evidence reached the control plane and was appraised.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        host.tick(&fabric);
        let (_, v) = server.admin("GET", &vm, None);
        if !v["properties"]["bootIntegrity"].is_null() {
            assert_eq!(v["properties"]["bootIntegrity"]["status"], "healthy", "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "no boot integrity: {v}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // Deleted through the API: the host removes the VM.
    assert_eq!(server.admin("DELETE", &vm, None).0, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !driver.hypervisor.list().is_empty() {
        host.tick(&fabric);
        assert!(
            Instant::now() < deadline,
            "the VM was not deleted on the host"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(host.wait_idle(Duration::from_secs(30)));
}
