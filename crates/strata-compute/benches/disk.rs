//! Disk throughput, encrypted vs plain: the same I/O against a LUKS-encrypted qcow2 (what every
//! Strata VM disk is: `encrypt.format=luks`, AES-256-XTS, the driver's PBKDF time) and a plain
//! qcow2 of the same size, in the same run, interleaved.
//!
//! The data is random (a file of random bytes, kept in the page cache): both images are filled
//! with it first, so every read decrypts real clusters and every write overwrites allocated
//! ones (unallocated clusters read as zeros without any decryption), and no layer can take a
//! shortcut for zeros (this host's virtual disk writes zeros faster than data, which flattered
//! the plain side by 20–40% when the writes carried zeros).
//!
//! Each measurement is one `qemu-img convert` with `-m 16 -W`: 16 coroutines with up to 2 MiB
//! each always in flight, in any order — `qemu-img bench`'s constant-depth model (`qemu-img
//! bench` itself has no `--object`, so it cannot be given the key), `-S 0` so nothing is
//! skipped as zeros. A read streams the image into QEMU's `null-co` driver (which discards it);
//! a write streams the random file (read from the page cache: the same copy on both sides, as
//! a guest's data is in its memory) into the image. The image's cache is bypassed
//! (`cache=none`, O_DIRECT: what the driver gives VM disks whenever their filesystem supports
//! it, so the plain side runs at the storage's speed) or not (`cache=writeback`, the driver's
//! fallback; reads are timed on a warm cache, so the plain side runs at memory speed).
//!
//! Throughput is differential: each case runs over the whole image and over its first quarter,
//! and the rate is the extra bytes over the extra time, so the fixed costs of a process (start,
//! LUKS key-slot unlock, first touch of its buffers, close) cancel out.
//!
//! Columns: plain and LUKS with the QEMU the driver runs (`strata_compute::binaries`: Strata's
//! build when installed), and LUKS with the distribution's `qemu-img` (`/usr/bin`, Debian's
//! nettle-based build) when it is a different program, to show what the build changes (its
//! ratio is against the first column's plain rate). Every `qemu-img` runs with the malloc
//! settings the driver gives QEMU ([`QEMU_MALLOC_TUNABLES`]).
//!
//! The key goes to `qemu-img` on stdin (`secret,file=/dev/stdin`), never in argv.
//!
//! Run as `cargo bench -p strata-compute --bench disk`. `STRATA_DISK_BENCH_MIB` (default 1024)
//! sets the image size, `STRATA_DISK_BENCH_ROUNDS` (default 3) the rounds; each round runs every
//! case once per column, rotating which goes first. Medians are reported.
//! `STRATA_DISK_BENCH_QEMU_IMG` names the `qemu-img` of the first two columns instead.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark code")]

use std::io::{Read as _, Write as _};
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

impl Column {
    fn label(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Encrypted => "LUKS",
            Self::EncryptedDistro => "LUKS (distro)",
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Read,
    Write,
}

struct Images {
    qemu_img: PathBuf,
    random: PathBuf,
    plain: PathBuf,
    encrypted: PathBuf,
    bytes: u64,
}

/// `--image-opts` text for the first `bytes` of `column`'s image, and whether it needs the key.
fn image_opts(images: &Images, column: Column, bytes: u64) -> (String, bool) {
    let (file, keyed) = match column {
        Column::Plain => (&images.plain, false),
        Column::Encrypted | Column::EncryptedDistro => (&images.encrypted, true),
    };
    let mut opts = format!(
        "driver=raw,size={bytes},file.driver=qcow2,file.file.filename={}",
        file.display()
    );
    if keyed {
        opts.push_str(",file.encrypt.key-secret=k");
    }
    (opts, keyed)
}

/// Streams the first `bytes` of `column`'s image into `null-co` (read) or of the random file
/// into the image (write), with the image's cache mode `cache`. Returns the wall time of the
/// whole process.
fn stream(images: &Images, column: Column, op: Op, cache: &str, bytes: u64) -> Duration {
    let program = if column == Column::EncryptedDistro {
        PathBuf::from(DISTRO_QEMU_IMG)
    } else {
        images.qemu_img.clone()
    };
    let (image, keyed) = image_opts(images, column, bytes);
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
    match op {
        Op::Read => {
            let null = format!("driver=null-co,size={bytes}");
            cmd.args(["-T", cache, "--image-opts", &image])
                .args(["--target-image-opts", &null]);
        }
        Op::Write => {
            let random = format!(
                "driver=raw,size={bytes},file.filename={}",
                images.random.display()
            );
            cmd.args(["-T", "writeback", "-t", cache, "--image-opts", &random])
                .args(["--target-image-opts", &image]);
        }
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

/// `bytes` of random data (from the kernel's generator) at `path`.
fn random_file(path: &Path, bytes: u64) {
    let mut src = std::fs::File::open("/dev/urandom").unwrap();
    let mut dst = std::fs::File::create(path).unwrap();
    let copied = std::io::copy(&mut (&mut src).take(bytes), &mut dst).unwrap();
    assert_eq!(copied, bytes);
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
    let mut columns = vec![Column::Plain, Column::Encrypted];
    let distro = std::fs::canonicalize(DISTRO_QEMU_IMG).ok();
    if distro.is_some() && strata_compute::binaries::locate(&qemu_img) != distro {
        columns.push(Column::EncryptedDistro);
    }
    // Under target/: a real filesystem (O_DIRECT works; /tmp may be tmpfs).
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    std::fs::create_dir_all(&target).unwrap();
    let dir = tempfile::tempdir_in(&target).unwrap();
    let images = Images {
        qemu_img,
        random: dir.path().join("random.raw"),
        plain: dir.path().join("plain.qcow2"),
        encrypted: dir.path().join("luks.qcow2"),
        bytes: mib << 20,
    };
    // Sizes are multiples of 4 MiB, so a quarter stays aligned for O_DIRECT.
    assert!(
        mib >= 16 && mib.is_multiple_of(16),
        "STRATA_DISK_BENCH_MIB: a multiple of 16, ≥ 16"
    );
    let small = images.bytes / 4;
    println!(
        "disk throughput: {mib} MiB qcow2 of random data, plain vs LUKS (AES-256-XTS), qemu-img \
         convert, {DEPTH} coroutines in flight, rate over (all − first quarter), {rounds} rounds; \
         {} = {}{}; GLIBC_TUNABLES={QEMU_MALLOC_TUNABLES}",
        images.qemu_img.display(),
        strata_compute::binaries::describe(),
        if columns.contains(&Column::EncryptedDistro) {
            format!("; last column {DISTRO_QEMU_IMG}")
        } else {
            String::new()
        }
    );
    random_file(&images.random, images.bytes);
    create(&images);
    for column in [Column::Plain, Column::Encrypted] {
        let took = stream(&images, column, Op::Write, "none", images.bytes);
        println!(
            "  fill {}: {:.0} MiB/s (allocating writes)",
            column.label(),
            mib as f64 / took.as_secs_f64()
        );
    }

    let cases = [
        ("none", Op::Read),
        ("none", Op::Write),
        ("writeback", Op::Read),
        ("writeback", Op::Write),
    ];
    // [case][column] -> (whole, quarter) samples
    let mut samples: Vec<Vec<(Vec<Duration>, Vec<Duration>)>> = cases
        .iter()
        .map(|_| columns.iter().map(|_| (Vec::new(), Vec::new())).collect())
        .collect();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..columns.len()).collect();
        order.rotate_left(round % columns.len());
        for (i, (cache, op)) in cases.iter().enumerate() {
            for &c in &order {
                if *cache == "writeback" && *op == Op::Read {
                    // Warm the page cache (the O_DIRECT writes before emptied it): this case
                    // measures reads served from host memory.
                    stream(&images, columns[c], *op, cache, images.bytes);
                }
                let whole = stream(&images, columns[c], *op, cache, images.bytes);
                let quarter = stream(&images, columns[c], *op, cache, small);
                samples[i][c].0.push(whole);
                samples[i][c].1.push(quarter);
            }
        }
    }
    let mut header = format!(
        "  {:<22} {:>12} {:>12} {:>8}",
        "case", "plain MiB/s", "LUKS MiB/s", "ratio"
    );
    if columns.len() > 2 {
        header.push_str(&format!(" {:>22} {:>8}", "LUKS, distro qemu-img", "ratio"));
    }
    println!("{header}");
    let extra_mib = (images.bytes - small) as f64 / f64::from(1 << 20);
    for (i, (cache, op)) in cases.iter().enumerate() {
        let rate = |c: usize| {
            let (whole, quarter) = &samples[i][c];
            let extra = median(whole.clone()).saturating_sub(median(quarter.clone()));
            extra_mib / extra.max(Duration::from_micros(1)).as_secs_f64()
        };
        let plain = rate(0);
        let luks = rate(1);
        let name = if *op == Op::Read { "read" } else { "write" };
        let mut line = format!(
            "  {:<22} {plain:>12.0} {luks:>12.0} {:>8.2}",
            format!("{name} (cache={cache})"),
            luks / plain
        );
        if columns.len() > 2 {
            let distro = rate(2);
            line.push_str(&format!(" {distro:>22.0} {:>8.2}", distro / plain));
        }
        println!("{line}");
    }
}
