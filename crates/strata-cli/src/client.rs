//! The CLI's HTTPS client: trusts only the CA in the profile, authenticates with the profile's
//! service-principal secret (or its cached user token), and turns API errors into messages.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use strata_control::Profile;

pub struct Client {
    agent: ureq::Agent,
    pub profile: Profile,
    pub profile_path: PathBuf,
    token: std::cell::RefCell<Option<String>>,
}

/// An API answer with a non-2xx status.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}
impl std::error::Error for ApiFailure {}

pub fn load_profile(path: &Path) -> Result<Profile> {
    let text = std::fs::read(path).with_context(|| {
        format!("cannot read the profile {} (start the server with `strata up`, or pass --profile / set STRATA_PROFILE)", path.display())
    })?;
    serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a Strata profile", path.display()))
}

pub fn agent_for(profile: &Profile) -> Result<ureq::Agent> {
    let ca = ureq::tls::Certificate::from_pem(profile.ca_certificate.as_bytes())
        .map_err(|e| anyhow!("the profile's CA certificate is invalid: {e}"))?;
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(120)))
        .build()
        .into())
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&pct(k));
        out.push('=');
        out.push_str(&pct(v));
    }
    out
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Posts a token request; returns (access_token, expires_in).
pub fn request_token(
    agent: &ureq::Agent,
    endpoint: &str,
    pairs: &[(&str, &str)],
) -> Result<(String, i64)> {
    let mut resp = agent
        .post(&format!("{endpoint}/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .send(form_encode(pairs))
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = resp.status().as_u16();
    let body: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
    if status != 200 {
        bail!(
            "sign-in refused ({status}): {}",
            body.get("error_description")
                .and_then(Value::as_str)
                .unwrap_or("no detail")
        );
    }
    let token = body["access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("the token response has no access_token"))?;
    Ok((
        token.to_string(),
        body["expires_in"].as_i64().unwrap_or(600),
    ))
}

impl Client {
    pub fn new(profile_path: &Path) -> Result<Client> {
        let profile = load_profile(profile_path)?;
        Ok(Client {
            agent: agent_for(&profile)?,
            profile,
            profile_path: profile_path.to_path_buf(),
            token: Default::default(),
        })
    }

    /// A bearer token for this profile (requested once per process).
    pub fn access_token(&self) -> Result<String> {
        self.token()
    }

    fn token(&self) -> Result<String> {
        if let Some(t) = self.token.borrow().as_ref() {
            return Ok(t.clone());
        }
        let now = strata_types::time::now_unix();
        let token = match (&self.profile.client_id, &self.profile.client_secret) {
            (Some(id), Some(secret)) => {
                request_token(
                    &self.agent,
                    &self.profile.endpoint,
                    &[
                        ("grant_type", "client_credentials"),
                        ("client_id", id),
                        ("client_secret", secret),
                    ],
                )?
                .0
            }
            _ => match (
                &self.profile.access_token,
                self.profile.access_token_expires_at,
            ) {
                (Some(t), Some(exp)) if exp > now + 5 => t.clone(),
                (Some(_), _) => bail!(
                    "the signed-in session in {} has expired; run `strata login` again",
                    self.profile_path.display()
                ),
                _ => bail!(
                    "the profile {} holds no credentials; run `strata login`",
                    self.profile_path.display()
                ),
            },
        };
        *self.token.borrow_mut() = Some(token.clone());
        Ok(token)
    }

    /// POSTs `len` bytes from `body` as `application/octet-stream` (an image upload): no overall
    /// timeout, since the control plane checks and converts the image before it answers.
    pub fn upload(
        &self,
        path: &str,
        len: u64,
        body: impl std::io::Read + Send + 'static,
    ) -> Result<Value> {
        let url = format!("{}{}", self.profile.endpoint, path);
        let auth = format!("Bearer {}", self.token()?);
        let resp = self
            .agent
            .post(&url)
            .config()
            .timeout_global(None)
            .build()
            .header("authorization", &auth)
            .header("content-type", "application/octet-stream")
            .header("content-length", &len.to_string())
            .send(ureq::SendBody::from_owned_reader(body))
            .with_context(|| format!("cannot upload to {}", self.profile.endpoint))?;
        Self::answer(resp)
    }

    /// GETs a binary body (a snapshot export) as a stream: its declared length
    /// (`Content-Length`) and a reader. No overall timeout, since the body can be large; a
    /// non-2xx answer is the API's error, as for `call`.
    pub fn download(&self, path: &str) -> Result<(Option<u64>, ureq::BodyReader<'static>)> {
        let url = format!("{}{}", self.profile.endpoint, path);
        let auth = format!("Bearer {}", self.token()?);
        let resp = self
            .agent
            .get(&url)
            .config()
            .timeout_global(None)
            .build()
            .header("authorization", &auth)
            .header("accept", "application/octet-stream")
            .call()
            .with_context(|| format!("cannot reach {}", self.profile.endpoint))?;
        if !resp.status().is_success() {
            Self::answer(resp)?;
            bail!("the control plane answered without a body");
        }
        let len = resp.body().content_length();
        Ok((len, resp.into_body().into_reader()))
    }

    /// Sends a request; returns the JSON body (Null for empty) of a 2xx answer.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        self.call_with(method, path, body, &[])
    }

    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value> {
        let url = format!("{}{}", self.profile.endpoint, path);
        let auth = format!("Bearer {}", self.token()?);
        let resp = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url).header("authorization", &auth);
                for (k, v) in headers {
                    r = r.header(*k, *v);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = self.agent.delete(&url).header("authorization", &auth);
                for (k, v) in headers {
                    r = r.header(*k, *v);
                }
                r.call()
            }
            (m, b) => {
                let mut r = match m {
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    "POST" => self.agent.post(&url),
                    other => bail!("unsupported method {other}"),
                }
                .header("authorization", &auth)
                .header("content-type", "application/json");
                for (k, v) in headers {
                    r = r.header(*k, *v);
                }
                r.send(serde_json::to_vec(
                    b.unwrap_or(&Value::Object(Default::default())),
                )?)
            }
        };
        let resp = resp.with_context(|| format!("cannot reach {}", self.profile.endpoint))?;
        Self::answer(resp)
    }

    /// The JSON body of a 2xx answer, or the API's error.
    fn answer(mut resp: ureq::http::Response<ureq::Body>) -> Result<Value> {
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if (200..300).contains(&status) {
            return Ok(value);
        }
        Err(ApiFailure {
            status,
            code: value
                .pointer("/error/code")
                .and_then(Value::as_str)
                .unwrap_or("Error")
                .to_string(),
            message: value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no detail")
                .to_string(),
        }
        .into())
    }
}
