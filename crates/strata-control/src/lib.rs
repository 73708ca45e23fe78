//! The Strata control plane: an ARM-shaped HTTPS API where every request is authenticated,
//! authorized and audited, over a [`strata_store::Store`] (SQLite by default, PostgreSQL for
//! several replicas).
//!
//! Entry point: [`start`], which prepares the data directory (PKI, root key, signing keys),
//! bootstraps the tenant on first start, and serves until [`Running::stop`].

pub mod app;
mod checkpointer;
pub mod compute;
pub mod context;
pub mod crypto;
pub mod directory;
pub mod dispatch;
pub mod docs;
pub mod fabric;
pub mod handlers;
pub mod keysweep;
pub mod kinds;
pub mod network;
pub mod openapi;
pub mod ratelimit;
pub mod server;
pub mod setup;
pub mod tls;
pub mod token;

use app::{App, Settings};
use serde::{Deserialize, Serialize};
use serde_json::json;
use setup::SetupError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use strata_audit::{AuditEntry, CheckpointSigner};
use strata_store::{Batch, Op, PgStore, Precondition, SqliteStore, Store};
use strata_types::ResourceId;

/// How to run the control plane.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `postgres://…`; `None` uses SQLite in the data directory.
    pub database: Option<String>,
    /// Extra names/addresses for the server certificate.
    pub tls_sans: Vec<String>,
    /// Token issuer URL; defaults to `https://{listen}`.
    pub issuer: Option<String>,
    pub rate_limit_per_sec: f64,
    pub token_lifetime_secs: i64,
    /// Rotate the token-signing key after this many seconds (default 30 days).
    pub key_rotation_secs: i64,
    /// Host attestation: interval, TPM vendor CAs, policy release keys.
    pub fabric: fabric::FabricConfig,
    /// Image imports: upload and virtual size limits.
    pub images: compute::images::ImageConfig,
    /// Where the root key comes from (default: `DATA_DIR/root.key`).
    pub root_key: setup::RootKeySource,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Config {
        Config {
            data_dir: data_dir.into(),
            listen,
            database: None,
            tls_sans: Vec::new(),
            issuer: None,
            rate_limit_per_sec: 500.0,
            token_lifetime_secs: 600,
            key_rotation_secs: 30 * 86_400,
            fabric: fabric::FabricConfig::default(),
            images: compute::images::ImageConfig::default(),
            root_key: setup::RootKeySource::default(),
        }
    }
}

/// What a client needs to talk to this control plane: written to `admin-profile.json` (0600).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub endpoint: String,
    pub ca_certificate: String,
    pub tenant_id: String,
    #[serde(default)]
    pub subscription_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Cached access token (user sign-in) and its expiry.
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub access_token_expires_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("setting up the data directory")]
    Setup(#[from] SetupError),
    #[error("opening the store")]
    Store(#[from] strata_store::StoreError),
    #[error("starting the control plane")]
    App(#[from] app::AppError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A running control plane.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub profile_path: PathBuf,
    pub endpoint: String,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, finishes in-flight requests, signs a final checkpoint.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let app = self.app.clone();
        let _ = tokio::task::spawn_blocking(move || checkpointer::checkpoint_now(&app)).await;
    }

    /// Signs a checkpoint covering every entry written so far (tests and shutdown).
    pub async fn checkpoint_now(&self) {
        let app = self.app.clone();
        let _ = tokio::task::spawn_blocking(move || checkpointer::checkpoint_now(&app)).await;
    }
}

const AUDIT_KEY_META: &str = "audit_signing_key";
/// The key hierarchy root's id (`strata-root/<key check value>`): which root key this
/// database's secrets are sealed under.
const ROOT_KEY_META: &str = "root_key_id";

/// Refuses a root key that is not the one this database was pinned to, with a message that
/// says what to restore (rather than failing later on the first sealed value).
fn check_root_key(store: &dyn Store, id: &str) -> Result<(), StartError> {
    match store.meta_get(ROOT_KEY_META)? {
        Some(pinned) if pinned != id.as_bytes() => Err(StartError::Invalid(format!(
            "the root key ({id}) is not the one this database was created with ({}); every sealed secret would fail to open: start with this data directory's own root key (root.key, root.key.sealed on the host whose TPM sealed it, or its recovery copy)",
            String::from_utf8_lossy(&pinned)
        ))),
        _ => Ok(()),
    }
}

/// Pins the root key's id once it has been shown to open this database's sealed audit key.
fn pin_root_key(store: &dyn Store, root: &crypto::RootKey) -> Result<(), StartError> {
    store.meta_init(ROOT_KEY_META, root.kms().key_ref().id.as_bytes())?;
    Ok(())
}

fn audit_signer(
    store: &dyn Store,
    root: &crypto::RootKey,
    dir: &Path,
) -> Result<CheckpointSigner, StartError> {
    let (_, pkcs8) =
        CheckpointSigner::generate().map_err(|e| StartError::Invalid(e.to_string()))?;
    let sealed = root
        .seal(AUDIT_KEY_META, &pkcs8)
        .map_err(SetupError::from)?;
    let stored = store.meta_init(AUDIT_KEY_META, sealed.as_bytes())?;
    let pkcs8 = root
        .open(AUDIT_KEY_META, &String::from_utf8_lossy(&stored))
        .map_err(SetupError::from)?;
    let signer =
        CheckpointSigner::from_pkcs8(&pkcs8).map_err(|e| StartError::Invalid(e.to_string()))?;
    use base64::Engine as _;
    let public = base64::engine::general_purpose::STANDARD.encode(signer.public_key());
    let pub_path = dir.join("audit.pub");
    match std::fs::read_to_string(&pub_path) {
        Ok(pinned) if pinned.trim() != public => {
            return Err(StartError::Invalid(format!(
                "the audit signing key in the database does not match the pinned key in {}; refusing to start (the database may have been replaced)",
                pub_path.display()
            )));
        }
        Ok(_) => {}
        Err(_) => setup::write_public(&pub_path, format!("{public}\n").as_bytes())?,
    }
    Ok(signer)
}

fn system_entry(action: &str, scope: &str, reason: &str) -> AuditEntry {
    AuditEntry {
        seq: 0,
        time: strata_types::time::now_rfc3339(),
        request_id: "bootstrap".into(),
        principal_id: None,
        principal_name: Some("strata-system".into()),
        client_ip: None,
        category: "system".into(),
        action: action.into(),
        scope: scope.into(),
        outcome: "success".into(),
        status: 201,
        reason: reason.into(),
        details: serde_json::Value::Null,
    }
}

fn sys_doc(
    id: &ResourceId,
    kind: kinds::Kind,
    properties: serde_json::Value,
    internal: serde_json::Value,
) -> Result<String, StartError> {
    let now = strata_types::time::now_rfc3339();
    let doc = docs::Doc {
        id: id.to_string(),
        name: id.name().unwrap_or_default().to_string(),
        rtype: kind.type_name().to_string(),
        location: None,
        tags: Default::default(),
        properties,
        system_data: strata_types::SystemData {
            created_by: "strata-system".into(),
            created_at: now.clone(),
            last_modified_by: "strata-system".into(),
            last_modified_at: now,
        },
        internal,
    };
    serde_json::to_string(&doc).map_err(|e| StartError::Invalid(e.to_string()))
}

/// First start: a default subscription, a bootstrap admin service principal holding Owner at
/// the tenant root, and its credentials in `admin-profile.json`. Idempotent across restarts
/// and racing replicas (only the first writer bootstraps).
fn bootstrap(
    store: &dyn Store,
    root: &crypto::RootKey,
    tenant_id: &str,
) -> Result<Option<(String, String, String)>, StartError> {
    let marker = uuid::Uuid::new_v4().to_string();
    if store.meta_init("bootstrap", marker.as_bytes())? != marker.as_bytes() {
        return Ok(None);
    }
    let sub_id = uuid::Uuid::new_v4().to_string();
    let sub = ResourceId::subscription(&sub_id).map_err(|e| StartError::Invalid(e.to_string()))?;
    let sp_object = uuid::Uuid::new_v4().to_string();
    let app_id = uuid::Uuid::new_v4().to_string();
    let secret =
        strata_identity::secret::generate().map_err(|e| StartError::Invalid(e.to_string()))?;
    let sp = ResourceId::tenant()
        .child_provider("Strata.Identity", "servicePrincipals", "strata-admin")
        .map_err(|e| StartError::Invalid(e.to_string()))?;
    let ra = ResourceId::tenant()
        .child_provider(
            "Strata.Authorization",
            "roleAssignments",
            &uuid::Uuid::new_v4().to_string(),
        )
        .map_err(|e| StartError::Invalid(e.to_string()))?;
    let expires = strata_types::time::now_unix() + 365 * 86_400;
    let key_id = uuid::Uuid::new_v4().to_string();
    let sp_internal = json!({ "secrets": [{ "keyId": key_id, "hash": strata_identity::secret::hash(&secret), "expiresAt": expires }], "certificates": [], "validAfter": 0 });
    let ops = vec![
        Op::Put {
            key: sub.key().into(),
            rtype: kinds::Kind::Subscription.type_key(),
            parent: "/".into(),
            body: sys_doc(
                &sub,
                kinds::Kind::Subscription,
                json!({ "subscriptionId": sub_id, "displayName": "default", "state": "Enabled", "provisioningState": "Succeeded" }),
                compute::new_subscription_internal(root, sub.key())
                    .map_err(|e| StartError::Invalid(e.message))?,
            )?,
            pre: Precondition::MustNotExist,
        },
        Op::Put {
            key: sp.key().into(),
            rtype: kinds::Kind::ServicePrincipal.type_key(),
            parent: "/".into(),
            body: sys_doc(
                &sp,
                kinds::Kind::ServicePrincipal,
                json!({
                    "objectId": sp_object, "appId": app_id, "displayName": "Strata bootstrap administrator", "accountEnabled": true, "provisioningState": "Succeeded",
                    "passwordCredentials": [{ "keyId": key_id, "endDateTime": strata_types::time::rfc3339(expires) }], "keyCredentials": []
                }),
                sp_internal,
            )?,
            pre: Precondition::MustNotExist,
        },
        Op::Put {
            key: ra.key().into(),
            rtype: kinds::Kind::RoleAssignment.type_key(),
            parent: "/".into(),
            body: sys_doc(
                &ra,
                kinds::Kind::RoleAssignment,
                json!({
                    "principalId": sp_object, "roleDefinitionId": strata_authz::builtin::OWNER, "principalType": "servicePrincipal", "roleName": "Owner", "scope": "/"
                }),
                serde_json::Value::Null,
            )?,
            pre: Precondition::MustNotExist,
        },
    ];
    store.commit(Batch {
        ops,
        audit: vec![
            system_entry(
                "Strata.Resources/subscriptions/write",
                sub.as_str(),
                "bootstrap: default subscription",
            ),
            system_entry(
                "Strata.Identity/servicePrincipals/write",
                sp.as_str(),
                "bootstrap: administrator service principal",
            ),
            system_entry(
                "Strata.Authorization/roleAssignments/write",
                ra.as_str(),
                "bootstrap: Owner at / for the administrator",
            ),
        ],
    })?;
    let _ = tenant_id;
    Ok(Some((sub_id, app_id, secret)))
}

/// Prepares everything and starts serving. Must be called inside a Tokio runtime.
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    if cfg.key_rotation_secs < cfg.token_lifetime_secs {
        return Err(StartError::Invalid(
            "the signing-key rotation period must be at least the token lifetime (a retired key must outlive its tokens)".into(),
        ));
    }
    let dir = cfg.data_dir.clone();
    setup::ensure_data_dir(&dir)?;
    let root = setup::root_key(&dir, &cfg.root_key)?;
    let store: Arc<dyn Store> =
        match &cfg.database {
            None => {
                let path = dir.join("strata.db");
                Arc::new(
                    tokio::task::spawn_blocking(move || SqliteStore::open(&path))
                        .await
                        .map_err(|e| StartError::Invalid(e.to_string()))??,
                )
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let url = url.clone();
                Arc::new(
                    tokio::task::spawn_blocking(move || PgStore::connect(&url))
                        .await
                        .map_err(|e| StartError::Invalid(e.to_string()))??,
                )
            }
            Some(_) => return Err(StartError::Invalid(
                "--database must be a postgres:// URL (omit it to use the embedded SQLite store)"
                    .into(),
            )),
        };
    {
        let (store, id) = (store.clone(), root.kms().key_ref().id.clone());
        tokio::task::spawn_blocking(move || check_root_key(store.as_ref(), &id))
            .await
            .map_err(|e| StartError::Invalid(e.to_string()))??;
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: cfg.listen,
        source,
    })?;
    let endpoint = format!("https://{addr}");
    let issuer = cfg.issuer.clone().unwrap_or_else(|| endpoint.clone());

    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !addr.ip().is_unspecified() {
        sans.push(addr.ip().to_string());
    }
    sans.extend(cfg.tls_sans.iter().cloned());
    sans.sort();
    sans.dedup();
    let ca_pem = tls::ensure_pki(&dir, &sans)?;
    let fabric = fabric::Fabric::load(store.as_ref(), &root, cfg.fabric.clone())?;
    let tls_config = tls::server_config(&dir, fabric.host_ca.client_verifier()?)?;

    let (app, profile_path) = {
        let store = store.clone();
        let dir = dir.clone();
        let endpoint = endpoint.clone();
        let images = cfg.images;
        let settings = Settings {
            token_lifetime_secs: cfg.token_lifetime_secs,
            rate_limit_per_sec: cfg.rate_limit_per_sec,
            signin_rate_per_sec: 20.0,
            issuer,
            key_rotation_secs: cfg.key_rotation_secs,
        };
        tokio::task::spawn_blocking(move || -> Result<(App, PathBuf), StartError> {
            let signer = audit_signer(store.as_ref(), &root, &dir)?;
            pin_root_key(store.as_ref(), &root)?;
            let tenant = String::from_utf8_lossy(&store.meta_init("tenant_id", uuid::Uuid::new_v4().to_string().as_bytes())?).into_owned();
            let boot = bootstrap(store.as_ref(), &root, &tenant)?;
            let profile_path = dir.join("admin-profile.json");
            if let Some((sub, client_id, client_secret)) = boot {
                let profile = Profile {
                    endpoint,
                    ca_certificate: ca_pem,
                    tenant_id: tenant.clone(),
                    subscription_id: Some(sub),
                    client_id: Some(client_id),
                    client_secret: Some(client_secret),
                    access_token: None,
                    access_token_expires_at: None,
                };
                let text = serde_json::to_vec_pretty(&profile).map_err(|e| StartError::Invalid(e.to_string()))?;
                setup::write_private(&profile_path, &text)?;
                tracing::info!(profile = %profile_path.display(), "bootstrapped tenant; wrote the administrator profile (mode 0600)");
            } else if let Ok(text) = std::fs::read(&profile_path) {
                // Keep the profile's endpoint current (the port may differ between runs).
                if let Ok(mut p) = serde_json::from_slice::<Profile>(&text)
                    && p.endpoint != endpoint {
                        p.endpoint = endpoint;
                        p.ca_certificate = ca_pem;
                        let text = serde_json::to_vec_pretty(&p).map_err(|e| StartError::Invalid(e.to_string()))?;
                        setup::write_private(&profile_path, &text)?;
                    }
            }
            let images = compute::images::ImageStore::open(&dir, images)
                .map_err(|e| SetupError::io(&dir.join("images"), e))?;
            let app = App::new(store, root, tenant, settings, signer, fabric, images)?;
            // Bytes a crash left without a document that names them.
            app.images.collect_garbage_logged(app.store.as_ref());
            Ok((app, profile_path))
        })
        .await
        .map_err(|e| StartError::Invalid(e.to_string()))??
    };
    let app = Arc::new(app);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shared = server::Shared {
        app: app.clone(),
        seen: Arc::new(token::SeenAssertions::default()),
    };
    let mut tasks = vec![tokio::spawn(server::serve(
        listener,
        tls_config,
        server::router(shared),
        stop_rx.clone(),
    ))];
    tasks.push(tokio::spawn(checkpointer::run(app.clone(), stop_rx)));
    tracing::info!(%endpoint, backend = app.store.backend(), "control plane listening (TLS 1.3 only)");
    Ok(Running {
        addr,
        app,
        profile_path,
        endpoint,
        stop: stop_tx,
        tasks,
    })
}
