//! Test harness: starts a control plane on 127.0.0.1:0 in a temp data dir and talks to it over
//! HTTPS trusting only the CA the server created.

use serde_json::{Value, json};
use std::sync::Arc;
use strata_control::{Config, Profile, Running};

pub struct Server {
    pub rt: tokio::runtime::Runtime,
    pub running: Option<Running>,
    pub _dir: tempfile::TempDir,
    pub profile: Profile,
    pub agent: ureq::Agent,
    pub admin_token: String,
}

pub fn agent(ca_pem: &str) -> ureq::Agent {
    let ca = ureq::tls::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .build()
        .into()
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(|_| {})
    }

    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut cfg = Config::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
        tweak(&mut cfg);
        let running = rt.block_on(strata_control::start(cfg)).unwrap();
        let profile: Profile =
            serde_json::from_slice(&std::fs::read(&running.profile_path).unwrap()).unwrap();
        let agent = agent(&profile.ca_certificate);
        let mut s = Server {
            rt,
            running: Some(running),
            _dir: dir,
            profile,
            agent,
            admin_token: String::new(),
        };
        let (id, secret) = (
            s.profile.client_id.clone().unwrap(),
            s.profile.client_secret.clone().unwrap(),
        );
        s.admin_token = s.sp_token(&id, &secret).unwrap();
        s
    }

    pub fn endpoint(&self) -> String {
        self.profile.endpoint.clone()
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub fn sub(&self) -> String {
        self.profile.subscription_id.clone().unwrap()
    }

    /// POST /oauth2/token with form pairs; returns (status, body).
    pub fn token_request(&self, pairs: &[(&str, &str)]) -> (u16, Value) {
        let body: String = pairs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.bytes().map(|b| format!("%{b:02X}")).collect::<String>()
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let mut resp = self
            .agent
            .post(&format!("{}/oauth2/token", self.endpoint()))
            .header("content-type", "application/x-www-form-urlencoded")
            .send(body)
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_json().unwrap_or(Value::Null))
    }

    pub fn sp_token(&self, client_id: &str, secret: &str) -> Result<String, Value> {
        let (status, body) = self.token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ]);
        if status == 200 {
            Ok(body["access_token"].as_str().unwrap().to_string())
        } else {
            Err(body)
        }
    }

    /// Sends a request with an optional bearer token; returns (status, body, etag header).
    pub fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, Option<String>) {
        let url = format!("{}{}", self.endpoint(), path);
        let mut b = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let bytes = body
            .map(|v| serde_json::to_vec(v).unwrap())
            .unwrap_or_default();
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let resp = self.agent.run(b.body(bytes).unwrap()).unwrap();
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let text = resp.into_body().read_to_string().unwrap_or_default();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v, etag)
    }

    /// `GET path` as the administrator; (status, raw body).
    pub fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let url = format!("{}{}", self.endpoint(), path);
        let req = ureq::http::Request::builder()
            .method("GET")
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.admin_token))
            .body(Vec::new())
            .unwrap();
        let resp = self.agent.run(req).unwrap();
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .with_config()
            .limit(1 << 32)
            .read_to_vec()
            .unwrap_or_default();
        (status, bytes)
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (s, v, _) = self.req(method, path, Some(&self.admin_token), body.as_ref(), &[]);
        (s, v)
    }

    /// Creates a service principal with a secret; returns (objectId, clientId, secret).
    pub fn new_sp(&self, name: &str) -> (String, String, String) {
        let (s, v) = self.admin(
            "PUT",
            &format!("/providers/Strata.Identity/servicePrincipals/{name}"),
            Some(json!({ "properties": {} })),
        );
        assert_eq!(s, 201, "{v}");
        let oid = v["properties"]["objectId"].as_str().unwrap().to_string();
        let (s, v) = self.admin(
            "POST",
            &format!("/providers/Strata.Identity/servicePrincipals/{name}/addPassword"),
            Some(json!({})),
        );
        assert_eq!(s, 200, "{v}");
        (
            oid,
            v["secretOutput"]["clientId"].as_str().unwrap().to_string(),
            v["secretOutput"]["clientSecret"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    }

    /// Assigns a built-in role by name at a scope ("" = tenant root).
    pub fn assign(&self, principal: &str, role: &str, scope: &str) -> String {
        let (_, roles) = self.admin(
            "GET",
            "/providers/Strata.Authorization/roleDefinitions",
            None,
        );
        let role_id = roles["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["properties"]["roleName"] == role)
            .unwrap()["name"]
            .as_str()
            .unwrap()
            .to_string();
        let name = uuid::Uuid::new_v4().to_string();
        let (s, v) = self.admin(
            "PUT",
            &format!("{scope}/providers/Strata.Authorization/roleAssignments/{name}"),
            Some(
                json!({ "properties": { "principalId": principal, "roleDefinitionId": role_id } }),
            ),
        );
        assert_eq!(s, 201, "{v}");
        name
    }

    pub fn rg(&self, name: &str) -> String {
        format!("/subscriptions/{}/resourceGroups/{name}", self.sub())
    }

    /// Creates the resource group `name` (location `local`) as the administrator; its id.
    pub fn made_rg(&self, name: &str) -> String {
        let rg = self.rg(name);
        let (s, v) = self.admin("PUT", &rg, Some(json!({ "location": "local" })));
        assert_eq!(s, 201, "{v}");
        rg
    }

    /// Creates the key vault `name` in the resource group `rg` as the administrator; its id.
    pub fn made_vault(&self, rg: &str, name: &str) -> String {
        let vault = format!("{rg}/providers/Strata.KeyVault/vaults/{name}");
        let (s, v) = self.admin("PUT", &vault, Some(json!({ "properties": {} })));
        assert_eq!(s, 201, "{v}");
        vault
    }

    pub fn audit_len(&self) -> u64 {
        self.running().app.store.audit_len().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.stop());
        }
    }
}
