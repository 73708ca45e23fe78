//! Credential and token cryptography for Strata, with no I/O.
//!
//! * [`password`]: argon2id password hashing (OWASP parameters) and a password policy.
//! * [`totp`]: RFC 6238 time-based one-time passwords (HMAC-SHA1, 30 s, 6 digits).
//! * [`secret`]: high-entropy client secrets (SHA-256 hashed) and random tokens.
//! * [`jwt`]: ES256 access tokens, JWKS publication and verification.
//! * [`assertion`]: RFC 7523 `private_key_jwt` client assertions verified against
//!   a registered X.509 certificate's public key.
//! * [`x509`]: strict X.509 parsing and chain verification for TPM
//!   endorsement-key certificates against configured vendor CAs.
//!
//! No error or `Debug` output of this crate ever contains a password, secret,
//! token or key bytes.

pub mod assertion;
mod b64;
mod der;
mod jose;
pub mod jwt;
pub mod password;
pub mod secret;
pub mod totp;
pub mod x509;
