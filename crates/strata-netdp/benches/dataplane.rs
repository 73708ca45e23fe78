//! Dataplane benchmark (needs root, iproute2, nftables, iperf3):
//! 1. TCP throughput between two VM namespaces through the host (iperf3, one stream) with the
//!    destination NIC's NSG holding 1,000 custom rules, against the same wiring with no
//!    ruleset at all (the baseline, measured in the same run, interleaved);
//! 2. programming time: `Host::apply` of a host with 100 and with 1,000 NICs, each with its own
//!    NSG of 10 rules (1,000 and 10,000 rules), into a fresh namespace, beside the fixed cost
//!    of applying an empty plan; plus the pure part (plan + render) on its own.
//!
//! `cargo bench -p strata-netdp --bench dataplane` (NETDP_BENCH_SECONDS=3 per iperf run,
//! NETDP_BENCH_ROUNDS=3 interleaved rounds).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strata_netdp::{Host, HostPlan};
use strata_netpol::Topology;

struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Self {
        let name = format!("sdpb-{}-{tag}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        Self(name)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A deterministic rule that never matches the iperf flow (public sources), varied enough
/// that runs of equal access and overlapping elements both occur.
fn filler_rule(i: u64, direction: &str) -> Value {
    let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    let a = 11 + (x % 200); // 11.x – 210.x: public space
    let b = (x >> 8) % 256;
    let port = 1024 + (x >> 16) % 60000;
    let source = match i % 4 {
        0 => json!({ "sourceAddressPrefix": format!("{a}.{b}.0.0/16") }),
        1 => {
            json!({ "sourceAddressPrefixes": [format!("{a}.{b}.1.0/24"), format!("{a}.{b}.9.0/24")] })
        }
        2 => json!({ "sourceAddressPrefix": format!("{a}.{b}.7.{}", x % 250) }),
        _ => json!({ "sourceAddressPrefix": format!("{a}.0.0.0/8") }),
    };
    let protocol = ["Tcp", "Udp", "Tcp", "*"][(i % 4) as usize];
    let mut r = json!({
        "name": format!("r{i}"), "priority": 100 + i, "direction": direction,
        "access": if (i / 7).is_multiple_of(3) { "Deny" } else { "Allow" },
        "protocol": protocol,
        "sourcePortRange": "*", "destinationAddressPrefix": "*",
        "destinationPortRange": if i.is_multiple_of(5) { format!("{port}-{}", port + 100) } else { port.to_string() },
    });
    if let (Some(r), Some(s)) = (r.as_object_mut(), source.as_object()) {
        r.extend(s.clone());
    }
    r
}

fn pair_topology(rules: u64) -> Topology {
    let mut custom: Vec<Value> = (0..rules.saturating_sub(1))
        .map(|i| filler_rule(i, "Inbound"))
        .collect();
    if rules > 0 {
        custom.push(json!({ "name": "allow-iperf", "priority": 4000, "direction": "Inbound",
            "access": "Allow", "protocol": "Tcp", "sourceAddressPrefix": "10.0.1.4",
            "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "5201" }));
    }
    serde_json::from_value(json!({
      "virtualNetworks": [ { "id": "vnet1", "addressSpace": { "addressPrefixes": ["10.0.0.0/16"] },
        "subnets": [ { "name": "s", "addressPrefix": "10.0.1.0/24" } ] } ],
      "networkInterfaces": [
        { "id": "a", "subnet": { "id": "vnet1/subnets/s" }, "privateIpAddress": "10.0.1.4",
          "networkSecurityGroup": { "id": "nsg-a" } },
        { "id": "b", "subnet": { "id": "vnet1/subnets/s" }, "privateIpAddress": "10.0.1.5",
          "networkSecurityGroup": { "id": "nsg-b" } } ],
      "networkSecurityGroups": [ { "id": "nsg-a", "securityRules": [] },
        { "id": "nsg-b", "securityRules": custom } ]
    }))
    .unwrap_or_else(|e| panic!("topology: {e}"))
}

fn iperf(client: &str, server: &str, seconds: u64) -> f64 {
    let mut srv = Command::new("ip")
        .args([
            "netns", "exec", server, "iperf3", "-s", "-1", "-B", "10.0.1.5",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("iperf3 (Debian package iperf3): {e}"));
    std::thread::sleep(Duration::from_millis(300));
    let out = run(&[
        "ip",
        "netns",
        "exec",
        client,
        "iperf3",
        "-c",
        "10.0.1.5",
        "-t",
        &seconds.to_string(),
        "-J",
    ]);
    let _ = srv.wait();
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("iperf3 -J: {e}"));
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn throughput() {
    let seconds = env("NETDP_BENCH_SECONDS", 3);
    let rounds = env("NETDP_BENCH_ROUNDS", 3);
    let host_ns = Ns::new("host");
    let (a, b) = (Ns::new("a"), Ns::new("b"));
    let host = Host::netns(&host_ns.0);
    let topology = pair_topology(1000);
    let plan = HostPlan::new(&topology, ["a", "b"]).unwrap_or_else(|e| panic!("{e}"));
    host.apply(&plan).unwrap_or_else(|e| panic!("{e}"));
    host.create_veth(&plan, "a", &a.0)
        .unwrap_or_else(|e| panic!("{e}"));
    host.create_veth(&plan, "b", &b.0)
        .unwrap_or_else(|e| panic!("{e}"));
    let ruleset = strata_netdp::render(&plan);
    let statements = plan
        .chains
        .iter()
        .map(|c| c.statements.len())
        .sum::<usize>();
    let elements: usize = plan
        .chains
        .iter()
        .flat_map(|c| &c.statements)
        .map(|s| s.elements.len())
        .sum();
    println!(
        "throughput: 1,000 custom rules in nic b's NSG -> {statements} set lookups over all chains \
         ({elements} set elements), ruleset {} KiB; {rounds} interleaved rounds of {seconds} s",
        ruleset.len() / 1024
    );
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        host.load_ruleset(&ruleset)
            .unwrap_or_else(|e| panic!("{e}"));
        with.push(iperf(&a.0, &b.0, seconds));
        run(&[
            "ip",
            "netns",
            "exec",
            &host_ns.0,
            "sh",
            "-c",
            "nft delete table inet strata; nft delete table bridge strata",
        ]);
        without.push(iperf(&a.0, &b.0, seconds));
    }
    let (w, n) = (median(&mut with), median(&mut without));
    println!(
        "  no ruleset (baseline): median {:.2} Gbit/s {:?}",
        n / 1e9,
        without
            .iter()
            .map(|x| (x / 1e7).round() / 100.0)
            .collect::<Vec<_>>()
    );
    println!(
        "  1,000 rules:           median {:.2} Gbit/s {:?}",
        w / 1e9,
        with.iter()
            .map(|x| (x / 1e7).round() / 100.0)
            .collect::<Vec<_>>()
    );
    println!("  ratio {:.3} (target >= 0.9)", w / n);
}

fn many_nics(count: u64) -> (Topology, Vec<String>) {
    let mut nics = Vec::new();
    let mut nsgs = Vec::new();
    let mut subnets = Vec::new();
    for s in 0..count.div_ceil(200) {
        subnets.push(json!({ "name": format!("s{s}"), "addressPrefix": format!("10.0.{s}.0/24") }));
    }
    for i in 0..count {
        let rules: Vec<Value> = (0..10)
            .map(|k| {
                let mut r = filler_rule(
                    i * 10 + k,
                    if k.is_multiple_of(2) {
                        "Inbound"
                    } else {
                        "Outbound"
                    },
                );
                r["priority"] = json!(100 + k);
                r
            })
            .collect();
        nsgs.push(json!({ "id": format!("nsg{i}"), "securityRules": rules }));
        nics.push(json!({ "id": format!("nic{i}"),
            "subnet": { "id": format!("vnet1/subnets/s{}", i / 200) },
            "privateIpAddress": format!("10.0.{}.{}", i / 200, 4 + i % 200),
            "networkSecurityGroup": { "id": format!("nsg{i}") } }));
    }
    let t: Topology = serde_json::from_value(json!({
      "virtualNetworks": [ { "id": "vnet1", "addressSpace": { "addressPrefixes": ["10.0.0.0/16"] },
        "subnets": subnets } ],
      "networkInterfaces": nics, "networkSecurityGroups": nsgs
    }))
    .unwrap_or_else(|e| panic!("topology: {e}"));
    let ids = (0..count).map(|i| format!("nic{i}")).collect();
    (t, ids)
}

fn programming() {
    println!(
        "programming: Host::apply into a fresh namespace (ruleset + bridge + routes), median of 3"
    );
    let empty = {
        let mut v: Vec<f64> = (0..3)
            .map(|_| {
                let ns = Ns::new("prog");
                let plan =
                    HostPlan::new(&Topology::default(), []).unwrap_or_else(|e| panic!("{e}"));
                let t = Instant::now();
                Host::netns(&ns.0)
                    .apply(&plan)
                    .unwrap_or_else(|e| panic!("{e}"));
                t.elapsed().as_secs_f64()
            })
            .collect();
        median(&mut v)
    };
    println!("  empty plan (fixed cost of the commands): {:.3} s", empty);
    let mut results = Vec::new();
    for count in [100, 1000] {
        let (topology, ids) = many_nics(count);
        let mut pure = Vec::new();
        let mut total = Vec::new();
        let mut size = 0;
        for _ in 0..3 {
            let t = Instant::now();
            let plan = HostPlan::new(&topology, ids.iter().map(String::as_str))
                .unwrap_or_else(|e| panic!("{e}"));
            size = strata_netdp::render(&plan).len();
            pure.push(t.elapsed().as_secs_f64());
            let ns = Ns::new("prog");
            let t = Instant::now();
            let plan = HostPlan::new(&topology, ids.iter().map(String::as_str))
                .unwrap_or_else(|e| panic!("{e}"));
            Host::netns(&ns.0)
                .apply(&plan)
                .unwrap_or_else(|e| panic!("{e}"));
            total.push(t.elapsed().as_secs_f64());
        }
        let (p, t) = (median(&mut pure), median(&mut total));
        println!(
            "  {count:>5} NICs ({:>6} custom rules): plan+render {p:.3} s, apply total {t:.3} s, ruleset {} KiB",
            count * 10,
            size / 1024
        );
        results.push(t);
    }
    if let [a, b] = results[..] {
        println!("  growth 100 -> 1,000 NICs: {:.1}x", b / a);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / nextest probing
    }
    println!("load: {}", run(&["uptime"]).trim());
    throughput();
    programming();
    println!("load: {}", run(&["uptime"]).trim());
}
