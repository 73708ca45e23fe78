//! [`HostPlan`]: the desired state of one host's dataplane, computed from a topology and the
//! NICs placed on the host (pure; no I/O).
//!
//! Linux layout (all in one network namespace — the host's, or a test's stand-in):
//!
//! ```text
//!   VM ns (or QEMU)            host                                            VM ns
//!   eth0 10.0.1.4/24 ── veth ── stn… ─┐  isolated ports, learning off,      ┌─ stn… ── eth0 10.0.2.4/24
//!   gw 10.0.1.1                       ├─ bridge stv<vnet1>  10.0.1.1/24     │          gw 10.0.2.1
//!                                     │  proxy_arp_pvlan: the host answers  │
//!                                     │  every ARP, so every packet is      │
//!                                     │  routed through the host (L3 only,  │
//!                                     │  like Azure: no L2 between VMs)     │
//!   ip rule pref 9731 iif stv<vnet1> lookup <table vnet1>:                  │
//!     10.0.1.0/24 dev stv<vnet1>, 10.0.2.0/24 dev stv<vnet1>, ──────────────┘
//!     <peer's prefixes> dev stv<peer>   (only when peered both ways)
//!     unreachable default               (no route to any other virtual network)
//! ```
//!
//! - A **bridge per virtual network** holds the gateway address (`.1`, Azure's reserved
//!   gateway) of each of its subnets. Its ports are *isolated* (no frame goes port to port)
//!   and the bridge answers ARP for everything (`proxy_arp_pvlan`), so even two VMs in one
//!   subnet talk through the host's forwarding path, where the ruleset is.
//! - A **routing table per virtual network**, selected by the bridge the packet came in on:
//!   it knows the network's own subnets and, when peered in both directions, the peer's
//!   address space via the peer's bridge — and nothing else, so un-peered networks have no
//!   route to each other. (A VRF per network would do the same; this host's kernel has none.)
//! - A **conntrack zone per peering group** (networks connected by peerings share one, since a
//!   connection's two directions enter on two bridges): overlapping address spaces of
//!   unrelated networks never share connection state. A group whose address space overlaps
//!   no other group's in the topology needs no zone of its own and uses the default zone (0),
//!   where the SYN proxy can work (crate::ddos); it shares that zone with the host's own
//!   connections, which cannot collide with its flows unless the host itself uses addresses
//!   of the group's address space.
//! - A **port per NIC** (`stn…`): a veth end whose peer is in the VM's namespace, or later the
//!   VM's tap, attached the same way ([`crate::Host::attach_port`]). Its MAC is fixed by the
//!   NIC's id and the bridge learns nothing: the ruleset's bridge table drops frames whose
//!   source MAC or IPv4/ARP source address is not the NIC's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use strata_netpol::ranges::{PORTLESS, Ranges, parse_prefix};
use strata_netpol::{
    Access, Direction, EffectiveRule, Network, Protocol, QueryError, Topology, ValidationError,
};

use crate::ddos::DdosPolicy;
use crate::names;

/// Why a host plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the topology is not valid")]
    Invalid(#[source] ValidationError),
    #[error("network interface '{0}' is placed on this host but is not in the topology")]
    UnknownNic(String),
    #[error("could not read the effective rules of network interface '{nic}'")]
    Query {
        nic: String,
        #[source]
        source: QueryError,
    },
    #[error(
        "'{a}' and '{b}' hash to the same {what} '{name}'; rename one of them (ids must differ in their hash)"
    )]
    NameCollision {
        what: &'static str,
        name: String,
        a: String,
        b: String,
    },
    #[error("{what} '{value}' could not be parsed")]
    Malformed { what: &'static str, value: String },
}

/// The desired state of one host. Every list is sorted, so equal inputs give equal plans and
/// an identical rendered ruleset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPlan {
    pub vnets: Vec<VnetPlan>,
    pub nics: Vec<NicPlan>,
    /// One chain per distinct (expanded) NSG direction; NICs that share an NSG in one virtual
    /// network share its chains.
    pub chains: Vec<NsgChain>,
    /// The host's way out of the virtual networks (`None`: there is none, every table's
    /// default route is `unreachable`). With an uplink each table's default route is that
    /// device, and the address spaces of networks that are not peered stay `unreachable`.
    pub uplink: Option<String>,
}

/// A virtual network with at least one NIC on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VnetPlan {
    pub id: String,
    pub bridge: String,
    pub table: u32,
    /// The conntrack zone of the network's peering group: 0 (the default zone) when the
    /// group's address space overlaps no other group's in the topology, else the group's own
    /// ([`names::zone_id`], never 0).
    pub zone: u16,
    /// The gateway address of each subnet (the subnet's first host address) with the subnet's
    /// prefix length: the addresses of the bridge.
    pub gateways: Vec<(Ipv4Addr, u8)>,
    /// Routes of the network's table: `(prefix, bridge)`; its own subnets through its own
    /// bridge, a mutually peered network's address space through that network's bridge.
    pub routes: Vec<(String, String)>,
    /// The network's address space: packets arriving from the uplink for these addresses get
    /// the network's conntrack zone.
    pub address_space: Vec<String>,
    /// Address spaces of the topology's other networks that are not peered with this one:
    /// `unreachable` in its table, whatever the default route.
    pub unreachable: Vec<String>,
}

/// A NIC on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicPlan {
    pub id: String,
    /// Index into [`HostPlan::vnets`].
    pub vnet: usize,
    /// The host-side device (veth end or tap).
    pub port: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// Indexes into [`HostPlan::chains`], in evaluation order (subnet then NIC inbound, NIC
    /// then subnet outbound); a level without an NSG has no chain.
    pub inbound: Vec<usize>,
    pub outbound: Vec<usize>,
    /// The NIC's DDoS limits ([`DdosPolicy::default`] unless [`HostPlan::set_ddos`] says
    /// otherwise).
    pub ddos: DdosPolicy,
}

/// One direction of one NSG in one virtual network's context, compiled to nftables
/// statements (see [`crate::render`] for how priority order is kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsgChain {
    pub name: String,
    pub nsg: String,
    pub direction: Direction,
    pub statements: Vec<Statement>,
    /// The chain this one continues with when none of its statements matched (an NSG's chain
    /// continues with its network's shared chain of Azure's default rules); `None`: drop.
    pub tail: Option<usize>,
}

/// Which packets a statement's set is keyed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// TCP and UDP: `meta l4proto . ip saddr . th sport . ip daddr . th dport`.
    Ported,
    /// Every other protocol: `meta l4proto . ip saddr . ip daddr` (only rules whose port ranges
    /// are `*` match those, as in Azure).
    Portless,
}

/// One nftables rule of an NSG chain: a set lookup and a verdict. The elements are pairwise
/// disjoint (the kernel's concatenated-interval sets refuse overlaps), and every element comes
/// from rules of one run of equal access (see [`crate::render`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub access: Access,
    pub shape: Shape,
    /// Inclusive intervals per key field: Ported `[proto, saddr, sport, daddr, dport]`,
    /// Portless `[proto, saddr, daddr]`.
    pub elements: Vec<Vec<(u32, u32)>>,
    /// The rules (`securityRules/<name>`, `defaultSecurityRules/<name>`) it holds.
    pub rules: Vec<String>,
}

impl HostPlan {
    /// The plan for the NICs `local_nics` of `topology` (the ones placed on this host).
    pub fn new<'a>(
        topology: &Topology,
        local_nics: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, PlanError> {
        let network = Network::new(topology).map_err(PlanError::Invalid)?;
        let local: BTreeSet<&str> = local_nics.into_iter().collect();

        // Mutual peerings and peering groups (connected components).
        let vnet_ids: Vec<&str> = topology
            .virtual_networks
            .iter()
            .map(|v| v.id.as_str())
            .collect();
        let peers_of = |id: &str| -> Vec<&str> {
            let Some(v) = topology.virtual_networks.iter().find(|v| v.id == id) else {
                return Vec::new();
            };
            v.virtual_network_peerings
                .iter()
                .map(|p| p.remote_virtual_network.id.as_str())
                .filter(|&r| {
                    r != id
                        && topology.virtual_networks.iter().any(|o| {
                            o.id == r
                                && o.virtual_network_peerings
                                    .iter()
                                    .any(|p| p.remote_virtual_network.id == id)
                        })
                })
                .collect()
        };
        let mut group: HashMap<&str, &str> = HashMap::new();
        for &start in &vnet_ids {
            if group.contains_key(start) {
                continue;
            }
            let mut members = vec![start];
            let mut i = 0;
            while let Some(&v) = members.get(i) {
                for p in peers_of(v) {
                    if !members.contains(&p) {
                        members.push(p);
                    }
                }
                i += 1;
            }
            let key = members.iter().copied().min().unwrap_or(start);
            for m in members {
                group.insert(m, key);
            }
        }
        // The default zone for a group whose address space overlaps no other group's (in the
        // whole topology, so a group's zone does not change as other networks' NICs come and
        // go on this host): its connections cannot collide with another network's, and only in
        // the default zone can the SYN proxy work (crate::ddos).
        let mut space: BTreeMap<&str, Ranges> = BTreeMap::new();
        for v in &topology.virtual_networks {
            let mut r = Ranges::empty();
            for p in &v.address_space.address_prefixes {
                let (lo, hi) = prefix(p)?.bounds();
                r = r.union(&Ranges::span(lo, hi));
            }
            let key = group.get(v.id.as_str()).copied().unwrap_or(v.id.as_str());
            let entry = space.entry(key).or_insert_with(Ranges::empty);
            *entry = entry.union(&r);
        }
        let zone_of = |id: &str| -> u16 {
            let key = group.get(id).copied().unwrap_or(id);
            let alone = match space.get(key) {
                Some(mine) => space.iter().all(|(k, r)| *k == key || !r.overlaps(mine)),
                None => true,
            };
            if alone { 0 } else { names::zone_id(key) }
        };

        // NICs on this host and their virtual networks.
        struct Local<'t> {
            nic: &'t strata_netpol::NetworkInterface,
            vnet: &'t strata_netpol::VirtualNetwork,
            subnet: &'t strata_netpol::Subnet,
        }
        let mut locals = Vec::new();
        for &id in &local {
            let nic = topology
                .network_interfaces
                .iter()
                .find(|n| n.id == id)
                .ok_or_else(|| PlanError::UnknownNic(id.to_owned()))?;
            // Network::new validated the reference.
            let (vnet_id, subnet_name) = nic
                .subnet
                .id
                .rsplit_once("/subnets/")
                .ok_or_else(|| PlanError::UnknownNic(id.to_owned()))?;
            let vnet = topology
                .virtual_networks
                .iter()
                .find(|v| v.id == vnet_id)
                .ok_or_else(|| PlanError::UnknownNic(id.to_owned()))?;
            let subnet = vnet
                .subnets
                .iter()
                .find(|s| s.name == subnet_name)
                .ok_or_else(|| PlanError::UnknownNic(id.to_owned()))?;
            locals.push(Local { nic, vnet, subnet });
        }
        let on_host: BTreeSet<&str> = locals.iter().map(|l| l.vnet.id.as_str()).collect();

        let mut vnets = Vec::new();
        for &id in &on_host {
            let Some(vnet) = topology.virtual_networks.iter().find(|v| v.id == id) else {
                continue;
            };
            let bridge = names::bridge_name(id);
            let mut gateways = Vec::new();
            let mut routes = Vec::new();
            for s in &vnet.subnets {
                let p = prefix(&s.address_prefix)?;
                gateways.push((Ipv4Addr::from(p.addr + 1), p.len));
                routes.push((p.to_string(), bridge.clone()));
            }
            for peer in peers_of(id) {
                if !on_host.contains(peer) {
                    continue; // cross-host peering needs an overlay (later)
                }
                if let Some(pv) = topology.virtual_networks.iter().find(|v| v.id == peer) {
                    for p in &pv.address_space.address_prefixes {
                        routes.push((prefix(p)?.to_string(), names::bridge_name(peer)));
                    }
                }
            }
            let peers = peers_of(id);
            let mut unreachable = Vec::new();
            for other in &topology.virtual_networks {
                if other.id != id && !peers.contains(&other.id.as_str()) {
                    for p in &other.address_space.address_prefixes {
                        unreachable.push(prefix(p)?.to_string());
                    }
                }
            }
            let mut address_space = Vec::new();
            for p in &vnet.address_space.address_prefixes {
                address_space.push(prefix(p)?.to_string());
            }
            gateways.sort();
            routes.sort();
            unreachable.sort();
            unreachable.dedup();
            address_space.sort();
            vnets.push(VnetPlan {
                id: id.to_owned(),
                bridge,
                table: names::table_id(id),
                zone: zone_of(id),
                gateways,
                routes,
                address_space,
                unreachable,
            });
        }
        check_unique("bridge", vnets.iter().map(|v| (v.bridge.clone(), &v.id)))?;
        check_unique(
            "routing table",
            vnets.iter().map(|v| (v.table.to_string(), &v.id)),
        )?;

        let mut chains: Vec<NsgChain> = Vec::new();
        let mut chain_index: HashMap<(String, Direction), usize> = HashMap::new();
        let mut nics = Vec::new();
        for l in &locals {
            let vnet = vnets
                .iter()
                .position(|v| v.id == l.vnet.id)
                .unwrap_or_default();
            let p = prefix(&l.subnet.address_prefix)?;
            let ip: Ipv4Addr =
                l.nic
                    .private_ip_address
                    .parse()
                    .map_err(|_| PlanError::Malformed {
                        what: "private ip address",
                        value: l.nic.private_ip_address.clone(),
                    })?;
            let effective =
                network
                    .effective_rules(&l.nic.id)
                    .map_err(|source| PlanError::Query {
                        nic: l.nic.id.clone(),
                        source,
                    })?;
            let mut levels = |direction: Direction,
                              list: &[strata_netpol::EffectiveNsg]|
             -> Result<Vec<usize>, PlanError> {
                let mut out = Vec::new();
                for level in list {
                    let Some(nsg) = &level.network_security_group else {
                        continue;
                    };
                    // Azure's default rules are the same in every NSG of a network: they get
                    // one shared chain per direction, which each NSG's chain ends by `goto`.
                    let (custom, defaults): (Vec<EffectiveRule>, Vec<EffectiveRule>) = level
                        .rules
                        .iter()
                        .cloned()
                        .partition(|r| r.name.starts_with("securityRules/"));
                    let mut intern = |statements: Vec<Statement>,
                                      tail: Option<usize>,
                                      prefix: &str,
                                      nsg: &str| {
                        let key = (format!("{prefix}{tail:?}{statements:?}"), direction);
                        if let Some(&i) = chain_index.get(&key) {
                            return i;
                        }
                        let dir = match direction {
                            Direction::Inbound => "in",
                            Direction::Outbound => "out",
                        };
                        chains.push(NsgChain {
                            name: format!(
                                "{prefix}_{:08x}_{dir}",
                                names::fnv64(key.0.as_bytes()) >> 32
                            ),
                            nsg: nsg.to_owned(),
                            direction,
                            statements,
                            tail,
                        });
                        chain_index.insert(key, chains.len() - 1);
                        chains.len() - 1
                    };
                    let tail = intern(compile(&defaults)?, None, "dflt", "defaultSecurityRules");
                    let index = intern(compile(&custom)?, Some(tail), "nsg", &nsg.id);
                    out.push(index);
                }
                Ok(out)
            };
            let inbound = levels(Direction::Inbound, &effective.inbound)?;
            let outbound = levels(Direction::Outbound, &effective.outbound)?;
            nics.push(NicPlan {
                id: l.nic.id.clone(),
                vnet,
                port: names::port_name(&l.nic.id),
                mac: names::mac_address(&l.nic.id),
                ip,
                prefix_len: p.len,
                gateway: Ipv4Addr::from(p.addr + 1),
                inbound,
                outbound,
                ddos: DdosPolicy::default(),
            });
        }
        check_unique("port", nics.iter().map(|n| (n.port.clone(), &n.id)))?;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, c) in chains.iter().enumerate() {
            if let Some(&j) = seen.get(c.name.as_str()) {
                return Err(PlanError::NameCollision {
                    what: "chain",
                    name: c.name.clone(),
                    a: chains[j].nsg.clone(),
                    b: c.nsg.clone(),
                });
            }
            seen.insert(&c.name, i);
        }
        Ok(Self {
            vnets,
            nics,
            chains,
            uplink: None,
        })
    }

    /// The same plan with an uplink device (see [`HostPlan::uplink`]).
    pub fn with_uplink(mut self, device: &str) -> Self {
        self.uplink = Some(device.to_owned());
        self
    }

    /// Sets a NIC's DDoS limits.
    pub fn set_ddos(&mut self, nic_id: &str, policy: DdosPolicy) -> Result<(), PlanError> {
        let nic = self
            .nics
            .iter_mut()
            .find(|n| n.id == nic_id)
            .ok_or_else(|| PlanError::UnknownNic(nic_id.to_owned()))?;
        nic.ddos = policy;
        Ok(())
    }

    pub fn nic(&self, id: &str) -> Option<&NicPlan> {
        self.nics.iter().find(|n| n.id == id)
    }

    pub fn vnet_of(&self, nic: &NicPlan) -> Option<&VnetPlan> {
        self.vnets.get(nic.vnet)
    }

    /// Whether the NIC's inbound TCP handshakes go through the SYN proxy: its policy asks for
    /// it and its network tracks connections in the default zone (crate::ddos).
    pub fn syn_proxied(&self, nic: &NicPlan) -> bool {
        nic.ddos.syn_proxy && self.vnet_of(nic).is_some_and(|v| v.zone == 0)
    }
}

fn prefix(text: &str) -> Result<strata_netpol::ranges::Prefix, PlanError> {
    parse_prefix(text).map_err(|_| PlanError::Malformed {
        what: "address prefix",
        value: text.to_owned(),
    })
}

fn check_unique<'a>(
    what: &'static str,
    items: impl Iterator<Item = (String, &'a String)>,
) -> Result<(), PlanError> {
    let mut seen: BTreeMap<String, &String> = BTreeMap::new();
    for (name, id) in items {
        if let Some(other) = seen.insert(name.clone(), id) {
            return Err(PlanError::NameCollision {
                what,
                name,
                a: other.clone(),
                b: id.clone(),
            });
        }
    }
    Ok(())
}

/// Inclusive intervals of one key field.
type Intervals = Vec<(u32, u32)>;
/// One set element: a field's interval per key field.
type Element = Vec<(u32, u32)>;

/// Protocol numbers for the two key shapes.
fn protocols(p: Protocol) -> (Intervals, Intervals) {
    const TCP: u32 = 6;
    const UDP: u32 = 17;
    match p {
        Protocol::Tcp => (vec![(TCP, TCP)], vec![]),
        Protocol::Udp => (vec![(UDP, UDP)], vec![]),
        Protocol::Icmp => (vec![], vec![(1, 1)]),
        Protocol::Esp => (vec![], vec![(50, 50)]),
        Protocol::Ah => (vec![], vec![(51, 51)]),
        Protocol::Any => (
            vec![(TCP, TCP), (UDP, UDP)],
            vec![(0, TCP - 1), (TCP + 1, UDP - 1), (UDP + 1, 255)],
        ),
    }
}

fn addresses(cidrs: &[String]) -> Result<Vec<(u32, u32)>, PlanError> {
    let mut bounds = Vec::new();
    for c in cidrs {
        bounds.push(prefix(c)?.bounds());
    }
    Ok(Ranges::from_intervals(bounds).intervals().to_vec())
}

/// Port ranges as `EffectiveRule` writes them (`*`, `22`, `1000-2000`), as a set over
/// `0..=65536` where 65536 is "no port" (so `*` alone contains it).
fn ports(texts: &[String]) -> Result<Ranges, PlanError> {
    let mut iv = Vec::new();
    for t in texts {
        let bad = || PlanError::Malformed {
            what: "port range",
            value: t.clone(),
        };
        if t == "*" {
            iv.push((0, PORTLESS));
            continue;
        }
        let (a, b) = match t.split_once('-') {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let p: u32 = t.parse().map_err(|_| bad())?;
                (p, p)
            }
        };
        iv.push((a, b));
    }
    Ok(Ranges::from_intervals(iv))
}

/// The elements one rule contributes, per shape: the cross product of its fields' intervals
/// (each field's intervals are disjoint, so the elements are too).
fn rule_elements(r: &EffectiveRule) -> Result<[Vec<Element>; 2], PlanError> {
    let (ported_protos, portless_protos) = protocols(r.protocol);
    let src = addresses(&r.expanded_source_address_prefix)?;
    let dst = addresses(&r.expanded_destination_address_prefix)?;
    let sports = ports(&r.source_port_ranges)?;
    let dports = ports(&r.destination_port_ranges)?;
    let real = |set: &Ranges| -> Vec<(u32, u32)> {
        set.intersect(&Ranges::span(0, 65535)).intervals().to_vec()
    };
    let (sp, dp) = (real(&sports), real(&dports));
    let mut ported = Vec::new();
    for &pr in &ported_protos {
        for &s in &src {
            for &a in &sp {
                for &d in &dst {
                    for &b in &dp {
                        ported.push(vec![pr, s, a, d, b]);
                    }
                }
            }
        }
    }
    let mut portless = Vec::new();
    if sports.contains(PORTLESS) && dports.contains(PORTLESS) {
        for &pr in &portless_protos {
            for &s in &src {
                for &d in &dst {
                    portless.push(vec![pr, s, d]);
                }
            }
        }
    }
    Ok([ported, portless])
}

fn overlaps(a: &[(u32, u32)], b: &[(u32, u32)]) -> bool {
    a.iter()
        .zip(b)
        .all(|(&(a0, a1), &(b0, b1))| a0 <= b1 && b0 <= a1)
}

/// Compiles one NSG direction's effective rules (custom by priority, then the defaults) into
/// statements: consecutive rules of equal access form a *run*; within a run the rules are
/// packed into as few sets as possible whose elements do not overlap ("layers"). Evaluating
/// the runs in order and each run's layers in any order gives exactly the first-match result.
fn compile(rules: &[EffectiveRule]) -> Result<Vec<Statement>, PlanError> {
    let mut statements = Vec::new();
    let mut i = 0;
    while i < rules.len() {
        let access = rules[i].access;
        let mut j = i;
        while j < rules.len() && rules[j].access == access {
            j += 1;
        }
        for (shape_index, shape) in [Shape::Ported, Shape::Portless].into_iter().enumerate() {
            let mut layers: Vec<Statement> = Vec::new();
            for r in &rules[i..j] {
                let [ported, portless] = rule_elements(r)?;
                let mine = if shape_index == 0 { ported } else { portless };
                if mine.is_empty() {
                    continue;
                }
                let fits = |layer: &Statement| {
                    !layer
                        .elements
                        .iter()
                        .any(|e| mine.iter().any(|m| overlaps(e, m)))
                };
                match layers.iter_mut().find(|l| fits(l)) {
                    Some(layer) => {
                        layer.elements.extend(mine);
                        layer.rules.push(r.name.clone());
                    }
                    None => layers.push(Statement {
                        access,
                        shape,
                        elements: mine,
                        rules: vec![r.name.clone()],
                    }),
                }
            }
            statements.extend(layers);
        }
        i = j;
    }
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// a and b overlap (10.0.0.0/16 in both), c overlaps nothing, d is peered with c (one
    /// group, its space still apart from a's and b's).
    #[test]
    fn only_groups_that_overlap_no_other_get_the_default_zone() {
        let vnet = |id: &str, space: &str, subnet: &str, peer: Option<&str>| {
            let peerings: Vec<_> = peer
                .map(|p| json!({ "name": p, "remoteVirtualNetwork": { "id": p } }))
                .into_iter()
                .collect();
            json!({ "id": id, "addressSpace": { "addressPrefixes": [space] },
                    "subnets": [ { "name": "s", "addressPrefix": subnet } ],
                    "virtualNetworkPeerings": peerings })
        };
        let nic = |id: &str, vnet: &str, ip: &str| {
            json!({ "id": id, "subnet": { "id": format!("{vnet}/subnets/s") },
                    "privateIpAddress": ip })
        };
        let topology: Topology = serde_json::from_value(json!({
            "virtualNetworks": [
                vnet("a", "10.0.0.0/16", "10.0.1.0/24", None),
                vnet("b", "10.0.0.0/8", "10.0.1.0/24", None),
                vnet("c", "172.16.0.0/16", "172.16.1.0/24", Some("d")),
                vnet("d", "172.17.0.0/16", "172.17.1.0/24", Some("c")),
            ],
            "networkInterfaces": [
                nic("na", "a", "10.0.1.4"), nic("nb", "b", "10.0.1.4"),
                nic("nc", "c", "172.16.1.4"), nic("nd", "d", "172.17.1.4"),
            ]
        }))
        .unwrap();
        let plan = HostPlan::new(&topology, ["na", "nb", "nc", "nd"]).unwrap();
        let zone = |id: &str| plan.vnets.iter().find(|v| v.id == id).unwrap().zone;
        assert!(zone("a") != 0 && zone("b") != 0 && zone("a") != zone("b"));
        assert_eq!((zone("c"), zone("d")), (0, 0));
        let proxied: Vec<&str> = plan
            .nics
            .iter()
            .filter(|n| plan.syn_proxied(n))
            .map(|n| n.id.as_str())
            .collect();
        assert_eq!(proxied, ["nc", "nd"]);
    }
}
