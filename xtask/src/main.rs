//! Project automation: `cargo xtask up` (run Strata on this host) and `cargo xtask ci` (the whole
//! test suite, exactly as CI runs it). Both first install the Debian packages they need, so a
//! fresh Debian 12 machine needs nothing else. Plain std only: this builds in seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Debian packages `strata up` needs on the host.
const RUNTIME_PACKAGES: &[&str] = &["ca-certificates"];
/// Extra Debian packages the test suite needs (real PostgreSQL for the store tests).
const TEST_PACKAGES: &[&str] = &["postgresql", "postgresql-client"];

const PG_PORT: u16 = 55432;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("up") => up(&args[1..]),
        Some("ci") => ci(),
        Some("deps") => ensure_packages(&[RUNTIME_PACKAGES, TEST_PACKAGES].concat()),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  up [ARGS…]  install missing Debian packages, build, and run `strata up ARGS…`\n              (default: --data-dir /var/lib/strata --listen 127.0.0.1:8443)\n  ci          install test dependencies, start PostgreSQL, run fmt, clippy and every test\n  deps        only install the Debian packages"
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
    } else {
        cmd.args(args);
    }
    run(&mut cmd)
}

fn ci() -> Result {
    ensure_packages(&[RUNTIME_PACKAGES, TEST_PACKAGES].concat())?;
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
