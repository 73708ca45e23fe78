//! Disk throughput, encrypted vs plain: the same I/O against a LUKS-encrypted qcow2 (what every
//! Strata VM disk is: `encrypt.format=luks`, AES-256-XTS, the driver's PBKDF time) and a plain
//! qcow2 of the same size, in the same run, interleaved.
//!
//! Both images are created, then filled completely (so every read decrypts real clusters and
//! every write overwrites allocated ones: unallocated clusters read as zeros without any
//! decryption). Each measurement is one `qemu-io` process doing sequential 1 MiB requests, 16
//! in flight (`aio_read`/`aio_write` in batches of 16, then `aio_flush`), over the whole image,
//! with the host page cache bypassed (`-t none`, O_DIRECT: the plain side runs at the storage's
//! speed) and with it (`-t writeback`, the driver's current `-drive` default; reads are timed
//! on a warm cache, so the plain side runs at memory speed: the worst case for the ratio). The
//! time of a `qemu-io` that only opens and closes the image (LUKS key-slot unlock included) is
//! measured in the same round and subtracted. `qemu-img bench` would be the natural tool, but it
//! has no `--object`, so it cannot be given the key.
//!
//! Plain and LUKS run with the glibc malloc settings the driver gives QEMU
//! ([`QEMU_MALLOC_TUNABLES`]); a third column runs LUKS with glibc's defaults, so what those
//! settings do is measured in the same run.
//!
//! The key goes to `qemu-io` on stdin (`secret,file=/dev/stdin`), never in argv.
//!
//! Run as `cargo bench -p strata-compute --bench disk` (needs `qemu-utils`).
//! `STRATA_DISK_BENCH_MIB` (default 1024) sets the image size, `STRATA_DISK_BENCH_ROUNDS`
//! (default 3) the rounds; each round runs every case once for each column, rotating which goes
//! first. Medians are reported. `STRATA_DISK_BENCH_QEMU_IO` names another `qemu-io` (default:
//! the one on `PATH`), e.g. one from a QEMU built with another crypto backend.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark code")]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_compute::qemu::QEMU_MALLOC_TUNABLES;

/// The LUKS passphrase of the encrypted image (a benchmark key, not a secret).
const KEY: &str = "5354524154412d6469736b2d62656e63682d6b65792d6e6f742d7365637265740a";
const REQUEST_MIB: u64 = 1;
const DEPTH: u64 = 16;

#[derive(Clone, Copy, PartialEq)]
enum Image {
    Plain,
    Encrypted,
    /// The encrypted image, `qemu-io` with glibc's default malloc settings.
    EncryptedGlibcDefault,
}

const IMAGES: [Image; 3] = [Image::Plain, Image::Encrypted, Image::EncryptedGlibcDefault];

struct Images {
    qemu_io: String,
    plain: PathBuf,
    encrypted: PathBuf,
}

/// `qemu-io` on `which`, with the key on stdin for the encrypted image.
fn qemu_io(images: &Images, which: Image, cache: &str, commands: &[String]) -> Duration {
    let mut cmd = Command::new(&images.qemu_io);
    cmd.args(["-t", cache]);
    if which == Image::EncryptedGlibcDefault {
        cmd.env_remove("GLIBC_TUNABLES");
    } else {
        cmd.env("GLIBC_TUNABLES", QEMU_MALLOC_TUNABLES);
    }
    match which {
        Image::Plain => {
            cmd.args(["-f", "qcow2"]);
            for c in commands {
                cmd.arg("-c").arg(c);
            }
            cmd.arg(&images.plain);
        }
        Image::Encrypted | Image::EncryptedGlibcDefault => {
            cmd.args(["--object", "secret,id=k,file=/dev/stdin", "--image-opts"]);
            for c in commands {
                cmd.arg("-c").arg(c);
            }
            cmd.arg(format!(
                "driver=qcow2,file.filename={},encrypt.key-secret=k",
                images.encrypted.display()
            ));
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("qemu-io (Debian package qemu-utils)");
    let mut stdin = child.stdin.take().unwrap();
    if which != Image::Plain {
        stdin.write_all(KEY.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "qemu-io failed: {stderr}"
    );
    took
}

/// Sequential `op` ("read" or "write") requests over the first `mib` MiB, `DEPTH` in flight.
fn workload(op: &str, mib: u64) -> Vec<String> {
    let mut commands = Vec::new();
    let pattern = if op == "write" { " -P 0x5a" } else { "" };
    for i in 0..mib / REQUEST_MIB {
        commands.push(format!(
            "aio_{op} -q{pattern} {}M {REQUEST_MIB}M",
            i * REQUEST_MIB
        ));
        if i % DEPTH == DEPTH - 1 {
            commands.push("aio_flush".to_owned());
        }
    }
    commands.push("aio_flush".to_owned());
    commands
}

fn create(images: &Images, mib: u64) {
    let size = format!("{mib}M");
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&images.plain)
        .arg(&size)
        .status()
        .unwrap();
    assert!(status.success());
    // The same options as the driver's overlays (qemu.rs), minus the backing file.
    let mut child = Command::new("qemu-img")
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

fn main() {
    let mib: u64 = std::env::var("STRATA_DISK_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let rounds: usize = std::env::var("STRATA_DISK_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let program = std::env::var("STRATA_DISK_BENCH_QEMU_IO").unwrap_or_else(|_| "qemu-io".into());
    // Under target/: a real filesystem (O_DIRECT works; /tmp may be tmpfs).
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    std::fs::create_dir_all(&target).unwrap();
    let dir = tempfile::tempdir_in(&target).unwrap();
    let images = Images {
        qemu_io: program,
        plain: dir.path().join("plain.qcow2"),
        encrypted: dir.path().join("luks.qcow2"),
    };
    println!(
        "disk throughput: {mib} MiB qcow2, plain vs LUKS (AES-256-XTS), {REQUEST_MIB} MiB \
         requests, {DEPTH} in flight, {rounds} rounds, {}; GLIBC_TUNABLES={QEMU_MALLOC_TUNABLES} \
         except in the last column",
        images.qemu_io
    );
    create(&images, mib);
    for which in [Image::Plain, Image::Encrypted] {
        let took = qemu_io(&images, which, "none", &workload("write", mib));
        let name = if which == Image::Plain {
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
    // [case][image] -> samples
    let mut samples: Vec<[Vec<Duration>; 3]> =
        cases.iter().map(|_| [vec![], vec![], vec![]]).collect();
    let mut opens: [Vec<Duration>; 3] = [vec![], vec![], vec![]];
    for round in 0..rounds {
        let mut order = IMAGES;
        order.rotate_left(round % IMAGES.len());
        for which in order {
            opens[which as usize].push(qemu_io(&images, which, "none", &["flush".to_owned()]));
        }
        for (i, (cache, op)) in cases.iter().enumerate() {
            let commands = workload(op, mib);
            for which in order {
                if *cache == "writeback" && *op == "read" {
                    // Warm the page cache (the O_DIRECT writes before emptied it): this case
                    // measures reads served from host memory.
                    qemu_io(&images, which, cache, &commands);
                }
                samples[i][which as usize].push(qemu_io(&images, which, cache, &commands));
            }
        }
    }
    let open = opens.map(median);
    println!(
        "  open + close only (subtracted): plain {:.0} ms, LUKS {:.0} ms",
        open[0].as_secs_f64() * 1e3,
        open[1].as_secs_f64() * 1e3
    );
    println!(
        "  {:<22} {:>12} {:>12} {:>8} {:>22} {:>8}",
        "case", "plain MiB/s", "LUKS MiB/s", "ratio", "LUKS glibc-default", "ratio"
    );
    for (i, (cache, op)) in cases.iter().enumerate() {
        let rate = |which: usize| {
            let t = median(samples[i][which].clone()).saturating_sub(open[which]);
            mib_per_s(mib, t)
        };
        let (plain, luks, luks_default) = (rate(0), rate(1), rate(2));
        println!(
            "  {:<22} {plain:>12.0} {luks:>12.0} {:>8.2} {luks_default:>22.0} {:>8.2}",
            format!("{op} (cache={cache})"),
            luks / plain,
            luks_default / plain
        );
    }
}
