//! Flow verify over the fixture: one line per question, `nic direction protocol local remote
//! [est]` → `access rule @ nsg/level`.

use strata_netpol::{Direction, Flow, FlowProtocol, Level, QueryError, Verdict};

use crate::support::network;

fn parse_flow(s: &str) -> (String, Flow) {
    let w: Vec<&str> = s.split_whitespace().collect();
    let direction = match w[1] {
        "in" => Direction::Inbound,
        "out" => Direction::Outbound,
        d => panic!("direction {d}"),
    };
    let protocol = match w[2] {
        "tcp" => FlowProtocol::Tcp,
        "udp" => FlowProtocol::Udp,
        "icmp" => FlowProtocol::Icmp,
        "esp" => FlowProtocol::Esp,
        "ah" => FlowProtocol::Ah,
        p => panic!("protocol {p}"),
    };
    let addr = |a: &str| {
        if a.contains(':') {
            a.parse().unwrap()
        } else {
            format!("{a}:0").parse().unwrap()
        }
    };
    let mut flow = Flow::new(direction, protocol, addr(w[3]), addr(w[4]));
    flow.established = w.get(5) == Some(&"est");
    (w[0].to_owned(), flow)
}

pub fn render(v: &Verdict) -> String {
    let at = match (&v.network_security_group, v.level) {
        (Some(n), Some(Level::Subnet)) => format!("{}/subnet", n.name),
        (Some(n), Some(Level::NetworkInterface)) => format!("{}/nic", n.name),
        _ => "no nsg".to_owned(),
    };
    format!(
        "{:?}{} {} @ {at}",
        v.access,
        if v.established { " (established)" } else { "" },
        v.rule_name.as_deref().unwrap_or("-"),
    )
}

#[track_caller]
fn check(flow: &str, expected: &str) {
    let network = network();
    let (nic, f) = parse_flow(flow);
    let verdict = network.flow_verify(&nic, &f).unwrap();
    assert_eq!(render(&verdict), expected, "{flow}\n{verdict:#?}");
    // The allocation-free path agrees on access for new flows.
    if !f.established {
        let handle = network.nic(&nic).unwrap();
        assert_eq!(
            network.classify(handle, &f).access,
            verdict.access,
            "{flow}"
        );
        assert_eq!(
            network.classify(handle, &f),
            network.scan(handle, &f),
            "{flow}"
        );
    }
}

#[test]
fn inbound_to_web1() {
    // Internet https: both levels allow; the NIC level (last inbound) is named.
    check(
        "web1 in tcp 10.0.1.4:443 8.8.8.8:50000",
        "Allow securityRules/allow-https-nic @ nsg-web-nic/nic",
    );
    // SSH with no allow rule: DenyAllInBound at the first level.
    check(
        "web1 in tcp 10.0.1.4:22 8.8.8.8:50000",
        "Deny defaultSecurityRules/DenyAllInBound @ nsg-web-subnet/subnet",
    );
    // The subnet allows the admin prefix, the NIC does not: both must allow.
    check(
        "web1 in tcp 10.0.1.4:22 81.2.69.7:50000",
        "Deny defaultSecurityRules/DenyAllInBound @ nsg-web-nic/nic",
    );
    check(
        "web1 in tcp 10.0.1.4:443 10.0.2.4:50000",
        "Allow securityRules/allow-https-nic @ nsg-web-nic/nic",
    );
    check(
        "web1 in tcp 10.0.1.4:23 10.0.2.4:50000",
        "Deny securityRules/deny-telnet @ nsg-web-subnet/subnet",
    );
    check(
        "web1 in tcp 10.0.1.4:8443 8.8.8.8:50000",
        "Deny defaultSecurityRules/DenyAllInBound @ nsg-web-subnet/subnet",
    );
    // Peered network: VirtualNetwork includes vnet2.
    check(
        "web1 in tcp 10.0.1.4:8444 10.1.1.4:50000",
        "Allow securityRules/allow-https-nic @ nsg-web-nic/nic",
    );
    check(
        "web1 in tcp 10.0.1.4:8445 10.1.1.4:50000",
        "Allow defaultSecurityRules/AllowVnetInBound @ nsg-web-nic/nic",
    );
    // Unpeered network: private, so neither VirtualNetwork nor Internet.
    check(
        "web1 in tcp 10.0.1.4:8445 10.2.1.4:50000",
        "Deny defaultSecurityRules/DenyAllInBound @ nsg-web-subnet/subnet",
    );
    check(
        "web1 in icmp 10.0.1.4 10.0.2.4",
        "Allow securityRules/allow-icmp-vnet @ nsg-web-nic/nic",
    );
    check(
        "web1 in icmp 10.0.1.4 8.8.8.8",
        "Deny defaultSecurityRules/DenyAllInBound @ nsg-web-subnet/subnet",
    );
    check(
        "web1 in esp 10.0.1.4 10.0.2.4",
        "Allow defaultSecurityRules/AllowVnetInBound @ nsg-web-nic/nic",
    );
    check(
        "web1 in tcp 10.0.1.4:80 168.63.129.16:50000",
        "Allow defaultSecurityRules/AllowAzureLoadBalancerInBound @ nsg-web-nic/nic",
    );
    check(
        "web1 in tcp 10.0.1.4:80 168.63.129.17:50000",
        "Deny defaultSecurityRules/DenyAllInBound @ nsg-web-subnet/subnet",
    );
    check(
        "web1 in udp 10.0.1.4:443 8.8.8.8:50000",
        "Deny defaultSecurityRules/DenyAllInBound @ nsg-web-subnet/subnet",
    );
}

#[test]
fn outbound_from_web1() {
    check(
        "web1 out tcp 10.0.1.4:50000 8.8.8.8:25",
        "Deny securityRules/deny-smtp-out @ nsg-web-nic/nic",
    );
    // Outbound, the subnet is the last level.
    check(
        "web1 out tcp 10.0.1.4:50000 8.8.8.8:443",
        "Allow defaultSecurityRules/AllowInternetOutBound @ nsg-web-subnet/subnet",
    );
    check(
        "web1 out tcp 10.0.1.4:50000 10.0.2.4:25",
        "Allow defaultSecurityRules/AllowVnetOutBound @ nsg-web-subnet/subnet",
    );
    check(
        "web1 out tcp 10.0.1.4:50000 10.2.1.4:443",
        "Deny defaultSecurityRules/DenyAllOutBound @ nsg-web-nic/nic",
    );
    check(
        "web1 out udp 10.0.1.4:50000 192.168.7.7:53",
        "Deny defaultSecurityRules/DenyAllOutBound @ nsg-web-nic/nic",
    );
}

#[test]
fn return_traffic_is_decided_by_the_opening_flow() {
    // Reply to an allowed outbound https flow passes, though inbound from 8.8.8.8 is denied.
    check(
        "web1 in tcp 10.0.1.4:50000 8.8.8.8:443 est",
        "Allow (established) defaultSecurityRules/AllowInternetOutBound @ nsg-web-subnet/subnet",
    );
    check(
        "web1 in tcp 10.0.1.4:50000 8.8.8.8:443",
        "Deny defaultSecurityRules/DenyAllInBound @ nsg-web-subnet/subnet",
    );
    check(
        "web1 in tcp 10.0.1.4:50000 8.8.8.8:25 est",
        "Deny (established) securityRules/deny-smtp-out @ nsg-web-nic/nic",
    );
    // Replies of an allowed inbound flow leave even where a new outbound flow would not.
    check(
        "db1 out tcp 10.0.2.4:5432 10.0.1.4:40000 est",
        "Allow (established) securityRules/allow-pg-from-web @ nsg-db-nic/nic",
    );
    check(
        "web1 out tcp 10.0.1.4:22 8.8.8.8:50000 est",
        "Deny (established) defaultSecurityRules/DenyAllInBound @ nsg-web-subnet/subnet",
    );
}

#[test]
fn subnet_and_nic_levels() {
    check(
        "db1 in tcp 10.0.2.4:5432 10.0.1.4:40000",
        "Allow securityRules/allow-pg-from-web @ nsg-db-nic/nic",
    );
    // Subnet deny + NIC allow still denies.
    check(
        "db1 in tcp 10.0.2.4:5432 10.0.1.5:40000",
        "Deny securityRules/deny-pg-from-web2 @ nsg-db-subnet/subnet",
    );
    check(
        "db1 in tcp 10.0.2.4:22 10.0.1.4:40000",
        "Deny securityRules/deny-vnet-rest @ nsg-db-nic/nic",
    );
    check(
        "db1 out tcp 10.0.2.4:40000 8.8.8.8:443",
        "Deny securityRules/deny-internet-out @ nsg-db-nic/nic",
    );
    // No NSG at either level: Azure allows (Strata's control plane always attaches one).
    check("bare1 in tcp 10.0.3.4:22 8.8.8.8:50000", "Allow - @ no nsg");
    check(
        "app1 in tcp 10.1.1.4:8080 10.0.2.4:40000",
        "Deny securityRules/deny-from-db-subnet @ nsg-app-subnet/subnet",
    );
    check(
        "app1 in tcp 10.1.1.4:8080 10.0.1.4:40000",
        "Allow defaultSecurityRules/AllowVnetInBound @ nsg-app-nic/nic",
    );
    // vnet3 is not peered: its VirtualNetwork is itself only.
    check(
        "iso1 in tcp 10.2.1.4:80 10.0.1.4:40000",
        "Deny defaultSecurityRules/DenyAllInBound @ nsg-iso/nic",
    );
}

#[test]
fn verdict_carries_both_hops_and_a_reason() {
    let (nic, flow) = parse_flow("db1 in tcp 10.0.2.4:5432 10.0.1.5:40000");
    let v = network().flow_verify(&nic, &flow).unwrap();
    expect_test::expect![[r#"
        {
          "access": "Deny",
          "ruleName": "securityRules/deny-pg-from-web2",
          "networkSecurityGroup": {
            "id": "nsg-db-subnet",
            "name": "nsg-db-subnet"
          },
          "level": "Subnet",
          "established": false,
          "hops": [
            {
              "level": "Subnet",
              "direction": "Inbound",
              "networkInterface": "db1",
              "networkSecurityGroup": {
                "id": "nsg-db-subnet",
                "name": "nsg-db-subnet"
              },
              "access": "Deny",
              "ruleName": "securityRules/deny-pg-from-web2"
            },
            {
              "level": "NetworkInterface",
              "direction": "Inbound",
              "networkInterface": "db1",
              "networkSecurityGroup": {
                "id": "nsg-db-nic",
                "name": "nsg-db-nic"
              },
              "access": "Allow",
              "ruleName": "securityRules/allow-pg-from-web"
            }
          ],
          "reason": "inbound denied by securityRules/deny-pg-from-web2 of network security group 'nsg-db-subnet' at the subnet level"
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(&v).unwrap());
}

#[test]
fn query_errors() {
    let network = network();
    let (_, flow) = parse_flow("web1 in tcp 10.0.1.5:22 8.8.8.8:50000");
    assert_eq!(
        network.flow_verify("nope", &flow).unwrap_err(),
        QueryError::UnknownNic("nope".into())
    );
    expect_test::expect!["local address 10.0.1.5 is not the address of network interface 'web1' (10.0.1.4); give the nic's own address as local"]
        .assert_eq(&network.flow_verify("web1", &flow).unwrap_err().to_string());
}
