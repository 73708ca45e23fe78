//! Validation: one line per bad input, `code: message`.

use expect_test::{Expect, expect};
use serde_json::{Value, json};
use strata_netpol::{
    Network, SubResource, Topology, validate_network_security_group, validate_security_rule,
};

use crate::support::{fixture, nsg, rule};

#[track_caller]
fn check_rule(overrides: Value, expected: Expect) {
    let got = match validate_security_rule(&rule(overrides)) {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("{}: {e}", e.code()),
    };
    expected.assert_eq(&got);
}

#[test]
fn security_rules() {
    check_rule(json!({}), expect!["ok"]);
    check_rule(
        json!({"sourceAddressPrefix": "10.0.0.1/8"}),
        expect![
            "AddressPrefixHostBitsSet: sourceAddressPrefix '10.0.0.1/8' of security rule 'r' has host bits set; use 10.0.0.0/8"
        ],
    );
    check_rule(
        json!({"sourceAddressPrefix": "10.0.0.0/33"}),
        expect![
            "InvalidAddressPrefix: sourceAddressPrefix '10.0.0.0/33' of security rule 'r' is not an ipv4 address or cidr prefix; use e.g. 10.0.0.0/16 or 10.0.0.4"
        ],
    );
    check_rule(
        json!({"sourceAddressPrefix": "10.0.0.256"}),
        expect![
            "InvalidAddressPrefix: sourceAddressPrefix '10.0.0.256' of security rule 'r' is not an ipv4 address or cidr prefix; use e.g. 10.0.0.0/16 or 10.0.0.4"
        ],
    );
    check_rule(
        json!({"sourceAddressPrefix": null, "sourceAddressPrefixes": ["10.0.0.0/8", "fe80::/10"]}),
        expect![
            "UnknownServiceTag: sourceAddressPrefixes 'fe80::/10' of security rule 'r' is not a supported service tag; use VirtualNetwork, Internet, AzureLoadBalancer or '*'"
        ],
    );
    check_rule(
        json!({"sourceAddressPrefix": "Storage"}),
        expect![
            "UnknownServiceTag: sourceAddressPrefix 'Storage' of security rule 'r' is not a supported service tag; use VirtualNetwork, Internet, AzureLoadBalancer or '*'"
        ],
    );
    check_rule(
        json!({"sourceAddressPrefix": "virtualnetwork"}),
        expect!["ok"],
    );
    check_rule(
        json!({"sourceAddressPrefix": "LoadBalancer"}),
        expect!["ok"],
    );
    check_rule(
        json!({"sourceAddressPrefix": null, "sourceAddressPrefixes": ["10.0.0.0/8", "VirtualNetwork"]}),
        expect![
            "ServiceTagNotAlone: sourceAddressPrefixes of security rule 'r' combines 'VirtualNetwork' with other entries; a service tag or '*' must be the only entry"
        ],
    );
    check_rule(
        json!({"sourceAddressPrefixes": ["10.0.0.0/8"]}),
        expect![
            "AmbiguousSecurityRuleField: security rule 'r' sets both sourceAddressPrefix and sourceAddressPrefixes; set only one"
        ],
    );
    check_rule(
        json!({"sourceApplicationSecurityGroups": [{"id": "asg"}]}),
        expect![
            "ApplicationSecurityGroupsMixedWithPrefixes: security rule 'r' gives both sourceApplicationSecurityGroups and source address prefixes; use one or the other"
        ],
    );
    check_rule(
        json!({"destinationApplicationSecurityGroups": [{"id": "asg"}], "destinationAddressPrefix": null}),
        expect!["ok"],
    );
    check_rule(
        json!({"destinationAddressPrefix": null}),
        expect![
            "MissingSecurityRuleField: security rule 'r' has no destination; set destinationAddressPrefix, destinationAddressPrefixes or destinationApplicationSecurityGroups"
        ],
    );
    check_rule(
        json!({"destinationPortRange": null}),
        expect![
            "MissingSecurityRuleField: security rule 'r' has no destination port range; set destinationPortRange or destinationPortRanges"
        ],
    );
    check_rule(
        json!({"destinationPortRange": "2000-1000"}),
        expect![
            "InvalidPortRange: destinationPortRange '2000-1000' of security rule 'r' is not a port range; use '*', a port (0-65535) or 'start-end' with start <= end"
        ],
    );
    check_rule(
        json!({"destinationPortRange": "65536"}),
        expect![
            "InvalidPortRange: destinationPortRange '65536' of security rule 'r' is not a port range; use '*', a port (0-65535) or 'start-end' with start <= end"
        ],
    );
    check_rule(
        json!({"destinationPortRange": null, "destinationPortRanges": ["80", "*"]}),
        expect![
            "InvalidPortRange: destinationPortRanges '*' of security rule 'r' is not a port range; use '*', a port (0-65535) or 'start-end' with start <= end"
        ],
    );
    check_rule(
        json!({"destinationPortRange": null, "destinationPortRanges": ["80", "8000-8080", "443"]}),
        expect!["ok"],
    );
    check_rule(
        json!({"sourcePortRange": "-1"}),
        expect![
            "InvalidPortRange: sourcePortRange '-1' of security rule 'r' is not a port range; use '*', a port (0-65535) or 'start-end' with start <= end"
        ],
    );
    check_rule(
        json!({"protocol": "Icmp"}),
        expect![
            "PortsOnPortlessProtocol: security rule 'r' names ports but protocol Icmp has none; use '*' for its port ranges"
        ],
    );
    check_rule(
        json!({"protocol": "Esp", "destinationPortRange": "0-65535"}),
        expect!["ok"],
    );
    check_rule(
        json!({"priority": 99}),
        expect![
            "SecurityRulePriorityOutOfRange: priority 99 of security rule 'r' is outside 100-4096; pick a priority in that range"
        ],
    );
    check_rule(
        json!({"priority": 4097}),
        expect![
            "SecurityRulePriorityOutOfRange: priority 4097 of security rule 'r' is outside 100-4096; pick a priority in that range"
        ],
    );
    check_rule(json!({"priority": 4096}), expect!["ok"]);
    check_rule(
        json!({"name": "-bad"}),
        expect![
            "InvalidSecurityRuleName: security rule name '-bad' of security rule '-bad' is invalid; use 1-80 letters, digits, '_', '.' or '-', starting with a letter, digit or '_' and ending with a letter, digit or '_'"
        ],
    );
}

#[test]
fn guardrail_management_ports() {
    let open =
        |src: &str, port: &str| json!({"sourceAddressPrefix": src, "destinationPortRange": port});
    check_rule(
        open("*", "22"),
        expect![
            "ManagementPortExposedToInternet: security rule 'r' allows 22 inbound from '*'; strata refuses management ports open to the internet: restrict the source to your own prefixes"
        ],
    );
    check_rule(
        open("Internet", "3389"),
        expect![
            "ManagementPortExposedToInternet: security rule 'r' allows 3389 inbound from 'Internet'; strata refuses management ports open to the internet: restrict the source to your own prefixes"
        ],
    );
    check_rule(
        open("0.0.0.0/0", "5980-5990"),
        expect![
            "ManagementPortExposedToInternet: security rule 'r' allows 5985 inbound from '0.0.0.0/0'; strata refuses management ports open to the internet: restrict the source to your own prefixes"
        ],
    );
    check_rule(
        json!({"sourceAddressPrefix": null, "sourceAddressPrefixes": ["0.0.0.0/1", "128.0.0.0/1"], "destinationPortRange": "*"}),
        expect![
            "ManagementPortExposedToInternet: security rule 'r' allows 22 inbound from '0.0.0.0/0'; strata refuses management ports open to the internet: restrict the source to your own prefixes"
        ],
    );
    check_rule(
        json!({"sourceAddressPrefix": "*", "destinationPortRange": "5986", "protocol": "*"}),
        expect![
            "ManagementPortExposedToInternet: security rule 'r' allows 5986 inbound from '*'; strata refuses management ports open to the internet: restrict the source to your own prefixes"
        ],
    );
    // Not the guardrail's business: a specific source, a deny, outbound, another port.
    check_rule(open("81.2.69.0/24", "22"), expect!["ok"]);
    check_rule(open("VirtualNetwork", "22"), expect!["ok"]);
    check_rule(
        json!({"sourceAddressPrefix": "*", "destinationPortRange": "22", "access": "Deny"}),
        expect!["ok"],
    );
    check_rule(
        json!({"sourceAddressPrefix": "*", "destinationPortRange": "22", "direction": "Outbound"}),
        expect!["ok"],
    );
    check_rule(open("*", "443"), expect!["ok"]);
    check_rule(
        json!({"sourceAddressPrefix": "*", "protocol": "Icmp", "destinationPortRange": "*"}),
        expect!["ok"],
    );
}

#[test]
fn network_security_groups() {
    let mut t = fixture();
    let n = nsg(&mut t, "nsg-web-nic");
    let mut dup = n.security_rules[0].clone();
    dup.name = "other".into();
    n.security_rules.push(dup.clone());
    expect!["DuplicateSecurityRulePriority: security rules 'allow-https-nic' and 'other' of network security group 'nsg-web-nic' both have priority 100 Inbound; each direction needs distinct priorities"]
        .assert_eq(&validate_network_security_group(n).map_err(|e| format!("{}: {e}", e.code())).unwrap_err());
    // The same priority in the other direction is fine.
    n.security_rules.last_mut().unwrap().direction = strata_netpol::Direction::Outbound;
    n.security_rules.last_mut().unwrap().priority = 101;
    assert_eq!(validate_network_security_group(n), Ok(()));
    n.security_rules.last_mut().unwrap().name = "Allow-HTTPS-NIC".into();
    expect!["DuplicateSecurityRuleName: network security group 'nsg-web-nic' has two security rules named 'Allow-HTTPS-NIC'; rule names must be unique"]
        .assert_eq(&validate_network_security_group(n).map_err(|e| format!("{}: {e}", e.code())).unwrap_err());
}

#[track_caller]
fn check_topology(change: impl FnOnce(&mut Topology), expected: Expect) {
    let mut t = fixture();
    change(&mut t);
    let got = match Network::new(&t) {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("{}: {e}", e.code()),
    };
    expected.assert_eq(&got);
}

fn vnet<'a>(t: &'a mut Topology, id: &str) -> &'a mut strata_netpol::VirtualNetwork {
    t.virtual_networks.iter_mut().find(|v| v.id == id).unwrap()
}

fn nic<'a>(t: &'a mut Topology, id: &str) -> &'a mut strata_netpol::NetworkInterface {
    t.network_interfaces
        .iter_mut()
        .find(|v| v.id == id)
        .unwrap()
}

#[test]
fn topologies() {
    check_topology(|_| {}, expect!["ok"]);
    check_topology(
        |t| {
            vnet(t, "vnet1")
                .address_space
                .address_prefixes
                .push("10.0.128.0/17".into())
        },
        expect![
            "OverlappingAddressSpace: address prefixes '10.0.0.0/16' and '10.0.128.0/17' of virtual network 'vnet1' overlap; address spaces must be disjoint"
        ],
    );
    check_topology(
        |t| vnet(t, "vnet1").address_space.address_prefixes[0] = "10.0.0.0/15".into(),
        expect![
            "OverlappingPeeredAddressSpace: peered virtual networks 'vnet1' and 'vnet2' have overlapping address spaces (10.0.0.0/15 and 10.1.0.0/16); peer only disjoint networks"
        ],
    );
    check_topology(
        |t| vnet(t, "vnet1").address_space.address_prefixes[0] = "10.1.0.0/15".into(),
        expect![
            "AddressPrefixHostBitsSet: addressPrefixes '10.1.0.0/15' of virtual network 'vnet1' has host bits set; use 10.0.0.0/15"
        ],
    );
    check_topology(
        |t| vnet(t, "vnet1").address_space.address_prefixes.clear(),
        expect![
            "EmptyAddressSpace: virtual network 'vnet1' has no address prefixes; give addressSpace.addressPrefixes at least one cidr"
        ],
    );
    check_topology(
        |t| vnet(t, "vnet1").subnets[1].address_prefix = "10.0.1.128/25".into(),
        expect![
            "OverlappingSubnets: subnets 'web' (10.0.1.0/24) and 'db' (10.0.1.128/25) of virtual network 'vnet1' overlap; pick disjoint prefixes"
        ],
    );
    check_topology(
        |t| vnet(t, "vnet1").subnets[1].address_prefix = "10.5.2.0/24".into(),
        expect![
            "SubnetOutsideVirtualNetwork: subnet 'db' prefix 10.5.2.0/24 is not inside the address space of virtual network 'vnet1'"
        ],
    );
    check_topology(
        |t| vnet(t, "vnet1").subnets[2].address_prefix = "10.0.3.0/30".into(),
        expect![
            "SubnetTooSmall: subnet 'bare' prefix 10.0.3.0/30 is too small; use /29 or larger (5 addresses of each subnet are reserved)"
        ],
    );
    check_topology(
        |t| vnet(t, "vnet2").address_space.address_prefixes[0] = "10.0.0.0/8".into(),
        expect![
            "OverlappingPeeredAddressSpace: peered virtual networks 'vnet1' and 'vnet2' have overlapping address spaces (10.0.0.0/16 and 10.0.0.0/8); peer only disjoint networks"
        ],
    );
    check_topology(
        |t| {
            let v = vnet(t, "vnet2");
            v.address_space.address_prefixes[0] = "10.0.0.0/8".into();
            v.subnets[0].address_prefix = "10.1.1.0/24".into();
        },
        expect![
            "OverlappingPeeredAddressSpace: peered virtual networks 'vnet1' and 'vnet2' have overlapping address spaces (10.0.0.0/16 and 10.0.0.0/8); peer only disjoint networks"
        ],
    );
    check_topology(
        |t| {
            vnet(t, "vnet2").virtual_network_peerings[0].remote_virtual_network =
                SubResource::new("vnet9");
        },
        expect![
            "UnknownReference: peering 'to-vnet1' of virtual network 'vnet2' refers to virtual network 'vnet9', which does not exist"
        ],
    );
    check_topology(
        |t| nic(t, "web1").private_ip_address = "10.0.2.9".into(),
        expect![
            "PrivateIpAddressOutsideSubnet: private ip address 10.0.2.9 of network interface 'web1' is outside its subnet 10.0.1.0/24"
        ],
    );
    check_topology(
        |t| nic(t, "web1").private_ip_address = "10.0.1.3".into(),
        expect![
            "PrivateIpAddressReserved: private ip address 10.0.1.3 of network interface 'web1' is reserved in subnet 10.0.1.0/24 (the first four and the last address are); pick another"
        ],
    );
    check_topology(
        |t| nic(t, "web1").private_ip_address = "10.0.1.255".into(),
        expect![
            "PrivateIpAddressReserved: private ip address 10.0.1.255 of network interface 'web1' is reserved in subnet 10.0.1.0/24 (the first four and the last address are); pick another"
        ],
    );
    check_topology(
        |t| nic(t, "web1").private_ip_address = "10.0.1.5".into(),
        expect![
            "DuplicatePrivateIpAddress: network interfaces 'web1' and 'web2' both use 10.0.1.5 in virtual network 'vnet1'"
        ],
    );
    check_topology(
        |t| nic(t, "web1").private_ip_address = "10.0.1.x".into(),
        expect![
            "InvalidPrivateIpAddress: private ip address '10.0.1.x' of network interface 'web1' is not an ipv4 address"
        ],
    );
    check_topology(
        |t| nic(t, "web1").subnet = SubResource::new("vnet1/subnets/nope"),
        expect![
            "UnknownReference: network interface 'web1' refers to subnet 'vnet1/subnets/nope', which does not exist"
        ],
    );
    check_topology(
        |t| nic(t, "web1").network_security_group = Some(SubResource::new("nsg-nope")),
        expect![
            "UnknownReference: network interface 'web1' refers to network security group 'nsg-nope', which does not exist"
        ],
    );
    check_topology(
        |t| {
            nic(t, "app1")
                .application_security_groups
                .push(SubResource::new("asg-web"))
        },
        expect![
            "ApplicationSecurityGroupSpansVirtualNetworks: application security group 'asg-web' has members in virtual networks 'vnet1' and 'vnet2'; all members of an application security group must be in one virtual network"
        ],
    );
    check_topology(
        |t| {
            t.application_security_groups
                .push(strata_netpol::ApplicationSecurityGroup {
                    id: "asg-app".into(),
                });
            nic(t, "app1")
                .application_security_groups
                .push(SubResource::new("asg-app"));
            nsg(t, "nsg-db-nic").security_rules[0].source_application_security_groups =
                vec![SubResource::new("asg-app")];
        },
        expect![
            "SecurityRuleSpansVirtualNetworks: security rule 'allow-pg-from-web' of network security group 'nsg-db-nic' uses application security groups from virtual networks 'vnet2' and 'vnet1'; the groups of one rule must be in one virtual network"
        ],
    );
    check_topology(
        |t| {
            nsg(t, "nsg-db-nic").security_rules[0].source_application_security_groups =
                vec![SubResource::new("asg-nope")]
        },
        expect![
            "UnknownReference: security rule 'allow-pg-from-web' of network security group 'nsg-db-nic' refers to application security group 'asg-nope', which does not exist"
        ],
    );
    check_topology(
        |t| {
            vnet(t, "vnet2").address_space.address_prefixes[0] = "10.0.0.0/8".into();
            vnet(t, "vnet1").address_space.address_prefixes[0] = "10.0.0.0/16".into();
            vnet(t, "vnet2").subnets[0].address_prefix = "10.9.1.0/24".into();
            nic(t, "app1").private_ip_address = "10.9.1.4".into();
        },
        expect![
            "OverlappingPeeredAddressSpace: peered virtual networks 'vnet1' and 'vnet2' have overlapping address spaces (10.0.0.0/16 and 10.0.0.0/8); peer only disjoint networks"
        ],
    );
    check_topology(
        |t| {
            let n = t.network_security_groups[0].clone();
            t.network_security_groups.push(n);
        },
        expect![
            "DuplicateId: network security group id 'nsg-web-subnet' is used twice; ids must be unique"
        ],
    );
}
