//! First start and every start: the data directory, its files and their modes.
//!
//! ```text
//! DATA_DIR/
//!   strata.db            SQLite store (embedded default)
//!   root.key      0600   root key: seals signing keys and TOTP secrets stored in the database
//!   audit.pub            the audit log's checkpoint public key (pin it somewhere safe)
//!   tls/ca.pem, tls/ca.key (0600), tls/server.pem, tls/server.key (0600)
//!   admin-profile.json 0600   endpoint, CA, bootstrap admin credentials
//! ```

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tls setup failed: {0}")]
    Tls(String),
    #[error("{0}")]
    Invalid(String),
    #[error("store")]
    Store(#[from] strata_store::StoreError),
    #[error("sealed key material")]
    Seal(#[from] crate::crypto::SealError),
}

impl SetupError {
    pub fn io(path: &Path, source: impl Into<std::io::Error>) -> Self {
        SetupError::Io {
            path: path.display().to_string(),
            source: source.into(),
        }
    }
    pub fn tls(e: impl std::fmt::Display) -> Self {
        SetupError::Tls(e.to_string())
    }
}

pub fn read_file(path: &Path) -> Result<String, SetupError> {
    std::fs::read_to_string(path).map_err(|e| SetupError::io(path, e))
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SetupError> {
    let tmp: PathBuf = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| SetupError::io(&tmp, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| SetupError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| SetupError::io(&tmp, e))?;
    f.sync_all().map_err(|e| SetupError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| SetupError::io(path, e))?;
    Ok(())
}

/// Writes a secret file atomically with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    write_mode(path, bytes, 0o600)
}

/// Writes a non-secret file atomically with mode 0644.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    write_mode(path, bytes, 0o644)
}

/// Creates the data directory (mode 0700) if needed.
pub fn ensure_data_dir(dir: &Path) -> Result<(), SetupError> {
    std::fs::create_dir_all(dir).map_err(|e| SetupError::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| SetupError::io(dir, e))
}

/// Loads the root key, creating it on first start.
pub fn root_key(dir: &Path) -> Result<crate::crypto::RootKey, SetupError> {
    let path = dir.join("root.key");
    if !path.exists() {
        let bytes = crate::crypto::RootKey::generate_bytes()?;
        write_private(&path, &bytes)?;
        tracing::warn!(
            path = %path.display(),
            "created a file-backed root key; on production hosts seal it to the TPM (see docs/security.md)"
        );
    }
    let meta = std::fs::metadata(&path).map_err(|e| SetupError::io(&path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(SetupError::Invalid(format!(
            "{} is readable by group or others; run: chmod 600 {}",
            path.display(),
            path.display()
        )));
    }
    let bytes = std::fs::read(&path).map_err(|e| SetupError::io(&path, e))?;
    Ok(crate::crypto::RootKey::from_bytes(&bytes)?)
}
