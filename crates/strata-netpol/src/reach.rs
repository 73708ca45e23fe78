//! Reachability, computed symbolically rather than by trying addresses:
//! - [`Network::sources_reaching`]: which source addresses (and source ports) can open a flow
//!   to a NIC on a protocol and port. The source-address and source-port dimensions are cut into
//!   elementary intervals at every boundary of the NIC's inbound rules (both levels); inside
//!   one cell every rule matches all of it or none of it, so evaluating one point per cell is
//!   exact. Only the NIC's own inbound NSGs are considered: a source inside Strata must also be
//!   allowed out by its own NSGs (ask [`Network::can_reach`] for that).
//! - [`Network::can_reach`]: can NIC A open a flow to NIC B: routable only within a virtual
//!   network or between (mutually) peered ones, then A's NIC NSG outbound, A's subnet NSG
//!   outbound, B's subnet NSG inbound, B's NIC NSG inbound, each with its deciding rule.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::classify::Key;
use crate::model::{Access, Direction, FlowProtocol, name_of};
use crate::network::{Hop, Level, Network, QueryError, evaluation_order};
use crate::ranges::{PORTLESS, Ranges};

/// The answer to "which sources can reach NIC X on this port".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReachability {
    pub network_interface: String,
    pub protocol: FlowProtocol,
    /// `None` for protocols without ports.
    pub port: Option<u16>,
    /// Every source address allowed from at least one source port, as the fewest CIDRs.
    pub sources: Vec<String>,
    /// The allowed region, split by the deciding rule at each level.
    pub entries: Vec<SourceEntry>,
}

/// Sources allowed by the same pair of deciding rules, from the same source ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceEntry {
    pub source_address_prefixes: Vec<String>,
    pub source_port_ranges: Vec<String>,
    /// The deciding rule at each level, in inbound evaluation order (subnet, then NIC);
    /// `None` where the level has no NSG.
    pub rules: Vec<LevelRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LevelRule {
    pub level: Level,
    pub rule_name: Option<String>,
}

/// The answer to "can NIC A reach NIC B".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathReachability {
    pub reachable: bool,
    pub from: String,
    pub to: String,
    pub protocol: FlowProtocol,
    pub port: Option<u16>,
    /// The source port of the path shown (`None` for protocols without ports).
    pub source_port: Option<u16>,
    /// A's NIC NSG outbound, A's subnet NSG outbound, B's subnet NSG inbound, B's NIC NSG
    /// inbound; empty when the networks are not connected.
    pub hops: Vec<Hop>,
    /// Index in `hops` of the first hop that denies.
    pub blocked_at: Option<usize>,
    pub reason: String,
}

/// Cuts `lo..=hi` at the boundaries of `sets`: the elementary intervals.
fn cells<'a>(sets: impl Iterator<Item = &'a Ranges>, lo: u32, hi: u32) -> Vec<(u32, u32)> {
    let mut bounds: Vec<u32> = sets
        .flat_map(|s| s.boundaries().collect::<Vec<_>>())
        .filter(|&b| b > lo && b <= hi)
        .collect();
    bounds.push(lo);
    bounds.sort_unstable();
    bounds.dedup();
    bounds
        .iter()
        .enumerate()
        .map(|(i, &a)| (a, bounds.get(i + 1).map_or(hi, |&next| next - 1)))
        .collect()
}

fn protocol_name(p: FlowProtocol) -> &'static str {
    match p {
        FlowProtocol::Tcp => "tcp",
        FlowProtocol::Udp => "udp",
        FlowProtocol::Icmp => "icmp",
        FlowProtocol::Esp => "esp",
        FlowProtocol::Ah => "ah",
    }
}

impl Network {
    /// Which sources can open a flow to `nic` on `protocol`/`port` (the port is ignored for
    /// ICMP, ESP and AH). See the module documentation for what is and is not considered.
    pub fn sources_reaching(
        &self,
        nic: &str,
        protocol: FlowProtocol,
        port: u16,
    ) -> Result<SourceReachability, QueryError> {
        let info = self.nic_info(nic)?;
        let levels = evaluation_order(Direction::Inbound);
        let policies: Vec<_> = levels
            .iter()
            .map(|&l| self.policy(info, l, Direction::Inbound).map(|(p, _)| p))
            .collect();
        let expanded = || policies.iter().flatten().flat_map(|p| p.expanded.iter());
        let (dport, sport_cells) = if protocol.has_ports() {
            (
                u32::from(port),
                cells(expanded().map(|r| &r.sports), 0, 65535),
            )
        } else {
            (PORTLESS, vec![(PORTLESS, PORTLESS)])
        };
        let addr_cells = cells(expanded().map(|r| &r.src), 0, u32::MAX);

        // (deciding rule per level) -> [(source port cell, address cells)]
        type Hits = [Option<usize>; 2];
        type Cells = Vec<((u32, u32), Vec<(u32, u32)>)>;
        let mut allowed: Vec<(Hits, Cells)> = Vec::new();
        for &sport in &sport_cells {
            for &addr in &addr_cells {
                let key = Key {
                    protocol,
                    src: addr.0,
                    sport: sport.0,
                    dst: info.ip,
                    dport,
                };
                let mut hits: Hits = [None; 2];
                let mut ok = true;
                for (i, policy) in policies.iter().enumerate() {
                    if let Some(policy) = policy {
                        let hit = policy.classify(&key);
                        ok &= policy.access(hit) == Access::Allow;
                        hits[i] = hit;
                    }
                }
                if !ok {
                    continue;
                }
                let slot = match allowed.iter().position(|(h, _)| *h == hits) {
                    Some(i) => i,
                    None => {
                        allowed.push((hits, Vec::new()));
                        allowed.len() - 1
                    }
                };
                let per_sport = &mut allowed[slot].1;
                match per_sport.iter_mut().find(|(s, _)| *s == sport) {
                    Some((_, addrs)) => addrs.push(addr),
                    None => per_sport.push((sport, vec![addr])),
                }
            }
        }

        let mut entries: Vec<(Ranges, SourceEntry)> = Vec::new();
        let mut sources = Ranges::empty();
        for (hits, per_sport) in allowed {
            // Source ports with the same address set share an entry.
            let mut groups: Vec<(Ranges, Vec<(u32, u32)>)> = Vec::new();
            for (sport, addrs) in per_sport {
                let addrs = Ranges::from_intervals(addrs);
                match groups.iter_mut().find(|(a, _)| *a == addrs) {
                    Some((_, sports)) => sports.push(sport),
                    None => groups.push((addrs, vec![sport])),
                }
            }
            for (addrs, sports) in groups {
                sources = sources.union(&addrs);
                let rules = levels
                    .iter()
                    .enumerate()
                    .map(|(i, &level)| LevelRule {
                        level,
                        rule_name: policies[i].and_then(|p| {
                            hits[i].and_then(|h| p.rules.get(h)).map(|r| r.path.clone())
                        }),
                    })
                    .collect();
                entries.push((
                    addrs.clone(),
                    SourceEntry {
                        source_address_prefixes: addrs.to_cidr_strings(),
                        source_port_ranges: if protocol.has_ports() {
                            Ranges::from_intervals(sports).to_port_strings()
                        } else {
                            vec!["*".to_owned()]
                        },
                        rules,
                    },
                ));
            }
        }
        entries.sort_by_key(|(a, _)| a.intervals().first().copied());
        Ok(SourceReachability {
            network_interface: info.id.clone(),
            protocol,
            port: protocol.has_ports().then_some(port),
            sources: sources.to_cidr_strings(),
            entries: entries.into_iter().map(|(_, e)| e).collect(),
        })
    }

    /// Can `from` open a flow to `to` on `protocol`/`port`? With `source_port: None` every
    /// client port 1024–65535 is considered (exactly, by elementary intervals); the path shown
    /// is for port 49152 (the start of the IANA ephemeral range, what clients typically use)
    /// unless that one is denied and another is allowed, then for the lowest allowed one.
    pub fn can_reach(
        &self,
        from: &str,
        to: &str,
        protocol: FlowProtocol,
        port: u16,
        source_port: Option<u16>,
    ) -> Result<PathReachability, QueryError> {
        let a = self.nic_info(from)?;
        let b = self.nic_info(to)?;
        let port_shown = protocol.has_ports().then_some(port);
        let mut answer = PathReachability {
            reachable: false,
            from: a.id.clone(),
            to: b.id.clone(),
            protocol,
            port: port_shown,
            source_port: None,
            hops: Vec::new(),
            blocked_at: None,
            reason: String::new(),
        };
        if a.vnet != b.vnet && !self.vnets[a.vnet].peers.contains(&b.vnet) {
            answer.reason = format!(
                "virtual networks '{}' and '{}' are not peered, so traffic between them is not routed; peer them in both directions",
                name_of(&self.vnets[a.vnet].id),
                name_of(&self.vnets[b.vnet].id)
            );
            return Ok(answer);
        }
        let out_levels = evaluation_order(Direction::Outbound);
        let in_levels = evaluation_order(Direction::Inbound);
        let candidates: Vec<u32> = if !protocol.has_ports() {
            vec![PORTLESS]
        } else if let Some(p) = source_port {
            vec![u32::from(p)]
        } else {
            let mut sets: Vec<&Ranges> = Vec::new();
            for &level in &out_levels {
                if let Some((p, _)) = self.policy(a, level, Direction::Outbound) {
                    sets.extend(p.expanded.iter().map(|r| &r.sports));
                }
            }
            for &level in &in_levels {
                if let Some((p, _)) = self.policy(b, level, Direction::Inbound) {
                    sets.extend(p.expanded.iter().map(|r| &r.sports));
                }
            }
            cells(sets.into_iter(), 1024, 65535)
                .into_iter()
                .map(|(lo, _)| lo)
                .collect()
        };
        let path = |sport: u32| {
            let key = Key {
                protocol,
                src: a.ip,
                sport,
                dst: b.ip,
                dport: if protocol.has_ports() {
                    u32::from(port)
                } else {
                    PORTLESS
                },
            };
            let mut hops = self.hops(a, Direction::Outbound, &key);
            hops.extend(self.hops(b, Direction::Inbound, &key));
            hops
        };
        let fallback = match (protocol.has_ports(), source_port) {
            (false, _) => PORTLESS,
            (true, Some(p)) => u32::from(p),
            (true, None) => 49152,
        };
        let allowed = |s: u32| path(s).iter().all(|h| h.access == Access::Allow);
        let chosen = if allowed(fallback) {
            fallback
        } else {
            candidates
                .iter()
                .copied()
                .find(|&s| allowed(s))
                .unwrap_or(fallback)
        };
        answer.hops = path(chosen);
        answer.source_port = u16::try_from(chosen).ok();
        answer.blocked_at = answer.hops.iter().position(|h| h.access == Access::Deny);
        answer.reachable = answer.blocked_at.is_none();
        let flow = format!(
            "{} {}{} -> {}{}",
            protocol_name(protocol),
            Ipv4Addr::from(a.ip),
            answer
                .source_port
                .map(|p| format!(":{p}"))
                .unwrap_or_default(),
            Ipv4Addr::from(b.ip),
            port_shown.map(|p| format!(":{p}")).unwrap_or_default(),
        );
        answer.reason = match answer.blocked_at.and_then(|i| answer.hops.get(i)) {
            None => format!("reachable: {flow} is allowed at all four hops"),
            Some(h) => format!(
                "blocked: {flow} is denied by {} of network security group '{}' ({} {}, {:?})",
                h.rule_name.as_deref().unwrap_or("no rule"),
                h.network_security_group
                    .as_ref()
                    .map_or("", |n| n.name.as_str()),
                name_of(&h.network_interface),
                match h.level {
                    Level::Subnet => "subnet",
                    Level::NetworkInterface => "network interface",
                },
                h.direction,
            ),
        };
        Ok(answer)
    }
}
