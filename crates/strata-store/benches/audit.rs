//! Audit append throughput on the SQLite store, durable (`synchronous=FULL`), measured against
//! two baselines in the same run: one transaction per append from one writer (what you get
//! without batching), and the raw `fsync` rate of the same disk (the physical floor of
//! per-commit durability).
//!
//! Run: `cargo bench -p strata-store --bench audit` (prints a table; see docs/benchmarks.md).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark code")]

use std::io::Write;
use std::time::{Duration, Instant};
use strata_audit::AuditEntry;
use strata_store::{Batch, SqliteStore, Store};

fn entry(i: u64) -> AuditEntry {
    AuditEntry {
        seq: 0,
        time: "2026-11-28T00:00:00Z".into(),
        request_id: format!("req-{i}"),
        principal_id: Some("6953bf17-8ed3-4522-ba4d-bb70447b0fb6".into()),
        principal_name: Some("bench".into()),
        client_ip: Some("127.0.0.1".into()),
        category: "write".into(),
        action: "Strata.Resources/subscriptions/resourceGroups/write".into(),
        scope: format!("/subscriptions/s/resourceGroups/rg{i}"),
        outcome: "success".into(),
        status: 201,
        reason: "allowed by role assignment 'x' (Owner at /)".into(),
        details: serde_json::Value::Null,
    }
}

const RUN: Duration = Duration::from_secs(3);

fn fsync_rate(dir: &std::path::Path) -> f64 {
    let mut f = std::fs::File::create(dir.join("fsync-probe")).unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        f.write_all(&[0u8; 512]).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn single_writer(store: &SqliteStore) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        store
            .commit(Batch {
                ops: vec![],
                audit: vec![entry(n)],
            })
            .unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn concurrent(store: &SqliteStore, threads: usize) -> f64 {
    let total = std::sync::atomic::AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let total = &total;
            s.spawn(move || {
                let mut i = 0u64;
                while start.elapsed() < RUN {
                    store
                        .commit(Batch {
                            ops: vec![],
                            audit: vec![entry(t as u64 * 1_000_000 + i)],
                        })
                        .unwrap();
                    i += 1;
                }
                total.fetch_add(i, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    total.into_inner() as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = SqliteStore::open(&dir.path().join("bench.db")).unwrap();
    // Warm up.
    for i in 0..200 {
        store
            .commit(Batch {
                ops: vec![],
                audit: vec![entry(i)],
            })
            .unwrap();
    }
    let floor = fsync_rate(dir.path());
    let single = single_writer(&store);
    println!("{:<48} {:>14}", "case", "appends/s");
    println!(
        "{:<48} {:>14.0}",
        "raw fsync rate of this disk (floor, per commit)", floor
    );
    println!(
        "{:<48} {:>14.0}",
        "1 writer, one transaction per append (baseline)", single
    );
    for threads in [16, 64, 256] {
        let (g0, b0) = store.group_stats();
        let rate = concurrent(&store, threads);
        let (g1, b1) = store.group_stats();
        let mean_group = (b1 - b0) as f64 / (g1 - g0).max(1) as f64;
        println!(
            "{:<48} {:>14.0}   {:>5.1}x baseline, {:>6.1} appends per fsync",
            format!("{threads} writers, group commit"),
            rate,
            rate / single,
            mean_group
        );
    }
    println!("entries written: {}", store.audit_len().unwrap());
}
