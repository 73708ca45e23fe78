//! Choosing the host's hypervisor: `qemu` (real VMs: `strata_compute::qemu::QemuDriver`) or
//! `sim` (in-process, nothing boots: `strata_compute::sim::SimDriver`).
//!
//! The QEMU driver runs each VM as its own uid, so it needs root, the Debian packages in
//! [`strata_compute::COMPUTE_PACKAGES`], and a VM directory whose ancestors VM uids can pass
//! through (which is why it lives outside the control plane's 0700 data directory). It picks
//! KVM when a probe shows it works and TCG with a warning otherwise.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use strata_compute::qemu::{self, Accel, QemuConfig, QemuDriver};
use strata_compute::sandbox::SandboxConfig;
use strata_compute::sim::SimDriver;
use strata_compute::{Hypervisor, HypervisorError};

/// The Debian packages the QEMU driver and the image builder need.
pub use strata_compute::COMPUTE_PACKAGES;
/// The development secure-boot variables template (Debian's snakeoil keys enrolled).
pub use strata_compute::qemu::OVMF_VARS_SNAKEOIL;

/// Which driver runs the host's VMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypervisorKind {
    Qemu,
    Sim,
}

/// A driver ready for [`VmHost`](crate::vms::VmHost), with the VM directory it keeps files in.
pub struct Driver {
    pub kind: HypervisorKind,
    pub hypervisor: Arc<dyn Hypervisor>,
    /// Where the QEMU driver keeps each VM's directory (`None` for `sim`).
    pub vm_dir: Option<PathBuf>,
}

impl Driver {
    /// The in-process simulator.
    pub fn sim() -> Self {
        Self {
            kind: HypervisorKind::Sim,
            hypervisor: Arc::new(SimDriver::new()),
            vm_dir: None,
        }
    }

    /// The QEMU driver with VMs under `vm_dir` and secure-boot variables copied from
    /// `vars_template` (it must trust the key that signed the images).
    pub fn qemu(vm_dir: &Path, vars_template: &Path) -> Result<Self, HypervisorError> {
        let missing = missing_for_qemu(vars_template);
        if !missing.is_empty() {
            return Err(HypervisorError::Start(format!(
                "the QEMU driver needs {}: build Strata's QEMU (`cargo xtask qemu`) or install \
                 the Debian packages {}, and run the agent as root \
                 (or use --hypervisor sim, which runs no real VMs)",
                missing.join(", "),
                strata_compute::COMPUTE_PACKAGES.join(" ")
            )));
        }
        tracing::info!(
            qemu = %strata_compute::binaries::describe(),
            "the QEMU driver runs {}",
            strata_compute::binaries::qemu_system().display()
        );
        // QemuDriver creates the VM directory 0711 but would create missing parents 0700,
        // which VM uids could not pass through.
        if let Some(parent) = vm_dir.parent()
            && !parent.exists()
        {
            fs::create_dir_all(parent)
                .map_err(|source| io(format!("create {}", parent.display()), source))?;
            fs::set_permissions(parent, fs::Permissions::from_mode(0o755))
                .map_err(|source| io(format!("chmod {}", parent.display()), source))?;
        }
        let config = QemuConfig {
            root: vm_dir.to_path_buf(),
            ovmf_code: qemu::OVMF_CODE_SECBOOT.into(),
            vars_template: vars_template.to_path_buf(),
            accel: Accel::probe(Duration::from_secs(10)),
            boot_timeout: Duration::from_secs(180),
            powerdown_grace: Duration::from_secs(20),
            sandbox: SandboxConfig::detect()?,
            netns: None,
            // An agent restart leaves its VMs running; the next driver adopts them.
            keep_running_on_drop: true,
        };
        Self::from_qemu(config)
    }

    /// The QEMU driver with a configuration of the caller's (tests pick their own uid range).
    pub fn from_qemu(config: QemuConfig) -> Result<Self, HypervisorError> {
        let vm_dir = config.root.clone();
        Ok(Self {
            kind: HypervisorKind::Qemu,
            hypervisor: Arc::new(QemuDriver::new(config)?),
            vm_dir: Some(vm_dir),
        })
    }
}

fn io(what: String, source: std::io::Error) -> HypervisorError {
    HypervisorError::Io { what, source }
}

/// What the QEMU driver needs and this host lacks (empty: it can run).
pub fn missing_for_qemu(vars_template: &Path) -> Vec<String> {
    let mut missing: Vec<String> = [
        strata_compute::binaries::qemu_system(),
        strata_compute::binaries::qemu_img(),
        "swtpm".into(),
        "swtpm_setup".into(),
    ]
    .into_iter()
    .filter(|p| strata_compute::binaries::locate(p).is_none())
    .map(|p| p.display().to_string())
    .collect();
    for f in [Path::new(qemu::OVMF_CODE_SECBOOT), vars_template] {
        if !f.exists() {
            missing.push(f.display().to_string());
        }
    }
    if !is_root() {
        missing.push("root (each VM runs as its own uid)".into());
    }
    missing
}

fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
