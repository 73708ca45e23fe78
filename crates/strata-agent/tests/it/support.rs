//! Test helpers: starting hosts, and minimal parsers for the TPM structures and DER the
//! tests check (the verifier crate has the real ones).

use strata_agent::testhost::{SwtpmHost, TestCa};

/// A CA and `n` hosts issued by it; panics loudly if swtpm is missing.
pub fn hosts(n: usize) -> (TestCa, Vec<SwtpmHost>) {
    let ca = TestCa::new().expect("create the test ca");
    // Manufacture the first host alone: it creates the CA key; the rest can run in parallel.
    let first = start(&ca);
    let rest: Vec<SwtpmHost> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..n).map(|_| s.spawn(|| start(&ca))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all = vec![first];
    all.extend(rest);
    (ca, all)
}

fn start(ca: &TestCa) -> SwtpmHost {
    match SwtpmHost::start(ca) {
        Ok(h) => h,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            panic!("cannot start a swtpm test host (these tests need swtpm): {msg}")
        }
    }
}

/// A big-endian reader over TPM wire format.
pub struct Rd<'a>(pub &'a [u8]);

impl<'a> Rd<'a> {
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    pub fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    pub fn tpm2b(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.take(n)
    }
}

/// The public key in a marshalled TPM2B_PUBLIC.
#[derive(Debug, PartialEq, Eq)]
pub enum PublicKey {
    Rsa { modulus: Vec<u8> },
    Ecc { x: Vec<u8>, y: Vec<u8> },
}

/// Parses the parts of a TPM2B_PUBLIC the tests need: (type, nameAlg, attributes, key).
pub fn parse_public(tpm2b: &[u8]) -> (u16, u16, u32, PublicKey) {
    let mut r = Rd(tpm2b);
    let body = r.tpm2b();
    assert!(r.0.is_empty(), "trailing bytes after TPM2B_PUBLIC");
    let mut r = Rd(body);
    let ty = r.u16();
    let name_alg = r.u16();
    let attrs = r.u32();
    let _policy = r.tpm2b();
    // symmetric
    if r.u16() != 0x0010 {
        r.u16();
        r.u16();
    }
    // scheme
    if r.u16() != 0x0010 {
        r.u16();
    }
    let key = match ty {
        0x0001 => {
            let _bits = r.u16();
            let _exp = r.u32();
            PublicKey::Rsa {
                modulus: r.tpm2b().to_vec(),
            }
        }
        0x0023 => {
            let _curve = r.u16();
            if r.u16() != 0x0010 {
                r.u16();
            }
            let x = r.tpm2b().to_vec();
            let y = r.tpm2b().to_vec();
            PublicKey::Ecc { x, y }
        }
        other => panic!("unexpected key type {other:#x}"),
    };
    assert!(r.0.is_empty(), "trailing bytes in TPMT_PUBLIC");
    (ty, name_alg, attrs, key)
}

/// The fields of a quote's TPMS_ATTEST the tests check.
#[derive(Debug)]
pub struct QuoteInfo {
    pub magic: u32,
    pub ty: u16,
    pub signer: Vec<u8>,
    pub extra_data: Vec<u8>,
    pub clock: u64,
    pub safe: u8,
    pub selection: Vec<(u16, Vec<u8>)>,
    pub pcr_digest: Vec<u8>,
}

pub fn parse_quote(attest: &[u8]) -> QuoteInfo {
    let mut r = Rd(attest);
    let magic = r.u32();
    let ty = r.u16();
    let signer = r.tpm2b().to_vec();
    let extra_data = r.tpm2b().to_vec();
    let clock = r.u64();
    let _reset_count = r.u32();
    let _restart = r.u32();
    let safe = r.u8();
    let _fw = r.u64();
    let count = r.u32();
    let selection = (0..count)
        .map(|_| {
            let alg = r.u16();
            let n = r.u8() as usize;
            (alg, r.take(n).to_vec())
        })
        .collect();
    let pcr_digest = r.tpm2b().to_vec();
    assert!(r.0.is_empty(), "trailing bytes in TPMS_ATTEST");
    QuoteInfo {
        magic,
        ty,
        signer,
        extra_data,
        clock,
        safe,
        selection,
        pcr_digest,
    }
}

/// Verifies a TPMT_SIGNATURE (ECDSA-SHA256 or RSASSA-SHA256) over `msg` with `key`.
pub fn verify_signature(key: &PublicKey, msg: &[u8], sig: &[u8]) -> bool {
    use ring::signature;
    let mut r = Rd(sig);
    let alg = r.u16();
    let hash = r.u16();
    assert_eq!(hash, 0x000b, "signature hash is not sha256");
    match (alg, key) {
        (0x0018, PublicKey::Ecc { x, y }) => {
            let (sr, ss) = (r.tpm2b(), r.tpm2b());
            let mut fixed = vec![0u8; 64];
            fixed[32 - sr.len()..32].copy_from_slice(sr);
            fixed[64 - ss.len()..].copy_from_slice(ss);
            let mut point = vec![4u8];
            point.extend_from_slice(x);
            point.extend_from_slice(y);
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(msg, &fixed)
                .is_ok()
        }
        (0x0014, PublicKey::Rsa { modulus }) => {
            let s = r.tpm2b();
            let key = signature::RsaPublicKeyComponents {
                n: modulus.as_slice(),
                e: &[1u8, 0, 1][..],
            };
            key.verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, s)
                .is_ok()
        }
        (alg, _) => panic!("unexpected signature algorithm {alg:#x} for {key:?}"),
    }
}

/// Minimal DER: returns (tag, contents, rest).
pub fn der(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, hdr) = match input[1] {
        n if n < 0x80 => (n as usize, 2),
        0x81 => (input[2] as usize, 3),
        0x82 => (u16::from_be_bytes([input[2], input[3]]) as usize, 4),
        other => panic!("unsupported DER length form {other:#x}"),
    };
    (tag, &input[hdr..hdr + len], &input[hdr + len..])
}

/// The RSA modulus in an X.509 certificate's subjectPublicKeyInfo (leading zero stripped),
/// and the issuer Name element.
pub fn cert_rsa_modulus_and_issuer(cert: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (_, cert_body, _) = der(cert);
    let (_, tbs, _) = der(cert_body);
    let mut rest = tbs;
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let (tag, _, r) = der(rest);
        fields.push((tag, &rest[..rest.len() - r.len()]));
        rest = r;
    }
    // [0] version, serial, signature, issuer, validity, subject, spki, ...
    let off = usize::from(fields[0].0 == 0xa0);
    let issuer = fields[off + 2].1.to_vec();
    let (_, spki, _) = der(fields[off + 5].1);
    let (_, _alg, rest) = der(spki);
    let (tag, bits, _) = der(rest);
    assert_eq!(tag, 0x03, "subjectPublicKey is not a BIT STRING");
    let (_, rsa_key, _) = der(&bits[1..]);
    let (_, n, _) = der(rsa_key);
    let n = n.strip_prefix(&[0]).unwrap_or(n);
    (n.to_vec(), issuer)
}

/// The subject Name element of a PEM certificate.
pub fn pem_subject(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let cert = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let (_, cert_body, _) = der(&cert);
    let (_, tbs, _) = der(cert_body);
    let mut rest = tbs;
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let (tag, _, r) = der(rest);
        fields.push((tag, rest[..rest.len() - r.len()].to_vec()));
        rest = r;
    }
    let off = usize::from(fields[0].0 == 0xa0);
    fields[off + 4].1.clone()
}

/// Where strata-compute's tests cache the tiny image (`target/strata-compute-cache`): the
/// agent's real-QEMU test builds into and reuses the same directory.
pub fn compute_cache() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("strata-compute-cache");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
