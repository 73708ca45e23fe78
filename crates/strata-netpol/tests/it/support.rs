//! The fixture topology every test starts from, and small helpers to change it.
//!
//! ```text
//! vnet1 10.0.0.0/16  <── peered both ways ──>  vnet2 10.1.0.0/16        vnet3 10.2.0.0/16 (alone)
//!   web  10.0.1.0/24 [nsg-web-subnet]            app 10.1.1.0/24 [nsg-app-subnet]   iso 10.2.1.0/24
//!     web1 10.0.1.4 [nsg-web-nic] asg-web          app1 10.1.1.4 [nsg-app-nic]        iso1 10.2.1.4 [nsg-iso]
//!     web2 10.0.1.5 [nsg-web-nic] asg-web
//!   db   10.0.2.0/24 [nsg-db-subnet]
//!     db1  10.0.2.4 [nsg-db-nic] asg-db
//!   bare 10.0.3.0/24 (no NSG)
//!     bare1 10.0.3.4 (no NSG)
//! ```

use serde_json::{Value, json};
use strata_netpol::{Network, SecurityRule, Topology};

pub const FIXTURE: &str = r#"{
  "virtualNetworks": [
    { "id": "vnet1", "addressSpace": { "addressPrefixes": ["10.0.0.0/16"] },
      "subnets": [
        { "name": "web", "addressPrefix": "10.0.1.0/24", "networkSecurityGroup": { "id": "nsg-web-subnet" } },
        { "name": "db", "addressPrefix": "10.0.2.0/24", "networkSecurityGroup": { "id": "nsg-db-subnet" } },
        { "name": "bare", "addressPrefix": "10.0.3.0/24" } ],
      "virtualNetworkPeerings": [ { "name": "to-vnet2", "remoteVirtualNetwork": { "id": "vnet2" } } ] },
    { "id": "vnet2", "addressSpace": { "addressPrefixes": ["10.1.0.0/16"] },
      "subnets": [ { "name": "app", "addressPrefix": "10.1.1.0/24", "networkSecurityGroup": { "id": "nsg-app-subnet" } } ],
      "virtualNetworkPeerings": [ { "name": "to-vnet1", "remoteVirtualNetwork": { "id": "vnet1" } } ] },
    { "id": "vnet3", "addressSpace": { "addressPrefixes": ["10.2.0.0/16"] },
      "subnets": [ { "name": "iso", "addressPrefix": "10.2.1.0/24" } ] }
  ],
  "applicationSecurityGroups": [ { "id": "asg-web" }, { "id": "asg-db" } ],
  "networkInterfaces": [
    { "id": "web1", "subnet": { "id": "vnet1/subnets/web" }, "privateIpAddress": "10.0.1.4",
      "networkSecurityGroup": { "id": "nsg-web-nic" }, "applicationSecurityGroups": [ { "id": "asg-web" } ] },
    { "id": "web2", "subnet": { "id": "vnet1/subnets/web" }, "privateIpAddress": "10.0.1.5",
      "networkSecurityGroup": { "id": "nsg-web-nic" }, "applicationSecurityGroups": [ { "id": "asg-web" } ] },
    { "id": "db1", "subnet": { "id": "vnet1/subnets/db" }, "privateIpAddress": "10.0.2.4",
      "networkSecurityGroup": { "id": "nsg-db-nic" }, "applicationSecurityGroups": [ { "id": "asg-db" } ] },
    { "id": "bare1", "subnet": { "id": "vnet1/subnets/bare" }, "privateIpAddress": "10.0.3.4" },
    { "id": "app1", "subnet": { "id": "vnet2/subnets/app" }, "privateIpAddress": "10.1.1.4",
      "networkSecurityGroup": { "id": "nsg-app-nic" } },
    { "id": "iso1", "subnet": { "id": "vnet3/subnets/iso" }, "privateIpAddress": "10.2.1.4",
      "networkSecurityGroup": { "id": "nsg-iso" } }
  ],
  "networkSecurityGroups": [
    { "id": "nsg-web-subnet", "securityRules": [
      { "name": "allow-https", "priority": 100, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
        "sourceAddressPrefix": "Internet", "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "443" },
      { "name": "allow-admin-ssh", "priority": 110, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
        "sourceAddressPrefix": "81.2.69.0/24", "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "22" },
      { "name": "deny-telnet", "priority": 200, "direction": "Inbound", "access": "Deny", "protocol": "Tcp",
        "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "23" } ] },
    { "id": "nsg-web-nic", "securityRules": [
      { "name": "allow-https-nic", "priority": 100, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
        "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationApplicationSecurityGroups": [ { "id": "asg-web" } ],
        "destinationPortRanges": ["443", "8443-8444"] },
      { "name": "allow-icmp-vnet", "priority": 120, "direction": "Inbound", "access": "Allow", "protocol": "Icmp",
        "sourceAddressPrefix": "VirtualNetwork", "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "*" },
      { "name": "deny-smtp-out", "priority": 100, "direction": "Outbound", "access": "Deny", "protocol": "Tcp",
        "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "Internet", "destinationPortRange": "25" } ] },
    { "id": "nsg-db-subnet", "securityRules": [
      { "name": "deny-pg-from-web2", "priority": 100, "direction": "Inbound", "access": "Deny", "protocol": "Tcp",
        "sourceAddressPrefix": "10.0.1.5", "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "5432" } ] },
    { "id": "nsg-db-nic", "securityRules": [
      { "name": "allow-pg-from-web", "priority": 100, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
        "sourceApplicationSecurityGroups": [ { "id": "asg-web" } ], "sourcePortRange": "*",
        "destinationApplicationSecurityGroups": [ { "id": "asg-db" } ], "destinationPortRange": "5432" },
      { "name": "deny-vnet-rest", "priority": 4000, "direction": "Inbound", "access": "Deny", "protocol": "*",
        "sourceAddressPrefix": "VirtualNetwork", "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "*" },
      { "name": "deny-internet-out", "priority": 100, "direction": "Outbound", "access": "Deny", "protocol": "*",
        "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "Internet", "destinationPortRange": "*" } ] },
    { "id": "nsg-app-subnet", "securityRules": [
      { "name": "deny-from-db-subnet", "priority": 100, "direction": "Inbound", "access": "Deny", "protocol": "*",
        "sourceAddressPrefixes": ["10.0.2.0/24", "10.0.4.0/24"], "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "*" } ] },
    { "id": "nsg-app-nic", "securityRules": [] },
    { "id": "nsg-iso", "securityRules": [] }
  ]
}"#;

pub fn fixture() -> Topology {
    serde_json::from_str(FIXTURE).unwrap()
}

pub fn network() -> Network {
    Network::new(&fixture()).unwrap()
}

/// The NSG with this id.
pub fn nsg<'a>(t: &'a mut Topology, id: &str) -> &'a mut strata_netpol::NetworkSecurityGroup {
    t.network_security_groups
        .iter_mut()
        .find(|n| n.id == id)
        .unwrap()
}

/// A rule from JSON fields laid over an inbound TCP allow of 10.0.0.0/8 to port 443 named `r`
/// at priority 100 (`null` removes a field).
pub fn rule(overrides: Value) -> SecurityRule {
    let mut base = json!({
        "name": "r", "priority": 100, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
        "sourceAddressPrefix": "10.0.0.0/8", "sourcePortRange": "*",
        "destinationAddressPrefix": "*", "destinationPortRange": "443"
    });
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    serde_json::from_value(base).unwrap()
}
