//! Bounds-checked byte reading and writing shared by the TPM (big-endian) and event log
//! (little-endian) parsers. Every read names what it was reading, so a truncated structure
//! is reported as "truncated TPMS_ATTEST.extraData: needs 32 bytes, 3 left".

/// A failed read: too few bytes left, or bytes left over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer ended inside a field.
    #[error("truncated {what}: needs {needed} bytes, {remaining} left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// Bytes follow a structure that should have ended.
    #[error("{count} trailing bytes after {what}")]
    Trailing {
        /// The structure that ended.
        what: &'static str,
        /// How many bytes follow it.
        count: usize,
    },
}

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError::Truncated {
                what,
                needed: n,
                remaining: self.buf.len(),
            });
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16_be(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32_be(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64_be(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u16_le(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32_le(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64_le(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A TPM2B: big-endian u16 size, then that many bytes.
    pub(crate) fn tpm2b(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let n = self.u16_be(what)?;
        self.take(usize::from(n), what)
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing {
                what,
                count: self.buf.len(),
            })
        }
    }
}

/// Appends a TPM2B (big-endian u16 size + bytes). A buffer longer than a TPM2B can hold
/// (65,535 bytes) is cut to that length so the output is always well-formed; no TPM structure
/// comes near it, and the parsers never produce one.
pub(crate) fn put_tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&bytes[..n]);
}

/// `usize` → `u32` for little-endian log sizes, saturating (logs are far below 4 GiB).
pub(crate) fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked_and_named() {
        let mut r = Reader::new(&[0, 2, 7]);
        assert_eq!(
            r.tpm2b("x"),
            Err(WireError::Truncated {
                what: "x",
                needed: 2,
                remaining: 1
            })
        );
        let mut r = Reader::new(&[0, 1, 7, 9]);
        assert_eq!(r.tpm2b("x"), Ok(&[7u8][..]));
        assert_eq!(
            r.finish("y"),
            Err(WireError::Trailing {
                what: "y",
                count: 1
            })
        );
        assert_eq!(r.u8("z"), Ok(9));
        assert_eq!(r.finish("y"), Ok(()));
        assert!(r.u64_le("w").is_err());
    }

    #[test]
    fn oversized_tpm2b_is_cut_not_corrupted() {
        let mut out = Vec::new();
        put_tpm2b(&mut out, &vec![1u8; 70_000]);
        assert_eq!(out.len(), 2 + 65_535);
        assert_eq!(Reader::new(&out).tpm2b("t").map(<[u8]>::len), Ok(65_535));
    }
}
