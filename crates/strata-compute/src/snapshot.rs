//! Encrypted disk snapshots and exports (`Strata.Compute/snapshots`, issue 6 item 3).
//!
//! A VM disk is a qcow2 overlay whose clusters are LUKS encrypted (AES-256-XTS, the LUKS
//! master key wrapped in the qcow2 header by the disk's key) on a shared plaintext base image.
//! A snapshot is a standalone qcow2 — the base's contents folded in, no backing file —
//! encrypted under the same disk key with a fresh LUKS master key. Two ways to make one:
//!
//! - a stopped VM ([`export_encrypted`]): `qemu-img convert`, the key on a pipe:
//!
//! ```text
//!  qemu-img convert  --object secret,id=disk0-key,file=/dev/fd/3      (the key: a pipe)
//!                    --image-opts driver=qcow2,file.filename=OVERLAY,encrypt.key-secret=…
//!                    -O qcow2 -o encrypt.format=luks,encrypt.key-secret=…   EXPORT
//! ```
//!
//! - a running VM ([`live_backup`]): the VM keeps running; its QEMU copies the disk as it is
//!   at that instant (crash-consistent) into a new encrypted qcow2 opened with the secret
//!   object QEMU already holds, through the QMP monitor:
//!
//! ```text
//!  qemu-img create -f qcow2 -o encrypt.format=luks,…  TARGET SIZE   (key on a pipe; VM's uid)
//!  blockdev-add    {driver: qcow2, node-name: strata-snap, file: TARGET, encrypt: disk0-key}
//!  blockdev-backup {device: disk0, target: strata-snap, sync: full}  → query-jobs: concluded
//!  job-dismiss, blockdev-del                                         → TARGET is the snapshot
//! ```
//!
//! Decrypted bytes exist only inside `qemu-img`'s or the VM's own QEMU's memory; the key
//! reaches a tool only through an inherited pipe (never argv, environment or a file). A
//! snapshot opens with the disk's key and nothing else; the control plane keeps its own
//! wrapped copy of that key, bound to the snapshot's id. Restoring ([`VmSpec::disk_source`])
//! is [`export_encrypted`] again, from the snapshot to the new VM's disk: a fresh LUKS master
//! key, so two disks restored from one snapshot share no XTS key.
//!
//! [`VmSpec::disk_source`]: crate::VmSpec::disk_source

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::hypervisor::{DiskKey, HypervisorError, VmId};
use crate::qemu::{DISK_SECRET_ID, LUKS_ITER_TIME_MS, SECRET_FD, hand_secret};
use crate::qmp::QmpClient;
use crate::sandbox::VmSandbox;

/// The QEMU drive id of every VM's OS disk.
const DISK_DRIVE: &str = "disk0";
/// The block node and job a live snapshot uses (one at a time per VM: the driver holds the
/// VM's lock).
const SNAP_NODE: &str = "strata-snap";
/// The longest a live copy may take.
const LIVE_BACKUP_LIMIT: Duration = Duration::from_secs(3600);

fn secret_object() -> String {
    format!("secret,id={DISK_SECRET_ID},file=/dev/fd/{SECRET_FD}")
}

fn image_opts(image: &Path) -> String {
    // qemu's option syntax doubles commas inside values.
    let path = image.display().to_string().replace(',', ",,");
    format!("driver=qcow2,file.filename={path},encrypt.key-secret={DISK_SECRET_ID}")
}

/// Creates `disk`: a LUKS-encrypted qcow2 overlay on the plaintext qcow2 `base`, unlocked by
/// `key` (what the QEMU driver creates for every VM).
pub fn create_overlay(base: &Path, disk: &Path, key: &DiskKey) -> Result<(), HypervisorError> {
    crate::qemu::create_encrypted_overlay(base, disk, key, None)
}

/// Writes `overlay` (a LUKS qcow2 unlocked by `key`, with its backing chain) to `out` as a
/// standalone LUKS qcow2 under the same key. `out` must not exist.
pub fn export_encrypted(overlay: &Path, out: &Path, key: &DiskKey) -> Result<(), HypervisorError> {
    if out.exists() {
        return Err(HypervisorError::Start(format!(
            "{} exists; an export never overwrites",
            out.display()
        )));
    }
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-q", "--object"])
        .arg(secret_object())
        .arg("--image-opts")
        .arg(image_opts(overlay))
        .args(["-O", "qcow2", "-o"])
        .arg(format!(
            "encrypt.format=luks,encrypt.key-secret={DISK_SECRET_ID},encrypt.iter-time={LUKS_ITER_TIME_MS}"
        ))
        .arg(out);
    hand_secret(&mut cmd, key.passphrase().as_bytes(), None)?;
    crate::cmd::run(&mut cmd)?;
    Ok(())
}

/// Runs one `qemu-io` command (e.g. `write -P 0x5a 1M 64k`, `read -P 0x5a 1M 64k`) on an
/// encrypted qcow2 opened with `key`; returns its output. For checks and tests: it proves an
/// image opens with a key, and what it holds.
pub fn qemu_io(image: &Path, key: &DiskKey, command: &str) -> Result<String, HypervisorError> {
    let mut cmd = Command::new("qemu-io");
    cmd.arg("--object")
        .arg(secret_object())
        .arg("--image-opts")
        .arg(image_opts(image))
        .args(["-c", command]);
    hand_secret(&mut cmd, key.passphrase().as_bytes(), None)?;
    let out = crate::cmd::run(&mut cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates `path`: an empty standalone LUKS qcow2 of `size` bytes unlocked by `key` (what a
/// live snapshot is copied into; the simulated driver's stand-in for a disk's contents).
pub fn create_encrypted_image(
    path: &Path,
    key: &DiskKey,
    size: u64,
) -> Result<(), HypervisorError> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2", "--object"])
        .arg(secret_object())
        .arg("-o")
        .arg(format!(
            "encrypt.format=luks,encrypt.key-secret={DISK_SECRET_ID},encrypt.iter-time={LUKS_ITER_TIME_MS}"
        ))
        .arg(path)
        .arg(size.to_string());
    hand_secret(&mut cmd, key.passphrase().as_bytes(), None)?;
    crate::cmd::run(&mut cmd)?;
    Ok(())
}

fn qmp_err(id: &VmId) -> impl FnOnce(crate::qmp::QmpError) -> HypervisorError + '_ {
    move |source| HypervisorError::Qmp {
        id: id.clone(),
        source,
    }
}

/// The virtual size of the running VM's OS disk, from QEMU (`query-block`).
fn live_disk_size(id: &VmId, qmp: &mut QmpClient) -> Result<u64, HypervisorError> {
    let blocks = qmp.execute("query-block", None).map_err(qmp_err(id))?;
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b.get("device").and_then(Value::as_str) == Some(DISK_DRIVE))
        .and_then(|b| b.pointer("/inserted/image/virtual-size"))
        .and_then(Value::as_u64)
        .ok_or_else(|| HypervisorError::Start(format!("VM {id} has no {DISK_DRIVE} drive")))
}

/// Copies a running VM's OS disk into `out` (which must not exist) through its QEMU: see the
/// module documentation. The copy is made in the VM's directory as the VM's uid (its QEMU
/// writes it), then handed to root and moved to `out`.
pub fn live_backup(
    id: &VmId,
    qmp: &mut QmpClient,
    vm_dir: &Path,
    sandbox: &VmSandbox,
    key: &DiskKey,
    out: &Path,
) -> Result<(), HypervisorError> {
    if out.exists() {
        return Err(HypervisorError::Start(format!(
            "{} exists; a snapshot never overwrites",
            out.display()
        )));
    }
    let size = live_disk_size(id, qmp)?;
    let target = vm_dir.join("snapshot.partial.qcow2");
    let _ = std::fs::remove_file(&target);
    create_encrypted_image(&target, key, size)?;
    sandbox.own(&target, 0o600)?;
    let copied = copy_live(id, qmp, &target);
    // Whatever happened, the node goes (a failed job was dismissed or cancelled above).
    let _ = qmp.execute("blockdev-del", Some(json!({ "node-name": SNAP_NODE })));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&target);
        return Err(e);
    }
    let moved = (|| {
        std::os::unix::fs::chown(&target, Some(0), Some(0))?;
        match std::fs::rename(&target, out) {
            Ok(()) => Ok(()),
            // Another file system: copy, then remove.
            Err(_) => std::fs::copy(&target, out).and_then(|_| std::fs::remove_file(&target)),
        }
    })();
    moved.map_err(|e| {
        let _ = std::fs::remove_file(&target);
        crate::hypervisor::io(format!("move the snapshot to {}", out.display()))(e)
    })
}

fn copy_live(id: &VmId, qmp: &mut QmpClient, target: &Path) -> Result<(), HypervisorError> {
    qmp.execute(
        "blockdev-add",
        Some(json!({
            "driver": "qcow2",
            "node-name": SNAP_NODE,
            "file": { "driver": "file", "filename": target.display().to_string() },
            "encrypt": { "format": "luks", "key-secret": DISK_SECRET_ID },
        })),
    )
    .map_err(qmp_err(id))?;
    qmp.execute(
        "blockdev-backup",
        Some(json!({
            "job-id": SNAP_NODE,
            "device": DISK_DRIVE,
            "target": SNAP_NODE,
            "sync": "full",
            "auto-dismiss": false,
        })),
    )
    .map_err(qmp_err(id))?;
    let deadline = Instant::now() + LIVE_BACKUP_LIMIT;
    let outcome = loop {
        let jobs = qmp.execute("query-jobs", None).map_err(qmp_err(id))?;
        let job = jobs
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j.get("id").and_then(Value::as_str) == Some(SNAP_NODE))
            .cloned();
        let Some(job) = job else {
            break Err(HypervisorError::Start(
                "the snapshot job vanished before it concluded".into(),
            ));
        };
        if job.get("status").and_then(Value::as_str) == Some("concluded") {
            break match job.get("error").and_then(Value::as_str) {
                None => Ok(()),
                Some(e) => Err(HypervisorError::Start(format!("the disk copy failed: {e}"))),
            };
        }
        if Instant::now() > deadline {
            let _ = qmp.execute("job-cancel", Some(json!({ "id": SNAP_NODE })));
            break Err(HypervisorError::Start(format!(
                "the disk copy did not finish within {} s",
                LIVE_BACKUP_LIMIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // A cancelled job needs a moment to conclude before it can be dismissed.
    for _ in 0..50 {
        if qmp
            .execute("job-dismiss", Some(json!({ "id": SNAP_NODE })))
            .is_ok()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    outcome
}
