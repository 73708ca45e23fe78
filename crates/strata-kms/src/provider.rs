//! Where the root secret comes from: a [`RootKeyProvider`].
//!
//! * [`FileRootKey`] — a 32-byte file, created with mode 0600 on first start and refused when
//!   group or others can read it. It always returns a [`SecurityWarning`] for the caller to
//!   log: anyone who can copy the data directory can copy the root key.
//! * [`SealedFileRootKey`] — the hardening path: the secret is stored only as a blob sealed by
//!   a [`RootKeySealer`] (a TPM, later), so a copy of the data directory is useless without the
//!   sealing device. No sealer is implemented here; see the crate docs, "Hardening the root key".
//!
//! This is the only module that does I/O.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::secret::{KEY_LEN, RootSecret};

/// The conventional file name inside the data directory. The byte format (32 raw bytes, mode
/// 0600) is the one `strata-control` already uses for `root.key`; the KMS derives its own key
/// from it with HKDF, so the two may share one file.
pub const ROOT_KEY_FILE: &str = "root.key";
/// The conventional sealed-blob file name inside the data directory.
pub const SEALED_ROOT_KEY_FILE: &str = "root.key.sealed";

/// Produces the 32-byte root secret, creating and persisting it on first use.
pub trait RootKeyProvider {
    /// For logs: what kind of provider and where (`file /var/lib/strata/root.key`).
    fn describe(&self) -> String;
    fn load_or_create(&self) -> Result<LoadedRoot, ProviderError>;
}

/// Seals and unseals a 32-byte secret with something that does not leave the host (a TPM
/// sealed data object under the storage root key, with a PCR policy). `seal` returns an opaque
/// blob that is safe to store on disk; `unseal` must fail on another host or a changed boot.
pub trait RootKeySealer {
    fn describe(&self) -> String;
    fn seal(&self, secret: &RootSecret) -> Result<Vec<u8>, SealerError>;
    fn unseal(&self, blob: &[u8]) -> Result<RootSecret, SealerError>;
}

pub type SealerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a provider returns: the secret, whether it was just created, and a warning to log.
#[derive(Debug)]
pub struct LoadedRoot {
    pub secret: RootSecret,
    pub created: bool,
    pub warning: Option<SecurityWarning>,
}

/// A value for the caller to log loudly (and show in health output): it is a security posture,
/// not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityWarning {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} has mode {mode:04o}: group or others can read it; run `chmod 600 {path}` and, if anyone else could have copied it, rotate the root key"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "{path} is not a regular file; the root key must be a plain file (not a symlink, directory or device) owned by the service user"
    )]
    NotRegularFile { path: PathBuf },
    #[error(
        "{path} holds {len} bytes, but a root key file holds exactly {KEY_LEN}; restore it from your backup (a new key would not open existing data)"
    )]
    WrongLength { path: PathBuf, len: u64 },
    #[error("the sealed root key at {path} could not be unsealed by {sealer}")]
    Unseal {
        path: PathBuf,
        sealer: String,
        #[source]
        source: SealerError,
    },
    #[error("sealing a new root key with {sealer} failed")]
    Seal {
        sealer: String,
        #[source]
        source: SealerError,
    },
    #[error("the system random generator failed")]
    Rng,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProviderError + '_ {
    move |source| ProviderError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The root secret in a plain file. For development and for hosts without a TPM.
#[derive(Debug, Clone)]
pub struct FileRootKey {
    path: PathBuf,
}

impl FileRootKey {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileRootKey { path: path.into() }
    }

    /// `data_dir/root.key`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        FileRootKey::new(data_dir.join(ROOT_KEY_FILE))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn warning(&self) -> SecurityWarning {
        SecurityWarning {
            code: "RootKeyInFile",
            message: format!(
                "root key is stored in a file ({}); anyone who copies the data directory can decrypt every key: seal it to a TPM (`strata server --root-key tpm` on a host with one; docs/security.md)",
                self.path.display()
            ),
        }
    }
}

impl RootKeyProvider for FileRootKey {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn load_or_create(&self) -> Result<LoadedRoot, ProviderError> {
        let created = if exists(&self.path)? {
            false
        } else {
            let secret = RootSecret::generate().map_err(|_| ProviderError::Rng)?;
            create_private(&self.path, secret.expose_secret())?
        };
        let bytes = read_private(&self.path)?;
        if bytes.len() != KEY_LEN {
            return Err(ProviderError::WrongLength {
                path: self.path.clone(),
                len: bytes.len() as u64,
            });
        }
        let secret = RootSecret::from_bytes(&bytes).map_err(|_| ProviderError::WrongLength {
            path: self.path.clone(),
            len: bytes.len() as u64,
        })?;
        Ok(LoadedRoot {
            secret,
            created,
            warning: Some(self.warning()),
        })
    }
}

/// The root secret stored only as a blob sealed by `S` (a TPM). Same file rules as
/// [`FileRootKey`] (0600, regular file), and no warning.
#[derive(Debug)]
pub struct SealedFileRootKey<S> {
    path: PathBuf,
    sealer: S,
}

impl<S: RootKeySealer> SealedFileRootKey<S> {
    pub fn new(path: impl Into<PathBuf>, sealer: S) -> Self {
        SealedFileRootKey {
            path: path.into(),
            sealer,
        }
    }

    /// Migration from a [`FileRootKey`]: seals `secret` into this provider's file (which must
    /// not exist yet). Afterwards, wipe the plain file (`shred -u root.key`) and its backups.
    pub fn import(&self, secret: &RootSecret) -> Result<(), ProviderError> {
        let blob = self
            .sealer
            .seal(secret)
            .map_err(|source| ProviderError::Seal {
                sealer: self.sealer.describe(),
                source,
            })?;
        create_private(&self.path, &blob).map(|_| ())
    }
}

impl<S: RootKeySealer> RootKeyProvider for SealedFileRootKey<S> {
    fn describe(&self) -> String {
        format!(
            "sealed file {} ({})",
            self.path.display(),
            self.sealer.describe()
        )
    }

    fn load_or_create(&self) -> Result<LoadedRoot, ProviderError> {
        let created = if exists(&self.path)? {
            false
        } else {
            let secret = RootSecret::generate().map_err(|_| ProviderError::Rng)?;
            let blob = self
                .sealer
                .seal(&secret)
                .map_err(|source| ProviderError::Seal {
                    sealer: self.sealer.describe(),
                    source,
                })?;
            create_private(&self.path, &blob)?
        };
        let blob = read_private(&self.path)?;
        let secret = self
            .sealer
            .unseal(&blob)
            .map_err(|source| ProviderError::Unseal {
                path: self.path.clone(),
                sealer: self.sealer.describe(),
                source,
            })?;
        Ok(LoadedRoot {
            secret,
            created,
            warning: None,
        })
    }
}

fn exists(path: &Path) -> Result<bool, ProviderError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(path)(e)),
    }
}

/// Reads a file that must be a regular file (not a symlink) with no group/other permissions.
fn read_private(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, ProviderError> {
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    if !meta.file_type().is_file() {
        return Err(ProviderError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ProviderError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    // Bounded read: a root key file is tiny; refuse to slurp something huge.
    if meta.len() > 64 * 1024 {
        return Err(ProviderError::WrongLength {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    std::fs::read(path)
        .map(zeroize::Zeroizing::new)
        .map_err(io(path))
}

/// Writes `bytes` to a new file at `path` with mode 0600, atomically: a temporary file is
/// written and synced, then hard-linked into place (which fails if another process created
/// `path` meanwhile; its file is then used). Returns whether this call created the file.
fn create_private(path: &Path, bytes: &[u8]) -> Result<bool, ProviderError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    // A leftover from a crash of a process with the same pid (pid 1 in a container).
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all());
    drop(file);
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // Make the new name durable.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(path)(e)),
    }
}
