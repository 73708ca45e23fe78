//! The wrapped-key envelope: versioned, self-describing, and safe to store anywhere.
//!
//! ```text
//! offset  size  field
//! 0       1     format version (1)
//! 1       2     key id length L, big-endian (1..=1024)
//! 3       L     id of the key that sealed it, UTF-8
//! 3+L     4     version of that key, big-endian (>= 1)
//! 7+L     12    random 96-bit nonce
//! 19+L    n+16  AES-256-GCM ciphertext followed by its 16-byte tag
//! ```
//!
//! The envelope names its wrapping key so the caller can find it (and so opening with the wrong
//! key says which one to use); it does not name the protected resource or purpose, which are
//! bound through the associated data instead ([`crate::aad`]). In JSON (`serde`) and via
//! `Display`/`FromStr` it is the standard base64 of those bytes. The parser accepts exactly
//! what [`Envelope::to_bytes`] produces: `from_bytes(b)?.to_bytes() == b`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// The only envelope format this build writes and reads.
pub const FORMAT_V1: u8 = 1;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
pub const MAX_KEY_ID_LEN: usize = 1024;
/// Envelopes larger than this are refused before decoding (1 MiB): data-plane `encrypt` is for
/// keys and small secrets, not bulk data.
pub const MAX_ENVELOPE_LEN: usize = 1 << 20;

/// A key and one of its versions: `{id}/versions/{version}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyRef {
    pub id: String,
    pub version: u32,
}

impl KeyRef {
    pub fn new(id: impl Into<String>, version: u32) -> Self {
        KeyRef {
            id: id.into(),
            version,
        }
    }
}

impl std::fmt::Display for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/versions/{}", self.id, self.version)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is empty")]
    Empty,
    #[error("unsupported envelope format {0}; this build reads format {FORMAT_V1}")]
    UnsupportedFormat(u8),
    #[error("envelope ends inside its {0}")]
    Truncated(&'static str),
    #[error("envelope key id is {0} bytes; it must be 1 to {MAX_KEY_ID_LEN}")]
    KeyIdLength(usize),
    #[error("envelope key id is not UTF-8")]
    KeyIdNotUtf8,
    #[error("envelope key version is 0; versions start at 1")]
    ZeroVersion,
    #[error("envelope is {0} bytes; the limit is {MAX_ENVELOPE_LEN}")]
    TooLarge(usize),
    #[error("envelope is not valid base64")]
    Base64,
}

/// A sealed key or ciphertext and the key reference needed to open it.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    key: KeyRef,
    nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the tag; never shorter than [`TAG_LEN`].
    sealed: Vec<u8>,
}

impl Envelope {
    pub(crate) fn new(key: KeyRef, nonce: [u8; NONCE_LEN], sealed: Vec<u8>) -> Self {
        Envelope { key, nonce, sealed }
    }

    /// The key (and version) that sealed this envelope.
    pub fn key(&self) -> &KeyRef {
        &self.key
    }

    pub fn format(&self) -> u8 {
        FORMAT_V1
    }

    pub(crate) fn nonce(&self) -> [u8; NONCE_LEN] {
        self.nonce
    }

    pub(crate) fn sealed(&self) -> &[u8] {
        &self.sealed
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let id = self.key.id.as_bytes();
        let mut out = Vec::with_capacity(1 + 2 + id.len() + 4 + NONCE_LEN + self.sealed.len());
        out.push(FORMAT_V1);
        // INVARIANT: every Envelope was built by sealing under a KeyRef whose id length was
        // checked (`Kek::new`) or by `from_bytes`, so the id fits in a u16.
        out.extend_from_slice(&(id.len() as u16).to_be_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&self.key.version.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Parses untrusted bytes. Never panics; see the layout in the module docs.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(EnvelopeError::TooLarge(bytes.len()));
        }
        let (&format, rest) = bytes.split_first().ok_or(EnvelopeError::Empty)?;
        if format != FORMAT_V1 {
            return Err(EnvelopeError::UnsupportedFormat(format));
        }
        let (len, rest) = take::<2>(rest, "key id length")?;
        let len = usize::from(u16::from_be_bytes(len));
        if len == 0 || len > MAX_KEY_ID_LEN {
            return Err(EnvelopeError::KeyIdLength(len));
        }
        if rest.len() < len {
            return Err(EnvelopeError::Truncated("key id"));
        }
        let (id, rest) = rest.split_at(len);
        let id = std::str::from_utf8(id).map_err(|_| EnvelopeError::KeyIdNotUtf8)?;
        let (version, rest) = take::<4>(rest, "key version")?;
        let version = u32::from_be_bytes(version);
        if version == 0 {
            return Err(EnvelopeError::ZeroVersion);
        }
        let (nonce, sealed) = take::<NONCE_LEN>(rest, "nonce")?;
        if sealed.len() < TAG_LEN {
            return Err(EnvelopeError::Truncated("authentication tag"));
        }
        Ok(Envelope {
            key: KeyRef::new(id, version),
            nonce,
            sealed: sealed.to_vec(),
        })
    }

    /// The storage form: standard base64 of [`Envelope::to_bytes`].
    pub fn encode(&self) -> String {
        STANDARD.encode(self.to_bytes())
    }

    /// Parses the storage form.
    pub fn decode(text: &str) -> Result<Self, EnvelopeError> {
        // base64 is 4 characters per 3 bytes: refuse oversized input before allocating.
        if text.len() / 4 * 3 > MAX_ENVELOPE_LEN + 3 {
            return Err(EnvelopeError::TooLarge(text.len() / 4 * 3));
        }
        let bytes = STANDARD
            .decode(text.as_bytes())
            .map_err(|_| EnvelopeError::Base64)?;
        Envelope::from_bytes(&bytes)
    }
}

fn take<'a, const N: usize>(
    bytes: &'a [u8],
    field: &'static str,
) -> Result<([u8; N], &'a [u8]), EnvelopeError> {
    match bytes.split_first_chunk::<N>() {
        Some((head, rest)) => Ok((*head, rest)),
        None => Err(EnvelopeError::Truncated(field)),
    }
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("format", &FORMAT_V1)
            .field("key", &self.key)
            .field("sealed_len", &self.sealed.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

impl std::str::FromStr for Envelope {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Envelope::decode(s)
    }
}

impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Envelope::decode(&text).map_err(serde::de::Error::custom)
    }
}
