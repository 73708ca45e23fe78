//! Encrypted disk snapshots and exports (`Strata.Compute/snapshots`, issue 6 item 3).
//!
//! A VM disk is a qcow2 overlay whose clusters are LUKS encrypted (AES-256-XTS, the LUKS
//! master key wrapped in the qcow2 header by the disk's key) on a shared plaintext base image.
//! A snapshot is a standalone qcow2 — the base's contents folded in, no backing file —
//! encrypted under the same disk key with a fresh LUKS master key. Two ways to make one:
//!
//! - a stopped VM (`copy_stopped`): `qemu-img convert`, the key on a pipe:
//!
//! ```text
//!  qemu-img convert  --object secret,id=disk0-key,file=/dev/fd/3      (the key: a pipe)
//!                    --image-opts driver=qcow2,file.filename=OVERLAY,encrypt.key-secret=…
//!                    -O qcow2 -o encrypt.format=luks,encrypt.key-secret=…   EXPORT
//! ```
//!
//! - a running VM ([`LiveCopy`]): the VM keeps running; its QEMU copies the disk as it is
//!   at that instant (crash-consistent) into a new encrypted qcow2 opened with the secret
//!   object QEMU already holds, through the QMP monitor:
//!
//! ```text
//!  qemu-img create -f qcow2 -o encrypt.format=luks,…  TARGET SIZE   (key on a pipe)
//!  blockdev-add    {driver: qcow2, node-name: strata-snap, file: TARGET, encrypt: disk0-key}
//!  blockdev-backup {device: disk0, target: strata-snap, sync: full}  → query-jobs: concluded
//!  job-cancel/job-dismiss, blockdev-del (always)                     → TARGET is the snapshot
//! ```
//!
//! The VM's QEMU (its uid) or, for a stopped VM, `qemu-img` running as the VM's uid (the
//! overlay is the VM's own file, its header the VM's to write: whatever it names, the copy
//! reads only what that uid may) writes TARGET: a file made new for that uid in a directory
//! only root may change, so nothing the VM does can point root's later steps (take the file
//! back, rename it) at another file.
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
use std::time::Duration;

use serde_json::{Value, json};

use crate::hypervisor::{DiskKey, HypervisorError, VmId};
use crate::qemu::{DISK_SECRET_ID, DiskSecret, LUKS_ITER_TIME_MS};
use crate::qmp::QmpClient;
use crate::sandbox::VmSandbox;

/// The QEMU drive id of every VM's OS disk.
const DISK_DRIVE: &str = "disk0";
/// The block node and job a live snapshot uses (one at a time per VM: the driver holds the
/// VM's lock).
const SNAP_NODE: &str = "strata-snap";
/// The longest a live copy may take.
const LIVE_BACKUP_LIMIT: Duration = Duration::from_secs(3600);

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
    let secret = DiskSecret::new(key)?;
    let mut cmd = Command::new(crate::binaries::qemu_img());
    cmd.args(["convert", "-q"])
        .args(secret.objects("--object"))
        .arg("--image-opts")
        .arg(image_opts(overlay))
        .args(["-O", "qcow2", "-o"])
        .arg(format!(
            "encrypt.format=luks,encrypt.key-secret={DISK_SECRET_ID},encrypt.iter-time={LUKS_ITER_TIME_MS}"
        ))
        .arg(out);
    secret.hand(&mut cmd, None)?;
    crate::cmd::run(&mut cmd)?;
    Ok(())
}

/// Runs one `qemu-io` command (e.g. `write -P 0x5a 1M 64k`, `read -P 0x5a 1M 64k`) on an
/// encrypted qcow2 opened with `key`; returns its output. For checks and tests: it proves an
/// image opens with a key, and what it holds.
pub fn qemu_io(image: &Path, key: &DiskKey, command: &str) -> Result<String, HypervisorError> {
    let secret = DiskSecret::new(key)?;
    let mut cmd = Command::new(crate::binaries::qemu_io());
    cmd.args(secret.objects("--object"))
        .arg("--image-opts")
        .arg(image_opts(image))
        .args(["-c", command]);
    secret.hand(&mut cmd, None)?;
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
    let secret = DiskSecret::new(key)?;
    let mut cmd = Command::new(crate::binaries::qemu_img());
    cmd.args(["create", "-q", "-f", "qcow2"])
        .args(secret.objects("--object"))
        .arg("-o")
        .arg(format!(
            "encrypt.format=luks,encrypt.key-secret={DISK_SECRET_ID},encrypt.iter-time={LUKS_ITER_TIME_MS}"
        ))
        .arg(path)
        .arg(size.to_string());
    secret.hand(&mut cmd, None)?;
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
pub(crate) fn live_disk_size(id: &VmId, qmp: &mut QmpClient) -> Result<u64, HypervisorError> {
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

/// Refuses a directory a VM's uid could change: the snapshot's file is made there for the
/// VM's QEMU (or `qemu-img` as the VM's uid) to write, and root acts on it by path afterwards,
/// so nobody but root may add, rename or replace entries in it.
fn check_root_dir(dir: &Path) -> Result<(), HypervisorError> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::symlink_metadata(dir)
        .map_err(crate::hypervisor::io(format!("inspect {}", dir.display())))?;
    if !m.is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(HypervisorError::Start(format!(
            "{} must be a directory owned by root and writable by nobody else",
            dir.display()
        )));
    }
    Ok(())
}

/// Makes the empty file the VM's uid writes the snapshot into: `out` with `.partial`, beside
/// it, created new (no file or link of that name can pre-exist in a root-only directory)
/// and handed to the VM's uid through its descriptor.
fn prepare_target(out: &Path, sandbox: &VmSandbox) -> Result<std::path::PathBuf, HypervisorError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = out.parent().unwrap_or(Path::new("."));
    check_root_dir(dir)?;
    if out.exists() {
        return Err(HypervisorError::Start(format!(
            "{} exists; a snapshot never overwrites",
            out.display()
        )));
    }
    let partial = out.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&partial)
        .map_err(crate::hypervisor::io(format!(
            "create {}",
            partial.display()
        )))?;
    std::os::unix::fs::fchown(&file, Some(sandbox.uid), Some(sandbox.gid)).map_err(
        crate::hypervisor::io(format!("chown {}", partial.display())),
    )?;
    Ok(partial)
}

/// Takes the finished `partial` back for root (through a descriptor opened without following
/// links) and renames it to `out` in the same directory.
fn finish_target(partial: &Path, out: &Path) -> Result<(), HypervisorError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let taken = (|| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(partial)?;
        std::os::unix::fs::fchown(&file, Some(0), Some(0))?;
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        std::fs::rename(partial, out)
    })();
    taken.map_err(|e| {
        let _ = std::fs::remove_file(partial);
        crate::hypervisor::io(format!("move the snapshot to {}", out.display()))(e)
    })
}

/// A stopped VM's disk copied to `out` by `qemu-img convert` running as the VM's own uid (the
/// overlay is the VM's file: whatever its header names, the copy reads only what the VM's uid
/// may read). `out`'s directory must be root's alone.
pub(crate) fn copy_stopped(
    disk: &Path,
    out: &Path,
    key: &DiskKey,
    sandbox: &VmSandbox,
) -> Result<(), HypervisorError> {
    let partial = prepare_target(out, sandbox)?;
    let secret = DiskSecret::new(key)?;
    let mut cmd = Command::new(crate::binaries::qemu_img());
    cmd.args(["convert", "-q"])
        .args(secret.objects("--object"))
        .arg("--image-opts")
        .arg(image_opts(disk))
        .args(["-O", "qcow2", "-o"])
        .arg(format!(
            "encrypt.format=luks,encrypt.key-secret={DISK_SECRET_ID},encrypt.iter-time={LUKS_ITER_TIME_MS}"
        ))
        .arg(&partial);
    sandbox.drop_privileges(&mut cmd);
    let ran = secret
        .hand(&mut cmd, Some(sandbox))
        .and_then(|()| crate::cmd::run(&mut cmd).map_err(HypervisorError::from));
    if let Err(e) = ran {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    finish_target(&partial, out)
}

/// The steps of a live copy (module documentation), each one QMP exchange so that the caller
/// holds the VM's monitor only briefly: [`LiveCopy::prepare`] (root: the target file),
/// [`LiveCopy::start`], [`LiveCopy::poll`] until it answers, [`LiveCopy::cleanup`] always,
/// then [`LiveCopy::finish`] or [`LiveCopy::abandon`].
pub(crate) struct LiveCopy {
    partial: std::path::PathBuf,
    out: std::path::PathBuf,
}

impl LiveCopy {
    /// Makes the encrypted target (`size` bytes, the VM's uid's, in `out`'s root-only
    /// directory).
    pub(crate) fn prepare(
        out: &Path,
        sandbox: &VmSandbox,
        key: &DiskKey,
        size: u64,
    ) -> Result<LiveCopy, HypervisorError> {
        let partial = prepare_target(out, sandbox)?;
        // Over the empty file (same owner): root writes a file in a root-only directory.
        if let Err(e) = create_encrypted_image(&partial, key, size) {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        Ok(LiveCopy {
            partial,
            out: out.to_owned(),
        })
    }

    /// Clears a node or job an interrupted copy left in this QEMU, adds the target (opened
    /// with the secret object QEMU already holds) and starts the copy.
    pub(crate) fn start(&self, id: &VmId, qmp: &mut QmpClient) -> Result<(), HypervisorError> {
        Self::cleanup(qmp);
        qmp.execute(
            "blockdev-add",
            Some(json!({
                "driver": "qcow2",
                "node-name": SNAP_NODE,
                "file": { "driver": "file", "filename": self.partial.display().to_string() },
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
        Ok(())
    }

    /// `None` while the copy runs; its outcome once it has concluded.
    pub(crate) fn poll(
        id: &VmId,
        qmp: &mut QmpClient,
    ) -> Result<Option<Result<(), HypervisorError>>, HypervisorError> {
        let jobs = qmp.execute("query-jobs", None).map_err(qmp_err(id))?;
        let job = jobs
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j.get("id").and_then(Value::as_str) == Some(SNAP_NODE))
            .cloned();
        let Some(job) = job else {
            return Ok(Some(Err(HypervisorError::Start(
                "the snapshot job vanished before it concluded".into(),
            ))));
        };
        if job.get("status").and_then(Value::as_str) != Some("concluded") {
            return Ok(None);
        }
        Ok(Some(match job.get("error").and_then(Value::as_str) {
            None => Ok(()),
            Some(e) => Err(HypervisorError::Start(format!("the disk copy failed: {e}"))),
        }))
    }

    /// Ends whatever is left of a copy in this QEMU: cancels a running job, waits (briefly)
    /// for it to conclude, dismisses it, removes the target node. Every step may fail harmlessly
    /// (nothing there).
    pub(crate) fn cleanup(qmp: &mut QmpClient) {
        let _ = qmp.execute("job-cancel", Some(json!({ "id": SNAP_NODE })));
        for _ in 0..100 {
            let concluded = qmp
                .execute("query-jobs", None)
                .ok()
                .and_then(|j| {
                    j.as_array()?
                        .iter()
                        .find(|j| j.get("id").and_then(Value::as_str) == Some(SNAP_NODE))
                        .map(|j| j.get("status").and_then(Value::as_str) == Some("concluded"))
                })
                // No such job: nothing to wait for.
                .unwrap_or(true);
            if concluded {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = qmp.execute("job-dismiss", Some(json!({ "id": SNAP_NODE })));
        let _ = qmp.execute("blockdev-del", Some(json!({ "node-name": SNAP_NODE })));
    }

    /// The copy succeeded and was cleaned up: the file becomes root's `out`.
    pub(crate) fn finish(self) -> Result<(), HypervisorError> {
        finish_target(&self.partial, &self.out)
    }

    /// The copy failed: its file goes.
    pub(crate) fn abandon(self) {
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// The longest a live copy may take.
pub(crate) fn live_limit() -> Duration {
    LIVE_BACKUP_LIMIT
}
