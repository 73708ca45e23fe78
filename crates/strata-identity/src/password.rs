//! Password hashing with argon2id and the account password policy.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$…`) using the OWASP
//! recommended parameters and a random 16-byte salt from the system CSPRNG.

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use ring::rand::{SecureRandom, SystemRandom};

/// Minimum password length, in characters.
pub const MIN_CHARS: usize = 12;
/// Maximum password length, in UTF-8 bytes.
pub const MAX_BYTES: usize = 256;

/// argon2 memory cost in KiB (OWASP: 19 MiB).
const M_COST: u32 = 19_456;
/// argon2 iterations.
const T_COST: u32 = 2;
/// argon2 parallelism.
const P_COST: u32 = 1;
/// Upper bounds accepted when verifying a stored hash, so a corrupted or
/// tampered PHC string cannot make verification arbitrarily expensive.
const MAX_VERIFY_M_COST: u32 = 262_144;
const MAX_VERIFY_T_COST: u32 = 16;
const MAX_VERIFY_P_COST: u32 = 8;

/// Errors from hashing or checking a password. Messages never contain the password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("password is too short: use at least {MIN_CHARS} characters")]
    TooShort,
    #[error("password is too long: use at most {MAX_BYTES} bytes")]
    TooLong,
    #[error(
        "password is too simple: mix at least two of lowercase letters, uppercase letters, digits and symbols"
    )]
    TooSimple,
    #[error("system random number generator failed")]
    Rng,
    #[error("password hashing failed")]
    Hash,
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(M_COST, T_COST, P_COST, None).map_err(|_| PasswordError::Hash)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password with argon2id (m=19456 KiB, t=2, p=1) and a random
/// 16-byte salt, returning a PHC string.
///
/// Rejects passwords longer than [`MAX_BYTES`]; it does not apply the rest of
/// the policy (call [`check_policy`] when a password is being set).
pub fn hash(password: &str) -> Result<String, PasswordError> {
    if password.len() > MAX_BYTES {
        return Err(PasswordError::TooLong);
    }
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| PasswordError::Rng)?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| PasswordError::Hash)?;
    let phc = hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|_| PasswordError::Hash)?;
    Ok(phc.to_string())
}

/// Verifies a password against a stored PHC string.
///
/// Returns `false` for a wrong password and for any stored value that is not
/// an argon2id v19 hash with sane parameters.
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_BYTES {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    if parsed.algorithm != argon2::ARGON2ID_IDENT || parsed.version != Some(0x13) {
        return false;
    }
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    if params.m_cost() > MAX_VERIFY_M_COST
        || params.t_cost() > MAX_VERIFY_T_COST
        || params.p_cost() > MAX_VERIFY_P_COST
    {
        return false;
    }
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Checks a new password against the policy: at least [`MIN_CHARS`]
/// characters, at most [`MAX_BYTES`] bytes, and characters from at least two
/// classes (lowercase, uppercase, digits, other).
pub fn check_policy(password: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_BYTES {
        return Err(PasswordError::TooLong);
    }
    if password.chars().count() < MIN_CHARS {
        return Err(PasswordError::TooShort);
    }
    let (mut lower, mut upper, mut digit, mut other) = (false, false, false, false);
    for c in password.chars() {
        if c.is_lowercase() {
            lower = true;
        } else if c.is_uppercase() {
            upper = true;
        } else if c.is_ascii_digit() {
            digit = true;
        } else {
            other = true;
        }
    }
    let classes = [lower, upper, digit, other].iter().filter(|b| **b).count();
    if classes < 2 {
        return Err(PasswordError::TooSimple);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_messages_say_what_to_do() {
        assert!(PasswordError::TooShort.to_string().contains("at least 12"));
        assert!(PasswordError::TooSimple.to_string().contains("mix"));
    }

    #[test]
    fn verify_rejects_non_argon2id_and_expensive_params() {
        assert!(!verify(
            "x",
            "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaA"
        ));
        assert!(!verify(
            "x",
            "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
        ));
        assert!(!verify("x", ""));
    }
}
