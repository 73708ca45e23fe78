//! The control plane's root key, file-backed then sealed to a (software) TPM, across restarts:
//! migration keeps every sealed secret, a restart unseals with the same TPM, and a copy of the
//! data directory (database included) opens nothing without that TPM — not with the default
//! file provider, not with another TPM, not with a root key file someone puts in its place.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use strata_agent::rootseal::{self, RootKeyMode, RootKeyOptions};
use strata_agent::testhost::{SwtpmHost, TestCa};
use strata_control::setup::RootKeySource;
use strata_control::{Config, Profile};

use crate::harness::{Server, agent};

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Starts (or restarts) a control plane on `data` with `root_key`.
fn start(data: &Path, root_key: RootKeySource) -> Result<Server, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = Config::new(data.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    cfg.root_key = root_key;
    let running = rt
        .block_on(strata_control::start(cfg))
        .map_err(|e| chain(&e))?;
    let profile: Profile =
        serde_json::from_slice(&std::fs::read(&running.profile_path).unwrap()).unwrap();
    let mut s = Server {
        agent: agent(&profile.ca_certificate),
        rt,
        running: Some(running),
        _dir: tempfile::tempdir().unwrap(),
        profile,
        admin_token: String::new(),
    };
    let (id, secret) = (
        s.profile.client_id.clone().unwrap(),
        s.profile.client_secret.clone().unwrap(),
    );
    // A fresh token needs the token-signing key, sealed under the root key.
    s.admin_token = s.sp_token(&id, &secret).unwrap();
    Ok(s)
}

fn tpm(data: &Path, mode: RootKeyMode, tcti: &str) -> RootKeySource {
    let prepared = rootseal::prepare(
        data,
        &RootKeyOptions {
            mode,
            tcti: tcti.to_owned(),
            pcrs: Vec::new(),
        },
    )
    .unwrap();
    RootKeySource::provider(prepared.provider)
}

/// Creates a key vault key (its material sealed by the subscription's platform key, which
/// the root key wraps) and reads back everything made so far.
fn use_keys(s: &Server, name: &str, existing: &[&str]) {
    let rg = s.rg("rk");
    let vault = format!("{rg}/providers/Strata.KeyVault/vaults/kv");
    if existing.is_empty() {
        assert_eq!(
            s.admin("PUT", &rg, Some(json!({ "location": "local" }))).0,
            201
        );
        assert_eq!(
            s.admin("PUT", &vault, Some(json!({ "properties": {} }))).0,
            201
        );
    }
    let (st, v) = s.admin(
        "PUT",
        &format!("{vault}/keys/{name}"),
        Some(json!({ "properties": { "kty": "oct" } })),
    );
    assert_eq!(st, 201, "{v}");
    for k in existing {
        let (st, v) = s.admin("POST", &format!("{vault}/keys/{k}/rotate"), Some(json!({})));
        assert_eq!(
            (st, v["properties"]["enabled"].as_bool()),
            (200, Some(true)),
            "{v}"
        );
    }
}

#[test]
fn a_tpm_sealed_root_key_survives_restarts_and_a_copied_data_dir_opens_nothing() {
    let ca = TestCa::new().unwrap();
    let host_a = SwtpmHost::start(&ca).unwrap();
    let host_b = SwtpmHost::start(&ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // A control plane that started before sealing existed: a file key, used for real.
    let s = start(&data, RootKeySource::default()).unwrap();
    use_keys(&s, "before", &[]);
    drop(s);
    assert!(data.join("root.key").exists());

    // Migration: the same key, sealed to TPM A; the plain file is gone; everything opens.
    let s = start(&data, tpm(&data, RootKeyMode::Tpm, &host_a.tcti())).unwrap();
    assert!(!data.join("root.key").exists());
    assert!(data.join("root.key.sealed").exists());
    use_keys(&s, "after-migration", &["before"]);
    drop(s);

    // Restart: auto finds the sealed key and unseals it with TPM A.
    let s = start(&data, tpm(&data, RootKeyMode::Auto, &host_a.tcti())).unwrap();
    use_keys(&s, "after-restart", &["before", "after-migration"]);
    drop(s);

    // A copy of the data directory and database without TPM A: nothing starts.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(&data).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
    }
    // The default provider refuses to answer a sealed key with a new file key.
    let err = start(&copy, RootKeySource::default()).err().unwrap();
    assert!(err.contains("sealed to a TPM"), "{err}");
    assert!(!copy.join("root.key").exists());
    // Another TPM cannot unseal it.
    let err = start(&copy, tpm(&copy, RootKeyMode::Auto, &host_b.tcti()))
        .err()
        .unwrap();
    assert!(err.contains("sealed by another tpm"), "{err}");
    // A root key file put in its place is not this database's key.
    std::fs::rename(copy.join("root.key.sealed"), dir.path().join("moved")).unwrap();
    let err = start(
        &copy,
        RootKeySource::provider(Arc::new(strata_kms::FileRootKey::in_data_dir(&copy))),
    )
    .err()
    .unwrap();
    assert!(
        err.contains("is not the one this database was created with"),
        "{err}"
    );

    // The original still starts with TPM A.
    let s = start(&data, tpm(&data, RootKeyMode::Tpm, &host_a.tcti())).unwrap();
    use_keys(&s, "last", &["before", "after-migration", "after-restart"]);
}
