//! `strata-netpol`: the pure network-policy engine (no I/O). It validates virtual networks,
//! network interfaces, network security groups (NSGs) and application security groups with
//! Azure's semantics, compiles each NSG into a bit-vector classifier, and answers:
//! - [`Network::flow_verify`] — Azure's IP flow verify: allow/deny plus the deciding rule
//!   (`securityRules/<name>` or `defaultSecurityRules/<name>`), its NSG and level;
//! - [`Network::effective_rules`] — a NIC's rules per level, tags and ASGs expanded to CIDRs;
//! - [`Network::sources_reaching`] — which sources can reach a NIC on a port, symbolically;
//! - [`Network::can_reach`] — can NIC A reach NIC B, hop by hop, or why not.
//!
//! Decisions are values ([`Verdict`], [`PathReachability`]); only malformed input
//! ([`ValidationError`]) or an unknown NIC ([`QueryError`]) is an error. IPv4 only. The
//! semantics are spelled out in [`network`]'s module documentation; validation rules in
//! [`validate`]'s.
//!
//! ```
//! use strata_netpol::*;
//! let topology: Topology = serde_json::from_str(r#"{
//!   "virtualNetworks": [{ "id": "vnet1", "addressSpace": { "addressPrefixes": ["10.0.0.0/16"] },
//!     "subnets": [{ "name": "web", "addressPrefix": "10.0.1.0/24" }] }],
//!   "networkSecurityGroups": [{ "id": "nsg1", "securityRules": [] }],
//!   "networkInterfaces": [{ "id": "nic1", "subnet": { "id": "vnet1/subnets/web" },
//!     "privateIpAddress": "10.0.1.4", "networkSecurityGroup": { "id": "nsg1" } }]
//! }"#).unwrap();
//! let network = Network::new(&topology).unwrap();
//! let flow = Flow::new(Direction::Inbound, FlowProtocol::Tcp,
//!     "10.0.1.4:22".parse().unwrap(), "203.0.113.9:50000".parse().unwrap());
//! let verdict = network.flow_verify("nic1", &flow).unwrap();
//! assert_eq!(verdict.access, Access::Deny);
//! assert_eq!(verdict.rule_name.as_deref(), Some("defaultSecurityRules/DenyAllInBound"));
//! ```

mod build;
mod classify;
pub mod model;
pub mod network;
pub mod ranges;
pub mod reach;
pub mod validate;

pub use model::{
    Access, AddressSpace, ApplicationSecurityGroup, Direction, FlowProtocol, NetworkInterface,
    NetworkSecurityGroup, Protocol, SecurityRule, SubResource, Subnet, Topology, VirtualNetwork,
    VirtualNetworkPeering,
};
pub use network::{
    Decision, EffectiveNsg, EffectiveRule, EffectiveRules, Flow, Hit, Hop, Level, Network,
    NicHandle, NsgRef, QueryError, Verdict,
};
pub use reach::{LevelRule, PathReachability, SourceEntry, SourceReachability};
pub use validate::{ValidationError, validate_network_security_group, validate_security_rule};
