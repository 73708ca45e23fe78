//! Deterministic names and numbers derived from resource ids, so that an agent that restarts
//! (or a second agent build) finds the devices, tables and zones it made before without any
//! local state: the same id always gives the same bridge, port, routing table, zone and MAC.
//!
//! Linux interface names are at most 15 bytes, so ids are hashed (FNV-1a, 64 bit) and the
//! first 32 bits written in hex: `stv` + 8 hex for a virtual network's bridge, `stn` + 8 hex
//! for a NIC's port. [`crate::HostPlan::new`] refuses a plan in which two ids collide.

/// Prefix of the bridge of a virtual network.
pub const BRIDGE_PREFIX: &str = "stv";
/// Prefix of the host-side device of a NIC (veth end or tap).
pub const PORT_PREFIX: &str = "stn";
/// Preference of every policy-routing rule Strata adds (`ip rule … pref`).
pub const RULE_PREF: u32 = 9731;
/// Preference of the rules that route the SYN proxy's own packets (`iif lo from|to <NIC
/// address>`) through the NIC's network's table.
pub const PROXY_RULE_PREF: u32 = 9730;
/// Routing tables of virtual networks are `TABLE_BASE | (hash & 0xffff)`.
pub const TABLE_BASE: u32 = 0x5354_0000;

/// FNV-1a, 64 bit.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn short(id: &str) -> u32 {
    (fnv64(id.as_bytes()) >> 32) as u32
}

/// The bridge of a virtual network, e.g. `stv1a2b3c4d`.
pub fn bridge_name(vnet_id: &str) -> String {
    format!("{BRIDGE_PREFIX}{:08x}", short(vnet_id))
}

/// The host-side device of a NIC, e.g. `stn1a2b3c4d`.
pub fn port_name(nic_id: &str) -> String {
    format!("{PORT_PREFIX}{:08x}", short(nic_id))
}

/// The policy-routing table of a virtual network.
pub fn table_id(vnet_id: &str) -> u32 {
    TABLE_BASE | (short(vnet_id) & 0xffff)
}

/// A conntrack zone (1–65535) for a group of peered virtual networks, from the group's
/// smallest id.
pub fn zone_id(group_key: &str) -> u16 {
    ((fnv64(group_key.as_bytes()) % 65535) + 1) as u16
}

/// The MAC address of a NIC: locally administered, unicast (`02:…`), from the id's hash.
pub fn mac_address(nic_id: &str) -> [u8; 6] {
    let h = fnv64(nic_id.as_bytes()).to_be_bytes();
    [0x02, h[0], h[1], h[2], h[3], h[4]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_limits_and_are_stable() {
        assert_eq!(bridge_name("vnet1"), bridge_name("vnet1"));
        assert_ne!(port_name("nic1"), port_name("nic2"));
        assert!(bridge_name("/subscriptions/x/virtualNetworks/a-very-long-name").len() <= 15);
        assert!(port_name("n").starts_with(PORT_PREFIX));
        assert_eq!(table_id("v") & 0xffff_0000, TABLE_BASE);
        assert_ne!(zone_id("v"), 0);
        let mac = mac_address("nic1");
        assert_eq!(mac[0], 0x02);
        assert_eq!(mac_string([2, 0, 0xab, 1, 2, 3]), "02:00:ab:01:02:03");
    }
}
