//! The host's dataplane driven by the control plane's network resources, end to end: a real
//! swtpm host attests, VMs with network interfaces created through the API land on it, and its
//! agent's VM loop (simulated hypervisor, real `strata-netdp` network in a namespace standing
//! in for the host) makes the virtual network's bridge and a tap per VM interface owned by the
//! VM's uid. The simulated VMs have no guest, so namespaces stand in for them: each VM's tap is
//! swapped for a veth into a namespace configured as the guest would be (netdp's
//! `create_veth`), and real TCP SYNs show the NSG at work — 22 dropped by a deny rule, then let
//! through once an allow rule is added through the API and the agent's next poll. Then DDoS
//! basics: a per-NIC override of the default limits through the API reaches the host, a SYN
//! flood from one guest is cut by the per-source limit, the drops reach the control plane's
//! view of the NIC (`ddosCounters`) with a MitigationStarted audit entry, and another source
//! still connects; a host's report about an interface it does not hold is refused.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strata_agent::images::{ImageStore, SigningKey};
use strata_agent::network::{HostNetwork as _, NetDesired, NetdpNetwork};
use strata_agent::vms::{ControlPlane as _, PowerState, VmHost, VmHostConfig};
use strata_compute::sim::SimDriver;
use strata_compute::{Hypervisor as _, VmId};
use strata_netdp::{DdosPolicy, Host, Rate, names};

use crate::fabric::{TrustedFabric, trusted_host};
use crate::harness::Server;

/// A network namespace, deleted on drop.
struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Self {
        let name = format!("sth-{}-{tag}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name} (root and iproute2 are required)");
        Self(name)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/run/netns/{ns}")).unwrap();
            #[expect(unsafe_code, reason = "setns(2) has no safe wrapper in std")]
            // SAFETY: `file` is an open namespace file; setns changes only this scoped thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}");
            f()
        })
        .join()
        .unwrap()
    })
}

/// A real TCP connection attempt from `from` to `to:port` (a listener there): whether the
/// handshake completed within 2 s (a dropped SYN times out).
fn tcp_passes(from: &str, to: &str, dst: Ipv4Addr, port: u16) -> bool {
    let listener = in_netns(to, || {
        TcpListener::bind(SocketAddrV4::new(dst, port)).unwrap()
    });
    let ok = in_netns(from, || {
        match TcpStream::connect_timeout(
            &SocketAddr::V4(SocketAddrV4::new(dst, port)),
            Duration::from_secs(2),
        ) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => false,
            Err(e) => panic!("connect to {dst}:{port}: unexpected {e}"),
        }
    });
    drop(listener);
    ok
}

fn link(ns: &str, dev: &str) -> Option<Value> {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "-d", "link", "show", "dev", dev])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    v.into_iter().next()
}

fn put(server: &Server, path: &str, body: Value) -> Value {
    let (s, v) = server.admin("PUT", path, Some(body));
    assert!(s == 200 || s == 201, "PUT {path}: {s} {v}");
    v
}

fn deny_ssh() -> Value {
    json!({ "name": "deny-ssh", "properties": { "priority": 200, "direction": "Inbound",
        "access": "Deny", "protocol": "Tcp", "sourceAddressPrefix": "*", "sourcePortRange": "*",
        "destinationAddressPrefix": "*", "destinationPortRange": "22" } })
}

#[test]
fn the_agent_drives_the_dataplane_from_the_control_planes_network() {
    // A control plane and one Trusted host.
    let TrustedFabric {
        ca,
        good,
        server,
        keys: _keys,
    } = TrustedFabric::start(|cfg| {
        cfg.fabric.attestation_interval_secs = 1;
    });
    let (swtpm, mut agent, _dir) = trusted_host(&ca, "net-host", &good, &server);

    // The network through the API: web (NSG denying 22) and app subnets, a NIC in each, and a
    // third NIC for a VM that is deleted later.
    let rg = server.rg("net");
    put(&server, &rg, json!({ "location": "local" }));
    let net = |t: &str, n: &str| format!("{rg}/providers/Strata.Network/{t}/{n}");
    let nsg = put(
        &server,
        &net("networkSecurityGroups", "web-nsg"),
        json!({ "properties": { "securityRules": [deny_ssh()] } }),
    );
    let nsg_id = nsg["id"].as_str().unwrap().to_string();
    let vnet = put(
        &server,
        &net("virtualNetworks", "vnet1"),
        json!({ "properties": { "addressSpace": { "addressPrefixes": ["10.1.0.0/16"] },
            "subnets": [ { "name": "web", "properties": { "addressPrefix": "10.1.1.0/24" } },
                         { "name": "app", "properties": { "addressPrefix": "10.1.2.0/24" } } ] } }),
    );
    let vnet_id = vnet["id"].as_str().unwrap().to_string();
    let mut nics = Vec::new();
    for (name, subnet, nsg) in [
        ("web-nic", "web", Some(&nsg_id)),
        ("app-nic", "app", None),
        ("extra-nic", "app", None),
    ] {
        let mut props = json!({ "subnet": { "id": format!("{vnet_id}/subnets/{subnet}") } });
        if let Some(n) = nsg {
            props["networkSecurityGroup"] = json!({ "id": n });
        }
        let v = put(
            &server,
            &net("networkInterfaces", name),
            json!({ "properties": props }),
        );
        let mac = v["properties"]["macAddress"].as_str().unwrap();
        assert!(
            mac.len() == 17 && mac.starts_with("02-"),
            "a locally administered MAC in Azure's spelling: {v}"
        );
        nics.push(v);
    }
    // A PUT of what GET returned keeps the MAC.
    let again = put(
        &server,
        &net("networkInterfaces", "web-nic"),
        json!({ "properties": nics[0]["properties"].clone() }),
    );
    assert_eq!(
        again["properties"]["macAddress"],
        nics[0]["properties"]["macAddress"]
    );
    let nic_id = |i: usize| nics[i]["id"].as_str().unwrap().to_string();
    let ip = |i: usize| -> Ipv4Addr {
        nics[i]["properties"]["privateIPAddress"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };

    // Three VMs, one interface each; all land on the only host.
    let mut vm_ids = Vec::new();
    for (vm, i) in [("web", 0), ("app", 1), ("extra", 2)] {
        let v = put(
            &server,
            &format!("{rg}/providers/Strata.Compute/virtualMachines/{vm}"),
            json!({ "properties": { "storageProfile": { "image": "tiny" },
                "networkProfile": { "networkInterfaces": [ { "id": nic_id(i) } ] } } }),
        );
        assert_eq!(v["properties"]["host"], "net-host", "{v}");
        vm_ids.push(v["properties"]["vmId"].as_str().unwrap().to_string());
    }
    let list = agent.assignments(true).unwrap();
    let web = list["virtualMachines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vmId"] == vm_ids[0])
        .unwrap();
    let nic = &web["networkInterfaces"][0];
    assert_eq!(nic["id"], nic_id(0), "{web}");
    assert_eq!(
        (nic["prefixLength"].as_u64(), nic["gateway"].as_str()),
        (Some(24), Some("10.1.1.1")),
        "{nic}"
    );
    assert_eq!(
        nic["macAddress"].as_str().unwrap().replace(':', "-"),
        nics[0]["properties"]["macAddress"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase()
    );
    assert!(list["network"]["etag"].is_string(), "{list}");

    // The host's agent: simulated hypervisor, real dataplane in a namespace.
    let host_ns = Ns::new("host");
    let images = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(images.path().join("tiny")).unwrap();
    std::fs::write(images.path().join("tiny/disk.qcow2"), b"qcow").unwrap();
    std::fs::write(images.path().join("tiny/inputs.txt"), b"kernel fake 1\n").unwrap();
    let sim = Arc::new(SimDriver::new());
    let network = Arc::new(NetdpNetwork::new(Host::netns(&host_ns.0)));
    let vms = VmHost::new(
        sim.clone(),
        Arc::new(ImageStore::new(
            images.path().to_path_buf(),
            SigningKey::Snakeoil,
        )),
        VmHostConfig {
            poll_every: Duration::from_millis(100),
            report_every: Duration::from_secs(10),
            vm_dir: None,
        },
    )
    .with_network(network.clone());
    // The agent's attestation loop on its own thread, as `strata agent` runs it: rounds keep
    // the host Trusted and hand the VM loop a client with the current certificate.
    let fabric = agent.fabric_client().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = {
        let stop = stop.clone();
        std::thread::spawn(move || agent.run(&stop))
    };
    let step = || {
        vms.tick(&fabric);
        assert!(vms.wait_idle(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(100));
    };
    let power = |vms: &VmHost, vm: &str| {
        vms.statuses()
            .iter()
            .find(|s| s.id.ends_with(&format!("/virtualMachines/{vm}")))
            .map(|s| s.power_state)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while ["web", "app", "extra"]
        .iter()
        .any(|vm| power(&vms, vm) != Some(PowerState::Running))
    {
        step();
        assert!(Instant::now() < deadline, "{:?}", vms.statuses());
    }

    // The bridge of the virtual network, and each VM's tap: owned by the VM's uid, on it.
    let bridge = names::bridge_name(&vnet_id);
    let b = link(&host_ns.0, &bridge).unwrap_or_else(|| panic!("no bridge {bridge}"));
    assert_eq!(b["linkinfo"]["info_kind"], "bridge", "{b}");
    for (i, vm_id) in vm_ids.iter().enumerate() {
        let port = names::port_name(&nic_id(i));
        let tap = link(&host_ns.0, &port).unwrap_or_else(|| panic!("no tap {port}"));
        let (uid, gid) = sim.owner(&VmId::new(vm_id).unwrap()).unwrap().unwrap();
        assert_eq!(tap["linkinfo"]["info_kind"], "tun", "{tap}");
        assert_eq!(tap["linkinfo"]["info_data"]["type"], "tap", "{tap}");
        assert_eq!(
            (
                tap["linkinfo"]["info_data"]["user"].as_u64(),
                tap["linkinfo"]["info_data"]["group"].as_u64()
            ),
            (Some(u64::from(uid)), Some(u64::from(gid))),
            "{tap}"
        );
        assert_eq!(tap["master"], bridge.as_str(), "{tap}");
    }

    // A deleted VM's tap goes.
    let (s, v) = server.admin(
        "DELETE",
        &format!("{rg}/providers/Strata.Compute/virtualMachines/extra"),
        None,
    );
    assert!(s == 200 || s == 202 || s == 204, "{s} {v}");
    let extra_port = names::port_name(&nic_id(2));
    let deadline = Instant::now() + Duration::from_secs(60);
    while link(&host_ns.0, &extra_port).is_some() {
        step();
        assert!(Instant::now() < deadline, "the deleted VM's tap stays");
    }

    // The simulated VMs have no guest: namespaces stand in for web and app, each behind a veth
    // in place of its VM's tap, configured as the guest would be (MAC, address, gateway).
    let plan = network.plan().unwrap();
    let guests: Vec<Ns> = ["web", "app"].iter().map(|n| Ns::new(n)).collect();
    for (i, guest) in guests.iter().enumerate() {
        let port = names::port_name(&nic_id(i));
        let ok = Command::new("ip")
            .args(["-n", &host_ns.0, "link", "del", "dev", &port])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        network
            .host()
            .create_veth(&plan, &nic_id(i), &guest.0)
            .unwrap();
    }
    let (web_ns, app_ns) = (&guests[0].0, &guests[1].0);
    // Within the virtual network 80 passes (AllowVnetInBound); 22 meets web-nsg's deny.
    assert!(tcp_passes(app_ns, web_ns, ip(0), 80), "app -> web:80");
    assert!(!tcp_passes(app_ns, web_ns, ip(0), 22), "app -> web:22");

    // An allow rule for the app subnet at priority 100, through the API: the next poll brings
    // it to the host, and new SYNs on 22 pass.
    put(
        &server,
        &net("networkSecurityGroups", "web-nsg"),
        json!({ "properties": { "securityRules": [deny_ssh(), {
            "name": "allow-ssh-from-app", "properties": { "priority": 100, "direction": "Inbound",
            "access": "Allow", "protocol": "Tcp", "sourceAddressPrefix": "10.1.2.0/24",
            "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "22" } }] } }),
    );
    let before = network.plan().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while network.plan().unwrap() == before {
        step();
        assert!(Instant::now() < deadline, "the rule did not reach the host");
    }
    assert!(
        tcp_passes(app_ns, web_ns, ip(0), 22),
        "app -> web:22 allowed"
    );

    // The same plan again changes nothing (the agent applies only on change).
    let report = network.host().apply(&network.plan().unwrap()).unwrap();
    assert!(!report.changed(), "{report:?}");

    // A restarted agent: a new network over the same host reconciles the same assignments to
    // the same plan and leaves the ruleset and every link as they were.
    let links = || {
        let out = Command::new("ip")
            .args(["-n", &host_ns.0, "-br", "link", "show"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let (digest, before) = (network.host().live_digest().unwrap(), links());
    let restarted = NetdpNetwork::new(Host::netns(&host_ns.0));
    let a = fabric.assignments().unwrap().unwrap();
    let (etag, topology) = a.network.clone().unwrap();
    let desired = NetDesired {
        etag,
        topology,
        nics: a.vms.iter().flat_map(|v| v.nics.clone()).collect(),
    };
    let keep = desired.nics.iter().map(|n| n.id.clone()).collect();
    restarted.reconcile(&desired, &keep).unwrap();
    assert_eq!(restarted.plan(), network.plan());
    assert_eq!(restarted.host().live_digest().unwrap(), digest);
    assert_eq!(links(), before);

    // DDoS basics per NIC. Every NIC has the default limits (the control plane's view of them
    // agrees with netdp's); nonsense overrides are refused.
    let ddos_view = |i: usize| {
        let (s, v) = server.admin("POST", &format!("{}/ddosCounters", nic_id(i)), None);
        assert_eq!(s, 200, "{v}");
        v
    };
    let d = DdosPolicy::default();
    let rate = |r: Option<Rate>| {
        let r = r.unwrap();
        json!({ "perSecond": r.per_second, "burst": r.burst })
    };
    assert_eq!(
        ddos_view(1)["policy"],
        json!({ "synPerSource": rate(d.syn_per_source), "synTotal": rate(d.syn_total),
            "newFlowsPerSource": rate(d.per_source), "maxConnections": d.max_connections }),
    );
    assert!(plan.nics.iter().all(|n| n.ddos == d), "{plan:?}");
    let web_props = server
        .admin("GET", &nic_id(0), None)
        .1
        .get("properties")
        .cloned()
        .unwrap();
    for bad in [
        json!({ "synPerSource": { "perSecond": 0, "burst": 10 } }),
        json!({ "synPerSource": { "perSecond": 5, "burst": 1 } }),
        json!({ "maxConnections": 0 }),
        json!({ "synCookies": "off" }),
    ] {
        let mut props = web_props.clone();
        props["ddosSettings"] = bad.clone();
        let (s, v) = server.admin("PUT", &nic_id(0), Some(json!({ "properties": props })));
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("InvalidDdosSettings")),
            "{bad}: {v}"
        );
    }
    // web-nic's per-source SYN limit lowered to 5/s (burst 10) through the API: the next poll
    // programs it.
    let mut props = web_props.clone();
    props["ddosSettings"] = json!({ "synPerSource": { "perSecond": 5, "burst": 10 } });
    let v = put(&server, &nic_id(0), json!({ "properties": props }));
    assert_eq!(
        v["properties"]["ddosSettings"]["synPerSource"]["burst"], 10,
        "{v}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while network
        .plan()
        .unwrap()
        .nic(&nic_id(0))
        .unwrap()
        .ddos
        .syn_per_source
        != Some(Rate::new(5, 10))
    {
        step();
        assert!(
            Instant::now() < deadline,
            "the DDoS settings did not reach the host"
        );
    }

    // A third guest in the app subnet: a legitimate client from another source.
    let client_nic = put(
        &server,
        &net("networkInterfaces", "client-nic"),
        json!({ "properties": { "subnet": { "id": format!("{vnet_id}/subnets/app") } } }),
    );
    let client_nic_id = client_nic["id"].as_str().unwrap().to_string();
    put(
        &server,
        &format!("{rg}/providers/Strata.Compute/virtualMachines/client"),
        json!({ "properties": { "storageProfile": { "image": "tiny" },
            "networkProfile": { "networkInterfaces": [ { "id": client_nic_id } ] } } }),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while power(&vms, "client") != Some(PowerState::Running) {
        step();
        assert!(Instant::now() < deadline, "{:?}", vms.statuses());
    }
    let client_ns = Ns::new("client");
    let ok = Command::new("ip")
        .args([
            "-n",
            &host_ns.0,
            "link",
            "del",
            "dev",
            &names::port_name(&client_nic_id),
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    network
        .host()
        .create_veth(&network.plan().unwrap(), &client_nic_id, &client_ns.0)
        .unwrap();

    // A SYN flood from app to web (port 8080: nothing listens, the guest answers RST; the NSG
    // allows it within the virtual network): far past 5/s. The VM loop samples the counters
    // on its polls, and the control plane's view of web-nic shows the drops, with an audit
    // entry for the mitigation.
    let flood = || {
        in_netns(app_ns, || {
            for _ in 0..300 {
                let _ = TcpStream::connect_timeout(
                    &SocketAddr::V4(SocketAddrV4::new(ip(0), 8080)),
                    Duration::from_millis(2),
                );
            }
        });
    };
    let started = |audit: &Value| {
        audit["value"].as_array().unwrap().iter().any(|e| {
            let e = &e["entry"];
            e["action"] == "Strata.Network/networkInterfaces/ddosMitigation/action"
                && e["scope"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(&nic_id(0)))
                && e["details"]["event"] == "MitigationStarted"
                && e["details"]["mechanism"] == "SynFlood"
                && e["outcome"] == "success"
        })
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        flood();
        step();
        let view = ddos_view(0);
        let dropped = view["counters"]["synFlood"]["packets"]
            .as_u64()
            .unwrap_or(0);
        let (_, audit) = server.admin("GET", "/providers/Strata.Audit/entries?limit=2000", None);
        if dropped > 0 && started(&audit) {
            assert_eq!(view["host"], "net-host", "{view}");
            assert_eq!(
                view["policy"]["synPerSource"],
                json!({ "perSecond": 5, "burst": 10 })
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no SYN-flood drops or MitigationStarted reached the control plane: {view}"
        );
    }
    // Legitimate traffic from another source still gets through to web while app floods.
    std::thread::scope(|scope| {
        let flooding = scope.spawn(flood);
        assert!(
            tcp_passes(&client_ns.0, web_ns, ip(0), 80),
            "client -> web:80 during the flood"
        );
        flooding.join().unwrap();
    });
    // Once the flood stops, an interval without drops ends the mitigation (audited too).
    let ended = |audit: &Value| {
        audit["value"].as_array().unwrap().iter().any(|e| {
            let e = &e["entry"];
            e["action"] == "Strata.Network/networkInterfaces/ddosMitigation/action"
                && e["scope"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(&nic_id(0)))
                && e["details"]["event"] == "MitigationEnded"
                && e["details"]["mechanism"] == "SynFlood"
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        step();
        let (_, audit) = server.admin("GET", "/providers/Strata.Audit/entries?limit=2000", None);
        if ended(&audit) && ddos_view(0)["mitigating"] == json!([]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no MitigationEnded after the flood stopped"
        );
    }

    // A host cannot report about interfaces it does not hold (extra-nic's VM is gone): the
    // report is taken, those entries are refused and audited, nothing is shown for them.
    let foreign = json!({ "networkInterfaces": [ { "id": nic_id(2), "counters": {
            "synFlood": { "packets": 99, "bytes": 1 }, "perSourceRate": { "packets": 0, "bytes": 0 },
            "conntrackCap": { "packets": 0, "bytes": 0 } } } ],
        "events": [ { "nic": nic_id(2), "event": "MitigationStarted", "mechanism": "SynFlood",
            "dropsPerSecond": 1.0 } ] });
    fabric.report_nics(&foreign).unwrap();
    // Without the host's client certificate, no report is taken at all.
    let ca = ureq::tls::Certificate::from_pem(server.profile.ca_certificate.as_bytes()).unwrap();
    let anonymous: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
                .unversioned_rustls_crypto_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .build(),
        )
        .http_status_as_error(false)
        .build()
        .into();
    let resp = anonymous
        .post(&format!(
            "{}/fabric/v1/hosts/net-host/nicstatus",
            server.endpoint()
        ))
        .send_json(&foreign)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(ddos_view(2)["counters"], Value::Null);
    let (_, audit) = server.admin("GET", "/providers/Strata.Audit/entries?limit=2000", None);
    assert!(
        audit["value"].as_array().unwrap().iter().any(|e| {
            e["entry"]["action"] == "Strata.Network/networkInterfaces/ddosMitigation/action"
                && e["entry"]["outcome"] == "denied"
                && e["entry"]["details"]["networkInterfaces"][0] == nic_id(2)
        }),
        "the refused report is audited"
    );
    assert!(!audit["value"].as_array().unwrap().iter().any(|e| {
        e["entry"]["scope"] == nic_id(2) && e["entry"]["details"]["event"] == "MitigationStarted"
    }));
    drop(vms);
    stop.store(true, Ordering::Relaxed);
    rounds.join().unwrap();
    drop(swtpm);
}
