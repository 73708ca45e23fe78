//! Real boots: QEMU + OVMF secure boot (snakeoil keys) + a per-VM swtpm, from the tiny image.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use strata_compute::image;
use strata_compute::qemu::{QemuConfig, QemuDriver};
use strata_compute::sandbox::VmSandbox;
use strata_compute::{DiskKey, FailureReason, Hypervisor, VmId, VmSpec, VmState, VtpmKey};

use crate::support::{self, VM_PROGRAMS};

/// A driver whose VMs live under `root`, with its own block of 16 VM uids (`slot`): tests run
/// in parallel, each with its own driver, and must not hand out the same uid twice.
fn driver(root: &Path, slot: u32) -> QemuDriver {
    support::require(VM_PROGRAMS);
    // VM processes run as their own uids: they must be able to pass through the test's
    // directory (and read the altered images the tests put there).
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut config = QemuConfig::snakeoil(root.join("vms")).unwrap();
    config.sandbox.uid_base = strata_compute::sandbox::DEFAULT_UID_BASE + 16 * slot;
    config.sandbox.uid_count = 16;
    QemuDriver::new(config).unwrap()
}

/// `(uid, gid, supplementary groups)` of a process, from `/proc/<pid>/status`.
fn credentials(pid: u32) -> (Vec<u32>, Vec<u32>, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .trim()
            .to_owned()
    };
    let ids =
        |v: String| -> Vec<u32> { v.split_whitespace().map(|x| x.parse().unwrap()).collect() };
    (ids(field("Uid:")), ids(field("Gid:")), field("Groups:"))
}

/// Every process on the host running as `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Uid:"))
                        .and_then(|v| v.split_whitespace().next().map(|u| u == uid.to_string()))
                        .unwrap_or(false)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Starts swtpm on the state in `dir` with the hex `key` (on stdin) and reports whether it
/// loaded the state (still running after a moment) or the tail of its log.
fn swtpm_loads(dir: &Path, key: &str) -> Result<(), String> {
    use std::io::Write as _;
    let log = dir.join("check.log");
    let _ = std::fs::remove_file(&log);
    let mut child = std::process::Command::new("swtpm")
        .args([
            "socket",
            "--tpm2",
            "--flags",
            "not-need-init,startup-clear",
            "--tpmstate",
        ])
        .arg(format!("dir={}", dir.display()))
        .arg("--ctrl")
        .arg(format!(
            "type=unixio,path={}",
            dir.join("ctrl.sock").display()
        ))
        .args(["--key", "fd=0,format=hex,mode=aes-256-cbc", "--log"])
        .arg(format!("file={},level=1", log.display()))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(key.as_bytes())
        .unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!(
                "{status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    Ok(())
}

/// Opens `path` for reading as `uid`/`gid` (no supplementary groups) in a child process;
/// `Ok` or the child's error output.
fn open_as(uid: u32, gid: u32, path: &Path) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["of=/dev/null", "bs=512", "count=1", "status=none"])
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Connects to the unix socket `path` as `uid`/`gid` (no supplementary groups) in a child
/// process; `Ok` or the child's error output.
fn connect_as(uid: u32, gid: u32, path: &Path) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])",
        ])
        .arg(path)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.lines().last().unwrap_or("").to_owned())
    }
}

/// Nothing of a VM that is not running is left behind: no process of its uid, no QMP or
/// swtpm socket in its directory, no cgroup.
fn assert_no_leftovers(dir: &Path, sandbox: &VmSandbox) {
    assert!(dir.is_dir(), "{}", dir.display());
    for sock in ["qmp.sock", "swtpm.sock"] {
        assert!(!dir.join(sock).exists(), "stray {sock}");
    }
    assert_eq!(
        processes_of(sandbox.uid),
        Vec::<u32>::new(),
        "stray VM processes"
    );
    for d in sandbox.cgroup_dirs() {
        assert!(!d.exists(), "stray cgroup {}", d.display());
    }
}

/// Boots `image` as a trusted-launch VM and expects the firmware to refuse it.
fn expect_secure_boot_violation(name: &str, image: PathBuf, hv: &QemuDriver) {
    let id = VmId::new(name).unwrap();
    hv.create(VmSpec::trusted_launch(
        id.clone(),
        image,
        VtpmKey::generate().unwrap(),
        DiskKey::generate().unwrap(),
    ))
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
    // The refused VM left nothing running or listening before it is deleted.
    let dir = hv.vm_dir(&id).unwrap();
    assert_no_leftovers(&dir, &hv.sandbox(&id).unwrap());
    hv.delete(&id).unwrap();
    assert!(!dir.exists());
}

/// One boot checks the whole trusted launch: secure boot, vTPM, sandbox, the encrypted disk
/// (the guest's marker is not in the disk file, read raw, but is there decrypted; a copy does
/// not open with another key), no key in any VM process's argv or environment or in any of
/// the VM's files, and a clean stop.
#[test]
fn trusted_launch_boots_tiny_image() {
    let img = support::tiny_image();
    let tmp = tempfile::tempdir().unwrap();
    let hv = driver(tmp.path(), 1);
    let id = VmId::new("tiny").unwrap();
    let (vtpm_key, disk_key) = (support::random_key(), support::random_key());
    hv.create(VmSpec::trusted_launch(
        id.clone(),
        img.disk.clone(),
        VtpmKey::from_bytes(vtpm_key),
        DiskKey::from_bytes(disk_key),
    ))
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
    let marker = disk_marker(&serial, image::MARKER_LINE)
        .unwrap_or_else(|| panic!("the guest wrote no disk marker:\n{serial}"));
    assert!(
        marker.starts_with("STRATA-DISK-MARKER-") && marker.len() == 43,
        "{marker}"
    );
    // The guest printed its boot evidence (the agent lifts it out and replays it: strata-agent's
    // `qemu_boot_through_the_vm_loop`) before it said it was ready.
    let lines: Vec<&str> = serial.lines().map(str::trim_end).collect();
    let at = |l: &str| lines.iter().position(|x| *x == l);
    let (begin, end, ready) = (
        at(strata_compute::EVENTLOG_BEGIN),
        at(strata_compute::EVENTLOG_END),
        at(strata_compute::READY_MARKER),
    );
    assert!(
        matches!((begin, end, ready), (Some(b), Some(e), Some(r)) if b + 1 < e && e < r),
        "no boot evidence block before ready:\n{serial}"
    );
    assert!(
        serial.contains(&format!("{}7 ", strata_compute::PCR_LINE)),
        "no PCR 7 line:\n{serial}"
    );

    // The keys went to QEMU and swtpm through inherited pipes only (for QEMU: the disk key
    // as an encrypted secret object, its key on the pipe): no key, in any encoding, in a VM
    // process's command line or environment, or in any file of the VM.
    let command_line = hv.command_line(&id).unwrap().unwrap();
    assert!(
        command_line.contains("-object secret,id=disk0-master,format=raw,file=/dev/fd/3")
            && command_line
                .contains("-object secret,id=disk0-key,keyid=disk0-master,format=base64,iv=")
            && command_line.contains("encrypt.key-secret=disk0-key"),
        "{command_line}"
    );
    let secrets: Vec<(String, Vec<u8>)> = [("disk", &disk_key), ("vTPM", &vtpm_key)]
        .into_iter()
        .flat_map(|(which, key)| {
            support::leak_forms(key)
                .into_iter()
                .map(move |(form, bytes)| (format!("{which} key ({form})"), bytes))
        })
        .collect();
    let pids = hv.pids(&id).unwrap();
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    for pid in &pids {
        for what in ["cmdline", "environ"] {
            let path = format!("/proc/{pid}/{what}");
            places.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    for file in support::files_under(&dir) {
        places.push((file.display().to_string(), std::fs::read(&file).unwrap()));
    }
    assert!(
        places.len() > 8,
        "{:?}",
        places.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
    for (place, bytes) in &places {
        for (secret, form) in &secrets {
            assert!(
                !support::contains(bytes, form),
                "the {secret} is in {place}"
            );
        }
    }

    // Private files: the VM directory and vTPM state are 0700, the rest 0600, all the VM's.
    let sandbox = hv.sandbox(&id).unwrap();
    let meta = |p: &Path| std::fs::metadata(p).unwrap();
    assert_eq!(meta(&dir).permissions().mode() & 0o777, 0o700);
    assert_eq!(meta(&dir.join("tpm")).permissions().mode() & 0o777, 0o700);
    for f in [
        "disk.qcow2",
        "OVMF_VARS.fd",
        "serial.log",
        "tpm/tpm2-00.permall",
    ] {
        let m = meta(&dir.join(f));
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{f}");
        assert_eq!((m.uid(), m.gid()), (sandbox.uid, sandbox.gid), "{f}");
    }

    // The sandbox: QEMU and swtpm run as the VM's uid/gid (real, effective, saved, fs), with
    // no supplementary groups, in the VM's cgroup; QEMU's seccomp filter is on.
    assert_eq!(pids.len(), 2, "QEMU and swtpm");
    for pid in &pids {
        let (uids, gids, groups) = credentials(*pid);
        assert_eq!(uids, vec![sandbox.uid; 4], "pid {pid}");
        assert_eq!(gids, vec![sandbox.gid; 4], "pid {pid}");
        assert_eq!(groups, "", "pid {pid} keeps supplementary groups");
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        for dir in sandbox.cgroup_dirs() {
            let name = dir.file_name().unwrap().to_str().unwrap();
            assert!(
                cgroups.contains(&format!("/{name}\n")),
                "pid {pid} not in {}:\n{cgroups}",
                dir.display()
            );
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
            assert!(
                procs.lines().any(|l| l == pid.to_string()),
                "{}",
                dir.display()
            );
        }
    }
    let qemu_status = std::fs::read_to_string(format!("/proc/{}/status", pids[0])).unwrap();
    assert!(
        qemu_status.contains("Seccomp:\t2"),
        "QEMU runs without its seccomp filter"
    );
    assert!(qemu_status.contains("NoNewPrivs:\t1"));
    let memory_limit = sandbox
        .cgroup_dirs()
        .iter()
        .find_map(|d| {
            std::fs::read_to_string(d.join("memory.max"))
                .or_else(|_| std::fs::read_to_string(d.join("memory.limit_in_bytes")))
                .ok()
        })
        .unwrap();
    let memory_limit: u64 = memory_limit.trim().parse().unwrap();
    assert!(
        (512 << 20..=1024 << 20).contains(&memory_limit),
        "memory limit {memory_limit}"
    );

    // The VM's sockets exist only while it runs, so the cross-uid check on them is here rather
    // than in `vm_uids_cannot_open_each_others_disk_or_vtpm_state` (which boots nothing):
    // another VM's uid cannot connect to this VM's QMP or swtpm socket; this VM's uid can.
    let other = VmId::new("other").unwrap();
    hv.create(VmSpec::trusted_launch(
        other.clone(),
        img.disk.clone(),
        VtpmKey::generate().unwrap(),
        DiskKey::generate().unwrap(),
    ))
    .unwrap();
    let theirs = hv.sandbox(&other).unwrap();
    assert_ne!(theirs.uid, sandbox.uid);
    for sock in ["qmp.sock", "swtpm.sock"] {
        let path = dir.join(sock);
        assert_eq!(
            connect_as(sandbox.uid, sandbox.gid, &path),
            Ok(()),
            "{sock}"
        );
        let err = connect_as(theirs.uid, theirs.gid, &path).unwrap_err();
        assert!(err.contains("Permission denied"), "{sock}: {err}");
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
    assert_no_leftovers(&dir, &sandbox);

    // The disk at rest: the file, read raw, holds no trace of the marker the guest wrote...
    let disk = dir.join("disk.qcow2");
    let raw = std::fs::read(&disk).unwrap();
    assert!(
        !support::contains(&raw, marker.as_bytes()),
        "the marker is in the disk file"
    );
    assert!(!support::contains(&raw, b"STRATA-DISK-MARKER-"));
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&disk)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains(r#""encrypted": true"#) && info.contains(r#""format": "luks""#),
        "{info}"
    );
    // ...while a copy, decrypted with the VM's key, shows it where the guest wrote it (so the
    // check above can fail), and does not open with any other key.
    let copy = tmp.path().join("copy.qcow2");
    std::fs::copy(&disk, &copy).unwrap();
    let hex = |k: &[u8; 32]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let plain = support::decrypt_disk(&copy, &hex(&disk_key), tmp.path()).unwrap();
    let at = usize::try_from(image::MARKER_OFFSET).unwrap();
    let written = &plain[at..at + usize::try_from(image::MARKER_BYTES).unwrap()];
    assert_eq!(written, format!("{marker}\n").repeat(1024).as_bytes());
    for wrong in [support::random_key(), vtpm_key] {
        let err = support::decrypt_disk(&copy, &hex(&wrong), tmp.path()).unwrap_err();
        assert!(
            err.contains("Invalid password, cannot unlock any keyslot"),
            "{err}"
        );
    }

    hv.delete(&id).unwrap();
    assert!(!dir.exists());
    hv.delete(&other).unwrap();
}

/// Two VMs on one host: each uid opens its own disk and vTPM state, and neither can open the
/// other's.
#[test]
fn vm_uids_cannot_open_each_others_disk_or_vtpm_state() {
    let img = support::tiny_image();
    let tmp = tempfile::tempdir().unwrap();
    let hv = driver(tmp.path(), 2);
    let (a, b) = (VmId::new("vm-a").unwrap(), VmId::new("vm-b").unwrap());
    for (id, key) in [(&a, 0xa1), (&b, 0xb2)] {
        let spec = VmSpec::trusted_launch(
            id.clone(),
            img.disk.clone(),
            VtpmKey::from_bytes([key; 32]),
            DiskKey::from_bytes([key ^ 0xff; 32]),
        );
        hv.create(spec).unwrap();
    }
    // A vTPM without a state key is refused, and leaves nothing behind.
    let keyless = VmId::new("keyless").unwrap();
    let mut spec = VmSpec::trusted_launch(
        keyless.clone(),
        img.disk.clone(),
        VtpmKey::from_bytes([0; 32]),
        DiskKey::from_bytes([0; 32]),
    );
    spec.vtpm_key = None;
    let err = hv.create(spec).unwrap_err().to_string();
    assert!(err.contains("no state key"), "{err}");
    assert!(hv.vm_dir(&keyless).is_err());
    assert!(!tmp.path().join("vms/keyless").exists());
    // So is a VM without a disk key: every disk is encrypted.
    let mut spec = VmSpec::trusted_launch(
        keyless.clone(),
        img.disk.clone(),
        VtpmKey::from_bytes([0; 32]),
        DiskKey::from_bytes([0; 32]),
    );
    spec.disk_key = None;
    let err = hv.create(spec).unwrap_err();
    assert!(
        matches!(err, strata_compute::HypervisorError::MissingDiskKey(_)),
        "{err}"
    );
    assert!(err.to_string().contains("every disk is encrypted"), "{err}");
    assert!(hv.vm_dir(&keyless).is_err());
    assert!(!tmp.path().join("vms/keyless").exists());

    let (sa, sb) = (hv.sandbox(&a).unwrap(), hv.sandbox(&b).unwrap());
    assert_ne!(sa.uid, sb.uid);
    assert_ne!(sa.gid, sb.gid);
    assert!(sa.uid >= strata_compute::sandbox::DEFAULT_UID_BASE);
    let (da, db) = (hv.vm_dir(&a).unwrap(), hv.vm_dir(&b).unwrap());
    let private = ["disk.qcow2", "tpm/tpm2-00.permall", "OVMF_VARS.fd"];
    for (me, mine, theirs) in [(&sa, &da, &db), (&sb, &db, &da)] {
        for f in private {
            // The positive control: the file exists and its owner can open it.
            assert_eq!(open_as(me.uid, me.gid, &mine.join(f)), Ok(()), "{f}");
            let err = open_as(me.uid, me.gid, &theirs.join(f)).unwrap_err();
            assert!(err.contains("Permission denied"), "{f}: {err}");
        }
        // The shared base image is readable (read-only inputs are the only shared files).
        assert_eq!(open_as(me.uid, me.gid, &img.disk), Ok(()));
    }

    // The vTPM state is encrypted with the VM's key: swtpm loads a copy of B's state with B's
    // key and refuses it with A's.
    let copy = tmp.path().join("b-state");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(db.join("tpm/tpm2-00.permall"), copy.join("tpm2-00.permall")).unwrap();
    assert_eq!(swtpm_loads(&copy, &"b2".repeat(32)), Ok(()));
    let err = swtpm_loads(&copy, &"a1".repeat(32)).unwrap_err();
    assert!(err.contains("libtpms"), "{err}");

    for id in [&a, &b] {
        hv.delete(id).unwrap();
    }
    assert!(!da.exists() && !db.exists());
}

#[test]
fn standard_vm_boots_without_vtpm_or_secure_boot() {
    let img = support::tiny_image();
    let tmp = tempfile::tempdir().unwrap();
    let hv = driver(tmp.path(), 3);
    let id = VmId::new("standard").unwrap();
    let mut spec = VmSpec::trusted_launch(
        id.clone(),
        img.disk.clone(),
        VtpmKey::generate().unwrap(),
        DiskKey::generate().unwrap(),
    );
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
    let first = disk_marker(&serial, image::MARKER_LINE).expect("a disk marker");
    assert_eq!(disk_marker(&serial, image::PREVIOUS_MARKER_LINE), None);

    // A restart: QEMU gets the disk key again on a fresh pipe, and the guest reads back, through
    // the encryption, the marker its previous boot wrote.
    hv.stop(&id).unwrap();
    assert_no_leftovers(&dir, &hv.sandbox(&id).unwrap());
    assert_eq!(hv.start(&id).unwrap(), VmState::Running);
    let serial = hv.serial_log(&id).unwrap();
    assert_eq!(
        disk_marker(&serial, image::PREVIOUS_MARKER_LINE).as_deref(),
        Some(first.as_str()),
        "{serial}"
    );
    let second = disk_marker(&serial, image::MARKER_LINE).expect("a disk marker");
    assert_ne!(first, second);
    // The second stop leaves nothing behind either.
    hv.stop(&id).unwrap();
    assert_eq!(hv.state(&id).unwrap(), VmState::Stopped);
    assert_no_leftovers(&dir, &hv.sandbox(&id).unwrap());
    hv.delete(&id).unwrap();
    assert!(!dir.exists());
}

/// The marker on the guest's console line starting with `prefix`.
fn disk_marker(serial: &str, prefix: &str) -> Option<String> {
    serial
        .lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix))
        .map(str::to_owned)
}

#[test]
fn tampered_image_is_refused_by_secure_boot() {
    let img = support::tiny_image();
    let tmp = tempfile::tempdir().unwrap();
    let disk = support::altered_copy(&img, tmp.path(), &support::flip_a_byte);
    expect_secure_boot_violation("tampered", disk, &driver(tmp.path(), 4));
}

#[test]
fn unsigned_image_is_refused_by_secure_boot() {
    let img = support::tiny_image();
    let tmp = tempfile::tempdir().unwrap();
    let disk = support::altered_copy(&img, tmp.path(), &support::strip_signature);
    expect_secure_boot_violation("unsigned", disk, &driver(tmp.path(), 5));
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
