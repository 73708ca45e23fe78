//! Strict X.509 parsing and chain verification for TPM endorsement-key (EK)
//! certificates.
//!
//! During host registration the control plane checks a TPM's EK certificate
//! against the configured TPM vendor CA certificates. EK certificates (TCG EK
//! Credential Profile) are unusual enough that general-purpose WebPKI
//! verifiers reject some of them: an empty subject, a critical
//! SubjectAltName holding a `directoryName` (TPM manufacturer, model and
//! version), the EK extended key usage `2.23.133.8.1`, key usage
//! `keyEncipherment` only. So this module parses certificates itself, with the
//! crate's strict DER reader, and verifies signatures with `ring`.
//!
//! # What is checked
//!
//! * Structure: DER only (definite minimal lengths, no trailing data at any
//!   level; an explicitly encoded v1 version is tolerated), X.509 v1–v3, `tbsCertificate.signature` identical to
//!   `signatureAlgorithm`, well-formed names, OIDs, times and public keys,
//!   well-formed extensions, no extension twice.
//! * Signatures: RSA PKCS#1 v1.5 with SHA-256/384/512, RSA-PSS with
//!   SHA-256/384/512 (MGF1 with the same hash, salt length = hash length),
//!   ECDSA with SHA-256/384 on P-256 and P-384. Issuer RSA keys must be
//!   2048–8192 bits. Anything else is [`X509Error::UnsupportedAlgorithm`].
//! * Issuers: the issuer name must equal the issuer certificate's subject,
//!   byte for byte or after RFC 5280 §7.1-style normalization (string types,
//!   case and whitespace; some EK certificates encode their issuer name
//!   differently from the CA's subject); the issuer must have
//!   basicConstraints `cA=TRUE`, a keyUsage (if present) with `keyCertSign`,
//!   and a pathLenConstraint (if present) not exceeded by the intermediates
//!   below it. The issuer's key must verify the signature over the
//!   `tbsCertificate` bytes exactly as received.
//! * Validity: every certificate of the chain, the anchor included, must be
//!   valid at `now` (notBefore ≤ now ≤ notAfter, UTCTime or GeneralizedTime).
//!
//! # What is deliberately not checked
//!
//! Extensions other than basicConstraints and keyUsage are **ignored, even
//! when marked critical**: EK certificates carry critical extensions (the
//! SubjectAltName `directoryName`, TCG-specific ones) that a generic
//! verifier does not understand, and all we need from them is the chain and
//! the key. Names, EKUs, name constraints, policies and revocation are not
//! evaluated; the leaf's own basicConstraints and keyUsage are not
//! evaluated. Unknown signature, key and curve algorithms still parse (an
//! anchor or a leaf may use them); they fail only when a signature must be
//! verified with them. Callers that need more must check it themselves.
//!
//! A trust anchor is trusted as configured: it may be self-signed or not, and
//! its own signature is never checked (but it must be a CA and be valid at
//! `now`, because it signs the certificate below it).

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

use crate::der::{self, DerError, Reader};

/// Largest certificate accepted, in DER bytes.
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;
/// Largest PEM bundle accepted, in bytes.
pub const MAX_PEM_BYTES: usize = 1024 * 1024;
/// Most certificates a chain may have above the leaf (intermediates plus the
/// anchor); a verified chain has at most `MAX_CHAIN_DEPTH + 1` certificates.
pub const MAX_CHAIN_DEPTH: usize = 4;
/// Most signature checks one [`verify_chain`] call performs before giving
/// up, which bounds the work an untrusted set of intermediates can cause.
pub const MAX_SIGNATURE_CHECKS: usize = 32;
/// Longest name summary, in characters, before it is cut short.
const MAX_SUMMARY_CHARS: usize = 256;

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

const TAG_CONTEXT_1_PRIMITIVE: u8 = 0x81;
const TAG_CONTEXT_2_PRIMITIVE: u8 = 0x82;
const TAG_CONTEXT_1: u8 = 0xA1;
const TAG_CONTEXT_2: u8 = 0xA2;
const TAG_CONTEXT_3: u8 = 0xA3;

// Algorithm OIDs (DER contents).
const OID_RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
const OID_MGF1: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x08];
const OID_RSASSA_PSS: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0A];
const OID_SHA256_WITH_RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0B];
const OID_SHA384_WITH_RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0C];
const OID_SHA512_WITH_RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0D];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x22];
const OID_ECDSA_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];
const OID_ECDSA_SHA384: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
// Extension OIDs.
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1D, 0x0F];
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1D, 0x13];
/// keyUsage bit 5.
const KEY_USAGE_KEY_CERT_SIGN: usize = 5;

/// Short names for the attribute types in name summaries.
const ATTRIBUTE_NAMES: &[(&[u8], &str)] = &[
    (&[0x55, 0x04, 0x03], "CN"),
    (&[0x55, 0x04, 0x05], "serialNumber"),
    (&[0x55, 0x04, 0x06], "C"),
    (&[0x55, 0x04, 0x07], "L"),
    (&[0x55, 0x04, 0x08], "ST"),
    (&[0x55, 0x04, 0x0A], "O"),
    (&[0x55, 0x04, 0x0B], "OU"),
    (
        &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01],
        "emailAddress",
    ),
    (&[0x67, 0x81, 0x05, 0x02, 0x01], "TPMManufacturer"),
    (&[0x67, 0x81, 0x05, 0x02, 0x02], "TPMModel"),
    (&[0x67, 0x81, 0x05, 0x02, 0x03], "TPMVersion"),
];

/// Errors from certificate parsing and chain verification. `subject` and
/// `issuer` fields are name summaries (see [`Certificate::subject_summary`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum X509Error {
    /// The PEM text is not a bundle of `CERTIFICATE` blocks.
    #[error("certificate pem is invalid: {0}")]
    Pem(String),
    /// The DER is not a well-formed certificate; says where.
    #[error("certificate is malformed: {0}")]
    Malformed(String),
    /// A signature, public-key or curve algorithm this module does not
    /// support, as a dotted OID (with a note when the OID itself is fine but
    /// its parameters are not).
    #[error("algorithm {0} is not supported")]
    UnsupportedAlgorithm(String),
    /// The issuer's key is of a supported type but not usable, e.g. an RSA
    /// key outside 2048–8192 bits.
    #[error("the key of {subject} is not supported: {reason}")]
    UnsupportedKey { subject: String, reason: String },
    /// The signature algorithm does not fit the issuer's key type.
    #[error("the key of {subject} cannot verify {algorithm} signatures")]
    KeyMismatch { subject: String, algorithm: String },
    /// The certificate's issuer name is not the candidate issuer's subject.
    #[error("{subject} was issued by {issuer}, not by {candidate}")]
    IssuerMismatch {
        subject: String,
        issuer: String,
        candidate: String,
    },
    /// The signature does not verify with the issuer's key.
    #[error("the signature on {subject} does not verify")]
    BadSignature { subject: String },
    /// A certificate used as an issuer lacks basicConstraints `cA=TRUE`.
    #[error("{subject} is not a CA certificate (basicConstraints cA is not set)")]
    NotCa { subject: String },
    /// A certificate used as an issuer has a keyUsage without `keyCertSign`.
    #[error("{subject} may not sign certificates (its keyUsage lacks keyCertSign)")]
    NotCertSigner { subject: String },
    /// More intermediates below a CA than its pathLenConstraint allows.
    #[error("{subject} allows at most {max} intermediate CAs below it")]
    PathLenExceeded { subject: String, max: u32 },
    /// The certificate's notAfter is before `now`.
    #[error("{subject} expired at {not_after} (unix seconds)")]
    Expired { subject: String, not_after: i64 },
    /// The certificate's notBefore is after `now`.
    #[error("{subject} is not valid before {not_before} (unix seconds)")]
    NotYetValid { subject: String, not_before: i64 },
    /// Neither an anchor nor an unused intermediate has the issuer's name.
    #[error("no trust anchor or intermediate certificate is named {issuer}")]
    NoPathToAnchor { issuer: String },
    /// Every path found needs more than [`MAX_CHAIN_DEPTH`] certificates
    /// above the leaf.
    #[error("no chain of at most {max} certificates above the leaf reaches a trust anchor")]
    ChainTooLong { max: usize },
    /// Chain building gave up after [`MAX_SIGNATURE_CHECKS`] signature checks.
    #[error("chain building gave up after {max} signature checks")]
    SearchLimit { max: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "SHA-256",
            Hash::Sha384 => "SHA-384",
            Hash::Sha512 => "SHA-512",
        }
    }

    fn len(self) -> u32 {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SignatureAlgorithm {
    RsaPkcs1(Hash),
    RsaPss(Hash),
    /// Only SHA-256 and SHA-384 are parsed into this.
    Ecdsa(Hash),
    /// Dotted OID, possibly with a note.
    Unsupported(String),
}

impl SignatureAlgorithm {
    fn name(&self) -> String {
        match self {
            SignatureAlgorithm::RsaPkcs1(h) => format!("RSA PKCS#1 v1.5 {}", h.name()),
            SignatureAlgorithm::RsaPss(h) => format!("RSA-PSS {}", h.name()),
            SignatureAlgorithm::Ecdsa(h) => format!("ECDSA {}", h.name()),
            SignatureAlgorithm::Unsupported(oid) => oid.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PublicKey {
    Rsa {
        /// `RSAPublicKey` DER, as ring expects it.
        der: Vec<u8>,
        modulus: Vec<u8>,
        exponent: Vec<u8>,
    },
    /// Uncompressed point.
    EcP256(Vec<u8>),
    /// Uncompressed point.
    EcP384(Vec<u8>),
    /// Dotted OID of the key or curve algorithm, possibly with a note.
    Unsupported(String),
}

/// A parsed X.509 certificate. Owns its DER; cheap accessors.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    der: Vec<u8>,
    /// The whole `tbsCertificate` element: the signed bytes.
    tbs: Vec<u8>,
    issuer: Vec<u8>,
    subject: Vec<u8>,
    spki: Vec<u8>,
    not_before: i64,
    not_after: i64,
    signature_algorithm: SignatureAlgorithm,
    signature: Vec<u8>,
    public_key: PublicKey,
    ca: bool,
    path_len: Option<u32>,
    /// `None` without a keyUsage extension.
    key_cert_sign: Option<bool>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject_summary())
            .field("issuer", &name_summary(&self.issuer))
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Parses one DER certificate. See the module docs for what is required.
    pub fn from_der(der: &[u8]) -> Result<Certificate, X509Error> {
        if der.len() > MAX_CERTIFICATE_BYTES {
            return Err(X509Error::Malformed(format!(
                "certificate is larger than {MAX_CERTIFICATE_BYTES} bytes"
            )));
        }
        let mut top = Reader::new(der);
        let certificate = top.expect(der::TAG_SEQUENCE).map_err(at("Certificate"))?;
        top.finish().map_err(at("data after the Certificate"))?;

        let mut cert = Reader::new(certificate);
        let (tbs_value, tbs) = element(&mut cert, der::TAG_SEQUENCE, "tbsCertificate")?;
        let (algorithm_value, algorithm) =
            element(&mut cert, der::TAG_SEQUENCE, "signatureAlgorithm")?;
        let signature = cert
            .expect(der::TAG_BIT_STRING)
            .map_err(at("signatureValue"))?;
        cert.finish()
            .map_err(at("Certificate: data after signatureValue"))?;
        let signature = match signature {
            [0, bytes @ ..] => bytes,
            _ => return Err(malformed("signatureValue: unused bits")),
        };
        let signature_algorithm = parse_signature_algorithm(algorithm_value)?;

        let mut tbs_reader = Reader::new(tbs_value);
        let version = if tbs_reader.peek_tag() == Some(der::TAG_CONTEXT_0) {
            let mut version = Reader::new(
                tbs_reader
                    .expect(der::TAG_CONTEXT_0)
                    .map_err(at("tbsCertificate.version"))?,
            );
            let value = version
                .expect(der::TAG_INTEGER)
                .map_err(at("tbsCertificate.version"))?;
            version.finish().map_err(at("tbsCertificate.version"))?;
            // v1 should not be encoded explicitly (DEFAULT); tolerated.
            match value {
                [v @ 0..=2] => *v,
                _ => return Err(malformed("tbsCertificate.version: not v1, v2 or v3")),
            }
        } else {
            0
        };
        let serial = tbs_reader
            .expect(der::TAG_INTEGER)
            .map_err(at("tbsCertificate.serialNumber"))?;
        check_integer(serial).map_err(at("tbsCertificate.serialNumber"))?;
        let (_, inner_algorithm) = element(
            &mut tbs_reader,
            der::TAG_SEQUENCE,
            "tbsCertificate.signature",
        )?;
        if inner_algorithm != algorithm {
            return Err(malformed(
                "tbsCertificate.signature differs from signatureAlgorithm",
            ));
        }
        let (issuer_value, issuer) =
            element(&mut tbs_reader, der::TAG_SEQUENCE, "tbsCertificate.issuer")?;
        check_name(issuer_value).map_err(at("tbsCertificate.issuer"))?;
        let validity = tbs_reader
            .expect(der::TAG_SEQUENCE)
            .map_err(at("tbsCertificate.validity"))?;
        let (not_before, not_after) = parse_validity(validity)?;
        let (subject_value, subject) =
            element(&mut tbs_reader, der::TAG_SEQUENCE, "tbsCertificate.subject")?;
        check_name(subject_value).map_err(at("tbsCertificate.subject"))?;
        let (spki_value, spki) = element(
            &mut tbs_reader,
            der::TAG_SEQUENCE,
            "tbsCertificate.subjectPublicKeyInfo",
        )?;
        let public_key = parse_spki(spki_value)?;

        // issuerUniqueID [1] and subjectUniqueID [2] (v2, v3), then
        // extensions [3] (v3), each at most once and in that order.
        let mut extensions = Extensions::default();
        let mut last = 0u8;
        while !tbs_reader.is_empty() {
            let (tag, value) = tbs_reader
                .read()
                .map_err(at("tbsCertificate: field after subjectPublicKeyInfo"))?;
            let (position, min_version) = match tag {
                TAG_CONTEXT_1_PRIMITIVE | TAG_CONTEXT_1 => (1, 1),
                TAG_CONTEXT_2_PRIMITIVE | TAG_CONTEXT_2 => (2, 1),
                TAG_CONTEXT_3 => (3, 2),
                _ => {
                    return Err(malformed(
                        "tbsCertificate: unexpected field after subjectPublicKeyInfo",
                    ));
                }
            };
            if position <= last {
                return Err(malformed(
                    "tbsCertificate: unique identifiers or extensions repeated or out of order",
                ));
            }
            if version < min_version {
                return Err(malformed(
                    "tbsCertificate: field not allowed in this certificate version",
                ));
            }
            last = position;
            if tag == TAG_CONTEXT_3 {
                extensions = parse_extensions(value)?;
            }
        }

        Ok(Certificate {
            der: der.to_vec(),
            tbs: tbs.to_vec(),
            issuer: issuer.to_vec(),
            subject: subject.to_vec(),
            spki: spki.to_vec(),
            not_before,
            not_after,
            signature_algorithm,
            signature: signature.to_vec(),
            public_key,
            ca: extensions.ca,
            path_len: extensions.path_len,
            key_cert_sign: extensions.key_cert_sign,
        })
    }

    /// Parses every `CERTIFICATE` block of a PEM bundle (RFC 7468), in
    /// order. Text outside the blocks and blocks with other labels are
    /// ignored; a bundle without any `CERTIFICATE` block is an error.
    pub fn from_pem_bundle(pem: &str) -> Result<Vec<Certificate>, X509Error> {
        use base64::Engine as _;
        if pem.len() > MAX_PEM_BYTES {
            return Err(X509Error::Pem(format!(
                "bundle is larger than {MAX_PEM_BYTES} bytes"
            )));
        }
        let mut certificates = Vec::new();
        let mut rest = pem;
        while let Some(start) = rest.find(PEM_BEGIN) {
            let number = certificates.len() + 1;
            let after_begin = rest
                .get(start + PEM_BEGIN.len()..)
                .ok_or_else(|| X509Error::Pem(format!("block {number}: truncated")))?;
            let body_len = after_begin.find(PEM_END).ok_or_else(|| {
                X509Error::Pem(format!("block {number}: no END CERTIFICATE line"))
            })?;
            let body = after_begin
                .get(..body_len)
                .ok_or_else(|| X509Error::Pem(format!("block {number}: truncated")))?;
            if body.contains("-----") {
                return Err(X509Error::Pem(format!(
                    "block {number}: another boundary before END CERTIFICATE"
                )));
            }
            let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| X509Error::Pem(format!("block {number}: invalid base64")))?;
            let certificate = Certificate::from_der(&der).map_err(|e| match e {
                X509Error::Malformed(location) => {
                    X509Error::Malformed(format!("pem block {number}: {location}"))
                }
                other => other,
            })?;
            certificates.push(certificate);
            rest = after_begin
                .get(body_len + PEM_END.len()..)
                .ok_or_else(|| X509Error::Pem(format!("block {number}: truncated")))?;
        }
        if certificates.is_empty() {
            return Err(X509Error::Pem("no CERTIFICATE block".to_owned()));
        }
        Ok(certificates)
    }

    /// The whole certificate DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject `Name` element (tag and length included); an empty
    /// subject is `[0x30, 0x00]`.
    pub fn subject_der(&self) -> &[u8] {
        &self.subject
    }

    /// The issuer `Name` element (tag and length included).
    pub fn issuer_der(&self) -> &[u8] {
        &self.issuer
    }

    /// notBefore, in unix seconds.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    /// notAfter (inclusive), in unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// Whether basicConstraints has `cA=TRUE`.
    pub fn is_ca(&self) -> bool {
        self.ca
    }

    /// The RSA public key as (modulus, public exponent), big-endian without
    /// leading zero bytes; `None` for other key types.
    pub fn rsa_public_key(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match &self.public_key {
            PublicKey::Rsa {
                modulus, exponent, ..
            } => Some((modulus.clone(), exponent.clone())),
            _ => None,
        }
    }

    /// The `SubjectPublicKeyInfo` element (tag and length included).
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// A best-effort, human-readable subject for messages, in RFC 4514
    /// order (`CN=…, O=…, C=…`); `(empty)` for an empty subject. Not for
    /// comparisons: compare [`Certificate::subject_der`].
    pub fn subject_summary(&self) -> String {
        name_summary(&self.subject)
    }

    /// Checks that `issuer` issued this certificate: this certificate's
    /// issuer name equals `issuer`'s subject, `issuer` is a CA allowed to
    /// sign certificates, and the signature over the `tbsCertificate`
    /// verifies with `issuer`'s key. Validity and path length are checked by
    /// [`verify_chain`], not here.
    pub fn verify_signed_by(&self, issuer: &Certificate) -> Result<(), X509Error> {
        if !names_match(&self.issuer, &issuer.subject) {
            return Err(X509Error::IssuerMismatch {
                subject: self.subject_summary(),
                issuer: name_summary(&self.issuer),
                candidate: issuer.subject_summary(),
            });
        }
        if !issuer.ca {
            return Err(X509Error::NotCa {
                subject: issuer.subject_summary(),
            });
        }
        if issuer.key_cert_sign == Some(false) {
            return Err(X509Error::NotCertSigner {
                subject: issuer.subject_summary(),
            });
        }
        let (algorithm, key) = verification_algorithm(&self.signature_algorithm, issuer)?;
        UnparsedPublicKey::new(algorithm, key)
            .verify(&self.tbs, &self.signature)
            .map_err(|_| X509Error::BadSignature {
                subject: self.subject_summary(),
            })
    }
}

/// Builds a chain from `leaf` through `intermediates` (any order, each used
/// at most once) to one of `anchors`, checking every signature, CA flag,
/// keyUsage, pathLenConstraint and validity at `now` (unix seconds), with at
/// most [`MAX_CHAIN_DEPTH`] certificates above the leaf. Anchors are
/// preferred over intermediates at every step; an anchor is trusted as
/// configured (self-signed or not). Returns the chain, leaf first and anchor
/// last.
///
/// When no chain verifies, the error is the most specific failure met
/// (a bad signature, a non-CA issuer, an expired certificate, …), else
/// [`X509Error::ChainTooLong`], else [`X509Error::NoPathToAnchor`] naming
/// the issuer that could not be found.
pub fn verify_chain<'a>(
    leaf: &'a Certificate,
    intermediates: &'a [Certificate],
    anchors: &'a [Certificate],
    now: i64,
) -> Result<Vec<&'a Certificate>, X509Error> {
    check_validity(leaf, now)?;
    let mut search = Search {
        intermediates,
        anchors,
        now,
        checks_left: MAX_SIGNATURE_CHECKS,
        error: None,
    };
    let mut chain = vec![leaf];
    let mut used = vec![false; intermediates.len()];
    if search.extend(&mut chain, &mut used)? {
        return Ok(chain);
    }
    Err(search.error.unwrap_or_else(|| X509Error::NoPathToAnchor {
        issuer: name_summary(&leaf.issuer),
    }))
}

struct Search<'a> {
    intermediates: &'a [Certificate],
    anchors: &'a [Certificate],
    now: i64,
    checks_left: usize,
    /// The most specific failure so far.
    error: Option<X509Error>,
}

impl<'a> Search<'a> {
    /// Depth-first search for an issuer of the last certificate of `chain`,
    /// then of that issuer, up to an anchor. On success `chain` ends with the
    /// anchor. `Err` aborts the whole search.
    fn extend(
        &mut self,
        chain: &mut Vec<&'a Certificate>,
        used: &mut [bool],
    ) -> Result<bool, X509Error> {
        let Some(&current) = chain.last() else {
            return Ok(false);
        };
        if chain.len() > MAX_CHAIN_DEPTH {
            self.note(X509Error::ChainTooLong {
                max: MAX_CHAIN_DEPTH,
            });
            return Ok(false);
        }
        // Intermediate CAs below the next issuer (the leaf does not count).
        let below = chain.len() - 1;
        let mut named = false;
        for anchor in self
            .anchors
            .iter()
            .filter(|a| names_match(&a.subject, &current.issuer))
        {
            named = true;
            match self.try_issuer(current, anchor, below)? {
                Ok(()) => {
                    chain.push(anchor);
                    return Ok(true);
                }
                Err(e) => self.note(e),
            }
        }
        for (index, candidate) in self.intermediates.iter().enumerate() {
            if used.get(index) != Some(&false) || !names_match(&candidate.subject, &current.issuer)
            {
                continue;
            }
            named = true;
            if let Err(e) = self.try_issuer(current, candidate, below)? {
                self.note(e);
                continue;
            }
            set(used, index, true);
            chain.push(candidate);
            if self.extend(chain, used)? {
                return Ok(true);
            }
            chain.pop();
            set(used, index, false);
        }
        if !named {
            self.note(X509Error::NoPathToAnchor {
                issuer: name_summary(&current.issuer),
            });
        }
        Ok(false)
    }

    /// The outer `Err` aborts the search; the inner one rejects `issuer`.
    fn try_issuer(
        &mut self,
        certificate: &Certificate,
        issuer: &Certificate,
        below: usize,
    ) -> Result<Result<(), X509Error>, X509Error> {
        if self.checks_left == 0 {
            return Err(X509Error::SearchLimit {
                max: MAX_SIGNATURE_CHECKS,
            });
        }
        self.checks_left -= 1;
        Ok(check_issuer(certificate, issuer, below, self.now))
    }

    fn note(&mut self, error: X509Error) {
        fn rank(e: &X509Error) -> u8 {
            match e {
                X509Error::NoPathToAnchor { .. } => 0,
                X509Error::ChainTooLong { .. } => 1,
                _ => 2,
            }
        }
        if self
            .error
            .as_ref()
            .is_none_or(|old| rank(&error) > rank(old))
        {
            self.error = Some(error);
        }
    }
}

fn set(used: &mut [bool], index: usize, value: bool) {
    if let Some(slot) = used.get_mut(index) {
        *slot = value;
    }
}

fn check_issuer(
    certificate: &Certificate,
    issuer: &Certificate,
    below: usize,
    now: i64,
) -> Result<(), X509Error> {
    certificate.verify_signed_by(issuer)?;
    check_validity(issuer, now)?;
    if let Some(max) = issuer.path_len
        && u64::try_from(below).unwrap_or(u64::MAX) > u64::from(max)
    {
        return Err(X509Error::PathLenExceeded {
            subject: issuer.subject_summary(),
            max,
        });
    }
    Ok(())
}

fn check_validity(certificate: &Certificate, now: i64) -> Result<(), X509Error> {
    if now < certificate.not_before {
        return Err(X509Error::NotYetValid {
            subject: certificate.subject_summary(),
            not_before: certificate.not_before,
        });
    }
    if now > certificate.not_after {
        return Err(X509Error::Expired {
            subject: certificate.subject_summary(),
            not_after: certificate.not_after,
        });
    }
    Ok(())
}

fn verification_algorithm<'k>(
    algorithm: &SignatureAlgorithm,
    issuer: &'k Certificate,
) -> Result<(&'static dyn VerificationAlgorithm, &'k [u8]), X509Error> {
    let mismatch = || X509Error::KeyMismatch {
        subject: issuer.subject_summary(),
        algorithm: algorithm.name(),
    };
    match (&issuer.public_key, algorithm) {
        (_, SignatureAlgorithm::Unsupported(oid)) | (PublicKey::Unsupported(oid), _) => {
            Err(X509Error::UnsupportedAlgorithm(oid.clone()))
        }
        (PublicKey::Rsa { der, modulus, .. }, _) => {
            // ring accepts 2048..=8192-bit moduli; say so instead of failing
            // the signature.
            if !(256..=1024).contains(&modulus.len()) {
                return Err(X509Error::UnsupportedKey {
                    subject: issuer.subject_summary(),
                    reason: format!(
                        "RSA modulus of {} bits, not 2048 to 8192",
                        bit_length(modulus)
                    ),
                });
            }
            let algorithm: &'static dyn VerificationAlgorithm = match algorithm {
                SignatureAlgorithm::RsaPkcs1(Hash::Sha256) => {
                    &signature::RSA_PKCS1_2048_8192_SHA256
                }
                SignatureAlgorithm::RsaPkcs1(Hash::Sha384) => {
                    &signature::RSA_PKCS1_2048_8192_SHA384
                }
                SignatureAlgorithm::RsaPkcs1(Hash::Sha512) => {
                    &signature::RSA_PKCS1_2048_8192_SHA512
                }
                SignatureAlgorithm::RsaPss(Hash::Sha256) => &signature::RSA_PSS_2048_8192_SHA256,
                SignatureAlgorithm::RsaPss(Hash::Sha384) => &signature::RSA_PSS_2048_8192_SHA384,
                SignatureAlgorithm::RsaPss(Hash::Sha512) => &signature::RSA_PSS_2048_8192_SHA512,
                _ => return Err(mismatch()),
            };
            Ok((algorithm, der))
        }
        (PublicKey::EcP256(point), SignatureAlgorithm::Ecdsa(Hash::Sha256)) => {
            Ok((&signature::ECDSA_P256_SHA256_ASN1, point))
        }
        (PublicKey::EcP256(point), SignatureAlgorithm::Ecdsa(Hash::Sha384)) => {
            Ok((&signature::ECDSA_P256_SHA384_ASN1, point))
        }
        (PublicKey::EcP384(point), SignatureAlgorithm::Ecdsa(Hash::Sha256)) => {
            Ok((&signature::ECDSA_P384_SHA256_ASN1, point))
        }
        (PublicKey::EcP384(point), SignatureAlgorithm::Ecdsa(Hash::Sha384)) => {
            Ok((&signature::ECDSA_P384_SHA384_ASN1, point))
        }
        _ => Err(mismatch()),
    }
}

fn bit_length(magnitude: &[u8]) -> usize {
    match magnitude.first() {
        Some(&first) => magnitude.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

#[derive(Default)]
struct Extensions {
    ca: bool,
    path_len: Option<u32>,
    key_cert_sign: Option<bool>,
}

/// `[3] EXPLICIT SEQUENCE SIZE (1..MAX) OF Extension`.
fn parse_extensions(explicit: &[u8]) -> Result<Extensions, X509Error> {
    let mut outer = Reader::new(explicit);
    let mut list = Reader::new(outer.expect(der::TAG_SEQUENCE).map_err(at("extensions"))?);
    outer.finish().map_err(at("extensions"))?;
    if list.is_empty() {
        return Err(malformed("extensions: empty"));
    }
    let mut out = Extensions::default();
    let mut seen: Vec<&[u8]> = Vec::new();
    while !list.is_empty() {
        let mut extension = Reader::new(list.expect(der::TAG_SEQUENCE).map_err(at("extension"))?);
        let oid = extension
            .expect(der::TAG_OID)
            .map_err(at("extension.extnID"))?;
        check_oid(oid).map_err(at("extension.extnID"))?;
        if extension.peek_tag() == Some(der::TAG_BOOLEAN) {
            // Criticality is ignored: see the module docs.
            let critical = extension
                .expect(der::TAG_BOOLEAN)
                .map_err(at("extension.critical"))?;
            boolean(critical).map_err(at("extension.critical"))?;
        }
        let value = extension
            .expect(der::TAG_OCTET_STRING)
            .map_err(at("extension.extnValue"))?;
        extension.finish().map_err(at("extension"))?;
        if seen.contains(&oid) {
            return Err(X509Error::Malformed(format!(
                "extensions: {} appears twice",
                dotted(oid)
            )));
        }
        seen.push(oid);
        if oid == OID_BASIC_CONSTRAINTS {
            let (ca, path_len) = parse_basic_constraints(value).map_err(at("basicConstraints"))?;
            out.ca = ca;
            out.path_len = path_len;
        } else if oid == OID_KEY_USAGE {
            out.key_cert_sign =
                Some(bit_string_bit(value, KEY_USAGE_KEY_CERT_SIGN).map_err(at("keyUsage"))?);
        }
    }
    Ok(out)
}

/// `SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER (0..MAX) OPTIONAL }`.
fn parse_basic_constraints(value: &[u8]) -> Result<(bool, Option<u32>), DerError> {
    let mut outer = Reader::new(value);
    let mut seq = Reader::new(outer.expect(der::TAG_SEQUENCE)?);
    outer.finish()?;
    let ca = if seq.peek_tag() == Some(der::TAG_BOOLEAN) {
        boolean(seq.expect(der::TAG_BOOLEAN)?)?
    } else {
        false
    };
    let path_len = if seq.is_empty() {
        None
    } else {
        Some(small_unsigned(seq.expect(der::TAG_INTEGER)?)?)
    };
    seq.finish()?;
    Ok((ca, path_len))
}

/// Whether bit `bit` (0 = most significant of the first byte) of the DER
/// `BIT STRING` in `value` is set.
fn bit_string_bit(value: &[u8], bit: usize) -> Result<bool, DerError> {
    let mut outer = Reader::new(value);
    let bits = outer.expect(der::TAG_BIT_STRING)?;
    outer.finish()?;
    let (&unused, bytes) = bits.split_first().ok_or(DerError)?;
    if unused > 7 || (bytes.is_empty() && unused != 0) {
        return Err(DerError);
    }
    Ok(bytes
        .get(bit / 8)
        .is_some_and(|byte| byte & (0x80 >> (bit % 8)) != 0))
}

fn boolean(value: &[u8]) -> Result<bool, DerError> {
    match value {
        [0x00] => Ok(false),
        [0xFF] => Ok(true),
        _ => Err(DerError),
    }
}

/// A minimally encoded INTEGER in `0..=u32::MAX`.
fn small_unsigned(value: &[u8]) -> Result<u32, DerError> {
    check_integer(value)?;
    if value.first().is_some_and(|b| b & 0x80 != 0) {
        return Err(DerError);
    }
    let magnitude = match value {
        [0, rest @ ..] => rest,
        _ => value,
    };
    if magnitude.len() > 4 {
        return Err(DerError);
    }
    Ok(magnitude
        .iter()
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
}

/// A non-empty, minimally encoded INTEGER of any sign.
fn check_integer(value: &[u8]) -> Result<(), DerError> {
    match value {
        [] => Err(DerError),
        [0x00, next, ..] if next & 0x80 == 0 => Err(DerError),
        [0xFF, next, ..] if next & 0x80 != 0 => Err(DerError),
        _ => Ok(()),
    }
}

/// A non-empty OBJECT IDENTIFIER with minimally encoded arcs.
fn check_oid(oid: &[u8]) -> Result<(), DerError> {
    let Some(&last) = oid.last() else {
        return Err(DerError);
    };
    if last & 0x80 != 0 {
        return Err(DerError);
    }
    let mut arc_start = true;
    for &b in oid {
        if arc_start && b == 0x80 {
            return Err(DerError);
        }
        arc_start = b & 0x80 == 0;
    }
    Ok(())
}

/// The dotted form of an OID; hex when it is not a well-formed OID.
fn dotted(oid: &[u8]) -> String {
    let fallback = || {
        let hex: String = oid.iter().map(|b| format!("{b:02x}")).collect();
        format!("(invalid oid {hex})")
    };
    if check_oid(oid).is_err() {
        return fallback();
    }
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for &b in oid {
        if acc > u64::MAX >> 7 {
            return fallback();
        }
        acc = (acc << 7) | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            arcs.push(acc);
            acc = 0;
        }
    }
    let Some((&first, rest)) = arcs.split_first() else {
        return fallback();
    };
    let (a, b) = match first {
        0..40 => (0, first),
        40..80 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut out = format!("{a}.{b}");
    for arc in rest {
        out.push('.');
        out.push_str(&arc.to_string());
    }
    out
}

/// `AlgorithmIdentifier` contents of a signature algorithm. Unknown
/// algorithms parse (their parameters unchecked) so that a certificate with
/// one can still serve as an anchor or a leaf; verifying such a signature
/// fails.
fn parse_signature_algorithm(value: &[u8]) -> Result<SignatureAlgorithm, X509Error> {
    let mut alg = Reader::new(value);
    let oid = alg.expect(der::TAG_OID).map_err(at("signatureAlgorithm"))?;
    check_oid(oid).map_err(at("signatureAlgorithm"))?;
    let rsa = match oid {
        OID_SHA256_WITH_RSA => Some(Hash::Sha256),
        OID_SHA384_WITH_RSA => Some(Hash::Sha384),
        OID_SHA512_WITH_RSA => Some(Hash::Sha512),
        _ => None,
    };
    if let Some(hash) = rsa {
        // RFC 4055 requires NULL parameters; absent ones are tolerated.
        optional_null(&mut alg).map_err(at("signatureAlgorithm.parameters"))?;
        return Ok(SignatureAlgorithm::RsaPkcs1(hash));
    }
    let ecdsa = match oid {
        OID_ECDSA_SHA256 => Some(Hash::Sha256),
        OID_ECDSA_SHA384 => Some(Hash::Sha384),
        _ => None,
    };
    if let Some(hash) = ecdsa {
        // RFC 5758: parameters absent.
        alg.finish().map_err(at("signatureAlgorithm.parameters"))?;
        return Ok(SignatureAlgorithm::Ecdsa(hash));
    }
    if oid == OID_RSASSA_PSS {
        let params = alg
            .expect(der::TAG_SEQUENCE)
            .map_err(at("signatureAlgorithm.parameters"))?;
        alg.finish().map_err(at("signatureAlgorithm.parameters"))?;
        return parse_pss_params(params);
    }
    Ok(SignatureAlgorithm::Unsupported(dotted(oid)))
}

/// `RSASSA-PSS-params` (RFC 4055). Only SHA-2 with MGF1 of the same hash and
/// a salt as long as the hash is supported (what ring verifies); the SHA-1
/// defaults are not.
fn parse_pss_params(params: &[u8]) -> Result<SignatureAlgorithm, X509Error> {
    let unsupported = || {
        SignatureAlgorithm::Unsupported(format!(
            "{} (parameters other than SHA-2, MGF1 with the same hash and a salt of the hash length)",
            dotted(OID_RSASSA_PSS)
        ))
    };
    let location = at("RSASSA-PSS-params");
    let mut p = Reader::new(params);
    if p.peek_tag() != Some(der::TAG_CONTEXT_0) {
        return Ok(unsupported());
    }
    let mut hash_alg = Reader::new(p.expect(der::TAG_CONTEXT_0).map_err(&location)?);
    let hash = hash_algorithm(hash_alg.expect(der::TAG_SEQUENCE).map_err(&location)?)
        .map_err(&location)?;
    hash_alg.finish().map_err(&location)?;

    if p.peek_tag() != Some(TAG_CONTEXT_1) {
        return Ok(unsupported());
    }
    let mut mgf = Reader::new(p.expect(TAG_CONTEXT_1).map_err(&location)?);
    let mut mgf_alg = Reader::new(mgf.expect(der::TAG_SEQUENCE).map_err(&location)?);
    mgf.finish().map_err(&location)?;
    let mgf_oid = mgf_alg.expect(der::TAG_OID).map_err(&location)?;
    check_oid(mgf_oid).map_err(&location)?;
    let mgf_hash =
        hash_algorithm(mgf_alg.expect(der::TAG_SEQUENCE).map_err(&location)?).map_err(&location)?;
    mgf_alg.finish().map_err(&location)?;

    if p.peek_tag() != Some(TAG_CONTEXT_2) {
        return Ok(unsupported());
    }
    let mut salt = Reader::new(p.expect(TAG_CONTEXT_2).map_err(&location)?);
    let salt_len =
        small_unsigned(salt.expect(der::TAG_INTEGER).map_err(&location)?).map_err(&location)?;
    salt.finish().map_err(&location)?;

    if p.peek_tag() == Some(TAG_CONTEXT_3) {
        // trailerField: only trailerFieldBC (1), normally omitted as DEFAULT.
        let mut trailer = Reader::new(p.expect(TAG_CONTEXT_3).map_err(&location)?);
        let value = small_unsigned(trailer.expect(der::TAG_INTEGER).map_err(&location)?)
            .map_err(&location)?;
        trailer.finish().map_err(&location)?;
        if value != 1 {
            return Ok(unsupported());
        }
    }
    p.finish().map_err(&location)?;

    match (hash, mgf_hash) {
        (Some(hash), Some(mgf_hash))
            if mgf_oid == OID_MGF1 && mgf_hash == hash && salt_len == hash.len() =>
        {
            Ok(SignatureAlgorithm::RsaPss(hash))
        }
        _ => Ok(unsupported()),
    }
}

/// A hash `AlgorithmIdentifier`'s contents: SHA-256/384/512 with NULL or
/// absent parameters, `None` for other well-formed ones.
fn hash_algorithm(value: &[u8]) -> Result<Option<Hash>, DerError> {
    let mut alg = Reader::new(value);
    let oid = alg.expect(der::TAG_OID)?;
    check_oid(oid)?;
    let hash = match oid {
        OID_SHA256 => Hash::Sha256,
        OID_SHA384 => Hash::Sha384,
        OID_SHA512 => Hash::Sha512,
        _ => return Ok(None),
    };
    optional_null(&mut alg)?;
    Ok(Some(hash))
}

/// Consumes the rest of an `AlgorithmIdentifier`: nothing or a NULL.
fn optional_null(alg: &mut Reader<'_>) -> Result<(), DerError> {
    if !alg.is_empty() && !alg.expect(der::TAG_NULL)?.is_empty() {
        return Err(DerError);
    }
    alg.finish()
}

/// `SubjectPublicKeyInfo` contents. Unknown key algorithms and curves
/// parse (the key is then unusable for verification).
fn parse_spki(value: &[u8]) -> Result<PublicKey, X509Error> {
    let location = at("subjectPublicKeyInfo");
    let mut spki = Reader::new(value);
    let mut alg = Reader::new(spki.expect(der::TAG_SEQUENCE).map_err(&location)?);
    let bits = spki.expect(der::TAG_BIT_STRING).map_err(&location)?;
    spki.finish().map_err(&location)?;
    let key = match bits {
        [0, key @ ..] => key,
        _ => return Err(malformed("subjectPublicKeyInfo: key has unused bits")),
    };
    let oid = alg.expect(der::TAG_OID).map_err(&location)?;
    check_oid(oid).map_err(&location)?;
    if oid == OID_RSA_ENCRYPTION {
        optional_null(&mut alg).map_err(at("subjectPublicKeyInfo: rsaEncryption parameters"))?;
        let rsa = at("subjectPublicKeyInfo: RSAPublicKey");
        let mut outer = Reader::new(key);
        let mut seq = Reader::new(outer.expect(der::TAG_SEQUENCE).map_err(&rsa)?);
        outer.finish().map_err(&rsa)?;
        let modulus =
            der::positive_integer(seq.expect(der::TAG_INTEGER).map_err(&rsa)?).map_err(&rsa)?;
        let exponent =
            der::positive_integer(seq.expect(der::TAG_INTEGER).map_err(&rsa)?).map_err(&rsa)?;
        seq.finish().map_err(&rsa)?;
        return Ok(PublicKey::Rsa {
            der: key.to_vec(),
            modulus: modulus.to_vec(),
            exponent: exponent.to_vec(),
        });
    }
    if oid == OID_EC_PUBLIC_KEY {
        if alg.peek_tag() != Some(der::TAG_OID) {
            // implicitCA or specified curve parameters (RFC 5480 forbids both).
            return Ok(PublicKey::Unsupported(format!(
                "{} (parameters other than a named curve)",
                dotted(OID_EC_PUBLIC_KEY)
            )));
        }
        let curve = alg.expect(der::TAG_OID).map_err(&location)?;
        check_oid(curve).map_err(&location)?;
        alg.finish().map_err(&location)?;
        let point_len = match curve {
            OID_P256 => 65,
            OID_P384 => 97,
            _ => return Ok(PublicKey::Unsupported(dotted(curve))),
        };
        return match key.first() {
            Some(0x04) if key.len() == point_len => Ok(if curve == OID_P256 {
                PublicKey::EcP256(key.to_vec())
            } else {
                PublicKey::EcP384(key.to_vec())
            }),
            Some(0x02 | 0x03) => Ok(PublicKey::Unsupported(format!(
                "{} (compressed point)",
                dotted(curve)
            ))),
            _ => Err(malformed("subjectPublicKeyInfo: invalid EC point")),
        };
    }
    Ok(PublicKey::Unsupported(dotted(oid)))
}

/// `Validity ::= SEQUENCE { notBefore Time, notAfter Time }`.
fn parse_validity(value: &[u8]) -> Result<(i64, i64), X509Error> {
    let mut validity = Reader::new(value);
    let (tag, time) = validity
        .read()
        .map_err(at("tbsCertificate.validity.notBefore"))?;
    let not_before =
        parse_time(tag, time).ok_or_else(|| malformed("tbsCertificate.validity.notBefore"))?;
    let (tag, time) = validity
        .read()
        .map_err(at("tbsCertificate.validity.notAfter"))?;
    let not_after =
        parse_time(tag, time).ok_or_else(|| malformed("tbsCertificate.validity.notAfter"))?;
    validity.finish().map_err(at("tbsCertificate.validity"))?;
    Ok((not_before, not_after))
}

/// DER `UTCTime` (`YYMMDDHHMMSSZ`, 1950–2049) or `GeneralizedTime`
/// (`YYYYMMDDHHMMSSZ`, no fraction) to unix seconds.
fn parse_time(tag: u8, value: &[u8]) -> Option<i64> {
    let (year, rest) = match (tag, value) {
        (der::TAG_UTC_TIME, [y1, y2, rest @ ..]) => {
            let yy = digits(&[*y1, *y2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, rest)
        }
        (der::TAG_GENERALIZED_TIME, [y1, y2, y3, y4, rest @ ..]) => {
            (digits(&[*y1, *y2, *y3, *y4])?, rest)
        }
        _ => return None,
    };
    let [mo1, mo2, d1, d2, h1, h2, mi1, mi2, s1, s2, b'Z'] = *rest else {
        return None;
    };
    let month = digits(&[mo1, mo2])?;
    let day = digits(&[d1, d2])?;
    let hour = digits(&[h1, h2])?;
    let minute = digits(&[mi1, mi2])?;
    let second = digits(&[s1, s2])?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn digits(ascii: &[u8]) -> Option<i64> {
    ascii.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `Name` contents: `SEQUENCE OF SET SIZE (1..MAX) OF SEQUENCE { type OID, value ANY }`.
fn check_name(name: &[u8]) -> Result<(), DerError> {
    let mut rdns = Reader::new(name);
    while !rdns.is_empty() {
        let mut rdn = Reader::new(rdns.expect(der::TAG_SET)?);
        if rdn.is_empty() {
            return Err(DerError);
        }
        while !rdn.is_empty() {
            let mut attribute = Reader::new(rdn.expect(der::TAG_SEQUENCE)?);
            check_oid(attribute.expect(der::TAG_OID)?)?;
            attribute.read()?;
            attribute.finish()?;
        }
    }
    Ok(())
}

/// Summary of a whole `Name` element, for messages.
fn name_summary(name: &[u8]) -> String {
    summarize(name).unwrap_or_else(|_| "(unparsable name)".to_owned())
}

fn summarize(name: &[u8]) -> Result<String, DerError> {
    let mut outer = Reader::new(name);
    let mut rdns = Reader::new(outer.expect(der::TAG_SEQUENCE)?);
    outer.finish()?;
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let mut rdn = Reader::new(rdns.expect(der::TAG_SET)?);
        let mut attributes = Vec::new();
        while !rdn.is_empty() {
            let mut attribute = Reader::new(rdn.expect(der::TAG_SEQUENCE)?);
            let oid = attribute.expect(der::TAG_OID)?;
            let (tag, value) = attribute.read()?;
            let name = ATTRIBUTE_NAMES
                .iter()
                .find(|(known, _)| *known == oid)
                .map_or_else(|| dotted(oid), |(_, short)| (*short).to_owned());
            attributes.push(format!("{name}={}", attribute_value(tag, value)));
        }
        parts.push(attributes.join("+"));
    }
    if parts.is_empty() {
        return Ok("(empty)".to_owned());
    }
    parts.reverse();
    let summary = parts.join(", ");
    if summary.chars().count() > MAX_SUMMARY_CHARS {
        let mut cut: String = summary.chars().take(MAX_SUMMARY_CHARS).collect();
        cut.push('…');
        return Ok(cut);
    }
    Ok(summary)
}

/// A directory string as text (escaped for RFC 4514-ish display), other
/// types as `#` and hex.
fn attribute_value(tag: u8, value: &[u8]) -> String {
    match directory_string(tag, value) {
        Some(text) => {
            let mut out = String::with_capacity(text.len());
            for c in text.chars() {
                if c.is_control() {
                    out.extend(c.escape_default());
                } else {
                    if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
            out
        }
        None => {
            let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
            format!("#{hex}")
        }
    }
}

/// The text of a string-typed attribute value; `None` for other types or
/// undecodable contents.
fn directory_string(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        // UTF8String
        0x0C => std::str::from_utf8(value).ok().map(str::to_owned),
        // PrintableString, T61String, IA5String, VisibleString (Latin-1 at worst)
        0x13 | 0x14 | 0x16 | 0x1A => Some(value.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16BE
        0x1E if value.len().is_multiple_of(2) => Some(
            char::decode_utf16(
                value
                    .chunks_exact(2)
                    .map(|pair| pair.iter().fold(0u16, |acc, &b| (acc << 8) | u16::from(b))),
            )
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
        ),
        // UniversalString: UTF-32BE
        0x1C if value.len().is_multiple_of(4) => Some(
            value
                .chunks_exact(4)
                .map(|quad| {
                    char::from_u32(quad.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
                        .unwrap_or(char::REPLACEMENT_CHARACTER)
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Whether two `Name` elements name the same entity: byte-equal, or equal
/// after RFC 5280 §7.1-style normalization (string values compared as text
/// regardless of their ASN.1 string type, case-insensitively, with leading,
/// trailing and repeated whitespace ignored; the values of a multi-valued
/// RDN in any order). Some EK certificates encode their issuer name
/// differently from the CA's subject. Matching only selects candidate
/// issuers: the signature check is what binds a certificate to its issuer.
fn names_match(a: &[u8], b: &[u8]) -> bool {
    a == b
        || matches!(
            (normalized_name(a), normalized_name(b)),
            (Some(x), Some(y)) if x == y
        )
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum NormalizedValue<'a> {
    Text(String),
    Other(u8, &'a [u8]),
}

type NormalizedName<'a> = Vec<Vec<(&'a [u8], NormalizedValue<'a>)>>;

fn normalized_name(name: &[u8]) -> Option<NormalizedName<'_>> {
    let mut outer = Reader::new(name);
    let mut rdns = Reader::new(outer.expect(der::TAG_SEQUENCE).ok()?);
    outer.finish().ok()?;
    let mut out = Vec::new();
    while !rdns.is_empty() {
        let mut rdn = Reader::new(rdns.expect(der::TAG_SET).ok()?);
        let mut attributes = Vec::new();
        while !rdn.is_empty() {
            let mut attribute = Reader::new(rdn.expect(der::TAG_SEQUENCE).ok()?);
            let oid = attribute.expect(der::TAG_OID).ok()?;
            let (tag, value) = attribute.read().ok()?;
            let value = match directory_string(tag, value) {
                Some(text) => NormalizedValue::Text(
                    text.split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .to_lowercase(),
                ),
                None => NormalizedValue::Other(tag, value),
            };
            attributes.push((oid, value));
        }
        attributes.sort();
        out.push(attributes);
    }
    Some(out)
}

/// Reads the next element, which must have tag `tag`, returning its
/// contents and the whole element.
fn element<'a>(
    reader: &mut Reader<'a>,
    tag: u8,
    location: &'static str,
) -> Result<(&'a [u8], &'a [u8]), X509Error> {
    match reader.read_element() {
        Ok((t, value, whole)) if t == tag => Ok((value, whole)),
        _ => Err(malformed(location)),
    }
}

fn malformed(location: &str) -> X509Error {
    X509Error::Malformed(location.to_owned())
}

fn at(location: &'static str) -> impl Fn(DerError) -> X509Error {
    move |_| malformed(location)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Option<i64> {
        parse_time(der::TAG_UTC_TIME, s.as_bytes())
    }

    fn generalized(s: &str) -> Option<i64> {
        parse_time(der::TAG_GENERALIZED_TIME, s.as_bytes())
    }

    #[test]
    fn times() {
        assert_eq!(utc("700101000000Z"), Some(0));
        assert_eq!(generalized("19700101000000Z"), Some(0));
        assert_eq!(utc("500101000000Z"), Some(-631_152_000)); // 1950
        assert_eq!(utc("491231235959Z"), Some(2_524_607_999)); // 2049
        assert_eq!(utc("000229120000Z"), Some(951_825_600)); // 2000 is a leap year
        assert_eq!(generalized("99991231235959Z"), Some(253_402_300_799));
        assert_eq!(generalized("20380119031408Z"), Some(2_147_483_648));
        assert_eq!(generalized("19691231235959Z"), Some(-1));
        for bad in [
            "010229000000Z",  // 2001 is not a leap year
            "210431000000Z",  // April 31st
            "211301000000Z",  // month 13
            "210001000000Z",  // month 0
            "210100000000Z",  // day 0
            "210101240000Z",  // hour 24
            "210101006000Z",  // minute 60
            "210101000060Z",  // second 60
            "2101010000Z",    // no seconds
            "210101000000",   // no Z
            "210101000000+0", // offset
            "2101010000 0Z",  // not a digit
            "-10101000000Z",  // sign
        ] {
            assert_eq!(utc(bad), None, "{bad}");
        }
        assert_eq!(generalized("20210101000000.5Z"), None);
        assert_eq!(generalized("210101000000Z"), None);
        assert_eq!(utc("20210101000000Z"), None);
        assert_eq!(parse_time(der::TAG_OCTET_STRING, b"210101000000Z"), None);
    }

    #[test]
    fn oids() {
        assert_eq!(dotted(OID_RSA_ENCRYPTION), "1.2.840.113549.1.1.1");
        assert_eq!(dotted(OID_P384), "1.3.132.0.34");
        assert_eq!(dotted(OID_SHA256), "2.16.840.1.101.3.4.2.1");
        assert_eq!(dotted(&[0x67, 0x81, 0x05, 0x08, 0x01]), "2.23.133.8.1");
        assert_eq!(dotted(&[0x88, 0x37]), "2.999");
        assert_eq!(dotted(&[0x00]), "0.0");
        assert!(check_oid(&[]).is_err());
        assert!(check_oid(&[0x2A, 0x86]).is_err()); // unterminated arc
        assert!(check_oid(&[0x2A, 0x80, 0x01]).is_err()); // non-minimal arc
        assert_eq!(dotted(&[0x2A, 0x86]), "(invalid oid 2a86)");
        assert_eq!(
            dotted(&[0xFF; 12]),
            "(invalid oid ffffffffffffffffffffffff)"
        );
        let mut huge = vec![0xFF; 10];
        huge.push(0x7F);
        assert!(dotted(&huge).starts_with("(invalid oid"));
    }

    #[test]
    fn integers_and_booleans() {
        assert_eq!(small_unsigned(&[0x00]), Ok(0));
        assert_eq!(small_unsigned(&[0x7F]), Ok(127));
        assert_eq!(small_unsigned(&[0x00, 0x80]), Ok(128));
        assert_eq!(
            small_unsigned(&[0x00, 0xFF, 0xFF, 0xFF, 0xFF]),
            Ok(u32::MAX)
        );
        assert_eq!(
            small_unsigned(&[0x01, 0x00, 0x00, 0x00, 0x00]),
            Err(DerError)
        );
        assert_eq!(small_unsigned(&[0x80]), Err(DerError));
        assert_eq!(small_unsigned(&[0x00, 0x01]), Err(DerError));
        assert_eq!(small_unsigned(&[]), Err(DerError));
        assert!(check_integer(&[0xFF]).is_ok());
        assert!(check_integer(&[0xFF, 0x80]).is_err());
        assert_eq!(boolean(&[0xFF]), Ok(true));
        assert_eq!(boolean(&[0x00]), Ok(false));
        assert_eq!(boolean(&[0x01]), Err(DerError));
        assert_eq!(boolean(&[]), Err(DerError));
    }

    #[test]
    fn key_usage_bits() {
        // keyCertSign | cRLSign: 0x06 with 1 unused bit.
        assert_eq!(bit_string_bit(&[0x03, 0x02, 0x01, 0x06], 5), Ok(true));
        // digitalSignature only.
        assert_eq!(bit_string_bit(&[0x03, 0x02, 0x07, 0x80], 5), Ok(false));
        assert_eq!(bit_string_bit(&[0x03, 0x01, 0x00], 5), Ok(false));
        assert_eq!(bit_string_bit(&[0x03, 0x01, 0x01], 5), Err(DerError));
        assert_eq!(bit_string_bit(&[0x03, 0x02, 0x08, 0x00], 5), Err(DerError));
        assert_eq!(bit_string_bit(&[0x03, 0x00], 5), Err(DerError));
    }

    #[test]
    fn basic_constraints() {
        assert_eq!(parse_basic_constraints(&[0x30, 0x00]), Ok((false, None)));
        assert_eq!(
            parse_basic_constraints(&[0x30, 0x03, 0x01, 0x01, 0xFF]),
            Ok((true, None))
        );
        assert_eq!(
            parse_basic_constraints(&[0x30, 0x06, 0x01, 0x01, 0xFF, 0x02, 0x01, 0x00]),
            Ok((true, Some(0)))
        );
        assert_eq!(
            parse_basic_constraints(&[0x30, 0x03, 0x01, 0x01, 0x01]),
            Err(DerError)
        );
        assert_eq!(
            parse_basic_constraints(&[0x30, 0x03, 0x02, 0x01, 0xFF]),
            Err(DerError)
        );
        assert_eq!(parse_basic_constraints(&[0x30, 0x00, 0x00]), Err(DerError));
    }

    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        assert!(contents.len() < 0x80);
        let mut out = vec![tag, contents.len() as u8];
        out.extend_from_slice(contents);
        out
    }

    fn hash_id(oid: &[u8]) -> Vec<u8> {
        let mut contents = tlv(der::TAG_OID, oid);
        contents.extend(tlv(der::TAG_NULL, &[]));
        tlv(der::TAG_SEQUENCE, &contents)
    }

    fn pss(hash: &[u8], mgf_hash: &[u8], salt: u8, trailer: Option<u8>) -> Vec<u8> {
        let mut params = tlv(der::TAG_CONTEXT_0, &hash_id(hash));
        let mut mgf = tlv(der::TAG_OID, OID_MGF1);
        mgf.extend(hash_id(mgf_hash));
        params.extend(tlv(TAG_CONTEXT_1, &tlv(der::TAG_SEQUENCE, &mgf)));
        params.extend(tlv(TAG_CONTEXT_2, &tlv(der::TAG_INTEGER, &[salt])));
        if let Some(t) = trailer {
            params.extend(tlv(TAG_CONTEXT_3, &tlv(der::TAG_INTEGER, &[t])));
        }
        params
    }

    #[test]
    fn pss_parameters() {
        assert_eq!(
            parse_pss_params(&pss(OID_SHA256, OID_SHA256, 32, None)),
            Ok(SignatureAlgorithm::RsaPss(Hash::Sha256))
        );
        assert_eq!(
            parse_pss_params(&pss(OID_SHA384, OID_SHA384, 48, Some(1))),
            Ok(SignatureAlgorithm::RsaPss(Hash::Sha384))
        );
        assert_eq!(
            parse_pss_params(&pss(OID_SHA512, OID_SHA512, 64, None)),
            Ok(SignatureAlgorithm::RsaPss(Hash::Sha512))
        );
        for unsupported in [
            pss(OID_SHA256, OID_SHA384, 32, None), // MGF hash differs
            pss(OID_SHA256, OID_SHA256, 20, None), // salt length
            pss(OID_SHA256, OID_SHA256, 32, Some(2)),
            pss(&[0x2B, 0x0E, 0x03, 0x02, 0x1A], OID_SHA256, 32, None), // SHA-1
            Vec::new(),                                                 // all defaults (SHA-1)
        ] {
            assert!(matches!(
                parse_pss_params(&unsupported),
                Ok(SignatureAlgorithm::Unsupported(s)) if s.starts_with("1.2.840.113549.1.1.10 ")
            ));
        }
        let mut trailing = pss(OID_SHA256, OID_SHA256, 32, None);
        trailing.extend([0x05, 0x00]);
        assert!(matches!(
            parse_pss_params(&trailing),
            Err(X509Error::Malformed(_))
        ));
    }

    #[test]
    fn name_matching() {
        let name = |rdns: &[(&[u8], u8, &[u8])]| {
            let mut contents = Vec::new();
            for (oid, tag, value) in rdns {
                let mut atv = tlv(der::TAG_OID, oid);
                atv.extend(tlv(*tag, value));
                contents.extend(tlv(der::TAG_SET, &tlv(der::TAG_SEQUENCE, &atv)));
            }
            tlv(der::TAG_SEQUENCE, &contents)
        };
        const CN: &[u8] = &[0x55, 0x04, 0x03];
        const O: &[u8] = &[0x55, 0x04, 0x0A];
        let printable = name(&[(O, 0x13, b"Vendor"), (CN, 0x13, b"TPM  Root CA")]);
        let utf8 = name(&[(O, 0x0C, b"vendor"), (CN, 0x0C, b" tpm root ca ")]);
        let bmp = name(&[
            (
                O,
                0x1E,
                &[0, b'V', 0, b'E', 0, b'N', 0, b'D', 0, b'O', 0, b'R'],
            ),
            (CN, 0x0C, b"TPM Root CA"),
        ]);
        assert!(names_match(&printable, &printable));
        assert!(names_match(&printable, &utf8));
        assert!(names_match(&utf8, &bmp));
        // Different values, attribute types, order or number of RDNs.
        assert!(!names_match(
            &printable,
            &name(&[(O, 0x13, b"Vendor"), (CN, 0x13, b"TPM Root CA 2")])
        ));
        assert!(!names_match(
            &printable,
            &name(&[(CN, 0x13, b"Vendor"), (CN, 0x13, b"TPM Root CA")])
        ));
        assert!(!names_match(
            &printable,
            &name(&[(CN, 0x13, b"TPM Root CA"), (O, 0x13, b"Vendor")])
        ));
        assert!(!names_match(&printable, &name(&[(O, 0x13, b"Vendor")])));
        assert!(!names_match(&printable, &[0x30, 0x00]));
        // Non-string values compare by type and bytes.
        assert!(names_match(
            &name(&[(CN, 0x04, b"x")]),
            &name(&[(CN, 0x04, b"x")])
        ));
        assert!(!names_match(
            &name(&[(CN, 0x04, b"x")]),
            &name(&[(CN, 0x04, b"X")])
        ));
        assert!(!names_match(
            &name(&[(CN, 0x04, b"x")]),
            &name(&[(CN, 0x0C, b"x")])
        ));
        // Unparsable names only match byte for byte.
        assert!(names_match(&[0x30, 0x01], &[0x30, 0x01]));
        assert!(!names_match(&[0x30, 0x01], &[0x30, 0x00]));
    }

    #[test]
    fn name_summaries() {
        let atv = |oid: &[u8], tag: u8, value: &[u8]| {
            let mut contents = tlv(der::TAG_OID, oid);
            contents.extend(tlv(tag, value));
            tlv(der::TAG_SEQUENCE, &contents)
        };
        let cn = atv(&[0x55, 0x04, 0x03], 0x0C, "tpm, \"ek\"".as_bytes());
        let o = atv(&[0x55, 0x04, 0x0A], 0x13, b"Strata");
        let c = atv(&[0x55, 0x04, 0x06], 0x13, b"DE");
        let model = atv(
            &[0x67, 0x81, 0x05, 0x02, 0x02],
            0x1E,
            &[0x00, b'x', 0x00, 0x0A],
        );
        let odd = atv(&[0x2A, 0x03], 0x04, &[0xAB]);
        let mut multi = model.clone();
        multi.extend(&odd);
        let mut rdns = tlv(der::TAG_SET, &c);
        rdns.extend(tlv(der::TAG_SET, &o));
        rdns.extend(tlv(der::TAG_SET, &cn));
        rdns.extend(tlv(der::TAG_SET, &multi));
        assert!(check_name(&rdns).is_ok());
        assert_eq!(
            name_summary(&tlv(der::TAG_SEQUENCE, &rdns)),
            "TPMModel=x\\n+1.2.3=#ab, CN=tpm\\, \\\"ek\\\", O=Strata, C=DE"
        );
        assert_eq!(name_summary(&[0x30, 0x00]), "(empty)");
        assert_eq!(name_summary(&[0x30, 0x01]), "(unparsable name)");
        // An empty RDN set is not a name.
        assert!(check_name(&tlv(der::TAG_SET, &[])).is_err());

        let long = atv(&[0x55, 0x04, 0x03], 0x0C, &[b'a'; 100]);
        let mut rdns = Vec::new();
        for _ in 0..3 {
            rdns.extend(tlv(der::TAG_SET, &long));
        }
        let mut name = vec![
            der::TAG_SEQUENCE,
            0x82,
            (rdns.len() >> 8) as u8,
            rdns.len() as u8,
        ];
        name.extend(&rdns);
        let summary = name_summary(&name);
        assert_eq!(summary.chars().count(), MAX_SUMMARY_CHARS + 1);
        assert!(summary.ends_with('…'));
    }
}
