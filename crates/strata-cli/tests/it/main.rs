//! End-to-end tests of the `strata` binary: `strata up` as a real process, the CLI commands the
//! README shows, offline audit verification, and a kill -9 in the middle of concurrent writes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should panic"
)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

struct Up {
    child: Child,
    dir: PathBuf,
}

impl Up {
    fn start(dir: &Path) -> Up {
        Up::start_with(dir, &[])
    }

    fn start_with(dir: &Path, extra: &[&str]) -> Up {
        let _ = std::fs::remove_file(dir.join("admin-profile.json.ready"));
        let child = Command::new(BIN)
            .args(["up", "--data-dir"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let up = Up {
            child,
            dir: dir.to_path_buf(),
        };
        up.wait_ready();
        up
    }

    fn profile_path(&self) -> PathBuf {
        self.dir.join("admin-profile.json")
    }

    fn profile(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.profile_path()).unwrap()).unwrap()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(text) = std::fs::read(self.profile_path())
                && let Ok(p) = serde_json::from_slice::<Value>(&text)
            {
                let agent = agent(p["caCertificate"].as_str().unwrap());
                if let Ok(r) = agent
                    .get(&format!("{}/healthz", p["endpoint"].as_str().unwrap()))
                    .call()
                    && r.status() == 200
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("strata up did not become ready");
    }

    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(BIN)
            .arg("--profile")
            .arg(self.profile_path())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let (ok, out, err) = self.cli(&a);
        assert!(ok, "strata {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON: {out}"))
    }

    /// SIGTERM and wait: a clean stop signs a final checkpoint.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let _ = self.child.wait();
    }

    /// SIGTERM, wait, and return what it wrote on standard error.
    fn stop_log(mut self) -> String {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let _ = self.child.wait();
        let mut log = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read as _;
            let _ = e.read_to_string(&mut log);
        }
        log
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent(ca: &str) -> ureq::Agent {
    let ca = ureq::tls::Certificate::from_pem(ca.as_bytes()).unwrap();
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

fn verify(dir: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn cli_walkthrough_and_audit_tamper_detection() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let up = Up::start(&dir);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(up.profile_path()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the admin profile is private");

    let rg = up.cli_json(&["group", "create", "-n", "web"]);
    assert_eq!(rg["name"], "web");
    let sp = up.cli_json(&["sp", "create", "-n", "ci-bot"]);
    let client_id = sp["clientId"].as_str().unwrap();
    assert!(sp["clientSecret"].as_str().unwrap().starts_with("stsec_"));
    let object_id = sp["objectId"].as_str().unwrap().to_string();
    let roles = up.cli_json(&["role", "list"]);
    assert_eq!(roles["value"].as_array().unwrap().len(), 10);

    // Nothing until assigned; then Reader at the group allows read only.
    let sub = up.profile()["subscriptionId"].as_str().unwrap().to_string();
    let scope = format!("/subscriptions/{sub}/resourceGroups/web");
    let check = |action: &str| {
        up.cli_json(&[
            "authz",
            "check",
            "--principal",
            &object_id,
            "--action",
            action,
            "--scope",
            &scope,
        ])
    };
    assert_eq!(
        check("Strata.Resources/subscriptions/resourceGroups/read")["decision"],
        "Denied"
    );
    up.cli_json(&[
        "role",
        "assignment",
        "create",
        "--assignee",
        "ci-bot",
        "--role",
        "Reader",
        "--scope",
        &scope,
    ]);
    let read = check("Strata.Resources/subscriptions/resourceGroups/read");
    assert_eq!(read["decision"], "Allowed");
    assert!(
        read["reason"].as_str().unwrap().contains("Reader"),
        "{read}"
    );
    assert_eq!(
        check("Strata.Resources/subscriptions/resourceGroups/write")["decision"],
        "Denied"
    );
    // The service principal signs in with its own profile: it can read the group, not change it.
    let bot_profile = tmp.path().join("bot.json");
    let out = Command::new(BIN)
        .arg("--profile")
        .arg(up.profile_path())
        .args(["login", "--service-principal", client_id, "--out"])
        .arg(&bot_profile)
        .env("STRATA_CLIENT_SECRET", sp["clientSecret"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let as_bot = |args: &[&str]| {
        Command::new(BIN)
            .arg("--profile")
            .arg(&bot_profile)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        as_bot(&["group", "show", "-n", "web", "-o", "json"])
            .status
            .success()
    );
    let refused = as_bot(&["group", "create", "-n", "web", "--tag", "x=y"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("AuthorizationFailed (403)"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let deny = up.cli_json(&[
        "role",
        "deny",
        "create",
        "-n",
        "no-read",
        "--scope",
        &scope,
        "--actions",
        "*/read",
        "--principals",
        "ci-bot",
    ]);
    assert_eq!(deny["properties"]["denyAssignmentName"], "no-read");
    let denied = check("Strata.Resources/subscriptions/resourceGroups/read");
    assert_eq!(denied["decision"], "Denied");
    assert!(
        denied["reason"].as_str().unwrap().contains("no-read"),
        "{denied}"
    );

    // A bad command fails with a clear message and a non-zero exit.
    let (ok, _, err) = up.cli(&["group", "create", "-n", "bad name"]);
    assert!(!ok);
    assert!(err.contains("invalid name 'bad name'"), "{err}");

    let entries = up.cli_json(&["audit", "list", "--limit", "500"]);
    assert!(entries["value"].as_array().unwrap().len() > 5);
    up.stop();

    let (ok, out) = verify(&dir);
    assert!(ok, "a clean log verifies: {out}");

    // Edit one row of the audit table: verification must fail and name the entry.
    let conn = rusqlite::Connection::open(dir.join("strata.db")).unwrap();
    let entry: Vec<u8> = conn
        .query_row("SELECT entry FROM audit WHERE seq = 4", [], |r| r.get(0))
        .unwrap();
    let edited = String::from_utf8(entry)
        .unwrap()
        .replace("success", "failure")
        .replace("denied", "success");
    conn.execute(
        "UPDATE audit SET entry = ?1 WHERE seq = 4",
        [edited.as_bytes()],
    )
    .unwrap();
    drop(conn);
    let (ok, out) = verify(&dir);
    assert!(!ok, "an edited row is detected: {out}");
    assert!(
        out.contains("entry 4") || out.contains("seq 4") || out.contains(" 4 "),
        "the report names the entry: {out}"
    );
}

#[test]
fn kill_9_during_concurrent_writes_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let up = Up::start(&dir);
    let p = up.profile();
    let endpoint = p["endpoint"].as_str().unwrap().to_string();
    let agent = agent(p["caCertificate"].as_str().unwrap());
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        p["clientId"].as_str().unwrap(),
        p["clientSecret"].as_str().unwrap()
    );
    let mut resp = agent
        .post(&format!("{endpoint}/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .send(form)
        .unwrap();
    let token = resp.body_mut().read_json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let sub = p["subscriptionId"].as_str().unwrap().to_string();
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for t in 0..4 {
        let (agent, endpoint, token, sub, acked, stop) = (
            agent.clone(),
            endpoint.clone(),
            token.clone(),
            sub.clone(),
            acked.clone(),
            stop.clone(),
        );
        workers.push(std::thread::spawn(move || {
            for i in 0..100_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let name = format!("rg-{t}-{i}");
                let r = agent
                    .put(&format!(
                        "{endpoint}/subscriptions/{sub}/resourceGroups/{name}"
                    ))
                    .header("authorization", &format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .send("{}");
                match r {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push(name),
                    _ => break,
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    up.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "the writers made progress before the kill ({})",
        acked.len()
    );

    // Every acknowledged write is in the database, with its audit entry.
    let conn = rusqlite::Connection::open(dir.join("strata.db")).unwrap();
    let mut audited = std::collections::HashSet::new();
    let mut stmt = conn.prepare("SELECT entry FROM audit").unwrap();
    for e in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap() {
        let v: Value = serde_json::from_slice(&e.unwrap()).unwrap();
        if v["category"] == "write" {
            audited.insert(v["scope"].as_str().unwrap().to_ascii_lowercase());
        }
    }
    for name in &acked {
        let key = format!("/subscriptions/{sub}/resourcegroups/{name}").to_ascii_lowercase();
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM resources WHERE key = ?1",
                [&key],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "acknowledged write {name} survived kill -9");
        assert!(
            audited.contains(&key),
            "acknowledged write {name} has its audit entry"
        );
    }
    drop(stmt);
    drop(conn);

    // Restart, let it checkpoint, stop cleanly: the whole log verifies.
    let up = Up::start(&dir);
    up.stop();
    let (ok, out) = verify(&dir);
    assert!(ok, "the audit log verifies after the crash: {out}");
}

/// `strata root-key` and `--root-key`: a file key (with the warning) migrated to a TPM (swtpm
/// here) by `--root-key tpm`; the data survives; restarts unseal with the same TPM; status
/// tells which; the recovery copy is the same key; a TPM-less start of a sealed directory is
/// refused instead of making a new key.
#[test]
fn root_key_moves_from_a_file_into_the_tpm_and_back_out_only_as_a_recovery_copy() {
    use strata_agent::testhost::{SwtpmHost, TestCa};
    let ca = TestCa::new().unwrap();
    let tpm = SwtpmHost::start(&ca).unwrap();
    let tcti = tpm.tcti();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let root_key = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("root-key")
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .args(["--tcti", &tcti])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let up = Up::start_with(&dir, &["--root-key", "file"]);
    let (ok, _, err) = up.cli(&["group", "create", "-n", "before"]);
    assert!(ok, "{err}");
    let log = up.stop_log();
    assert!(log.contains("root key is stored in a file"), "{log}");
    let (ok, out, err) = root_key(&["status", "-o", "json"]);
    assert!(ok, "{err}");
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (st["protection"].as_str(), st["tpmUsable"].as_bool()),
        (Some("file"), Some(true))
    );

    // --root-key tpm seals the same key and removes the file; the group is still there.
    let up = Up::start_with(&dir, &["--root-key", "tpm", "--root-key-tcti", &tcti]);
    assert!(!dir.join("root.key").exists());
    assert!(dir.join("root.key.sealed").exists());
    let groups = up.cli_json(&["group", "list"]).to_string();
    assert!(groups.contains("before"), "{groups}");
    let (ok, _, err) = up.cli(&["group", "create", "-n", "after"]);
    assert!(ok, "{err}");
    let log = up.stop_log();
    assert!(log.contains("sealed the root key to the TPM"), "{log}");
    assert!(!log.contains("root key is stored in a file"), "{log}");

    // Restart (auto): unsealed with the same TPM.
    let up = Up::start_with(&dir, &["--root-key-tcti", &tcti]);
    let groups = up.cli_json(&["group", "list"]).to_string();
    assert!(
        groups.contains("before") && groups.contains("after"),
        "{groups}"
    );
    up.stop();
    let (ok, out, _) = root_key(&["status", "-o", "json"]);
    assert!(ok);
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["protection"], "tpm-sealed", "{st}");

    // Without the TPM it refuses to start rather than make a new key.
    let out = Command::new(BIN)
        .args(["server", "--data-dir"])
        .arg(&dir)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--root-key-tcti",
            "device:/nonexistent/tpmrm0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot use the tpm"), "{err}");
    assert!(!dir.join("root.key").exists());

    // The recovery copy: 32 bytes, 0600.
    let copy = tmp.path().join("escrow.key");
    let (ok, _, err) = root_key(&["export", "--out", copy.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&copy).unwrap().len(), 32);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// `strata image import` uploads with progress and digest, the control plane keeps the
/// canonical qcow2; `list`, `show`, `delete`; a qcow2 naming a backing file is refused with
/// the reason; `vm create --image NAME` resolves an image resource in the group.
#[test]
fn image_import_list_show_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let up = Up::start(&dir);
    up.cli_json(&["group", "create", "-n", "imgs"]);
    let raw = tmp.path().join("disk.raw");
    let bytes: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&raw, &bytes).unwrap();
    let (ok, out, err) = up.cli(&[
        "image",
        "import",
        "-n",
        "base",
        "-g",
        "imgs",
        "--file",
        raw.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("uploading 100.0%"),
        "progress on stderr: {err}"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let p = &v["properties"];
    assert_eq!(p["provisioningState"], "Succeeded", "{v}");
    assert_eq!(p["source"]["format"], "raw", "detected: {v}");
    assert_eq!(p["virtualSizeBytes"], 3 << 20);
    let local = strata_attest::hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
    assert_eq!(p["source"]["sha256"], local.as_str());
    let digest = p["sha256"].as_str().unwrap();
    assert!(dir.join("images/sha256").join(digest).is_file());
    let list = up.cli_json(&["image", "list", "-g", "imgs"]);
    assert_eq!(list["value"].as_array().unwrap().len(), 1, "{list}");
    let all = up.cli_json(&["image", "list"]);
    assert_eq!(all["value"][0]["name"], "base", "{all}");
    let shown = up.cli_json(&["image", "show", "-n", "base", "-g", "imgs"]);
    assert_eq!(shown["properties"]["sha256"], digest);
    let (ok, table, _) = up.cli(&["image", "list", "-g", "imgs"]);
    assert!(
        ok && table.contains("Succeeded") && table.contains(digest),
        "{table}"
    );

    // The classic attack: a qcow2 whose backing file is a host file.
    let evil = tmp.path().join("evil.qcow2");
    let out = Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "/etc/hostname",
            "-F",
            "raw",
        ])
        .arg(&evil)
        .output()
        .unwrap();
    assert!(out.status.success());
    let (ok, _, err) = up.cli(&[
        "image",
        "import",
        "-n",
        "evil",
        "-g",
        "imgs",
        "--file",
        evil.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("InvalidImage") && err.contains("backing file"),
        "{err}"
    );

    // A VM names the image by its name in the group (no host here: it cannot be placed, but
    // the image was found and read).
    let (ok, _, err) = up.cli(&[
        "vm",
        "create",
        "-n",
        "vm1",
        "-g",
        "imgs",
        "--image",
        "base",
        "--nics",
        "none",
        "--no-wait",
    ]);
    assert!(!ok);
    assert!(!err.contains("ImageNotFound"), "{err}");
    let (ok, _, err) = up.cli(&[
        "vm",
        "create",
        "-n",
        "vm1",
        "-g",
        "imgs",
        "--image",
        "nope",
        "--nics",
        "none",
        "--no-wait",
    ]);
    assert!(!ok && err.contains("ImageNotFound"), "{err}");

    let (ok, _, err) = up.cli(&["image", "delete", "-n", "base", "-g", "imgs"]);
    assert!(ok, "{err}");
    assert!(
        !dir.join("images/sha256").join(digest).exists(),
        "its bytes went with it"
    );
    up.stop();
}

/// `strata keyvault key rotation-policy update|show`: a policy built from flags, replaced by
/// one given as JSON, refused with the reason when wrong, removed with no flags; then the
/// vault's soft delete, list-deleted, refused purge and recover.
#[test]
fn key_rotation_policy_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("data"));
    for args in [
        &["group", "create", "-n", "kv"][..],
        &["keyvault", "create", "-n", "kv1", "-g", "kv"],
        &[
            "keyvault", "key", "create", "--vault", "kv1", "-g", "kv", "-n", "k",
        ],
    ] {
        let (ok, _, err) = up.cli(args);
        assert!(ok, "{args:?}: {err}");
    }
    let key = ["--vault", "kv1", "-g", "kv", "-n", "k"];
    let policy = |extra: &[&str]| {
        let mut a = vec!["keyvault", "key", "rotation-policy", "update"];
        a.extend(key);
        a.extend(extra);
        up.cli(&a)
    };
    let (ok, out, err) = policy(&["--rotate-after", "P30D", "--expiry-time", "P90D"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["lifetimeActions"][0]["trigger"]["timeAfterCreate"], "P30D",
        "{v}"
    );
    assert_eq!(v["attributes"]["expiryTime"], "P90D", "{v}");

    let file = tmp.path().join("policy.json");
    std::fs::write(
        &file,
        r#"{"lifetimeActions":[{"trigger":{"timeBeforeExpiry":"P30D"},"action":{"type":"Rotate"}}],"attributes":{"expiryTime":"P1Y"}}"#,
    )
    .unwrap();
    let (ok, _, err) = policy(&["--value", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let mut show = vec!["keyvault", "key", "rotation-policy", "show"];
    show.extend(key);
    let v = up.cli_json(&show);
    assert_eq!(
        v["lifetimeActions"],
        serde_json::json!([{ "trigger": { "timeBeforeExpiry": "P30D" }, "action": { "type": "Rotate" } }]),
        "replaced, not merged: {v}"
    );
    assert_eq!(v["attributes"]["expiryTime"], "P365D");

    let (ok, _, err) = policy(&["--rotate-before-expiry", "P30D"]);
    assert!(!ok);
    assert!(err.contains("timeBeforeExpiry needs expiryTime"), "{err}");
    let (ok, _, err) = policy(&["--rotate-after", "ninety days"]);
    assert!(!ok);
    assert!(err.contains("ISO 8601"), "{err}");
    let (ok, _, err) = policy(&[]);
    assert!(ok, "{err}");
    assert_eq!(up.cli_json(&show), Value::Null);

    // The vault soft-deleted: listed with its dates, its key out of sight, purge refused under
    // purge protection; recovered with its key.
    let (ok, _, err) = up.cli(&["keyvault", "delete", "-n", "kv1", "-g", "kv"]);
    assert!(ok && err.contains("recover"), "{err}");
    let deleted = up.cli_json(&["keyvault", "list-deleted", "-g", "kv"]);
    assert_eq!(deleted["value"][0]["name"], "kv1", "{deleted}");
    assert!(
        deleted["value"][0]["properties"]["scheduledPurgeDate"].is_string(),
        "{deleted}"
    );
    let (ok, _, err) = up.cli(&show);
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, _, err) = up.cli(&["keyvault", "purge", "-n", "kv1", "-g", "kv"]);
    assert!(!ok && err.contains("PurgeProtected"), "{err}");
    let v = up.cli_json(&["keyvault", "recover", "-n", "kv1", "-g", "kv"]);
    assert_eq!(v["name"], "kv1", "{v}");
    let (ok, _, err) = up.cli(&show);
    assert!(ok, "{err}");
}

#[test]
fn nic_ddos_settings_and_counters_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("data"));
    for args in [
        &["group", "create", "-n", "net"][..],
        &[
            "network",
            "vnet",
            "create",
            "-n",
            "v",
            "-g",
            "net",
            "--address-prefixes",
            "10.9.0.0/16",
        ],
        &[
            "network",
            "vnet",
            "subnet",
            "create",
            "--vnet",
            "v",
            "-g",
            "net",
            "-n",
            "s",
            "--address-prefix",
            "10.9.1.0/24",
        ],
    ] {
        let (ok, _, err) = up.cli(args);
        assert!(ok, "{args:?}: {err}");
    }
    let create = |name: &str, settings: &str| {
        up.cli(&[
            "network",
            "nic",
            "create",
            "-n",
            name,
            "-g",
            "net",
            "--vnet",
            "v",
            "--subnet",
            "s",
            "--ddos-settings",
            settings,
            "-o",
            "json",
        ])
    };
    let (ok, _, err) = create("bad", r#"{"synPerSource":{"perSecond":0,"burst":1}}"#);
    assert!(!ok);
    assert!(err.contains("synPerSource.perSecond 0"), "{err}");
    let (ok, _, err) = create("nic1", r#"{"synPerSource":{"perSecond":50,"burst":100}}"#);
    assert!(ok, "{err}");
    let v = up.cli_json(&["network", "nic", "ddos", "-n", "nic1", "-g", "net"]);
    assert_eq!(
        v["policy"]["synPerSource"],
        serde_json::json!({ "perSecond": 50, "burst": 100 }),
        "{v}"
    );
    assert_eq!(
        v["policy"]["maxConnections"], 32768,
        "the other limits keep their defaults: {v}"
    );
    assert_eq!(v["counters"], Value::Null, "no host has reported: {v}");
    let (ok, table, err) = up.cli(&["network", "nic", "ddos", "-n", "nic1", "-g", "net"]);
    assert!(ok && table.contains("SynFloodDrops"), "{table}{err}");
}

/// Polls `check` every 200 ms until it returns `Some`, or panics with `what` after `secs`.
fn poll<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The names in a `list -o json` answer.
fn names(list: &Value) -> Vec<String> {
    list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// Issue 5's CLI end to end: vnet, subnet, NSG, rules (the guardrail refusing 22 from the
/// Internet or anywhere), ASG, a NIC in it; flow-verify naming DenyAllInBound, then the
/// priority-100 allow for exactly one prefix; effective rules with tags expanded; reachability
/// listing exactly the sources that get in.
#[test]
fn network_cli_nsg_rules_flow_verify_effective_rules_and_reachability() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("data"));
    up.cli_json(&["group", "create", "-n", "net"]);
    let in_group = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(&["-g", "net"])
            .map(|a| (*a).to_string())
            .collect()
    };
    let net = |args: &[&str]| {
        let a = in_group(args);
        up.cli_json(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let net_cli = |args: &[&str]| {
        let a = in_group(args);
        up.cli(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let vnet = net(&[
        "network",
        "vnet",
        "create",
        "-n",
        "v",
        "--address-prefixes",
        "10.20.0.0/16",
    ]);
    assert_eq!(
        vnet["properties"]["addressSpace"]["addressPrefixes"],
        serde_json::json!(["10.20.0.0/16"]),
        "{vnet}"
    );
    let subnet = net(&[
        "network",
        "vnet",
        "subnet",
        "create",
        "--vnet",
        "v",
        "-n",
        "s",
        "--address-prefix",
        "10.20.1.0/24",
    ]);
    assert_eq!(subnet["properties"]["addressPrefix"], "10.20.1.0/24");
    let nsg = net(&["network", "nsg", "create", "-n", "web-nsg"]);
    assert_eq!(nsg["name"], "web-nsg");
    let nsg_id = nsg["id"].as_str().unwrap().to_string();

    // The guardrail: SSH from the Internet or from anywhere is refused, and nothing is added.
    for from in ["Internet", "*"] {
        let (ok, _, err) = net_cli(&[
            "network",
            "nsg",
            "rule",
            "create",
            "--nsg",
            "web-nsg",
            "-n",
            "ssh-open",
            "--priority",
            "200",
            "--access",
            "Allow",
            "--protocol",
            "Tcp",
            "--source-address-prefixes",
            from,
            "--destination-port-ranges",
            "22",
        ]);
        assert!(!ok, "22 from {from} must be refused");
        assert!(
            err.contains("ManagementPortExposedToInternet") && err.contains("22"),
            "{err}"
        );
    }
    let rules = net(&["network", "nsg", "rule", "list", "--nsg", "web-nsg"]);
    assert!(
        !rules.to_string().contains("ssh-open"),
        "a refused rule is not stored: {rules}"
    );

    let asg = net(&["network", "asg", "create", "-n", "web"]);
    let nic = net(&[
        "network", "nic", "create", "-n", "nic1", "--vnet", "v", "--subnet", "s", "--nsg",
        "web-nsg", "--asgs", "web",
    ]);
    let p = &nic["properties"];
    assert_eq!(p["networkSecurityGroup"]["id"], nsg_id.as_str(), "{nic}");
    assert_eq!(p["applicationSecurityGroups"][0]["id"], asg["id"], "{nic}");
    let ip = p["privateIPAddress"].as_str().unwrap().to_string();
    assert!(
        ip.starts_with("10.20.1."),
        "allocated from the subnet: {ip}"
    );

    let local = format!("{ip}:22");
    let verify = |remote: &str| {
        net(&[
            "network",
            "flow-verify",
            "--nic",
            "nic1",
            "--direction",
            "Inbound",
            "--protocol",
            "Tcp",
            "--local",
            &local,
            "--remote",
            remote,
        ])
    };
    let v = verify("198.51.100.7:40000");
    assert_eq!(v["access"], "Deny", "{v}");
    assert_eq!(v["ruleName"], "defaultSecurityRules/DenyAllInBound", "{v}");
    assert_eq!(v["networkSecurityGroup"]["id"], nsg_id.as_str(), "{v}");

    // Allow SSH from one prefix at priority 100: that prefix gets in, another does not.
    let rule = net(&[
        "network",
        "nsg",
        "rule",
        "create",
        "--nsg",
        "web-nsg",
        "-n",
        "ssh-office",
        "--priority",
        "100",
        "--access",
        "Allow",
        "--protocol",
        "Tcp",
        "--source-address-prefixes",
        "198.51.100.0/24",
        "--destination-port-ranges",
        "22",
    ]);
    assert_eq!(rule["properties"]["priority"], 100, "{rule}");
    let v = verify("198.51.100.7:40000");
    assert_eq!(v["access"], "Allow", "{v}");
    assert_eq!(v["ruleName"], "securityRules/ssh-office", "{v}");
    let v = verify("203.0.113.9:40000");
    assert_eq!(v["access"], "Deny", "{v}");
    assert_eq!(v["ruleName"], "defaultSecurityRules/DenyAllInBound", "{v}");

    // Effective rules: the NIC level holds the rule first, the tags expanded to prefixes.
    let eff = net(&["network", "effective-rules", "--nic", "nic1"]);
    let level = eff["inbound"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["level"] == "NetworkInterface")
        .unwrap_or_else(|| panic!("no NIC level: {eff}"));
    assert_eq!(level["networkSecurityGroup"]["id"], nsg_id.as_str());
    let rules = level["rules"].as_array().unwrap();
    assert_eq!(rules[0]["name"], "securityRules/ssh-office", "{eff}");
    assert_eq!(
        rules[0]["expandedSourceAddressPrefix"],
        serde_json::json!(["198.51.100.0/24"])
    );
    let vnet_in = rules
        .iter()
        .find(|r| r["name"] == "defaultSecurityRules/AllowVnetInBound")
        .unwrap_or_else(|| panic!("{eff}"));
    assert_eq!(
        vnet_in["sourceAddressPrefixes"],
        serde_json::json!(["VirtualNetwork"])
    );
    assert_eq!(
        vnet_in["expandedSourceAddressPrefix"],
        serde_json::json!(["10.20.0.0/16"]),
        "VirtualNetwork expands to the VNet's space: {eff}"
    );
    assert_eq!(
        rules.last().unwrap()["name"],
        "defaultSecurityRules/DenyAllInBound"
    );

    // Reachability on 22: the VNet, the load balancer and the one allowed prefix; the
    // allowed prefix is decided by the new rule.
    let reach = net(&[
        "network",
        "reachability",
        "--to",
        "nic1",
        "--port",
        "22",
        "--protocol",
        "Tcp",
    ]);
    assert_eq!(
        reach["sources"],
        serde_json::json!(["10.20.0.0/16", "168.63.129.16/32", "198.51.100.0/24"]),
        "{reach}"
    );
    let office = reach["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["sourceAddressPrefixes"] == serde_json::json!(["198.51.100.0/24"]))
        .unwrap_or_else(|| panic!("{reach}"));
    assert!(
        office["rules"].as_array().unwrap().iter().any(
            |r| r["level"] == "NetworkInterface" && r["ruleName"] == "securityRules/ssh-office"
        ),
        "{reach}"
    );
    up.stop();
}

/// Issue 4's CLI on the default-network path, on `strata up --dev-tpm --hypervisor sim` (a
/// Trusted development host whose VMs are simulated: no boot, so no timing cost): `vm create`
/// with no network arguments makes `default-vnet`, `NAME-nic` and its own deny-by-default NSG;
/// list, show, stop, start, console-log, snapshot create/list/export and a disk from it,
/// delete; the NIC and its NSG go with the VM.
#[test]
fn vm_cli_default_network_lifecycle_on_a_dev_host() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start_with(
        &tmp.path().join("data"),
        &["--dev-tpm", "--hypervisor", "sim"],
    );
    up.cli_json(&["group", "create", "-n", "app"]);
    let host = poll(90, "the local development host is Trusted", || {
        let hosts = up.cli_json(&["host", "list"]);
        hosts["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["properties"]["state"] == "Trusted")
            .map(|h| h["name"].as_str().unwrap().to_string())
    });

    let vm = up.cli_json(&["vm", "create", "-n", "web1", "-g", "app", "--image", "tiny"]);
    let p = &vm["properties"];
    assert_eq!(
        (p["provisioningState"].as_str(), p["powerState"].as_str()),
        (Some("Succeeded"), Some("running")),
        "{vm}"
    );
    assert_eq!(p["host"], host.as_str(), "{vm}");
    assert_eq!(p["securityProfile"]["securityType"], "TrustedLaunch");
    let nic_ref = &p["networkProfile"]["networkInterfaces"][0];
    assert!(
        nic_ref["id"]
            .as_str()
            .unwrap()
            .ends_with("/networkInterfaces/web1-nic"),
        "{vm}"
    );
    assert_eq!(nic_ref["properties"]["deleteOption"], "Delete", "{vm}");

    // The default network: default-vnet with subnet default, web1-nic in it with web1-nic-nsg.
    let vnet = up.cli_json(&["network", "vnet", "show", "-n", "default-vnet", "-g", "app"]);
    assert_eq!(
        vnet["properties"]["addressSpace"]["addressPrefixes"],
        serde_json::json!(["10.0.0.0/16"]),
        "{vnet}"
    );
    let nic = up.cli_json(&["network", "nic", "show", "-n", "web1-nic", "-g", "app"]);
    assert!(
        nic["properties"]["subnet"]["id"]
            .as_str()
            .unwrap()
            .ends_with("/virtualNetworks/default-vnet/subnets/default"),
        "{nic}"
    );
    assert!(
        nic["properties"]["networkSecurityGroup"]["id"]
            .as_str()
            .unwrap()
            .ends_with("/networkSecurityGroups/web1-nic-nsg"),
        "{nic}"
    );
    let ip = nic["properties"]["privateIPAddress"].as_str().unwrap();
    assert!(ip.starts_with("10.0.0."), "{nic}");
    let nsg = up.cli_json(&["network", "nsg", "show", "-n", "web1-nic-nsg", "-g", "app"]);
    assert_eq!(
        nsg["properties"]["securityRules"]
            .as_array()
            .map_or(0, Vec::len),
        0,
        "only the default rules: {nsg}"
    );
    let local = format!("{ip}:22");
    let v = up.cli_json(&[
        "network",
        "flow-verify",
        "-g",
        "app",
        "--nic",
        "web1-nic",
        "--direction",
        "Inbound",
        "--protocol",
        "Tcp",
        "--local",
        &local,
        "--remote",
        "203.0.113.9:40000",
    ]);
    assert_eq!(
        (v["access"].as_str(), v["ruleName"].as_str()),
        (Some("Deny"), Some("defaultSecurityRules/DenyAllInBound")),
        "{v}"
    );

    let list = up.cli_json(&["vm", "list", "-g", "app"]);
    assert_eq!(names(&list), ["web1"], "{list}");
    let shown = up.cli_json(&["vm", "show", "-n", "web1", "-g", "app"]);
    assert_eq!(shown["id"], vm["id"]);

    let stopped = up.cli_json(&["vm", "stop", "-n", "web1", "-g", "app"]);
    assert_eq!(stopped["properties"]["powerState"], "stopped", "{stopped}");
    assert_eq!(
        stopped["properties"]["host"],
        host.as_str(),
        "keeps its host"
    );
    let started = up.cli_json(&["vm", "start", "-n", "web1", "-g", "app"]);
    assert_eq!(started["properties"]["powerState"], "running", "{started}");

    let console = poll(60, "the host reports the VM", || {
        let c = up.cli_json(&["vm", "console-log", "-n", "web1", "-g", "app"]);
        c["reportedAt"].is_string().then_some(c)
    });
    assert_eq!(console["host"], host.as_str(), "{console}");
    assert!(console["consoleTail"].is_string(), "{console}");

    // A snapshot of the running VM's disk (the simulated host's stand-in: an empty encrypted
    // qcow2 made with qemu-img), exported still encrypted, and a disk made from it.
    let snap = up.cli_json(&[
        "snapshot", "create", "-n", "s1", "-g", "app", "--vm", "web1",
    ]);
    let p = &snap["properties"];
    assert_eq!(p["provisioningState"], "Succeeded", "{snap}");
    assert_eq!(
        p["encryption"]["type"], "EncryptionAtRestWithPlatformKey",
        "{snap}"
    );
    assert!(p["sizeBytes"].as_u64().unwrap() > 0, "{snap}");
    assert_eq!(
        names(&up.cli_json(&["snapshot", "list", "-g", "app"])),
        ["s1"]
    );
    let out = tmp.path().join("s1.qcow2");
    let out_s = out.to_str().unwrap();
    let (ok, _, err) = up.cli(&[
        "snapshot", "export", "-n", "s1", "-g", "app", "--out", out_s,
    ]);
    assert!(ok, "{err}");
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len() as u64, p["sizeBytes"].as_u64().unwrap());
    assert!(bytes.starts_with(b"QFI\xfb"), "a qcow2");
    assert_eq!(
        &bytes[32..36],
        &[0, 0, 0, 2],
        "LUKS-encrypted (qcow2 crypt_method 2)"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (ok, _, err) = up.cli(&[
        "snapshot", "export", "-n", "s1", "-g", "app", "--out", out_s,
    ]);
    assert!(!ok && err.contains("exists"), "never overwrites: {err}");
    let disk = up.cli_json(&[
        "disk",
        "create",
        "-n",
        "d1",
        "-g",
        "app",
        "--source-snapshot",
        "s1",
    ]);
    assert!(
        disk["properties"]["creationData"]["sourceResourceId"]
            .as_str()
            .unwrap()
            .ends_with("/snapshots/s1"),
        "{disk}"
    );
    // The host's delivery and the export are in the audit log; the filter keeps only them.
    let audit = up.cli_json(&["audit", "list", "--limit", "1000", "--action", "snapshots"]);
    let entries = audit["value"].as_array().unwrap();
    assert!(!entries.is_empty(), "{audit}");
    assert!(
        entries.iter().all(|e| e["entry"]["action"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("snapshots")),
        "{audit}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["entry"]["principalName"] == format!("agent:{host}").as_str()),
        "the host's delivery: {audit}"
    );
    let (ok, _, err) = up.cli(&["snapshot", "delete", "-n", "s1", "-g", "app", "--yes"]);
    assert!(ok, "{err}");
    let (ok, _, err) = up.cli(&["disk", "delete", "-n", "d1", "-g", "app"]);
    assert!(ok, "{err}");

    let (ok, _, err) = up.cli(&["vm", "delete", "-n", "web1", "-g", "app"]);
    assert!(!ok && err.contains("--yes"), "{err}");
    let (ok, _, err) = up.cli(&["vm", "delete", "-n", "web1", "-g", "app", "--yes"]);
    assert!(ok, "{err}");
    poll(60, "the VM is gone", || {
        names(&up.cli_json(&["vm", "list", "-g", "app"]))
            .is_empty()
            .then_some(())
    });
    // The interface made for it and its NSG went with it; the VNet stays for the next VM.
    assert!(names(&up.cli_json(&["network", "nic", "list", "-g", "app"])).is_empty());
    assert!(names(&up.cli_json(&["network", "nsg", "list", "-g", "app"])).is_empty());
    assert_eq!(
        names(&up.cli_json(&["network", "vnet", "list", "-g", "app"])),
        ["default-vnet"]
    );
    up.stop();
}

/// Without a Trusted host `vm create` is refused with AllocationFailed, and the interface
/// (and its NSG) it made for the VM is removed again, so a retry is not blocked by it.
#[test]
fn vm_create_without_a_host_is_refused_and_leaves_no_interface() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let _ = std::fs::create_dir_all(&dir);
    // `strata server`: the control plane only, so no host at all.
    let child = Command::new(BIN)
        .args(["server", "--data-dir"])
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = Up {
        child,
        dir: dir.clone(),
    };
    up.wait_ready();
    up.cli_json(&["group", "create", "-n", "app"]);
    for _ in 0..2 {
        let (ok, _, err) = up.cli(&["vm", "create", "-n", "web1", "-g", "app", "--image", "tiny"]);
        assert!(!ok);
        assert!(err.contains("AllocationFailed"), "{err}");
        assert!(
            names(&up.cli_json(&["network", "nic", "list", "-g", "app"])).is_empty(),
            "no interface left behind"
        );
        assert!(
            names(&up.cli_json(&["network", "nsg", "list", "-g", "app"])).is_empty(),
            "no NSG left behind"
        );
    }
    assert!(names(&up.cli_json(&["vm", "list", "-g", "app"])).is_empty());
    up.stop();
}
