//! [`render`]: a [`HostPlan`] as one `nft -f` file that replaces Strata's two tables
//! (`inet strata`, `bridge strata`) in a single transaction. Each table is added (a no-op
//! when it exists), deleted and defined again inside the same file, and `nft -f` commits a
//! file atomically: packets see either the old ruleset or the new one, never a mix or none.
//! Connections in conntrack survive the swap, so rule changes affect new flows only.
//!
//! The path of a packet from VM A to VM B (the verdict of each step in brackets):
//!
//! ```text
//! bridge strata / prerouting   frame from a NIC port: source MAC and IPv4/ARP source address
//!                              must be the NIC's (set port_addr)                    [else drop]
//! inet strata / prerouting     a SYN to a NIC behind the SYN proxy: notrack            [accept]
//!                              ct zone set iifname map { bridge : zone of its peering group }
//! inet strata / forward        from a strata bridge ─▶ from_vnet; to one ─▶ to_vnet; other
//!                              traffic of the host is not Strata's                  [accept]
//! from_vnet                    ct state established,related                         [accept]
//!                              ct state invalid                                     [drop]
//!                              iifname . ip saddr vmap @nic_out ─▶ nic_<A>_out   [else drop]
//! nic_<A>_out                  jump nsg_…_out (A's NIC NSG), jump nsg_…_out (A's subnet NSG);
//!                              each returns when its NSG allows, drops when it denies;
//!                              then A's conntrack cap (crate::ddos), then goto to_vnet (to
//!                              another NIC) or accept (to the uplink)
//! to_vnet                      oifname . ip daddr vmap @nic_in ─▶ nic_<B>_in      [else drop]
//! nic_<B>_in                   jump B's subnet NSG chain, jump B's NIC NSG chain, then B's
//!                              DDoS limits (crate::ddos: SYN/new-flow meters, ct cap) [accept]
//!                              — or, behind the SYN proxy, per-source SYN meter, then
//!                              `synproxy` for TCP: only flows both NSGs allowed reach it
//! inet strata / input          nothing from a VM reaches the host itself            [drop]
//! inet strata / output         the SYN proxy's SYN to a proxied NIC: its conntrack cap [drop]
//! ```
//!
//! **How NSG priority order is kept.** An NSG direction's rules (custom rules by priority,
//! then Azure's defaults, exactly as `effective_rules` lists them) are cut into *runs* of
//! consecutive rules with the same access. The first matching rule of the whole list lies in
//! the first run that has any matching rule, and only its access matters; so the chain tests
//! the runs in order, and inside a run the order of rules is irrelevant. Each run becomes a few
//! set lookups on a concatenated interval key, `meta l4proto . ip saddr . th sport . ip daddr .
//! th dport` for TCP/UDP and `meta l4proto . ip saddr . ip daddr` for other protocols (which
//! only rules with `*` ports match), with verdict `return` (this level allows) or `drop`.
//! The kernel's concatenated interval sets refuse overlapping elements, so a run's rules are
//! packed first-fit into *layers* whose elements are pairwise disjoint; a run of 1,000 allow
//! rules is typically one or two lookups instead of 1,000 rule evaluations. Azure's default
//! rules are identical in every NSG of a network, so they are one shared chain per network and
//! direction (`dflt_…`) that each NSG's chain continues with (`goto`) after its custom rules —
//! still the same order, since the defaults come after every custom rule. Only a flow's
//! first packet walks the chains: later packets are accepted by `ct state established`.

use std::fmt::Write;

use strata_netpol::Access;

use crate::plan::{HostPlan, Shape};
use crate::{ddos, names};

/// Marker at the start of the `inet strata` table's comment; the digest of the rest follows.
pub const DIGEST_MARKER: &str = "strata-netdp ";

/// The ruleset of a plan, as one `nft -f` file (a transaction). Deterministic: the same plan
/// gives the same bytes, and the `inet strata` table's comment carries their digest, which
/// [`crate::Host::apply`] compares to skip a no-op transaction.
pub fn render(plan: &HostPlan) -> String {
    let body = render_body(plan);
    let digest = format!("{:016x}", names::fnv64(body.as_bytes()));
    body.replacen(
        "\tcomment \"\"\n",
        &format!("\tcomment \"{DIGEST_MARKER}{digest}\"\n"),
        1,
    )
}

/// The digest `render` puts in the comment (for the no-op check).
pub fn digest_of(ruleset: &str) -> Option<&str> {
    let start = ruleset.find(DIGEST_MARKER)? + DIGEST_MARKER.len();
    ruleset.get(start..start + 16)
}

fn render_body(plan: &HostPlan) -> String {
    let mut o = String::new();
    let w = &mut o;
    let bridges: Vec<String> = plan
        .vnets
        .iter()
        .map(|v| format!("\"{}\"", v.bridge))
        .collect();

    // ---- inet strata: zones, NSGs, forwarding policy ----
    line(w, 0, "table inet strata");
    line(w, 0, "delete table inet strata");
    line(w, 0, "table inet strata {");
    line(w, 1, "comment \"\"");
    set(w, "vnet_bridges", "ifname", "", &bridges);
    let nic_map = |dir: &str| -> Vec<String> {
        plan.nics
            .iter()
            .filter_map(|n| {
                let v = plan.vnets.get(n.vnet)?;
                Some(format!(
                    "\"{}\" . {} : jump nic_{}_{dir}",
                    v.bridge,
                    n.ip,
                    n.port.trim_start_matches(names::PORT_PREFIX)
                ))
            })
            .collect()
    };
    set(
        w,
        "nic_out",
        "ifname . ipv4_addr : verdict",
        "map",
        &nic_map("out"),
    );
    set(
        w,
        "nic_in",
        "ifname . ipv4_addr : verdict",
        "map",
        &nic_map("in"),
    );
    // Addresses of NICs behind the SYN proxy. Such a NIC's network is in the default zone and
    // overlaps no other group's address space, so its address alone names it.
    let proxied: Vec<String> = plan
        .nics
        .iter()
        .filter(|n| plan.syn_proxied(n))
        .map(|n| n.ip.to_string())
        .collect();
    set(w, "syn_proxied", "ipv4_addr", "", &proxied);
    // The proxy opens the connection to the NIC with a SYN of its own, sent by the host (the
    // output hook, not forward): the NIC's inbound conntrack cap is applied there.
    let proxied_cap: Vec<String> = plan
        .nics
        .iter()
        .filter(|n| plan.syn_proxied(n) && n.ddos.max_connections.is_some())
        .map(|n| {
            format!(
                "{} : jump nic_{}_proxied",
                n.ip,
                n.port.trim_start_matches(names::PORT_PREFIX)
            )
        })
        .collect();
    set(
        w,
        "syn_proxied_cap",
        "ipv4_addr : verdict",
        "map",
        &proxied_cap,
    );
    for nic in &plan.nics {
        let short = nic.port.trim_start_matches(names::PORT_PREFIX);
        for object in ddos::objects(short, &nic.ddos) {
            line(w, 1, &object);
        }
    }
    for chain in &plan.chains {
        for (k, st) in chain.statements.iter().enumerate() {
            let ty = match st.shape {
                Shape::Ported => {
                    "inet_proto . ipv4_addr . inet_service . ipv4_addr . inet_service; flags interval"
                }
                Shape::Portless => "inet_proto . ipv4_addr . ipv4_addr; flags interval",
            };
            let elements: Vec<String> = st
                .elements
                .iter()
                .map(|e| {
                    let shown: Vec<String> = e
                        .iter()
                        .enumerate()
                        .map(|(f, &(a, b))| {
                            let is_addr = match st.shape {
                                Shape::Ported => f == 1 || f == 3,
                                Shape::Portless => f == 1 || f == 2,
                            };
                            interval(a, b, is_addr)
                        })
                        .collect();
                    shown.join(" . ")
                })
                .collect();
            set(w, &format!("{}_{k}", chain.name), ty, "", &elements);
        }
    }

    line(w, 1, "chain prerouting {");
    line(
        w,
        2,
        "type filter hook prerouting priority raw; policy accept;",
    );
    if !proxied.is_empty() {
        // Before any zone template: `ct zone set` would track the SYN again.
        line(
            w,
            2,
            "ip daddr @syn_proxied tcp flags & (fin|syn|rst|ack) == syn notrack accept comment \"for the SYN proxy\"",
        );
    }
    if !plan.vnets.is_empty() {
        let zones: Vec<String> = plan
            .vnets
            .iter()
            .map(|v| format!("\"{}\" : {}", v.bridge, v.zone))
            .collect();
        line(
            w,
            2,
            &format!(
                "iifname @vnet_bridges ct zone set iifname map {{ {} }}",
                zones.join(", ")
            ),
        );
        let by_address: Vec<String> = plan
            .vnets
            .iter()
            .flat_map(|v| v.address_space.iter().map(|p| format!("{p} : {}", v.zone)))
            .collect();
        if !by_address.is_empty() {
            line(
                w,
                2,
                &format!(
                    "iifname != @vnet_bridges ct zone set ip daddr map {{ {} }} comment \"from the uplink\"",
                    by_address.join(", ")
                ),
            );
        }
    }
    line(w, 1, "}");

    line(w, 1, "chain input {");
    line(
        w,
        2,
        "type filter hook input priority filter; policy accept;",
    );
    line(
        w,
        2,
        "iifname @vnet_bridges drop comment \"VMs do not reach the host\"",
    );
    line(w, 1, "}");

    if !proxied_cap.is_empty() {
        line(w, 1, "chain output {");
        line(
            w,
            2,
            "type filter hook output priority filter; policy accept;",
        );
        line(
            w,
            2,
            "meta l4proto tcp ct state new ip daddr vmap @syn_proxied_cap",
        );
        line(w, 1, "}");
    }

    line(w, 1, "chain forward {");
    line(
        w,
        2,
        "type filter hook forward priority filter; policy accept;",
    );
    line(w, 2, "iifname @vnet_bridges goto from_vnet");
    line(w, 2, "oifname @vnet_bridges goto to_vnet");
    line(w, 1, "}");

    line(w, 1, "chain from_vnet {");
    line(w, 2, "ct state established,related accept");
    line(w, 2, "ct state invalid drop");
    line(w, 2, "iifname . ip saddr vmap @nic_out");
    line(w, 2, "drop comment \"not from a known NIC\"");
    line(w, 1, "}");

    line(w, 1, "chain to_vnet {");
    line(w, 2, "ct state established,related accept");
    line(w, 2, "ct state invalid drop");
    line(w, 2, "oifname . ip daddr vmap @nic_in");
    line(w, 2, "drop comment \"not to a known NIC\"");
    line(w, 1, "}");

    for nic in &plan.nics {
        let short = nic.port.trim_start_matches(names::PORT_PREFIX);
        line(w, 1, &format!("chain nic_{short}_out {{"));
        // The same chain twice (the subnet's and the NIC's NSG compile alike) decides the same
        // way twice: jump once.
        let once = |list: &[usize]| {
            let mut seen = Vec::new();
            for &c in list {
                if !seen.contains(&c) {
                    seen.push(c);
                }
            }
            seen
        };
        for c in once(&nic.outbound) {
            if let Some(chain) = plan.chains.get(c) {
                line(w, 2, &format!("jump {}", chain.name));
            }
        }
        if let Some(cap) = ddos::cap_line(short, &nic.ddos) {
            line(w, 2, &cap);
        }
        line(w, 2, "oifname @vnet_bridges goto to_vnet");
        line(w, 2, "accept comment \"leaves through the uplink\"");
        line(w, 1, "}");
        line(w, 1, &format!("chain nic_{short}_in {{"));
        for c in once(&nic.inbound) {
            if let Some(chain) = plan.chains.get(c) {
                line(w, 2, &format!("jump {}", chain.name));
            }
        }
        for l in ddos::inbound_lines(short, &nic.ddos, plan.syn_proxied(nic)) {
            line(w, 2, &l);
        }
        line(w, 2, "accept");
        line(w, 1, "}");
        if plan.syn_proxied(nic)
            && let Some(cap) = ddos::cap_line(short, &nic.ddos)
        {
            line(w, 1, &format!("chain nic_{short}_proxied {{"));
            line(w, 2, &cap);
            line(w, 1, "}");
        }
    }

    for chain in &plan.chains {
        line(w, 1, &format!("chain {} {{", chain.name));
        for (k, st) in chain.statements.iter().enumerate() {
            let key = match st.shape {
                Shape::Ported => "meta l4proto . ip saddr . th sport . ip daddr . th dport",
                Shape::Portless => "meta l4proto . ip saddr . ip daddr",
            };
            let verdict = match st.access {
                Access::Allow => "return",
                Access::Deny => "drop",
            };
            let mut comment = st.rules.join(",");
            if comment.len() > 120 {
                let mut cut = 117;
                while !comment.is_char_boundary(cut) {
                    cut -= 1;
                }
                comment.truncate(cut);
                comment.push_str("...");
            }
            let comment = comment.replace('"', "'");
            line(
                w,
                2,
                &format!("{key} @{}_{k} {verdict} comment \"{comment}\"", chain.name),
            );
        }
        match chain.tail.and_then(|t| plan.chains.get(t)) {
            Some(tail) => line(w, 2, &format!("goto {}", tail.name)),
            None => line(w, 2, "drop comment \"no rule matched\""),
        }
        line(w, 1, "}");
    }
    line(w, 0, "}");

    // ---- bridge strata: anti-spoofing on NIC ports ----
    line(w, 0, "table bridge strata");
    line(w, 0, "delete table bridge strata");
    line(w, 0, "table bridge strata {");
    let ports: Vec<String> = plan
        .nics
        .iter()
        .map(|n| format!("\"{}\" . {} . {}", n.port, names::mac_string(n.mac), n.ip))
        .collect();
    set(
        w,
        "port_addr",
        "ifname . ether_addr . ipv4_addr",
        "",
        &ports,
    );
    line(w, 1, "chain prerouting {");
    line(
        w,
        2,
        "type filter hook prerouting priority -200; policy accept;",
    );
    line(
        w,
        2,
        &format!("iifname != \"{}*\" accept", names::PORT_PREFIX),
    );
    line(
        w,
        2,
        "ether type arp iifname . ether saddr . arp saddr ip @port_addr accept",
    );
    line(
        w,
        2,
        "ether type ip iifname . ether saddr . ip saddr @port_addr accept",
    );
    line(
        w,
        2,
        "drop comment \"spoofed, unknown port, or not IPv4/ARP\"",
    );
    line(w, 1, "}");
    line(w, 0, "}");
    o
}

fn line(w: &mut String, indent: usize, text: &str) {
    for _ in 0..indent {
        w.push('\t');
    }
    w.push_str(text);
    w.push('\n');
}

/// A named set (`kind` "") or map ("map") with its elements (none: declared empty).
fn set(w: &mut String, name: &str, ty: &str, kind: &str, elements: &[String]) {
    let kind = if kind.is_empty() { "set" } else { kind };
    let mut s = format!("{kind} {name} {{ type {ty};");
    if !elements.is_empty() {
        s.push_str(" elements = { ");
        for (i, e) in elements.iter().enumerate() {
            if i > 0 {
                s.push_str(",\n\t\t");
            }
            let _ = write!(s, "{e}");
        }
        s.push_str(" };");
    }
    s.push_str(" }");
    line(w, 1, &s);
}

fn interval(a: u32, b: u32, is_addr: bool) -> String {
    let one = |x: u32| {
        if is_addr {
            std::net::Ipv4Addr::from(x).to_string()
        } else {
            x.to_string()
        }
    };
    if a == b {
        one(a)
    } else {
        format!("{}-{}", one(a), one(b))
    }
}
