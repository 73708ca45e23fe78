//! Importing a disk image someone uploaded: raw or qcow2 in, one canonical qcow2 out, or a
//! refusal that says why.
//!
//! An uploaded image is hostile input. The classic attack is a qcow2 whose header names a
//! *backing file* or an *external data file* such as `/etc/shadow` or a host block device:
//! any tool that opens the image with the host's privileges then reads that file, and a
//! conversion copies it into the image, where the uploader reads it back. The second is a
//! file that lies about its format (a qcow2 header inside a "raw" upload, which a probing tool
//! would then interpret). So [`import`] runs, in this order:
//!
//! ```text
//!  upload ──▶ 1. header check (this module, pure Rust, before any tool opens the file):
//!               raw must not carry a qcow2 header; qcow2 must be version 2 or 3, unencrypted,
//!               with no backing file, no external-data-file feature bit, no data-file
//!               header extension
//!         ──▶ 2. qemu-img info --output=json -f FORMAT (never format probing), with a CPU
//!               time and address-space limit: the same checks on QEMU's own reading, plus the
//!               virtual size (0 < size <= limit) and corruption flags
//!         ──▶ 3. qemu-img convert -f FORMAT -O qcow2: a fresh qcow2 with no backing file, no
//!               data file, no snapshots; its size is watched and the conversion is killed if it
//!               grows past the limit (a small compressed qcow2 can expand a lot)
//!         ──▶ 4. qemu-img info on the result: qcow2, same virtual size
//! ```
//!
//! The result is deterministic for a given input (the same upload gives the same bytes, so
//! the same SHA-256), which is what makes the control plane's image store content-addressed.

use std::fs::File;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{self, CmdError, describe, spawn_error};

/// The first four bytes of every qcow2 image (`QFI\xfb`).
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";
/// qcow2 incompatible feature bit 2: the guest data lives in an external data file.
const QCOW2_EXTERNAL_DATA: u64 = 1 << 2;
/// qcow2 header extension naming the external data file (`DATA`).
const QCOW2_EXT_DATA_FILE: u32 = 0x4441_5441;
/// The most of an image's start that the header check reads (qcow2 header extensions end
/// within the first cluster; clusters are at most 2 MiB).
const HEADER_READ_MAX: u64 = 2 << 20;
/// What `qemu-img info` may use on an uploaded file.
const INFO_CPU_SECS: u64 = 30;
const INFO_ADDRESS_SPACE: u64 = 1 << 30;

/// The formats an image may be uploaded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
}

impl Format {
    /// `raw` or `qcow2` (case-insensitive).
    pub fn parse(s: &str) -> Option<Format> {
        if s.eq_ignore_ascii_case("raw") {
            Some(Format::Raw)
        } else if s.eq_ignore_ascii_case("qcow2") {
            Some(Format::Qcow2)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }

    /// The format a file's first bytes say it is: qcow2 if it starts with the qcow2 magic,
    /// else raw (a hint for clients; [`import`] checks the declared format itself).
    pub fn detect(prefix: &[u8]) -> Format {
        if prefix.starts_with(&QCOW2_MAGIC) {
            Format::Qcow2
        } else {
            Format::Raw
        }
    }
}

/// How far an import may go.
#[derive(Clone, Copy, Debug)]
pub struct ImportLimits {
    /// The largest virtual disk size accepted (what the guest would see).
    pub max_virtual_bytes: u64,
    /// The largest canonical qcow2 the conversion may write.
    pub max_output_bytes: u64,
}

/// A successful import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// The disk size the guest sees, bytes.
    pub virtual_size: u64,
    /// The canonical qcow2's file size, bytes.
    pub size_bytes: u64,
}

/// Why an import did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file is not acceptable; the message says why and what to do (a client error).
    #[error("{0}")]
    Refused(String),
    /// A tool failed on the host (a server error).
    #[error(transparent)]
    Command(#[from] CmdError),
    #[error("cannot {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImportError {
    let what = what.into();
    move |source| ImportError::Io { what, source }
}

fn refuse(msg: impl Into<String>) -> ImportError {
    ImportError::Refused(msg.into())
}

/// What the header check found in a qcow2 header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qcow2Header {
    pub version: u32,
    pub virtual_size: u64,
    pub cluster_bits: u32,
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
}

/// Step 1 for qcow2: reads the header (and its extensions) from the image's first bytes and
/// refuses anything that would make a tool open another file, or that is encrypted. Pure.
pub fn check_qcow2_header(b: &[u8]) -> Result<Qcow2Header, String> {
    check_header(b, Encrypted::Refused)
}

/// The header check for a snapshot a host sends back (`Strata.Compute/snapshots`): the same
/// refusals of other files, and the image must be LUKS-encrypted (qcow2 `crypt_method` 2):
/// plaintext never lands in the control plane's store. Pure.
pub fn check_snapshot_header(b: &[u8]) -> Result<Qcow2Header, String> {
    check_header(b, Encrypted::Required)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encrypted {
    Refused,
    Required,
}

fn check_header(b: &[u8], encrypted: Encrypted) -> Result<Qcow2Header, String> {
    let short = || "the file is too short to be a qcow2 image".to_string();
    if !b.starts_with(&QCOW2_MAGIC) {
        return Err(
            "the file is not a qcow2 image (no qcow2 header): upload it with format raw".into(),
        );
    }
    let version = be_u32(b, 4).ok_or_else(short)?;
    if version != 2 && version != 3 {
        return Err(format!(
            "qcow2 version {version} is not supported: use version 2 or 3 (qemu-img amend -o compat=1.1)"
        ));
    }
    let backing_offset = be_u64(b, 8).ok_or_else(short)?;
    let backing_size = be_u32(b, 16).ok_or_else(short)?;
    if backing_offset != 0 || backing_size != 0 {
        return Err(
            "the qcow2 image has a backing file: upload a standalone image (qemu-img convert -O qcow2 flattens it)"
                .into(),
        );
    }
    let cluster_bits = be_u32(b, 20).ok_or_else(short)?;
    if !(9..=21).contains(&cluster_bits) {
        return Err(format!(
            "the qcow2 header is invalid: cluster_bits {cluster_bits}"
        ));
    }
    let virtual_size = be_u64(b, 24).ok_or_else(short)?;
    let crypt_method = be_u32(b, 32).ok_or_else(short)?;
    if encrypted == Encrypted::Required {
        if crypt_method != 2 {
            return Err(format!(
                "the snapshot is not LUKS-encrypted (qcow2 crypt_method {crypt_method})"
            ));
        }
    } else if crypt_method != 0 {
        return Err(
            "the qcow2 image is encrypted: upload it unencrypted (every VM disk is encrypted by Strata)"
                .into(),
        );
    }
    let extensions_at = if version == 3 {
        let incompatible = be_u64(b, 72).ok_or_else(short)?;
        if incompatible & QCOW2_EXTERNAL_DATA != 0 {
            return Err(
                "the qcow2 image keeps its data in an external data file: upload a standalone image (qemu-img convert -O qcow2)"
                    .into(),
            );
        }
        let header_length = be_u32(b, 100).ok_or_else(short)?;
        if header_length < 104 {
            return Err(format!(
                "the qcow2 header is invalid: header length {header_length}"
            ));
        }
        header_length as usize
    } else {
        72
    };
    // Header extensions: (type, length, data padded to 8 bytes) until type 0. Stop at the end
    // of what was read (a truncated list is the tool's problem, not a hidden file).
    let mut at = extensions_at;
    while let (Some(kind), Some(len)) = (be_u32(b, at), be_u32(b, at + 4)) {
        if kind == 0 {
            break;
        }
        if kind == QCOW2_EXT_DATA_FILE {
            return Err(
                "the qcow2 image names an external data file: upload a standalone image (qemu-img convert -O qcow2)"
                    .into(),
            );
        }
        at = at
            .saturating_add(8)
            .saturating_add((len as usize).next_multiple_of(8));
    }
    Ok(Qcow2Header {
        version,
        virtual_size,
        cluster_bits,
    })
}

/// What `qemu-img info --output=json` says about an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    pub format: String,
    pub virtual_size: u64,
    pub backing_file: Option<String>,
    pub data_file: Option<String>,
    pub encrypted: bool,
    pub corrupt: bool,
}

/// Parses `qemu-img info --output=json`. Pure.
pub fn parse_info(json: &str) -> Result<Info, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("qemu-img info is not JSON: {e}"))?;
    let text = |p: &str| v.pointer(p).and_then(|x| x.as_str()).map(str::to_owned);
    Ok(Info {
        format: text("/format").ok_or("qemu-img info names no format")?,
        virtual_size: v
            .pointer("/virtual-size")
            .and_then(serde_json::Value::as_u64)
            .ok_or("qemu-img info gives no virtual size")?,
        backing_file: text("/backing-filename").or_else(|| text("/full-backing-filename")),
        data_file: text("/format-specific/data/data-file"),
        encrypted: v
            .pointer("/encrypted")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        corrupt: v
            .pointer("/format-specific/data/corrupt")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
    })
}

/// Step 2's verdict on what QEMU read. Pure.
pub fn check_info(info: &Info, declared: Format, limits: &ImportLimits) -> Result<(), String> {
    if info.format != declared.as_str() {
        return Err(format!(
            "qemu-img reads the file as {}, not {}",
            info.format,
            declared.as_str()
        ));
    }
    if info.backing_file.is_some() {
        return Err("the qcow2 image has a backing file: upload a standalone image".into());
    }
    if info.data_file.is_some() {
        return Err(
            "the qcow2 image names an external data file: upload a standalone image".into(),
        );
    }
    if info.encrypted {
        return Err("the image is encrypted: upload it unencrypted".into());
    }
    if info.corrupt {
        return Err("the qcow2 image is marked corrupt: repair it (qemu-img check -r all)".into());
    }
    if info.virtual_size == 0 {
        return Err("the image's virtual size is 0".into());
    }
    if info.virtual_size > limits.max_virtual_bytes {
        return Err(format!(
            "the image's virtual size is {} bytes; at most {} bytes are accepted",
            info.virtual_size, limits.max_virtual_bytes
        ));
    }
    Ok(())
}

/// Validates `src` (uploaded as `declared`) and writes its canonical qcow2 to `out` (which must
/// not exist). `out` is removed again on any failure.
pub fn import(
    src: &Path,
    declared: Format,
    out: &Path,
    limits: &ImportLimits,
) -> Result<Imported, ImportError> {
    let result = import_inner(src, declared, out, limits);
    if result.is_err() {
        let _ = std::fs::remove_file(out);
    }
    result
}

fn import_inner(
    src: &Path,
    declared: Format,
    out: &Path,
    limits: &ImportLimits,
) -> Result<Imported, ImportError> {
    // 1. The header, before any tool opens the file.
    let mut head = Vec::new();
    File::open(src)
        .map_err(io(format!("open {}", src.display())))?
        .take(HEADER_READ_MAX)
        .read_to_end(&mut head)
        .map_err(io(format!("read {}", src.display())))?;
    match declared {
        Format::Qcow2 => {
            let h = check_qcow2_header(&head).map_err(refuse)?;
            if h.virtual_size > limits.max_virtual_bytes {
                return Err(refuse(format!(
                    "the image's virtual size is {} bytes; at most {} bytes are accepted",
                    h.virtual_size, limits.max_virtual_bytes
                )));
            }
        }
        Format::Raw => {
            if Format::detect(&head) == Format::Qcow2 {
                return Err(refuse(
                    "the file is a qcow2 image, not raw: upload it with format qcow2",
                ));
            }
        }
    }

    // 2. QEMU's reading of it, never probing the format, with bounded resources.
    let info = qemu_img_info(src, declared, true)?;
    check_info(&info, declared, limits).map_err(refuse)?;

    // 3. The canonical qcow2, its growth watched.
    let mut cmd = Command::new(crate::binaries::qemu_img());
    cmd.args(["convert", "-q", "-f", declared.as_str(), "-O", "qcow2"])
        .args(["-o", "compat=1.1"])
        .arg(src)
        .arg(out);
    run_bounded(&mut cmd, out, limits.max_output_bytes)?;

    // 4. The result is what we meant to write.
    let result = qemu_img_info(out, Format::Qcow2, false)?;
    if result.format != "qcow2"
        || result.virtual_size != info.virtual_size
        || result.backing_file.is_some()
        || result.data_file.is_some()
    {
        return Err(refuse(format!(
            "the converted image is not what was uploaded ({} of {} bytes)",
            result.format, result.virtual_size
        )));
    }
    let size_bytes = std::fs::metadata(out)
        .map_err(io(format!("stat {}", out.display())))?
        .len();
    Ok(Imported {
        virtual_size: info.virtual_size,
        size_bytes,
    })
}

/// `qemu-img info --output=json -f FORMAT path`; `bounded`: with a CPU-time and address-space
/// limit (for uploaded files).
fn qemu_img_info(path: &Path, format: Format, bounded: bool) -> Result<Info, ImportError> {
    let mut cmd = Command::new(crate::binaries::qemu_img());
    cmd.args(["info", "--output=json", "-f", format.as_str()])
        .arg(path);
    if bounded {
        limit_resources(&mut cmd);
    }
    let out = match cmd::run(&mut cmd) {
        Ok(out) => out,
        // qemu-img could not read the file as the declared format: the upload's fault.
        Err(CmdError::Failed { stderr, .. }) => {
            return Err(refuse(format!(
                "qemu-img cannot read the file as {}: {}",
                format.as_str(),
                stderr.lines().last().unwrap_or("").trim()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    parse_info(&String::from_utf8_lossy(&out.stdout)).map_err(|e| {
        ImportError::Command(CmdError::Failed {
            command: describe(&cmd),
            status: "an unexpected answer".into(),
            stderr: e,
        })
    })
}

/// Runs `cmd` to completion, killing it if `watched` grows past `max_bytes`.
fn run_bounded(cmd: &mut Command, watched: &Path, max_bytes: u64) -> Result<(), ImportError> {
    tracing::debug!(command = %describe(cmd), "run");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(cmd, e))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(io("wait for qemu-img"))? {
            if status.success() {
                return Ok(());
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(CmdError::Failed {
                command: describe(cmd),
                status: status.to_string(),
                stderr: err.trim().to_owned(),
            }
            .into());
        }
        let size = std::fs::metadata(watched).map(|m| m.len()).unwrap_or(0);
        if size > max_bytes {
            let _ = child.kill();
            let _ = child.wait();
            return Err(refuse(format!(
                "the image expands to more than {max_bytes} bytes when converted; upload a smaller image"
            )));
        }
        // Poll fast at first (small images convert in milliseconds), then every 200 ms.
        let step = if started.elapsed() < Duration::from_secs(1) {
            10
        } else {
            200
        };
        std::thread::sleep(Duration::from_millis(step));
    }
}

/// Gives `cmd` a CPU-time and address-space limit (`setrlimit` in the child before exec), so
/// a malformed image cannot make a tool spin or allocate without bound.
fn limit_resources(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    #[expect(
        unsafe_code,
        reason = "resource limits must be set in the child between fork and exec"
    )]
    // SAFETY: runs in the forked child before exec; setrlimit(2) is async-signal-safe and the
    // closure touches nothing but its own stack.
    unsafe {
        cmd.pre_exec(|| {
            for (resource, value) in [
                (libc::RLIMIT_CPU, INFO_CPU_SECS),
                (libc::RLIMIT_AS, INFO_ADDRESS_SPACE),
            ] {
                let limit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The SHA-256 (lowercase hex) and length of a file, read in 1 MiB pieces: how an image's
/// content is named, by the control plane that stores it and by the host that fetched it.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
    let hex = hash
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-3 qcow2 header (104 bytes + `extensions`) with the given fields.
    fn header(backing: u64, crypt: u32, incompatible: u64, extensions: &[(u32, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; 104];
        b[..4].copy_from_slice(&QCOW2_MAGIC);
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[8..16].copy_from_slice(&backing.to_be_bytes());
        b[16..20].copy_from_slice(&(if backing != 0 { 5u32 } else { 0 }).to_be_bytes());
        b[20..24].copy_from_slice(&16u32.to_be_bytes());
        b[24..32].copy_from_slice(&(64u64 << 20).to_be_bytes());
        b[32..36].copy_from_slice(&crypt.to_be_bytes());
        b[72..80].copy_from_slice(&incompatible.to_be_bytes());
        b[100..104].copy_from_slice(&104u32.to_be_bytes());
        for (kind, data) in extensions {
            b.extend_from_slice(&kind.to_be_bytes());
            b.extend_from_slice(&(data.len() as u32).to_be_bytes());
            b.extend_from_slice(data);
            while !b.len().is_multiple_of(8) {
                b.push(0);
            }
        }
        b.extend_from_slice(&[0; 8]);
        b
    }

    #[test]
    fn a_snapshot_header_must_be_luks_and_standalone() {
        assert!(check_snapshot_header(&header(0, 2, 0, &[])).is_ok());
        for (h, why) in [
            (header(0, 0, 0, &[]), "not LUKS-encrypted"),
            (header(0, 1, 0, &[]), "not LUKS-encrypted"),
            (header(512, 2, 0, &[]), "backing file"),
            (header(0, 2, QCOW2_EXTERNAL_DATA, &[]), "external data file"),
        ] {
            let err = check_snapshot_header(&h).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn the_header_check_refuses_other_files_and_encryption() {
        let ok = check_qcow2_header(&header(0, 0, 0, &[(0xe279_2aca, b"raw")])).unwrap();
        assert_eq!((ok.version, ok.virtual_size), (3, 64 << 20));
        for (bytes, expect) in [
            (header(0x200, 0, 0, &[]), "backing file"),
            (header(0, 2, 0, &[]), "encrypted"),
            (header(0, 0, QCOW2_EXTERNAL_DATA, &[]), "external data file"),
            (
                header(0, 0, 0, &[(QCOW2_EXT_DATA_FILE, b"/etc/shadow")]),
                "external data file",
            ),
            (b"QFI".to_vec(), "not a qcow2 image"),
            (vec![0; 512], "not a qcow2 image"),
            (QCOW2_MAGIC.to_vec(), "too short"),
        ] {
            let err = check_qcow2_header(&bytes).unwrap_err();
            assert!(err.contains(expect), "{expect}: {err}");
        }
    }

    #[test]
    fn info_is_read_and_judged() {
        let limits = ImportLimits {
            max_virtual_bytes: 1 << 30,
            max_output_bytes: 1 << 30,
        };
        let info = parse_info(
            r#"{"virtual-size": 67108864, "format": "qcow2", "backing-filename": "/etc/hostname",
                "format-specific": {"type": "qcow2", "data": {"corrupt": false}}}"#,
        )
        .unwrap();
        assert_eq!(info.backing_file.as_deref(), Some("/etc/hostname"));
        assert!(
            check_info(&info, Format::Qcow2, &limits)
                .unwrap_err()
                .contains("backing file")
        );
        let data = parse_info(
            r#"{"virtual-size": 1, "format": "qcow2",
                "format-specific": {"type": "qcow2", "data": {"data-file": "/dev/sda"}}}"#,
        )
        .unwrap();
        assert!(
            check_info(&data, Format::Qcow2, &limits)
                .unwrap_err()
                .contains("external data file")
        );
        let huge = parse_info(r#"{"virtual-size": 1099511627776, "format": "raw"}"#).unwrap();
        assert!(
            check_info(&huge, Format::Raw, &limits)
                .unwrap_err()
                .contains("at most 1073741824 bytes")
        );
        assert!(
            check_info(&huge, Format::Qcow2, &limits)
                .unwrap_err()
                .contains("reads the file as raw")
        );
        let fine = parse_info(r#"{"virtual-size": 4096, "format": "raw"}"#).unwrap();
        assert_eq!(check_info(&fine, Format::Raw, &limits), Ok(()));
    }

    #[test]
    fn formats_parse_and_detect() {
        assert_eq!(Format::parse("QCOW2"), Some(Format::Qcow2));
        assert_eq!(Format::parse("vmdk"), None);
        assert_eq!(Format::detect(b"QFI\xfb\0\0\0\x03"), Format::Qcow2);
        assert_eq!(Format::detect(b"\0\0"), Format::Raw);
    }
}
