//! The done-when cases, each with real packets between namespaces and the engine's
//! verdict beside the dataplane's.

use std::time::Duration;

use serde_json::{Value, json};
use strata_netpol::{Access, Direction, Flow, FlowProtocol, Network};

use crate::support::{Lab, Outcome, sa, tcp, topology, udp};

const T: Duration = Duration::from_millis(400);

/// vnet1 10.0.0.0/16 (web 10.0.1.0/24, db 10.0.2.0/24) and vnet2 10.1.0.0/16 (app 10.1.1.0/24),
/// not peered; every NIC and subnet has an NSG, initially without custom rules.
fn fixture() -> Value {
    json!({
      "virtualNetworks": [
        { "id": "vnet1", "addressSpace": { "addressPrefixes": ["10.0.0.0/16"] },
          "subnets": [
            { "name": "web", "addressPrefix": "10.0.1.0/24", "networkSecurityGroup": { "id": "nsg-web" } },
            { "name": "db", "addressPrefix": "10.0.2.0/24", "networkSecurityGroup": { "id": "nsg-db" } } ] },
        { "id": "vnet2", "addressSpace": { "addressPrefixes": ["10.1.0.0/16"] },
          "subnets": [ { "name": "app", "addressPrefix": "10.1.1.0/24" } ] }
      ],
      "networkInterfaces": [
        { "id": "web1", "subnet": { "id": "vnet1/subnets/web" }, "privateIpAddress": "10.0.1.4",
          "networkSecurityGroup": { "id": "nsg-web1" } },
        { "id": "db1", "subnet": { "id": "vnet1/subnets/db" }, "privateIpAddress": "10.0.2.4",
          "networkSecurityGroup": { "id": "nsg-db1" } },
        { "id": "app1", "subnet": { "id": "vnet2/subnets/app" }, "privateIpAddress": "10.1.1.4",
          "networkSecurityGroup": { "id": "nsg-app1" } }
      ],
      "networkSecurityGroups": [
        { "id": "nsg-web", "securityRules": [] }, { "id": "nsg-db", "securityRules": [] },
        { "id": "nsg-web1", "securityRules": [] }, { "id": "nsg-db1", "securityRules": [] },
        { "id": "nsg-app1", "securityRules": [] }
      ]
    })
}

fn rule(
    name: &str,
    priority: u32,
    direction: &str,
    access: &str,
    protocol: &str,
    source: &str,
    port: &str,
) -> Value {
    json!({ "name": name, "priority": priority, "direction": direction, "access": access,
            "protocol": protocol, "sourceAddressPrefix": source, "sourcePortRange": "*",
            "destinationAddressPrefix": "*", "destinationPortRange": port })
}

fn set_rules(t: &mut Value, nsg: &str, rules: Vec<Value>) {
    let nsgs = t["networkSecurityGroups"].as_array_mut().unwrap();
    let n = nsgs.iter_mut().find(|n| n["id"] == nsg).unwrap();
    n["securityRules"] = Value::Array(rules);
}

fn peer(t: &mut Value, a: usize, b: &str) {
    t["virtualNetworks"][a]["virtualNetworkPeerings"] =
        json!([{ "name": format!("to-{b}"), "remoteVirtualNetwork": { "id": b } }]);
}

fn verdict(
    lab: &Lab,
    nic: &str,
    direction: Direction,
    proto: FlowProtocol,
    local: (std::net::Ipv4Addr, u16),
    remote: (std::net::Ipv4Addr, u16),
) -> strata_netpol::Verdict {
    let network = Network::new(&lab.topology).unwrap();
    let flow = Flow::new(
        direction,
        proto,
        sa(local.0, local.1),
        sa(remote.0, remote.1),
    );
    network.flow_verify(nic, &flow).unwrap()
}

#[test]
fn virtual_networks_cannot_reach_each_other_until_peered_both_ways() {
    let mut t = fixture();
    // Rules that would allow the flow, so only the missing route stands in its way.
    set_rules(
        &mut t,
        "nsg-web1",
        vec![rule("out-any", 100, "Outbound", "Allow", "*", "*", "*")],
    );
    set_rules(
        &mut t,
        "nsg-app1",
        vec![rule(
            "in-web",
            100,
            "Inbound",
            "Allow",
            "*",
            "10.0.0.0/16",
            "*",
        )],
    );
    let mut lab = Lab::new(topology(t.clone()));
    let (web1, app1) = (lab.ip("web1"), lab.ip("app1"));
    let probe = |lab: &Lab, port| {
        tcp(
            lab.vm("web1"),
            sa(web1, 40000 + port),
            lab.vm("app1"),
            sa(app1, port),
            T,
        )
    };
    assert!(
        !probe(&lab, 80).delivered(),
        "unpeered networks must not reach each other"
    );
    assert!(
        !udp(
            lab.vm("web1"),
            sa(web1, 40001),
            lab.vm("app1"),
            sa(app1, 53),
            T
        )
        .delivered()
    );
    let network = Network::new(&lab.topology).unwrap();
    let path = network
        .can_reach("web1", "app1", FlowProtocol::Tcp, 80, Some(40080))
        .unwrap();
    assert!(!path.reachable, "{}", path.reason);

    // One side only: still not connected (Azure's peering needs both).
    peer(&mut t, 0, "vnet2");
    lab.update(topology(t.clone()));
    assert!(
        !probe(&lab, 81).delivered(),
        "a one-sided peering must not connect"
    );

    peer(&mut t, 1, "vnet1");
    lab.update(topology(t.clone()));
    assert_eq!(
        probe(&lab, 82),
        Outcome::Delivered,
        "peered both ways, allowed by both NSGs"
    );
    assert!(
        udp(
            lab.vm("web1"),
            sa(web1, 40002),
            lab.vm("app1"),
            sa(app1, 53),
            T
        )
        .delivered()
    );
    // And the other way round needs its own rules: app1's outbound to 10.0/16 is allowed by
    // AllowVnetOutBound now, web1's inbound by AllowVnetInBound.
    assert!(
        tcp(
            lab.vm("app1"),
            sa(app1, 40003),
            lab.vm("web1"),
            sa(web1, 8080),
            T
        )
        .delivered()
    );
}

#[test]
fn no_allow_rule_for_22_drops_real_syns_and_flow_verify_names_deny_all_inbound() {
    let mut lab = Lab::new(topology(fixture()));
    let from = std::net::Ipv4Addr::new(81, 2, 69, 10);
    let internet = lab.add_internet(&[from]);
    let db1 = lab.ip("db1");
    assert_eq!(
        tcp(&internet, sa(from, 50022), lab.vm("db1"), sa(db1, 22), T),
        Outcome::Dropped
    );
    let v = verdict(
        &lab,
        "db1",
        Direction::Inbound,
        FlowProtocol::Tcp,
        (db1, 22),
        (from, 50022),
    );
    assert_eq!(v.access, Access::Deny);
    assert_eq!(
        v.rule_name.as_deref(),
        Some("defaultSecurityRules/DenyAllInBound")
    );
    // Inside the virtual network, AllowVnetInBound lets the same port through.
    let web1 = lab.ip("web1");
    assert!(
        tcp(
            lab.vm("web1"),
            sa(web1, 50023),
            lab.vm("db1"),
            sa(db1, 22),
            T
        )
        .delivered()
    );
}

#[test]
fn allow_at_priority_100_from_one_prefix_lets_exactly_that_prefix_through() {
    let mut t = fixture();
    let mut lab = Lab::new(topology(t.clone()));
    let (good, bad) = (
        std::net::Ipv4Addr::new(81, 2, 69, 10),
        std::net::Ipv4Addr::new(81, 2, 70, 10),
    );
    let internet = lab.add_internet(&[good, bad]);
    let db1 = lab.ip("db1");
    for nsg in ["nsg-db", "nsg-db1"] {
        set_rules(
            &mut t,
            nsg,
            vec![rule(
                "allow-ssh-admin",
                100,
                "Inbound",
                "Allow",
                "Tcp",
                "81.2.69.0/24",
                "22",
            )],
        );
    }
    lab.update(topology(t));
    assert_eq!(
        tcp(&internet, sa(good, 50100), lab.vm("db1"), sa(db1, 22), T),
        Outcome::Delivered
    );
    assert_eq!(
        tcp(&internet, sa(bad, 50101), lab.vm("db1"), sa(db1, 22), T),
        Outcome::Dropped
    );
    assert_eq!(
        tcp(&internet, sa(good, 50102), lab.vm("db1"), sa(db1, 23), T),
        Outcome::Dropped,
        "only port 22"
    );
    let v = verdict(
        &lab,
        "db1",
        Direction::Inbound,
        FlowProtocol::Tcp,
        (db1, 22),
        (good, 50100),
    );
    assert_eq!(
        (v.access, v.rule_name.as_deref()),
        (Access::Allow, Some("securityRules/allow-ssh-admin"))
    );
    let v = verdict(
        &lab,
        "db1",
        Direction::Inbound,
        FlowProtocol::Tcp,
        (db1, 22),
        (bad, 50101),
    );
    assert_eq!(
        v.rule_name.as_deref(),
        Some("defaultSecurityRules/DenyAllInBound")
    );
}

#[test]
fn subnet_deny_and_nic_allow_still_denies() {
    let mut t = fixture();
    set_rules(
        &mut t,
        "nsg-db",
        vec![rule(
            "deny-pg",
            100,
            "Inbound",
            "Deny",
            "Tcp",
            "VirtualNetwork",
            "5432",
        )],
    );
    set_rules(
        &mut t,
        "nsg-db1",
        vec![rule(
            "allow-pg",
            100,
            "Inbound",
            "Allow",
            "Tcp",
            "10.0.1.0/24",
            "5432",
        )],
    );
    let lab = Lab::new(topology(t));
    let (web1, db1) = (lab.ip("web1"), lab.ip("db1"));
    assert_eq!(
        tcp(
            lab.vm("web1"),
            sa(web1, 50200),
            lab.vm("db1"),
            sa(db1, 5432),
            T
        ),
        Outcome::Dropped
    );
    let v = verdict(
        &lab,
        "db1",
        Direction::Inbound,
        FlowProtocol::Tcp,
        (db1, 5432),
        (web1, 50200),
    );
    assert_eq!(
        (v.access, v.rule_name.as_deref()),
        (Access::Deny, Some("securityRules/deny-pg"))
    );
    // The subnet's deny covers only 5432: another port passes both levels.
    assert!(
        tcp(
            lab.vm("web1"),
            sa(web1, 50201),
            lab.vm("db1"),
            sa(db1, 5433),
            T
        )
        .delivered()
    );
}

#[test]
fn return_traffic_of_an_allowed_outbound_flow_passes() {
    let mut t = fixture();
    // web1 may open flows to db1, but nothing may open a flow to web1 (inbound deny-all at
    // both levels, above AllowVnetInBound).
    for nsg in ["nsg-web", "nsg-web1"] {
        set_rules(
            &mut t,
            nsg,
            vec![rule("deny-in", 100, "Inbound", "Deny", "*", "*", "*")],
        );
    }
    let lab = Lab::new(topology(t));
    let (web1, db1) = (lab.ip("web1"), lab.ip("db1"));
    // TCP: the SYN-ACK and the data back are return traffic.
    let listener = crate::support::tcp_listener(lab.vm("db1"), sa(db1, 5000));
    let (outcome, client) =
        crate::support::tcp_connect(lab.vm("web1"), sa(web1, 50300), sa(db1, 5000), T);
    assert_eq!(outcome, Outcome::Delivered);
    let (server, _) = listener.accept().unwrap();
    let mut client: std::net::TcpStream = client.unwrap().into();
    let mut server: std::net::TcpStream = server.into();
    use std::io::{Read, Write};
    server.write_all(b"pong").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    // UDP: `udp` asserts the reply arrives.
    assert!(
        udp(
            lab.vm("web1"),
            sa(web1, 50301),
            lab.vm("db1"),
            sa(db1, 53),
            T
        )
        .delivered()
    );
    // The same ports opened from the other side are new flows, and denied.
    assert_eq!(
        tcp(
            lab.vm("db1"),
            sa(db1, 5001),
            lab.vm("web1"),
            sa(web1, 50300),
            T
        ),
        Outcome::Dropped
    );
    let v = verdict(
        &lab,
        "web1",
        Direction::Inbound,
        FlowProtocol::Tcp,
        (web1, 50300),
        (db1, 5000),
    );
    assert_eq!(v.access, Access::Deny);
    let mut established = Flow::new(
        Direction::Inbound,
        FlowProtocol::Tcp,
        sa(web1, 50300),
        sa(db1, 5000),
    );
    established.established = true;
    let network = Network::new(&lab.topology).unwrap();
    assert_eq!(
        network.flow_verify("web1", &established).unwrap().access,
        Access::Allow
    );
}

/// "Reachability lists exactly the sources the packets prove": `sources_reaching` for db1 on
/// TCP 22 is computed, then every candidate source — internet addresses and NICs of the same
/// virtual network — sends a real SYN; exactly the listed ones get through. The rules make the
/// levels disagree: the subnet allows 81.2.69.0/24 and denies web's lower half, the NIC allows
/// only 81.2.69.0/25 and denies the rest of that /24.
#[test]
fn reachability_lists_exactly_the_sources_the_packets_prove() {
    let mut t = fixture();
    t["networkInterfaces"].as_array_mut().unwrap().push(json!({
        "id": "web2", "subnet": { "id": "vnet1/subnets/web" }, "privateIpAddress": "10.0.1.200",
        "networkSecurityGroup": { "id": "nsg-web2" } }));
    t["networkSecurityGroups"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "id": "nsg-web2", "securityRules": [] }));
    set_rules(
        &mut t,
        "nsg-db",
        vec![
            rule(
                "admins",
                100,
                "Inbound",
                "Allow",
                "Tcp",
                "81.2.69.0/24",
                "22",
            ),
            rule(
                "no-web-low",
                110,
                "Inbound",
                "Deny",
                "Tcp",
                "10.0.1.0/25",
                "22",
            ),
        ],
    );
    set_rules(
        &mut t,
        "nsg-db1",
        vec![
            rule(
                "admins-low",
                100,
                "Inbound",
                "Allow",
                "Tcp",
                "81.2.69.0/25",
                "22",
            ),
            rule(
                "admins-rest",
                200,
                "Inbound",
                "Deny",
                "Tcp",
                "81.2.69.0/24",
                "22",
            ),
        ],
    );
    let internet_sources = [
        std::net::Ipv4Addr::new(81, 2, 69, 10),
        std::net::Ipv4Addr::new(81, 2, 69, 127),
        std::net::Ipv4Addr::new(81, 2, 69, 128),
        std::net::Ipv4Addr::new(81, 2, 69, 200),
        std::net::Ipv4Addr::new(81, 2, 70, 10),
        std::net::Ipv4Addr::new(203, 0, 113, 5),
    ];
    let mut lab = Lab::new(topology(t.clone()));
    let internet = lab.add_internet(&internet_sources);
    lab.update(topology(t));
    let network = Network::new(&lab.topology).unwrap();
    let reach = network
        .sources_reaching("db1", FlowProtocol::Tcp, 22)
        .unwrap();
    let listed = |ip: std::net::Ipv4Addr| {
        reach.sources.iter().any(|cidr| {
            strata_netpol::ranges::parse_prefix(cidr)
                .unwrap()
                .contains(u32::from(ip))
        })
    };
    let db1 = lab.ip("db1");
    let mut candidates: Vec<(String, std::net::Ipv4Addr)> = internet_sources
        .iter()
        .map(|&ip| (internet.clone(), ip))
        .collect();
    for nic in ["web1", "web2"] {
        candidates.push((lab.vm(nic).to_owned(), lab.ip(nic)));
    }
    let mut through = Vec::new();
    for (i, (ns, ip)) in candidates.iter().enumerate() {
        let delivered = tcp(ns, sa(*ip, 50200 + i as u16), lab.vm("db1"), sa(db1, 22), T);
        assert_eq!(
            delivered == Outcome::Delivered,
            listed(*ip),
            "{ip}: packets say {delivered:?}, reachability lists {:?}",
            reach.sources
        );
        if delivered == Outcome::Delivered {
            through.push(ip.to_string());
        }
    }
    // Both kinds of source are represented on each side of the line.
    assert_eq!(
        through,
        ["81.2.69.10", "81.2.69.127", "10.0.1.200"],
        "{reach:?}"
    );
}
