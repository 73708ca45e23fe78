//! Encrypted disk exports: the building block for `Strata.Compute/snapshots` and exported
//! backups (issue 6, item 3), not yet driven by the agent or the control plane (see
//! docs/security.md, "Snapshots and exports").
//!
//! A VM disk is a qcow2 overlay whose clusters are LUKS encrypted (AES-256-XTS, the LUKS
//! master key wrapped in the qcow2 header by the disk's key) on a shared plaintext base image.
//! [`export_encrypted`] turns it into a standalone qcow2 — the base's contents folded in, no
//! backing file — encrypted under the same disk key with a fresh LUKS master key:
//!
//! ```text
//!  qemu-img convert  --object secret,id=disk0-key,file=/dev/fd/3      (the key: a pipe)
//!                    --image-opts driver=qcow2,file.filename=OVERLAY,encrypt.key-secret=…
//!                    -O qcow2 -o encrypt.format=luks,encrypt.key-secret=…   EXPORT
//! ```
//!
//! Decrypted bytes exist only inside `qemu-img`'s memory; the key reaches it only through an
//! inherited pipe (never argv, environment or a file). The export opens with the disk's key
//! and nothing else, so it is stored and released like the disk: its key is the disk's data
//! key, wrapped where the disk's is.

use std::path::Path;
use std::process::Command;

use crate::hypervisor::{DiskKey, HypervisorError};
use crate::qemu::{DISK_SECRET_ID, LUKS_ITER_TIME_MS, SECRET_FD, hand_secret};

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
