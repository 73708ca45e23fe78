//! The simulated hypervisor: the same [`Hypervisor`] API and state machine as the QEMU driver,
//! in memory, so a test can run the control plane against thousands of VMs on fake hosts.
//!
//! An image path containing `tampered` or `unsigned` "fails secure boot", so control-plane
//! tests can exercise the Failed path without firmware. Each VM gets a uid of its own like the
//! QEMU driver's (the lowest free one from [`SIM_UID_BASE`]), though nothing runs as it: the
//! host's network module makes the VM's taps for it. A simulated VM has no disk contents: its
//! snapshot is an empty LUKS qcow2 of the disk's size under the VM's disk key (made with
//! `qemu-img`, like a real one), so the control plane's snapshot path runs end to end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::hypervisor::{FailureReason, Hypervisor, HypervisorError, VmId, VmSpec, VmState};

/// The first uid the simulator hands out (below the QEMU driver's range, so the two never
/// collide on one host).
pub const SIM_UID_BASE: u32 = 3_900_000_000;

/// An in-process hypervisor; VMs "boot" instantly.
#[derive(Debug, Default)]
pub struct SimDriver {
    vms: Mutex<Vms>,
}

/// The simulated VMs and the uids they hold.
#[derive(Debug, Default)]
struct Vms {
    by_id: BTreeMap<VmId, (VmSpec, VmState, u32)>,
    /// uids freed by deletes, handed out again lowest first.
    free: BTreeSet<u32>,
    /// How many uids above [`SIM_UID_BASE`] have ever been handed out.
    issued: u32,
}

impl Vms {
    /// The lowest uid no VM holds: O(log n), so creating thousands of VMs stays linear.
    fn take_uid(&mut self) -> u32 {
        if let Some(uid) = self.free.pop_first() {
            return uid;
        }
        let uid = SIM_UID_BASE.saturating_add(self.issued);
        self.issued = self.issued.saturating_add(1);
        uid
    }
}

impl SimDriver {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many VMs exist (in any state).
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Whether there are no VMs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Vms> {
        // A panic while holding the lock cannot leave the map half-updated (every update is one
        // insert or assignment), so a poisoned lock is still consistent.
        self.vms.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Hypervisor for SimDriver {
    fn create(&self, spec: VmSpec) -> Result<(), HypervisorError> {
        spec.check_keys()?;
        let mut vms = self.lock();
        if vms.by_id.contains_key(&spec.id) {
            return Err(HypervisorError::Exists(spec.id));
        }
        let uid = vms.take_uid();
        vms.by_id
            .insert(spec.id.clone(), (spec, VmState::Created, uid));
        Ok(())
    }

    fn start(&self, id: &VmId) -> Result<VmState, HypervisorError> {
        let mut vms = self.lock();
        let (spec, state, _) = vms
            .by_id
            .get_mut(id)
            .ok_or_else(|| HypervisorError::NotFound(id.clone()))?;
        match state {
            VmState::Created | VmState::Stopped | VmState::Failed { .. } => {}
            VmState::Starting | VmState::Running => {
                return Err(HypervisorError::WrongState {
                    id: id.clone(),
                    state: state.clone(),
                    action: "start",
                    needs: "created, stopped or failed",
                });
            }
        }
        let image = spec.image.to_string_lossy();
        *state = if spec.secure_boot && (image.contains("tampered") || image.contains("unsigned")) {
            VmState::Failed {
                reason: FailureReason::SecureBootViolation {
                    firmware_said: "simulated: image signature not in db".to_owned(),
                },
            }
        } else {
            VmState::Running
        };
        Ok(state.clone())
    }

    fn stop(&self, id: &VmId) -> Result<(), HypervisorError> {
        let mut vms = self.lock();
        let (_, state, _) = vms
            .by_id
            .get_mut(id)
            .ok_or_else(|| HypervisorError::NotFound(id.clone()))?;
        if *state != VmState::Running {
            return Err(HypervisorError::WrongState {
                id: id.clone(),
                state: state.clone(),
                action: "stop",
                needs: "running",
            });
        }
        *state = VmState::Stopped;
        Ok(())
    }

    fn state(&self, id: &VmId) -> Result<VmState, HypervisorError> {
        self.lock()
            .by_id
            .get(id)
            .map(|(_, s, _)| s.clone())
            .ok_or_else(|| HypervisorError::NotFound(id.clone()))
    }

    fn owner(&self, id: &VmId) -> Result<Option<(u32, u32)>, HypervisorError> {
        self.lock()
            .by_id
            .get(id)
            .map(|(_, _, uid)| Some((*uid, *uid)))
            .ok_or_else(|| HypervisorError::NotFound(id.clone()))
    }

    fn snapshot(&self, id: &VmId, out: &std::path::Path) -> Result<(), HypervisorError> {
        let (key, size) = {
            let vms = self.lock();
            let (spec, _, _) = vms
                .by_id
                .get(id)
                .ok_or_else(|| HypervisorError::NotFound(id.clone()))?;
            let key = spec
                .disk_key
                .clone()
                .ok_or_else(|| HypervisorError::MissingDiskKey(id.clone()))?;
            (key, spec.disk_size_bytes.unwrap_or(1 << 30))
        };
        if out.exists() {
            return Err(HypervisorError::Start(format!(
                "{} exists; a snapshot never overwrites",
                out.display()
            )));
        }
        crate::snapshot::create_encrypted_image(out, &key, size)
    }

    fn delete(&self, id: &VmId) -> Result<(), HypervisorError> {
        let mut vms = self.lock();
        let (_, _, uid) = vms
            .by_id
            .remove(id)
            .ok_or_else(|| HypervisorError::NotFound(id.clone()))?;
        vms.free.insert(uid);
        Ok(())
    }
}
