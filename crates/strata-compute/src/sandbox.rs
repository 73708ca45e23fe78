//! The per-VM sandbox, written as the privilege-drop sequence it is.
//!
//! Every VM gets, before any of its processes runs:
//!
//! 1. **Its own identity**: a uid and gid of its own from a range no login user has
//!    ([`SandboxConfig::uid_base`], default 4,000,000,000). The owner of the VM's directory is the
//!    record of which VM holds which uid, so allocation survives a driver restart.
//! 2. **Its own files**: the VM directory (0700) and every file in it (0600: disk overlay,
//!    firmware variables, serial log) and the vTPM state directory (0700) belong to that uid. No
//!    other VM's uid can open them. Shared between VMs are only read-only inputs: the firmware
//!    code and the base image the disk overlay is backed by (world-readable, checked).
//! 3. **Its own cgroup** with limits: CPU bandwidth = its vCPUs, memory = its RAM plus a fixed
//!    overhead, a cap on tasks. cgroup v2 (`cpu.max`, `memory.max`, `pids.max`) when the host
//!    runs the unified hierarchy with those controllers; otherwise the v1 `cpu`, `memory` and
//!    `pids` hierarchies, with a warning.
//!
//! Then each process (swtpm, QEMU) is started by [`VmSandbox::confine`], which, in the child
//! between `fork` and `exec`: drops every supplementary group, sets the VM's gid, sets the VM's
//! uid (std's `Command::gid`/`uid`, in that order), and moves itself into the VM's cgroup (a
//! write to the `cgroup.procs` files, opened by the driver beforehand so the write is checked
//! against the driver's credentials), so the process runs confined from its first instruction.
//! QEMU then enters its own seccomp filter (`-sandbox on,…`, see `qemu.rs`).
//!
//! Not yet done (noted for the host-hardening work): a mount namespace and pivot_root per VM
//! (Firecracker's jailer), AppArmor/SELinux labels (libvirt's sVirt).

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::hypervisor::{HypervisorError, VmId, io};

/// The first uid (and gid) handed to VMs. Above every range that Debian, systemd (dynamic
/// users, containers: below 2^31) and LDAP/AD setups conventionally use.
pub const DEFAULT_UID_BASE: u32 = 4_000_000_000;
/// How many VMs one host can hold at once.
pub const DEFAULT_UID_COUNT: u32 = 65_536;
/// Memory a VM's processes may use beyond the guest's RAM (QEMU itself, device state, swtpm).
pub const MEMORY_OVERHEAD_MIB: u64 = 256;
/// Tasks (threads) a VM's cgroup may hold: vCPU threads, QEMU's workers, swtpm.
pub const PIDS_MAX: u32 = 512;
/// The CPU bandwidth period: a VM with N vCPUs may use N × this per period.
const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup hierarchy the host offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// The unified hierarchy: VM cgroups are created under `parent`.
    V2 { parent: PathBuf },
    /// Legacy per-controller hierarchies (hybrid hosts): VM cgroups are created under
    /// `<mount>/strata` in each of the `cpu`, `memory` and `pids` hierarchies.
    V1 { mounts: [PathBuf; 3] },
}

const V1_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

impl Cgroups {
    /// Finds the hierarchy the host runs under `/sys/fs/cgroup`. v2 if its root offers the
    /// `cpu`, `memory` and `pids` controllers; else v1 if those three are mounted; else an
    /// error saying what is missing.
    pub fn detect() -> Result<Self, HypervisorError> {
        Self::detect_at(Path::new("/sys/fs/cgroup"))
    }

    fn detect_at(root: &Path) -> Result<Self, HypervisorError> {
        let v2 = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let offered: Vec<&str> = v2.split_whitespace().collect();
        if V1_CONTROLLERS.iter().all(|c| offered.contains(c)) {
            return Ok(Self::V2 {
                parent: root.join("strata.slice"),
            });
        }
        let mounts = V1_CONTROLLERS.map(|c| root.join(c));
        if mounts.iter().all(|m| m.join("cgroup.procs").exists()) {
            tracing::warn!(
                "this host runs cgroup v1 (hybrid hierarchy): VM limits use the legacy cpu, memory \
                 and pids controllers; boot with systemd.unified_cgroup_hierarchy=1 for cgroup v2"
            );
            return Ok(Self::V1 { mounts });
        }
        Err(HypervisorError::Start(format!(
            "no usable cgroup hierarchy under {}: need cgroup v2 with the cpu, memory and pids \
             controllers, or those three v1 hierarchies mounted",
            root.display()
        )))
    }

    /// The directories of one VM's cgroup (one per hierarchy).
    fn vm_dirs(&self, id: &VmId) -> Vec<PathBuf> {
        let leaf = format!("vm-{id}");
        match self {
            Self::V2 { parent } => vec![parent.join(leaf)],
            Self::V1 { mounts } => mounts
                .iter()
                .map(|m| m.join("strata").join(&leaf))
                .collect(),
        }
    }
}

/// Host-wide sandbox settings.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub uid_base: u32,
    pub uid_count: u32,
    pub cgroups: Cgroups,
}

impl SandboxConfig {
    /// The default uid range and the host's cgroup hierarchy.
    pub fn detect() -> Result<Self, HypervisorError> {
        Ok(Self {
            uid_base: DEFAULT_UID_BASE,
            uid_count: DEFAULT_UID_COUNT,
            cgroups: Cgroups::detect()?,
        })
    }

    fn uids(&self) -> std::ops::Range<u32> {
        self.uid_base..self.uid_base.saturating_add(self.uid_count)
    }

    /// Picks the lowest uid in the range that owns none of the VM directories under `root`.
    pub(crate) fn allocate_uid(&self, root: &Path) -> Result<u32, HypervisorError> {
        let mut taken = Vec::new();
        for entry in fs::read_dir(root).map_err(io(format!("list {}", root.display())))? {
            let entry = entry.map_err(io(format!("list {}", root.display())))?;
            if let Ok(meta) = entry.metadata() {
                taken.push(meta.uid());
            }
        }
        self.uids().find(|uid| !taken.contains(uid)).ok_or_else(|| {
            HypervisorError::Start(format!(
                "all {} VM uids ({}..) are in use on this host",
                self.uid_count, self.uid_base
            ))
        })
    }

    /// The sandbox of an existing VM directory (its owner is its uid).
    pub(crate) fn for_vm(&self, id: &VmId, dir: &Path) -> Result<VmSandbox, HypervisorError> {
        let meta = fs::metadata(dir).map_err(io(format!("stat {}", dir.display())))?;
        if !self.uids().contains(&meta.uid()) {
            return Err(HypervisorError::Start(format!(
                "{} is owned by uid {}, not by a VM uid ({}..{}); refusing to run a VM as it",
                dir.display(),
                meta.uid(),
                self.uid_base,
                self.uid_base.saturating_add(self.uid_count)
            )));
        }
        Ok(VmSandbox {
            uid: meta.uid(),
            gid: meta.uid(),
            cgroup_dirs: self.cgroups.vm_dirs(id),
            v2: matches!(self.cgroups, Cgroups::V2 { .. }),
        })
    }
}

/// One VM's identity and cgroup.
#[derive(Debug, Clone)]
pub struct VmSandbox {
    pub uid: u32,
    pub gid: u32,
    cgroup_dirs: Vec<PathBuf>,
    v2: bool,
}

/// The resources a VM's cgroup grants.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Extra memory for the accelerator (TCG's translation cache).
    pub accel_overhead_mib: u64,
}

impl Limits {
    fn memory_bytes(&self) -> u64 {
        (u64::from(self.memory_mib) + MEMORY_OVERHEAD_MIB + self.accel_overhead_mib) << 20
    }

    fn cpu_quota_us(&self) -> u64 {
        u64::from(self.vcpus.max(1)) * CPU_PERIOD_US
    }
}

impl VmSandbox {
    /// Step 2: hands `path` (a file or directory of the VM) to the VM's uid with `mode`.
    pub(crate) fn own(&self, path: &Path, mode: u32) -> Result<(), HypervisorError> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(io(format!("chown {}", path.display())))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io(format!("chmod {}", path.display())))
    }

    /// Step 3: creates the VM's cgroup (and the parents) and writes its limits.
    pub(crate) fn create_cgroup(&self, limits: Limits) -> Result<(), HypervisorError> {
        for dir in &self.cgroup_dirs {
            if self.v2
                && let Some(parent) = dir.parent()
            {
                fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
                // Hand the controllers down to the VM cgroups (parent of the parent first).
                for p in [parent.parent(), Some(parent)].into_iter().flatten() {
                    write(&p.join("cgroup.subtree_control"), "+cpu +memory +pids")?;
                }
            }
            fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        }
        let memory = limits.memory_bytes().to_string();
        let quota = limits.cpu_quota_us();
        if self.v2 {
            let dir = self.first_dir()?;
            write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            write(&dir.join("memory.max"), &memory)?;
            write(&dir.join("memory.swap.max"), "0").or_else(|e| {
                // Hosts without swap accounting have no such file; nothing to limit then.
                tracing::debug!(error = %e, "memory.swap.max not set");
                Ok::<(), HypervisorError>(())
            })?;
            write(&dir.join("pids.max"), &PIDS_MAX.to_string())?;
        } else {
            let [cpu, mem, pids] = self.v1_dirs()?;
            write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
            write(&mem.join("memory.limit_in_bytes"), &memory)?;
            write(&pids.join("pids.max"), &PIDS_MAX.to_string())?;
        }
        Ok(())
    }

    fn first_dir(&self) -> Result<&PathBuf, HypervisorError> {
        self.cgroup_dirs
            .first()
            .ok_or_else(|| HypervisorError::Start("the VM has no cgroup".to_owned()))
    }

    fn v1_dirs(&self) -> Result<[&PathBuf; 3], HypervisorError> {
        match self.cgroup_dirs.as_slice() {
            [cpu, mem, pids] => Ok([cpu, mem, pids]),
            _ => Err(HypervisorError::Start(
                "the VM's v1 cgroups are incomplete".to_owned(),
            )),
        }
    }

    /// The VM's cgroup directories (one per hierarchy).
    pub fn cgroup_dirs(&self) -> &[PathBuf] {
        &self.cgroup_dirs
    }

    /// Step 4a, for one-shot set-up tools (vTPM manufacturing): `cmd` runs as the VM's uid and
    /// gid with no supplementary groups (std, in the child, as root: `setgroups(0, [])` because
    /// no groups were given, then `setgid`, then `setuid`).
    pub(crate) fn drop_privileges(&self, cmd: &mut Command) {
        cmd.gid(self.gid).uid(self.uid);
    }

    /// Step 4b, for the VM's own processes: as [`drop_privileges`](Self::drop_privileges), and
    /// inside the VM's cgroup before `exec`.
    pub(crate) fn confine(&self, cmd: &mut Command) -> Result<(), HypervisorError> {
        // Opened here, by the driver: the kernel checks a cgroup migration against the
        // credentials the file was opened with, so the child may write after dropping root.
        let procs: Vec<File> = self
            .cgroup_dirs
            .iter()
            .map(|d| {
                let path = d.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(format!("open {}", path.display())))
            })
            .collect::<Result<_, _>>()?;
        self.drop_privileges(cmd);
        #[expect(
            unsafe_code,
            reason = "joining the cgroup must happen in the child before exec"
        )]
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe work is allowed. It only calls write(2) on descriptors opened
        // above (`&File`'s `write_all` neither allocates nor locks) and builds an `io::Error`
        // from errno on failure, which std's spawn reports to the parent.
        unsafe {
            cmd.pre_exec(move || {
                for mut f in &procs {
                    // "0" = the writing process itself.
                    f.write_all(b"0")?;
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// Removes the VM's cgroup once its processes are gone.
    pub(crate) fn remove_cgroup(&self) {
        for dir in &self.cgroup_dirs {
            if dir.exists()
                && let Err(e) = fs::remove_dir(dir)
            {
                tracing::warn!(cgroup = %dir.display(), error = %e, "could not remove the VM's cgroup");
            }
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), HypervisorError> {
    fs::write(path, value).map_err(io(format!("write {value:?} to {}", path.display())))
}

/// Checks that a uid other than root can reach and read `path` (every ancestor directory
/// searchable by others, the file readable by others): VM processes open shared read-only
/// inputs (the base image) as their own uid.
pub(crate) fn check_world_readable(path: &Path, what: &str) -> Result<(), HypervisorError> {
    let meta = fs::metadata(path).map_err(io(format!("stat {}", path.display())))?;
    if meta.mode() & 0o004 == 0 {
        return Err(HypervisorError::Start(format!(
            "{what} {} is not readable by VM users: shared read-only inputs must be \
             world-readable (chmod 0644)",
            path.display()
        )));
    }
    match path.parent() {
        Some(dir) => check_searchable(dir, what),
        None => Ok(()),
    }
}

/// Checks that a uid other than root can pass through `dir` and each of its ancestors.
pub(crate) fn check_searchable(dir: &Path, what: &str) -> Result<(), HypervisorError> {
    for d in dir.ancestors() {
        if d.as_os_str().is_empty() {
            continue;
        }
        let meta = fs::metadata(d).map_err(io(format!("stat {}", d.display())))?;
        if meta.mode() & 0o001 == 0 {
            return Err(HypervisorError::Start(format!(
                "{what} {} is not reachable by VM users: directory {} must be searchable by \
                 others (chmod o+x)",
                dir.display(),
                d.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_v2_when_the_root_offers_the_controllers() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
        .unwrap();
        assert_eq!(
            Cgroups::detect_at(tmp.path()).unwrap(),
            Cgroups::V2 {
                parent: tmp.path().join("strata.slice")
            }
        );
    }

    #[test]
    fn detects_v1_and_refuses_neither() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Cgroups::detect_at(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("no usable cgroup hierarchy"), "{err}");
        for c in V1_CONTROLLERS {
            fs::create_dir_all(tmp.path().join(c)).unwrap();
            fs::write(tmp.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        assert!(matches!(
            Cgroups::detect_at(tmp.path()).unwrap(),
            Cgroups::V1 { .. }
        ));
    }

    #[test]
    fn limits_scale_with_the_vm() {
        let l = Limits {
            vcpus: 2,
            memory_mib: 512,
            accel_overhead_mib: 128,
        };
        assert_eq!(l.cpu_quota_us(), 200_000);
        assert_eq!(l.memory_bytes(), (512 + 256 + 128) << 20);
    }

    #[test]
    fn v2_limits_are_written_where_the_kernel_reads_them() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().join("strata.slice");
        let sandbox = VmSandbox {
            uid: DEFAULT_UID_BASE,
            gid: DEFAULT_UID_BASE,
            cgroup_dirs: vec![parent.join("vm-a")],
            v2: true,
        };
        sandbox
            .create_cgroup(Limits {
                vcpus: 1,
                memory_mib: 512,
                accel_overhead_mib: 0,
            })
            .unwrap();
        let read = |f: &str| fs::read_to_string(parent.join("vm-a").join(f)).unwrap();
        assert_eq!(read("cpu.max"), "100000 100000");
        assert_eq!(read("memory.max"), (768u64 << 20).to_string());
        assert_eq!(read("pids.max"), "512");
        assert_eq!(
            fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids"
        );
    }
}
