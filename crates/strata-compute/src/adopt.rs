//! Surviving a restart of the driver (and of the agent that holds it): VMs keep running, and a
//! new [`QemuDriver`](crate::qemu::QemuDriver) adopts them.
//!
//! ```text
//!  create/start/stop ──▶ ROOT/.state/<vm>.json (root's, 0600; the VM's uid cannot touch it):
//!                        the spec without keys, and while it runs QEMU's and swtpm's pid and
//!                        start time (/proc/PID/stat field 22: a reused pid has another)
//!  new driver ──▶ for each record whose VM directory exists:
//!      QEMU pid alive, same start time, /proc/PID/exe is the QEMU binary, every uid the VM's,
//!      QMP answers "running"                          ──▶ adopted Running (pidfd held)
//!      anything else                                  ──▶ its swtpm (verified the same way)
//!                                                         killed, sockets and cgroup removed,
//!                                                         adopted Stopped (disk, vTPM kept)
//! ```
//!
//! The keys are never on disk: an adopted VM gets them again with its next assignment
//! ([`Hypervisor::supply_keys`](crate::Hypervisor::supply_keys)) before it can be started
//! again. An adopted process is not this process's child: it is watched and signalled through
//! a pidfd opened before its identity was checked (so a pid reused in between is refused, and
//! signals never reach another process), and its exit status is unknown.

use std::fs;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::hypervisor::{HypervisorError, NicSpec, VmId, VmSpec, io};

/// The directory of the driver's own records under the VM root (a `VmId` cannot start with
/// `.`, so no VM directory can take its name).
pub(crate) const STATE_DIR: &str = ".state";

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exit {
    pub success: bool,
    pub text: String,
}

/// A VM process: started by this driver (a child), or adopted from an earlier one.
#[derive(Debug)]
pub(crate) enum Proc {
    Child(Child),
    Adopted { pid: u32, pidfd: OwnedFd },
}

impl Proc {
    pub fn id(&self) -> u32 {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Adopted { pid, .. } => *pid,
        }
    }

    /// `Some` once the process has exited.
    pub fn exited(&mut self) -> Option<Exit> {
        match self {
            Proc::Child(c) => c.try_wait().ok().flatten().map(|s| Exit {
                success: s.success(),
                text: s.to_string(),
            }),
            Proc::Adopted { pid, pidfd } => {
                if !pidfd_exited(pidfd) {
                    return None;
                }
                // Reap it if it happens to be our child (adopted by a driver in this process).
                let mut status = 0;
                #[expect(unsafe_code, reason = "waitpid(2) has no safe wrapper for a bare pid")]
                // SAFETY: waitpid with WNOHANG on a pid only reads into `status`.
                let reaped =
                    unsafe { libc::waitpid(*pid as libc::pid_t, &mut status, libc::WNOHANG) }
                        == *pid as libc::pid_t;
                Some(if reaped && libc::WIFEXITED(status) {
                    Exit {
                        success: libc::WEXITSTATUS(status) == 0,
                        text: format!("exit status: {}", libc::WEXITSTATUS(status)),
                    }
                } else {
                    Exit {
                        success: false,
                        text: "exited while adopted (its status is unknown to this driver)".into(),
                    }
                })
            }
        }
    }

    pub fn kill(&mut self) {
        match self {
            Proc::Child(c) => {
                let _ = c.kill();
            }
            Proc::Adopted { pidfd, .. } => pidfd_kill(pidfd),
        }
    }

    /// Waits until it exited.
    pub fn wait(&mut self) {
        match self {
            Proc::Child(c) => {
                let _ = c.wait();
            }
            Proc::Adopted { .. } => {
                while self.exited().is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Waits up to `within` for it to exit.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.exited().is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    #[expect(
        unsafe_code,
        reason = "pidfd_open(2) has no safe wrapper in std or libc"
    )]
    // SAFETY: the syscall takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    #[expect(
        unsafe_code,
        reason = "taking ownership of the descriptor the kernel returned"
    )]
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_exited(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    #[expect(unsafe_code, reason = "poll(2) has no safe wrapper in std")]
    // SAFETY: one valid pollfd, no timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLIN != 0
}

fn pidfd_kill(fd: &OwnedFd) {
    #[expect(unsafe_code, reason = "pidfd_send_signal(2) has no safe wrapper")]
    // SAFETY: signals exactly the process the descriptor refers to; no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// Field 22 of `/proc/PID/stat`: when the process started (clock ticks after boot).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Opens a pidfd on `pid` and checks, after opening it, that the process is the one recorded:
/// same start time, one of the expected executables (canonical paths), every uid `uid`.
/// `None`: not that process (or gone).
pub(crate) fn verify(pid: u32, start: u64, exes: &[PathBuf], uid: u32) -> Option<Proc> {
    let pidfd = pidfd_open(pid)?;
    if start_time(pid)? != start {
        return None;
    }
    let actual = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let actual = actual.to_string_lossy();
    // An upgraded binary shows as "PATH (deleted)"; it is still that program.
    let actual = actual.strip_suffix(" (deleted)").unwrap_or(&actual);
    if !exes.iter().any(|e| Path::new(actual) == e) {
        return None;
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uids: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .filter_map(|u| u.parse().ok())
        .collect();
    if uids.len() != 4 || uids.iter().any(|u| *u != uid) {
        return None;
    }
    if pidfd_exited(&pidfd) {
        return None;
    }
    Some(Proc::Adopted { pid, pidfd })
}

/// A VM's record: the spec without keys, and the running processes.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub spec: VmSpec,
    /// (pid, start time) of QEMU and swtpm while the VM runs.
    pub qemu: Option<(u32, u64)>,
    pub swtpm: Option<(u32, u64)>,
    pub command_line: Option<String>,
}

fn record_path(root: &Path, id: &VmId) -> PathBuf {
    root.join(STATE_DIR).join(format!("{id}.json"))
}

/// Writes the VM's record (root's, 0600, replaced atomically). Keys are never written.
pub(crate) fn save(
    root: &Path,
    spec: &VmSpec,
    procs: Option<(u32, Option<u32>)>,
    command_line: Option<&str>,
) -> Result<(), HypervisorError> {
    let dir = root.join(STATE_DIR);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io(format!("create {}", dir.display())))?;
    let with_start = |pid: u32| start_time(pid).map(|s| json!([pid, s]));
    let doc = json!({
        "image": spec.image,
        "vcpus": spec.vcpus,
        "memoryMib": spec.memory_mib,
        "secureBoot": spec.secure_boot,
        "vtpm": spec.vtpm,
        "diskSizeBytes": spec.disk_size_bytes,
        "nics": spec.nics.iter().map(|n| json!({ "tap": n.tap, "mac": n.mac_text(),
            "address": n.address.map(|a| json!({ "ip": a.ip.to_string(), "prefixLen": a.prefix_len, "gateway": a.gateway.to_string() })) })).collect::<Vec<_>>(),
        "qemu": procs.and_then(|(q, _)| with_start(q)),
        "swtpm": procs.and_then(|(_, s)| s).and_then(with_start),
        "commandLine": command_line,
    });
    let path = record_path(root, &spec.id);
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(format!("create {}", tmp.display())))?;
    std::io::Write::write_all(&mut f, doc.to_string().as_bytes())
        .map_err(io(format!("write {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(io(format!("write {}", path.display())))
}

pub(crate) fn remove(root: &Path, id: &VmId) {
    let _ = fs::remove_file(record_path(root, id));
}

/// Every record under `root` (unreadable ones are logged and skipped).
pub(crate) fn load_all(root: &Path) -> Vec<Record> {
    let dir = root.join(STATE_DIR);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    // Records are root's: one anybody else could have written is not trusted.
    if fs::metadata(&dir).is_ok_and(|m| m.uid() != 0 && m.uid() != nix_uid()) {
        tracing::warn!(dir = %dir.display(), "the driver's record directory has another owner: not adopting");
        return Vec::new();
    }
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json").and_then(|n| VmId::new(n).ok()) else {
            continue;
        };
        match fs::read_to_string(e.path())
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| parse(id.clone(), &v))
        {
            Some(r) => out.push(r),
            None => tracing::warn!(vm = %id, "unreadable VM record: not adopted"),
        }
    }
    out
}

fn nix_uid() -> u32 {
    fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

fn parse(id: VmId, v: &Value) -> Option<Record> {
    let pair = |k: &str| -> Option<(u32, u64)> {
        let a = v.get(k)?.as_array()?;
        Some((
            u32::try_from(a.first()?.as_u64()?).ok()?,
            a.get(1)?.as_u64()?,
        ))
    };
    let mut nics = Vec::new();
    for n in v.get("nics")?.as_array()? {
        let mac: Vec<u8> = n
            .get("mac")?
            .as_str()?
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).ok())
            .collect::<Option<_>>()?;
        let mut nic = NicSpec::new(n.get("tap")?.as_str()?, mac.try_into().ok()?).ok()?;
        // The guest's address (SMBIOS OEM string) for the adopted VM's next start.
        if let Some(a) = n.get("address").filter(|a| !a.is_null()) {
            nic = nic.with_address(crate::hypervisor::GuestAddress {
                ip: a.get("ip")?.as_str()?.parse().ok()?,
                prefix_len: u8::try_from(a.get("prefixLen")?.as_u64()?).ok()?,
                gateway: a.get("gateway")?.as_str()?.parse().ok()?,
            });
        }
        nics.push(nic);
    }
    Some(Record {
        spec: VmSpec {
            id,
            image: PathBuf::from(v.get("image")?.as_str()?),
            vcpus: u32::try_from(v.get("vcpus")?.as_u64()?).ok()?,
            memory_mib: u32::try_from(v.get("memoryMib")?.as_u64()?).ok()?,
            secure_boot: v.get("secureBoot")?.as_bool()?,
            vtpm: v.get("vtpm")?.as_bool()?,
            vtpm_key: None,
            disk_key: None,
            disk_size_bytes: v.get("diskSizeBytes").and_then(Value::as_u64),
            disk_source: None,
            nics,
        },
        qemu: pair("qemu"),
        swtpm: pair("swtpm"),
        command_line: v
            .get("commandLine")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_and_identity() {
        let me = std::process::id();
        let start = start_time(me).unwrap();
        let exe = fs::canonicalize("/proc/self/exe").unwrap();
        let uid = nix_uid();
        assert!(verify(me, start, std::slice::from_ref(&exe), uid).is_some());
        assert!(
            verify(me, start + 1, std::slice::from_ref(&exe), uid).is_none(),
            "another start time"
        );
        assert!(
            verify(me, start, &[PathBuf::from("/bin/true")], uid).is_none(),
            "another binary"
        );
        assert!(
            verify(me, start, std::slice::from_ref(&exe), uid + 1).is_none(),
            "another uid"
        );
    }

    #[test]
    fn records_round_trip_without_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = VmSpec::trusted_launch(
            VmId::new("vm-a").unwrap(),
            PathBuf::from("/images/tiny/disk.qcow2"),
            crate::VtpmKey::from_bytes([7; 32]),
            crate::DiskKey::from_bytes([8; 32]),
        );
        spec.disk_size_bytes = Some(1 << 30);
        spec.nics = vec![
            NicSpec::new("tap0", [2, 0, 0, 0, 0, 1])
                .unwrap()
                .with_address(crate::hypervisor::GuestAddress {
                    ip: "10.0.0.4".parse().unwrap(),
                    prefix_len: 24,
                    gateway: "10.0.0.1".parse().unwrap(),
                }),
        ];
        save(
            tmp.path(),
            &spec,
            Some((std::process::id(), None)),
            Some("qemu …"),
        )
        .unwrap();
        let text = fs::read_to_string(tmp.path().join(".state/vm-a.json")).unwrap();
        assert!(!text.contains("0707") && !text.contains("0808"), "{text}");
        let all = load_all(tmp.path());
        assert_eq!(all.len(), 1);
        let r = &all[0];
        assert_eq!(r.spec.disk_size_bytes, Some(1 << 30));
        assert_eq!(r.spec.nics, spec.nics);
        assert!(r.spec.disk_key.is_none() && r.spec.vtpm_key.is_none());
        assert_eq!(r.qemu.map(|q| q.0), Some(std::process::id()));
        remove(tmp.path(), &spec.id);
        assert!(load_all(tmp.path()).is_empty());
    }
}
