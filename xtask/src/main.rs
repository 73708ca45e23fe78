//! Project automation: `cargo xtask up` (run Strata on this host) and `cargo xtask ci` (the whole
//! test suite, exactly as CI runs it). Both first install the Debian packages they need, so a
//! fresh Debian 12 machine needs nothing else. Plain std only: this builds in seconds.

mod eventlog;
mod qemu;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Debian packages `strata up` needs on the host (and to build it: the agent links the TPM
/// software stack).
const RUNTIME_PACKAGES: &[&str] = &[
    "ca-certificates",
    "pkg-config",
    "libtss2-dev",
    "swtpm",
    "swtpm-tools",
    "tpm2-tools",
    // the UEFI firmware of every VM (secure boot code, variable store template)
    "ovmf",
    // strata-netdp: the agent's dataplane (bridges, routes, the nftables ruleset, conntrack)
    "iproute2",
    "nftables",
    "conntrack",
];
/// Extra Debian packages the test suite needs (real PostgreSQL for the store tests).
const TEST_PACKAGES: &[&str] = &[
    "postgresql",
    "postgresql-client",
    // strata-compute: build a signed UKI on an ESP and boot it under QEMU with OVMF secure
    // boot and a swtpm vTPM (qemu-system-x86 itself comes from `eventlog::ensure_qemu`).
    "busybox-static",
    "mtools",
    "gdisk",
    "binutils",
    "sbsigntool",
    "systemd-boot-efi",
    "openssl",
    // strata-netdp's benchmark: TCP throughput between namespaces
    "iperf3",
    // strata-compute's boot test connects to a VM's sockets as another VM's uid with it
    "python3",
];

const PG_PORT: u16 = 55432;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("up") => up(&args[1..]),
        Some("ci") => ci(),
        Some("deps") => deps(),
        Some("qemu") => qemu::ensure(),
        Some("bench-http") => bench_http(),
        Some("capture-eventlog") => eventlog::cli(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  up [ARGS…]  install missing Debian packages, build, and run `strata up ARGS…`\n              (default: --data-dir /var/lib/strata --listen 127.0.0.1:8443)\n  ci          install test dependencies, start PostgreSQL, run fmt, clippy and every test\n  deps        only install what `ci` needs (Debian packages, Strata's QEMU)\n  qemu        only build Strata's QEMU into /opt/strata/qemu (when its inputs changed)\n  bench-http  measure authenticated+authorized+audited GET throughput over HTTPS with wrk\n  capture-eventlog [--out DIR]\n              boot an OVMF secure-boot guest with a swtpm vTPM under QEMU and save its\n              TCG event log and PCRs (the verifier's real-firmware fixture)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run(cmd: &mut Command) -> Result {
    eprintln!("xtask: $ {}", describe(cmd));
    let status = cmd
        .status()
        .map_err(|e| format!("could not start {}: {e}", describe(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} failed with {status}", describe(cmd)))
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn ensure_packages(pkgs: &[&str]) -> Result {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing missing Debian packages: {}",
        missing.join(" ")
    );
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn up(args: &[String]) -> Result {
    ensure_packages(RUNTIME_PACKAGES)?;
    qemu::ensure()?;
    let root = root();
    run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "--package",
        "strata-cli",
    ]))?;
    let mut cmd = Command::new(root.join("target/release/strata"));
    cmd.arg("up");
    if args.is_empty() {
        cmd.args([
            "--data-dir",
            "/var/lib/strata",
            "--listen",
            "127.0.0.1:8443",
        ]);
        // A machine without a TPM gets the single-host demo on a software TPM, clearly marked
        // "development (software TPM)" everywhere; with a TPM the real one is used.
        if !Path::new("/dev/tpmrm0").exists() {
            eprintln!(
                "xtask: no TPM at /dev/tpmrm0: running the local host on a software TPM (--dev-tpm)"
            );
            cmd.arg("--dev-tpm");
        }
    } else {
        cmd.args(args);
    }
    run(&mut cmd)
}

/// Everything `ci` needs on the host: Debian packages, Debian's QEMU (the tests' second
/// opinion on image files, and the fallback) and Strata's own QEMU build.
fn deps() -> Result {
    eventlog::ensure_qemu()?;
    ensure_packages(&[RUNTIME_PACKAGES, TEST_PACKAGES].concat())?;
    qemu::ensure()
}

fn ci() -> Result {
    deps()?;
    let root = root();
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["fmt", "--all", "--check"]))?;
    run(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    let pg = Postgres::start()?;
    let result = run(Command::new("cargo")
        .current_dir(&root)
        .env("STRATA_TEST_POSTGRES_URL", pg.url())
        .args([
            "nextest",
            "run",
            "--workspace",
            "--locked",
            "--no-fail-fast",
            "--failure-output",
            "final",
        ]));
    drop(pg);
    result
}

/// A throwaway PostgreSQL cluster on 127.0.0.1, owned by the `postgres` system user, with trust
/// authentication on loopback only. Stopped and removed on drop.
struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
}

impl Postgres {
    fn start() -> Result<Self> {
        let bin = find_pg_bin()?;
        let dir = std::env::temp_dir().join(format!("strata-ci-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
        let data = dir.join("data");
        run(as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "strata",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ])
            .stdout(Stdio::null()))?;
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={PG_PORT} -c unix_socket_directories={} -c fsync=on -c max_connections=200",
            dir.display()
        );
        run(as_postgres(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(dir.join("log"))
            .args(["-w", "start"]))?;
        Ok(Self { dir, bin })
    }

    fn url(&self) -> String {
        format!("postgres://strata@127.0.0.1:{PG_PORT}/postgres")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program);
    cmd
}

fn find_pg_bin() -> Result<PathBuf> {
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(base)
        .map_err(|e| format!("PostgreSQL is not installed ({}: {e})", base.display()))?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| "no PostgreSQL server binaries (initdb) under /usr/lib/postgresql".into())
}

/// Extracts a string field from a flat JSON text (enough for our own CLI output).
fn json_field(text: &str, field: &str) -> Option<String> {
    let key = format!("\"{field}\"");
    let rest = &text[text.find(&key)? + key.len()..];
    let rest = &rest[rest.find('"')? + 1..];
    Some(rest[..rest.find('"')?].to_string())
}

/// One wrk run; returns requests/s.
fn wrk(url: &str, token: Option<&str>) -> Result<f64> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t", "2", "-c", "64", "-d", "10s", "--latency"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    cmd.arg(url);
    eprintln!("xtask: $ wrk -t 2 -c 64 -d 10s --latency {url}");
    let out = cmd.output().map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{text}");
    if text.contains("Non-2xx") {
        return Err(format!("{url}: some responses were not 2xx"));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "could not read wrk's Requests/sec".into())
}

/// Authenticated + authorized + audited-path GET throughput over HTTPS on loopback, with the
/// public `/healthz` (same TLS and HTTP stack, no auth, no store) as the in-run baseline.
fn bench_http() -> Result {
    ensure_packages(&["wrk"])?;
    let root = root();
    run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "--package",
        "strata-cli",
    ]))?;
    let bin = root.join("target/release/strata");
    let dir = std::env::temp_dir().join(format!("strata-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut server = Command::new(&bin)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--rate-limit",
            "10000000",
            "--data-dir",
        ])
        .arg(&dir)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start strata: {e}"))?;
    let profile = dir.join("admin-profile.json");
    let cli = |args: &[&str]| -> Result<String> {
        let out = Command::new(&bin)
            .arg("--profile")
            .arg(&profile)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let result = (|| -> Result {
        let mut ready = false;
        for _ in 0..300 {
            if profile.exists() && cli(&["group", "create", "-n", "bench", "-o", "json"]).is_ok() {
                ready = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if !ready {
            return Err("strata up did not become ready".into());
        }
        let text = std::fs::read_to_string(&profile).map_err(|e| e.to_string())?;
        let endpoint = json_field(&text, "endpoint").ok_or("profile has no endpoint")?;
        let sub = json_field(&text, "subscriptionId").ok_or("profile has no subscription")?;
        let token = json_field(
            &cli(&["account", "get-access-token", "-o", "json"])?,
            "accessToken",
        )
        .ok_or("no token")?;
        let base = wrk(&format!("{endpoint}/healthz"), None)?;
        let full = wrk(
            &format!("{endpoint}/subscriptions/{sub}/resourceGroups/bench"),
            Some(&token),
        )?;
        println!("\nGET /healthz (TLS + HTTP only, baseline): {base:.0} req/s");
        println!(
            "GET resource group (authn + authz + store read): {full:.0} req/s ({:.2} of baseline)",
            full / base
        );
        Ok(())
    })();
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
