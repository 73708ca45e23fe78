//! Encrypted exports (`strata_compute::snapshot`): a VM disk's overlay exported as a standalone
//! qcow2 stays LUKS encrypted under the disk's key — neither the guest's bytes nor the base
//! image's appear in the file — folds its base in (no backing file), opens with the disk key
//! and refuses any other, and never overwrites.

use std::path::Path;
use std::process::Command;

use strata_compute::DiskKey;
use strata_compute::snapshot::{create_overlay, export_encrypted, qemu_io};

fn contains_run(bytes: &[u8], byte: u8) -> bool {
    let run = vec![byte; 4096];
    bytes.windows(run.len()).any(|w| w == run.as_slice())
}

fn qemu_img(args: &[&str], path: &Path) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_ok(out: &str) -> bool {
    out.contains("read 65536/65536 bytes") && !out.contains("Pattern verification failed")
}

#[test]
fn an_export_stays_encrypted_and_opens_only_with_the_disk_key() {
    let dir = tempfile::tempdir().unwrap();
    let (base, overlay, export) = (
        dir.path().join("base.qcow2"),
        dir.path().join("disk.qcow2"),
        dir.path().join("export.qcow2"),
    );
    // A plaintext base with something in it, and the VM's encrypted overlay on it.
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "size=16M"], &base);
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x11 0 64k"])
        .arg(&base)
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = DiskKey::generate().unwrap();
    create_overlay(&base, &overlay, &key).unwrap();
    let wrote = qemu_io(&overlay, &key, "write -P 0x5a 1M 64k").unwrap();
    assert!(wrote.contains("wrote 65536/65536 bytes"), "{wrote}");
    assert!(!contains_run(&std::fs::read(&overlay).unwrap(), 0x5a));

    export_encrypted(&overlay, &export, &key).unwrap();
    let raw = std::fs::read(&export).unwrap();
    assert!(!contains_run(&raw, 0x5a), "the guest's bytes are encrypted");
    assert!(
        !contains_run(&raw, 0x11),
        "the base's bytes are folded in, encrypted"
    );
    let info = qemu_img(&["info", "--output=json"], &export);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert!(info.get("backing-filename").is_none(), "standalone: {info}");
    assert_eq!(info["encrypted"], true, "{info}");
    assert_eq!(
        info["format-specific"]["data"]["encrypt"]["format"], "luks",
        "{info}"
    );

    // The disk key opens it and it holds both; another key opens nothing.
    assert!(read_ok(
        &qemu_io(&export, &key, "read -P 0x5a 1M 64k").unwrap()
    ));
    assert!(read_ok(
        &qemu_io(&export, &key, "read -P 0x11 0 64k").unwrap()
    ));
    let other = DiskKey::generate().unwrap();
    assert!(qemu_io(&export, &other, "read 0 4k").is_err());
    // Never over an existing file.
    assert!(export_encrypted(&overlay, &export, &key).is_err());
}
