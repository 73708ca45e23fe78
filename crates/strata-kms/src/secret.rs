//! The types that hold plaintext key material or decrypted data.
//!
//! Every one is wiped on drop (`ZeroizeOnDrop`), prints `[redacted]` under `Debug`, has no
//! `Display`, no `Serialize` and no `Clone`: a copy has to be asked for by name
//! (`expose_secret`), which is easy to find in review.
//!
//! What this does not cover: `ring` keeps expanded AES key schedules and ECDSA private scalars
//! in its own types, which it does not zeroize. Root and platform keys hold one schedule for
//! their lifetime; vault key versions are opened for one operation and dropped straight after.

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::KmsError;

pub const KEY_LEN: usize = 32;

macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; KEY_LEN]);

        impl $name {
            /// 32 fresh bytes from the operating system's CSPRNG.
            pub fn generate() -> Result<Self, KmsError> {
                let mut key = $name([0; KEY_LEN]);
                SystemRandom::new()
                    .fill(&mut key.0)
                    .map_err(|_| KmsError::Crypto("the system random generator failed"))?;
                Ok(key)
            }

            /// Copies exactly 32 bytes; the caller should wipe its own copy.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, KmsError> {
                let bytes: &[u8; KEY_LEN] = bytes.try_into().map_err(|_| {
                    KmsError::InvalidArgument(format!(
                        "a {} is {KEY_LEN} bytes, got {}",
                        stringify!($name),
                        bytes.len()
                    ))
                })?;
                Ok($name(*bytes))
            }

            /// The raw key. Named so every use stands out in review.
            pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret_key!(
    /// The 32-byte root secret a [`crate::provider::RootKeyProvider`] loads. The root key
    /// itself is derived from it ([`crate::RootKey::from_secret`]).
    RootSecret
);

secret_key!(
    /// A 256-bit data encryption key: what encrypts one disk (LUKS) or one object.
    DataKey
);

/// Decrypted data from a vault key's `decrypt`, wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Plaintext(Vec<u8>);

impl Plaintext {
    pub(crate) fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        let mut bytes = bytes;
        Plaintext(std::mem::take(&mut *bytes))
    }

    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Plaintext([redacted])")
    }
}
