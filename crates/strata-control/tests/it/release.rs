//! Secure key release, refusals first: a VM's disk and vTPM keys reach only the Trusted host
//! it is placed on, over that host's current attestation-bound certificate. Another host's
//! valid certificate, the same host's superseded certificate, a CA-signed certificate that was
//! never the host's (a stolen or forged credential), and the host's certificate once the host is
//! Untrusted all get nothing — and each of those refusals is in the audit log. An expired
//! certificate does not get past the TLS handshake.

use crate::fabric::{TrustedFabric, trusted_host};
use crate::harness::Server;
use base64::Engine as _;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};
use std::sync::Arc;
use strata_agent::tpm::PcrBank;

/// GET `host`'s assignments with `client`: (status, body); `None` if TLS refused it.
fn assignments(server: &Server, client: &ureq::Agent, host: &str) -> Option<(u16, Value)> {
    let url = format!("{}/fabric/v1/hosts/{host}/assignments", server.endpoint());
    let mut resp = client.get(&url).call().ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.body_mut().read_json().unwrap_or(Value::Null)))
}

/// A client presenting a certificate the host CA signs for `host` over a fresh key: a
/// credential that is not the host's current one.
fn minted_client(server: &Server, host: &str, lifetime_secs: i64) -> ureq::Agent {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let host_id = format!("/providers/Strata.Fabric/hosts/{host}");
    let issued = server
        .running()
        .app
        .fabric
        .host_ca
        .issue(&host_id, pair.public_key().as_ref(), lifetime_secs)
        .unwrap();
    let cert = ureq::tls::Certificate::from_pem(issued.pem.as_bytes())
        .unwrap()
        .to_owned();
    let key_pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    );
    let key = ureq::tls::PrivateKey::from_pem(key_pem.as_bytes())
        .unwrap()
        .to_owned();
    let ca = ureq::tls::Certificate::from_pem(server.profile.ca_certificate.as_bytes()).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
        .client_cert(Some(ureq::tls::ClientCert::new_with_certs(&[cert], key)))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .build()
        .into()
}

/// Refusals of `host`'s assignments in the audit log.
fn refusals(server: &Server, host: &str) -> Vec<strata_audit::AuditEntry> {
    let action = format!("GET /fabric/v1/hosts/{host}/assignments");
    server
        .running()
        .app
        .store
        .audit_rows(0, 100_000)
        .unwrap()
        .into_iter()
        .map(|r| serde_json::from_slice::<strata_audit::AuditEntry>(&r.entry).unwrap())
        .filter(|e| e.action == action && e.outcome == "denied")
        .collect()
}

#[test]
fn keys_reach_only_the_trusted_host_and_every_refusal_is_audited() {
    let TrustedFabric {
        ca,
        good,
        server,
        keys: _keys,
    } = TrustedFabric::start(|cfg| {
        cfg.fabric.attestation_interval_secs = 1;
    });

    // One Trusted host; the VM lands there.
    let (_swtpm_a, mut a, _dir_a) = trusted_host(&ca, "host-a", &good, &server);
    let rg = server.made_rg("rel");
    let vm = format!("{rg}/providers/Strata.Compute/virtualMachines/vm1");
    let (s, v) = server.admin(
        "PUT",
        &vm,
        Some(json!({ "properties": { "storageProfile": { "image": "tiny" } } })),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["properties"]["host"], "host-a", "{v}");
    // A second Trusted host, joined afterwards.
    let (_swtpm_b, b, _dir_b) = trusted_host(&ca, "host-b", &good, &server);

    // Positive control: host-a's current certificate gets the VM with its keys.
    let a1 = a.certificate_client().unwrap();
    let (s, list) = assignments(&server, &a1, "host-a").unwrap();
    assert_eq!(s, 200, "{list}");
    let entry = &list["virtualMachines"][0];
    assert!(
        entry["diskKey"].is_string() && entry["vTpmKey"].is_string(),
        "{list}"
    );
    let disk_key = entry["diskKey"].as_str().unwrap().to_string();
    assert!(refusals(&server, "host-a").is_empty());
    // The release is audited once (not on every poll), naming the host and the keys released,
    // never their material.
    assert_eq!(assignments(&server, &a1, "host-a").unwrap().0, 200);
    let released: Vec<_> = server
        .running()
        .app
        .store
        .audit_rows(0, 100_000)
        .unwrap()
        .into_iter()
        .map(|r| serde_json::from_slice::<strata_audit::AuditEntry>(&r.entry).unwrap())
        .filter(|e| e.action == "Strata.Compute/virtualMachines/keyRelease/action")
        .collect();
    assert_eq!(released.len(), 1, "{released:?}");
    let r = &released[0];
    assert_eq!(
        (r.principal_name.as_deref(), r.outcome.as_str()),
        (Some("agent:host-a"), "success")
    );
    assert!(r.scope.eq_ignore_ascii_case(&vm), "{r:?}");
    assert_eq!(r.details["vTpmKey"], true, "{r:?}");
    assert_eq!(
        r.details["diskKey"]["encryption"]["type"], "EncryptionAtRestWithPlatformKey",
        "{r:?}"
    );
    let text = serde_json::to_string(r).unwrap();
    assert!(
        !text.contains(&disk_key),
        "a released key is in the audit log"
    );
    assert!(!text.contains(entry["vTpmKey"].as_str().unwrap()));

    // Another Trusted host: its own list does not hold the VM, and host-a's list is refused.
    let b1 = b.certificate_client().unwrap();
    let (s, own) = assignments(&server, &b1, "host-b").unwrap();
    assert_eq!(s, 200);
    assert!(!own.to_string().contains(&disk_key), "{own}");
    assert_eq!(assignments(&server, &b1, "host-b").unwrap().0, 200);
    let (s, v) = assignments(&server, &b1, "host-a").unwrap();
    assert_eq!(s, 401, "{v}");
    assert!(!v.to_string().contains(&disk_key));
    assert_eq!(refusals(&server, "host-a").len(), 1);

    // A certificate the host CA signed for host-a over another key (what a stolen or forged
    // credential would be): refused.
    let forged = minted_client(&server, "host-a", 3600);
    let (s, v) = assignments(&server, &forged, "host-a").unwrap();
    assert_eq!(s, 401, "{v}");
    assert_eq!(refusals(&server, "host-a").len(), 2);

    // host-a's previous certificate, once a newer round issued another: refused.
    assert!(a.round().unwrap().passed);
    let (s, _) = assignments(&server, &a1, "host-a").unwrap();
    assert_eq!(s, 401);
    assert_eq!(refusals(&server, "host-a").len(), 3);
    let a2 = a.certificate_client().unwrap();
    assert_eq!(assignments(&server, &a2, "host-a").unwrap().0, 200);

    // host-a turns Untrusted (its boot changes): its last certificate gets nothing.
    a.tpm()
        .extend(
            4,
            &[(PcrBank::Sha1, vec![7; 20]), (PcrBank::Sha256, vec![7; 32])],
        )
        .unwrap();
    assert!(!a.round().unwrap().passed);
    let (s, v) = assignments(&server, &a2, "host-a").unwrap();
    assert_eq!(s, 401, "{v}");
    assert!(!v.to_string().contains(&disk_key));
    let audited = refusals(&server, "host-a");
    assert_eq!(audited.len(), 4, "{audited:?}");
    for e in &audited {
        assert_eq!(e.status, 401);
        assert_eq!(e.scope, "/providers/Strata.Fabric/hosts/host-a");
        assert!(e.reason.contains("current client certificate"), "{e:?}");
        assert!(!serde_json::to_string(e).unwrap().contains(&disk_key));
    }

    // An expired certificate does not get past the TLS handshake: nothing is answered.
    let expired = minted_client(&server, "host-b", -30);
    assert!(assignments(&server, &expired, "host-b").is_none());
    assert_eq!(assignments(&server, &b1, "host-b").unwrap().0, 200);
}
