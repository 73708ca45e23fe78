//! Reachability: which sources reach a NIC (snapshots), and NIC-to-NIC paths (one line each).

use expect_test::{Expect, expect};
use strata_netpol::{FlowProtocol, Network, SecurityRule, Topology};

use crate::support::{fixture, network, nsg, rule};

/// Long prefix lists (the Internet tag is ~100 CIDRs) are shown by their ends and count.
fn short(list: &[String]) -> String {
    if list.len() <= 4 {
        list.join(" ")
    } else {
        format!(
            "{} … {} ({} prefixes)",
            list[0],
            list[list.len() - 1],
            list.len()
        )
    }
}

fn sources(network: &Network, nic: &str, protocol: FlowProtocol, port: u16) -> String {
    let r = network.sources_reaching(nic, protocol, port).unwrap();
    let mut out = format!("sources: {}\n", short(&r.sources));
    for e in &r.entries {
        let rules: Vec<String> = e
            .rules
            .iter()
            .map(|l| l.rule_name.clone().unwrap_or_else(|| "(no nsg)".into()))
            .collect();
        out += &format!(
            "  {} sport {} via {}\n",
            short(&e.source_address_prefixes),
            e.source_port_ranges.join(","),
            rules.join(" + ")
        );
    }
    out
}

#[test]
fn ssh_to_web1_only_from_the_virtual_network() {
    // The subnet lets the admin prefix in, but the NIC has no allow for 22: only the
    // VirtualNetwork default rule admits anything (vnet1 + peered vnet2 = 10.0.0.0/15).
    expect![[r#"
        sources: 10.0.0.0/15 168.63.129.16/32
          10.0.0.0/15 sport * via defaultSecurityRules/AllowVnetInBound + defaultSecurityRules/AllowVnetInBound
          168.63.129.16/32 sport * via defaultSecurityRules/AllowAzureLoadBalancerInBound + defaultSecurityRules/AllowAzureLoadBalancerInBound
    "#]]
    .assert_eq(&sources(&network(), "web1", FlowProtocol::Tcp, 22));
}

#[test]
fn https_to_web1() {
    // Internet through both levels, the virtual network by AllowVnetInBound at the subnet.
    expect![[r#"
        sources: 1.0.0.0/8 … 208.0.0.0/4 (104 prefixes)
          1.0.0.0/8 … 208.0.0.0/4 (103 prefixes) sport * via securityRules/allow-https + securityRules/allow-https-nic
          10.0.0.0/15 sport * via defaultSecurityRules/AllowVnetInBound + securityRules/allow-https-nic
    "#]]
    .assert_eq(&sources(&network(), "web1", FlowProtocol::Tcp, 443));
}

#[test]
fn allow_at_priority_100_from_one_prefix_admits_exactly_that_prefix() {
    let mut t: Topology = fixture();
    let mut allow: SecurityRule = rule(serde_json::json!({
        "name": "allow-ssh-ops", "sourceAddressPrefix": "81.2.69.0/24", "destinationPortRange": "22"
    }));
    allow.priority = 100;
    nsg(&mut t, "nsg-iso").security_rules.push(allow);
    let network = Network::new(&t).unwrap();
    expect![[r#"
        sources: 10.2.0.0/16 81.2.69.0/24 168.63.129.16/32
          10.2.0.0/16 sport * via (no nsg) + defaultSecurityRules/AllowVnetInBound
          81.2.69.0/24 sport * via (no nsg) + securityRules/allow-ssh-ops
          168.63.129.16/32 sport * via (no nsg) + defaultSecurityRules/AllowAzureLoadBalancerInBound
    "#]]
    .assert_eq(&sources(&network, "iso1", FlowProtocol::Tcp, 22));
    // Before the rule: VirtualNetwork only.
    expect![[r#"
        sources: 10.2.0.0/16 168.63.129.16/32
          10.2.0.0/16 sport * via (no nsg) + defaultSecurityRules/AllowVnetInBound
          168.63.129.16/32 sport * via (no nsg) + defaultSecurityRules/AllowAzureLoadBalancerInBound
    "#]]
    .assert_eq(&sources(
        &crate::support::network(),
        "iso1",
        FlowProtocol::Tcp,
        22,
    ));
}

#[test]
fn source_ports_split_entries() {
    let mut t = fixture();
    nsg(&mut t, "nsg-iso")
        .security_rules
        .push(rule(serde_json::json!({
            "name": "dns-replies", "sourceAddressPrefix": "8.8.8.8", "sourcePortRange": "53",
            "protocol": "Udp", "destinationPortRange": "1024-65535"
        })));
    let network = Network::new(&t).unwrap();
    expect![[r#"
        sources: 8.8.8.8/32 10.2.0.0/16 168.63.129.16/32
          8.8.8.8/32 sport 53 via (no nsg) + securityRules/dns-replies
          10.2.0.0/16 sport * via (no nsg) + defaultSecurityRules/AllowVnetInBound
          168.63.129.16/32 sport * via (no nsg) + defaultSecurityRules/AllowAzureLoadBalancerInBound
    "#]]
    .assert_eq(&sources(&network, "iso1", FlowProtocol::Udp, 40000));
}

#[track_caller]
fn check_path(network: &Network, q: &str, expected: Expect) {
    let w: Vec<&str> = q.split_whitespace().collect();
    let protocol = match w[2] {
        "tcp" => FlowProtocol::Tcp,
        "udp" => FlowProtocol::Udp,
        _ => FlowProtocol::Icmp,
    };
    let port = w.get(3).map_or(0, |p| p.parse().unwrap());
    let r = network.can_reach(w[0], w[1], protocol, port, None).unwrap();
    let hops: Vec<String> = r
        .hops
        .iter()
        .map(|h| format!("{:?}:{}", h.access, h.rule_name.as_deref().unwrap_or("-")))
        .collect();
    expected.assert_eq(&format!(
        "{} | {} | {}",
        r.reachable,
        r.reason,
        hops.join(" ")
    ));
}

#[test]
fn nic_to_nic() {
    let n = network();
    check_path(
        &n,
        "web1 db1 tcp 5432",
        expect![
            "true | reachable: tcp 10.0.1.4:49152 -> 10.0.2.4:5432 is allowed at all four hops | Allow:defaultSecurityRules/AllowVnetOutBound Allow:defaultSecurityRules/AllowVnetOutBound Allow:defaultSecurityRules/AllowVnetInBound Allow:securityRules/allow-pg-from-web"
        ],
    );
    // Subnet deny + NIC allow still denies.
    check_path(
        &n,
        "web2 db1 tcp 5432",
        expect![
            "false | blocked: tcp 10.0.1.5:49152 -> 10.0.2.4:5432 is denied by securityRules/deny-pg-from-web2 of network security group 'nsg-db-subnet' (db1 subnet, Inbound) | Allow:defaultSecurityRules/AllowVnetOutBound Allow:defaultSecurityRules/AllowVnetOutBound Deny:securityRules/deny-pg-from-web2 Allow:securityRules/allow-pg-from-web"
        ],
    );
    check_path(
        &n,
        "web1 db1 tcp 22",
        expect![
            "false | blocked: tcp 10.0.1.4:49152 -> 10.0.2.4:22 is denied by securityRules/deny-vnet-rest of network security group 'nsg-db-nic' (db1 network interface, Inbound) | Allow:defaultSecurityRules/AllowVnetOutBound Allow:defaultSecurityRules/AllowVnetOutBound Allow:defaultSecurityRules/AllowVnetInBound Deny:securityRules/deny-vnet-rest"
        ],
    );
    // Peered: reachable across virtual networks.
    check_path(
        &n,
        "web1 app1 tcp 8080",
        expect![
            "true | reachable: tcp 10.0.1.4:49152 -> 10.1.1.4:8080 is allowed at all four hops | Allow:defaultSecurityRules/AllowVnetOutBound Allow:defaultSecurityRules/AllowVnetOutBound Allow:defaultSecurityRules/AllowVnetInBound Allow:defaultSecurityRules/AllowVnetInBound"
        ],
    );
    check_path(
        &n,
        "db1 app1 tcp 8080",
        expect![
            "false | blocked: tcp 10.0.2.4:49152 -> 10.1.1.4:8080 is denied by securityRules/deny-from-db-subnet of network security group 'nsg-app-subnet' (app1 subnet, Inbound) | Allow:defaultSecurityRules/AllowVnetOutBound Allow:defaultSecurityRules/AllowVnetOutBound Deny:securityRules/deny-from-db-subnet Allow:defaultSecurityRules/AllowVnetInBound"
        ],
    );
    // Not peered: not routed, whatever the rules say.
    check_path(
        &n,
        "web1 iso1 tcp 80",
        expect![
            "false | virtual networks 'vnet1' and 'vnet3' are not peered, so traffic between them is not routed; peer them in both directions | "
        ],
    );
    check_path(
        &n,
        "web1 web2 icmp",
        expect![
            "true | reachable: icmp 10.0.1.4 -> 10.0.1.5 is allowed at all four hops | Allow:defaultSecurityRules/AllowVnetOutBound Allow:defaultSecurityRules/AllowVnetOutBound Allow:defaultSecurityRules/AllowVnetInBound Allow:securityRules/allow-icmp-vnet"
        ],
    );
    check_path(
        &n,
        "bare1 web1 tcp 443",
        expect![
            "true | reachable: tcp 10.0.3.4:49152 -> 10.0.1.4:443 is allowed at all four hops | Allow:- Allow:- Allow:defaultSecurityRules/AllowVnetInBound Allow:securityRules/allow-https-nic"
        ],
    );
}

#[test]
fn peering_needs_both_sides() {
    let mut t = fixture();
    t.virtual_networks[1].virtual_network_peerings.clear();
    let n = Network::new(&t).unwrap();
    check_path(
        &n,
        "web1 app1 tcp 8080",
        expect![
            "false | virtual networks 'vnet1' and 'vnet2' are not peered, so traffic between them is not routed; peer them in both directions | "
        ],
    );
    // And vnet2 drops out of VirtualNetwork for vnet1's NICs.
    assert_eq!(n.virtual_network_tag("web1").unwrap(), ["10.0.0.0/16"]);
}
