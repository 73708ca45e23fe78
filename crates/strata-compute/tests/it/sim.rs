//! The simulated driver walks the same state machine as the real one.

use std::path::PathBuf;

use strata_compute::sim::SimDriver;
use strata_compute::{FailureReason, Hypervisor, HypervisorError, VmId, VmSpec, VmState};

fn spec(name: &str, image: &str) -> VmSpec {
    VmSpec::trusted_launch(
        VmId::new(name).unwrap(),
        PathBuf::from(image),
        strata_compute::VtpmKey::from_bytes([1; 32]),
        strata_compute::DiskKey::from_bytes([2; 32]),
    )
}

#[test]
fn sim_lifecycle() {
    let hv = SimDriver::new();
    let id = VmId::new("vm-1").unwrap();
    hv.create(spec("vm-1", "tiny.qcow2")).unwrap();
    assert_eq!(hv.state(&id).unwrap(), VmState::Created);
    assert!(matches!(
        hv.create(spec("vm-1", "tiny.qcow2")),
        Err(HypervisorError::Exists(_))
    ));
    assert!(matches!(
        hv.stop(&id),
        Err(HypervisorError::WrongState { .. })
    ));
    assert_eq!(hv.start(&id).unwrap(), VmState::Running);
    assert!(matches!(
        hv.start(&id),
        Err(HypervisorError::WrongState { .. })
    ));
    hv.stop(&id).unwrap();
    assert_eq!(hv.state(&id).unwrap(), VmState::Stopped);
    assert_eq!(hv.start(&id).unwrap(), VmState::Running);
    hv.delete(&id).unwrap();
    assert!(matches!(hv.state(&id), Err(HypervisorError::NotFound(_))));
    assert!(hv.is_empty());
}

#[test]
fn sim_tampered_image_fails_secure_boot() {
    let hv = SimDriver::new();
    let id = VmId::new("bad").unwrap();
    hv.create(spec("bad", "tiny-tampered.qcow2")).unwrap();
    let VmState::Failed { reason } = hv.start(&id).unwrap() else {
        panic!("a tampered image must not run");
    };
    assert!(matches!(reason, FailureReason::SecureBootViolation { .. }));
    assert_eq!(reason.to_string(), "secure boot violation");
}

#[test]
fn sim_scales_to_thousands() {
    let hv = SimDriver::new();
    for i in 0..5_000 {
        let name = format!("vm-{i}");
        hv.create(spec(&name, "tiny.qcow2")).unwrap();
        assert_eq!(
            hv.start(&VmId::new(&name).unwrap()).unwrap(),
            VmState::Running
        );
    }
    assert_eq!(hv.len(), 5_000);
}

#[test]
fn vm_names_are_checked() {
    for bad in ["", "-x", "UPPER", "a/b", "a b", &"x".repeat(64)] {
        assert!(VmId::new(bad).is_err(), "{bad:?} must be refused");
    }
    for good in ["a", "vm-1", &"x".repeat(63)] {
        assert!(VmId::new(good).is_ok(), "{good:?} must be accepted");
    }
}

/// Both drivers refuse the same specs: a VM without a disk key (every disk is encrypted) or
/// with a vTPM but no vTPM key, and nothing is created.
#[test]
fn sim_refuses_a_spec_without_its_keys() {
    let hv = SimDriver::new();
    let mut no_disk_key = spec("no-disk-key", "tiny.qcow2");
    no_disk_key.disk_key = None;
    let err = hv.create(no_disk_key).unwrap_err();
    assert!(matches!(err, HypervisorError::MissingDiskKey(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "VM no-disk-key has no disk key: every disk is encrypted; obtain the VM's disk key and \
         pass it in the spec"
    );
    let mut no_vtpm_key = spec("no-vtpm-key", "tiny.qcow2");
    no_vtpm_key.vtpm_key = None;
    assert!(matches!(
        hv.create(no_vtpm_key),
        Err(HypervisorError::MissingVtpmKey(_))
    ));
    assert!(hv.is_empty());
}

#[test]
fn keys_are_redacted_in_debug_output() {
    let key = [0x5a; 32];
    let spec = VmSpec::trusted_launch(
        VmId::new("vm").unwrap(),
        PathBuf::from("tiny.qcow2"),
        strata_compute::VtpmKey::from_bytes(key),
        strata_compute::DiskKey::from_bytes(key),
    );
    let debug = format!("{spec:?}");
    assert!(debug.contains("DiskKey([redacted])") && debug.contains("VtpmKey([redacted])"));
    assert!(
        !debug.contains("90") && !debug.to_lowercase().contains("5a"),
        "{debug}"
    );
}
