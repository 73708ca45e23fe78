//! Compact JWS parsing shared by access-token and client-assertion verification.
//!
//! Only splitting and decoding happen here; each caller checks the algorithm,
//! the key and the signature before it parses the payload.

use serde::Deserialize;

/// Largest token accepted, in bytes.
pub(crate) const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The JOSE header fields this crate looks at.
#[derive(Debug, Deserialize)]
pub(crate) struct Header {
    pub alg: String,
    #[serde(default)]
    pub typ: Option<String>,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default, rename = "x5t#S256")]
    pub x5t_s256: Option<String>,
    /// Any critical extension makes the token unacceptable (RFC 7515 §4.1.11).
    #[serde(default)]
    pub crit: Option<serde_json::Value>,
}

/// A split and decoded compact JWS whose signature is not yet verified.
pub(crate) struct Parts<'a> {
    pub header: Header,
    /// `base64url(header) "." base64url(payload)`, the bytes that were signed.
    pub signing_input: &'a [u8],
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JoseError {
    TooLarge,
    Malformed,
}

/// Splits a compact JWS into its three parts and decodes them.
pub(crate) fn split(token: &str) -> Result<Parts<'_>, JoseError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JoseError::TooLarge);
    }
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(JoseError::Malformed);
    };
    let header_bytes = crate::b64::decode(h).ok_or(JoseError::Malformed)?;
    let payload = crate::b64::decode(p).ok_or(JoseError::Malformed)?;
    let signature = crate::b64::decode(s).ok_or(JoseError::Malformed)?;
    let header: Header = serde_json::from_slice(&header_bytes).map_err(|_| JoseError::Malformed)?;
    if header.crit.is_some() {
        return Err(JoseError::Malformed);
    }
    let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
    Ok(Parts {
        header,
        signing_input,
        payload,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_shapes() {
        assert_eq!(split("a.b").err(), Some(JoseError::Malformed));
        assert_eq!(split("a.b.c.d").err(), Some(JoseError::Malformed));
        assert_eq!(split("").err(), Some(JoseError::Malformed));
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(split(&big).err(), Some(JoseError::TooLarge));
        let h = crate::b64::encode(br#"{"alg":"ES256"}"#);
        let ok = format!("{h}.e30.AAAA");
        let parts = split(&ok).unwrap();
        assert_eq!(parts.header.alg, "ES256");
        assert_eq!(parts.signing_input, format!("{h}.e30").as_bytes());
        assert_eq!(parts.payload, b"{}");
        let crit = crate::b64::encode(br#"{"alg":"ES256","crit":["exp"]}"#);
        assert_eq!(
            split(&format!("{crit}.e30.AAAA")).err(),
            Some(JoseError::Malformed)
        );
        assert_eq!(
            split(&format!("{h}=.e30.AAAA")).err(),
            Some(JoseError::Malformed)
        );
    }
}
