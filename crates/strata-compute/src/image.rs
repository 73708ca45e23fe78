//! `build_tiny`: the tiny trusted-launch guest image, built offline from Debian packages.
//!
//! ```text
//!  linux-image-<ver>-cloud-amd64 ─apt-get download, dpkg-deb -x─▶ vmlinuz ─┐
//!  busybox-static + /init ─────────────── newc cpio (written here) ─▶ initrd ─┤
//!  console=ttyS0 … ──────────────────────────────────────────────▶ cmdline ─┤ objcopy onto the
//!                                                                           ▼ systemd-boot stub
//!                      sbsign (host secure-boot key) ◀──────────────── UKI (PE/COFF)
//!                                  │
//!                                  ▼
//!  GPT raw disk: one ESP (FAT, mtools) with \EFI\BOOT\BOOTX64.EFI ─qemu-img─▶ disk.qcow2
//! ```
//!
//! Why a UKI rather than the kernel as the EFI application: firmware starts
//! `\EFI\BOOT\BOOTX64.EFI` with no load options, so a bare kernel would get no command line
//! and no initrd; the UKI carries both inside the one signed binary, so the signature covers
//! kernel, initrd and command line together (tamper with any and the firmware refuses it).
//! Bookworm has no `ukify` (systemd 252), so the sections are added with `objcopy` at the
//! addresses the stub documents (`.osrel` 0x20000, `.cmdline` 0x30000, `.linux` 0x2000000,
//! `.initrd` after the kernel).
//!
//! The initramfs carries modules from the same kernel package (built as modules in Debian's
//! cloud kernel; signed by Debian, so they load under lockdown): `evdev` and `button`, so the
//! guest powers off when the ACPI power button is pressed, the virtio block stack, so the
//! guest sees its own disk as `/dev/vda`, and virtio-net (with `failover` and `net_failover`,
//! its dependencies), so the guest has its NICs. Each NIC's address comes as an SMBIOS OEM
//! string (type 11, `strata-net<i>=<mac> <ip>/<len> <gateway>`, passed by the QEMU driver and
//! read from `/sys/firmware/dmi/entries/11-*`); `/init` configures the interface with that MAC
//! and prints `STRATA-GUEST-NET <dev> <mac> <ip>/<len> via <gateway>` before ready.
//!
//! The disk marker: at every boot `/init` writes a fresh random marker line
//! (`STRATA-DISK-MARKER-<24 hex digits>`, repeated to [`MARKER_BYTES`]) to `/dev/vda` at byte
//! [`MARKER_OFFSET`], in the unused gap between the GPT and the ESP, and prints
//! `STRATA-GUEST-DISK-MARKER <marker>` on the console; before that, if the previous boot left a
//! marker there, it prints `STRATA-GUEST-DISK-PREVIOUS <marker>` (the disk kept its data across
//! a restart). Tests read the VM's disk file raw and check that the marker is not there (the
//! disk is encrypted), and decrypted that it is.
//!
//! The boot evidence (the small guest agent of trusted launch): when the guest has a TPM,
//! `/init` mounts securityfs and, before [`READY_MARKER`](crate::READY_MARKER), prints the
//! firmware's measured-boot event log (`/sys/kernel/security/tpm0/binary_bios_measurements`)
//! as base64 lines between [`EVENTLOG_BEGIN`](crate::EVENTLOG_BEGIN) and
//! [`EVENTLOG_END`](crate::EVENTLOG_END), then one [`PCR_LINE`](crate::PCR_LINE) line
//! (`STRATA-GUEST-PCR <n> <hex>`) per SHA-256 PCR it can read. The host agent lifts that block
//! out of the serial log and the control plane replays it (`strata-control`'s
//! `compute::boot_integrity`). These are the guest kernel's words, not a signed TPM quote.
//!
//! Nothing is installed on the host: the kernel package is only downloaded and unpacked under
//! `out_dir/cache`. The result is reused when the inputs (kernel version, busybox, stub, init
//! script, command line, certificate) are unchanged.

use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{self, CmdError};

/// The signed kernel is pulled in by this meta package.
pub const KERNEL_META: &str = "linux-image-cloud-amd64";
/// The systemd-boot EFI stub (Debian package `systemd-boot-efi`).
pub const UKI_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// Where the static busybox lives (Debian package `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";
/// The guest kernel command line (inside the signed UKI).
pub const CMDLINE: &str = "console=ttyS0 panic=-1";
/// The ESP starts at this sector (512-byte sectors) of the GPT disk.
pub const ESP_START_SECTOR: u64 = 2048;
/// Where the firmware's removable-media boot path finds the UKI on the ESP.
pub const ESP_BOOT_PATH: &str = "::/EFI/BOOT/BOOTX64.EFI";
/// The tiny image's disk size (its virtual size: what a VM booted from it sees).
pub const DISK_BYTES: u64 = 64 << 20;
/// Where the guest writes its disk marker: sector 1024, between the primary GPT (sectors 0–33)
/// and the ESP (from [`ESP_START_SECTOR`]).
pub const MARKER_OFFSET: u64 = 1024 * 512;
/// How many bytes of marker lines the guest writes (1024 lines of 44 bytes).
pub const MARKER_BYTES: u64 = 1024 * 44;
/// The console line prefix before the guest's disk marker.
pub const MARKER_LINE: &str = "STRATA-GUEST-DISK-MARKER ";
/// The console line prefix before the marker the previous boot wrote, read back at boot.
pub const PREVIOUS_MARKER_LINE: &str = "STRATA-GUEST-DISK-PREVIOUS ";
/// Kernel modules in the initramfs, in load order (each after its dependencies), under
/// `lib/modules/<ver>/kernel/drivers/` of the kernel package.
const MODULES: &[&str] = &[
    "input/evdev.ko",
    "acpi/button.ko",
    "virtio/virtio_ring.ko",
    "virtio/virtio.ko",
    "virtio/virtio_pci_modern_dev.ko",
    "virtio/virtio_pci_legacy_dev.ko",
    "virtio/virtio_pci.ko",
    "block/virtio_blk.ko",
    "../net/core/failover.ko",
    "net/net_failover.ko",
    "net/virtio_net.ko",
];
/// Fixed GUIDs so the same inputs give the same disk (and the same PCR 5 measurements).
const DISK_GUID: &str = "5354524b-434f-4d50-5554-000000000001";
const ESP_GUID: &str = "5354524b-434f-4d50-5554-000000000002";

/// The guest's `/init`: mount the basics, load the modules, arm the ACPI power button (so
/// `system_powerdown` is a clean guest shutdown), say whether a TPM 2.0 is there, write the
/// disk marker (module docs), print the boot evidence (module docs), report ready, wait.
pub const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 1 > /proc/sys/kernel/printk
for m in evdev button virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk failover net_failover virtio_net; do
  insmod /modules/$m.ko
done
sleep 0.2
for ev in /sys/class/input/event*; do
  if [ "$(cat $ev/device/name 2>/dev/null)" = "Power Button" ]; then
    dev=/dev/input/${ev##*/}
    i=0
    while [ ! -c $dev ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    (head -c 1 $dev > /dev/null && echo "STRATA-GUEST-POWEROFF" && poweroff -f) &
  fi
done
echo "STRATA-GUEST-TPM $(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null || echo none)"
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
if [ -b /dev/vda ]; then
  prev="$(dd if=/dev/vda bs=512 skip=1024 count=1 2>/dev/null | tr -d '\000' | head -n 1)"
  case "$prev" in STRATA-DISK-MARKER-*) echo "STRATA-GUEST-DISK-PREVIOUS $prev";; esac
  m="STRATA-DISK-MARKER-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  i=0
  while [ $i -lt 1024 ]; do echo "$m"; i=$((i+1)); done > /marker
  dd if=/marker of=/dev/vda bs=512 seek=1024 conv=notrunc,fsync 2>/dev/null && echo "STRATA-GUEST-DISK-MARKER $m"
fi
mkdir -p /sys/kernel/security
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
log=/sys/kernel/security/tpm0/binary_bios_measurements
if [ -r $log ]; then
  echo "STRATA-GUEST-EVENTLOG-BEGIN"
  cat $log | base64
  echo "STRATA-GUEST-EVENTLOG-END"
  for p in /sys/class/tpm/tpm0/pcr-sha256/*; do
    [ -r $p ] && echo "STRATA-GUEST-PCR ${p##*/} $(cat $p)"
  done
fi
ip link set lo up
nic() {
  i=0
  while [ $i -lt 50 ]; do
    for n in /sys/class/net/*; do
      if [ "$(cat $n/address)" = "$1" ]; then
        d=${n##*/}
        ip link set dev $d up && ip addr add $2 dev $d && echo "STRATA-GUEST-NET $d $1 $2 via $3"
        ip route add default via $3 dev $d 2>/dev/null
        return
      fi
    done
    sleep 0.1; i=$((i+1))
  done
  echo "STRATA-GUEST-NET-MISSING $1"
}
for e in /sys/firmware/dmi/entries/11-*; do
  [ -r $e/raw ] || continue
  tail -c +6 $e/raw | tr '\000' '\n' | while read -r s; do
    case "$s" in strata-net*=*) nic ${s#*=};; esac
  done
done
echo "STRATA-GUEST-READY"
while true; do sleep 3600; done
"#;

/// A built tiny image.
#[derive(Debug, Clone)]
pub struct TinyImage {
    /// The bootable disk (qcow2): what a VM is created from.
    pub disk: PathBuf,
    /// The same disk as raw GPT (the ESP starts at [`ESP_START_SECTOR`]).
    pub raw_disk: PathBuf,
    /// The signed UKI that is on the ESP as `\EFI\BOOT\BOOTX64.EFI`.
    pub uki: PathBuf,
    /// The kernel package it was built from, e.g. `linux-image-6.1.0-56-cloud-amd64 6.1.192-2`.
    pub kernel: String,
    /// Whether an earlier build with the same inputs was reused.
    pub cached: bool,
}

/// Building the image failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Command(#[from] CmdError),
    #[error("cannot {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Package(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = what.into();
    move |source| ImageError::Io { what, source }
}

/// Writes Debian's OVMF snakeoil signing key, unencrypted, to `out` (mode 0600): `sbsign` needs
/// a clear key and Debian ships this one encrypted under the public passphrase `snakeoil`. The
/// passphrase reaches `openssl` through its environment, never argv. Development and tests only.
pub fn decrypt_snakeoil_key(out: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt as _;
    let output = Command::new("openssl")
        .args(["pkey", "-in", crate::qemu::SNAKEOIL_KEY])
        .args(["-passin", "env:STRATA_SNAKEOIL_PASS", "-out"])
        .arg(out)
        .env("STRATA_SNAKEOIL_PASS", "snakeoil")
        .output()
        .map_err(io(
            "run openssl to decrypt the snakeoil key (install the Debian packages openssl and ovmf)",
        ))?;
    if !output.status.success() {
        return Err(ImageError::Package(format!(
            "openssl could not decrypt {} (install the Debian package ovmf): {}",
            crate::qemu::SNAKEOIL_KEY,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    fs::set_permissions(out, fs::Permissions::from_mode(0o600))
        .map_err(io(format!("chmod {}", out.display())))
}

/// [`build_tiny_with_progress`] printing progress lines to stderr.
pub fn build_tiny(
    out_dir: &Path,
    signing_key: &Path,
    signing_cert: &Path,
) -> Result<TinyImage, ImageError> {
    build_tiny_with_progress(out_dir, signing_key, signing_cert, &mut |line| {
        eprintln!("strata image build tiny: {line}");
    })
}

/// Builds (or reuses) the tiny image in `out_dir`, signing the UKI with `signing_key` (an
/// unencrypted PEM private key) and `signing_cert` (PEM). `progress` gets one line per step.
pub fn build_tiny_with_progress(
    out_dir: &Path,
    signing_key: &Path,
    signing_cert: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<TinyImage, ImageError> {
    fs::create_dir_all(out_dir).map_err(io(format!("create {}", out_dir.display())))?;
    // One build at a time per directory, whoever calls (tests, benchmarks and the agent share
    // one cache); released when the function returns.
    let lock = fs::File::create(out_dir.join("build.lock"))
        .map_err(io(format!("create {}/build.lock", out_dir.display())))?;
    lock.lock()
        .map_err(io(format!("lock {}/build.lock", out_dir.display())))?;
    let (kernel_pkg, kernel_version) = kernel_package()?;
    let kernel = format!("{kernel_pkg} {kernel_version}");
    let disk = out_dir.join("disk.qcow2");
    let raw_disk = out_dir.join("disk.raw");
    let uki = out_dir.join("BOOTX64.EFI");
    let inputs = describe_inputs(&kernel, signing_cert)?;
    let inputs_file = out_dir.join("inputs.txt");
    if fs::read_to_string(&inputs_file).is_ok_and(|s| s == inputs)
        && disk.exists()
        && raw_disk.exists()
        && uki.exists()
    {
        progress(&format!("reusing {} (inputs unchanged)", disk.display()));
        return Ok(TinyImage {
            disk,
            raw_disk,
            uki,
            kernel,
            cached: true,
        });
    }
    let _ = fs::remove_file(&inputs_file);

    // 1. The kernel, downloaded and unpacked (never installed).
    let debs = out_dir.join("cache/debs");
    fs::create_dir_all(&debs).map_err(io("create the package cache"))?;
    let prefix = format!("{kernel_pkg}_");
    let deb = find_deb(&debs, &prefix, &kernel_version)?;
    let deb = match deb {
        Some(d) => d,
        None => {
            progress(&format!("downloading {kernel}"));
            cmd::run(
                Command::new("apt-get")
                    .current_dir(&debs)
                    .args(["download", "-q"])
                    .arg(format!("{kernel_pkg}={kernel_version}")),
            )?;
            find_deb(&debs, &prefix, &kernel_version)?.ok_or_else(|| {
                ImageError::Package(format!("apt-get download left no {prefix}*.deb"))
            })?
        }
    };
    let unpacked = out_dir.join("cache/kernel");
    let _ = fs::remove_dir_all(&unpacked);
    progress(&format!("unpacking {}", deb.display()));
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let kver = kernel_pkg
        .strip_prefix("linux-image-")
        .unwrap_or(&kernel_pkg);
    let vmlinuz = unpacked.join(format!("boot/vmlinuz-{kver}"));
    let kernel_len = fs::metadata(&vmlinuz)
        .map_err(io(format!("read {}", vmlinuz.display())))?
        .len();

    // 2. The initramfs and the small sections.
    progress("writing the busybox initramfs");
    let initrd = out_dir.join("initrd.cpio");
    let modules = unpacked.join(format!("lib/modules/{kver}/kernel/drivers"));
    let modules: Vec<PathBuf> = MODULES.iter().map(|m| modules.join(m)).collect();
    write_initramfs(&initrd, &modules)?;
    let cmdline = out_dir.join("cmdline.txt");
    fs::write(&cmdline, CMDLINE).map_err(io("write the command line"))?;
    let osrel = out_dir.join("os-release");
    fs::write(
        &osrel,
        "ID=strata-tiny\nNAME=\"Strata tiny image\"\nPRETTY_NAME=\"Strata tiny image\"\n",
    )
    .map_err(io("write os-release"))?;

    // 3. The UKI, then its signature.
    progress("assembling the UKI on the systemd-boot stub");
    const LINUX_VMA: u64 = 0x200_0000;
    let initrd_vma = (LINUX_VMA + kernel_len).next_multiple_of(0x100_0000);
    let unsigned = out_dir.join("uki.unsigned.efi");
    let section = |name: &str, file: &Path, vma: u64| {
        [
            "--add-section".to_owned(),
            format!("{name}={}", file.display()),
            "--change-section-vma".to_owned(),
            format!("{name}={vma:#x}"),
        ]
    };
    cmd::run(
        Command::new("objcopy")
            .args(section(".osrel", &osrel, 0x20000))
            .args(section(".cmdline", &cmdline, 0x30000))
            .args(section(".linux", &vmlinuz, LINUX_VMA))
            .args(section(".initrd", &initrd, initrd_vma))
            .arg(UKI_STUB)
            .arg(&unsigned),
    )?;
    progress("signing the UKI with sbsign");
    cmd::run(
        Command::new("sbsign")
            .arg("--key")
            .arg(signing_key)
            .arg("--cert")
            .arg(signing_cert)
            .arg("--output")
            .arg(&uki)
            .arg(&unsigned),
    )?;
    cmd::run(
        Command::new("sbverify")
            .arg("--cert")
            .arg(signing_cert)
            .arg(&uki),
    )?;
    let _ = fs::remove_file(&unsigned);

    // 4. The disk.
    progress("writing the GPT disk and its ESP");
    make_disk(&raw_disk, &uki)?;
    progress("converting to qcow2");
    cmd::run(
        Command::new(crate::binaries::qemu_img())
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(&raw_disk)
            .arg(&disk),
    )?;
    fs::write(&inputs_file, &inputs).map_err(io("record the image inputs"))?;
    progress(&format!("done: {}", disk.display()));
    Ok(TinyImage {
        disk,
        raw_disk,
        uki,
        kernel,
        cached: false,
    })
}

/// The concrete kernel package behind [`KERNEL_META`] and its candidate version.
fn kernel_package() -> Result<(String, String), ImageError> {
    let deps = cmd::stdout(Command::new("apt-cache").args(["depends", KERNEL_META]))?;
    let pkg = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_owned)
        .ok_or_else(|| {
            ImageError::Package(format!(
                "{KERNEL_META} depends on no linux-image package: run apt-get update"
            ))
        })?;
    let show = cmd::stdout(Command::new("apt-cache").args(["show", "--no-all-versions", &pkg]))?;
    let version = show
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| ImageError::Package(format!("apt-cache shows no version of {pkg}")))?;
    Ok((pkg, version))
}

fn find_deb(dir: &Path, prefix: &str, version: &str) -> Result<Option<PathBuf>, ImageError> {
    // apt-get download escapes ':' in epochs as %3a.
    let version = version.replace(':', "%3a");
    for entry in fs::read_dir(dir).map_err(io(format!("list {}", dir.display())))? {
        let path = entry.map_err(io(format!("list {}", dir.display())))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with(prefix) && name.contains(&version) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// A text naming every input of the build; equal text means an equal image.
fn describe_inputs(kernel: &str, cert: &Path) -> Result<String, ImageError> {
    let digest = |p: &Path| -> Result<String, ImageError> {
        let bytes = fs::read(p).map_err(io(format!("read {}", p.display())))?;
        Ok(format!(
            "{} bytes, siphash {:016x}",
            bytes.len(),
            hash(&bytes)
        ))
    };
    Ok(format!(
        "format 3\nkernel {kernel}\nmodules {}\nbusybox {}\nstub {}\ncert {}\ninit {:016x}\ncmdline {CMDLINE}\n",
        MODULES.join(" "),
        digest(Path::new(BUSYBOX))?,
        digest(Path::new(UKI_STUB))?,
        digest(cert)?,
        hash(INIT.as_bytes()),
    ))
}

/// A cache key, not a security check (std's SipHash with fixed keys).
fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// A newc cpio archive with fixed timestamps and inode numbers, so its bytes depend only on
/// busybox, the modules and `/init`. (The same format as xtask's event-log capture writes; duplicated
/// because xtask exports nothing.)
fn write_initramfs(path: &Path, modules: &[PathBuf]) -> Result<(), ImageError> {
    let busybox = fs::read(BUSYBOX).map_err(|source| {
        ImageError::Command(CmdError::Missing {
            program: BUSYBOX.to_owned(),
            package: "busybox-static",
            source,
        })
    })?;
    let mut module_files = Vec::new();
    for m in modules {
        let name = m
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = fs::read(m).map_err(io(format!("read the kernel module {}", m.display())))?;
        module_files.push((format!("modules/{name}"), bytes));
    }
    let mut cpio = Vec::new();
    let mut ino = 1u32;
    let mut entry = |name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        let nlink = if mode & 0o040000 != 0 { 2 } else { 1 };
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
    for d in ["bin", "dev", "proc", "sys", "modules"] {
        entry(d, DIR, (0, 0), &[]);
    }
    for (name, bytes) in &module_files {
        entry(name, 0o100644, (0, 0), bytes);
    }
    entry("dev/console", 0o020600, (5, 1), &[]);
    entry("bin/busybox", 0o100755, (0, 0), &busybox);
    entry("init", 0o100755, (0, 0), INIT.as_bytes());
    entry("TRAILER!!!", 0, (0, 0), &[]);
    while !cpio.len().is_multiple_of(512) {
        cpio.push(0);
    }
    fs::write(path, &cpio).map_err(io(format!("write {}", path.display())))
}

fn pad4(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// The mtools image spec for the ESP inside a raw GPT disk (`file@@offset`, no loop mount).
pub fn esp_spec(raw_disk: &Path) -> String {
    format!("{}@@{}", raw_disk.display(), ESP_START_SECTOR * 512)
}

/// A GPT disk with one EFI system partition holding `uki` at the removable-media boot path.
fn make_disk(disk: &Path, uki: &Path) -> Result<(), ImageError> {
    let _ = fs::remove_file(disk);
    let file = fs::File::create(disk).map_err(io(format!("create {}", disk.display())))?;
    file.set_len(DISK_BYTES)
        .map_err(io(format!("size {}", disk.display())))?;
    drop(file);
    cmd::run(
        Command::new("sgdisk")
            .arg("-o")
            .arg(format!("--new=1:{ESP_START_SECTOR}:0"))
            .args(["--typecode=1:EF00", "--change-name=1:ESP"])
            .arg(format!("--disk-guid={DISK_GUID}"))
            .arg(format!("--partition-guid=1:{ESP_GUID}"))
            .arg(disk),
    )?;
    let esp = esp_spec(disk);
    let mtool = |tool: &str| {
        let mut c = Command::new(tool);
        c.arg("-i").arg(&esp);
        c
    };
    cmd::run(mtool("mformat").args(["-F", "-v", "ESP", "-N", "5354524b", "::"]))?;
    cmd::run(mtool("mmd").args(["::/EFI", "::/EFI/BOOT"]))?;
    cmd::run(mtool("mcopy").arg(uki).arg(ESP_BOOT_PATH))?;
    Ok(())
}
