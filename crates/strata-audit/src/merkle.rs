//! RFC 6962 / RFC 9162 Merkle tree hashing, inclusion proofs and consistency proofs.
//!
//! Leaves are hashed with a `0x00` prefix and interior nodes with a `0x01`
//! prefix (RFC 9162 §2.1.1), so a leaf can never be confused with a node.
//! Proof generation follows the recursive definitions of RFC 9162 §2.1.3.1 and
//! §2.1.4.1; verification follows the iterative algorithms of §2.1.3.2 and
//! §2.1.4.2 exactly, and never panics on hostile input.

use ring::digest::{Context, SHA256, digest};

/// A SHA-256 digest: a leaf hash, node hash or tree root.
pub type Hash = [u8; 32];

/// Why a proof could not be produced or did not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is out of range for tree size {tree_size}")]
    IndexOutOfRange { index: u64, tree_size: u64 },
    /// A consistency proof was requested or checked with `first_size > second_size`.
    #[error("first tree size {first_size} is larger than second tree size {second_size}")]
    SizeOrder { first_size: u64, second_size: u64 },
    /// The proof has the wrong number of hashes for the given sizes and index.
    #[error("proof of length {len} has the wrong length for these tree sizes")]
    ProofLength { len: usize },
    /// The root recomputed from the proof (the second root, for consistency proofs)
    /// does not match the expected root.
    #[error("root recomputed from the proof does not match the expected root")]
    RootMismatch,
    /// The first root recomputed from a consistency proof does not match.
    #[error(
        "first root recomputed from the consistency proof does not match the expected first root"
    )]
    FirstRootMismatch,
    /// A compact tree frontier does not fit its claimed size.
    #[error("frontier of {len} hashes does not fit tree size {tree_size}")]
    BadFrontier { len: usize, tree_size: u64 },
}

fn to_hash(d: ring::digest::Digest) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `SHA-256(0x00 || data)`: the hash of one leaf.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x00]);
    ctx.update(data);
    to_hash(ctx.finish())
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x01]);
    ctx.update(left);
    ctx.update(right);
    to_hash(ctx.finish())
}

/// `SHA-256("")`: the root of the empty tree.
pub fn empty_root() -> Hash {
    to_hash(digest(&SHA256, b""))
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    1usize << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The Merkle tree hash (RFC 6962 §2.1) over already-hashed leaves.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof (audit path) for leaf `index` in the tree made of `leaves`
/// (RFC 9162 §2.1.3.1), ordered from the leaf up.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, ProofError> {
    let tree_size = leaves.len() as u64;
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange { index, tree_size });
    }
    let mut proof = Vec::new();
    path(leaves, index as usize, &mut proof);
    Ok(proof)
}

fn path(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if m < k {
        path(&leaves[..k], m, out);
        out.push(root(&leaves[k..]));
    } else {
        path(&leaves[k..], m - k, out);
        out.push(root(&leaves[..k]));
    }
}

/// Verifies that `leaf` is at `index` in the tree of `tree_size` leaves with the
/// given `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange { index, tree_size });
    }
    let len_err = ProofError::ProofLength { len: proof.len() };
    let mut f_n = index;
    let mut s_n = tree_size - 1;
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(len_err);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(len_err);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The consistency proof between the first `first_size` leaves and the whole tree
/// made of `leaves` (RFC 9162 §2.1.4.1). Empty when `first_size` is 0 or equals
/// the tree size.
pub fn consistency_proof(leaves: &[Hash], first_size: u64) -> Result<Vec<Hash>, ProofError> {
    let second_size = leaves.len() as u64;
    if first_size > second_size {
        return Err(ProofError::SizeOrder {
            first_size,
            second_size,
        });
    }
    let mut proof = Vec::new();
    if first_size > 0 {
        subproof(first_size as usize, leaves, true, &mut proof);
    }
    Ok(proof)
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, &leaves[..k], complete, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(root(&leaves[..k]));
    }
}

/// Verifies that the tree of `first_size` leaves with `first_root` is a prefix of
/// the tree of `second_size` leaves with `second_root` (RFC 9162 §2.1.4.2).
///
/// Edge cases the RFC leaves to the implementation: equal sizes need an empty
/// proof and equal roots; a first size of 0 needs an empty proof and the
/// empty-tree root as `first_root`.
pub fn verify_consistency(
    first_size: u64,
    second_size: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first_size > second_size {
        return Err(ProofError::SizeOrder {
            first_size,
            second_size,
        });
    }
    let len_err = ProofError::ProofLength { len: proof.len() };
    if first_size == second_size {
        if !proof.is_empty() {
            return Err(len_err);
        }
        if first_root != second_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    if first_size == 0 {
        if !proof.is_empty() {
            return Err(len_err);
        }
        if *first_root != empty_root() {
            return Err(ProofError::FirstRootMismatch);
        }
        return Ok(());
    }
    // 1. An empty proof cannot prove anything for 0 < first < second.
    let Some((head, rest)) = proof.split_first() else {
        return Err(len_err);
    };
    // 2. If first is a power of two, the proof omits first_root: prepend it.
    let (start, tail) = if first_size.is_power_of_two() {
        (first_root, proof)
    } else {
        (head, rest)
    };
    // 3-4.
    let mut f_n = first_size - 1;
    let mut s_n = second_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // 5.
    let mut fr = *start;
    let mut sr = *start;
    // 6.
    for c in tail {
        if s_n == 0 {
            return Err(len_err);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // 7.
    if s_n != 0 {
        return Err(len_err);
    }
    if fr != *first_root {
        return Err(ProofError::FirstRootMismatch);
    }
    if sr != *second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// An appendable Merkle tree that keeps only its right frontier: the roots of
/// the perfect subtrees that make up the tree, largest (leftmost) first. Append
/// is amortised O(1) hashes and `root()` is O(log n).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactTree {
    size: u64,
    frontier: Vec<Hash>,
}

impl CompactTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores a tree from a persisted `(size, frontier)` pair, as returned by
    /// [`CompactTree::size`] and [`CompactTree::frontier`].
    pub fn from_frontier(size: u64, frontier: Vec<Hash>) -> Result<Self, ProofError> {
        if frontier.len() != size.count_ones() as usize {
            return Err(ProofError::BadFrontier {
                len: frontier.len(),
                tree_size: size,
            });
        }
        Ok(Self { size, frontier })
    }

    /// Appends one already-hashed leaf.
    pub fn append(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            let Some(left) = self.frontier.pop() else {
                break;
            };
            h = node_hash(&left, &h);
            s >>= 1;
        }
        self.frontier.push(h);
        self.size += 1;
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Roots of the perfect subtrees, largest (leftmost) first; one per set bit of `size()`.
    pub fn frontier(&self) -> &[Hash] {
        &self.frontier
    }

    /// The RFC 6962 tree hash of all leaves appended so far.
    pub fn root(&self) -> Hash {
        let mut it = self.frontier.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(8), 4);
        assert_eq!(split_point(9), 8);
    }

    #[test]
    fn domain_separation() {
        let l = leaf_hash(b"");
        assert_ne!(l, empty_root());
        assert_ne!(node_hash(&l, &l), leaf_hash(&[l, l].concat()));
    }

    #[test]
    fn from_frontier_checks_shape() {
        let mut t = CompactTree::new();
        for i in 0u8..7 {
            t.append(leaf_hash(&[i]));
        }
        let back = CompactTree::from_frontier(t.size(), t.frontier().to_vec()).unwrap();
        assert_eq!(back, t);
        assert!(CompactTree::from_frontier(8, t.frontier().to_vec()).is_err());
    }

    #[test]
    fn single_leaf_tree() {
        let l = leaf_hash(b"x");
        assert_eq!(root(&[l]), l);
        assert!(inclusion_proof(&[l], 0).unwrap().is_empty());
        verify_inclusion(&l, 0, 1, &[], &l).unwrap();
        assert_eq!(
            verify_inclusion(&l, 1, 1, &[], &l),
            Err(ProofError::IndexOutOfRange {
                index: 1,
                tree_size: 1
            })
        );
    }

    #[test]
    fn empty_consistency_edge_cases() {
        let leaves: Vec<Hash> = (0u8..5).map(|i| leaf_hash(&[i])).collect();
        let r = root(&leaves);
        assert!(consistency_proof(&leaves, 0).unwrap().is_empty());
        verify_consistency(0, 5, &empty_root(), &r, &[]).unwrap();
        assert!(verify_consistency(0, 5, &r, &r, &[]).is_err());
        verify_consistency(5, 5, &r, &r, &[]).unwrap();
        assert!(verify_consistency(5, 5, &r, &r, &[r]).is_err());
        assert!(verify_consistency(3, 5, &r, &r, &[]).is_err());
        assert!(consistency_proof(&leaves, 6).is_err());
    }
}
