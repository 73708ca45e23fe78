//! DDoS basics per network interface, the control plane's half: the per-interface overrides
//! (`properties.ddosSettings`, validated here), what hosts report (`POST
//! /fabric/v1/hosts/{host}/nicstatus`: each interface's drop counters and mitigation events)
//! and how it is shown (`POST …/networkInterfaces/{nic}/ddosCounters`).
//!
//! **Defaults.** Every interface a host programs gets `strata-netdp`'s `DdosPolicy::default()`
//! (why those numbers: `strata_netdp::ddos`): new TCP flows 200/s per source (burst 400) and
//! 10,000/s from all sources, other new flows 500/s per source (burst 1,000), 32,768 tracked
//! connections per direction. `ddosSettings` may move each limit within bounds but cannot turn
//! one off (secure by default):
//!
//! ```text
//! "ddosSettings": { "synPerSource":      { "perSecond": 1..=1000000, "burst": perSecond..=1000000 },
//!                   "synTotal":          { … },
//!                   "newFlowsPerSource": { … },
//!                   "maxConnections":    16..=1048576 }            (every field optional)
//! ```
//!
//! **Counters live in memory.** Reports arrive every few seconds per host; writing them to the
//! interface's document would churn its revision (and the network revision every host's
//! assignments hang on). The latest report per interface is kept in [`Board`] and lost on a
//! control-plane restart (the host reports again within seconds); with several replicas each
//! shows what reached it (a host reports to one endpoint, so one replica has it — known
//! limitation, not yet shared through the store). Counters count from the
//! host's last ruleset load (a reconcile that changes the ruleset starts them from zero, and
//! the host's monitor takes that as a reset). What must last — a
//! mitigation starting or ending — is an audit entry
//! (`Strata.Network/networkInterfaces/ddosMitigation/action`, scope the interface, details: the
//! mechanism, the drop rate and the counters).
//!
//! **Only a host's own interfaces.** A report about an interface that is not attached to a VM
//! assigned to the reporting host is refused (audited, bounded per host) and stored nowhere.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strata_audit::AuditEntry;
use strata_types::ApiError;

use crate::app::{App, log_chain};
use crate::docs::Doc;
use crate::kinds::Kind;

/// Most interfaces one report may carry.
const MAX_NICS: usize = 4096;
/// Most events one report may carry.
const MAX_EVENTS: usize = 1024;
/// The largest rate or burst accepted.
const MAX_RATE: u32 = 1_000_000;
/// Bounds of `maxConnections`.
const CONNECTIONS: (u32, u32) = (16, 1 << 20);

/// A token-bucket rate (`perSecond` on average, up to `burst` at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateIn {
    pub per_second: u32,
    pub burst: u32,
}

/// `properties.ddosSettings`: overrides of the default limits (absent: the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DdosSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_per_source: Option<RateIn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_total: Option<RateIn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_flows_per_source: Option<RateIn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("InvalidDdosSettings", message)
}

/// Parses and checks `ddosSettings` as a client sent it (`None` or `null`: no overrides).
pub fn settings(v: Option<&Value>) -> Result<Option<DdosSettings>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let s: DdosSettings = serde_json::from_value(v.clone()).map_err(|e| {
        invalid(format!(
            "ddosSettings: {e}; use synPerSource, synTotal, newFlowsPerSource ({{\"perSecond\": N, \"burst\": M}}) and maxConnections"
        ))
    })?;
    for (name, rate) in [
        ("synPerSource", s.syn_per_source),
        ("synTotal", s.syn_total),
        ("newFlowsPerSource", s.new_flows_per_source),
    ] {
        let Some(r) = rate else { continue };
        if r.per_second == 0 || r.per_second > MAX_RATE {
            return Err(invalid(format!(
                "ddosSettings.{name}.perSecond {} is out of range: use 1 to {MAX_RATE} (limits can be moved, not turned off)",
                r.per_second
            )));
        }
        if r.burst < r.per_second || r.burst > MAX_RATE {
            return Err(invalid(format!(
                "ddosSettings.{name}.burst {} is out of range: use {} (its perSecond) to {MAX_RATE}",
                r.burst, r.per_second
            )));
        }
    }
    if let Some(c) = s.max_connections
        && !(CONNECTIONS.0..=CONNECTIONS.1).contains(&c)
    {
        return Err(invalid(format!(
            "ddosSettings.maxConnections {c} is out of range: use {} to {}",
            CONNECTIONS.0, CONNECTIONS.1
        )));
    }
    Ok((s != DdosSettings::default()).then_some(s))
}

/// The stored overrides of an interface document (what its host's assignment carries).
pub fn stored(doc: &Doc) -> Option<DdosSettings> {
    doc.properties
        .get("ddosSettings")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The defaults every host applies (`strata_netdp::DdosPolicy::default()`), in the shape of
/// `ddosSettings`: derived from the dataplane's own policy, so the two cannot drift.
pub fn defaults() -> DdosSettings {
    let d = strata_netdp::DdosPolicy::default();
    let rate = |r: Option<strata_netdp::Rate>| {
        r.map(|r| RateIn {
            per_second: r.per_second,
            burst: r.burst,
        })
    };
    DdosSettings {
        syn_per_source: rate(d.syn_per_source),
        syn_total: rate(d.syn_total),
        new_flows_per_source: rate(d.per_source),
        max_connections: d.max_connections,
    }
}

/// The limits in force for an interface: the defaults with its overrides.
pub fn effective(settings: Option<DdosSettings>) -> Value {
    let s = settings.unwrap_or_default();
    let d = defaults();
    json!(DdosSettings {
        syn_per_source: s.syn_per_source.or(d.syn_per_source),
        syn_total: s.syn_total.or(d.syn_total),
        new_flows_per_source: s.new_flows_per_source.or(d.new_flows_per_source),
        max_connections: s.max_connections.or(d.max_connections),
    })
}

/// What the host last said about one interface.
#[derive(Clone, Debug)]
struct NicStatus {
    host: String,
    counters: Counters,
    mitigating: BTreeSet<String>,
    updated: i64,
}

/// The latest DDoS report per interface (by lowercase id), in memory.
#[derive(Debug, Default)]
pub struct Board(Mutex<HashMap<String, NicStatus>>);

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NicStatus>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Dropped {
    packets: u64,
    bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Counters {
    syn_flood: Dropped,
    per_source_rate: Dropped,
    conntrack_cap: Dropped,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NicReport {
    id: String,
    counters: Counters,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
enum EventKind {
    MitigationStarted,
    MitigationEnded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
enum Mechanism {
    SynFlood,
    PerSourceRate,
    ConntrackCap,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EventReport {
    nic: String,
    event: EventKind,
    mechanism: Mechanism,
    #[serde(default)]
    drops_per_second: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StatusBody {
    #[serde(default)]
    network_interfaces: Vec<NicReport>,
    #[serde(default)]
    events: Vec<EventReport>,
}

/// The lowercase ids of the interfaces attached to VMs assigned to `host`.
fn held_by(app: &App, host: &str) -> Result<BTreeSet<String>, ApiError> {
    let keys = crate::compute::door::vms_on(app, host)?;
    let mut held = BTreeSet::new();
    for key in keys {
        let rec = match app.store.get(&key) {
            Ok(Some(rec)) if rec.rtype == Kind::VirtualMachine.type_key() => rec,
            Ok(_) => continue,
            Err(e) => {
                log_chain("store read failed", &e);
                return Err(ApiError::internal());
            }
        };
        let doc = Doc::parse(&rec.body)?;
        if doc.prop_str("host") != Some(host) {
            continue;
        }
        let nics = doc
            .properties
            .pointer("/networkProfile/networkInterfaces")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|n| n.get("id").and_then(Value::as_str));
        held.extend(nics.map(|id| id.trim_end_matches('/').to_ascii_lowercase()));
    }
    Ok(held)
}

/// Takes `host`'s report in: counters of its own interfaces onto the board, each mitigation
/// event an audit entry. Reports about other interfaces are refused (audited, bounded) and
/// dropped. Returns how many interfaces and events were accepted.
pub fn apply_report(
    app: &App,
    host: &str,
    body: &[u8],
    audit: &dyn Fn(&str, &str, &str, Value) -> AuditEntry,
) -> Result<(usize, usize), ApiError> {
    let report: StatusBody = crate::handlers::parse_body(body)?;
    if report.network_interfaces.len() > MAX_NICS || report.events.len() > MAX_EVENTS {
        return Err(ApiError::bad_request(
            "TooManyReports",
            format!("at most {MAX_NICS} network interfaces and {MAX_EVENTS} events per report"),
        ));
    }
    let held = held_by(app, host)?;
    let now = strata_types::time::now_unix();
    let mut refused: Vec<String> = Vec::new();
    let mut entries = Vec::new();
    let mut accepted = (0, 0);
    let mut board = app.nic_ddos.lock();
    // Interfaces this host no longer holds (their VM deleted or moved) are not its to show.
    board.retain(|k, s| s.host != host || held.contains(k));
    for r in report.network_interfaces {
        let key = r.id.trim_end_matches('/').to_ascii_lowercase();
        if !held.contains(&key) {
            refused.push(r.id);
            continue;
        }
        let status = board.entry(key).or_insert_with(|| NicStatus {
            host: host.to_owned(),
            counters: Counters::default(),
            mitigating: BTreeSet::new(),
            updated: now,
        });
        if status.host != host {
            // The interface moved with its VM: what the old host saw is not this one's.
            status.mitigating.clear();
            host.clone_into(&mut status.host);
        }
        status.counters = r.counters;
        status.updated = now;
        accepted.0 += 1;
    }
    for e in report.events {
        let key = e.nic.trim_end_matches('/').to_ascii_lowercase();
        if !held.contains(&key) {
            refused.push(e.nic);
            continue;
        }
        let mechanism = format!("{:?}", e.mechanism);
        let counters = board.get_mut(&key).map(|s| {
            match e.event {
                EventKind::MitigationStarted => s.mitigating.insert(mechanism.clone()),
                EventKind::MitigationEnded => s.mitigating.remove(&mechanism),
            };
            s.counters
        });
        let rate = e
            .drops_per_second
            .filter(|r| r.is_finite() && *r >= 0.0)
            .map(|r| (r * 10.0).round() / 10.0);
        let reason = match (e.event, rate) {
            (EventKind::MitigationStarted, Some(r)) => {
                format!("DDoS mitigation started: {mechanism} dropping {r} packets/s")
            }
            (EventKind::MitigationStarted, None) => {
                format!("DDoS mitigation started: {mechanism}")
            }
            (EventKind::MitigationEnded, _) => format!("DDoS mitigation ended: {mechanism}"),
        };
        tracing::warn!(nic = %e.nic, %host, %reason, "DDoS mitigation event");
        entries.push(audit(
            "Strata.Network/networkInterfaces/ddosMitigation/action",
            &e.nic,
            &reason,
            json!({
                "event": format!("{:?}", e.event),
                "mechanism": mechanism,
                "dropsPerSecond": rate,
                "counters": counters.unwrap_or_default(),
                "host": host,
            }),
        ));
        accepted.1 += 1;
    }
    drop(board);
    if !refused.is_empty()
        && app
            .fabric
            .audit_gate
            .check(&format!("nicstatus:{host}"))
            .is_ok()
    {
        refused.sort();
        refused.dedup();
        refused.truncate(20);
        let mut entry = audit(
            "Strata.Network/networkInterfaces/ddosMitigation/action",
            &crate::fabric::door::host_id(host)
                .map(|h| h.as_str().to_owned())
                .unwrap_or_default(),
            "the host reported network interfaces it does not hold",
            json!({ "networkInterfaces": refused }),
        );
        entry.outcome = "denied".into();
        entry.status = 403;
        entries.push(entry);
    }
    if !entries.is_empty() {
        app.commit(
            strata_store::Batch {
                ops: vec![],
                audit: entries,
            },
            false,
        )?;
    }
    Ok(accepted)
}

/// `POST …/networkInterfaces/{nic}/ddosCounters`: the limits in force, and what the
/// interface's host last reported (`counters` null until it has).
pub fn counters_view(app: &App, doc: &Doc) -> Value {
    let board = app.nic_ddos.lock();
    let status = board.get(&doc.id.trim_end_matches('/').to_ascii_lowercase());
    json!({
        "id": doc.id,
        "policy": effective(stored(doc)),
        "counters": status.map(|s| s.counters),
        "mitigating": status.map(|s| s.mitigating.iter().cloned().collect::<Vec<_>>()).unwrap_or_default(),
        "host": status.map(|s| s.host.clone()),
        "reportedAt": status.map(|s| strata_types::time::rfc3339(s.updated)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: Value) -> Result<Option<DdosSettings>, String> {
        settings(Some(&v)).map_err(|e| e.message.clone())
    }

    #[test]
    fn settings_are_bounded_and_cannot_turn_limits_off() {
        assert_eq!(check(Value::Null), Ok(None));
        assert_eq!(check(json!({})), Ok(None));
        let ok = check(
            json!({ "synPerSource": { "perSecond": 10, "burst": 20 }, "maxConnections": 1000 }),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            ok.syn_per_source,
            Some(RateIn {
                per_second: 10,
                burst: 20
            })
        );
        for (bad, says) in [
            (
                json!({ "synPerSource": { "perSecond": 0, "burst": 20 } }),
                "synPerSource.perSecond 0",
            ),
            (
                json!({ "synTotal": { "perSecond": 10, "burst": 5 } }),
                "synTotal.burst 5",
            ),
            (
                json!({ "newFlowsPerSource": { "perSecond": 2000000, "burst": 2000000 } }),
                "perSecond 2000000",
            ),
            (json!({ "maxConnections": 1 }), "maxConnections 1"),
            (json!({ "synFlood": true }), "unknown field"),
            (
                json!({ "synPerSource": { "perSecond": 10 } }),
                "missing field",
            ),
            (json!("lots"), "ddosSettings"),
        ] {
            let e = check(bad.clone()).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let p = effective(Some(ok));
        assert_eq!(p["synPerSource"], json!({ "perSecond": 10, "burst": 20 }));
        assert_eq!(p["synTotal"], json!({ "perSecond": 10000, "burst": 10000 }));
        assert_eq!(p["maxConnections"], 1000);
    }
}
