//! Test support: namespaces that clean up after themselves ([`Ns`]), a host with VMs built
//! from a topology ([`Lab`]), and real-packet probes ([`tcp`], [`udp`]) between VM namespaces.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use strata_netdp::{ApplyReport, Host, HostPlan};
use strata_netpol::Topology;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace `sdp-<pid>-<n>`, deleted on drop (also while unwinding a panic).
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new() -> Self {
        let name = format!(
            "sdp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("the `ip` command (Debian package iproute2) is required");
        assert!(
            status.success(),
            "ip netns add {name} failed (root is required)"
        );
        Self { name }
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if std::env::var_os("STRATA_NETDP_KEEP").is_some() {
            eprintln!("keeping namespace {}", self.name);
            return;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A topology's dataplane in a host namespace, each NIC a veth into its own VM namespace.
pub struct Lab {
    pub topology: Topology,
    pub plan: HostPlan,
    pub host: Host,
    /// NIC id → its VM namespace. Declared before `host_ns` so VMs go first.
    pub vms: BTreeMap<String, Ns>,
    /// A namespace standing in for the internet, behind the host's uplink (`add_internet`).
    pub internet: Option<Ns>,
    pub host_ns: Ns,
}

impl Lab {
    /// Every NIC of the topology on one host.
    pub fn new(topology: Topology) -> Self {
        let host_ns = Ns::new();
        let host = Host::netns(&host_ns.name);
        let nics: Vec<String> = topology
            .network_interfaces
            .iter()
            .map(|n| n.id.clone())
            .collect();
        let plan = HostPlan::new(&topology, nics.iter().map(String::as_str)).unwrap();
        host.apply(&plan).unwrap();
        let mut vms = BTreeMap::new();
        for nic in &nics {
            let vm = Ns::new();
            host.create_veth(&plan, nic, &vm.name).unwrap();
            vms.insert(nic.clone(), vm);
        }
        Self {
            topology,
            plan,
            host,
            vms,
            internet: None,
            host_ns,
        }
    }

    /// Adds an uplink `upl0` to a namespace holding the given public addresses (the
    /// "internet"), routes the virtual networks' tables' default to it, and returns the
    /// namespace's name.
    pub fn add_internet(&mut self, addresses: &[std::net::Ipv4Addr]) -> String {
        let ext = Ns::new();
        let h = self.host_ns.name.as_str();
        let sh = |ns: &str, script: &str| {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "sh", "-ec", script])
                .output()
                .unwrap();
            assert!(out.status.success(), "{script}: {out:?}");
        };
        sh(
            h,
            &format!(
                "ip link add upl0 type veth peer name eth0 netns {e}; ip link set upl0 up; \
                 printf 1 > /proc/sys/net/ipv4/conf/upl0/proxy_arp; \
                 printf 0 > /proc/sys/net/ipv4/neigh/upl0/proxy_delay",
                e = ext.name
            ),
        );
        let mut script = "ip link set lo up; ip link set eth0 up; ".to_owned();
        for a in addresses {
            script += &format!("ip addr add {a}/32 dev eth0; ");
        }
        script += "ip route add 10.0.0.0/8 dev eth0";
        sh(&ext.name, &script);
        let name = ext.name.clone();
        self.internet = Some(ext);
        let plan = self.plan.clone().with_uplink("upl0");
        self.host.apply(&plan).unwrap();
        self.plan = plan;
        name
    }

    /// A new desired topology (same NICs): re-plan and apply.
    pub fn update(&mut self, topology: Topology) -> ApplyReport {
        let mut plan = HostPlan::new(&topology, self.vms.keys().map(String::as_str)).unwrap();
        plan.uplink = self.plan.uplink.clone();
        for nic in &self.plan.nics {
            plan.set_ddos(&nic.id, nic.ddos).unwrap();
        }
        let report = self.host.apply(&plan).unwrap();
        self.topology = topology;
        self.plan = plan;
        report
    }

    pub fn vm(&self, nic: &str) -> &str {
        &self.vms[nic].name
    }

    pub fn ip(&self, nic: &str) -> std::net::Ipv4Addr {
        self.plan.nic(nic).unwrap().ip
    }

    /// Forgets all tracked connections of the host (between property-test cases: a new rule
    /// set must be judged on new flows).
    pub fn flush_all_conntrack(&self) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.host_ns.name, "conntrack", "-F"])
            .output()
            .unwrap();
        assert!(out.status.success(), "conntrack -F: {out:?}");
    }

    /// Everything about the host's dataplane that reconcile owns (ruleset, links and their
    /// bridge-port flags, IPv4 addresses, rules, routes, forwarding entries), without timers,
    /// counters or the DDoS meters' per-source entries (state, not configuration), for
    /// idempotency checks.
    pub fn snapshot(&self) -> Vec<String> {
        let ns = self.host_ns.name.as_str();
        let mut lines = Vec::new();
        for args in [
            &["ip", "netns", "exec", ns, "nft", "-s", "list", "ruleset"][..],
            &["ip", "-n", ns, "-o", "link", "show"],
            &["bridge", "-n", ns, "-d", "link", "show"],
            &["ip", "-n", ns, "-4", "-o", "addr", "show"],
            &["ip", "-n", ns, "rule", "show"],
            &["ip", "-n", ns, "-4", "route", "show", "table", "all"],
            &["bridge", "-n", ns, "fdb", "show"],
        ] {
            let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
            let mut in_meter = false;
            for l in String::from_utf8(out.stdout).unwrap().lines() {
                let t = l.trim();
                if t.starts_with("set ddos_") {
                    in_meter = true;
                } else if in_meter && t == "}" {
                    in_meter = false;
                } else if in_meter
                    && !["type ", "size ", "flags ", "timeout "]
                        .iter()
                        .any(|k| t.starts_with(k))
                {
                    continue; // a meter's elements
                }
                lines.push(l.to_owned());
            }
        }
        lines
    }

    /// The ruleset as rendered (printed on a disagreement).
    pub fn ruleset(&self) -> String {
        strata_netdp::render(&self.plan)
    }
}

/// Runs `f` on a thread inside namespace `ns` (sockets made there stay there).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/run/netns/{ns}")).unwrap();
            #[expect(unsafe_code, reason = "setns(2) has no safe wrapper in std")]
            // SAFETY: `file` is an open namespace file for the duration of the call;
            // setns only changes this (scoped, soon finished) thread's network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

/// What happened to a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The first packet arrived (and, for TCP, the handshake's reply came back).
    Delivered,
    /// Nothing arrived within the timeout.
    Dropped,
    /// The host answered "no route" (an ICMP unreachable): not delivered.
    Unreachable,
}

impl Outcome {
    pub fn delivered(self) -> bool {
        self == Self::Delivered
    }
}

fn socket(ns: &str, ty: Type, proto: Protocol) -> Socket {
    in_netns(ns, || {
        let s = Socket::new(Domain::IPV4, ty, Some(proto)).unwrap();
        s.set_reuse_address(true).unwrap();
        s
    })
}

/// A TCP listener inside `ns`.
pub fn tcp_listener(ns: &str, at: SocketAddrV4) -> Socket {
    let l = socket(ns, Type::STREAM, Protocol::TCP);
    l.bind(&SockAddr::from(at)).unwrap();
    l.listen(64).unwrap();
    l
}

/// Opens a TCP connection from `src` (inside `from`) to `dst` (a listener must be there):
/// a real SYN, and the SYN-ACK as return traffic. The client resets on close (no TIME_WAIT).
pub fn tcp_connect(
    from: &str,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    timeout: Duration,
) -> (Outcome, Option<Socket>) {
    let c = socket(from, Type::STREAM, Protocol::TCP);
    c.set_linger(Some(Duration::ZERO)).unwrap();
    c.bind(&SockAddr::from(src)).unwrap();
    match c.connect_timeout(&SockAddr::from(dst), timeout) {
        Ok(()) => (Outcome::Delivered, Some(c)),
        Err(e) => match e.raw_os_error() {
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => (Outcome::Unreachable, None),
            _ if e.kind() == std::io::ErrorKind::TimedOut
                || e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                (Outcome::Dropped, None)
            }
            _ => panic!("connect {src} -> {dst}: unexpected {e}"),
        },
    }
}

/// One TCP probe with its own listener.
pub fn tcp(
    from: &str,
    src: SocketAddrV4,
    to: &str,
    dst: SocketAddrV4,
    timeout: Duration,
) -> Outcome {
    let _listener = tcp_listener(to, dst);
    tcp_connect(from, src, dst, timeout).0
}

/// One UDP probe: a datagram `src` → `dst`, and when it arrives, a reply back (the return
/// traffic must pass: asserted). Returns whether the first datagram arrived.
pub fn udp(
    from: &str,
    src: SocketAddrV4,
    to: &str,
    dst: SocketAddrV4,
    timeout: Duration,
) -> Outcome {
    let rx = socket(to, Type::DGRAM, Protocol::UDP);
    rx.bind(&SockAddr::from(dst)).unwrap();
    let rx: UdpSocket = rx.into();
    rx.set_read_timeout(Some(timeout)).unwrap();
    let tx = socket(from, Type::DGRAM, Protocol::UDP);
    tx.bind(&SockAddr::from(src)).unwrap();
    let tx: UdpSocket = tx.into();
    tx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    tx.send_to(b"probe", dst).unwrap();
    let mut buf = [0u8; 16];
    match rx.recv_from(&mut buf) {
        Ok((_, peer)) => {
            assert_eq!(
                peer,
                std::net::SocketAddr::V4(src),
                "datagram from an unexpected source"
            );
            rx.send_to(b"reply", peer).unwrap();
            let got = tx.recv_from(&mut buf);
            assert!(
                got.is_ok(),
                "the reply to an allowed UDP flow {src} -> {dst} was dropped: {got:?}"
            );
            Outcome::Delivered
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Outcome::Dropped
        }
        Err(e) => panic!("udp {src} -> {dst}: {e}"),
    }
}

/// Asserts two snapshots are equal, showing only the lines that differ.
pub fn assert_same(before: &[String], after: &[String]) {
    let gone: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
    let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(
        gone.is_empty() && new.is_empty() && before.len() == after.len(),
        "the dataplane changed:\n- {gone:#?}\n+ {new:#?}"
    );
}

/// A topology from JSON (tests write them inline).
pub fn topology(v: Value) -> Topology {
    serde_json::from_value(v).unwrap()
}

pub fn sa(ip: std::net::Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}
