//! Effective rules: the fixture's NICs as tables (long expansions abbreviated), and the JSON
//! shape of one rule.

use expect_test::expect;
use strata_netpol::{EffectiveNsg, Network};

use crate::support::network;

fn short(list: &[String]) -> String {
    if list.len() <= 3 {
        list.join(",")
    } else {
        format!("{},… ({} prefixes)", list[0], list.len())
    }
}

fn table(network: &Network, nic: &str) -> String {
    let rules = network.effective_rules(nic).unwrap();
    let mut out = String::new();
    for (dir, levels) in [("inbound", &rules.inbound), ("outbound", &rules.outbound)] {
        for EffectiveNsg {
            level,
            network_security_group,
            rules,
        } in levels
        {
            let name = network_security_group
                .as_ref()
                .map_or("(none: allows)", |n| n.name.as_str());
            out += &format!("{dir} {level:?} {name}\n");
            for r in rules {
                out += &format!(
                    "  {:>5} {:?} {:?} {} src {}={} sport {} dst {}={} dport {}\n",
                    r.priority,
                    r.access,
                    r.protocol,
                    r.name,
                    r.source_address_prefixes.join(","),
                    short(&r.expanded_source_address_prefix),
                    r.source_port_ranges.join(","),
                    r.destination_address_prefixes.join(","),
                    short(&r.expanded_destination_address_prefix),
                    r.destination_port_ranges.join(","),
                );
            }
        }
    }
    out
}

#[test]
fn web1() {
    expect![[r#"
        inbound Subnet nsg-web-subnet
            100 Allow Tcp securityRules/allow-https src Internet=1.0.0.0/8,… (103 prefixes) sport * dst *=0.0.0.0/0 dport 443
            110 Allow Tcp securityRules/allow-admin-ssh src 81.2.69.0/24=81.2.69.0/24 sport * dst *=0.0.0.0/0 dport 22
            200 Deny Tcp securityRules/deny-telnet src *=0.0.0.0/0 sport * dst *=0.0.0.0/0 dport 23
          65000 Allow Any defaultSecurityRules/AllowVnetInBound src VirtualNetwork=10.0.0.0/15 sport * dst VirtualNetwork=10.0.0.0/15 dport *
          65001 Allow Any defaultSecurityRules/AllowAzureLoadBalancerInBound src AzureLoadBalancer=168.63.129.16/32 sport * dst *=0.0.0.0/0 dport *
          65500 Deny Any defaultSecurityRules/DenyAllInBound src *=0.0.0.0/0 sport * dst *=0.0.0.0/0 dport *
        inbound NetworkInterface nsg-web-nic
            100 Allow Tcp securityRules/allow-https-nic src *=0.0.0.0/0 sport * dst asg-web=10.0.1.4/31 dport 443,8443-8444
            120 Allow Icmp securityRules/allow-icmp-vnet src VirtualNetwork=10.0.0.0/15 sport * dst *=0.0.0.0/0 dport *
          65000 Allow Any defaultSecurityRules/AllowVnetInBound src VirtualNetwork=10.0.0.0/15 sport * dst VirtualNetwork=10.0.0.0/15 dport *
          65001 Allow Any defaultSecurityRules/AllowAzureLoadBalancerInBound src AzureLoadBalancer=168.63.129.16/32 sport * dst *=0.0.0.0/0 dport *
          65500 Deny Any defaultSecurityRules/DenyAllInBound src *=0.0.0.0/0 sport * dst *=0.0.0.0/0 dport *
        outbound NetworkInterface nsg-web-nic
            100 Deny Tcp securityRules/deny-smtp-out src *=0.0.0.0/0 sport * dst Internet=1.0.0.0/8,… (103 prefixes) dport 25
          65000 Allow Any defaultSecurityRules/AllowVnetOutBound src VirtualNetwork=10.0.0.0/15 sport * dst VirtualNetwork=10.0.0.0/15 dport *
          65001 Allow Any defaultSecurityRules/AllowInternetOutBound src *=0.0.0.0/0 sport * dst Internet=1.0.0.0/8,… (103 prefixes) dport *
          65500 Deny Any defaultSecurityRules/DenyAllOutBound src *=0.0.0.0/0 sport * dst *=0.0.0.0/0 dport *
        outbound Subnet nsg-web-subnet
          65000 Allow Any defaultSecurityRules/AllowVnetOutBound src VirtualNetwork=10.0.0.0/15 sport * dst VirtualNetwork=10.0.0.0/15 dport *
          65001 Allow Any defaultSecurityRules/AllowInternetOutBound src *=0.0.0.0/0 sport * dst Internet=1.0.0.0/8,… (103 prefixes) dport *
          65500 Deny Any defaultSecurityRules/DenyAllOutBound src *=0.0.0.0/0 sport * dst *=0.0.0.0/0 dport *
    "#]]
    .assert_eq(&table(&network(), "web1"));
}

#[test]
fn db1_and_bare1() {
    expect![[r#"
        inbound Subnet nsg-db-subnet
            100 Deny Tcp securityRules/deny-pg-from-web2 src 10.0.1.5=10.0.1.5/32 sport * dst *=0.0.0.0/0 dport 5432
          65000 Allow Any defaultSecurityRules/AllowVnetInBound src VirtualNetwork=10.0.0.0/15 sport * dst VirtualNetwork=10.0.0.0/15 dport *
          65001 Allow Any defaultSecurityRules/AllowAzureLoadBalancerInBound src AzureLoadBalancer=168.63.129.16/32 sport * dst *=0.0.0.0/0 dport *
          65500 Deny Any defaultSecurityRules/DenyAllInBound src *=0.0.0.0/0 sport * dst *=0.0.0.0/0 dport *
        inbound NetworkInterface nsg-db-nic
            100 Allow Tcp securityRules/allow-pg-from-web src asg-web=10.0.1.4/31 sport * dst asg-db=10.0.2.4/32 dport 5432
           4000 Deny Any securityRules/deny-vnet-rest src VirtualNetwork=10.0.0.0/15 sport * dst *=0.0.0.0/0 dport *
          65000 Allow Any defaultSecurityRules/AllowVnetInBound src VirtualNetwork=10.0.0.0/15 sport * dst VirtualNetwork=10.0.0.0/15 dport *
          65001 Allow Any defaultSecurityRules/AllowAzureLoadBalancerInBound src AzureLoadBalancer=168.63.129.16/32 sport * dst *=0.0.0.0/0 dport *
          65500 Deny Any defaultSecurityRules/DenyAllInBound src *=0.0.0.0/0 sport * dst *=0.0.0.0/0 dport *
        outbound NetworkInterface nsg-db-nic
            100 Deny Any securityRules/deny-internet-out src *=0.0.0.0/0 sport * dst Internet=1.0.0.0/8,… (103 prefixes) dport *
          65000 Allow Any defaultSecurityRules/AllowVnetOutBound src VirtualNetwork=10.0.0.0/15 sport * dst VirtualNetwork=10.0.0.0/15 dport *
          65001 Allow Any defaultSecurityRules/AllowInternetOutBound src *=0.0.0.0/0 sport * dst Internet=1.0.0.0/8,… (103 prefixes) dport *
          65500 Deny Any defaultSecurityRules/DenyAllOutBound src *=0.0.0.0/0 sport * dst *=0.0.0.0/0 dport *
        outbound Subnet nsg-db-subnet
          65000 Allow Any defaultSecurityRules/AllowVnetOutBound src VirtualNetwork=10.0.0.0/15 sport * dst VirtualNetwork=10.0.0.0/15 dport *
          65001 Allow Any defaultSecurityRules/AllowInternetOutBound src *=0.0.0.0/0 sport * dst Internet=1.0.0.0/8,… (103 prefixes) dport *
          65500 Deny Any defaultSecurityRules/DenyAllOutBound src *=0.0.0.0/0 sport * dst *=0.0.0.0/0 dport *
        inbound Subnet (none: allows)
        inbound NetworkInterface (none: allows)
        outbound NetworkInterface (none: allows)
        outbound Subnet (none: allows)
    "#]]
    .assert_eq(&(table(&network(), "db1") + &table(&network(), "bare1")));
}

#[test]
fn json_shape() {
    let rules = network().effective_rules("db1").unwrap();
    expect![[r#"
        {
          "name": "securityRules/allow-pg-from-web",
          "priority": 100,
          "access": "Allow",
          "protocol": "Tcp",
          "sourceAddressPrefixes": [
            "asg-web"
          ],
          "expandedSourceAddressPrefix": [
            "10.0.1.4/31"
          ],
          "sourcePortRanges": [
            "*"
          ],
          "destinationAddressPrefixes": [
            "asg-db"
          ],
          "expandedDestinationAddressPrefix": [
            "10.0.2.4/32"
          ],
          "destinationPortRanges": [
            "5432"
          ]
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(&rules.inbound[1].rules[0]).unwrap());
    let tag = network().virtual_network_tag("web1").unwrap();
    assert_eq!(tag, ["10.0.0.0/15"]);
    assert_eq!(
        network().virtual_network_tag("iso1").unwrap(),
        ["10.2.0.0/16"]
    );
}
