//! The compiled classifier: one NSG direction, with tags and ASGs already expanded to address
//! sets, decided by bit-vector intersection instead of a linear scan; and the naive first-match
//! scan it must agree with.
//!
//! Rules are numbered in evaluation order (priority ascending; the default rules last), and rule
//! `i` is bit `i`. Each of the five dimensions — protocol, source address, source port,
//! destination address, destination port — is cut into elementary intervals at every rule
//! boundary; each interval stores the bitset of rules that match it there. A decision looks up
//! one row per dimension (an index for the protocol, a binary search for the others) and the
//! lowest bit set in all five rows is the first matching rule. Each row carries a summary word
//! (bit `w` set when word `w` is non-zero), so the intersection visits only words that are
//! non-zero in every row: a flow that matches an early rule costs one or two words. An NSG
//! direction holds at most 3,997 custom rules (priorities 100–4096) plus 3 defaults, so 63
//! words and one summary word per row.
//!
//! Exactness: within an elementary interval every rule's membership is constant, so the row of
//! the interval containing a value is that value's match set; the proptest in
//! `tests/it/props.rs` checks classifier == scan on random NSGs and flows.

use crate::model::{Access, FlowProtocol, Protocol};
use crate::ranges::Ranges;

/// A flow reduced to what rules look at, in rule terms (source/destination, not local/remote).
/// Port-less protocols carry [`crate::ranges::PORTLESS`] in both port fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key {
    pub protocol: FlowProtocol,
    pub src: u32,
    pub sport: u32,
    pub dst: u32,
    pub dport: u32,
}

/// A rule with every side expanded to sets: the unit both algorithms evaluate.
#[derive(Clone, Debug)]
pub(crate) struct ExpandedRule {
    pub protocol: Protocol,
    pub src: Ranges,
    pub sports: Ranges,
    pub dst: Ranges,
    pub dports: Ranges,
    pub access: Access,
}

impl ExpandedRule {
    fn matches(&self, k: &Key) -> bool {
        self.protocol.matches(k.protocol)
            && self.dports.contains(k.dport)
            && self.sports.contains(k.sport)
            && self.dst.contains(k.dst)
            && self.src.contains(k.src)
    }
}

/// The naive algorithm: the first rule (in priority order) that matches.
pub(crate) fn scan(rules: &[ExpandedRule], k: &Key) -> Option<usize> {
    rules.iter().position(|r| r.matches(k))
}

/// One dimension cut into elementary intervals, a bitset row per interval.
#[derive(Clone, Debug)]
struct Dim {
    /// Interval starts, ascending; `bounds[0] == 0`.
    bounds: Vec<u32>,
    /// `bounds.len()` rows of `stride` words: summary words, then rule words.
    rows: Vec<u64>,
    /// `index[b]` is the first interval starting at or after `b << shift`: a value's interval
    /// is found by a binary search of `bounds[index[b]..index[b + 1]]` (plus one to the left)
    /// instead of all of `bounds`.
    index: Vec<u32>,
    shift: u32,
}

impl Dim {
    /// `bits`: the width of the dimension's values (32 for addresses, 17 for ports).
    fn build(sets: &[&Ranges], layout: Layout, bits: u32) -> Self {
        let mut bounds: Vec<u32> = sets.iter().flat_map(|s| s.boundaries()).collect();
        bounds.push(0);
        bounds.sort_unstable();
        bounds.dedup();
        let mut rows = vec![0u64; bounds.len() * layout.stride];
        for (bit, set) in sets.iter().enumerate() {
            for &(a, b) in set.intervals() {
                let first = bounds.partition_point(|&x| x < a);
                let last = bounds.partition_point(|&x| x <= b);
                for k in first..last {
                    rows[k * layout.stride + layout.summary + bit / 64] |= 1 << (bit % 64);
                }
            }
        }
        layout.summarize(&mut rows);
        let shift = bits.saturating_sub(INDEX_BITS);
        let buckets = 1u64 << (bits - shift);
        let index = (0..=buckets)
            .map(|b| {
                let start = b << shift;
                bounds.partition_point(|&x| u64::from(x) < start) as u32
            })
            .collect();
        Self {
            bounds,
            rows,
            index,
            shift,
        }
    }

    #[inline]
    fn row(&self, x: u32, stride: usize) -> &[u64] {
        let b = (x >> self.shift) as usize;
        let (lo, hi) = match (self.index.get(b), self.index.get(b + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            _ => (0, self.bounds.len()),
        };
        // The interval holding `x` starts in `lo..hi`, or is the one before `lo`.
        let k = match self.bounds.get(lo..hi) {
            Some(slice) => (lo + slice.partition_point(|&v| v <= x)).saturating_sub(1),
            None => 0,
        };
        &self.rows[k * stride..(k + 1) * stride]
    }
}

/// Buckets of a dimension's index: 2^8 per dimension.
const INDEX_BITS: u32 = 8;

/// The lowest bit set in every row: the first rule all dimensions match.
#[inline]
fn first_common<const N: usize>(rows: [&[u64]; N], summary: usize) -> Option<usize> {
    for i in 0..summary {
        let mut m = rows.iter().fold(u64::MAX, |acc, r| acc & r[i]);
        while m != 0 {
            let w = i * 64 + m.trailing_zeros() as usize;
            let o = summary + w;
            let x = rows.iter().fold(u64::MAX, |acc, r| acc & r[o]);
            if x != 0 {
                return Some(w * 64 + x.trailing_zeros() as usize);
            }
            m &= m - 1;
        }
    }
    None
}

#[derive(Clone, Copy, Debug)]
struct Layout {
    summary: usize,
    stride: usize,
}

impl Layout {
    fn new(rules: usize) -> Self {
        let words = rules.div_ceil(64).max(1);
        let summary = words.div_ceil(64);
        Self {
            summary,
            stride: summary + words,
        }
    }

    /// Fills each row's summary words from its rule words.
    fn summarize(self, rows: &mut [u64]) {
        for row in rows.chunks_exact_mut(self.stride) {
            let (summary, words) = row.split_at_mut(self.summary);
            summary.fill(0);
            for (w, &word) in words.iter().enumerate() {
                if word != 0 {
                    summary[w / 64] |= 1 << (w % 64);
                }
            }
        }
    }
}

/// A classifier's protocol rows pre-intersected with one local address.
#[derive(Clone, Debug)]
pub(crate) struct Specialized {
    rows: Vec<u64>,
    local_is_dst: bool,
}

/// The compiled form of one NSG direction.
#[derive(Clone, Debug)]
pub(crate) struct Classifier {
    layout: Layout,
    /// One row per [`FlowProtocol`], in `FlowProtocol::ALL` order.
    protocol: Vec<u64>,
    src: Dim,
    sport: Dim,
    dst: Dim,
    dport: Dim,
}

impl Classifier {
    pub fn build(rules: &[ExpandedRule]) -> Self {
        let layout = Layout::new(rules.len());
        let mut protocol = vec![0u64; FlowProtocol::ALL.len() * layout.stride];
        for (bit, rule) in rules.iter().enumerate() {
            for (p, fp) in FlowProtocol::ALL.iter().enumerate() {
                if rule.protocol.matches(*fp) {
                    protocol[p * layout.stride + layout.summary + bit / 64] |= 1 << (bit % 64);
                }
            }
        }
        layout.summarize(&mut protocol);
        let dim = |f: fn(&ExpandedRule) -> &Ranges, bits: u32| {
            Dim::build(&rules.iter().map(f).collect::<Vec<_>>(), layout, bits)
        };
        Self {
            layout,
            protocol,
            src: dim(|r| &r.src, 32),
            sport: dim(|r| &r.sports, 17),
            dst: dim(|r| &r.dst, 32),
            dport: dim(|r| &r.dports, 17),
        }
    }

    fn protocol_row(&self, p: FlowProtocol) -> &[u64] {
        let stride = self.layout.stride;
        let p = p as usize;
        &self.protocol[p * stride..(p + 1) * stride]
    }

    /// The index of the first matching rule.
    #[inline]
    pub fn classify(&self, k: &Key) -> Option<usize> {
        let stride = self.layout.stride;
        first_common(
            [
                self.protocol_row(k.protocol),
                self.dport.row(k.dport, stride),
                self.dst.row(k.dst, stride),
                self.src.row(k.src, stride),
                self.sport.row(k.sport, stride),
            ],
            self.layout.summary,
        )
    }

    /// The protocol rows already intersected with the row of one local address (the NIC's):
    /// a NIC-specialized classifier that looks up three dimensions instead of five. `local_is
    /// _dst` for inbound policies (the local address is the destination).
    pub fn specialize(&self, local: u32, local_is_dst: bool) -> Specialized {
        let stride = self.layout.stride;
        let local_row = if local_is_dst {
            self.dst.row(local, stride)
        } else {
            self.src.row(local, stride)
        };
        let mut rows = self.protocol.clone();
        for row in rows.chunks_exact_mut(stride) {
            for (w, l) in row.iter_mut().zip(local_row) {
                *w &= l;
            }
        }
        self.layout.summarize(&mut rows);
        Specialized { rows, local_is_dst }
    }

    /// [`Classifier::classify`] for a key whose local address is the specialization's.
    #[inline]
    pub fn classify_specialized(&self, s: &Specialized, k: &Key) -> Option<usize> {
        let stride = self.layout.stride;
        let p = k.protocol as usize;
        let remote = if s.local_is_dst { &self.src } else { &self.dst };
        let remote_addr = if s.local_is_dst { k.src } else { k.dst };
        first_common(
            [
                &s.rows[p * stride..(p + 1) * stride],
                self.dport.row(k.dport, stride),
                remote.row(remote_addr, stride),
                self.sport.row(k.sport, stride),
            ],
            self.layout.summary,
        )
    }

    /// Bytes held by the bitset rows (for the benchmark's report).
    pub fn memory_bytes(&self) -> usize {
        8 * (self.protocol.len()
            + self.src.rows.len()
            + self.sport.rows.len()
            + self.dst.rows.len()
            + self.dport.rows.len())
            + 4 * (self.src.bounds.len()
                + self.sport.bounds.len()
                + self.dst.bounds.len()
                + self.dport.bounds.len()
                + self.src.index.len()
                + self.sport.index.len()
                + self.dst.index.len()
                + self.dport.index.len())
    }
}
