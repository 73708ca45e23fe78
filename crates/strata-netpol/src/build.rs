//! Building a [`Network`]: validating a [`Topology`] as a whole (address spaces, subnets,
//! peerings, NIC addresses, references, application security group placement — each rule and
//! NSG on its own is checked by [`crate::validate`]), then expanding every NSG's rules in the
//! context of each virtual network it is used in (service tags and ASGs to address sets, the
//! default rules appended) and compiling them into classifiers, one per direction.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::classify::{Classifier, ExpandedRule, Specialized};
use crate::model::{Direction, NetworkSecurityGroup, Protocol, SubResource, Topology, name_of};
use crate::network::{
    AZURE_LOAD_BALANCER, Compiled, DEFAULT_RULES, Level, Network, NicInfo, NsgRef, Policy,
    PolicyRule, SubnetInfo, VnetInfo, evaluation_order, special_ranges,
};
use crate::ranges::{PrefixError, Ranges, all_addresses, all_ports, parse_prefix};
use crate::validate::{Endpoint, ParsedRule, ServiceTag, ValidationError, parse_nsg_rules};

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
        // NICs whose address matches the same rules of a policy share its specialized table.
        let mut tables: HashMap<(usize, usize, Vec<u64>), Specialized> = HashMap::new();
        for nic in &mut nics {
            for (d, direction) in [Direction::Inbound, Direction::Outbound]
                .into_iter()
                .enumerate()
            {
                let local_is_dst = direction == Direction::Inbound;
                for (i, level) in evaluation_order(direction).into_iter().enumerate() {
                    let c = match level {
                        Level::Subnet => nic.subnet_policy,
                        Level::NetworkInterface => nic.nic_policy,
                    };
                    nic.specialized[d][i] = c.map(|c| {
                        let policy = compiled[c].policy(direction);
                        let row = policy.classifier.local_row(nic.ip, local_is_dst);
                        let table = tables
                            .entry((c, d, row))
                            .or_insert_with_key(|(_, _, row)| {
                                Classifier::specialize(row.clone(), local_is_dst)
                            })
                            .clone();
                        (c, table)
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
}

fn nsg_ref(nsg: &NetworkSecurityGroup) -> NsgRef {
    NsgRef {
        id: nsg.id.clone(),
        name: name_of(&nsg.id).to_owned(),
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
