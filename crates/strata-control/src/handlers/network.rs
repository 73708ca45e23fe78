//! ARM handlers for `Strata.Network`: virtual networks, network security groups, network
//! interfaces and application security groups (create/replace validated against the whole
//! subscription's topology by `strata-netpol`, deletes refused while referenced), and the
//! read-only queries on a network interface: `ipFlowVerify`, `effectiveNetworkSecurityGroups`,
//! `reachability` and `ddosCounters` (`network::ddos`). The stored shapes and the bridge to the engine live in `crate::network`.
//!
//! Strata's secure default: a network interface created without a network security group gets
//! its own, `<nic>-nsg`, with only the default rules (inbound from outside the virtual network
//! denied), created in the same transaction and named in the response (`secureDefaults`). It is
//! marked as that interface's (`internal.createdFor`) and deleted with it unless a subnet or
//! another interface uses it by then, so deleting interfaces leaves no orphaned NSGs.

use std::net::{Ipv4Addr, SocketAddrV4};

use serde::Deserialize;
use serde_json::{Value, json};
use strata_netpol as np;
use strata_store::{Op, Precondition};
use strata_types::{ApiError, ResourceBody, ResourceId};

use super::{Built, load, new_doc, parse_body};
use crate::context::Ctx;
use crate::dispatch::Reply;
use crate::docs::Doc;
use crate::kinds::Kind;
use crate::network as net;
use crate::network::guard;

fn read_failed(e: &strata_store::StoreError) -> ApiError {
    crate::app::log_chain("store read failed", e);
    ApiError::internal()
}

/// Every network document of the subscription `id` belongs to.
fn subscription_docs(ctx: &Ctx<'_>, id: &ResourceId) -> Result<Vec<Doc>, ApiError> {
    Ok(snapshot(ctx, id)?.0)
}

/// The subscription's network documents for a write, with the topology revision they were read
/// at: the write adds `seen.bump()` to its batch, so it commits only if no other network write
/// committed since (`crate::network::guard`).
pub fn snapshot(ctx: &Ctx<'_>, id: &ResourceId) -> Result<(Vec<Doc>, guard::Seen), ApiError> {
    let sub = guard::subscription_key(id)?;
    // The revision first: a write committed between the two reads makes the bump fail.
    let seen = guard::Seen::read(ctx.app.store.as_ref(), &sub).map_err(|e| read_failed(&e))?;
    let keys: Vec<String> = net::KINDS.iter().map(|k| k.type_key()).collect();
    let records = ctx
        .app
        .store
        .list_under(&sub)
        .map_err(|e| read_failed(&e))?;
    let docs = records
        .into_iter()
        .filter(|r| keys.contains(&r.rtype))
        .map(|r| Doc::parse(&r.body))
        .collect::<Result<_, _>>()?;
    Ok((docs, seen))
}

fn built(doc: Doc, seen: guard::Seen) -> Built {
    Built {
        doc,
        extra_ops: vec![seen.bump()],
        reveal: None,
    }
}

pub const SUBNET_JOIN: &str = "Strata.Network/virtualNetworks/subnets/join/action";
pub const NSG_JOIN: &str = "Strata.Network/networkSecurityGroups/join/action";
pub const ASG_JOIN_NIC: &str =
    "Strata.Network/applicationSecurityGroups/joinIpConfiguration/action";
pub const ASG_JOIN_RULE: &str =
    "Strata.Network/applicationSecurityGroups/joinNetworkSecurityRule/action";
pub const VNET_PEER: &str = "Strata.Network/virtualNetworks/peer/action";
pub const NIC_JOIN: &str = "Strata.Network/networkInterfaces/join/action";

/// Linked access, as Azure checks it: a write that makes one resource use another (a NIC in a
/// subnet, an NSG on a subnet or NIC, a NIC in an ASG, an ASG in a security rule, a peering to
/// a remote network, a VM with a NIC) needs the other resource's join action on that resource,
/// besides write access to its own target. Checked before anything is looked up (a refusal
/// says nothing about whether `target` exists); refused with 403 `LinkedAuthorizationFailed`
/// naming the action and audited as a denial.
pub fn require_join(ctx: &Ctx<'_>, action: &str, what: &str, target: &str) -> Result<(), ApiError> {
    let scope = target.trim_end_matches('/').to_ascii_lowercase();
    let decision = ctx.app.decide(&ctx.caller, action, &scope, false);
    let mfa_role = ctx.app.missing_mfa(&ctx.caller, &decision);
    if decision.is_allowed() && mfa_role.is_none() {
        return Ok(());
    }
    let mut entry = ctx.entry(
        "denial",
        "denied",
        403,
        json!({ "linkedTo": ctx.scope, "linkedAction": ctx.action }),
    );
    entry.action = action.to_owned();
    entry.scope = target.to_owned();
    entry.reason = match &mfa_role {
        Some(role) => format!(
            "{}; privileged role '{role}' requires MFA",
            decision.explain()
        ),
        None => decision.explain(),
    };
    ctx.app.audit_only(vec![entry]);
    ctx.audited.set(true);
    Err(ApiError::new(
        403,
        "LinkedAuthorizationFailed",
        format!(
            "'{}' may not use {what} '{target}': that needs {action} on it{} (Network Contributor grants it); nothing was changed",
            ctx.caller.name,
            if mfa_role.is_some() {
                ", through a role that requires multi-factor sign-in"
            } else {
                ""
            }
        ),
    ))
}

/// The ids (lowercase, without trailing `/`) found at `pointer` in each of `items`.
fn ids_at(items: &[Value], pointer: &str) -> Vec<String> {
    items
        .iter()
        .flat_map(|item| match item.pointer(pointer) {
            Some(Value::Array(a)) => a.clone(),
            Some(v) => vec![v.clone()],
            None => vec![],
        })
        .filter_map(|v| v.get("id").and_then(Value::as_str).map(trim))
        .collect()
}

fn trim(id: &str) -> String {
    id.trim_end_matches('/').to_owned()
}

fn items_of<'a>(doc: Option<&'a Doc>, field: &str) -> &'a [Value] {
    doc.and_then(|d| d.properties.get(field))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Checks the join action on every reference of `new` that `old` did not have.
fn require_new_joins(
    ctx: &Ctx<'_>,
    action: &str,
    what: &str,
    old: &[String],
    new: &[String],
) -> Result<(), ApiError> {
    let had = |list: &[String], id: &str| list.iter().any(|o| o.eq_ignore_ascii_case(id));
    for (i, id) in new.iter().enumerate() {
        if !had(old, id) && !had(&new[..i], id) {
            require_join(ctx, action, what, id)?;
        }
    }
    Ok(())
}

pub fn build_vnet(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let props = net::vnet_properties(id.as_str(), body.properties)?;
    let doc = new_doc(ctx, id, Kind::VirtualNetwork, existing, props);
    // A subnet's NSG: the NSG's join action; a peering: the remote network's peer action.
    let (subnets, peerings) = (
        items_of(Some(&doc), "subnets"),
        items_of(Some(&doc), "virtualNetworkPeerings"),
    );
    let old_subnets = items_of(existing, "subnets");
    for s in subnets {
        let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
        let before: Vec<Value> = old_subnets
            .iter()
            .filter(|o| o.get("name").and_then(Value::as_str) == Some(name))
            .cloned()
            .collect();
        require_new_joins(
            ctx,
            NSG_JOIN,
            "network security group",
            &ids_at(&before, "/properties/networkSecurityGroup"),
            &ids_at(std::slice::from_ref(s), "/properties/networkSecurityGroup"),
        )?;
    }
    require_new_joins(
        ctx,
        VNET_PEER,
        "virtual network",
        &ids_at(
            items_of(existing, "virtualNetworkPeerings"),
            "/properties/remoteVirtualNetwork",
        ),
        &ids_at(peerings, "/properties/remoteVirtualNetwork"),
    )?;
    let (docs, seen) = snapshot(ctx, id)?;
    if let Some(old) = existing {
        let users = net::nics_in_removed_subnets(&docs, old, &doc)?;
        if !users.is_empty() {
            return Err(ApiError::conflict(
                "InUseSubnetCannotBeDeleted",
                format!(
                    "subnets still in use cannot be removed: {}; delete or move those first",
                    users.join(", ")
                ),
            ));
        }
    }
    net::compile(&net::with(docs, &doc))?;
    Ok(built(doc, seen))
}

pub fn build_nsg(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let props = net::nsg_properties(id.as_str(), body.properties)?;
    // A NIC's own NSG (created by the secure default) keeps its owner mark through edits of its
    // rules: it is still that interface's, and goes with it (`delete_ops`).
    let doc = new_doc(ctx, id, Kind::NetworkSecurityGroup, existing, props);
    // An ASG in a rule: the ASG's joinNetworkSecurityRule action.
    let asgs = |d: Option<&Doc>| {
        let rules = items_of(d, "securityRules");
        let mut ids = ids_at(rules, "/properties/sourceApplicationSecurityGroups");
        ids.extend(ids_at(
            rules,
            "/properties/destinationApplicationSecurityGroups",
        ));
        ids
    };
    require_new_joins(
        ctx,
        ASG_JOIN_RULE,
        "application security group",
        &asgs(existing),
        &asgs(Some(&doc)),
    )?;
    let (docs, seen) = snapshot(ctx, id)?;
    net::compile(&net::with(docs, &doc))?;
    Ok(built(doc, seen))
}

pub fn build_asg(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let props = net::asg_properties(body.properties)?;
    let doc = new_doc(ctx, id, Kind::ApplicationSecurityGroup, existing, props);
    let (docs, seen) = snapshot(ctx, id)?;
    net::compile(&net::with(docs, &doc))?;
    Ok(built(doc, seen))
}

pub fn build_nic(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let p = net::parse_nic(body.properties)?;
    // The subnet, NSG and ASGs it newly uses: their join actions.
    let old_ids = |pointer: &str| {
        existing.map_or_else(Vec::new, |d| {
            ids_at(std::slice::from_ref(&d.properties), pointer)
        })
    };
    require_new_joins(
        ctx,
        SUBNET_JOIN,
        "subnet",
        &old_ids("/subnet"),
        &[trim(&p.subnet.id)],
    )?;
    if let Some(n) = &p.network_security_group {
        require_new_joins(
            ctx,
            NSG_JOIN,
            "network security group",
            &old_ids("/networkSecurityGroup"),
            &[trim(&n.id)],
        )?;
    }
    require_new_joins(
        ctx,
        ASG_JOIN_NIC,
        "application security group",
        &old_ids("/applicationSecurityGroups"),
        &p.application_security_groups
            .iter()
            .map(|a| trim(&a.id))
            .collect::<Vec<_>>(),
    )?;
    let (mut docs, seen) = snapshot(ctx, id)?;
    let mut extra_ops = vec![seen.bump()];
    let mut note = None;
    let old = |field: &str| {
        existing
            .and_then(|d| d.properties.pointer(field))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let nsg = match (&p.network_security_group, old("/networkSecurityGroup/id")) {
        (Some(n), _) => n.id.clone(),
        (None, Some(kept)) => kept,
        (None, None) => {
            let (nsg_doc, op) = own_nsg(ctx, id)?;
            note = Some(format!(
                "no networkSecurityGroup was given, so strata created '{}' for this interface: only the default rules, which deny inbound traffic from outside the virtual network; add rules to it to open ports; it is deleted with this interface unless a subnet or another interface uses it",
                nsg_doc.name
            ));
            let nsg_id = nsg_doc.id.clone();
            docs = net::with(docs, &nsg_doc);
            extra_ops.extend(op);
            nsg_id
        }
    };
    let same_subnet = old("/subnet/id").is_some_and(|s| s.eq_ignore_ascii_case(&p.subnet.id));
    let (ip, dynamic) = match (&p.private_ip_address, old("/privateIPAddress")) {
        (Some(ip), _) => (ip.clone(), false),
        (None, Some(kept)) if same_subnet => (
            kept,
            old("/privateIPAllocationMethod").as_deref() != Some("Static"),
        ),
        (None, _) => (net::allocate_ip(&docs, &p.subnet.id, id.as_str())?, true),
    };
    if note.is_none() {
        note = existing.and_then(|d| {
            d.prop_str("secureDefaults")
                .filter(|_| {
                    old("/networkSecurityGroup/id").is_some_and(|k| k.eq_ignore_ascii_case(&nsg))
                })
                .map(String::from)
        });
    }
    let mut props = net::nic_properties(&p, &ip, &nsg, dynamic, note);
    // Kept for the interface's life; unique in the subscription.
    props["macAddress"] = match existing.and_then(net::host::stored_mac) {
        Some(mac) => json!(net::host::mac_text(mac)),
        None => json!(net::host::allocate_mac(&docs, id.as_str())?),
    };
    // Attachment belongs to the VM's lifecycle, not to the interface's own PUT.
    if let Some(vm) = existing.and_then(|d| d.properties.get("virtualMachine"))
        && !vm.is_null()
    {
        props["virtualMachine"] = vm.clone();
    }
    let doc = new_doc(ctx, id, Kind::NetworkInterface, existing, props);
    net::compile(&net::with(docs, &doc))?;
    Ok(Built {
        doc,
        extra_ops,
        reveal: None,
    })
}

/// The NIC's own deny-by-default NSG, `<nic>-nsg` in the NIC's resource group: created now, or
/// reused when an earlier interface of this id left it behind.
fn own_nsg(ctx: &Ctx<'_>, nic: &ResourceId) -> Result<(Doc, Option<Op>), ApiError> {
    let name = format!("{}-nsg", nic.name().unwrap_or_default());
    let rg = nic.parent().ok_or_else(ApiError::internal)?;
    let nsg_id = rg
        .child_provider("Strata.Network", "networkSecurityGroups", &name)
        .map_err(|e| {
            ApiError::bad_request(
                "InvalidResourceName",
                format!(
                    "the interface's own network security group would be named '{name}', which is not valid ({e}); give networkSecurityGroup explicitly"
                ),
            )
        })?;
    let created_for = json!({ "createdFor": nic.key() });
    if let Some((_, doc)) = load(ctx, &nsg_id)? {
        if doc.internal == created_for {
            return Ok((doc, None));
        }
        return Err(ApiError::conflict(
            "NetworkSecurityGroupNameTaken",
            format!(
                "'{nsg_id}' already exists, so strata cannot create this interface's own network security group; give networkSecurityGroup explicitly"
            ),
        ));
    }
    let mut doc = new_doc(
        ctx,
        &nsg_id,
        Kind::NetworkSecurityGroup,
        None,
        net::empty_nsg_properties(),
    );
    doc.internal = created_for;
    let op = Op::Put {
        key: nsg_id.key().to_string(),
        rtype: Kind::NetworkSecurityGroup.type_key(),
        parent: rg.key().to_string(),
        body: doc.to_json()?,
        pre: Precondition::MustNotExist,
    };
    Ok((doc, Some(op)))
}

/// The further writes of a DELETE of a network resource (the topology revision moves on), or
/// its refusal: a network security group, application security group or virtual network is
/// refused with 409 while anything refers to it, naming the referrers; a network interface
/// while a VM has it.
pub fn delete_ops(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    kind: Kind,
    doc: &Doc,
) -> Result<Vec<Op>, ApiError> {
    let (docs, seen) = snapshot(ctx, id)?;
    if kind == Kind::NetworkInterface {
        if let Some(vm) = doc
            .properties
            .pointer("/virtualMachine/id")
            .and_then(Value::as_str)
        {
            return Err(ApiError::conflict(
                "InUseNetworkInterfaceCannotBeDeleted",
                format!("the interface is attached to '{vm}'; delete the VM first"),
            ));
        }
        let mut ops = vec![seen.bump()];
        ops.extend(own_nsg_delete(ctx, id, doc, &docs)?);
        return Ok(ops);
    }
    check_unreferenced(&docs, id, kind)?;
    Ok(vec![seen.bump()])
}

/// The network side of deleting a resource group: refused with 409 while network resources
/// outside it refer to network resources inside it (the engine names the first reference);
/// interfaces outside it attached to VMs inside it are detached; the topology revision moves
/// on (the group's network resources go with it).
pub fn resource_group_delete_ops(ctx: &Ctx<'_>, rg: &ResourceId) -> Result<Vec<Op>, ApiError> {
    let (docs, seen) = snapshot(ctx, rg)?;
    let inside = format!("{}/", rg.key());
    let is_inside = |id: &str| id.to_ascii_lowercase().starts_with(&inside);
    let (gone, kept): (Vec<Doc>, Vec<Doc>) = docs.into_iter().partition(|d| is_inside(&d.id));
    if !gone.is_empty() {
        net::compile(&kept).map_err(|e| {
            ApiError::conflict(
                "InUseResourceGroupNetworkCannotBeDeleted",
                format!(
                    "resource group '{rg}' holds network resources still used from outside it ({}); remove those references first",
                    e.message
                ),
            )
        })?;
    }
    // No network resource goes: nothing to bump, but none may appear in the group meanwhile.
    let mut ops = vec![if gone.is_empty() {
        seen.unchanged()
    } else {
        seen.bump()
    }];
    for nic in kept.iter().filter(|d| {
        d.properties
            .pointer("/virtualMachine/id")
            .and_then(Value::as_str)
            .is_some_and(is_inside)
    }) {
        let nic_id = ResourceId::parse(&nic.id).map_err(|_| ApiError::internal())?;
        if let Some((rec, mut doc)) = load(ctx, &nic_id)? {
            if let Some(o) = doc.properties.as_object_mut() {
                o.remove("virtualMachine");
            }
            ops.push(Op::Put {
                key: rec.key,
                rtype: rec.rtype,
                parent: rec.parent,
                body: doc.to_json()?,
                pre: Precondition::Revision(rec.revision),
            });
        }
    }
    Ok(ops)
}

/// The interfaces a VM's delete takes with it (`deleteOption: Delete`), each with the NSG
/// strata created for it when nothing else uses that; the topology revision moves on.
pub fn delete_with_vm(
    ctx: &Ctx<'_>,
    vm: &ResourceId,
    nics: &[(strata_store::Record, Doc)],
) -> Result<Vec<Op>, ApiError> {
    let (docs, seen) = snapshot(ctx, vm)?;
    let mut ops = vec![seen.bump()];
    for (rec, doc) in nics {
        ops.push(Op::Delete {
            key: rec.key.clone(),
            pre: Precondition::Revision(rec.revision),
        });
        let nic = ResourceId::parse(&doc.id).map_err(|_| ApiError::internal())?;
        ops.extend(own_nsg_delete(ctx, &nic, doc, &docs)?);
    }
    Ok(ops)
}

/// The network security group strata created for interface `nic` (marked
/// `internal.createdFor`), deleted with it unless a subnet or another interface uses it.
fn own_nsg_delete(
    ctx: &Ctx<'_>,
    nic: &ResourceId,
    nic_doc: &Doc,
    docs: &[Doc],
) -> Result<Option<Op>, ApiError> {
    let Some(nsg_id) = nic_doc
        .properties
        .pointer("/networkSecurityGroup/id")
        .and_then(Value::as_str)
    else {
        return Ok(None);
    };
    let Some(nsg) = docs.iter().find(|d| d.id.eq_ignore_ascii_case(nsg_id)) else {
        return Ok(None);
    };
    if nsg.internal != json!({ "createdFor": nic.key() }) {
        return Ok(None);
    }
    let this = format!("network interface '{}'", nic_doc.id);
    let others = net::referrers(docs, &nsg.id, Kind::NetworkSecurityGroup)?;
    if others.iter().any(|r| !r.eq_ignore_ascii_case(&this)) {
        return Ok(None);
    }
    let nsg_rid = ResourceId::parse(&nsg.id).map_err(|_| ApiError::internal())?;
    Ok(load(ctx, &nsg_rid)?.map(|(rec, _)| Op::Delete {
        key: rec.key,
        pre: Precondition::Revision(rec.revision),
    }))
}

fn check_unreferenced(docs: &[Doc], id: &ResourceId, kind: Kind) -> Result<(), ApiError> {
    let Some(stored) = docs.iter().find(|d| d.id.eq_ignore_ascii_case(id.as_str())) else {
        return Ok(());
    };
    let users = net::referrers(docs, &stored.id, kind)?;
    if users.is_empty() {
        return Ok(());
    }
    let (code, what) = match kind {
        Kind::NetworkSecurityGroup => (
            "InUseNetworkSecurityGroupCannotBeDeleted",
            "network security group",
        ),
        Kind::ApplicationSecurityGroup => (
            "InUseApplicationSecurityGroupCannotBeDeleted",
            "application security group",
        ),
        _ => ("InUseVirtualNetworkCannotBeDeleted", "virtual network"),
    };
    Err(ApiError::conflict(
        code,
        format!(
            "{what} '{}' is still used by {}; remove those references first",
            stored.id,
            users.join(", ")
        ),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FlowBody {
    direction: np::Direction,
    protocol: np::FlowProtocol,
    /// `IP:PORT` of the interface (the port may be left out for ICMP, ESP and AH).
    local: String,
    /// `IP:PORT` of the other end.
    remote: String,
    /// Decide as return traffic of a connection opened the other way.
    #[serde(default)]
    established: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReachabilityBody {
    protocol: np::FlowProtocol,
    #[serde(default)]
    port: u16,
    /// Ask whether this network interface can reach this one (routing, then both NICs' NSGs)
    /// instead of which addresses can.
    #[serde(default)]
    source: Option<np::SubResource>,
    #[serde(default)]
    source_port: Option<u16>,
}

fn socket(field: &str, s: &str) -> Result<SocketAddrV4, ApiError> {
    s.parse::<SocketAddrV4>()
        .or_else(|_| s.parse::<Ipv4Addr>().map(|ip| SocketAddrV4::new(ip, 0)))
        .map_err(|_| {
            ApiError::bad_request(
                "InvalidRequestContent",
                format!("{field} '{s}' is not IP:PORT; use e.g. 10.0.1.4:22"),
            )
        })
}

fn query_err(e: &np::QueryError) -> ApiError {
    ApiError::bad_request("InvalidQuery", e.to_string())
}

/// The read-only POST actions on a network interface (RBAC: `networkInterfaces/read`). The
/// engine is built from the stored resources of the interface's subscription.
pub fn nic_query(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    doc: &Doc,
    action: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    if action == "ddosCounters" {
        return Ok(Reply::json(200, net::ddos::counters_view(ctx.app, doc)));
    }
    let docs = subscription_docs(ctx, id)?;
    let network = net::compile(&docs)?;
    let nic = doc.id.as_str();
    let answer = match action {
        "ipFlowVerify" => {
            let b: FlowBody = parse_body(body)?;
            let mut flow = np::Flow::new(
                b.direction,
                b.protocol,
                socket("local", &b.local)?,
                socket("remote", &b.remote)?,
            );
            flow.established = b.established;
            serde_json::to_value(network.flow_verify(nic, &flow).map_err(|e| query_err(&e))?)
        }
        "effectiveNetworkSecurityGroups" => {
            serde_json::to_value(network.effective_rules(nic).map_err(|e| query_err(&e))?)
        }
        "reachability" => {
            let b: ReachabilityBody = parse_body(body)?;
            match b.source {
                None => serde_json::to_value(
                    network
                        .sources_reaching(nic, b.protocol, b.port)
                        .map_err(|e| query_err(&e))?,
                ),
                Some(source) => {
                    let from = docs
                        .iter()
                        .find(|d| d.id.eq_ignore_ascii_case(source.id.trim_end_matches('/')))
                        .map(|d| d.id.clone())
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "UnknownReference",
                                format!(
                                    "source '{}' is not a network interface of this subscription",
                                    source.id
                                ),
                            )
                        })?;
                    serde_json::to_value(
                        network
                            .can_reach(&from, nic, b.protocol, b.port, b.source_port)
                            .map_err(|e| query_err(&e))?,
                    )
                }
            }
        }
        _ => {
            return Err(ApiError::bad_request(
                "InvalidAction",
                format!(
                    "unknown action '{action}': use ipFlowVerify, effectiveNetworkSecurityGroups, reachability or ddosCounters"
                ),
            ));
        }
    };
    Ok(Reply::json(200, answer.map_err(|_| ApiError::internal())?))
}
