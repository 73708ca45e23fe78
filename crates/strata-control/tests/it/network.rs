//! `Strata.Network` through the API: virtual networks, NSGs, NICs and ASGs validated by the
//! engine on every write (bad input refused with its code, nothing stored), the NIC's own
//! deny-by-default NSG, referenced resources protected from deletion, and the engine's answers
//! (`ipFlowVerify`, `effectiveNetworkSecurityGroups`, `reachability`) on stored resources.

use crate::harness::Server;
use serde_json::{Value, json};

fn path(s: &Server, rg: &str, rtype: &str, name: &str) -> String {
    format!("{}/providers/Strata.Network/{rtype}/{name}", s.rg(rg))
}

fn put(s: &Server, p: &str, props: Value) -> Value {
    let (st, v) = s.admin("PUT", p, Some(json!({ "properties": props })));
    assert!(st == 200 || st == 201, "PUT {p}: {st} {v}");
    v
}

fn refused(s: &Server, p: &str, props: Value, status: u16, code: &str) -> Value {
    let before = s.running().app.store.revision().unwrap();
    let (st, v) = s.admin("PUT", p, Some(json!({ "properties": props })));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (status, Some(code)),
        "{v}"
    );
    assert_eq!(
        s.running().app.store.revision().unwrap(),
        before,
        "nothing was written: {v}"
    );
    v
}

fn rule(name: &str, priority: u32, access: &str, from: &str, port: &str) -> Value {
    json!({ "name": name, "properties": {
        "priority": priority, "direction": "Inbound", "access": access, "protocol": "Tcp",
        "sourceAddressPrefix": from, "sourcePortRange": "*",
        "destinationAddressPrefix": "*", "destinationPortRange": port,
    }})
}

fn subnet(name: &str, prefix: &str, nsg: Option<&str>) -> Value {
    let mut props = json!({ "addressPrefix": prefix });
    if let Some(n) = nsg {
        props["networkSecurityGroup"] = json!({ "id": n });
    }
    json!({ "name": name, "properties": props })
}

fn vnet(space: &str, subnets: Vec<Value>, peers: &[&str]) -> Value {
    let peerings: Vec<Value> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| json!({ "name": format!("peer{i}"), "properties": { "remoteVirtualNetwork": { "id": p } } }))
        .collect();
    json!({
        "addressSpace": { "addressPrefixes": [space] },
        "subnets": subnets,
        "virtualNetworkPeerings": peerings,
    })
}

fn post(s: &Server, p: &str, body: Value) -> Value {
    let (st, v) = s.admin("POST", p, Some(body));
    assert_eq!(st, 200, "POST {p}: {v}");
    v
}

fn flow(s: &Server, nic: &str, local: &str, remote: &str) -> Value {
    post(
        s,
        &format!("{nic}/ipFlowVerify"),
        json!({ "direction": "Inbound", "protocol": "Tcp", "local": local, "remote": remote }),
    )
}

#[test]
fn network_resources_are_validated_and_rules_decide_flows() {
    let s = Server::start();
    let (st, v) = s.admin("PUT", &s.rg("net"), Some(json!({})));
    assert_eq!(st, 201, "{v}");
    let v1 = path(&s, "net", "virtualNetworks", "v1");
    let web_subnet = format!("{v1}/subnets/web");

    // Bad input is refused with the engine's code and nothing is created.
    refused(
        &s,
        &v1,
        vnet(
            "10.0.0.0/16",
            vec![
                subnet("a", "10.0.1.0/24", None),
                subnet("b", "10.0.1.128/25", None),
            ],
            &[],
        ),
        400,
        "OverlappingSubnets",
    );
    refused(
        &s,
        &v1,
        vnet("10.0.0.0/33", vec![], &[]),
        400,
        "InvalidAddressPrefix",
    );
    let bad_nsg = path(&s, "net", "networkSecurityGroups", "bad");
    for (rules, code) in [
        (
            vec![rule("low", 99, "Allow", "10.9.0.0/16", "80")],
            "SecurityRulePriorityOutOfRange",
        ),
        (
            vec![rule("high", 4097, "Allow", "10.9.0.0/16", "80")],
            "SecurityRulePriorityOutOfRange",
        ),
        (
            vec![
                rule("one", 200, "Allow", "10.9.0.0/16", "80"),
                rule("two", 200, "Deny", "10.8.0.0/16", "81"),
            ],
            "DuplicateSecurityRulePriority",
        ),
        (
            vec![rule("ssh", 100, "Allow", "Internet", "22")],
            "ManagementPortExposedToInternet",
        ),
        (
            vec![rule("rdp", 100, "Allow", "*", "3389")],
            "ManagementPortExposedToInternet",
        ),
    ] {
        refused(&s, &bad_nsg, json!({ "securityRules": rules }), 400, code);
    }
    assert_eq!(s.admin("GET", &v1, None).0, 404);
    assert_eq!(s.admin("GET", &bad_nsg, None).0, 404);

    // A VNet with a subnet; a NIC referring to a subnet that does not exist is refused.
    put(
        &s,
        &v1,
        vnet("10.0.0.0/16", vec![subnet("web", "10.0.1.0/24", None)], &[]),
    );
    let nic = path(&s, "net", "networkInterfaces", "web1");
    refused(
        &s,
        &nic,
        json!({ "subnet": { "id": format!("{v1}/subnets/nope") } }),
        400,
        "UnknownReference",
    );

    // A NIC without an NSG gets its own deny-by-default one, in the same transaction, and the
    // first free address after the four reserved ones.
    let v = put(&s, &nic, json!({ "subnet": { "id": web_subnet } }));
    let p = &v["properties"];
    assert_eq!(p["privateIPAddress"], "10.0.1.4", "{v}");
    let own_nsg = path(&s, "net", "networkSecurityGroups", "web1-nsg");
    assert_eq!(p["networkSecurityGroup"]["id"], own_nsg, "{v}");
    assert!(
        p["secureDefaults"].as_str().unwrap().contains("web1-nsg"),
        "{v}"
    );
    let (st, g) = s.admin("GET", &own_nsg, None);
    assert_eq!(st, 200, "{g}");
    assert_eq!(g["properties"]["securityRules"], json!([]));
    let nic2 = path(&s, "net", "networkInterfaces", "web2");
    let v = put(&s, &nic2, json!({ "subnet": { "id": web_subnet } }));
    assert_eq!(v["properties"]["privateIPAddress"], "10.0.1.5", "{v}");

    // SYN to 22 with no allow rule: DenyAllInBound of the NIC's own NSG decides.
    let internet = "203.0.113.9:50000";
    let v = flow(&s, &nic, "10.0.1.4:22", internet);
    assert_eq!(v["access"], "Deny", "{v}");
    assert_eq!(v["ruleName"], "defaultSecurityRules/DenyAllInBound", "{v}");
    assert_eq!(v["networkSecurityGroup"]["id"], own_nsg, "{v}");

    // An allow at priority 100 from one prefix lets exactly that prefix through.
    put(
        &s,
        &own_nsg,
        json!({ "securityRules": [rule("allow-ssh", 100, "Allow", "198.51.100.0/24", "22")] }),
    );
    for (remote, access, rule_name) in [
        ("198.51.100.7:50000", "Allow", "securityRules/allow-ssh"),
        ("198.51.100.255:50000", "Allow", "securityRules/allow-ssh"),
        (
            "198.51.99.255:50000",
            "Deny",
            "defaultSecurityRules/DenyAllInBound",
        ),
        (
            "198.51.101.0:50000",
            "Deny",
            "defaultSecurityRules/DenyAllInBound",
        ),
        (internet, "Deny", "defaultSecurityRules/DenyAllInBound"),
    ] {
        let v = flow(&s, &nic, "10.0.1.4:22", remote);
        assert_eq!(
            (v["access"].as_str(), v["ruleName"].as_str()),
            (Some(access), Some(rule_name)),
            "{remote}: {v}"
        );
    }
    let v = post(
        &s,
        &format!("{nic}/reachability"),
        json!({ "protocol": "Tcp", "port": 22 }),
    );
    let sources: Vec<&str> = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert!(sources.contains(&"198.51.100.0/24"), "{v}");
    assert!(
        !sources
            .iter()
            .any(|p| p.starts_with("203.") || *p == "0.0.0.0/0"),
        "{v}"
    );
    let v = post(
        &s,
        &format!("{nic}/effectiveNetworkSecurityGroups"),
        json!({}),
    );
    assert!(v.to_string().contains("allow-ssh"), "{v}");
    assert!(v.to_string().contains("DenyAllInBound"), "{v}");
    // The other NIC's NSG is its own: still closed.
    let v = flow(&s, &nic2, "10.0.1.5:22", "198.51.100.7:50000");
    assert_eq!(v["access"], "Deny", "{v}");

    // The guardrail holds on update too, and the stored rules are unchanged.
    refused(
        &s,
        &own_nsg,
        json!({ "securityRules": [rule("ssh-all", 100, "Allow", "Internet", "22")] }),
        400,
        "ManagementPortExposedToInternet",
    );
    let (_, g) = s.admin("GET", &own_nsg, None);
    assert_eq!(g["properties"]["securityRules"][0]["name"], "allow-ssh");

    // Subnet deny + NIC allow still denies; the subnet's rule is named.
    let deny = path(&s, "net", "networkSecurityGroups", "subnet-deny");
    put(
        &s,
        &deny,
        json!({ "securityRules": [rule("deny-ssh", 100, "Deny", "*", "22")] }),
    );
    put(
        &s,
        &v1,
        vnet(
            "10.0.0.0/16",
            vec![subnet("web", "10.0.1.0/24", Some(&deny))],
            &[],
        ),
    );
    let v = flow(&s, &nic, "10.0.1.4:22", "198.51.100.7:50000");
    assert_eq!(v["access"], "Deny", "{v}");
    assert_eq!(v["ruleName"], "securityRules/deny-ssh", "{v}");
    assert_eq!(v["networkSecurityGroup"]["id"], deny, "{v}");
    assert_eq!(v["level"], "Subnet", "{v}");

    // Referenced resources cannot be deleted; the referrers are named.
    let (st, v) = s.admin("DELETE", &own_nsg, None);
    assert_eq!(st, 409, "{v}");
    assert_eq!(
        v["error"]["code"],
        "InUseNetworkSecurityGroupCannotBeDeleted"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("web1"),
        "{v}"
    );
    let (st, v) = s.admin("DELETE", &deny, None);
    assert_eq!(st, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("subnets/web"),
        "{v}"
    );
    let v = refused(
        &s,
        &v1,
        vnet("10.0.0.0/16", vec![], &[]),
        409,
        "InUseSubnetCannotBeDeleted",
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("web2"),
        "{v}"
    );
    // The NIC's own NSG (rules edited since) goes with it.
    assert_eq!(s.admin("DELETE", &nic, None).0, 200);
    assert_eq!(s.admin("GET", &own_nsg, None).0, 404);

    // Not when something else uses it: web2's own NSG also guards a subnet, so it stays (and
    // can be deleted once the subnet lets go of it).
    let web2_nsg = path(&s, "net", "networkSecurityGroups", "web2-nsg");
    put(
        &s,
        &v1,
        vnet(
            "10.0.0.0/16",
            vec![
                subnet("web", "10.0.1.0/24", Some(&deny)),
                subnet("db", "10.0.2.0/24", Some(&web2_nsg)),
            ],
            &[],
        ),
    );
    assert_eq!(s.admin("DELETE", &nic2, None).0, 200);
    assert_eq!(s.admin("GET", &web2_nsg, None).0, 200);
    put(
        &s,
        &v1,
        vnet(
            "10.0.0.0/16",
            vec![subnet("web", "10.0.1.0/24", Some(&deny))],
            &[],
        ),
    );
    assert_eq!(s.admin("DELETE", &web2_nsg, None).0, 200);
    // An NSG the caller created and gave explicitly is never deleted with an interface.
    let n3 = path(&s, "net", "networkInterfaces", "web3");
    put(
        &s,
        &n3,
        json!({ "subnet": { "id": web_subnet }, "networkSecurityGroup": { "id": deny } }),
    );
    assert_eq!(s.admin("DELETE", &n3, None).0, 200);
    assert_eq!(s.admin("GET", &deny, None).0, 200);
}

#[test]
fn virtual_networks_reach_each_other_only_when_peered_both_ways() {
    let s = Server::start();
    assert_eq!(s.admin("PUT", &s.rg("a"), Some(json!({}))).0, 201);
    assert_eq!(s.admin("PUT", &s.rg("b"), Some(json!({}))).0, 201);
    let va = path(&s, "a", "virtualNetworks", "va");
    let vb = path(&s, "b", "virtualNetworks", "vb");
    put(
        &s,
        &va,
        vnet("10.1.0.0/16", vec![subnet("s", "10.1.0.0/24", None)], &[]),
    );
    put(
        &s,
        &vb,
        vnet("10.2.0.0/16", vec![subnet("s", "10.2.0.0/24", None)], &[]),
    );
    let na = path(&s, "a", "networkInterfaces", "na");
    let nb = path(&s, "b", "networkInterfaces", "nb");
    put(
        &s,
        &na,
        json!({ "subnet": { "id": format!("{va}/subnets/s") } }),
    );
    put(
        &s,
        &nb,
        json!({ "subnet": { "id": format!("{vb}/subnets/s") } }),
    );
    let reach = |s: &Server| {
        post(
            s,
            &format!("{nb}/reachability"),
            json!({ "protocol": "Tcp", "port": 80, "source": { "id": na } }),
        )
    };

    let v = reach(&s);
    assert_eq!(v["reachable"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("not peered"), "{v}");

    // One side is not enough.
    put(
        &s,
        &va,
        vnet(
            "10.1.0.0/16",
            vec![subnet("s", "10.1.0.0/24", None)],
            &[&vb],
        ),
    );
    assert_eq!(reach(&s)["reachable"], false);

    // Both sides: the default rules allow traffic within VirtualNetwork, peers included.
    put(
        &s,
        &vb,
        vnet(
            "10.2.0.0/16",
            vec![subnet("s", "10.2.0.0/24", None)],
            &[&va],
        ),
    );
    let v = reach(&s);
    assert_eq!(v["reachable"], true, "{v}");
    assert_eq!(v["hops"].as_array().unwrap().len(), 4, "{v}");

    // Peering overlapping networks is refused; a peered network cannot be deleted.
    let vc = path(&s, "a", "virtualNetworks", "vc");
    put(&s, &vc, vnet("10.2.0.0/16", vec![], &[&vb]));
    refused(
        &s,
        &vb,
        vnet(
            "10.2.0.0/16",
            vec![subnet("s", "10.2.0.0/24", None)],
            &[&va, &vc],
        ),
        400,
        "OverlappingPeeredAddressSpace",
    );
    let (st, v) = s.admin("DELETE", &vb, None);
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error"]["code"], "InUseVirtualNetworkCannotBeDeleted");
}

/// Real concurrency: writes that are each valid alone but not together never both commit.
/// Threads create interfaces in one subnet at once (every one gets an address, no address
/// twice); a subnet is removed while an interface is created in it (one of the two is refused);
/// two peered networks' address spaces are made to overlap from both sides at once (one is
/// refused). The stored topology still compiles: a further network write succeeds.
#[test]
fn concurrent_network_writes_never_break_the_topology() {
    let s = Server::start();
    assert_eq!(s.admin("PUT", &s.rg("race"), Some(json!({}))).0, 201);
    let v = path(&s, "race", "virtualNetworks", "v");
    put(
        &s,
        &v,
        vnet(
            "10.0.0.0/16",
            vec![
                subnet("a", "10.0.1.0/24", None),
                subnet("b", "10.0.2.0/24", None),
            ],
            &[],
        ),
    );
    let subnet_a = format!("{v}/subnets/a");

    // 12 threads × 3 interfaces in subnet a, all at once.
    let barrier = std::sync::Barrier::new(12);
    let created: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|t| {
                let (s, barrier, subnet_a) = (&s, &barrier, &subnet_a);
                scope.spawn(move || {
                    barrier.wait();
                    (0..3)
                        .map(|i| {
                            let nic = path(s, "race", "networkInterfaces", &format!("n{t}-{i}"));
                            s.admin(
                                "PUT",
                                &nic,
                                Some(json!({ "properties": { "subnet": { "id": subnet_a } } })),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut ips = std::collections::BTreeSet::new();
    for (st, body) in &created {
        assert_eq!(*st, 201, "{body}");
        let ip = body["properties"]["privateIPAddress"].as_str().unwrap();
        assert!(ips.insert(ip.to_owned()), "{ip} given twice");
    }
    assert_eq!(ips.len(), 36);

    // A subnet removed while an interface is created in it: never both.
    let without_b = vnet("10.0.0.0/16", vec![subnet("a", "10.0.1.0/24", None)], &[]);
    let with_b = vnet(
        "10.0.0.0/16",
        vec![
            subnet("a", "10.0.1.0/24", None),
            subnet("b", "10.0.2.0/24", None),
        ],
        &[],
    );
    let nic_b = path(&s, "race", "networkInterfaces", "in-b");
    let mut outcomes = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let barrier = std::sync::Barrier::new(2);
        let (remove, create) = std::thread::scope(|scope| {
            let remove = scope.spawn(|| {
                barrier.wait();
                s.admin("PUT", &v, Some(json!({ "properties": without_b })))
            });
            let create = scope.spawn(|| {
                barrier.wait();
                s.admin(
                    "PUT",
                    &nic_b,
                    Some(json!({ "properties": { "subnet": { "id": format!("{v}/subnets/b") } } })),
                )
            });
            (remove.join().unwrap(), create.join().unwrap())
        });
        match (remove.0, create.0) {
            (200, 400) => assert_eq!(create.1["error"]["code"], "UnknownReference", "{create:?}"),
            (409, 201) => {
                assert_eq!(remove.1["error"]["code"], "InUseSubnetCannotBeDeleted");
                assert_eq!(s.admin("DELETE", &nic_b, None).0, 200);
            }
            other => panic!("both or neither went through: {other:?} {remove:?} {create:?}"),
        }
        outcomes.insert((remove.0, create.0));
        let (_, stored) = s.admin("GET", &v, None);
        let subnets = stored["properties"]["subnets"].as_array().unwrap().len();
        let nic_exists = s.admin("GET", &nic_b, None).0 == 200;
        assert!(!(subnets == 1 && nic_exists), "{stored}");
        put(&s, &v, with_b.clone());
    }

    // Two networks peered both ways; each side's address space is changed to overlap the
    // other's at once. Alone each change is valid; together they would peer overlapping
    // networks.
    let (x, y) = (
        path(&s, "race", "virtualNetworks", "x"),
        path(&s, "race", "virtualNetworks", "y"),
    );
    for round in 0..8 {
        put(&s, &x, vnet("10.10.0.0/16", vec![], &[]));
        put(&s, &y, vnet("10.20.0.0/16", vec![], &[&x]));
        let barrier = std::sync::Barrier::new(2);
        let (px, py) = std::thread::scope(|scope| {
            let px = scope.spawn(|| {
                barrier.wait();
                s.admin(
                    "PUT",
                    &x,
                    Some(json!({ "properties": vnet("10.30.0.0/16", vec![], &[&y]) })),
                )
            });
            let py = scope.spawn(|| {
                barrier.wait();
                s.admin(
                    "PUT",
                    &y,
                    Some(json!({ "properties": vnet("10.30.0.0/16", vec![], &[&x]) })),
                )
            });
            (px.join().unwrap(), py.join().unwrap())
        });
        let ok = [px.0, py.0].iter().filter(|st| **st == 200).count();
        assert_eq!(ok, 1, "round {round}: {px:?} {py:?}");
        let refused = if px.0 == 200 { &py } else { &px };
        assert_eq!(
            refused.1["error"]["code"], "OverlappingPeeredAddressSpace",
            "{refused:?}"
        );
        // Unpeer for the next round.
        put(&s, &x, vnet("10.10.0.0/16", vec![], &[]));
    }

    // Everything stored still compiles.
    put(
        &s,
        &path(&s, "race", "applicationSecurityGroups", "after"),
        json!({}),
    );
}

/// Linked access: using a network resource from another write needs that resource's join
/// action on it. A principal with Contributor on resource group A only cannot put its
/// interface in a subnet of group B, nor use B's NSG, ASG, network (peering) or interface (VM):
/// 403 `LinkedAuthorizationFailed` naming the action, nothing created, the denial audited.
/// Reader on B does not grant joins; Network Contributor does.
#[test]
fn joining_another_groups_network_needs_its_join_action() {
    let s = Server::start();
    for rg in ["join-a", "join-b"] {
        assert_eq!(s.admin("PUT", &s.rg(rg), Some(json!({}))).0, 201);
    }
    let vb = path(&s, "join-b", "virtualNetworks", "vb");
    put(
        &s,
        &vb,
        vnet("10.2.0.0/16", vec![subnet("s", "10.2.0.0/24", None)], &[]),
    );
    let nsg_b = path(&s, "join-b", "networkSecurityGroups", "nsg-b");
    put(&s, &nsg_b, json!({}));
    let asg_b = path(&s, "join-b", "applicationSecurityGroups", "asg-b");
    put(&s, &asg_b, json!({}));
    let nic_b = path(&s, "join-b", "networkInterfaces", "nic-b");
    put(
        &s,
        &nic_b,
        json!({ "subnet": { "id": format!("{vb}/subnets/s") } }),
    );

    let (oid, client, secret) = s.new_sp("rg-a-contributor");
    s.assign(&oid, "Contributor", &s.rg("join-a"));
    let token = s.sp_token(&client, &secret).unwrap();
    let as_sp = |method: &str, p: &str, body: Value| {
        let (st, v, _) = s.req(method, p, Some(&token), Some(&body), &[]);
        (st, v)
    };
    let linked_refusal = |p: &str, props: Value, action: &str| {
        let before = s.running().app.store.revision().unwrap();
        let (st, v) = as_sp("PUT", p, json!({ "properties": props }));
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (403, Some("LinkedAuthorizationFailed")),
            "{p}: {v}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(action), "{message}");
        assert_eq!(
            s.running().app.store.revision().unwrap(),
            before,
            "nothing was written: {v}"
        );
    };

    // An interface in group A in a subnet of group B.
    let nic_a = path(&s, "join-a", "networkInterfaces", "nic-a");
    let n0 = s.audit_len();
    linked_refusal(
        &nic_a,
        json!({ "subnet": { "id": format!("{vb}/subnets/s") } }),
        "Strata.Network/virtualNetworks/subnets/join/action",
    );
    assert_eq!(s.admin("GET", &nic_a, None).0, 404);
    assert_eq!(
        s.admin(
            "GET",
            &path(&s, "join-a", "networkSecurityGroups", "nic-a-nsg"),
            None
        )
        .0,
        404,
        "its own NSG was not created either"
    );
    let denial = s
        .running()
        .app
        .store
        .audit_rows(n0, 100)
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice::<strata_audit::AuditEntry>(&r.entry).unwrap())
        .find(|e| e.category == "denial")
        .expect("the refusal is audited as a denial");
    assert_eq!(
        denial.action,
        "Strata.Network/virtualNetworks/subnets/join/action"
    );
    assert_eq!(denial.scope, format!("{vb}/subnets/s"));

    // In its own group the principal builds a network; B's NSG, ASG, network and interface
    // are still out of reach.
    let va = path(&s, "join-a", "virtualNetworks", "va");
    let (st, v) = as_sp(
        "PUT",
        &va,
        json!({ "properties": vnet("10.1.0.0/16", vec![subnet("s", "10.1.0.0/24", None)], &[]) }),
    );
    assert_eq!(st, 201, "{v}");
    let subnet_a = format!("{va}/subnets/s");
    linked_refusal(
        &nic_a,
        json!({ "subnet": { "id": subnet_a }, "networkSecurityGroup": { "id": nsg_b } }),
        "Strata.Network/networkSecurityGroups/join/action",
    );
    linked_refusal(
        &nic_a,
        json!({ "subnet": { "id": subnet_a }, "applicationSecurityGroups": [{ "id": asg_b }] }),
        "Strata.Network/applicationSecurityGroups/joinIpConfiguration/action",
    );
    linked_refusal(
        &va,
        vnet(
            "10.1.0.0/16",
            vec![subnet("s", "10.1.0.0/24", Some(&nsg_b))],
            &[],
        ),
        "Strata.Network/networkSecurityGroups/join/action",
    );
    linked_refusal(
        &va,
        vnet(
            "10.1.0.0/16",
            vec![subnet("s", "10.1.0.0/24", None)],
            &[&vb],
        ),
        "Strata.Network/virtualNetworks/peer/action",
    );
    let rule_with_asg = json!({ "name": "from-b", "properties": {
        "priority": 100, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
        "sourceApplicationSecurityGroups": [{ "id": asg_b }], "sourcePortRange": "*",
        "destinationAddressPrefix": "*", "destinationPortRange": "443",
    }});
    linked_refusal(
        &path(&s, "join-a", "networkSecurityGroups", "nsg-a"),
        json!({ "securityRules": [rule_with_asg] }),
        "Strata.Network/applicationSecurityGroups/joinNetworkSecurityRule/action",
    );
    linked_refusal(
        &format!(
            "{}/providers/Strata.Compute/virtualMachines/vm-a",
            s.rg("join-a")
        ),
        json!({
            "storageProfile": { "image": "tiny" },
            "networkProfile": { "networkInterfaces": [{ "id": nic_b }] },
        }),
        "Strata.Network/networkInterfaces/join/action",
    );
    // Its own subnet is fine: Contributor grants every join in group A.
    let (st, v) = as_sp(
        "PUT",
        &nic_a,
        json!({ "properties": { "subnet": { "id": subnet_a } } }),
    );
    assert_eq!(st, 201, "{v}");

    // Reader on B: still no join. Network Contributor on B: the subnet of B may be joined.
    let nic_a2 = path(&s, "join-a", "networkInterfaces", "nic-a2");
    let reader = s.assign(&oid, "Reader", &s.rg("join-b"));
    linked_refusal(
        &nic_a2,
        json!({ "subnet": { "id": format!("{vb}/subnets/s") } }),
        "Strata.Network/virtualNetworks/subnets/join/action",
    );
    let _ = reader;
    s.assign(&oid, "Network Contributor", &s.rg("join-b"));
    let (st, v) = as_sp(
        "PUT",
        &nic_a2,
        json!({ "properties": { "subnet": { "id": format!("{vb}/subnets/s") }, "networkSecurityGroup": { "id": nsg_b } } }),
    );
    assert_eq!(st, 201, "{v}");
    // A write that adds no new reference needs no join again (tags only).
    let (st, v) = as_sp("PATCH", &nic_a2, json!({ "tags": { "team": "a" } }));
    assert_eq!(st, 200, "{v}");
}

/// Deleting a resource group takes its network resources with it, so it is refused while
/// network resources elsewhere use them (the stored topology must stay one the engine
/// accepts); once they are gone it goes through.
#[test]
fn a_resource_group_whose_network_is_used_elsewhere_is_not_deleted() {
    let s = Server::start();
    for rg in ["holds-vnet", "holds-nic"] {
        assert_eq!(s.admin("PUT", &s.rg(rg), Some(json!({}))).0, 201);
    }
    let v = path(&s, "holds-vnet", "virtualNetworks", "v");
    put(
        &s,
        &v,
        vnet("10.5.0.0/16", vec![subnet("s", "10.5.0.0/24", None)], &[]),
    );
    let nic = path(&s, "holds-nic", "networkInterfaces", "n");
    put(
        &s,
        &nic,
        json!({ "subnet": { "id": format!("{v}/subnets/s") } }),
    );
    let (st, body) = s.admin("DELETE", &s.rg("holds-vnet"), None);
    assert_eq!(st, 409, "{body}");
    assert_eq!(
        body["error"]["code"],
        "InUseResourceGroupNetworkCannotBeDeleted"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/subnets/s"),
        "{body}"
    );
    assert_eq!(s.admin("GET", &v, None).0, 200);
    assert_eq!(s.admin("DELETE", &nic, None).0, 200);
    assert_eq!(s.admin("DELETE", &s.rg("holds-vnet"), None).0, 200);
    assert_eq!(s.admin("GET", &v, None).0, 404);
    // The rest of the subscription's network still compiles.
    put(
        &s,
        &path(&s, "holds-nic", "applicationSecurityGroups", "after"),
        json!({}),
    );
}
