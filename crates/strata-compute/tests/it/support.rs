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
    let key = root.join("snakeoil.key");
    if !key.exists() {
        image::decrypt_snakeoil_key(&key).unwrap();
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

/// 32 random bytes for a test key.
pub fn random_key() -> [u8; 32] {
    use std::io::Read as _;
    let mut key = [0; 32];
    File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut key)
        .unwrap();
    key
}

/// Every form a 32-byte key could leak in: raw, hex (both cases), base64 (standard and
/// URL-safe, padded).
pub fn leak_forms(key: &[u8; 32]) -> Vec<(&'static str, Vec<u8>)> {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        ("raw", key.to_vec()),
        ("hex", hex.clone().into_bytes()),
        ("HEX", hex.to_uppercase().into_bytes()),
        ("base64", base64(key, b'+', b'/').into_bytes()),
        ("base64url", base64(key, b'-', b'_').into_bytes()),
    ]
}

fn base64(bytes: &[u8], c62: u8, c63: u8) -> String {
    let mut alphabet = *b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789++";
    alphabet[62] = c62;
    alphabet[63] = c63;
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(files_under(&entry.path()));
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    out
}

/// The guest-visible contents of an encrypted qcow2 `disk` (with its backing chain), decrypted
/// with the LUKS passphrase `passphrase` (the disk key in lowercase hex, as the driver uses it),
/// or `qemu-img`'s error. The passphrase goes to `qemu-img` on stdin, never in argv.
pub fn decrypt_disk(disk: &Path, passphrase: &str, scratch: &Path) -> Result<Vec<u8>, String> {
    use std::io::Write as _;
    let out = scratch.join("decrypted.raw");
    let _ = fs::remove_file(&out);
    let mut child = Command::new("qemu-img")
        .args([
            "convert",
            "--object",
            "secret,id=k,file=/dev/stdin",
            "--image-opts",
        ])
        .arg(format!(
            "driver=qcow2,file.filename={},encrypt.key-secret=k",
            disk.display()
        ))
        .args(["-O", "raw"])
        .arg(&out)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(passphrase.as_bytes())
        .unwrap();
    let done = child.wait_with_output().unwrap();
    if !done.status.success() {
        return Err(String::from_utf8_lossy(&done.stderr).trim().to_owned());
    }
    let bytes = fs::read(&out).unwrap();
    fs::remove_file(&out).unwrap();
    Ok(bytes)
}

#[test]
fn leak_forms_include_standard_base64() {
    let key: [u8; 32] = std::array::from_fn(|i| i as u8);
    let forms = leak_forms(&key);
    let b64 = &forms.iter().find(|(n, _)| *n == "base64").unwrap().1;
    assert_eq!(b64, b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
}
