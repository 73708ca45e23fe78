//! Client secrets and random tokens.

use strata_identity::secret;

#[test]
fn generate_hash_verify() {
    let s = secret::generate().unwrap();
    assert!(s.starts_with("stsec_"));
    assert_eq!(s.len(), 6 + 43);
    assert!(
        s[6..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let stored = secret::hash(&s);
    assert!(stored.starts_with("sha256:"));
    assert!(!stored.contains(&s[6..]));
    assert!(secret::verify(&s, &stored));
    assert!(!secret::verify(&secret::generate().unwrap(), &stored));
    assert!(!secret::verify(&s, ""));
    assert!(!secret::verify(&s, &stored[..stored.len() - 1]));
}

#[test]
fn random_tokens_are_distinct() {
    let a = secret::random_token(32).unwrap();
    let b = secret::random_token(32).unwrap();
    assert_eq!(a.len(), 43);
    assert_ne!(a, b);
    assert!(secret::random_token(0).is_err());
}
