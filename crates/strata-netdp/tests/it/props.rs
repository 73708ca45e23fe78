//! The engine and the dataplane must agree: random NSGs (tags, ASGs, augmented prefixes, port
//! ranges and lists, every protocol, allow and deny, both levels) on a lab of fixed VMs and
//! addresses whose placement is redrawn every case (which NICs carry which ASGs, which NSG —
//! own, shared or none — each NIC and subnet has, which networks are peered, both ways, one
//! way or not), and random TCP and UDP flows between VMs, and between VMs and an "internet"
//! namespace behind the uplink, each sent as a real packet. Every delivered/dropped result is
//! compared with `strata_netpol::Network::flow_verify` at both ends and, between NICs, with
//! `can_reach` (whose answer also says whether the two networks are routed at all).
//!
//! A seeded generator, so that a failure names its seed: `STRATA_NETDP_SEED=<n>` replays it,
//! `STRATA_NETDP_CASES=5000` runs longer. The default, 300 cases of 12 flows (3,600 real
//! flows), took 74 s on the 2-core development machine under a load of about 2. Each case
//! applies its topology and NSGs (one nft transaction), flushes the host's conntrack table (a
//! new rule set is judged on new flows), and sends its flows in parallel. A flow the engine
//! allows but that was not delivered within the short timeout is sent again with a long one
//! before it counts as a disagreement, so a slow machine does not fail the test; a delivered
//! flow is never retried.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strata_netpol::{Access, Direction, Flow, FlowProtocol, Network};

use crate::support::{Lab, Outcome, sa, tcp, topology, udp};

const SHORT: Duration = Duration::from_millis(100);
const LONG: Duration = Duration::from_secs(2);
const FLOWS_PER_CASE: usize = 12;

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const NSGS: [&str; 8] = [
    "nsg-s1", "nsg-s2", "nsg-a", "nsg-b", "nsg-c", "nsg-d", "nsg-e", "nsg-s4",
];
const NICS: [&str; 5] = ["a", "b", "c", "d", "e"];
const EXTERNAL: [Ipv4Addr; 2] = [Ipv4Addr::new(81, 2, 69, 10), Ipv4Addr::new(8, 8, 8, 8)];
const PREFIXES: &[&str] = &[
    "10.0.0.0/16",
    "10.0.1.0/24",
    "10.0.1.4/32",
    "10.0.1.5",
    "10.0.2.0/24",
    "10.0.1.0/25",
    "10.1.0.0/16",
    "10.1.1.4",
    "10.2.0.0/16",
    "10.0.0.0/8",
    "81.2.69.0/24",
    "81.2.69.10",
    "8.8.8.8",
    "0.0.0.0/1",
    "128.0.0.0/1",
];
const TAGS: &[&str] = &["*", "VirtualNetwork", "Internet", "AzureLoadBalancer"];
const RULE_PORTS: &[&str] = &[
    "80",
    "443",
    "1000-2000",
    "1500",
    "53",
    "8080-8090",
    "40000-50000",
    "0-1023",
    "22",
];
const SOURCE_PORTS: &[u16] = &[1000, 1500, 2001, 40000, 45000, 50001, 443, 53];
const DEST_PORTS: &[u16] = &[80, 443, 1000, 1500, 1999, 53, 8080, 8085, 45000, 22];

/// vnet1 10.0.0.0/16 <-peered-> vnet2 10.1.0.0/16; vnet3 10.2.0.0/16 alone.
/// a 10.0.1.4, b 10.0.1.5 (subnet s1), c 10.0.2.4 (s2), d 10.1.1.4 (s3, no subnet NSG),
/// e 10.2.1.4 (s4). ASGs: asg-x {a, c}, asg-y {b}. The lab starts from this; each case
/// redraws the ASGs, NSG placement and peerings (`randomize_placement`).
fn base() -> Value {
    let nic = |id: &str, subnet: &str, ip: &str, asgs: &[&str]| {
        json!({ "id": id, "subnet": { "id": subnet }, "privateIpAddress": ip,
                "networkSecurityGroup": { "id": format!("nsg-{id}") },
                "applicationSecurityGroups": asgs.iter().map(|a| json!({ "id": a })).collect::<Vec<_>>() })
    };
    json!({
      "virtualNetworks": [
        { "id": "vnet1", "addressSpace": { "addressPrefixes": ["10.0.0.0/16"] },
          "subnets": [
            { "name": "s1", "addressPrefix": "10.0.1.0/24", "networkSecurityGroup": { "id": "nsg-s1" } },
            { "name": "s2", "addressPrefix": "10.0.2.0/24", "networkSecurityGroup": { "id": "nsg-s2" } } ],
          "virtualNetworkPeerings": [ { "name": "p", "remoteVirtualNetwork": { "id": "vnet2" } } ] },
        { "id": "vnet2", "addressSpace": { "addressPrefixes": ["10.1.0.0/16"] },
          "subnets": [ { "name": "s3", "addressPrefix": "10.1.1.0/24" } ],
          "virtualNetworkPeerings": [ { "name": "p", "remoteVirtualNetwork": { "id": "vnet1" } } ] },
        { "id": "vnet3", "addressSpace": { "addressPrefixes": ["10.2.0.0/16"] },
          "subnets": [ { "name": "s4", "addressPrefix": "10.2.1.0/24", "networkSecurityGroup": { "id": "nsg-s4" } } ] }
      ],
      "applicationSecurityGroups": [ { "id": "asg-x" }, { "id": "asg-y" } ],
      "networkInterfaces": [
        nic("a", "vnet1/subnets/s1", "10.0.1.4", &["asg-x"]),
        nic("b", "vnet1/subnets/s1", "10.0.1.5", &["asg-y"]),
        nic("c", "vnet1/subnets/s2", "10.0.2.4", &["asg-x"]),
        nic("d", "vnet2/subnets/s3", "10.1.1.4", &[]),
        nic("e", "vnet3/subnets/s4", "10.2.1.4", &[])
      ],
      "networkSecurityGroups": NSGS.iter().map(|n| json!({ "id": n, "securityRules": [] })).collect::<Vec<_>>()
    })
}

/// Redraws the cheap parts of `base()` (all within the lab's fixed VMs and addresses): which
/// NICs carry which ASGs, which NSG (if any) each NIC and subnet has — an NSG may be shared —
/// and which virtual networks are peered, in both directions, one only, or not at all.
fn randomize_placement(rng: &mut Rng, t: &mut Value) {
    // An ASG's members must share a virtual network (else the draft is invalid): each ASG
    // gets a home network, and NICs there join it by chance.
    let homes = [
        (
            "asg-x",
            *rng.pick(&["vnet1", "vnet1", "vnet1", "vnet2", "vnet3"]),
        ),
        ("asg-y", *rng.pick(&["vnet1", "vnet1", "vnet2", "vnet3"])),
    ];
    for nic in t["networkInterfaces"].as_array_mut().unwrap() {
        let id = nic["id"].as_str().unwrap().to_owned();
        let vnet = nic["subnet"]["id"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let asgs: Vec<Value> = homes
            .iter()
            .filter(|(_, home)| *home == vnet && rng.chance(50))
            .map(|(a, _)| json!({ "id": a }))
            .collect();
        nic["applicationSecurityGroups"] = json!(asgs);
        let roll = rng.below(100);
        let nsg = if roll < 70 {
            Some(format!("nsg-{id}"))
        } else if roll < 85 {
            Some(format!("nsg-{}", rng.pick(&NICS)))
        } else {
            None
        };
        set_nsg(nic, nsg);
    }
    for vnet in t["virtualNetworks"].as_array_mut().unwrap() {
        for subnet in vnet["subnets"].as_array_mut().unwrap() {
            let own = match subnet["name"].as_str().unwrap() {
                "s3" => "nsg-s2".to_owned(), // s3 has no NSG of its own: it may share s2's
                other => format!("nsg-{other}"),
            };
            let nsg = rng.chance(65).then_some(own);
            set_nsg(subnet, nsg);
        }
        vnet["virtualNetworkPeerings"] = json!([]);
    }
    for (i, j) in [(0, 1), (1, 2), (0, 2)] {
        let roll = rng.below(100);
        let sides: &[(usize, usize)] = if roll < 45 {
            &[(i, j), (j, i)]
        } else if roll < 60 {
            &[(i, j)]
        } else if roll < 75 {
            &[(j, i)]
        } else {
            &[]
        };
        for &(from, to) in sides {
            let remote = t["virtualNetworks"][to]["id"].clone();
            t["virtualNetworks"][from]["virtualNetworkPeerings"]
                .as_array_mut()
                .unwrap()
                .push(json!({ "name": format!("to-{}", remote.as_str().unwrap()),
                              "remoteVirtualNetwork": { "id": remote } }));
        }
    }
}

fn set_nsg(at: &mut Value, nsg: Option<String>) {
    let at = at.as_object_mut().unwrap();
    match nsg {
        Some(id) => at.insert("networkSecurityGroup".into(), json!({ "id": id })),
        None => at.remove("networkSecurityGroup"),
    };
}

fn side(rng: &mut Rng, rule: &mut Value, which: &str) {
    let roll = rng.below(100);
    if roll < 35 {
        rule[format!("{which}AddressPrefix")] = json!(rng.pick(TAGS));
    } else if roll < 70 {
        rule[format!("{which}AddressPrefix")] = json!(rng.pick(PREFIXES));
    } else if roll < 85 {
        let n = 2 + rng.below(3);
        let set: BTreeSet<&str> = (0..n).map(|_| *rng.pick(PREFIXES)).collect();
        rule[format!("{which}AddressPrefixes")] = json!(set);
    } else {
        let asgs: &[&[&str]] = &[&["asg-x"], &["asg-y"], &["asg-x", "asg-y"]];
        let ids: Vec<Value> = rng.pick(asgs).iter().map(|a| json!({ "id": a })).collect();
        rule[format!("{which}ApplicationSecurityGroups")] = json!(ids);
    }
}

fn ports(rng: &mut Rng, rule: &mut Value, which: &str, any_percent: usize) {
    if rng.chance(any_percent) {
        rule[format!("{which}PortRange")] = json!("*");
    } else if rng.chance(70) {
        rule[format!("{which}PortRange")] = json!(rng.pick(RULE_PORTS));
    } else {
        let n = 2 + rng.below(2);
        let set: BTreeSet<&str> = (0..n).map(|_| *rng.pick(RULE_PORTS)).collect();
        rule[format!("{which}PortRanges")] = json!(set);
    }
}

fn random_nsg(rng: &mut Rng) -> Vec<Value> {
    let count = rng.below(6);
    let mut used: BTreeSet<(bool, u64)> = BTreeSet::new();
    let mut rules = Vec::new();
    for i in 0..count {
        let inbound = rng.chance(60);
        let priority = loop {
            let p = 100 + rng.below(40) as u64 * 100;
            if used.insert((inbound, p)) {
                break p;
            }
        };
        let protocol = *rng.pick(&["Tcp", "Tcp", "Tcp", "Udp", "Udp", "*", "*", "Icmp", "Esp"]);
        let mut rule = json!({
            "name": format!("r{i}"), "priority": priority,
            "direction": if inbound { "Inbound" } else { "Outbound" },
            "access": if rng.chance(55) { "Allow" } else { "Deny" },
            "protocol": protocol,
        });
        side(rng, &mut rule, "source");
        side(rng, &mut rule, "destination");
        if matches!(protocol, "Tcp" | "Udp" | "*") {
            ports(rng, &mut rule, "source", 80);
            ports(rng, &mut rule, "destination", 30);
        } else {
            rule["sourcePortRange"] = json!("*");
            rule["destinationPortRange"] = json!("*");
        }
        rules.push(rule);
    }
    rules
}

/// One end of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Nic(&'static str),
    External(Ipv4Addr),
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    from: End,
    to: End,
    protocol: FlowProtocol,
    sport: u16,
    dport: u16,
}

fn random_flows(rng: &mut Rng) -> Vec<Probe> {
    let mut flows: Vec<Probe> = Vec::new();
    // (end, protocol, port) in use: a port serves one flow per case, as client or server.
    let mut used = BTreeSet::new();
    while flows.len() < FLOWS_PER_CASE {
        let end = |rng: &mut Rng| {
            if rng.chance(20) {
                End::External(*rng.pick(&EXTERNAL))
            } else {
                End::Nic(NICS[rng.below(NICS.len())])
            }
        };
        let (from, to) = (end(rng), end(rng));
        let both_external = matches!((from, to), (End::External(_), End::External(_)));
        if from == to || both_external {
            continue;
        }
        let protocol = if rng.chance(60) {
            FlowProtocol::Tcp
        } else {
            FlowProtocol::Udp
        };
        let (sport, dport) = (*rng.pick(SOURCE_PORTS), *rng.pick(DEST_PORTS));
        let key = |e: End| format!("{e:?}");
        let tcp = protocol == FlowProtocol::Tcp;
        if used.contains(&(key(from), tcp, sport)) || used.contains(&(key(to), tcp, dport)) {
            continue;
        }
        used.insert((key(from), tcp, sport));
        used.insert((key(to), tcp, dport));
        flows.push(Probe {
            from,
            to,
            protocol,
            sport,
            dport,
        });
    }
    flows
}

struct Expected {
    delivered: bool,
    why: String,
}

fn expected(network: &Network, lab: &Lab, p: &Probe) -> Expected {
    let addr = |e: End| match e {
        End::Nic(n) => lab.ip(n),
        End::External(ip) => ip,
    };
    let (src, dst) = (sa(addr(p.from), p.sport), sa(addr(p.to), p.dport));
    let mut why = String::new();
    let mut delivered = true;
    if let End::Nic(n) = p.from {
        let v = network
            .flow_verify(n, &Flow::new(Direction::Outbound, p.protocol, src, dst))
            .unwrap();
        let _ = writeln!(
            why,
            "  out at {n}: {:?} {:?} — {}",
            v.access, v.rule_name, v.reason
        );
        delivered &= v.access == Access::Allow;
    }
    if let End::Nic(n) = p.to {
        let v = network
            .flow_verify(n, &Flow::new(Direction::Inbound, p.protocol, dst, src))
            .unwrap();
        let _ = writeln!(
            why,
            "  in at {n}: {:?} {:?} — {}",
            v.access, v.rule_name, v.reason
        );
        delivered &= v.access == Access::Allow;
    }
    if let (End::Nic(a), End::Nic(b)) = (p.from, p.to) {
        let path = network
            .can_reach(a, b, p.protocol, p.dport, Some(p.sport))
            .unwrap();
        let _ = writeln!(why, "  can_reach: {} — {}", path.reachable, path.reason);
        // Routing is the engine's word too: no hops means the two networks are not connected
        // (not peered in both directions); with hops, can_reach and flow_verify must agree.
        let routed = !path.hops.is_empty();
        let _ = writeln!(why, "  routed: {routed}");
        if routed {
            assert_eq!(
                path.reachable, delivered,
                "can_reach vs flow_verify:\n{why}"
            );
        } else {
            assert!(!path.reachable, "reachable without a route:\n{why}");
        }
        delivered &= routed;
    }
    Expected { delivered, why }
}

fn send(lab: &Lab, p: &Probe, timeout: Duration) -> Outcome {
    let ns = |e: End| match e {
        End::Nic(n) => lab.vm(n).to_owned(),
        End::External(_) => lab.internet.as_ref().unwrap().name.clone(),
    };
    let addr = |e: End| match e {
        End::Nic(n) => lab.ip(n),
        End::External(ip) => ip,
    };
    let (src, dst) = (sa(addr(p.from), p.sport), sa(addr(p.to), p.dport));
    match p.protocol {
        FlowProtocol::Tcp => tcp(&ns(p.from), src, &ns(p.to), dst, timeout),
        _ => udp(&ns(p.from), src, &ns(p.to), dst, timeout),
    }
}

#[test]
fn engine_and_dataplane_agree_on_random_nsgs_and_real_packets() {
    let cases: usize = std::env::var("STRATA_NETDP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("STRATA_NETDP_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_0005);
    let mut rng = Rng(seed);
    // Any panic (a disagreement, the engine's own cross-check, the lab) names the seed.
    struct SeedOnPanic(u64);
    impl Drop for SeedOnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("failed with STRATA_NETDP_SEED={}", self.0);
            }
        }
    }
    let _seed = SeedOnPanic(seed);
    let mut lab = Lab::new(topology(base()));
    lab.add_internet(&EXTERNAL);
    let started = Instant::now();
    let (mut flows_sent, mut delivered, mut retried, mut invalid) = (0, 0, 0, 0);
    let mut case = 0;
    while case < cases {
        let mut t = base();
        randomize_placement(&mut rng, &mut t);
        for (i, _) in NSGS.iter().enumerate() {
            t["networkSecurityGroups"][i]["securityRules"] = json!(random_nsg(&mut rng));
        }
        let topo = topology(t.clone());
        let Ok(network) = Network::new(&topo) else {
            invalid += 1; // e.g. the guardrail refused a rule: draw another case
            continue;
        };
        lab.update(topo);
        lab.flush_all_conntrack();
        let flows = random_flows(&mut rng);
        let outcomes: Vec<Outcome> = std::thread::scope(|s| {
            let handles: Vec<_> = flows
                .iter()
                .map(|p| {
                    let lab = &lab;
                    s.spawn(move || send(lab, p, SHORT))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (p, mut got) in flows.iter().zip(outcomes) {
            let want = expected(&network, &lab, p);
            if want.delivered && !got.delivered() {
                retried += 1;
                lab.flush_all_conntrack();
                got = send(&lab, p, LONG);
            }
            flows_sent += 1;
            delivered += usize::from(got.delivered());
            if got.delivered() != want.delivered {
                let topology = serde_json::to_string_pretty(&t).unwrap();
                panic!(
                    "engine and dataplane disagree (seed {seed}, case {case}):\n\
                     flow {p:?}: dataplane {got:?}, engine delivered={}\n{}\n\
                     topology:\n{topology}\n\nruleset:\n{}",
                    want.delivered,
                    want.why,
                    lab.ruleset()
                );
            }
        }
        case += 1;
    }
    eprintln!(
        "{cases} cases, {flows_sent} flows ({delivered} delivered, {} dropped), {retried} re-sent, \
         {invalid} invalid drafts, {:.1} s",
        flows_sent - delivered,
        started.elapsed().as_secs_f64()
    );
}
