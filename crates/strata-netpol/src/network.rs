//! [`Network`]: a validated topology with every NSG compiled, per virtual network it is used
//! in, into classifiers (built by [`Network::new`], in `build.rs`); the answer types; and the
//! per-NIC questions: `flow_verify`, `effective_rules`, and the allocation-free
//! `classify`/`scan` pair the benchmark and the property tests compare.
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
use crate::model::{Access, Direction, FlowProtocol, Protocol};
use crate::ranges::{PORTLESS, Ranges, parse_prefix};
use crate::validate::ParsedRule;

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

impl Network {
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
        // Each level's hit is a value, not a slot written through a reference: the decision
        // is then assembled in registers (partial stores into the array, read back whole,
        // stalled store forwarding on every decision).
        let [first, second] = &info.specialized[d];
        let (h0, access) = self.level_specialized(first, flow.direction, &key);
        let (h1, access) = if access == Access::Deny {
            (Hit::Skipped, Access::Deny)
        } else {
            self.level_specialized(second, flow.direction, &key)
        };
        Decision {
            access,
            hits: [h0, h1],
        }
    }

    /// One level of [`Network::classify`] for a flow at the NIC's own address.
    #[inline]
    fn level_specialized(
        &self,
        spec: &Option<(usize, Specialized)>,
        direction: Direction,
        key: &Key,
    ) -> (Hit, Access) {
        match spec {
            Some((c, spec)) => {
                let policy = self.compiled[*c].policy(direction);
                let hit = policy
                    .classifier
                    .classify_specialized(&policy.expanded, spec, key);
                (
                    Hit::Rule(hit.map_or(u16::MAX, |h| h as u16)),
                    policy.access(hit),
                )
            }
            None => (Hit::NoNsg, Access::Allow),
        }
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

    /// Bytes of the NIC-specialized tables [`Network::classify`] uses (each shared table
    /// once), for the benchmark's report.
    pub fn specialized_bytes(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        self.nics
            .iter()
            .flat_map(|n| n.specialized.iter().flatten().flatten())
            .map(|(_, s)| s.memory())
            .filter(|(_, id)| seen.insert(*id))
            .map(|(bytes, _)| bytes)
            .sum()
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
