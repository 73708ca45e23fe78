//! `cargo xtask capture-eventlog [--out DIR]`: captures a *real* TCG crypto-agile event log.
//!
//! Boots a Debian cloud kernel under QEMU (TCG, never KVM) on OVMF with Secure Boot enforced and a
//! swtpm vTPM (sha1 + sha256 banks), the way a real Debian host boots: OVMF → shim (signed by the
//! Microsoft UEFI CA in `db`) → GRUB (signed by Debian) → kernel (signed by Debian), from a GPT disk
//! with an EFI system partition. A busybox initramfs prints, between markers on the serial
//! console, the kernel's `binary_bios_measurements` (base64) and every PCR of both banks as read
//! through sysfs, then powers off. The result is written as the fixture the attestation verifier
//! must replay exactly (`crates/strata-attest/tests/fixtures/ovmf-swtpm/`):
//!
//! - `binary_bios_measurements`: the raw log, byte for byte as the guest kernel exposed it;
//! - `pcrs.json`: `{"sha1": {"0": "hex", …}, "sha256": {…}}`, all 24 PCRs of both banks;
//! - `README.md`: provenance (package versions, command line, date), every event, and which PCRs
//!   the log replays to (checked here with `tpm2_eventlog`'s own replay before anything is written).
//!
//! Everything measured is deterministic (fixed disk and partition GUIDs, a fresh copy of the
//! firmware variables, an initramfs with fixed timestamps), so a re-capture with the same package
//! versions reproduces the same PCR values.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, describe, ensure_packages, installed, root, run};

/// Where the fixture lives in the repository.
pub const DEFAULT_OUT: &str = "crates/strata-attest/tests/fixtures/ovmf-swtpm";

/// Debian packages installed on the host (QEMU itself is handled by [`ensure_qemu`]).
const HOST_PACKAGES: &[&str] = &[
    "ovmf",
    "swtpm",
    "swtpm-tools",
    "tpm2-tools",
    "busybox-static",
    "mtools",
    "gdisk",
];
/// Packages only downloaded and unpacked into the work directory, never installed on the host.
const GUEST_PACKAGES: &[&str] = &["shim-signed", "grub-efi-amd64-signed"];
/// Meta package whose dependency is the concrete signed cloud kernel.
const KERNEL_META: &str = "linux-image-cloud-amd64";
/// Kernel options the initramfs needs built in (no module loading in the guest).
const KERNEL_CONFIG: &[&str] = &[
    "CONFIG_TCG_TPM",
    "CONFIG_TCG_CRB",
    "CONFIG_SECURITYFS",
    "CONFIG_BLK_DEV_INITRD",
    "CONFIG_SERIAL_8250_CONSOLE",
];

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// Variables with Secure Boot enabled and the Microsoft KEK/db enrolled (so shim verifies).
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// The kernel command line GRUB passes (measured by GRUB into PCR 8).
const CMDLINE: &str = "console=ttyS0 quiet panic=-1";
/// Fixed GUIDs: the GPT header and partition entries are measured into PCR 5 and the partition
/// GUID is part of every boot-application device path, so random ones would change PCRs per run.
const DISK_GUID: &str = "5354524b-4154-5445-5354-000000000001";
const ESP_GUID: &str = "5354524b-4154-5445-5354-000000000002";
const DISK_BYTES: u64 = 64 << 20;
const ESP_START_SECTOR: u64 = 2048;
/// Upper bound for one guest boot; a TCG boot takes well under a minute on 2 cores.
const BOOT_TIMEOUT_SECS: u32 = 300;

const BEGIN: &str = "STRATA-EVENTLOG-BEGIN";
const END: &str = "STRATA-EVENTLOG-END";

/// The initramfs `/init`: everything the guest does.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
echo 1 > /proc/sys/kernel/printk
LOG=/sys/kernel/security/tpm0/binary_bios_measurements
i=0
while [ ! -e $LOG ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
cp $LOG /log.bin
echo "STRATA-EVENTLOG-SHA256 $(sha256sum /log.bin | cut -d' ' -f1)"
echo "STRATA-EVENTLOG-BEGIN"
base64 /log.bin
echo "STRATA-EVENTLOG-END"
for bank in sha1 sha256; do
  n=0
  while [ $n -le 23 ]; do
    echo "STRATA-PCR $bank $n $(cat /sys/class/tpm/tpm0/pcr-$bank/$n)"
    n=$((n+1))
  done
done
echo "STRATA-CMDLINE $(cat /proc/cmdline)"
echo "STRATA-DONE"
poweroff -f
"#;

/// `cargo xtask capture-eventlog [--out DIR]`.
pub fn cli(args: &[String]) -> Result {
    let out = match args {
        [] => root().join(DEFAULT_OUT),
        [flag, dir] if flag == "--out" => PathBuf::from(dir),
        _ => return Err("usage: cargo xtask capture-eventlog [--out DIR]".into()),
    };
    capture_ovmf_eventlog(&out)
}

/// Boots the guest, captures its event log and PCRs, checks that the log replays to them, and
/// writes `binary_bios_measurements`, `pcrs.json` and `README.md` into `out_dir`.
pub fn capture_ovmf_eventlog(out_dir: &Path) -> Result {
    let started = Instant::now();
    ensure_packages(HOST_PACKAGES)?;
    ensure_qemu()?;

    let work = std::env::temp_dir().join(format!("strata-eventlog-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    mkdir(&work)?;
    let result = capture_in(&work, out_dir, started);
    match &result {
        Ok(()) => {
            let _ = fs::remove_dir_all(&work);
        }
        Err(_) => eprintln!(
            "xtask: work directory kept for inspection: {}",
            work.display()
        ),
    }
    result
}

fn capture_in(work: &Path, out_dir: &Path, started: Instant) -> Result {
    // Guest software: downloaded .debs, unpacked into the work directory.
    let debs = work.join("debs");
    mkdir(&debs)?;
    let kernel_pkg = kernel_package()?;
    let mut guest_pkgs: Vec<String> = GUEST_PACKAGES.iter().map(|p| p.to_string()).collect();
    guest_pkgs.push(kernel_pkg.clone());
    run(Command::new("apt-get")
        .current_dir(&debs)
        .arg("download")
        .args(&guest_pkgs))?;
    let unpacked = work.join("unpacked");
    let mut versions = Vec::new();
    for entry in read_dir(&debs)? {
        if entry.extension().is_some_and(|e| e == "deb") {
            run(Command::new("dpkg-deb")
                .arg("-x")
                .arg(&entry)
                .arg(&unpacked))?;
            let fields = output(
                Command::new("dpkg-deb")
                    .args(["-W", "--showformat=${Package} ${Version}"])
                    .arg(&entry),
            )?;
            versions.push(fields.trim().replace(' ', " = "));
        }
    }
    let kver = kernel_pkg
        .strip_prefix("linux-image-")
        .ok_or_else(|| format!("unexpected kernel package name {kernel_pkg}"))?;
    let vmlinuz = unpacked.join(format!("boot/vmlinuz-{kver}"));
    check_kernel_config(&unpacked.join(format!("boot/config-{kver}")))?;
    let shim = unpacked.join("usr/lib/shim/shimx64.efi.signed");
    let grub = unpacked.join("usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed");

    // Initramfs and the disk image.
    let initrd = work.join("initrd.img");
    write_initramfs(&initrd)?;
    let grub_cfg = work.join("grub.cfg");
    write(
        &grub_cfg,
        format!("set timeout=0\nlinux /vmlinuz {CMDLINE}\ninitrd /initrd.img\nboot\n").as_bytes(),
    )?;
    let disk = work.join("disk.img");
    make_disk(&disk, &shim, &grub, &grub_cfg, &vmlinuz, &initrd)?;

    // vTPM: freshly manufactured, with the sha1 and sha256 banks active.
    let tpm_state = work.join("tpm");
    mkdir(&tpm_state)?;
    run(Command::new("swtpm_setup")
        .args(["--tpm2", "--tpmstate"])
        .arg(&tpm_state)
        .args([
            "--create-ek-cert",
            "--create-platform-cert",
            "--pcr-banks",
            "sha1,sha256",
            "--overwrite",
        ])
        .stdout(Stdio::null()))?;
    let sock = work.join("swtpm.sock");
    let swtpm = Swtpm::start(&tpm_state, &sock)?;

    // The boot itself.
    let vars = work.join("OVMF_VARS.fd");
    fs::copy(OVMF_VARS, &vars).map_err(|e| format!("copy {OVMF_VARS}: {e}"))?;
    let serial = work.join("serial.log");
    let mut qemu = Command::new("timeout");
    qemu.arg(BOOT_TIMEOUT_SECS.to_string())
        .arg("qemu-system-x86_64")
        .args(["-machine", "q35,smm=on", "-accel", "tcg", "-m", "512"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot"])
        .args(["-global", "driver=cfi.pflash01,property=secure,value=on"])
        .args(["-drive"])
        .arg(format!(
            "if=pflash,format=raw,unit=0,file={OVMF_CODE},readonly=on"
        ))
        .args(["-drive"])
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .args(["-chardev"])
        .arg(format!("socket,id=chrtpm,path={}", sock.display()))
        .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
        .args(["-device", "tpm-crb,tpmdev=tpm0"])
        .args(["-drive"])
        .arg(format!(
            "if=none,id=disk0,format=raw,file={}",
            disk.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=disk0,bootindex=1"])
        .stdin(Stdio::null())
        .stdout(
            fs::File::create(&serial).map_err(|e| format!("create {}: {e}", serial.display()))?,
        );
    let command_line = describe(&qemu).replace(&work.display().to_string(), "$WORK");
    let boot_started = Instant::now();
    run(&mut qemu)?;
    let boot_secs = boot_started.elapsed().as_secs_f64();
    drop(swtpm);

    // What the guest printed.
    let text = String::from_utf8_lossy(&read(&serial)?).replace('\r', "");
    let capture = parse_serial(&text)?;
    let (spec, events) = parse_log(&capture.log)?;

    // Replay with an independent implementation (tpm2-tools) and compare with the PCRs read back.
    let log_path = work.join("binary_bios_measurements");
    write(&log_path, &capture.log)?;
    let yaml = output(Command::new("tpm2_eventlog").arg(&log_path))?;
    let replayed = parse_tpm2_eventlog_pcrs(&yaml);
    let covered: Vec<u32> = events
        .iter()
        .filter(|e| e.event_type != EV_NO_ACTION)
        .map(|e| e.pcr)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut mismatched_covered = Vec::new();
    let mut verdicts = BTreeMap::new();
    for bank in ["sha1", "sha256"] {
        let width = if bank == "sha1" { 40 } else { 64 };
        for pcr in 0..24u32 {
            let zero = "0".repeat(width);
            let expect = replayed
                .get(bank)
                .and_then(|b| b.get(&pcr))
                .cloned()
                .unwrap_or(zero);
            let got = capture.pcrs.get(bank).and_then(|b| b.get(&pcr));
            let ok = got == Some(&expect);
            if !ok && covered.contains(&pcr) {
                mismatched_covered.push(format!("{bank}:{pcr}"));
            }
            verdicts.insert((bank, pcr), ok);
        }
    }
    if !mismatched_covered.is_empty() {
        return Err(format!(
            "the captured log does not replay to the captured PCRs for {}",
            mismatched_covered.join(", ")
        ));
    }

    // The fixture.
    mkdir(out_dir)?;
    write(&out_dir.join("binary_bios_measurements"), &capture.log)?;
    write(
        &out_dir.join("pcrs.json"),
        pcrs_json(&capture.pcrs).as_bytes(),
    )?;
    let readme = readme(&Readme {
        versions: &host_versions(&versions),
        command_line: &command_line,
        guest_cmdline: &capture.cmdline,
        spec: &spec,
        events: &events,
        covered: &covered,
        verdicts: &verdicts,
        log_len: capture.log.len(),
        boot_secs,
        total_secs: started.elapsed().as_secs_f64(),
    });
    write(&out_dir.join("README.md"), readme.as_bytes())?;
    eprintln!(
        "xtask: wrote {} ({} events, {} bytes; boot {boot_secs:.0} s, total {:.0} s)",
        out_dir.display(),
        events.len(),
        capture.log.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Host preparation
// ---------------------------------------------------------------------------------------------

/// Installs `qemu-system-x86`. When the machine's `qemu-utils` comes from the distribution's
/// backports suite (as on the project's machine image), the stable `qemu-system-x86` cannot be
/// installed beside it (apt would remove `qemu-utils`), so the matching backports version is
/// installed instead, from a temporary source list: the host's apt configuration is not changed.
/// Installs qemu-system-x86 from the same suite as the machine's qemu-utils (bookworm's would
/// replace a backports qemu-utils).
pub(crate) fn ensure_qemu() -> Result {
    if installed("qemu-system-x86") {
        return Ok(());
    }
    let utils = output(Command::new("dpkg-query").args(["-W", "-f=${Version}", "qemu-utils"]))
        .unwrap_or_default();
    if !utils.contains("~bpo") {
        return ensure_packages(&["qemu-system-x86"]);
    }
    let codename = os_release("VERSION_CODENAME")?;
    let sources = Path::new(DEBIAN_SOURCES);
    let text = fs::read_to_string(sources).map_err(|e| format!("{}: {e}", sources.display()))?;
    let field = |name: &str| sources_field(&text, name);
    let uris = field("URIs:").ok_or("no URIs: line in debian.sources")?;
    let mut stanza =
        format!("Types: deb\nURIs: {uris}\nSuites: {codename}-backports\nComponents: main\n");
    if let Some(key) = field("Signed-By:") {
        let _ = writeln!(stanza, "Signed-By: {key}");
    }
    let dir = std::env::temp_dir().join(format!("strata-apt-bpo-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    mkdir(&dir.join("parts"))?;
    mkdir(&dir.join("lists/partial"))?;
    fs::copy(sources, dir.join("parts/debian.sources")).map_err(|e| e.to_string())?;
    write(&dir.join("parts/backports.sources"), stanza.as_bytes())?;
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.arg("-o")
            .arg("Dir::Etc::sourcelist=/dev/null")
            .arg("-o")
            .arg(format!(
                "Dir::Etc::sourceparts={}",
                dir.join("parts").display()
            ))
            .arg("-o")
            .arg(format!("Dir::State::lists={}", dir.join("lists").display()))
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    eprintln!(
        "xtask: qemu-utils {utils} is from backports: installing the matching qemu-system-x86"
    );
    let target = format!("{codename}-backports");
    let result = run(&mut apt(&["update", "-qq"])).and_then(|()| {
        run(&mut apt(&[
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "-t",
            &target,
            "qemu-system-x86",
            "qemu-utils",
        ]))
    });
    let _ = fs::remove_dir_all(&dir);
    result
}

/// The host's apt source list (deb822), where its Debian mirror is named.
const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

fn sources_field(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
}

/// The host's Debian mirror (the first `URIs:` of its debian.sources).
pub(crate) fn debian_mirror() -> Result<String> {
    let text = fs::read_to_string(DEBIAN_SOURCES).map_err(|e| format!("{DEBIAN_SOURCES}: {e}"))?;
    sources_field(&text, "URIs:")
        .and_then(|u| u.split_whitespace().next().map(str::to_string))
        .ok_or_else(|| format!("no URIs: line in {DEBIAN_SOURCES}"))
}

fn os_release(key: &str) -> Result<String> {
    let text =
        fs::read_to_string("/etc/os-release").map_err(|e| format!("/etc/os-release: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches('"').to_string())
        .ok_or_else(|| format!("/etc/os-release has no {key}"))
}

/// The concrete kernel package behind the cloud meta package (e.g. `linux-image-6.1.0-56-cloud-amd64`).
fn kernel_package() -> Result<String> {
    let deps = output(Command::new("apt-cache").args(["depends", KERNEL_META]))?;
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| format!("{KERNEL_META} depends on no linux-image package"))
}

fn check_kernel_config(config: &Path) -> Result {
    let text = fs::read_to_string(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let missing: Vec<&str> = KERNEL_CONFIG
        .iter()
        .copied()
        .filter(|opt| !text.lines().any(|l| l == format!("{opt}=y")))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} does not build in {} (this capture loads no modules)",
            config.display(),
            missing.join(", ")
        ))
    }
}

fn host_versions(downloaded: &[String]) -> Vec<String> {
    let mut out: Vec<String> = [
        "ovmf",
        "qemu-system-x86",
        "swtpm",
        "swtpm-tools",
        "libtpms0",
        "busybox-static",
        "tpm2-tools",
    ]
    .iter()
    .map(|p| {
        let v = output(Command::new("dpkg-query").args(["-W", "-f=${Version}", p]))
            .unwrap_or_else(|_| "?".into());
        format!("{p} = {}", v.trim())
    })
    .collect();
    out.extend(downloaded.iter().cloned());
    out
}

// ---------------------------------------------------------------------------------------------
// Guest images
// ---------------------------------------------------------------------------------------------

/// A newc cpio archive, uncompressed, with fixed timestamps and inode numbers so that its bytes
/// (measured by GRUB into PCR 9) depend only on busybox and `/init`.
fn write_initramfs(path: &Path) -> Result {
    let busybox = read(Path::new("/bin/busybox"))?;
    let mut cpio = Vec::new();
    let mut ino = 1;
    let mut entry = |name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0,
            nlink = if mode & 0o040000 != 0 { 2 } else { 1 },
        );
        ino += 1;
        cpio.extend_from_slice(header.as_bytes());
        cpio.extend_from_slice(name.as_bytes());
        cpio.push(0);
        pad4(&mut cpio);
        cpio.extend_from_slice(data);
        pad4(&mut cpio);
    };
    const DIR: u32 = 0o040755;
    entry(".", DIR, (0, 0), &[]);
    for d in ["bin", "dev", "proc", "sys"] {
        entry(d, DIR, (0, 0), &[]);
    }
    entry("dev/console", 0o020600, (5, 1), &[]);
    entry("bin/busybox", 0o100755, (0, 0), &busybox);
    entry("init", 0o100755, (0, 0), INIT.as_bytes());
    entry("TRAILER!!!", 0, (0, 0), &[]);
    while !cpio.len().is_multiple_of(512) {
        cpio.push(0);
    }
    write(path, &cpio)
}

fn pad4(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// A GPT disk with one EFI system partition laid out like a Debian install booted from the
/// removable-media path: `\EFI\BOOT\BOOTX64.EFI` (shim), `\EFI\BOOT\grubx64.efi`, GRUB's
/// configuration at its built-in prefix `\EFI\debian\grub.cfg`, and the kernel and initramfs.
fn make_disk(
    disk: &Path,
    shim: &Path,
    grub: &Path,
    grub_cfg: &Path,
    vmlinuz: &Path,
    initrd: &Path,
) -> Result {
    let file = fs::File::create(disk).map_err(|e| format!("create {}: {e}", disk.display()))?;
    file.set_len(DISK_BYTES).map_err(|e| e.to_string())?;
    drop(file);
    run(Command::new("sgdisk")
        .arg("-o")
        .arg(format!("--new=1:{ESP_START_SECTOR}:0"))
        .args(["--typecode=1:EF00", "--change-name=1:ESP"])
        .arg(format!("--disk-guid={DISK_GUID}"))
        .arg(format!("--partition-guid=1:{ESP_GUID}"))
        .arg(disk)
        .stdout(Stdio::null()))?;
    let image = format!("{}@@{}", disk.display(), ESP_START_SECTOR * 512);
    let mtool = |tool: &str| {
        let mut cmd = Command::new(tool);
        cmd.arg("-i").arg(&image);
        cmd
    };
    run(mtool("mformat").args(["-F", "-v", "ESP", "-N", "5354524b", "::"]))?;
    run(mtool("mmd").args(["::/EFI", "::/EFI/BOOT", "::/EFI/debian"]))?;
    for (src, dst) in [
        (shim, "::/EFI/BOOT/BOOTX64.EFI"),
        (grub, "::/EFI/BOOT/grubx64.efi"),
        (grub_cfg, "::/EFI/debian/grub.cfg"),
        (vmlinuz, "::/vmlinuz"),
        (initrd, "::/initrd.img"),
    ] {
        run(mtool("mcopy").arg(src).arg(dst))?;
    }
    Ok(())
}

/// swtpm serving one guest over a UNIX control socket; killed on drop.
struct Swtpm(Child);

impl Swtpm {
    fn start(state: &Path, sock: &Path) -> Result<Self> {
        let mut cmd = Command::new("swtpm");
        cmd.args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .args(["--ctrl"])
            .arg(format!("type=unixio,path={}", sock.display()))
            .arg("--log")
            .arg(format!(
                "file={},level=1",
                state.with_extension("log").display()
            ))
            .stdin(Stdio::null());
        eprintln!("xtask: $ {} &", describe(&cmd));
        let child = cmd.spawn().map_err(|e| format!("start swtpm: {e}"))?;
        let tpm = Self(child);
        for _ in 0..100 {
            if sock.exists() {
                return Ok(tpm);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("swtpm did not create {}", sock.display()))
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing what came back
// ---------------------------------------------------------------------------------------------

type Banks = BTreeMap<&'static str, BTreeMap<u32, String>>;

struct Capture {
    log: Vec<u8>,
    pcrs: Banks,
    cmdline: String,
}

fn parse_serial(text: &str) -> Result<Capture> {
    if !text.contains("STRATA-DONE") {
        let tail: String = text
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!(
            "the guest did not finish (no STRATA-DONE on its console); last output:\n{tail}"
        ));
    }
    let begin = text.find(BEGIN).ok_or("no event-log begin marker")? + BEGIN.len();
    let end = text[begin..].find(END).ok_or("no event-log end marker")? + begin;
    let b64: String = text[begin..end]
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=')
        })
        .collect();
    let log = base64_decode(&b64)?;
    let want = text
        .lines()
        .find_map(|l| after(l, "STRATA-EVENTLOG-SHA256 "))
        .ok_or("no event-log checksum line")?
        .trim()
        .to_string();
    let tmp = std::env::temp_dir().join(format!("strata-eventlog-check-{}", std::process::id()));
    write(&tmp, &log)?;
    let got = output(Command::new("sha256sum").arg(&tmp));
    let _ = fs::remove_file(&tmp);
    let got = got?;
    if got.split_whitespace().next() != Some(want.as_str()) {
        return Err(format!(
            "the event log was damaged on the serial console (sha256 {got} != {want})"
        ));
    }
    let mut pcrs: Banks = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = after(line, "STRATA-PCR ") else {
            continue;
        };
        let parts: Vec<&str> = rest.split_whitespace().collect();
        let [bank, index, value] = parts[..] else {
            return Err(format!("bad PCR line: {line}"));
        };
        let bank = match bank {
            "sha1" => "sha1",
            "sha256" => "sha256",
            other => return Err(format!("unexpected PCR bank {other}")),
        };
        let index: u32 = index.parse().map_err(|_| format!("bad PCR line: {line}"))?;
        let width = if bank == "sha1" { 40 } else { 64 };
        if value.len() != width || !value.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("bad PCR value: {line}"));
        }
        pcrs.entry(bank)
            .or_default()
            .insert(index, value.to_ascii_lowercase());
    }
    for bank in ["sha1", "sha256"] {
        let n = pcrs.get(bank).map_or(0, BTreeMap::len);
        if n != 24 {
            return Err(format!("read {n} of 24 {bank} PCRs from the guest"));
        }
    }
    let cmdline = text
        .lines()
        .find_map(|l| after(l, "STRATA-CMDLINE "))
        .unwrap_or_default()
        .to_string();
    Ok(Capture { log, pcrs, cmdline })
}

/// What follows `marker` on a console line (firmware and GRUB leave escape sequences in front).
fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| line[i + marker.len()..].trim())
}

fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return Err(format!("invalid base64 byte {c:#x}")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// The replayed values from `tpm2_eventlog`'s trailing `pcrs:` section.
fn parse_tpm2_eventlog_pcrs(yaml: &str) -> Banks {
    let mut banks: Banks = BTreeMap::new();
    let mut bank = None;
    let mut in_pcrs = false;
    for line in yaml.lines() {
        if line == "pcrs:" {
            in_pcrs = true;
            continue;
        }
        if !in_pcrs {
            continue;
        }
        match line.trim() {
            "sha1:" => bank = Some("sha1"),
            "sha256:" => bank = Some("sha256"),
            l => {
                if let (Some(b), Some((idx, val))) = (bank, l.split_once(':'))
                    && let Ok(i) = idx.trim().parse::<u32>()
                {
                    let v = val.trim().trim_start_matches("0x").to_ascii_lowercase();
                    banks.entry(b).or_default().insert(i, v);
                }
            }
        }
    }
    banks
}

const EV_NO_ACTION: u32 = 0x3;

struct Event {
    pcr: u32,
    event_type: u32,
    data: Vec<u8>,
}

struct SpecId {
    algorithms: Vec<(u16, u16)>,
}

fn le32(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| format!("event log truncated at byte {at}"))
}

fn le16(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or_else(|| format!("event log truncated at byte {at}"))
}

fn slice(b: &[u8], at: usize, len: usize) -> Result<&[u8]> {
    b.get(at..at.saturating_add(len))
        .ok_or_else(|| format!("event log truncated at byte {at}"))
}

/// Splits a crypto-agile log into its events (the first, SHA-1-format Spec ID event included).
/// Only enough structure for the README; the verifier crate is the real parser.
fn parse_log(log: &[u8]) -> Result<(SpecId, Vec<Event>)> {
    let size = le32(log, 28)? as usize;
    let first = slice(log, 32, size)?;
    if !first.starts_with(b"Spec ID Event03\0") {
        return Err("the log does not start with a crypto-agile Spec ID event".into());
    }
    let count = le32(first, 24)? as usize;
    let mut algorithms = Vec::new();
    for i in 0..count {
        algorithms.push((le16(first, 28 + 4 * i)?, le16(first, 30 + 4 * i)?));
    }
    let mut events = vec![Event {
        pcr: le32(log, 0)?,
        event_type: le32(log, 4)?,
        data: first.to_vec(),
    }];
    let mut at = 32 + size;
    while at < log.len() {
        let pcr = le32(log, at)?;
        let event_type = le32(log, at + 4)?;
        let n = le32(log, at + 8)? as usize;
        at += 12;
        for _ in 0..n {
            let alg = le16(log, at)?;
            let len = algorithms
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, l)| *l as usize)
                .ok_or_else(|| format!("digest algorithm {alg:#x} not in the Spec ID event"))?;
            at += 2 + len;
        }
        let size = le32(log, at)? as usize;
        let data = slice(log, at + 4, size)?.to_vec();
        at += 4 + size;
        events.push(Event {
            pcr,
            event_type,
            data,
        });
    }
    Ok((SpecId { algorithms }, events))
}

fn event_type_name(t: u32) -> String {
    let name = match t {
        0x0 => "EV_PREBOOT_CERT",
        0x1 => "EV_POST_CODE",
        0x3 => "EV_NO_ACTION",
        0x4 => "EV_SEPARATOR",
        0x5 => "EV_ACTION",
        0x6 => "EV_EVENT_TAG",
        0x7 => "EV_S_CRTM_CONTENTS",
        0x8 => "EV_S_CRTM_VERSION",
        0x9 => "EV_CPU_MICROCODE",
        0xa => "EV_PLATFORM_CONFIG_FLAGS",
        0xb => "EV_TABLE_OF_DEVICES",
        0xc => "EV_COMPACT_HASH",
        0xd => "EV_IPL",
        0xe => "EV_IPL_PARTITION_DATA",
        0xf => "EV_NONHOST_CODE",
        0x10 => "EV_NONHOST_CONFIG",
        0x11 => "EV_NONHOST_INFO",
        0x12 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
        0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006 => "EV_EFI_GPT_EVENT",
        0x8000_0007 => "EV_EFI_ACTION",
        0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
        0x8000_000a => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000_000b => "EV_EFI_HANDOFF_TABLES2",
        0x8000_000c => "EV_EFI_VARIABLE_BOOT2",
        0x8000_00e0 => "EV_EFI_VARIABLE_AUTHORITY",
        _ => return format!("{t:#x}"),
    };
    name.to_string()
}

fn utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

fn printable(b: &[u8]) -> String {
    let s = b.strip_suffix(&[0]).unwrap_or(b);
    if !s.is_empty() && s.iter().all(|c| (0x20..0x7f).contains(c)) {
        String::from_utf8_lossy(s).replace('|', "\\|")
    } else {
        hex(b)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// File path nodes (type 4, subtype 4) of a UEFI device path, joined.
fn device_path_files(mut dp: &[u8]) -> String {
    let mut files = Vec::new();
    while dp.len() >= 4 {
        let len = u16::from_le_bytes([dp[2], dp[3]]) as usize;
        if len < 4 || len > dp.len() {
            break;
        }
        if dp[0] == 4 && dp[1] == 4 {
            files.push(utf16(&dp[4..len]));
        }
        if dp[0] == 0x7f && dp[1] == 0xff {
            break;
        }
        dp = &dp[len..];
    }
    files.join("")
}

/// One line describing an event's data, for the README.
fn describe_event(e: &Event) -> String {
    let d = &e.data;
    match e.event_type {
        EV_NO_ACTION => {
            let sig = d.get(..16).map(printable).unwrap_or_default();
            format!("`{}`", sig.trim_end_matches('\0'))
        }
        0x8000_0001 | 0x8000_0002 | 0x8000_00e0 => {
            // UEFI_VARIABLE_DATA: GUID, name length (chars), data length, name, data.
            let name_len = d
                .get(16..24)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0) as usize;
            let data_len = d
                .get(24..32)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            let name = d.get(32..32 + 2 * name_len).map(utf16).unwrap_or_default();
            format!("variable `{name}` ({data_len} bytes of data)")
        }
        0x8000_0003..=0x8000_0005 => {
            // UEFI_IMAGE_LOAD_EVENT: location, length, link address, device-path length, path.
            let image_len = d
                .get(8..16)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            let dp_len = d
                .get(24..32)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0) as usize;
            let files = d
                .get(32..32 + dp_len)
                .map(device_path_files)
                .unwrap_or_default();
            if files.is_empty() {
                format!("PE image of {image_len} bytes, no file path (loaded from memory)")
            } else {
                format!("PE image of {image_len} bytes from `{files}`")
            }
        }
        0x8000_0006 => {
            let parts = le32(d, 92).unwrap_or(0);
            if parts == 1 {
                "GPT header and 1 partition entry".to_string()
            } else {
                format!("GPT header and {parts} partition entries")
            }
        }
        0x8000_0008 => {
            let base = d
                .get(..8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            let len = d
                .get(8..16)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            format!("firmware volume at {base:#x}, {len:#x} bytes")
        }
        0x8 => match utf16(d) {
            v if v.is_empty() => format!("`{}`: an empty UTF-16 string", hex(d)),
            v => format!("UTF-16 `{v}`"),
        },
        0x6 => {
            let tail = d.get(8..).map(printable).unwrap_or_default();
            format!("tagged event id {:#x}: `{tail}`", le32(d, 0).unwrap_or(0))
        }
        _ => format!("`{}`", printable(d)),
    }
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

fn pcrs_json(pcrs: &Banks) -> String {
    let mut s = String::from("{\n");
    let banks: Vec<_> = pcrs.iter().collect();
    for (i, (bank, values)) in banks.iter().enumerate() {
        let _ = writeln!(s, "  \"{bank}\": {{");
        let n = values.len();
        for (j, (pcr, v)) in values.iter().enumerate() {
            let comma = if j + 1 < n { "," } else { "" };
            let _ = writeln!(s, "    \"{pcr}\": \"{v}\"{comma}");
        }
        let comma = if i + 1 < banks.len() { "," } else { "" };
        let _ = writeln!(s, "  }}{comma}");
    }
    s.push_str("}\n");
    s
}

struct Readme<'a> {
    versions: &'a [String],
    command_line: &'a str,
    guest_cmdline: &'a str,
    spec: &'a SpecId,
    events: &'a [Event],
    covered: &'a [u32],
    verdicts: &'a BTreeMap<(&'static str, u32), bool>,
    log_len: usize,
    boot_secs: f64,
    total_secs: f64,
}

fn readme(r: &Readme) -> String {
    let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map(|d| d.trim().to_string())
        .unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Real TCG event log: OVMF + swtpm under QEMU (shim → GRUB → Linux, Secure Boot on)\n\n\
         Generated by `cargo xtask capture-eventlog` (`xtask/src/eventlog.rs`) on {date}; do not edit\n\
         by hand, re-run the capture instead.\n\n\
         - `binary_bios_measurements`: {} bytes, exactly as the guest kernel exposed\n  \
         `/sys/kernel/security/tpm0/binary_bios_measurements` (TCG PC Client crypto-agile format:\n  \
         a SHA-1-format `Spec ID Event03` header, then `TCG_PCR_EVENT2` records). {} events in all.\n\
         - `pcrs.json`: all 24 PCRs of the sha1 and sha256 banks, read inside the same guest from\n  \
         `/sys/class/tpm/tpm0/pcr-<bank>/<n>` right after the log (lower-case hex).\n",
        r.log_len,
        r.events.len()
    );
    s.push_str("## Provenance\n\n");
    s.push_str(
        "Debian 12 host, packages from Debian (the guest's boot chain is downloaded with\n\
         `apt-get download` and unpacked, never installed):\n\n",
    );
    for v in r.versions {
        let _ = writeln!(s, "- `{v}`");
    }
    let algs: Vec<String> = r
        .spec
        .algorithms
        .iter()
        .map(|(a, l)| {
            let name = match a {
                0x4 => "sha1",
                0xb => "sha256",
                0xc => "sha384",
                0xd => "sha512",
                _ => "?",
            };
            format!("{name} ({a:#06x}, {l} bytes)")
        })
        .collect();
    let _ = writeln!(
        s,
        "\nThe vTPM is a fresh `swtpm_setup --tpm2 --create-ek-cert --create-platform-cert \
         --pcr-banks sha1,sha256`\nstate served by `swtpm socket --tpm2`; the Spec ID event lists \
         the digests {}.\n\nGuest: Secure Boot enabled and enforced (`{OVMF_CODE}` with the SMM \
         variable store\nand a fresh copy of `{OVMF_VARS}`, which enrolls a PK, the Microsoft KEK \
         and the Microsoft\nUEFI CA and Windows PCA in `db`). OVMF boots the removable-media path of \
         a 64 MiB GPT disk\n(disk GUID `{DISK_GUID}`, ESP partition GUID `{ESP_GUID}`): \
         `\\EFI\\BOOT\\BOOTX64.EFI` is\nDebian's signed shim, which verifies and starts Debian's \
         signed GRUB (`\\EFI\\BOOT\\grubx64.efi`,\nconfiguration `\\EFI\\debian\\grub.cfg`), which \
         verifies through shim and boots the signed\nkernel `\\vmlinuz` with `\\initrd.img` (busybox \
         and a shell `/init`, uncompressed newc cpio with\nfixed timestamps) and the command line \
         `{CMDLINE}`. The guest saw `{}`.\n\nQEMU command line (the TCG accelerator: no KVM):\n\n\
         ```\n{}\n```\n\nThat boot took {:.0} s; the whole capture (downloads, images, boot, checks) \
         {:.0} s.\n",
        algs.join(", "),
        r.guest_cmdline,
        r.command_line,
        r.boot_secs,
        r.total_secs
    );

    s.push_str("\n## Events by PCR\n\n| PCR | events (in log order) |\n| --- | --- |\n");
    let mut by_pcr: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for e in r.events {
        let list = by_pcr.entry(e.pcr).or_default();
        let name = event_type_name(e.event_type);
        match list.last_mut() {
            Some(last) if last.split(" ×").next() == Some(name.as_str()) => {
                let n: u32 = last
                    .split(" ×")
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                *last = format!("{name} ×{}", n + 1);
            }
            _ => list.push(name),
        }
    }
    for (pcr, list) in &by_pcr {
        let _ = writeln!(s, "| {pcr} | {} |", list.join(", "));
    }

    s.push_str("\n## Every event\n\n| # | PCR | type | data |\n| --- | --- | --- | --- |\n");
    for (i, e) in r.events.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {i} | {} | {} | {} |",
            e.pcr,
            event_type_name(e.event_type),
            describe_event(e)
        );
    }

    let covered: Vec<String> = r.covered.iter().map(u32::to_string).collect();
    let list = |bank: &str, want: bool| -> String {
        (0..24u32)
            .filter(|p| r.verdicts.get(&(bank, *p)).copied().unwrap_or(false) == want)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        s,
        "\n## Replay\n\n\
         The log has measured events (anything but `EV_NO_ACTION`) for PCRs {}. Replaying it\n\
         (every PCR starts at all zeros; `EV_NO_ACTION` events are not extended) was checked at capture\n\
         time with `tpm2_eventlog` against the PCRs read from the guest:\n\n\
         - sha1: replay equals the guest's value for PCRs {}; differs for {}.\n\
         - sha256: replay equals the guest's value for PCRs {}; differs for {}.\n\n\
         A verifier must reproduce exactly these values for every PCR the log covers, in both banks.\n\
         PCRs the log does not cover and that are all zeros match trivially. The ones that differ\n\
         are not in this log by design:\n\n\
         - PCR 10 is extended by the guest kernel's IMA (`boot_aggregate` and any runtime\n  \
         measurements), which keeps its own log (`ascii_runtime_measurements`), not the firmware's.\n\
         - PCRs 17–22 are the DRTM/locality PCRs: they start at all ones (`ff…ff`) at TPM reset and\n  \
         nothing extends them on this boot; replaying from zeros gives zeros.\n\n\
         Notes on the contents: there is no `EV_NO_ACTION` StartupLocality event (OVMF starts the\n\
         TPM from locality 0); all separators carry `00000000` (no error separators); the\n\
         `EV_EFI_GPT_EVENT` in PCR 5 is the disk above; PCR 7 has the Secure Boot policy\n\
         (`SecureBoot`, `PK`, `KEK`, `db`, `dbx`) and, after the separator, the authorities used to\n\
         verify each image (`db` for shim, then shim's `SbatLevel` and its vendor certificate logged\n\
         as `MokListRT`); PCR 14 carries shim's `MokList`/`MokListX`/`MokListTrusted` measurements;\n\
         PCR 8 carries GRUB's commands (`grub_cmd: …`) and the kernel command line\n\
         (`kernel_cmdline: …`); PCR 9 the files GRUB read (`grub.cfg`, the kernel, the initramfs).\n\
         The `EV_EFI_BOOT_SERVICES_APPLICATION` events' load addresses are not hashed, so they could\n\
         differ between captures while every PCR stays the same (two captures in a row gave a\n\
         byte-identical log and identical PCRs).\n\n\
         ## What each digest covers (for writing reference values)\n\n\
         Checked independently of this tool when the fixture was first captured:\n\n\
         - `EV_EFI_BOOT_SERVICES_APPLICATION` (PCR 4): the Authenticode SHA-1/SHA-256 of the PE file:\n  \
         shim's `shimx64.efi.signed`, GRUB's `grubx64.efi.signed`, then the kernel `vmlinuz` twice\n  \
         with the same digest (neither kernel event has a file device path: GRUB hands the image\n  \
         over from memory).\n\
         - `EV_EFI_VARIABLE_DRIVER_CONFIG` and `EV_EFI_VARIABLE_AUTHORITY` (PCR 7): the hash of the\n  \
         whole `UEFI_VARIABLE_DATA` event; but `EV_EFI_VARIABLE_BOOT` (PCR 1): the hash of the\n  \
         variable's data only (EDK II's convention), not of the event. So a verifier that checks\n  \
         event data against digests must special-case it; replay itself never needs the data.\n\
         - `EV_IPL` in PCR 8: the hash of the text after `grub_cmd: ` / `kernel_cmdline: `, without\n  \
         the prefix and the trailing NUL the event carries.\n\
         - `EV_IPL` in PCR 9: the plain SHA-256 of the file named in the event (`grub.cfg`,\n  \
         `vmlinuz`, `initrd.img`).\n\
         - `EV_IPL` in PCR 14: shim's MOK variables; the event carries only the variable name.\n\
         - `EV_SEPARATOR`, `EV_EFI_ACTION`, `EV_EFI_GPT_EVENT`, `EV_S_CRTM_VERSION`: the hash of\n  \
         the event data. `EV_EFI_PLATFORM_FIRMWARE_BLOB`: the firmware volume in memory.\n\n\
         ## Why a disk boot rather than QEMU `-kernel`\n\n\
         Booting the same kernel with QEMU's `-kernel`/`-initrd` gives a much poorer log (23 events\n\
         on the same OVMF): OVMF's own loader starts the kernel with no\n\
         `EV_EFI_BOOT_SERVICES_APPLICATION` and no `EV_EFI_GPT_EVENT`, nothing in PCRs 8 and 14 (no\n\
         bootloader, no command-line measurement) and only the EFI stub's initrd `EV_EVENT_TAG` in\n\
         PCR 9; and it started that Debian-signed kernel although `db` does not authorize it. Booting shim and GRUB from a\n\
         disk records the chain a real host records and lets tests appraise the bootloader and\n\
         kernel digests and the command line.",
        covered.join(", "),
        list("sha1", true),
        list("sha1", false),
        list("sha256", true),
        list("sha256", false)
    );
    s
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("could not start {}: {e}", describe(cmd)))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed with {}: {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mkdir(p: &Path) -> Result {
    fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))
}

fn read(p: &Path) -> Result<Vec<u8>> {
    fs::read(p).map_err(|e| format!("read {}: {e}", p.display()))
}

fn write(p: &Path, data: &[u8]) -> Result {
    fs::write(p, data).map_err(|e| format!("write {}: {e}", p.display()))
}

fn read_dir(p: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(p)
        .map_err(|e| format!("read {}: {e}", p.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}
