//! `Strata.Compute/images`: disk images users import, and the store their bytes live in.
//!
//! ```text
//!  PUT images/NAME {source: {type: Upload, format, uploadSizeBytes, sha256?}}
//!        │ provisioningState PendingUpload (nothing stored yet)
//!        ▼
//!  POST images/NAME/upload  (application/octet-stream, Content-Length = uploadSizeBytes)
//!        │ admitted (authn, rate limit, RBAC images/write) before a byte is read
//!        │ streamed to DATA_DIR/images/incoming/ while hashed; more than declared: cut off
//!        │ size and (if declared) SHA-256 must match            ─▶ 400, nothing changes
//!        │ strata_compute::import: header check, qemu-img info, ─▶ 400 InvalidImage, nothing
//!        │   canonical qcow2 (no backing file, no data file)       changes
//!        ▼
//!  DATA_DIR/images/sha256/<digest of the canonical qcow2>   (0600, the control plane's)
//!  provisioningState Succeeded: format qcow2, sizeBytes, virtualSizeBytes, sha256
//! ```
//!
//! The bytes are content-addressed and kept out of the database: a VM made from the image
//! records the digest (`VmInternal::image`), its host's agent fetches exactly that digest over
//! the agent door (`GET /fabric/v1/hosts/{host}/images/{sha256}`: the host's current
//! attestation-bound certificate, the host Trusted, and a VM assigned to that host made from
//! that digest) and checks the SHA-256 before a VM uses it. An image resource may be deleted
//! while VMs made from it exist (as in Azure): its bytes stay while any image or VM document
//! names their digest, and [`ImageStore::collect_garbage`] removes them after the last one goes.
//!
//! The platform image `tiny` is not a resource: every host builds it itself and signs it with
//! its own secure-boot key, so its bytes differ per host and cannot be content-addressed here.
//! VMs name it with `storageProfile.image: "tiny"`; an imported image is named by its id,
//! `storageProfile.imageReference.id`.
//!
//! With several control-plane replicas (PostgreSQL), `DATA_DIR/images` must be shared storage:
//! the bytes are written where the upload arrives and read where a host's fetch arrives.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use strata_store::Store;

use crate::docs::Doc;
use crate::kinds::Kind;

/// How big an upload and an image may be.
#[derive(Clone, Copy, Debug)]
pub struct ImageConfig {
    /// The largest upload accepted, bytes (and, with some slack, the largest canonical qcow2).
    pub max_upload_bytes: u64,
    /// The largest virtual disk size an image may have, bytes.
    pub max_virtual_bytes: u64,
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 64 << 30,
            max_virtual_bytes: 2 << 40,
        }
    }
}

/// What a VM made from an image resource records about it (in its `internal`): the content
/// its host must fetch and verify.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageContent {
    /// SHA-256 of the canonical qcow2, lowercase hex.
    pub sha256: String,
    /// Its file size, bytes.
    pub size_bytes: u64,
    /// The disk size it gives a guest, bytes.
    pub virtual_size_bytes: u64,
}

impl ImageContent {
    /// The content a Succeeded image document describes.
    pub fn of_image(doc: &Doc) -> Option<ImageContent> {
        let p = &doc.properties;
        Some(ImageContent {
            sha256: p.get("sha256")?.as_str()?.to_owned(),
            size_bytes: p.get("sizeBytes")?.as_u64()?,
            virtual_size_bytes: p.get("virtualSizeBytes")?.as_u64()?,
        })
    }
}

/// Whether `s` is a SHA-256 digest as this store names files: 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The control plane's image bytes: `DATA_DIR/images/sha256/<digest>` and uploads in flight in
/// `DATA_DIR/images/incoming/`. Everything 0700/0600.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    config: ImageConfig,
    /// Placing a blob and committing the document that names it is one step as far as the
    /// garbage collector is concerned.
    lock: Mutex<()>,
}

fn private_dir(path: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

impl ImageStore {
    /// Opens (creating) the store under `data_dir`; uploads a previous run left half-done are
    /// removed.
    pub fn open(data_dir: &Path, config: ImageConfig) -> std::io::Result<ImageStore> {
        let root = data_dir.join("images");
        private_dir(&root.join("sha256"))?;
        let incoming = root.join("incoming");
        if incoming.exists() {
            fs::remove_dir_all(&incoming)?;
        }
        private_dir(&incoming)?;
        Ok(ImageStore {
            root,
            config,
            lock: Mutex::new(()),
        })
    }

    pub fn config(&self) -> &ImageConfig {
        &self.config
    }

    /// A fresh path for an upload in flight.
    pub fn incoming(&self, what: &str) -> PathBuf {
        self.root
            .join("incoming")
            .join(format!("{}.{what}", uuid::Uuid::new_v4().simple()))
    }

    /// Where the blob with this digest lives (`None` for anything but a digest).
    pub fn blob(&self, sha256: &str) -> Option<PathBuf> {
        is_digest(sha256).then(|| self.root.join("sha256").join(sha256))
    }

    /// Held while a blob is placed and its document committed, and while garbage is collected.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves `file` (whose SHA-256 is `sha256`) into the store; the caller holds [`lock`]. A
    /// blob that is already there is kept (same digest, same bytes) and `file` removed.
    ///
    /// [`lock`]: Self::lock
    pub fn place(&self, file: &Path, sha256: &str) -> std::io::Result<PathBuf> {
        let Some(dest) = self.blob(sha256) else {
            return Err(std::io::Error::other("not a SHA-256 digest"));
        };
        if dest.is_file() {
            fs::remove_file(file)?;
        } else {
            fs::set_permissions(file, fs::Permissions::from_mode(0o600))?;
            fs::rename(file, &dest)?;
        }
        Ok(dest)
    }

    /// Removes every blob that no image, VM, snapshot or disk document names. Returns how many
    /// went.
    pub fn collect_garbage(&self, store: &dyn Store) -> Result<usize, strata_store::StoreError> {
        let _held = self.lock();
        let mut named = BTreeSet::new();
        for rec in store.list_type(&Kind::Image.type_key())? {
            if let Ok(doc) = Doc::parse(&rec.body)
                && let Some(d) = doc.prop_str("sha256")
            {
                named.insert(d.to_owned());
            }
        }
        for rec in store.list_type(&Kind::VirtualMachine.type_key())? {
            if let Ok(doc) = Doc::parse(&rec.body) {
                let internal: super::VmInternal = crate::docs::internal_of(&doc);
                if let Some(image) = internal.image {
                    named.insert(image.sha256);
                }
            }
        }
        super::snapshots::named_blobs(store, &mut named)?;
        let mut removed = 0;
        let Ok(entries) = fs::read_dir(self.root.join("sha256")) else {
            return Ok(0);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_digest(&name) && named.contains(&name) {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(sha256 = %name, "removed image bytes no image or VM names");
                    removed += 1;
                }
                Err(e) => {
                    tracing::warn!(blob = %entry.path().display(), error = %e, "cannot remove unused image bytes");
                }
            }
        }
        Ok(removed)
    }

    /// Runs [`collect_garbage`](Self::collect_garbage), logging a failure (it runs after
    /// deletes, which have succeeded by then).
    pub fn collect_garbage_logged(&self, store: &dyn Store) {
        if let Err(e) = self.collect_garbage(store) {
            crate::app::log_chain("image garbage collection failed", &e);
        }
    }
}

/// Receives an upload's chunks into `path` (created 0600), hashing them; refuses more than
/// `limit` bytes. Returns (bytes written, SHA-256 hex). Runs on a blocking thread, fed by the
/// server's body reader.
pub fn receive(
    path: &Path,
    mut chunks: tokio::sync::mpsc::Receiver<axum::body::Bytes>,
    limit: u64,
) -> std::io::Result<(u64, String)> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut total: u64 = 0;
    while let Some(chunk) = chunks.blocking_recv() {
        total = total.saturating_add(chunk.len() as u64);
        if total > limit {
            return Err(std::io::Error::other(format!(
                "the upload is longer than the {limit} bytes declared"
            )));
        }
        hash.update(&chunk);
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    Ok((total, strata_attest::hex(hash.finish().as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_digests_name_blobs() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(tmp.path(), ImageConfig::default()).unwrap();
        let d = "a".repeat(64);
        assert_eq!(
            store.blob(&d),
            Some(tmp.path().join("images/sha256").join(&d))
        );
        for bad in ["../../etc/passwd", &"A".repeat(64), &"a".repeat(63), ""] {
            assert_eq!(store.blob(bad), None, "{bad}");
        }
        let mode = fs::metadata(tmp.path().join("images/sha256"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
