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
}

impl Dim {
    fn build(sets: &[&Ranges], layout: Layout) -> Self {
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
        Self { bounds, rows }
    }

    #[inline]
    fn row(&self, x: u32, stride: usize) -> &[u64] {
        let k = self.bounds.partition_point(|&b| b <= x).saturating_sub(1);
        &self.rows[k * stride..(k + 1) * stride]
    }
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
        let dim = |f: fn(&ExpandedRule) -> &Ranges| {
            Dim::build(&rules.iter().map(f).collect::<Vec<_>>(), layout)
        };
        Self {
            layout,
            protocol,
            src: dim(|r| &r.src),
            sport: dim(|r| &r.sports),
            dst: dim(|r| &r.dst),
            dport: dim(|r| &r.dports),
        }
    }

    /// The index of the first matching rule.
    #[inline]
    pub fn classify(&self, k: &Key) -> Option<usize> {
        let stride = self.layout.stride;
        let p = k.protocol as usize;
        let p = &self.protocol[p * stride..(p + 1) * stride];
        let dp = self.dport.row(k.dport, stride);
        let d = self.dst.row(k.dst, stride);
        let s = self.src.row(k.src, stride);
        let sp = self.sport.row(k.sport, stride);
        let summary = self.layout.summary;
        for i in 0..summary {
            let mut m = p[i] & dp[i] & d[i] & s[i] & sp[i];
            while m != 0 {
                let w = i * 64 + m.trailing_zeros() as usize;
                let o = summary + w;
                let x = p[o] & dp[o] & d[o] & s[o] & sp[o];
                if x != 0 {
                    return Some(w * 64 + x.trailing_zeros() as usize);
                }
                m &= m - 1;
            }
        }
        None
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
                + self.dport.bounds.len())
    }
}
