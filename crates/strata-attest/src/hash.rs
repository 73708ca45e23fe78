//! Hash algorithms (TPM_ALG_ID) and the [`Digest`] value type used in policies and verdicts.
//!
//! Every digest that crosses this crate's API is a [`Digest`]: raw bytes that print and
//! serialize as lowercase hex, so a failure reads `expected 3f2a… got 9c01…`.

use std::fmt;

/// A hash algorithm a TPM bank, a name or a signature can use.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    /// TPM_ALG_SHA1 (0x0004).
    Sha1,
    /// TPM_ALG_SHA256 (0x000B).
    Sha256,
    /// TPM_ALG_SHA384 (0x000C).
    Sha384,
    /// TPM_ALG_SHA512 (0x000D).
    Sha512,
}

impl HashAlg {
    /// Every algorithm this crate can compute.
    pub const ALL: [HashAlg; 4] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    /// The TPM_ALG_ID.
    pub fn alg_id(self) -> u16 {
        match self {
            HashAlg::Sha1 => 0x0004,
            HashAlg::Sha256 => 0x000b,
            HashAlg::Sha384 => 0x000c,
            HashAlg::Sha512 => 0x000d,
        }
    }

    /// The algorithm with this TPM_ALG_ID, if it is one this crate computes.
    pub fn from_alg_id(id: u16) -> Option<HashAlg> {
        HashAlg::ALL.into_iter().find(|a| a.alg_id() == id)
    }

    /// Digest size in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    fn ring(self) -> &'static ring::digest::Algorithm {
        match self {
            HashAlg::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &ring::digest::SHA256,
            HashAlg::Sha384 => &ring::digest::SHA384,
            HashAlg::Sha512 => &ring::digest::SHA512,
        }
    }

    /// `H(data)`.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        ring::digest::digest(self.ring(), data).as_ref().to_vec()
    }

    /// `H(a ‖ b ‖ …)` without concatenating first.
    pub fn hash_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        let mut ctx = ring::digest::Context::new(self.ring());
        for p in parts {
            ctx.update(p);
        }
        ctx.finish().as_ref().to_vec()
    }

    /// A PCR extend: `H(old ‖ digest)`.
    pub fn extend(self, old: &[u8], digest: &[u8]) -> Vec<u8> {
        self.hash_parts(&[old, digest])
    }

    /// `H(data)`, held inline (no allocation).
    pub fn hash_inline(self, data: &[u8]) -> InlineDigest {
        InlineDigest::of(ring::digest::digest(self.ring(), data))
    }

    /// `H(a ‖ b ‖ …)` over `parts`, held inline (no allocation, no concatenation).
    pub fn hash_inline_parts<'p>(self, parts: impl IntoIterator<Item = &'p [u8]>) -> InlineDigest {
        let mut ctx = ring::digest::Context::new(self.ring());
        for p in parts {
            ctx.update(p);
        }
        InlineDigest::of(ctx.finish())
    }

    /// A PCR extend in place: `value = H(value ‖ digest)`.
    pub fn extend_inline(self, value: &mut InlineDigest, digest: &[u8]) {
        if self == HashAlg::Sha256
            && value.len == 32
            && let Ok(digest) = <&[u8; 32]>::try_from(digest)
        {
            let mut old = [0u8; 32];
            old.copy_from_slice(&value.bytes[..32]);
            value.bytes[..32].copy_from_slice(&sha256_extend(&old, digest));
            return;
        }
        let old = value.as_bytes();
        // Both halves are at most one digest (64 bytes): hash them from one stack buffer.
        let mut buf = [0u8; 2 * MAX_DIGEST_LEN];
        if old.len() + digest.len() <= buf.len() {
            buf[..old.len()].copy_from_slice(old);
            buf[old.len()..old.len() + digest.len()].copy_from_slice(digest);
            *value = self.hash_inline(&buf[..old.len() + digest.len()]);
        } else {
            *value = self.hash_inline_parts([old, digest]);
        }
    }

    /// The lowercase name used in policies (`sha256`).
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The padding of a 64-byte message (FIPS 180-4, 5.1.1): a whole block of `0x80`, zeros
/// and the message length in bits (512) as a big-endian u64.
const SHA256_PAD_64: [u8; 64] = {
    let mut b = [0u8; 64];
    b[0] = 0x80;
    b[62] = 0x02;
    b
};

/// A SHA-256 PCR extend, `SHA-256(old ‖ digest)` of two 32-byte values: the message is
/// exactly one block and its padding the constant second block, so the compression function
/// runs twice with no buffering (the hot loop of a replay).
fn sha256_extend(old: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut blocks = [[0u8; 64], SHA256_PAD_64];
    blocks[0][..32].copy_from_slice(old);
    blocks[0][32..].copy_from_slice(digest);
    let mut state = SHA256_IV;
    sha2::block_api::compress256(&mut state, &blocks);
    let mut out = [0u8; 32];
    for (o, word) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// The longest digest this crate computes (SHA-512).
pub const MAX_DIGEST_LEN: usize = 64;

/// A digest or PCR value held inline, for the hot paths of replay and appraisal that would
/// otherwise allocate a `Vec` per hash. At most 64 bytes (SHA-512).
#[derive(Clone, Copy)]
pub struct InlineDigest {
    len: u8,
    bytes: [u8; MAX_DIGEST_LEN],
}

impl InlineDigest {
    /// `len` bytes of `fill` (a PCR's reset value); `len` is cut to 64.
    pub fn filled(fill: u8, len: usize) -> InlineDigest {
        let len = len.min(MAX_DIGEST_LEN);
        InlineDigest {
            len: len as u8,
            bytes: [fill; MAX_DIGEST_LEN],
        }
    }

    fn of(d: ring::digest::Digest) -> InlineDigest {
        let d = d.as_ref();
        let mut out = InlineDigest::filled(0, d.len());
        out.bytes[..d.len()].copy_from_slice(d);
        out
    }

    /// The digest.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The digest, mutable (its length is fixed).
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[..usize::from(self.len)]
    }

    /// As an owned [`Digest`] (for verdicts).
    pub fn to_digest(self) -> Digest {
        Digest(self.as_bytes().to_vec())
    }
}

impl PartialEq<[u8]> for InlineDigest {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_bytes() == other
    }
}

impl fmt::Debug for InlineDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InlineDigest({})", hex(self.as_bytes()))
    }
}

/// Bytes that display and serialize as lowercase hex (digests, nonces, PCR values).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub Vec<u8>);

impl Digest {
    /// Parses hex (either case, no separators).
    pub fn from_hex(s: &str) -> Option<Digest> {
        if !s.len().is_multiple_of(2) {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        s.as_bytes()
            .chunks_exact(2)
            .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
            .collect::<Option<Vec<u8>>>()
            .map(Digest)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Digest {
    fn from(v: Vec<u8>) -> Digest {
        Digest(v)
    }
}

impl From<&[u8]> for Digest {
    fn from(v: &[u8]) -> Digest {
        Digest(v.to_vec())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a hex digest")))
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Equality whose running time depends only on the lengths (for nonces and MACs).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alg_ids_round_trip_and_sizes_match_the_hash() {
        for alg in HashAlg::ALL {
            assert_eq!(HashAlg::from_alg_id(alg.alg_id()), Some(alg));
            assert_eq!(alg.hash(b"x").len(), alg.digest_len());
            assert_eq!(alg.hash_parts(&[b"a", b"b"]), alg.hash(b"ab"));
            assert_eq!(alg.hash_inline(b"ab").as_bytes(), alg.hash(b"ab"));
            assert_eq!(
                alg.hash_inline_parts([&b"a"[..], b"b"]).as_bytes(),
                alg.hash(b"ab")
            );
            let old = alg.hash(b"old");
            let mut v = alg.hash_inline(b"old");
            alg.extend_inline(&mut v, &alg.hash(b"new"));
            assert_eq!(v.as_bytes(), alg.extend(&old, &alg.hash(b"new")));
        }
        assert_eq!(HashAlg::from_alg_id(0x0012), None, "sm3 is not computed");
    }

    proptest::proptest! {
        #[test]
        fn the_sha256_extend_is_sha256(old in proptest::array::uniform32(0u8..), digest in proptest::array::uniform32(0u8..)) {
            let want = HashAlg::Sha256.hash(&[old, digest].concat());
            proptest::prop_assert_eq!(sha256_extend(&old, &digest).to_vec(), want.clone());
            let mut v = InlineDigest::filled(0, 32);
            v.as_bytes_mut().copy_from_slice(&old);
            HashAlg::Sha256.extend_inline(&mut v, &digest);
            proptest::prop_assert_eq!(v.as_bytes(), want.as_slice());
        }
    }

    #[test]
    fn the_sha256_extend_matches_known_answers() {
        // SHA-256 of 64 zero bytes, and the first extend of a zeroed PCR with SHA-256("").
        assert_eq!(
            hex(&sha256_extend(&[0; 32], &[0; 32])),
            "f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b"
        );
        let empty: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, b"")
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        assert_eq!(
            sha256_extend(&[0; 32], &empty).to_vec(),
            HashAlg::Sha256.hash(&[[0u8; 32], empty].concat())
        );
    }

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        let d = Digest(vec![0x00, 0xab, 0xff]);
        assert_eq!(d.to_string(), "00abff");
        assert_eq!(Digest::from_hex("00ABff"), Some(d.clone()));
        assert_eq!(Digest::from_hex("0"), None);
        assert_eq!(Digest::from_hex("zz"), None);
        let json = serde_json::to_string(&d).unwrap_or_default();
        assert_eq!(json, "\"00abff\"");
        assert_eq!(serde_json::from_str::<Digest>(&json).ok(), Some(d));
        assert!(serde_json::from_str::<Digest>("\"xyz\"").is_err());
    }

    #[test]
    fn constant_time_eq_compares_contents_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
