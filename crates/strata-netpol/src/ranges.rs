//! Sets of `u32` values as sorted, disjoint, non-adjacent inclusive intervals: the one
//! representation behind address sets (IPv4 as `u32`) and port sets (`0..=65536`, where 65536
//! stands for "no port": ICMP, ESP and AH flows).
//!
//! Every set operation keeps the invariant, so two equal sets have equal representations and
//! `==` is set equality.

use std::fmt;
use std::net::Ipv4Addr;

/// A set of `u32` values.
///
/// INVARIANT: `iv` is sorted by start, intervals are disjoint and not adjacent
/// (`iv[i].1 + 1 < iv[i + 1].0`), and `start <= end` for each.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Ranges {
    iv: Vec<(u32, u32)>,
}

impl Ranges {
    /// The empty set.
    pub fn empty() -> Self {
        Self::default()
    }

    /// `lo..=hi` (empty when `lo > hi`).
    pub fn span(lo: u32, hi: u32) -> Self {
        if lo > hi {
            return Self::empty();
        }
        Self { iv: vec![(lo, hi)] }
    }

    /// The union of arbitrary (possibly overlapping, unsorted) inclusive intervals.
    pub fn from_intervals(intervals: impl IntoIterator<Item = (u32, u32)>) -> Self {
        let mut v: Vec<(u32, u32)> = intervals.into_iter().filter(|(a, b)| a <= b).collect();
        v.sort_unstable();
        let mut iv: Vec<(u32, u32)> = Vec::with_capacity(v.len());
        for (a, b) in v {
            match iv.last_mut() {
                Some(last) if u64::from(a) <= u64::from(last.1) + 1 => last.1 = last.1.max(b),
                _ => iv.push((a, b)),
            }
        }
        Self { iv }
    }

    /// The intervals, sorted.
    pub fn intervals(&self) -> &[(u32, u32)] {
        &self.iv
    }

    pub fn is_empty(&self) -> bool {
        self.iv.is_empty()
    }

    /// Whether `x` is in the set (binary search).
    pub fn contains(&self, x: u32) -> bool {
        let i = self.iv.partition_point(|&(a, _)| a <= x);
        i > 0 && self.iv[i - 1].1 >= x
    }

    /// Whether `self` and `other` share a value.
    pub fn overlaps(&self, other: &Self) -> bool {
        !self.intersect(other).is_empty()
    }

    /// Whether every value of `other` is in `self`.
    pub fn covers(&self, other: &Self) -> bool {
        other.difference(self).is_empty()
    }

    pub fn union(&self, other: &Self) -> Self {
        Self::from_intervals(self.iv.iter().chain(&other.iv).copied())
    }

    pub fn intersect(&self, other: &Self) -> Self {
        let (mut i, mut j) = (0, 0);
        let mut iv = Vec::new();
        while i < self.iv.len() && j < other.iv.len() {
            let (a0, a1) = self.iv[i];
            let (b0, b1) = other.iv[j];
            let lo = a0.max(b0);
            let hi = a1.min(b1);
            if lo <= hi {
                iv.push((lo, hi));
            }
            if a1 < b1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        // Pieces of disjoint, non-adjacent inputs cannot be adjacent to each other.
        Self { iv }
    }

    /// `lo..=hi` minus `self`.
    pub fn complement_within(&self, lo: u32, hi: u32) -> Self {
        let mut iv = Vec::new();
        let mut next = u64::from(lo);
        for &(a, b) in &self.iv {
            if u64::from(b) < next {
                continue;
            }
            if a > hi {
                break;
            }
            if u64::from(a) > next {
                // `next` fits in u32 here: it is below `a`.
                iv.push((next as u32, a - 1));
            }
            next = u64::from(b) + 1;
        }
        if next <= u64::from(hi) {
            iv.push((next as u32, hi));
        }
        Self { iv }
    }

    pub fn difference(&self, other: &Self) -> Self {
        self.intersect(&other.complement_within(0, u32::MAX))
    }

    /// The interval starts, plus `end + 1` of each interval where that does not overflow: the
    /// points where membership can change. Used to cut a dimension into elementary intervals.
    pub fn boundaries(&self) -> impl Iterator<Item = u32> + '_ {
        self.iv
            .iter()
            .flat_map(|&(a, b)| [Some(a), b.checked_add(1)])
            .flatten()
    }

    /// The set as the fewest CIDR prefixes (address sets).
    pub fn to_prefixes(&self) -> Vec<Prefix> {
        let mut out = Vec::new();
        for &(a, b) in &self.iv {
            let mut lo = u64::from(a);
            let hi = u64::from(b);
            while lo <= hi {
                // Largest aligned block starting at `lo` that fits in `lo..=hi`.
                let mut size: u64 = if lo == 0 {
                    1 << 32
                } else {
                    lo & lo.wrapping_neg()
                };
                while lo + size - 1 > hi {
                    size >>= 1;
                }
                out.push(Prefix {
                    addr: lo as u32,
                    len: 32 - size.trailing_zeros() as u8,
                });
                lo += size;
            }
        }
        out
    }

    /// The set rendered as CIDR strings, e.g. `["10.0.0.0/16", "10.1.2.3/32"]`.
    pub fn to_cidr_strings(&self) -> Vec<String> {
        self.to_prefixes().iter().map(Prefix::to_string).collect()
    }

    /// The set rendered as port ranges the way ARM writes them: `*` for every port (including
    /// the port-less value 65536), otherwise `"22"` or `"1000-2000"`.
    pub fn to_port_strings(&self) -> Vec<String> {
        if self.iv == [(0, PORTLESS)] || self.iv == [(0, 65535)] {
            return vec!["*".to_owned()];
        }
        self.iv
            .iter()
            .filter_map(|&(a, b)| {
                let b = b.min(65535);
                (a <= b).then(|| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
            })
            .collect()
    }
}

impl fmt::Debug for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iv.iter().map(|(a, b)| a..=b))
            .finish()
    }
}

/// The port value an ICMP, ESP or AH flow carries: it matches only rules whose port ranges
/// are `*` (every port), never a rule that names ports.
pub const PORTLESS: u32 = 65536;

/// Every port, including [`PORTLESS`]: what `*` means in a rule.
pub fn all_ports() -> Ranges {
    Ranges::span(0, PORTLESS)
}

/// Every IPv4 address.
pub fn all_addresses() -> Ranges {
    Ranges::span(0, u32::MAX)
}

/// An IPv4 CIDR prefix with no host bits set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Prefix {
    /// The network address as a `u32` (host bits zero).
    pub addr: u32,
    /// Prefix length, 0–32.
    pub len: u8,
}

impl Prefix {
    /// The first and last address covered.
    pub fn bounds(self) -> (u32, u32) {
        let host = u32::MAX.checked_shr(u32::from(self.len)).unwrap_or(0);
        (self.addr, self.addr | host)
    }

    pub fn to_ranges(self) -> Ranges {
        let (a, b) = self.bounds();
        Ranges::span(a, b)
    }

    pub fn contains(self, ip: u32) -> bool {
        let (a, b) = self.bounds();
        (a..=b).contains(&ip)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

/// Why a prefix did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixError {
    /// Not `a.b.c.d` or `a.b.c.d/n` with `n` in 0–32.
    Malformed,
    /// Bits below the prefix length are set; carries the network the caller probably meant.
    HostBits(Prefix),
}

/// Parses `a.b.c.d` (a /32) or `a.b.c.d/n`, refusing host bits below the prefix length.
pub fn parse_prefix(s: &str) -> Result<Prefix, PrefixError> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => {
            if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
                return Err(PrefixError::Malformed);
            }
            let len: u8 = len.parse().map_err(|_| PrefixError::Malformed)?;
            (ip, len)
        }
        None => (s, 32),
    };
    if len > 32 {
        return Err(PrefixError::Malformed);
    }
    let ip: Ipv4Addr = ip.parse().map_err(|_| PrefixError::Malformed)?;
    let addr = u32::from(ip);
    let network = Prefix {
        addr: if len == 0 {
            0
        } else {
            addr & (u32::MAX << (32 - len))
        },
        len,
    };
    if network.addr != addr {
        return Err(PrefixError::HostBits(network));
    }
    Ok(network)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_algebra() {
        let a = Ranges::from_intervals([(0, 10), (20, 30), (11, 12)]);
        assert_eq!(a.intervals(), &[(0, 12), (20, 30)]);
        let c = a.complement_within(0, 40);
        assert_eq!(c.intervals(), &[(13, 19), (31, 40)]);
        assert_eq!(a.union(&c), Ranges::span(0, 40));
        assert!(a.intersect(&c).is_empty());
        assert!(a.contains(12) && !a.contains(13) && a.contains(20));
        let full = all_addresses().complement_within(0, u32::MAX);
        assert!(full.is_empty());
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            parse_prefix("10.0.0.0/8").map(|p| p.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            parse_prefix("10.1.0.0/8"),
            Err(PrefixError::HostBits(Prefix {
                addr: 0x0a00_0000,
                len: 8
            }))
        );
        assert_eq!(
            parse_prefix("0.0.0.0/0").map(|p| p.bounds()),
            Ok((0, u32::MAX))
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "10.0.0.0/",
            "x",
            "010.0.0.0/8",
            "10.0.0.0/+8",
        ] {
            assert_eq!(parse_prefix(bad), Err(PrefixError::Malformed), "{bad}");
        }
        let set = Ranges::span(0x0a00_0001, 0x0a00_0006);
        assert_eq!(
            set.to_cidr_strings(),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert_eq!(all_addresses().to_cidr_strings(), ["0.0.0.0/0"]);
    }
}
