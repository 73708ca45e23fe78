//! ARM handlers for `Strata.Compute/virtualMachines`: create (validated, placed on a Trusted
//! host, vTPM key generated and sealed), start/stop/deallocate, and the boot diagnostics read.
//! What the host's agent sees and reports lives in `compute::door`.

use serde_json::{Value, json};
use strata_types::{ApiError, ResourceBody, ResourceId};

use super::{Built, new_doc, parse_props};
use crate::compute::{
    Desired, ImageName, NetworkProfile, SubscriptionKeys, VmInput, VmInternal, VmShape,
    open_platform_key, os_disk_id, platform_image_bytes, vtpm_key_aad,
};
use crate::context::Ctx;
use crate::dispatch::Reply;
use crate::docs::Doc;
use crate::fabric::placement;
use crate::kinds::Kind;
use strata_store::{Op, Precondition};

fn internal(doc: &Doc) -> VmInternal {
    crate::docs::internal_of(doc)
}

fn set(doc: &mut Doc, field: &str, value: Value) {
    if let Some(o) = doc.properties.as_object_mut() {
        o.insert(field.into(), value);
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut out = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut out)
        .map_err(|_| ApiError::internal())?;
    Ok(out)
}

/// Picks a host for a VM now: only Trusted, fresh, uncordoned hosts; the one running the
/// fewest VMs wins. The refusal names every host and why it was passed over.
fn place(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let hosts = super::fabric::host_views(ctx)?;
    placement::place(
        &hosts,
        ctx.app.fabric.stale_after(),
        ctx.app.fabric.config.allow_development_placement,
    )
    .map_err(|refusal| ApiError::conflict("AllocationFailed", refusal.to_string()))
}

/// PUT: creates the VM (placed, with its own vTPM key) or accepts an unchanged definition.
pub fn build_vm(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let input: VmInput = parse_props(body.properties)?;
    let mut shape = VmShape::from_input(&input)?;
    if let Some(doc) = existing {
        // Tags may change; the machine itself may not (no resize, re-image or NIC change yet).
        // An OS disk size left out means the one in effect.
        if shape.os_disk_gb.is_none() {
            shape.os_disk_gb = VmShape::of_properties(&doc.properties).and_then(|s| s.os_disk_gb);
        }
        let stored_nics = doc.properties.get("networkProfile").cloned();
        let nics_changed = input
            .network_profile
            .as_ref()
            .is_some_and(|p| serde_json::to_value(p).ok() != stored_nics);
        if VmShape::of_properties(&doc.properties).as_ref() != Some(&shape) || nics_changed {
            return Err(ApiError::conflict(
                "PropertyChangeNotAllowed",
                "a VM's size, image and security profile cannot change after creation; delete it and create it again",
            ));
        }
        let mut doc = doc.clone();
        doc.system_data =
            new_doc(ctx, id, Kind::VirtualMachine, Some(&doc), Value::Null).system_data;
        return Ok(Built {
            doc,
            extra_ops: vec![],
            reveal: None,
        });
    }
    // The image: a platform image, or an image resource the caller may read (kept unchanged
    // until this VM commits).
    let (image_content, image_keep) = match &shape.image {
        ImageName::Platform(_) => (None, None),
        ImageName::Resource(image) => {
            let (content, keep) = super::images::resolve_for_vm(ctx, image)?;
            (Some(content), Some(keep))
        }
    };
    // An existing disk as the OS disk: its key (platform or customer) is the VM's disk key, and
    // its size the OS disk's.
    let os_disk_attach = match input
        .storage_profile
        .as_ref()
        .and_then(|s| s.os_disk.as_ref())
        .and_then(|d| d.id.as_deref())
    {
        Some(disk) => Some(super::disks::attach_os_disk(ctx, id, disk)?),
        None => None,
    };
    let image_bytes = match (&shape.image, &image_content) {
        (_, Some(c)) => c.virtual_size_bytes,
        (ImageName::Platform(name), None) => platform_image_bytes(name),
        (ImageName::Resource(_), None) => return Err(ApiError::internal()),
    };
    shape.os_disk_gb = os_disk_size(ctx, &shape, os_disk_attach.as_ref(), image_bytes)?;
    let disk_size_bytes = shape.os_disk_gb.map_or(image_bytes, |gb| gb << 30);
    let mut extra_ops = attach_nics(ctx, id, input.network_profile.as_ref())?;
    extra_ops.extend(image_keep);
    let host = place(ctx)?;
    // Encryption at rest by default: the OS disk gets a data key under the subscription's
    // platform key (created with the first disk of the subscription).
    let sub_id = ResourceId::subscription(id.subscription_id().unwrap_or_default())
        .map_err(|_| ApiError::internal())?;
    let (sub_rec, mut sub_doc) =
        super::load(ctx, &sub_id)?.ok_or_else(|| ApiError::not_found(sub_id.as_str()))?;
    let mut keys: SubscriptionKeys = crate::docs::internal_of(&sub_doc);
    let pmk = match &keys.platform_key {
        Some(stored) => open_platform_key(&ctx.app.root, sub_id.key(), stored)?,
        None => {
            let (pmk, wrapped) = ctx
                .app
                .root
                .kms()
                .create_platform_key(sub_id.key(), 1)
                .map_err(|_| ApiError::internal())?;
            keys.platform_key = Some(wrapped);
            let mut internal = match sub_doc.internal.take() {
                Value::Object(o) => o,
                _ => serde_json::Map::new(),
            };
            internal.insert(
                "platformKey".into(),
                serde_json::to_value(&keys.platform_key).map_err(|_| ApiError::internal())?,
            );
            sub_doc.internal = Value::Object(internal);
            extra_ops.push(Op::Put {
                key: sub_rec.key.clone(),
                rtype: sub_rec.rtype.clone(),
                parent: sub_rec.parent.clone(),
                body: sub_doc.to_json()?,
                pre: Precondition::Revision(sub_rec.revision),
            });
            pmk
        }
    };
    let (_dek, disk_envelope) = pmk
        .create_data_key(&os_disk_id(id.key()))
        .map_err(|_| ApiError::internal())?;
    let vm_id = format!("vm-{}", strata_attest::hex(&random_bytes::<8>()?));
    let vtpm_key = if shape.vtpm {
        let key = zeroize::Zeroizing::new(random_bytes::<32>()?);
        let sealed = ctx
            .app
            .root
            .seal(&vtpm_key_aad(id.key()), key.as_slice())
            .map_err(|_| ApiError::internal())?;
        Some(sealed)
    } else {
        None
    };
    let mut props = shape.properties();
    if let Some(o) = props.as_object_mut() {
        o.insert(
            "networkProfile".into(),
            serde_json::to_value(input.network_profile.clone().unwrap_or(NetworkProfile {
                network_interfaces: vec![],
            }))
            .map_err(|_| ApiError::internal())?,
        );
        o.insert("vmId".into(), json!(vm_id));
        o.insert("host".into(), json!(host));
        o.insert("provisioningState".into(), json!("Creating"));
        o.insert("powerState".into(), json!("starting"));
        o.insert("failureReason".into(), Value::Null);
        o.insert("failureDetail".into(), Value::Null);
        if !shape.vtpm {
            o.insert(
                "bootIntegrity".into(),
                crate::compute::boot_integrity::not_applicable(),
            );
        }
    }
    let mut doc = new_doc(ctx, id, Kind::VirtualMachine, None, props);
    doc.internal = serde_json::to_value(VmInternal {
        desired: Some(Desired::Running),
        generation: 1,
        restart_pending: false,
        vtpm_key,
        disk_key: Some(disk_envelope.encode()),
        console_tail: String::new(),
        boot_evidence: None,
        reported_at: 0,
        image: image_content.clone(),
        snapshots: Vec::new(),
    })
    .map_err(|_| ApiError::internal())?;
    let storage = &mut doc.properties["storageProfile"];
    if let Some(c) = &image_content {
        storage["imageReference"]["sha256"] = json!(c.sha256);
    }
    storage["osDisk"]["diskSizeBytes"] = json!(disk_size_bytes);
    if let Some((disk_id, op)) = os_disk_attach {
        storage["osDisk"]["id"] = json!(disk_id.to_string());
        doc.internal["diskKey"] = Value::Null;
        extra_ops.push(op);
    }
    Ok(Built {
        doc,
        extra_ops,
        reveal: None,
    })
}

/// The OS disk's size, GiB: `storageProfile.osDisk.diskSizeGB`, or the attached disk
/// resource's size (they must agree when both are given), or `None` for the image's own size.
/// Never smaller than the image (`image_bytes`): a 400 says so.
fn os_disk_size(
    ctx: &Ctx<'_>,
    shape: &VmShape,
    attached: Option<&(ResourceId, Op)>,
    image_bytes: u64,
) -> Result<Option<u64>, ApiError> {
    let disk_gb = match attached {
        Some((disk, _)) => super::load(ctx, disk)?
            .and_then(|(_, d)| d.properties.get("diskSizeGB").and_then(Value::as_u64)),
        None => None,
    };
    let gb = match (shape.os_disk_gb, disk_gb) {
        (Some(asked), Some(disk)) if asked != disk => {
            return Err(ApiError::bad_request(
                "InvalidDiskSize",
                format!(
                    "storageProfile.osDisk.diskSizeGB is {asked} but the disk is {disk} GB; leave diskSizeGB out, or grow the disk first"
                ),
            ));
        }
        (asked, disk) => asked.or(disk),
    };
    if let Some(gb) = gb
        && gb.saturating_mul(1 << 30) < image_bytes
    {
        return Err(ApiError::bad_request(
            "DiskSizeTooSmall",
            format!(
                "the OS disk ({gb} GB) would be smaller than the image ({image_bytes} bytes, {} GB rounded up); give storageProfile.osDisk.diskSizeGB of at least that",
                image_bytes.div_ceil(1 << 30)
            ),
        ));
    }
    Ok(gb)
}

/// Checks each named interface (exists in the VM's subscription, attached to no other VM) and
/// returns the writes that attach them to `vm`, conditional on the interfaces not changing
/// meanwhile.
fn attach_nics(
    ctx: &Ctx<'_>,
    vm: &ResourceId,
    profile: Option<&NetworkProfile>,
) -> Result<Vec<Op>, ApiError> {
    let Some(profile) = profile else {
        return Ok(Vec::new());
    };
    if profile.network_interfaces.len() > 8 {
        return Err(ApiError::bad_request(
            "TooManyNetworkInterfaces",
            "a VM takes at most 8 network interfaces",
        ));
    }
    let mut ops = Vec::new();
    for (i, nic) in profile.network_interfaces.iter().enumerate() {
        let nic_id = ResourceId::parse(&nic.id).map_err(|e| {
            ApiError::bad_request(
                "InvalidNetworkInterfaceId",
                format!("networkProfile.networkInterfaces[{i}].id: {e}"),
            )
        })?;
        let is_nic = nic_id
            .resource_type()
            .is_some_and(|t| Kind::from_type(&t) == Some(Kind::NetworkInterface));
        if !is_nic || nic_id.subscription_id() != vm.subscription_id() {
            return Err(ApiError::bad_request(
                "InvalidNetworkInterfaceId",
                format!(
                    "networkProfile.networkInterfaces[{i}].id must be a Strata.Network/networkInterfaces id in the VM's subscription"
                ),
            ));
        }
        if profile.network_interfaces[..i]
            .iter()
            .any(|o| o.id.eq_ignore_ascii_case(&nic.id))
        {
            return Err(ApiError::bad_request(
                "DuplicateNetworkInterface",
                format!("'{}' is listed twice", nic.id),
            ));
        }
        super::network::require_join(ctx, super::network::NIC_JOIN, "network interface", &nic.id)?;
        let (rec, mut doc) = super::load(ctx, &nic_id)?.ok_or_else(|| {
            ApiError::new(
                404,
                "NetworkInterfaceNotFound",
                format!("network interface '{}' not found; create it first", nic.id),
            )
        })?;
        if let Some(other) = doc
            .properties
            .pointer("/virtualMachine/id")
            .and_then(Value::as_str)
        {
            return Err(ApiError::conflict(
                "NetworkInterfaceInUse",
                format!("'{}' is attached to '{other}'", nic.id),
            ));
        }
        set(&mut doc, "virtualMachine", json!({ "id": vm.as_str() }));
        ops.push(Op::Put {
            key: rec.key.clone(),
            rtype: rec.rtype.clone(),
            parent: rec.parent.clone(),
            body: doc.to_json()?,
            pre: Precondition::Revision(rec.revision),
        });
    }
    Ok(ops)
}

/// The writes that detach a VM's interfaces when the VM is deleted, or delete those it names
/// with `deleteOption: Delete` (with the NSG strata created for each, when unused).
pub fn detach_nics(ctx: &Ctx<'_>, vm: &Doc) -> Result<Vec<Op>, ApiError> {
    let mut ops = Vec::new();
    let mut deleted = Vec::new();
    let nics = vm
        .properties
        .pointer("/networkProfile/networkInterfaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for nic in nics {
        let Some(Ok(nic_id)) = nic.get("id").and_then(Value::as_str).map(ResourceId::parse) else {
            continue;
        };
        let Some((rec, mut doc)) = super::load(ctx, &nic_id)? else {
            continue;
        };
        let attached_here = doc
            .properties
            .pointer("/virtualMachine/id")
            .and_then(Value::as_str)
            .is_some_and(|v| v.eq_ignore_ascii_case(&vm.id));
        let delete = nic
            .pointer("/properties/deleteOption")
            .and_then(Value::as_str)
            == Some("Delete");
        if attached_here && delete {
            deleted.push((rec, doc));
        } else if attached_here {
            if let Some(o) = doc.properties.as_object_mut() {
                o.remove("virtualMachine");
            }
            ops.push(Op::Put {
                key: rec.key.clone(),
                rtype: rec.rtype.clone(),
                parent: rec.parent.clone(),
                body: doc.to_json()?,
                pre: Precondition::Revision(rec.revision),
            });
        }
    }
    if !deleted.is_empty() {
        let vm_id = ResourceId::parse(&vm.id).map_err(|_| ApiError::internal())?;
        ops.extend(super::network::delete_with_vm(ctx, &vm_id, &deleted)?);
    }
    Ok(ops)
}

/// `start`, `stop`, `deallocate`.
pub fn vm_action(ctx: &Ctx<'_>, doc: &Doc, action: &str) -> Result<Built, ApiError> {
    let mut doc = doc.clone();
    let mut int = internal(&doc);
    match action {
        "start" => {
            if doc.prop_str("host").is_none() {
                // Deallocated: it needs a host again, under today's trust.
                let host = place(ctx)?;
                set(&mut doc, "host", json!(host));
            }
            int.desired = Some(Desired::Running);
            int.restart_pending = false;
            set(&mut doc, "powerState", json!("starting"));
            if doc.prop_str("provisioningState") == Some("Failed") {
                set(&mut doc, "provisioningState", json!("Updating"));
                set(&mut doc, "failureReason", Value::Null);
                set(&mut doc, "failureDetail", Value::Null);
            }
        }
        "stop" => {
            int.desired = Some(Desired::Stopped);
            int.restart_pending = false;
            if doc.prop_str("host").is_some() {
                set(&mut doc, "powerState", json!("stopping"));
            }
        }
        "restart" => {
            if doc.prop_str("host").is_none() {
                return Err(ApiError::conflict(
                    "VmDeallocated",
                    "the VM is deallocated: use start",
                ));
            }
            if doc.prop_str("powerState") == Some("stopped") {
                // Nothing to stop: a restart of a stopped VM is a start.
                int.desired = Some(Desired::Running);
                set(&mut doc, "powerState", json!("starting"));
            } else {
                int.desired = Some(Desired::Stopped);
                int.restart_pending = true;
                set(&mut doc, "powerState", json!("restarting"));
            }
            set(&mut doc, "provisioningState", json!("Updating"));
        }
        "deallocate" => {
            // The host lets go of the VM (its agent deletes the VM's host-local files, the
            // disk overlay and vTPM state included, when it no longer sees it assigned).
            int.desired = Some(Desired::Stopped);
            set(&mut doc, "host", Value::Null);
            set(&mut doc, "powerState", json!("deallocated"));
        }
        _ => {
            return Err(ApiError::bad_request(
                "InvalidAction",
                format!("unknown action '{action}': use start, stop, restart or deallocate"),
            ));
        }
    }
    int.generation += 1;
    doc.internal = serde_json::to_value(&int).map_err(|_| ApiError::internal())?;
    doc.system_data = new_doc(
        ctx,
        &ResourceId::tenant(),
        Kind::VirtualMachine,
        Some(&doc),
        Value::Null,
    )
    .system_data;
    Ok(Built {
        doc,
        extra_ops: vec![],
        reveal: None,
    })
}

/// `retrieveBootDiagnosticsData`: the tail of the VM's serial console as its agent last
/// reported it. A read: nothing is written.
pub fn boot_diagnostics(doc: &Doc) -> Reply {
    let int = internal(doc);
    Reply::json(
        200,
        json!({
            "consoleTail": int.console_tail,
            "reportedAt": (int.reported_at > 0).then(|| strata_types::time::rfc3339(int.reported_at)),
            "host": doc.prop_str("host"),
        }),
    )
}
