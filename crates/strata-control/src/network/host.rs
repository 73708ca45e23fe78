//! What a host needs of its VMs' networks, and the NICs' MAC addresses.
//!
//! A host's assignments (`compute::door::assigned`) carry, besides its VMs, the netpol topology
//! of every subscription that has a VM with a network interface on the host — whole, so the
//! host's `strata-netdp` plan expands `VirtualNetwork`, application security groups and
//! peerings exactly as `flow_verify` does — and, per VM, its interfaces: id, MAC, private
//! address, the subnet's prefix length and gateway. The topology is read from the store on every
//! assignments call, so a network change (a rule added) reaches the host on its next poll.
//!
//! MACs: every network interface gets a locally administered unicast MAC (`02:…`) at create,
//! shown as `macAddress` in Azure's spelling (`02-AB-CD-EF-01-23`) and kept for the interface's
//! life. It is derived from the interface's id (stable: a re-created interface gets the same
//! one) and re-derived with a counter while it collides with another interface of the
//! subscription, so MACs are unique per subscription.

use std::net::Ipv4Addr;

use serde_json::{Value, json};
use strata_netpol as np;
use strata_types::ApiError;

use crate::docs::Doc;
use crate::kinds::Kind;

/// FNV-1a, 64 bit.
fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The `attempt`-th candidate MAC of an interface: `02` then 40 bits of the hash of its
/// lowercase id and the attempt.
pub fn mac_candidate(nic_id: &str, attempt: u32) -> [u8; 6] {
    let mut input = nic_id.to_ascii_lowercase().into_bytes();
    if attempt > 0 {
        input.extend_from_slice(format!("#{attempt}").as_bytes());
    }
    let h = fnv64(&input).to_be_bytes();
    [0x02, h[0], h[1], h[2], h[3], h[4]]
}

/// Azure's spelling, `02-AB-CD-EF-01-23`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join("-")
}

/// Linux's spelling, `02:ab:cd:ef:01:23` (what the host gets).
pub fn mac_linux(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses either spelling.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.split(['-', ':']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

fn is_nic(doc: &Doc) -> bool {
    doc.rtype
        .eq_ignore_ascii_case(Kind::NetworkInterface.type_name())
}

/// The stored MAC of an interface document, if it has one.
pub fn stored_mac(doc: &Doc) -> Option<[u8; 6]> {
    doc.prop_str("macAddress").and_then(parse_mac)
}

/// The MAC of an interface: its stored one, else its first candidate (interfaces created
/// before MACs were allocated).
pub fn mac_of(doc: &Doc) -> [u8; 6] {
    stored_mac(doc).unwrap_or_else(|| mac_candidate(&doc.id, 0))
}

/// A MAC for the interface `nic_id` that no other interface among `docs` (the subscription's
/// network documents) has, in Azure's spelling.
pub fn allocate_mac(docs: &[Doc], nic_id: &str) -> Result<String, ApiError> {
    let taken: Vec<[u8; 6]> = docs
        .iter()
        .filter(|d| is_nic(d) && !d.id.eq_ignore_ascii_case(nic_id))
        .map(mac_of)
        .collect();
    (0..1024)
        .map(|attempt| mac_candidate(nic_id, attempt))
        .find(|m| !taken.contains(m))
        .map(mac_text)
        .ok_or_else(|| {
            tracing::error!(nic = %nic_id, "no free MAC address after 1024 candidates");
            ApiError::internal()
        })
}

/// One interface of a VM as its host needs it, or `None` when `nic_id` is not an interface in
/// `topology`/`docs` (or its subnet is not).
pub fn host_nic(topology: &np::Topology, docs: &[Doc], nic_id: &str) -> Option<Value> {
    let doc = docs
        .iter()
        .find(|d| is_nic(d) && d.id.eq_ignore_ascii_case(nic_id))?;
    let nic = topology
        .network_interfaces
        .iter()
        .find(|n| n.id == doc.id)?;
    let (vnet_id, subnet) = nic.subnet.id.rsplit_once("/subnets/")?;
    let prefix = topology
        .virtual_networks
        .iter()
        .find(|v| v.id == vnet_id)?
        .subnets
        .iter()
        .find(|s| s.name == subnet)
        .and_then(|s| np::ranges::parse_prefix(&s.address_prefix).ok())?;
    let (low, _) = prefix.bounds();
    let mut out = json!({
        "id": doc.id,
        "macAddress": mac_linux(mac_of(doc)),
        "privateIpAddress": nic.private_ip_address,
        "prefixLength": prefix.len,
        "gateway": Ipv4Addr::from(low.saturating_add(1)).to_string(),
    });
    // Overrides of the default DDoS limits; without them the host applies the defaults.
    if let Some(s) = super::ddos::stored(doc) {
        out["ddos"] = json!(s);
    }
    Some(out)
}

/// The union of several subscriptions' topologies (their ids never clash; peerings stay
/// within a subscription).
pub fn union(parts: Vec<np::Topology>) -> np::Topology {
    let mut out = np::Topology::default();
    for t in parts {
        out.virtual_networks.extend(t.virtual_networks);
        out.network_interfaces.extend(t.network_interfaces);
        out.network_security_groups
            .extend(t.network_security_groups);
        out.application_security_groups
            .extend(t.application_security_groups);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_local_unicast_stable_and_parse_both_ways() {
        let a = mac_candidate("/subscriptions/s/resourceGroups/rg/providers/x/nic1", 0);
        assert_eq!(a[0], 0x02);
        assert_eq!(
            a,
            mac_candidate("/SUBSCRIPTIONS/s/resourcegroups/RG/providers/x/nic1", 0)
        );
        assert_ne!(
            a,
            mac_candidate("/subscriptions/s/resourceGroups/rg/providers/x/nic1", 1)
        );
        assert_eq!(parse_mac(&mac_text(a)), Some(a));
        assert_eq!(parse_mac(&mac_linux(a)), Some(a));
        assert_eq!(mac_text([2, 0xab, 0, 1, 2, 0xff]), "02-AB-00-01-02-FF");
        assert_eq!(parse_mac("02-AB-00-01-02"), None);
        assert_eq!(parse_mac("02-AB-00-01-02-GG"), None);
    }
}
