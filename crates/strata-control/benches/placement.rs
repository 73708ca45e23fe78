//! VM placement at scale with simulated hosts: how many VMs per second the control plane
//! creates and places through its HTTPS API, and how that cost grows from the first 1,000 VMs
//! to the last 1,000 of 10,000 across 200 hosts.
//!
//! The 200 hosts are stored as Trusted, freshly attested host documents (their attestation is
//! what the `drift` and `appraise` benchmarks measure); every VM goes through the whole create
//! path: authentication, authorization, validation, placement over every host (Trusted, fresh,
//! uncordoned, fewest VMs), a vTPM key generated and sealed, the document and its audit entry
//! committed durably. The baseline, measured in the same run, is the same API writing a
//! resource with no placement (a resource group: authentication, authorization, validation,
//! commit, audit). Two client threads keep both cores busy.
//!
//! Run with `cargo bench -p strata-control --bench placement`. `STRATA_PLACEMENT_VMS` (default
//! 10000) and `STRATA_PLACEMENT_HOSTS` (default 200) change the size.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark code")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::{Api, tls_agent, token};
use serde_json::json;
use strata_store::{Batch, Op, Precondition};

const THREADS: usize = 2;
const BLOCK: usize = 1000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Creates `count` resources named `prefix-N` with `THREADS` clients; returns per-second rate.
fn create(
    api: &[Api],
    count: usize,
    path: &(dyn Fn(usize) -> String + Sync),
    body: &serde_json::Value,
) -> f64 {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for client in api {
            let next = &next;
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let (status, v) = client.call("PUT", &path(i), Some(body.clone()));
                    assert_eq!(status, 201, "{v}");
                }
            });
        }
    });
    count as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let vms = env("STRATA_PLACEMENT_VMS", 10_000);
    let hosts = env("STRATA_PLACEMENT_HOSTS", 200);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg =
        strata_control::Config::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
    // Long interval: the simulated hosts stay fresh for the whole run (stale after 3 intervals).
    cfg.fabric.attestation_interval_secs = 3600;
    let running = rt.block_on(strata_control::start(cfg)).unwrap();
    let profile: strata_control::Profile =
        serde_json::from_slice(&std::fs::read(&running.profile_path).unwrap()).unwrap();
    let sub = profile.subscription_id.clone().unwrap();
    let mut api: Vec<Api> = (0..THREADS)
        .map(|_| Api {
            agent: tls_agent(&profile.ca_certificate),
            endpoint: running.endpoint.clone(),
            token: String::new(),
        })
        .collect();
    let t = token(&api[0], &profile);
    for a in &mut api {
        a.token = t.clone();
    }

    // The simulated fleet: Trusted hosts that passed a round just now.
    let now = strata_types::time::now_unix();
    let ops = (0..hosts)
        .map(|h| {
            let name = format!("sim-{h:03}");
            let body = json!({
                "id": format!("/providers/Strata.Fabric/hosts/{name}"),
                "name": name,
                "type": "Strata.Fabric/hosts",
                "properties": { "state": "Trusted", "cordoned": false, "development": false },
                "systemData": { "createdBy": "bench", "createdAt": "2026-11-29T00:00:00Z",
                                "lastModifiedBy": "bench", "lastModifiedAt": "2026-11-29T00:00:00Z" },
                "internal": { "akPublic": "", "ekPublic": "", "lastPassAt": now },
            });
            Op::Put {
                key: format!("/providers/strata.fabric/hosts/{name}"),
                rtype: "strata.fabric/hosts".into(),
                parent: "/".into(),
                body: body.to_string(),
                pre: Precondition::MustNotExist,
            }
        })
        .collect();
    running
        .app
        .store
        .commit(Batch { ops, audit: vec![] })
        .unwrap();

    let rg = format!("/subscriptions/{sub}/resourceGroups/placement");
    let (s, v) = api[0].call("PUT", &rg, Some(json!({ "location": "local" })));
    assert_eq!(s, 201, "{v}");

    // Baseline: the same API writing 1,000 resources that need no placement.
    let baseline = create(
        &api,
        BLOCK,
        &|i| format!("/subscriptions/{sub}/resourceGroups/baseline-{i}"),
        &json!({ "location": "local" }),
    );
    println!("baseline (resource group PUT, no placement): {baseline:.0}/s");

    let vm = json!({ "properties": { "storageProfile": { "image": "tiny" } } });
    let mut rates = Vec::new();
    let mut done = 0;
    while done < vms {
        let n = BLOCK.min(vms - done);
        let offset = done;
        let rate = create(
            &api,
            n,
            &|i| {
                format!(
                    "{rg}/providers/Strata.Compute/virtualMachines/vm-{}",
                    offset + i
                )
            },
            &vm,
        );
        done += n;
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "VMs {:>6}–{:>6}: {rate:>7.0} placed/s ({:.2}× the baseline; load {})",
            offset + 1,
            done,
            rate / baseline,
            load.split_whitespace().next().unwrap_or("?")
        );
        rates.push(rate);
    }

    // Every host got its share: placement spreads by VM count.
    let (s, v) = api[0].call(
        "POST",
        "/providers/Strata.Fabric/placements/preview",
        Some(json!({ "count": 1 })),
    );
    assert_eq!(s, 200, "{v}");
    let index = running.app.vm_index.lock().unwrap();
    let counts: Vec<usize> = (0..hosts)
        .map(|h| index.count(&format!("sim-{h:03}")))
        .collect();
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    println!("VMs per host: min {min}, max {max} (of {vms} on {hosts} hosts)");
    // Concurrent creates can both pick the same least-loaded host: at most one extra per client.
    assert!(max - min <= THREADS, "placement must spread evenly");
    let (first, last) = (rates[0], *rates.last().unwrap());
    println!(
        "first {BLOCK}: {first:.0}/s, last {BLOCK}: {last:.0}/s; the last block costs {:.2}× the first per VM",
        first / last
    );
}
