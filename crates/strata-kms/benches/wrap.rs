//! Key wrap and unwrap operations per second on one core, through `strata-kms`'s real API,
//! side by side with the raw `ring` AES-256-GCM seal/open of 32 bytes (the floor) in one run.
//!
//! Rows:
//! - `ring seal 32 B` / `ring open 32 B`: one `LessSafeKey`, a counter nonce, no associated
//!   data — the cheapest AES-256-GCM of a 32-byte key `ring` can do.
//! - `ring seal 32 B + OS nonce`: the same plus a 96-bit nonce from `SystemRandom` (a
//!   `getrandom` system call), which every real wrap needs.
//! - `PMK wrap DEK`: `PlatformKey::wrap_data_key` (random nonce, canonical AAD, envelope) and
//!   `Envelope::encode` to the base64 storage form. `PMK unwrap DEK`: `Envelope::decode` and
//!   `PlatformKey::unwrap_data_key`. This is the platform-managed disk path.
//! - `vault wrapKey` / `vault unwrapKey`: the customer-managed path through `Vault`: state
//!   checks, opening the key version's material under the PMK (a second AES-GCM open and a key
//!   expansion), then the wrap/unwrap, plus encode/decode and the audit record.
//!
//! Each row runs `ROUNDS` rounds of `OPS` operations after a warm-up; the median round is
//! reported with the slowest and fastest. One thread; run on an otherwise idle machine:
//! `cargo bench -p strata-kms --bench wrap`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark code")]

use std::hint::black_box;
use std::time::Instant;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use strata_kms::{DataKey, Envelope, KeyType, RootKey, RootSecret, Vault};

const OPS: usize = 200_000;
const ROUNDS: usize = 7;
const WARMUP: usize = 20_000;
const POOL: usize = 1024;
const SUB: &str = "/subscriptions/00000000-0000-0000-0000-000000000001";
const VAULT: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg/providers/strata.keyvault/vaults/kv";
const DISK: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg/providers/strata.compute/disks/d";

struct Row {
    name: &'static str,
    median: f64,
    min: f64,
    max: f64,
}

/// Runs `op(i)` for i in 0..OPS, ROUNDS times; returns ops/s per round (median, min, max).
fn measure(name: &'static str, mut op: impl FnMut(usize)) -> Row {
    for i in 0..WARMUP {
        op(i);
    }
    let mut rates: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for i in 0..OPS {
                op(i);
            }
            OPS as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    let row = Row {
        name,
        median: rates[ROUNDS / 2],
        min: rates[0],
        max: rates[ROUNDS - 1],
    };
    eprintln!("  {name}: {:.0} ops/s", row.median);
    row
}

fn main() {
    let rng = SystemRandom::new();
    let mut raw = [0u8; 32];
    rng.fill(&mut raw).unwrap();
    let ring_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).unwrap());
    let nonce_for = |i: usize| {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&(i as u64).to_be_bytes());
        Nonce::assume_unique_for_key(n)
    };

    let root = RootKey::from_secret(&RootSecret::generate().unwrap()).unwrap();
    let (pmk, _) = root.create_platform_key(SUB, 1).unwrap();
    let mut vault = Vault::new(VAULT, 90, true).unwrap();
    vault
        .create_key(&pmk, "cmk", KeyType::Oct, None, 1_800_000_000)
        .into_result()
        .unwrap();
    let dek = DataKey::generate().unwrap();

    // Pools of stored envelopes to unwrap, cycled through.
    let sealed_pool: Vec<Vec<u8>> = (0..POOL)
        .map(|i| {
            let mut buf = dek.expose_secret().to_vec();
            ring_key
                .seal_in_place_append_tag(nonce_for(i), Aad::empty(), &mut buf)
                .unwrap();
            buf
        })
        .collect();
    let pmk_pool: Vec<String> = (0..POOL)
        .map(|_| pmk.wrap_data_key(DISK, &dek).unwrap().encode())
        .collect();
    let cmk_pool: Vec<String> = (0..POOL)
        .map(|_| {
            vault
                .wrap_key(&pmk, "cmk", DISK, &dek)
                .into_result()
                .unwrap()
                .encode()
        })
        .collect();

    eprintln!("measuring ({ROUNDS} rounds x {OPS} ops per row, one thread)");
    let mut rows = Vec::new();
    rows.push(measure("ring seal 32 B (floor)", |i| {
        let mut buf = Vec::with_capacity(48);
        buf.extend_from_slice(dek.expose_secret());
        ring_key
            .seal_in_place_append_tag(nonce_for(i), Aad::empty(), &mut buf)
            .unwrap();
        black_box(buf);
    }));
    rows.push(measure("ring seal 32 B + OS nonce", |_| {
        let mut n = [0u8; 12];
        rng.fill(&mut n).unwrap();
        let mut buf = Vec::with_capacity(48);
        buf.extend_from_slice(dek.expose_secret());
        ring_key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(n), Aad::empty(), &mut buf)
            .unwrap();
        black_box(buf);
    }));
    rows.push(measure("strata-kms PMK wrap DEK + encode", |_| {
        let env = pmk.wrap_data_key(DISK, &dek).unwrap();
        black_box(env.encode());
    }));
    rows.push(measure("strata-kms vault wrapKey + encode", |_| {
        let env = vault
            .wrap_key(&pmk, "cmk", DISK, &dek)
            .into_result()
            .unwrap();
        black_box(env.encode());
    }));
    rows.push(measure("ring open 32 B (floor)", |i| {
        let mut buf = sealed_pool[i % POOL].clone();
        let plain = ring_key
            .open_in_place(nonce_for(i % POOL), Aad::empty(), &mut buf)
            .unwrap();
        black_box(plain.len());
    }));
    rows.push(measure("strata-kms decode + PMK unwrap DEK", |i| {
        let env = Envelope::decode(&pmk_pool[i % POOL]).unwrap();
        black_box(pmk.unwrap_data_key(DISK, &env).unwrap());
    }));
    rows.push(measure("strata-kms decode + vault unwrapKey", |i| {
        let env = Envelope::decode(&cmk_pool[i % POOL]).unwrap();
        black_box(
            vault
                .unwrap_key(&pmk, "cmk", DISK, &env)
                .into_result()
                .unwrap(),
        );
    }));

    let floor_seal = rows[0].median;
    let floor_open = rows[4].median;
    println!();
    println!(
        "| operation (one core) | ops/s (median of {ROUNDS}) | slowest–fastest round | µs/op | vs floor |"
    );
    println!("|---|---|---|---|---|");
    for (i, row) in rows.iter().enumerate() {
        let floor = if i < 4 { floor_seal } else { floor_open };
        println!(
            "| {} | {:.0} | {:.0}–{:.0} | {:.2} | {:.2}× |",
            row.name,
            row.median,
            row.min,
            row.max,
            1e6 / row.median,
            row.median / floor
        );
    }
}
