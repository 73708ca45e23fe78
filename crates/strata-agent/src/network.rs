//! The host's side of its VMs' virtual networks: the control plane's topology turned into the
//! `strata-netdp` dataplane, and a tap per VM network interface.
//!
//! ```text
//!  assignments poll ──▶ NetDesired (topology + etag, the local NICs with their MACs)
//!        │
//!        ▼  reconcile (poll thread)
//!  HostPlan::new(topology, local NICs) ─▶ Host::apply   only when the etag or the NIC set
//!        │                                              changed (or every REAPPLY_EVERY,
//!        │                                              which repairs drift)
//!        └─▶ taps of NICs whose VM is not running here (deleted, stopped, crashed) removed
//!
//!  VM worker: start ─▶ plug(vm, NICs, its uid/gid) ─▶ tap per NIC, owned by the VM's uid,
//!                      on its network's bridge (Host::attach_port) ─▶ driver.start (QEMU opens
//!                      the tap by name as that uid)
//!             stop/delete ─▶ driver ─▶ unplug(vm): its taps deleted
//! ```
//!
//! DDoS basics: every interface gets netdp's [`DdosPolicy::default`] (the control plane may
//! raise or lower its limits per interface with `properties.ddosSettings`, carried in the
//! assignment as [`DdosSettings`]; the limits cannot be turned off). On every poll the VM loop
//! reads each local interface's drop counters from the live ruleset
//! ([`HostNetwork::ddos_sample`]: netdp's `Host::ddos_counters`), feeds them to a
//! [`MitigationMonitor`] and reports counters and mitigation events to the control plane
//! (`POST /fabric/v1/hosts/{host}/nicstatus`).
//!
//! [`HostNetwork`] has two implementations with the same API: [`NetdpNetwork`] (real: `ip`,
//! `nft`, `bridge`; in the agent's network namespace or a named one) and [`SimNetwork`]
//! (nothing happens: `--hypervisor sim` hosts, scale tests). Tap names are
//! `strata_netdp::names::port_name(nic id)`, so an agent that restarts finds its taps again;
//! netdp's apply is idempotent, so a restarted agent changes nothing that is already right.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use strata_compute::{GuestAddress, NicSpec, VmId};
use strata_netdp::ddos::{DdosPolicy, MitigationEvent, MitigationMonitor, NicDdosCounters, Rate};
use strata_netdp::{Host, HostError, HostPlan, PlanError, names};
use strata_netpol::Topology;

/// How often the dataplane is re-applied although nothing changed (drift repair).
pub const REAPPLY_EVERY: Duration = Duration::from_secs(60);

/// One network interface of a VM, as the assignment carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmNic {
    /// The interface's ARM id.
    pub id: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The control plane's overrides of the default DDoS limits (`None`: the defaults).
    pub ddos: Option<DdosSettings>,
}

/// A token-bucket rate as the control plane sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WireRate {
    pub per_second: u32,
    pub burst: u32,
}

impl WireRate {
    fn rate(self) -> Rate {
        // The control plane validated both (≥ 1); a zero would mean "drop everything".
        let per_second = self.per_second.max(1);
        Rate::new(per_second, self.burst.max(per_second))
    }
}

/// An interface's overrides of [`DdosPolicy::default`] (`properties.ddosSettings`, validated by
/// the control plane). Absent fields keep their default; nothing turns a limit off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DdosSettings {
    #[serde(default)]
    pub syn_per_source: Option<WireRate>,
    #[serde(default)]
    pub syn_total: Option<WireRate>,
    #[serde(default)]
    pub new_flows_per_source: Option<WireRate>,
    #[serde(default)]
    pub max_connections: Option<u32>,
}

impl DdosSettings {
    /// The default policy with these overrides.
    pub fn policy(&self) -> DdosPolicy {
        let mut p = DdosPolicy::default();
        if let Some(r) = self.syn_per_source {
            p.syn_per_source = Some(r.rate());
        }
        if let Some(r) = self.syn_total {
            p.syn_total = Some(r.rate());
        }
        if let Some(r) = self.new_flows_per_source {
            p.per_source = Some(r.rate());
        }
        if let Some(c) = self.max_connections {
            p.max_connections = Some(c.max(1));
        }
        p
    }
}

/// One poll's DDoS view of the host: every local interface's counters and the mitigations
/// that started or ended since the previous poll.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DdosReport {
    pub nics: BTreeMap<String, NicDdosCounters>,
    pub events: Vec<MitigationEvent>,
}

impl VmNic {
    /// The host-side device of the interface (a tap for a VM, a veth in tests).
    pub fn port(&self) -> String {
        names::port_name(&self.id)
    }
}

/// What the host's networking should be: the topology the control plane sent (`etag`
/// identifies it) and the interfaces of the VMs assigned here.
#[derive(Clone, Debug, Default)]
pub struct NetDesired {
    pub etag: String,
    pub topology: Topology,
    pub nics: Vec<VmNic>,
}

impl NetDesired {
    /// What identifies a plan: equal keys give equal plans.
    fn key(&self) -> String {
        let mut nics: Vec<String> = self
            .nics
            .iter()
            .map(|n| format!("{}={}{:?}", n.id, names::mac_string(n.mac), n.ddos))
            .collect();
        nics.sort();
        format!("{}|{}", self.etag, nics.join(","))
    }
}

/// The body of `POST /fabric/v1/hosts/{host}/nicstatus`:
///
/// ```text
/// { "networkInterfaces": [ { "id": NIC, "counters": { "synFlood": {"packets","bytes"},
///                            "perSourceRate": {…}, "conntrackCap": {…} } } ],
///   "events": [ { "nic": NIC, "event": "MitigationStarted"|"MitigationEnded",
///                 "mechanism": "SynFlood"|"PerSourceRate"|"ConntrackCap",
///                 "dropsPerSecond": F (started only) } ] }
/// ```
pub fn nic_status_body(
    nics: &BTreeMap<String, NicDdosCounters>,
    events: &[MitigationEvent],
) -> Value {
    use strata_netdp::ddos::{Dropped, Mechanism};
    let dropped = |d: Dropped| serde_json::json!({ "packets": d.packets, "bytes": d.bytes });
    let mechanism = |m: &Mechanism| format!("{m:?}");
    serde_json::json!({
        "networkInterfaces": nics.iter().map(|(id, c)| serde_json::json!({
            "id": id,
            "counters": {
                "synFlood": dropped(c.syn_flood),
                "perSourceRate": dropped(c.per_source_rate),
                "conntrackCap": dropped(c.conntrack_cap),
            },
        })).collect::<Vec<_>>(),
        "events": events.iter().map(|e| match e {
            MitigationEvent::Started { nic, mechanism: m, rate } => serde_json::json!({
                "nic": nic, "event": "MitigationStarted", "mechanism": mechanism(m),
                "dropsPerSecond": rate,
            }),
            MitigationEvent::Ended { nic, mechanism: m } => serde_json::json!({
                "nic": nic, "event": "MitigationEnded", "mechanism": mechanism(m),
            }),
        }).collect::<Vec<_>>(),
    })
}

/// Why the host's networking could not be made as asked.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("the host's network plan could not be made")]
    Plan(#[source] PlanError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(
        "network interface '{0}' is not in this host's network plan (the control plane sent no topology for it)"
    )]
    NotPlanned(String),
    #[error("'{command}' printed something other than the expected JSON")]
    Unexpected { command: String },
}

/// The host's networking for its VMs: real ([`NetdpNetwork`]) or simulated ([`SimNetwork`]).
pub trait HostNetwork: Send + Sync {
    /// Brings the dataplane to `desired` and removes the taps of interfaces not in `keep` (the
    /// interfaces of VMs that run here or have work in flight).
    fn reconcile(&self, desired: &NetDesired, keep: &BTreeSet<String>) -> Result<(), NetError>;
    /// What the VM's hypervisor gets for its interfaces (the simulation gives none: no tap
    /// exists for QEMU to open).
    fn nic_specs(&self, nics: &[VmNic]) -> Vec<NicSpec>;
    /// Makes the VM's taps, owned by `owner` (uid, gid), attached to their bridges.
    fn plug(&self, vm: &VmId, nics: &[VmNic], owner: Option<(u32, u32)>) -> Result<(), NetError>;
    /// Removes the VM's taps (nothing when it has none).
    fn unplug(&self, vm: &VmId, nics: &[VmNic]) -> Result<(), NetError>;
    /// Reads every local interface's DDoS counters and runs the mitigation monitor over them
    /// (`None`: no dataplane, nothing to report — the simulation).
    fn ddos_sample(&self) -> Result<Option<DdosReport>, NetError> {
        Ok(None)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section leaves the state consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Nothing real happens; the plugged interfaces are remembered so that a test can look.
#[derive(Debug, Default)]
pub struct SimNetwork {
    plugged: Mutex<BTreeMap<VmId, Vec<String>>>,
    reconciles: Mutex<Option<String>>,
}

impl SimNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    /// The interfaces each VM has plugged.
    pub fn plugged(&self) -> BTreeMap<VmId, Vec<String>> {
        lock(&self.plugged).clone()
    }

    /// The etag of the last reconcile.
    pub fn last_etag(&self) -> Option<String> {
        lock(&self.reconciles).clone()
    }
}

impl HostNetwork for SimNetwork {
    fn reconcile(&self, desired: &NetDesired, keep: &BTreeSet<String>) -> Result<(), NetError> {
        *lock(&self.reconciles) = Some(desired.etag.clone());
        lock(&self.plugged).retain(|_, nics| nics.iter().all(|n| keep.contains(n)));
        Ok(())
    }

    fn nic_specs(&self, _nics: &[VmNic]) -> Vec<NicSpec> {
        Vec::new()
    }

    fn plug(&self, vm: &VmId, nics: &[VmNic], _owner: Option<(u32, u32)>) -> Result<(), NetError> {
        if !nics.is_empty() {
            lock(&self.plugged).insert(vm.clone(), nics.iter().map(|n| n.id.clone()).collect());
        }
        Ok(())
    }

    fn unplug(&self, vm: &VmId, _nics: &[VmNic]) -> Result<(), NetError> {
        lock(&self.plugged).remove(vm);
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Applied {
    /// `NetDesired::key` of the plan below.
    key: Option<String>,
    plan: Option<HostPlan>,
    at: Option<Instant>,
}

/// The real dataplane: `strata-netdp` in the agent's network namespace (or a named one).
#[derive(Debug)]
pub struct NetdpNetwork {
    host: Host,
    applied: Mutex<Applied>,
    monitor: Mutex<MitigationMonitor>,
}

impl NetdpNetwork {
    /// The dataplane in `host` (`Host::current()` for a host agent).
    pub fn new(host: Host) -> Self {
        Self {
            host,
            applied: Mutex::new(Applied::default()),
            monitor: Mutex::new(MitigationMonitor::new()),
        }
    }

    /// The dataplane in the agent's own network namespace (a host agent's).
    pub fn current() -> Self {
        Self::new(Host::current())
    }

    /// What the host needs and lacks (empty: it can run), for a clear error at agent start.
    pub fn missing() -> Vec<&'static str> {
        ["ip", "bridge", "nft", "conntrack"]
            .into_iter()
            .filter(|p| !on_path(p))
            .collect()
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The plan last applied.
    pub fn plan(&self) -> Option<HostPlan> {
        lock(&self.applied).plan.clone()
    }

    /// Taps (`stn…`, kind tun) that exist: name → owner uid.
    fn taps(&self) -> Result<BTreeMap<String, Option<u64>>, NetError> {
        let args = ["-j", "-d", "link", "show"];
        let out = self.host.run("ip", &args)?;
        let links: Vec<Value> = serde_json::from_str(&out).map_err(|_| NetError::Unexpected {
            command: format!("ip {}", args.join(" ")),
        })?;
        Ok(links
            .iter()
            .filter(|l| l.pointer("/linkinfo/info_kind").and_then(Value::as_str) == Some("tun"))
            .filter_map(|l| {
                let name = l.get("ifname")?.as_str()?;
                name.starts_with(names::PORT_PREFIX).then(|| {
                    (
                        name.to_owned(),
                        l.pointer("/linkinfo/info_data/user")
                            .and_then(Value::as_u64),
                    )
                })
            })
            .collect())
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

impl HostNetwork for NetdpNetwork {
    fn reconcile(&self, desired: &NetDesired, keep: &BTreeSet<String>) -> Result<(), NetError> {
        let mut applied = lock(&self.applied);
        let key = desired.key();
        let due = applied.key.as_deref() != Some(key.as_str())
            || applied.at.is_none_or(|at| at.elapsed() >= REAPPLY_EVERY);
        if due
            && desired.nics.is_empty()
            && applied.plan.is_none()
            && self.host.live_digest()?.is_none()
        {
            // No VM interface here and no dataplane of ours: nothing to make or clean up (and
            // the host's forwarding is left as it is).
            applied.key = Some(key);
            applied.at = Some(Instant::now());
        } else if due {
            // Interfaces the topology lacks are left out (their VMs cannot plug, and say why);
            // the others still get their network.
            let local: Vec<&VmNic> = desired
                .nics
                .iter()
                .filter(|n| {
                    desired
                        .topology
                        .network_interfaces
                        .iter()
                        .any(|t| t.id == n.id)
                })
                .collect();
            for n in &desired.nics {
                if !local.iter().any(|l| l.id == n.id) {
                    tracing::warn!(nic = %n.id, "network interface not in the topology sent to this host");
                }
            }
            let mut plan = HostPlan::new(&desired.topology, local.iter().map(|n| n.id.as_str()))
                .map_err(NetError::Plan)?;
            // The interface's MAC is the control plane's (what the VM's NIC gets), not netdp's
            // hash of its id.
            for n in &mut plan.nics {
                if let Some(l) = local.iter().find(|l| l.id == n.id) {
                    n.mac = l.mac;
                }
            }
            // Every interface keeps netdp's default limits unless the control plane set others.
            for l in &local {
                if let Some(s) = &l.ddos {
                    plan.set_ddos(&l.id, s.policy()).map_err(NetError::Plan)?;
                }
            }
            let report = self.host.apply(&plan)?;
            if report.changed() {
                tracing::info!(ruleset = report.ruleset, changes = report.changes.len(), etag = %desired.etag, "host network applied");
            }
            applied.key = Some(key);
            applied.plan = Some(plan);
            applied.at = Some(Instant::now());
        }
        let keep_ports: BTreeSet<String> = keep.iter().map(|id| names::port_name(id)).collect();
        for tap in self.taps()?.into_keys() {
            if !keep_ports.contains(&tap) {
                tracing::info!(%tap, "removing the tap of an interface whose VM does not run here");
                self.host.run("ip", &["link", "del", "dev", &tap])?;
            }
        }
        Ok(())
    }

    fn nic_specs(&self, nics: &[VmNic]) -> Vec<NicSpec> {
        nics.iter()
            .filter_map(|n| {
                let spec = NicSpec::new(&n.port(), n.mac).ok()?;
                Some(spec.with_address(GuestAddress {
                    ip: n.ip,
                    prefix_len: n.prefix_len,
                    gateway: n.gateway,
                }))
            })
            .collect()
    }

    fn plug(&self, vm: &VmId, nics: &[VmNic], owner: Option<(u32, u32)>) -> Result<(), NetError> {
        if nics.is_empty() {
            return Ok(());
        }
        let applied = lock(&self.applied);
        let plan = applied
            .plan
            .as_ref()
            .ok_or_else(|| NetError::NotPlanned(nics[0].id.clone()))?;
        let taps = self.taps()?;
        for n in nics {
            if plan.nic(&n.id).is_none() {
                return Err(NetError::NotPlanned(n.id.clone()));
            }
            let port = n.port();
            let uid = owner.map(|(u, _)| u64::from(u));
            match taps.get(&port) {
                Some(owned_by) if *owned_by == uid => {}
                found => {
                    if found.is_some() {
                        // Someone else's tap by this name (an earlier VM's): not this VM's.
                        self.host.run("ip", &["link", "del", "dev", &port])?;
                    }
                    let mut args = vec![
                        "tuntap".to_owned(),
                        "add".to_owned(),
                        "dev".to_owned(),
                        port.clone(),
                        "mode".to_owned(),
                        "tap".to_owned(),
                    ];
                    if let Some((u, g)) = owner {
                        args.extend(["user".into(), u.to_string(), "group".into(), g.to_string()]);
                    }
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    self.host.run("ip", &args)?;
                }
            }
            self.host.attach_port(plan, &n.id)?;
            tracing::info!(%vm, nic = %n.id, tap = %port, "tap plugged");
        }
        Ok(())
    }

    fn ddos_sample(&self) -> Result<Option<DdosReport>, NetError> {
        let Some(plan) = lock(&self.applied).plan.clone() else {
            return Ok(None);
        };
        let sample = self.host.ddos_counters(&plan)?;
        let nics = sample.nics.clone();
        let events = lock(&self.monitor).observe(sample);
        for e in &events {
            match e {
                MitigationEvent::Started {
                    nic,
                    mechanism,
                    rate,
                } => {
                    tracing::warn!(%nic, ?mechanism, drops_per_second = rate, "DDoS mitigation started")
                }
                MitigationEvent::Ended { nic, mechanism } => {
                    tracing::info!(%nic, ?mechanism, "DDoS mitigation ended")
                }
            }
        }
        Ok(Some(DdosReport { nics, events }))
    }

    fn unplug(&self, vm: &VmId, nics: &[VmNic]) -> Result<(), NetError> {
        let _serial = lock(&self.applied);
        let taps = self.taps()?;
        for n in nics {
            let port = n.port();
            if taps.contains_key(&port) {
                self.host.run("ip", &["link", "del", "dev", &port])?;
                tracing::info!(%vm, nic = %n.id, tap = %port, "tap removed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use strata_netdp::ddos::{Dropped, Mechanism};

    use super::*;

    #[test]
    fn ddos_settings_override_only_what_they_name_and_report_as_the_door_reads_them() {
        let s: DdosSettings = serde_json::from_value(serde_json::json!({
            "synPerSource": { "perSecond": 5, "burst": 10 }, "maxConnections": 1000 }))
        .unwrap();
        let p = s.policy();
        assert_eq!(p.syn_per_source, Some(Rate::new(5, 10)));
        assert_eq!(p.max_connections, Some(1000));
        let d = DdosPolicy::default();
        assert_eq!((p.syn_total, p.per_source), (d.syn_total, d.per_source));
        assert_eq!(DdosSettings::default().policy(), d);
        // Nothing a control plane sends turns a limit off.
        let zero: DdosSettings = serde_json::from_value(serde_json::json!({
            "synTotal": { "perSecond": 0, "burst": 0 }, "maxConnections": 0 }))
        .unwrap();
        assert_eq!(zero.policy().syn_total, Some(Rate::new(1, 1)));
        assert_eq!(zero.policy().max_connections, Some(1));
        assert!(
            serde_json::from_value::<DdosSettings>(serde_json::json!({ "off": true })).is_err()
        );

        let c = NicDdosCounters {
            syn_flood: Dropped {
                packets: 7,
                bytes: 420,
            },
            ..NicDdosCounters::default()
        };
        let body = nic_status_body(
            &BTreeMap::from([("/nic1".to_owned(), c)]),
            &[
                MitigationEvent::Started {
                    nic: "/nic1".into(),
                    mechanism: Mechanism::SynFlood,
                    rate: 3.5,
                },
                MitigationEvent::Ended {
                    nic: "/nic1".into(),
                    mechanism: Mechanism::ConntrackCap,
                },
            ],
        );
        assert_eq!(
            body,
            serde_json::json!({
                "networkInterfaces": [ { "id": "/nic1", "counters": {
                    "synFlood": { "packets": 7, "bytes": 420 },
                    "perSourceRate": { "packets": 0, "bytes": 0 },
                    "conntrackCap": { "packets": 0, "bytes": 0 } } } ],
                "events": [
                    { "nic": "/nic1", "event": "MitigationStarted", "mechanism": "SynFlood",
                      "dropsPerSecond": 3.5 },
                    { "nic": "/nic1", "event": "MitigationEnded", "mechanism": "ConntrackCap" } ],
            })
        );
    }
}
