//! The real driver: each VM is a QEMU process with UEFI secure boot (OVMF) and its own swtpm.
//!
//! Per VM, everything lives in one directory `root/<vm>/` (mode 0700, files 0600, all owned by
//! the VM's own uid: see [`sandbox`](crate::sandbox)): the copy-on-write disk overlay, its own
//! copy of the firmware variables template, the vTPM state (`tpm/`, 0700), the sockets
//! (`swtpm.sock`, `qmp.sock`) and the logs (`serial.log`, `swtpm.log`; `qemu.log` stays
//! root's). Nothing is shared between VMs but the read-only firmware code and the base image.
//! `root` itself is 0711: VM uids can pass through it to their own directory but not list it.
//! The vTPM state is created at `create` (`swtpm_setup`: EKs, SHA-256 bank) and is always
//! encrypted (AES-256-CBC) with the VM's [`VtpmKey`], which swtpm reads from an inherited pipe:
//! it never touches a file, argv or the environment.
//!
//! Every disk is encrypted. The overlay is a qcow2 with LUKS encryption (`encrypt.format=luks`:
//! AES-256-XTS, plain64 IVs, a random master key in a LUKS key slot unlocked by the VM's
//! [`DiskKey`]); its backing file is the shared, plaintext, read-only base image. QEMU allows
//! that combination: encryption is a property of each image in the chain, so clusters the
//! guest never wrote are read in plaintext from the base (public data: the image), and every
//! cluster the guest writes lands in the overlay encrypted. Only the overlay holds VM data;
//! what stays readable in it is qcow2 metadata (which clusters were written, not what) and the
//! LUKS header (its key slot needs the key: 256 bits, so the PBKDF time is kept short). The
//! key reaches `qemu-img` and QEMU only as an encrypted `secret` object ([`DiskSecret`]:
//! AES-256-CBC under a random key made for that one program start), and that key as a
//! `secret` object reading `/dev/fd/3`, an inherited pipe holding it and nothing else
//! (`hand_secret`); argv names only the descriptor and carries the ciphertext. The pipe is
//! created by the driver (root) and handed to the VM's uid with `fchown`, because QEMU
//! re-opens `/dev/fd/3` and the kernel checks the pipe's owner on that open. Snapshots and
//! exports stay LUKS-encrypted under the disk's key (`crate::snapshot`).
//!
//! `start` reads top to bottom as the launch sequence: cgroup with limits, vTPM up (as the VM's
//! uid, in its cgroup), QEMU up (likewise, then its seccomp sandbox, protected pflash,
//! `-machine q35,smm=on`), QMP handshake, then watch the serial console until the guest says
//! [`READY_MARKER`](crate::READY_MARKER) or the firmware refuses the image.
//!
//! Trusted launch boots from the disk's EFI system partition, never with `-kernel` (OVMF does
//! not verify a `-kernel` image).

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::READY_MARKER;
use crate::adopt::{self, Proc};
use crate::cmd::{self, describe, spawn_error};
use crate::hypervisor::{
    DiskKey, FailureReason, Hypervisor, HypervisorError, VmId, VmSpec, VmState, VtpmKey, io,
};
use crate::qmp::QmpClient;
use crate::sandbox::{self, Limits, SandboxConfig, VmSandbox};

/// Secure-boot OVMF code (SMM, protected variable store). Debian package `ovmf`.
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// Variables template for tests: secure boot on, Debian's snakeoil PK/KEK/db enrolled.
pub const OVMF_VARS_SNAKEOIL: &str = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
/// Variables template for production hosts: secure boot on, Microsoft keys enrolled.
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// Firmware for `Standard` (no secure boot) VMs.
pub const OVMF_CODE_PLAIN: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS_PLAIN: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The snakeoil key pair the snakeoil variables trust (the key is encrypted, passphrase
/// `snakeoil`, as Debian's `ovmf` README says).
pub const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
pub const SNAKEOIL_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";

/// The id of the disk key's `secret` object, for `qemu-img` and QEMU alike.
pub(crate) const DISK_SECRET_ID: &str = "disk0-key";
/// LUKS key-slot PBKDF2 time, ms. The passphrase is a full-entropy 256-bit key, so stretching
/// adds nothing against guessing; a short time keeps every QEMU start's unlock cheap (QEMU's
/// default, 2000 ms, would add about 2 s to each start).
pub(crate) const LUKS_ITER_TIME_MS: u32 = 10;
/// TCG's translation cache size (`tb-size`), MiB.
const TCG_CACHE_MIB: u64 = 128;
/// glibc's malloc settings for QEMU (its `GLIBC_TUNABLES`). An encrypted qcow2 bounces each
/// request through a buffer QEMU allocates and frees per request (up to 32 clusters: 2 MiB at
/// the default 64 KiB). With glibc's defaults a burst of them is either mmap'd or trimmed off
/// the heap once freed, so every request faults in and zeroes fresh pages: measured, that cut
/// encrypted throughput by up to 60% (docs/benchmarks.md). Here allocations under 4 MiB come
/// from the heap and up to 64 MiB of free heap top is kept: the peak (the buffers of the
/// requests in flight) is the same, it is only held on to after a burst.
pub const QEMU_MALLOC_TUNABLES: &str =
    "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=67108864";

/// How the guest CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// Uses KVM only if a QEMU with the VM's machine type (`q35,smm=on`) actually starts on it
    /// within `timeout`; otherwise TCG, with a visible warning.
    pub fn probe(timeout: Duration) -> Self {
        let (accel, warning) = Self::probe_device(Path::new(KVM_DEVICE), timeout);
        if let Some(warning) = warning {
            eprintln!("{warning}");
        }
        accel
    }

    /// [`probe`](Self::probe) against the KVM device at `device`: the accelerator, and the
    /// warning shown when it falls back to TCG.
    fn probe_device(device: &Path, timeout: Duration) -> (Self, Option<String>) {
        match probe_kvm(device, timeout) {
            Ok(()) => (Self::Kvm, None),
            Err(why) => {
                tracing::warn!(reason = %why, "KVM is not usable: VMs run under TCG (slow)");
                let warning = format!(
                    "strata-compute: WARNING: KVM is not usable ({why}); falling back to TCG \
                     emulation, guests will be slow"
                );
                (Self::Tcg, Some(warning))
            }
        }
    }

    fn as_arg(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            // A bounded translation cache (QEMU's default is 1 GiB), counted in the VM's
            // memory limit as `TCG_CACHE_MIB`.
            Self::Tcg => "tcg,tb-size=128",
        }
    }

    /// Memory the accelerator needs beyond the guest's RAM.
    fn overhead_mib(self) -> u64 {
        match self {
            Self::Kvm => 0,
            Self::Tcg => TCG_CACHE_MIB,
        }
    }
}

/// The KVM device VMs use.
const KVM_DEVICE: &str = "/dev/kvm";

fn probe_kvm(device: &Path, timeout: Duration) -> Result<(), String> {
    if !device.exists() {
        return Err(format!("{} does not exist", device.display()));
    }
    // QEMU's own default device is KVM_DEVICE: name another one only when probing it (tests).
    let accel = if device == Path::new(KVM_DEVICE) {
        "kvm".to_owned()
    } else {
        format!("kvm,device={}", device.display())
    };
    stays_up(&accel, timeout)
}

/// The secure-boot firmware code `code` as read-only pflash that only SMM code may write
/// through (the guest OS cannot enrol keys in the variable store).
fn secure_firmware(code: &Path) -> [String; 4] {
    [
        "-global".to_owned(),
        "driver=cfi.pflash01,property=secure,value=on".to_owned(),
        "-drive".to_owned(),
        format!(
            "if=pflash,format=raw,unit=0,file={},readonly=on",
            code.display()
        ),
    ]
}

/// Starts a paused QEMU with the VMs' machine type, firmware and accelerator `accel`: `Ok` if
/// it is still alive after a moment, else why it exited.
fn stays_up(accel: &str, timeout: Duration) -> Result<(), String> {
    let mut cmd = Command::new(crate::binaries::qemu_system());
    cmd.args(["-machine", "q35,smm=on", "-accel", accel, "-S"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        // The firmware VMs boot (without it QEMU looks for SeaBIOS, which Strata's QEMU does
        // not ship: every probe would fail as if KVM did not work).
        .args(secure_firmware(Path::new(OVMF_CODE_SECBOOT)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| spawn_error(&cmd, e).to_string())?;
    // QEMU sets up the accelerator (and SMM) before it pauses at -S: alive after a moment
    // means KVM works for this machine type; an exit means it does not.
    let settle = Duration::from_millis(1500).min(timeout);
    let deadline = Instant::now() + settle;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let last = err.lines().last().unwrap_or("").trim().to_owned();
            return Err(format!("probe QEMU exited with {status}: {last}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

/// Host-wide settings of the driver.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// Where per-VM directories are created.
    pub root: PathBuf,
    pub ovmf_code: PathBuf,
    /// The secure-boot variables template copied for each trusted-launch VM.
    pub vars_template: PathBuf,
    pub accel: Accel,
    /// How long a guest may take from QEMU start to [`READY_MARKER`](crate::READY_MARKER).
    pub boot_timeout: Duration,
    /// How long `stop` waits after the ACPI power button before it quits QEMU.
    pub powerdown_grace: Duration,
    /// Per-VM uids and cgroups.
    pub sandbox: SandboxConfig,
    /// The network namespace QEMU runs in (`/run/netns/NAME`), where the VMs' taps are; `None`:
    /// the driver's own (a host agent's). Tests run a whole host's networking in a namespace.
    pub netns: Option<PathBuf>,
    /// Leave running VMs running when the driver is dropped (a host agent's restart: the next
    /// driver adopts them, see [`adopt`](crate::adopt)); `false` stops them (tests).
    pub keep_running_on_drop: bool,
}

impl QemuConfig {
    /// Test configuration: snakeoil secure-boot keys, KVM if the probe passes, the host's
    /// cgroup hierarchy.
    pub fn snakeoil(root: PathBuf) -> Result<Self, HypervisorError> {
        Ok(Self {
            root,
            ovmf_code: OVMF_CODE_SECBOOT.into(),
            vars_template: OVMF_VARS_SNAKEOIL.into(),
            accel: Accel::probe(Duration::from_secs(10)),
            boot_timeout: Duration::from_secs(180),
            powerdown_grace: Duration::from_secs(20),
            sandbox: SandboxConfig::detect()?,
            netns: None,
            keep_running_on_drop: false,
        })
    }
}

/// One VM's private files.
#[derive(Debug, Clone)]
struct VmFiles {
    dir: PathBuf,
    disk: PathBuf,
    vars: PathBuf,
    tpm_state: PathBuf,
    tpm_sock: PathBuf,
    qmp_sock: PathBuf,
    serial: PathBuf,
}

impl VmFiles {
    fn new(root: &Path, id: &VmId) -> Self {
        let dir = root.join(id.as_str());
        Self {
            disk: dir.join("disk.qcow2"),
            vars: dir.join("OVMF_VARS.fd"),
            tpm_state: dir.join("tpm"),
            tpm_sock: dir.join("swtpm.sock"),
            qmp_sock: dir.join("qmp.sock"),
            serial: dir.join("serial.log"),
            dir,
        }
    }
}

/// The processes of a started VM (children of this driver, or adopted: `adopt`).
#[derive(Debug)]
struct Procs {
    qemu: Proc,
    swtpm: Option<Proc>,
    qmp: QmpClient,
}

#[derive(Debug)]
struct Vm {
    spec: VmSpec,
    files: VmFiles,
    sandbox: VmSandbox,
    state: VmState,
    procs: Option<Procs>,
    command_line: Option<String>,
    /// Held while the disk is copied for a snapshot (`Hypervisor::snapshot`); a start or a
    /// delete waits for it. Taken before the VM's own lock, never while holding it.
    disk_lock: Arc<Mutex<()>>,
}

/// The QEMU driver; VMs it started are killed when it is dropped.
#[derive(Debug)]
pub struct QemuDriver {
    config: QemuConfig,
    vms: Mutex<BTreeMap<VmId, Arc<Mutex<Vm>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent at each await-free step, so a
    // poisoned lock (a panic elsewhere) is still safe to use.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl QemuDriver {
    pub fn new(config: QemuConfig) -> Result<Self, HypervisorError> {
        make_private_dir(&config.root)?;
        // VM uids pass through to their own directories; nobody else can list them.
        fs::set_permissions(&config.root, fs::Permissions::from_mode(0o711))
            .map_err(io(format!("chmod {}", config.root.display())))?;
        sandbox::check_searchable(&config.root, "the VM directory")?;
        let driver = Self {
            config,
            vms: Mutex::new(BTreeMap::new()),
        };
        driver.adopt();
        Ok(driver)
    }

    /// Takes over the VMs an earlier driver left (module `adopt`): a QEMU that is still the
    /// VM's (pid, start time, executable, uid) and answers QMP is adopted Running; the rest is
    /// cleaned up (its swtpm, sockets and cgroup) and adopted Stopped. A record without its VM
    /// directory is dropped.
    fn adopt(&self) {
        let root = &self.config.root;
        // A VM keeps the QEMU it was started with: one started before the host switched
        // between Strata's build and the distribution's (or another STRATA_QEMU_DIR) is still
        // adopted, and runs the new one from its next start.
        let qemu_exes: Vec<PathBuf> = crate::binaries::known_qemu_systems()
            .iter()
            .filter_map(|p| crate::binaries::locate(p))
            .collect();
        let swtpm_exe: Vec<PathBuf> = crate::binaries::locate(Path::new("swtpm"))
            .into_iter()
            .collect();
        for record in adopt::load_all(root) {
            let id = record.spec.id.clone();
            let files = VmFiles::new(root, &id);
            if !files.dir.is_dir() {
                adopt::remove(root, &id);
                continue;
            }
            let sandbox = match self.config.sandbox.for_vm(&id, &files.dir) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(vm = %id, error = %e, "not adopting the VM");
                    continue;
                }
            };
            let qemu = record
                .qemu
                .and_then(|(pid, t)| adopt::verify(pid, t, &qemu_exes, sandbox.uid));
            let swtpm = record
                .swtpm
                .and_then(|(pid, t)| adopt::verify(pid, t, &swtpm_exe, sandbox.uid));
            let qmp = qemu.as_ref().and_then(|_| {
                QmpClient::connect(&files.qmp_sock, Duration::from_secs(5))
                    .and_then(|mut q| q.query_status().map(|s| (q, s)))
                    .ok()
                    .filter(|(_, status)| status == "running")
                    .map(|(q, _)| q)
            });
            let (state, procs) = match (qemu, qmp) {
                (Some(qemu), Some(qmp)) => {
                    tracing::info!(vm = %id, pid = qemu.id(), "adopted a running VM");
                    (VmState::Running, Some(Procs { qemu, swtpm, qmp }))
                }
                (qemu, _) => {
                    if record.qemu.is_some() {
                        tracing::warn!(vm = %id, "the VM's QEMU is gone (or no longer the VM's): cleaned up, adopted Stopped");
                    }
                    kill(qemu);
                    kill(swtpm);
                    for sock in [&files.tpm_sock, &files.qmp_sock] {
                        let _ = fs::remove_file(sock);
                    }
                    sandbox.remove_cgroup();
                    (VmState::Stopped, None)
                }
            };
            let vm = Vm {
                spec: record.spec,
                files,
                sandbox,
                state,
                procs,
                command_line: record.command_line,
                disk_lock: Arc::new(Mutex::new(())),
            };
            self.save(&vm);
            lock(&self.vms).insert(id, Arc::new(Mutex::new(vm)));
        }
    }

    /// Records the VM for a later driver (module `adopt`); a failure is logged (the VM would
    /// then not be adopted, only reported as files of an earlier run).
    fn save(&self, vm: &Vm) {
        let procs = vm
            .procs
            .as_ref()
            .map(|p| (p.qemu.id(), p.swtpm.as_ref().map(Proc::id)));
        if let Err(e) = adopt::save(
            &self.config.root,
            &vm.spec,
            procs,
            vm.command_line.as_deref(),
        ) {
            tracing::warn!(vm = %vm.spec.id, error = %e, "cannot record the VM for adoption");
        }
    }

    pub fn config(&self) -> &QemuConfig {
        &self.config
    }

    /// The serial console output of the VM's current or last boot.
    pub fn serial_log(&self, id: &VmId) -> Result<String, HypervisorError> {
        let vm = self.vm(id)?;
        let path = lock(&vm).files.serial.clone();
        Ok(read_lossy(&path))
    }

    /// The QEMU command line of the VM's last start.
    pub fn command_line(&self, id: &VmId) -> Result<Option<String>, HypervisorError> {
        let vm = self.vm(id)?;
        let line = lock(&vm).command_line.clone();
        Ok(line)
    }

    /// Asks the running VM's QEMU for its run state over QMP (`query-status`).
    pub fn qmp_status(&self, id: &VmId) -> Result<String, HypervisorError> {
        let vm = self.vm(id)?;
        let mut vm = lock(&vm);
        let Some(procs) = vm.procs.as_mut() else {
            return Err(HypervisorError::WrongState {
                id: id.clone(),
                state: vm.state.clone(),
                action: "query-status",
                needs: "running",
            });
        };
        procs
            .qmp
            .query_status()
            .map_err(|source| HypervisorError::Qmp {
                id: id.clone(),
                source,
            })
    }

    /// The VM's directory (for inspection in tests).
    pub fn vm_dir(&self, id: &VmId) -> Result<PathBuf, HypervisorError> {
        let vm = self.vm(id)?;
        let dir = lock(&vm).files.dir.clone();
        Ok(dir)
    }

    /// The VM's sandbox: its uid/gid and cgroup.
    pub fn sandbox(&self, id: &VmId) -> Result<VmSandbox, HypervisorError> {
        let vm = self.vm(id)?;
        let sandbox = lock(&vm).sandbox.clone();
        Ok(sandbox)
    }

    /// The process ids of the running VM's QEMU and swtpm.
    pub fn pids(&self, id: &VmId) -> Result<Vec<u32>, HypervisorError> {
        let vm = self.vm(id)?;
        let vm = lock(&vm);
        Ok(vm
            .procs
            .as_ref()
            .map(|p| {
                std::iter::once(p.qemu.id())
                    .chain(p.swtpm.as_ref().map(Proc::id))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn vm(&self, id: &VmId) -> Result<Arc<Mutex<Vm>>, HypervisorError> {
        lock(&self.vms)
            .get(id)
            .cloned()
            .ok_or_else(|| HypervisorError::NotFound(id.clone()))
    }

    fn qemu_command(&self, vm: &Vm, secret: &DiskSecret) -> Command {
        let f = &vm.files;
        let s = &vm.spec;
        let mut c = Command::new(crate::binaries::qemu_system());
        c.env("GLIBC_TUNABLES", QEMU_MALLOC_TUNABLES);
        c.arg("-name")
            .arg(format!("strata-{},debug-threads=on", s.id))
            .args([
                "-machine",
                "q35,smm=on",
                "-accel",
                self.config.accel.as_arg(),
            ])
            .arg("-smp")
            .arg(s.vcpus.to_string())
            .arg("-m")
            .arg(s.memory_mib.to_string())
            .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            // QEMU's seccomp filter: no obsolete syscalls, no setuid, no fork/exec, no
            // scheduler/affinity changes.
            .args([
                "-sandbox",
                "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
            ])
            .arg("-serial")
            .arg(format!("file:{}", f.serial.display()));
        if s.secure_boot {
            c.args(secure_firmware(&self.config.ovmf_code));
        } else {
            c.arg("-drive").arg(format!(
                "if=pflash,format=raw,unit=0,file={OVMF_CODE_PLAIN},readonly=on"
            ));
        }
        c.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            f.vars.display()
        ));
        if s.vtpm {
            c.arg("-chardev")
                .arg(format!("socket,id=chrtpm,path={}", f.tpm_sock.display()))
                .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
                .args(["-device", "tpm-crb,tpmdev=tpm0"]);
        }
        // The disk key: encrypted secret objects, their key on the inherited pipe (`boot`).
        // An overlay names its base image; a restored disk is a standalone copy. Read from the
        // disk itself: a VM adopted after an agent restart has no record of where it came from.
        let cache = disk_cache_options(&f.disk, qcow2_has_backing(&f.disk));
        tracing::info!(vm = %s.id, cache, "disk host cache mode");
        c.args(secret.objects("-object"))
            .arg("-drive")
            .arg(format!(
                "if=none,id=disk0,format=qcow2,file={},encrypt.key-secret={DISK_SECRET_ID},{}",
                f.disk.display(),
                cache
            ))
            .args(["-device", "virtio-blk-pci,drive=disk0,bootindex=1"]);
        // Each NIC: the tap the host made for this VM (owned by its uid, on its network's
        // bridge; QEMU opens it by name, no helper script, no privilege), virtio-net with the
        // interface's MAC and no option ROM (OVMF has its own virtio-net driver), and its
        // address for the guest as an SMBIOS OEM string (type 11, which OVMF passes on and
        // Linux shows in /sys/firmware/dmi/entries/11-*): `strata-net<i>=<mac> <ip>/<len> <gw>`.
        for (i, nic) in s.nics.iter().enumerate() {
            if let Some(a) = &nic.address {
                c.arg("-smbios").arg(format!(
                    "type=11,value=strata-net{i}={} {}/{} {}",
                    nic.mac_text(),
                    a.ip,
                    a.prefix_len,
                    a.gateway
                ));
            }
            c.arg("-netdev")
                .arg(format!(
                    "tap,id=net{i},ifname={},script=no,downscript=no",
                    nic.tap
                ))
                .arg("-device")
                .arg(format!(
                    "virtio-net-pci,netdev=net{i},mac={},romfile=",
                    nic.mac_text()
                ));
        }
        c.arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", f.qmp_sock.display()));
        c
    }

    /// The launch sequence. On return the VM is Running, or Failed with its processes gone.
    fn boot(&self, vm: &mut Vm) -> Result<VmState, HypervisorError> {
        let f = vm.files.clone();
        for stale in [&f.serial, &f.tpm_sock, &f.qmp_sock] {
            let _ = fs::remove_file(stale);
        }
        private_file(&f.serial)?;
        vm.sandbox.own(&f.serial, 0o600)?;

        // 1. The VM's cgroup, with its limits, before anything runs in it.
        vm.sandbox.create_cgroup(Limits {
            vcpus: vm.spec.vcpus,
            memory_mib: vm.spec.memory_mib,
            accel_overhead_mib: self.config.accel.overhead_mib(),
        })?;

        // 2. The vTPM: its own swtpm on a socket in the VM's directory, as the VM's uid.
        vm.spec.check_keys()?;
        let swtpm = match (vm.spec.vtpm, &vm.spec.vtpm_key) {
            (false, _) => None,
            (true, Some(key)) => Some(Proc::Child(start_swtpm(&f, &vm.sandbox, key)?)),
            (true, None) => return Err(HypervisorError::MissingVtpmKey(vm.spec.id.clone())),
        };

        // 3. QEMU, as the VM's uid in the VM's cgroup, its stdout/stderr to qemu.log, the
        //    disk key on its inherited pipe.
        let log = private_file(&f.dir.join("qemu.log"))?;
        let log2 = log.try_clone().map_err(io("open qemu.log"))?;
        let secret = match &vm.spec.disk_key {
            Some(key) => DiskSecret::new(key),
            None => Err(HypervisorError::MissingDiskKey(vm.spec.id.clone())),
        };
        let secret = match secret {
            Ok(secret) => secret,
            Err(e) => {
                kill(swtpm);
                return Err(e);
            }
        };
        let mut cmd = self.qemu_command(vm, &secret);
        let handed = vm
            .sandbox
            .confine(&mut cmd)
            .and_then(|()| secret.hand(&mut cmd, Some(&vm.sandbox)));
        drop(secret);
        if let Err(e) = handed {
            kill(swtpm);
            return Err(e);
        }
        let line = describe(&cmd);
        tracing::info!(vm = %vm.spec.id, command = %line, "starting QEMU");
        vm.command_line = Some(line);
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        let spawned = spawn_in(self.config.netns.as_deref(), &mut cmd);
        let mut qemu = match spawned {
            Ok(q) => Proc::Child(q),
            Err(e) => {
                kill(swtpm);
                return Err(e);
            }
        };

        // 4. The monitor.
        let qmp = match QmpClient::connect(&f.qmp_sock, Duration::from_secs(15)) {
            Ok(q) => q,
            Err(source) => {
                let exited = qemu.exited();
                qemu.kill();
                qemu.wait();
                kill(swtpm);
                if let Some(exit) = exited {
                    let tail = read_lossy(&f.dir.join("qemu.log"));
                    return Ok(VmState::Failed {
                        reason: FailureReason::ProcessExited {
                            status: format!("{}: {}", exit.text, tail.trim()),
                        },
                    });
                }
                return Err(HypervisorError::Qmp {
                    id: vm.spec.id.clone(),
                    source,
                });
            }
        };
        let mut procs = Procs { qemu, swtpm, qmp };

        // 5. Watch the console until ready, refused, dead or out of time.
        let started = Instant::now();
        loop {
            let serial = read_lossy(&f.serial);
            if serial.lines().any(|l| l.trim_end() == READY_MARKER) {
                let status = match procs.qmp.query_status() {
                    Ok(s) => s,
                    Err(source) => match procs.qemu.exited() {
                        Some(exit) => {
                            kill(procs.swtpm);
                            return Ok(VmState::Failed {
                                reason: FailureReason::ProcessExited { status: exit.text },
                            });
                        }
                        None => {
                            teardown(procs, Duration::ZERO);
                            return Err(HypervisorError::Qmp {
                                id: vm.spec.id.clone(),
                                source,
                            });
                        }
                    },
                };
                if status == "running" {
                    tracing::info!(vm = %vm.spec.id, secs = started.elapsed().as_secs_f64(), "guest ready");
                    vm.procs = Some(procs);
                    return Ok(VmState::Running);
                }
            }
            let refusal = secure_boot_refusal(&serial);
            if let Some(said) = &refusal
                && serial.contains(NO_BOOT_OPTION)
            {
                teardown(procs, Duration::ZERO);
                return Ok(VmState::Failed {
                    reason: FailureReason::SecureBootViolation {
                        firmware_said: said.clone(),
                    },
                });
            }
            if let Some(exit) = procs.qemu.exited() {
                kill(procs.swtpm);
                return Ok(VmState::Failed {
                    reason: FailureReason::ProcessExited { status: exit.text },
                });
            }
            if started.elapsed() > self.config.boot_timeout {
                teardown(procs, Duration::ZERO);
                let reason = match refusal {
                    Some(firmware_said) => FailureReason::SecureBootViolation { firmware_said },
                    None => FailureReason::BootTimeout {
                        seconds: self.config.boot_timeout.as_secs(),
                    },
                };
                return Ok(VmState::Failed { reason });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Spawns `cmd` in the network namespace `netns` (a `/run/netns/NAME` file), or in this
/// process's when `None`. A namespace is per thread and inherited at fork, so the child is
/// forked from a short-lived thread that entered it first; the caller's threads stay put.
fn spawn_in(netns: Option<&Path>, cmd: &mut Command) -> Result<Child, HypervisorError> {
    let Some(ns) = netns else {
        return cmd.spawn().map_err(|e| spawn_error(cmd, e).into());
    };
    let file = File::open(ns).map_err(io(format!("open {}", ns.display())))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsRawFd as _;
            #[expect(unsafe_code, reason = "setns(2) has no safe wrapper in std")]
            // SAFETY: `file` is an open namespace file for the duration of the call; setns
            // changes only this scoped thread's network namespace, which ends right after.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(HypervisorError::Io {
                    what: format!("enter the network namespace {}", ns.display()),
                    source: std::io::Error::last_os_error(),
                });
            }
            cmd.spawn().map_err(|e| spawn_error(cmd, e).into())
        })
        .join()
        .unwrap_or_else(|_| {
            Err(HypervisorError::Start(
                "the thread spawning QEMU panicked".into(),
            ))
        })
    })
}

/// What OVMF's boot manager prints once it has tried every boot option.
const NO_BOOT_OPTION: &str = "BdsDxe: No bootable option or device was found";

/// The firmware line saying it refused to load a boot image for failing signature
/// verification, e.g. `BdsDxe: failed to load Boot0001 "UEFI Misc Device" from
/// PciRoot(0x0)/Pci(0x1,0x0): Access Denied` (OVMF's `LoadImage` returns `EFI_ACCESS_DENIED`
/// or `EFI_SECURITY_VIOLATION` when the image is not allowed by db/dbx).
pub fn secure_boot_refusal(serial: &str) -> Option<String> {
    serial
        .split(['\n', '\r'])
        .filter_map(|l| l.find("BdsDxe: failed to load").map(|i| &l[i..]))
        .find(|l| l.ends_with("Access Denied") || l.ends_with("Security Violation"))
        .map(str::to_owned)
}

/// The id of the per-program key that decrypts the disk key's `secret` object.
pub(crate) const DISK_MASTER_ID: &str = "disk0-master";

/// The disk key as QEMU's encrypted `secret` object, the form libvirt uses: the LUKS
/// passphrase encrypted with AES-256-CBC (as QEMU expects) under a random 32-byte key made for
/// this one program start. That key reaches the program on its inherited pipe
/// ([`hand_secret`]) as the `secret` object [`DISK_MASTER_ID`]; the command line carries only
/// the ciphertext and its IV ([`DISK_SECRET_ID`], `keyid=` the master). The plaintext
/// passphrase is never on a pipe, in argv, a log, the VM's record or a file; every start and
/// every `qemu-img` run gets a new master key and IV. The boundary is unchanged: whoever can
/// read the pipe (root, or the VM's uid at exec) and the command line can still recover the
/// passphrase, as they could read it from the pipe before.
pub(crate) struct DiskSecret {
    /// Boxed, so moving the secret leaves no copy of the key behind; zeroed when dropped.
    master: Box<zeroize::Zeroizing<[u8; 32]>>,
    /// `secret,id=disk0-key,keyid=disk0-master,format=base64,iv=…,data=…`
    encrypted: String,
}

impl DiskSecret {
    pub(crate) fn new(key: &DiskKey) -> Result<Self, HypervisorError> {
        use aes::cipher::{BlockModeEncrypt as _, KeyIvInit as _, block_padding::Pkcs7};
        use base64::Engine as _;
        use ring::rand::SecureRandom as _;
        let rng = ring::rand::SystemRandom::new();
        let mut master = Box::new(zeroize::Zeroizing::new([0u8; 32]));
        let mut iv = [0u8; 16];
        rng.fill(master.as_mut_slice())
            .and_then(|()| rng.fill(&mut iv))
            .map_err(|_| HypervisorError::Start("no randomness for the disk secret".into()))?;
        let passphrase = key.passphrase();
        let len = passphrase.len();
        // Room for the passphrase and a whole block of padding.
        let mut buf = zeroize::Zeroizing::new(vec![0u8; len + 16]);
        buf[..len].copy_from_slice(passphrase.as_bytes());
        // By reference: no copy of the key; the cipher's key schedule is zeroed on drop (the
        // `zeroize` features of `aes` and `cbc`).
        let master_key: &aes::cipher::Key<aes::Aes256> = master
            .as_slice()
            .try_into()
            .map_err(|_| HypervisorError::Start("the disk secret's key size".into()))?;
        let ciphertext = cbc::Encryptor::<aes::Aes256>::new(master_key, &iv.into())
            .encrypt_padded::<Pkcs7>(&mut buf, len)
            .map_err(|_| HypervisorError::Start("cannot encrypt the disk secret".into()))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let encrypted = format!(
            "secret,id={DISK_SECRET_ID},keyid={DISK_MASTER_ID},format=base64,iv={},data={}",
            b64.encode(iv),
            b64.encode(ciphertext)
        );
        Ok(Self { master, encrypted })
    }

    /// The two objects, each after `flag` (`-object` for QEMU, `--object` for its tools): the
    /// master key read from the inherited pipe, then the encrypted disk key.
    pub(crate) fn objects(&self, flag: &str) -> [String; 4] {
        [
            flag.to_owned(),
            format!("secret,id={DISK_MASTER_ID},format=raw,file=/dev/fd/{SECRET_FD}"),
            flag.to_owned(),
            self.encrypted.clone(),
        ]
    }

    /// Puts the master key on `cmd`'s inherited pipe (see [`hand_secret`]).
    pub(crate) fn hand(
        &self,
        cmd: &mut Command,
        reopened_by: Option<&VmSandbox>,
    ) -> Result<(), HypervisorError> {
        hand_secret(cmd, self.master.as_slice(), reopened_by)
    }
}

/// The descriptor number a child reads its secret (vTPM key, disk key) from.
pub(crate) const SECRET_FD: i32 = 3;
const SECRET_FD_ARG: &str = "3";

/// Gives `cmd` `secret` on descriptor [`SECRET_FD`]: the read end of a pipe that holds the
/// secret and nothing else (the write end is closed before the child runs). No file, no argv,
/// no environment variable ever holds it. A child that re-opens the pipe by path
/// (`/dev/fd/3`, as QEMU's `secret` object does) needs to own it: pass its sandbox as
/// `reopened_by` and the pipe is handed to the VM's uid (a descriptor read directly, as swtpm
/// does, needs no owner).
pub(crate) fn hand_secret(
    cmd: &mut Command,
    secret: &[u8],
    reopened_by: Option<&VmSandbox>,
) -> Result<(), HypervisorError> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;
    use std::os::unix::process::CommandExt as _;
    let (reader, mut writer) = std::io::pipe().map_err(io("create a pipe for a secret"))?;
    if let Some(sandbox) = reopened_by {
        std::os::unix::fs::fchown(&reader, Some(sandbox.uid), Some(sandbox.gid))
            .map_err(io("hand the secret's pipe to the VM's uid"))?;
    }
    // A key of at most 64 bytes: far below the pipe's capacity, so this cannot block.
    writer
        .write_all(secret)
        .map_err(io("write a secret to its pipe"))?;
    drop(writer);
    #[expect(
        unsafe_code,
        reason = "placing a descriptor at a fixed number must happen in the child before exec"
    )]
    // SAFETY: runs in the forked child before exec; dup2(2) and fcntl(2) are
    // async-signal-safe and `reader` (moved in) stays open until exec.
    unsafe {
        cmd.pre_exec(move || {
            let fd = reader.as_raw_fd();
            let ok = if fd == SECRET_FD {
                // Already there: only clear close-on-exec.
                libc::fcntl(fd, libc::F_SETFD, 0) != -1
            } else {
                // dup2's new descriptor does not have close-on-exec set.
                libc::dup2(fd, SECRET_FD) != -1
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    Ok(())
}

fn start_swtpm(f: &VmFiles, sandbox: &VmSandbox, key: &VtpmKey) -> Result<Child, HypervisorError> {
    let log = f.dir.join("swtpm.log");
    let mut cmd = Command::new("swtpm");
    cmd.args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={},mode=0600", f.tpm_state.display()))
        .arg("--ctrl")
        .arg(format!(
            "type=unixio,path={},mode=0600",
            f.tpm_sock.display()
        ))
        .arg("--key")
        .arg(format!("fd={SECRET_FD},format=hex,mode=aes-256-cbc"))
        .arg("--log")
        .arg(format!("file={},level=1", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    sandbox.confine(&mut cmd)?;
    hand_secret(&mut cmd, key.to_hex().as_bytes(), None)?;
    tracing::debug!(command = %describe(&cmd), "starting swtpm");
    let mut child = cmd.spawn().map_err(|e| spawn_error(&cmd, e))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f.tpm_sock.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(HypervisorError::Start(format!(
                "swtpm exited with {status}: {}",
                read_lossy(&log).trim()
            )));
        }
        if Instant::now() > deadline {
            kill(Some(Proc::Child(child)));
            return Err(HypervisorError::Start(format!(
                "swtpm did not create {} within 10 s",
                f.tpm_sock.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// The `-drive` cache options of a VM disk. The VM's own file (its encrypted overlay, or a
/// restored standalone disk) bypasses the host's page cache — `cache=none`, O_DIRECT, as
/// OpenStack and Proxmox give VM disks — when its filesystem supports that, else `writeback`.
/// Either way a guest flush reaches the storage (QEMU's `fdatasync`) before it completes.
/// Bypassing the cache keeps host memory for guests and makes a disk's throughput the
/// storage's: a warm page cache would serve a plaintext image's reads as a memory copy, an
/// encrypted one's as a copy plus AES-XTS (docs/benchmarks.md, "Disk encryption"). A shared
/// base image under an overlay (`has_backing`) stays in the page cache: it is read-only,
/// plaintext and the same for every VM made from it, so one cached copy serves them all.
fn disk_cache_options(disk: &Path, has_backing: bool) -> &'static str {
    match (direct_io_works(disk), has_backing) {
        (true, true) => "cache=none,backing.cache.direct=off",
        (true, false) => "cache=none",
        (false, _) => "cache=writeback",
    }
}

/// Whether the qcow2 image `file` names a backing file (its header's `backing_file_offset`,
/// bytes 8..16 big-endian, is not zero). Unreadable or not a qcow2: `false`.
fn qcow2_has_backing(file: &Path) -> bool {
    let mut header = [0u8; 16];
    File::open(file)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok_and(|()| {
            header[..4] == *b"QFI\xfb"
                && u64::from_be_bytes([
                    header[8], header[9], header[10], header[11], header[12], header[13],
                    header[14], header[15],
                ]) != 0
        })
}

/// Whether `file` can be opened and read with O_DIRECT (tmpfs before Linux 6.6 and some FUSE
/// filesystems refuse it).
fn direct_io_works(file: &Path) -> bool {
    use std::os::unix::fs::FileExt as _;
    let Ok(f) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(file)
    else {
        return false;
    };
    // An aligned 4 KiB buffer (covers 512-byte and 4 KiB logical blocks).
    let mut buf = vec![0u8; 8192];
    let at = buf.as_ptr().align_offset(4096);
    f.read_at(&mut buf[at..at + 4096], 0).is_ok()
}

/// The virtual size of the qcow2 image `path` (a base image: host input, not uploaded bytes).
fn virtual_size(path: &Path) -> Result<u64, HypervisorError> {
    let out = cmd::stdout(
        Command::new(crate::binaries::qemu_img())
            .args(["info", "--output=json", "-f", "qcow2"])
            .arg(path),
    )?;
    crate::import::parse_info(&out)
        .map(|i| i.virtual_size)
        .map_err(HypervisorError::Start)
}

/// Creates `disk`: a LUKS-encrypted qcow2 overlay on the plaintext `base`, unlocked by `key`
/// (read by `qemu-img` from an inherited pipe), `size` bytes large (default: the base's size;
/// never smaller, checked). Runs as root; the caller hands the file to the VM's uid.
pub(crate) fn create_encrypted_overlay(
    base: &Path,
    disk: &Path,
    key: &DiskKey,
    size: Option<u64>,
) -> Result<(), HypervisorError> {
    let size = match size {
        Some(size) => {
            let base_size = virtual_size(base)?;
            if size < base_size {
                return Err(HypervisorError::Start(format!(
                    "the OS disk size {size} bytes is smaller than the image's {base_size} bytes"
                )));
            }
            Some(size)
        }
        None => None,
    };
    let secret = DiskSecret::new(key)?;
    let mut cmd = Command::new(crate::binaries::qemu_img());
    cmd.args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(base)
        .args(secret.objects("--object"))
        .arg("-o")
        .arg(format!(
            "encrypt.format=luks,encrypt.key-secret={DISK_SECRET_ID},\
             encrypt.iter-time={LUKS_ITER_TIME_MS}"
        ))
        .arg(disk);
    // Larger than the base: the guest sees zeros past the base's end; what it writes there
    // lands in the overlay, encrypted like the rest.
    if let Some(size) = size {
        cmd.arg(size.to_string());
    }
    secret.hand(&mut cmd, None)?;
    cmd::run(&mut cmd)?;
    Ok(())
}

/// Creates the VM's vTPM state once, at create time, as the VM's uid: endorsement keys (RSA
/// and ECC) made persistent, the SHA-256 PCR bank active, NVRAM locked. The VM has its TPM
/// identity before it first boots; every later start resumes this state.
fn manufacture_vtpm(
    f: &VmFiles,
    sandbox: &VmSandbox,
    key: &VtpmKey,
) -> Result<(), HypervisorError> {
    make_private_dir(&f.tpm_state)?;
    sandbox.own(&f.tpm_state, 0o700)?;
    let mut cmd = Command::new("swtpm_setup");
    cmd.args(["--tpm2", "--tpmstate"])
        .arg(&f.tpm_state)
        .args(["--createek", "--lock-nvram", "--not-overwrite"])
        .args(["--pcr-banks", "sha256"])
        .args(["--keyfile-fd", SECRET_FD_ARG, "--cipher", "aes-256-cbc"])
        // swtpm_setup looks for per-user configuration under $HOME; the VM's uid has none.
        .env("HOME", &f.tpm_state)
        .env("XDG_CONFIG_HOME", &f.tpm_state);
    sandbox.drop_privileges(&mut cmd);
    hand_secret(&mut cmd, key.to_hex().as_bytes(), None)?;
    cmd::run(&mut cmd)?;
    // swtpm_setup writes its files 0640; the state is the VM's alone.
    for entry in
        fs::read_dir(&f.tpm_state).map_err(io(format!("list {}", f.tpm_state.display())))?
    {
        let path = entry.map_err(io("list the vTPM state"))?.path();
        sandbox.own(&path, 0o600)?;
    }
    Ok(())
}

/// Powers the VM down: ACPI power button, `grace` to comply, then `quit`, then SIGKILL.
/// swtpm exits when QEMU closes its control connection; it is killed if it lingers.
fn teardown(mut p: Procs, grace: Duration) {
    let clean = !grace.is_zero() && p.qmp.system_powerdown().is_ok() && p.qemu.wait_exit(grace);
    if !clean {
        let _ = p.qmp.quit();
        if !p.qemu.wait_exit(Duration::from_secs(5)) {
            p.qemu.kill();
            p.qemu.wait();
        }
    }
    if let Some(mut s) = p.swtpm
        && !s.wait_exit(Duration::from_secs(2))
    {
        s.kill();
        s.wait();
    }
}

fn kill(proc: Option<Proc>) {
    if let Some(mut p) = proc {
        p.kill();
        p.wait();
    }
}

fn make_private_dir(path: &Path) -> Result<(), HypervisorError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io(format!("create {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(io(format!("chmod {}", path.display())))
}

fn private_file(path: &Path) -> Result<File, HypervisorError> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("create {}", path.display())))
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

impl Hypervisor for QemuDriver {
    fn create(&self, spec: VmSpec) -> Result<(), HypervisorError> {
        spec.check_keys()?;
        let mut vms = lock(&self.vms);
        if vms.contains_key(&spec.id) {
            return Err(HypervisorError::Exists(spec.id));
        }
        let files = VmFiles::new(&self.config.root, &spec.id);
        if files.dir.exists() {
            return Err(HypervisorError::Exists(spec.id));
        }
        make_private_dir(&files.dir)?;
        let result = (|| {
            // The directory's owner is the record of the VM's uid (see sandbox.rs).
            let uid = self.config.sandbox.allocate_uid(&self.config.root)?;
            std::os::unix::fs::chown(&files.dir, Some(uid), Some(uid))
                .map_err(io(format!("chown {}", files.dir.display())))?;
            let sandbox = self.config.sandbox.for_vm(&spec.id, &files.dir)?;
            let base = fs::canonicalize(&spec.image)
                .map_err(io(format!("find the image {}", spec.image.display())))?;
            sandbox::check_world_readable(&base, "the base image")?;
            let key = spec
                .disk_key
                .as_ref()
                .ok_or_else(|| HypervisorError::MissingDiskKey(spec.id.clone()))?;
            match &spec.disk_source {
                // Restore: a private copy of the snapshot with a fresh LUKS master key.
                Some(source) => crate::snapshot::export_encrypted(source, &files.disk, key)?,
                None => create_encrypted_overlay(&base, &files.disk, key, spec.disk_size_bytes)?,
            }
            let template = if spec.secure_boot {
                self.config.vars_template.clone()
            } else {
                PathBuf::from(OVMF_VARS_PLAIN)
            };
            fs::copy(&template, &files.vars).map_err(io(format!("copy {}", template.display())))?;
            for f in [&files.disk, &files.vars] {
                sandbox.own(f, 0o600)?;
            }
            if spec.vtpm {
                let key = spec
                    .vtpm_key
                    .as_ref()
                    .ok_or_else(|| HypervisorError::MissingVtpmKey(spec.id.clone()))?;
                manufacture_vtpm(&files, &sandbox, key)?;
            }
            Ok::<VmSandbox, HypervisorError>(sandbox)
        })();
        let sandbox = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = fs::remove_dir_all(&files.dir);
                return Err(e);
            }
        };
        let vm = Vm {
            spec,
            files,
            sandbox,
            state: VmState::Created,
            procs: None,
            command_line: None,
            disk_lock: Arc::new(Mutex::new(())),
        };
        self.save(&vm);
        vms.insert(vm.spec.id.clone(), Arc::new(Mutex::new(vm)));
        Ok(())
    }

    fn start(&self, id: &VmId) -> Result<VmState, HypervisorError> {
        let vm = self.vm(id)?;
        let disk_lock = lock(&vm).disk_lock.clone();
        let _no_copy = lock(&disk_lock);
        let mut vm = lock(&vm);
        match vm.state {
            VmState::Created | VmState::Stopped | VmState::Failed { .. } => {}
            VmState::Starting | VmState::Running => {
                return Err(HypervisorError::WrongState {
                    id: id.clone(),
                    state: vm.state.clone(),
                    action: "start",
                    needs: "created, stopped or failed",
                });
            }
        }
        vm.state = VmState::Starting;
        let state = match self.boot(&mut vm) {
            Ok(s) => s,
            Err(e) => {
                vm.state = VmState::Failed {
                    reason: FailureReason::LaunchFailed {
                        error: e.to_string(),
                    },
                };
                return Err(e);
            }
        };
        if let VmState::Failed { reason } = &state {
            tracing::warn!(vm = %id, %reason, "VM failed to boot");
            vm.sandbox.remove_cgroup();
        }
        vm.state = state.clone();
        self.save(&vm);
        Ok(state)
    }

    fn stop(&self, id: &VmId) -> Result<(), HypervisorError> {
        let vm = self.vm(id)?;
        let mut vm = lock(&vm);
        let Some(procs) = vm.procs.take() else {
            return Err(HypervisorError::WrongState {
                id: id.clone(),
                state: vm.state.clone(),
                action: "stop",
                needs: "running",
            });
        };
        teardown(procs, self.config.powerdown_grace);
        for sock in [&vm.files.tpm_sock, &vm.files.qmp_sock] {
            let _ = fs::remove_file(sock);
        }
        vm.sandbox.remove_cgroup();
        vm.state = VmState::Stopped;
        self.save(&vm);
        Ok(())
    }

    fn state(&self, id: &VmId) -> Result<VmState, HypervisorError> {
        let vm = self.vm(id)?;
        let mut vm = lock(&vm);
        let exited = match vm.procs.as_mut() {
            Some(p) => p.qemu.exited(),
            None => None,
        };
        if let Some(exit) = exited {
            if let Some(p) = vm.procs.take() {
                kill(p.swtpm);
            }
            for sock in [&vm.files.tpm_sock, &vm.files.qmp_sock] {
                let _ = fs::remove_file(sock);
            }
            vm.sandbox.remove_cgroup();
            self.save(&vm);
            vm.state = if exit.success {
                VmState::Stopped
            } else {
                VmState::Failed {
                    reason: FailureReason::ProcessExited { status: exit.text },
                }
            };
        }
        Ok(vm.state.clone())
    }

    fn owner(&self, id: &VmId) -> Result<Option<(u32, u32)>, HypervisorError> {
        let vm = self.vm(id)?;
        let vm = lock(&vm);
        Ok(Some((vm.sandbox.uid, vm.sandbox.gid)))
    }

    fn list(&self) -> Vec<VmId> {
        lock(&self.vms).keys().cloned().collect()
    }

    fn supply_keys(
        &self,
        id: &VmId,
        vtpm_key: Option<VtpmKey>,
        disk_key: Option<DiskKey>,
    ) -> Result<(), HypervisorError> {
        let vm = self.vm(id)?;
        let mut vm = lock(&vm);
        if vm.spec.vtpm_key.is_none() {
            vm.spec.vtpm_key = vtpm_key;
        }
        if vm.spec.disk_key.is_none() {
            vm.spec.disk_key = disk_key;
        }
        Ok(())
    }

    fn snapshot(&self, id: &VmId, out: &Path) -> Result<(), HypervisorError> {
        use crate::snapshot::LiveCopy;
        let vm = self.vm(id)?;
        // Only brief holds of the VM's lock: the host's loop reads every VM's state each tick.
        let (disk_lock, key, disk, sandbox) = {
            let v = lock(&vm);
            let key = v
                .spec
                .disk_key
                .clone()
                .ok_or_else(|| HypervisorError::MissingDiskKey(id.clone()))?;
            (
                v.disk_lock.clone(),
                key,
                v.files.disk.clone(),
                v.sandbox.clone(),
            )
        };
        let _copying = lock(&disk_lock);
        let with_qmp = |f: &mut dyn FnMut(&mut QmpClient) -> Result<(), HypervisorError>| {
            let mut v = lock(&vm);
            match v.procs.as_mut() {
                Some(p) => f(&mut p.qmp),
                None => Err(HypervisorError::Start(
                    "the VM stopped while its disk was being copied".into(),
                )),
            }
        };
        if lock(&vm).procs.is_none() {
            // Stopped (nothing else starts it while the copy runs): copied offline.
            return crate::snapshot::copy_stopped(&disk, out, &key, &sandbox);
        }
        let mut size = 0;
        with_qmp(&mut |q| {
            size = crate::snapshot::live_disk_size(id, q)?;
            Ok(())
        })?;
        let copy = LiveCopy::prepare(out, &sandbox, &key, size)?;
        let mut outcome = with_qmp(&mut |q| copy.start(id, q));
        let deadline = Instant::now() + crate::snapshot::live_limit();
        while outcome.is_ok() {
            std::thread::sleep(Duration::from_millis(200));
            let mut done = None;
            if let Err(e) = with_qmp(&mut |q| {
                done = LiveCopy::poll(id, q)?;
                Ok(())
            }) {
                outcome = Err(e);
                break;
            }
            if let Some(result) = done {
                outcome = result;
                break;
            }
            if Instant::now() > deadline {
                outcome = Err(HypervisorError::Start(format!(
                    "the disk copy did not finish within {} s",
                    crate::snapshot::live_limit().as_secs()
                )));
            }
        }
        // Always: no job or node of this copy stays in the VM's QEMU.
        let _ = with_qmp(&mut |q| {
            LiveCopy::cleanup(q);
            Ok(())
        });
        match outcome {
            Ok(()) => copy.finish(),
            Err(e) => {
                copy.abandon();
                Err(e)
            }
        }
    }

    fn delete(&self, id: &VmId) -> Result<(), HypervisorError> {
        let vm = self.vm(id)?;
        // Stop it first: a live copy in progress ends at its next QMP exchange, so the wait
        // for the disk lock below is short.
        let disk_lock = {
            let mut guard = lock(&vm);
            if let Some(procs) = guard.procs.take() {
                teardown(procs, Duration::ZERO);
            }
            guard.disk_lock.clone()
        };
        let _no_copy = lock(&disk_lock);
        let mut guard = lock(&vm);
        if let Some(procs) = guard.procs.take() {
            teardown(procs, Duration::ZERO);
        }
        guard.sandbox.remove_cgroup();
        fs::remove_dir_all(&guard.files.dir)
            .map_err(io(format!("remove {}", guard.files.dir.display())))?;
        adopt::remove(&self.config.root, id);
        drop(guard);
        lock(&self.vms).remove(id);
        Ok(())
    }
}

impl Drop for QemuDriver {
    /// Stops the VMs it holds, unless `keep_running_on_drop` (a host agent's restart): then
    /// they run on, and the next driver adopts them.
    fn drop(&mut self) {
        if self.config.keep_running_on_drop {
            return;
        }
        for vm in lock(&self.vms).values() {
            let mut vm = lock(vm);
            if let Some(procs) = vm.procs.take() {
                teardown(procs, Duration::ZERO);
            }
            vm.sandbox.remove_cgroup();
            self.save(&vm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encrypted secret object holds the passphrase AES-256-CBC-encrypted (PKCS#7) under
    /// the master key, as QEMU decrypts it; every secret has its own master key and IV.
    #[test]
    fn the_disk_secret_is_the_passphrase_encrypted_under_a_fresh_key() {
        use aes::cipher::{BlockModeDecrypt as _, KeyIvInit as _, block_padding::Pkcs7};
        use base64::Engine as _;
        let key = DiskKey::from_bytes([9; 32]);
        let field = |object: &str, name: &str| -> Vec<u8> {
            let value = object
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap();
            base64::engine::general_purpose::STANDARD
                .decode(value)
                .unwrap()
        };
        let a = DiskSecret::new(&key).unwrap();
        let b = DiskSecret::new(&key).unwrap();
        assert_ne!(**a.master, **b.master);
        assert_ne!(field(&a.encrypted, "iv"), field(&b.encrypted, "iv"));
        let iv: [u8; 16] = field(&a.encrypted, "iv").try_into().unwrap();
        let mut data = field(&a.encrypted, "data");
        assert_eq!(data.len() % 16, 0);
        let plain = cbc::Decryptor::<aes::Aes256>::new(&(**a.master).into(), &iv.into())
            .decrypt_padded::<Pkcs7>(&mut data)
            .unwrap();
        assert_eq!(plain, key.passphrase().as_bytes());
        // The master key object reads the pipe; the key itself is in neither object.
        let objects = a.objects("--object").join(" ");
        assert!(!objects.contains(key.passphrase().as_str()));
        assert!(objects.contains(&format!("keyid={DISK_MASTER_ID}")));
    }

    /// A disk bypasses the host page cache only when every file of its chain can be read with
    /// O_DIRECT; anything unreadable that way (here: missing) falls back to writeback.
    #[test]
    fn disk_cache_options_fall_back_when_the_disk_cannot_be_opened_direct() {
        // Under target/: a real filesystem (the temp dir may be a tmpfs without O_DIRECT).
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
        fs::create_dir_all(&target).unwrap();
        let dir = tempfile::tempdir_in(&target).unwrap();
        let disk = dir.path().join("disk.qcow2");
        fs::write(&disk, vec![7u8; 65536]).unwrap();
        let missing = dir.path().join("gone.qcow2");
        assert!(!direct_io_works(&missing));
        assert_eq!(disk_cache_options(&missing, true), "cache=writeback");
        assert_eq!(disk_cache_options(&missing, false), "cache=writeback");
        // What the header says, for the disk an adopted VM starts again with.
        assert!(!qcow2_has_backing(&disk));
        assert!(!qcow2_has_backing(&missing));
        let mut overlay_header = b"QFI\xfb\0\0\0\x03".to_vec();
        overlay_header.extend_from_slice(&0x1c8u64.to_be_bytes());
        let overlay = dir.path().join("overlay.qcow2");
        fs::write(&overlay, &overlay_header).unwrap();
        assert!(qcow2_has_backing(&overlay));
        let mut standalone_header = b"QFI\xfb\0\0\0\x03".to_vec();
        standalone_header.extend_from_slice(&0u64.to_be_bytes());
        fs::write(&overlay, &standalone_header).unwrap();
        assert!(!qcow2_has_backing(&overlay));
        if direct_io_works(&disk) {
            // The overlay bypasses the cache, the shared base under it does not.
            assert_eq!(
                disk_cache_options(&disk, true),
                "cache=none,backing.cache.direct=off"
            );
            assert_eq!(disk_cache_options(&disk, false), "cache=none");
        }
    }

    /// QEMU starts with the malloc settings that keep an encrypted disk's bounce buffers on the
    /// heap between requests, and the driver sets no other variable for it (the disk key goes
    /// on a pipe, never in the environment): the largest buffer qcow2 bounces (32 clusters of
    /// 64 KiB, plus alignment) is under the mmap threshold, and a burst of 16 of them fits
    /// under the trim threshold.
    #[test]
    fn qemu_gets_the_malloc_settings_and_no_other_variable() {
        use std::ffi::OsStr;

        use crate::sandbox::{Cgroups, SandboxConfig};

        let tmp = tempfile::tempdir().unwrap();
        let uid = 400_000;
        let sandbox = SandboxConfig {
            uid_base: uid,
            uid_count: 1,
            cgroups: Cgroups::V2 {
                parent: tmp.path().join("cgroup"),
            },
        };
        let id = VmId::new("vm1").unwrap();
        let files = VmFiles::new(tmp.path(), &id);
        fs::create_dir(&files.dir).unwrap();
        std::os::unix::fs::chown(&files.dir, Some(uid), Some(uid)).unwrap();
        let vm = Vm {
            spec: VmSpec::trusted_launch(
                id.clone(),
                tmp.path().join("image.qcow2"),
                VtpmKey::from_bytes([1; 32]),
                DiskKey::from_bytes([2; 32]),
            ),
            sandbox: sandbox.for_vm(&id, &files.dir).unwrap(),
            files,
            state: VmState::Created,
            procs: None,
            command_line: None,
            disk_lock: Arc::new(Mutex::new(())),
        };
        let driver = QemuDriver {
            config: QemuConfig {
                root: tmp.path().to_owned(),
                ovmf_code: OVMF_CODE_SECBOOT.into(),
                vars_template: OVMF_VARS_SNAKEOIL.into(),
                accel: Accel::Tcg,
                boot_timeout: Duration::from_secs(1),
                powerdown_grace: Duration::from_secs(1),
                sandbox,
                netns: None,
                keep_running_on_drop: false,
            },
            vms: Mutex::new(BTreeMap::new()),
        };

        let secret = DiskSecret::new(vm.spec.disk_key.as_ref().unwrap()).unwrap();
        let cmd = driver.qemu_command(&vm, &secret);
        // The disk key is only on the command line encrypted, under the key on the pipe.
        let line = describe(&cmd);
        let passphrase = vm.spec.disk_key.as_ref().unwrap().passphrase();
        assert!(!line.contains(passphrase.as_str()));
        assert!(line.contains(&format!(
            "secret,id={DISK_MASTER_ID},format=raw,file=/dev/fd/{SECRET_FD}"
        )));
        assert!(line.contains(&format!(
            "secret,id={DISK_SECRET_ID},keyid={DISK_MASTER_ID},format=base64,iv="
        )));
        let envs: Vec<_> = cmd.get_envs().collect();
        assert_eq!(
            envs,
            [(
                OsStr::new("GLIBC_TUNABLES"),
                Some(OsStr::new(QEMU_MALLOC_TUNABLES))
            )]
        );
        let tunable = |name: &str| -> u64 {
            QEMU_MALLOC_TUNABLES
                .split(':')
                .find_map(|t| t.strip_prefix(name)?.strip_prefix('='))
                .unwrap()
                .parse()
                .unwrap()
        };
        let largest_bounce = 32 * 64 * 1024 + 4096;
        assert!(tunable("glibc.malloc.mmap_threshold") > largest_bounce);
        assert!(tunable("glibc.malloc.trim_threshold") >= 16 * largest_bounce);
    }

    /// Everything in the probe but the accelerator is what a VM needs: with TCG it starts.
    /// (Without the VMs' firmware a QEMU that ships no SeaBIOS exited at once, and every host
    /// looked as if KVM did not work.)
    #[test]
    fn the_probe_starts_with_tcg() {
        assert_eq!(stays_up("tcg", Duration::from_secs(5)), Ok(()));
    }

    /// A KVM device that is missing, or that is not KVM, makes the probe fall back to TCG with
    /// the warning naming why (QEMU's own complaint about the device, for the second).
    #[test]
    fn kvm_probe_falls_back_to_tcg_with_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("kvm");
        let (accel, warning) = Accel::probe_device(&missing, Duration::from_secs(5));
        assert_eq!(accel, Accel::Tcg);
        let warning = warning.unwrap();
        assert!(
            warning.contains(&format!(
                "KVM is not usable ({} does not exist)",
                missing.display()
            )) && warning.contains("falling back to TCG"),
            "{warning}"
        );

        let not_kvm = tmp.path().join("not-kvm");
        fs::write(&not_kvm, b"").unwrap();
        let (accel, warning) = Accel::probe_device(&not_kvm, Duration::from_secs(5));
        assert_eq!(accel, Accel::Tcg);
        let warning = warning.unwrap();
        assert!(
            warning.contains("probe QEMU exited")
                && warning.contains(&format!("kvm,device={}", not_kvm.display()))
                && warning.contains("falling back to TCG"),
            "{warning}"
        );
    }
}
