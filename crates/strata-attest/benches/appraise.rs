//! Appraisals per second per core: Strata's [`appraise`] against Keylime's own quote and
//! measured-boot checks on the same evidence, and against the raw cost of one signature
//! verification (the physical floor), in one run.
//!
//! Evidence (`benches/data/`, generated once by `cargo run -p strata-agent --example
//! bench_evidence` and committed, so no TPM is needed here): real swtpm `TPM2_Quote`s over
//! SHA-256 PCRs 0–9 and 14, one signed by an ECC P-256 attestation key and one by an RSA-2048
//! key, with a 100-event crypto-agile event log (the real OVMF → shim → GRUB → Linux log of
//! `tests/fixtures/ovmf-swtpm` plus the GRUB command and file events of a stock Debian
//! `grub.cfg`), and the reference policy captured from that log.
//!
//! Cases, each on one thread (per core), for each key type:
//!
//! * **signature floor**: `ring` verifying the quote's signature over the `TPMS_ATTEST` bytes
//!   (SHA-256 of the message included), nothing else;
//! * **`appraise()`**: the whole verdict: attestation key attributes, `TPMT_SIGNATURE` parse and
//!   verification, magic/type/nonce/clock (against a previous quote of the same boot), PCR
//!   selection and digest, event log parse and replay of every quoted PCR, the reference policy
//!   (Secure Boot, PK/KEK/db/dbx, firmware blobs, shim/GRUB/kernel, command line) and the
//!   agent-reported binaries;
//! * **JSON + `appraise()`**: the same from the agent's JSON body (`Evidence` with base64 fields);
//! * **Keylime**: `benches/keylime_bench.py` run by Python with Keylime installed (see there):
//!   `Tpm().check_quote(...)` with the `example` measured-boot policy and a reference state made
//!   by Keylime's own generator from the same log (quote, nonce, PCR digest, clock, event log
//!   parsed by `tpm2_eventlog`, replay, policy); the same call as Keylime's default
//!   `measured_boot_evaluate = once` makes it after an agent's first round (policy skipped); and
//!   the quote checks alone. Keylime's rate is per CPU second of the Python process and its
//!   `tpm2_eventlog` children.
//!
//! The floor and the two Strata cases are timed in interleaved rounds; their ratio is the median
//! of the per-round ratios, so a busy machine slows both sides alike.
//!
//! ```sh
//! cargo bench -p strata-attest --bench appraise
//! ```
//!
//! `STRATA_BENCH_SECS` (default 3) is the time per Rust case, `STRATA_BENCH_KEYLIME_SECS`
//! (default 3) per Keylime case; `STRATA_KEYLIME_PYTHON` picks the interpreter (default
//! `target/keylime-venv/bin/python3` when it exists, else `python3`). When Keylime cannot be
//! imported its column says "not run" and the install steps are printed.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark code")]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature as rs;
use strata_attest::eventlog::{LogView, replay_selected};
use strata_attest::policy::ReferencePolicy;
use strata_attest::tpm::{Attest, ClockInfo, Public, PublicKey, Signature};
use strata_attest::{Evidence, HashAlg, appraise};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/data");
const ROUNDS: u32 = 10;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixtureFile {
    ak_public: String,
    nonce: String,
    evidence: serde_json::Value,
    policy: ReferencePolicy,
}

struct Fixture {
    label: &'static str,
    ak: Public,
    nonce: Vec<u8>,
    evidence: Evidence,
    evidence_json: String,
    policy: ReferencePolicy,
    previous: ClockInfo,
}

fn load(file: &str, label: &'static str) -> Fixture {
    let path = Path::new(DATA).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "read {}: {e}; generate it with `cargo run -p strata-agent --example bench_evidence`",
            path.display()
        )
    });
    let f: FixtureFile = serde_json::from_str(&text).expect("fixture json");
    let evidence_json = serde_json::to_string(&f.evidence).expect("evidence json");
    let evidence: Evidence = serde_json::from_str(&evidence_json).expect("evidence");
    let ak = Public::parse(&STANDARD.decode(f.ak_public).expect("akPublic base64")).expect("ak");
    let nonce = STANDARD.decode(f.nonce).expect("nonce base64");
    // The previous round's quote: same boot, an earlier clock.
    let mut previous = Attest::parse(&evidence.attest).expect("attest").clock_info;
    previous.clock -= 1;
    Fixture {
        label,
        ak,
        nonce,
        evidence,
        evidence_json,
        policy: f.policy,
        previous,
    }
}

/// Operations per second: the median of [`ROUNDS`] timed rounds, and the slowest and fastest.
struct Rate {
    per_sec: f64,
    spread: (f64, f64),
    rounds: Vec<f64>,
}

impl Rate {
    fn of(rounds: Vec<f64>) -> Rate {
        let mut sorted = rounds.clone();
        sorted.sort_by(f64::total_cmp);
        Rate {
            per_sec: median(&sorted),
            spread: (sorted[0], sorted[sorted.len() - 1]),
            rounds,
        }
    }

    /// The median over rounds of `self / other` (both timed in the same rounds, so a busy
    /// machine slows both alike).
    fn ratio(&self, other: &Rate) -> f64 {
        let mut r: Vec<f64> = self
            .rounds
            .iter()
            .zip(&other.rounds)
            .map(|(a, b)| a / b)
            .collect();
        r.sort_by(f64::total_cmp);
        median(&r)
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Times each op for `total` in all, interleaved: [`ROUNDS`] rounds, each running every op for
/// `total / ROUNDS` in turn, after a warm-up of each.
fn measure(total: Duration, ops: &mut [&mut dyn FnMut()]) -> Vec<Rate> {
    let slice = total / ROUNDS;
    for op in ops.iter_mut() {
        let warm = Instant::now();
        while warm.elapsed() < slice / 2 {
            op();
        }
    }
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); ops.len()];
    for _ in 0..ROUNDS {
        for (op, out) in ops.iter_mut().zip(&mut rounds) {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < slice {
                op();
                n += 1;
            }
            out.push(n as f64 / start.elapsed().as_secs_f64());
        }
    }
    rounds.into_iter().map(Rate::of).collect()
}

/// The bare signature check, with `ring`, on the same key, bytes and signature.
fn floor(f: &Fixture) -> impl FnMut() + '_ {
    let sig = Signature::parse(&f.evidence.signature).expect("signature");
    enum Key {
        Ecc(Vec<u8>, Vec<u8>),
        Rsa(Vec<u8>, Vec<u8>, Vec<u8>),
    }
    let key = match (&f.ak.key, sig) {
        (PublicKey::Ecc(k), Signature::Ecdsa { r, s, .. }) => {
            let pad = |v: &[u8]| {
                let mut out = vec![0u8; 32 - v.len()];
                out.extend_from_slice(v);
                out
            };
            let point = [vec![4], pad(&k.x), pad(&k.y)].concat();
            Key::Ecc(point, [pad(&r), pad(&s)].concat())
        }
        (PublicKey::Rsa(k), Signature::RsaSsa { sig, .. }) => {
            let e = if k.exponent == 0 { 65_537 } else { k.exponent };
            let e: Vec<u8> = e
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            Key::Rsa(k.modulus.clone(), e, sig)
        }
        _ => panic!("unexpected key/signature pair"),
    };
    let msg = f.evidence.attest.as_slice();
    move || {
        let ok = match &key {
            Key::Ecc(point, sig) => rs::UnparsedPublicKey::new(&rs::ECDSA_P256_SHA256_FIXED, point)
                .verify(black_box(msg), black_box(sig))
                .is_ok(),
            Key::Rsa(n, e, sig) => rs::RsaPublicKeyComponents { n, e }
                .verify(
                    &rs::RSA_PKCS1_2048_8192_SHA256,
                    black_box(msg),
                    black_box(sig),
                )
                .is_ok(),
        };
        assert!(ok);
    }
}

#[derive(Debug, Clone, Copy)]
struct KeylimeRate {
    per_cpu_s: f64,
    per_wall_s: f64,
    iterations: u64,
}

/// Keylime's rates by (key, mode): `full`, `steady`, `quote` (see `keylime_bench.py`).
#[derive(Debug, Default)]
struct Keylime {
    rates: Vec<(String, String, KeylimeRate)>,
    versions: String,
    status: Option<String>,
}

impl Keylime {
    fn get(&self, alg: &str, mode: &str) -> Option<KeylimeRate> {
        self.rates
            .iter()
            .find(|(a, m, _)| a == alg && m == mode)
            .map(|(_, _, r)| *r)
    }
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("STRATA_KEYLIME_PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/keylime-venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

fn run_keylime(secs: f64) -> Keylime {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/keylime_bench.py");
    let py = python();
    println!(
        "running Keylime: {} {} --seconds {secs}",
        py.display(),
        script.display()
    );
    let out = match Command::new(&py)
        .arg(&script)
        .args(["--seconds", &secs.to_string()])
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            println!("cannot run {}: {e}", py.display());
            return Keylime {
                status: Some("not run (no python3)".into()),
                ..Keylime::default()
            };
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        println!("{stderr}");
        return Keylime {
            status: Some("not run (Keylime not installed)".into()),
            ..Keylime::default()
        };
    }
    if !out.status.success() {
        println!("Keylime run failed ({}):\n{stderr}", out.status);
        return Keylime {
            status: Some("error (see above)".into()),
            ..Keylime::default()
        };
    }
    let mut k = Keylime::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let rate = KeylimeRate {
            per_cpu_s: v["per_cpu_s"].as_f64().unwrap_or(f64::NAN),
            per_wall_s: v["per_wall_s"].as_f64().unwrap_or(f64::NAN),
            iterations: v["iterations"].as_u64().unwrap_or(0),
        };
        let alg = v["alg"].as_str().unwrap_or("?").to_owned();
        let mode = v["mode"].as_str().unwrap_or("?").to_owned();
        k.rates.push((alg, mode, rate));
        k.versions = format!(
            "keylime {}, python {}, cryptography {}",
            v["keylime"].as_str().unwrap_or("?"),
            v["python"].as_str().unwrap_or("?"),
            v["cryptography"].as_str().unwrap_or("?")
        );
    }
    k
}

fn tpm2_tools_version() -> String {
    Command::new("tpm2_eventlog")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.split("version=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "not installed".into())
}

fn secs(var: &str) -> f64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0)
}

fn fmt_rate(r: f64) -> String {
    let s = format!("{:.0}", r);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() {
    let rust_secs = secs("STRATA_BENCH_SECS");
    let fixtures = [
        load("evidence-ecc.json", "ecc"),
        load("evidence-rsa.json", "rsa"),
    ];
    let log = LogView::parse(&fixtures[0].evidence.event_log).expect("event log");
    let quoted: Vec<u32> = fixtures[0].evidence.pcrs.keys().copied().collect();
    println!(
        "evidence: {} events after the Spec ID header, {} log bytes, {} quoted PCRs; {} s per case",
        log.len(),
        fixtures[0].evidence.event_log.len(),
        fixtures[0].evidence.pcrs.len(),
        rust_secs
    );

    struct Row {
        alg: &'static str,
        floor: Rate,
        appraise: Rate,
        json: Rate,
    }
    let mut rows = Vec::new();
    for f in &fixtures {
        let v = appraise(&f.evidence, &f.ak, &f.nonce, &f.policy, Some(&f.previous));
        assert!(v.passed, "{}: {}", f.label, v.reason());
        let back: Evidence = serde_json::from_str(&f.evidence_json).expect("evidence json");
        assert!(appraise(&back, &f.ak, &f.nonce, &f.policy, Some(&f.previous)).passed);
        let total = Duration::from_secs_f64(rust_secs);
        let mut floor_op = floor(f);
        let mut appraise_op = || {
            let v = appraise(
                black_box(&f.evidence),
                &f.ak,
                &f.nonce,
                &f.policy,
                Some(&f.previous),
            );
            assert!(black_box(v).passed);
        };
        let mut json_op = || {
            let e: Evidence = serde_json::from_str(black_box(&f.evidence_json)).expect("evidence");
            let v = appraise(&e, &f.ak, &f.nonce, &f.policy, Some(&f.previous));
            assert!(black_box(v).passed);
        };
        let mut rates =
            measure(total, &mut [&mut floor_op, &mut appraise_op, &mut json_op]).into_iter();
        let (floor, appraise_rate, json) = (
            rates.next().expect("floor"),
            rates.next().expect("appraise"),
            rates.next().expect("json"),
        );
        rows.push(Row {
            alg: f.label,
            floor,
            appraise: appraise_rate,
            json,
        });
    }

    // Where the non-signature time goes (the same for both keys: same log and policy).
    let f = &fixtures[0];
    let total = Duration::from_secs_f64(rust_secs / 2.0);
    let mut parse_op = || {
        black_box(LogView::parse(black_box(&f.evidence.event_log)).expect("log"));
    };
    let mut replay_op = || {
        black_box(replay_selected(black_box(&log), HashAlg::Sha256, &quoted).expect("replay"));
    };
    let parts = measure(total, &mut [&mut parse_op, &mut replay_op]);
    let (parse, replay_rate) = (&parts[0], &parts[1]);

    let keylime = run_keylime(secs("STRATA_BENCH_KEYLIME_SECS"));

    println!();
    println!(
        "| key | case | per second, 1 core | µs each | vs Keylime (full) | vs signature floor |"
    );
    println!("|---|---|---|---|---|---|");
    let mut verdicts = Vec::new();
    for r in &rows {
        let key = if r.alg == "ecc" {
            "ECC P-256"
        } else {
            "RSA-2048"
        };
        let kl = keylime.get(r.alg, "full");
        let vs_kl = |x: f64| match kl {
            Some(k) => format!("{:.0}×", x / k.per_cpu_s),
            None => "—".into(),
        };
        let line = |case: &str, rate: &Rate, vk: String, vf: String| {
            println!(
                "| {key} | {case} | {} ({}–{}) | {:.1} | {vk} | {vf} |",
                fmt_rate(rate.per_sec),
                fmt_rate(rate.spread.0),
                fmt_rate(rate.spread.1),
                1e6 / rate.per_sec
            );
        };
        line(
            "signature verification alone (`ring`, the floor)",
            &r.floor,
            vs_kl(r.floor.per_sec),
            "1.00".into(),
        );
        line(
            "Strata `appraise()`",
            &r.appraise,
            vs_kl(r.appraise.per_sec),
            format!("{:.2}", r.appraise.ratio(&r.floor)),
        );
        line(
            "Strata JSON decode + `appraise()`",
            &r.json,
            vs_kl(r.json.per_sec),
            format!("{:.2}", r.json.ratio(&r.floor)),
        );
        for (mode, case) in [
            ("full", "Keylime `check_quote`: quote + event log + policy"),
            (
                "steady",
                "Keylime `check_quote`: quote + event log, policy skipped (default `once`, later rounds)",
            ),
            (
                "quote",
                "Keylime `check_quote`: quote only (`skip_pcr_check`)",
            ),
        ] {
            match keylime.get(r.alg, mode) {
                Some(k) => println!(
                    "| {key} | {case} | {:.1} per CPU s ({:.1} per wall s, {} runs) | {:.0} | {} | {:.4} |",
                    k.per_cpu_s,
                    k.per_wall_s,
                    k.iterations,
                    1e6 / k.per_cpu_s,
                    if mode == "full" {
                        "1×".to_owned()
                    } else {
                        vs_kl(k.per_cpu_s)
                    },
                    k.per_cpu_s / r.floor.per_sec
                ),
                None => println!(
                    "| {key} | {case} | {} | — | — | — |",
                    keylime.status.as_deref().unwrap_or("not run")
                ),
            }
        }
        let floor_share = r.appraise.ratio(&r.floor);
        let extra_us = 1e6 / r.appraise.per_sec - 1e6 / r.floor.per_sec;
        verdicts.push(format!(
            "{key}: ≥ 10× Keylime: {}; ≥ 50% of the signature floor: {} ({:.0}%; the rest of the appraisal costs {:.1} µs)",
            match kl {
                Some(k) => {
                    let x = r.appraise.per_sec / k.per_cpu_s;
                    let steady = keylime
                        .get(r.alg, "steady")
                        .map(|s| {
                            format!(
                                ", {:.0}× its policy-skipping steady state",
                                r.appraise.per_sec / s.per_cpu_s
                            )
                        })
                        .unwrap_or_default();
                    format!(
                        "{} ({:.0}×{steady})",
                        if x >= 10.0 { "met" } else { "MISSED" },
                        x
                    )
                }
                None => "not measured (Keylime not run)".into(),
            },
            if floor_share >= 0.5 { "met" } else { "MISSED" },
            floor_share * 100.0,
            extra_us,
        ));
    }
    println!();
    println!(
        "inside appraise(): event log parse (in place) {:.1} µs, replay of the quoted sha256 PCRs {:.1} µs (both keys)",
        1e6 / parse.per_sec,
        1e6 / replay_rate.per_sec
    );
    for v in verdicts {
        println!("{v}");
    }
    println!();
    println!(
        "Keylime: {}; tpm2-tools {}",
        if keylime.versions.is_empty() {
            keylime.status.as_deref().unwrap_or("not run")
        } else {
            &keylime.versions
        },
        tpm2_tools_version()
    );
}
