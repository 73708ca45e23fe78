//! The host agent's loop: register once, then attest every interval. Outbound HTTPS only; the
//! host exposes no management port.
//!
//! ```text
//! register:  EK (+ certificate) + new AK ─▶ server ─▶ MakeCredential challenge
//!            TPM2_ActivateCredential ─▶ secret ─▶ server: host exists (Registered)
//!            the AK blobs are kept in STATE_DIR/agent.json (0600; the private blob is
//!            encrypted by the TPM and useless anywhere else)
//! round:     new P-256 TLS key ─▶ nonce ─▶ TPM2_Quote(H(nonce ‖ key)) + PCRs + event log +
//!            own measurements ─▶ verdict; on pass a client certificate for that key
//! ```
//!
//! The TLS key lives in memory only and is replaced every round, so a certificate stolen
//! from a host is useless without the key, and the key is useless after the next round.
//!
//! After each round the agent publishes an mTLS client with the round's certificate to its
//! [`FabricClient`]s: the VM loop (`vms.rs`, its own thread) fetches assignments and reports
//! VM status through it, so slow hypervisor work never delays a round.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::tpm::{AkAlgorithm, AttestationKey, PcrBank, Tpm};

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// What went wrong, for the operator.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Tpm(#[from] crate::tpm::TpmError),
    #[error("the control plane refused {what}: {status} {message}")]
    Refused {
        what: &'static str,
        status: u16,
        message: String,
    },
    #[error("cannot reach the control plane for {what}")]
    Transport {
        what: &'static str,
        #[source]
        source: ureq::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("agent state {path}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// `https://host:port` of the control plane.
    pub server: String,
    /// The control plane's CA certificate (PEM).
    pub server_ca_pem: String,
    /// TCTI string: `device:/dev/tpmrm0`, `swtpm:host=…,port=…`.
    pub tcti: String,
    /// The name this host registers under.
    pub hostname: String,
    /// Where the agent keeps its registration (AK blobs).
    pub state_dir: PathBuf,
    /// A software TPM: registers as a development host.
    pub development: bool,
    /// The TCG event log to send (hardware: the kernel's securityfs file).
    pub event_log: PathBuf,
    /// Binaries measured into every round (hypervisor, the agent itself): (name, path).
    pub measured_binaries: Vec<(String, PathBuf)>,
    /// Attestation key algorithm for a new registration.
    pub ak_algorithm: AkAlgorithm,
}

impl AgentConfig {
    pub const HARDWARE_EVENT_LOG: &'static str =
        "/sys/kernel/security/tpm0/binary_bios_measurements";
}

/// What the agent keeps between runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    pub host: String,
    pub server: String,
    pub ak: AttestationKey,
}

/// The result of one round.
#[derive(Clone, Debug)]
pub struct RoundResult {
    pub passed: bool,
    pub state: String,
    pub reason: String,
    pub failures: Vec<String>,
    /// Seconds until the next round, as the control plane asks.
    pub next_round_secs: u64,
}

/// The client certificate from the last passing round, with its in-memory key.
struct Identity {
    cert_der: Vec<u8>,
    key_pkcs8: Vec<u8>,
    /// Unix seconds; an expired certificate would fail the TLS handshake itself.
    not_after: i64,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub struct Agent {
    cfg: AgentConfig,
    tpm: Tpm,
    state: Option<AgentState>,
    identity: Option<Identity>,
    plain: ureq::Agent,
    fabric: Arc<FabricShared>,
}

/// What the attestation loop shares with the VM loop.
#[derive(Default)]
struct FabricShared {
    /// An mTLS client holding the current round's certificate; `None` before a passing round.
    client: std::sync::Mutex<Option<ureq::Agent>>,
    /// The control plane asked for a round now (seen in the assignments).
    attest_now: std::sync::atomic::AtomicBool,
    /// Called after every round (wakes the VM loop).
    after_round: std::sync::Mutex<Option<Box<dyn Fn() + Send>>>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one assignment or read: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The mTLS-only calls of the agent door that the VM loop makes, with the certificate of the
/// latest passing round.
#[derive(Clone)]
pub struct FabricClient {
    /// `https://…/fabric/v1/hosts/{host}`.
    base: String,
    shared: Arc<FabricShared>,
}

/// The largest assignments document accepted.
const MAX_ASSIGNMENTS_BYTES: u64 = 16 << 20;

impl FabricClient {
    fn client(&self) -> Option<ureq::Agent> {
        lock(&self.shared.client).clone()
    }
}

impl crate::vms::ControlPlane for FabricClient {
    fn assignments(&self) -> Result<Option<crate::vms::Assignments>, crate::vms::VmError> {
        let Some(client) = self.client() else {
            return Ok(None);
        };
        let what = "the assignments";
        let mut resp = client
            .get(&format!("{}/assignments", self.base))
            .call()
            .map_err(|source| AgentError::Transport { what, source })?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            read(&mut resp, what)?;
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_ASSIGNMENTS_BYTES)
            .read_to_vec()
            .map_err(|source| AgentError::Transport { what, source })?;
        let a = crate::vms::Assignments::parse(&body)?;
        if a.attest_now {
            self.shared
                .attest_now
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Some(a))
    }

    fn report(&self, vms: &[crate::vms::VmStatus]) -> Result<(), crate::vms::VmError> {
        let Some(client) = self.client() else {
            return Err(crate::vms::VmError::NoCertificate);
        };
        post(
            &client,
            &format!("{}/vmstatus", self.base),
            &json!({ "virtualMachines": vms }),
            "the VM status report",
        )?;
        Ok(())
    }

    fn report_nics(&self, body: &Value) -> Result<(), crate::vms::VmError> {
        let Some(client) = self.client() else {
            return Err(crate::vms::VmError::NoCertificate);
        };
        post(
            &client,
            &format!("{}/nicstatus", self.base),
            body,
            "the NIC status report",
        )?;
        Ok(())
    }

    fn image_fetcher(&self) -> Option<Arc<dyn crate::images::ImageFetcher>> {
        Some(Arc::new(self.clone()))
    }

    fn snapshot_sink(&self) -> Option<Arc<dyn crate::vms::SnapshotSink>> {
        Some(Arc::new(self.clone()))
    }
}

impl crate::vms::SnapshotSink for FabricClient {
    /// `PUT hosts/{host}/snapshots/{token}`: the file's bytes with their length, a minute
    /// plus a second per MiB to send them.
    fn taken(&self, token: &str, file: &Path) -> Result<(), String> {
        let Some(client) = self.client() else {
            return Err("no client certificate yet".into());
        };
        let what = "the snapshot";
        let f = std::fs::File::open(file).map_err(|e| format!("open {}: {e}", file.display()))?;
        let len = f
            .metadata()
            .map_err(|e| format!("read {}: {e}", file.display()))?
            .len();
        let mut resp = client
            .put(&format!("{}/snapshots/{token}", self.base))
            .header("content-type", "application/octet-stream")
            .header("content-length", len.to_string())
            // The control plane admits the upload before it reads a byte: a refusal comes back
            // before the file is sent, so the agent reads the reason instead of a broken pipe.
            .header("expect", "100-continue")
            .config()
            .timeout_global(Some(std::time::Duration::from_secs(60 + len / (1 << 20))))
            .http_status_as_error(false)
            .build()
            .send(f)
            .map_err(|source| chain(&AgentError::Transport { what, source }))?;
        read(&mut resp, what).map_err(|e| chain(&e))?;
        Ok(())
    }

    /// `POST hosts/{host}/snapshots/{token}/failed` with the reason.
    fn failed(&self, token: &str, reason: &str) -> Result<(), String> {
        let Some(client) = self.client() else {
            return Err("no client certificate yet".into());
        };
        post(
            &client,
            &format!("{}/snapshots/{token}/failed", self.base),
            &json!({ "reason": reason.chars().take(1000).collect::<String>() }),
            "the snapshot failure",
        )
        .map(|_| ())
        .map_err(|e| chain(&e))
    }
}

impl crate::images::ImageFetcher for FabricClient {
    /// `GET hosts/{host}/images/{sha256}` with the current certificate; the body gets a minute
    /// plus a second per MiB (an image may be large), and at most `size_bytes` bytes are read.
    fn fetch(
        &self,
        sha256: &str,
        size_bytes: u64,
        out: &mut dyn std::io::Write,
    ) -> Result<(), String> {
        let Some(client) = self.client() else {
            return Err(
                "no client certificate yet (it comes with the first passing attestation round)"
                    .into(),
            );
        };
        let what = "the image";
        let mut resp = client
            .get(&format!("{}/images/{sha256}", self.base))
            .config()
            .timeout_global(None)
            .timeout_recv_body(Some(std::time::Duration::from_secs(
                60 + size_bytes / (1 << 20),
            )))
            .build()
            .call()
            .map_err(|source| chain(&AgentError::Transport { what, source }))?;
        if !resp.status().is_success() {
            return Err(read(&mut resp, what)
                .err()
                .map(|e| chain(&e))
                .unwrap_or_else(|| format!("the control plane answered {}", resp.status())));
        }
        let mut body = resp
            .body_mut()
            .with_config()
            .limit(size_bytes.saturating_add(1))
            .reader();
        std::io::copy(&mut body, out).map_err(|e| format!("receiving the image: {e}"))?;
        Ok(())
    }
}

fn http(ca_pem: &str, identity: Option<&Identity>) -> Result<ureq::Agent, AgentError> {
    let ca = ureq::tls::Certificate::from_pem(ca_pem.as_bytes())
        .map_err(|e| AgentError::Invalid(format!("the server CA certificate is invalid: {e}")))?;
    let mut tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()));
    if let Some(id) = identity {
        let cert = ureq::tls::Certificate::from_der(&id.cert_der).to_owned();
        // ureq takes DER keys only through PEM (its key-kind enum is not exported).
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            b64().encode(&id.key_pkcs8)
        );
        let key = ureq::tls::PrivateKey::from_pem(pem.as_bytes())
            .map_err(|e| AgentError::Invalid(format!("the client key is unusable: {e}")))?;
        tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&[cert], key)));
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into())
}

fn post(
    agent: &ureq::Agent,
    url: &str,
    body: &Value,
    what: &'static str,
) -> Result<Value, AgentError> {
    let mut resp = agent
        .post(url)
        .send_json(body)
        .map_err(|source| AgentError::Transport { what, source })?;
    read(&mut resp, what)
}

fn read(
    resp: &mut ureq::http::Response<ureq::Body>,
    what: &'static str,
) -> Result<Value, AgentError> {
    let status = resp.status().as_u16();
    let v: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        let message = v
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)")
            .to_string();
        return Err(AgentError::Refused {
            what,
            status,
            message,
        });
    }
    Ok(v)
}

fn field_b64(v: &Value, name: &str) -> Result<Vec<u8>, AgentError> {
    v.get(name)
        .and_then(Value::as_str)
        .and_then(|s| b64().decode(s).ok())
        .ok_or_else(|| AgentError::Invalid(format!("the control plane's answer lacks '{name}'")))
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("agent.json")
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    // A leftover temp file would keep its old mode: start from nothing.
    let _ = std::fs::remove_file(&tmp);
    let err = |source| AgentError::State {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

impl Agent {
    /// Opens the TPM and loads the saved registration, if any.
    pub fn new(cfg: AgentConfig) -> Result<Agent, AgentError> {
        let tpm = Tpm::open(&cfg.tcti)?;
        let plain = http(&cfg.server_ca_pem, None)?;
        let state = match std::fs::read(state_path(&cfg.state_dir)) {
            Ok(bytes) => Some(serde_json::from_slice::<AgentState>(&bytes).map_err(|e| {
                AgentError::Invalid(format!(
                    "{} is not agent state: {e}",
                    state_path(&cfg.state_dir).display()
                ))
            })?),
            Err(_) => None,
        };
        Ok(Agent {
            cfg,
            tpm,
            state,
            identity: None,
            plain,
            fabric: Arc::default(),
        })
    }

    /// The VM loop's door to the control plane (needs a registration: it names the host).
    pub fn fabric_client(&self) -> Option<FabricClient> {
        let host = self.host()?;
        Some(FabricClient {
            base: format!("{}/fabric/v1/hosts/{host}", self.cfg.server),
            shared: self.fabric.clone(),
        })
    }

    /// Calls `hook` after every attestation round (the VM loop's waker).
    pub fn after_round(&self, hook: impl Fn() + Send + 'static) {
        *lock(&self.fabric.after_round) = Some(Box::new(hook));
    }

    /// Hands the VM loop a client with the current certificate (or none).
    fn publish_identity(&self) {
        let client = self
            .identity
            .as_ref()
            .and_then(|id| http(&self.cfg.server_ca_pem, Some(id)).ok());
        *lock(&self.fabric.client) = client;
    }

    pub fn is_registered(&self) -> bool {
        self.state.is_some()
    }

    pub fn host(&self) -> Option<&str> {
        self.state.as_ref().map(|s| s.host.as_str())
    }

    /// Registers this host with a one-time join token.
    pub fn register(&mut self, join_token: &str) -> Result<String, AgentError> {
        let ek = self.tpm.endorsement_key()?;
        let ak = self.tpm.create_attestation_key(self.cfg.ak_algorithm)?;
        let url = format!("{}/fabric/v1/register", self.cfg.server);
        let challenge = post(
            &self.plain,
            &url,
            &json!({
                "joinToken": join_token,
                "hostname": self.cfg.hostname,
                "ekPublic": b64().encode(&ek.public),
                "ekCertificate": ek.certificate.as_ref().map(|c| b64().encode(c)),
                "akPublic": b64().encode(&ak.public),
                "development": self.cfg.development,
                "agentVersion": env!("CARGO_PKG_VERSION"),
            }),
            "the registration",
        )?;
        let id = challenge
            .get("registrationId")
            .and_then(Value::as_str)
            .ok_or_else(|| AgentError::Invalid("no registrationId in the challenge".into()))?
            .to_string();
        let blob = field_b64(&challenge, "credentialBlob")?;
        let secret = field_b64(&challenge, "encryptedSecret")?;
        let recovered = self.tpm.activate_credential(&ak, &ek, &blob, &secret)?;
        let url = format!("{}/fabric/v1/register/{id}/activate", self.cfg.server);
        let done = post(
            &self.plain,
            &url,
            &json!({ "secret": b64().encode(&recovered) }),
            "the credential activation",
        )?;
        let host = done
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or(&self.cfg.hostname)
            .to_string();
        let state = AgentState {
            host: host.clone(),
            server: self.cfg.server.clone(),
            ak,
        };
        std::fs::create_dir_all(&self.cfg.state_dir).map_err(|source| AgentError::State {
            path: self.cfg.state_dir.clone(),
            source,
        })?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&self.cfg.state_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|source| AgentError::State {
                path: self.cfg.state_dir.clone(),
                source,
            })?;
        }
        let bytes =
            serde_json::to_vec_pretty(&state).map_err(|e| AgentError::Invalid(e.to_string()))?;
        write_private(&state_path(&self.cfg.state_dir), &bytes)?;
        self.state = Some(state);
        Ok(host)
    }

    fn measurements(&self) -> Vec<Value> {
        self.cfg
            .measured_binaries
            .iter()
            .map(|(name, path)| {
                let digest = std::fs::read(path)
                    .map(|b| {
                        strata_attest::hex(ring::digest::digest(&ring::digest::SHA256, &b).as_ref())
                    })
                    .unwrap_or_else(|_| "unreadable".into());
                json!({ "name": name, "sha256": digest })
            })
            .collect()
    }

    /// One attestation round.
    pub fn round(&mut self) -> Result<RoundResult, AgentError> {
        let result = self.attest();
        // The VM loop's client follows the round's outcome (a new certificate, or none).
        self.publish_identity();
        result
    }

    fn attest(&mut self) -> Result<RoundResult, AgentError> {
        let state = self.state.clone().ok_or_else(|| {
            AgentError::Invalid("not registered: run with --join-token first".into())
        })?;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .map_err(|_| AgentError::Invalid("no randomness".into()))?;
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .map_err(|_| AgentError::Invalid("key generation failed".into()))?;
        use ring::signature::KeyPair as _;
        let public = pair.public_key().as_ref().to_vec();
        // Over mTLS while the current certificate lasts: nobody else can churn our nonces. A
        // certificate about to expire is dropped first (an expired one fails the handshake),
        // and if the control plane no longer accepts ours (a lost reply, a restart), the round
        // is retried without it; the server allows that once no current certificate exists.
        if self
            .identity
            .as_ref()
            .is_some_and(|id| id.not_after <= now_unix() + 2)
        {
            self.identity = None;
        }
        let base = format!("{}/fabric/v1/hosts/{}", self.cfg.server, state.host);
        let body = json!({ "agentPublicKey": b64().encode(&public) });
        let (client, challenge) = match &self.identity {
            Some(id) => {
                let mtls = http(&self.cfg.server_ca_pem, Some(id))?;
                match post(&mtls, &format!("{base}/nonce"), &body, "the nonce request") {
                    Ok(c) => (mtls, c),
                    Err(e) => {
                        tracing::warn!(error = %e, "nonce over mTLS refused; retrying without the certificate");
                        self.identity = None;
                        let c = post(
                            &self.plain,
                            &format!("{base}/nonce"),
                            &body,
                            "the nonce request",
                        )?;
                        (self.plain.clone(), c)
                    }
                }
            }
            None => {
                let c = post(
                    &self.plain,
                    &format!("{base}/nonce"),
                    &body,
                    "the nonce request",
                )?;
                (self.plain.clone(), c)
            }
        };
        let nonce = field_b64(&challenge, "nonce")?;
        let pcrs: Vec<u32> = challenge
            .get("pcrs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_u64)
                    .map(|p| p as u32)
                    .collect()
            })
            .unwrap_or_else(|| (0..8).collect());
        let qualifying = strata_attest::round::qualifying_data(&nonce, &public);
        // PCR values read right after the quote must be the quoted ones: if something
        // extended a PCR in between (runtime measurements), quote again (a few times).
        let mut attempt = 0;
        let (quote, values, event_log) = loop {
            attempt += 1;
            let before = self.tpm.read_pcrs(PcrBank::Sha256, &pcrs)?;
            let event_log = std::fs::read(&self.cfg.event_log).unwrap_or_default();
            let quote = self.tpm.quote(&state.ak, &qualifying, &pcrs)?;
            let values = self.tpm.read_pcrs(PcrBank::Sha256, &pcrs)?;
            if values == before || attempt >= 3 {
                break (quote, values, event_log);
            }
        };
        let pcr_map: serde_json::Map<String, Value> = values
            .iter()
            .map(|(i, d)| (i.to_string(), json!(b64().encode(d))))
            .collect();
        let evidence = json!({
            "attest": b64().encode(&quote.attest),
            "signature": b64().encode(&quote.signature),
            "pcrs": pcr_map,
            "eventLog": b64().encode(&event_log),
            "agentMeasurements": self.measurements(),
        });
        let verdict = post(
            &client,
            &format!("{base}/evidence"),
            &json!({
                "nonce": b64().encode(&nonce),
                "agentPublicKey": b64().encode(&public),
                "evidence": evidence,
            }),
            "the evidence",
        )?;
        let passed = verdict
            .get("passed")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        self.identity = match verdict.get("certificate").and_then(Value::as_str) {
            Some(pem) if passed => {
                let der = rustls_pemfile_first(pem)?;
                Some(Identity {
                    cert_der: der,
                    key_pkcs8: pkcs8.as_ref().to_vec(),
                    not_after: verdict
                        .get("certificateNotAfter")
                        .and_then(Value::as_i64)
                        .unwrap_or_else(|| now_unix() + 10),
                })
            }
            _ => None,
        };
        Ok(RoundResult {
            passed,
            state: verdict
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or("")
                .into(),
            reason: verdict
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .into(),
            failures: verdict
                .get("failures")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            next_round_secs: verdict
                .get("nextRoundSecs")
                .and_then(Value::as_u64)
                .unwrap_or(10),
        })
    }

    /// Whether the agent holds a client certificate from a passing round.
    pub fn has_certificate(&self) -> bool {
        self.identity.is_some()
    }

    /// An HTTPS client presenting this agent's current client certificate, if it has one.
    /// Tests keep one across rounds to show that a superseded or revoked certificate, or one
    /// presented for another host, gets nothing.
    pub fn certificate_client(&self) -> Option<ureq::Agent> {
        self.identity
            .as_ref()
            .and_then(|id| http(&self.cfg.server_ca_pem, Some(id)).ok())
    }

    /// An mTLS-only call: what this host should run. `with_certificate = false` tries without
    /// the certificate (tests prove the server refuses that).
    pub fn assignments(&self, with_certificate: bool) -> Result<Value, AgentError> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| AgentError::Invalid("not registered".into()))?;
        let client = match (&self.identity, with_certificate) {
            (Some(id), true) => http(&self.cfg.server_ca_pem, Some(id))?,
            _ => self.plain.clone(),
        };
        let url = format!(
            "{}/fabric/v1/hosts/{}/assignments",
            self.cfg.server, state.host
        );
        let mut resp = client
            .get(&url)
            .call()
            .map_err(|source| AgentError::Transport {
                what: "the assignments",
                source,
            })?;
        read(&mut resp, "the assignments")
    }

    /// An mTLS-only call: tells the control plane what this host's VMs are doing
    /// (`POST /fabric/v1/hosts/{host}/vmstatus`, body `{"virtualMachines":[…]}`).
    pub fn report_vms(&self, body: &Value) -> Result<Value, AgentError> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| AgentError::Invalid("not registered".into()))?;
        let identity = self.identity.as_ref().ok_or_else(|| {
            AgentError::Invalid("no client certificate yet: a round must pass first".into())
        })?;
        let client = http(&self.cfg.server_ca_pem, Some(identity))?;
        let url = format!(
            "{}/fabric/v1/hosts/{}/vmstatus",
            self.cfg.server, state.host
        );
        let mut resp =
            client
                .post(&url)
                .send_json(body)
                .map_err(|source| AgentError::Transport {
                    what: "the VM status report",
                    source,
                })?;
        read(&mut resp, "the VM status report")
    }

    /// Direct TPM access (the boot simulator and tests extend PCRs through it).
    pub fn tpm(&mut self) -> &mut Tpm {
        &mut self.tpm
    }

    /// Runs rounds until `stop` is set; registration errors and refusals are logged and
    /// retried on the next interval.
    pub fn run(&mut self, stop: &std::sync::atomic::AtomicBool) {
        use std::sync::atomic::Ordering;
        let mut wait = 1;
        while !stop.load(Ordering::Relaxed) {
            let result = self.round();
            if let Some(hook) = lock(&self.fabric.after_round).as_ref() {
                hook();
            }
            match result {
                Ok(r) => {
                    wait = r.next_round_secs.max(1);
                    if r.passed {
                        tracing::debug!(state = %r.state, "attestation round passed");
                    } else {
                        tracing::warn!(state = %r.state, reason = %r.reason, "attestation round failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "attestation round did not complete"),
            }
            let until = std::time::Instant::now() + std::time::Duration::from_secs(wait);
            while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                if self.fabric.attest_now.swap(false, Ordering::Relaxed) {
                    tracing::info!("the control plane asked for an attestation round now");
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// An error and its sources, `: `-joined (for one log line).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

fn rustls_pemfile_first(pem: &str) -> Result<Vec<u8>, AgentError> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END CERTIFICATE-----"))
        .collect();
    b64()
        .decode(body.trim())
        .map_err(|_| AgentError::Invalid("the issued certificate is not PEM".into()))
}
