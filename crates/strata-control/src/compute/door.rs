//! The compute half of the agent door: what a host must run, and what it says it runs. The
//! caller (`fabric::door`) has already checked the host's current attestation-bound client
//! certificate.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use strata_audit::AuditEntry;
use strata_store::{Op, Precondition};
use strata_types::ApiError;

use super::{Desired, Reported, VmInternal, VmShape, console_tail, fold_report, vtpm_key_aad};
use crate::app::{App, log_chain};
use crate::docs::Doc;
use crate::kinds::Kind;

/// Most VMs one report may carry.
const MAX_REPORTS: usize = 1024;
/// Most key releases remembered (to audit each once) before the memory starts afresh.
const MAX_RELEASES_REMEMBERED: usize = 200_000;

/// The store keys of the VMs placed on `host`, from the VM index brought up to date with the
/// change feed first.
pub(crate) fn vms_on(app: &App, host: &str) -> Result<Vec<String>, ApiError> {
    let mut index = app
        .vm_index
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    index.refresh(app.store.as_ref()).map_err(|e| {
        log_chain("store read failed", &e);
        ApiError::internal()
    })?;
    Ok(index.on(host))
}

/// The VMs `host` must run, with their vTPM keys unsealed and their network interfaces, and
/// the network the host needs for them (`network::host`: the topology of every subscription
/// with a VM interface here, and its etag), or `None` when no VM has an interface. Only a
/// Trusted host gets any: the list is empty otherwise (and the agent leaves its VMs alone until
/// it is Trusted again).
pub fn assigned(
    app: &App,
    host: &str,
    host_state: &str,
) -> Result<(Vec<Value>, Option<Value>), ApiError> {
    if host_state != "Trusted" {
        return Ok((Vec::new(), None));
    }
    let keys = vms_on(app, host)?;
    let mut out = Vec::new();
    let mut releases = Vec::new();
    // (index in `out`, subscription key, interface ids) of VMs with interfaces.
    let mut with_nics: Vec<(usize, String, Vec<String>)> = Vec::new();
    for key in keys {
        let rec = match app.store.get(&key) {
            Ok(Some(rec)) => rec,
            Ok(None) => continue, // deleted since the index was read
            Err(e) => {
                log_chain("store read failed", &e);
                return Err(ApiError::internal());
            }
        };
        let doc = Doc::parse(&rec.body)?;
        if doc.prop_str("host") != Some(host) {
            continue;
        }
        let internal: VmInternal = crate::docs::internal_of(&doc);
        let (Some(shape), Some(vm_id), Some(desired)) = (
            VmShape::of_properties(&doc.properties),
            doc.prop_str("vmId"),
            internal.desired,
        ) else {
            tracing::error!(vm = %doc.id, "VM document is incomplete; not assigned");
            continue;
        };
        let mut vm = json!({
            "id": doc.id,
            "vmId": vm_id,
            "generation": internal.generation,
            "desiredState": desired,
            "vcpus": shape.vcpus,
            "memoryMib": shape.memory_mib,
            "secureBoot": shape.secure_boot,
            "vTpm": shape.vtpm,
        });
        // The image: a platform image by name (the host builds it), or an imported image's
        // content by digest (the host fetches it: `image_for_host`, and verifies it).
        match (&shape.image, &internal.image) {
            (super::ImageName::Platform(name), _) => vm["image"] = json!(name),
            (super::ImageName::Resource(_), Some(c)) => {
                vm["imageContent"] = json!({ "sha256": c.sha256, "sizeBytes": c.size_bytes });
            }
            (super::ImageName::Resource(_), None) => {
                tracing::error!(vm = %doc.id, "VM made from an image resource records no image content; not assigned");
                continue;
            }
        }
        if let Some(gb) = shape.os_disk_gb {
            vm["diskSizeBytes"] = json!(gb << 30);
        }
        let pending = super::snapshots::tokens(&internal);
        if !pending.is_empty() {
            vm["snapshots"] = json!(pending);
        }
        // The OS disk's key, released only here: a disk resource's (platform or customer key,
        // `disks::release`), else the VM's own, unwrapped with the subscription's platform key.
        // A customer key that is disabled or deleted withholds it: the VM is held Stopped.
        let dek = if let Some(disk) = super::disks::os_disk_of(&doc) {
            // Fail closed, one VM at a time: an error withholds this VM's key only.
            let (release, source) = match super::disks::release_with_source(app, &disk) {
                Ok(r) => r,
                Err(_) => (
                    super::disks::Release::Withheld("the disk cannot be read"),
                    None,
                ),
            };
            // A disk made from a snapshot: the host copies that content as the disk.
            if let Some(c) = source {
                vm["diskSource"] = json!({ "sha256": c.sha256, "sizeBytes": c.size_bytes });
            }
            match release {
                super::disks::Release::Key(dek) => Some(dek),
                super::disks::Release::Withheld(_) => None,
            }
        } else {
            let Some(disk_key) = internal.disk_key.as_deref() else {
                tracing::error!(vm = %doc.id, "VM has no disk key; not assigned");
                continue;
            };
            Some(disk_key_of(app, &rec.key, disk_key)?)
        };
        if let Some(o) = vm.as_object_mut() {
            match dek {
                Some(dek) => o.insert(
                    "diskKey".into(),
                    json!(base64::engine::general_purpose::STANDARD.encode(dek.expose_secret())),
                ),
                None => o.insert("desiredState".into(), json!(Desired::Stopped)),
            };
        }
        if shape.vtpm {
            let Some(sealed) = internal.vtpm_key.as_deref() else {
                tracing::error!(vm = %doc.id, "VM has a vTPM but no sealed key; not assigned");
                continue;
            };
            let key = zeroize::Zeroizing::new(
                app.root
                    .open(&vtpm_key_aad(&rec.key), sealed)
                    .map_err(|_| {
                        tracing::error!(vm = %doc.id, "the VM's vTPM key does not open under the root key");
                        ApiError::internal()
                    })?,
            );
            if let Some(o) = vm.as_object_mut() {
                o.insert(
                    "vTpmKey".into(),
                    json!(base64::engine::general_purpose::STANDARD.encode(key.as_slice())),
                );
            }
        }
        releases.push(release_entry(
            app,
            host,
            &doc,
            &rec.key,
            &vm,
            internal.generation,
        ));
        let nics: Vec<String> = doc
            .properties
            .pointer("/networkProfile/networkInterfaces")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if !nics.is_empty() {
            let sub = rec.key.split('/').take(3).collect::<Vec<_>>().join("/");
            with_nics.push((out.len(), sub, nics));
        }
        out.push(vm);
    }
    let network = host_network(app, &mut out, &with_nics)?;
    let releases: Vec<AuditEntry> = releases.into_iter().flatten().collect();
    if !releases.is_empty() {
        app.audit_only(releases);
    }
    Ok((out, network))
}

/// The audit entry for releasing `vm`'s keys to `host`, when what is released changed since
/// the last one this replica audited (another host, generation or disk): each release is
/// audited once, not on every poll. Names the keys, never their material.
fn release_entry(
    app: &App,
    host: &str,
    doc: &Doc,
    vm_key: &str,
    entry: &Value,
    generation: u64,
) -> Option<AuditEntry> {
    let disk_key = entry.get("diskKey").is_some();
    let vtpm_key = entry.get("vTpmKey").is_some();
    if !disk_key && !vtpm_key {
        // Withheld now: the next release (after a key or vault comes back) is audited again.
        app.fabric
            .released
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(vm_key);
        return None;
    }
    let disk = super::disks::os_disk_of(doc);
    let fingerprint = format!("{host}|{generation}|{disk:?}|{disk_key}|{vtpm_key}");
    {
        let mut released = app
            .fabric
            .released
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if released.get(vm_key) == Some(&fingerprint) {
            return None;
        }
        // Deleted VMs' entries are not removed one by one; past this many, start afresh (each
        // VM's next release is audited once more).
        if released.len() >= MAX_RELEASES_REMEMBERED {
            released.clear();
        }
        released.insert(vm_key.to_owned(), fingerprint);
    }
    let encryption = match &disk {
        Some(d) => app
            .store
            .get(d)
            .ok()
            .flatten()
            .and_then(|r| Doc::parse(&r.body).ok())
            .and_then(|d| d.properties.get("encryption").cloned())
            .unwrap_or(Value::Null),
        None => json!({ "type": super::disks::PLATFORM_KEY }),
    };
    Some(AuditEntry {
        seq: 0,
        time: strata_types::time::now_rfc3339(),
        request_id: format!("release-{}", uuid::Uuid::new_v4().simple()),
        principal_id: None,
        principal_name: Some(format!("agent:{host}")),
        client_ip: None,
        category: "keyOperation".into(),
        action: "Strata.Compute/virtualMachines/keyRelease/action".into(),
        scope: doc.id.clone(),
        outcome: "success".into(),
        status: 200,
        reason: format!(
            "keys released to Trusted host {host} over its attestation-bound mTLS identity"
        ),
        details: json!({
            "host": host,
            "generation": generation,
            "diskKey": disk_key.then(|| json!({ "disk": disk, "encryption": encryption })),
            "vTpmKey": vtpm_key,
        }),
    })
}

/// Adds each VM's `networkInterfaces` and returns the host's `network` (`network::host`). An
/// interface that cannot be resolved is sent as its id alone: the agent refuses that entry
/// (fail closed, reported Failed with the reason) rather than running the VM without it.
fn host_network(
    app: &App,
    vms: &mut [Value],
    with_nics: &[(usize, String, Vec<String>)],
) -> Result<Option<Value>, ApiError> {
    use crate::network::host as nh;
    if with_nics.is_empty() {
        return Ok(None);
    }
    let mut subs: Vec<&str> = with_nics.iter().map(|(_, s, _)| s.as_str()).collect();
    subs.sort_unstable();
    subs.dedup();
    let kinds: Vec<String> = crate::network::KINDS.iter().map(|k| k.type_key()).collect();
    let index = || {
        app.vm_index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let mut parts = Vec::new();
    let mut all_docs = Vec::new();
    for sub in subs {
        // `assigned` refreshed the index: a network change up to now has moved the revision.
        let (revision, cached) = {
            let index = index();
            let revision = index.network_revision(sub);
            (revision, index.network(sub, revision))
        };
        let net = match cached {
            Some(net) => net,
            None => {
                let records = app.store.list_under(sub).map_err(|e| {
                    log_chain("store read failed", &e);
                    ApiError::internal()
                })?;
                let docs: Vec<Doc> = records
                    .into_iter()
                    .filter(|r| kinds.contains(&r.rtype))
                    .map(|r| Doc::parse(&r.body))
                    .collect::<Result<_, _>>()?;
                let Ok(topology) = crate::network::topology(&docs) else {
                    tracing::error!(subscription = %sub, "the subscription's network does not load; its VMs' interfaces are withheld");
                    continue;
                };
                let net = std::sync::Arc::new(super::index::SubscriptionNetwork { topology, docs });
                index().keep_network(sub, revision, net.clone());
                net
            }
        };
        parts.push(net.topology.clone());
        all_docs.extend(net.docs.iter().cloned());
    }
    let topology = nh::union(parts);
    for (index, _, nics) in with_nics {
        let entries: Vec<Value> = nics
            .iter()
            .map(|id| nh::host_nic(&topology, &all_docs, id).unwrap_or_else(|| json!({ "id": id })))
            .collect();
        if let Some(o) = vms.get_mut(*index).and_then(Value::as_object_mut) {
            o.insert("networkInterfaces".into(), Value::Array(entries));
        }
    }
    let text = serde_json::to_vec(&topology).map_err(|_| ApiError::internal())?;
    let etag = strata_attest::hex(ring::digest::digest(&ring::digest::SHA256, &text).as_ref());
    Ok(Some(json!({ "etag": etag, "topology": topology })))
}

/// Unwraps a VM's OS-disk data key: subscription platform key (under the root key), then the
/// data key bound to the disk's id.
pub(crate) fn disk_key_of(
    app: &App,
    vm_key: &str,
    envelope: &str,
) -> Result<strata_kms::DataKey, ApiError> {
    let fail = |what: &str| {
        tracing::error!(vm = %vm_key, "{what}");
        ApiError::internal()
    };
    // "/subscriptions/{sub}/…" → "/subscriptions/{sub}"
    let sub_key = vm_key.split('/').take(3).collect::<Vec<_>>().join("/");
    let rec = app
        .store
        .get(&sub_key)
        .map_err(|e| {
            log_chain("store read failed", &e);
            ApiError::internal()
        })?
        .ok_or_else(|| fail("the VM's subscription is gone"))?;
    let keys: super::SubscriptionKeys = crate::docs::internal_of(&Doc::parse(&rec.body)?);
    let stored = keys
        .platform_key
        .ok_or_else(|| fail("the subscription has no platform key"))?;
    let pmk = super::open_platform_key(&app.root, &sub_key, &stored)?;
    let envelope = strata_kms::Envelope::decode(envelope)
        .map_err(|_| fail("the disk key envelope does not parse"))?;
    pmk.unwrap_data_key(&super::os_disk_id(vm_key), &envelope)
        .map_err(|_| fail("the disk key does not unwrap"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody {
    virtual_machines: Vec<VmReport>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VmReport {
    id: String,
    #[serde(default)]
    generation: u64,
    power_state: Reported,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    console_tail: Option<String>,
    /// The guest's measured-boot evidence from its current boot (`boot_integrity`).
    #[serde(default)]
    boot_evidence: Option<super::boot_integrity::BootEvidence>,
}

fn clip(s: Option<String>, max: usize) -> Option<String> {
    s.map(|s| s.chars().take(max).collect())
}

/// Folds `host`'s reports into its VMs. A report about a VM this host does not hold is
/// ignored and named in the result for the audit log. Writes only what changed.
pub fn apply_reports(
    app: &App,
    host: &str,
    body: &[u8],
    audit: &dyn Fn(&str, &str, &str, Value) -> AuditEntry,
) -> Result<usize, ApiError> {
    let status: StatusBody = crate::handlers::parse_body(body)?;
    if status.virtual_machines.len() > MAX_REPORTS {
        return Err(ApiError::bad_request(
            "TooManyReports",
            format!("at most {MAX_REPORTS} VMs per report"),
        ));
    }
    let now = strata_types::time::now_unix();
    let mut accepted = 0;
    for report in status.virtual_machines {
        let key = report.id.to_ascii_lowercase();
        let rec = match app.store.get(&key) {
            Ok(Some(r)) if r.rtype == Kind::VirtualMachine.type_key() => r,
            Ok(_) => {
                if report.power_state != Reported::Deleted {
                    refuse(app, audit, host, &report.id, "no such virtual machine")?;
                }
                continue;
            }
            Err(e) => {
                log_chain("store read failed", &e);
                return Err(ApiError::internal());
            }
        };
        let mut doc = Doc::parse(&rec.body)?;
        if doc.prop_str("host") != Some(host) {
            refuse(
                app,
                audit,
                host,
                &report.id,
                "the virtual machine is not assigned to this host",
            )?;
            continue;
        }
        let mut internal: VmInternal = crate::docs::internal_of(&doc);
        let mut desired = internal.desired.unwrap_or(Desired::Running);
        // A report about an older generation says where the VM was, not where it is going:
        // it may still fail it, but not complete the newer request.
        let current = report.generation >= internal.generation;
        // The stop half of a restart is done: ask for the start (a new generation).
        let restarting = internal.restart_pending
            && desired == Desired::Stopped
            && current
            && report.power_state == Reported::Stopped;
        if restarting {
            internal.restart_pending = false;
            internal.desired = Some(Desired::Running);
            internal.generation += 1;
            desired = Desired::Running;
        }
        // A disk whose customer key is disabled holds the VM stopped (`disks::release`).
        let hold = super::disks::hold_of(app, &doc).unwrap_or(None);
        if hold.is_some() {
            desired = Desired::Stopped;
        }
        let (provisioning, power) = fold_report(desired, report.power_state);
        let (provisioning, power) = if current || report.power_state == Reported::Failed {
            (provisioning, power)
        } else {
            (
                doc.prop_str("provisioningState").unwrap_or("Updating"),
                doc.prop_str("powerState").unwrap_or("starting"),
            )
        };
        let failure_reason = clip(
            report
                .reason
                .filter(|_| report.power_state == Reported::Failed),
            200,
        );
        let failure_detail = clip(
            report
                .detail
                .filter(|_| report.power_state == Reported::Failed),
            1000,
        );
        let failure_reason = hold.map(str::to_owned).or(failure_reason);
        let before = doc.properties.clone();
        let integrity_before = doc
            .properties
            .pointer("/bootIntegrity/status")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let integrity = boot_integrity(&doc, &mut internal, report.boot_evidence.as_ref(), now);
        let provisioning = provisioning.to_owned();
        let power = power.to_owned();
        if let Some(o) = doc.properties.as_object_mut() {
            o.insert("provisioningState".into(), json!(provisioning));
            o.insert("powerState".into(), json!(power));
            if report.power_state == Reported::Failed || current {
                o.insert("failureReason".into(), json!(failure_reason));
                o.insert("failureDetail".into(), json!(failure_detail));
            }
            if let Some(integrity) = integrity {
                o.insert("bootIntegrity".into(), integrity);
            }
        }
        let changed = doc.properties != before || restarting;
        let tail = report.console_tail.as_deref().map(console_tail);
        let tail_changed = tail.is_some_and(|t| t != internal.console_tail);
        accepted += 1;
        if !changed && !tail_changed {
            continue;
        }
        if let Some(t) = tail {
            internal.console_tail = t.to_owned();
        }
        internal.reported_at = now;
        doc.internal = serde_json::to_value(&internal).map_err(|_| ApiError::internal())?;
        let mut entries = Vec::new();
        if changed {
            entries.push(audit(
                "Strata.Compute/virtualMachines/status/action",
                &doc.id,
                &format!(
                    "{host} reports {:?}: provisioningState {provisioning}, powerState {power}",
                    report.power_state
                ),
                json!({ "generation": report.generation, "reason": failure_reason }),
            ));
        }
        let integrity_now = doc
            .properties
            .pointer("/bootIntegrity/status")
            .and_then(Value::as_str);
        if integrity_now.is_some() && integrity_now != integrity_before.as_deref() {
            let reason = doc
                .properties
                .pointer("/bootIntegrity/reason")
                .cloned()
                .unwrap_or(Value::Null);
            entries.push(audit(
                "Strata.Compute/virtualMachines/bootIntegrity/action",
                &doc.id,
                &format!("boot integrity {}", integrity_now.unwrap_or_default()),
                json!({ "generation": report.generation, "reason": reason }),
            ));
        }
        let ops = vec![Op::Put {
            key: rec.key.clone(),
            rtype: rec.rtype.clone(),
            parent: rec.parent.clone(),
            body: doc.to_json()?,
            pre: Precondition::Revision(rec.revision),
        }];
        // A concurrent user action wins; the agent reports again within seconds.
        if let Err(e) = app.commit(
            strata_store::Batch {
                ops,
                audit: entries,
            },
            false,
        ) && e.status != 412
        {
            return Err(e);
        }
    }
    Ok(accepted)
}

/// The VM's new `bootIntegrity`, if it changes: `notApplicable` without a vTPM; else the
/// appraisal of evidence not appraised before (its fingerprint is kept in `internal`).
fn boot_integrity(
    doc: &Doc,
    internal: &mut VmInternal,
    evidence: Option<&super::boot_integrity::BootEvidence>,
    now: i64,
) -> Option<Value> {
    let vtpm = VmShape::of_properties(&doc.properties).is_some_and(|s| s.vtpm);
    if !vtpm {
        let na = super::boot_integrity::not_applicable();
        return (doc.properties.get("bootIntegrity") != Some(&na)).then_some(na);
    }
    let evidence = evidence?;
    let fingerprint = evidence.fingerprint();
    if internal.boot_evidence.as_deref() == Some(fingerprint.as_str()) {
        return None;
    }
    internal.boot_evidence = Some(fingerprint);
    let appraisal = super::boot_integrity::appraise(evidence);
    if !appraisal.healthy {
        tracing::warn!(vm = %doc.id, reason = %appraisal.reason, "boot integrity unhealthy");
    }
    Some(appraisal.to_property(&strata_types::time::rfc3339(now)))
}

/// Audits a refused report (bounded per host, so a misbehaving host cannot fill the log).
fn refuse(
    app: &App,
    audit: &dyn Fn(&str, &str, &str, Value) -> AuditEntry,
    host: &str,
    vm: &str,
    why: &str,
) -> Result<(), ApiError> {
    if app
        .fabric
        .audit_gate
        .check(&format!("vmstatus:{host}"))
        .is_err()
    {
        return Ok(());
    }
    let mut entry = audit(
        "Strata.Compute/virtualMachines/status/action",
        vm,
        why,
        json!({}),
    );
    entry.outcome = "denied".into();
    entry.status = 403;
    app.commit(
        strata_store::Batch {
            ops: vec![],
            audit: vec![entry],
        },
        false,
    )
    .map(|_| ())
}

/// Where the image content `sha256` is, for `host`: only when a VM assigned to that host was
/// made from it, or its OS disk from that snapshot (403 otherwise: a host gets the images and
/// snapshots of its own VMs, nothing else).
pub fn image_for_host(app: &App, host: &str, sha256: &str) -> Result<std::path::PathBuf, ApiError> {
    let Some(path) = app.images.blob(sha256) else {
        return Err(ApiError::not_found(sha256));
    };
    let keys = vms_on(app, host)?;
    let mut assigned = false;
    for key in keys {
        let rec = match app.store.get(&key) {
            Ok(Some(rec)) => rec,
            Ok(None) => continue,
            Err(e) => {
                log_chain("store read failed", &e);
                return Err(ApiError::internal());
            }
        };
        let doc = Doc::parse(&rec.body)?;
        if doc.prop_str("host") != Some(host) {
            continue;
        }
        let internal: VmInternal = crate::docs::internal_of(&doc);
        let restored = match super::disks::os_disk_of(&doc) {
            Some(disk) => {
                super::snapshots::disk_source(app, &disk)?.is_some_and(|c| c.sha256 == sha256)
            }
            None => false,
        };
        if internal.image.is_some_and(|i| i.sha256 == sha256) || restored {
            assigned = true;
            break;
        }
    }
    if !assigned {
        return Err(ApiError::forbidden(format!(
            "no VM assigned to host {host} is made from image content {sha256}"
        )));
    }
    if !path.is_file() {
        tracing::error!(%sha256, "a VM names image content the image store does not hold");
        return Err(ApiError::not_found(sha256));
    }
    Ok(path)
}
