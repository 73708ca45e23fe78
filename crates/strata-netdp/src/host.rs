//! [`Host`]: applies a [`HostPlan`] to a network namespace — the host's own, or a named one
//! (tests and benchmarks run a whole "host" inside a namespace they made, so they never touch
//! the machine's networking). Uses the `ip`, `bridge`, `nft` and `conntrack` commands
//! (Debian: iproute2, nftables, conntrack).
//!
//! [`Host::apply`] is an idempotent reconcile: it reads what exists (`ip -j`, the ruleset's
//! digest comment), changes only what differs, and reports what it changed; applying the same
//! plan twice, or after an agent restart, changes nothing. Order: the ruleset first (so that
//! filtering is in place before any port or route exists), then bridges and their addresses,
//! policy rules and routes, then NIC ports, and IPv4 forwarding last.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use crate::ddos::{self, DdosSample};
use crate::names::{self, PORT_PREFIX, PROXY_RULE_PREF, RULE_PREF};
use crate::plan::{HostPlan, NicPlan};
use crate::render::{self, digest_of};

/// Why a host operation failed. The failed command is named without its standard input
/// (rulesets are large; [`render`] reproduces them).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("could not run '{program}'; install it (Debian package {package})")]
    Spawn {
        program: String,
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("'{command}' failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("could not parse the output of '{command}'")]
    Parse {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("'{command}' printed something other than the expected JSON")]
    UnexpectedOutput { command: String },
    #[error("network interface '{0}' is not in the plan")]
    UnknownNic(String),
}

/// What [`Host::apply`] changed; empty when the host already matched the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// The ruleset was replaced (its digest differed or it was missing).
    pub ruleset: bool,
    /// Every link, address, rule, route or sysctl change, as the command that made it.
    pub changes: Vec<String>,
}

impl ApplyReport {
    pub fn changed(&self) -> bool {
        self.ruleset || !self.changes.is_empty()
    }
}

/// A network namespace holding a Strata dataplane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    netns: Option<String>,
}

fn package_of(program: &str) -> &'static str {
    match program {
        "nft" => "nftables",
        "conntrack" => "conntrack",
        _ => "iproute2",
    }
}

impl Host {
    /// The namespace this process runs in (the agent's: the host's own networking).
    pub fn current() -> Self {
        Self { netns: None }
    }

    /// A named namespace (`/run/netns/<name>`, as `ip netns add` makes).
    pub fn netns(name: &str) -> Self {
        Self {
            netns: Some(name.to_owned()),
        }
    }

    pub fn netns_name(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        match (&self.netns, program) {
            // `ip -n` / `bridge -n` switch namespaces themselves (no extra exec).
            (Some(ns), "ip" | "bridge") => {
                let mut c = Command::new(program);
                c.args(["-n", ns]).args(args);
                c
            }
            (Some(ns), _) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]).args(args);
                c
            }
            (None, _) => {
                let mut c = Command::new(program);
                c.args(args);
                c
            }
        }
    }

    /// Runs a command in the namespace; `Ok(stdout)` on success.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, HostError> {
        self.run_input(program, args, None)
    }

    fn run_input(
        &self,
        program: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, HostError> {
        let (status, stdout, stderr) = self.output(program, args, input)?;
        if status.success() {
            Ok(stdout)
        } else {
            Err(HostError::Failed {
                command: self.describe(program, args),
                status: status.to_string(),
                stderr: stderr.trim().to_owned(),
            })
        }
    }

    fn output(
        &self,
        program: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<(std::process::ExitStatus, String, String), HostError> {
        let spawn_err = |source| HostError::Spawn {
            program: program.to_owned(),
            package: package_of(program),
            source,
        };
        let mut cmd = self.command(program, args);
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        Ok((
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    fn describe(&self, program: &str, args: &[&str]) -> String {
        let ns = self
            .netns
            .as_deref()
            .map(|n| format!("[netns {n}] "))
            .unwrap_or_default();
        format!("{ns}{program} {}", args.join(" "))
    }

    fn json(&self, program: &str, args: &[&str]) -> Result<Vec<Value>, HostError> {
        let out = self.run(program, args)?;
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&out).map_err(|source| HostError::Parse {
            command: self.describe(program, args),
            source,
        })
    }

    /// Runs `ip -batch -` with the given lines (one process for many changes).
    fn ip_batch(&self, lines: &[String]) -> Result<(), HostError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut input = lines.join("\n");
        input.push('\n');
        self.run_input("ip", &["-batch", "-"], Some(&input))
            .map(|_| ())
    }

    /// Writes `/proc/sys/…` values inside the namespace (one `sh` for all of them).
    fn sysctls(&self, values: &[(String, &str)]) -> Result<(), HostError> {
        if values.is_empty() {
            return Ok(());
        }
        let script: String = values
            .iter()
            .map(|(k, v)| format!("printf {v} > /proc/sys/{k} && "))
            .collect::<String>()
            + "true";
        self.run("sh", &["-c", &script]).map(|_| ())
    }

    /// The digest comment of the live `inet strata` table, if any.
    pub fn live_digest(&self) -> Result<Option<String>, HostError> {
        let (status, stdout, _) =
            self.output("nft", &["-t", "list", "table", "inet", "strata"], None)?;
        if !status.success() {
            return Ok(None); // no table yet
        }
        Ok(digest_of(&stdout).map(str::to_owned))
    }

    /// Loads a ruleset file as one transaction.
    pub fn load_ruleset(&self, ruleset: &str) -> Result<(), HostError> {
        self.run_input("nft", &["-f", "-"], Some(ruleset))
            .map(|_| ())
    }

    /// Reconciles the namespace with the plan: see the module documentation.
    pub fn apply(&self, plan: &HostPlan) -> Result<ApplyReport, HostError> {
        let mut report = ApplyReport::default();

        // 1. The ruleset, unless the live one carries the same digest.
        let ruleset = render::render(plan);
        if self.live_digest()?.as_deref() != digest_of(&ruleset) {
            self.load_ruleset(&ruleset)?;
            report.ruleset = true;
        }

        // 2. Bridges, their addresses and sysctls.
        let links = self.json("ip", &["-j", "-d", "link", "show"])?;
        let link = |name: &str| {
            links
                .iter()
                .find(|l| l.get("ifname").and_then(Value::as_str) == Some(name))
        };
        let mut batch = Vec::new();
        let mut sysctls = Vec::new();
        for v in &plan.vnets {
            if link(&v.bridge).is_none() {
                // A fixed MAC: a bridge otherwise takes its ports' lowest MAC, and the VMs'
                // gateway entry would change whenever a NIC comes or goes.
                batch.push(format!(
                    "link add {} address {} type bridge",
                    v.bridge,
                    names::mac_string(names::mac_address(&v.id))
                ));
                sysctls.push((format!("net/ipv4/conf/{}/proxy_arp_pvlan", v.bridge), "1"));
                sysctls.push((format!("net/ipv4/conf/{}/send_redirects", v.bridge), "0"));
                sysctls.push((format!("net/ipv4/conf/{}/rp_filter", v.bridge), "0"));
                // Answer ARP at once: proxy replies are otherwise delayed up to 0.8 s.
                sysctls.push((format!("net/ipv4/neigh/{}/proxy_delay", v.bridge), "0"));
            }
            if link(&v.bridge)
                .and_then(|l| l.get("flags"))
                .and_then(Value::as_array)
                .is_none_or(|f| !f.iter().any(|x| x == "UP"))
            {
                batch.push(format!("link set {} up", v.bridge));
            }
        }
        // Stale bridges (ours by name, no longer planned).
        let planned_bridges: BTreeSet<&str> =
            plan.vnets.iter().map(|v| v.bridge.as_str()).collect();
        for l in &links {
            let name = l.get("ifname").and_then(Value::as_str).unwrap_or("");
            let kind = l
                .pointer("/linkinfo/info_kind")
                .and_then(Value::as_str)
                .unwrap_or("");
            if name.starts_with(names::BRIDGE_PREFIX)
                && kind == "bridge"
                && !planned_bridges.contains(name)
            {
                batch.push(format!("link del {name}"));
            }
        }
        self.ip_batch(&batch)?;
        self.sysctls(&sysctls)?;
        report.changes.append(&mut batch);
        report
            .changes
            .extend(sysctls.iter().map(|(k, v)| format!("sysctl {k}={v}")));

        let addrs = self.json("ip", &["-j", "-4", "addr", "show"])?;
        for v in &plan.vnets {
            let live: BTreeSet<(String, u64)> = addrs
                .iter()
                .filter(|a| a.get("ifname").and_then(Value::as_str) == Some(&v.bridge))
                .flat_map(|a| {
                    a.get("addr_info")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|i| {
                    Some((
                        i.get("local")?.as_str()?.to_owned(),
                        i.get("prefixlen")?.as_u64()?,
                    ))
                })
                .collect();
            let want: BTreeSet<(String, u64)> = v
                .gateways
                .iter()
                .map(|(ip, len)| (ip.to_string(), u64::from(*len)))
                .collect();
            for (ip, len) in want.difference(&live) {
                batch.push(format!("addr add {ip}/{len} dev {}", v.bridge));
            }
            for (ip, len) in live.difference(&want) {
                batch.push(format!("addr del {ip}/{len} dev {}", v.bridge));
            }
        }

        // 3. Policy rules and routes.
        let rules = self.json("ip", &["-j", "rule", "show"])?;
        let live_rules: BTreeSet<(String, String)> = rules
            .iter()
            .filter(|r| r.get("priority").and_then(Value::as_u64) == Some(u64::from(RULE_PREF)))
            .filter_map(|r| {
                let table = match r.get("table")? {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Some((r.get("iif")?.as_str()?.to_owned(), table))
            })
            .collect();
        let want_rules: BTreeSet<(String, String)> = plan
            .vnets
            .iter()
            .map(|v| (v.bridge.clone(), v.table.to_string()))
            .collect();
        for (iif, table) in want_rules.difference(&live_rules) {
            batch.push(format!(
                "rule add pref {RULE_PREF} iif {iif} lookup {table}"
            ));
        }
        for (iif, table) in live_rules.difference(&want_rules) {
            batch.push(format!(
                "rule del pref {RULE_PREF} iif {iif} lookup {table}"
            ));
            batch.push(format!("route flush table {table}"));
        }
        // The SYN proxy's packets (its SYN-ACK and window update to the client, its SYN and
        // ACK to the NIC) are sent by the host itself, so no bridge selects their table: these
        // rules do, by the NIC's address (unique: a proxied NIC's group overlaps no other).
        let live_proxy: BTreeSet<(String, String, String)> = rules
            .iter()
            .filter(|r| {
                r.get("priority").and_then(Value::as_u64) == Some(u64::from(PROXY_RULE_PREF))
            })
            .filter_map(|r| {
                let table = match r.get("table")? {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let (side, ip) = match r.get("dst").and_then(Value::as_str) {
                    Some(dst) => ("to", dst),
                    None => ("from", r.get("src")?.as_str()?),
                };
                Some((side.to_owned(), ip.to_owned(), table))
            })
            .collect();
        let want_proxy: BTreeSet<(String, String, String)> = plan
            .nics
            .iter()
            .filter(|n| plan.syn_proxied(n))
            .filter_map(|n| {
                let table = plan.vnet_of(n)?.table.to_string();
                Some(["from", "to"].map(|side| (side.to_owned(), n.ip.to_string(), table.clone())))
            })
            .flatten()
            .collect();
        for (side, ip, table) in want_proxy.difference(&live_proxy) {
            batch.push(format!(
                "rule add pref {PROXY_RULE_PREF} iif lo {side} {ip} lookup {table}"
            ));
        }
        for (side, ip, table) in live_proxy.difference(&want_proxy) {
            batch.push(format!(
                "rule del pref {PROXY_RULE_PREF} iif lo {side} {ip} lookup {table}"
            ));
        }
        self.ip_batch(&batch)?;
        report.changes.append(&mut batch);

        for v in &plan.vnets {
            let table = v.table.to_string();
            let args = ["-j", "route", "show", "table", table.as_str()];
            let (status, stdout, stderr) = self.output("ip", &args, None)?;
            let routes: Vec<Value> = if status.success() {
                serde_json::from_str(&stdout).map_err(|source| HostError::Parse {
                    command: self.describe("ip", &args),
                    source,
                })?
            } else if stderr.contains("does not exist") {
                Vec::new() // a table is made by its first route
            } else {
                return Err(HostError::Failed {
                    command: self.describe("ip", &args),
                    status: status.to_string(),
                    stderr: stderr.trim().to_owned(),
                });
            };
            let live: BTreeSet<(String, String)> = routes
                .iter()
                .filter_map(|r| {
                    let dst = r.get("dst")?.as_str()?.to_owned();
                    let via = match r.get("type").and_then(Value::as_str) {
                        Some("unreachable") => "unreachable".to_owned(),
                        _ => r.get("dev")?.as_str()?.to_owned(),
                    };
                    Some((dst, via))
                })
                .collect();
            let mut want: BTreeSet<(String, String)> = v.routes.iter().cloned().collect();
            let default = plan
                .uplink
                .clone()
                .unwrap_or_else(|| "unreachable".to_owned());
            want.insert(("default".to_owned(), default));
            for p in &v.unreachable {
                want.insert((p.clone(), "unreachable".to_owned()));
            }
            for (dst, via) in want.difference(&live) {
                batch.push(if via == "unreachable" {
                    format!("route replace unreachable {dst} table {table}")
                } else {
                    format!("route replace {dst} dev {via} table {table}")
                });
            }
            for (dst, via) in live.difference(&want) {
                if want.iter().any(|(d, _)| d == dst) {
                    continue; // `route replace` above changes it in place
                }
                batch.push(if via == "unreachable" {
                    format!("route del unreachable {dst} table {table}")
                } else {
                    format!("route del {dst} dev {via} table {table}")
                });
            }
        }
        self.ip_batch(&batch)?;
        report.changes.append(&mut batch);

        // 4. NIC ports that exist (created by `create_veth`, or a VM's tap).
        let planned_ports: BTreeSet<&str> = plan.nics.iter().map(|n| n.port.as_str()).collect();
        for nic in &plan.nics {
            if link(&nic.port).is_some() || self.link_exists(&nic.port)? {
                report.changes.extend(self.attach_port(plan, &nic.id)?);
            }
        }
        for l in &links {
            let name = l.get("ifname").and_then(Value::as_str).unwrap_or("");
            if name.starts_with(PORT_PREFIX) && !planned_ports.contains(name) {
                // A NIC that left the host: its veth goes; anything else is detached.
                let kind = l
                    .pointer("/linkinfo/info_kind")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                batch.push(if kind == "veth" {
                    format!("link del {name}")
                } else {
                    format!("link set {name} nomaster down")
                });
            }
        }
        self.ip_batch(&batch)?;
        report.changes.append(&mut batch);

        // 5. Forwarding, once everything above is in place.
        let forwarding = self.run("sh", &["-c", "cat /proc/sys/net/ipv4/ip_forward"])?;
        let mut global = Vec::new();
        if forwarding.trim() != "1" {
            global.push(("net/ipv4/ip_forward".to_owned(), "1"));
            global.push(("net/ipv4/conf/all/send_redirects".to_owned(), "0"));
        }
        self.sysctls(&global)?;
        report
            .changes
            .extend(global.iter().map(|(k, v)| format!("sysctl {k}={v}")));
        Ok(report)
    }

    fn link_exists(&self, name: &str) -> Result<bool, HostError> {
        let (status, _, _) = self.output("ip", &["link", "show", "dev", name], None)?;
        Ok(status.success())
    }

    /// Attaches a NIC's existing host-side device (`NicPlan::port`: a veth end, or a QEMU tap
    /// created with that name) to its network's bridge: enslaved, isolated, no MAC learning,
    /// one static forwarding entry for the NIC's MAC, up. Idempotent; returns what changed.
    pub fn attach_port(&self, plan: &HostPlan, nic_id: &str) -> Result<Vec<String>, HostError> {
        let nic = plan
            .nic(nic_id)
            .ok_or_else(|| HostError::UnknownNic(nic_id.to_owned()))?;
        let vnet = plan
            .vnet_of(nic)
            .ok_or_else(|| HostError::UnknownNic(nic_id.to_owned()))?;
        let info = self.json("ip", &["-j", "-d", "link", "show", "dev", &nic.port])?;
        let l = info.first().cloned().unwrap_or(Value::Null);
        let mut changes = Vec::new();
        let master = l.get("master").and_then(Value::as_str);
        let slave = l.pointer("/linkinfo/info_slave_data");
        let flag = |key: &str| slave.and_then(|s| s.get(key)).and_then(Value::as_bool);
        let mut batch = Vec::new();
        if master != Some(vnet.bridge.as_str()) {
            batch.push(format!("link set {} master {}", nic.port, vnet.bridge));
        }
        let up = l
            .get("flags")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x == "UP"));
        if !up {
            batch.push(format!("link set {} up", nic.port));
        }
        self.ip_batch(&batch)?;
        changes.append(&mut batch);
        let fresh = master != Some(vnet.bridge.as_str());
        if fresh || flag("isolated") != Some(true) || flag("learning") != Some(false) {
            let args = [
                "link", "set", "dev", &nic.port, "isolated", "on", "learning", "off",
            ];
            self.run("bridge", &args)?;
            changes.push(args.join(" "));
        }
        let mac = names::mac_string(nic.mac);
        let fdb = self.json("bridge", &["-j", "fdb", "show", "dev", &nic.port])?;
        let has_fdb = fdb.iter().any(|e| {
            e.get("mac").and_then(Value::as_str) == Some(mac.as_str())
                && e.get("state").and_then(Value::as_str) == Some("static")
        });
        if !has_fdb {
            let args = ["fdb", "replace", &mac, "dev", &nic.port, "master", "static"];
            self.run("bridge", &args)?;
            changes.push(args.join(" "));
        }
        Ok(changes)
    }

    /// Creates a NIC's device as a veth pair: the host end (`NicPlan::port`) here, the other
    /// end as `eth0` in the namespace `vm_netns` standing in for the VM, configured the way the
    /// VM's DHCP client would (the NIC's MAC and address, the subnet's gateway as default
    /// route). Then attaches the host end ([`Host::attach_port`]). Idempotent only through
    /// `attach_port`: it fails if the device exists.
    pub fn create_veth(
        &self,
        plan: &HostPlan,
        nic_id: &str,
        vm_netns: &str,
    ) -> Result<(), HostError> {
        let nic = plan
            .nic(nic_id)
            .ok_or_else(|| HostError::UnknownNic(nic_id.to_owned()))?;
        self.ip_batch(&[format!(
            "link add {} type veth peer name eth0 netns {vm_netns}",
            nic.port
        )])?;
        let vm = Host::netns(vm_netns);
        vm.ip_batch(&vm_side(nic))?;
        self.attach_port(plan, nic_id).map(|_| ())
    }

    /// What each NIC's DDoS limits dropped since its ruleset was loaded (`nft -j list counters
    /// table inet strata`), with the time of reading, for [`crate::MitigationMonitor`].
    pub fn ddos_counters(&self, plan: &HostPlan) -> Result<DdosSample, HostError> {
        let args = ["-j", "list", "counters", "table", "inet", "strata"];
        let out = self.run("nft", &args)?;
        let taken = Instant::now();
        let shorts: Vec<(&str, &str)> = plan
            .nics
            .iter()
            .map(|n| (n.id.as_str(), n.port.trim_start_matches(PORT_PREFIX)))
            .collect();
        let nics =
            ddos::parse_counters(&out, shorts).ok_or_else(|| HostError::UnexpectedOutput {
                command: self.describe("nft", &args),
            })?;
        Ok(DdosSample { taken, nics })
    }

    /// Forgets every tracked connection of a NIC (either direction, in its network's zone):
    /// what a quarantine does after changing the rules, since established flows are otherwise
    /// accepted without looking at the rules again. Returns how many entries went.
    pub fn flush_conntrack(&self, plan: &HostPlan, nic_id: &str) -> Result<u32, HostError> {
        let nic = plan
            .nic(nic_id)
            .ok_or_else(|| HostError::UnknownNic(nic_id.to_owned()))?;
        let zone = plan.vnet_of(nic).map(|v| v.zone).unwrap_or_default();
        let (zone, ip) = (zone.to_string(), nic.ip.to_string());
        let mut total = 0;
        for side in ["-s", "-d"] {
            let args = ["-D", "-w", zone.as_str(), side, ip.as_str()];
            let (status, _, stderr) = self.output("conntrack", &args, None)?;
            // conntrack exits 1 when nothing matched; the count is on stderr either way.
            let count = stderr
                .split_whitespace()
                .zip(stderr.split_whitespace().skip(1))
                .find(|(_, next)| *next == "flow")
                .and_then(|(n, _)| n.parse::<u32>().ok());
            match count {
                Some(n) => total += n,
                None if status.success() => {}
                None => {
                    return Err(HostError::Failed {
                        command: self.describe("conntrack", &args),
                        status: status.to_string(),
                        stderr: stderr.trim().to_owned(),
                    });
                }
            }
        }
        Ok(total)
    }
}

/// The `ip -batch` lines that configure a VM-side `eth0` like DHCP would.
fn vm_side(nic: &NicPlan) -> Vec<String> {
    vec![
        "link set lo up".to_owned(),
        format!("link set eth0 address {} up", names::mac_string(nic.mac)),
        format!("addr add {}/{} dev eth0", nic.ip, nic.prefix_len),
        format!("route add default via {} dev eth0", nic.gateway),
    ]
}
