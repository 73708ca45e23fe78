//! The host's VMs: what the control plane assigns to this host, what the hypervisor has, and
//! the steps between.
//!
//! ```text
//!  control plane ──GET hosts/{host}/assignments (mTLS)──▶ Assignments
//!                                                            │ only when the host is Trusted
//!  driver states + work in flight ──────────────▶ plan() ◀───┘   (pure: one step per VM)
//!                                                   │
//!                         one worker thread per action, never two on one VM
//!                                                   │ (slow TCG boots block only their worker)
//!  control plane ◀──POST hosts/{host}/vmstatus──── status table (on every change, and at
//!                                                   least every 10 s so crashes are seen)
//! ```
//!
//! One VM as the agent reports it:
//!
//! ```text
//!              create              start                boot ok
//!  (absent) ──────────▶ Creating ─────────▶ Stopped ──────────▶ Starting ──────────▶ Running
//!                          │ image missing,   ▲                    │ firmware refused,  │ stop
//!                          │ driver error     │ Stopping ◀─────────┼────────────────────┘
//!                          ▼                  │                    ▼ timeout, crash
//!                        Failed ◀─────────────┴──────────────── Failed
//!  any ──not assigned any more──▶ Stopping ──▶ Deleted (reported once, then forgotten)
//! ```
//!
//! A Failed VM stays Failed (no boot loop), and a guest that powered itself off stays Stopped,
//! until its assignment's `generation` changes.
//! The control plane withholds assignments from a host that is not Trusted; the list is then
//! empty and means nothing, so the agent changes nothing and only reports.
//! vTPM keys stay in memory ([`VtpmKey`] zeroizes on drop) and are never logged.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use strata_compute::{
    DiskKey, FailureReason, Hypervisor, HypervisorError, VmId, VmSpec, VmState, VtpmKey,
};
use zeroize::{Zeroize as _, Zeroizing};

use crate::images::{ImageFetcher, ImageStore};
use crate::network::{HostNetwork, NetDesired, SimNetwork, VmNic};

/// How much of a VM's serial log a status report carries.
pub const CONSOLE_TAIL_BYTES: u64 = 16 * 1024;
/// The longest event log (as base64 text) a status report carries; a longer one is not sent.
pub const MAX_EVENT_LOG_BASE64: usize = 256 * 1024;
/// How much of a serial log is searched for the boot evidence.
const MAX_SERIAL_SCAN: u64 = 8 << 20;

// ---------------------------------------------------------------------------------------------
// The wire: assignments in, status out.

/// What the control plane wants a VM to be doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DesiredState {
    Running,
    Stopped,
}

/// What a VM is doing, as reported to the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PowerState {
    Creating,
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
    Deleted,
}

/// One VM the control plane assigned to this host.
#[derive(Clone, Debug)]
pub struct DesiredVm {
    /// The VM's ARM resource id.
    pub arm_id: String,
    pub vm_id: VmId,
    pub generation: u64,
    pub state: DesiredState,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// A platform image's name in the host's image directory (`tiny`); empty when
    /// `image_content` is given.
    pub image: String,
    /// An imported image: the content to fetch from the control plane and verify.
    pub image_content: Option<ImageContent>,
    /// The OS disk's size, bytes (`None`: the image's own size).
    pub disk_size_bytes: Option<u64>,
    pub secure_boot: bool,
    pub vtpm: bool,
    pub vtpm_key: Option<VtpmKey>,
    /// The OS disk's data key (every disk is encrypted; released with the assignment).
    pub disk_key: Option<DiskKey>,
    /// Network interfaces, in order.
    pub nics: Vec<VmNic>,
    /// Restore: the OS disk starts as a copy of this snapshot (fetched like an imported image,
    /// encrypted under `disk_key`).
    pub disk_source: Option<ImageContent>,
    /// Snapshots of the OS disk the control plane asks for (opaque tokens, 32 hex digits).
    pub snapshots: Vec<String>,
}

/// An imported image as an assignment names it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageContent {
    /// SHA-256 of the image's bytes (lowercase hex).
    pub sha256: String,
    pub size_bytes: u64,
}

/// An assignment entry the agent cannot act on (reported Failed with the reason; a VM it names
/// that already runs here is left alone, never deleted because of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedVm {
    pub arm_id: String,
    pub generation: u64,
    pub vm_id: Option<VmId>,
    pub reason: String,
}

/// `GET /fabric/v1/hosts/{host}/assignments`, parsed.
#[derive(Clone, Debug)]
pub struct Assignments {
    pub host: String,
    /// The host's trust state; assignments are acted on only when it is `Trusted`.
    pub host_state: String,
    /// The control plane asks for an attestation round now.
    pub attest_now: bool,
    pub vms: Vec<DesiredVm>,
    pub rejected: Vec<RejectedVm>,
    /// The topology of the VMs' networks and its etag (`None`: no VM has an interface).
    pub network: Option<(String, strata_netpol::Topology)>,
}

/// A VM's status line in `POST /fabric/v1/hosts/{host}/vmstatus`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmStatus {
    /// ARM id.
    pub id: String,
    /// The generation of the assignment this status refers to.
    pub generation: u64,
    pub power_state: PowerState,
    pub reason: Option<String>,
    pub detail: Option<String>,
    /// The last [`CONSOLE_TAIL_BYTES`] of the serial log (UTF-8, lossy).
    pub console_tail: String,
    /// The guest's measured-boot evidence from this boot, when it printed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_evidence: Option<BootEvidence>,
}

/// The measured-boot event log and SHA-256 PCRs a guest printed on its serial console
/// (`strata_compute::image` docs), lifted out once per boot. Not a TPM quote: only as
/// trustworthy as the guest kernel that printed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootEvidence {
    /// The TCG event log, base64 (standard alphabet, one line).
    pub event_log: String,
    /// PCR index → lower-case hex.
    pub pcrs: BTreeMap<String, String>,
}

/// The VM loop could not talk to the control plane or understand it.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("the assignments are not valid: {0}")]
    BadAssignments(String),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    #[error("no client certificate yet (it comes with the first passing attestation round)")]
    NoCertificate,
}

/// A string that is wiped when dropped (the base64 vTPM key on its way in).
struct SecretText(Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(Zeroizing::new(s)))
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAssignments {
    host: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    attest_now: bool,
    #[serde(default)]
    virtual_machines: Vec<WireVm>,
    #[serde(default)]
    network: Option<WireNetwork>,
}

#[derive(Debug, Deserialize)]
struct WireNetwork {
    etag: String,
    topology: strata_netpol::Topology,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireNic {
    id: String,
    #[serde(default)]
    mac_address: Option<String>,
    #[serde(default)]
    private_ip_address: Option<String>,
    #[serde(default)]
    prefix_length: Option<u8>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    ddos: Option<crate::network::DdosSettings>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireVm {
    id: String,
    vm_id: String,
    generation: u64,
    desired_state: String,
    vcpus: u32,
    memory_mib: u32,
    #[serde(default)]
    image: String,
    #[serde(default)]
    image_content: Option<ImageContent>,
    #[serde(default)]
    disk_size_bytes: Option<u64>,
    #[serde(default = "yes")]
    secure_boot: bool,
    #[serde(default, rename = "vTpm")]
    vtpm: bool,
    #[serde(default, rename = "vTpmKey")]
    vtpm_key: Option<SecretText>,
    #[serde(default)]
    disk_key: Option<SecretText>,
    #[serde(default)]
    network_interfaces: Vec<WireNic>,
    #[serde(default)]
    disk_source: Option<ImageContent>,
    #[serde(default)]
    snapshots: Vec<String>,
}

impl Assignments {
    /// Parses the control plane's answer. A malformed document is an error (and nothing is
    /// acted on); a malformed entry is [`RejectedVm`].
    pub fn parse(body: &[u8]) -> Result<Self, VmError> {
        let wire: WireAssignments =
            serde_json::from_slice(body).map_err(|e| VmError::BadAssignments(e.to_string()))?;
        let mut vms: Vec<DesiredVm> = Vec::new();
        let mut rejected = Vec::new();
        for w in wire.virtual_machines {
            let (arm_id, generation) = (w.id.clone(), w.generation);
            let vm_id = VmId::new(&w.vm_id).ok();
            let duplicate = vm_id
                .as_ref()
                .is_some_and(|id| vms.iter().any(|v| &v.vm_id == id));
            let result = if duplicate {
                Err(format!(
                    "vmId {} is assigned twice on this host; the first entry wins",
                    w.vm_id
                ))
            } else {
                desired_vm(w)
            };
            match result {
                Ok(vm) => vms.push(vm),
                Err(reason) => rejected.push(RejectedVm {
                    arm_id,
                    generation,
                    vm_id,
                    reason,
                }),
            }
        }
        Ok(Self {
            host: wire.host,
            host_state: wire.state.unwrap_or_default(),
            attest_now: wire.attest_now,
            vms,
            rejected,
            network: wire.network.map(|n| (n.etag, n.topology)),
        })
    }

    /// Whether the list means anything (the control plane sends an empty one otherwise).
    pub fn trusted(&self) -> bool {
        self.host_state == "Trusted"
    }
}

fn desired_vm(w: WireVm) -> Result<DesiredVm, String> {
    let vm_id = VmId::new(&w.vm_id).map_err(|e| e.to_string())?;
    let state = match w.desired_state.as_str() {
        "Running" => DesiredState::Running,
        "Stopped" => DesiredState::Stopped,
        other => return Err(format!("unknown desiredState {other:?}")),
    };
    match &w.image_content {
        Some(c) if !crate::images::is_digest(&c.sha256) => {
            return Err(format!(
                "imageContent.sha256 {:?} is not a SHA-256 digest",
                c.sha256.chars().take(80).collect::<String>()
            ));
        }
        Some(_) => {}
        None => crate::images::validate_name(&w.image).map_err(|e| e.to_string())?,
    }
    if w.vcpus == 0 || w.memory_mib == 0 {
        return Err("vcpus and memoryMib must be positive".into());
    }
    let vtpm_key = match (w.vtpm, w.vtpm_key) {
        (false, _) => None,
        (true, None) => {
            return Err("the VM has a vTPM but the assignment carries no vTpmKey".into());
        }
        (true, Some(text)) => Some(vtpm_key(&text)?),
    };
    // A Stopped entry may come without its key: the control plane withholds it while the
    // disk's customer key is disabled, and the VM then only needs stopping.
    let disk_key = match (w.disk_key, state) {
        (Some(text), _) => Some(disk_key(&text)?),
        (None, DesiredState::Stopped) => None,
        (None, DesiredState::Running) => {
            return Err("the assignment carries no diskKey: every VM disk is encrypted".into());
        }
    };
    let mut nics = Vec::new();
    for n in w.network_interfaces {
        nics.push(vm_nic(n)?);
    }
    if let Some(c) = &w.disk_source
        && !crate::images::is_digest(&c.sha256)
    {
        return Err("diskSource.sha256 is not a SHA-256 digest".into());
    }
    if let Some(t) = w.snapshots.iter().find(|t| !is_snapshot_token(t)) {
        return Err(format!(
            "snapshot token {:?} is not 32 hex digits",
            t.chars().take(40).collect::<String>()
        ));
    }
    Ok(DesiredVm {
        arm_id: w.id,
        vm_id,
        generation: w.generation,
        state,
        vcpus: w.vcpus,
        memory_mib: w.memory_mib,
        image: w.image,
        image_content: w.image_content,
        disk_size_bytes: w.disk_size_bytes,
        secure_boot: w.secure_boot,
        vtpm: w.vtpm,
        vtpm_key,
        disk_key,
        nics,
        disk_source: w.disk_source,
        snapshots: w.snapshots,
    })
}

/// A snapshot token as the control plane makes them (a UUID's 32 lowercase hex digits): safe
/// in a file name and a URL path.
pub fn is_snapshot_token(t: &str) -> bool {
    t.len() == 32 && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn vm_nic(n: WireNic) -> Result<VmNic, String> {
    let unresolved = || {
        format!(
            "network interface '{}' has no address on this host's network (the control plane could not resolve it)",
            n.id
        )
    };
    let mac = n
        .mac_address
        .as_deref()
        .ok_or_else(unresolved)?
        .split([':', '-'])
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<Vec<u8>, _>>()
        .ok()
        .and_then(|b| <[u8; 6]>::try_from(b).ok())
        .ok_or_else(|| format!("network interface '{}': macAddress is not a MAC", n.id))?;
    let ip = |text: Option<&String>, what: &str| {
        text.ok_or_else(unresolved)?
            .parse::<std::net::Ipv4Addr>()
            .map_err(|_| {
                format!(
                    "network interface '{}': {what} is not an IPv4 address",
                    n.id
                )
            })
    };
    let prefix_len = n
        .prefix_length
        .filter(|l| *l <= 32)
        .ok_or_else(unresolved)?;
    Ok(VmNic {
        ip: ip(n.private_ip_address.as_ref(), "privateIpAddress")?,
        gateway: ip(n.gateway.as_ref(), "gateway")?,
        prefix_len,
        mac,
        ddos: n.ddos,
        id: n.id,
    })
}

/// A 32-byte key from standard base64 (`what` names the field in errors). The caller wraps
/// the result in a zeroizing key type and wipes this copy.
fn key_bytes(text: &SecretText, what: &str) -> Result<[u8; 32], String> {
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.0.as_bytes())
            .map_err(|_| format!("{what} is not standard base64"))?,
    );
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("{what} must be 32 bytes, not {}", bytes.len()))
}

fn vtpm_key(text: &SecretText) -> Result<VtpmKey, String> {
    let mut raw = key_bytes(text, "vTpmKey")?;
    let key = VtpmKey::from_bytes(raw);
    raw.zeroize();
    Ok(key)
}

fn disk_key(text: &SecretText) -> Result<DiskKey, String> {
    let mut raw = key_bytes(text, "diskKey")?;
    let key = DiskKey::from_bytes(raw);
    raw.zeroize();
    Ok(key)
}

/// The control plane as the VM loop sees it (HTTP in [`crate::agent::FabricClient`]; a fake
/// in tests).
pub trait ControlPlane: Send + Sync {
    /// This host's assignments; `Ok(None)` when no call is possible yet (no client
    /// certificate from a passing round).
    fn assignments(&self) -> Result<Option<Assignments>, VmError>;
    /// Sends the status of every VM ([`VmError::NoCertificate`] before a passing round: the
    /// report is kept for later).
    fn report(&self, vms: &[VmStatus]) -> Result<(), VmError>;
    /// Sends the interfaces' DDoS counters and mitigation events
    /// (`POST /fabric/v1/hosts/{host}/nicstatus`, body from
    /// [`crate::network::nic_status_body`]); fakes take nothing.
    fn report_nics(&self, _body: &serde_json::Value) -> Result<(), VmError> {
        Ok(())
    }
    /// Where imported images come from (`None`: nowhere; VMs from imported images fail).
    fn image_fetcher(&self) -> Option<Arc<dyn ImageFetcher>> {
        None
    }
    /// Where finished snapshots go (`None`: nowhere; snapshots wait).
    fn snapshot_sink(&self) -> Option<Arc<dyn SnapshotSink>> {
        None
    }
}

/// Takes a host's finished snapshots (`PUT hosts/{host}/snapshots/{token}` over the agent door)
/// and the reasons of failed ones.
pub trait SnapshotSink: Send + Sync {
    /// Sends the snapshot file (a standalone LUKS qcow2) made for `token`.
    fn taken(&self, token: &str, file: &Path) -> Result<(), String>;
    /// Says why the snapshot for `token` could not be made.
    fn failed(&self, token: &str, reason: &str) -> Result<(), String>;
}

// ---------------------------------------------------------------------------------------------
// The decision: pure.

/// What the agent knows about a VM on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Have {
    /// A worker is acting on it.
    Busy,
    /// Created, never started.
    Created,
    Stopped,
    Running,
    /// Failed while its assignment was at `generation`; `exists`: the driver has the VM (a
    /// failed boot or a crash) rather than nothing (a failed create).
    Failed {
        generation: u64,
        exists: bool,
    },
    /// Files from an earlier agent run that the driver does not know (it cannot adopt them).
    Leftover,
}

/// One step for one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Create(VmId),
    Start(VmId),
    Stop(VmId),
    Delete(VmId),
}

/// One desired VM, as far as the decision needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub vm_id: VmId,
    pub generation: u64,
    pub state: DesiredState,
}

/// The next step for every VM: `desired` against `have`. Nothing when the host is not
/// trusted (its list is withheld, not empty); VMs in `keep` (named by an entry the agent
/// rejected) are never deleted; VMs with work in flight wait for it.
pub fn plan(
    trusted: bool,
    desired: &[Want],
    keep: &[VmId],
    have: &BTreeMap<VmId, Have>,
) -> Vec<Action> {
    if !trusted {
        return Vec::new();
    }
    let mut actions = Vec::new();
    for w in desired {
        let id = w.vm_id.clone();
        let newer = |failed_at: &u64| w.generation > *failed_at;
        let action = match (w.state, have.get(&w.vm_id)) {
            (_, Some(Have::Busy | Have::Leftover)) => None,
            (_, None) => Some(Action::Create(id)),
            (_, Some(Have::Failed { generation, exists })) if newer(generation) => {
                match (exists, w.state) {
                    (false, _) => Some(Action::Create(id)),
                    (true, DesiredState::Running) => Some(Action::Start(id)),
                    (true, DesiredState::Stopped) => None,
                }
            }
            (_, Some(Have::Failed { .. })) => None,
            (DesiredState::Running, Some(Have::Created | Have::Stopped)) => Some(Action::Start(id)),
            (DesiredState::Running, Some(Have::Running)) => None,
            (DesiredState::Stopped, Some(Have::Running)) => Some(Action::Stop(id)),
            (DesiredState::Stopped, Some(Have::Created | Have::Stopped)) => None,
        };
        actions.extend(action);
    }
    for (id, h) in have {
        let assigned = desired.iter().any(|w| &w.vm_id == id) || keep.contains(id);
        if !assigned && *h != Have::Busy {
            actions.push(Action::Delete(id.clone()));
        }
    }
    actions
}

// ---------------------------------------------------------------------------------------------
// The executor.

/// How the VM loop runs.
#[derive(Clone, Debug)]
pub struct VmHostConfig {
    /// Between assignment fetches (a worker finishing or an attestation round also wakes it).
    pub poll_every: Duration,
    /// The longest gap between status reports.
    pub report_every: Duration,
    /// The QEMU driver's VM directory: serial logs are read from `<vm_dir>/<vm>/serial.log`
    /// and leftovers of an earlier run are found there. `None` for the simulator.
    pub vm_dir: Option<PathBuf>,
}

impl Default for VmHostConfig {
    fn default() -> Self {
        Self {
            poll_every: Duration::from_secs(2),
            report_every: Duration::from_secs(10),
            vm_dir: None,
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// Unknown for leftovers until an assignment names the VM.
    arm_id: Option<String>,
    generation: u64,
    have: Have,
    power: PowerState,
    reason: Option<String>,
    detail: Option<String>,
    /// What the guest printed of its boot evidence, read when a start saw it ready.
    evidence: Option<BootEvidence>,
    /// The VM's network interfaces (its taps go with stop and delete).
    nics: Vec<VmNic>,
}

impl Entry {
    fn new(arm_id: Option<String>, generation: u64) -> Self {
        Self {
            arm_id,
            generation,
            have: Have::Busy,
            power: PowerState::Creating,
            reason: None,
            detail: None,
            evidence: None,
            nics: Vec::new(),
        }
    }

    fn set(&mut self, have: Have, power: PowerState, why: Option<(String, Option<String>)>) {
        self.have = have;
        self.power = power;
        if power != PowerState::Running {
            self.evidence = None;
        }
        (self.reason, self.detail) = match why {
            Some((reason, detail)) => (Some(reason), detail),
            None => (None, None),
        };
    }

    /// Failed while the assignment was at `generation` (retried once it moves on).
    fn fail(&mut self, generation: u64, exists: bool, reason: String, detail: Option<String>) {
        self.set(
            Have::Failed { generation, exists },
            PowerState::Failed,
            Some((reason, detail)),
        );
    }
}

#[derive(Debug, Default)]
struct Table {
    vms: BTreeMap<VmId, Entry>,
    /// Entries the control plane rejected and that name no VM here: reported Failed.
    rejected: Vec<RejectedVm>,
    /// Changes since the last report that reached the control plane (a counter, so a change
    /// made while a report is in flight is not cleared with it).
    dirty: u64,
    /// A worker finished or someone called [`Waker::wake`].
    woken: bool,
    workers: usize,
    last_report: Option<Instant>,
}

#[derive(Debug, Default)]
struct Shared {
    table: Mutex<Table>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every critical section is a handful of field assignments: a panic elsewhere cannot
        // leave the table half-updated.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        self.lock().woken = true;
        self.cond.notify_all();
    }
}

/// Wakes the VM loop early (after an attestation round: a new certificate, maybe new
/// assignments).
#[derive(Clone, Debug)]
pub struct Waker(Arc<Shared>);

impl Waker {
    pub fn wake(&self) {
        self.0.wake();
    }
}

/// This host's VMs: reconciles assignments against a [`Hypervisor`] and reports status.
pub struct VmHost {
    driver: Arc<dyn Hypervisor>,
    images: Arc<ImageStore>,
    network: Arc<dyn HostNetwork>,
    cfg: VmHostConfig,
    shared: Arc<Shared>,
    /// The control plane's image fetcher as of the last tick (handed to create workers).
    fetcher: Mutex<Option<Arc<dyn ImageFetcher>>>,
    /// What the last NIC status report carried, and mitigation events not delivered yet.
    ddos: Mutex<DdosOutbox>,
    /// Snapshot tokens being taken or sent by this agent (a token the control plane still
    /// lists after its worker finished is taken again).
    snapshots: Arc<Mutex<BTreeMap<String, bool>>>,
    /// Where snapshots are made before they are sent (`snapshot_work_dir`).
    snapshot_work: PathBuf,
}

/// The DDoS half of the VM loop's reporting: counters are sent when they change (or every
/// `report_every`), mitigation events until the control plane has taken them.
#[derive(Default)]
struct DdosOutbox {
    pending: Vec<strata_netdp::MitigationEvent>,
    sent: Option<(
        Instant,
        std::collections::BTreeMap<String, strata_netdp::NicDdosCounters>,
    )>,
}

/// Most undelivered mitigation events kept (the oldest go first).
const MAX_PENDING_EVENTS: usize = 1024;

impl VmHost {
    /// A VM host over `driver`; with a `vm_dir`, directories there from an earlier run are
    /// recorded as leftovers (deleted when not assigned, reported Failed when assigned).
    pub fn new(driver: Arc<dyn Hypervisor>, images: Arc<ImageStore>, cfg: VmHostConfig) -> Self {
        let host = Self {
            driver,
            images,
            network: Arc::new(SimNetwork::new()),
            shared: Arc::new(Shared::default()),
            fetcher: Mutex::new(None),
            ddos: Mutex::new(DdosOutbox::default()),
            snapshots: Arc::new(Mutex::new(BTreeMap::new())),
            snapshot_work: snapshot_work_dir(&cfg),
            cfg,
        };
        host.adopt();
        host.find_leftovers();
        // Snapshot files an earlier run left half-made or unsent: taken again if still asked
        // for. (Only the QEMU driver's directory outlives a run; the simulator's is this
        // process's own.)
        if host.cfg.vm_dir.is_some()
            && let Ok(entries) = std::fs::read_dir(&host.snapshot_work)
        {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("strata-snapshot-") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        host
    }

    /// The same host with `network` for its VMs' interfaces (the default is [`SimNetwork`]).
    pub fn with_network(mut self, network: Arc<dyn HostNetwork>) -> Self {
        self.network = network;
        self
    }

    /// Takes in the VMs the driver adopted from an earlier agent run (still running, or
    /// stopped with their files): known by the driver, named by the control plane with the
    /// next assignments.
    fn adopt(&self) {
        let mut t = self.shared.lock();
        for id in self.driver.list() {
            let Ok(state) = self.driver.state(&id) else {
                continue;
            };
            tracing::info!(vm = %id, ?state, "VM from an earlier agent run adopted");
            let mut entry = Entry::new(None, 0);
            let (have, power) = settled(&state);
            entry.set(have, power, None);
            t.vms.insert(id, entry);
        }
    }

    fn find_leftovers(&self) {
        let Some(dir) = &self.cfg.vm_dir else { return };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut t = self.shared.lock();
        for e in entries.flatten() {
            let Ok(id) = VmId::new(&e.file_name().to_string_lossy()) else {
                continue;
            };
            if !e.path().is_dir() || self.driver.state(&id).is_ok() {
                continue;
            }
            tracing::warn!(vm = %id, dir = %e.path().display(), "VM files from an earlier agent run");
            let mut entry = Entry::new(None, 0);
            entry.set(
                Have::Leftover,
                PowerState::Failed,
                Some((
                    "the VM's files are from an earlier agent run and the driver cannot adopt them"
                        .into(),
                    Some(format!(
                        "{} holds its disk and vTPM state; delete the VM and create it again",
                        e.path().display()
                    )),
                )),
            );
            t.vms.insert(id, entry);
        }
    }

    pub fn waker(&self) -> Waker {
        Waker(self.shared.clone())
    }

    /// Runs [`tick`](Self::tick) until `stop`, every `poll_every` or sooner when woken.
    pub fn run(&self, cp: &dyn ControlPlane, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.tick(cp);
            self.wait(self.cfg.poll_every, stop);
        }
    }

    fn wait(&self, most: Duration, stop: &AtomicBool) {
        let deadline = Instant::now() + most;
        let mut t = self.shared.lock();
        while !t.woken && !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let step = (deadline - now).min(Duration::from_millis(100));
            t = self
                .shared
                .cond
                .wait_timeout(t, step)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        t.woken = false;
    }

    /// One pass: notice crashes, fetch the assignments, start the next step for each VM,
    /// report when something changed or `report_every` passed.
    pub fn tick(&self, cp: &dyn ControlPlane) {
        self.observe();
        *self.fetcher.lock().unwrap_or_else(PoisonError::into_inner) = cp.image_fetcher();
        match cp.assignments() {
            Ok(Some(a)) => {
                self.apply(&a);
                self.take_snapshots(cp, &a);
            }
            Ok(None) => tracing::debug!("no client certificate yet: VM assignments wait"),
            Err(e) => {
                tracing::warn!(error = %crate::agent::chain(&e), "cannot fetch VM assignments")
            }
        }
        self.report_if_due(cp);
        self.report_ddos(cp);
    }

    /// Starts a worker for each snapshot the control plane asks for that none is working on:
    /// the driver copies the VM's disk (encrypted, see `strata_compute::snapshot`) to a
    /// private temporary file, which is sent and removed. A failure is reported with its
    /// reason; a token whose worker could not reach the control plane is tried again.
    fn take_snapshots(&self, cp: &dyn ControlPlane, a: &Assignments) {
        if !a.trusted() {
            return;
        }
        let Some(sink) = cp.snapshot_sink() else {
            return;
        };
        let work = self.snapshot_work.clone();
        // Tokens (→ in flight): a delivered one is kept only while the control plane still
        // lists it (an assignment fetched before it took the snapshot may).
        let listed: BTreeSet<&String> = a.vms.iter().flat_map(|d| &d.snapshots).collect();
        self.snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|t, in_flight| *in_flight || listed.contains(t));
        for d in &a.vms {
            // Only a VM whose disk exists and no worker is changing (a VM still being created
            // gets its snapshot taken on a later tick).
            let settled = self.shared.lock().vms.get(&d.vm_id).is_some_and(|e| {
                matches!(
                    e.have,
                    Have::Created
                        | Have::Stopped
                        | Have::Running
                        | Have::Failed { exists: true, .. }
                )
            });
            if !settled {
                continue;
            }
            for token in &d.snapshots {
                let fresh = {
                    let mut known = self
                        .snapshots
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    !known.contains_key(token) && known.insert(token.clone(), true).is_none()
                };
                if !fresh {
                    continue;
                }
                let (driver, sink, running) =
                    (self.driver.clone(), sink.clone(), self.snapshots.clone());
                let (token, vm, work) = (token.clone(), d.vm_id.clone(), work.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("snapshot-{vm}"))
                    .spawn(move || {
                        // A delivered token stays known (no longer in flight); an undelivered
                        // one is forgotten, so it is taken again if still asked for.
                        let delivered =
                            snapshot_worker(driver.as_ref(), sink.as_ref(), &vm, &token, &work);
                        if !delivered {
                            // Not straight away: a copy is expensive.
                            std::thread::sleep(SNAPSHOT_RETRY);
                        }
                        let mut known = running.lock().unwrap_or_else(PoisonError::into_inner);
                        if delivered {
                            known.insert(token, false);
                        } else {
                            known.remove(&token);
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!(vm = %d.vm_id, error = %e, "cannot start a snapshot worker");
                }
            }
        }
    }

    /// Samples every local interface's DDoS counters (the mitigation monitor runs on each
    /// sample) and sends them with any mitigation events when something changed or
    /// `report_every` passed. Events stay queued until a report reaches the control plane.
    fn report_ddos(&self, cp: &dyn ControlPlane) {
        let report = match self.network.ddos_sample() {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %crate::agent::chain(&e), "cannot read the interfaces' DDoS counters");
                return;
            }
        };
        let mut out = self.ddos.lock().unwrap_or_else(PoisonError::into_inner);
        out.pending.extend(report.events);
        let excess = out.pending.len().saturating_sub(MAX_PENDING_EVENTS);
        out.pending.drain(..excess);
        let due = !out.pending.is_empty()
            || out.sent.as_ref().is_none_or(|(at, nics)| {
                *nics != report.nics || at.elapsed() >= self.cfg.report_every
            });
        if !due {
            return;
        }
        let body = crate::network::nic_status_body(&report.nics, &out.pending);
        match cp.report_nics(&body) {
            Ok(()) => {
                out.pending.clear();
                out.sent = Some((Instant::now(), report.nics));
            }
            Err(VmError::NoCertificate) => {
                tracing::debug!("no client certificate yet: NIC status waits")
            }
            Err(e) => {
                tracing::warn!(error = %crate::agent::chain(&e), "cannot report NIC status")
            }
        }
    }

    /// Asks the driver about every VM no worker is busy with (a QEMU that died is noticed
    /// here). Driver calls happen outside the table lock.
    fn observe(&self) {
        let ids: Vec<VmId> = {
            let t = self.shared.lock();
            t.vms
                .iter()
                .filter(|(_, e)| {
                    e.power != PowerState::Deleted
                        && matches!(
                            e.have,
                            Have::Created
                                | Have::Stopped
                                | Have::Running
                                | Have::Failed { exists: true, .. }
                        )
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in ids {
            let state = self.driver.state(&id);
            let mut t = self.shared.lock();
            let Some(e) = t.vms.get_mut(&id) else {
                continue;
            };
            let before = (e.have.clone(), e.power, e.reason.clone());
            match state {
                Ok(VmState::Failed { reason }) => {
                    if !matches!(e.have, Have::Failed { .. }) {
                        tracing::warn!(vm = %id, %reason, "VM failed");
                        let (r, d) = describe(&reason);
                        e.fail(e.generation, true, r, d);
                    }
                }
                // The guest powered itself off: reported Stopped, and not started again
                // (that would fight the guest) until the generation moves.
                Ok(VmState::Stopped) if e.have == Have::Running => {
                    tracing::info!(vm = %id, "the guest shut itself down");
                    e.set(
                        Have::Failed {
                            generation: e.generation,
                            exists: true,
                        },
                        PowerState::Stopped,
                        Some(("the guest shut itself down".into(), None)),
                    );
                }
                Ok(s) => {
                    if !matches!(e.have, Have::Failed { .. }) || matches!(s, VmState::Running) {
                        let (have, power) = settled(&s);
                        e.set(have, power, None);
                    }
                }
                Err(HypervisorError::NotFound(_)) => {
                    e.fail(
                        e.generation,
                        false,
                        "the hypervisor lost the VM".into(),
                        None,
                    );
                }
                Err(err) => {
                    tracing::warn!(vm = %id, error = %crate::agent::chain(&err), "cannot read VM state");
                }
            }
            if before != (e.have.clone(), e.power, e.reason.clone()) {
                t.dirty += 1;
            }
        }
    }

    /// Takes the assignments in, reconciles the host's network, and starts the planned
    /// actions.
    fn apply(&self, a: &Assignments) {
        if !a.trusted() {
            tracing::debug!(state = %a.host_state, "host not Trusted: VM assignments withheld, nothing changes");
            return;
        }
        // Taps stay for VMs that run or have work in flight (a start plugs before it boots, a
        // stop or delete unplugs when done); the rest go.
        let keep: BTreeSet<String> = {
            let mut t = self.shared.lock();
            for d in &a.vms {
                if let Some(e) = t.vms.get_mut(&d.vm_id)
                    && e.power != PowerState::Deleted
                {
                    e.arm_id = Some(d.arm_id.clone());
                    e.generation = d.generation;
                    e.nics = d.nics.clone();
                }
            }
            t.vms
                .values()
                .filter(|e| matches!(e.have, Have::Busy | Have::Running))
                .flat_map(|e| e.nics.iter().map(|n| n.id.clone()))
                .collect()
        };
        let (etag, topology) = a.network.clone().unwrap_or_default();
        let desired = NetDesired {
            etag,
            topology,
            nics: a.vms.iter().flat_map(|d| d.nics.iter().cloned()).collect(),
        };
        if let Err(e) = self.network.reconcile(&desired, &keep) {
            tracing::warn!(error = %crate::agent::chain(&e), "cannot reconcile the host's network");
        }
        let mut t = self.shared.lock();
        let rejected: Vec<RejectedVm> = a
            .rejected
            .iter()
            .filter(|r| !r.vm_id.as_ref().is_some_and(|id| t.vms.contains_key(id)))
            .cloned()
            .collect();
        if rejected != t.rejected {
            for r in &rejected {
                tracing::warn!(vm = %r.arm_id, reason = %r.reason, "cannot act on a VM assignment");
            }
            t.rejected = rejected;
            t.dirty += 1;
        }
        let wants: Vec<Want> = a
            .vms
            .iter()
            .map(|d| Want {
                vm_id: d.vm_id.clone(),
                generation: d.generation,
                state: d.state,
            })
            .collect();
        let keep: Vec<VmId> = a.rejected.iter().filter_map(|r| r.vm_id.clone()).collect();
        let have: BTreeMap<VmId, Have> = t
            .vms
            .iter()
            .filter(|(_, e)| e.power != PowerState::Deleted)
            .map(|(id, e)| (id.clone(), e.have.clone()))
            .collect();
        for action in plan(true, &wants, &keep, &have) {
            let desired = match &action {
                Action::Create(id) | Action::Start(id) => a.vms.iter().find(|d| &d.vm_id == id),
                Action::Stop(_) | Action::Delete(_) => None,
            };
            self.dispatch(&mut t, action, desired.cloned());
        }
    }

    /// Marks the VM busy and hands the action to a worker thread.
    fn dispatch(&self, t: &mut Table, action: Action, desired: Option<DesiredVm>) {
        let (id, power) = match &action {
            Action::Create(id) => (id.clone(), PowerState::Creating),
            Action::Start(id) => (id.clone(), PowerState::Starting),
            Action::Stop(id) | Action::Delete(id) => (id.clone(), PowerState::Stopping),
        };
        tracing::info!(vm = %id, ?action, "VM action");
        let leftover = t.vms.get(&id).is_some_and(|e| e.have == Have::Leftover);
        let generation = desired
            .as_ref()
            .map(|d| d.generation)
            .or_else(|| t.vms.get(&id).map(|e| e.generation))
            .unwrap_or(0);
        let entry = match &action {
            Action::Create(_) => {
                let d = desired.as_ref();
                t.vms.insert(
                    id.clone(),
                    Entry::new(d.map(|d| d.arm_id.clone()), d.map_or(0, |d| d.generation)),
                );
                t.vms.get_mut(&id)
            }
            _ => t.vms.get_mut(&id),
        };
        let Some(entry) = entry else { return };
        if let Some(d) = &desired {
            entry.nics = d.nics.clone();
        }
        let nics = entry.nics.clone();
        entry.set(Have::Busy, power, None);
        t.dirty += 1;
        t.workers += 1;
        let work = Work {
            driver: self.driver.clone(),
            images: self.images.clone(),
            network: self.network.clone(),
            nics,
            fetcher: self
                .fetcher
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            shared: self.shared.clone(),
            vm_dir: self.cfg.vm_dir.clone(),
            id: id.clone(),
            generation,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("vm-{id}"))
            .spawn(move || work.run(action, desired, leftover));
        if let Err(e) = spawned {
            t.workers -= 1;
            if let Some(entry) = t.vms.get_mut(&id) {
                entry.fail(
                    generation,
                    false,
                    "the agent could not start a worker".into(),
                    Some(e.to_string()),
                );
            }
        }
    }

    /// Sends the status of every VM when something changed or `report_every` passed; a
    /// `Deleted` status is sent once and then forgotten.
    fn report_if_due(&self, cp: &dyn ControlPlane) {
        let (statuses, deleted, seen) = {
            let t = self.shared.lock();
            let due = t.dirty > 0
                || t.last_report
                    .is_none_or(|at| at.elapsed() >= self.cfg.report_every);
            if !due {
                return;
            }
            let deleted: Vec<VmId> = t
                .vms
                .iter()
                .filter(|(_, e)| e.power == PowerState::Deleted)
                .map(|(id, _)| id.clone())
                .collect();
            (self.statuses_locked(&t), deleted, t.dirty)
        };
        match cp.report(&statuses) {
            Ok(()) => {
                let mut t = self.shared.lock();
                t.dirty = t.dirty.saturating_sub(seen);
                t.last_report = Some(Instant::now());
                for id in deleted {
                    if t.vms
                        .get(&id)
                        .is_some_and(|e| e.power == PowerState::Deleted)
                    {
                        t.vms.remove(&id);
                    }
                }
            }
            Err(VmError::NoCertificate) => {
                tracing::debug!("no client certificate yet: VM status waits")
            }
            Err(e) => {
                tracing::warn!(error = %crate::agent::chain(&e), "cannot report VM status")
            }
        }
    }

    /// The status of every VM the control plane knows by name.
    pub fn statuses(&self) -> Vec<VmStatus> {
        let t = self.shared.lock();
        self.statuses_locked(&t)
    }

    fn statuses_locked(&self, t: &Table) -> Vec<VmStatus> {
        let mut out: Vec<VmStatus> = t
            .vms
            .iter()
            .filter_map(|(id, e)| {
                let arm_id = e.arm_id.clone()?;
                Some(VmStatus {
                    id: arm_id,
                    generation: e.generation,
                    power_state: e.power,
                    reason: e.reason.clone(),
                    detail: e.detail.clone(),
                    console_tail: match (&self.cfg.vm_dir, e.power) {
                        (_, PowerState::Deleted) | (None, _) => String::new(),
                        (Some(dir), _) => console_tail(&dir.join(id.as_str()).join("serial.log")),
                    },
                    boot_evidence: e.evidence.clone(),
                })
            })
            .collect();
        out.extend(t.rejected.iter().map(|r| VmStatus {
            id: r.arm_id.clone(),
            generation: r.generation,
            power_state: PowerState::Failed,
            reason: Some("the host agent cannot act on this assignment".into()),
            detail: Some(r.reason.clone()),
            console_tail: String::new(),
            boot_evidence: None,
        }));
        out
    }

    /// Waits until no worker is busy (true) or `within` passed (false).
    pub fn wait_idle(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut t = self.shared.lock();
        while t.workers > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            t = self
                .shared
                .cond
                .wait_timeout(t, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }
}

/// Runs the attestation loop on this thread and `vms`' loop on its own until `stop`, each
/// round waking the VM loop; then waits up to `drain` for VM work in flight. The driver is
/// dropped with the last reference to it; the QEMU driver of a host agent leaves its VMs
/// running, and the next agent's driver adopts them (`strata_compute::adopt`).
pub fn run_with_vms(
    agent: &mut crate::agent::Agent,
    vms: VmHost,
    stop: &Arc<AtomicBool>,
    drain: Duration,
) {
    let Some(fabric) = agent.fabric_client() else {
        tracing::warn!("the agent is not registered: VMs are not run");
        agent.run(stop);
        return;
    };
    let vms = Arc::new(vms);
    let waker = vms.waker();
    agent.after_round(move || waker.wake());
    let vm_loop = {
        let (vms, stop) = (vms.clone(), stop.clone());
        std::thread::Builder::new()
            .name("strata-vms".into())
            .spawn(move || vms.run(&fabric, &stop))
    };
    if let Err(e) = &vm_loop {
        tracing::error!(error = %e, "cannot start the VM loop: this host runs no VMs");
    }
    agent.run(stop);
    if let Ok(handle) = vm_loop {
        let _ = handle.join();
    }
    if !vms.wait_idle(drain) {
        tracing::warn!("VM work still in flight at shutdown");
    }
}

/// How long an undelivered snapshot waits before it is taken again.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(30);

/// Where snapshots are made before they are sent: beside the VMs' directories (same file
/// system, sized for disks), not /tmp. Root's, 0711: a VM's uid may open the file made for it
/// there but never add, rename or replace an entry (`strata_compute::snapshot`).
/// 16 random hex digits (a directory name no other host object in this process uses).
fn uuid_like() -> String {
    let mut b = [0u8; 8];
    // On failure the zeros still name a directory; the process id beside it keeps
    // processes apart.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn snapshot_work_dir(cfg: &VmHostConfig) -> PathBuf {
    match &cfg.vm_dir {
        Some(dir) => dir
            .parent()
            .map_or_else(std::env::temp_dir, |p| p.join("snapshot-work")),
        // The simulator: a directory of this host object's own (tests run many at once).
        None => std::env::temp_dir().join(format!(
            "strata-snapshot-work-{}-{}",
            std::process::id(),
            uuid_like()
        )),
    }
}

/// One snapshot: copy, send, remove. The file is root's, 0600, and ciphertext only.
fn snapshot_worker(
    driver: &dyn Hypervisor,
    sink: &dyn SnapshotSink,
    vm: &VmId,
    token: &str,
    work: &Path,
) -> bool {
    use std::os::unix::fs::DirBuilderExt as _;
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(work)
        .and_then(|()| std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o711)));
    if let Err(e) = made {
        tracing::warn!(%vm, dir = %work.display(), error = %e, "cannot make the snapshot work directory");
        return false;
    }
    let out = work.join(format!("strata-snapshot-{token}.qcow2"));
    let _ = std::fs::remove_file(&out);
    tracing::info!(%vm, "taking a snapshot of the OS disk");
    let sent = match driver.snapshot(vm, &out) {
        Ok(()) => {
            let _ = std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600));
            sink.taken(token, &out)
        }
        Err(e) => {
            let reason = crate::agent::chain(&e);
            tracing::warn!(%vm, %reason, "snapshot failed");
            sink.failed(token, &reason)
        }
    };
    let _ = std::fs::remove_file(&out);
    match sent {
        Ok(()) => {
            tracing::info!(%vm, "snapshot delivered");
            true
        }
        Err(e) => {
            tracing::warn!(%vm, error = %e, "cannot deliver a snapshot; it is taken again");
            false
        }
    }
}

/// The Have and power state of a VM that is not failed.
fn settled(s: &VmState) -> (Have, PowerState) {
    match s {
        VmState::Created => (Have::Created, PowerState::Stopped),
        VmState::Stopped => (Have::Stopped, PowerState::Stopped),
        VmState::Running => (Have::Running, PowerState::Running),
        // `start` holds the VM while it boots, so this is seen only from a racing reader.
        VmState::Starting => (Have::Running, PowerState::Starting),
        VmState::Failed { .. } => (
            Have::Failed {
                generation: 0,
                exists: true,
            },
            PowerState::Failed,
        ),
    }
}

/// A failure's short reason and its details (e.g. the firmware's line).
fn describe(reason: &FailureReason) -> (String, Option<String>) {
    match reason {
        FailureReason::SecureBootViolation { firmware_said } => {
            (reason.to_string(), Some(firmware_said.clone()))
        }
        FailureReason::BootTimeout { .. } => ("boot timeout".into(), Some(reason.to_string())),
        FailureReason::ProcessExited { status } => {
            ("the VM process exited".into(), Some(status.clone()))
        }
        FailureReason::LaunchFailed { error } => ("launch failed".into(), Some(error.clone())),
    }
}

/// The last [`CONSOLE_TAIL_BYTES`] of a serial log, starting at a character boundary.
pub fn console_tail(path: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(CONSOLE_TAIL_BYTES)))
        .is_err()
    {
        return String::new();
    }
    let mut bytes = Vec::new();
    if f.take(CONSOLE_TAIL_BYTES).read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    // Skip UTF-8 continuation bytes a cut left at the start.
    let start = bytes
        .iter()
        .position(|b| b & 0xc0 != 0x80)
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The boot evidence in a serial log: the first complete block between
/// [`strata_compute::EVENTLOG_BEGIN`] and [`strata_compute::EVENTLOG_END`], and the
/// [`strata_compute::PCR_LINE`] lines after it. `None` when there is none, it is not valid
/// base64, or it is longer than [`MAX_EVENT_LOG_BASE64`].
pub fn boot_evidence(serial: &str) -> Option<BootEvidence> {
    let mut lines = serial.lines().map(str::trim);
    lines
        .by_ref()
        .find(|l| *l == strata_compute::EVENTLOG_BEGIN)?;
    let mut text = String::new();
    let mut ended = false;
    for line in lines.by_ref() {
        if line == strata_compute::EVENTLOG_END {
            ended = true;
            break;
        }
        if text.len() + line.len() > MAX_EVENT_LOG_BASE64 {
            return None;
        }
        text.push_str(line);
    }
    if !ended {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .ok()?;
    let mut pcrs = BTreeMap::new();
    for line in lines {
        if line == strata_compute::READY_MARKER {
            break;
        }
        let Some(rest) = line.strip_prefix(strata_compute::PCR_LINE) else {
            continue;
        };
        let Some((index, value)) = rest.split_once(' ') else {
            continue;
        };
        let (Ok(index), value) = (index.parse::<u32>(), value.trim()) else {
            continue;
        };
        if index < 24 && value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            pcrs.insert(index.to_string(), value.to_ascii_lowercase());
        }
    }
    Some(BootEvidence {
        event_log: base64::engine::general_purpose::STANDARD.encode(bytes),
        pcrs,
    })
}

/// [`boot_evidence`] of the serial log file at `path` (its first [`MAX_SERIAL_SCAN`] bytes).
pub fn boot_evidence_of(path: &Path) -> Option<BootEvidence> {
    let f = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    f.take(MAX_SERIAL_SCAN).read_to_end(&mut bytes).ok()?;
    boot_evidence(&String::from_utf8_lossy(&bytes))
}

/// One action on one VM, on its own thread.
struct Work {
    driver: Arc<dyn Hypervisor>,
    images: Arc<ImageStore>,
    network: Arc<dyn HostNetwork>,
    /// The VM's network interfaces.
    nics: Vec<VmNic>,
    /// Where imported images come from.
    fetcher: Option<Arc<dyn ImageFetcher>>,
    shared: Arc<Shared>,
    vm_dir: Option<PathBuf>,
    id: VmId,
    /// The assignment's generation when the action was dispatched.
    generation: u64,
}

enum Outcome {
    Settled(VmState),
    Failed {
        exists: bool,
        reason: String,
        detail: Option<String>,
    },
    Deleted,
}

impl Work {
    fn run(self, action: Action, desired: Option<DesiredVm>, leftover: bool) {
        let outcome = match action {
            Action::Create(_) => self.create(desired),
            Action::Start(_) => self.start(desired.as_ref()),
            Action::Stop(_) => self.stop(),
            Action::Delete(_) => self.delete(leftover),
        };
        // Once per boot: the guest printed its evidence before it said it was ready.
        let evidence = match (&outcome, &self.vm_dir) {
            (Outcome::Settled(VmState::Running), Some(dir)) => {
                boot_evidence_of(&dir.join(self.id.as_str()).join("serial.log"))
            }
            _ => None,
        };
        let mut t = self.shared.lock();
        t.workers = t.workers.saturating_sub(1);
        t.dirty += 1;
        t.woken = true;
        if let Some(e) = t.vms.get_mut(&self.id) {
            match outcome {
                Outcome::Settled(VmState::Failed { reason }) => {
                    tracing::warn!(vm = %self.id, %reason, "VM failed");
                    let (r, d) = describe(&reason);
                    e.fail(self.generation, true, r, d);
                }
                Outcome::Settled(s) => {
                    let (have, power) = settled(&s);
                    e.set(have, power, None);
                    if evidence.is_some() {
                        e.evidence = evidence;
                    }
                }
                Outcome::Failed {
                    exists,
                    reason,
                    detail,
                } => {
                    tracing::warn!(vm = %self.id, %reason, detail = detail.as_deref().unwrap_or(""), "VM action failed");
                    e.fail(self.generation, exists, reason, detail);
                }
                Outcome::Deleted => e.set(Have::Stopped, PowerState::Deleted, None),
            }
        }
        drop(t);
        self.shared.cond.notify_all();
    }

    fn failed(&self, exists: bool, err: &dyn std::error::Error) -> Outcome {
        Outcome::Failed {
            exists,
            reason: crate::agent::chain(err),
            detail: None,
        }
    }

    fn create(&self, desired: Option<DesiredVm>) -> Outcome {
        let Some(d) = desired else {
            return Outcome::Failed {
                exists: false,
                reason: "no assignment to create the VM from".into(),
                detail: None,
            };
        };
        let id = self.id.clone();
        let resolved = match &d.image_content {
            Some(c) => self.images.resolve_content(
                &c.sha256,
                c.size_bytes,
                self.fetcher.as_deref(),
                &mut |line| tracing::info!(vm = %id, "{line}"),
            ),
            None => self.images.resolve(&d.image, &mut |line| {
                tracing::info!(vm = %id, image = %d.image, "{line}");
            }),
        };
        let image = match resolved {
            Ok(path) => path,
            Err(crate::images::ImageProblem::NotFound(name)) => {
                return Outcome::Failed {
                    exists: false,
                    reason: format!("image {name} not found on host"),
                    detail: None,
                };
            }
            Err(e) => return self.failed(false, &e),
        };
        // Restore: the snapshot's bytes, fetched and checked like an imported image's.
        let disk_source = match &d.disk_source {
            None => None,
            Some(c) => match self.images.resolve_content(
                &c.sha256,
                c.size_bytes,
                self.fetcher.as_deref(),
                &mut |line| tracing::info!(vm = %id, "{line}"),
            ) {
                Ok(path) => Some(path),
                Err(e) => return self.failed(false, &e),
            },
        };
        let spec = VmSpec {
            id: self.id.clone(),
            image,
            vcpus: d.vcpus,
            memory_mib: d.memory_mib,
            secure_boot: d.secure_boot,
            vtpm: d.vtpm,
            vtpm_key: d.vtpm_key,
            disk_key: d.disk_key,
            disk_size_bytes: d.disk_size_bytes,
            nics: self.network.nic_specs(&d.nics),
            disk_source,
        };
        match self.driver.create(spec) {
            Ok(()) => Outcome::Settled(VmState::Created),
            Err(HypervisorError::Exists(_)) => Outcome::Failed {
                exists: false,
                reason:
                    "the VM's files are from an earlier agent run and the driver cannot adopt them"
                        .into(),
                detail: self
                    .vm_dir
                    .as_ref()
                    .map(|d| format!("{} exists", d.join(self.id.as_str()).display())),
            },
            Err(e) => self.failed(false, &e),
        }
    }

    /// Plugs the VM's taps (owned by its uid), then boots it; a boot that does not end
    /// Running unplugs them again.
    fn start(&self, desired: Option<&DesiredVm>) -> Outcome {
        // A VM adopted from an earlier agent run has no keys yet: they come with its
        // assignment (never from disk).
        if let Some(d) = desired
            && let Err(e) =
                self.driver
                    .supply_keys(&self.id, d.vtpm_key.clone(), d.disk_key.clone())
        {
            return self.failed(true, &e);
        }
        let owner = match self.driver.owner(&self.id) {
            Ok(o) => o,
            Err(e) => return self.failed(true, &e),
        };
        if let Err(e) = self.network.plug(&self.id, &self.nics, owner) {
            self.unplug();
            return Outcome::Failed {
                exists: true,
                reason: "the VM's network interfaces could not be plugged".into(),
                detail: Some(crate::agent::chain(&e)),
            };
        }
        let outcome = match self.driver.start(&self.id) {
            Ok(s) => Outcome::Settled(s),
            Err(e) => self.failed(true, &e),
        };
        if !matches!(outcome, Outcome::Settled(VmState::Running)) {
            self.unplug();
        }
        outcome
    }

    fn unplug(&self) {
        if let Err(e) = self.network.unplug(&self.id, &self.nics) {
            // The next reconcile removes what is left.
            tracing::warn!(vm = %self.id, error = %crate::agent::chain(&e), "cannot remove the VM's taps");
        }
    }

    fn stop(&self) -> Outcome {
        let outcome = match self.driver.stop(&self.id) {
            Ok(()) => Outcome::Settled(VmState::Stopped),
            // It stopped on its own meanwhile: whatever it is now.
            Err(HypervisorError::WrongState { .. }) => match self.driver.state(&self.id) {
                Ok(s) => Outcome::Settled(s),
                Err(e) => self.failed(true, &e),
            },
            Err(e) => self.failed(true, &e),
        };
        if !matches!(outcome, Outcome::Settled(VmState::Running)) {
            self.unplug();
        }
        outcome
    }

    fn delete(&self, leftover: bool) -> Outcome {
        let outcome = self.delete_vm(leftover);
        if matches!(outcome, Outcome::Deleted) {
            self.unplug();
        }
        outcome
    }

    fn delete_vm(&self, leftover: bool) -> Outcome {
        match self.driver.delete(&self.id) {
            Ok(()) => Outcome::Deleted,
            Err(HypervisorError::NotFound(_)) => {
                if leftover && let Some(dir) = &self.vm_dir {
                    let path = dir.join(self.id.as_str());
                    if let Err(e) = std::fs::remove_dir_all(&path) {
                        return Outcome::Failed {
                            exists: false,
                            reason: format!("cannot remove {}", path.display()),
                            detail: Some(e.to_string()),
                        };
                    }
                }
                Outcome::Deleted
            }
            Err(e) => self.failed(true, &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> VmId {
        VmId::new(s).unwrap()
    }

    /// `desired`: `name:Running@gen` …; `have`: `name:Created|Stopped|Running|Busy|Leftover|
    /// Failed@gen|Gone@gen` (Gone: a failed create) …; `keep`: names; `expect`: `create a,
    /// start b` …, in the order `plan` returns them.
    fn check(trusted: bool, desired: &str, keep: &str, have: &str, expect: &str) {
        let desired: Vec<Want> = desired
            .split_whitespace()
            .map(|w| {
                let (name, rest) = w.split_once(':').unwrap();
                let (state, generation) = rest.split_once('@').unwrap();
                Want {
                    vm_id: id(name),
                    generation: generation.parse().unwrap(),
                    state: match state {
                        "Running" => DesiredState::Running,
                        "Stopped" => DesiredState::Stopped,
                        other => panic!("{other}"),
                    },
                }
            })
            .collect();
        let keep: Vec<VmId> = keep.split_whitespace().map(id).collect();
        let have: BTreeMap<VmId, Have> = have
            .split_whitespace()
            .map(|h| {
                let (name, state) = h.split_once(':').unwrap();
                let (state, generation) = state.split_once('@').unwrap_or((state, "0"));
                let generation = generation.parse().unwrap();
                let h = match state {
                    "Busy" => Have::Busy,
                    "Created" => Have::Created,
                    "Stopped" => Have::Stopped,
                    "Running" => Have::Running,
                    "Leftover" => Have::Leftover,
                    "Failed" => Have::Failed {
                        generation,
                        exists: true,
                    },
                    "Gone" => Have::Failed {
                        generation,
                        exists: false,
                    },
                    other => panic!("{other}"),
                };
                (id(name), h)
            })
            .collect();
        let got: Vec<String> = plan(trusted, &desired, &keep, &have)
            .iter()
            .map(|a| match a {
                Action::Create(i) => format!("create {i}"),
                Action::Start(i) => format!("start {i}"),
                Action::Stop(i) => format!("stop {i}"),
                Action::Delete(i) => format!("delete {i}"),
            })
            .collect();
        assert_eq!(got.join(", "), expect, "desired {desired:?} have {have:?}");
    }

    #[test]
    fn plan_table() {
        // Nothing wanted, nothing there.
        check(true, "", "", "", "");
        // New VMs are created first, whatever their desired state.
        check(true, "a:Running@1", "", "", "create a");
        check(true, "a:Stopped@1", "", "", "create a");
        // Then started if they should run.
        check(true, "a:Running@1", "", "a:Created", "start a");
        check(true, "a:Stopped@1", "", "a:Created", "");
        check(true, "a:Running@2", "", "a:Stopped", "start a");
        check(true, "a:Running@2", "", "a:Running", "");
        // Stopped when they should not.
        check(true, "a:Stopped@3", "", "a:Running", "stop a");
        check(true, "a:Stopped@3", "", "a:Stopped", "");
        // Work in flight is never doubled, even when the wish changed.
        check(true, "a:Stopped@3", "", "a:Busy", "");
        check(true, "", "", "a:Busy", "");
        // Not assigned any more: deleted, in any state.
        check(
            true,
            "",
            "",
            "a:Running b:Stopped c:Created",
            "delete a, delete b, delete c",
        );
        check(true, "", "", "a:Failed@1 b:Gone@1", "delete a, delete b");
        check(true, "b:Running@1", "", "a:Running b:Running", "delete a");
        // A failure stays until the generation moves (no boot loop).
        check(true, "a:Running@4", "", "a:Failed@4", "");
        check(true, "a:Running@5", "", "a:Failed@4", "start a");
        check(true, "a:Stopped@5", "", "a:Failed@4", "");
        check(true, "a:Running@4", "", "a:Gone@4", "");
        check(true, "a:Running@5", "", "a:Gone@4", "create a");
        check(true, "a:Stopped@5", "", "a:Gone@4", "create a");
        // Files of an earlier run: never touched while assigned, removed when not.
        check(true, "a:Running@1", "", "a:Leftover", "");
        check(true, "", "", "a:Leftover", "delete a");
        // An entry the agent rejected keeps its VM.
        check(true, "", "a", "a:Running", "");
        // Untrusted host: the (withheld) list changes nothing.
        check(false, "", "", "a:Running b:Stopped", "");
        check(false, "c:Running@1", "", "a:Running", "");
        // Several at once, independently.
        check(
            true,
            "a:Running@1 b:Stopped@2 c:Running@1",
            "",
            "b:Running c:Busy d:Stopped",
            "create a, stop b, delete d",
        );
    }

    fn parse(body: &str) -> Assignments {
        Assignments::parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn parses_the_contract() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let a = parse(&format!(
            r#"{{"host":"h1","state":"Trusted","attestNow":true,"virtualMachines":[
              {{"id":"/subscriptions/s/resourceGroups/rg/providers/Strata.Compute/virtualMachines/vm1",
                "vmId":"vm-0123456789abcdef","generation":7,"desiredState":"Running","vcpus":1,
                "memoryMib":512,"image":"tiny","secureBoot":true,"vTpm":true,"vTpmKey":"{key}","diskKey":"{key}"}},
              {{"id":"/x/vm2","vmId":"vm-2","generation":1,"desiredState":"Stopped","vcpus":2,
                "memoryMib":256,"image":"tiny","secureBoot":false,"vTpm":false,"diskKey":"{key}"}}]}}"#
        ));
        assert!(a.trusted() && a.attest_now);
        assert_eq!(a.vms.len(), 2);
        assert!(a.rejected.is_empty());
        let v = &a.vms[0];
        assert_eq!(v.vm_id.as_str(), "vm-0123456789abcdef");
        assert_eq!(
            (v.generation, v.state, v.vcpus, v.memory_mib),
            (7, DesiredState::Running, 1, 512)
        );
        assert!(v.vtpm && v.vtpm_key.is_some() && v.secure_boot);
        // The key never shows in debug output.
        assert!(!format!("{a:?}").contains(&key));
        assert!(a.vms[1].vtpm_key.is_none() && !a.vms[1].secure_boot);
    }

    #[test]
    fn an_entry_without_a_disk_key_is_rejected() {
        let a = parse(
            r#"{"host":"h1","state":"Trusted","virtualMachines":[
              {"id":"/a","vmId":"vm-a","generation":1,"desiredState":"Running","vcpus":1,"memoryMib":512,"image":"tiny","vTpm":false},
              {"id":"/b","vmId":"vm-b","generation":1,"desiredState":"Running","vcpus":1,"memoryMib":512,"image":"tiny","vTpm":false,"diskKey":"AAAA"},
              {"id":"/c","vmId":"vm-c","generation":1,"desiredState":"Stopped","vcpus":1,"memoryMib":512,"image":"tiny","vTpm":false}]}"#,
        );
        // A Stopped entry without its key (withheld: the customer key is disabled) only stops.
        assert_eq!(a.vms.len(), 1);
        assert!(a.vms[0].disk_key.is_none() && a.vms[0].state == DesiredState::Stopped);
        let reasons: Vec<&str> = a.rejected.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "the assignment carries no diskKey: every VM disk is encrypted",
                "diskKey must be 32 bytes, not 3"
            ]
        );
    }

    #[test]
    fn network_interfaces_parse_and_an_unresolved_one_rejects_its_entry() {
        let a = parse(
            r#"{"host":"h1","state":"Trusted","virtualMachines":[
              {"id":"/a","vmId":"vm-a","generation":1,"desiredState":"Stopped","vcpus":1,"memoryMib":512,"image":"tiny",
               "networkInterfaces":[{"id":"/nic-a","macAddress":"02:00:5e:00:00:0a","privateIpAddress":"10.0.0.4","prefixLength":24,"gateway":"10.0.0.1"}]},
              {"id":"/b","vmId":"vm-b","generation":1,"desiredState":"Stopped","vcpus":1,"memoryMib":512,"image":"tiny",
               "networkInterfaces":[{"id":"/nic-b"}]}],
              "network":{"etag":"e","topology":{"virtualNetworks":[]}}}"#,
        );
        assert_eq!(a.vms.len(), 1);
        let n = &a.vms[0].nics[0];
        assert_eq!(
            (n.id.as_str(), n.mac, n.prefix_len, n.gateway.to_string()),
            (
                "/nic-a",
                [2, 0, 0x5e, 0, 0, 0x0a],
                24,
                "10.0.0.1".to_owned()
            )
        );
        assert!(
            a.rejected[0].reason.contains("'/nic-b' has no address"),
            "{:?}",
            a.rejected
        );
        assert_eq!(a.network.as_ref().map(|(e, _)| e.as_str()), Some("e"));
    }

    #[test]
    fn bad_entries_are_rejected_not_dropped() {
        let a = parse(
            r#"{"host":"h1","state":"Trusted","virtualMachines":[
              {"id":"/a","vmId":"vm-a","generation":1,"desiredState":"Running","vcpus":1,"memoryMib":512,"image":"../etc","vTpm":false},
              {"id":"/b","vmId":"vm-b","generation":1,"desiredState":"Running","vcpus":1,"memoryMib":512,"image":"tiny","vTpm":true},
              {"id":"/c","vmId":"vm-c","generation":1,"desiredState":"Running","vcpus":1,"memoryMib":512,"image":"tiny","vTpm":true,"vTpmKey":"AAAA"},
              {"id":"/d","vmId":"VM D","generation":1,"desiredState":"Running","vcpus":1,"memoryMib":512,"image":"tiny","vTpm":false},
              {"id":"/e","vmId":"vm-e","generation":1,"desiredState":"Paused","vcpus":1,"memoryMib":512,"image":"tiny","vTpm":false},
              {"id":"/f","vmId":"vm-f","generation":1,"desiredState":"Running","vcpus":1,"memoryMib":512,"image":"tiny","vTpm":false,"diskKey":"WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo="},
              {"id":"/g","vmId":"vm-f","generation":1,"desiredState":"Running","vcpus":1,"memoryMib":512,"image":"tiny","vTpm":false}]}"#,
        );
        assert_eq!(a.vms.len(), 1);
        let got: Vec<(&str, Option<&str>)> = a
            .rejected
            .iter()
            .map(|r| (r.arm_id.as_str(), r.vm_id.as_ref().map(VmId::as_str)))
            .collect();
        assert_eq!(
            got,
            [
                ("/a", Some("vm-a")),
                ("/b", Some("vm-b")),
                ("/c", Some("vm-c")),
                ("/d", None),
                ("/e", Some("vm-e")),
                ("/g", Some("vm-f")),
            ]
        );
        assert!(
            a.rejected[2].reason.contains("32 bytes"),
            "{:?}",
            a.rejected[2]
        );
        // Not Trusted: the list is withheld.
        assert!(!parse(r#"{"host":"h1","state":"Quarantined","virtualMachines":[]}"#).trusted());
        assert!(Assignments::parse(b"{\"virtualMachines\":3}").is_err());
    }

    #[test]
    fn console_tail_is_the_end_at_a_char_boundary() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("serial.log");
        assert_eq!(console_tail(&p), "");
        let mut text = "é".repeat(10_000);
        text.push_str("\nSTRATA-GUEST-READY\n");
        std::fs::write(&p, &text).unwrap();
        let tail = console_tail(&p);
        assert!(tail.len() <= CONSOLE_TAIL_BYTES as usize);
        assert!(tail.ends_with("STRATA-GUEST-READY\n"));
        assert!(!tail.contains('\u{fffd}'));
    }

    #[test]
    fn boot_evidence_is_lifted_from_the_serial_log() {
        let log = base64::engine::general_purpose::STANDARD.encode([7u8; 100]);
        let (a, b) = log.split_at(60);
        let pcr = |n: u32, c: &str| format!("STRATA-GUEST-PCR {n} {}\r\n", c.repeat(64));
        let serial = format!(
            "BdsDxe: booting\r\nSTRATA-GUEST-TPM 2\r\nSTRATA-GUEST-EVENTLOG-BEGIN\r\n{a}\r\n{b}\r\n\
             STRATA-GUEST-EVENTLOG-END\r\n{}{}STRATA-GUEST-PCR 5 zz\r\n{}STRATA-GUEST-READY\r\n{}",
            pcr(0, "A"),
            pcr(10, "b"),
            pcr(24, "c"),
            pcr(7, "d"),
        );
        let e = boot_evidence(&serial).unwrap();
        assert_eq!(e.event_log, log);
        let pcrs: Vec<(&str, &str)> = e.pcrs.iter().map(|(k, v)| (k.as_str(), &v[..2])).collect();
        assert_eq!(
            pcrs,
            vec![("0", "aa"), ("10", "bb")],
            "bad and out-of-range lines, and lines after ready, are not PCRs"
        );
        // No block, an unfinished block, or one that is not base64: no evidence.
        assert_eq!(boot_evidence("STRATA-GUEST-READY\n"), None);
        assert_eq!(
            boot_evidence(&format!("STRATA-GUEST-EVENTLOG-BEGIN\n{log}\n")),
            None
        );
        assert_eq!(
            boot_evidence("STRATA-GUEST-EVENTLOG-BEGIN\nnot base64!\nSTRATA-GUEST-EVENTLOG-END\n"),
            None
        );
        let huge = "A".repeat(MAX_EVENT_LOG_BASE64 + 4);
        assert_eq!(
            boot_evidence(&format!(
                "STRATA-GUEST-EVENTLOG-BEGIN\n{huge}\nSTRATA-GUEST-EVENTLOG-END\n"
            )),
            None
        );
    }
}
