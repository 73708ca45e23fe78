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
        }
        assert_eq!(HashAlg::from_alg_id(0x0012), None, "sm3 is not computed");
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
