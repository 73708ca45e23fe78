//! `strata snapshot …`: encrypted disk snapshots (`Strata.Compute/snapshots`).
//!
//! A snapshot copies a VM's OS disk or a managed disk into a standalone qcow2 that stays
//! LUKS-encrypted under the source disk's key; only Strata's trusted hosts ever get that key.
//! `create` waits (progress on stderr) until the snapshot has Succeeded or Failed, unless
//! `--no-wait`. `export` downloads the encrypted file: it is written as `FILE.partial` (mode
//! 0600, created new), checked against the snapshot's size and SHA-256, then published as
//! `FILE` without ever replacing an existing file. `strata disk create --source-snapshot`
//! makes a disk from one.

use std::io::{IsTerminal as _, Read, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use strata_types::path::{ResourceId, validate_name};

use crate::client::Client;
use crate::output::{Column, Format, print};

const SNAPSHOT_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("State", "/properties/provisioningState"),
    ("Encryption", "/properties/encryption/type"),
    ("KeyVersion", "/properties/encryption/keyVersion"),
    ("SizeBytes", "/properties/sizeBytes"),
    ("Source", "/properties/creationData/sourceResourceId"),
    ("Reason", "/properties/failureReason"),
];

const SNAPSHOTS: &str = "Strata.Compute/snapshots";
const VIRTUAL_MACHINES: &str = "Strata.Compute/virtualMachines";
const DISKS: &str = "Strata.Compute/disks";

#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Snapshot a VM's OS disk or a managed disk and wait until it has Succeeded (or failed,
    /// with the reason).
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        wait: Wait,
    },
    /// List the snapshots in a resource group.
    List {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Show one snapshot: state, encryption type, key version, size, source.
    Show {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
    },
    /// Delete a snapshot (its encrypted copy goes with it).
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[arg(long)]
        yes: bool,
    },
    /// Download a snapshot as its LUKS-encrypted qcow2 (it opens only with the snapshot's
    /// key, which never leaves Strata).
    Export {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        /// The file to write (created new, mode 0600; an existing file is never replaced).
        #[arg(long)]
        out: PathBuf,
    },
}

/// What to snapshot: exactly one of a VM (its OS disk), a disk, or any resource id.
#[derive(clap::Args, Clone, Debug)]
#[group(required = true, multiple = false)]
pub struct Source {
    /// A VM in the snapshot's resource group: its OS disk.
    #[arg(long)]
    vm: Option<String>,
    /// A managed disk in the snapshot's resource group.
    #[arg(long)]
    disk: Option<String>,
    /// The full id of a Strata.Compute/virtualMachines or Strata.Compute/disks resource.
    #[arg(long)]
    source: Option<String>,
}

#[derive(clap::Args, Clone, Copy)]
pub struct Wait {
    /// Return at once instead of waiting for the snapshot to finish.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting after this many seconds (the snapshot keeps going).
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

fn resource_path(sub: &str, rg: &str, rtype: &str, name: &str) -> Result<String> {
    validate_name(rg)?;
    validate_name(name)?;
    Ok(format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/{rtype}/{name}"
    ))
}

fn snapshot_path(sub: &str, rg: &str, name: &str) -> Result<String> {
    resource_path(sub, rg, SNAPSHOTS, name)
}

/// `id` if it parses as a resource id of one of `types`; `what` names the option in errors.
fn typed_id(id: &str, types: &[&str], what: &str) -> Result<String> {
    let parsed =
        ResourceId::parse(id).with_context(|| format!("{what}: {id} is not a resource id"))?;
    match parsed.resource_type() {
        Some(t)
            if types
                .iter()
                .any(|want| t.key() == want.to_ascii_lowercase()) =>
        {
            Ok(id.to_string())
        }
        _ => bail!("{what}: {id} is not a {} id", types.join(" or ")),
    }
}

/// The full id of what `source` names; names are in resource group `rg`.
fn source_id(sub: &str, rg: &str, source: &Source) -> Result<String> {
    match source {
        Source { vm: Some(vm), .. } => resource_path(sub, rg, VIRTUAL_MACHINES, vm),
        Source {
            disk: Some(disk), ..
        } => resource_path(sub, rg, DISKS, disk),
        Source {
            source: Some(id), ..
        } => typed_id(id, &[VIRTUAL_MACHINES, DISKS], "--source"),
        _ => bail!("name what to snapshot: --vm NAME, --disk NAME or --source ID"),
    }
}

/// A snapshot's full id from its name (in resource group `rg`) or its id (`--source-snapshot`).
pub fn snapshot_id(sub: &str, rg: &str, name_or_id: &str) -> Result<String> {
    if name_or_id.starts_with('/') {
        typed_id(name_or_id, &[SNAPSHOTS], "--source-snapshot")
    } else {
        snapshot_path(sub, rg, name_or_id)
    }
}

fn create_body(source_id: &str) -> Value {
    json!({ "properties": { "creationData": {
        "createOption": "Copy",
        "sourceResourceId": source_id,
    } } })
}

fn prop<'a>(v: &'a Value, field: &str) -> &'a str {
    v.pointer(&format!("/properties/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Polls the snapshot until it has Succeeded, or fails with its reason.
fn wait_for(c: &Client, out: Format, path: &str, wait: Wait) -> Result<Value> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let v = c.call("GET", path, None)?;
        let state = prop(&v, "provisioningState");
        match state {
            "Succeeded" => return Ok(v),
            "Failed" => {
                print(out, &v, SNAPSHOT_COLS);
                bail!(
                    "the snapshot failed: {}",
                    match prop(&v, "failureReason") {
                        "" => "no reason given",
                        r => r,
                    }
                );
            }
            _ => {}
        }
        if out == Format::Table && state != last {
            eprintln!(
                "{:>4} s  {} {state}",
                started.elapsed().as_secs(),
                v["name"].as_str().unwrap_or("")
            );
            last = state.to_string();
        }
        if started.elapsed() > Duration::from_secs(wait.timeout) {
            bail!(
                "gave up after {} s with the snapshot {state}; it keeps going: see `strata snapshot show`",
                wait.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn run(c: &Client, out: Format, sub: &str, cmd: SnapshotCmd) -> Result<()> {
    match cmd {
        SnapshotCmd::Create {
            name,
            resource_group,
            source,
            wait,
        } => {
            let path = snapshot_path(sub, &resource_group, &name)?;
            let body = create_body(&source_id(sub, &resource_group, &source)?);
            // Create only: an existing snapshot of that name is an error, not an update.
            let v = c.call_with("PUT", &path, Some(&body), &[("If-None-Match", "*")])?;
            let v = if wait.no_wait {
                v
            } else {
                wait_for(c, out, &path, wait)?
            };
            print(out, &v, SNAPSHOT_COLS);
        }
        SnapshotCmd::List { resource_group } => {
            validate_name(&resource_group)?;
            let v = c.call(
                "GET",
                &format!(
                    "/subscriptions/{sub}/resourceGroups/{resource_group}/providers/{SNAPSHOTS}"
                ),
                None,
            )?;
            print(out, &v, SNAPSHOT_COLS);
        }
        SnapshotCmd::Show {
            name,
            resource_group,
        } => {
            let v = c.call("GET", &snapshot_path(sub, &resource_group, &name)?, None)?;
            print(out, &v, SNAPSHOT_COLS);
        }
        SnapshotCmd::Delete {
            name,
            resource_group,
            yes,
        } => {
            if !yes {
                bail!(
                    "deleting a snapshot removes its encrypted copy for good; add --yes to confirm"
                );
            }
            c.call("DELETE", &snapshot_path(sub, &resource_group, &name)?, None)?;
        }
        SnapshotCmd::Export {
            name,
            resource_group,
            out: file,
        } => export(c, out, &snapshot_path(sub, &resource_group, &name)?, &file)?,
    }
    Ok(())
}

fn export(c: &Client, out: Format, path: &str, file: &Path) -> Result<()> {
    refuse_existing(file)?;
    let snapshot = c.call("GET", path, None)?;
    let name = snapshot["name"].as_str().unwrap_or("");
    let state = prop(&snapshot, "provisioningState");
    if state != "Succeeded" {
        bail!(
            "snapshot {name} is {}; it can be exported once it has Succeeded (see `strata snapshot show`)",
            if state.is_empty() { "not ready" } else { state }
        );
    }
    let expect = Expect {
        len: snapshot
            .pointer("/properties/sizeBytes")
            .and_then(Value::as_u64),
        sha256: snapshot
            .pointer("/properties/sha256")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    let (declared, mut body) = c.download(&format!("{path}/export"))?;
    let expect = Expect {
        len: expect.len.or(declared),
        ..expect
    };
    if let (Some(want), Some(got)) = (expect.len, declared)
        && want != got
    {
        bail!("the control plane offers {got} bytes for snapshot {name}, whose size is {want}");
    }
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| Progress::new(expect.len));
    let saved = save(&mut body, &expect, file, progress)?;
    let note = format!(
        "{}: {} bytes, sha256 {}. It is a LUKS-encrypted qcow2: it opens only with snapshot \
         {name}'s key, which stays inside Strata (only its trusted hosts receive it).",
        file.display(),
        saved.bytes,
        saved.sha256
    );
    match out {
        Format::Json => print(
            out,
            &json!({
                "file": file,
                "snapshot": snapshot["id"],
                "sizeBytes": saved.bytes,
                "sha256": saved.sha256,
                "encryption": "LUKS",
                "note": note,
            }),
            &[],
        ),
        Format::Table => println!("{note}"),
    }
    Ok(())
}

/// What the downloaded bytes must match, when known.
struct Expect {
    len: Option<u64>,
    sha256: Option<String>,
}

#[derive(Debug)]
struct Saved {
    bytes: u64,
    sha256: String,
}

fn refuse_existing(file: &Path) -> Result<()> {
    if file.symlink_metadata().is_ok() {
        bail!(
            "{} exists; pass another --out (an export never replaces a file)",
            file.display()
        );
    }
    Ok(())
}

fn partial_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

/// Streams `body` into `file` by way of `FILE.partial` (created new, mode 0600), checks it
/// against `expect`, and publishes it under `file` without replacing anything. On any error
/// the partial file is removed.
fn save(
    body: &mut dyn Read,
    expect: &Expect,
    file: &Path,
    progress: Option<Progress>,
) -> Result<Saved> {
    use std::os::unix::fs::OpenOptionsExt as _;

    refuse_existing(file)?;
    let partial = partial_path(file);
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} exists (left by an interrupted export?); remove it and try again",
            partial.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot create {}", partial.display()));
        }
    };
    let written = copy_checked(body, &mut f, expect, progress)
        .and_then(|saved| {
            f.sync_all()
                .with_context(|| format!("cannot write {}", partial.display()))?;
            Ok(saved)
        })
        .and_then(|saved| publish(&partial, file).map(|()| saved));
    drop(f);
    match written {
        Ok(saved) => {
            // The rename (or link) is durable once the directory is.
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
                && let Ok(d) = std::fs::File::open(dir)
            {
                let _ = d.sync_all();
            }
            Ok(saved)
        }
        Err(e) => {
            if let Err(rm) = std::fs::remove_file(&partial)
                && rm.kind() != std::io::ErrorKind::NotFound
            {
                eprintln!("strata: could not remove {}: {rm}", partial.display());
            }
            Err(e)
        }
    }
}

fn copy_checked(
    body: &mut dyn Read,
    f: &mut std::fs::File,
    expect: &Expect,
    mut progress: Option<Progress>,
) -> Result<Saved> {
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes: u64 = 0;
    loop {
        let n = body
            .read(&mut buf)
            .context("the download broke off; nothing was kept")?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        if let Some(len) = expect.len
            && bytes > len
        {
            bail!("the control plane sent more than the snapshot's {len} bytes; nothing was kept");
        }
        hash.update(&buf[..n]);
        f.write_all(&buf[..n]).context("cannot write the export")?;
        if let Some(p) = progress.as_mut() {
            p.add(n as u64);
        }
    }
    if let Some(len) = expect.len
        && bytes != len
    {
        bail!("the download ended after {bytes} of {len} bytes; nothing was kept");
    }
    let sha256 = strata_attest::hex(hash.finish().as_ref());
    if let Some(want) = &expect.sha256
        && !want.eq_ignore_ascii_case(&sha256)
    {
        bail!(
            "the download's sha256 is {sha256}, the snapshot's is {want}; nothing was kept, try again"
        );
    }
    Ok(Saved { bytes, sha256 })
}

/// Gives `partial` the name `file`, refusing to replace a file that appeared meanwhile: a
/// hard link fails if `file` exists; where links are unsupported, a checked rename.
fn publish(partial: &Path, file: &Path) -> Result<()> {
    match std::fs::hard_link(partial, file) {
        Ok(()) => std::fs::remove_file(partial)
            .with_context(|| format!("cannot remove {}", partial.display())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => refuse_existing(file),
        Err(_) => {
            refuse_existing(file)?;
            std::fs::rename(partial, file).with_context(|| {
                format!("cannot rename {} to {}", partial.display(), file.display())
            })
        }
    }
}

/// A progress line on stderr at most every second (and at the end), as `image import` does.
struct Progress {
    total: Option<u64>,
    done: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(total: Option<u64>) -> Self {
        let now = Instant::now();
        Self {
            total,
            done: 0,
            started: now,
            last: now,
        }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        let finished = self.total == Some(self.done);
        if self.last.elapsed() < Duration::from_secs(1) && !finished {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs / f64::from(1 << 20);
        match self.total {
            Some(total) => eprintln!(
                "downloading {:>5.1}%  {} of {} MiB  {rate:.1} MiB/s",
                100.0 * self.done as f64 / total.max(1) as f64,
                self.done >> 20,
                total >> 20,
            ),
            None => eprintln!("downloading  {} MiB  {rate:.1} MiB/s", self.done >> 20),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser as _;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    fn parse(args: &str) -> Result<SnapshotCmd, String> {
        let argv = std::iter::once("strata").chain(args.split_whitespace());
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Snapshot(s),
                ..
            }) => Ok(s),
            Ok(_) => Err("another command".into()),
            Err(e) => Err(format!("{:?}", e.kind())),
        }
    }

    fn create_source(args: &str) -> Result<String, String> {
        match parse(args)? {
            SnapshotCmd::Create {
                source,
                resource_group,
                ..
            } => source_id(SUB, &resource_group, &source).map_err(|e| format!("{e:#}")),
            _ => Err("not create".into()),
        }
    }

    #[test]
    fn create_names_exactly_one_source() {
        let vm = format!(
            "/subscriptions/{SUB}/resourceGroups/web/providers/Strata.Compute/virtualMachines/web1"
        );
        let disk =
            format!("/subscriptions/{SUB}/resourceGroups/web/providers/Strata.Compute/disks/data1");
        assert_eq!(
            create_source("snapshot create -n s1 -g web --vm web1"),
            Ok(vm.clone())
        );
        assert_eq!(
            create_source("snapshot create -n s1 -g web --disk data1"),
            Ok(disk.clone())
        );
        assert_eq!(
            create_source(&format!("snapshot create -n s1 -g web --source {vm}")),
            Ok(vm)
        );
        assert_eq!(
            create_source(&format!("snapshot create -n s1 -g other --source {disk}")),
            Ok(disk)
        );
        assert_eq!(
            create_source("snapshot create -n s1 -g web"),
            Err("MissingRequiredArgument".into())
        );
        assert_eq!(
            create_source("snapshot create -n s1 -g web --vm a --disk b"),
            Err("ArgumentConflict".into())
        );
    }

    #[test]
    fn create_refuses_bad_sources() {
        let nic = format!(
            "/subscriptions/{SUB}/resourceGroups/web/providers/Strata.Network/networkInterfaces/n1"
        );
        let err =
            create_source(&format!("snapshot create -n s1 -g web --source {nic}")).unwrap_err();
        assert!(
            err.contains("Strata.Compute/virtualMachines or Strata.Compute/disks"),
            "{err}"
        );
        let err = create_source("snapshot create -n s1 -g web --source /nonsense").unwrap_err();
        assert!(err.contains("is not a resource id"), "{err}");
        assert!(create_source("snapshot create -n s1 -g web --vm ../x").is_err());
        assert!(create_source("snapshot create -n s1 -g bad/rg --disk d").is_err());
    }

    #[test]
    fn create_body_copies_the_source() {
        assert_eq!(
            create_body("/x"),
            json!({ "properties": { "creationData": { "createOption": "Copy", "sourceResourceId": "/x" } } })
        );
    }

    #[test]
    fn wait_and_delete_flags() {
        match parse("snapshot create -n s -g g --disk d --no-wait").unwrap() {
            SnapshotCmd::Create { wait, .. } => assert!(wait.no_wait),
            _ => panic!("not create"),
        }
        match parse("snapshot create -n s -g g --disk d").unwrap() {
            SnapshotCmd::Create { wait, .. } => assert!(!wait.no_wait && wait.timeout == 3600),
            _ => panic!("not create"),
        }
        match parse("snapshot delete -n s -g g").unwrap() {
            SnapshotCmd::Delete { yes, .. } => assert!(!yes),
            _ => panic!("not delete"),
        }
        assert_eq!(
            parse("snapshot export -n s -g g").err(),
            Some("MissingRequiredArgument".into())
        );
    }

    #[test]
    fn snapshot_ids_by_name_or_id() {
        let id = format!(
            "/subscriptions/{SUB}/resourceGroups/web/providers/Strata.Compute/snapshots/s1"
        );
        assert_eq!(snapshot_id(SUB, "web", "s1").unwrap(), id);
        assert_eq!(snapshot_id(SUB, "other", &id).unwrap(), id);
        let disk =
            format!("/subscriptions/{SUB}/resourceGroups/web/providers/Strata.Compute/disks/d1");
        let err = format!("{:#}", snapshot_id(SUB, "web", &disk).unwrap_err());
        assert!(
            err.contains("--source-snapshot") && err.contains("Strata.Compute/snapshots"),
            "{err}"
        );
        assert!(snapshot_id(SUB, "web", "a b").is_err());
    }

    fn sha256_hex(data: &[u8]) -> String {
        strata_attest::hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn save_writes_a_new_0600_file_and_no_partial() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s1.qcow2");
        let data = vec![7u8; 3 << 20];
        let expect = Expect {
            len: Some(data.len() as u64),
            sha256: Some(sha256_hex(&data).to_ascii_uppercase()),
        };
        let saved = save(&mut &data[..], &expect, &file, None).unwrap();
        assert_eq!(saved.bytes, data.len() as u64);
        assert_eq!(saved.sha256, sha256_hex(&data));
        assert_eq!(std::fs::read(&file).unwrap(), data);
        assert_eq!(mode(&file), 0o600);
        assert!(!partial_path(&file).exists());
    }

    #[test]
    fn save_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s1.qcow2");
        std::fs::write(&file, b"precious").unwrap();
        let expect = Expect {
            len: None,
            sha256: None,
        };
        let err = save(&mut &b"new"[..], &expect, &file, None).unwrap_err();
        assert!(format!("{err:#}").contains("exists"), "{err:#}");
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");
        assert!(!partial_path(&file).exists());
        // A file that appears while downloading is not replaced either.
        let late = dir.path().join("late.qcow2");
        std::fs::write(partial_path(&late), b"partial").unwrap();
        std::fs::write(&late, b"precious").unwrap();
        assert!(publish(&partial_path(&late), &late).is_err());
        assert_eq!(std::fs::read(&late).unwrap(), b"precious");
    }

    #[test]
    fn save_refuses_a_leftover_partial_without_touching_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s1.qcow2");
        std::fs::write(partial_path(&file), b"older").unwrap();
        let expect = Expect {
            len: None,
            sha256: None,
        };
        let err = save(&mut &b"new"[..], &expect, &file, None).unwrap_err();
        assert!(format!("{err:#}").contains("interrupted"), "{err:#}");
        assert_eq!(std::fs::read(partial_path(&file)).unwrap(), b"older");
        assert!(!file.exists());
    }

    /// Gives `ok` bytes, then fails.
    struct Broken {
        ok: usize,
    }

    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.ok == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "reset",
                ));
            }
            let n = self.ok.min(buf.len());
            buf[..n].fill(1);
            self.ok -= n;
            Ok(n)
        }
    }

    #[test]
    fn save_removes_the_partial_on_every_failure() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"encrypted bytes".to_vec();
        let cases: Vec<(&str, Box<dyn Read>, Expect)> = vec![
            (
                "broke off",
                Box::new(Broken { ok: 5 }),
                Expect {
                    len: None,
                    sha256: None,
                },
            ),
            (
                "ended after",
                Box::new(std::io::Cursor::new(data.clone())),
                Expect {
                    len: Some(data.len() as u64 + 1),
                    sha256: None,
                },
            ),
            (
                "more than",
                Box::new(std::io::Cursor::new(data.clone())),
                Expect {
                    len: Some(data.len() as u64 - 1),
                    sha256: None,
                },
            ),
            (
                "sha256",
                Box::new(std::io::Cursor::new(data.clone())),
                Expect {
                    len: Some(data.len() as u64),
                    sha256: Some(sha256_hex(b"other")),
                },
            ),
        ];
        for (i, (want, mut body, expect)) in cases.into_iter().enumerate() {
            let file = dir.path().join(format!("s{i}.qcow2"));
            let err = format!("{:#}", save(&mut body, &expect, &file, None).unwrap_err());
            assert!(err.contains(want), "case {want}: {err}");
            assert!(!file.exists(), "case {want}");
            assert!(!partial_path(&file).exists(), "case {want}");
        }
    }
}
