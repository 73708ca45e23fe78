//! TPM 2.0 wire structures the verifier reads: `TPMS_ATTEST` (quotes), `TPMT_SIGNATURE`,
//! `TPM2B_PUBLIC` / `TPMT_PUBLIC` (RSA and ECC keys), with encoders, key names and signature
//! verification (TPM 2.0 Library, Part 2: Structures).
//!
//! Every parser takes untrusted bytes and is strict: a short buffer, a trailing byte, an
//! unknown algorithm identifier, an out-of-range size or a non-boolean `TPMI_YES_NO` is a
//! typed [`ParseError`], never a panic. Because TPM marshalling has no optional or
//! alternative encodings, parsing is canonical: `encode(parse(b)) == b` for every `b` that
//! parses (the tests check this property on arbitrary input).
//!
//! Quotes are the only attestation type accepted ([`TPM_ST_ATTEST_QUOTE`]); other types are
//! refused by [`Attest::parse`] with [`ParseError::AttestType`] (use [`peek_header`] to read
//! magic and type from bytes that may not be a quote).
//!
//! Signature verification ([`Public::verify`]) supports what attestation keys use:
//! RSASSA-PKCS1-v1_5 and RSASSA-PSS (salt length = digest length, as TPM 2.0 signs) with
//! SHA-256 on 2048–8192-bit RSA keys, and ECDSA with SHA-256 on NIST P-256.

use std::collections::BTreeSet;

use crate::hash::HashAlg;
use crate::wire::{Reader, WireError, put_tpm2b};

/// `TPM_GENERATED_VALUE`: the first four bytes of everything a TPM signs with a restricted key.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;

/// TPM_ALG_ID values used in this module.
pub mod alg {
    /// TPM_ALG_RSA.
    pub const RSA: u16 = 0x0001;
    /// TPM_ALG_AES.
    pub const AES: u16 = 0x0006;
    /// TPM_ALG_MGF1.
    pub const MGF1: u16 = 0x0007;
    /// TPM_ALG_NULL.
    pub const NULL: u16 = 0x0010;
    /// TPM_ALG_SM4.
    pub const SM4: u16 = 0x0013;
    /// TPM_ALG_RSASSA.
    pub const RSASSA: u16 = 0x0014;
    /// TPM_ALG_RSAES.
    pub const RSAES: u16 = 0x0015;
    /// TPM_ALG_RSAPSS.
    pub const RSAPSS: u16 = 0x0016;
    /// TPM_ALG_OAEP.
    pub const OAEP: u16 = 0x0017;
    /// TPM_ALG_ECDSA.
    pub const ECDSA: u16 = 0x0018;
    /// TPM_ALG_ECDH.
    pub const ECDH: u16 = 0x0019;
    /// TPM_ALG_ECDAA.
    pub const ECDAA: u16 = 0x001a;
    /// TPM_ALG_SM2.
    pub const SM2: u16 = 0x001b;
    /// TPM_ALG_ECSCHNORR.
    pub const ECSCHNORR: u16 = 0x001c;
    /// TPM_ALG_ECMQV.
    pub const ECMQV: u16 = 0x001d;
    /// TPM_ALG_KDF1_SP800_56A.
    pub const KDF1_SP800_56A: u16 = 0x0020;
    /// TPM_ALG_KDF2.
    pub const KDF2: u16 = 0x0021;
    /// TPM_ALG_KDF1_SP800_108.
    pub const KDF1_SP800_108: u16 = 0x0022;
    /// TPM_ALG_ECC.
    pub const ECC: u16 = 0x0023;
    /// TPM_ALG_CAMELLIA.
    pub const CAMELLIA: u16 = 0x0026;
    /// TPM_ALG_CTR.
    pub const CTR: u16 = 0x0040;
    /// TPM_ALG_OFB.
    pub const OFB: u16 = 0x0041;
    /// TPM_ALG_CBC.
    pub const CBC: u16 = 0x0042;
    /// TPM_ALG_CFB.
    pub const CFB: u16 = 0x0043;
    /// TPM_ALG_ECB.
    pub const ECB: u16 = 0x0044;
}

/// TPMA_OBJECT bits.
pub mod attr {
    /// fixedTPM: the key cannot leave this TPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// stClear.
    pub const ST_CLEAR: u32 = 1 << 2;
    /// fixedParent.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// sensitiveDataOrigin: the TPM generated the key.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// userWithAuth.
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    /// adminWithPolicy.
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    /// noDA.
    pub const NO_DA: u32 = 1 << 10;
    /// encryptedDuplication.
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    /// restricted: signs only TPM-generated structures (or decrypts only TPM formats).
    pub const RESTRICTED: u32 = 1 << 16;
    /// decrypt.
    pub const DECRYPT: u32 = 1 << 17;
    /// sign / encrypt.
    pub const SIGN_ENCRYPT: u32 = 1 << 18;
}

/// Largest `TPM2B_NAME` (a 64-byte digest plus its algorithm).
pub const MAX_NAME: usize = 66;
/// Largest `TPM2B_DATA` (`sizeof(TPMT_HA)`).
pub const MAX_DATA: usize = 66;
/// Largest `TPM2B_DIGEST`.
pub const MAX_DIGEST: usize = 64;
/// Largest RSA modulus or signature (4096-bit keys).
pub const MAX_RSA_BYTES: usize = 512;
/// Largest ECC coordinate or signature half (P-521).
pub const MAX_ECC_BYTES: usize = 66;
/// Most `TPMS_PCR_SELECTION` entries in a `TPML_PCR_SELECTION` (one per bank).
pub const MAX_PCR_BANKS: usize = 16;
/// Largest `sizeofSelect` (256 PCRs).
pub const MAX_PCR_SELECT: usize = 32;

/// Why bytes are not the TPM structure they claim to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Too short, or too long.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// An algorithm identifier that is unknown or not allowed in that field.
    #[error("unsupported {what} algorithm {alg:#06x}")]
    Algorithm {
        /// The field.
        what: &'static str,
        /// The TPM_ALG_ID found.
        alg: u16,
    },
    /// An attestation structure that is not a quote.
    #[error(
        "unsupported attestation type {found:#06x}: only TPM_ST_ATTEST_QUOTE (0x8018) is accepted"
    )]
    AttestType {
        /// The TPMI_ST_ATTEST found.
        found: u16,
    },
    /// A size field beyond what the structure allows.
    #[error("{what} is {len} bytes; at most {max} are allowed")]
    TooLarge {
        /// The field.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value outside the field's range.
    #[error("invalid {what} value {value:#x}")]
    Value {
        /// The field.
        what: &'static str,
        /// The value found.
        value: u64,
    },
}

fn bounded<'a>(r: &mut Reader<'a>, what: &'static str, max: usize) -> Result<&'a [u8], ParseError> {
    let b = r.tpm2b(what)?;
    if b.len() > max {
        return Err(ParseError::TooLarge {
            what,
            len: b.len(),
            max,
        });
    }
    Ok(b)
}

fn hash_alg(r: &mut Reader<'_>, what: &'static str) -> Result<HashAlg, ParseError> {
    let id = r.u16_be(what)?;
    HashAlg::from_alg_id(id).ok_or(ParseError::Algorithm { what, alg: id })
}

/// Reads magic and type from the start of a `TPMS_ATTEST` without parsing the rest.
pub fn peek_header(attest: &[u8]) -> Result<(u32, u16), ParseError> {
    let mut r = Reader::new(attest);
    let magic = r.u32_be("TPMS_ATTEST.magic")?;
    let ty = r.u16_be("TPMS_ATTEST.type")?;
    Ok((magic, ty))
}

/// `TPMS_CLOCK_INFO`: the TPM's clock and its reset/restart counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since it was manufactured (or cleared).
    pub clock: u64,
    /// TPM2_Startup(CLEAR) count (reboots).
    pub reset_count: u32,
    /// TPM2_Startup(STATE) count since the last reset (resume from hibernate).
    pub restart_count: u32,
    /// The clock has not gone backwards since it was last saved to NV.
    pub safe: bool,
}

impl ClockInfo {
    fn parse(r: &mut Reader<'_>) -> Result<ClockInfo, ParseError> {
        let clock = r.u64_be("TPMS_CLOCK_INFO.clock")?;
        let reset_count = r.u32_be("TPMS_CLOCK_INFO.resetCount")?;
        let restart_count = r.u32_be("TPMS_CLOCK_INFO.restartCount")?;
        let safe = match r.u8("TPMS_CLOCK_INFO.safe")? {
            0 => false,
            1 => true,
            v => {
                return Err(ParseError::Value {
                    what: "TPMS_CLOCK_INFO.safe",
                    value: u64::from(v),
                });
            }
        };
        Ok(ClockInfo {
            clock,
            reset_count,
            restart_count,
            safe,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.clock.to_be_bytes());
        out.extend_from_slice(&self.reset_count.to_be_bytes());
        out.extend_from_slice(&self.restart_count.to_be_bytes());
        out.push(u8::from(self.safe));
    }
}

/// `TPMS_PCR_SELECTION`: one bank and a bitmap of PCRs (bit `i % 8` of byte `i / 8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank.
    pub hash: HashAlg,
    /// The bitmap, `sizeofSelect` bytes.
    pub select: Vec<u8>,
}

impl PcrSelection {
    /// A selection of `pcrs` in `hash` with the PC Client minimum of 3 bitmap bytes
    /// (indices above 255 do not fit a selection and are ignored).
    pub fn new(hash: HashAlg, pcrs: &[u32]) -> PcrSelection {
        let max = pcrs.iter().copied().max().unwrap_or(0);
        let bytes = usize::try_from(max / 8 + 1)
            .unwrap_or(MAX_PCR_SELECT)
            .max(3);
        let mut select = vec![0u8; bytes.min(MAX_PCR_SELECT)];
        for &p in pcrs {
            if let Some(b) = usize::try_from(p / 8).ok().and_then(|i| select.get_mut(i)) {
                *b |= 1 << (p % 8);
            }
        }
        PcrSelection { hash, select }
    }

    /// The selected PCR indices, ascending.
    pub fn pcrs(&self) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        for (byte_index, byte) in (0u32..).zip(&self.select) {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    out.insert(byte_index * 8 + bit);
                }
            }
        }
        out
    }

    fn parse(r: &mut Reader<'_>) -> Result<PcrSelection, ParseError> {
        let hash = hash_alg(r, "TPMS_PCR_SELECTION.hash")?;
        let n = usize::from(r.u8("TPMS_PCR_SELECTION.sizeofSelect")?);
        if n > MAX_PCR_SELECT {
            return Err(ParseError::TooLarge {
                what: "TPMS_PCR_SELECTION.pcrSelect",
                len: n,
                max: MAX_PCR_SELECT,
            });
        }
        let select = r.take(n, "TPMS_PCR_SELECTION.pcrSelect")?.to_vec();
        Ok(PcrSelection { hash, select })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hash.alg_id().to_be_bytes());
        let n = self.select.len().min(MAX_PCR_SELECT);
        out.push(n as u8);
        out.extend_from_slice(&self.select[..n]);
    }
}

/// `TPMS_QUOTE_INFO`: which PCRs were quoted and the digest of their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteInfo {
    /// `TPML_PCR_SELECTION`.
    pub pcr_select: Vec<PcrSelection>,
    /// `H(PCR values in selection order)` with the signing scheme's hash.
    pub pcr_digest: Vec<u8>,
}

/// A parsed quote (`TPMS_ATTEST` with `type == TPM_ST_ATTEST_QUOTE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// Must be [`TPM_GENERATED_VALUE`]; not checked by the parser (the appraisal names it).
    pub magic: u32,
    /// Qualified name of the signing key.
    pub qualified_signer: Vec<u8>,
    /// The caller's qualifying data (the nonce).
    pub extra_data: Vec<u8>,
    /// Clock and counters at the time of the quote.
    pub clock_info: ClockInfo,
    /// TPM firmware version (vendor-specific).
    pub firmware_version: u64,
    /// The quote proper.
    pub quote: QuoteInfo,
}

impl Attest {
    /// Parses a marshalled `TPMS_ATTEST` holding a quote.
    pub fn parse(bytes: &[u8]) -> Result<Attest, ParseError> {
        let mut r = Reader::new(bytes);
        let magic = r.u32_be("TPMS_ATTEST.magic")?;
        let ty = r.u16_be("TPMS_ATTEST.type")?;
        if ty != TPM_ST_ATTEST_QUOTE {
            return Err(ParseError::AttestType { found: ty });
        }
        let qualified_signer = bounded(&mut r, "TPMS_ATTEST.qualifiedSigner", MAX_NAME)?.to_vec();
        let extra_data = bounded(&mut r, "TPMS_ATTEST.extraData", MAX_DATA)?.to_vec();
        let clock_info = ClockInfo::parse(&mut r)?;
        let firmware_version = r.u64_be("TPMS_ATTEST.firmwareVersion")?;
        let count = r.u32_be("TPML_PCR_SELECTION.count")?;
        let count = usize::try_from(count)
            .ok()
            .filter(|c| *c <= MAX_PCR_BANKS)
            .ok_or(ParseError::TooLarge {
                what: "TPML_PCR_SELECTION",
                len: usize::try_from(count).unwrap_or(usize::MAX),
                max: MAX_PCR_BANKS,
            })?;
        let pcr_select = (0..count)
            .map(|_| PcrSelection::parse(&mut r))
            .collect::<Result<Vec<_>, _>>()?;
        let pcr_digest = bounded(&mut r, "TPMS_QUOTE_INFO.pcrDigest", MAX_DIGEST)?.to_vec();
        r.finish("TPMS_ATTEST")?;
        Ok(Attest {
            magic,
            qualified_signer,
            extra_data,
            clock_info,
            firmware_version,
            quote: QuoteInfo {
                pcr_select,
                pcr_digest,
            },
        })
    }

    /// Marshals the quote back to `TPMS_ATTEST`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&self.magic.to_be_bytes());
        out.extend_from_slice(&TPM_ST_ATTEST_QUOTE.to_be_bytes());
        put_tpm2b(&mut out, &self.qualified_signer);
        put_tpm2b(&mut out, &self.extra_data);
        self.clock_info.encode(&mut out);
        out.extend_from_slice(&self.firmware_version.to_be_bytes());
        let n = self.quote.pcr_select.len().min(MAX_PCR_BANKS);
        out.extend_from_slice(&(n as u32).to_be_bytes());
        for s in &self.quote.pcr_select[..n] {
            s.encode(&mut out);
        }
        put_tpm2b(&mut out, &self.quote.pcr_digest);
        out
    }
}

/// `TPMT_SIGNATURE` of the kinds attestation keys produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// RSASSA-PKCS1-v1_5.
    RsaSsa {
        /// Digest algorithm.
        hash: HashAlg,
        /// The signature (modulus-sized).
        sig: Vec<u8>,
    },
    /// RSASSA-PSS.
    RsaPss {
        /// Digest algorithm.
        hash: HashAlg,
        /// The signature (modulus-sized).
        sig: Vec<u8>,
    },
    /// ECDSA.
    Ecdsa {
        /// Digest algorithm.
        hash: HashAlg,
        /// `r`, big-endian.
        r: Vec<u8>,
        /// `s`, big-endian.
        s: Vec<u8>,
    },
}

impl Signature {
    /// Parses a marshalled `TPMT_SIGNATURE`.
    pub fn parse(bytes: &[u8]) -> Result<Signature, ParseError> {
        let mut r = Reader::new(bytes);
        let sig_alg = r.u16_be("TPMT_SIGNATURE.sigAlg")?;
        let sig = match sig_alg {
            alg::RSASSA | alg::RSAPSS => {
                let hash = hash_alg(&mut r, "TPMS_SIGNATURE_RSA.hash")?;
                let sig = bounded(&mut r, "TPMS_SIGNATURE_RSA.sig", MAX_RSA_BYTES)?.to_vec();
                if sig_alg == alg::RSASSA {
                    Signature::RsaSsa { hash, sig }
                } else {
                    Signature::RsaPss { hash, sig }
                }
            }
            alg::ECDSA => {
                let hash = hash_alg(&mut r, "TPMS_SIGNATURE_ECC.hash")?;
                let rr = bounded(&mut r, "TPMS_SIGNATURE_ECC.signatureR", MAX_ECC_BYTES)?;
                let ss = bounded(&mut r, "TPMS_SIGNATURE_ECC.signatureS", MAX_ECC_BYTES)?;
                Signature::Ecdsa {
                    hash,
                    r: rr.to_vec(),
                    s: ss.to_vec(),
                }
            }
            other => {
                return Err(ParseError::Algorithm {
                    what: "TPMT_SIGNATURE.sigAlg",
                    alg: other,
                });
            }
        };
        r.finish("TPMT_SIGNATURE")?;
        Ok(sig)
    }

    /// Marshals to `TPMT_SIGNATURE`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(300);
        match self {
            Signature::RsaSsa { hash, sig } | Signature::RsaPss { hash, sig } => {
                let id = if matches!(self, Signature::RsaSsa { .. }) {
                    alg::RSASSA
                } else {
                    alg::RSAPSS
                };
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&hash.alg_id().to_be_bytes());
                put_tpm2b(&mut out, sig);
            }
            Signature::Ecdsa { hash, r, s } => {
                out.extend_from_slice(&alg::ECDSA.to_be_bytes());
                out.extend_from_slice(&hash.alg_id().to_be_bytes());
                put_tpm2b(&mut out, r);
                put_tpm2b(&mut out, s);
            }
        }
        out
    }

    /// The digest algorithm the signature was made with.
    pub fn hash(&self) -> HashAlg {
        match self {
            Signature::RsaSsa { hash, .. }
            | Signature::RsaPss { hash, .. }
            | Signature::Ecdsa { hash, .. } => *hash,
        }
    }

    /// `RSASSA`, `RSAPSS` or `ECDSA`.
    pub fn scheme_name(&self) -> &'static str {
        match self {
            Signature::RsaSsa { .. } => "RSASSA",
            Signature::RsaPss { .. } => "RSAPSS",
            Signature::Ecdsa { .. } => "ECDSA",
        }
    }
}

/// `TPMT_SYM_DEF_OBJECT` when not `TPM_ALG_NULL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymDef {
    /// TPM_ALG_AES, TPM_ALG_SM4 or TPM_ALG_CAMELLIA.
    pub algorithm: u16,
    /// Key size in bits.
    pub key_bits: u16,
    /// TPM_ALG_CFB, CTR, OFB, CBC or ECB.
    pub mode: u16,
}

/// A signing, encryption or key-exchange scheme (`TPMT_RSA_SCHEME` / `TPMT_ECC_SCHEME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsymScheme {
    /// TPM_ALG_NULL: any scheme the key type allows.
    Null,
    /// RSASSA-PKCS1-v1_5.
    RsaSsa(HashAlg),
    /// RSAES-PKCS1-v1_5.
    RsaEs,
    /// RSASSA-PSS.
    RsaPss(HashAlg),
    /// RSAES-OAEP.
    Oaep(HashAlg),
    /// ECDSA.
    Ecdsa(HashAlg),
    /// ECDH.
    Ecdh(HashAlg),
    /// ECDAA with its commit count.
    Ecdaa(HashAlg, u16),
    /// SM2.
    Sm2(HashAlg),
    /// EC-Schnorr.
    EcSchnorr(HashAlg),
    /// ECMQV.
    EcMqv(HashAlg),
}

impl AsymScheme {
    fn parse(r: &mut Reader<'_>, rsa: bool) -> Result<AsymScheme, ParseError> {
        let what = if rsa {
            "TPMT_RSA_SCHEME.scheme"
        } else {
            "TPMT_ECC_SCHEME.scheme"
        };
        let id = r.u16_be(what)?;
        let hash = |r: &mut Reader<'_>| hash_alg(r, "TPMS_SCHEME_HASH.hashAlg");
        let scheme = match (id, rsa) {
            (alg::NULL, _) => AsymScheme::Null,
            (alg::RSASSA, true) => AsymScheme::RsaSsa(hash(r)?),
            (alg::RSAES, true) => AsymScheme::RsaEs,
            (alg::RSAPSS, true) => AsymScheme::RsaPss(hash(r)?),
            (alg::OAEP, true) => AsymScheme::Oaep(hash(r)?),
            (alg::ECDSA, false) => AsymScheme::Ecdsa(hash(r)?),
            (alg::ECDH, false) => AsymScheme::Ecdh(hash(r)?),
            (alg::ECDAA, false) => {
                let h = hash(r)?;
                AsymScheme::Ecdaa(h, r.u16_be("TPMS_SCHEME_ECDAA.count")?)
            }
            (alg::SM2, false) => AsymScheme::Sm2(hash(r)?),
            (alg::ECSCHNORR, false) => AsymScheme::EcSchnorr(hash(r)?),
            (alg::ECMQV, false) => AsymScheme::EcMqv(hash(r)?),
            (other, _) => return Err(ParseError::Algorithm { what, alg: other }),
        };
        Ok(scheme)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let (id, hash, count) = match *self {
            AsymScheme::Null => (alg::NULL, None, None),
            AsymScheme::RsaSsa(h) => (alg::RSASSA, Some(h), None),
            AsymScheme::RsaEs => (alg::RSAES, None, None),
            AsymScheme::RsaPss(h) => (alg::RSAPSS, Some(h), None),
            AsymScheme::Oaep(h) => (alg::OAEP, Some(h), None),
            AsymScheme::Ecdsa(h) => (alg::ECDSA, Some(h), None),
            AsymScheme::Ecdh(h) => (alg::ECDH, Some(h), None),
            AsymScheme::Ecdaa(h, c) => (alg::ECDAA, Some(h), Some(c)),
            AsymScheme::Sm2(h) => (alg::SM2, Some(h), None),
            AsymScheme::EcSchnorr(h) => (alg::ECSCHNORR, Some(h), None),
            AsymScheme::EcMqv(h) => (alg::ECMQV, Some(h), None),
        };
        out.extend_from_slice(&id.to_be_bytes());
        if let Some(h) = hash {
            out.extend_from_slice(&h.alg_id().to_be_bytes());
        }
        if let Some(c) = count {
            out.extend_from_slice(&c.to_be_bytes());
        }
    }
}

/// `TPMT_KDF_SCHEME` when not `TPM_ALG_NULL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfScheme {
    /// TPM_ALG_MGF1, KDF1_SP800_56A, KDF2 or KDF1_SP800_108.
    pub scheme: u16,
    /// Its hash.
    pub hash: HashAlg,
}

/// `TPMI_ECC_CURVE` values this crate parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EccCurve {
    /// TPM_ECC_NIST_P256 (0x0003).
    NistP256,
    /// TPM_ECC_NIST_P384 (0x0004).
    NistP384,
    /// TPM_ECC_NIST_P521 (0x0005).
    NistP521,
}

impl EccCurve {
    /// The TPM_ECC_CURVE identifier.
    pub fn id(self) -> u16 {
        match self {
            EccCurve::NistP256 => 0x0003,
            EccCurve::NistP384 => 0x0004,
            EccCurve::NistP521 => 0x0005,
        }
    }

    /// Coordinate size in bytes.
    pub fn coordinate_len(self) -> usize {
        match self {
            EccCurve::NistP256 => 32,
            EccCurve::NistP384 => 48,
            EccCurve::NistP521 => 66,
        }
    }
}

/// RSA parameters and modulus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaPublic {
    /// Symmetric algorithm for a storage (restricted decryption) key; `None` otherwise.
    pub symmetric: Option<SymDef>,
    /// The key's scheme.
    pub scheme: AsymScheme,
    /// Modulus size in bits.
    pub key_bits: u16,
    /// Public exponent; 0 means 65537.
    pub exponent: u32,
    /// Modulus, big-endian.
    pub modulus: Vec<u8>,
}

/// ECC parameters and point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EccPublic {
    /// Symmetric algorithm for a storage key; `None` otherwise.
    pub symmetric: Option<SymDef>,
    /// The key's scheme.
    pub scheme: AsymScheme,
    /// The curve.
    pub curve: EccCurve,
    /// Key derivation scheme; `None` for TPM_ALG_NULL.
    pub kdf: Option<KdfScheme>,
    /// Point x, big-endian.
    pub x: Vec<u8>,
    /// Point y, big-endian.
    pub y: Vec<u8>,
}

/// The algorithm-specific part of a public area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// TPM_ALG_RSA.
    Rsa(RsaPublic),
    /// TPM_ALG_ECC.
    Ecc(EccPublic),
}

/// `TPMT_PUBLIC` of an RSA or ECC key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// Hash used for the key's name.
    pub name_alg: HashAlg,
    /// TPMA_OBJECT (see [`attr`]).
    pub attributes: u32,
    /// Policy digest authorizing admin use (empty for none).
    pub auth_policy: Vec<u8>,
    /// Type, parameters and unique.
    pub key: PublicKey,
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature scheme cannot be made by this key type.
    #[error("a {scheme} signature cannot come from {key} key")]
    SchemeMismatch {
        /// Signature scheme.
        scheme: &'static str,
        /// Key type.
        key: &'static str,
    },
    /// Only SHA-256 signatures are verified.
    #[error("{0} signatures are not supported; attestation keys must sign with sha256")]
    Hash(HashAlg),
    /// Only NIST P-256 ECC keys are verified.
    #[error("ecc curve {0:?} is not supported for signatures; use nist p-256")]
    Curve(EccCurve),
    /// A coordinate or signature half is longer than the curve allows.
    #[error("malformed ecc {0}")]
    EccEncoding(&'static str),
    /// The signature is not valid for this key and message.
    #[error("the signature does not verify with this key")]
    Invalid,
}

fn left_pad(v: &[u8], len: usize, out: &mut Vec<u8>) -> bool {
    let stripped = {
        let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
        &v[first..]
    };
    if stripped.len() > len {
        return false;
    }
    out.extend(std::iter::repeat_n(0u8, len - stripped.len()));
    out.extend_from_slice(stripped);
    true
}

fn sym_def(r: &mut Reader<'_>) -> Result<Option<SymDef>, ParseError> {
    let algorithm = r.u16_be("TPMT_SYM_DEF_OBJECT.algorithm")?;
    match algorithm {
        alg::NULL => Ok(None),
        alg::AES | alg::SM4 | alg::CAMELLIA => {
            let key_bits = r.u16_be("TPMT_SYM_DEF_OBJECT.keyBits")?;
            let mode = r.u16_be("TPMT_SYM_DEF_OBJECT.mode")?;
            if !matches!(mode, alg::CTR | alg::OFB | alg::CBC | alg::CFB | alg::ECB) {
                return Err(ParseError::Algorithm {
                    what: "TPMT_SYM_DEF_OBJECT.mode",
                    alg: mode,
                });
            }
            Ok(Some(SymDef {
                algorithm,
                key_bits,
                mode,
            }))
        }
        other => Err(ParseError::Algorithm {
            what: "TPMT_SYM_DEF_OBJECT.algorithm",
            alg: other,
        }),
    }
}

fn put_sym_def(out: &mut Vec<u8>, s: &Option<SymDef>) {
    match s {
        None => out.extend_from_slice(&alg::NULL.to_be_bytes()),
        Some(s) => {
            out.extend_from_slice(&s.algorithm.to_be_bytes());
            out.extend_from_slice(&s.key_bits.to_be_bytes());
            out.extend_from_slice(&s.mode.to_be_bytes());
        }
    }
}

impl Public {
    /// Parses a marshalled `TPM2B_PUBLIC` (2-byte size, then `TPMT_PUBLIC`).
    pub fn parse(tpm2b: &[u8]) -> Result<Public, ParseError> {
        let mut r = Reader::new(tpm2b);
        let body = r.tpm2b("TPM2B_PUBLIC")?;
        r.finish("TPM2B_PUBLIC")?;
        Public::parse_tpmt(body)
    }

    /// Parses a marshalled `TPMT_PUBLIC`.
    pub fn parse_tpmt(bytes: &[u8]) -> Result<Public, ParseError> {
        let mut r = Reader::new(bytes);
        let ty = r.u16_be("TPMT_PUBLIC.type")?;
        if ty != alg::RSA && ty != alg::ECC {
            return Err(ParseError::Algorithm {
                what: "TPMT_PUBLIC.type",
                alg: ty,
            });
        }
        let name_alg = hash_alg(&mut r, "TPMT_PUBLIC.nameAlg")?;
        let attributes = r.u32_be("TPMT_PUBLIC.objectAttributes")?;
        let auth_policy = bounded(&mut r, "TPMT_PUBLIC.authPolicy", MAX_DIGEST)?.to_vec();
        let symmetric = sym_def(&mut r)?;
        let key = if ty == alg::RSA {
            let scheme = AsymScheme::parse(&mut r, true)?;
            let key_bits = r.u16_be("TPMS_RSA_PARMS.keyBits")?;
            let exponent = r.u32_be("TPMS_RSA_PARMS.exponent")?;
            let modulus = bounded(&mut r, "TPM2B_PUBLIC_KEY_RSA", MAX_RSA_BYTES)?.to_vec();
            PublicKey::Rsa(RsaPublic {
                symmetric,
                scheme,
                key_bits,
                exponent,
                modulus,
            })
        } else {
            let scheme = AsymScheme::parse(&mut r, false)?;
            let curve_id = r.u16_be("TPMS_ECC_PARMS.curveID")?;
            let curve = [EccCurve::NistP256, EccCurve::NistP384, EccCurve::NistP521]
                .into_iter()
                .find(|c| c.id() == curve_id)
                .ok_or(ParseError::Algorithm {
                    what: "TPMS_ECC_PARMS.curveID",
                    alg: curve_id,
                })?;
            let kdf_id = r.u16_be("TPMT_KDF_SCHEME.scheme")?;
            let kdf = match kdf_id {
                alg::NULL => None,
                alg::MGF1 | alg::KDF1_SP800_56A | alg::KDF2 | alg::KDF1_SP800_108 => {
                    Some(KdfScheme {
                        scheme: kdf_id,
                        hash: hash_alg(&mut r, "TPMT_KDF_SCHEME.hashAlg")?,
                    })
                }
                other => {
                    return Err(ParseError::Algorithm {
                        what: "TPMT_KDF_SCHEME.scheme",
                        alg: other,
                    });
                }
            };
            let x = bounded(&mut r, "TPMS_ECC_POINT.x", MAX_ECC_BYTES)?.to_vec();
            let y = bounded(&mut r, "TPMS_ECC_POINT.y", MAX_ECC_BYTES)?.to_vec();
            PublicKey::Ecc(EccPublic {
                symmetric,
                scheme,
                curve,
                kdf,
                x,
                y,
            })
        };
        r.finish("TPMT_PUBLIC")?;
        Ok(Public {
            name_alg,
            attributes,
            auth_policy,
            key,
        })
    }

    /// TPM_ALG_RSA or TPM_ALG_ECC.
    pub fn key_type(&self) -> u16 {
        match self.key {
            PublicKey::Rsa(_) => alg::RSA,
            PublicKey::Ecc(_) => alg::ECC,
        }
    }

    /// Marshals to `TPMT_PUBLIC` (the bytes the name hashes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(360);
        out.extend_from_slice(&self.key_type().to_be_bytes());
        out.extend_from_slice(&self.name_alg.alg_id().to_be_bytes());
        out.extend_from_slice(&self.attributes.to_be_bytes());
        put_tpm2b(&mut out, &self.auth_policy);
        match &self.key {
            PublicKey::Rsa(k) => {
                put_sym_def(&mut out, &k.symmetric);
                k.scheme.encode(&mut out);
                out.extend_from_slice(&k.key_bits.to_be_bytes());
                out.extend_from_slice(&k.exponent.to_be_bytes());
                put_tpm2b(&mut out, &k.modulus);
            }
            PublicKey::Ecc(k) => {
                put_sym_def(&mut out, &k.symmetric);
                k.scheme.encode(&mut out);
                out.extend_from_slice(&k.curve.id().to_be_bytes());
                match k.kdf {
                    None => out.extend_from_slice(&alg::NULL.to_be_bytes()),
                    Some(kdf) => {
                        out.extend_from_slice(&kdf.scheme.to_be_bytes());
                        out.extend_from_slice(&kdf.hash.alg_id().to_be_bytes());
                    }
                }
                put_tpm2b(&mut out, &k.x);
                put_tpm2b(&mut out, &k.y);
            }
        }
        out
    }

    /// Marshals to `TPM2B_PUBLIC`.
    pub fn encode_tpm2b(&self) -> Vec<u8> {
        let body = self.encode();
        let mut out = Vec::with_capacity(body.len() + 2);
        put_tpm2b(&mut out, &body);
        out
    }

    /// The key's name: `nameAlg (2 bytes, big-endian) ‖ H_nameAlg(TPMT_PUBLIC)`.
    pub fn name(&self) -> Vec<u8> {
        let mut out = self.name_alg.alg_id().to_be_bytes().to_vec();
        out.extend_from_slice(&self.name_alg.hash(&self.encode()));
        out
    }

    /// Whether every bit of `bits` is set in the attributes.
    pub fn has_attributes(&self, bits: u32) -> bool {
        self.attributes & bits == bits
    }

    /// Whether this can be an attestation key: `restricted`, `sign` and `fixedTPM` set and
    /// `decrypt` clear. Only such a key proves that what it signed was made by the TPM (a
    /// restricted key refuses to sign data starting with [`TPM_GENERATED_VALUE`]).
    pub fn is_restricted_signing_key(&self) -> bool {
        self.has_attributes(attr::RESTRICTED | attr::SIGN_ENCRYPT | attr::FIXED_TPM)
            && !self.has_attributes(attr::DECRYPT)
    }

    /// Verifies `sig` over `message` (the signature's hash is applied to `message` here).
    pub fn verify(&self, message: &[u8], sig: &Signature) -> Result<(), VerifyError> {
        use ring::signature as rs;
        if sig.hash() != HashAlg::Sha256 {
            return Err(VerifyError::Hash(sig.hash()));
        }
        match (&self.key, sig) {
            (
                PublicKey::Rsa(k),
                Signature::RsaSsa { sig: s, .. } | Signature::RsaPss { sig: s, .. },
            ) => {
                let params: &rs::RsaParameters = if matches!(sig, Signature::RsaSsa { .. }) {
                    &rs::RSA_PKCS1_2048_8192_SHA256
                } else {
                    &rs::RSA_PSS_2048_8192_SHA256
                };
                let exponent = if k.exponent == 0 { 65_537 } else { k.exponent };
                let e = exponent.to_be_bytes();
                let first = e.iter().position(|b| *b != 0).unwrap_or(e.len() - 1);
                rs::RsaPublicKeyComponents {
                    n: k.modulus.as_slice(),
                    e: &e[first..],
                }
                .verify(params, message, s)
                .map_err(|_| VerifyError::Invalid)
            }
            (PublicKey::Ecc(k), Signature::Ecdsa { r, s, .. }) => {
                if k.curve != EccCurve::NistP256 {
                    return Err(VerifyError::Curve(k.curve));
                }
                let mut point = vec![0x04];
                if !left_pad(&k.x, 32, &mut point) || !left_pad(&k.y, 32, &mut point) {
                    return Err(VerifyError::EccEncoding("public point"));
                }
                let mut fixed = Vec::with_capacity(64);
                if !left_pad(r, 32, &mut fixed) || !left_pad(s, 32, &mut fixed) {
                    return Err(VerifyError::EccEncoding("signature"));
                }
                rs::UnparsedPublicKey::new(&rs::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, &fixed)
                    .map_err(|_| VerifyError::Invalid)
            }
            (key, sig) => Err(VerifyError::SchemeMismatch {
                scheme: sig.scheme_name(),
                key: match key {
                    PublicKey::Rsa(_) => "an rsa",
                    PublicKey::Ecc(_) => "an ecc",
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testkit::{self, SoftKey};

    fn sample_attest() -> Attest {
        let values = [(0u32, vec![1u8; 32]), (7, vec![2u8; 32])]
            .into_iter()
            .collect();
        testkit::attest(&values, &[0, 7], b"nonce", testkit::CLOCK)
    }

    #[test]
    fn attest_round_trips_and_reads_every_field() {
        let a = sample_attest();
        let bytes = a.encode();
        assert_eq!(&bytes[..6], &[0xff, 0x54, 0x43, 0x47, 0x80, 0x18]);
        assert_eq!(Attest::parse(&bytes), Ok(a.clone()));
        assert_eq!(
            peek_header(&bytes),
            Ok((TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE))
        );
        assert_eq!(a.quote.pcr_select[0].select, vec![0x81, 0, 0]);
        assert_eq!(
            a.quote.pcr_select[0].pcrs().into_iter().collect::<Vec<_>>(),
            vec![0, 7]
        );
    }

    #[test]
    fn attest_parser_is_strict() {
        let bytes = sample_attest().encode();
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            Attest::parse(&long),
            Err(ParseError::Wire(WireError::Trailing {
                what: "TPMS_ATTEST",
                count: 1
            }))
        );
        assert!(matches!(
            Attest::parse(&bytes[..bytes.len() - 1]),
            Err(ParseError::Wire(WireError::Truncated { .. }))
        ));
        let mut other = bytes.clone();
        other[4..6].copy_from_slice(&0x8014u16.to_be_bytes()); // TPM_ST_ATTEST_CERTIFY
        assert_eq!(
            Attest::parse(&other),
            Err(ParseError::AttestType { found: 0x8014 })
        );
        // safe is TPMI_YES_NO: only 0 or 1.
        let safe_at = 6 + 2 + 34 + 2 + 5 + 8 + 4 + 4;
        assert_eq!(bytes[safe_at], 1);
        let mut bad = bytes.clone();
        bad[safe_at] = 2;
        assert_eq!(
            Attest::parse(&bad),
            Err(ParseError::Value {
                what: "TPMS_CLOCK_INFO.safe",
                value: 2
            })
        );
        // An unknown bank in the selection.
        let bank_at = safe_at + 1 + 8 + 4;
        let mut bad = bytes.clone();
        bad[bank_at..bank_at + 2].copy_from_slice(&0x0012u16.to_be_bytes());
        assert!(matches!(
            Attest::parse(&bad),
            Err(ParseError::Algorithm { alg: 0x0012, .. })
        ));
        // An oversized extraData.
        let mut a = sample_attest();
        a.extra_data = vec![0; MAX_DATA + 1];
        assert!(matches!(
            Attest::parse(&a.encode()),
            Err(ParseError::TooLarge { .. })
        ));
    }

    #[test]
    fn keys_round_trip_and_names_hash_the_public_area() {
        for key in [SoftKey::ecc(), SoftKey::rsa(false)] {
            let public = key.public();
            let tpm2b = public.encode_tpm2b();
            assert_eq!(Public::parse(&tpm2b), Ok(public.clone()));
            let name = public.name();
            assert_eq!(&name[..2], &[0x00, 0x0b]);
            assert_eq!(&name[2..], HashAlg::Sha256.hash(&tpm2b[2..]).as_slice());
            let mut long = tpm2b.clone();
            long.push(0);
            assert!(
                Public::parse(&long).is_err(),
                "trailing byte after TPM2B_PUBLIC"
            );
            assert!(Public::parse(&tpm2b[..tpm2b.len() - 1]).is_err());
        }
        // A keyedhash object is not a key this crate reads.
        let mut body = SoftKey::ecc().public().encode();
        body[..2].copy_from_slice(&0x0008u16.to_be_bytes());
        assert_eq!(
            Public::parse_tpmt(&body),
            Err(ParseError::Algorithm {
                what: "TPMT_PUBLIC.type",
                alg: 0x0008
            })
        );
    }

    #[test]
    fn parses_a_tcg_default_ek_template() {
        // RSA-2048 EK, template L-1: AES-128-CFB, the PolicySecret(endorsement) authPolicy.
        let ek = Public {
            name_alg: HashAlg::Sha256,
            attributes: 0x0003_00b2,
            auth_policy: vec![0x83; 32],
            key: PublicKey::Rsa(RsaPublic {
                symmetric: Some(SymDef {
                    algorithm: alg::AES,
                    key_bits: 128,
                    mode: alg::CFB,
                }),
                scheme: AsymScheme::Null,
                key_bits: 2048,
                exponent: 0,
                modulus: vec![0xc5; 256],
            }),
        };
        let bytes = ek.encode_tpm2b();
        assert_eq!(bytes.len(), 2 + 2 + 2 + 4 + 34 + 6 + 2 + 2 + 4 + 258);
        assert_eq!(Public::parse(&bytes), Ok(ek));
    }

    #[test]
    fn signatures_verify_and_tampering_is_caught() {
        let msg = sample_attest().encode();
        for key in [SoftKey::ecc(), SoftKey::rsa(false), SoftKey::rsa(true)] {
            let public = key.public();
            let sig = key.sign(&msg);
            assert_eq!(Signature::parse(&sig.encode()), Ok(sig.clone()));
            assert_eq!(public.verify(&msg, &sig), Ok(()), "{}", sig.scheme_name());
            let mut forged = msg.clone();
            forged[10] ^= 1;
            assert_eq!(public.verify(&forged, &sig), Err(VerifyError::Invalid));
            let other = match key {
                SoftKey::Ecc(_) => SoftKey::ecc().public(),
                SoftKey::Rsa { .. } => SoftKey::ecc().public(),
            };
            assert!(other.verify(&msg, &sig).is_err());
        }
        let ecc = SoftKey::ecc();
        let Signature::Ecdsa { r, s, .. } = ecc.sign(&msg) else {
            unreachable!()
        };
        let sha1 = Signature::Ecdsa {
            hash: HashAlg::Sha1,
            r,
            s,
        };
        assert_eq!(
            ecc.public().verify(&msg, &sha1),
            Err(VerifyError::Hash(HashAlg::Sha1))
        );
        let rsa_sig = SoftKey::rsa(false).sign(&msg);
        assert_eq!(
            ecc.public().verify(&msg, &rsa_sig),
            Err(VerifyError::SchemeMismatch {
                scheme: "RSASSA",
                key: "an ecc"
            })
        );
    }

    #[test]
    fn signature_parser_refuses_other_schemes_and_junk() {
        assert_eq!(
            Signature::parse(&[0x00, 0x1a, 0x00, 0x0b]),
            Err(ParseError::Algorithm {
                what: "TPMT_SIGNATURE.sigAlg",
                alg: 0x001a
            })
        );
        assert!(Signature::parse(&[0x00, 0x14, 0x00, 0x0b, 0x00, 0x02, 1]).is_err());
        let mut ok = SoftKey::ecc().sign(b"m").encode();
        ok.push(9);
        assert!(matches!(
            Signature::parse(&ok),
            Err(ParseError::Wire(WireError::Trailing { .. }))
        ));
    }

    fn arb_attest() -> impl Strategy<Value = Attest> {
        (
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..=MAX_NAME),
            proptest::collection::vec(any::<u8>(), 0..=MAX_DATA),
            (any::<u64>(), any::<u32>(), any::<u32>(), any::<bool>()),
            any::<u64>(),
            proptest::collection::vec(
                (
                    proptest::sample::select(HashAlg::ALL.to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..=4),
                ),
                0..4,
            ),
            proptest::collection::vec(any::<u8>(), 0..=MAX_DIGEST),
        )
            .prop_map(|(magic, signer, extra, c, fw, sel, digest)| Attest {
                magic,
                qualified_signer: signer,
                extra_data: extra,
                clock_info: ClockInfo {
                    clock: c.0,
                    reset_count: c.1,
                    restart_count: c.2,
                    safe: c.3,
                },
                firmware_version: fw,
                quote: QuoteInfo {
                    pcr_select: sel
                        .into_iter()
                        .map(|(hash, select)| PcrSelection { hash, select })
                        .collect(),
                    pcr_digest: digest,
                },
            })
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Attest::parse(&bytes);
            let _ = Signature::parse(&bytes);
            let _ = Public::parse(&bytes);
            let _ = Public::parse_tpmt(&bytes);
            let _ = peek_header(&bytes);
        }

        #[test]
        fn attest_encode_parse_round_trips(a in arb_attest()) {
            let bytes = a.encode();
            prop_assert_eq!(Attest::parse(&bytes), Ok(a));
        }

        #[test]
        fn mutated_structures_never_panic_and_stay_canonical(
            which in 0usize..3,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in any::<usize>(),
        ) {
            let mut bytes = match which {
                0 => sample_attest().encode(),
                1 => SoftKey::rsa(false).public().encode_tpm2b(),
                _ => SoftKey::rsa(true).sign(b"m").encode(),
            };
            for (at, v) in edits {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            bytes.truncate(bytes.len() - cut % 3);
            match which {
                0 => if let Ok(a) = Attest::parse(&bytes) { prop_assert_eq!(a.encode(), bytes) },
                1 => if let Ok(p) = Public::parse(&bytes) { prop_assert_eq!(p.encode_tpm2b(), bytes) },
                _ => if let Ok(s) = Signature::parse(&bytes) { prop_assert_eq!(s.encode(), bytes) },
            }
        }
    }
}
