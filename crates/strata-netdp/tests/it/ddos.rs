//! DDoS basics per NIC with real packets: a SYN flood from one address is cut while another
//! address keeps connecting, a source above the per-source rate is limited while another is
//! not, connections above the conntrack cap are refused; each shows in the NIC's counters and
//! starts a mitigation event. Limits are set low so a few hundred packets are a flood.
//! Behind the SYN proxy (the fixture's single network overlaps nothing, so it is in the
//! default zone): allowed connections complete through the proxy, denied ports get nothing,
//! a flood from many spoofed sources does not keep a client out, and the cap still holds.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use strata_netdp::{DdosPolicy, Mechanism, MitigationEvent, MitigationMonitor, Rate};

use crate::support::{Lab, Outcome, in_netns, sa, tcp_connect, tcp_listener, topology};

const ATTACKER: Ipv4Addr = Ipv4Addr::new(81, 2, 69, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(81, 2, 70, 10);

/// web1 and db1 in one network; db1's NSG lets TCP 80 and UDP 5353 in from anywhere.
fn fixture() -> Value {
    let allow = |name: &str, priority: u32, protocol: &str, port: &str| {
        json!({ "name": name, "priority": priority, "direction": "Inbound", "access": "Allow",
                "protocol": protocol, "sourceAddressPrefix": "*", "sourcePortRange": "*",
                "destinationAddressPrefix": "*", "destinationPortRange": port })
    };
    json!({
      "virtualNetworks": [
        { "id": "vnet1", "addressSpace": { "addressPrefixes": ["10.0.0.0/16"] },
          "subnets": [ { "name": "web", "addressPrefix": "10.0.1.0/24" },
                       { "name": "db", "addressPrefix": "10.0.2.0/24" } ] }
      ],
      "networkInterfaces": [
        { "id": "web1", "subnet": { "id": "vnet1/subnets/web" }, "privateIpAddress": "10.0.1.4" },
        { "id": "db1", "subnet": { "id": "vnet1/subnets/db" }, "privateIpAddress": "10.0.2.4",
          "networkSecurityGroup": { "id": "nsg-db1" } }
      ],
      "networkSecurityGroups": [ { "id": "nsg-db1", "securityRules": [
          allow("web", 100, "Tcp", "80"), allow("mdns", 110, "Udp", "5353") ] } ]
    })
}

/// The lab with an internet namespace holding ATTACKER and CLIENT, and db1's policy.
fn lab(policy: DdosPolicy) -> (Lab, String) {
    let mut lab = Lab::new(topology(fixture()));
    let internet = lab.add_internet(&[ATTACKER, CLIENT]);
    let mut plan = lab.plan.clone();
    plan.set_ddos("db1", policy).unwrap();
    assert!(lab.host.apply(&plan).unwrap().ruleset);
    lab.plan = plan;
    (lab, internet)
}

fn started(events: &[MitigationEvent], nic: &str, mechanism: Mechanism) -> bool {
    events.iter().any(|e| {
        matches!(e, MitigationEvent::Started { nic: n, mechanism: m, rate }
            if n == nic && *m == mechanism && *rate > 0.0)
    })
}

/// A bare TCP SYN (20-byte header, no options) with its checksum.
fn syn(src: SocketAddrV4, dst: SocketAddrV4, seq: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0..2].copy_from_slice(&src.port().to_be_bytes());
    h[2..4].copy_from_slice(&dst.port().to_be_bytes());
    h[4..8].copy_from_slice(&seq.to_be_bytes());
    h[12] = 5 << 4; // data offset: 5 words
    h[13] = 0x02; // SYN
    h[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for w in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.ip().octets());
    add(&dst.ip().octets());
    add(&[0, 6, 0, 20]);
    add(&h);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    h[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    h
}

#[test]
fn a_syn_flood_from_one_address_is_cut_while_another_address_connects() {
    let policy = DdosPolicy {
        syn_per_source: Some(Rate::new(20, 20)),
        ..DdosPolicy::default()
    };
    let (lab, internet) = lab(policy);
    let db1 = lab.ip("db1");
    let _listener = tcp_listener(lab.vm("db1"), sa(db1, 80));
    let mut monitor = MitigationMonitor::new();
    assert!(
        monitor
            .observe(lab.host.ddos_counters(&lab.plan).unwrap())
            .is_empty()
    );

    // Raw SYNs from ATTACKER, a new source port each, paced to at most ~5,000/s (below the
    // all-sources limit, so only the per-source meter acts).
    let raw = in_netns(&internet, || {
        let s = Socket::new(
            Domain::IPV4,
            Type::from(libc::SOCK_RAW),
            Some(Protocol::TCP),
        )
        .unwrap();
        s.bind(&SockAddr::from(sa(ATTACKER, 0))).unwrap();
        s
    });
    let stop = AtomicBool::new(false);
    let sent = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            let to = SockAddr::from(sa(db1, 80));
            let mut n: u32 = 0;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..50 {
                    let port = 10_000 + (n % 50_000) as u16;
                    raw.send_to(&syn(sa(ATTACKER, port), sa(db1, 80), n), &to)
                        .unwrap();
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            n
        });
        // Wait until the flood is being cut, then connect from another address, during it.
        let mut flooding = false;
        for _ in 0..100 {
            let c = lab.host.ddos_counters(&lab.plan).unwrap();
            if c.nics["db1"].syn_flood.packets > 100 {
                flooding = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut outcomes = Vec::new();
        for port in 0..3 {
            let (o, _c) = tcp_connect(
                &internet,
                sa(CLIENT, 51_000 + port),
                sa(db1, 80),
                Duration::from_secs(3),
            );
            outcomes.push(o);
        }
        stop.store(true, Ordering::Relaxed);
        let sent = flood.join().unwrap();
        assert!(flooding, "the flood ({sent} SYNs so far) was not cut");
        assert_eq!(
            outcomes,
            vec![Outcome::Delivered; 3],
            "another address must connect during the flood"
        );
        sent
    });

    let sample = lab.host.ddos_counters(&lab.plan).unwrap();
    let c = sample.nics["db1"];
    assert!(
        c.syn_flood.packets > 100 && c.syn_flood.bytes >= 40 * c.syn_flood.packets,
        "{c:?} after {sent} SYNs"
    );
    assert_eq!((c.per_source_rate.packets, c.conntrack_cap.packets), (0, 0));
    assert_eq!(sample.nics["web1"].syn_flood.packets, 0);
    let events = monitor.observe(sample);
    assert!(started(&events, "db1", Mechanism::SynFlood), "{events:?}");
    assert_eq!(events.len(), 1, "{events:?}");
}

#[test]
fn a_source_above_the_per_source_rate_is_limited_and_another_is_not() {
    let policy = DdosPolicy {
        per_source: Some(Rate::new(10, 10)),
        ..DdosPolicy::default()
    };
    let (lab, internet) = lab(policy);
    let db1 = lab.ip("db1");
    let mut monitor = MitigationMonitor::new();
    monitor.observe(lab.host.ddos_counters(&lab.plan).unwrap());

    let rx: UdpSocket = in_netns(lab.vm("db1"), || {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.bind(&SockAddr::from(sa(db1, 5353))).unwrap();
        s
    })
    .into();
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let sender = |from: Ipv4Addr| -> UdpSocket {
        in_netns(&internet, || {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
            s.bind(&SockAddr::from(sa(from, 0))).unwrap();
            s
        })
        .into()
    };
    let (attacker, client) = (sender(ATTACKER), sender(CLIENT));
    // db1 never answers, so every datagram is a new flow's packet.
    for i in 0..200 {
        attacker.send_to(b"x", sa(db1, 5353)).unwrap();
        if i % 40 == 0 {
            client.send_to(b"y", sa(db1, 5353)).unwrap();
        }
    }
    let (mut from_attacker, mut from_client) = (0, 0);
    let mut buf = [0u8; 8];
    while let Ok((_, peer)) = rx.recv_from(&mut buf) {
        match peer.ip() {
            std::net::IpAddr::V4(ip) if ip == ATTACKER => from_attacker += 1,
            std::net::IpAddr::V4(ip) if ip == CLIENT => from_client += 1,
            other => panic!("datagram from {other}"),
        }
    }
    assert_eq!(from_client, 5, "the other source is not limited");
    assert!(
        (10..150).contains(&from_attacker),
        "the source above the rate is limited (passed {from_attacker} of 200)"
    );

    let sample = lab.host.ddos_counters(&lab.plan).unwrap();
    let c = sample.nics["db1"];
    assert_eq!(c.per_source_rate.packets, 200 - from_attacker, "{c:?}");
    assert_eq!(c.syn_flood.packets, 0);
    let events = monitor.observe(sample);
    assert!(
        started(&events, "db1", Mechanism::PerSourceRate),
        "{events:?}"
    );
}

#[test]
fn connections_above_the_conntrack_cap_are_refused_and_counted() {
    // Without the SYN proxy, so that the cap refuses the handshake itself (behind the proxy
    // the client's handshake completes with the proxy: see the next test).
    let policy = DdosPolicy {
        max_connections: Some(3),
        syn_proxy: false,
        ..DdosPolicy::default()
    };
    let (lab, internet) = lab(policy);
    let db1 = lab.ip("db1");
    let mut monitor = MitigationMonitor::new();
    monitor.observe(lab.host.ddos_counters(&lab.plan).unwrap());
    let _listener = tcp_listener(lab.vm("db1"), sa(db1, 80));
    let mut open = Vec::new();
    for port in 0..3 {
        let (o, c) = tcp_connect(
            &internet,
            sa(CLIENT, 52_000 + port),
            sa(db1, 80),
            Duration::from_secs(2),
        );
        assert_eq!(o, Outcome::Delivered, "connection {port} is within the cap");
        open.push(c);
    }
    let (o, _) = tcp_connect(
        &internet,
        sa(ATTACKER, 52_100),
        sa(db1, 80),
        Duration::from_millis(400),
    );
    assert_eq!(o, Outcome::Dropped, "a fourth connection is over the cap");

    let sample = lab.host.ddos_counters(&lab.plan).unwrap();
    assert!(sample.nics["db1"].conntrack_cap.packets >= 1, "{sample:?}");
    let events = monitor.observe(sample);
    assert!(
        started(&events, "db1", Mechanism::ConntrackCap),
        "{events:?}"
    );
    drop(open);
}

/// The synproxy statistics of a namespace (summed over CPUs): SYNs answered, valid cookies.
fn synproxy_stats(ns: &str) -> (u64, u64) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/stat/synproxy"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut sums = (0, 0);
    for l in text.lines().skip(1) {
        let f: Vec<u64> = l
            .split_whitespace()
            .map(|x| u64::from_str_radix(x, 16).unwrap())
            .collect();
        sums.0 += f[1];
        sums.1 += f[3];
    }
    sums
}

/// A raw IPv4 packet (header for the kernel to complete) carrying `syn(src, dst, seq)`:
/// any source address, as a spoofed flood has.
fn spoofed_syn(src: SocketAddrV4, dst: SocketAddrV4, seq: u32) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.ip().octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    p[20..].copy_from_slice(&syn(src, dst, seq));
    p
}

/// A full exchange over a connected socket: "ping" there, "pong" back.
fn ping_pong(client: Socket, listener: &Socket) {
    use std::io::{Read, Write};
    listener.set_nonblocking(false).unwrap();
    let (server, _) = listener.accept().unwrap();
    let mut server: std::net::TcpStream = server.into();
    let mut client: std::net::TcpStream = client.into();
    for s in [&server, &client] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
}

#[test]
fn behind_the_syn_proxy_allowed_connections_complete_denied_ports_get_nothing_and_a_spoofed_flood_does_not_keep_a_client_out()
 {
    // A total SYN limit this low would drop most legitimate SYNs during the flood; behind the
    // proxy it is not applied (the smaller meter only makes the policy differ from the
    // default in the ruleset too, which `lab` asserts).
    let policy = DdosPolicy {
        syn_total: Some(Rate::new(50, 50)),
        meter_size: 4_096,
        ..DdosPolicy::default()
    };
    let (lab, internet) = lab(policy);
    let host_ns = lab.host.netns_name().unwrap().to_owned();
    let db1 = lab.ip("db1");
    let nic = lab.plan.nic("db1").unwrap();
    assert_eq!(lab.plan.vnet_of(nic).unwrap().zone, 0);
    assert!(lab.plan.syn_proxied(nic));
    assert!(lab.ruleset().contains("synproxy"));
    let listener = tcp_listener(lab.vm("db1"), sa(db1, 80));
    // Port 81 listens too but no rule allows it: the proxy must not answer for it.
    let _closed = tcp_listener(lab.vm("db1"), sa(db1, 81));

    // From the internet and from a VM of the network: through the proxy, data both ways.
    let (o, c) = tcp_connect(
        &internet,
        sa(CLIENT, 53_000),
        sa(db1, 80),
        Duration::from_secs(10),
    );
    assert_eq!(o, Outcome::Delivered);
    ping_pong(c.unwrap(), &listener);
    let web1 = lab.ip("web1");
    let (o, c) = tcp_connect(
        lab.vm("web1"),
        sa(web1, 53_001),
        sa(db1, 80),
        Duration::from_secs(10),
    );
    assert_eq!(o, Outcome::Delivered);
    ping_pong(c.unwrap(), &listener);
    let (answered, valid) = synproxy_stats(&host_ns);
    assert!(
        answered >= 2 && valid >= 2,
        "not through the proxy: {answered} {valid}"
    );

    // A port no rule allows: no SYN-ACK, neither from the proxy nor from the VM.
    let (o, _) = tcp_connect(
        &internet,
        sa(CLIENT, 53_002),
        sa(db1, 81),
        Duration::from_secs(2),
    );
    assert_eq!(o, Outcome::Dropped, "the proxy answered for a denied port");
    assert_eq!(
        synproxy_stats(&host_ns).0,
        answered,
        "the proxy saw a denied SYN"
    );

    // Raw SYNs from 500 spoofed addresses (100.64.0.0/23, none of them exists; few enough that
    // the host's neighbour table for the uplink does not overflow), paced to ~25,000/s.
    let raw = in_netns(&internet, || {
        Socket::new(
            Domain::IPV4,
            Type::from(libc::SOCK_RAW),
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )
        .unwrap()
    });
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let flood = s.spawn(|| {
            let to = SockAddr::from(sa(db1, 80));
            let mut n: u32 = 0;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..25 {
                    let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 10)) + n % 500);
                    let port = 10_000 + (n % 50_000) as u16;
                    raw.send_to(&spoofed_syn(sa(src, port), sa(db1, 80), n), &to)
                        .unwrap();
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            n
        });
        // Connect once the proxy has answered a good part of the flood.
        let mut flooding = false;
        for _ in 0..500 {
            if synproxy_stats(&host_ns).0 > answered + 2_000 {
                flooding = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut outcomes = Vec::new();
        for port in 0..3 {
            let (o, c) = tcp_connect(
                &internet,
                sa(CLIENT, 53_010 + port),
                sa(db1, 80),
                Duration::from_secs(10),
            );
            outcomes.push(o);
            if let Some(c) = c {
                ping_pong(c, &listener);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let sent = flood.join().unwrap();
        assert!(
            flooding,
            "the proxy did not see the flood ({sent} SYNs sent)"
        );
        assert_eq!(
            outcomes,
            vec![Outcome::Delivered; 3],
            "a client must connect during a spoofed flood ({sent} SYNs)"
        );
    });
    // The flood never reached the VM: no half-open connection waits in its backlog, the only
    // connections it accepted were the clients'.
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "a spoofed SYN reached the VM");
}

#[test]
fn behind_the_syn_proxy_the_conntrack_cap_still_bounds_connections_to_the_nic() {
    let policy = DdosPolicy {
        max_connections: Some(3),
        ..DdosPolicy::default()
    };
    let (lab, internet) = lab(policy);
    let db1 = lab.ip("db1");
    assert!(lab.plan.syn_proxied(lab.plan.nic("db1").unwrap()));
    let mut monitor = MitigationMonitor::new();
    monitor.observe(lab.host.ddos_counters(&lab.plan).unwrap());
    let listener = tcp_listener(lab.vm("db1"), sa(db1, 80));
    let mut open = Vec::new();
    for port in 0..4 {
        // The proxy completes every client handshake; only the cap decides what the VM sees.
        let (o, c) = tcp_connect(
            &internet,
            sa(CLIENT, 54_000 + port),
            sa(db1, 80),
            Duration::from_secs(10),
        );
        assert_eq!(o, Outcome::Delivered);
        open.push(c);
    }
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut accepted = Vec::new();
    while std::time::Instant::now() < deadline {
        if let Ok((c, _)) = listener.accept() {
            accepted.push(c);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        accepted.len(),
        3,
        "the VM sees exactly the connections within the cap"
    );
    let sample = lab.host.ddos_counters(&lab.plan).unwrap();
    assert!(sample.nics["db1"].conntrack_cap.packets >= 1, "{sample:?}");
    let events = monitor.observe(sample);
    assert!(
        started(&events, "db1", Mechanism::ConntrackCap),
        "{events:?}"
    );
    drop(open);
}
