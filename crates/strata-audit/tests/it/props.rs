//! Property tests: generated proofs verify, tampered ones don't, and the
//! verifiers never panic.

use proptest::prelude::*;
use strata_audit::{
    CompactTree, Hash, consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency,
    verify_inclusion,
};

fn tree(n: usize, salt: u64) -> Vec<Hash> {
    (0..n as u64)
        .map(|i| leaf_hash(&[salt.to_le_bytes(), i.to_le_bytes()].concat()))
        .collect()
}

fn flip(h: &Hash) -> Hash {
    let mut x = *h;
    x[0] ^= 1;
    x
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn inclusion_proofs_verify_and_detect_tampering(n in 1usize..=300, salt in any::<u64>()) {
        let leaves = tree(n, salt);
        let r = root(&leaves);
        let size = n as u64;
        for (i, leaf) in leaves.iter().enumerate() {
            let i = i as u64;
            let proof = inclusion_proof(&leaves, i).unwrap();
            prop_assert!(verify_inclusion(leaf, i, size, &proof, &r).is_ok());
            prop_assert!(verify_inclusion(&flip(leaf), i, size, &proof, &r).is_err());
            prop_assert!(verify_inclusion(leaf, i, size, &proof, &flip(&r)).is_err());
            if n > 1 {
                let other = (i + 1) % size;
                prop_assert!(verify_inclusion(leaf, other, size, &proof, &r).is_err());
                prop_assert!(verify_inclusion(&leaves[other as usize], i, size, &proof, &r).is_err());
            }
        }
        prop_assert!(inclusion_proof(&leaves, size).is_err());
    }

    #[test]
    fn consistency_proofs_verify_and_detect_tampering(n in 1usize..=300, salt in any::<u64>()) {
        let leaves = tree(n, salt);
        let second = root(&leaves);
        let size = n as u64;
        for m in 1..=n {
            let first = root(&leaves[..m]);
            let m = m as u64;
            let proof = consistency_proof(&leaves, m).unwrap();
            prop_assert!(verify_consistency(m, size, &first, &second, &proof).is_ok());
            prop_assert!(verify_consistency(m, size, &flip(&first), &second, &proof).is_err());
            prop_assert!(verify_consistency(m, size, &first, &flip(&second), &proof).is_err());
            if m < size {
                let mut bad = proof.clone();
                let last = bad.len() - 1;
                bad[last] = flip(&bad[last]);
                prop_assert!(verify_consistency(m, size, &first, &second, &bad).is_err());
                prop_assert!(verify_consistency(m, size, &first, &second, &proof[..last]).is_err());
                // Swapping the roots claims the larger tree is a prefix of the smaller.
                prop_assert!(verify_consistency(m, size, &second, &first, &proof).is_err());
            }
        }
        prop_assert!(consistency_proof(&leaves, size + 1).is_err());
    }

    #[test]
    fn compact_tree_matches_root_after_every_append(n in 0usize..=300, salt in any::<u64>()) {
        let leaves = tree(n, salt);
        let mut t = CompactTree::new();
        prop_assert_eq!(t.root(), root(&[]));
        for (i, l) in leaves.iter().enumerate() {
            t.append(*l);
            prop_assert_eq!(t.size(), i as u64 + 1);
            prop_assert_eq!(t.root(), root(&leaves[..=i]));
        }
    }
}

fn arb_hash() -> impl Strategy<Value = Hash> {
    prop_oneof![Just([0u8; 32]), any::<[u8; 32]>(), Just(leaf_hash(b"")),]
}

fn arb_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..20,
        any::<u64>(),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(1u64 << 63)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn verify_inclusion_never_panics(
        leaf in arb_hash(), index in arb_size(), size in arb_size(),
        proof in prop::collection::vec(arb_hash(), 0..80), r in arb_hash(),
    ) {
        let _ = verify_inclusion(&leaf, index, size, &proof, &r);
    }

    #[test]
    fn verify_consistency_never_panics(
        first in arb_size(), second in arb_size(), a in arb_hash(), b in arb_hash(),
        proof in prop::collection::vec(arb_hash(), 0..80),
    ) {
        let _ = verify_consistency(first, second, &a, &b, &proof);
    }

    #[test]
    fn random_proofs_do_not_verify(
        index in 0u64..64, size in 1u64..64, a in any::<[u8; 32]>(), b in any::<[u8; 32]>(),
        proof in prop::collection::vec(any::<[u8; 32]>(), 0..8),
    ) {
        prop_assume!(index < size);
        prop_assume!(a != b);
        prop_assert!(verify_inclusion(&a, index, size, &proof, &b).is_err());
    }
}
