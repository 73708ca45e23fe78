//! Generates the evidence fixture of the appraisal benchmark
//! (`crates/strata-attest/benches/appraise.rs`): real swtpm quotes over a ~100-event UEFI
//! boot, written once and committed so the benchmark needs no TPM.
//!
//! ```sh
//! cargo run -p strata-agent --example bench_evidence
//! target/keylime-venv/bin/python3 crates/strata-attest/benches/keylime_bench.py --write-refstate
//! ```
//!
//! The boot is the real OVMF + shim + GRUB + Linux event log of
//! `crates/strata-attest/tests/fixtures/ovmf-swtpm` (46 events, Secure Boot on, real PK / KEK /
//! db / dbx certificates and Authenticode digests), with 54 more events that the GRUB of a stock
//! Debian `grub.cfg` records: its commands (`grub_cmd: …`, PCR 8) and the files it reads
//! (`grubenv`, the font, the background image, PCR 9). That makes 100 events after the Spec ID
//! header. Every event is extended (SHA-1 and SHA-256 banks) into a fresh swtpm through
//! [`BootEvents`], then the TPM quotes PCRs 0–9 and 14 (the PCRs Keylime's measured-boot policy
//! needs) with an ECC P-256 attestation key and, separately, an RSA-2048 one.
//!
//! Written to `crates/strata-attest/benches/data/`:
//!
//! | file | what |
//! |---|---|
//! | `evidence-{ecc,rsa}.json` | `akPublic` (TPM2B_PUBLIC, base64), `nonce` (base64), the [`Evidence`] as the agent sends it, and the reference `policy` captured from the log ([`ReferencePolicy::golden`]) |
//! | `binary_bios_measurements` | the event log, as `/sys/kernel/security/tpm0/binary_bios_measurements` |
//! | `tpm2-{ecc,rsa}/` | the same quote as tpm2-tools files (what Keylime's agent sends and `tpm2_checkquote` reads): `quote.msg` (TPMS_ATTEST), `quote.sig` (TPMT_SIGNATURE), `quote.pcrs` (tpm2-tools' serialized TPML_PCR_SELECTION + TPML_DIGESTs), `ak.pub` (TPM2B_PUBLIC), `nonce.bin` |
//!
//! The run checks its output before writing: the TPM's PCRs equal the log's replay, both quotes
//! pass [`appraise`], and (when tpm2-tools is installed) `tpm2_checkquote` accepts the tpm2-tools
//! files.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "fixture generator")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use strata_agent::testhost::{BootEvents, SwtpmHost, TestCa};
use strata_agent::tpm::{AkAlgorithm, BankDigests, PcrBank};
use strata_attest::eventlog::{EV_IPL, EV_NO_ACTION, Event, EventLog, replay};
use strata_attest::policy::ReferencePolicy;
use strata_attest::tpm::{Attest, Public};
use strata_attest::{AgentMeasurement, Evidence, HashAlg, appraise, hex};

/// The PCRs quoted: Keylime's measured-boot policy (`example`) reads PCRs 0–9 and 14.
const QUOTED: [u32; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14];

/// Where the extra GRUB events go, by the number of the real event they precede.
/// Real #36 is `grub_cmd: set timeout=0`, #37 `grub_cmd: linux /vmlinuz …`.
const HEADER_BEFORE: usize = 36;
const ENTRY_BEFORE: usize = 37;

/// What GRUB 2.06 records for the header of a stock Debian `grub.cfg` (`00_header`,
/// `05_debian_theme`, `10_linux`, `30_uefi-firmware`, `41_custom`): a command is `Cmd`
/// (PCR 8, digest of the command text), a file it reads is `File` (PCR 9, digest of the file).
enum Grub {
    Cmd(&'static str),
    File(&'static str, &'static [u8]),
}

const ROOT: &str = "search --no-floppy --fs-uuid --set=root 5354524b-4154-5445-5354-000000000003";

fn header() -> Vec<Grub> {
    use Grub::{Cmd, File};
    vec![
        Cmd("[ -s (hd0,gpt1)/EFI/debian/grubenv ]"),
        Cmd("set have_grubenv=true"),
        Cmd("load_env"),
        File(
            "(hd0,gpt1)/EFI/debian/grubenv",
            b"# GRUB Environment Block\nsaved_entry=0\n",
        ),
        Cmd("[  = 2 ]"),
        Cmd("[  = 1 ]"),
        Cmd("[ xy = xy ]"),
        Cmd("menuentry_id_option=--id"),
        Cmd("export menuentry_id_option"),
        Cmd("[  ]"),
        Cmd(
            "function savedefault {\n  if [ -z \"${boot_once}\" ]; then\n    saved_entry=\"${chosen}\"\n    save_env saved_entry\n  fi\n}",
        ),
        Cmd(
            "function load_video {\n  if [ x$feature_all_video_module = xy ]; then\n    insmod all_video\n  else\n    insmod efi_gop\n    insmod efi_uga\n    insmod ieee1275_fb\n    insmod vbe\n    insmod vga\n    insmod video_bochs\n    insmod video_cirrus\n  fi\n}",
        ),
        Cmd("[ xy = xy ]"),
        Cmd("insmod part_gpt"),
        Cmd("insmod ext2"),
        Cmd(ROOT),
        Cmd("font=unicode"),
        Cmd("loadfont unicode"),
        File(
            "(hd0,gpt2)/usr/share/grub/unicode.pf2",
            b"FILE\0\0\0\x04PFF2NAME\0\0\0\x0fUnknown Regular 16\0",
        ),
        Cmd("set gfxmode=auto"),
        Cmd("load_video"),
        Cmd("[ xy = xy ]"),
        Cmd("insmod all_video"),
        Cmd("insmod gfxterm"),
        Cmd("set locale_dir=(hd0,gpt2)/boot/grub/locale"),
        Cmd("set lang=en_US"),
        Cmd("insmod gettext"),
        Cmd("terminal_output gfxterm"),
        Cmd("[  = 1 ]"),
        Cmd("set timeout_style=menu"),
        Cmd("insmod part_gpt"),
        Cmd("insmod ext2"),
        Cmd(ROOT),
        Cmd("insmod png"),
        Cmd("background_image -m stretch /usr/share/desktop-base/emerald-theme/grub/grub-4x3.png"),
        File(
            "(hd0,gpt2)/usr/share/desktop-base/emerald-theme/grub/grub-4x3.png",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x04\0\0\0\x03\0\x08\x02\0\0\0 emerald",
        ),
        Cmd("set menu_color_normal=white/black"),
        Cmd("set menu_color_highlight=black/white"),
        Cmd("function gfxmode {\n  set gfxpayload=\"${1}\"\n}"),
        Cmd("set linux_gfx_mode="),
        Cmd("export linux_gfx_mode"),
        Cmd(
            "menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-5354524b-4154-5445-5354-000000000003' {\n  load_video\n  insmod gzio\n  insmod part_gpt\n  insmod ext2\n  search --no-floppy --fs-uuid --set=root 5354524b-4154-5445-5354-000000000003\n  echo 'Loading Linux 6.1.0-56-cloud-amd64 ...'\n  linux /vmlinuz console=ttyS0 quiet panic=-1\n  echo 'Loading initial ramdisk ...'\n  initrd /initrd.img\n}",
        ),
        Cmd(
            "menuentry 'UEFI Firmware Settings' $menuentry_id_option 'uefi-firmware' {\n  fwsetup\n}",
        ),
        Cmd("[ -f (hd0,gpt2)/boot/grub/custom.cfg ]"),
        Cmd("[ -z (hd0,gpt2)/boot/grub -a -f (hd0,gpt2)/boot/grub/custom.cfg ]"),
    ]
}

/// The chosen menu entry, up to the `linux` command the real log records next.
fn entry() -> Vec<Grub> {
    use Grub::Cmd;
    vec![
        Cmd("setparams Debian GNU/Linux"),
        Cmd("load_video"),
        Cmd("[ xy = xy ]"),
        Cmd("insmod all_video"),
        Cmd("insmod gzio"),
        Cmd("insmod part_gpt"),
        Cmd("insmod ext2"),
        Cmd(ROOT),
        Cmd("echo Loading Linux 6.1.0-56-cloud-amd64 ..."),
    ]
}

/// A GRUB `EV_IPL` event: PCR 8 `grub_cmd: <cmd>\0` measuring the bare command, or PCR 9
/// `<path>\0` measuring the file.
fn grub_event(g: &Grub, banks: &[u16]) -> Event {
    let (pcr, text, measured) = match g {
        Grub::Cmd(c) => (8, format!("grub_cmd: {c}"), c.as_bytes()),
        Grub::File(path, contents) => (9, (*path).to_owned(), *contents),
    };
    let mut data = text.into_bytes();
    data.push(0);
    let digests = banks
        .iter()
        .map(|id| {
            let alg = HashAlg::from_alg_id(*id).expect("log bank");
            (*id, alg.hash(measured))
        })
        .collect();
    Event {
        pcr,
        event_type: EV_IPL,
        digests,
        data,
    }
}

/// The real OVMF log with the GRUB events inserted.
fn boot_log(real: &EventLog) -> EventLog {
    let banks: Vec<u16> = real.spec_id.algorithms.iter().map(|a| a.alg_id).collect();
    let mut events = Vec::new();
    for (n, e) in real.numbered() {
        if n == HEADER_BEFORE {
            events.extend(header().iter().map(|g| grub_event(g, &banks)));
        }
        if n == ENTRY_BEFORE {
            events.extend(entry().iter().map(|g| grub_event(g, &banks)));
        }
        events.push(e.clone());
    }
    EventLog {
        spec_id: real.spec_id.clone(),
        events,
    }
}

/// Feeds a parsed log to the boot simulator: its own digests, extended as recorded.
struct RecordedBoot(EventLog);

impl BootEvents for RecordedBoot {
    fn measurements(&self) -> Vec<(u32, BankDigests)> {
        self.0
            .events
            .iter()
            .filter(|e| e.event_type != EV_NO_ACTION)
            .map(|e| {
                let digests = PcrBank::ALL
                    .iter()
                    .filter_map(|b| {
                        let alg = HashAlg::from_alg_id(b.alg_id())?;
                        Some((*b, e.digest(alg)?.to_vec()))
                    })
                    .collect();
                (e.pcr, digests)
            })
            .collect()
    }

    fn log_bytes(&self) -> Vec<u8> {
        self.0.encode()
    }
}

/// The binaries the agent reports beside the quote (Strata-only: Keylime has no equivalent).
fn agent_measurements() -> Vec<AgentMeasurement> {
    [
        ("qemu-system-x86_64", b"qemu 10.0.2".as_slice()),
        ("strata-agent", b"strata-agent 0.0.0"),
    ]
    .into_iter()
    .map(|(name, bytes)| AgentMeasurement {
        name: name.to_owned(),
        sha256: hex(&HashAlg::Sha256.hash(bytes)),
    })
    .collect()
}

/// tpm2-tools' PCR file (`tpm2_quote -o`, read by `tpm2_checkquote -f` and Keylime's
/// `tpm_util.checkquote`): the in-memory `TPML_PCR_SELECTION` (count, then 16 padded
/// `TPMS_PCR_SELECTION` slots), the number of `TPML_DIGEST`s, then each `TPML_DIGEST` (count,
/// then 8 `TPM2B_DIGEST` slots of 2 + 64 bytes), little-endian, at most 8 values each.
fn tpm2_tools_pcrs(values: &BTreeMap<u32, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&1u32.to_le_bytes());
    let mut select = [0u8; 4];
    for p in values.keys() {
        select[(*p / 8) as usize] |= 1 << (p % 8);
    }
    for slot in 0..16 {
        if slot == 0 {
            out.extend_from_slice(&HashAlg::Sha256.alg_id().to_le_bytes());
            out.push(3);
            out.extend_from_slice(&select);
        } else {
            out.extend_from_slice(&[0; 7]);
        }
        out.push(0); // struct padding
    }
    let chunks: Vec<Vec<&Vec<u8>>> = values
        .values()
        .collect::<Vec<_>>()
        .chunks(8)
        .map(<[_]>::to_vec)
        .collect();
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for chunk in chunks {
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        for i in 0..8 {
            let v: &[u8] = chunk.get(i).map_or(&[], |v| v.as_slice());
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
            let mut buf = [0u8; 64];
            buf[..v.len()].copy_from_slice(v);
            out.extend_from_slice(&buf);
        }
    }
    out
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn nonce() -> Vec<u8> {
    let mut n = vec![0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut n).expect("rng");
    n
}

fn main() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let attest_dir = manifest.join("../strata-attest");
    let real_path = attest_dir.join("tests/fixtures/ovmf-swtpm/binary_bios_measurements");
    let out = attest_dir.join("benches/data");
    std::fs::create_dir_all(&out).expect("create benches/data");

    let real = EventLog::parse(&std::fs::read(&real_path).expect("read the ovmf log"))
        .expect("parse the ovmf log");
    let log = boot_log(&real);
    let log_bytes = log.encode();
    assert_eq!(EventLog::parse(&log_bytes).expect("reparse"), log);
    println!(
        "event log: {} events after the Spec ID header ({} real, {} GRUB), {} bytes",
        log.events.len(),
        real.events.len(),
        log.events.len() - real.events.len(),
        log_bytes.len()
    );
    let replayed = replay(&log, HashAlg::Sha256).expect("replay");

    let ca = TestCa::new().expect("test ca");
    let host = SwtpmHost::start(&ca).expect("swtpm host (install swtpm and swtpm-tools)");
    let boot = RecordedBoot(log.clone());
    assert_eq!(host.boot(&boot).expect("boot"), log_bytes);
    let mut tpm = host.open().expect("open the tpm");

    let agent = agent_measurements();
    let policy = ReferencePolicy::golden(&log, HashAlg::Sha256, &QUOTED, &agent);
    policy.validate().expect("policy");
    write(&out.join("binary_bios_measurements"), &log_bytes);

    for (name, alg) in [("ecc", AkAlgorithm::EccP256), ("rsa", AkAlgorithm::Rsa2048)] {
        let ak = tpm.create_attestation_key(alg).expect("create ak");
        let nonce = nonce();
        let quote = tpm.quote(&ak, &nonce, &QUOTED).expect("quote");
        let pcrs: BTreeMap<u32, Vec<u8>> = tpm
            .read_pcrs(PcrBank::Sha256, &QUOTED)
            .expect("read pcrs")
            .into_iter()
            .collect();
        for (p, v) in &pcrs {
            let expected = replayed.get(p).cloned().unwrap_or_else(|| vec![0; 32]);
            assert_eq!(
                &expected, v,
                "pcr {p}: the tpm differs from the log's replay"
            );
        }
        let evidence = Evidence {
            attest: quote.attest.clone(),
            signature: quote.signature.clone(),
            pcrs: pcrs.clone(),
            event_log: log_bytes.clone(),
            agent_measurements: agent.clone(),
        };
        let public = Public::parse(&ak.public).expect("ak public");
        let verdict = appraise(&evidence, &public, &nonce, &policy, None);
        assert!(verdict.passed, "{name}: {}", verdict.reason());
        let clock = Attest::parse(&quote.attest).expect("attest").clock_info;
        println!(
            "{name}: quote {} bytes, signature {} bytes, clock {} reset {} restart {}: appraisal passes",
            quote.attest.len(),
            quote.signature.len(),
            clock.clock,
            clock.reset_count,
            clock.restart_count
        );

        let fixture = serde_json::json!({
            "about": format!(
                "Real swtpm TPM2_Quote ({}) over sha256 PCRs {QUOTED:?} after extending the {} events of binary_bios_measurements; generated by `cargo run -p strata-agent --example bench_evidence`",
                match alg {
                    AkAlgorithm::EccP256 => "ECC P-256 AK, ECDSA-SHA256",
                    AkAlgorithm::Rsa2048 => "RSA-2048 AK, RSASSA-PKCS1-v1_5-SHA256",
                },
                log.events.len()
            ),
            "akPublic": STANDARD.encode(&ak.public),
            "nonce": STANDARD.encode(&nonce),
            "evidence": evidence,
            "policy": policy,
        });
        let text = serde_json::to_string_pretty(&fixture).expect("json") + "\n";
        write(&out.join(format!("evidence-{name}.json")), text.as_bytes());

        let dir = out.join(format!("tpm2-{name}"));
        std::fs::create_dir_all(&dir).expect("create tpm2 dir");
        write(&dir.join("quote.msg"), &quote.attest);
        write(&dir.join("quote.sig"), &quote.signature);
        write(&dir.join("quote.pcrs"), &tpm2_tools_pcrs(&pcrs));
        write(&dir.join("ak.pub"), &ak.public);
        write(&dir.join("nonce.bin"), &nonce);
        check_with_tpm2_tools(&dir, &nonce);
    }
    println!("wrote {}", out.display());
}

/// `tpm2_checkquote` on the tpm2-tools files, when installed: proves the PCR file format.
fn check_with_tpm2_tools(dir: &Path, nonce: &[u8]) {
    let run = Command::new("tpm2_checkquote")
        .current_dir(dir)
        .args([
            "-u",
            "ak.pub",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-f",
            "quote.pcrs",
            "-g",
            "sha256",
            "-q",
        ])
        .arg(hex(nonce))
        .output();
    match run {
        Err(e) => println!("  tpm2_checkquote not run ({e}); install tpm2-tools to cross-check"),
        Ok(o) if o.status.success() => println!("  tpm2_checkquote: ok ({})", dir.display()),
        Ok(o) => panic!(
            "tpm2_checkquote refused {}: {}{}",
            dir.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}
