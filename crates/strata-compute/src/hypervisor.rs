//! The hypervisor driver trait, shared by the real QEMU driver and the in-process simulator.
//!
//! A VM's lifecycle, as both drivers implement it:
//!
//! ```text
//!   create ──▶ Created ──start──▶ Starting ──guest ready──▶ Running ──stop──▶ Stopped
//!                                    │                         │                │
//!                                    │ firmware refused image, │ process died   │ start
//!                                    │ timeout, process died   ▼                ▼
//!                                    └───────────────────▶  Failed{reason}   Starting
//! ```
//!
//! `start` blocks until the guest reports ready (`Running`) or the boot is known to have
//! failed (`Failed` with a [`FailureReason`]); a failed boot is a state, not an error: errors are
//! for the driver itself not working (a missing program, an unknown VM, a full disk).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::cmd::CmdError;
use crate::qmp::QmpError;

/// A VM's name on its host: 1–63 characters of `[a-z0-9-]`, not starting with `-` (it names
/// a directory and sockets, so nothing else is accepted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmId(String);

impl VmId {
    /// Checks `name` against the grammar above.
    pub fn new(name: &str) -> Result<Self, HypervisorError> {
        let ok = (1..=63).contains(&name.len())
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(HypervisorError::BadId(name.to_owned()))
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key a VM's vTPM state is encrypted with (swtpm's AES-256-CBC state encryption). The
/// agent obtains it for the VM and hands it to the driver; it never reaches a file or a
/// command line (swtpm reads it from an inherited pipe) and is zeroed when dropped.
#[derive(Clone, zeroize::ZeroizeOnDrop)]
pub struct VtpmKey([u8; 32]);

impl VtpmKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key from the kernel's CSPRNG.
    pub fn generate() -> std::io::Result<Self> {
        let mut key = Self([0; 32]);
        fill_random(&mut key.0)?;
        Ok(key)
    }

    /// Lowercase hex, the form swtpm reads (`format=hex`); zeroed when dropped.
    pub(crate) fn to_hex(&self) -> zeroize::Zeroizing<String> {
        lower_hex(&self.0)
    }
}

impl fmt::Debug for VtpmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VtpmKey([redacted])")
    }
}

/// The key a VM's disk is encrypted with: every disk is a qcow2 whose data clusters are LUKS
/// encrypted (AES-256-XTS), and this key unlocks its LUKS key slot. In production it is the
/// disk's data key (`strata_kms::DataKey::expose_secret()`, released to the host the VM runs
/// on); the driver keeps it in memory only, for as long as the VM exists (every start needs
/// it). QEMU and `qemu-img` get it only through an inherited pipe (a `secret` object reading
/// `/dev/fd/N`): never argv, environment, log or file. Zeroed when dropped; `Debug` is
/// redacted.
#[derive(Clone, zeroize::ZeroizeOnDrop)]
pub struct DiskKey([u8; 32]);

impl DiskKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key from the kernel's CSPRNG.
    pub fn generate() -> std::io::Result<Self> {
        let mut key = Self([0; 32]);
        fill_random(&mut key.0)?;
        Ok(key)
    }

    /// The LUKS passphrase: the key as 64 lowercase hex digits. QEMU requires a LUKS passphrase
    /// to be UTF-8 text, so the raw bytes cannot be used as they are; the hex form keeps all
    /// 256 bits. Zeroed when dropped.
    pub(crate) fn passphrase(&self) -> zeroize::Zeroizing<String> {
        lower_hex(&self.0)
    }
}

impl fmt::Debug for DiskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DiskKey([redacted])")
    }
}

fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

fn lower_hex(bytes: &[u8; 32]) -> zeroize::Zeroizing<String> {
    let mut out = zeroize::Zeroizing::new(String::with_capacity(64));
    for b in bytes {
        for nibble in [b >> 4, b & 0xf] {
            out.push(char::from(b"0123456789abcdef"[usize::from(nibble)]));
        }
    }
    out
}

/// One network interface of a VM: a tap device the host made for it (owned by the VM's uid,
/// on its virtual network's bridge: `strata-agent`'s network module), the interface's MAC, and
/// the address the guest configures on it (passed as an SMBIOS OEM string: `qemu.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    /// The tap's name: 1-15 characters of `[a-z0-9]` (it lands in QEMU's argv).
    pub tap: String,
    pub mac: [u8; 6],
    pub address: Option<GuestAddress>,
}

/// A NIC's static IPv4 configuration, what a DHCP server would hand the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestAddress {
    pub ip: std::net::Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: std::net::Ipv4Addr,
}

impl NicSpec {
    /// Checks the tap name against the grammar above.
    pub fn new(tap: &str, mac: [u8; 6]) -> Result<Self, HypervisorError> {
        let ok = (1..=15).contains(&tap.len())
            && tap
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self {
                tap: tap.to_owned(),
                mac,
                address: None,
            })
        } else {
            Err(HypervisorError::Start(format!(
                "invalid tap name {tap:?}: use 1-15 characters of a-z and 0-9"
            )))
        }
    }

    /// The same NIC with the address its guest configures.
    pub fn with_address(mut self, address: GuestAddress) -> Self {
        self.address = Some(address);
        self
    }

    /// `aa:bb:cc:dd:ee:ff`.
    pub fn mac_text(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub id: VmId,
    /// The boot image (qcow2); the VM gets its own copy-on-write overlay on top of it.
    pub image: PathBuf,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Trusted launch: UEFI secure boot on (secure-boot firmware and enrolled keys).
    pub secure_boot: bool,
    /// Trusted launch: a per-VM swtpm vTPM attached as `tpm-crb`.
    pub vtpm: bool,
    /// The vTPM state's encryption key; required when `vtpm` is on.
    pub vtpm_key: Option<VtpmKey>,
    /// The OS disk's encryption key; required (every disk is encrypted).
    pub disk_key: Option<DiskKey>,
    /// The OS disk's size the guest sees, bytes; `None`: the image's. Never smaller than the
    /// image (a smaller size is refused at create).
    pub disk_size_bytes: Option<u64>,
    /// Network interfaces, in order (`virtio-net-pci` on the named taps); none: no NIC.
    pub nics: Vec<NicSpec>,
    /// Restore: the OS disk starts as a copy of this snapshot (a standalone LUKS qcow2 under
    /// `disk_key`, see [`crate::snapshot`]) instead of an empty overlay on `image`; its size is
    /// the snapshot's (`disk_size_bytes` is ignored).
    pub disk_source: Option<PathBuf>,
}

impl VmSpec {
    /// A trusted-launch VM (secure boot and vTPM on, its state encrypted with `vtpm_key`, its
    /// disk with `disk_key`) with 1 vCPU and 512 MiB.
    pub fn trusted_launch(id: VmId, image: PathBuf, vtpm_key: VtpmKey, disk_key: DiskKey) -> Self {
        Self {
            id,
            image,
            vcpus: 1,
            memory_mib: 512,
            secure_boot: true,
            vtpm: true,
            vtpm_key: Some(vtpm_key),
            disk_key: Some(disk_key),
            disk_size_bytes: None,
            nics: Vec::new(),
            disk_source: None,
        }
    }

    /// Refuses a spec missing a key it needs: every disk is encrypted, and so is every vTPM's
    /// state. Both drivers check this at `create`, before anything is made.
    pub fn check_keys(&self) -> Result<(), HypervisorError> {
        if self.disk_key.is_none() {
            return Err(HypervisorError::MissingDiskKey(self.id.clone()));
        }
        if self.vtpm && self.vtpm_key.is_none() {
            return Err(HypervisorError::MissingVtpmKey(self.id.clone()));
        }
        Ok(())
    }
}

/// Why a VM is `Failed`: a verdict read from what the VM did, not a driver error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// The firmware refused to run the boot image (its serial output said so).
    SecureBootViolation { firmware_said: String },
    /// The guest did not report ready within the boot timeout.
    BootTimeout { seconds: u64 },
    /// The VM's process exited on its own.
    ProcessExited { status: String },
    /// The driver could not launch the VM's processes (the error was also returned).
    LaunchFailed { error: String },
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SecureBootViolation { .. } => f.write_str("secure boot violation"),
            Self::BootTimeout { seconds } => {
                write!(f, "the guest did not report ready within {seconds} s")
            }
            Self::ProcessExited { status } => write!(f, "the VM process exited ({status})"),
            Self::LaunchFailed { error } => write!(f, "the VM could not be launched: {error}"),
        }
    }
}

/// Where a VM is in its lifecycle (diagram at the top of this module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmState {
    Created,
    Starting,
    Running,
    Stopped,
    Failed { reason: FailureReason },
}

/// The driver itself could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error(
        "invalid VM name {0:?}: use 1-63 characters of a-z, 0-9 and '-', not starting with '-'"
    )]
    BadId(String),
    #[error("no VM named {0} on this host")]
    NotFound(VmId),
    #[error("a VM named {0} already exists on this host")]
    Exists(VmId),
    #[error("VM {id} is {state:?}; {action} needs it {needs}")]
    WrongState {
        id: VmId,
        state: VmState,
        action: &'static str,
        needs: &'static str,
    },
    #[error("cannot {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Command(#[from] CmdError),
    #[error("the QEMU monitor of VM {id} failed")]
    Qmp {
        id: VmId,
        #[source]
        source: QmpError,
    },
    #[error("{0}")]
    Start(String),
    #[error(
        "VM {0} has a vTPM but no state key: the vTPM state is always encrypted; obtain the VM's key and pass it in the spec"
    )]
    MissingVtpmKey(VmId),
    #[error(
        "VM {0} has no disk key: every disk is encrypted; obtain the VM's disk key and pass it in the spec"
    )]
    MissingDiskKey(VmId),
}

/// One host's hypervisor: the same API whether VMs are real QEMU processes or simulated.
pub trait Hypervisor: Send + Sync {
    /// Prepares the VM's private files (disk overlay, firmware variables, vTPM state); does not
    /// run anything.
    fn create(&self, spec: VmSpec) -> Result<(), HypervisorError>;
    /// Boots the VM and waits until it is `Running` or `Failed`; returns that state.
    fn start(&self, id: &VmId) -> Result<VmState, HypervisorError>;
    /// Stops a running VM (ACPI power button, then a hard stop after a grace period).
    fn stop(&self, id: &VmId) -> Result<(), HypervisorError>;
    /// The VM's current state (a process that died since the last call is noticed here).
    fn state(&self, id: &VmId) -> Result<VmState, HypervisorError>;
    /// Stops the VM if needed and removes every file it had.
    fn delete(&self, id: &VmId) -> Result<(), HypervisorError>;
    /// The uid and gid the VM's processes run as (its taps are made for them), once created;
    /// `None`: the driver runs nothing as a VM identity of its own.
    fn owner(&self, id: &VmId) -> Result<Option<(u32, u32)>, HypervisorError> {
        let _ = id;
        Ok(None)
    }
    /// Every VM the driver holds, including those it adopted from an earlier driver.
    fn list(&self) -> Vec<VmId> {
        Vec::new()
    }
    /// Gives an adopted VM the keys no driver keeps on disk (a VM that has them ignores this);
    /// it cannot be started again without them.
    fn supply_keys(
        &self,
        id: &VmId,
        vtpm_key: Option<VtpmKey>,
        disk_key: Option<DiskKey>,
    ) -> Result<(), HypervisorError> {
        let _ = (id, vtpm_key, disk_key);
        Ok(())
    }
    /// Writes a point-in-time copy of the VM's OS disk to `out` (which must not exist): a
    /// standalone qcow2 (backing image folded in), LUKS-encrypted under the disk's own key with
    /// a fresh LUKS master key. A running VM keeps running (crash-consistent copy); a stopped
    /// one is copied offline. See [`crate::snapshot`].
    fn snapshot(&self, id: &VmId, out: &Path) -> Result<(), HypervisorError> {
        let _ = (id, out);
        Err(HypervisorError::Start(
            "this hypervisor driver takes no snapshots".into(),
        ))
    }
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HypervisorError {
    let what = what.into();
    move |source| HypervisorError::Io { what, source }
}
