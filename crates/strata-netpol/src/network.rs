//! [`Network`]: a validated topology with every NSG compiled, per virtual network it is used
//! in, into classifiers; and the per-NIC questions: `flow_verify`, `effective_rules`, and the
//! allocation-free `classify`/`scan` pair the benchmark and the property tests compare.
//!
//! Semantics (Azure's, as documented for network security groups):
//! - rules are evaluated in priority order, the first match decides; the default rules
//!   (below) come after every custom rule;
//! - inbound traffic is evaluated by the subnet's NSG, then the NIC's; outbound by the NIC's,
//!   then the subnet's; both must allow. A level with no NSG allows (Azure's behaviour; Strata's
//!   control plane gives every NIC an NSG, so in Strata that case is the subnet level);
//! - rules are stateful: a packet of an established flow is allowed when the flow's first
//!   packet was (`Flow::established`; the dataplane does this with conntrack);
//! - `VirtualNetwork` is the NIC's virtual network address space plus the address spaces of
//!   the virtual networks peered with it (on-premises networks are not modelled); `Internet` is
//!   public IPv4 space — everything outside [`special_ranges`] — minus `VirtualNetwork`;
//!   `AzureLoadBalancer` is 168.63.129.16/32;
//! - application security groups expand to the /32s of their member NICs.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

use crate::classify::{Classifier, ExpandedRule, Key, Specialized, scan};
use crate::model::{
    Access, Direction, FlowProtocol, NetworkSecurityGroup, Protocol, SubResource, Topology, name_of,
};
use crate::ranges::{PORTLESS, PrefixError, Ranges, all_addresses, all_ports, parse_prefix};
use crate::validate::{Endpoint, ParsedRule, ServiceTag, ValidationError, parse_nsg_rules};

/// The address `AzureLoadBalancer` stands for (health probes).
pub const AZURE_LOAD_BALANCER: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);

/// IPv4 ranges that are not public unicast space (RFC 6890 special-purpose, private, shared,
/// loopback, link-local, documentation, benchmarking, multicast, reserved): what `Internet`
/// excludes besides `VirtualNetwork`.
pub fn special_ranges() -> Ranges {
    const SPECIAL: [&str; 14] = [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    ];
    Ranges::from_intervals(
        SPECIAL
            .iter()
            .filter_map(|p| parse_prefix(p).ok())
            .map(|p| p.bounds()),
    )
}

/// The default rules Azure puts in every NSG, with Azure's names and priorities. (Strata's
/// issue called the second one `AllowLoadBalancerInBound`; Azure's name is
/// `AllowAzureLoadBalancerInBound`, and that is the one used.)
pub const DEFAULT_RULES: [(&str, u32, Direction, Access); 6] = [
    ("AllowVnetInBound", 65000, Direction::Inbound, Access::Allow),
    (
        "AllowAzureLoadBalancerInBound",
        65001,
        Direction::Inbound,
        Access::Allow,
    ),
    ("DenyAllInBound", 65500, Direction::Inbound, Access::Deny),
    (
        "AllowVnetOutBound",
        65000,
        Direction::Outbound,
        Access::Allow,
    ),
    (
        "AllowInternetOutBound",
        65001,
        Direction::Outbound,
        Access::Allow,
    ),
    ("DenyAllOutBound", 65500, Direction::Outbound, Access::Deny),
];

fn default_rules(direction: Direction) -> Vec<ParsedRule> {
    DEFAULT_RULES
        .iter()
        .filter(|r| r.2 == direction)
        .map(|&(name, priority, direction, access)| {
            let (source, destination) = match name {
                "AllowVnetInBound" | "AllowVnetOutBound" => (
                    Endpoint::Tag(ServiceTag::VirtualNetwork),
                    Endpoint::Tag(ServiceTag::VirtualNetwork),
                ),
                "AllowAzureLoadBalancerInBound" => {
                    (Endpoint::Tag(ServiceTag::AzureLoadBalancer), Endpoint::Any)
                }
                "AllowInternetOutBound" => (Endpoint::Any, Endpoint::Tag(ServiceTag::Internet)),
                _ => (Endpoint::Any, Endpoint::Any),
            };
            let text = |e: &Endpoint| match e {
                Endpoint::Tag(t) => vec![t.name().to_owned()],
                _ => vec!["*".to_owned()],
            };
            ParsedRule {
                name: name.to_owned(),
                priority,
                direction,
                access,
                protocol: Protocol::Any,
                source_text: text(&source),
                destination_text: text(&destination),
                source,
                destination,
                source_ports: all_ports(),
                destination_ports: all_ports(),
            }
        })
        .collect()
}

/// Which association an NSG is evaluated at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Level {
    Subnet,
    NetworkInterface,
}

/// The evaluation order of the two levels for a direction.
pub fn evaluation_order(direction: Direction) -> [Level; 2] {
    match direction {
        Direction::Inbound => [Level::Subnet, Level::NetworkInterface],
        Direction::Outbound => [Level::NetworkInterface, Level::Subnet],
    }
}

/// An NSG named in an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsgRef {
    pub id: String,
    pub name: String,
}

/// One rule of a compiled policy (custom or default), in evaluation order.
#[derive(Clone, Debug)]
pub(crate) struct PolicyRule {
    /// `securityRules/<name>` or `defaultSecurityRules/<name>`.
    pub path: String,
    pub parsed: ParsedRule,
}

/// One direction of one NSG in one virtual network's context.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub rules: Vec<PolicyRule>,
    /// `rules` expanded, same order: what both algorithms evaluate.
    pub expanded: Vec<ExpandedRule>,
    /// Each rule's access, same order (compact, for the hot path).
    pub accesses: Vec<Access>,
    pub classifier: Classifier,
}

impl Policy {
    pub fn classify(&self, k: &Key) -> Option<usize> {
        self.classifier.classify(k)
    }

    pub fn scan(&self, k: &Key) -> Option<usize> {
        scan(&self.expanded, k)
    }

    pub fn access(&self, hit: Option<usize>) -> Access {
        hit.and_then(|i| self.accesses.get(i))
            .copied()
            .unwrap_or(Access::Deny)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Compiled {
    pub nsg: usize,
    pub inbound: Policy,
    pub outbound: Policy,
}

impl Compiled {
    pub fn policy(&self, direction: Direction) -> &Policy {
        match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct VnetInfo {
    pub id: String,
    pub space: Ranges,
    /// Mutually peered virtual networks.
    pub peers: Vec<usize>,
    /// What `VirtualNetwork` means for NICs of this network.
    pub tag: Ranges,
    pub subnets: Vec<SubnetInfo>,
}

#[derive(Clone, Debug)]
pub(crate) struct SubnetInfo {
    pub name: String,
    pub nsg: Option<usize>,
}

#[derive(Clone, Debug)]
pub(crate) struct NicInfo {
    pub id: String,
    pub vnet: usize,
    pub subnet: usize,
    pub ip: u32,
    /// Index into `Network::compiled`.
    pub subnet_policy: Option<usize>,
    pub nic_policy: Option<usize>,
    /// Per direction (inbound, outbound) and level in evaluation order: the policy index and
    /// its classifier specialized to this NIC's address.
    pub specialized: [[Option<(usize, Specialized)>; 2]; 2],
}

/// A validated topology with its NSGs compiled. Build it with [`Network::new`]; every question
/// is a method.
#[derive(Clone, Debug)]
pub struct Network {
    pub(crate) vnets: Vec<VnetInfo>,
    pub(crate) nics: Vec<NicInfo>,
    pub(crate) nic_index: HashMap<String, usize>,
    pub(crate) nsgs: Vec<NsgRef>,
    pub(crate) compiled: Vec<Compiled>,
}

/// A NIC looked up once, for the allocation-free [`Network::classify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NicHandle(pub(crate) usize);

/// A concrete flow at a NIC, from the NIC's point of view (Azure IP flow verify's inputs).
/// `local` must be the NIC's address. For ICMP, ESP and AH the ports are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flow {
    pub direction: Direction,
    pub protocol: FlowProtocol,
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    /// The packet belongs to a connection already tracked (return traffic): it is decided by
    /// the flow that opened the connection, i.e. the same sockets in the other direction.
    #[serde(default)]
    pub established: bool,
}

impl Flow {
    /// A new (not established) flow.
    pub fn new(
        direction: Direction,
        protocol: FlowProtocol,
        local: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Self {
        Self {
            direction,
            protocol,
            local,
            remote,
            established: false,
        }
    }

    pub(crate) fn key(&self) -> Key {
        let (local_port, remote_port) = if self.protocol.has_ports() {
            (u32::from(self.local.port()), u32::from(self.remote.port()))
        } else {
            (PORTLESS, PORTLESS)
        };
        let local = u32::from(*self.local.ip());
        let remote = u32::from(*self.remote.ip());
        match self.direction {
            Direction::Inbound => Key {
                protocol: self.protocol,
                src: remote,
                sport: remote_port,
                dst: local,
                dport: local_port,
            },
            Direction::Outbound => Key {
                protocol: self.protocol,
                src: local,
                sport: local_port,
                dst: remote,
                dport: remote_port,
            },
        }
    }
}

/// What one level decided: the hit rule's index in its policy, or no NSG at that level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hit {
    /// No NSG is associated at this level: it allows.
    NoNsg,
    /// Not evaluated: the earlier level denied.
    Skipped,
    /// The index of the deciding rule in the NSG's evaluation order (custom rules by priority,
    /// then the defaults); `u16::MAX` if nothing matched (impossible with the default rules).
    Rule(u16),
}

/// An allocation-free decision (for the benchmark and the dataplane's own checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub access: Access,
    /// The two levels in evaluation order for the flow's direction.
    pub hits: [Hit; 2],
}

/// Why a question about a NIC could not be asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("network interface '{0}' does not exist")]
    UnknownNic(String),
    #[error(
        "local address {ip} is not the address of network interface '{nic}' ({expected}); give the nic's own address as local"
    )]
    NotLocalAddress {
        nic: String,
        ip: Ipv4Addr,
        expected: Ipv4Addr,
    },
}

/// The answer of one level to a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hop {
    pub level: Level,
    pub direction: Direction,
    /// The NIC the level belongs to.
    pub network_interface: String,
    /// `None`: no NSG at this level, which allows.
    pub network_security_group: Option<NsgRef>,
    pub access: Access,
    /// `securityRules/<name>` or `defaultSecurityRules/<name>`.
    pub rule_name: Option<String>,
}

/// The answer to `flow-verify`: access plus the deciding rule and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub access: Access,
    /// The deciding rule: the first level's rule that denies, or when both allow the rule of
    /// the last level with an NSG. `None` when neither level has an NSG.
    pub rule_name: Option<String>,
    pub network_security_group: Option<NsgRef>,
    pub level: Option<Level>,
    /// Decided as return traffic of the flow in the other direction.
    pub established: bool,
    /// Both levels, in evaluation order (of the opening flow's direction when established).
    pub hops: Vec<Hop>,
    pub reason: String,
}

/// A NIC's effective rules: per direction, the two levels in evaluation order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveRules {
    pub network_interface: String,
    pub inbound: Vec<EffectiveNsg>,
    pub outbound: Vec<EffectiveNsg>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveNsg {
    pub level: Level,
    /// `None`: no NSG here; the level allows everything.
    pub network_security_group: Option<NsgRef>,
    pub rules: Vec<EffectiveRule>,
}

/// A rule with its sides as written and expanded to CIDRs in the NIC's context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveRule {
    pub name: String,
    pub priority: u32,
    pub access: Access,
    pub protocol: Protocol,
    pub source_address_prefixes: Vec<String>,
    pub expanded_source_address_prefix: Vec<String>,
    pub source_port_ranges: Vec<String>,
    pub destination_address_prefixes: Vec<String>,
    pub expanded_destination_address_prefix: Vec<String>,
    pub destination_port_ranges: Vec<String>,
}

fn lookup(ids: &HashMap<String, usize>, id: &str) -> Option<usize> {
    ids.get(id).copied()
}

fn index_ids<'a>(
    kind: &'static str,
    ids: impl Iterator<Item = &'a str>,
) -> Result<HashMap<String, usize>, ValidationError> {
    let mut map = HashMap::new();
    for (i, id) in ids.enumerate() {
        if map.insert(id.to_owned(), i).is_some() {
            return Err(ValidationError::DuplicateId {
                kind,
                id: id.to_owned(),
            });
        }
    }
    Ok(map)
}

fn parse_space_prefix(
    at: &str,
    field: &'static str,
    value: &str,
) -> Result<crate::ranges::Prefix, ValidationError> {
    parse_prefix(value).map_err(|e| match e {
        PrefixError::Malformed => ValidationError::MalformedPrefix {
            at: at.to_owned(),
            field,
            value: value.to_owned(),
        },
        PrefixError::HostBits(network) => ValidationError::HostBitsSet {
            at: at.to_owned(),
            field,
            value: value.to_owned(),
            network: network.to_string(),
        },
    })
}

fn unknown(at: String, kind: &'static str, r: &SubResource) -> ValidationError {
    ValidationError::UnknownReference {
        at,
        kind,
        id: r.id.clone(),
    }
}

impl Network {
    /// Validates the topology (every check in [`crate::validate`] plus address spaces, subnets,
    /// peerings, NIC addresses, references and ASG placement) and compiles every NSG in each
    /// virtual network it is used in. Returns the first problem found.
    pub fn new(topology: &Topology) -> Result<Self, ValidationError> {
        let nsg_ids = index_ids(
            "network security group",
            topology
                .network_security_groups
                .iter()
                .map(|n| n.id.as_str()),
        )?;
        let asg_ids = index_ids(
            "application security group",
            topology
                .application_security_groups
                .iter()
                .map(|a| a.id.as_str()),
        )?;
        let vnet_ids = index_ids(
            "virtual network",
            topology.virtual_networks.iter().map(|v| v.id.as_str()),
        )?;
        let nsg_rules: Vec<Vec<ParsedRule>> = topology
            .network_security_groups
            .iter()
            .map(parse_nsg_rules)
            .collect::<Result<_, _>>()?;

        // Virtual networks and subnets.
        let mut vnets = Vec::new();
        for vnet in &topology.virtual_networks {
            let vname = name_of(&vnet.id).to_owned();
            let at = format!("virtual network '{vname}'");
            if vnet.address_space.address_prefixes.is_empty() {
                return Err(ValidationError::EmptyAddressSpace { vnet: vname });
            }
            let mut spaces: Vec<(String, Ranges)> = Vec::new();
            for p in &vnet.address_space.address_prefixes {
                let set = parse_space_prefix(&at, "addressPrefixes", p)?.to_ranges();
                if let Some((other, _)) = spaces.iter().find(|(_, s)| s.overlaps(&set)) {
                    return Err(ValidationError::OverlappingAddressSpace {
                        vnet: vname,
                        a: other.clone(),
                        b: p.clone(),
                    });
                }
                spaces.push((p.clone(), set));
            }
            let space = spaces
                .iter()
                .fold(Ranges::empty(), |acc, (_, s)| acc.union(s));
            let mut subnets: Vec<SubnetInfo> = Vec::new();
            let mut subnet_sets: Vec<(String, String, Ranges)> = Vec::new();
            for subnet in &vnet.subnets {
                let sat = format!("subnet '{}' of {at}", subnet.name);
                let prefix = parse_space_prefix(&sat, "addressPrefix", &subnet.address_prefix)?;
                if subnets.iter().any(|s| s.name == subnet.name) {
                    return Err(ValidationError::DuplicateId {
                        kind: "subnet",
                        id: format!("{}/subnets/{}", vnet.id, subnet.name),
                    });
                }
                if prefix.len > 29 {
                    return Err(ValidationError::SubnetTooSmall {
                        subnet: subnet.name.clone(),
                        prefix: prefix.to_string(),
                    });
                }
                let set = prefix.to_ranges();
                if !space.covers(&set) {
                    return Err(ValidationError::SubnetOutsideVnet {
                        vnet: vname,
                        subnet: subnet.name.clone(),
                        prefix: prefix.to_string(),
                    });
                }
                if let Some((other, other_prefix, _)) =
                    subnet_sets.iter().find(|(_, _, s)| s.overlaps(&set))
                {
                    return Err(ValidationError::OverlappingSubnets {
                        vnet: vname,
                        a: other.clone(),
                        a_prefix: other_prefix.clone(),
                        b: subnet.name.clone(),
                        b_prefix: prefix.to_string(),
                    });
                }
                subnet_sets.push((subnet.name.clone(), prefix.to_string(), set));
                let nsg = match &subnet.network_security_group {
                    Some(r) => Some(
                        lookup(&nsg_ids, &r.id)
                            .ok_or_else(|| unknown(sat.clone(), "network security group", r))?,
                    ),
                    None => None,
                };
                subnets.push(SubnetInfo {
                    name: subnet.name.clone(),
                    nsg,
                });
            }
            let mut peers = Vec::new();
            for peering in &vnet.virtual_network_peerings {
                let remote =
                    lookup(&vnet_ids, &peering.remote_virtual_network.id).ok_or_else(|| {
                        unknown(
                            format!("peering '{}' of {at}", peering.name),
                            "virtual network",
                            &peering.remote_virtual_network,
                        )
                    })?;
                peers.push(remote);
            }
            vnets.push((
                VnetInfo {
                    id: vnet.id.clone(),
                    space: space.clone(),
                    peers: Vec::new(),
                    tag: Ranges::empty(),
                    subnets,
                },
                peers,
                subnet_sets,
            ));
        }
        // Peerings connect only when both sides have one.
        let links: Vec<Vec<usize>> = vnets.iter().map(|(_, p, _)| p.clone()).collect();
        for (i, (info, peers, _)) in vnets.iter_mut().enumerate() {
            let mut mutual: Vec<usize> = peers
                .iter()
                .copied()
                .filter(|&j| j != i && links[j].contains(&i))
                .collect();
            mutual.sort_unstable();
            mutual.dedup();
            info.peers = mutual;
        }
        let spaces: Vec<Ranges> = vnets.iter().map(|(v, _, _)| v.space.clone()).collect();
        for (i, (info, _, _)) in vnets.iter_mut().enumerate() {
            for &j in &info.peers {
                if spaces[i].overlaps(&spaces[j]) {
                    let prefixes = |v: usize| {
                        topology.virtual_networks[v]
                            .address_space
                            .address_prefixes
                            .iter()
                            .filter_map(|p| Some((p.clone(), parse_prefix(p).ok()?.to_ranges())))
                            .collect::<Vec<_>>()
                    };
                    let (a_prefix, b_prefix) = prefixes(i)
                        .into_iter()
                        .flat_map(|a| prefixes(j).into_iter().map(move |b| (a.clone(), b)))
                        .find(|(a, b)| a.1.overlaps(&b.1))
                        .map(|(a, b)| (a.0, b.0))
                        .unwrap_or_default();
                    return Err(ValidationError::OverlappingPeering {
                        a: name_of(&info.id).to_owned(),
                        a_prefix,
                        b: name_of(&topology.virtual_networks[j].id).to_owned(),
                        b_prefix,
                    });
                }
            }
            info.tag = info
                .peers
                .iter()
                .fold(spaces[i].clone(), |acc, &j| acc.union(&spaces[j]));
        }

        // Network interfaces.
        let nic_ids = index_ids(
            "network interface",
            topology.network_interfaces.iter().map(|n| n.id.as_str()),
        )?;
        let mut nics: Vec<NicInfo> = Vec::new();
        let mut nic_nsgs: Vec<Option<usize>> = Vec::new();
        let mut addresses: HashMap<(usize, u32), String> = HashMap::new();
        let mut asg_vnet: Vec<Option<(usize, String)>> =
            vec![None; topology.application_security_groups.len()];
        let mut asg_members: Vec<Ranges> =
            vec![Ranges::empty(); topology.application_security_groups.len()];
        for nic in &topology.network_interfaces {
            let nname = name_of(&nic.id).to_owned();
            let at = format!("network interface '{nname}'");
            let (vnet, subnet) = nic
                .subnet
                .id
                .rsplit_once("/subnets/")
                .and_then(|(vnet_id, sname)| {
                    let v = lookup(&vnet_ids, vnet_id)?;
                    let s = vnets[v].0.subnets.iter().position(|s| s.name == sname)?;
                    Some((v, s))
                })
                .ok_or_else(|| unknown(at.clone(), "subnet", &nic.subnet))?;
            let ip: Ipv4Addr = nic.private_ip_address.parse().map_err(|_| {
                ValidationError::MalformedNicAddress {
                    nic: nname.clone(),
                    ip: nic.private_ip_address.clone(),
                }
            })?;
            let ip = u32::from(ip);
            let (_, prefix_text, set) = &vnets[vnet].2[subnet];
            let (lo, hi) = set.intervals().first().copied().unwrap_or((0, 0));
            if !set.contains(ip) {
                return Err(ValidationError::NicAddressOutsideSubnet {
                    nic: nname,
                    ip: Ipv4Addr::from(ip).to_string(),
                    prefix: prefix_text.clone(),
                });
            }
            if ip - lo < 4 || ip == hi {
                return Err(ValidationError::NicAddressReserved {
                    nic: nname,
                    ip: Ipv4Addr::from(ip).to_string(),
                    prefix: prefix_text.clone(),
                });
            }
            if let Some(other) = addresses.insert((vnet, ip), nname.clone()) {
                return Err(ValidationError::DuplicateNicAddress {
                    vnet: name_of(&vnets[vnet].0.id).to_owned(),
                    a: other,
                    b: nname,
                    ip: Ipv4Addr::from(ip).to_string(),
                });
            }
            let nsg = match &nic.network_security_group {
                Some(r) => Some(
                    lookup(&nsg_ids, &r.id)
                        .ok_or_else(|| unknown(at.clone(), "network security group", r))?,
                ),
                None => None,
            };
            for r in &nic.application_security_groups {
                let a = lookup(&asg_ids, &r.id)
                    .ok_or_else(|| unknown(at.clone(), "application security group", r))?;
                match &asg_vnet[a] {
                    Some((v, _)) if *v != vnet => {
                        return Err(ValidationError::AsgSpansVnets {
                            asg: name_of(&r.id).to_owned(),
                            a: name_of(&vnets[*v].0.id).to_owned(),
                            b: name_of(&vnets[vnet].0.id).to_owned(),
                        });
                    }
                    _ => asg_vnet[a] = Some((vnet, nname.clone())),
                }
                asg_members[a] = asg_members[a].union(&Ranges::span(ip, ip));
            }
            nics.push(NicInfo {
                id: nic.id.clone(),
                vnet,
                subnet,
                ip,
                subnet_policy: None,
                nic_policy: None,
                specialized: Default::default(),
            });
            nic_nsgs.push(nsg);
        }

        // ASG references in rules.
        for (n, nsg) in topology.network_security_groups.iter().enumerate() {
            for rule in &nsg_rules[n] {
                let at = format!(
                    "security rule '{}' of network security group '{}'",
                    rule.name,
                    name_of(&nsg.id)
                );
                let mut seen: Option<usize> = None;
                for ep in [&rule.source, &rule.destination] {
                    if let Endpoint::Asgs(ids) = ep {
                        for id in ids {
                            let a = lookup(&asg_ids, id).ok_or_else(|| {
                                unknown(
                                    at.clone(),
                                    "application security group",
                                    &SubResource::new(id.clone()),
                                )
                            })?;
                            if let Some((v, _)) = asg_vnet[a] {
                                match seen {
                                    Some(s) if s != v => {
                                        return Err(ValidationError::RuleAsgsSpanVnets {
                                            at,
                                            a: name_of(&vnets[s].0.id).to_owned(),
                                            b: name_of(&vnets[v].0.id).to_owned(),
                                        });
                                    }
                                    _ => seen = Some(v),
                                }
                            }
                        }
                    }
                }
            }
        }

        let vnets: Vec<VnetInfo> = vnets.into_iter().map(|(v, _, _)| v).collect();
        let asgs = AsgSets {
            ids: asg_ids,
            members: asg_members,
        };

        // Compile each NSG once per virtual network it is used in.
        let mut compiled: Vec<Compiled> = Vec::new();
        let mut compiled_index: HashMap<(usize, usize), usize> = HashMap::new();
        let mut compile = |nsg: usize, vnet: usize| -> usize {
            *compiled_index.entry((nsg, vnet)).or_insert_with(|| {
                let ctx = Context {
                    tag: &vnets[vnet].tag,
                    asgs: &asgs,
                };
                compiled.push(Compiled {
                    nsg,
                    inbound: compile_policy(&nsg_rules[nsg], Direction::Inbound, &ctx),
                    outbound: compile_policy(&nsg_rules[nsg], Direction::Outbound, &ctx),
                });
                compiled.len() - 1
            })
        };
        for (i, nic) in nics.iter_mut().enumerate() {
            nic.nic_policy = nic_nsgs[i].map(|n| compile(n, nic.vnet));
            nic.subnet_policy = vnets[nic.vnet].subnets[nic.subnet]
                .nsg
                .map(|n| compile(n, nic.vnet));
        }
        for nic in &mut nics {
            for (d, direction) in [Direction::Inbound, Direction::Outbound]
                .into_iter()
                .enumerate()
            {
                for (i, level) in evaluation_order(direction).into_iter().enumerate() {
                    let c = match level {
                        Level::Subnet => nic.subnet_policy,
                        Level::NetworkInterface => nic.nic_policy,
                    };
                    nic.specialized[d][i] = c.map(|c| {
                        let classifier = &compiled[c].policy(direction).classifier;
                        (
                            c,
                            classifier.specialize(nic.ip, direction == Direction::Inbound),
                        )
                    });
                }
            }
        }
        let nsgs = topology
            .network_security_groups
            .iter()
            .map(nsg_ref)
            .collect();
        Ok(Self {
            vnets,
            nics,
            nic_index: nic_ids,
            nsgs,
            compiled,
        })
    }

    /// Looks a NIC up once for [`Network::classify`].
    pub fn nic(&self, id: &str) -> Option<NicHandle> {
        self.nic_index.get(id).map(|&i| NicHandle(i))
    }

    pub(crate) fn nic_info(&self, id: &str) -> Result<&NicInfo, QueryError> {
        self.nic_index
            .get(id)
            .map(|&i| &self.nics[i])
            .ok_or_else(|| QueryError::UnknownNic(id.to_owned()))
    }

    /// The compiled policy of a NIC at a level and direction (`None`: no NSG there).
    pub(crate) fn policy(
        &self,
        nic: &NicInfo,
        level: Level,
        direction: Direction,
    ) -> Option<(&Policy, &NsgRef)> {
        let c = match level {
            Level::Subnet => nic.subnet_policy,
            Level::NetworkInterface => nic.nic_policy,
        }?;
        let compiled = &self.compiled[c];
        Some((compiled.policy(direction), &self.nsgs[compiled.nsg]))
    }

    /// The decision for a new flow with the compiled classifiers (no allocation). The second
    /// level is skipped when the first denies. `flow.established` is ignored: this is what
    /// decides the first packet of a connection.
    pub fn classify(&self, nic: NicHandle, flow: &Flow) -> Decision {
        let Some(info) = self.nics.get(nic.0) else {
            return Decision {
                access: Access::Deny,
                hits: [Hit::NoNsg; 2],
            };
        };
        if u32::from(*flow.local.ip()) != info.ip {
            // Not the NIC's own address: the general classifier.
            return self.decide(nic, flow, Policy::classify);
        }
        let key = flow.key();
        let d = match flow.direction {
            Direction::Inbound => 0,
            Direction::Outbound => 1,
        };
        let mut hits = [Hit::NoNsg; 2];
        let mut access = Access::Allow;
        for (hit_slot, spec) in hits.iter_mut().zip(&info.specialized[d]) {
            if access == Access::Deny {
                *hit_slot = Hit::Skipped;
                continue;
            }
            if let Some((c, spec)) = spec {
                let policy = self.compiled[*c].policy(flow.direction);
                let hit = policy.classifier.classify_specialized(spec, &key);
                *hit_slot = Hit::Rule(hit.map_or(u16::MAX, |h| h as u16));
                access = policy.access(hit);
            }
        }
        Decision { access, hits }
    }

    /// The same decision by a naive first-match scan over the same expanded rules: the
    /// reference [`Network::classify`] is tested and benchmarked against.
    pub fn scan(&self, nic: NicHandle, flow: &Flow) -> Decision {
        self.decide(nic, flow, Policy::scan)
    }

    #[inline]
    fn decide(
        &self,
        nic: NicHandle,
        flow: &Flow,
        by: impl Fn(&Policy, &Key) -> Option<usize>,
    ) -> Decision {
        let key = flow.key();
        let mut hits = [Hit::NoNsg; 2];
        let Some(info) = self.nics.get(nic.0) else {
            return Decision {
                access: Access::Deny,
                hits,
            };
        };
        let mut access = Access::Allow;
        for (i, level) in evaluation_order(flow.direction).into_iter().enumerate() {
            if access == Access::Deny {
                hits[i] = Hit::Skipped;
                continue;
            }
            if let Some((policy, _)) = self.policy(info, level, flow.direction) {
                let hit = by(policy, &key);
                hits[i] = Hit::Rule(hit.map_or(u16::MAX, |h| h as u16));
                access = policy.access(hit);
            }
        }
        Decision { access, hits }
    }

    /// Evaluates both levels of a NIC for a flow in `direction` (the flow's own key).
    pub(crate) fn hops(&self, nic: &NicInfo, direction: Direction, key: &Key) -> Vec<Hop> {
        evaluation_order(direction)
            .into_iter()
            .map(|level| match self.policy(nic, level, direction) {
                None => Hop {
                    level,
                    direction,
                    network_interface: nic.id.clone(),
                    network_security_group: None,
                    access: Access::Allow,
                    rule_name: None,
                },
                Some((policy, nsg)) => {
                    let hit = policy.classify(key);
                    Hop {
                        level,
                        direction,
                        network_interface: nic.id.clone(),
                        network_security_group: Some(nsg.clone()),
                        access: policy.access(hit),
                        rule_name: hit
                            .and_then(|i| policy.rules.get(i))
                            .map(|r| r.path.clone()),
                    }
                }
            })
            .collect()
    }

    /// Azure's IP flow verify: would this packet be allowed at this NIC, and which rule of
    /// which NSG at which level decided. A packet of an established flow (`flow.established`)
    /// is decided by the flow that opened the connection: the same sockets, other direction.
    pub fn flow_verify(&self, nic: &str, flow: &Flow) -> Result<Verdict, QueryError> {
        let info = self.nic_info(nic)?;
        if u32::from(*flow.local.ip()) != info.ip {
            return Err(QueryError::NotLocalAddress {
                nic: nic.to_owned(),
                ip: *flow.local.ip(),
                expected: Ipv4Addr::from(info.ip),
            });
        }
        let opening = if flow.established {
            Flow {
                direction: flow.direction.reverse(),
                established: false,
                ..*flow
            }
        } else {
            *flow
        };
        let hops = self.hops(info, opening.direction, &opening.key());
        Ok(verdict(hops, flow.established, opening.direction))
    }

    /// The rules that apply to a NIC, per direction and level in evaluation order, with
    /// service tags and application security groups expanded to CIDRs.
    pub fn effective_rules(&self, nic: &str) -> Result<EffectiveRules, QueryError> {
        let info = self.nic_info(nic)?;
        let level = |direction: Direction| {
            evaluation_order(direction)
                .into_iter()
                .map(|level| match self.policy(info, level, direction) {
                    None => EffectiveNsg {
                        level,
                        network_security_group: None,
                        rules: Vec::new(),
                    },
                    Some((policy, nsg)) => EffectiveNsg {
                        level,
                        network_security_group: Some(nsg.clone()),
                        rules: policy
                            .rules
                            .iter()
                            .zip(&policy.expanded)
                            .map(|(r, e)| effective_rule(r, e))
                            .collect(),
                    },
                })
                .collect()
        };
        Ok(EffectiveRules {
            network_interface: info.id.clone(),
            inbound: level(Direction::Inbound),
            outbound: level(Direction::Outbound),
        })
    }

    /// The private address of a NIC.
    pub fn nic_address(&self, nic: &str) -> Result<Ipv4Addr, QueryError> {
        self.nic_info(nic).map(|n| Ipv4Addr::from(n.ip))
    }

    /// What the `VirtualNetwork` tag means for a NIC, as CIDRs.
    pub fn virtual_network_tag(&self, nic: &str) -> Result<Vec<String>, QueryError> {
        let info = self.nic_info(nic)?;
        Ok(self.vnets[info.vnet].tag.to_cidr_strings())
    }

    /// The number of rules (custom and default) of each compiled policy and the bytes its
    /// classifier holds, for the benchmark's report.
    pub fn classifier_stats(&self) -> Vec<(usize, usize)> {
        self.compiled
            .iter()
            .flat_map(|c| [&c.inbound, &c.outbound])
            .map(|p| (p.rules.len(), p.classifier.memory_bytes()))
            .collect()
    }
}

pub(crate) fn verdict(hops: Vec<Hop>, established: bool, direction: Direction) -> Verdict {
    let decider = hops.iter().find(|h| h.access == Access::Deny).or_else(|| {
        hops.iter()
            .rev()
            .find(|h| h.network_security_group.is_some())
    });
    let access = if hops.iter().all(|h| h.access == Access::Allow) {
        Access::Allow
    } else {
        Access::Deny
    };
    let dir = match direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    };
    let (rule_name, nsg, level, mut reason) = match decider {
        None => (
            None,
            None,
            None,
            "no network security group is associated with the subnet or the network interface, so both levels allow".to_owned(),
        ),
        Some(h) => {
            let nsg_name = h
                .network_security_group
                .as_ref()
                .map_or("", |n| n.name.as_str());
            let level = match h.level {
                Level::Subnet => "subnet",
                Level::NetworkInterface => "network interface",
            };
            let verb = if access == Access::Allow {
                "allowed"
            } else {
                "denied"
            };
            (
                h.rule_name.clone(),
                h.network_security_group.clone(),
                Some(h.level),
                format!(
                    "{dir} {verb} by {} of network security group '{nsg_name}' at the {level} level",
                    h.rule_name.as_deref().unwrap_or("no rule"),
                ),
            )
        }
    };
    if established {
        reason = format!(
            "return traffic of an {dir} flow: {} (stateful rules decide a connection by its first packet)",
            reason
        );
    }
    Verdict {
        access,
        rule_name,
        network_security_group: nsg,
        level,
        established,
        hops,
        reason,
    }
}

fn nsg_ref(nsg: &NetworkSecurityGroup) -> NsgRef {
    NsgRef {
        id: nsg.id.clone(),
        name: name_of(&nsg.id).to_owned(),
    }
}

fn effective_rule(r: &PolicyRule, e: &ExpandedRule) -> EffectiveRule {
    EffectiveRule {
        name: r.path.clone(),
        priority: r.parsed.priority,
        access: r.parsed.access,
        protocol: r.parsed.protocol,
        source_address_prefixes: r.parsed.source_text.clone(),
        expanded_source_address_prefix: e.src.to_cidr_strings(),
        source_port_ranges: e.sports.to_port_strings(),
        destination_address_prefixes: r.parsed.destination_text.clone(),
        expanded_destination_address_prefix: e.dst.to_cidr_strings(),
        destination_port_ranges: e.dports.to_port_strings(),
    }
}

pub(crate) struct AsgSets {
    ids: HashMap<String, usize>,
    members: Vec<Ranges>,
}

/// What a rule's tags and ASGs mean for one virtual network's NICs.
pub(crate) struct Context<'a> {
    pub tag: &'a Ranges,
    pub asgs: &'a AsgSets,
}

impl Context<'_> {
    fn expand(&self, e: &Endpoint) -> Ranges {
        match e {
            Endpoint::Any => all_addresses(),
            Endpoint::Tag(ServiceTag::VirtualNetwork) => self.tag.clone(),
            Endpoint::Tag(ServiceTag::Internet) => special_ranges()
                .union(self.tag)
                .complement_within(0, u32::MAX),
            Endpoint::Tag(ServiceTag::AzureLoadBalancer) => {
                let ip = u32::from(AZURE_LOAD_BALANCER);
                Ranges::span(ip, ip)
            }
            Endpoint::Prefixes(set) => set.clone(),
            Endpoint::Asgs(ids) => ids
                .iter()
                .filter_map(|id| self.asgs.ids.get(id))
                .fold(Ranges::empty(), |acc, &a| acc.union(&self.asgs.members[a])),
        }
    }
}

/// One direction of an NSG: its custom rules by priority, then the defaults, expanded in a
/// context and compiled.
pub(crate) fn compile_policy(
    rules: &[ParsedRule],
    direction: Direction,
    ctx: &Context<'_>,
) -> Policy {
    let mut custom: Vec<&ParsedRule> = rules.iter().filter(|r| r.direction == direction).collect();
    custom.sort_by_key(|r| r.priority);
    let defaults = default_rules(direction);
    let (rules, expanded): (Vec<PolicyRule>, Vec<ExpandedRule>) = custom
        .into_iter()
        .map(|r| (format!("securityRules/{}", r.name), r.clone()))
        .chain(
            defaults
                .into_iter()
                .map(|r| (format!("defaultSecurityRules/{}", r.name), r)),
        )
        .map(|(path, parsed)| {
            let expanded = ExpandedRule {
                protocol: parsed.protocol,
                src: ctx.expand(&parsed.source),
                sports: parsed.source_ports.clone(),
                dst: ctx.expand(&parsed.destination),
                dports: parsed.destination_ports.clone(),
                access: parsed.access,
            };
            (PolicyRule { path, parsed }, expanded)
        })
        .unzip();
    Policy {
        classifier: Classifier::build(&expanded),
        accesses: expanded.iter().map(|r| r.access).collect(),
        rules,
        expanded,
    }
}
