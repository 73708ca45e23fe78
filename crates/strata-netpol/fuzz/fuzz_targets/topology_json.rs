//! Whole topologies on arbitrary bytes: validation never panics; when a network builds, every
//! NIC answers flow verify, effective rules and reachability without panicking, and the
//! classifier agrees with the linear scan on flows derived from the input.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};

use libfuzzer_sys::fuzz_target;
use strata_netpol::{Direction, Flow, FlowProtocol, Network, Topology};

fuzz_target!(|data: &[u8]| {
    let Ok(topology) = serde_json::from_slice::<Topology>(data) else {
        return;
    };
    let Ok(network) = Network::new(&topology) else {
        return;
    };
    let seed = data.iter().fold(0u32, |h, &b| h.rotate_left(5) ^ u32::from(b));
    for nic in &topology.network_interfaces {
        let Ok(local) = network.nic_address(&nic.id) else {
            continue;
        };
        let handle = network.nic(&nic.id).expect("known nic");
        for (i, protocol) in FlowProtocol::ALL.into_iter().enumerate() {
            for direction in [Direction::Inbound, Direction::Outbound] {
                let remote = Ipv4Addr::from(seed.wrapping_mul(i as u32 + 1));
                let flow = Flow::new(
                    direction,
                    protocol,
                    SocketAddrV4::new(local, (seed >> 16) as u16),
                    SocketAddrV4::new(remote, seed as u16),
                );
                assert_eq!(network.classify(handle, &flow), network.scan(handle, &flow));
                let verdict = network.flow_verify(&nic.id, &flow).expect("own address");
                assert_eq!(verdict.access, network.classify(handle, &flow).access);
            }
            let _ = network.sources_reaching(&nic.id, protocol, seed as u16);
        }
        let _ = network.effective_rules(&nic.id);
        for other in &topology.network_interfaces {
            let _ = network.can_reach(&nic.id, &other.id, FlowProtocol::Tcp, 443, None);
        }
    }
});
