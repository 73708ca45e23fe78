//! The network resources the engine reasons about, shaped like ARM's `properties` of
//! `Strata.Network` resources (camelCase, the same field names as Azure's `Microsoft.Network`):
//! virtual networks with subnets and peerings, network interfaces, network security groups with
//! their security rules, and application security groups.
//!
//! Resources are identified by `id` (the control plane passes ARM resource ids; tests use short
//! ones); a resource's name is the last `/` segment of its id. References are `{ "id": ... }`
//! objects like ARM's `SubResource`. Ids are compared exactly: the control plane canonicalizes
//! them before building a [`Topology`]. IPv4 only.
//!
//! Simplifications against ARM: a network interface has exactly one IP configuration (its
//! `subnet` and `privateIpAddress` sit on the interface itself), and a subnet has one
//! `addressPrefix`.

use serde::{Deserialize, Serialize};

/// A reference to another resource by id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubResource {
    pub id: String,
}

impl SubResource {
    pub fn new(id: impl Into<String>) -> Self {
        Self { id: id.into() }
    }
}

/// The last `/` segment of an id: the resource's name.
pub fn name_of(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// Everything the engine needs to answer questions about a set of NICs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    #[serde(default)]
    pub virtual_networks: Vec<VirtualNetwork>,
    #[serde(default)]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(default)]
    pub network_security_groups: Vec<NetworkSecurityGroup>,
    #[serde(default)]
    pub application_security_groups: Vec<ApplicationSecurityGroup>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNetwork {
    pub id: String,
    pub address_space: AddressSpace,
    #[serde(default)]
    pub subnets: Vec<Subnet>,
    #[serde(default)]
    pub virtual_network_peerings: Vec<VirtualNetworkPeering>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressSpace {
    pub address_prefixes: Vec<String>,
}

/// A subnet; its id is `<virtual network id>/subnets/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subnet {
    pub name: String,
    pub address_prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_security_group: Option<SubResource>,
}

/// One side of a peering. As in Azure, two virtual networks are connected only when each has a
/// peering to the other (Azure's `peeringState: Connected`), and peering is not transitive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNetworkPeering {
    pub name: String,
    pub remote_virtual_network: SubResource,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    pub id: String,
    /// `<virtual network id>/subnets/<name>`.
    pub subnet: SubResource,
    pub private_ip_address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_security_group: Option<SubResource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub application_security_groups: Vec<SubResource>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSecurityGroup {
    pub id: String,
    #[serde(default)]
    pub security_rules: Vec<SecurityRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSecurityGroup {
    pub id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn reverse(self) -> Self {
        match self {
            Self::Inbound => Self::Outbound,
            Self::Outbound => Self::Inbound,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Access {
    Allow,
    Deny,
}

/// A rule's protocol. `*` (also accepted as `Any`) matches every protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Esp,
    Ah,
    #[serde(rename = "*", alias = "Any")]
    Any,
}

impl Protocol {
    /// Whether the protocol has ports (only TCP and UDP do; `*` may).
    pub fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp | Self::Any)
    }

    pub fn matches(self, p: FlowProtocol) -> bool {
        match self {
            Self::Any => true,
            Self::Tcp => p == FlowProtocol::Tcp,
            Self::Udp => p == FlowProtocol::Udp,
            Self::Icmp => p == FlowProtocol::Icmp,
            Self::Esp => p == FlowProtocol::Esp,
            Self::Ah => p == FlowProtocol::Ah,
        }
    }
}

/// The protocol of a concrete flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FlowProtocol {
    Tcp,
    Udp,
    Icmp,
    Esp,
    Ah,
}

impl FlowProtocol {
    pub const ALL: [Self; 5] = [Self::Tcp, Self::Udp, Self::Icmp, Self::Esp, Self::Ah];

    /// Whether flows of this protocol carry ports (TCP and UDP).
    pub fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp)
    }
}

/// A security rule, as in ARM: each side is given by exactly one of the singular prefix, the
/// plural prefixes (an *augmented* rule) or application security groups; ports by exactly one
/// of the singular range or the plural ranges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityRule {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub priority: u32,
    pub direction: Direction,
    pub access: Access,
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_address_prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_application_security_groups: Vec<SubResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port_range: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_port_ranges: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_address_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_address_prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_application_security_groups: Vec<SubResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port_range: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_port_ranges: Vec<String>,
}

impl SecurityRule {
    /// A rule with `*` everywhere; set the fields you need.
    pub fn new(
        name: &str,
        priority: u32,
        direction: Direction,
        access: Access,
        protocol: Protocol,
    ) -> Self {
        let any = Some("*".to_owned());
        Self {
            name: name.to_owned(),
            description: String::new(),
            priority,
            direction,
            access,
            protocol,
            source_address_prefix: any.clone(),
            source_address_prefixes: Vec::new(),
            source_application_security_groups: Vec::new(),
            source_port_range: any.clone(),
            source_port_ranges: Vec::new(),
            destination_address_prefix: any.clone(),
            destination_address_prefixes: Vec::new(),
            destination_application_security_groups: Vec::new(),
            destination_port_range: any,
            destination_port_ranges: Vec::new(),
        }
    }
}
