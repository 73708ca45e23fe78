//! Shared fixtures: the tiny image (built once, cached under `target/strata-compute-cache/`,
//! guarded by a file lock because nextest runs tests as parallel processes), required
//! programs, and tampered copies of the image.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use strata_compute::COMPUTE_PACKAGES;
use strata_compute::image::{self, TinyImage};
use strata_compute::qemu::{SNAKEOIL_CERT, SNAKEOIL_KEY};

/// Panics with an install hint unless every program is on PATH.
pub fn require(programs: &[&str]) {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {p}"))
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "missing programs {missing:?}: install the Debian packages {} \
         (qemu-system-x86 from the same suite as qemu-utils)",
        COMPUTE_PACKAGES.join(" ")
    );
    for f in [
        SNAKEOIL_KEY,
        SNAKEOIL_CERT,
        strata_compute::qemu::OVMF_CODE_SECBOOT,
    ] {
        assert!(
            Path::new(f).exists(),
            "{f} is missing: install the Debian package ovmf"
        );
    }
}

pub const VM_PROGRAMS: &[&str] = &["qemu-system-x86_64", "qemu-img", "swtpm"];
pub const IMAGE_PROGRAMS: &[&str] = &[
    "apt-get", "dpkg-deb", "objcopy", "sbsign", "sbverify", "sbattach", "sgdisk", "mformat",
    "mcopy", "mmd", "qemu-img", "openssl",
];

fn cache_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("strata-compute-cache")
}

/// The tiny image signed with Debian's snakeoil key (reused while its inputs are unchanged).
pub fn tiny_image() -> TinyImage {
    require(IMAGE_PROGRAMS);
    let root = cache_root();
    fs::create_dir_all(&root).unwrap();
    let lock = File::create(root.join("build.lock")).unwrap();
    lock.lock().unwrap();
    // sbsign needs an unencrypted key; Debian ships the snakeoil key encrypted with the
    // (public) passphrase "snakeoil". Passed through the environment, not argv.
    let key = root.join("snakeoil.key");
    if !key.exists() {
        let status = Command::new("openssl")
            .args([
                "pkey",
                "-in",
                SNAKEOIL_KEY,
                "-passin",
                "env:SNAKEOIL_PASS",
                "-out",
            ])
            .arg(&key)
            .env("SNAKEOIL_PASS", "snakeoil")
            .status()
            .unwrap();
        assert!(status.success(), "cannot decrypt {SNAKEOIL_KEY}");
    }
    let started = std::time::Instant::now();
    let img = image::build_tiny(&root.join("tiny"), &key, Path::new(SNAKEOIL_CERT)).unwrap();
    eprintln!(
        "tiny image {} ({}, cached: {}) in {:.1} s",
        img.disk.display(),
        img.kernel,
        img.cached,
        started.elapsed().as_secs_f64()
    );
    lock.unlock().unwrap();
    img
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A copy of `img` in `dir` whose `\EFI\BOOT\BOOTX64.EFI` went through `edit` first; returns
/// the qcow2 disk.
pub fn altered_copy(img: &TinyImage, dir: &Path, edit: &dyn Fn(&Path)) -> PathBuf {
    let raw = dir.join("altered.raw");
    fs::copy(&img.raw_disk, &raw).unwrap();
    let esp = image::esp_spec(&raw);
    let efi = dir.join("BOOTX64.EFI");
    run(Command::new("mcopy")
        .args(["-n", "-i", &esp, image::ESP_BOOT_PATH])
        .arg(&efi));
    edit(&efi);
    run(Command::new("mcopy")
        .args(["-o", "-i", &esp])
        .arg(&efi)
        .arg(image::ESP_BOOT_PATH));
    let qcow = dir.join("altered.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow));
    qcow
}

/// Flips one byte in the middle of the file (inside the embedded kernel for a UKI).
pub fn flip_a_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

/// Removes the Authenticode signature.
pub fn strip_signature(path: &Path) {
    run(Command::new("sbattach").arg("--remove").arg(path));
}
