//! `strata network …`: virtual networks (subnets and peerings), network security groups (and
//! their rules), network interfaces and application security groups, plus the questions the
//! engine answers about a NIC: `flow-verify`, `effective-rules` and `reachability`.
//!
//! Subnets, peerings and security rules live inside their parent resource (as in ARM's
//! bodies): their commands read the parent, change it, and write it back with `If-Match`, so a
//! concurrent change is refused rather than lost.

use anyhow::{Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::client::Client;
use crate::output::{Column, Format, print};

const VNET_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    (
        "AddressPrefixes",
        "/properties/addressSpace/addressPrefixes",
    ),
    ("Subnets", "/properties/subnets"),
];
const SUBNET_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("AddressPrefix", "/properties/addressPrefix"),
    ("Nsg", "/properties/networkSecurityGroup/id"),
];
const PEERING_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("Remote", "/properties/remoteVirtualNetwork/id"),
];
const NSG_COLS: &[Column<'static>] = &[("Name", "/name"), ("Rules", "/properties/securityRules")];
const RULE_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("Priority", "/properties/priority"),
    ("Direction", "/properties/direction"),
    ("Access", "/properties/access"),
    ("Protocol", "/properties/protocol"),
    ("Source", "/properties/sourceAddressPrefix"),
    ("Sources", "/properties/sourceAddressPrefixes"),
    ("DestPorts", "/properties/destinationPortRange"),
    ("DestPortRanges", "/properties/destinationPortRanges"),
];
const NIC_COLS: &[Column<'static>] = &[
    ("Name", "/name"),
    ("PrivateIp", "/properties/privateIPAddress"),
    ("Subnet", "/properties/subnet/id"),
    ("Nsg", "/properties/networkSecurityGroup/id"),
    ("SecureDefaults", "/properties/secureDefaults"),
];
const ASG_COLS: &[Column<'static>] = &[("Name", "/name")];
const DDOS_COLS: &[Column<'static>] = &[
    ("SynFloodDrops", "/counters/synFlood/packets"),
    ("PerSourceDrops", "/counters/perSourceRate/packets"),
    ("ConntrackCapDrops", "/counters/conntrackCap/packets"),
    ("Mitigating", "/mitigating"),
    ("SynPerSource", "/policy/synPerSource/perSecond"),
    ("SynTotal", "/policy/synTotal/perSecond"),
    ("MaxConnections", "/policy/maxConnections"),
    ("ReportedAt", "/reportedAt"),
];
const VERDICT_COLS: &[Column<'static>] = &[
    ("Access", "/access"),
    ("Rule", "/ruleName"),
    ("Nsg", "/networkSecurityGroup/id"),
    ("Level", "/level"),
    ("Reason", "/reason"),
];

/// `-n NAME -g GROUP`.
#[derive(Args)]
pub struct Named {
    #[arg(short = 'n', long)]
    name: String,
    #[arg(short = 'g', long = "resource-group")]
    resource_group: String,
}

#[derive(Args)]
pub struct Group {
    #[arg(short = 'g', long = "resource-group")]
    resource_group: String,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Direction {
    #[value(name = "Inbound")]
    Inbound,
    #[value(name = "Outbound")]
    Outbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "Inbound",
            Self::Outbound => "Outbound",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Access {
    #[value(name = "Allow")]
    Allow,
    #[value(name = "Deny")]
    Deny,
}

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// Virtual networks, their subnets and peerings.
    #[command(subcommand)]
    Vnet(VnetCmd),
    /// Network security groups and their rules.
    #[command(subcommand)]
    Nsg(NsgCmd),
    /// Network interfaces.
    #[command(subcommand)]
    Nic(NicCmd),
    /// Application security groups.
    #[command(subcommand)]
    Asg(AsgCmd),
    /// Would this packet be allowed at the NIC, and which rule of which NSG decided.
    FlowVerify {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[arg(long)]
        nic: String,
        #[arg(long, value_enum)]
        direction: Direction,
        /// Tcp, Udp, Icmp, Esp or Ah.
        #[arg(long)]
        protocol: String,
        /// The NIC's side, IP:PORT.
        #[arg(long)]
        local: String,
        /// The other side, IP:PORT.
        #[arg(long)]
        remote: String,
    },
    /// The NIC's rules per direction and level, tags and ASGs expanded to prefixes.
    EffectiveRules {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[arg(long)]
        nic: String,
    },
    /// Which sources can reach a NIC on a port (or, with --from, whether one NIC can).
    Reachability {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        /// The destination NIC.
        #[arg(long)]
        to: String,
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Tcp, Udp, Icmp, Esp or Ah.
        #[arg(long, default_value = "Tcp")]
        protocol: String,
        /// A source NIC (name in the group, or its id).
        #[arg(long)]
        from: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum VnetCmd {
    /// Create a virtual network (isolated until peered).
    Create {
        #[command(flatten)]
        at: Named,
        #[arg(long, num_args = 1.., value_delimiter = ',', required = true)]
        address_prefixes: Vec<String>,
    },
    List(Group),
    Show(Named),
    Delete(Named),
    #[command(subcommand)]
    Subnet(SubnetCmd),
    #[command(subcommand)]
    Peering(PeeringCmd),
}

#[derive(Args)]
pub struct Child {
    #[arg(short = 'g', long = "resource-group")]
    resource_group: String,
    #[arg(long)]
    vnet: String,
    #[arg(short = 'n', long)]
    name: String,
}

#[derive(Args)]
pub struct Parent {
    #[arg(short = 'g', long = "resource-group")]
    resource_group: String,
    #[arg(long)]
    vnet: String,
}

#[derive(Subcommand)]
pub enum SubnetCmd {
    Create {
        #[command(flatten)]
        at: Child,
        #[arg(long)]
        address_prefix: String,
        /// NSG for the subnet (name in the group, or its id).
        #[arg(long)]
        nsg: Option<String>,
    },
    List(Parent),
    Show(Child),
    Delete(Child),
}

#[derive(Subcommand)]
pub enum PeeringCmd {
    /// Peer this VNet with another; traffic flows once both sides have a peering.
    Create {
        #[command(flatten)]
        at: Child,
        /// The remote VNet (name in the group, or its id).
        #[arg(long)]
        remote_vnet: String,
    },
    List(Parent),
    Delete(Child),
}

#[derive(Subcommand)]
pub enum NsgCmd {
    /// Create a network security group (only the default rules: inbound from outside the
    /// virtual network is denied).
    Create(Named),
    List(Group),
    Show(Named),
    Delete(Named),
    #[command(subcommand)]
    Rule(RuleCmd),
}

#[derive(Args)]
pub struct RuleAt {
    #[arg(short = 'g', long = "resource-group")]
    resource_group: String,
    #[arg(long)]
    nsg: String,
    #[arg(short = 'n', long)]
    name: String,
}

#[derive(Subcommand)]
pub enum RuleCmd {
    /// Add or replace a rule (strata refuses 22/3389/5985/5986 open to Internet or '*').
    Create {
        #[command(flatten)]
        at: RuleAt,
        #[arg(long)]
        priority: u32,
        #[arg(long, value_enum, default_value = "Inbound")]
        direction: Direction,
        #[arg(long, value_enum)]
        access: Access,
        /// Tcp, Udp, Icmp, Esp, Ah or '*'.
        #[arg(long, default_value = "*")]
        protocol: String,
        #[arg(long, num_args = 1.., value_delimiter = ',', default_value = "*")]
        source_address_prefixes: Vec<String>,
        #[arg(long, num_args = 1.., value_delimiter = ',', default_value = "*")]
        source_port_ranges: Vec<String>,
        #[arg(long, num_args = 1.., value_delimiter = ',', default_value = "*")]
        destination_address_prefixes: Vec<String>,
        #[arg(long, num_args = 1.., value_delimiter = ',', default_value = "*")]
        destination_port_ranges: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    List {
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        #[arg(long)]
        nsg: String,
    },
    Show(RuleAt),
    Delete(RuleAt),
}

#[derive(Subcommand)]
pub enum NicCmd {
    /// Create a NIC; without --nsg it gets its own deny-by-default NSG, `<nic>-nsg`.
    Create {
        #[command(flatten)]
        at: Named,
        #[arg(long)]
        vnet: String,
        #[arg(long)]
        subnet: String,
        #[arg(long)]
        nsg: Option<String>,
        /// Application security groups (names in the group, or ids).
        #[arg(long, num_args = 1.., value_delimiter = ',')]
        asgs: Vec<String>,
        /// A static address; by default the subnet's first free one.
        #[arg(long)]
        private_ip_address: Option<String>,
        /// Overrides of the default DDoS limits, as JSON (`properties.ddosSettings`), e.g.
        /// '{"synPerSource":{"perSecond":50,"burst":100},"maxConnections":4096}'.
        #[arg(long)]
        ddos_settings: Option<String>,
    },
    List(Group),
    Show(Named),
    Delete(Named),
    /// The NIC's DDoS limits in force and what its host last reported: packets each mechanism
    /// dropped and the mitigations under way.
    Ddos(Named),
}

#[derive(Subcommand)]
pub enum AsgCmd {
    Create(Named),
    List(Group),
    Show(Named),
    Delete(Named),
}

struct Paths<'a> {
    sub: &'a str,
}

impl Paths<'_> {
    fn group(&self, rg: &str) -> Result<String> {
        strata_types::path::validate_name(rg)?;
        Ok(format!("/subscriptions/{}/resourceGroups/{rg}", self.sub))
    }

    fn collection(&self, rg: &str, rtype: &str) -> Result<String> {
        Ok(format!(
            "{}/providers/Strata.Network/{rtype}",
            self.group(rg)?
        ))
    }

    fn item(&self, rg: &str, rtype: &str, name: &str) -> Result<String> {
        strata_types::path::validate_name(name)?;
        Ok(format!("{}/{name}", self.collection(rg, rtype)?))
    }

    /// A name in the group, or an id as given.
    fn reference(&self, rg: &str, rtype: &str, name_or_id: &str) -> Result<String> {
        if name_or_id.starts_with('/') {
            Ok(name_or_id.to_owned())
        } else {
            self.item(rg, rtype, name_or_id)
        }
    }
}

fn one_or_many(v: &mut Value, singular: &str, plural: &str, values: Vec<String>) {
    if values.len() == 1 {
        v[singular] = json!(values[0]);
    } else {
        v[plural] = json!(values);
    }
}

/// GET, change the named child list, PUT back with If-Match.
fn edit_children(
    c: &Client,
    path: &str,
    field: &str,
    change: impl FnOnce(&mut Vec<Value>) -> Result<()>,
) -> Result<Value> {
    let mut doc = c.call("GET", path, None)?;
    let etag = doc["etag"].as_str().unwrap_or("*").to_owned();
    let mut items: Vec<Value> = doc
        .pointer(&format!("/properties/{field}"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    change(&mut items)?;
    doc["properties"][field] = json!(items);
    let body = json!({ "properties": doc["properties"], "tags": doc["tags"] });
    c.call_with("PUT", path, Some(&body), &[("If-Match", &etag)])
}

fn find<'a>(items: &'a [Value], name: &str) -> Option<&'a Value> {
    items.iter().find(|i| {
        i["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    })
}

fn children(c: &Client, path: &str, field: &str) -> Result<Value> {
    let doc = c.call("GET", path, None)?;
    Ok(
        json!({ "value": doc.pointer(&format!("/properties/{field}")).cloned().unwrap_or(json!([])) }),
    )
}

fn child(c: &Client, path: &str, field: &str, name: &str) -> Result<Value> {
    let list = children(c, path, field)?;
    let items = list["value"].as_array().cloned().unwrap_or_default();
    match find(&items, name) {
        Some(v) => Ok(v.clone()),
        None => bail!("'{name}' not found in {field} of {path}"),
    }
}

fn upsert(items: &mut Vec<Value>, item: Value) {
    let name = item["name"].as_str().unwrap_or_default().to_owned();
    items.retain(|i| {
        !i["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(&name))
    });
    items.push(item);
}

fn remove(items: &mut Vec<Value>, name: &str, what: &str) -> Result<()> {
    let before = items.len();
    items.retain(|i| {
        !i["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    });
    if items.len() == before {
        bail!("{what} '{name}' does not exist");
    }
    Ok(())
}

/// CRUD on a whole resource: list/show/delete and create with `properties`.
fn simple(
    c: &Client,
    out: Format,
    p: &Paths<'_>,
    rtype: &str,
    cols: &[Column<'_>],
    op: Simple,
) -> Result<()> {
    match op {
        Simple::List(g) => print(
            out,
            &c.call("GET", &p.collection(&g.resource_group, rtype)?, None)?,
            cols,
        ),
        Simple::Show(n) => print(
            out,
            &c.call("GET", &p.item(&n.resource_group, rtype, &n.name)?, None)?,
            cols,
        ),
        Simple::Delete(n) => {
            c.call("DELETE", &p.item(&n.resource_group, rtype, &n.name)?, None)?;
        }
        Simple::Create(n, props) => {
            let path = p.item(&n.resource_group, rtype, &n.name)?;
            print(
                out,
                &c.call("PUT", &path, Some(&json!({ "properties": props })))?,
                cols,
            );
        }
    }
    Ok(())
}

enum Simple {
    List(Group),
    Show(Named),
    Delete(Named),
    Create(Named, Value),
}

pub fn run(c: &Client, out: Format, sub: &str, cmd: NetworkCmd) -> Result<()> {
    let p = Paths { sub };
    match cmd {
        NetworkCmd::Vnet(v) => vnet(c, out, &p, v),
        NetworkCmd::Nsg(n) => nsg(c, out, &p, n),
        NetworkCmd::Nic(n) => nic(c, out, &p, n),
        NetworkCmd::Asg(a) => {
            let op = match a {
                AsgCmd::Create(n) => Simple::Create(n, json!({})),
                AsgCmd::List(g) => Simple::List(g),
                AsgCmd::Show(n) => Simple::Show(n),
                AsgCmd::Delete(n) => Simple::Delete(n),
            };
            simple(c, out, &p, "applicationSecurityGroups", ASG_COLS, op)
        }
        NetworkCmd::FlowVerify {
            resource_group,
            nic,
            direction,
            protocol,
            local,
            remote,
        } => {
            let path = p.reference(&resource_group, "networkInterfaces", &nic)?;
            let body = json!({
                "direction": direction.as_str(), "protocol": protocol,
                "local": local, "remote": remote,
            });
            print(
                out,
                &c.call("POST", &format!("{path}/ipFlowVerify"), Some(&body))?,
                VERDICT_COLS,
            );
            Ok(())
        }
        NetworkCmd::EffectiveRules {
            resource_group,
            nic,
        } => {
            let path = p.reference(&resource_group, "networkInterfaces", &nic)?;
            let v = c.call(
                "POST",
                &format!("{path}/effectiveNetworkSecurityGroups"),
                Some(&json!({})),
            )?;
            if out == Format::Json {
                print(out, &v, &[]);
            } else {
                let mut rows = Vec::new();
                for dir in ["inbound", "outbound"] {
                    for level in v[dir].as_array().into_iter().flatten() {
                        for r in level["rules"].as_array().into_iter().flatten() {
                            let mut r = r.clone();
                            r["direction"] = json!(dir);
                            r["level"] = level["level"].clone();
                            rows.push(r);
                        }
                    }
                }
                print(
                    out,
                    &Value::Array(rows),
                    &[
                        ("Direction", "/direction"),
                        ("Level", "/level"),
                        ("Name", "/name"),
                        ("Priority", "/priority"),
                        ("Access", "/access"),
                        ("Protocol", "/protocol"),
                        ("Sources", "/expandedSourceAddressPrefix"),
                        ("DestPorts", "/destinationPortRanges"),
                    ],
                );
            }
            Ok(())
        }
        NetworkCmd::Reachability {
            resource_group,
            to,
            port,
            protocol,
            from,
        } => {
            let path = p.reference(&resource_group, "networkInterfaces", &to)?;
            let mut body = json!({ "protocol": protocol, "port": port });
            if let Some(f) = from {
                body["source"] =
                    json!({ "id": p.reference(&resource_group, "networkInterfaces", &f)? });
            }
            let v = c.call("POST", &format!("{path}/reachability"), Some(&body))?;
            let cols: &[Column<'_>] = if v.get("reachable").is_some() {
                &[
                    ("Reachable", "/reachable"),
                    ("BlockedAt", "/blockedAt"),
                    ("Reason", "/reason"),
                ]
            } else {
                &[("Sources", "/sources")]
            };
            print(out, &v, cols);
            Ok(())
        }
    }
}

fn vnet(c: &Client, out: Format, p: &Paths<'_>, cmd: VnetCmd) -> Result<()> {
    const T: &str = "virtualNetworks";
    match cmd {
        VnetCmd::Create {
            at,
            address_prefixes,
        } => simple(
            c,
            out,
            p,
            T,
            VNET_COLS,
            Simple::Create(
                at,
                json!({ "addressSpace": { "addressPrefixes": address_prefixes } }),
            ),
        ),
        VnetCmd::List(g) => simple(c, out, p, T, VNET_COLS, Simple::List(g)),
        VnetCmd::Show(n) => simple(c, out, p, T, VNET_COLS, Simple::Show(n)),
        VnetCmd::Delete(n) => simple(c, out, p, T, VNET_COLS, Simple::Delete(n)),
        VnetCmd::Subnet(s) => match s {
            SubnetCmd::Create {
                at,
                address_prefix,
                nsg,
            } => {
                strata_types::path::validate_name(&at.name)?;
                let path = p.item(&at.resource_group, T, &at.vnet)?;
                let mut props = json!({ "addressPrefix": address_prefix });
                if let Some(n) = nsg {
                    props["networkSecurityGroup"] = json!({
                        "id": p.reference(&at.resource_group, "networkSecurityGroups", &n)?
                    });
                }
                let item = json!({ "name": at.name, "properties": props });
                let v = edit_children(c, &path, "subnets", |items| {
                    upsert(items, item);
                    Ok(())
                })?;
                let items = v["properties"]["subnets"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                print(out, find(&items, &at.name).unwrap_or(&v), SUBNET_COLS);
                Ok(())
            }
            SubnetCmd::List(at) => {
                let path = p.item(&at.resource_group, T, &at.vnet)?;
                print(out, &children(c, &path, "subnets")?, SUBNET_COLS);
                Ok(())
            }
            SubnetCmd::Show(at) => {
                let path = p.item(&at.resource_group, T, &at.vnet)?;
                print(out, &child(c, &path, "subnets", &at.name)?, SUBNET_COLS);
                Ok(())
            }
            SubnetCmd::Delete(at) => {
                let path = p.item(&at.resource_group, T, &at.vnet)?;
                edit_children(c, &path, "subnets", |items| {
                    remove(items, &at.name, "subnet")
                })?;
                Ok(())
            }
        },
        VnetCmd::Peering(pe) => match pe {
            PeeringCmd::Create { at, remote_vnet } => {
                strata_types::path::validate_name(&at.name)?;
                let path = p.item(&at.resource_group, T, &at.vnet)?;
                let remote = p.reference(&at.resource_group, T, &remote_vnet)?;
                let item = json!({ "name": at.name, "properties": { "remoteVirtualNetwork": { "id": remote } } });
                let v = edit_children(c, &path, "virtualNetworkPeerings", |items| {
                    upsert(items, item);
                    Ok(())
                })?;
                let items = v["properties"]["virtualNetworkPeerings"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                print(out, find(&items, &at.name).unwrap_or(&v), PEERING_COLS);
                Ok(())
            }
            PeeringCmd::List(at) => {
                let path = p.item(&at.resource_group, T, &at.vnet)?;
                print(
                    out,
                    &children(c, &path, "virtualNetworkPeerings")?,
                    PEERING_COLS,
                );
                Ok(())
            }
            PeeringCmd::Delete(at) => {
                let path = p.item(&at.resource_group, T, &at.vnet)?;
                edit_children(c, &path, "virtualNetworkPeerings", |items| {
                    remove(items, &at.name, "peering")
                })?;
                Ok(())
            }
        },
    }
}

fn nsg(c: &Client, out: Format, p: &Paths<'_>, cmd: NsgCmd) -> Result<()> {
    const T: &str = "networkSecurityGroups";
    match cmd {
        NsgCmd::Create(n) => simple(c, out, p, T, NSG_COLS, Simple::Create(n, json!({}))),
        NsgCmd::List(g) => simple(c, out, p, T, NSG_COLS, Simple::List(g)),
        NsgCmd::Show(n) => simple(c, out, p, T, NSG_COLS, Simple::Show(n)),
        NsgCmd::Delete(n) => simple(c, out, p, T, NSG_COLS, Simple::Delete(n)),
        NsgCmd::Rule(r) => match r {
            RuleCmd::Create {
                at,
                priority,
                direction,
                access,
                protocol,
                source_address_prefixes,
                source_port_ranges,
                destination_address_prefixes,
                destination_port_ranges,
                description,
            } => {
                let path = p.item(&at.resource_group, T, &at.nsg)?;
                let mut props = json!({
                    "priority": priority,
                    "direction": direction.as_str(),
                    "access": match access { Access::Allow => "Allow", Access::Deny => "Deny" },
                    "protocol": protocol,
                });
                if let Some(d) = description {
                    props["description"] = json!(d);
                }
                one_or_many(
                    &mut props,
                    "sourceAddressPrefix",
                    "sourceAddressPrefixes",
                    source_address_prefixes,
                );
                one_or_many(
                    &mut props,
                    "sourcePortRange",
                    "sourcePortRanges",
                    source_port_ranges,
                );
                one_or_many(
                    &mut props,
                    "destinationAddressPrefix",
                    "destinationAddressPrefixes",
                    destination_address_prefixes,
                );
                one_or_many(
                    &mut props,
                    "destinationPortRange",
                    "destinationPortRanges",
                    destination_port_ranges,
                );
                let item = json!({ "name": at.name, "properties": props });
                let v = edit_children(c, &path, "securityRules", |items| {
                    upsert(items, item);
                    Ok(())
                })?;
                let items = v["properties"]["securityRules"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                print(out, find(&items, &at.name).unwrap_or(&v), RULE_COLS);
                Ok(())
            }
            RuleCmd::List {
                resource_group,
                nsg,
            } => {
                let path = p.item(&resource_group, T, &nsg)?;
                print(out, &children(c, &path, "securityRules")?, RULE_COLS);
                Ok(())
            }
            RuleCmd::Show(at) => {
                let path = p.item(&at.resource_group, T, &at.nsg)?;
                print(out, &child(c, &path, "securityRules", &at.name)?, RULE_COLS);
                Ok(())
            }
            RuleCmd::Delete(at) => {
                let path = p.item(&at.resource_group, T, &at.nsg)?;
                edit_children(c, &path, "securityRules", |items| {
                    remove(items, &at.name, "security rule")
                })?;
                Ok(())
            }
        },
    }
}

fn nic(c: &Client, out: Format, p: &Paths<'_>, cmd: NicCmd) -> Result<()> {
    const T: &str = "networkInterfaces";
    match cmd {
        NicCmd::Create {
            at,
            vnet,
            subnet,
            nsg,
            asgs,
            private_ip_address,
            ddos_settings,
        } => {
            strata_types::path::validate_name(&subnet)?;
            let vnet_id = p.reference(&at.resource_group, "virtualNetworks", &vnet)?;
            let mut props = json!({ "subnet": { "id": format!("{vnet_id}/subnets/{subnet}") } });
            if let Some(n) = nsg {
                props["networkSecurityGroup"] =
                    json!({ "id": p.reference(&at.resource_group, "networkSecurityGroups", &n)? });
            }
            if !asgs.is_empty() {
                let ids = asgs
                    .iter()
                    .map(|a| {
                        p.reference(&at.resource_group, "applicationSecurityGroups", a)
                            .map(|id| json!({ "id": id }))
                    })
                    .collect::<Result<Vec<_>>>()?;
                props["applicationSecurityGroups"] = json!(ids);
            }
            if let Some(ip) = private_ip_address {
                props["privateIPAddress"] = json!(ip);
            }
            if let Some(text) = ddos_settings {
                props["ddosSettings"] = serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("--ddos-settings is not JSON: {e}"))?;
            }
            simple(c, out, p, T, NIC_COLS, Simple::Create(at, props))
        }
        NicCmd::List(g) => simple(c, out, p, T, NIC_COLS, Simple::List(g)),
        NicCmd::Show(n) => simple(c, out, p, T, NIC_COLS, Simple::Show(n)),
        NicCmd::Delete(n) => simple(c, out, p, T, NIC_COLS, Simple::Delete(n)),
        NicCmd::Ddos(n) => {
            let path = p.item(&n.resource_group, T, &n.name)?;
            print(
                out,
                &c.call("POST", &format!("{path}/ddosCounters"), None)?,
                DDOS_COLS,
            );
            Ok(())
        }
    }
}
