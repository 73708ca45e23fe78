//! Real boots: QEMU + OVMF secure boot (snakeoil keys) + a per-VM swtpm, from the tiny image.

use std::path::{Path, PathBuf};
use std::time::Instant;

use strata_compute::qemu::{QemuConfig, QemuDriver};
use strata_compute::{FailureReason, Hypervisor, VmId, VmSpec, VmState};

use crate::support::{self, VM_PROGRAMS};

fn driver(root: &Path) -> QemuDriver {
    support::require(VM_PROGRAMS);
    QemuDriver::new(QemuConfig::snakeoil(root.join("vms"))).unwrap()
}

/// Boots `image` as a trusted-launch VM and expects the firmware to refuse it.
fn expect_secure_boot_violation(name: &str, image: PathBuf, hv: &QemuDriver) {
    let id = VmId::new(name).unwrap();
    hv.create(VmSpec::trusted_launch(id.clone(), image))
        .unwrap();
    let started = Instant::now();
    let state = hv.start(&id).unwrap();
    let serial = hv.serial_log(&id).unwrap();
    eprintln!(
        "{name}: {state:?} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let VmState::Failed { reason } = state else {
        panic!("{name} must not run; serial log:\n{serial}");
    };
    assert_eq!(reason.to_string(), "secure boot violation", "{reason:?}");
    let FailureReason::SecureBootViolation { firmware_said } = reason else {
        unreachable!()
    };
    assert!(
        firmware_said.contains("BdsDxe: failed to load Boot")
            && firmware_said.ends_with("Access Denied"),
        "{firmware_said}"
    );
    assert!(!serial.contains(strata_compute::READY_MARKER));
    assert!(
        !serial.contains("Linux version"),
        "the kernel must not start"
    );
    hv.delete(&id).unwrap();
}

#[test]
fn trusted_launch_boots_tiny_image() {
    let img = support::tiny_image();
    let tmp = tempfile::tempdir().unwrap();
    let hv = driver(tmp.path());
    let id = VmId::new("tiny").unwrap();
    hv.create(VmSpec::trusted_launch(id.clone(), img.disk.clone()))
        .unwrap();
    assert_eq!(hv.state(&id).unwrap(), VmState::Created);
    let dir = hv.vm_dir(&id).unwrap();

    let started = Instant::now();
    let state = hv.start(&id).unwrap();
    let serial = hv.serial_log(&id).unwrap();
    eprintln!(
        "boot to ready: {:.1} s ({:?})\n{}",
        started.elapsed().as_secs_f64(),
        hv.config().accel,
        hv.command_line(&id).unwrap().unwrap_or_default()
    );
    assert_eq!(state, VmState::Running, "serial log:\n{serial}");
    assert_eq!(hv.qmp_status(&id).unwrap(), "running");
    assert!(
        serial.contains("STRATA-GUEST-TPM 2"),
        "no TPM 2.0 in the guest:\n{serial}"
    );
    assert!(
        serial.contains("secureboot: Secure boot enabled"),
        "the kernel did not see secure boot on:\n{serial}"
    );

    // Private files: the VM directory and vTPM state are 0700, the rest 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("tpm")), 0o700);
    for f in ["disk.qcow2", "OVMF_VARS.fd", "serial.log"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }

    let stopping = Instant::now();
    hv.stop(&id).unwrap();
    eprintln!("stop: {:.1} s", stopping.elapsed().as_secs_f64());
    assert_eq!(hv.state(&id).unwrap(), VmState::Stopped);
    let serial = hv.serial_log(&id).unwrap();
    assert!(
        serial.contains("STRATA-GUEST-POWEROFF"),
        "the guest did not shut down on the ACPI power button:\n{serial}"
    );
    assert!(!dir.join("qmp.sock").exists());
    assert!(!dir.join("swtpm.sock").exists());
    hv.delete(&id).unwrap();
    assert!(!dir.exists());
}

#[test]
fn standard_vm_boots_without_vtpm_or_secure_boot() {
    let img = support::tiny_image();
    let tmp = tempfile::tempdir().unwrap();
    let hv = driver(tmp.path());
    let id = VmId::new("standard").unwrap();
    let mut spec = VmSpec::trusted_launch(id.clone(), img.disk.clone());
    spec.secure_boot = false;
    spec.vtpm = false;
    hv.create(spec).unwrap();
    let state = hv.start(&id).unwrap();
    let serial = hv.serial_log(&id).unwrap();
    assert_eq!(state, VmState::Running, "serial log:\n{serial}");
    assert!(serial.contains("STRATA-GUEST-TPM none"), "{serial}");
    assert!(
        serial.contains("secureboot: Secure boot disabled"),
        "{serial}"
    );
    let dir = hv.vm_dir(&id).unwrap();
    assert!(!dir.join("tpm").exists(), "a Standard VM has no vTPM state");
    hv.delete(&id).unwrap();
    assert!(!dir.exists());
}

#[test]
fn tampered_image_is_refused_by_secure_boot() {
    let img = support::tiny_image();
    let tmp = tempfile::tempdir().unwrap();
    let disk = support::altered_copy(&img, tmp.path(), &support::flip_a_byte);
    expect_secure_boot_violation("tampered", disk, &driver(tmp.path()));
}

#[test]
fn unsigned_image_is_refused_by_secure_boot() {
    let img = support::tiny_image();
    let tmp = tempfile::tempdir().unwrap();
    let disk = support::altered_copy(&img, tmp.path(), &support::strip_signature);
    expect_secure_boot_violation("unsigned", disk, &driver(tmp.path()));
}

#[test]
fn secure_boot_refusal_is_read_from_ovmf_output() {
    let serial = "\x1b[2J\x1b[01;01HBdsDxe: loading Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x1,0x0)\r\n\
        BdsDxe: failed to load Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x1,0x0): Access Denied\r\n\
        BdsDxe: No bootable option or device was found.\r\n";
    assert_eq!(
        strata_compute::qemu::secure_boot_refusal(serial).as_deref(),
        Some(
            "BdsDxe: failed to load Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x1,0x0): Access Denied"
        )
    );
    assert_eq!(
        strata_compute::qemu::secure_boot_refusal("BdsDxe: loading Boot0001\r\n"),
        None
    );
}
