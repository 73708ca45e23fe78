//! The VM loop against a fake control plane: scripted assignment lists in, status reports
//! out, VMs on the simulated hypervisor (and one real QEMU boot).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use strata_agent::images::{ImageStore, SigningKey};
use strata_agent::vms::{
    Assignments, ControlPlane, PowerState, VmError, VmHost, VmHostConfig, VmStatus,
};
use strata_compute::sim::SimDriver;
use strata_compute::{Hypervisor, VmId, VmState};

/// The control plane's half of the contract, scripted: the test sets the assignments
/// document; every report is kept.
#[derive(Default)]
struct FakeControlPlane {
    assignments: Mutex<Option<Value>>,
    reports: Mutex<Vec<Vec<VmStatus>>>,
    /// Imported images it serves: SHA-256 → file.
    images: Arc<FileImages>,
    /// Snapshots the host sent: (token, the file's first bytes, its length).
    snapshots: Arc<Snapshots>,
}

#[derive(Default)]
struct Snapshots(Mutex<Vec<(String, Vec<u8>, u64)>>, Mutex<Vec<String>>);

impl strata_agent::vms::SnapshotSink for Snapshots {
    fn taken(&self, token: &str, file: &Path) -> Result<(), String> {
        let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
        let head = bytes[..bytes.len().min(4096)].to_vec();
        self.0
            .lock()
            .unwrap()
            .push((token.to_owned(), head, bytes.len() as u64));
        Ok(())
    }
    fn failed(&self, token: &str, reason: &str) -> Result<(), String> {
        self.1.lock().unwrap().push(format!("{token}: {reason}"));
        Ok(())
    }
}

/// Image content served from local files, as the control plane serves it by digest.
#[derive(Default)]
struct FileImages(Mutex<std::collections::BTreeMap<String, PathBuf>>);

impl strata_agent::images::ImageFetcher for FileImages {
    fn fetch(&self, sha256: &str, _size: u64, out: &mut dyn std::io::Write) -> Result<(), String> {
        let path = self.0.lock().unwrap().get(sha256).cloned().ok_or("404")?;
        std::io::copy(&mut std::fs::File::open(path).unwrap(), out).map_err(|e| e.to_string())?;
        Ok(())
    }
}

impl FakeControlPlane {
    fn set(&self, state: &str, vms: Value) {
        *self.assignments.lock().unwrap() = Some(json!({
            "host": "h1", "state": state, "attestNow": false, "virtualMachines": vms,
        }));
    }

    fn last_report(&self) -> Vec<VmStatus> {
        self.reports
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }

    fn report_count(&self) -> usize {
        self.reports.lock().unwrap().len()
    }

    /// The latest reported status of `arm_id`.
    fn status(&self, arm_id: &str) -> Option<VmStatus> {
        self.last_report().into_iter().find(|s| s.id == arm_id)
    }

    /// Every power state reported for `arm_id`, repeats collapsed.
    fn history(&self, arm_id: &str) -> Vec<PowerState> {
        let mut out: Vec<PowerState> = Vec::new();
        for r in self.reports.lock().unwrap().iter() {
            if let Some(s) = r.iter().find(|s| s.id == arm_id)
                && out.last() != Some(&s.power_state)
            {
                out.push(s.power_state);
            }
        }
        out
    }
}

impl ControlPlane for FakeControlPlane {
    fn assignments(&self) -> Result<Option<Assignments>, VmError> {
        let doc = self.assignments.lock().unwrap().clone();
        doc.map(|d| Assignments::parse(d.to_string().as_bytes()))
            .transpose()
    }

    fn report(&self, vms: &[VmStatus]) -> Result<(), VmError> {
        self.reports.lock().unwrap().push(vms.to_vec());
        Ok(())
    }

    fn image_fetcher(&self) -> Option<Arc<dyn strata_agent::images::ImageFetcher>> {
        Some(self.images.clone())
    }

    fn snapshot_sink(&self) -> Option<Arc<dyn strata_agent::vms::SnapshotSink>> {
        Some(self.snapshots.clone())
    }
}

fn arm(name: &str) -> String {
    format!("/subscriptions/s1/resourceGroups/rg/providers/Strata.Compute/virtualMachines/{name}")
}

fn key() -> String {
    base64::engine::general_purpose::STANDARD.encode([0x5a; 32])
}

fn vm(name: &str, generation: u64, desired: &str, image: &str) -> Value {
    json!({
        "id": arm(name), "vmId": format!("vm-{name}"), "generation": generation,
        "desiredState": desired, "vcpus": 1, "memoryMib": 512, "image": image,
        "secureBoot": true, "vTpm": true, "vTpmKey": key(),
        "diskKey": key(),
    })
}

fn id(name: &str) -> VmId {
    VmId::new(&format!("vm-{name}")).unwrap()
}

/// An image directory with fake `tiny` and `tampered` images (the simulator reads no disk;
/// it fails secure boot for image paths containing "tampered").
fn fake_images(dir: &Path) -> Arc<ImageStore> {
    for name in ["tiny", "tampered"] {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("disk.qcow2"), b"qcow").unwrap();
        std::fs::write(dir.join(name).join("inputs.txt"), b"kernel fake 1\n").unwrap();
    }
    Arc::new(ImageStore::new(dir.to_path_buf(), SigningKey::Snakeoil))
}

/// Ticks until the workers are idle after a tick that started nothing new.
fn settle(host: &VmHost, cp: &FakeControlPlane) {
    for _ in 0..10 {
        host.tick(cp);
        assert!(
            host.wait_idle(Duration::from_secs(10)),
            "VM work did not finish"
        );
    }
}

fn sim_host(images: &Path, vm_dir: Option<PathBuf>) -> (Arc<SimDriver>, VmHost) {
    let sim = Arc::new(SimDriver::new());
    let host = VmHost::new(
        sim.clone(),
        fake_images(images),
        VmHostConfig {
            poll_every: Duration::from_millis(50),
            report_every: Duration::from_secs(3600),
            vm_dir,
        },
    );
    (sim, host)
}

#[test]
fn scripted_assignments_drive_the_simulated_hypervisor() {
    let tmp = tempfile::tempdir().unwrap();
    let (sim, host) = sim_host(tmp.path(), None);
    let cp = FakeControlPlane::default();

    // Create + start, create only, a missing image, a tampered image.
    cp.set(
        "Trusted",
        json!([
            vm("a", 1, "Running", "tiny"),
            vm("b", 1, "Stopped", "tiny"),
            vm("c", 1, "Running", "nosuch"),
            vm("d", 1, "Running", "tampered"),
        ]),
    );
    settle(&host, &cp);
    assert_eq!(sim.state(&id("a")).unwrap(), VmState::Running);
    assert_eq!(sim.state(&id("b")).unwrap(), VmState::Created);
    assert!(sim.state(&id("c")).is_err(), "no VM without its image");
    assert!(matches!(
        sim.state(&id("d")).unwrap(),
        VmState::Failed { .. }
    ));
    let a = cp.status(&arm("a")).unwrap();
    assert_eq!(
        (a.power_state, a.generation, a.reason),
        (PowerState::Running, 1, None)
    );
    assert_eq!(cp.history(&arm("a")).last(), Some(&PowerState::Running));
    assert_eq!(
        cp.status(&arm("b")).unwrap().power_state,
        PowerState::Stopped
    );
    let c = cp.status(&arm("c")).unwrap();
    assert_eq!(c.power_state, PowerState::Failed);
    assert_eq!(c.reason.as_deref(), Some("image nosuch not found on host"));
    let d = cp.status(&arm("d")).unwrap();
    assert_eq!(d.power_state, PowerState::Failed);
    assert_eq!(d.reason.as_deref(), Some("secure boot violation"));
    assert!(d.detail.unwrap().contains("simulated"));

    // A failed VM is not retried while its generation stands (no boot loop), and nothing
    // is reported when nothing changed.
    let reports = cp.report_count();
    settle(&host, &cp);
    assert_eq!(cp.report_count(), reports);
    assert!(matches!(
        sim.state(&id("d")).unwrap(),
        VmState::Failed { .. }
    ));

    // Stop.
    cp.set(
        "Trusted",
        json!([vm("a", 2, "Stopped", "tiny"), vm("b", 1, "Stopped", "tiny")]),
    );
    settle(&host, &cp);
    assert_eq!(sim.state(&id("a")).unwrap(), VmState::Stopped);
    let a = cp.status(&arm("a")).unwrap();
    assert_eq!((a.power_state, a.generation), (PowerState::Stopped, 2));
    // c and d left the list: d deleted from the driver, both reported Deleted once.
    assert!(sim.state(&id("d")).is_err());
    assert!(cp.history(&arm("d")).ends_with(&[PowerState::Deleted]));
    assert!(cp.history(&arm("c")).ends_with(&[PowerState::Deleted]));
    assert!(
        !host.statuses().iter().any(|s| s.id == arm("d")),
        "Deleted is reported once, then forgotten"
    );

    // Start again.
    cp.set(
        "Trusted",
        json!([vm("a", 3, "Running", "tiny"), vm("b", 1, "Stopped", "tiny")]),
    );
    settle(&host, &cp);
    assert_eq!(sim.state(&id("a")).unwrap(), VmState::Running);
    assert!(
        cp.history(&arm("a")).ends_with(&[
            PowerState::Stopped,
            PowerState::Starting,
            PowerState::Running
        ]) || cp
            .history(&arm("a"))
            .ends_with(&[PowerState::Stopped, PowerState::Running]),
        "{:?}",
        cp.history(&arm("a"))
    );

    // The guest powers itself off: reported Stopped with the reason, not started again
    // until the generation moves.
    sim.stop(&id("a")).unwrap();
    settle(&host, &cp);
    assert_eq!(sim.state(&id("a")).unwrap(), VmState::Stopped);
    let a = cp.status(&arm("a")).unwrap();
    assert_eq!(a.power_state, PowerState::Stopped);
    assert_eq!(a.reason.as_deref(), Some("the guest shut itself down"));
    cp.set(
        "Trusted",
        json!([vm("a", 4, "Running", "tiny"), vm("b", 1, "Stopped", "tiny")]),
    );
    settle(&host, &cp);
    assert_eq!(sim.state(&id("a")).unwrap(), VmState::Running);

    // The host loses trust: the control plane withholds the list; nothing is deleted.
    cp.set("Untrusted", json!([]));
    settle(&host, &cp);
    assert_eq!(sim.state(&id("a")).unwrap(), VmState::Running);
    assert_eq!(sim.state(&id("b")).unwrap(), VmState::Created);
    assert_eq!(host.statuses().len(), 2);

    // Trusted again, a removed from the list: stopped and deleted, reported Deleted once.
    cp.set("Trusted", json!([vm("b", 1, "Stopped", "tiny")]));
    settle(&host, &cp);
    assert!(sim.state(&id("a")).is_err());
    assert_eq!(sim.len(), 1);
    assert!(cp.history(&arm("a")).ends_with(&[PowerState::Deleted]));
    assert_eq!(
        host.statuses()
            .iter()
            .map(|s| s.id.clone())
            .collect::<Vec<_>>(),
        [arm("b")]
    );
    // Reports carry no key material.
    let all = serde_json::to_string(&*cp.reports.lock().unwrap()).unwrap();
    assert!(!all.contains(&key()));
}

#[test]
fn a_bad_entry_is_reported_and_its_vm_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (sim, host) = sim_host(tmp.path(), None);
    let cp = FakeControlPlane::default();
    cp.set("Trusted", json!([vm("a", 1, "Running", "tiny")]));
    settle(&host, &cp);
    assert_eq!(sim.state(&id("a")).unwrap(), VmState::Running);
    // The same VM, now with a vTPM key of the wrong length.
    let mut bad = vm("a", 2, "Running", "tiny");
    bad["vTpmKey"] = json!("AAAA");
    cp.set("Trusted", json!([bad]));
    settle(&host, &cp);
    assert_eq!(sim.state(&id("a")).unwrap(), VmState::Running, "kept");
    // A bad entry for a VM that is not here is reported Failed with the reason.
    let mut other = vm("z", 1, "Running", "../../etc");
    other["vTpm"] = json!(false);
    cp.set("Trusted", json!([vm("a", 2, "Running", "tiny"), other]));
    settle(&host, &cp);
    let z = cp.status(&arm("z")).unwrap();
    assert_eq!(z.power_state, PowerState::Failed);
    assert!(z.detail.unwrap().contains("invalid image name"));
}

#[test]
fn files_of_an_earlier_run_are_reported_then_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let vm_dir = tmp.path().join("vms");
    std::fs::create_dir_all(vm_dir.join("vm-old")).unwrap();
    std::fs::write(
        vm_dir.join("vm-old/serial.log"),
        "BdsDxe: loading Boot0001\n",
    )
    .unwrap();
    let (sim, host) = sim_host(&tmp.path().join("images"), Some(vm_dir.clone()));
    let cp = FakeControlPlane::default();
    // Still assigned: kept, reported Failed with the reason and its console.
    cp.set("Trusted", json!([vm("old", 1, "Running", "tiny")]));
    settle(&host, &cp);
    let old = cp.status(&arm("old")).unwrap();
    assert_eq!(old.power_state, PowerState::Failed);
    assert!(old.reason.unwrap().contains("earlier agent run"));
    assert!(old.console_tail.contains("Boot0001"));
    assert!(vm_dir.join("vm-old").exists());
    assert!(sim.is_empty());
    // No longer assigned: its files are removed.
    cp.set("Trusted", json!([]));
    settle(&host, &cp);
    assert!(!vm_dir.join("vm-old").exists());
    assert!(cp.history(&arm("old")).ends_with(&[PowerState::Deleted]));
}

#[test]
fn the_loop_reports_on_change_and_when_due() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = Arc::new(SimDriver::new());
    let host = VmHost::new(
        sim.clone(),
        fake_images(tmp.path()),
        VmHostConfig {
            poll_every: Duration::from_millis(20),
            report_every: Duration::from_millis(200),
            vm_dir: None,
        },
    );
    let cp = Arc::new(FakeControlPlane::default());
    cp.set("Trusted", json!([vm("a", 1, "Running", "tiny")]));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let runner = {
        let (cp, stop) = (cp.clone(), stop.clone());
        std::thread::spawn(move || host.run(&*cp, &stop))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while cp.status(&arm("a")).map(|s| s.power_state) != Some(PowerState::Running) {
        assert!(Instant::now() < deadline, "{:?}", cp.last_report());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Unchanged, yet reported again within report_every (so crashes and liveness show).
    let n = cp.report_count();
    std::thread::sleep(Duration::from_millis(700));
    assert!(cp.report_count() >= n + 2, "{} -> {}", n, cp.report_count());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runner.join().unwrap();
}

/// One real trusted-launch boot through the VM loop: QEMU + OVMF secure boot (snakeoil) + an
/// encrypted per-VM vTPM, the tiny image built (or reused) by the agent's image store.
#[test]
fn qemu_boot_through_the_vm_loop() {
    use std::os::unix::fs::PermissionsExt as _;
    let cache = crate::support::compute_cache();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let images = {
        // The compute tests build the same image in the same place; share their lock.
        let lock = std::fs::File::create(cache.join("build.lock")).unwrap();
        lock.lock().unwrap();
        let store = ImageStore::new(cache.clone(), SigningKey::Snakeoil);
        let disk = store
            .resolve("tiny", &mut |l| eprintln!("tiny image: {l}"))
            .unwrap();
        assert!(disk.starts_with(&cache));
        lock.unlock().unwrap();
        Arc::new(store)
    };
    let mut config = strata_compute::qemu::QemuConfig::snakeoil(tmp.path().join("vms")).unwrap();
    // A uid block of its own, far from the compute tests' blocks.
    config.sandbox.uid_base = strata_compute::sandbox::DEFAULT_UID_BASE + 16 * 500;
    config.sandbox.uid_count = 16;
    // As a host agent runs it: its VMs outlive it, the next one adopts them.
    config.keep_running_on_drop = true;
    let host_config = VmHostConfig {
        poll_every: Duration::from_millis(200),
        report_every: Duration::from_secs(10),
        vm_dir: Some(config.root.clone()),
    };
    let driver = strata_agent::drivers::Driver::from_qemu(config.clone()).unwrap();
    let host = VmHost::new(
        driver.hypervisor.clone(),
        images.clone(),
        host_config.clone(),
    );
    let cp = FakeControlPlane::default();
    // An imported image that is not signed for secure boot: the tiny disk with its UKI's
    // signature removed, served by digest like the control plane serves imported images.
    let unsigned = unsigned_tiny(&cache.join("tiny/disk.raw"), tmp.path());
    let unsigned_bytes = std::fs::read(&unsigned).unwrap();
    let digest =
        strata_attest::hex(ring::digest::digest(&ring::digest::SHA256, &unsigned_bytes).as_ref());
    cp.images.0.lock().unwrap().insert(digest.clone(), unsigned);
    let mut q = vm("q", 1, "Running", "tiny");
    q["diskSizeBytes"] = json!(1u64 << 30);
    let mut u = vm("u", 1, "Running", "");
    u["imageContent"] = json!({ "sha256": digest, "sizeBytes": unsigned_bytes.len() });
    cp.set("Trusted", json!([q, u]));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(240);
    loop {
        host.tick(&cp);
        let s = cp.status(&arm("q"));
        let us = cp.status(&arm("u")).map(|s| s.power_state);
        match s.as_ref().map(|s| s.power_state) {
            Some(PowerState::Running) if us == Some(PowerState::Failed) => break,
            Some(PowerState::Failed) => panic!("the VM failed: {s:?}"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "not Running in time: {s:?} {us:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The imported unsigned image was fetched, verified, and refused by the firmware.
    let u = cp.status(&arm("u")).unwrap();
    assert_eq!(u.reason.as_deref(), Some("secure boot violation"), "{u:?}");
    assert!(
        cache
            .join("sha256")
            .join(format!("{digest}.qcow2"))
            .is_file(),
        "the fetched image is kept under its digest"
    );
    eprintln!("Running after {:.1} s", started.elapsed().as_secs_f64());
    let q = cp.status(&arm("q")).unwrap();
    assert!(
        q.console_tail.contains(strata_compute::READY_MARKER),
        "{}",
        q.console_tail
    );
    assert!(
        q.console_tail.contains("STRATA-GUEST-TPM 2"),
        "{}",
        q.console_tail
    );
    let dir = driver.vm_dir.clone().unwrap().join("vm-q");
    assert!(dir.join("serial.log").exists());
    // The guest's boot evidence, lifted out of the serial log once, replays exactly to the
    // PCRs the guest read (the control plane's appraisal: strata-control's boot_integrity).
    let evidence = q
        .boot_evidence
        .clone()
        .expect("no boot evidence in the status");
    let log = base64::engine::general_purpose::STANDARD
        .decode(&evidence.event_log)
        .unwrap();
    let log = strata_attest::eventlog::EventLog::parse(&log).unwrap();
    let replayed = strata_attest::eventlog::replay(&log, strata_attest::HashAlg::Sha256).unwrap();
    assert!(
        replayed.contains_key(&4) && replayed.contains_key(&7),
        "{replayed:?}"
    );
    for (pcr, value) in &replayed {
        assert_eq!(
            evidence.pcrs.get(&pcr.to_string()),
            Some(&strata_attest::hex(value)),
            "PCR {pcr}"
        );
    }

    // The OS disk has the size assigned (the encrypted overlay's virtual size).
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(dir.join("disk.qcow2"))
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"], 1u64 << 30, "{info}");

    // The failed VM is unassigned and deleted first (a failed VM would be tried again once by
    // the next agent, which does not know its generation).
    let mut q = vm("q", 1, "Running", "tiny");
    q["diskSizeBytes"] = json!(1u64 << 30);
    cp.set("Trusted", json!([q]));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cp.history(&arm("u")).ends_with(&[PowerState::Deleted]) {
        host.tick(&cp);
        assert!(Instant::now() < deadline, "{:?}", cp.history(&arm("u")));
        std::thread::sleep(Duration::from_millis(200));
    }

    // The agent goes away (driver and VM loop dropped): the VM keeps running, and the next
    // agent's driver adopts it — same QEMU, no new boot — and reports it Running.
    let (uid, _) = driver.hypervisor.owner(&id("q")).unwrap().unwrap();
    let pids = processes_of(uid);
    assert_eq!(pids.len(), 2, "QEMU and swtpm: {pids:?}");
    let serial = std::fs::read(dir.join("serial.log")).unwrap();
    assert!(host.wait_idle(Duration::from_secs(30)));
    drop(host);
    drop(driver);
    assert_eq!(processes_of(uid), pids, "the VM outlives its agent");
    let driver = strata_agent::drivers::Driver::from_qemu(config.clone()).unwrap();
    assert_eq!(driver.hypervisor.state(&id("q")).unwrap(), VmState::Running);
    let host = VmHost::new(driver.hypervisor.clone(), images, host_config);
    let before = cp.report_count();
    host.tick(&cp);
    assert!(host.wait_idle(Duration::from_secs(30)));
    host.tick(&cp);
    assert!(cp.report_count() > before);
    let q = cp.status(&arm("q")).unwrap();
    assert_eq!(
        (q.power_state, q.generation),
        (PowerState::Running, 1),
        "{q:?}"
    );
    assert_eq!(processes_of(uid), pids, "adopted, not booted again");
    assert_eq!(std::fs::read(dir.join("serial.log")).unwrap(), serial);

    // The adopted VM stops over its re-attached QMP connection.
    let mut q = vm("q", 2, "Stopped", "tiny");
    q["diskSizeBytes"] = json!(1u64 << 30);
    cp.set("Trusted", json!([q]));
    let deadline = Instant::now() + Duration::from_secs(60);
    while cp.status(&arm("q")).map(|s| s.power_state) != Some(PowerState::Stopped) {
        host.tick(&cp);
        assert!(Instant::now() < deadline, "{:?}", cp.history(&arm("q")));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(processes_of(uid), Vec::<u32>::new(), "stray VM processes");
    for sock in ["qmp.sock", "swtpm.sock"] {
        assert!(!dir.join(sock).exists(), "{sock} left behind");
    }

    // Unassigned: deleted, nothing left behind (the driver's record included).
    cp.set("Trusted", json!([]));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cp.history(&arm("q")).ends_with(&[PowerState::Deleted]) {
        host.tick(&cp);
        assert!(Instant::now() < deadline, "{:?}", cp.history(&arm("q")));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(driver.hypervisor.state(&id("q")).is_err());
    let vms = driver.vm_dir.clone().unwrap();
    assert!(
        !vms.join(".state/vm-q.json").exists(),
        "the driver's record left behind"
    );
    assert!(!vms.join("vm-u").exists());
}

/// Every process on the host running as `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Uid:"))
                        .and_then(|v| v.split_whitespace().next().map(|u| u == uid.to_string()))
                        .unwrap_or(false)
                })
                .unwrap_or(false)
        })
        .collect();
    out.sort_unstable();
    out
}

/// A qcow2 copy of the tiny raw disk whose UKI has no signature (sbattach --remove).
fn unsigned_tiny(raw: &Path, dir: &Path) -> PathBuf {
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let copy = dir.join("unsigned.raw");
    std::fs::copy(raw, &copy).unwrap();
    let esp = strata_compute::image::esp_spec(&copy);
    let efi = dir.join("BOOTX64.EFI");
    run(std::process::Command::new("mcopy")
        .args(["-n", "-i", &esp, strata_compute::image::ESP_BOOT_PATH])
        .arg(&efi));
    run(std::process::Command::new("sbattach")
        .arg("--remove")
        .arg(&efi));
    run(std::process::Command::new("mcopy")
        .args(["-o", "-i", &esp])
        .arg(&efi)
        .arg(strata_compute::image::ESP_BOOT_PATH));
    let qcow = dir.join("unsigned.qcow2");
    run(std::process::Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&copy)
        .arg(&qcow));
    qcow
}

/// A network namespace standing in for the host's networking, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("sta-{}-{tag}", std::process::id());
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name} (root and iproute2 are required)");
        Self(name)
    }

    fn link(&self, dev: &str) -> Option<Value> {
        let out = std::process::Command::new("ip")
            .args(["-n", &self.0, "-j", "-d", "link", "show", "dev", dev])
            .output()
            .unwrap();
        if !out.status.success() {
            return None;
        }
        let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        v.into_iter().next()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// A real trusted-launch VM with a network interface: the agent's network (real strata-netdp,
/// in a namespace standing in for the host; QEMU runs in it too) makes the interface's tap,
/// owned by the VM's uid and on its virtual network's bridge, before QEMU starts; QEMU opens
/// it as that uid under its seccomp sandbox; the guest configures its NIC from the SMBIOS OEM
/// string and answers a TCP SYN from a namespace standing in for another VM's NIC (a stopped
/// VM's, so it is in the host's plan) across the bridge; a stop and a delete leave no tap
/// behind.
#[test]
fn qemu_vm_with_a_nic_gets_its_tap_and_leaves_none() {
    use std::os::unix::fs::PermissionsExt as _;
    use strata_agent::network::NetdpNetwork;
    let cache = crate::support::compute_cache();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let images = {
        let lock = std::fs::File::create(cache.join("build.lock")).unwrap();
        lock.lock().unwrap();
        let store = ImageStore::new(cache.clone(), SigningKey::Snakeoil);
        // Built (or reused) by its inputs: an image from before a change of `/init` is
        // rebuilt (resolve alone would take whatever is there).
        store
            .build_tiny(&mut |l| eprintln!("tiny image: {l}"))
            .unwrap();
        lock.unlock().unwrap();
        Arc::new(store)
    };
    let ns = Netns::new("qemu");
    let mut config = strata_compute::qemu::QemuConfig::snakeoil(tmp.path().join("vms")).unwrap();
    config.sandbox.uid_base = strata_compute::sandbox::DEFAULT_UID_BASE + 16 * 501;
    config.sandbox.uid_count = 16;
    config.netns = Some(PathBuf::from(format!("/run/netns/{}", ns.0)));
    let driver = strata_agent::drivers::Driver::from_qemu(config).unwrap();
    let network = Arc::new(NetdpNetwork::new(strata_netdp::Host::netns(&ns.0)));
    let host = VmHost::new(
        driver.hypervisor.clone(),
        images,
        VmHostConfig {
            poll_every: Duration::from_millis(200),
            report_every: Duration::from_secs(10),
            vm_dir: driver.vm_dir.clone(),
        },
    )
    .with_network(network.clone());

    let vnet = "/subscriptions/s1/resourceGroups/rg/providers/Strata.Network/virtualNetworks/v";
    let nic = "/subscriptions/s1/resourceGroups/rg/providers/Strata.Network/networkInterfaces/n";
    let peer_nic =
        "/subscriptions/s1/resourceGroups/rg/providers/Strata.Network/networkInterfaces/peer";
    let doc = |desired: &str, generation: u64, vms: bool| {
        let mut vm = vm("net", generation, desired, "tiny");
        vm["networkInterfaces"] = json!([{ "id": nic, "macAddress": "02:00:5e:00:00:09",
            "privateIpAddress": "10.9.1.4", "prefixLength": 24, "gateway": "10.9.1.1" }]);
        let mut peer = crate::vms::vm("peer", 1, "Stopped", "tiny");
        peer["networkInterfaces"] = json!([{ "id": peer_nic, "macAddress": "02:00:5e:00:00:0a",
            "privateIpAddress": "10.9.1.5", "prefixLength": 24, "gateway": "10.9.1.1" }]);
        json!({ "host": "h1", "state": "Trusted", "virtualMachines": if vms { json!([vm, peer]) } else { json!([]) },
            "network": if vms { json!({ "etag": "e1", "topology": {
                "virtualNetworks": [{ "id": vnet, "addressSpace": { "addressPrefixes": ["10.9.0.0/16"] },
                    "subnets": [{ "name": "s", "addressPrefix": "10.9.1.0/24" }] }],
                "networkInterfaces": [
                    { "id": nic, "subnet": { "id": format!("{vnet}/subnets/s") }, "privateIpAddress": "10.9.1.4" },
                    { "id": peer_nic, "subnet": { "id": format!("{vnet}/subnets/s") }, "privateIpAddress": "10.9.1.5" }] } }) } else { Value::Null } })
    };
    let cp = FakeControlPlane::default();
    let run_until = |want: PowerState, secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            host.tick(&cp);
            let s = cp.status(&arm("net"));
            match s.as_ref().map(|s| s.power_state) {
                Some(p) if p == want => break,
                Some(PowerState::Failed) => panic!("the VM failed: {s:?}"),
                _ => {}
            }
            assert!(Instant::now() < deadline, "not {want:?} in time: {s:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    *cp.assignments.lock().unwrap() = Some(doc("Running", 1, true));
    run_until(PowerState::Running, 240);

    // The tap: the NIC's port name, a tap owned by the VM's uid/gid, on the network's bridge,
    // with carrier (QEMU holds it open).
    let port = strata_netdp::names::port_name(nic);
    let bridge = strata_netdp::names::bridge_name(vnet);
    let tap = ns.link(&port).unwrap_or_else(|| panic!("no tap {port}"));
    let (uid, gid) = driver.hypervisor.owner(&id("net")).unwrap().unwrap();
    assert_eq!(tap["linkinfo"]["info_data"]["type"], "tap", "{tap}");
    assert_eq!(
        (
            tap["linkinfo"]["info_data"]["user"].as_u64(),
            tap["linkinfo"]["info_data"]["group"].as_u64()
        ),
        (Some(u64::from(uid)), Some(u64::from(gid))),
        "{tap}"
    );
    assert_eq!(tap["master"], bridge.as_str(), "{tap}");
    assert!(
        tap["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "LOWER_UP"),
        "QEMU does not hold the tap: {tap}"
    );
    let qemu = driver
        .vm_dir
        .clone()
        .map(|d| std::fs::read_to_string(d.join("vm-net/qemu.log")).unwrap_or_default())
        .unwrap_or_default();
    assert!(!qemu.contains("could not configure"), "{qemu}");
    // The bridge only forwards frames from the NIC's MAC: the VM's virtio-net has it.
    let plan = network.plan().unwrap();
    assert_eq!(plan.nic(nic).map(|n| n.mac), Some([0x02, 0, 0x5e, 0, 0, 9]));
    // The guest configured that NIC from the SMBIOS OEM string QEMU passed.
    let console = cp.status(&arm("net")).unwrap().console_tail;
    assert!(
        console.contains("STRATA-GUEST-NET eth0 02:00:5e:00:00:09 10.9.1.4/24 via 10.9.1.1"),
        "{console}"
    );
    // A packet crosses the bridge both ways: from a namespace standing in for the stopped
    // peer VM's NIC, a connection to a closed port of the guest is reset by the guest's
    // kernel, which only happens if the SYN got there and the reset came back. The host's
    // SYN proxy answers the handshake first (the connect succeeds), then opens the connection
    // to the guest, whose reset reaches the client on its next read; without the proxy the
    // connect itself is refused.
    let peer = Netns::new("peer");
    network
        .host()
        .create_veth(&plan, peer_nic, &peer.0)
        .unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &peer.0, "timeout", "10", "bash", "-c"])
        .arg("exec 3<>/dev/tcp/10.9.1.4/9 && cat <&3")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Connection reset by peer") || stderr.contains("Connection refused"),
        "the guest's reset did not come back: {out:?}"
    );

    // Stopped: the tap goes with QEMU.
    *cp.assignments.lock().unwrap() = Some(doc("Stopped", 2, true));
    run_until(PowerState::Stopped, 60);
    assert!(ns.link(&port).is_none(), "a stopped VM's tap stays");

    // Started again: a tap again; then deleted: none, and no VM files.
    *cp.assignments.lock().unwrap() = Some(doc("Running", 3, true));
    run_until(PowerState::Running, 240);
    assert!(ns.link(&port).is_some());
    *cp.assignments.lock().unwrap() = Some(doc("Running", 3, false));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cp.history(&arm("net")).ends_with(&[PowerState::Deleted]) {
        host.tick(&cp);
        assert!(Instant::now() < deadline, "{:?}", cp.history(&arm("net")));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ns.link(&port).is_none(), "a deleted VM's tap stays");
    assert!(!driver.vm_dir.clone().unwrap().join("vm-net").exists());
}

/// A network whose DDoS samples are scripted (nothing else happens).
#[derive(Default)]
struct ScriptedDdos(Mutex<std::collections::VecDeque<strata_agent::network::DdosReport>>);

impl strata_agent::network::HostNetwork for ScriptedDdos {
    fn reconcile(
        &self,
        _desired: &strata_agent::network::NetDesired,
        _keep: &std::collections::BTreeSet<String>,
    ) -> Result<(), strata_agent::network::NetError> {
        Ok(())
    }
    fn nic_specs(&self, _nics: &[strata_agent::network::VmNic]) -> Vec<strata_compute::NicSpec> {
        Vec::new()
    }
    fn plug(
        &self,
        _vm: &VmId,
        _nics: &[strata_agent::network::VmNic],
        _owner: Option<(u32, u32)>,
    ) -> Result<(), strata_agent::network::NetError> {
        Ok(())
    }
    fn unplug(
        &self,
        _vm: &VmId,
        _nics: &[strata_agent::network::VmNic],
    ) -> Result<(), strata_agent::network::NetError> {
        Ok(())
    }
    fn ddos_sample(
        &self,
    ) -> Result<Option<strata_agent::network::DdosReport>, strata_agent::network::NetError> {
        Ok(self.0.lock().unwrap().pop_front())
    }
}

/// Takes NIC status reports, refusing the first `fail` of them.
#[derive(Default)]
struct NicReports {
    fail: Mutex<usize>,
    taken: Mutex<Vec<Value>>,
}

impl ControlPlane for NicReports {
    fn assignments(&self) -> Result<Option<Assignments>, VmError> {
        Ok(None)
    }
    fn report(&self, _vms: &[VmStatus]) -> Result<(), VmError> {
        Ok(())
    }
    fn report_nics(&self, body: &Value) -> Result<(), VmError> {
        let mut fail = self.fail.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(VmError::NoCertificate);
        }
        self.taken.lock().unwrap().push(body.clone());
        Ok(())
    }
}

#[test]
fn nic_ddos_reports_go_on_change_and_keep_events_until_delivered() {
    use strata_agent::network::DdosReport;
    use strata_netdp::{Mechanism, MitigationEvent, NicDdosCounters};
    let dir = tempfile::tempdir().unwrap();
    let net = Arc::new(ScriptedDdos::default());
    let counters = |syn: u64| {
        let mut c = NicDdosCounters::default();
        c.syn_flood.packets = syn;
        std::collections::BTreeMap::from([("/nic1".to_owned(), c)])
    };
    let started = MitigationEvent::Started {
        nic: "/nic1".into(),
        mechanism: Mechanism::SynFlood,
        rate: 10.0,
    };
    for (syn, events) in [
        (0, vec![]),         // refused
        (20, vec![started]), // refused: the event is kept
        (20, vec![]),        // sent with the kept event: 1st report
        (20, vec![]),        // nothing changed: not sent
        (35, vec![]),        // counters moved: 2nd report
    ] {
        net.0.lock().unwrap().push_back(DdosReport {
            nics: counters(syn),
            events,
        });
    }
    let host = VmHost::new(
        Arc::new(SimDriver::new()),
        fake_images(dir.path()),
        VmHostConfig {
            poll_every: Duration::from_millis(10),
            report_every: Duration::from_secs(3600),
            vm_dir: None,
        },
    )
    .with_network(net);
    let cp = NicReports {
        fail: Mutex::new(2),
        ..NicReports::default()
    };
    for _ in 0..6 {
        host.tick(&cp);
    }
    let taken = cp.taken.lock().unwrap();
    assert_eq!(taken.len(), 2, "{taken:?}");
    assert_eq!(
        taken[0]["networkInterfaces"][0]["counters"]["synFlood"]["packets"],
        20
    );
    assert_eq!(taken[0]["events"][0]["event"], "MitigationStarted");
    assert_eq!(taken[0]["events"][0]["mechanism"], "SynFlood");
    assert_eq!(taken[1]["events"], json!([]), "an event is sent once");
    assert_eq!(
        taken[1]["networkInterfaces"][0]["counters"]["synFlood"]["packets"],
        35
    );
}

/// Snapshot tokens in the assignments: each taken once by the driver (the simulator's stand-in
/// is an empty LUKS qcow2 under the VM's disk key), delivered to the control plane, not taken
/// again while an older assignment still lists it; a token that is no file name is refused.
#[test]
fn snapshot_tokens_are_taken_once_and_delivered_encrypted() {
    let tmp = tempfile::tempdir().unwrap();
    let (_sim, host) = sim_host(tmp.path(), None);
    let cp = FakeControlPlane::default();
    let token = "0123456789abcdef0123456789abcdef";
    let mut a = vm("a", 1, "Running", "tiny");
    a["snapshots"] = json!([token]);
    let mut bad = vm("b", 1, "Running", "tiny");
    bad["snapshots"] = json!(["../../etc/shadow"]);
    cp.set("Trusted", json!([a, bad]));
    let deadline = Instant::now() + Duration::from_secs(60);
    while cp.snapshots.0.lock().unwrap().is_empty() {
        let failed = cp.snapshots.1.lock().unwrap().clone();
        assert!(failed.is_empty(), "{failed:?}");
        settle(&host, &cp);
        assert!(Instant::now() < deadline, "no snapshot delivered");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Still listed for a while (the control plane has not answered yet): not taken again.
    for _ in 0..5 {
        settle(&host, &cp);
    }
    let got = cp.snapshots.0.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "taken once");
    let (t, head, len) = &got[0];
    assert_eq!(t, token);
    assert!(head.starts_with(b"QFI\xfb") && *len > 0, "a qcow2");
    assert_eq!(&head[32..36], &[0, 0, 0, 2], "LUKS-encrypted");
    let b = cp.status(&arm("b")).unwrap();
    assert_eq!(b.power_state, PowerState::Failed, "{b:?}");
    assert!(
        b.detail
            .as_deref()
            .is_some_and(|r| r.contains("snapshot token")),
        "{b:?}"
    );
}
