//! `strata-netdp`: the host dataplane for Strata's virtual networks. It turns the part of a
//! topology that lives on one host (its NICs, their subnets' and their own NSGs) into Linux
//! networking and one nftables ruleset, and keeps the host in that state.
//!
//! Two halves:
//! - [`HostPlan`] (pure): what the host should look like — a bridge per virtual network, a
//!   routing table per bridge, a conntrack zone per peering group, a port per NIC — and
//!   [`render`]ed, the whole `strata` ruleset as one `nft -f` file. NSG rules come from
//!   [`strata_netpol::Network::effective_rules`] (tags and ASGs already expanded), so the
//!   dataplane and `flow_verify` read the same expanded rules.
//! - [`Host`] (I/O; only `strata-agent` runs it): [`Host::apply`] reconciles links, addresses,
//!   routes, policy rules and the ruleset idempotently (nothing changes when the host already
//!   matches), [`Host::create_veth`]/[`Host::attach_port`] wire a NIC's device to its bridge
//!   (a veth into a namespace today, a QEMU tap the same way later), and
//!   [`Host::flush_conntrack`] forgets a NIC's connections (quarantine).
//! - [`ddos`]: each NIC's DDoS limits ([`DdosPolicy`]: a SYN proxy for networks in the default
//!   conntrack zone, SYN-flood and per-source rate limits, a conntrack cap), rendered into the same transaction; [`Host::ddos_counters`] reads what
//!   they dropped and [`MitigationMonitor`] turns successive readings into events.
//!
//! How a packet between two VMs travels, and where each NSG rule is enforced, is drawn in
//! [`render`]'s module documentation. The Linux layout is in [`plan`]'s.

pub mod ddos;
pub mod host;
pub mod names;
pub mod plan;
pub mod render;

pub use ddos::{
    DdosPolicy, DdosSample, Dropped, Mechanism, MitigationEvent, MitigationMonitor,
    NicDdosCounters, Rate,
};
pub use host::{ApplyReport, Host, HostError};
pub use plan::{HostPlan, NicPlan, NsgChain, PlanError, VnetPlan};
pub use render::render;
