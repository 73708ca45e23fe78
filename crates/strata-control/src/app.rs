//! Process-wide state of the control plane and the three questions every request asks of it:
//! who is calling (authenticate), may they (authorize), and what happened (audit).

use crate::crypto::RootKey;
use crate::directory::Directory;
use crate::kinds::Kind;
use crate::ratelimit::RateLimiter;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use strata_audit::{AuditEntry, CheckpointSigner};
use strata_authz::Decision;
use strata_identity::jwt::{Claims, Jwks, SigningKey, Verifier};
use strata_store::{Batch, Committed, Store, StoreError};
use strata_types::{ApiError, PrincipalKind};

/// Tunables, with secure defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Access-token lifetime (default 10 minutes).
    pub token_lifetime_secs: i64,
    /// Requests per second allowed per principal (burst is twice this).
    pub rate_limit_per_sec: f64,
    /// Token-endpoint attempts per second per client address.
    pub signin_rate_per_sec: f64,
    /// `iss` of issued tokens, e.g. `https://127.0.0.1:8443`.
    pub issuer: String,
    /// Rotate the token-signing key when it is older than this (default 30 days).
    pub key_rotation_secs: i64,
}

pub const AUDIENCE: &str = "strata";

/// The token-signing keys: the newest signs, all verify (rotation keeps the previous key).
pub struct TokenKeys {
    pub signer: SigningKey,
    /// When the signing key was created (Unix seconds): drives scheduled rotation.
    pub signer_created_at: i64,
    pub verifier: Verifier,
    pub jwks: Jwks,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    created_at: i64,
    pkcs8: String,
}

const JWT_KEYS_META: &str = "jwt_signing_keys";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl TokenKeys {
    fn from_stored(keys: &[StoredKey], issuer: &str) -> Result<TokenKeys, String> {
        use base64::Engine as _;
        let mut signers = Vec::new();
        for k in keys {
            let pkcs8 = b64().decode(&k.pkcs8).map_err(|e| e.to_string())?;
            signers.push(SigningKey::from_pkcs8(k.kid.clone(), &pkcs8).map_err(|e| e.to_string())?);
        }
        let jwks = Jwks {
            keys: signers.iter().map(SigningKey::public_jwk).collect(),
        };
        let verifier = Verifier::new(issuer.to_string(), AUDIENCE.to_string(), &jwks)
            .map_err(|e| e.to_string())?;
        let signer = signers.pop().ok_or("no signing key")?;
        Ok(TokenKeys {
            signer,
            signer_created_at: keys.last().map(|k| k.created_at).unwrap_or_default(),
            verifier,
            jwks,
        })
    }

    fn new_stored() -> Result<StoredKey, String> {
        use base64::Engine as _;
        let kid = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
        let (_, pkcs8) = SigningKey::generate(kid.clone()).map_err(|e| e.to_string())?;
        Ok(StoredKey {
            kid,
            created_at: strata_types::time::now_unix(),
            pkcs8: b64().encode(pkcs8),
        })
    }

    /// Loads the signing keys from the store, creating the first one if none exists.
    pub fn load_or_create(
        store: &dyn Store,
        root: &RootKey,
        issuer: &str,
    ) -> Result<TokenKeys, String> {
        let first = serde_json::to_vec(&vec![Self::new_stored()?]).map_err(|e| e.to_string())?;
        let sealed = root
            .seal(JWT_KEYS_META, &first)
            .map_err(|e| e.to_string())?;
        let stored = store
            .meta_init(JWT_KEYS_META, sealed.as_bytes())
            .map_err(|e| e.to_string())?;
        let plain = root
            .open(JWT_KEYS_META, &String::from_utf8_lossy(&stored))
            .map_err(|e| e.to_string())?;
        let keys: Vec<StoredKey> = serde_json::from_slice(&plain).map_err(|e| e.to_string())?;
        Self::from_stored(&keys, issuer)
    }

    /// Adds a new signing key; the previous one stays in the JWKS so its tokens verify until
    /// they expire. Older keys are dropped.
    pub fn rotate(store: &dyn Store, root: &RootKey, issuer: &str) -> Result<TokenKeys, String> {
        let stored = store
            .meta_get(JWT_KEYS_META)
            .map_err(|e| e.to_string())?
            .ok_or("no signing keys to rotate")?;
        let plain = root
            .open(JWT_KEYS_META, &String::from_utf8_lossy(&stored))
            .map_err(|e| e.to_string())?;
        let mut keys: Vec<StoredKey> = serde_json::from_slice(&plain).map_err(|e| e.to_string())?;
        keys.push(Self::new_stored()?);
        let keep = keys.len().saturating_sub(2);
        keys.drain(..keep);
        let sealed = root
            .seal(
                JWT_KEYS_META,
                &serde_json::to_vec(&keys).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
        store
            .meta_set(JWT_KEYS_META, sealed.as_bytes())
            .map_err(|e| e.to_string())?;
        Self::from_stored(&keys, issuer)
    }
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal_id: String,
    pub name: String,
    pub kind: PrincipalKind,
    pub groups: Vec<String>,
    /// The token proved a second factor.
    pub mfa: bool,
}

pub struct App {
    pub store: Arc<dyn Store>,
    pub root: RootKey,
    pub tenant_id: String,
    pub settings: Settings,
    pub tokens: RwLock<Arc<TokenKeys>>,
    dir: RwLock<Arc<Directory>>,
    pub limiter: RateLimiter,
    pub signin_limiter: RateLimiter,
    /// Verified tokens, by SHA-256 of the token: skips the signature check on repeat use.
    /// Revocation is still checked on every request against the directory.
    token_cache: Mutex<HashMap<[u8; 32], Claims>>,
    pub audit_signer: CheckpointSigner,
    /// Serialises directory rebuilds.
    reload: Mutex<()>,
    /// Host trust: host CA, TPM vendor CAs, release keys, outstanding nonces.
    pub fabric: crate::fabric::Fabric,
    /// The audit Merkle tree as of the last signed checkpoint (the checkpointer extends it).
    pub audit_tree: Mutex<Option<strata_audit::CompactTree>>,
    /// Which host each VM is on (placement counts, assignment lists).
    pub vm_index: Mutex<crate::compute::index::VmIndex>,
    /// Imported images' bytes, by digest (`compute::images`).
    pub images: crate::compute::images::ImageStore,
    /// Network writes queue per subscription (`network::guard`).
    pub network_locks: crate::network::guard::Locks,
    /// The latest DDoS counters each host reported per network interface (`network::ddos`).
    pub nic_ddos: crate::network::ddos::Board,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("store")]
    Store(#[from] StoreError),
    #[error("directory")]
    Directory(#[from] crate::directory::DirectoryError),
    #[error("{0}")]
    Keys(String),
}

impl App {
    pub fn new(
        store: Arc<dyn Store>,
        root: RootKey,
        tenant_id: String,
        settings: Settings,
        audit_signer: CheckpointSigner,
        fabric: crate::fabric::Fabric,
        images: crate::compute::images::ImageStore,
    ) -> Result<App, AppError> {
        let tokens = TokenKeys::load_or_create(store.as_ref(), &root, &settings.issuer)
            .map_err(AppError::Keys)?;
        let dir = Directory::load(store.as_ref())?;
        Ok(App {
            limiter: RateLimiter::new(
                settings.rate_limit_per_sec,
                settings.rate_limit_per_sec * 2.0,
            ),
            signin_limiter: RateLimiter::new(
                settings.signin_rate_per_sec,
                settings.signin_rate_per_sec * 2.0,
            ),
            store,
            root,
            tenant_id,
            settings,
            tokens: RwLock::new(Arc::new(tokens)),
            dir: RwLock::new(Arc::new(dir)),
            token_cache: Mutex::new(HashMap::new()),
            audit_signer,
            reload: Mutex::new(()),
            fabric,
            audit_tree: Mutex::new(None),
            vm_index: Mutex::new(crate::compute::index::VmIndex::default()),
            images,
            network_locks: crate::network::guard::Locks::default(),
            nic_ddos: crate::network::ddos::Board::default(),
        })
    }

    pub fn dir(&self) -> Arc<Directory> {
        match self.dir.read() {
            Ok(d) => d.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn tokens(&self) -> Arc<TokenKeys> {
        match self.tokens.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Rebuilds the directory snapshot if the store moved past it.
    pub fn refresh_directory(&self) -> Result<(), AppError> {
        let _guard = self.reload.lock();
        let current = self.dir().revision;
        if self.store.revision()? == current {
            return Ok(());
        }
        let fresh = Directory::load(self.store.as_ref())?;
        match self.dir.write() {
            Ok(mut d) => *d = Arc::new(fresh),
            Err(p) => *p.into_inner() = Arc::new(fresh),
        }
        Ok(())
    }

    /// Scheduled maintenance of the signing keys: rotates when the active key is older than the
    /// rotation period, and picks up a rotation another replica made.
    pub fn maintain_signing_keys(&self) -> Result<(), AppError> {
        let now = strata_types::time::now_unix();
        let current = self.tokens();
        if now - current.signer_created_at > self.settings.key_rotation_secs {
            let kid = self.rotate_signing_key()?;
            tracing::info!(%kid, "rotated the token-signing key (scheduled)");
            return Ok(());
        }
        let stored =
            TokenKeys::load_or_create(self.store.as_ref(), &self.root, &self.settings.issuer)
                .map_err(AppError::Keys)?;
        if stored.signer.kid() != current.signer.kid() {
            match self.tokens.write() {
                Ok(mut t) => *t = Arc::new(stored),
                Err(p) => *p.into_inner() = Arc::new(stored),
            }
        }
        Ok(())
    }

    /// Rotates the token-signing key (the previous key keeps verifying).
    pub fn rotate_signing_key(&self) -> Result<String, AppError> {
        let keys = TokenKeys::rotate(self.store.as_ref(), &self.root, &self.settings.issuer)
            .map_err(AppError::Keys)?;
        let kid = keys.signer.kid().to_string();
        match self.tokens.write() {
            Ok(mut t) => *t = Arc::new(keys),
            Err(p) => *p.into_inner() = Arc::new(keys),
        }
        Ok(kid)
    }

    /// Verifies a bearer token and checks the principal still exists, is enabled, and has not
    /// had its sessions revoked since the token was issued.
    pub fn authenticate(&self, token: &str) -> Result<Caller, ApiError> {
        let digest: [u8; 32] = {
            let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            out
        };
        let now = strata_types::time::now_unix();
        let cached = self
            .token_cache
            .lock()
            .ok()
            .and_then(|c| c.get(&digest).cloned())
            .filter(|c| c.exp > now);
        let claims = match cached {
            Some(c) => c,
            None => {
                let claims = self.tokens().verifier.verify(token, now).map_err(|e| {
                    ApiError::unauthenticated(format!("the access token was refused: {e}"))
                })?;
                if let Ok(mut cache) = self.token_cache.lock() {
                    if cache.len() > 50_000 {
                        cache.retain(|_, c| c.exp > now);
                        if cache.len() > 50_000 {
                            cache.clear();
                        }
                    }
                    cache.insert(digest, claims.clone());
                }
                claims
            }
        };
        if claims.tid != self.tenant_id {
            return Err(ApiError::unauthenticated(
                "the access token is for another tenant",
            ));
        }
        let dir = self.dir();
        let Some(p) = dir.principal(&claims.sub) else {
            return Err(ApiError::unauthenticated(
                "the principal of this access token no longer exists",
            ));
        };
        if !p.enabled {
            return Err(ApiError::unauthenticated(
                "the principal of this access token is disabled",
            ));
        }
        if claims.iat < p.valid_after {
            return Err(ApiError::unauthenticated(
                "this access token was revoked; sign in again",
            ));
        }
        Ok(Caller {
            principal_id: p.id.clone(),
            name: p.name.clone(),
            kind: p.kind,
            groups: dir.groups_of(&p.id).to_vec(),
            mfa: claims.amr.iter().any(|a| a == "mfa"),
        })
    }

    /// The RBAC decision for `caller` doing `action` at `scope` (a lowercase resource key),
    /// including the MFA rule: an allow that rests on a privileged role needs a token that
    /// proved a second factor when the caller is a user.
    pub fn decide(&self, caller: &Caller, action: &str, scope: &str, data: bool) -> Decision {
        let dir = self.dir();

        dir.engine.check(&strata_authz::Request {
            subject: strata_authz::Subject {
                principal_id: &caller.principal_id,
                group_ids: &caller.groups,
            },
            action,
            data_action: data,
            scope,
            now: strata_types::time::now_unix(),
        })
    }

    /// Whether an allow decision needs MFA the caller's token lacks. Returns the role name.
    pub fn missing_mfa(&self, caller: &Caller, decision: &Decision) -> Option<String> {
        if caller.kind != PrincipalKind::User || caller.mfa || !decision.is_allowed() {
            return None;
        }
        let role_id = match &decision.reason {
            strata_authz::Reason::RoleAssignment {
                role_definition_id, ..
            } => role_definition_id.clone(),
            strata_authz::Reason::PimActivation { .. } => return None,
            _ => return None,
        };
        let dir = self.dir();
        let role = dir.engine.role(&role_id)?;
        role.privileged.then(|| role.role_name.clone())
    }

    /// Commits a batch; rebuilds the directory snapshot when identity or authorization data
    /// changed so that the change applies to the very next request.
    pub fn commit(&self, batch: Batch, touches_directory: bool) -> Result<Committed, ApiError> {
        let out = self.store.commit(batch).map_err(|e| match e {
            StoreError::Precondition { key, .. } if crate::network::guard::is_guard(&key) => {
                crate::network::guard::conflict(&key)
            }
            StoreError::Precondition { .. } => ApiError::precondition_failed(
                "the resource changed while this request ran (or a parent no longer exists); read it again and retry",
            ),
            other => {
                log_chain("store commit failed", &other);
                ApiError::internal()
            }
        })?;
        if touches_directory && let Err(e) = self.refresh_directory() {
            log_chain("directory rebuild failed", &e);
        }
        Ok(out)
    }

    /// Appends audit entries on their own (denials, sign-ins, failures).
    pub fn audit_only(&self, entries: Vec<AuditEntry>) {
        if let Err(e) = self.store.commit(Batch {
            ops: vec![],
            audit: entries,
        }) {
            log_chain("audit append failed", &e);
        }
    }
}

/// Whether a kind touches the directory snapshot.
pub fn touches_directory(kind: Kind) -> bool {
    kind.is_directory()
}

/// Logs an error with its whole `source()` chain, once.
pub fn log_chain(what: &str, err: &dyn std::error::Error) {
    let mut chain = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        src = s.source();
    }
    tracing::error!(error = %chain, "{what}");
}
