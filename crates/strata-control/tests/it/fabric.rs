//! Host trust end to end: real swtpm hosts register with join tokens (EK certificate chained to
//! the test TPM CA, MakeCredential/ActivateCredential), attest against a signed reference
//! policy, receive placements only while Trusted, and lose their certificate on drift.

use crate::harness::Server;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use strata_agent::agent::{Agent, AgentConfig};
use strata_agent::bootplan::{BootImages, BootPlan};
use strata_agent::release::{ReleaseSigner, golden_policy};
use strata_agent::testhost::{SwtpmHost, TestCa};
use strata_agent::tpm::PcrBank;

/// Field order matters: the agent's TPM connection closes before its swtpm stops.
struct Host {
    name: String,
    agent: Agent,
    _swtpm: SwtpmHost,
    _dir: tempfile::TempDir,
}

/// Boots a simulated host (PCRs extended through its real swtpm) and prepares its agent.
pub(crate) fn boot_host(
    ca: &TestCa,
    name: &str,
    images: &BootImages,
    server: &Server,
) -> (SwtpmHost, AgentConfig, tempfile::TempDir) {
    let swtpm = SwtpmHost::start(ca).unwrap();
    let log = swtpm.boot(&BootPlan::uefi(images)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("binary_bios_measurements");
    std::fs::write(&log_path, &log).unwrap();
    let cfg = AgentConfig {
        server: server.endpoint(),
        server_ca_pem: server.profile.ca_certificate.clone(),
        tcti: swtpm.tcti(),
        hostname: name.to_string(),
        state_dir: dir.path().join("state"),
        development: false,
        event_log: log_path,
        measured_binaries: vec![],
        ak_algorithm: Default::default(),
    };
    (swtpm, cfg, dir)
}

/// Boots a host (see [`boot_host`]), registers its agent with a fresh join token named
/// `jt-NAME` and runs one passing round: a Trusted host. Bind the results in this order so the
/// agent's TPM connection closes before its swtpm stops.
pub(crate) fn trusted_host(
    ca: &TestCa,
    name: &str,
    images: &BootImages,
    server: &Server,
) -> (SwtpmHost, Agent, tempfile::TempDir) {
    let (swtpm, cfg, dir) = boot_host(ca, name, images, server);
    let mut agent = Agent::new(cfg).unwrap();
    agent
        .register(&join_token(server, &format!("jt-{name}")))
        .unwrap();
    assert!(agent.round().unwrap().passed, "{name} is not Trusted");
    (swtpm, agent, dir)
}

/// A bundle (policy "default") pinning everything the good boot of `images` measures.
pub(crate) fn signed_bundle(key: &ReleaseSigner, version: u64, images: &BootImages) -> Value {
    let policy = golden_policy(&BootPlan::uefi(images).to_log(), &[]).unwrap();
    let bundle = key
        .sign(
            version,
            "2026-11-29T00:00:00Z",
            [("default".to_string(), policy)].into_iter().collect(),
        )
        .unwrap();
    serde_json::to_value(bundle).unwrap()
}

pub(crate) fn join_token(server: &Server, name: &str) -> String {
    let (s, v) = server.admin(
        "PUT",
        &format!("/providers/Strata.Fabric/joinTokens/{name}"),
        Some(json!({ "properties": { "expiresInSecs": 600 } })),
    );
    assert_eq!(s, 201, "{v}");
    v["secretOutput"]["joinToken"].as_str().unwrap().to_string()
}

pub(crate) fn host_doc(server: &Server, name: &str) -> Value {
    let (s, v) = server.admin(
        "GET",
        &format!("/providers/Strata.Fabric/hosts/{name}"),
        None,
    );
    assert_eq!(s, 200, "{v}");
    v
}

/// A control plane that trusts the test TPM CA and a release key, with the reference policy
/// for a good boot of `BootImages::default()` imported (version 1): where every test that
/// needs Trusted hosts starts. `tweak` adjusts the rest of the configuration.
pub(crate) struct TrustedFabric {
    pub server: Server,
    pub ca: TestCa,
    pub good: BootImages,
    /// Holds the CA bundle and the release key the server was configured with.
    pub keys: tempfile::TempDir,
}

impl TrustedFabric {
    pub(crate) fn start(tweak: impl FnOnce(&mut strata_control::Config)) -> Self {
        let ca = TestCa::new().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let (signer, _) = ReleaseSigner::generate("release-2026").unwrap();
        let release_path = keys.path().join("release-key.json");
        std::fs::write(
            &release_path,
            serde_json::to_vec(&signer.release_key()).unwrap(),
        )
        .unwrap();
        // swtpm's local CA writes its root and issuer certificates when it first issues an EK
        // certificate.
        drop(SwtpmHost::start(&ca).unwrap());
        let ca_bundle = write_ca_bundle(&ca, keys.path());
        let server = Server::start_with(|cfg| {
            cfg.fabric.tpm_ca_files = vec![ca_bundle];
            cfg.fabric.release_key_files = vec![release_path];
            tweak(cfg);
        });
        let good = BootImages::default();
        let (s, v) = server.admin(
            "POST",
            "/providers/Strata.Fabric/referencePolicies/import",
            Some(signed_bundle(&signer, 1, &good)),
        );
        assert_eq!(s, 200, "{v}");
        Self {
            server,
            ca,
            good,
            keys,
        }
    }
}

pub(crate) fn write_ca_bundle(ca: &TestCa, dir: &Path) -> PathBuf {
    let p = dir.join("tpm-ca.pem");
    std::fs::write(
        &p,
        format!(
            "{}{}",
            ca.root_cert_pem().unwrap(),
            ca.issuer_cert_pem().unwrap()
        ),
    )
    .unwrap();
    p
}

#[test]
fn three_hosts_register_two_are_trusted_and_drift_is_caught() {
    let ca = TestCa::new().unwrap();
    let keys = tempfile::tempdir().unwrap();
    // The release key that signs reference policies.
    let (signer, _) = ReleaseSigner::generate("release-2026").unwrap();
    let release_public = signer.release_key();
    let release_path = keys.path().join("release-key.json");
    std::fs::write(&release_path, serde_json::to_vec(&release_public).unwrap()).unwrap();

    // Manufacture one TPM first so the CA's certificates exist, then start the server.
    let probe = SwtpmHost::start(&ca).unwrap();
    drop(probe);
    let ca_bundle = write_ca_bundle(&ca, keys.path());
    let server = Server::start_with(|cfg| {
        cfg.fabric.attestation_interval_secs = 1;
        cfg.fabric.tpm_ca_files = vec![ca_bundle.clone()];
        cfg.fabric.release_key_files = vec![release_path.clone()];
    });

    // A signed golden policy for the good boot chain.
    let good = BootImages::default();
    let bundle = signed_bundle(&signer, 1, &good);
    let (s, v) = server.admin(
        "POST",
        "/providers/Strata.Fabric/referencePolicies/import",
        Some(bundle.clone()),
    );
    assert_eq!(s, 200, "{v}");
    // The same bundle again is a rollback (version not newer); a tampered one is refused.
    let (s, v) = server.admin(
        "POST",
        "/providers/Strata.Fabric/referencePolicies/import",
        Some(bundle.clone()),
    );
    assert_eq!(s, 409, "{v}");
    let mut tampered = bundle.clone();
    tampered["payload"] = json!(
        tampered["payload"]
            .as_str()
            .unwrap()
            .replace("\"version\":1", "\"version\":7")
    );
    let (s, v) = server.admin(
        "POST",
        "/providers/Strata.Fabric/referencePolicies/import",
        Some(tampered),
    );
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "PolicyBundleRejected", "{v}");
    let (other_key, _) = ReleaseSigner::generate("release-2026").unwrap();
    let forged = signed_bundle(&other_key, 2, &good);
    let (s, v) = server.admin(
        "POST",
        "/providers/Strata.Fabric/referencePolicies/import",
        Some(forged),
    );
    assert_eq!(s, 400, "{v}");

    let bad_images = BootImages {
        kernel: b"vmlinuz-6.12.0-strata-with-a-rootkit".to_vec(),
        ..Default::default()
    };
    let mut hosts = Vec::new();
    for (name, images) in [("good-1", &good), ("good-2", &good), ("bad-1", &bad_images)] {
        let (swtpm, cfg, dir) = boot_host(&ca, name, images, &server);
        let mut agent = Agent::new(cfg).unwrap();
        let token = join_token(&server, &format!("jt-{name}"));
        assert_eq!(agent.register(&token).unwrap(), name);
        // One-time: the same token cannot enrol anything again.
        let (swtpm2, cfg2, _dir2) = boot_host(&ca, &format!("{name}-again"), images, &server);
        let mut again = Agent::new(cfg2).unwrap();
        let err = again.register(&token).unwrap_err().to_string();
        assert!(err.contains("401"), "{err}");
        drop(again);
        drop(swtpm2);
        assert_eq!(host_doc(&server, name)["properties"]["state"], "Registered");
        hosts.push(Host {
            name: name.into(),
            agent,
            _swtpm: swtpm,
            _dir: dir,
        });
    }

    // Nothing can be placed before anyone attests.
    let (s, v) = server.admin(
        "POST",
        "/providers/Strata.Fabric/placements/preview",
        Some(json!({ "count": 1 })),
    );
    assert_eq!(s, 409, "{v}");

    for h in &mut hosts {
        let r = h.agent.round().unwrap();
        let doc = host_doc(&server, &h.name);
        if h.name.starts_with("good") {
            assert!(r.passed, "{}: {:?}", h.name, r.failures);
            assert_eq!(doc["properties"]["state"], "Trusted", "{doc}");
            assert!(h.agent.has_certificate());
            let a = h.agent.assignments(true).unwrap();
            assert_eq!(a["state"], "Trusted");
        } else {
            assert!(!r.passed);
            assert_eq!(doc["properties"]["state"], "Untrusted", "{doc}");
            let reason = doc["properties"]["reason"].as_str().unwrap();
            assert!(
                reason.contains("PCR 4") || reason.contains("pcr 4"),
                "{reason}"
            );
            assert!(
                reason.to_lowercase().contains("kernel")
                    || reason.contains("EV_EFI_BOOT_SERVICES_APPLICATION"),
                "{reason}"
            );
            assert!(!h.agent.has_certificate());
            assert!(h.agent.assignments(false).is_err());
        }
    }

    // Ten VMs land on the two trusted hosts only, spread evenly.
    let (s, v) = server.admin(
        "POST",
        "/providers/Strata.Fabric/placements/preview",
        Some(json!({ "count": 10 })),
    );
    assert_eq!(s, 200, "{v}");
    let placed: Vec<&str> = v["placements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(placed.iter().filter(|p| **p == "good-1").count(), 5, "{v}");
    assert_eq!(placed.iter().filter(|p| **p == "good-2").count(), 5, "{v}");

    // Without the certificate the mTLS-only call is refused even for a Trusted host.
    let err = hosts[0].agent.assignments(false).unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");

    // Drift: something extends PCR 4 on good-1. The next round fails, the host is Untrusted
    // and cordoned, its certificate is revoked, and placement skips it.
    let h = &mut hosts[0];
    h.agent
        .tpm()
        .extend(
            4,
            &[(PcrBank::Sha1, vec![7; 20]), (PcrBank::Sha256, vec![7; 32])],
        )
        .unwrap();
    let held_certificate = h.agent.has_certificate();
    assert!(held_certificate);
    let r = h.agent.round().unwrap();
    assert!(!r.passed);
    let doc = host_doc(&server, "good-1");
    assert_eq!(doc["properties"]["state"], "Untrusted", "{doc}");
    assert_eq!(doc["properties"]["cordoned"], true, "{doc}");
    assert!(doc["properties"]["certificate"].is_null(), "{doc}");
    let (s, v) = server.admin(
        "POST",
        "/providers/Strata.Fabric/placements/preview",
        Some(json!({ "count": 3 })),
    );
    assert_eq!(s, 200, "{v}");
    assert!(
        v["placements"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p == "good-2"),
        "{v}"
    );

    // An incident was audited for the failure.
    let (s, v) = server.admin("GET", "/providers/Strata.Audit/entries?limit=1000", None);
    assert_eq!(s, 200);
    let incidents: Vec<&Value> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["entry"])
        .filter(|e| e["category"] == "incident")
        .collect();
    assert!(
        incidents
            .iter()
            .any(|e| e["scope"].as_str().unwrap().ends_with("/hosts/good-1")),
        "{incidents:?}"
    );
    assert!(
        incidents
            .iter()
            .any(|e| e["scope"].as_str().unwrap().ends_with("/hosts/bad-1")),
        "{incidents:?}"
    );

    // Operators: quarantine good-2, which stops placement entirely; release brings it back
    // to Registered, and it must attest again to be Trusted.
    // A Security Admin may quarantine during an incident but not release.
    let (oid, client_id, secret) = server.new_sp("soc-bot");
    server.assign(&oid, "Security Admin", "");
    let soc = server.sp_token(&client_id, &secret).unwrap();
    let (s, v, _) = server.req(
        "POST",
        "/providers/Strata.Fabric/hosts/good-2/quarantine",
        Some(&soc),
        Some(&json!({ "reason": "incident 42" })),
        &[],
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["properties"]["state"], "Quarantined");
    let (s, v, _) = server.req(
        "POST",
        "/providers/Strata.Fabric/hosts/good-2/release",
        Some(&soc),
        None,
        &[],
    );
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("hosts/release/action"),
        "{v}"
    );
    let r = hosts[1].agent.round().unwrap();
    assert_eq!(r.state, "Quarantined", "a passing round does not release");
    let doc = host_doc(&server, "good-2");
    assert!(
        doc["properties"]["quarantineReason"]
            .as_str()
            .unwrap()
            .contains("incident 42"),
        "{doc}"
    );
    let (s, v) = server.admin(
        "POST",
        "/providers/Strata.Fabric/hosts/good-2/release",
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["properties"]["state"], "Registered");
    let r = hosts[1].agent.round().unwrap();
    assert!(r.passed && r.state == "Trusted", "{r:?}");
}

#[test]
fn bad_join_tokens_and_unknown_nonces_are_refused() {
    let server = Server::start();
    let agent = crate::harness::agent(&server.profile.ca_certificate);
    let post = |path: &str, body: Value| {
        let mut resp = agent
            .post(&format!("{}{path}", server.endpoint()))
            .send_json(&body)
            .unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_json::<Value>().unwrap_or(Value::Null),
        )
    };
    // A made-up token, a malformed token, an unknown host: refused, nothing created.
    let (s, v) = post(
        "/fabric/v1/register",
        json!({ "joinToken": "sjt.nope.secret", "hostname": "h1", "ekPublic": "AAAA", "akPublic": "AAAA" }),
    );
    assert_eq!(s, 401, "{v}");
    let (s, _) = post(
        "/fabric/v1/register",
        json!({ "joinToken": "garbage", "hostname": "h1", "ekPublic": "AAAA", "akPublic": "AAAA" }),
    );
    assert_eq!(s, 401);
    let token = join_token(&server, "jt-1");
    let (_, secret) = strata_control::fabric::door::split_token(&token).unwrap();
    let wrong = format!("sjt.jt-1.{}x", secret);
    let (s, _) = post(
        "/fabric/v1/register",
        json!({ "joinToken": wrong, "hostname": "h1", "ekPublic": "AAAA", "akPublic": "AAAA" }),
    );
    assert_eq!(s, 401);
    // A token pinned to a host name cannot enrol another name.
    let (s, v) = server.admin(
        "PUT",
        "/providers/Strata.Fabric/joinTokens/jt-pinned",
        Some(json!({ "properties": { "hostname": "rack1-07" } })),
    );
    assert_eq!(s, 201, "{v}");
    let pinned = v["secretOutput"]["joinToken"].as_str().unwrap().to_string();
    let (s, v) = post(
        "/fabric/v1/register",
        json!({ "joinToken": pinned, "hostname": "rack1-08", "ekPublic": "AAAA", "akPublic": "AAAA" }),
    );
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("rack1-07"),
        "{v}"
    );
    let (s, v) = post(
        "/fabric/v1/hosts/h1/evidence",
        json!({ "nonce": "AAAA", "agentPublicKey": "AAAA", "evidence": {} }),
    );
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "UnknownNonce");
    let (s, _) = post(
        "/fabric/v1/hosts/h1/nonce",
        json!({ "agentPublicKey": "AAAA" }),
    );
    assert_eq!(s, 404);
    // Hosts and reference policies cannot be written with PUT.
    let (s, v) = server.admin(
        "PUT",
        "/providers/Strata.Fabric/hosts/h1",
        Some(json!({ "properties": {} })),
    );
    assert_eq!(s, 400, "{v}");
    let (s, v) = server.admin(
        "PUT",
        "/providers/Strata.Fabric/referencePolicies/default",
        Some(json!({ "properties": {} })),
    );
    assert_eq!(s, 400, "{v}");
    let (s, v) = server.admin(
        "DELETE",
        "/providers/Strata.Fabric/referencePolicies/default",
        None,
    );
    assert_eq!(s, 400, "deleting would reset the rollback floor: {v}");
    // Without a configured release key no bundle is accepted.
    let (s, v) = server.admin(
        "POST",
        "/providers/Strata.Fabric/referencePolicies/import",
        Some(json!({ "payload": "{}", "signature": "", "keyId": "x" })),
    );
    assert_eq!(s, 403, "{v}");
    // Join tokens are shown once and stored hashed.
    let (s, v) = server.admin("GET", "/providers/Strata.Fabric/joinTokens/jt-1", None);
    assert_eq!(s, 200);
    assert!(!v.to_string().contains(secret), "{v}");
}

/// The tiny image's cache directory, built once (under a lock) and shared with the compute and
/// agent tests that boot it.
pub(crate) fn tiny_cache() -> PathBuf {
    let cache = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("strata-compute-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let lock = std::fs::File::create(cache.join("build.lock")).unwrap();
    lock.lock().unwrap();
    strata_agent::images::ImageStore::new(
        cache.clone(),
        strata_agent::images::SigningKey::Snakeoil,
    )
    .resolve("tiny", &mut |l| eprintln!("tiny image: {l}"))
    .unwrap();
    lock.unlock().unwrap();
    cache
}

/// A host's VM loop on the real QEMU driver, its VMs under `dir/vms` (`dir` made 0755 so VM
/// uids can pass), uids from a range of its own (`uid_slot` keeps parallel tests apart),
/// images from `images`.
pub(crate) fn qemu_host(
    dir: &Path,
    uid_slot: u32,
    images: std::sync::Arc<strata_agent::images::ImageStore>,
) -> (strata_agent::drivers::Driver, strata_agent::vms::VmHost) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut config = strata_compute::qemu::QemuConfig::snakeoil(dir.join("vms")).unwrap();
    config.sandbox.uid_base = strata_compute::sandbox::DEFAULT_UID_BASE + 16 * uid_slot;
    config.sandbox.uid_count = 16;
    let driver = strata_agent::drivers::Driver::from_qemu(config).unwrap();
    let host = strata_agent::vms::VmHost::new(
        driver.hypervisor.clone(),
        images,
        strata_agent::vms::VmHostConfig {
            poll_every: std::time::Duration::from_millis(200),
            report_every: std::time::Duration::from_secs(10),
            vm_dir: driver.vm_dir.clone(),
        },
    );
    (driver, host)
}
