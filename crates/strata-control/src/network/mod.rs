//! `Strata.Network` resources as the control plane stores them — virtual networks (subnets and
//! peerings inline, as in ARM), network security groups (security rules inline), network
//! interfaces and application security groups — and the bridge to the pure `strata-netpol`
//! engine: stored documents → [`strata_netpol::Topology`] → [`strata_netpol::Network`].
//!
//! Every write of a network resource is checked against the whole subscription's topology with
//! the new document in place (peerings cross resource groups), so the stored state is always
//! one the engine accepts. Child items (subnets, peerings, security rules) are accepted in
//! ARM's nested form (`{ "name", "properties": { … } }`) or flat (`{ "name", … }`) and stored
//! nested, with their ids.
//!
//! Ids: the engine compares ids exactly, so every reference is resolved to the spelling of the
//! stored resource it names (ARM ids are case-insensitive); a reference to nothing stays as
//! written and the engine refuses it (`UnknownReference`).

pub mod ddos;
pub mod guard;
pub mod host;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};
use strata_netpol as np;
use strata_types::ApiError;

use crate::docs::Doc;
use crate::kinds::Kind;

pub const SUBNETS_TYPE: &str = "Strata.Network/virtualNetworks/subnets";
pub const PEERINGS_TYPE: &str = "Strata.Network/virtualNetworks/virtualNetworkPeerings";
pub const RULES_TYPE: &str = "Strata.Network/networkSecurityGroups/securityRules";

/// The network kinds, whose documents make up a subscription's topology.
pub const KINDS: [Kind; 4] = [
    Kind::VirtualNetwork,
    Kind::NetworkSecurityGroup,
    Kind::NetworkInterface,
    Kind::ApplicationSecurityGroup,
];

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("InvalidRequestContent", message)
}

fn kind_of(doc: &Doc) -> Option<Kind> {
    KINDS
        .into_iter()
        .find(|k| k.type_name().eq_ignore_ascii_case(&doc.rtype))
}

/// `{name, id, properties: {…}}` (ARM) or `{name, …}` → one flat object without the read-only
/// envelope fields.
fn flatten(item: &Value, at: &str) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(o) = item else {
        return Err(invalid(format!("{at} must be an object")));
    };
    let mut out = Map::new();
    for (k, v) in o {
        if k == "properties" {
            let Value::Object(p) = v else {
                return Err(invalid(format!("{at}.properties must be an object")));
            };
            out.extend(p.iter().map(|(pk, pv)| (pk.clone(), pv.clone())));
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    for read_only in ["id", "type", "etag", "provisioningState"] {
        out.remove(read_only);
    }
    Ok(out)
}

fn parse_item<T: for<'de> Deserialize<'de>>(item: &Value, at: &str) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(flatten(item, at)?))
        .map_err(|e| invalid(format!("{at}: {e}")))
}

fn parse_props<T: for<'de> Deserialize<'de>>(props: Option<Value>) -> Result<T, ApiError> {
    crate::handlers::parse_props(props)
}

/// A flat child item → its stored ARM form.
fn nest(parent_id: &str, segment: &str, rtype: &str, flat: Value) -> Value {
    let mut props = match flat {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    let name = props
        .remove("name")
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    props.insert("provisioningState".into(), json!("Succeeded"));
    json!({
        "name": name,
        "id": format!("{parent_id}/{segment}/{name}"),
        "type": rtype,
        "properties": props,
    })
}

fn child_name(name: &str, what: &str) -> Result<(), ApiError> {
    strata_types::path::validate_name(name)
        .map_err(|e| invalid(format!("{what} name '{name}': {e}")))
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|_| ApiError::internal())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VnetProps {
    address_space: np::AddressSpace,
    #[serde(default)]
    subnets: Vec<Value>,
    #[serde(default)]
    virtual_network_peerings: Vec<Value>,
    #[serde(default, rename = "provisioningState")]
    _provisioning_state: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SubnetIn {
    name: String,
    address_prefix: String,
    #[serde(default)]
    network_security_group: Option<np::SubResource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PeeringIn {
    name: String,
    remote_virtual_network: np::SubResource,
    #[serde(default, rename = "peeringState")]
    _peering_state: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NsgProps {
    #[serde(default)]
    security_rules: Vec<Value>,
    #[serde(default, rename = "defaultSecurityRules")]
    _default_security_rules: Option<IgnoredAny>,
    #[serde(default, rename = "provisioningState")]
    _provisioning_state: Option<IgnoredAny>,
}

/// The properties of a network interface as a client sends them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NicProps {
    pub subnet: np::SubResource,
    /// Allocated from the subnet when absent.
    #[serde(default, rename = "privateIPAddress", alias = "privateIpAddress")]
    pub private_ip_address: Option<String>,
    /// A NIC without one gets its own (see `handlers::network::build_nic`).
    #[serde(default)]
    pub network_security_group: Option<np::SubResource>,
    #[serde(default)]
    pub application_security_groups: Vec<np::SubResource>,
    /// Overrides of the default DDoS limits (`network::ddos`), checked by `ddos::settings`.
    #[serde(default)]
    pub ddos_settings: Option<Value>,
    #[serde(default, rename = "privateIPAllocationMethod")]
    _allocation: Option<IgnoredAny>,
    #[serde(default, rename = "provisioningState")]
    _provisioning_state: Option<IgnoredAny>,
    #[serde(default, rename = "secureDefaults")]
    _secure_defaults: Option<IgnoredAny>,
    /// Read-only: the VM the interface is attached to (set by the VM's create).
    #[serde(default, rename = "virtualMachine")]
    _virtual_machine: Option<IgnoredAny>,
    /// Read-only: allocated at create (`network::host`).
    #[serde(default, rename = "macAddress")]
    _mac_address: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AsgProps {
    #[serde(default, rename = "provisioningState")]
    _provisioning_state: Option<IgnoredAny>,
}

/// The stored properties of a virtual network (`id`: its display id).
pub fn vnet_properties(id: &str, props: Option<Value>) -> Result<Value, ApiError> {
    let p: VnetProps = parse_props(props)?;
    let mut subnets = Vec::new();
    for (i, s) in p.subnets.iter().enumerate() {
        let s: SubnetIn = parse_item(s, &format!("properties.subnets[{i}]"))?;
        child_name(&s.name, "subnet")?;
        let mut flat = json!({ "name": s.name, "addressPrefix": s.address_prefix });
        if let Some(n) = s.network_security_group {
            flat["networkSecurityGroup"] = json!({ "id": n.id });
        }
        subnets.push(nest(id, "subnets", SUBNETS_TYPE, flat));
    }
    let mut peerings = Vec::new();
    for (i, pe) in p.virtual_network_peerings.iter().enumerate() {
        let pe: PeeringIn = parse_item(pe, &format!("properties.virtualNetworkPeerings[{i}]"))?;
        child_name(&pe.name, "peering")?;
        let flat = json!({ "name": pe.name, "remoteVirtualNetwork": { "id": pe.remote_virtual_network.id } });
        peerings.push(nest(id, "virtualNetworkPeerings", PEERINGS_TYPE, flat));
    }
    Ok(json!({
        "addressSpace": p.address_space,
        "subnets": subnets,
        "virtualNetworkPeerings": peerings,
        "provisioningState": "Succeeded",
    }))
}

/// The stored properties of a network security group.
pub fn nsg_properties(id: &str, props: Option<Value>) -> Result<Value, ApiError> {
    let p: NsgProps = parse_props(props)?;
    let mut rules = Vec::new();
    for (i, r) in p.security_rules.iter().enumerate() {
        let rule: np::SecurityRule = parse_item(r, &format!("properties.securityRules[{i}]"))?;
        rules.push(nest(id, "securityRules", RULES_TYPE, to_value(&rule)?));
    }
    Ok(json!({ "securityRules": rules, "provisioningState": "Succeeded" }))
}

/// An empty network security group: only the default rules, which deny inbound traffic from
/// outside the virtual network.
pub fn empty_nsg_properties() -> Value {
    json!({ "securityRules": [], "provisioningState": "Succeeded" })
}

pub fn asg_properties(props: Option<Value>) -> Result<Value, ApiError> {
    let _: AsgProps = parse_props(props)?;
    Ok(json!({ "provisioningState": "Succeeded" }))
}

pub fn parse_nic(props: Option<Value>) -> Result<NicProps, ApiError> {
    let p: NicProps = parse_props(props)?;
    ddos::settings(p.ddos_settings.as_ref())?;
    Ok(p)
}

/// The stored properties of a network interface, once its address and NSG are settled.
pub fn nic_properties(
    p: &NicProps,
    ip: &str,
    nsg: &str,
    dynamic: bool,
    note: Option<String>,
) -> Value {
    let mut v = json!({
        "subnet": { "id": p.subnet.id },
        "privateIPAddress": ip,
        "privateIPAllocationMethod": if dynamic { "Dynamic" } else { "Static" },
        "networkSecurityGroup": { "id": nsg },
        "applicationSecurityGroups": p.application_security_groups,
        "provisioningState": "Succeeded",
    });
    if let Some(n) = note {
        v["secureDefaults"] = json!(n);
    }
    // `parse_nic` checked the settings; only overrides are stored.
    if let Ok(Some(s)) = ddos::settings(p.ddos_settings.as_ref()) {
        v["ddosSettings"] = json!(s);
    }
    v
}

/// Maps any spelling of a stored resource's id (subnets included) to the stored spelling.
struct Resolver(HashMap<String, String>);

impl Resolver {
    fn new(docs: &[Doc]) -> Self {
        let mut ids = HashMap::new();
        for d in docs {
            ids.insert(d.id.to_ascii_lowercase(), d.id.clone());
            if kind_of(d) == Some(Kind::VirtualNetwork) {
                for s in items(d, "subnets") {
                    if let Some(name) = s.get("name").and_then(Value::as_str) {
                        let sid = format!("{}/subnets/{name}", d.id);
                        ids.insert(sid.to_ascii_lowercase(), sid);
                    }
                }
            }
        }
        Self(ids)
    }

    fn id(&self, id: &str) -> String {
        let trimmed = id.trim_end_matches('/');
        self.0
            .get(&trimmed.to_ascii_lowercase())
            .cloned()
            .unwrap_or_else(|| id.to_owned())
    }

    fn sub(&self, r: &np::SubResource) -> np::SubResource {
        np::SubResource::new(self.id(&r.id))
    }
}

fn items<'a>(doc: &'a Doc, field: &str) -> &'a [Value] {
    doc.properties
        .get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn stored<T: for<'de> Deserialize<'de>>(item: &Value, doc: &Doc) -> Result<T, ApiError> {
    parse_item(item, &doc.id).map_err(|e| {
        tracing::error!(id = %doc.id, error = ?e, "stored network resource does not parse");
        ApiError::internal()
    })
}

/// The engine's view of a set of stored network documents (other documents are ignored).
pub fn topology(docs: &[Doc]) -> Result<np::Topology, ApiError> {
    let r = Resolver::new(docs);
    let mut t = np::Topology::default();
    for d in docs {
        match kind_of(d) {
            Some(Kind::VirtualNetwork) => {
                let space: np::AddressSpace = d
                    .properties
                    .get("addressSpace")
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .ok_or_else(ApiError::internal)?;
                let mut subnets = Vec::new();
                for s in items(d, "subnets") {
                    let s: SubnetIn = stored(s, d)?;
                    subnets.push(np::Subnet {
                        name: s.name,
                        address_prefix: s.address_prefix,
                        network_security_group: s.network_security_group.map(|n| r.sub(&n)),
                    });
                }
                let mut peerings = Vec::new();
                for p in items(d, "virtualNetworkPeerings") {
                    let p: PeeringIn = stored(p, d)?;
                    peerings.push(np::VirtualNetworkPeering {
                        name: p.name,
                        remote_virtual_network: r.sub(&p.remote_virtual_network),
                    });
                }
                t.virtual_networks.push(np::VirtualNetwork {
                    id: d.id.clone(),
                    address_space: space,
                    subnets,
                    virtual_network_peerings: peerings,
                });
            }
            Some(Kind::NetworkSecurityGroup) => {
                let mut rules = Vec::new();
                for rule in items(d, "securityRules") {
                    let mut rule: np::SecurityRule = stored(rule, d)?;
                    for asgs in [
                        &mut rule.source_application_security_groups,
                        &mut rule.destination_application_security_groups,
                    ] {
                        for a in asgs.iter_mut() {
                            *a = r.sub(a);
                        }
                    }
                    rules.push(rule);
                }
                t.network_security_groups.push(np::NetworkSecurityGroup {
                    id: d.id.clone(),
                    security_rules: rules,
                });
            }
            Some(Kind::NetworkInterface) => {
                let p: NicProps = serde_json::from_value(d.properties.clone()).map_err(|e| {
                    tracing::error!(id = %d.id, error = %e, "stored network interface does not parse");
                    ApiError::internal()
                })?;
                t.network_interfaces.push(np::NetworkInterface {
                    id: d.id.clone(),
                    subnet: r.sub(&p.subnet),
                    private_ip_address: p.private_ip_address.unwrap_or_default(),
                    network_security_group: p.network_security_group.map(|n| r.sub(&n)),
                    application_security_groups: p
                        .application_security_groups
                        .iter()
                        .map(|a| r.sub(a))
                        .collect(),
                });
            }
            Some(Kind::ApplicationSecurityGroup) => {
                t.application_security_groups
                    .push(np::ApplicationSecurityGroup { id: d.id.clone() });
            }
            _ => {}
        }
    }
    Ok(t)
}

/// Validates and compiles: the engine's refusal becomes a 400 with its stable code.
pub fn compile(docs: &[Doc]) -> Result<np::Network, ApiError> {
    let t = topology(docs)?;
    np::Network::new(&t).map_err(|e| ApiError::bad_request(e.code(), e.to_string()))
}

/// `docs` with `doc` added or in place of the document with the same id.
pub fn with(mut docs: Vec<Doc>, doc: &Doc) -> Vec<Doc> {
    docs.retain(|d| !d.id.eq_ignore_ascii_case(&doc.id));
    docs.push(doc.clone());
    docs
}

/// The first free address of `subnet_id` (after the four reserved at its start, before the
/// broadcast address, as Azure does), skipping addresses of NICs other than `nic_id` in the
/// same virtual network.
pub fn allocate_ip(docs: &[Doc], subnet_id: &str, nic_id: &str) -> Result<String, ApiError> {
    let t = topology(docs)?;
    let r = Resolver::new(docs);
    let subnet_id = r.id(subnet_id);
    let unknown = || {
        ApiError::bad_request(
            "UnknownReference",
            format!(
                "subnet '{subnet_id}' does not exist; create it with 'strata network vnet subnet create' or fix subnet.id"
            ),
        )
    };
    let (vnet, name) = subnet_id.rsplit_once("/subnets/").ok_or_else(unknown)?;
    let v = t
        .virtual_networks
        .iter()
        .find(|v| v.id == vnet)
        .ok_or_else(unknown)?;
    let s = v
        .subnets
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(unknown)?;
    let prefix = np::ranges::parse_prefix(&s.address_prefix).map_err(|_| ApiError::internal())?;
    let in_vnet = format!("{vnet}/subnets/");
    let used: Vec<u32> = t
        .network_interfaces
        .iter()
        .filter(|n| !n.id.eq_ignore_ascii_case(nic_id) && n.subnet.id.starts_with(&in_vnet))
        .filter_map(|n| n.private_ip_address.parse::<Ipv4Addr>().ok())
        .map(u32::from)
        .collect();
    let (lo, hi) = prefix.bounds();
    (lo.saturating_add(4)..hi)
        .find(|ip| !used.contains(ip))
        .map(|ip| Ipv4Addr::from(ip).to_string())
        .ok_or_else(|| {
            ApiError::conflict(
                "SubnetIsFull",
                format!(
                    "subnet '{subnet_id}' ({}) has no free address; use a larger subnet or delete a network interface",
                    s.address_prefix
                ),
            )
        })
}

/// Who refers to the resource `id` of `kind` (for 409s on delete), as "kind 'id'" phrases.
pub fn referrers(docs: &[Doc], id: &str, kind: Kind) -> Result<Vec<String>, ApiError> {
    let t = topology(docs)?;
    let is = |other: &str| other.eq_ignore_ascii_case(id);
    let mut out = Vec::new();
    match kind {
        Kind::NetworkSecurityGroup => {
            for v in &t.virtual_networks {
                for s in &v.subnets {
                    if s.network_security_group.as_ref().is_some_and(|n| is(&n.id)) {
                        out.push(format!("subnet '{}/subnets/{}'", v.id, s.name));
                    }
                }
            }
            for n in &t.network_interfaces {
                if n.network_security_group.as_ref().is_some_and(|g| is(&g.id)) {
                    out.push(format!("network interface '{}'", n.id));
                }
            }
        }
        Kind::ApplicationSecurityGroup => {
            for n in &t.network_interfaces {
                if n.application_security_groups.iter().any(|a| is(&a.id)) {
                    out.push(format!("network interface '{}'", n.id));
                }
            }
            for g in &t.network_security_groups {
                for rule in &g.security_rules {
                    if rule
                        .source_application_security_groups
                        .iter()
                        .chain(&rule.destination_application_security_groups)
                        .any(|a| is(&a.id))
                    {
                        out.push(format!(
                            "security rule '{}/securityRules/{}'",
                            g.id, rule.name
                        ));
                    }
                }
            }
        }
        Kind::VirtualNetwork => {
            let prefix = format!("{}/subnets/", id.to_ascii_lowercase());
            for n in &t.network_interfaces {
                if n.subnet.id.to_ascii_lowercase().starts_with(&prefix) {
                    out.push(format!("network interface '{}'", n.id));
                }
            }
            for v in &t.virtual_networks {
                for p in &v.virtual_network_peerings {
                    if !is(&v.id) && is(&p.remote_virtual_network.id) {
                        out.push(format!(
                            "peering '{}/virtualNetworkPeerings/{}'",
                            v.id, p.name
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    Ok(out)
}

/// Network interfaces in subnets of `vnet` that `new` no longer has.
pub fn nics_in_removed_subnets(
    docs: &[Doc],
    old: &Doc,
    new: &Doc,
) -> Result<Vec<String>, ApiError> {
    let names = |d: &Doc| -> Vec<String> {
        items(d, "subnets")
            .iter()
            .filter_map(|s| s.get("name").and_then(Value::as_str))
            .map(str::to_ascii_lowercase)
            .collect()
    };
    let kept = names(new);
    let removed: Vec<String> = names(old)
        .into_iter()
        .filter(|n| !kept.contains(n))
        .map(|n| format!("{}/subnets/{n}", old.id.to_ascii_lowercase()))
        .collect();
    let t = topology(docs)?;
    Ok(t.network_interfaces
        .iter()
        .filter(|n| removed.contains(&n.subnet.id.to_ascii_lowercase()))
        .map(|n| format!("network interface '{}' (subnet '{}')", n.id, n.subnet.id))
        .collect())
}
