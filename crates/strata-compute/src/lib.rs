//! Compute: virtual machines under QEMU with trusted launch (UEFI secure boot + a per-VM vTPM).
//!
//! - [`image`] builds the tiny signed guest image (busybox initramfs + Debian cloud kernel in a
//!   UKI on a GPT/ESP disk) offline from Debian packages.
//! - [`import`] validates an uploaded raw or qcow2 image and converts it to a canonical qcow2.
//! - [`hypervisor`] is the driver trait and the VM state machine shared by both drivers.
//! - [`qemu`] is the real driver (QEMU + OVMF secure boot + swtpm, talked to over [`qmp`]).
//! - [`adopt`] lets a new QEMU driver take over the VMs an earlier one left running.
//! - [`sandbox`] is each VM's own uid/gid, private files and cgroup (the privilege drop).
//! - [`sim`] is the in-process driver for control-plane scale tests.

pub mod adopt;
pub mod binaries;
pub mod hypervisor;
pub mod image;
pub mod import;
pub mod qemu;
pub mod qmp;
pub mod sandbox;
pub mod sim;
pub mod snapshot;

mod cmd;

pub use hypervisor::{
    DiskKey, FailureReason, GuestAddress, Hypervisor, HypervisorError, NicSpec, VmId, VmSpec,
    VmState, VtpmKey,
};

/// Debian packages this crate runs on the host (QEMU itself must come from the same suite as
/// `qemu-utils`: see xtask's `ensure_qemu`); Strata's own QEMU build, when installed, is used
/// instead of the distribution's (`binaries`). `apt-get` and `dpkg-deb` are assumed present.
pub const COMPUTE_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-utils",
    "ovmf",
    "swtpm",
    "swtpm-tools",
    "busybox-static",
    "mtools",
    "gdisk",
    "binutils",
    "sbsigntool",
    "systemd-boot-efi",
    "openssl",
];

/// The line the tiny image's `/init` prints on ttyS0 once the guest is up.
pub const READY_MARKER: &str = "STRATA-GUEST-READY";
/// The line before the tiny image's base64 measured-boot event log on ttyS0 (`image` docs).
pub const EVENTLOG_BEGIN: &str = "STRATA-GUEST-EVENTLOG-BEGIN";
/// The line after it.
pub const EVENTLOG_END: &str = "STRATA-GUEST-EVENTLOG-END";
/// The prefix of the guest's `STRATA-GUEST-PCR <n> <hex>` lines (its SHA-256 PCR values).
pub const PCR_LINE: &str = "STRATA-GUEST-PCR ";
