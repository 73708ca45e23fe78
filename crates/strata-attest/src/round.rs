//! What binds one attestation round together: the quote's qualifying data covers the control
//! plane's single-use nonce and the TLS public key the agent wants certified for that round,
//! so the TPM's signature vouches for both (agent and control plane compute it identically).

/// `SHA-256("strata-attestation-round-v1\0" ‖ len(nonce) as u32 BE ‖ nonce ‖ agent key)`.
pub fn qualifying_data(nonce: &[u8], agent_public_key: &[u8]) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"strata-attestation-round-v1\0");
    ctx.update(&u32::try_from(nonce.len()).unwrap_or(u32::MAX).to_be_bytes());
    ctx.update(nonce);
    ctx.update(agent_public_key);
    ctx.finish().as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_nonce_and_key_without_ambiguity() {
        let a = qualifying_data(b"nonce", b"key");
        assert_eq!(a.len(), 32);
        assert_ne!(
            a,
            qualifying_data(b"nonc", b"ekey"),
            "length prefix separates fields"
        );
        assert_ne!(a, qualifying_data(b"nonce", b"kez"));
        assert_eq!(a, qualifying_data(b"nonce", b"key"));
    }
}
