//! Reconcile: idempotent re-apply, a restarted agent, repair of drift, rule changes for new
//! flows only, and the conntrack flush of a quarantine.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use strata_netdp::{Host, HostPlan};

use crate::support::{Lab, Outcome, assert_same, sa, tcp, tcp_connect, tcp_listener, topology};

fn fixture() -> serde_json::Value {
    json!({
      "virtualNetworks": [
        { "id": "vnet1", "addressSpace": { "addressPrefixes": ["10.0.0.0/16"] },
          "subnets": [ { "name": "web", "addressPrefix": "10.0.1.0/24", "networkSecurityGroup": { "id": "nsg-web" } },
                       { "name": "db", "addressPrefix": "10.0.2.0/24" } ] }
      ],
      "networkInterfaces": [
        { "id": "web1", "subnet": { "id": "vnet1/subnets/web" }, "privateIpAddress": "10.0.1.4",
          "networkSecurityGroup": { "id": "nsg-nic" } },
        { "id": "db1", "subnet": { "id": "vnet1/subnets/db" }, "privateIpAddress": "10.0.2.4",
          "networkSecurityGroup": { "id": "nsg-nic" } }
      ],
      "networkSecurityGroups": [ { "id": "nsg-web", "securityRules": [] }, { "id": "nsg-nic", "securityRules": [] } ]
    })
}

/// An open TCP connection web1 → db1:5000 (client, server side).
fn connect(lab: &Lab, sport: u16) -> (TcpStream, TcpStream) {
    let (web1, db1) = (lab.ip("web1"), lab.ip("db1"));
    let listener = tcp_listener(lab.vm("db1"), sa(db1, 5000));
    let (outcome, client) = tcp_connect(
        lab.vm("web1"),
        sa(web1, sport),
        sa(db1, 5000),
        Duration::from_secs(2),
    );
    assert_eq!(outcome, Outcome::Delivered);
    let (server, _) = listener.accept().unwrap();
    let server: TcpStream = server.into();
    server
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    (client.unwrap().into(), server)
}

fn passes(client: &mut TcpStream, server: &mut TcpStream) -> bool {
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).is_ok()
}

fn sh(ns: &str, script: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-ec", script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
}

#[test]
fn applying_twice_changes_nothing_and_a_restarted_agent_reapplies_cleanly() {
    let lab = Lab::new(topology(fixture()));
    let (mut client, mut server) = connect(&lab, 41000);
    let before = lab.snapshot();

    let again = lab.host.apply(&lab.plan).unwrap();
    assert!(!again.changed(), "second apply changed {again:?}");
    // A restarted agent: a new Host handle and a plan rebuilt from the same desired state.
    let restarted = Host::netns(&lab.host_ns.name);
    let plan = HostPlan::new(&lab.topology, ["db1", "web1"]).unwrap();
    assert_eq!(plan, lab.plan);
    let report = restarted.apply(&plan).unwrap();
    assert!(!report.changed(), "restart changed {report:?}");
    assert_same(&before, &lab.snapshot());
    assert!(
        passes(&mut client, &mut server),
        "an established connection survives"
    );

    // Drift (a crash halfway, or someone's hand): the ruleset gone, a route gone, a port's
    // isolation off. The next apply repairs exactly that, then is a no-op again.
    let vnet = &lab.plan.vnets[0];
    let port = &lab.plan.nic("web1").unwrap().port;
    sh(
        &lab.host_ns.name,
        &format!(
            "nft delete table inet strata; ip route del 10.0.2.0/24 dev {b} table {t}; \
             bridge link set dev {port} isolated off",
            b = vnet.bridge,
            t = vnet.table
        ),
    );
    let repair = restarted.apply(&plan).unwrap();
    assert!(repair.ruleset, "{repair:?}");
    assert_eq!(repair.changes.len(), 2, "{repair:?}");
    assert!(!restarted.apply(&plan).unwrap().changed());
    assert_same(&before, &lab.snapshot());
}

#[test]
fn rule_changes_affect_new_flows_and_a_conntrack_flush_cuts_established_ones() {
    let mut lab = Lab::new(topology(fixture()));
    let (mut client, mut server) = connect(&lab, 42000);
    assert!(passes(&mut client, &mut server));

    // db1's NSG now denies 5000 from the virtual network.
    let mut t = fixture();
    t["networkSecurityGroups"][1]["securityRules"] = json!([{
        "name": "deny-5000", "priority": 100, "direction": "Inbound", "access": "Deny",
        "protocol": "Tcp", "sourceAddressPrefix": "VirtualNetwork", "sourcePortRange": "*",
        "destinationAddressPrefix": "*", "destinationPortRange": "5000" }]);
    assert!(lab.update(topology(t)).ruleset);
    assert!(
        passes(&mut client, &mut server),
        "established flows keep going after a rule change"
    );
    let (web1, db1) = (lab.ip("web1"), lab.ip("db1"));
    assert_eq!(
        tcp(
            lab.vm("web1"),
            sa(web1, 42001),
            lab.vm("db1"),
            sa(db1, 5000),
            Duration::from_millis(400)
        ),
        Outcome::Dropped,
        "a new flow meets the new rule"
    );

    // Quarantine: flush db1's connections; the old one is now judged as new, and denied.
    let flushed = lab.host.flush_conntrack(&lab.plan, "db1").unwrap();
    assert!(flushed >= 1, "flushed {flushed}");
    assert!(
        !passes(&mut client, &mut server),
        "a flushed connection must not pass"
    );
    assert_eq!(lab.host.flush_conntrack(&lab.plan, "web1").unwrap(), 0);
}
