//! Property tests:
//! - the compiled classifier gives the same decision as the naive first-match scan on random
//!   NSG pairs (tags, ASGs, augmented prefixes and port lists, every protocol) and flows;
//! - `sources_reaching` lists a source/port exactly when flow verify allows it;
//! - `can_reach` agrees with flow verify at both NICs;
//! - the rule/NSG JSON parser and validation never panic, and what validates round-trips.

use std::net::{Ipv4Addr, SocketAddrV4};

use proptest::prelude::*;
use serde_json::{Value, json};
use strata_netpol::ranges::{Ranges, parse_prefix};
use strata_netpol::{
    Access, Direction, Flow, FlowProtocol, Network, NetworkSecurityGroup, SecurityRule, Topology,
    validate_network_security_group, validate_security_rule,
};

const PREFIXES: &[&str] = &[
    "10.0.0.0/16",
    "10.0.1.0/24",
    "10.0.1.4/32",
    "10.0.1.0/25",
    "10.0.1.4/31",
    "10.1.0.0/16",
    "10.1.1.4",
    "10.0.0.0/8",
    "8.8.8.0/24",
    "8.8.8.8",
    "0.0.0.0/1",
    "128.0.0.0/2",
    "192.168.0.0/16",
    "81.2.69.0/24",
    "168.63.129.16",
    "0.0.0.0/0",
];
const PORTS: &[&str] = &[
    "22",
    "80",
    "443",
    "1000-2000",
    "1500-1600",
    "0-100",
    "65535",
    "53",
    "0-65535",
    "5985-5986",
];
const PROTOCOLS: &[&str] = &["Tcp", "Udp", "Icmp", "Esp", "Ah", "*"];

fn side() -> impl Strategy<Value = (Option<String>, Vec<String>, Vec<Value>)> {
    prop_oneof![
        Just((Some("*".to_owned()), vec![], vec![])),
        prop::sample::select(vec!["VirtualNetwork", "Internet", "AzureLoadBalancer"])
            .prop_map(|t| (Some(t.to_owned()), vec![], vec![])),
        prop::sample::select(PREFIXES).prop_map(|p| (Some(p.to_owned()), vec![], vec![])),
        prop::sample::subsequence(PREFIXES, 1..4).prop_map(|ps| (
            None,
            ps.iter().map(|p| (*p).to_owned()).collect(),
            vec![]
        )),
        prop::sample::subsequence(vec!["asg-a", "asg-b"], 1..3).prop_map(|a| (
            None,
            vec![],
            a.iter().map(|id| json!({ "id": id })).collect()
        )),
    ]
}

fn ports() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        Just(vec!["*".to_owned()]),
        prop::sample::subsequence(PORTS, 1..4)
            .prop_map(|ps| ps.iter().map(|p| (*p).to_owned()).collect()),
    ]
}

/// A random rule as ARM JSON; the caller fixes its name and priority.
fn rule_json() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(PROTOCOLS),
        any::<bool>(),
        any::<bool>(),
        side(),
        side(),
        ports(),
        ports(),
    )
        .prop_map(|(protocol, inbound, allow, src, dst, sports, dports)| {
            let portless = matches!(protocol, "Icmp" | "Esp" | "Ah");
            let mut r = json!({
                "name": "r", "priority": 100, "protocol": protocol,
                "direction": if inbound { "Inbound" } else { "Outbound" },
                "access": if allow { "Allow" } else { "Deny" },
            });
            let mut put_side =
                |prefix: &str, (one, many, asgs): (Option<String>, Vec<String>, Vec<Value>)| {
                    if let Some(one) = one {
                        r[format!("{prefix}AddressPrefix")] = json!(one);
                    }
                    if !many.is_empty() {
                        r[format!("{prefix}AddressPrefixes")] = json!(many);
                    }
                    if !asgs.is_empty() {
                        r[format!("{prefix}ApplicationSecurityGroups")] = json!(asgs);
                    }
                };
            put_side("source", src);
            put_side("destination", dst);
            for (field, list) in [
                ("sourcePortRange", sports),
                ("destinationPortRange", dports),
            ] {
                if portless || list.len() == 1 {
                    r[field] = json!(if portless { "*" } else { list[0].as_str() });
                } else {
                    r[format!("{field}s")] = json!(list);
                }
            }
            r
        })
}

/// A random NSG: up to `max` rules with distinct priorities in shuffled order; a rule the
/// guardrail refuses becomes a Deny.
fn nsg(id: &'static str, max: usize) -> impl Strategy<Value = Value> {
    prop::collection::vec(rule_json(), 0..max)
        .prop_flat_map(|rules| {
            let n = rules.len();
            (Just(rules), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        })
        .prop_map(move |(rules, order)| {
            let rules: Vec<Value> = rules
                .into_iter()
                .zip(order)
                .enumerate()
                .map(|(i, (mut r, slot))| {
                    r["name"] = json!(format!("r{i}"));
                    r["priority"] = json!(100 + 7 * slot as u32);
                    let parsed: SecurityRule = serde_json::from_value(r.clone()).unwrap();
                    if validate_security_rule(&parsed).is_err() {
                        r["access"] = json!("Deny");
                    }
                    r
                })
                .collect();
            json!({ "id": id, "securityRules": rules })
        })
}

/// Two virtual networks (peered both ways, one way, or not), a subnet NSG and a NIC NSG
/// (either may be missing), NICs n1/n2 in vnet1 and n3 in vnet2, ASGs in vnet1.
fn topology(max_rules: usize) -> impl Strategy<Value = Topology> {
    (
        nsg("nsg-subnet", max_rules),
        nsg("nsg-nic", max_rules),
        any::<bool>(),
        any::<bool>(),
        0..3u8,
    )
        .prop_map(|(subnet_nsg, nic_nsg, has_subnet_nsg, has_nic_nsg, peering)| {
            let subnet_ref = if has_subnet_nsg { json!({ "id": "nsg-subnet" }) } else { Value::Null };
            let nic_ref = if has_nic_nsg { json!({ "id": "nsg-nic" }) } else { Value::Null };
            let peer = |to: &str| json!([{ "name": format!("to-{to}"), "remoteVirtualNetwork": { "id": to } }]);
            let t = json!({
                "virtualNetworks": [
                    { "id": "vnet1", "addressSpace": { "addressPrefixes": ["10.0.0.0/16"] },
                      "subnets": [{ "name": "s1", "addressPrefix": "10.0.1.0/24", "networkSecurityGroup": subnet_ref }],
                      "virtualNetworkPeerings": if peering > 0 { peer("vnet2") } else { json!([]) } },
                    { "id": "vnet2", "addressSpace": { "addressPrefixes": ["10.1.0.0/16"] },
                      "subnets": [{ "name": "s2", "addressPrefix": "10.1.1.0/24", "networkSecurityGroup": { "id": "nsg-subnet" } }],
                      "virtualNetworkPeerings": if peering > 1 { peer("vnet1") } else { json!([]) } }
                ],
                "applicationSecurityGroups": [{ "id": "asg-a" }, { "id": "asg-b" }],
                "networkInterfaces": [
                    { "id": "n1", "subnet": { "id": "vnet1/subnets/s1" }, "privateIpAddress": "10.0.1.4",
                      "networkSecurityGroup": nic_ref, "applicationSecurityGroups": [{ "id": "asg-a" }] },
                    { "id": "n2", "subnet": { "id": "vnet1/subnets/s1" }, "privateIpAddress": "10.0.1.5",
                      "networkSecurityGroup": { "id": "nsg-nic" }, "applicationSecurityGroups": [{ "id": "asg-b" }] },
                    { "id": "n3", "subnet": { "id": "vnet2/subnets/s2" }, "privateIpAddress": "10.1.1.4",
                      "networkSecurityGroup": { "id": "nsg-nic" } }
                ],
                "networkSecurityGroups": [subnet_nsg, nic_nsg]
            });
            serde_json::from_value(t).unwrap()
        })
}

/// Addresses at and around every pool prefix's edges, plus random ones.
fn address() -> impl Strategy<Value = Ipv4Addr> {
    let edges: Vec<u32> = PREFIXES
        .iter()
        .filter_map(|p| parse_prefix(p).ok())
        .flat_map(|p| {
            let (a, b) = p.bounds();
            [a.wrapping_sub(1), a, b, b.wrapping_add(1)]
        })
        .chain([0x0a00_0105, 0x0a01_0104])
        .collect();
    prop_oneof![
        3 => prop::sample::select(edges),
        1 => any::<u32>(),
    ]
    .prop_map(Ipv4Addr::from)
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => prop::sample::select(vec![0u16, 21, 22, 23, 53, 80, 100, 101, 443, 999, 1000, 1500, 1600, 1601, 2000, 2001, 5985, 5986, 65535]),
        1 => any::<u16>(),
    ]
}

fn flow(local: Ipv4Addr) -> impl Strategy<Value = Flow> {
    (
        any::<bool>(),
        prop::sample::select(FlowProtocol::ALL.to_vec()),
        port(),
        address(),
        port(),
    )
        .prop_map(move |(inbound, protocol, lport, remote, rport)| {
            Flow::new(
                if inbound {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                },
                protocol,
                SocketAddrV4::new(local, lport),
                SocketAddrV4::new(remote, rport),
            )
        })
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn classifier_matches_linear_scan(
        t in topology(40),
        flows in prop::collection::vec(flow(Ipv4Addr::new(10, 0, 1, 4)), 64),
        elsewhere in prop::collection::vec((address(), flow(Ipv4Addr::new(10, 0, 1, 4))), 8),
    ) {
        let network = Network::new(&t).unwrap();
        let nic = network.nic("n1").unwrap();
        for f in &flows {
            let fast = network.classify(nic, f);
            let slow = network.scan(nic, f);
            prop_assert_eq!(fast, slow, "{:?}", f);
            // flow verify (both levels, with names) agrees on access.
            let v = network.flow_verify("n1", f).unwrap();
            prop_assert_eq!(v.access, fast.access);
        }
        // A local address other than the NIC's takes the unspecialized classifier.
        for (local, f) in elsewhere {
            let f = Flow { local: SocketAddrV4::new(local, f.local.port()), ..f };
            prop_assert_eq!(network.classify(nic, &f), network.scan(nic, &f), "{:?}", f);
        }
    }

    #[test]
    fn reachable_sources_are_exactly_the_allowed_ones(
        t in topology(20),
        protocol in prop::sample::select(FlowProtocol::ALL.to_vec()),
        local_port in port(),
        samples in prop::collection::vec((address(), port()), 48),
    ) {
        let network = Network::new(&t).unwrap();
        let r = network.sources_reaching("n1", protocol, local_port).unwrap();
        let set = |cidrs: &[String]| cidrs.iter().fold(Ranges::empty(), |acc, c| acc.union(&parse_prefix(c).unwrap().to_ranges()));
        let port_set = |ranges: &[String]| ranges.iter().fold(Ranges::empty(), |acc, p| {
            let (a, b) = match p.as_str() {
                "*" => (0, 65536),
                p => match p.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => (p.parse().unwrap(), p.parse().unwrap()),
                },
            };
            acc.union(&Ranges::span(a, b))
        });
        let entries: Vec<(Ranges, Ranges)> = r.entries.iter()
            .map(|e| (set(&e.source_address_prefixes), port_set(&e.source_port_ranges)))
            .collect();
        let all = set(&r.sources);
        for (remote, remote_port) in samples {
            let f = Flow::new(Direction::Inbound, protocol, SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 4), local_port), SocketAddrV4::new(remote, remote_port));
            let allowed = network.flow_verify("n1", &f).unwrap().access == Access::Allow;
            let sport = if protocol.has_ports() { u32::from(remote_port) } else { 65536 };
            let listed = entries.iter().any(|(a, p)| a.contains(u32::from(remote)) && p.contains(sport));
            prop_assert_eq!(allowed, listed, "{:?} {:?}", f, r);
            if allowed {
                prop_assert!(all.contains(u32::from(remote)));
            }
        }
    }

    #[test]
    fn can_reach_agrees_with_flow_verify_at_both_ends(
        t in topology(20),
        protocol in prop::sample::select(FlowProtocol::ALL.to_vec()),
        to in prop::sample::select(vec!["n2", "n3"]),
        sport in port(),
        dport in port(),
    ) {
        let network = Network::new(&t).unwrap();
        let r = network.can_reach("n1", to, protocol, dport, Some(sport)).unwrap();
        let a = network.nic_address("n1").unwrap();
        let b = network.nic_address(to).unwrap();
        let out = Flow::new(Direction::Outbound, protocol, SocketAddrV4::new(a, sport), SocketAddrV4::new(b, dport));
        let inb = Flow::new(Direction::Inbound, protocol, SocketAddrV4::new(b, dport), SocketAddrV4::new(a, sport));
        let routed = to == "n2" || t.virtual_networks.iter().all(|v| !v.virtual_network_peerings.is_empty());
        let both = network.flow_verify("n1", &out).unwrap().access == Access::Allow
            && network.flow_verify(to, &inb).unwrap().access == Access::Allow;
        prop_assert_eq!(r.reachable, routed && both, "{:?}", r);
        if routed {
            prop_assert_eq!(r.hops.len(), 4);
        }
    }
}

/// Strings that look like prefixes, ports, tags, or nothing in particular.
fn token() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(PREFIXES).prop_map(|s| json!(s)),
        prop::sample::select(PORTS).prop_map(|s| json!(s)),
        prop::sample::select(vec![
            "*",
            "Internet",
            "VirtualNetwork",
            "Storage",
            "",
            "-",
            "1-",
            "10.0.0.0/",
            "/8",
            "99999",
            "1.2.3.4/32/1"
        ])
        .prop_map(|s| json!(s)),
        "[0-9./*a-zA-Z:-]{0,20}".prop_map(|s| json!(s)),
        any::<i64>().prop_map(|n| json!(n)),
        Just(Value::Null),
    ]
}

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => token(),
        1 => prop::collection::vec(token(), 0..4).prop_map(Value::Array),
        1 => prop::collection::vec(token(), 0..3).prop_map(|ids| json!(ids.into_iter().map(|id| json!({ "id": id })).collect::<Vec<_>>())),
    ]
}

const FIELDS: &[&str] = &[
    "name",
    "priority",
    "direction",
    "access",
    "protocol",
    "sourceAddressPrefix",
    "sourceAddressPrefixes",
    "sourceApplicationSecurityGroups",
    "sourcePortRange",
    "sourcePortRanges",
    "destinationAddressPrefix",
    "destinationAddressPrefixes",
    "destinationApplicationSecurityGroups",
    "destinationPortRange",
    "destinationPortRanges",
];

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn parser_and_validation_never_panic(
        valid in prop::collection::vec(rule_json(), 0..4),
        mutations in prop::collection::vec((prop::sample::select(FIELDS), field_value()), 0..4),
        bytes in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut rules = valid;
        for (i, r) in rules.iter_mut().enumerate() {
            r["name"] = json!(format!("r{i}"));
            r["priority"] = json!(100 + i);
        }
        if let Some(first) = rules.first_mut() {
            for (field, value) in mutations {
                first[field] = value;
            }
        }
        let doc = json!({ "id": "nsg", "securityRules": rules });
        if let Ok(nsg) = serde_json::from_value::<NetworkSecurityGroup>(doc)
            && validate_network_security_group(&nsg).is_ok()
        {
            let again: NetworkSecurityGroup = serde_json::from_str(&serde_json::to_string(&nsg).unwrap()).unwrap();
            prop_assert_eq!(&again, &nsg);
            let mut t = Topology::default();
            t.network_security_groups.push(nsg);
            t.application_security_groups = vec![
                strata_netpol::ApplicationSecurityGroup { id: "asg-a".into() },
                strata_netpol::ApplicationSecurityGroup { id: "asg-b".into() },
            ];
            let _ = Network::new(&t);
        }
        let _ = serde_json::from_slice::<NetworkSecurityGroup>(&bytes).map(|n| validate_network_security_group(&n));
    }
}

/// The NIC-specialized tables on shapes the random topologies rarely reach: classes with
/// hundreds of remote intervals (bucket-indexed), buckets crowded with more interval starts
/// than an index entry counts (300 /32s in one /24), buckets answering directly, and runs of
/// rules that restrict source ports ahead of one that does not. Every flow agrees with the scan.
#[test]
fn specialized_tables_agree_with_the_scan_on_large_classes() {
    let mut rules = Vec::new();
    let mut priority = 100;
    let mut push = |source: String, sport: &str, access: &str| {
        rules.push(serde_json::json!({
            "name": format!("r{priority}"), "priority": priority, "direction": "Inbound",
            "access": access, "protocol": "Tcp", "sourceAddressPrefix": source,
            "sourcePortRange": sport, "destinationAddressPrefix": "*",
            "destinationPortRange": "443",
        }));
        priority += 1;
    };
    for i in 0..300u32 {
        let access = if i % 3 == 0 { "Deny" } else { "Allow" };
        push(
            format!("198.51.{}.{}/32", 100 + i / 256, i % 256),
            "*",
            access,
        );
    }
    for i in 0..200u32 {
        let (a, b) = (i.wrapping_mul(2_654_435_761), i % 16 + 16);
        let prefix = Ipv4Addr::from(a & (u32::MAX << (32 - b)));
        let sport = if i % 4 == 0 { "1000-2000" } else { "*" };
        push(
            format!("{prefix}/{b}"),
            sport,
            if i % 2 == 0 { "Allow" } else { "Deny" },
        );
    }
    let t: Topology = serde_json::from_value(serde_json::json!({
        "virtualNetworks": [{ "id": "v", "addressSpace": { "addressPrefixes": ["10.0.0.0/16"] },
            "subnets": [{ "name": "s", "addressPrefix": "10.0.1.0/24" }] }],
        "networkInterfaces": [{ "id": "n1", "subnet": { "id": "v/subnets/s" },
            "privateIpAddress": "10.0.1.4", "networkSecurityGroup": { "id": "g" } }],
        "networkSecurityGroups": [{ "id": "g", "securityRules": rules }],
    }))
    .unwrap();
    let network = Network::new(&t).unwrap();
    let nic = network.nic("n1").unwrap();
    let mut x: u64 = 0x9e37_79b9;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..20_000u32 {
        let remote = match i % 3 {
            0 => 0xc633_6400 | (next() as u32 & 0x1ff),
            _ => next() as u32,
        };
        let sport = [999, 1000, 1500, 2000, 2001, 40000][(next() % 6) as usize];
        let dport = [443, 80][(next() % 2) as usize];
        let f = Flow::new(
            Direction::Inbound,
            FlowProtocol::Tcp,
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 4), dport),
            SocketAddrV4::new(Ipv4Addr::from(remote), sport),
        );
        assert_eq!(network.classify(nic, &f), network.scan(nic, &f), "{f:?}");
    }
}

/// Bucket-index spans (an answer inside `[s, s + 2^m)` of a bucket, another outside): /32s and
/// small prefixes spread over the address space so that most buckets hold one interval start
/// or one hole, some with source-port lists as answers, probed at and around every boundary.
#[test]
fn specialized_spans_agree_with_the_scan_at_every_boundary() {
    let mut rules = Vec::new();
    let mut edges = Vec::new();
    for i in 0..400u32 {
        let len = [32u32, 32, 31, 30, 28, 24, 20, 16][(i % 8) as usize];
        let base = i.wrapping_mul(2_654_435_761) & (u32::MAX << (32 - len));
        let end = base | !(u32::MAX << (32 - len));
        edges.extend([
            base.wrapping_sub(1),
            base,
            base.wrapping_add(1),
            end,
            end.wrapping_add(1),
        ]);
        let sport = if i % 5 == 0 { "1000-2000" } else { "*" };
        rules.push(serde_json::json!({
            "name": format!("r{i}"), "priority": 100 + i, "direction": "Inbound",
            "access": if i % 3 == 0 { "Deny" } else { "Allow" }, "protocol": "Tcp",
            "sourceAddressPrefix": format!("{}/{len}", Ipv4Addr::from(base)),
            "sourcePortRange": sport, "destinationAddressPrefix": "*",
            "destinationPortRange": "443",
        }));
    }
    let t: Topology = serde_json::from_value(serde_json::json!({
        "virtualNetworks": [{ "id": "v", "addressSpace": { "addressPrefixes": ["10.0.0.0/16"] },
            "subnets": [{ "name": "s", "addressPrefix": "10.0.1.0/24" }] }],
        "networkInterfaces": [{ "id": "n1", "subnet": { "id": "v/subnets/s" },
            "privateIpAddress": "10.0.1.4", "networkSecurityGroup": { "id": "g" } }],
        "networkSecurityGroups": [{ "id": "g", "securityRules": rules }],
    }))
    .unwrap();
    let network = Network::new(&t).unwrap();
    let nic = network.nic("n1").unwrap();
    for &remote in &edges {
        for sport in [999, 1500, 40000] {
            let f = Flow::new(
                Direction::Inbound,
                FlowProtocol::Tcp,
                SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 4), 443),
                SocketAddrV4::new(Ipv4Addr::from(remote), sport),
            );
            assert_eq!(network.classify(nic, &f), network.scan(nic, &f), "{f:?}");
        }
    }
}
