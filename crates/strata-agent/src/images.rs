//! Base images on a host: platform image `NAME` is `<image-dir>/NAME/disk.qcow2`; an imported
//! image (a `Strata.Compute/images` resource) is `<image-dir>/sha256/<digest>.qcow2`, named by
//! the SHA-256 of its bytes.
//!
//! VMs run as their own uids and read their base image through a copy-on-write overlay, so the
//! image directory is 0755 and every `disk.qcow2` is world-readable (the QEMU driver checks
//! both). `tiny` is built here on demand (`strata_compute::image::build_tiny_with_progress`),
//! signed with the host's secure-boot signing key; any other missing image is the caller's
//! problem ("image NAME not found on host").
//!
//! Imported images come from the control plane, by digest, over the agent door
//! ([`ImageFetcher`]: the host's attestation-bound mTLS identity; the control plane hands a host
//! only the images of VMs assigned to it). The bytes land in a private temporary file, their
//! SHA-256 and length are checked against the assignment, and only then is the file made
//! world-readable and renamed into place. A cached image is hashed again before every use: a
//! file that no longer matches its name is removed and fetched again.
//!
//! The signing key: production hosts pass an unencrypted PEM key (readable by root only) and
//! its certificate, which the host's OVMF variables template must trust. Development hosts
//! use Debian's OVMF snakeoil pair, whose key ships encrypted under the public passphrase
//! `snakeoil`: it is decrypted into a private temporary directory for the build (the
//! passphrase reaches `openssl` through its environment, never argv) and removed afterwards.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use strata_compute::image::{ImageError, TinyImage};
use strata_compute::import::sha256_file;
use strata_compute::qemu::SNAKEOIL_CERT;

/// Where a host keeps its base images (outside the control plane's 0700 data directory: VM
/// uids must be able to pass through every ancestor).
pub const DEFAULT_IMAGE_DIR: &str = "/var/lib/strata-compute/images";
/// Where a host keeps its VMs' private directories (same reason).
pub const DEFAULT_VM_DIR: &str = "/var/lib/strata-compute/vms";
/// The image the agent can build itself.
pub const TINY: &str = "tiny";
const DISK: &str = "disk.qcow2";
/// Written last by the tiny-image build: its presence means the build completed.
const TINY_DONE: &str = "inputs.txt";

/// The key that signs the boot images this host builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigningKey {
    /// Debian's OVMF snakeoil pair (development and tests only: its private key is public).
    Snakeoil,
    /// An unencrypted PEM private key and its PEM certificate.
    Files { key: PathBuf, cert: PathBuf },
}

impl SigningKey {
    /// `--secure-boot-key`/`--secure-boot-cert`: both or neither (neither = snakeoil).
    pub fn from_options(key: Option<PathBuf>, cert: Option<PathBuf>) -> Result<Self, ImageProblem> {
        match (key, cert) {
            (None, None) => Ok(Self::Snakeoil),
            (Some(key), Some(cert)) => Ok(Self::Files { key, cert }),
            _ => Err(ImageProblem::Usage(
                "give both --secure-boot-key and --secure-boot-cert, or neither for Debian's \
                 snakeoil development pair"
                    .into(),
            )),
        }
    }

    /// The certificate path (what a verifier trusts).
    pub fn cert(&self) -> PathBuf {
        match self {
            Self::Snakeoil => PathBuf::from(SNAKEOIL_CERT),
            Self::Files { cert, .. } => cert.clone(),
        }
    }
}

/// Why an image is not available.
#[derive(Debug, thiserror::Error)]
pub enum ImageProblem {
    #[error("image {0} not found on host")]
    NotFound(String),
    #[error(
        "invalid image name {0:?}: use 1-63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
    )]
    BadName(String),
    #[error("cannot build the {name} image")]
    Build {
        name: String,
        #[source]
        source: ImageError,
    },
    #[error("cannot {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("cannot fetch image sha256:{sha256}: {reason}")]
    Fetch { sha256: String, reason: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageProblem {
    let what = what.into();
    move |source| ImageProblem::Io { what, source }
}

/// Image names become a directory name: nothing that could walk out of the image directory.
pub fn validate_name(name: &str) -> Result<(), ImageProblem> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ImageProblem::BadName(name.to_owned()))
    }
}

/// One image in the directory, for `strata image list`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageInfo {
    pub name: String,
    pub disk: PathBuf,
    pub size_bytes: u64,
    /// For built images: the kernel package they were built from.
    pub kernel: Option<String>,
    /// Unix seconds.
    pub modified: i64,
}

/// Where imported images come from: the control plane's agent door (`FabricClient`), or a
/// fake in tests.
pub trait ImageFetcher: Send + Sync {
    /// Writes the image content with this SHA-256 (at most `size_bytes` bytes) to `out`.
    fn fetch(
        &self,
        sha256: &str,
        size_bytes: u64,
        out: &mut dyn std::io::Write,
    ) -> Result<(), String>;
}

/// Whether `s` is a SHA-256 digest as image files are named: 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Hashes what is written through it.
struct Hashing<W> {
    inner: W,
    hash: ring::digest::Context,
    written: u64,
    limit: u64,
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written.saturating_add(buf.len() as u64) > self.limit {
            return Err(std::io::Error::other(format!(
                "the image is longer than the {} bytes assigned",
                self.limit
            )));
        }
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A host's image directory.
#[derive(Debug)]
pub struct ImageStore {
    dir: PathBuf,
    signing: SigningKey,
    /// One build at a time (two VMs asking for a missing `tiny` share one build).
    building: Mutex<()>,
}

impl ImageStore {
    pub fn new(dir: PathBuf, signing: SigningKey) -> Self {
        Self {
            dir,
            signing,
            building: Mutex::new(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn signing(&self) -> &SigningKey {
        &self.signing
    }

    /// The disk of image `name` if it is there (and, for `tiny`, completely built).
    pub fn find(&self, name: &str) -> Result<Option<PathBuf>, ImageProblem> {
        validate_name(name)?;
        let dir = self.dir.join(name);
        let disk = dir.join(DISK);
        let complete = disk.is_file() && (name != TINY || dir.join(TINY_DONE).is_file());
        Ok(complete.then_some(disk))
    }

    /// The disk of image `name`; builds `tiny` if it is missing (minutes: it downloads the
    /// kernel package), reporting each step to `progress`.
    pub fn resolve(
        &self,
        name: &str,
        progress: &mut dyn FnMut(&str),
    ) -> Result<PathBuf, ImageProblem> {
        if let Some(disk) = self.find(name)? {
            return Ok(disk);
        }
        if name != TINY {
            return Err(ImageProblem::NotFound(name.to_owned()));
        }
        let _one_build = self.building.lock().unwrap_or_else(PoisonError::into_inner);
        // Another VM's worker may have built it while this one waited.
        if let Some(disk) = self.find(name)? {
            return Ok(disk);
        }
        Ok(self.build_tiny(progress)?.disk)
    }

    /// The imported image with this digest and size: the cached copy if it still hashes to its
    /// name, else fetched through `fetcher` and verified first. Returns its path.
    pub fn resolve_content(
        &self,
        sha256: &str,
        size_bytes: u64,
        fetcher: Option<&dyn ImageFetcher>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<PathBuf, ImageProblem> {
        if !is_digest(sha256) {
            return Err(ImageProblem::BadName(sha256.to_owned()));
        }
        let dir = self.dir.join("sha256");
        let path = dir.join(format!("{sha256}.qcow2"));
        // One fetch at a time (two VMs from one image share it).
        let _one = self.building.lock().unwrap_or_else(PoisonError::into_inner);
        if path.is_file() {
            match sha256_file(&path) {
                Ok((d, n)) if d == sha256 && n == size_bytes => return Ok(path),
                Ok((d, n)) => {
                    tracing::warn!(image = %path.display(), found = %d, bytes = n,
                        "a cached image no longer matches its digest: removed, fetching it again");
                    fs::remove_file(&path).map_err(io(format!("remove {}", path.display())))?;
                }
                Err(e) => return Err(io(format!("read {}", path.display()))(e)),
            }
        }
        let fetcher = fetcher.ok_or_else(|| {
            ImageProblem::Usage(format!(
                "image sha256:{sha256} is not on this host and there is no control plane to fetch it from"
            ))
        })?;
        public_dir(&self.dir)?;
        public_dir(&dir)?;
        progress(&format!(
            "fetching image sha256:{sha256} ({size_bytes} bytes)"
        ));
        let tmp = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempfile_in(&dir)
            .map_err(io(format!("create a file in {}", dir.display())))?;
        let mut sink = Hashing {
            inner: std::io::BufWriter::new(tmp.as_file()),
            hash: ring::digest::Context::new(&ring::digest::SHA256),
            written: 0,
            limit: size_bytes,
        };
        fetcher
            .fetch(sha256, size_bytes, &mut sink)
            .map_err(|e| ImageProblem::Fetch {
                sha256: sha256.to_owned(),
                reason: e,
            })?;
        std::io::Write::flush(&mut sink).map_err(io("write the fetched image"))?;
        let got = strata_attest::hex(sink.hash.clone().finish().as_ref());
        let written = sink.written;
        drop(sink);
        if written != size_bytes || got != sha256 {
            return Err(ImageProblem::Fetch {
                sha256: sha256.to_owned(),
                reason: format!(
                    "the bytes received ({written} bytes, SHA-256 {got}) are not the image assigned ({size_bytes} bytes); not used"
                ),
            });
        }
        tmp.as_file()
            .sync_all()
            .map_err(io("write the fetched image"))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
            .map_err(io(format!("chmod {}", tmp.path().display())))?;
        tmp.persist(&path)
            .map_err(|e| io(format!("move the image to {}", path.display()))(e.error))?;
        progress(&format!("image sha256:{sha256} verified"));
        Ok(path)
    }

    /// Builds (or reuses) `tiny` in `<image-dir>/tiny`.
    pub fn build_tiny(&self, progress: &mut dyn FnMut(&str)) -> Result<TinyImage, ImageProblem> {
        public_dir(&self.dir)?;
        build_tiny_into(&self.dir.join(TINY), &self.signing, progress)
    }

    /// Every image in the directory (a missing directory is an empty list).
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageProblem> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(format!("list {}", self.dir.display()))(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io(format!("list {}", self.dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(Some(disk)) = self.find(&name) else {
                continue;
            };
            let meta = fs::metadata(&disk).map_err(io(format!("stat {}", disk.display())))?;
            let kernel = fs::read_to_string(entry.path().join(TINY_DONE))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("kernel ").map(str::to_owned))
                });
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            out.push(ImageInfo {
                name,
                disk,
                size_bytes: meta.len(),
                kernel,
                modified,
            });
        }
        // Imported images fetched from the control plane, by digest.
        if let Ok(entries) = fs::read_dir(self.dir.join("sha256")) {
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                let Some(digest) = file.strip_suffix(".qcow2").filter(|d| is_digest(d)) else {
                    continue;
                };
                let Ok(meta) = entry.metadata() else { continue };
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                out.push(ImageInfo {
                    name: format!("sha256:{digest}"),
                    disk: entry.path(),
                    size_bytes: meta.len(),
                    kernel: None,
                    modified,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// Creates `dir` (and its parents) and makes it 0755: VM uids read base images through it.
fn public_dir(dir: &Path) -> Result<(), ImageProblem> {
    fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(io(format!("chmod {}", dir.display())))
}

/// Builds (or reuses) the tiny image in `out` signed with `signing`; leaves `out` 0755 and
/// its disk 0644.
pub fn build_tiny_into(
    out: &Path,
    signing: &SigningKey,
    progress: &mut dyn FnMut(&str),
) -> Result<TinyImage, ImageProblem> {
    public_dir(out)?;
    let build = |key: &Path, cert: &Path, progress: &mut dyn FnMut(&str)| {
        strata_compute::image::build_tiny_with_progress(out, key, cert, progress).map_err(
            |source| ImageProblem::Build {
                name: TINY.into(),
                source,
            },
        )
    };
    let image = match signing {
        SigningKey::Files { key, cert } => build(key, cert, progress)?,
        SigningKey::Snakeoil => {
            progress("signing with Debian's OVMF snakeoil key (development only)");
            let private = tempfile::Builder::new()
                .prefix("strata-snakeoil-")
                .tempdir()
                .map_err(io("create a private directory for the snakeoil key"))?;
            let key = private.path().join("snakeoil.key");
            strata_compute::image::decrypt_snakeoil_key(&key).map_err(|source| {
                ImageProblem::Build {
                    name: TINY.into(),
                    source,
                }
            })?;
            build(&key, Path::new(SNAKEOIL_CERT), progress)?
        }
    };
    for (path, mode) in [(&image.disk, 0o644), (&image.raw_disk, 0o644)] {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io(format!("chmod {}", path.display())))?;
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_the_directory() {
        for ok in ["tiny", "ubuntu-24.04", "a", "img_2"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../etc",
            "a/b",
            "-x",
            ".hidden",
            "Tiny",
            &"a".repeat(64),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_only_complete_images() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::new(tmp.path().to_path_buf(), SigningKey::Snakeoil);
        assert!(store.find("tiny").unwrap().is_none());
        assert!(matches!(
            store.resolve("other", &mut |_| {}),
            Err(ImageProblem::NotFound(n)) if n == "other"
        ));
        fs::create_dir_all(tmp.path().join("tiny")).unwrap();
        fs::write(tmp.path().join("tiny/disk.qcow2"), b"x").unwrap();
        // A tiny build that did not finish is not an image.
        assert!(store.find("tiny").unwrap().is_none());
        fs::write(
            tmp.path().join("tiny/inputs.txt"),
            "kernel linux-image-x 1\n",
        )
        .unwrap();
        assert!(store.find("tiny").unwrap().is_some());
        fs::create_dir_all(tmp.path().join("imported")).unwrap();
        fs::write(tmp.path().join("imported/disk.qcow2"), b"yy").unwrap();
        let list = store.list().unwrap();
        let names: Vec<_> = list.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["imported", "tiny"]);
        // Fetched images show by digest; anything else in sha256/ does not.
        fs::create_dir_all(tmp.path().join("sha256")).unwrap();
        let digest = "ab".repeat(32);
        fs::write(tmp.path().join(format!("sha256/{digest}.qcow2")), b"q").unwrap();
        fs::write(tmp.path().join("sha256/.fetch-x"), b"partial").unwrap();
        let names: Vec<String> = store.list().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(
            names,
            [
                "imported".to_string(),
                format!("sha256:{digest}"),
                "tiny".into()
            ]
        );
        assert_eq!(list[1].kernel.as_deref(), Some("linux-image-x 1"));
    }
}
