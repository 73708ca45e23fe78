//! Validation of security rules and network security groups, and their parsed form.
//!
//! Checks what Azure checks — rule names, priority 100–4096, one priority per direction per
//! NSG, well-formed IPv4 prefixes without host bits, port ranges within 0–65535 with
//! `start <= end`, exactly one way of giving each side (singular prefix, plural prefixes, or
//! application security groups; never prefixes mixed with ASGs), a service tag or `*` only on
//! its own — plus Strata's choices, each with its own error code:
//! - **guardrail** (`ManagementPortExposed`): an inbound Allow rule for TCP, UDP or `*` whose
//!   source is `*`, `Internet` or prefixes covering the whole public IPv4 space and whose
//!   destination ports include 22 (SSH), 3389 (RDP), 5985 or 5986 (WinRM) is refused;
//! - ports on ICMP, ESP or AH rules must be `*` (those protocols have no ports; Strata refuses a
//!   rule that could never match rather than store it).
//!
//! Topology-wide checks (address spaces, subnets, NIC addresses, references, ASG placement)
//! are made by [`crate::Network::new`].

use crate::model::{Access, Direction, NetworkSecurityGroup, Protocol, SecurityRule, name_of};
use crate::ranges::{PrefixError, Ranges, all_addresses, all_ports, parse_prefix};

/// The ports Strata never lets an inbound rule open to the whole internet.
pub const MANAGEMENT_PORTS: [u16; 4] = [22, 3389, 5985, 5986];

/// Why a resource was refused. Messages are lowercase, name the bad input and say what to do;
/// [`ValidationError::code`] gives a stable code for the API's error body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error(
        "{field} '{value}' of {at} is not an ipv4 address or cidr prefix; use e.g. 10.0.0.0/16 or 10.0.0.4"
    )]
    MalformedPrefix {
        at: String,
        field: &'static str,
        value: String,
    },
    #[error("{field} '{value}' of {at} has host bits set; use {network}")]
    HostBitsSet {
        at: String,
        field: &'static str,
        value: String,
        network: String,
    },
    #[error(
        "{field} '{value}' of {at} is not a supported service tag; use VirtualNetwork, Internet, AzureLoadBalancer or '*'"
    )]
    UnknownServiceTag {
        at: String,
        field: &'static str,
        value: String,
    },
    #[error(
        "{field} of {at} combines '{value}' with other entries; a service tag or '*' must be the only entry"
    )]
    TagNotAlone {
        at: String,
        field: &'static str,
        value: String,
    },
    #[error(
        "{at} gives both {side}ApplicationSecurityGroups and {side} address prefixes; use one or the other"
    )]
    MixedAsgAndPrefixes { at: String, side: &'static str },
    #[error("{at} sets both {singular} and {plural}; set only one")]
    AmbiguousField {
        at: String,
        singular: &'static str,
        plural: &'static str,
    },
    #[error("{at} has no {what}; set {fields}")]
    MissingField {
        at: String,
        what: &'static str,
        fields: &'static str,
    },
    #[error(
        "{field} '{value}' of {at} is not a port range; use '*', a port (0-65535) or 'start-end' with start <= end"
    )]
    MalformedPortRange {
        at: String,
        field: &'static str,
        value: String,
    },
    #[error("{at} names ports but protocol {protocol:?} has none; use '*' for its port ranges")]
    PortsOnPortlessProtocol { at: String, protocol: Protocol },
    #[error("priority {priority} of {at} is outside 100-4096; pick a priority in that range")]
    PriorityOutOfRange { at: String, priority: u32 },
    #[error(
        "security rule name '{name}' of {at} is invalid; use 1-80 letters, digits, '_', '.' or '-', starting with a letter, digit or '_' and ending with a letter, digit or '_'"
    )]
    InvalidRuleName { at: String, name: String },
    #[error("{at} has two security rules named '{name}'; rule names must be unique")]
    DuplicateRuleName { at: String, name: String },
    #[error(
        "security rules '{first}' and '{second}' of {at} both have priority {priority} {direction:?}; each direction needs distinct priorities"
    )]
    DuplicatePriority {
        at: String,
        priority: u32,
        direction: Direction,
        first: String,
        second: String,
    },
    #[error(
        "{at} allows {port} inbound from '{from}'; strata refuses management ports open to the internet: restrict the source to your own prefixes"
    )]
    ManagementPortExposed { at: String, port: u16, from: String },
    #[error(
        "virtual network '{vnet}' has no address prefixes; give addressSpace.addressPrefixes at least one cidr"
    )]
    EmptyAddressSpace { vnet: String },
    #[error(
        "address prefixes '{a}' and '{b}' of virtual network '{vnet}' overlap; address spaces must be disjoint"
    )]
    OverlappingAddressSpace { vnet: String, a: String, b: String },
    #[error(
        "subnets '{a}' ({a_prefix}) and '{b}' ({b_prefix}) of virtual network '{vnet}' overlap; pick disjoint prefixes"
    )]
    OverlappingSubnets {
        vnet: String,
        a: String,
        a_prefix: String,
        b: String,
        b_prefix: String,
    },
    #[error(
        "subnet '{subnet}' prefix {prefix} is not inside the address space of virtual network '{vnet}'"
    )]
    SubnetOutsideVnet {
        vnet: String,
        subnet: String,
        prefix: String,
    },
    #[error(
        "subnet '{subnet}' prefix {prefix} is too small; use /29 or larger (5 addresses of each subnet are reserved)"
    )]
    SubnetTooSmall { subnet: String, prefix: String },
    #[error(
        "peered virtual networks '{a}' and '{b}' have overlapping address spaces ({a_prefix} and {b_prefix}); peer only disjoint networks"
    )]
    OverlappingPeering {
        a: String,
        a_prefix: String,
        b: String,
        b_prefix: String,
    },
    #[error("{at} refers to {kind} '{id}', which does not exist")]
    UnknownReference {
        at: String,
        kind: &'static str,
        id: String,
    },
    #[error("{kind} id '{id}' is used twice; ids must be unique")]
    DuplicateId { kind: &'static str, id: String },
    #[error("private ip address '{ip}' of network interface '{nic}' is not an ipv4 address")]
    MalformedNicAddress { nic: String, ip: String },
    #[error("private ip address {ip} of network interface '{nic}' is outside its subnet {prefix}")]
    NicAddressOutsideSubnet {
        nic: String,
        ip: String,
        prefix: String,
    },
    #[error(
        "private ip address {ip} of network interface '{nic}' is reserved in subnet {prefix} (the first four and the last address are); pick another"
    )]
    NicAddressReserved {
        nic: String,
        ip: String,
        prefix: String,
    },
    #[error("network interfaces '{a}' and '{b}' both use {ip} in virtual network '{vnet}'")]
    DuplicateNicAddress {
        vnet: String,
        a: String,
        b: String,
        ip: String,
    },
    #[error(
        "application security group '{asg}' has members in virtual networks '{a}' and '{b}'; all members of an application security group must be in one virtual network"
    )]
    AsgSpansVnets { asg: String, a: String, b: String },
    #[error(
        "{at} uses application security groups from virtual networks '{a}' and '{b}'; the groups of one rule must be in one virtual network"
    )]
    RuleAsgsSpanVnets { at: String, a: String, b: String },
}

impl ValidationError {
    /// A stable machine-readable code (the API's `error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedPrefix { .. } => "InvalidAddressPrefix",
            Self::HostBitsSet { .. } => "AddressPrefixHostBitsSet",
            Self::UnknownServiceTag { .. } => "UnknownServiceTag",
            Self::TagNotAlone { .. } => "ServiceTagNotAlone",
            Self::MixedAsgAndPrefixes { .. } => "ApplicationSecurityGroupsMixedWithPrefixes",
            Self::AmbiguousField { .. } => "AmbiguousSecurityRuleField",
            Self::MissingField { .. } => "MissingSecurityRuleField",
            Self::MalformedPortRange { .. } => "InvalidPortRange",
            Self::PortsOnPortlessProtocol { .. } => "PortsOnPortlessProtocol",
            Self::PriorityOutOfRange { .. } => "SecurityRulePriorityOutOfRange",
            Self::InvalidRuleName { .. } => "InvalidSecurityRuleName",
            Self::DuplicateRuleName { .. } => "DuplicateSecurityRuleName",
            Self::DuplicatePriority { .. } => "DuplicateSecurityRulePriority",
            Self::ManagementPortExposed { .. } => "ManagementPortExposedToInternet",
            Self::EmptyAddressSpace { .. } => "EmptyAddressSpace",
            Self::OverlappingAddressSpace { .. } => "OverlappingAddressSpace",
            Self::OverlappingSubnets { .. } => "OverlappingSubnets",
            Self::SubnetOutsideVnet { .. } => "SubnetOutsideVirtualNetwork",
            Self::SubnetTooSmall { .. } => "SubnetTooSmall",
            Self::OverlappingPeering { .. } => "OverlappingPeeredAddressSpace",
            Self::UnknownReference { .. } => "UnknownReference",
            Self::DuplicateId { .. } => "DuplicateId",
            Self::MalformedNicAddress { .. } => "InvalidPrivateIpAddress",
            Self::NicAddressOutsideSubnet { .. } => "PrivateIpAddressOutsideSubnet",
            Self::NicAddressReserved { .. } => "PrivateIpAddressReserved",
            Self::DuplicateNicAddress { .. } => "DuplicatePrivateIpAddress",
            Self::AsgSpansVnets { .. } => "ApplicationSecurityGroupSpansVirtualNetworks",
            Self::RuleAsgsSpanVnets { .. } => "SecurityRuleSpansVirtualNetworks",
        }
    }
}

/// The service tags Strata supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceTag {
    /// The NIC's virtual network address space plus those of peered virtual networks.
    VirtualNetwork,
    /// Public IPv4 space outside `VirtualNetwork` (see [`crate::network::special_ranges`]).
    Internet,
    /// The address health probes come from (Azure's `AzureLoadBalancer`, also spelled
    /// `LoadBalancer`): 168.63.129.16/32.
    AzureLoadBalancer,
}

impl ServiceTag {
    pub fn name(self) -> &'static str {
        match self {
            Self::VirtualNetwork => "VirtualNetwork",
            Self::Internet => "Internet",
            Self::AzureLoadBalancer => "AzureLoadBalancer",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "virtualnetwork" => Some(Self::VirtualNetwork),
            "internet" => Some(Self::Internet),
            "azureloadbalancer" | "loadbalancer" => Some(Self::AzureLoadBalancer),
            _ => None,
        }
    }
}

/// One side of a parsed rule, before expansion in a NIC's context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Any,
    Tag(ServiceTag),
    Prefixes(Ranges),
    /// Application security group ids.
    Asgs(Vec<String>),
}

/// A validated rule: sides parsed, ports as sets (`*` includes the port-less value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParsedRule {
    pub name: String,
    pub priority: u32,
    pub direction: Direction,
    pub access: Access,
    pub protocol: Protocol,
    pub source: Endpoint,
    pub destination: Endpoint,
    pub source_ports: Ranges,
    pub destination_ports: Ranges,
    /// As written (prefixes, tags or ASG ids), for effective rules.
    pub source_text: Vec<String>,
    pub destination_text: Vec<String>,
}

struct SideFields<'a> {
    singular: &'static str,
    plural: &'static str,
    side: &'static str,
    prefix: &'a Option<String>,
    prefixes: &'a [String],
    groups: &'a [crate::model::SubResource],
}

fn parse_side(at: &str, f: SideFields<'_>) -> Result<(Endpoint, Vec<String>), ValidationError> {
    let singular = f.prefix.as_deref().filter(|s| !s.is_empty());
    let has_prefixes = singular.is_some() || !f.prefixes.is_empty();
    if !f.groups.is_empty() {
        if has_prefixes {
            return Err(ValidationError::MixedAsgAndPrefixes {
                at: at.to_owned(),
                side: f.side,
            });
        }
        let ids: Vec<String> = f.groups.iter().map(|g| g.id.clone()).collect();
        return Ok((Endpoint::Asgs(ids.clone()), ids));
    }
    let (field, tokens): (&'static str, Vec<&str>) = match (singular, f.prefixes.is_empty()) {
        (Some(_), false) => {
            return Err(ValidationError::AmbiguousField {
                at: at.to_owned(),
                singular: f.singular,
                plural: f.plural,
            });
        }
        (Some(s), true) => (f.singular, vec![s]),
        (None, false) => (f.plural, f.prefixes.iter().map(String::as_str).collect()),
        (None, true) => {
            return Err(ValidationError::MissingField {
                at: at.to_owned(),
                what: if f.side == "source" {
                    "source"
                } else {
                    "destination"
                },
                fields: if f.side == "source" {
                    "sourceAddressPrefix, sourceAddressPrefixes or sourceApplicationSecurityGroups"
                } else {
                    "destinationAddressPrefix, destinationAddressPrefixes or destinationApplicationSecurityGroups"
                },
            });
        }
    };
    let text: Vec<String> = tokens.iter().map(|t| (*t).to_owned()).collect();
    let mut set = Ranges::empty();
    for &token in &tokens {
        let special = if token == "*" || token.eq_ignore_ascii_case("any") {
            Some(Endpoint::Any)
        } else if token.starts_with(|c: char| c.is_ascii_alphabetic()) {
            match ServiceTag::parse(token) {
                Some(tag) => Some(Endpoint::Tag(tag)),
                None => {
                    return Err(ValidationError::UnknownServiceTag {
                        at: at.to_owned(),
                        field,
                        value: token.to_owned(),
                    });
                }
            }
        } else {
            None
        };
        if let Some(endpoint) = special {
            if tokens.len() > 1 {
                return Err(ValidationError::TagNotAlone {
                    at: at.to_owned(),
                    field,
                    value: token.to_owned(),
                });
            }
            let text = match &endpoint {
                Endpoint::Tag(tag) => vec![tag.name().to_owned()],
                _ => vec!["*".to_owned()],
            };
            return Ok((endpoint, text));
        }
        match parse_prefix(token) {
            Ok(p) => set = set.union(&p.to_ranges()),
            Err(PrefixError::Malformed) => {
                return Err(ValidationError::MalformedPrefix {
                    at: at.to_owned(),
                    field,
                    value: token.to_owned(),
                });
            }
            Err(PrefixError::HostBits(network)) => {
                return Err(ValidationError::HostBitsSet {
                    at: at.to_owned(),
                    field,
                    value: token.to_owned(),
                    network: network.to_string(),
                });
            }
        }
    }
    Ok((Endpoint::Prefixes(set), text))
}

fn parse_port(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&p| p <= 65535)
}

fn parse_ports(
    at: &str,
    singular_field: &'static str,
    plural_field: &'static str,
    singular: &Option<String>,
    plural: &[String],
) -> Result<Ranges, ValidationError> {
    let singular = singular.as_deref().filter(|s| !s.is_empty());
    let (field, tokens): (&'static str, Vec<&str>) = match (singular, plural.is_empty()) {
        (Some(_), false) => {
            return Err(ValidationError::AmbiguousField {
                at: at.to_owned(),
                singular: singular_field,
                plural: plural_field,
            });
        }
        (Some(s), true) => (singular_field, vec![s]),
        (None, false) => (plural_field, plural.iter().map(String::as_str).collect()),
        (None, true) => {
            return Err(ValidationError::MissingField {
                at: at.to_owned(),
                what: if singular_field.starts_with("source") {
                    "source port range"
                } else {
                    "destination port range"
                },
                fields: if singular_field.starts_with("source") {
                    "sourcePortRange or sourcePortRanges"
                } else {
                    "destinationPortRange or destinationPortRanges"
                },
            });
        }
    };
    let mut set = Ranges::empty();
    for &token in &tokens {
        let bad = || ValidationError::MalformedPortRange {
            at: at.to_owned(),
            field,
            value: token.to_owned(),
        };
        if token == "*" {
            if tokens.len() > 1 {
                return Err(bad());
            }
            return Ok(all_ports());
        }
        let (a, b) = match token.split_once('-') {
            Some((a, b)) => (
                parse_port(a).ok_or_else(bad)?,
                parse_port(b).ok_or_else(bad)?,
            ),
            None => {
                let p = parse_port(token).ok_or_else(bad)?;
                (p, p)
            }
        };
        if a > b {
            return Err(bad());
        }
        set = set.union(&Ranges::span(a, b));
    }
    // `0-65535` means every port, like `*`: it matches port-less protocols too.
    if set == Ranges::span(0, 65535) {
        return Ok(all_ports());
    }
    Ok(set)
}

fn valid_rule_name(name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let count = name.chars().count();
    (1..=80).contains(&count)
        && name.starts_with(word)
        && name.ends_with(word)
        && name.chars().all(|c| word(c) || c == '.' || c == '-')
}

/// Public IPv4 space: everything outside the special-purpose ranges.
pub(crate) fn public_space() -> Ranges {
    crate::network::special_ranges().complement_within(0, u32::MAX)
}

/// Validates one rule on its own (`at` names it in errors, e.g. `security rule 'allow-ssh'`).
pub(crate) fn parse_rule(rule: &SecurityRule, at: &str) -> Result<ParsedRule, ValidationError> {
    if !valid_rule_name(&rule.name) {
        return Err(ValidationError::InvalidRuleName {
            at: at.to_owned(),
            name: rule.name.clone(),
        });
    }
    if !(100..=4096).contains(&rule.priority) {
        return Err(ValidationError::PriorityOutOfRange {
            at: at.to_owned(),
            priority: rule.priority,
        });
    }
    let (source, source_text) = parse_side(
        at,
        SideFields {
            singular: "sourceAddressPrefix",
            plural: "sourceAddressPrefixes",
            side: "source",
            prefix: &rule.source_address_prefix,
            prefixes: &rule.source_address_prefixes,
            groups: &rule.source_application_security_groups,
        },
    )?;
    let (destination, destination_text) = parse_side(
        at,
        SideFields {
            singular: "destinationAddressPrefix",
            plural: "destinationAddressPrefixes",
            side: "destination",
            prefix: &rule.destination_address_prefix,
            prefixes: &rule.destination_address_prefixes,
            groups: &rule.destination_application_security_groups,
        },
    )?;
    let source_ports = parse_ports(
        at,
        "sourcePortRange",
        "sourcePortRanges",
        &rule.source_port_range,
        &rule.source_port_ranges,
    )?;
    let destination_ports = parse_ports(
        at,
        "destinationPortRange",
        "destinationPortRanges",
        &rule.destination_port_range,
        &rule.destination_port_ranges,
    )?;
    if !rule.protocol.has_ports()
        && (source_ports != all_ports() || destination_ports != all_ports())
    {
        return Err(ValidationError::PortsOnPortlessProtocol {
            at: at.to_owned(),
            protocol: rule.protocol,
        });
    }
    let parsed = ParsedRule {
        name: rule.name.clone(),
        priority: rule.priority,
        direction: rule.direction,
        access: rule.access,
        protocol: rule.protocol,
        source,
        destination,
        source_ports,
        destination_ports,
        source_text,
        destination_text,
    };
    guardrail(&parsed, at)?;
    Ok(parsed)
}

/// Strata's guardrail: no inbound Allow of a management port from the whole internet.
fn guardrail(rule: &ParsedRule, at: &str) -> Result<(), ValidationError> {
    if rule.access != Access::Allow
        || rule.direction != Direction::Inbound
        || !rule.protocol.has_ports()
    {
        return Ok(());
    }
    let open_to_internet = match &rule.source {
        Endpoint::Any | Endpoint::Tag(ServiceTag::Internet) => true,
        Endpoint::Prefixes(set) => set.covers(&public_space()),
        Endpoint::Tag(_) | Endpoint::Asgs(_) => false,
    };
    if !open_to_internet {
        return Ok(());
    }
    for port in MANAGEMENT_PORTS {
        if rule.destination_ports.contains(u32::from(port)) {
            let source = if let Endpoint::Prefixes(set) = &rule.source {
                if *set == all_addresses() {
                    "0.0.0.0/0".to_owned()
                } else {
                    rule.source_text.join(",")
                }
            } else {
                rule.source_text.join(",")
            };
            return Err(ValidationError::ManagementPortExposed {
                at: at.to_owned(),
                port,
                from: source,
            });
        }
    }
    Ok(())
}

/// Validates one security rule on its own (what a `securityRules` PUT checks before the rule
/// meets its NSG).
pub fn validate_security_rule(rule: &SecurityRule) -> Result<(), ValidationError> {
    parse_rule(rule, &format!("security rule '{}'", rule.name)).map(|_| ())
}

/// Validates a network security group: every rule, unique names, and one priority per
/// direction. References to application security groups are checked with the topology.
pub fn validate_network_security_group(nsg: &NetworkSecurityGroup) -> Result<(), ValidationError> {
    parse_nsg_rules(nsg).map(|_| ())
}

pub(crate) fn parse_nsg_rules(
    nsg: &NetworkSecurityGroup,
) -> Result<Vec<ParsedRule>, ValidationError> {
    let nsg_name = name_of(&nsg.id);
    let mut rules: Vec<ParsedRule> = Vec::with_capacity(nsg.security_rules.len());
    let mut names = std::collections::HashMap::new();
    let mut priorities = std::collections::HashMap::new();
    for rule in &nsg.security_rules {
        let at = format!(
            "security rule '{}' of network security group '{nsg_name}'",
            rule.name
        );
        let parsed = parse_rule(rule, &at)?;
        if names.insert(rule.name.to_ascii_lowercase(), ()).is_some() {
            return Err(ValidationError::DuplicateRuleName {
                at: format!("network security group '{nsg_name}'"),
                name: rule.name.clone(),
            });
        }
        if let Some(first) = priorities.insert((rule.priority, rule.direction), rule.name.clone()) {
            return Err(ValidationError::DuplicatePriority {
                at: format!("network security group '{nsg_name}'"),
                priority: rule.priority,
                direction: rule.direction,
                first,
                second: rule.name.clone(),
            });
        }
        rules.push(parsed);
    }
    Ok(rules)
}
