//! Classifier decisions per second: the compiled bit-vector classifier ([`Network::classify`])
//! against a naive first-match linear scan over the same expanded rules ([`Network::scan`]),
//! side by side in one run, at 100, 1,000 and 4,000 custom rules per NSG pair.
//!
//! Workload (deterministic, seeded): one virtual network 10.0.0.0/16, a NIC 10.0.1.4 in subnet
//! 10.0.1.0/24; the subnet's NSG and the NIC's NSG each get half of the pair's rules, all
//! inbound (plus Azure's three inbound defaults each), so every decision evaluates both levels
//! (the second only when the first allows, as the dataplane does). Rules mix protocols (TCP 60%,
//! UDP 25%, `*` 10%, ICMP 5%), sources (random /8–/32 prefixes, private and public, augmented
//! lists of up to 4, and the `VirtualNetwork`/`Internet` tags), destinations (`*`, the NIC,
//! the subnet, or elsewhere), source ports (mostly `*`) and destination ports (single ports,
//! ranges, lists); 70% Allow. A rule Strata's guardrail refuses becomes a Deny. Flows are
//! inbound TCP/UDP/ICMP to the NIC: half aimed inside a random rule (a source in its source
//! set, a port in its port set), half random.
//!
//! Both algorithms must agree on every flow the scan ran; the run panics otherwise.
//! Throughput is one untimed loop over all flows (the scan over a prefix at larger sizes, so
//! the run stays short), repeated for at least 300 ms per pass, best of five passes, divided
//! by the thread's CPU time (from `/proc/thread-self/schedstat`): decisions per second per
//! core, even on a shared machine.
//!
//! Run with `cargo bench -p strata-netpol --bench classify` (`NETPOL_BENCH_SIZES=1000` for
//! one size).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark code")]

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use serde_json::{Value, json};
use strata_netpol::{
    Direction, Flow, FlowProtocol, Network, SecurityRule, Topology, validate_security_rule,
};

const SEED: u64 = 0x5354_5241_5441_0005;
const SIZES: [usize; 3] = [100, 1_000, 4_000];
const FLOWS: usize = 200_000;
const NIC_IP: u32 = 0x0a00_0104; // 10.0.1.4

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

const COMMON_PORTS: [u16; 12] = [
    80, 443, 8080, 8443, 53, 123, 3306, 5432, 6379, 9200, 25, 1433,
];

fn random_prefix(rng: &mut Rng) -> (u32, u8) {
    let len = [8u8, 12, 16, 20, 24, 24, 28, 32, 32, 32][rng.below(10) as usize];
    let base = if rng.percent(40) {
        // private: 10/8, 172.16/12, 192.168/16
        match rng.below(3) {
            0 => 0x0a00_0000 | (rng.next() as u32 & 0x00ff_ffff),
            1 => 0xac10_0000 | (rng.next() as u32 & 0x000f_ffff),
            _ => 0xc0a8_0000 | (rng.next() as u32 & 0x0000_ffff),
        }
    } else {
        rng.next() as u32
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    (base & mask, len)
}

fn cidr((addr, len): (u32, u8)) -> String {
    format!("{}/{len}", Ipv4Addr::from(addr))
}

fn port_token(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..6 => COMMON_PORTS[rng.below(COMMON_PORTS.len() as u64) as usize].to_string(),
        6..8 => rng.below(65536).to_string(),
        _ => {
            let a = 1024 + rng.below(60000);
            format!("{a}-{}", a + rng.below(2000))
        }
    }
}

/// One random inbound rule as ARM JSON.
fn random_rule(rng: &mut Rng, name: String, priority: u32) -> SecurityRule {
    let protocol = match rng.below(100) {
        0..60 => "Tcp",
        60..85 => "Udp",
        85..95 => "*",
        _ => "Icmp",
    };
    let mut r = json!({
        "name": name, "priority": priority, "direction": "Inbound",
        "access": if rng.percent(70) { "Allow" } else { "Deny" }, "protocol": protocol,
    });
    match rng.below(100) {
        0..5 => r["sourceAddressPrefix"] = json!("VirtualNetwork"),
        5..8 => r["sourceAddressPrefix"] = json!("Internet"),
        8..70 => r["sourceAddressPrefix"] = json!(cidr(random_prefix(rng))),
        _ => {
            let n = 2 + rng.below(3);
            let list: Vec<String> = (0..n).map(|_| cidr(random_prefix(rng))).collect();
            r["sourceAddressPrefixes"] = json!(list);
        }
    }
    r["destinationAddressPrefix"] = json!(match rng.below(10) {
        0..5 => "*".to_owned(),
        5..7 => "10.0.1.4".to_owned(),
        7..9 => "10.0.1.0/24".to_owned(),
        _ => cidr(random_prefix(rng)),
    });
    if protocol == "Icmp" {
        r["sourcePortRange"] = json!("*");
        r["destinationPortRange"] = json!("*");
    } else {
        r["sourcePortRange"] = json!(if rng.percent(90) {
            "*".to_owned()
        } else {
            port_token(rng)
        });
        if rng.percent(25) {
            let n = 2 + rng.below(4);
            let mut list: Vec<String> = (0..n).map(|_| port_token(rng)).collect();
            list.dedup();
            r["destinationPortRanges"] = json!(list);
        } else {
            r["destinationPortRange"] = json!(port_token(rng));
        }
    }
    let mut rule: SecurityRule = serde_json::from_value(r).unwrap();
    if validate_security_rule(&rule).is_err() {
        rule.access = strata_netpol::Access::Deny;
        validate_security_rule(&rule).unwrap();
    }
    rule
}

fn topology(rng: &mut Rng, rules_per_pair: usize) -> (Topology, Vec<SecurityRule>) {
    let mut all = Vec::new();
    let mut nsg = |id: &str, n: usize| -> Value {
        let rules: Vec<SecurityRule> = (0..n)
            .map(|i| random_rule(rng, format!("{id}-r{i}"), 100 + i as u32))
            .collect();
        all.extend(rules.iter().cloned());
        json!({ "id": id, "securityRules": rules })
    };
    let subnet_nsg = nsg("nsg-subnet", rules_per_pair / 2);
    let nic_nsg = nsg("nsg-nic", rules_per_pair - rules_per_pair / 2);
    let t = json!({
        "virtualNetworks": [{ "id": "vnet", "addressSpace": { "addressPrefixes": ["10.0.0.0/16"] },
            "subnets": [{ "name": "s", "addressPrefix": "10.0.1.0/24", "networkSecurityGroup": { "id": "nsg-subnet" } }] }],
        "networkInterfaces": [{ "id": "nic", "subnet": { "id": "vnet/subnets/s" }, "privateIpAddress": "10.0.1.4",
            "networkSecurityGroup": { "id": "nsg-nic" } }],
        "networkSecurityGroups": [subnet_nsg, nic_nsg]
    });
    (serde_json::from_value(t).unwrap(), all)
}

/// A value inside a rule's source (falls back to a random address for tags).
fn source_in(rng: &mut Rng, rule: &SecurityRule) -> u32 {
    let pick = rule
        .source_address_prefix
        .iter()
        .chain(&rule.source_address_prefixes)
        .collect::<Vec<_>>();
    let p = pick[rng.below(pick.len() as u64) as usize];
    match strata_netpol::ranges::parse_prefix(p) {
        Ok(prefix) => {
            let (a, b) = prefix.bounds();
            a + (rng.next() % (u64::from(b - a) + 1)) as u32
        }
        Err(_) => rng.next() as u32,
    }
}

fn port_in(rng: &mut Rng, rule: &SecurityRule) -> u16 {
    let tokens: Vec<&String> = rule
        .destination_port_range
        .iter()
        .chain(&rule.destination_port_ranges)
        .collect();
    let t = tokens[rng.below(tokens.len() as u64) as usize];
    match t.split_once('-') {
        Some((a, b)) => {
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            (a + rng.below(b - a + 1)) as u16
        }
        None => t.parse().unwrap_or_else(|_| rng.below(65536) as u16),
    }
}

fn flows(rng: &mut Rng, rules: &[SecurityRule]) -> Vec<Flow> {
    (0..FLOWS)
        .map(|_| {
            let (protocol, src, dport) = if rng.percent(50) {
                let r = &rules[rng.below(rules.len() as u64) as usize];
                let protocol = match r.protocol {
                    strata_netpol::Protocol::Udp => FlowProtocol::Udp,
                    strata_netpol::Protocol::Icmp => FlowProtocol::Icmp,
                    _ => FlowProtocol::Tcp,
                };
                (protocol, source_in(rng, r), port_in(rng, r))
            } else {
                let protocol = match rng.below(10) {
                    0..6 => FlowProtocol::Tcp,
                    6..9 => FlowProtocol::Udp,
                    _ => FlowProtocol::Icmp,
                };
                let port = if rng.percent(50) {
                    COMMON_PORTS[rng.below(COMMON_PORTS.len() as u64) as usize]
                } else {
                    rng.below(65536) as u16
                };
                (protocol, rng.next() as u32, port)
            };
            Flow::new(
                Direction::Inbound,
                protocol,
                SocketAddrV4::new(Ipv4Addr::from(NIC_IP), dport),
                SocketAddrV4::new(Ipv4Addr::from(src), 49152 + rng.below(16384) as u16),
            )
        })
        .collect()
}

/// This thread's time on a CPU, in nanoseconds (`/proc/thread-self/schedstat`), so that the
/// rate is per core even when other processes share the machine; `None` off Linux.
fn cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Decisions per second of CPU time over `flows` (wall-clock time where CPU time is not
/// available): the flows are decided over and over for at least 300 ms per pass (the kernel
/// accounts CPU time in scheduler ticks), best of five passes.
fn throughput(flows: &[Flow], mut decide: impl FnMut(&Flow) -> bool) -> f64 {
    let mut best: f64 = 0.0;
    for _ in 0..5 {
        let cpu = cpu_ns();
        let start = Instant::now();
        let mut allowed = 0usize;
        let mut decided = 0usize;
        while start.elapsed().as_millis() < 300 {
            for f in flows {
                allowed += usize::from(decide(black_box(f)));
            }
            decided += flows.len();
        }
        black_box(allowed);
        let wall = start.elapsed().as_secs_f64();
        let secs = match (cpu, cpu_ns()) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => wall,
        };
        best = best.max(decided as f64 / secs);
    }
    best
}

fn main() {
    let mut rng = Rng(SEED);
    println!(
        "{:>6} {:>10} {:>9} {:>14} {:>10} {:>14} {:>10} {:>9} {:>8}",
        "rules",
        "compile",
        "memory",
        "classify/s",
        "ns/dec",
        "scan/s",
        "ns/dec",
        "speedup",
        "allowed"
    );
    let mut rows = Vec::new();
    // `NETPOL_BENCH_SIZES=1000,4000` runs only those sizes.
    let sizes: Vec<usize> = std::env::var("NETPOL_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| SIZES.to_vec());
    for size in sizes {
        let (topology, rules) = topology(&mut rng, size);
        let flows = flows(&mut rng, &rules);
        // Compile: the network, then the NIC's specialized tables (built on first use).
        let start = Instant::now();
        let network = Network::new(&topology).unwrap();
        let nic = network.nic("nic").unwrap();
        black_box(network.classify(nic, &flows[0]));
        let compile = start.elapsed();
        let scan_n = match size {
            0..=100 => FLOWS,
            101..=1000 => FLOWS / 4,
            _ => FLOWS / 20,
        };
        let scan_flows = &flows[..scan_n];
        for f in scan_flows {
            let (a, b) = (network.classify(nic, f), network.scan(nic, f));
            assert_eq!(a, b, "classifier and scan disagree on {f:?}");
        }
        let memory: usize = network
            .classifier_stats()
            .iter()
            .map(|(_, m)| m)
            .sum::<usize>()
            + network.specialized_bytes();
        let allowed = flows
            .iter()
            .filter(|f| network.classify(nic, f).access == strata_netpol::Access::Allow)
            .count();
        let fast = throughput(&flows, |f| {
            network.classify(nic, f).access == strata_netpol::Access::Allow
        });
        let slow = throughput(scan_flows, |f| {
            network.scan(nic, f).access == strata_netpol::Access::Allow
        });
        println!(
            "{size:>6} {:>8.1}ms {:>6.0}KiB {fast:>14.0} {:>10.1} {slow:>14.0} {:>10.1} {:>8.1}× {:>7.1}%",
            compile.as_secs_f64() * 1e3,
            memory as f64 / 1024.0,
            1e9 / fast,
            1e9 / slow,
            fast / slow,
            100.0 * allowed as f64 / flows.len() as f64
        );
        rows.push((size, fast, slow));
    }
    println!();
    println!(
        "classifier and scan agree on every flow the scan ran ({FLOWS} flows per size; the scan \
         over the first {FLOWS}, {}, {})",
        FLOWS / 4,
        FLOWS / 20
    );
    let at_1000 = rows
        .iter()
        .find(|r| r.0 == 1_000)
        .map_or(0.0, |r| r.1 / r.2);
    let min_rate = rows.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
    println!(
        "target: ≥ 10× the scan at 1,000 rules ({at_1000:.1}×): {}; ≥ 20 M decisions/s/core \
         (slowest size {:.1} M/s): {}",
        if at_1000 >= 10.0 { "met" } else { "MISSED" },
        min_rate / 1e6,
        if min_rate >= 20e6 { "met" } else { "MISSED" }
    );
}
