//! The agent door: every call a host agent makes comes through [`handle`]. See the module
//! overview in `fabric/mod.rs` for the protocol.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strata_audit::AuditEntry;
use strata_store::{Batch, Op, Precondition};
use strata_types::{ApiError, ResourceId};

use super::state::{self, HostEvent, HostState};
use super::{NONCE_TTL_SECS, REGISTRATION_TTL_SECS, hostca, verify};
use crate::app::{App, log_chain};
use crate::dispatch::Reply;
use crate::docs::Doc;
use crate::kinds::Kind;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Bytes that travel as base64 strings in JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&b64().encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        b64()
            .decode(s.trim())
            .map(B64)
            .map_err(|_| serde::de::Error::custom("not valid base64"))
    }
}

/// One agent request, independent of the HTTP library.
pub struct AgentCall<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub body: &'a [u8],
    /// The leaf certificate the client presented in the TLS handshake (already chained to the
    /// host CA by rustls), if any.
    pub peer_certificate: Option<&'a [u8]>,
    pub client_ip: String,
    pub request_id: &'a str,
}

pub fn host_id(name: &str) -> Result<ResourceId, ApiError> {
    ResourceId::tenant()
        .child_provider("Strata.Fabric", "hosts", name)
        .map_err(|e| ApiError::bad_request("InvalidHostName", format!("host name: {e}")))
}

pub fn token_id(name: &str) -> Result<ResourceId, ApiError> {
    ResourceId::tenant()
        .child_provider("Strata.Fabric", "joinTokens", name)
        .map_err(|_| ApiError::unauthenticated("the join token is not valid"))
}

fn entry(
    call: &AgentCall<'_>,
    who: &str,
    action: &str,
    scope: &str,
    (outcome, status): (&str, u16),
    reason: &str,
    details: Value,
) -> AuditEntry {
    AuditEntry {
        seq: 0,
        time: strata_types::time::now_rfc3339(),
        request_id: call.request_id.to_string(),
        principal_id: None,
        principal_name: Some(format!("agent:{who}")),
        client_ip: Some(call.client_ip.clone()),
        category: "fabric".into(),
        action: action.into(),
        scope: scope.into(),
        outcome: outcome.into(),
        status,
        reason: reason.into(),
        details,
    }
}

/// Answers one agent call; refusals are audited.
pub fn handle(app: &App, call: AgentCall<'_>) -> Reply {
    let segments: Vec<&str> = call
        .path
        .trim_start_matches("/fabric/v1/")
        .split('/')
        .collect();
    // Unauthenticated work is bounded per client address before anything else; an agent
    // presenting a client certificate is checked against its host inside the handler.
    if call.peer_certificate.is_none()
        && let Err(wait) = app.fabric.limiter.check(&format!("ip:{}", call.client_ip))
    {
        let mut r = Reply::error(&ApiError::new(
            429,
            "TooManyRequests",
            format!("too many agent requests from this address; retry after {wait} s"),
        ));
        r.retry_after = Some(wait);
        return r;
    }
    let result = match (call.method, segments.as_slice()) {
        ("POST", ["register"]) => register(app, &call),
        ("POST", ["register", id, "activate"]) => activate(app, &call, id),
        ("POST", ["hosts", host, "nonce"]) => nonce(app, &call, host),
        ("POST", ["hosts", host, "evidence"]) => evidence(app, &call, host),
        ("GET", ["hosts", host, "assignments"]) => assignments(app, &call, host),
        ("POST", ["hosts", host, "vmstatus"]) => vm_status(app, &call, host),
        ("POST", ["hosts", host, "nicstatus"]) => nic_status(app, &call, host),
        ("POST", ["hosts", host, "snapshots", token, "failed"]) => {
            snapshot_failed(app, &call, host, token)
        }
        _ => Err(ApiError::not_found(call.path)),
    };
    match result {
        Ok(r) => r,
        Err(e) => refused(app, &call, &segments, &e),
    }
}

/// Audits a refused call and answers it. Refusals are audited, at most a bounded number per
/// client address so that a flood cannot fill the log (evidence provably from a host's TPM is
/// audited by the handler itself, always).
fn refused(app: &App, call: &AgentCall<'_>, segments: &[&str], e: &ApiError) -> Reply {
    if e.status != 404
        && e.status != 429
        && app
            .fabric
            .audit_gate
            .check(&format!("ip:{}", call.client_ip))
            .is_ok()
    {
        let scope = match segments {
            ["hosts", host, ..] => host_id(host)
                .map(|h| h.to_string())
                .unwrap_or_else(|_| "/providers/Strata.Fabric".into()),
            _ => "/providers/Strata.Fabric".into(),
        };
        app.audit_only(vec![entry(
            call,
            "unknown",
            &format!(
                "{} {}",
                call.method,
                call.path.chars().take(200).collect::<String>()
            ),
            &scope,
            ("denied", e.status),
            &e.message,
            Value::Null,
        )]);
    }
    Reply::error(e)
}

/// Whether an agent call is `GET hosts/{host}/images/{sha256}`, whose answer is a stream of
/// bytes rather than JSON ([`image_fetch`]).
pub fn is_image_fetch(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches("/fabric/v1/").split('/').collect();
    matches!(segments.as_slice(), ["hosts", _, "images", _])
}

/// `GET hosts/{host}/images/{sha256}`: an imported image's bytes for a host, opened. Only with
/// the host's current attestation-bound certificate (so only while it is Trusted), and only
/// for content a VM assigned to that host was made from (`compute::door::image_for_host`).
/// Every fetch and every refusal is audited.
pub fn image_fetch(app: &App, call: AgentCall<'_>) -> Result<(std::fs::File, u64), Box<Reply>> {
    let segments: Vec<&str> = call
        .path
        .trim_start_matches("/fabric/v1/")
        .split('/')
        .collect();
    let result = (|| {
        if call.peer_certificate.is_none()
            && let Err(wait) = app.fabric.limiter.check(&format!("ip:{}", call.client_ip))
        {
            return Err(ApiError::new(
                429,
                "TooManyRequests",
                format!("too many agent requests from this address; retry after {wait} s"),
            ));
        }
        let ["hosts", host, "images", digest] = segments.as_slice() else {
            return Err(ApiError::not_found(call.path));
        };
        let (hid, _) = current_host(app, &call, host)?;
        let path = crate::compute::door::image_for_host(app, host, digest)?;
        let file = std::fs::File::open(&path).map_err(|e| {
            log_chain("cannot open image bytes", &e);
            ApiError::internal()
        })?;
        let len = file
            .metadata()
            .map_err(|e| {
                log_chain("cannot stat image bytes", &e);
                ApiError::internal()
            })?
            .len();
        app.audit_only(vec![entry(
            &call,
            host,
            "Strata.Compute/images/download/action",
            hid.as_str(),
            ("success", 200),
            "the image content of a VM assigned to this host",
            json!({ "sha256": digest, "bytes": len }),
        )]);
        Ok((file, len))
    })();
    result.map_err(|e| Box::new(refused(app, &call, &segments, &e)))
}

/// The host `host` (its id and document) if the call carries its current attestation-bound
/// client certificate: every mTLS-only call of the door starts here.
fn current_host(
    app: &App,
    call: &AgentCall<'_>,
    host: &str,
) -> Result<(ResourceId, Doc), ApiError> {
    let hid = host_id(host)?;
    let (_, doc) =
        load(app, &hid)?.ok_or_else(|| ApiError::unauthenticated("no current host certificate"))?;
    if !current_certificate(&doc, call.peer_certificate) {
        return Err(ApiError::unauthenticated(
            "this call needs the host's current client certificate, which is issued after a passing attestation round",
        ));
    }
    Ok((hid, doc))
}

/// Whether an agent call is `PUT hosts/{host}/snapshots/{token}`, whose body is a stream of
/// bytes rather than JSON ([`snapshot_begin`], [`snapshot_finish`]).
pub fn is_snapshot_upload(method: &str, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches("/fabric/v1/").split('/').collect();
    method == "PUT" && matches!(segments.as_slice(), ["hosts", _, "snapshots", _])
}

/// A snapshot upload admitted by [`snapshot_begin`].
#[derive(Debug)]
pub struct SnapshotTicket {
    pub host: String,
    pub token: String,
    /// Where the bytes go while they arrive (0600, the control plane's data directory).
    pub path: std::path::PathBuf,
    /// The most bytes accepted.
    pub limit: u64,
    /// The uploads in flight, which this one leaves when dropped (also when its request is
    /// dropped half-way), its partial file with it.
    uploads: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Drop for SnapshotTicket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        self.uploads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.token);
    }
}

/// Admits `PUT hosts/{host}/snapshots/{token}` before a byte of its body is read: the host's
/// current certificate, and a snapshot pending on one of its VMs under that token.
pub fn snapshot_begin(app: &App, call: AgentCall<'_>) -> Result<SnapshotTicket, Box<Reply>> {
    let segments: Vec<&str> = call
        .path
        .trim_start_matches("/fabric/v1/")
        .split('/')
        .collect();
    let result = (|| {
        let ["hosts", host, "snapshots", token] = segments.as_slice() else {
            return Err(ApiError::not_found(call.path));
        };
        current_host(app, &call, host)?;
        crate::compute::snapshots::check_pending(app, host, token)?;
        // One upload per snapshot at a time.
        let fresh = app
            .fabric
            .uploads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((*token).to_owned());
        if !fresh {
            return Err(ApiError::conflict(
                "UploadInProgress",
                "this snapshot is being uploaded already",
            ));
        }
        Ok(SnapshotTicket {
            host: (*host).to_owned(),
            token: (*token).to_owned(),
            path: app.images.incoming("snapshot"),
            limit: crate::compute::snapshots::max_bytes(app),
            uploads: app.fabric.uploads.clone(),
        })
    })();
    result.map_err(|e| Box::new(refused(app, &call, &segments, &e)))
}

/// Ends a snapshot upload: the bytes are checked and stored, or the upload refused (audited
/// either way). The received file is removed unless it was stored.
pub fn snapshot_finish(
    app: &App,
    call: AgentCall<'_>,
    ticket: &SnapshotTicket,
    received: Result<(u64, String), ApiError>,
) -> Reply {
    let segments: Vec<&str> = call
        .path
        .trim_start_matches("/fabric/v1/")
        .split('/')
        .collect();
    let result = current_host(app, &call, &ticket.host).and_then(|(hid, _)| {
        let audit = entry(
            &call,
            &ticket.host,
            "Strata.Compute/snapshots/write",
            hid.as_str(),
            ("success", 200),
            "",
            Value::Null,
        );
        match received {
            Ok(r) => crate::compute::snapshots::complete(
                app,
                &ticket.host,
                &ticket.token,
                &ticket.path,
                r,
                audit,
            ),
            Err(e) => {
                crate::compute::snapshots::upload_failed(
                    app,
                    &ticket.host,
                    &ticket.token,
                    &e,
                    audit,
                )?;
                Err(e)
            }
        }
    });
    let _ = std::fs::remove_file(&ticket.path);
    match result {
        Ok(v) => Reply::json(200, v),
        Err(e) => refused(app, &call, &segments, &e),
    }
}

/// `POST hosts/{host}/snapshots/{token}/failed`: the host says why it could not take one.
fn snapshot_failed(
    app: &App,
    call: &AgentCall<'_>,
    host: &str,
    token: &str,
) -> Result<Reply, ApiError> {
    let (hid, _) = current_host(app, call, host)?;
    let audit = entry(
        call,
        host,
        "Strata.Compute/snapshots/write",
        hid.as_str(),
        ("failure", 200),
        "",
        Value::Null,
    );
    let v = crate::compute::snapshots::fail(app, host, token, call.body, audit)?;
    Ok(Reply::json(200, v))
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    crate::handlers::parse_body(body)
}

fn load(app: &App, id: &ResourceId) -> Result<Option<(strata_store::Record, Doc)>, ApiError> {
    match app.store.get(id.key()) {
        Ok(Some(rec)) => {
            let doc = Doc::parse(&rec.body)?;
            Ok(Some((rec, doc)))
        }
        Ok(None) => Ok(None),
        Err(e) => {
            log_chain("store read failed", &e);
            Err(ApiError::internal())
        }
    }
}

fn commit(app: &App, ops: Vec<Op>, audit: Vec<AuditEntry>) -> Result<(), ApiError> {
    app.commit(Batch { ops, audit }, false).map(|_| ())
}

fn sha256_hex(bytes: &[u8]) -> String {
    strata_attest::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn random(n: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut out)
        .map_err(|_| ApiError::internal())?;
    Ok(out)
}

/// `internal` of a join token.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInternal {
    pub hash: String,
    #[serde(default)]
    pub pending: Option<PendingRegistration>,
}

/// A registration waiting for its credential to be activated.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingRegistration {
    pub registration_id: String,
    pub secret_hash: String,
    pub hostname: String,
    pub ek_public: String,
    pub ek_sha256: String,
    pub ek_certificate: Option<String>,
    pub ek_certificate_issuer: Option<String>,
    pub ak_public: String,
    pub ak_name: String,
    pub ak_algorithm: String,
    pub development: bool,
    pub expires_at: i64,
}

/// `internal` of a host.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostInternal {
    pub ak_public: String,
    pub ek_public: String,
    #[serde(default)]
    pub last_clock: Option<verify::Clock>,
    /// SHA-256 of the one certificate currently accepted for this host.
    #[serde(default)]
    pub cert_fingerprint: Option<String>,
    #[serde(default)]
    pub cert_not_after: i64,
    #[serde(default)]
    pub last_pass_at: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RegisterRequest {
    join_token: String,
    hostname: String,
    ek_public: B64,
    #[serde(default)]
    ek_certificate: Option<B64>,
    ak_public: B64,
    #[serde(default)]
    development: bool,
    #[serde(default)]
    agent_version: Option<String>,
}

/// Splits `sjt.{name}.{secret}`.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("sjt.")?;
    let (name, secret) = rest.split_once('.')?;
    (!name.is_empty() && !secret.is_empty()).then_some((name, secret))
}

fn register(app: &App, call: &AgentCall<'_>) -> Result<Reply, ApiError> {
    if app
        .signin_limiter
        .check(&format!("fabric:{}", call.client_ip))
        .is_err()
    {
        return Err(ApiError::new(
            429,
            "TooManyRequests",
            "too many registration attempts; retry later",
        ));
    }
    let req: RegisterRequest = parse(call.body)?;
    let _ = req.agent_version;
    let bad_token = || {
        ApiError::unauthenticated(
            "the join token is not valid, already used, or expired; create a new one with 'strata host join-token create'",
        )
    };
    let (token_name, secret) = split_token(req.join_token.trim()).ok_or_else(bad_token)?;
    let tid = token_id(token_name)?;
    let (rec, mut tdoc) = load(app, &tid)?.ok_or_else(bad_token)?;
    let mut internal: TokenInternal = crate::docs::internal_of(&tdoc);
    if !strata_identity::secret::verify(secret, &internal.hash) {
        return Err(bad_token());
    }
    let now = strata_types::time::now_unix();
    let props = &tdoc.properties;
    if props.get("used").and_then(Value::as_bool).unwrap_or(false)
        || props.get("expiresAt").and_then(Value::as_i64).unwrap_or(0) <= now
    {
        return Err(bad_token());
    }
    let allow_dev = props
        .get("allowDevelopment")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if req.development && !allow_dev {
        return Err(ApiError::forbidden(
            "this join token does not allow development hosts (software TPM); create one with --allow-development",
        ));
    }
    if let Some(pinned) = props.get("hostname").and_then(Value::as_str)
        && !pinned.eq_ignore_ascii_case(&req.hostname)
    {
        return Err(ApiError::forbidden(format!(
            "this join token is for host '{pinned}', not '{}'",
            req.hostname
        )));
    }
    let hid = host_id(&req.hostname)?;
    if load(app, &hid)?.is_some() {
        return Err(ApiError::conflict(
            "HostAlreadyRegistered",
            format!(
                "a host named '{}' is already registered; delete it first to enrol it again",
                req.hostname
            ),
        ));
    }
    let ek_sha = sha256_hex(&req.ek_public.0);
    if let Some(p) = &internal.pending
        && p.expires_at > now
        && p.ek_sha256 != ek_sha
    {
        return Err(ApiError::conflict(
            "JoinTokenInUse",
            "another TPM is registering with this join token right now",
        ));
    }
    // The EK: its certificate must chain to a configured TPM vendor CA and carry this key.
    let ek = verify::EkPublic::parse(&req.ek_public.0)
        .map_err(|e| ApiError::bad_request("InvalidEndorsementKey", e))?;
    let mut ek_issuer = None;
    match &req.ek_certificate {
        Some(cert) => {
            let leaf = strata_identity::x509::Certificate::from_der(&cert.0).map_err(|e| {
                ApiError::bad_request(
                    "InvalidEkCertificate",
                    format!("the EK certificate does not parse: {e}"),
                )
            })?;
            // A development host's EK certificate comes from a local software-TPM CA: it is
            // recorded, not trusted.
            if app.fabric.tpm_anchors.is_empty() && !req.development {
                return Err(ApiError::forbidden(
                    "no TPM vendor CA is configured, so no EK certificate can be trusted; start the server with --tpm-ca FILE",
                ));
            }
            if !req.development {
                let chain = strata_identity::x509::verify_chain(
                    &leaf,
                    &app.fabric.tpm_intermediates,
                    &app.fabric.tpm_anchors,
                    now,
                )
                .map_err(|e| {
                    ApiError::forbidden(format!("the EK certificate is not trusted: {e}"))
                })?;
                ek_issuer = chain.last().map(|c| c.subject_summary());
            }
            let (modulus, _) = leaf.rsa_public_key().ok_or_else(|| {
                ApiError::bad_request(
                    "InvalidEkCertificate",
                    "the EK certificate does not hold an RSA key",
                )
            })?;
            if modulus != ek.modulus() {
                return Err(ApiError::forbidden(
                    "the EK certificate is for a different key than the endorsement key sent",
                ));
            }
        }
        None if req.development => {}
        None => {
            return Err(ApiError::forbidden(
                "an EK certificate is required for production hosts (read it from the TPM's NV index 0x01c00002)",
            ));
        }
    }
    // The AK: a restricted signing key that cannot leave the TPM.
    let ak = verify::AkPublic::parse(&req.ak_public.0)
        .map_err(|e| ApiError::bad_request("InvalidAttestationKey", e))?;
    let secret_bytes = random(32)?;
    let (credential_blob, encrypted_secret) = verify::make_credential(&ek, &ak, &secret_bytes)
        .map_err(|e| ApiError::bad_request("InvalidEndorsementKey", e))?;
    let registration_id = format!("{token_name}.{}", uuid::Uuid::new_v4().simple());
    internal.pending = Some(PendingRegistration {
        registration_id: registration_id.clone(),
        secret_hash: sha256_hex(&secret_bytes),
        hostname: req.hostname.clone(),
        ek_public: b64().encode(&req.ek_public.0),
        ek_sha256: ek_sha.clone(),
        ek_certificate: req.ek_certificate.as_ref().map(|c| b64().encode(&c.0)),
        ek_certificate_issuer: ek_issuer,
        ak_public: b64().encode(&req.ak_public.0),
        ak_name: strata_attest::hex(&ak.name()),
        ak_algorithm: ak.algorithm().into(),
        development: req.development,
        expires_at: now + REGISTRATION_TTL_SECS,
    });
    tdoc.internal = serde_json::to_value(&internal).map_err(|_| ApiError::internal())?;
    commit(
        app,
        vec![Op::Put {
            key: rec.key.clone(),
            rtype: rec.rtype.clone(),
            parent: rec.parent.clone(),
            body: tdoc.to_json()?,
            pre: Precondition::Revision(rec.revision),
        }],
        vec![entry(
            call,
            &req.hostname,
            "Strata.Fabric/hosts/register/action",
            hid.as_str(),
            ("success", 200),
            "join token valid; EK accepted; credential challenge issued",
            json!({ "ekSha256": ek_sha, "development": req.development }),
        )],
    )?;
    Ok(Reply::json(
        200,
        json!({
            "registrationId": registration_id,
            "credentialBlob": b64().encode(credential_blob),
            "encryptedSecret": b64().encode(encrypted_secret),
            "expiresInSecs": REGISTRATION_TTL_SECS,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ActivateRequest {
    secret: B64,
}

fn activate(app: &App, call: &AgentCall<'_>, registration_id: &str) -> Result<Reply, ApiError> {
    let req: ActivateRequest = parse(call.body)?;
    let refused = || {
        ApiError::unauthenticated(
            "the registration is unknown, expired, or the credential did not activate",
        )
    };
    let (token_name, _) = registration_id.split_once('.').ok_or_else(refused)?;
    let tid = token_id(token_name)?;
    let (rec, mut tdoc) = load(app, &tid)?.ok_or_else(refused)?;
    let mut internal: TokenInternal = crate::docs::internal_of(&tdoc);
    let now = strata_types::time::now_unix();
    let pending = internal
        .pending
        .clone()
        .filter(|p| p.registration_id == registration_id && p.expires_at > now)
        .ok_or_else(refused)?;
    if tdoc
        .properties
        .get("used")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || tdoc
            .properties
            .get("expiresAt")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            <= now
    {
        return Err(refused());
    }
    // One TPM, one host: a machine cannot enrol twice to draw more workloads.
    let hosts = app
        .store
        .list_children("/", &Kind::Host.type_key())
        .map_err(|e| {
            log_chain("store read failed", &e);
            ApiError::internal()
        })?;
    for h in hosts {
        let d = Doc::parse(&h.body)?;
        if d.properties
            .pointer("/tpm/ekSha256")
            .and_then(Value::as_str)
            == Some(pending.ek_sha256.as_str())
        {
            return Err(ApiError::conflict(
                "TpmAlreadyEnrolled",
                format!(
                    "this TPM is already enrolled as host '{}'; delete that host first",
                    d.name
                ),
            ));
        }
    }
    if !strata_identity::secret::constant_time_eq(
        sha256_hex(&req.secret.0).as_bytes(),
        pending.secret_hash.as_bytes(),
    ) {
        return Err(refused());
    }
    let hid = host_id(&pending.hostname)?;
    let policy = tdoc
        .properties
        .get("policy")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let now_s = strata_types::time::now_rfc3339();
    let host = Doc {
        id: hid.to_string(),
        name: pending.hostname.clone(),
        rtype: Kind::Host.type_name().into(),
        location: None,
        tags: Default::default(),
        properties: json!({
            "hostId": uuid::Uuid::new_v4().to_string(),
            "state": HostState::Registered.as_str(),
            "reason": "registered; waiting for the first attestation round",
            "cordoned": false,
            "trustLevel": if pending.development { "development (software TPM)" } else { "hardware TPM" },
            "development": pending.development,
            "policy": policy,
            "registeredAt": now_s,
            "joinToken": token_name,
            "attestationIntervalSecs": app.fabric.interval(),
            "tpm": {
                "ekSha256": pending.ek_sha256,
                "ekCertificateIssuer": pending.ek_certificate_issuer,
                "ekCertificateVerified": pending.ek_certificate_issuer.is_some(),
                "akName": pending.ak_name,
                "akAlgorithm": pending.ak_algorithm,
            },
            "lastAttestation": Value::Null,
            "certificate": Value::Null,
            "provisioningState": "Succeeded",
        }),
        system_data: strata_types::SystemData {
            created_by: format!("agent:{}", pending.hostname),
            created_at: now_s.clone(),
            last_modified_by: format!("agent:{}", pending.hostname),
            last_modified_at: now_s,
        },
        internal: serde_json::to_value(HostInternal {
            ak_public: pending.ak_public.clone(),
            ek_public: pending.ek_public.clone(),
            ..Default::default()
        })
        .map_err(|_| ApiError::internal())?,
    };
    internal.pending = None;
    tdoc.internal = serde_json::to_value(&internal).map_err(|_| ApiError::internal())?;
    if let Some(o) = tdoc.properties.as_object_mut() {
        o.insert("used".into(), json!(true));
        o.insert("usedBy".into(), json!(hid.to_string()));
    }
    commit(
        app,
        vec![
            Op::Put {
                key: rec.key.clone(),
                rtype: rec.rtype.clone(),
                parent: rec.parent.clone(),
                body: tdoc.to_json()?,
                pre: Precondition::Revision(rec.revision),
            },
            Op::Put {
                key: hid.key().into(),
                rtype: Kind::Host.type_key(),
                parent: "/".into(),
                body: host.to_json()?,
                pre: Precondition::MustNotExist,
            },
        ],
        vec![entry(
            call,
            &pending.hostname,
            "Strata.Fabric/hosts/write",
            hid.as_str(),
            ("success", 201),
            "credential activated: the AK lives in the TPM that holds the EK; host registered",
            json!({ "akName": pending.ak_name, "joinToken": token_name }),
        )],
    )?;
    Ok(Reply::json(
        201,
        json!({ "host": pending.hostname, "id": hid.to_string(), "attestationIntervalSecs": app.fabric.interval() }),
    ))
}

/// Whether `cert` is this host's one current certificate and the host is Trusted.
fn current_certificate(doc: &Doc, cert: Option<&[u8]>) -> bool {
    let internal: HostInternal = crate::docs::internal_of(doc);
    let now = strata_types::time::now_unix();
    match (cert, internal.cert_fingerprint) {
        (Some(c), Some(fp)) => {
            strata_identity::secret::constant_time_eq(
                hostca::fingerprint(c).as_bytes(),
                fp.as_bytes(),
            ) && internal.cert_not_after > now
                && doc.prop_str("state") == Some(HostState::Trusted.as_str())
        }
        _ => false,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NonceRequest {
    agent_public_key: B64,
}

fn nonce(app: &App, call: &AgentCall<'_>, host: &str) -> Result<Reply, ApiError> {
    let req: NonceRequest = parse(call.body)?;
    let hid = host_id(host)?;
    let (_, doc) = load(app, &hid)?.ok_or_else(|| ApiError::not_found(hid.as_str()))?;
    // A host that holds a current certificate must show it: nobody else can churn its nonces.
    // Without one, requesters are limited per (address, host).
    let internal: HostInternal = crate::docs::internal_of(&doc);
    if !current_certificate(&doc, call.peer_certificate) {
        if internal.cert_fingerprint.is_some()
            && internal.cert_not_after > strata_types::time::now_unix()
        {
            return Err(ApiError::unauthenticated(
                "this host holds a current certificate; request nonces over mTLS with it",
            ));
        }
        if app
            .fabric
            .limiter
            .check(&format!("nonce:{}:{}", call.client_ip, hid.key()))
            .is_err()
        {
            return Err(ApiError::new(
                429,
                "TooManyRequests",
                "too many nonce requests for this host from this address",
            ));
        }
    }
    if req.agent_public_key.0.len() != 65 {
        return Err(ApiError::bad_request(
            "InvalidAgentKey",
            "agentPublicKey must be an uncompressed P-256 point",
        ));
    }
    let policy = super::policy::load_for_host(app, &doc)?;
    let nonce = app
        .fabric
        .nonces
        .mint(
            hid.key(),
            &req.agent_public_key.0,
            strata_types::time::now_unix(),
        )
        .map_err(|_| ApiError::internal())?;
    let (bank, pcrs) = match &policy {
        Ok(p) => verify::quote_selection(p),
        Err(_) => ("sha256".to_string(), (0..8).collect()),
    };
    Ok(Reply::json(
        200,
        json!({
            "nonce": b64().encode(nonce),
            "pcrBank": bank,
            "pcrs": pcrs,
            "expiresInSecs": NONCE_TTL_SECS,
            "attestationIntervalSecs": app.fabric.interval(),
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EvidenceRequest {
    nonce: B64,
    agent_public_key: B64,
    evidence: Value,
}

fn evidence(app: &App, call: &AgentCall<'_>, host: &str) -> Result<Reply, ApiError> {
    let req: EvidenceRequest = parse(call.body)?;
    let hid = host_id(host)?;
    let now = strata_types::time::now_unix();
    // The nonce must be one this host was given for this key, unused and fresh; it is spent
    // either way.
    let spent = app
        .fabric
        .nonces
        .spend(&req.nonce.0, hid.key(), &req.agent_public_key.0, now);
    if let Err(why) = spent {
        return Err(ApiError::bad_request(
            "UnknownNonce",
            format!(
                "the nonce was not issued to this host for this key, was already used, or expired ({why:?}); ask for a new one"
            ),
        ));
    }
    // A concurrent change to the host (sweep, operator action) must not throw a valid round
    // away: reload and apply the round again, a few times.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (rec, mut doc) = load(app, &hid)?.ok_or_else(|| ApiError::not_found(hid.as_str()))?;
        let mut internal: HostInternal = crate::docs::internal_of(&doc);
        let ak_bytes = b64()
            .decode(&internal.ak_public)
            .map_err(|_| ApiError::internal())?;
        let ak = verify::AkPublic::parse(&ak_bytes).map_err(|_| ApiError::internal())?;
        let policy = super::policy::load_for_host(app, &doc)?;
        let qualifying =
            strata_attest::round::qualifying_data(&req.nonce.0, &req.agent_public_key.0);
        let outcome = verify::appraise(
            &req.evidence,
            &ak,
            &qualifying,
            policy.as_ref().map_err(String::as_str),
            internal.last_clock.as_ref(),
        );
        if !outcome.signature_valid {
            // Not provably from this host's TPM: refuse, audit, change nothing.
            return Err(ApiError::forbidden(format!(
                "the evidence is not signed by this host's attestation key: {}",
                outcome.failures.join("; ")
            )));
        }
        if !outcome.fresh {
            // Signed by the host's AK but not over this round's nonce: a replayed quote. Refuse and
            // record it as an incident, but change nothing (whoever replays it is not the host).
            let reason = format!("replayed quote refused: {}", outcome.failures.join("; "));
            tracing::error!(host = %host, %reason, "host trust incident");
            let mut e = entry(
                call,
                host,
                "Strata.Security/incidents/write",
                hid.as_str(),
                ("incident", 403),
                &reason,
                json!({ "severity": "high", "stateChanged": false }),
            );
            e.category = "incident".into();
            app.audit_only(vec![e]);
            return Err(ApiError::forbidden(reason));
        }
        let event = if outcome.passed {
            HostEvent::Passed
        } else {
            HostEvent::Failed {
                reason: outcome.failures.join("; "),
                attack: outcome.attack,
            }
        };
        let current = doc
            .prop_str("state")
            .and_then(HostState::parse)
            .unwrap_or(HostState::Registered);
        let t = state::apply(current, &event);
        let mut certificate = None;
        if t.effects.issue_certificate {
            let issued = app
                .fabric
                .host_ca
                .issue(
                    &doc.name,
                    &req.agent_public_key.0,
                    app.fabric.cert_lifetime(),
                )
                .map_err(|e| ApiError::bad_request("InvalidAgentKey", e))?;
            internal.cert_fingerprint = Some(issued.fingerprint.clone());
            internal.cert_not_after = issued.not_after;
            certificate = Some(issued);
        }
        if t.effects.revoke_certificate || t.to != HostState::Trusted {
            internal.cert_fingerprint = None;
            internal.cert_not_after = 0;
        }
        if outcome.passed {
            internal.last_pass_at = now;
        }
        if outcome.clock.is_some() {
            internal.last_clock = outcome.clock;
        }
        let now_s = strata_types::time::now_rfc3339();
        let previous_certificate = doc
            .properties
            .get("certificate")
            .cloned()
            .unwrap_or(Value::Null);
        if let Some(o) = doc.properties.as_object_mut() {
            o.insert("state".into(), json!(t.to.as_str()));
            o.insert("reason".into(), json!(t.reason));
            if t.to == HostState::Quarantined && t.from != HostState::Quarantined {
                o.insert("quarantineReason".into(), json!(t.reason));
            }
            if t.effects.cordon {
                o.insert("cordoned".into(), json!(true));
            }
            o.insert(
                "lastAttestation".into(),
                json!({
                    "time": now_s,
                    "passed": outcome.passed,
                    "failures": outcome.failures,
                    "secureBoot": outcome.secure_boot,
                    "events": outcome.events,
                    "policy": policy.as_ref().ok().map(|p| p.name.clone()),
                    "policyVersion": policy.as_ref().ok().map(|p| p.version),
                }),
            );
            if outcome.passed {
                o.insert("lastTrustedAt".into(), json!(now_s));
            }
            o.insert(
            "certificate".into(),
            match &certificate {
                Some(c) => json!({ "fingerprint": c.fingerprint, "notAfter": strata_types::time::rfc3339(c.not_after) }),
                None if internal.cert_fingerprint.is_some() => previous_certificate,
                None => Value::Null,
            },
        );
        }
        doc.internal = serde_json::to_value(&internal).map_err(|_| ApiError::internal())?;
        doc.system_data.last_modified_at = now_s;
        doc.system_data.last_modified_by = format!("agent:{host}");
        let mut audit = vec![entry(
            call,
            host,
            "Strata.Fabric/hosts/attest/action",
            hid.as_str(),
            (if outcome.passed { "success" } else { "failure" }, 200),
            &t.reason,
            json!({ "from": t.from.as_str(), "to": t.to.as_str(), "failures": outcome.failures }),
        )];
        if let Some(incident) = &t.effects.incident {
            tracing::error!(host = %host, %incident, "host trust incident");
            let mut e = entry(
                call,
                host,
                "Strata.Security/incidents/write",
                hid.as_str(),
                ("incident", 200),
                incident,
                json!({ "severity": "high", "cordoned": t.effects.cordon, "certificateRevoked": t.effects.revoke_certificate }),
            );
            e.category = "incident".into();
            audit.push(e);
        }
        match commit(
            app,
            vec![Op::Put {
                key: rec.key.clone(),
                rtype: rec.rtype.clone(),
                parent: rec.parent.clone(),
                body: doc.to_json()?,
                pre: Precondition::Revision(rec.revision),
            }],
            audit,
        ) {
            Ok(()) => {}
            Err(e) if e.status == 412 && attempt < 3 => continue,
            Err(e) => return Err(e),
        }
        if let Ok(mut req) = app.fabric.attest_requests.lock() {
            req.remove(hid.key());
        }
        return Ok(Reply::json(
            200,
            json!({
                "passed": outcome.passed,
                "state": t.to.as_str(),
                "reason": t.reason,
                "failures": outcome.failures,
                "certificate": certificate.as_ref().map(|c| c.pem.clone()),
                "caCertificate": app.fabric.host_ca.cert_pem,
                "nextRoundSecs": app.fabric.interval(),
                "certificateNotAfter": certificate.as_ref().map(|c| c.not_after),
            }),
        ));
    }
}

fn assignments(app: &App, call: &AgentCall<'_>, host: &str) -> Result<Reply, ApiError> {
    let (hid, doc) = current_host(app, call, host)?;
    let (vms, network) =
        crate::compute::door::assigned(app, host, doc.prop_str("state").unwrap_or(""))?;
    Ok(Reply::json(
        200,
        json!({
            "host": host,
            "state": doc.prop_str("state"),
            "attestNow": app.fabric.attest_requests.lock().map(|r| r.contains_key(hid.key())).unwrap_or(false),
            "virtualMachines": vms,
            "network": network,
        }),
    ))
}

/// `POST hosts/{host}/vmstatus`: the host's agent says what its VMs are doing.
fn vm_status(app: &App, call: &AgentCall<'_>, host: &str) -> Result<Reply, ApiError> {
    current_host(app, call, host)?;
    let audit = |action: &str, scope: &str, reason: &str, details: Value| {
        entry(call, host, action, scope, ("success", 200), reason, details)
    };
    let accepted = crate::compute::door::apply_reports(app, host, call.body, &audit)?;
    Ok(Reply::json(200, json!({ "accepted": accepted })))
}

/// `POST hosts/{host}/nicstatus`: the host's agent reports its interfaces' DDoS counters and
/// mitigation events (`network::ddos`).
fn nic_status(app: &App, call: &AgentCall<'_>, host: &str) -> Result<Reply, ApiError> {
    current_host(app, call, host)?;
    let audit = |action: &str, scope: &str, reason: &str, details: Value| {
        entry(call, host, action, scope, ("success", 200), reason, details)
    };
    let (nics, events) = crate::network::ddos::apply_report(app, host, call.body, &audit)?;
    Ok(Reply::json(
        200,
        json!({ "acceptedInterfaces": nics, "acceptedEvents": events }),
    ))
}

/// Demotes Trusted hosts whose last passing round is older than the staleness window.
/// Runs on the checkpointer's tick.
pub fn sweep(app: &App) {
    let now = strata_types::time::now_unix();
    let stale_after = app.fabric.stale_after();
    let records = match app.store.list_children("/", &Kind::Host.type_key()) {
        Ok(r) => r,
        Err(e) => {
            log_chain("fabric sweep: listing hosts failed", &e);
            return;
        }
    };
    for rec in records {
        let Ok(mut doc) = Doc::parse(&rec.body) else {
            continue;
        };
        if doc.prop_str("state") != Some(HostState::Trusted.as_str()) {
            continue;
        }
        let mut internal: HostInternal = crate::docs::internal_of(&doc);
        let age = now - internal.last_pass_at;
        if age <= stale_after {
            continue;
        }
        let t = state::apply(
            HostState::Trusted,
            &HostEvent::Stale {
                last_pass_age_secs: age,
            },
        );
        internal.cert_fingerprint = None;
        internal.cert_not_after = 0;
        if let Some(o) = doc.properties.as_object_mut() {
            o.insert("state".into(), json!(t.to.as_str()));
            o.insert("reason".into(), json!(t.reason));
            o.insert("certificate".into(), Value::Null);
        }
        let Ok(v) = serde_json::to_value(&internal) else {
            continue;
        };
        doc.internal = v;
        let Ok(body) = doc.to_json() else { continue };
        let incident = t.effects.incident.clone().unwrap_or_default();
        tracing::error!(host = %doc.name, %incident, "host trust incident");
        let mk = |category: &str, action: &str, outcome: &str, reason: &str| AuditEntry {
            seq: 0,
            time: strata_types::time::now_rfc3339(),
            request_id: "fabric-sweep".into(),
            principal_id: None,
            principal_name: Some("strata-system".into()),
            client_ip: None,
            category: category.into(),
            action: action.into(),
            scope: doc.id.clone(),
            outcome: outcome.into(),
            status: 200,
            reason: reason.into(),
            details: json!({ "from": "Trusted", "to": t.to.as_str() }),
        };
        let audit = vec![
            mk("fabric", "Strata.Fabric/hosts/write", "success", &t.reason),
            mk(
                "incident",
                "Strata.Security/incidents/write",
                "incident",
                &incident,
            ),
        ];
        if let Err(e) = app.store.commit(Batch {
            ops: vec![Op::Put {
                key: rec.key.clone(),
                rtype: rec.rtype.clone(),
                parent: rec.parent.clone(),
                body,
                pre: Precondition::Revision(rec.revision),
            }],
            audit,
        }) {
            // A racing round updated the host; the next tick looks again.
            tracing::debug!(error = %e, "fabric sweep: host changed meanwhile");
        }
    }
}
