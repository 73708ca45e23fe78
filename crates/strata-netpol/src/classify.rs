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
use crate::ranges::{PORTLESS, Ranges};

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

/// Bitset rows stored packed: each row is its summary words followed by only its non-zero
/// rule words, in order. Word `w` of a row is at `summary + rank(w)`, where `rank(w)` counts
/// the summary bits below `w`. A remote-address row typically has a handful of non-zero words
/// out of 63, so packing cuts the memory a lookup touches (and the table's size) severalfold.
#[derive(Clone, Debug, Default)]
struct Packed {
    /// Row `k` is `pool[offsets[k]..offsets[k + 1]]`.
    offsets: Vec<u32>,
    pool: Vec<u64>,
}

impl Packed {
    /// Packs dense rows of `layout.stride` words (summaries already filled).
    fn pack(dense: &[u64], layout: Layout) -> Self {
        let mut packed = Self {
            offsets: vec![0],
            pool: Vec::new(),
        };
        for row in dense.chunks_exact(layout.stride) {
            let (summary, words) = row.split_at(layout.summary);
            packed.pool.extend_from_slice(summary);
            packed
                .pool
                .extend(words.iter().copied().filter(|&w| w != 0));
            packed.offsets.push(packed.pool.len() as u32);
        }
        packed
    }

    #[inline]
    fn row(&self, k: usize) -> &[u64] {
        match (self.offsets.get(k), self.offsets.get(k + 1)) {
            (Some(&a), Some(&b)) => self.pool.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// Word `w` of a packed row.
///
/// INVARIANT: callers ask only for words whose summary bit is set in this row (candidates come
/// from the intersection of every row's summary); otherwise the word returned is another one.
#[inline]
fn word(row: &[u64], summary: usize, w: usize) -> u64 {
    let (si, bit) = (w / 64, w % 64);
    let below = row
        .get(..si)
        .map_or(0, |s| s.iter().map(|x| x.count_ones()).sum::<u32>());
    let partial = row
        .get(si)
        .map_or(0, |s| (s & ((1u64 << bit) - 1)).count_ones());
    row.get(summary + (below + partial) as usize)
        .copied()
        .unwrap_or(0)
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

/// A dimension's index has at most 2^12 buckets (16 KiB).
const INDEX_BITS: u32 = 12;

impl Dim {
    /// `bits`: the width of the dimension's values (32 for addresses, 17 for ports).
    fn build(sets: &[&Ranges], layout: Layout, bits: u32) -> Self {
        let mut bounds: Vec<u32> = sets.iter().flat_map(|s| s.boundaries()).collect();
        bounds.push(0);
        if bits == 17 {
            // Port dimensions: the port-less value gets an interval of its own.
            bounds.extend([PORTLESS, PORTLESS + 1]);
        }
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
        // About two buckets per interval (at most 2^12), so a bucket holds about one bound
        // and the index stays small enough to sit in L1 next to the rows.
        let index_bits = (usize::BITS - bounds.len().leading_zeros() + 1).clamp(4, INDEX_BITS);
        let shift = bits.saturating_sub(index_bits);
        let buckets = 1u64 << (bits - shift);
        let mut index = Vec::with_capacity(buckets as usize + 1);
        let mut k = 0;
        for b in 0..=buckets {
            while bounds.get(k).is_some_and(|&x| u64::from(x) < b << shift) {
                k += 1;
            }
            index.push(k as u32);
        }
        Self {
            bounds,
            rows,
            index,
            shift,
        }
    }

    #[inline]
    fn row(&self, x: u32, stride: usize) -> &[u64] {
        let k = self.interval(x);
        &self.rows[k * stride..(k + 1) * stride]
    }

    /// The index of the interval holding `x`.
    #[inline]
    fn interval(&self, x: u32) -> usize {
        let b = (x >> self.shift) as usize;
        let (lo, hi) = match (self.index.get(b), self.index.get(b + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            _ => (0, self.bounds.len()),
        };
        // The interval holding `x` starts in `lo..hi`, or is the one before `lo`.
        match self.bounds.get(lo..hi) {
            Some(slice) => (lo + slice.partition_point(|&v| v <= x)).saturating_sub(1),
            None => 0,
        }
    }
}

/// The lowest bit set in the packed row and every dense row: the first rule all dimensions
/// match. Candidate words are those set in every row's summary; the packed row (protocol ×
/// destination port, usually sparse) is what keeps them few.
#[inline]
fn first_common<const N: usize>(
    packed: &[u64],
    dense: [&[u64]; N],
    summary: usize,
) -> Option<usize> {
    for i in 0..summary {
        let mut m = dense
            .iter()
            .fold(packed.get(i).copied().unwrap_or(0), |acc, r| acc & r[i]);
        while m != 0 {
            let w = i * 64 + m.trailing_zeros() as usize;
            let o = summary + w;
            let x = dense
                .iter()
                .fold(word(packed, summary, w), |acc, r| acc & r[o]);
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

/// A classifier's row for one local address (the NIC's), looked up once.
#[derive(Clone, Debug)]
pub(crate) struct Specialized {
    /// The dense row of the local address.
    local_row: Vec<u64>,
    local_is_dst: bool,
}

/// The compiled form of one NSG direction.
#[derive(Clone, Debug)]
pub(crate) struct Classifier {
    layout: Layout,
    /// Protocol × destination-port rows, pre-intersected: row `p * intervals + k` for protocol
    /// `FlowProtocol::ALL[p]` and destination-port interval `k`. Port-less protocols only ever
    /// meet the port-less interval; their other rows are stored empty.
    protocol_port: Packed,
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
        let dport = dim(|r| &r.dports, 17);
        let stride = layout.stride;
        let intervals = dport.bounds.len();
        let mut combined = vec![0u64; FlowProtocol::ALL.len() * intervals * stride];
        for (p, fp) in FlowProtocol::ALL.iter().enumerate() {
            let proto = &protocol[p * stride..(p + 1) * stride];
            for k in 0..intervals {
                let portless_interval = dport.bounds[k] == PORTLESS;
                if fp.has_ports() == portless_interval {
                    continue;
                }
                let port = &dport.rows[k * stride..(k + 1) * stride];
                let at = (p * intervals + k) * stride;
                for (w, (a, b)) in proto.iter().zip(port).enumerate().skip(layout.summary) {
                    combined[at + w] = a & b;
                }
            }
        }
        layout.summarize(&mut combined);
        Self {
            layout,
            protocol_port: Packed::pack(&combined, layout),
            src: dim(|r| &r.src, 32),
            sport: dim(|r| &r.sports, 17),
            dst: dim(|r| &r.dst, 32),
            dport,
        }
    }

    #[inline]
    fn protocol_port_row(&self, k: &Key) -> &[u64] {
        let intervals = self.dport.bounds.len();
        self.protocol_port
            .row(k.protocol as usize * intervals + self.dport.interval(k.dport))
    }

    /// The index of the first matching rule.
    #[inline]
    pub fn classify(&self, k: &Key) -> Option<usize> {
        let stride = self.layout.stride;
        first_common(
            self.protocol_port_row(k),
            [
                self.dst.row(k.dst, stride),
                self.src.row(k.src, stride),
                self.sport.row(k.sport, stride),
            ],
            self.layout.summary,
        )
    }

    /// Looks up the row of one local address (the NIC's) once: a NIC-specialized classifier
    /// searches two address/port dimensions per decision instead of three. `local_is_dst` for
    /// inbound policies (the local address is the destination).
    pub fn specialize(&self, local: u32, local_is_dst: bool) -> Specialized {
        let stride = self.layout.stride;
        let local_dim = if local_is_dst { &self.dst } else { &self.src };
        Specialized {
            local_row: local_dim.row(local, stride).to_vec(),
            local_is_dst,
        }
    }

    /// [`Classifier::classify`] for a key whose local address is the specialization's.
    #[inline]
    pub fn classify_specialized(&self, s: &Specialized, k: &Key) -> Option<usize> {
        let stride = self.layout.stride;
        let (remote, remote_addr) = if s.local_is_dst {
            (&self.src, k.src)
        } else {
            (&self.dst, k.dst)
        };
        first_common(
            self.protocol_port_row(k),
            [
                &s.local_row,
                remote.row(remote_addr, stride),
                self.sport.row(k.sport, stride),
            ],
            self.layout.summary,
        )
    }

    /// Bytes held by the tables (for the benchmark's report).
    pub fn memory_bytes(&self) -> usize {
        let dim = |d: &Dim| 8 * d.rows.len() + 4 * (d.bounds.len() + d.index.len());
        8 * self.protocol_port.pool.len()
            + 4 * self.protocol_port.offsets.len()
            + dim(&self.src)
            + dim(&self.sport)
            + dim(&self.dst)
            + dim(&self.dport)
    }
}
