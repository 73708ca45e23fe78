//! What the control-plane benchmarks share: an HTTPS client trusting the server's CA, a token
//! for the profile's service principal, and a small JSON API caller.

use std::sync::Arc;

use serde_json::Value;

pub struct Api {
    pub agent: ureq::Agent,
    pub endpoint: String,
    pub token: String,
}

impl Api {
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.endpoint);
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string()).unwrap_or_default())
            .unwrap();
        let resp = self.agent.run(req).unwrap();
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

pub fn tls_agent(ca_pem: &str) -> ureq::Agent {
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

pub fn token(api: &Api, profile: &strata_control::Profile) -> String {
    let body = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        profile.client_id.clone().unwrap(),
        profile
            .client_secret
            .clone()
            .unwrap()
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    );
    let mut resp = api
        .agent
        .post(&format!("{}/oauth2/token", api.endpoint))
        .header("content-type", "application/x-www-form-urlencoded")
        .send(body)
        .unwrap();
    let v: Value = resp.body_mut().read_json().unwrap();
    v["access_token"].as_str().unwrap().to_string()
}
