//! Checkpoint signing and verification.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use strata_audit::{
    Checkpoint, CheckpointError, CheckpointSigner, SignedCheckpoint, verify_checkpoint,
};

fn cp(size: u64) -> Checkpoint {
    Checkpoint {
        origin: "strata.test/audit".into(),
        tree_size: size,
        root_hash: [size as u8; 32],
        timestamp: 1_700_000_000 + size as i64,
    }
}

#[test]
fn sign_then_verify() {
    let (signer, _) = CheckpointSigner::generate().unwrap();
    let signed = signer.sign(cp(10));
    assert_eq!(signed.key_id, signer.key_id());
    verify_checkpoint(&signer.public_key(), &signed).unwrap();
}

#[test]
fn pkcs8_round_trip_keeps_the_key() {
    let (signer, pkcs8) = CheckpointSigner::generate().unwrap();
    let again = CheckpointSigner::from_pkcs8(&pkcs8).unwrap();
    assert_eq!(again.public_key(), signer.public_key());
    assert_eq!(again.key_id(), signer.key_id());
    verify_checkpoint(&signer.public_key(), &again.sign(cp(3))).unwrap();
    assert!(CheckpointSigner::from_pkcs8(b"not a key").is_err());
}

#[test]
fn tampered_body_fails() {
    let (signer, _) = CheckpointSigner::generate().unwrap();
    let pk = signer.public_key();
    let good = signer.sign(cp(10));
    let tamper: [fn(&mut Checkpoint); 4] = [
        |c| c.tree_size += 1,
        |c| c.root_hash[31] ^= 1,
        |c| c.timestamp -= 1,
        |c| c.origin.push('x'),
    ];
    for t in tamper {
        let mut bad = good.clone();
        t(&mut bad.checkpoint);
        assert_eq!(
            verify_checkpoint(&pk, &bad),
            Err(CheckpointError::BadSignature)
        );
    }
}

#[test]
fn wrong_key_fails() {
    let (signer, _) = CheckpointSigner::generate().unwrap();
    let (other, _) = CheckpointSigner::generate().unwrap();
    let signed = signer.sign(cp(5));
    assert!(matches!(
        verify_checkpoint(&other.public_key(), &signed),
        Err(CheckpointError::KeyIdMismatch { .. })
    ));
    // Even with the key id relabelled, the signature does not verify.
    let mut relabelled = signed.clone();
    relabelled.key_id = other.key_id();
    assert_eq!(
        verify_checkpoint(&other.public_key(), &relabelled),
        Err(CheckpointError::BadSignature)
    );
    assert_eq!(
        verify_checkpoint(&[0u8; 31], &signed),
        Err(CheckpointError::PublicKeyLength(31))
    );
}

#[test]
fn garbage_signatures_fail() {
    let (signer, _) = CheckpointSigner::generate().unwrap();
    let pk = signer.public_key();
    let mut s = signer.sign(cp(1));
    s.signature = "!!not base64!!".into();
    assert_eq!(
        verify_checkpoint(&pk, &s),
        Err(CheckpointError::SignatureEncoding)
    );
    s.signature = STANDARD.encode([0u8; 64]);
    assert_eq!(
        verify_checkpoint(&pk, &s),
        Err(CheckpointError::BadSignature)
    );
    s.signature = STANDARD.encode([0u8; 12]);
    assert_eq!(
        verify_checkpoint(&pk, &s),
        Err(CheckpointError::BadSignature)
    );
}

#[test]
fn signed_checkpoint_json_round_trip() {
    let (signer, _) = CheckpointSigner::generate().unwrap();
    let signed = signer.sign(cp(42));
    let json = serde_json::to_string(&signed).unwrap();
    assert!(json.contains("\"keyId\""), "{json}");
    assert!(json.contains("\"treeSize\":42"), "{json}");
    let back: SignedCheckpoint = serde_json::from_str(&json).unwrap();
    assert_eq!(back, signed);
    verify_checkpoint(&signer.public_key(), &back).unwrap();
}
