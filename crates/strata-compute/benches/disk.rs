//! Disk throughput, encrypted vs plain: the same I/O against a LUKS-encrypted qcow2 (what every
//! Strata VM disk is: `encrypt.format=luks`, AES-256-XTS, the driver's PBKDF time) and a plain
//! qcow2 of the same size, in the same run, interleaved.
//!
//! Both images are created, then filled completely (so every read decrypts real clusters and
//! every write overwrites allocated ones: unallocated clusters read as zeros without any
//! decryption). Each measurement is one `qemu-img convert` streaming the whole image to or from
//! QEMU's `null-co` driver (which costs nothing: no copy, no fill), `-m 16 -W`: 16 coroutines
//! with up to 2 MiB each always in flight, in any order — `qemu-img bench`'s constant-depth
//! model (`qemu-img bench` itself has no `--object`, so it cannot be given the key), with
//! `-S 0` so no data is skipped as zeros. The cache bypassed (`cache=none`, O_DIRECT: what the
//! driver gives VM disks whenever their filesystem supports it, so the plain side runs at the
//! storage's speed) and not (`cache=writeback`, the driver's fallback; reads are timed on a warm
//! cache, so the plain side runs at memory speed). The time of the same command over one
//! sector (start, LUKS key-slot unlock, close) is measured in the same round and subtracted.
//!
//! Columns: plain and LUKS with the QEMU the driver runs (`strata_compute::binaries`: Strata's
//! build when installed), and LUKS with the distribution's `qemu-img` (`/usr/bin`, Debian's
//! nettle-based build) when it is a different program, to show what the build changes. Every
//! `qemu-img` runs with the malloc settings the driver gives QEMU ([`QEMU_MALLOC_TUNABLES`]).
//!
//! The key goes to `qemu-img` on stdin (`secret,file=/dev/stdin`), never in argv.
//!
//! Run as `cargo bench -p strata-compute --bench disk`. `STRATA_DISK_BENCH_MIB` (default 1024)
//! sets the image size, `STRATA_DISK_BENCH_ROUNDS` (default 3) the rounds; each round runs every
//! case once per column, rotating which goes first. Medians are reported.
//! `STRATA_DISK_BENCH_QEMU_IMG` names the `qemu-img` of the first two columns instead.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark code")]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_compute::qemu::QEMU_MALLOC_TUNABLES;

/// The LUKS passphrase of the encrypted image (a benchmark key, not a secret).
const KEY: &str = "5354524154412d6469736b2d62656e63682d6b65792d6e6f742d7365637265740a";
/// Coroutines in flight (`qemu-img convert -m`, at most 16).
const DEPTH: u32 = 16;
/// The distribution's image tool, compared against when it is not the one measured.
const DISTRO_QEMU_IMG: &str = "/usr/bin/qemu-img";

#[derive(Clone, Copy, PartialEq)]
enum Column {
    Plain,
    Encrypted,
    /// The encrypted image through the distribution's `qemu-img`.
    EncryptedDistro,
}

struct Images {
    qemu_img: PathBuf,
    plain: PathBuf,
    encrypted: PathBuf,
    bytes: u64,
}

/// `--image-opts` text of `column`'s image, and whether it needs the key.
fn image_opts(images: &Images, column: Column) -> (String, bool) {
    match column {
        Column::Plain => (
            format!("driver=qcow2,file.filename={}", images.plain.display()),
            false,
        ),
        Column::Encrypted | Column::EncryptedDistro => (
            format!(
                "driver=qcow2,file.filename={},encrypt.key-secret=k",
                images.encrypted.display()
            ),
            true,
        ),
    }
}

/// Streams `bytes` between `column`'s image and `null-co`: "read" from the image, "write" to
/// it, with the image's cache mode `cache`. Returns the wall time of the whole process.
fn stream(images: &Images, column: Column, op: &str, cache: &str, bytes: u64) -> Duration {
    let program = if column == Column::EncryptedDistro {
        PathBuf::from(DISTRO_QEMU_IMG)
    } else {
        images.qemu_img.clone()
    };
    let (image, keyed) = image_opts(images, column);
    let null = format!("driver=null-co,size={bytes}");
    let mut cmd = Command::new(&program);
    cmd.env("GLIBC_TUNABLES", QEMU_MALLOC_TUNABLES).args([
        "convert",
        "-n",
        "-W",
        "-S",
        "0",
        "-m",
        &DEPTH.to_string(),
    ]);
    if keyed {
        cmd.args(["--object", "secret,id=k,file=/dev/stdin"]);
    }
    if op == "read" {
        cmd.args([
            "-T",
            cache,
            "--image-opts",
            &image,
            "--target-image-opts",
            &null,
        ]);
    } else {
        cmd.args([
            "-t",
            cache,
            "--image-opts",
            &null,
            "--target-image-opts",
            &image,
        ]);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("qemu-img");
    let mut stdin = child.stdin.take().unwrap();
    if keyed {
        stdin.write_all(KEY.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "{} failed: {stderr}",
        program.display()
    );
    took
}

fn create(images: &Images) {
    let size = images.bytes.to_string();
    let status = Command::new(&images.qemu_img)
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&images.plain)
        .arg(&size)
        .status()
        .unwrap();
    assert!(status.success());
    // The same options as the driver's overlays (qemu.rs), minus the backing file.
    let mut child = Command::new(&images.qemu_img)
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "--object",
            "secret,id=k,file=/dev/stdin",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=k,encrypt.iter-time=10",
        ])
        .arg(&images.encrypted)
        .arg(&size)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(KEY.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mib_per_s(mib: u64, d: Duration) -> f64 {
    mib as f64 / d.as_secs_f64()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let mib: u64 = env_or("STRATA_DISK_BENCH_MIB", 1024);
    let rounds: usize = env_or("STRATA_DISK_BENCH_ROUNDS", 3);
    let qemu_img = std::env::var_os("STRATA_DISK_BENCH_QEMU_IMG")
        .map_or_else(strata_compute::binaries::qemu_img, PathBuf::from);
    let distro = Path::new(DISTRO_QEMU_IMG);
    let mut columns = vec![Column::Plain, Column::Encrypted];
    if distro.is_file() && which(&qemu_img) != std::fs::canonicalize(distro).ok() {
        columns.push(Column::EncryptedDistro);
    }
    // Under target/: a real filesystem (O_DIRECT works; /tmp may be tmpfs).
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    std::fs::create_dir_all(&target).unwrap();
    let dir = tempfile::tempdir_in(&target).unwrap();
    let images = Images {
        qemu_img,
        plain: dir.path().join("plain.qcow2"),
        encrypted: dir.path().join("luks.qcow2"),
        bytes: mib << 20,
    };
    println!(
        "disk throughput: {mib} MiB qcow2, plain vs LUKS (AES-256-XTS), qemu-img convert to/from \
         null-co, {DEPTH} coroutines in flight, {rounds} rounds; {} ({}){}; \
         GLIBC_TUNABLES={QEMU_MALLOC_TUNABLES}",
        images.qemu_img.display(),
        strata_compute::binaries::describe(),
        if columns.contains(&Column::EncryptedDistro) {
            format!("; last column {DISTRO_QEMU_IMG}")
        } else {
            String::new()
        }
    );
    create(&images);
    for column in [Column::Plain, Column::Encrypted] {
        let took = stream(&images, column, "write", "none", images.bytes);
        let name = if column == Column::Plain {
            "plain"
        } else {
            "LUKS"
        };
        println!(
            "  fill {name}: {:.0} MiB/s (allocating writes)",
            mib_per_s(mib, took)
        );
    }

    let cases = [
        ("none", "read"),
        ("none", "write"),
        ("writeback", "read"),
        ("writeback", "write"),
    ];
    // [case][column] -> samples
    let mut samples: Vec<Vec<Vec<Duration>>> = cases
        .iter()
        .map(|_| columns.iter().map(|_| Vec::new()).collect())
        .collect();
    let mut opens: Vec<Vec<Duration>> = columns.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..columns.len()).collect();
        order.rotate_left(round % columns.len());
        for &c in &order {
            // Start, unlock, one sector, close.
            opens[c].push(stream(&images, columns[c], "write", "none", 512));
        }
        for (i, (cache, op)) in cases.iter().enumerate() {
            for &c in &order {
                if *cache == "writeback" && *op == "read" {
                    // Warm the page cache (the O_DIRECT writes before emptied it): this case
                    // measures reads served from host memory.
                    stream(&images, columns[c], op, cache, images.bytes);
                }
                samples[i][c].push(stream(&images, columns[c], op, cache, images.bytes));
            }
        }
    }
    let open: Vec<Duration> = opens.into_iter().map(median).collect();
    println!(
        "  start + open + close (subtracted): {}",
        columns
            .iter()
            .zip(&open)
            .map(|(c, d)| format!("{} {:.0} ms", label(*c), d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut header = format!(
        "  {:<22} {:>12} {:>12} {:>8}",
        "case", "plain MiB/s", "LUKS MiB/s", "ratio"
    );
    if columns.len() > 2 {
        header.push_str(&format!(" {:>22} {:>8}", "LUKS, distro qemu-img", "ratio"));
    }
    println!("{header}");
    for (i, (cache, op)) in cases.iter().enumerate() {
        let rate = |c: usize| {
            let t = median(samples[i][c].clone()).saturating_sub(open[c]);
            mib_per_s(mib, t)
        };
        let plain = rate(0);
        let luks = rate(1);
        let mut line = format!(
            "  {:<22} {plain:>12.0} {luks:>12.0} {:>8.2}",
            format!("{op} (cache={cache})"),
            luks / plain
        );
        if columns.len() > 2 {
            let distro = rate(2);
            line.push_str(&format!(" {distro:>22.0} {:>8.2}", distro / plain));
        }
        println!("{line}");
    }
}

fn label(c: Column) -> &'static str {
    match c {
        Column::Plain => "plain",
        Column::Encrypted => "LUKS",
        Column::EncryptedDistro => "LUKS (distro)",
    }
}

/// `program` as PATH resolves it (a bare name), or itself.
fn which(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return std::fs::canonicalize(program).ok();
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
}
