//! VM create → guest ready, with trusted launch: Strata's `QemuDriver` against a bare
//! `qemu-system-x86_64` command booting the same tiny image with the same firmware and a swtpm
//! vTPM, interleaved in one run.
//!
//! * **bare QEMU**: a qcow2 overlay on the image, a copy of the snakeoil variables, `swtpm
//!   socket` started by hand, then QEMU (`q35,smm=on`, secure-boot OVMF, `tpm-crb`, the same
//!   accelerator) until the guest prints its ready marker on the serial console. As root, no
//!   sandbox, no vTPM manufacturing, no state encryption.
//! * **Strata**: `create` (overlay, variables, per-VM uid, vTPM manufactured and encrypted)
//!   then `start` (cgroup, swtpm and QEMU as the VM's uid, QEMU's seccomp filter, QMP) until
//!   `Running`, which also waits for the ready marker.
//!
//! Run with `cargo bench -p strata-compute --bench boot` as root, with the packages of
//! `strata_compute::COMPUTE_PACKAGES` installed. `STRATA_BOOT_BENCH_ROUNDS` (default 3) sets the
//! rounds; each round boots once each way, alternating which goes first.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark code")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_compute::qemu::{
    Accel, OVMF_CODE_SECBOOT, OVMF_VARS_SNAKEOIL, QemuConfig, QemuDriver, SNAKEOIL_CERT,
};
use strata_compute::{DiskKey, Hypervisor, READY_MARKER, VmId, VmSpec, VmState, VtpmKey};

fn cache_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/strata-compute-cache")
}

/// The tiny image, built once and cached (shared with the integration tests).
fn tiny_image() -> PathBuf {
    let root = cache_root();
    fs::create_dir_all(&root).unwrap();
    let key = root.join("snakeoil.key");
    if !key.exists() {
        strata_compute::image::decrypt_snakeoil_key(&key).unwrap();
    }
    strata_compute::image::build_tiny(&root.join("tiny"), &key, Path::new(SNAKEOIL_CERT))
        .unwrap()
        .disk
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The bare command line: what a person would type to boot the image with trusted launch.
fn bare_boot(image: &Path, dir: &Path, accel: Accel) -> Duration {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir.join("tpm")).unwrap();
    let started = Instant::now();
    run(Command::new(strata_compute::binaries::qemu_img())
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(image)
        .arg(dir.join("disk.qcow2")));
    fs::copy(OVMF_VARS_SNAKEOIL, dir.join("vars.fd")).unwrap();
    let sock = dir.join("swtpm.sock");
    let mut swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", dir.join("tpm").display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", sock.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !sock.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let serial = dir.join("serial.log");
    let accel = match accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg,tb-size=128",
    };
    let mut qemu = Command::new(strata_compute::binaries::qemu_system())
        .args([
            "-machine",
            "q35,smm=on",
            "-accel",
            accel,
            "-m",
            "512",
            "-smp",
            "1",
        ])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-global", "driver=cfi.pflash01,property=secure,value=on"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,file={OVMF_CODE_SECBOOT},readonly=on"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            dir.join("vars.fd").display()
        ))
        .arg("-chardev")
        .arg(format!("socket,id=chrtpm,path={}", sock.display()))
        .args([
            "-tpmdev",
            "emulator,id=tpm0,chardev=chrtpm",
            "-device",
            "tpm-crb,tpmdev=tpm0",
        ])
        .arg("-drive")
        .arg(format!(
            "if=none,id=disk0,format=qcow2,file={}",
            dir.join("disk.qcow2").display()
        ))
        .args(["-device", "virtio-blk-pci,drive=disk0,bootindex=1"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        if fs::read_to_string(&serial)
            .is_ok_and(|s| s.lines().any(|l| l.trim_end() == READY_MARKER))
        {
            break;
        }
        assert!(
            qemu.try_wait().unwrap().is_none(),
            "bare QEMU exited before the guest was ready"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "bare boot timed out"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let _ = qemu.kill();
    let _ = qemu.wait();
    let _ = swtpm.kill();
    let _ = swtpm.wait();
    took
}

fn strata_boot(hv: &QemuDriver, image: &Path, round: usize) -> Duration {
    let id = VmId::new(&format!("bench-{round}")).unwrap();
    let started = Instant::now();
    hv.create(VmSpec::trusted_launch(
        id.clone(),
        image.to_path_buf(),
        VtpmKey::generate().unwrap(),
        DiskKey::generate().unwrap(),
    ))
    .unwrap();
    let state = hv.start(&id).unwrap();
    let took = started.elapsed();
    assert_eq!(
        state,
        VmState::Running,
        "{}",
        hv.serial_log(&id).unwrap_or_default()
    );
    hv.delete(&id).unwrap();
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("STRATA_BOOT_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let image = tiny_image();
    let work = cache_root().join("boot-bench");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&work, fs::Permissions::from_mode(0o755)).unwrap();
    let config = QemuConfig::snakeoil(work.join("vms")).unwrap();
    let accel = config.accel;
    let hv = QemuDriver::new(config).unwrap();
    println!("accelerator: {accel:?}; {rounds} rounds, alternating order");
    let (mut bare, mut strata) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_bare in order {
            let took = if is_bare {
                bare_boot(&image, &work.join("bare"), accel)
            } else {
                strata_boot(&hv, &image, round)
            };
            println!(
                "round {round}: {:<6} {:.2} s",
                if is_bare { "bare" } else { "strata" },
                took.as_secs_f64()
            );
            if is_bare {
                bare.push(took)
            } else {
                strata.push(took)
            }
        }
    }
    let (b, s) = (median(bare), median(strata));
    let ratio = s.as_secs_f64() / b.as_secs_f64();
    println!(
        "median create→ready: bare QEMU {:.2} s, Strata {:.2} s; overhead ratio {ratio:.3} (target ≤ 1.3: {})",
        b.as_secs_f64(),
        s.as_secs_f64(),
        if ratio <= 1.3 { "met" } else { "MISSED" }
    );
}
