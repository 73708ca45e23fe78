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
//!
//! The hot path — a flow at a NIC's own address, what the dataplane decides — does not
//! intersect bitsets: a [`Specialized`] table per distinct local-address row (shared by the NICs
//! whose address matches the same rules, built on first use) maps the protocol and destination
//! port straight to a *class* (the set of rules matching them and the local address; a 16-port
//! block table), and each class stores, per remote-address interval of its own rules, the first
//! matching rule (a bucket index on the address's top bits whose entry answers without a
//! branch when the bucket holds no interval start, one, or one power-of-two hole). A decision is a handful of dependent loads; source ports
//! are checked only on the rare intervals whose first rule restricts them. See [`LocalTable`].

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

/// Marks an answer that is an offset into [`LocalTable::lists`] rather than a rule.
const LIST: u32 = 1 << 30;
/// Marks the last rule of a list in [`LocalTable::lists`].
const LAST: u32 = 1 << 31;
/// The answer "no rule matches" (answers fit in 30 bits: rules and list offsets are fewer).
const NONE: u32 = (1 << 30) - 1;
/// Bucket-index entries are 64 bits. Most are a *span* (bit 63 clear): the bucket's answer is
/// one of two, `inside` for the addresses `[s, s + 2^m)` of the bucket and `outside` for the
/// rest, picked without a branch. The low 27 bits are `s`'s offset in the bucket (buckets of
/// indexed classes are at most 2^27 addresses), bits 27–31 `m`, bits 32–46 `inside` and bits
/// 47–61 `outside` (answers in the 15-bit [`narrow`] form). A span covers a bucket in which no
/// interval starts (`s = 0`, `m` the bucket's width), one interval starts (from its start to
/// the bucket's end: `m` the bucket's width, and the offset wraps below `s`), or a hole: one
/// interval `2^m` long (what a /32 or a small prefix makes) with the same answer on both
/// sides. Other buckets ([`SEARCH`] set) hold where in `entries` the intervals to search are:
/// from the first at or after the bucket's start (low 32 bits) to the end of those starting
/// in it (bits 32–62).
const SEARCH: u64 = 1 << 63;
const SPAN_OFFSET: u32 = (1 << 27) - 1;
/// A 15-bit answer: a rule below [`NARROW_LIST`], a list offset flagged [`NARROW_LIST`], or
/// [`NARROW_NONE`].
const NARROW_LIST: u32 = 1 << 14;
const NARROW_NONE: u32 = (1 << 15) - 1;

/// An answer in 15 bits, if it fits (rules are fewer than 2^14; list offsets may not be).
fn narrow(answer: u32) -> Option<u64> {
    if answer == NONE {
        Some(u64::from(NARROW_NONE))
    } else if answer & LIST != 0 {
        let at = answer & !LIST;
        (at < NARROW_NONE - NARROW_LIST).then_some(u64::from(NARROW_LIST | at))
    } else {
        (answer < NARROW_LIST).then_some(u64::from(answer))
    }
}

/// The answer a [`narrow`] form stands for (without a branch).
#[inline]
fn widen(v: u32) -> u32 {
    let wide = (v & NARROW_LIST) << 16 | (v & (NARROW_LIST - 1));
    if v == NARROW_NONE { NONE } else { wide }
}

/// A span entry (see [`SEARCH`]).
fn span(offset: u64, m: u64, inside: u64, outside: u64) -> u64 {
    outside << 47 | inside << 32 | m << 27 | offset
}

/// One policy direction specialized to one local address (a NIC's): with the local address
/// fixed, only the remote address and the two ports are left, and the protocol and destination
/// port narrow the rules to a *class* before the remote address is looked at.
///
/// - `class_of[p * intervals + k]`: the class of protocol `FlowProtocol::ALL[p]` and
///   destination-port interval `k` (the classifier's `dport` intervals). A class is a distinct
///   set of rules matching the protocol, the port interval and the local address; equal sets
///   share one class.
/// - A class cuts the remote address into intervals at its own rules' boundaries only (adjacent
///   intervals with the same answer merged), and each interval stores its answer directly: the
///   first rule of the class whose remote set holds the interval. So a decision is one
///   destination-port lookup, one index, one binary search in a short array, one load.
/// - Source ports: rules rarely restrict them. An answer whose first rule takes every source
///   port is that rule; otherwise it points to the list, in priority order, of the interval's
///   rules up to the first one that takes every source port, checked in turn.
///
/// Exactness: the class holds exactly the rules matching protocol, destination port and local
/// address; within a remote interval each of its rules matches everywhere or nowhere; the list
/// is that interval's matching rules in order, cut after the first that cannot fail on the
/// source port. The proptest (classifier == scan) covers it through [`Network::classify`].
///
/// [`Network::classify`]: crate::Network::classify
#[derive(Debug, Default)]
pub(crate) struct LocalTable {
    /// TCP and UDP ports → class [`descriptor`], two levels: `port_l1[p << 12 | port >> 4]`
    /// is the descriptor of all 16 ports of that block, or [`L2`] | the offset of the block's
    /// 16 descriptors in `port_l2`.
    port_l1: Vec<u32>,
    port_l2: Vec<u32>,
    /// The class descriptor of each protocol's port-less key (ICMP, ESP, AH; for TCP and UDP the empty
    /// class, which a real flow never meets).
    portless: [u32; 5],
    classes: Vec<ClassInfo>,
    /// Remote intervals of every class: `[start, answer]` (each class's first starts at 0);
    /// the answer sits next to its bound, on the same cache line.
    entries: Vec<[u32; 2]>,
    /// Per large class, bucket `b` of the remote address's top bits: a span (two answers and
    /// where the one applies) when the bucket has no interval start, one, or one hole inside;
    /// else where its intervals are ([`SEARCH`]).
    index: Vec<u64>,
    /// Rule lists (rule indexes, the last one flagged [`LAST`]).
    lists: Vec<u32>,
}

/// Where a class's intervals are, and its bucket index when it has many.
#[derive(Clone, Copy, Debug, Default)]
struct ClassInfo {
    start: u32,
    len: u32,
    /// Offset of its bucket index in `LocalTable::index` (unused when `shift == 32`).
    index: u32,
    /// Bucket of an address: `remote >> shift`; 32 for "no index".
    shift: u32,
}

/// Marks a `port_l1` entry pointing into `port_l2`.
const L2: u32 = 1 << 31;
/// The port tables hold a class *descriptor*: for an indexed class, where its bucket index
/// starts (low 25 bits) and its shift (bits 25–29), so that a decision goes from the port to
/// the bucket entry without loading the class; otherwise [`CLASS`] | the class number.
const CLASS: u32 = 1 << 30;
const DESC_SHIFT: u32 = 25;
const DESC_OFFSET: u32 = (1 << DESC_SHIFT) - 1;

/// The descriptor of class number `id` (see [`CLASS`]).
fn descriptor(c: &ClassInfo, id: u32) -> u32 {
    if c.shift < 32 && c.index <= DESC_OFFSET {
        c.index | c.shift << DESC_SHIFT
    } else {
        CLASS | id
    }
}
/// Classes with more intervals than this get a bucket index (at least 32 buckets, so that a
/// span's offset fits its 27 bits): even a class of a few intervals then answers from one
/// entry, mostly without a search.
const INDEXED: usize = 1;

impl LocalTable {
    fn memory_bytes(&self) -> usize {
        4 * (self.port_l1.len() + self.port_l2.len() + self.lists.len())
            + 8 * self.index.len()
            + 8 * self.entries.len()
            + 16 * self.classes.len()
    }

    /// The answer of class `c` for remote address `x`.
    #[inline]
    fn answer(&self, c: &ClassInfo, x: u32) -> u32 {
        if c.shift < 32 {
            return self.answer_indexed(c.index, c.shift, x);
        }
        let (start, end) = (c.start as usize, c.start as usize + c.len as usize);
        self.search(start, end, x)
    }

    /// The answer for remote address `x` of the class whose bucket index starts at `index`.
    #[inline]
    fn answer_indexed(&self, index: u32, shift: u32, x: u32) -> u32 {
        let e = self
            .index
            .get(index as usize + (x >> shift) as usize)
            .copied()
            .unwrap_or(span(0, 27, u64::from(NARROW_NONE), u64::from(NARROW_NONE)));
        let low = e as u32;
        if e & SEARCH == 0 {
            // x's offset from the span's start; below the start it wraps past 2^m.
            let from = (x & ((1 << shift) - 1)).wrapping_sub(low & SPAN_OFFSET);
            let shift = if from >> (low >> 27) == 0 { 32 } else { 47 };
            return widen(((e >> shift) as u32) & NARROW_NONE);
        }
        self.search(low as usize, ((e >> 32) as u32 & !(1 << 31)) as usize, x)
    }

    /// The answer of the interval holding `x`: it starts in `entries[lo..hi]`, or is the one
    /// before `lo` (never before the class's first, which starts at 0).
    #[inline]
    fn search(&self, lo: usize, hi: usize, x: u32) -> u32 {
        let i = match self.entries.get(lo..hi) {
            Some(slice) => (lo + slice.partition_point(|e| e[0] <= x)).saturating_sub(1),
            None => lo,
        };
        self.entries.get(i).map_or(NONE, |e| e[1])
    }
}

/// A classifier specialized to one local address (the NIC's): one per distinct set of rules
/// that local addresses match (NICs that match the same rules share it), its table built on
/// first use so that compiling a network (every control-plane write) does not pay for it.
#[derive(Clone, Debug)]
pub(crate) struct Specialized {
    table: std::sync::Arc<std::sync::OnceLock<LocalTable>>,
    local_row: std::sync::Arc<[u64]>,
    local_is_dst: bool,
}

impl Specialized {
    /// Bytes held by the table (0 before first use), and its identity (tables are shared).
    pub fn memory(&self) -> (usize, usize) {
        (
            self.table.get().map_or(0, LocalTable::memory_bytes),
            std::sync::Arc::as_ptr(&self.table) as usize,
        )
    }
}

/// Union-find "next interval still open", so that painting skips closed intervals.
fn next_open(next: &mut [usize], mut i: usize) -> usize {
    let mut root = i;
    while next[root] != root {
        root = next[root];
    }
    while next[i] != root {
        let up = next[i];
        next[i] = root;
        i = up;
    }
    root
}

/// The compiled form of one NSG direction.
#[derive(Clone, Debug)]
pub(crate) struct Classifier {
    layout: Layout,
    /// Each rule's source ports, and whether they are every port (for specialized tables).
    sports: Vec<Ranges>,
    sport_any: Vec<bool>,
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
        let every_port = crate::ranges::all_ports();
        Self {
            layout,
            sports: rules.iter().map(|r| r.sports.clone()).collect(),
            sport_any: rules.iter().map(|r| r.sports == every_port).collect(),
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

    /// The rule indexes set in a dense row.
    fn row_rules(&self, row: &[u64]) -> Vec<usize> {
        let words = row.get(self.layout.summary..).unwrap_or(&[]);
        let mut out = Vec::new();
        for (w, &word) in words.iter().enumerate() {
            let mut m = word;
            while m != 0 {
                out.push(w * 64 + m.trailing_zeros() as usize);
                m &= m - 1;
            }
        }
        out
    }

    /// The dense row of the local address `local` (its dimension's row): which rules it
    /// matches. NICs with equal rows share a [`Specialized`] table.
    pub fn local_row(&self, local: u32, local_is_dst: bool) -> Vec<u64> {
        let local_dim = if local_is_dst { &self.dst } else { &self.src };
        local_dim.row(local, self.layout.stride).to_vec()
    }

    /// The specialization for a local address whose row is `local_row` (its table is built on
    /// first use). `local_is_dst` for inbound policies (the local address is the destination).
    pub fn specialize(local_row: Vec<u64>, local_is_dst: bool) -> Specialized {
        Specialized {
            table: std::sync::Arc::default(),
            local_row: local_row.into(),
            local_is_dst,
        }
    }

    /// Builds the table of a specialization (see [`LocalTable`]).
    fn build_table(
        &self,
        rules: &[ExpandedRule],
        local_row: &[u64],
        local_is_dst: bool,
    ) -> LocalTable {
        let (summary, stride) = (self.layout.summary, self.layout.stride);
        let intervals = self.dport.bounds.len();
        let mut table = LocalTable::default();
        let mut class_of: Vec<u32> = Vec::with_capacity(FlowProtocol::ALL.len() * intervals);
        let mut classes: std::collections::HashMap<Vec<u64>, u32> =
            std::collections::HashMap::new();
        let mut dense = vec![0u64; stride];
        for p in 0..FlowProtocol::ALL.len() {
            for k in 0..intervals {
                // The packed protocol × port row, unpacked, and the local row.
                let packed = self.protocol_port.row(p * intervals + k);
                dense.fill(0);
                let words = &mut dense[summary..];
                for (w, slot) in words.iter_mut().enumerate() {
                    let set = packed
                        .get(w / 64)
                        .is_some_and(|s| s & (1u64 << (w % 64)) != 0);
                    if set {
                        *slot = word(packed, summary, w)
                            & local_row.get(summary + w).copied().unwrap_or(0);
                    }
                }
                let key = dense[summary..].to_vec();
                let next = u32::try_from(classes.len()).unwrap_or(u32::MAX);
                let class = *classes.entry(key).or_insert_with(|| {
                    self.add_class(&mut table, rules, &dense, local_is_dst);
                    next
                });
                class_of.push(class);
            }
        }
        let descriptors: Vec<u32> = (0u32..)
            .zip(&table.classes)
            .map(|(id, c)| descriptor(c, id))
            .collect();
        let class_at = |p: usize, k: usize| {
            class_of
                .get(p * intervals + k)
                .and_then(|&c| descriptors.get(c as usize))
                .copied()
                .unwrap_or(CLASS)
        };
        let bounds = &self.dport.bounds;
        for (p, fp) in FlowProtocol::ALL.iter().enumerate() {
            table.portless[p] = class_at(p, self.dport.interval(PORTLESS));
            if !fp.has_ports() {
                continue;
            }
            // Ports in order, walking the port intervals alongside.
            let mut k = 0;
            let mut block = [0u32; 16];
            for port in 0..PORTLESS {
                while bounds.get(k + 1).is_some_and(|&b| b <= port) {
                    k += 1;
                }
                block[(port & 15) as usize] = class_at(p, k);
                if port & 15 == 15 {
                    if block.iter().all(|&c| c == block[0]) {
                        table.port_l1.push(block[0]);
                    } else {
                        table.port_l1.push(L2 | table.port_l2.len() as u32);
                        table.port_l2.extend_from_slice(&block);
                    }
                }
            }
        }
        table
    }

    /// Appends one class (the rules set in `row`) to `table`.
    fn add_class(
        &self,
        table: &mut LocalTable,
        rules: &[ExpandedRule],
        row: &[u64],
        local_is_dst: bool,
    ) {
        let members = self.row_rules(row);
        let remote = |r: usize| {
            let rule = &rules[r];
            if local_is_dst { &rule.src } else { &rule.dst }
        };
        let mut bounds: Vec<u32> = members
            .iter()
            .flat_map(|&r| remote(r).boundaries().collect::<Vec<_>>())
            .collect();
        bounds.push(0);
        bounds.sort_unstable();
        bounds.dedup();
        // Paint: each interval gets its rules in order until one takes every source port.
        let n = bounds.len();
        let mut found: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut next: Vec<usize> = (0..=n).collect();
        for &r in &members {
            let closes = self.sport_any.get(r).copied().unwrap_or(false);
            for &(a, b) in remote(r).intervals() {
                let first = bounds.partition_point(|&x| x < a);
                let last = bounds.partition_point(|&x| x <= b);
                let mut i = next_open(&mut next, first);
                while i < last {
                    found[i].push(r as u32);
                    if closes {
                        next[i] = i + 1;
                    }
                    i = next_open(&mut next, i + 1);
                }
            }
        }
        let mut last_answer: Option<&[u32]> = None;
        for (i, list) in found.iter().enumerate() {
            if last_answer == Some(list.as_slice()) {
                continue;
            }
            last_answer = Some(list.as_slice());
            let answer = match list.as_slice() {
                [] => NONE,
                [r] if self.sport_any.get(*r as usize).copied().unwrap_or(false) => *r,
                _ => {
                    let at = table.lists.len() as u32 | LIST;
                    table.lists.extend_from_slice(list);
                    if let Some(end) = table.lists.last_mut() {
                        *end |= LAST;
                    }
                    at
                }
            };
            table.entries.push([bounds[i], answer]);
        }
        let start = table.classes.last().map_or(0, |c| c.start + c.len);
        let len = table.entries.len() as u32 - start;
        let mut info = ClassInfo {
            start,
            len,
            index: table.index.len() as u32,
            shift: 32,
        };
        if len as usize > INDEXED {
            // About two buckets per interval: most buckets then hold no interval start and
            // answer directly.
            let bits = (u32::BITS - len.leading_zeros()).clamp(5, 20);
            info.shift = 32 - bits;
            let mine = &table.entries[start as usize..];
            let searched = |lo: usize, hi: usize| {
                let at = |i: usize| u64::from(start) + i as u64;
                SEARCH | at(hi) << 32 | at(lo)
            };
            let mut k = 0usize;
            for b in 0..(1u64 << bits) {
                let (first, last) = (b << info.shift, ((b + 1) << info.shift) - 1);
                // k: first interval starting at or after the bucket's start.
                while mine.get(k).is_some_and(|e| u64::from(e[0]) < first) {
                    k += 1;
                }
                let mut end = k;
                while mine.get(end).is_some_and(|e| u64::from(e[0]) <= last) {
                    end += 1;
                }
                let inside = mine[k..end]
                    .iter()
                    .filter(|e| u64::from(e[0]) > first)
                    .count();
                // The interval holding the bucket's start, and the first starting inside.
                let at_start = mine.get(k).is_some_and(|e| u64::from(e[0]) == first);
                let holding = if at_start { k } else { k.saturating_sub(1) };
                let answer_at = |i: usize| mine.get(i).map_or(NONE, |e| e[1]);
                // The bucket is 2^shift addresses.
                let width = u64::from(info.shift);
                let offset = |e: &[u32; 2]| u64::from(e[0]) & ((1u64 << info.shift) - 1);
                let outside = narrow(answer_at(holding));
                let spanned = match (inside, outside) {
                    (0, Some(a)) => Some(span(0, width, a, a)),
                    (1, Some(below)) => mine.get(holding + 1).and_then(|e| {
                        narrow(e[1]).map(|above| span(offset(e), width, above, below))
                    }),
                    (2, Some(outside)) => {
                        // A hole: one interval inside the bucket, a power of two long, with
                        // the same answer on both sides.
                        match (mine.get(holding + 1), mine.get(holding + 2)) {
                            (Some(s), Some(e))
                                if e[1] == answer_at(holding)
                                    && (e[0] - s[0]).is_power_of_two() =>
                            {
                                let m = u64::from((e[0] - s[0]).trailing_zeros());
                                narrow(s[1]).map(|inner| span(offset(s), m, inner, outside))
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                };
                table.index.push(match spanned {
                    Some(e) => e,
                    // An answer too wide for a span: the holding interval, searched.
                    None if inside == 0 => searched(holding, holding + 1),
                    None => searched(k, end),
                });
            }
        }
        table.classes.push(info);
    }

    /// [`Classifier::classify`] for a key whose local address is the specialization's.
    #[inline]
    pub fn classify_specialized(
        &self,
        rules: &[ExpandedRule],
        s: &Specialized,
        k: &Key,
    ) -> Option<usize> {
        let t = s
            .table
            .get_or_init(|| self.build_table(rules, &s.local_row, s.local_is_dst));
        let p = k.protocol as usize;
        let desc = if k.protocol.has_ports() && k.dport < PORTLESS {
            let l1 = t
                .port_l1
                .get(p << 12 | (k.dport as usize >> 4))
                .copied()
                .unwrap_or(CLASS);
            if l1 & L2 == 0 {
                l1
            } else {
                t.port_l2
                    .get((l1 & !L2) as usize + (k.dport as usize & 15))
                    .copied()
                    .unwrap_or(CLASS)
            }
        } else {
            t.portless.get(p).copied().unwrap_or(CLASS)
        };
        let remote = if s.local_is_dst { k.src } else { k.dst };
        let answer = if desc & CLASS == 0 {
            t.answer_indexed(desc & DESC_OFFSET, desc >> DESC_SHIFT, remote)
        } else {
            t.answer(t.classes.get((desc & !CLASS) as usize)?, remote)
        };
        if answer == NONE {
            return None;
        }
        if answer & LIST == 0 {
            return Some(answer as usize);
        }
        let mut at = (answer & !LIST) as usize;
        loop {
            let entry = *t.lists.get(at)?;
            let r = (entry & !LAST) as usize;
            if self.sports.get(r).is_some_and(|p| p.contains(k.sport)) {
                return Some(r);
            }
            if entry & LAST != 0 {
                return None;
            }
            at += 1;
        }
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
