//! Root key providers: the file provider's modes and refusals, and the sealed-file slot with a
//! fake sealer standing in for a TPM.

use std::os::unix::fs::PermissionsExt as _;

use strata_kms::provider::SEALED_ROOT_KEY_FILE;
use strata_kms::{
    DataKey, FileRootKey, ProviderError, RootKey, RootKeyProvider, RootKeySealer, RootSecret,
    SealedFileRootKey,
};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn key_ref(secret: &RootSecret) -> strata_kms::KeyRef {
    RootKey::from_secret(secret).unwrap().key_ref().clone()
}

#[test]
fn file_provider_creates_a_0600_key_once_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FileRootKey::in_data_dir(dir.path());
    let first = provider.load_or_create().unwrap();
    assert!(first.created);
    assert_eq!(mode(provider.path()), 0o600);
    assert_eq!(std::fs::read(provider.path()).unwrap().len(), 32);
    let warning = first.warning.as_ref().unwrap();
    assert_eq!(warning.code, "RootKeyInFile");
    assert!(
        warning.message.contains("root key is stored in a file")
            && warning.message.contains("seal it to a TPM"),
        "{}",
        warning.message
    );

    let second = provider.load_or_create().unwrap();
    assert!(!second.created);
    assert!(
        second.warning.is_some(),
        "warns on every start, not just the first"
    );
    assert_eq!(key_ref(&first.secret), key_ref(&second.secret));
    // No temporary files left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn file_provider_refuses_loose_permissions_with_instructions() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FileRootKey::in_data_dir(dir.path());
    provider.load_or_create().unwrap();
    for loose in [0o644, 0o640, 0o604, 0o660, 0o606] {
        std::fs::set_permissions(provider.path(), std::fs::Permissions::from_mode(loose)).unwrap();
        let err = provider.load_or_create().unwrap_err();
        assert!(
            matches!(err, ProviderError::Permissions { mode, .. } if mode == loose),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("chmod 600 {}", provider.path().display())),
            "{msg}"
        );
    }
    // Owner-only bits other than read/write are odd but not a leak.
    std::fs::set_permissions(provider.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    provider.load_or_create().unwrap();
    std::fs::set_permissions(provider.path(), std::fs::Permissions::from_mode(0o400)).unwrap();
    provider.load_or_create().unwrap();
}

#[test]
fn file_provider_refuses_wrong_length_and_non_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root.key");
    std::fs::write(&path, [7u8; 31]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = FileRootKey::new(&path).load_or_create().unwrap_err();
    assert!(
        matches!(err, ProviderError::WrongLength { len: 31, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("restore it from your backup"));

    let link = dir.path().join("link.key");
    let target = dir.path().join("real.key");
    std::fs::write(&target, [7u8; 32]).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = FileRootKey::new(&link).load_or_create().unwrap_err();
    assert!(matches!(err, ProviderError::NotRegularFile { .. }), "{err}");

    let err = FileRootKey::new(dir.path()).load_or_create().unwrap_err();
    assert!(matches!(err, ProviderError::NotRegularFile { .. }), "{err}");
}

/// Stands in for a TPM: "seals" with AES-GCM under a key that lives only in this value.
struct FakeTpm {
    root: RootKey,
}

impl FakeTpm {
    fn new() -> Self {
        FakeTpm {
            root: RootKey::from_secret(&RootSecret::generate().unwrap()).unwrap(),
        }
    }
}

impl RootKeySealer for FakeTpm {
    fn describe(&self) -> String {
        "fake TPM".to_owned()
    }
    fn seal(&self, secret: &RootSecret) -> Result<Vec<u8>, strata_kms::provider::SealerError> {
        let (pmk, stored) = self.root.create_platform_key("/sealer", 1)?;
        let wrapped = pmk.wrap_data_key("root", &DataKey::from_bytes(secret.expose_secret())?)?;
        Ok(serde_json::to_vec(&(stored, wrapped))?)
    }
    fn unseal(&self, blob: &[u8]) -> Result<RootSecret, strata_kms::provider::SealerError> {
        let (stored, wrapped): (strata_kms::WrappedPlatformKey, strata_kms::Envelope) =
            serde_json::from_slice(blob)?;
        let pmk = self.root.open_platform_key("/sealer", &stored)?;
        let dek = pmk.unwrap_data_key("root", &wrapped)?;
        Ok(RootSecret::from_bytes(dek.expose_secret())?)
    }
}

#[test]
fn sealed_provider_is_the_hardening_path() {
    let dir = tempfile::tempdir().unwrap();
    // Start on a file...
    let file = FileRootKey::in_data_dir(dir.path());
    let plain = file.load_or_create().unwrap();
    // ...migrate into the sealed provider...
    let tpm = FakeTpm::new();
    let sealed_path = dir.path().join(SEALED_ROOT_KEY_FILE);
    let sealed = SealedFileRootKey::new(&sealed_path, tpm);
    sealed.import(&plain.secret).unwrap();
    assert_eq!(mode(&sealed_path), 0o600);
    let loaded = sealed.load_or_create().unwrap();
    assert!(!loaded.created);
    assert!(loaded.warning.is_none());
    assert_eq!(
        key_ref(&loaded.secret),
        key_ref(&plain.secret),
        "same root: no rewrap needed"
    );
    // The blob on disk does not contain the secret.
    let blob = std::fs::read(&sealed_path).unwrap();
    assert!(!blob.windows(32).any(|w| w == plain.secret.expose_secret()));
    assert!(sealed.describe().contains("fake TPM"));

    // Another "TPM" cannot unseal it.
    let elsewhere = SealedFileRootKey::new(&sealed_path, FakeTpm::new());
    let err = elsewhere.load_or_create().unwrap_err();
    assert!(matches!(err, ProviderError::Unseal { .. }), "{err}");

    // A fresh sealed provider creates its own root.
    let fresh = SealedFileRootKey::new(dir.path().join("fresh.sealed"), FakeTpm::new());
    let first = fresh.load_or_create().unwrap();
    assert!(first.created);
    let again = fresh.load_or_create().unwrap();
    assert_eq!(key_ref(&first.secret), key_ref(&again.secret));
}
