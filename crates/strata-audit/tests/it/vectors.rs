//! Known-answer tests against the Certificate Transparency reference vectors.

use strata_audit::{
    CompactTree, Hash, consistency_proof, empty_root, inclusion_proof, leaf_hash, root,
    verify_consistency, verify_inclusion,
};

use crate::{h, unhex};

const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn leaves() -> Vec<Hash> {
    LEAVES.iter().map(|l| leaf_hash(&unhex(l))).collect()
}

fn hashes(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|s| h(s)).collect()
}

#[test]
fn empty_tree_root_is_sha256_of_nothing() {
    assert_eq!(
        empty_root(),
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(root(&[]), empty_root());
    assert_eq!(CompactTree::new().root(), empty_root());
}

#[test]
fn reference_roots_for_sizes_1_to_8() {
    let leaves = leaves();
    for n in 1..=8 {
        assert_eq!(root(&leaves[..n]), h(ROOTS[n - 1]), "size {n}");
    }
}

#[test]
fn compact_tree_reproduces_reference_roots() {
    let mut t = CompactTree::new();
    for (i, l) in leaves().into_iter().enumerate() {
        t.append(l);
        assert_eq!(t.size(), i as u64 + 1);
        assert_eq!(t.root(), h(ROOTS[i]), "size {}", i + 1);
    }
}

#[test]
fn reference_leaf_hashes() {
    let l = leaves();
    assert_eq!(
        l[0],
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    );
    assert_eq!(
        l[1],
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7")
    );
}

#[test]
fn reference_inclusion_proofs() {
    let leaves = leaves();
    let cases: [(u64, usize, &[&str]); 5] = [
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (index, size, expected) in cases {
        let proof = inclusion_proof(&leaves[..size], index).unwrap();
        assert_eq!(proof, hashes(expected), "index {index} size {size}");
        verify_inclusion(
            &leaves[index as usize],
            index,
            size as u64,
            &proof,
            &h(ROOTS[size - 1]),
        )
        .unwrap();
    }
}

#[test]
fn reference_consistency_proofs() {
    let leaves = leaves();
    let cases: [(u64, usize, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            3,
            8,
            &[
                "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
                "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
    ];
    for (m, n, expected) in cases {
        let proof = consistency_proof(&leaves[..n], m).unwrap();
        assert_eq!(proof, hashes(expected), "{m} -> {n}");
        verify_consistency(
            m,
            n as u64,
            &h(ROOTS[m as usize - 1]),
            &h(ROOTS[n - 1]),
            &proof,
        )
        .unwrap();
    }
}

#[test]
fn reference_proofs_reject_tampering() {
    // Mirrors the CT verifier checks: wrong index, size, leaf, root, garbage.
    let leaves = leaves();
    let root8 = h(ROOTS[7]);
    let proof = inclusion_proof(&leaves, 5).unwrap();
    let leaf = leaves[5];
    assert!(verify_inclusion(&leaf, 4, 8, &proof, &root8).is_err());
    assert!(verify_inclusion(&leaf, 6, 8, &proof, &root8).is_err());
    assert!(verify_inclusion(&leaf, 5 ^ 2, 8, &proof, &root8).is_err());
    assert!(verify_inclusion(&leaf, 5, 16, &proof, &root8).is_err());
    assert!(verify_inclusion(&leaf, 5, 4, &proof, &root8).is_err());
    assert!(verify_inclusion(&leaves[4], 5, 8, &proof, &root8).is_err());
    assert!(verify_inclusion(&leaf, 5, 8, &proof, &empty_root()).is_err());
    for i in 0..proof.len() {
        let mut p = proof.clone();
        p[i] = empty_root();
        assert!(verify_inclusion(&leaf, 5, 8, &p, &root8).is_err());
    }
    let mut longer = proof.clone();
    longer.push(root8);
    assert!(verify_inclusion(&leaf, 5, 8, &longer, &root8).is_err());
    assert!(verify_inclusion(&leaf, 5, 8, &proof[..2], &root8).is_err());
    let mut front = vec![root8];
    front.extend_from_slice(&proof);
    assert!(verify_inclusion(&leaf, 5, 8, &front, &root8).is_err());

    let (r3, r8) = (h(ROOTS[2]), root8);
    let c = consistency_proof(&leaves, 3).unwrap();
    verify_consistency(3, 8, &r3, &r8, &c).unwrap();
    assert!(verify_consistency(2, 8, &r3, &r8, &c).is_err());
    assert!(verify_consistency(4, 8, &r3, &r8, &c).is_err());
    assert!(verify_consistency(3, 16, &r3, &r8, &c).is_err());
    assert!(verify_consistency(3, 4, &r3, &r8, &c).is_err());
    assert!(verify_consistency(3, 8, &r8, &r3, &c).is_err());
    assert!(verify_consistency(3, 8, &r3, &r8, &[]).is_err());
    assert!(verify_consistency(3, 8, &r3, &r8, &c[1..]).is_err());
    let mut longer = c.clone();
    longer.push(r3);
    assert!(verify_consistency(3, 8, &r3, &r8, &longer).is_err());
    let mut front = vec![c[0]];
    front.extend_from_slice(&c);
    assert!(verify_consistency(3, 8, &r3, &r8, &front).is_err());
}
