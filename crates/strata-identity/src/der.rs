//! A minimal, strict DER reader for X.509 certificates: the public key of a
//! client-assertion certificate ([`crate::assertion`]) and full certificate
//! parsing ([`crate::x509`]).
//!
//! It reads one tag-length-value at a time: single-byte tags only, definite
//! lengths in short form or minimal long form of at most 4 bytes, and every
//! length is checked against the remaining input. It never recurses; callers
//! descend a fixed, known structure, so nesting depth is bounded by the code.

pub(crate) const TAG_BOOLEAN: u8 = 0x01;
pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_NULL: u8 = 0x05;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_UTC_TIME: u8 = 0x17;
pub(crate) const TAG_GENERALIZED_TIME: u8 = 0x18;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
pub(crate) const TAG_SET: u8 = 0x31;
/// `[0] EXPLICIT`, constructed context-specific tag 0.
pub(crate) const TAG_CONTEXT_0: u8 = 0xA0;

/// The input is not the DER this reader expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DerError;

pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.data.first().copied()
    }

    /// Reads the next element, returning its tag, its contents and the whole
    /// encoded element (tag, length and contents).
    pub(crate) fn read_element(&mut self) -> Result<(u8, &'a [u8], &'a [u8]), DerError> {
        let start = self.data;
        let (tag, value) = self.read()?;
        let consumed = start.len() - self.data.len();
        Ok((tag, value, start.get(..consumed).ok_or(DerError)?))
    }

    /// Reads the next element, returning its tag and contents.
    pub(crate) fn read(&mut self) -> Result<(u8, &'a [u8]), DerError> {
        let (&tag, rest) = self.data.split_first().ok_or(DerError)?;
        if tag & 0x1f == 0x1f {
            // High tag number form: never needed for certificates.
            return Err(DerError);
        }
        let (&first, mut rest) = rest.split_first().ok_or(DerError)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            // 0x80 is the indefinite form (BER only); more than 4 bytes is never needed.
            if n == 0 || n > 4 || rest.len() < n {
                return Err(DerError);
            }
            let (len_bytes, after) = rest.split_at(n);
            rest = after;
            if len_bytes[0] == 0 {
                return Err(DerError); // not minimal
            }
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            if len < 0x80 {
                return Err(DerError); // should have used the short form
            }
            len
        };
        if len > rest.len() {
            return Err(DerError);
        }
        let (value, after) = rest.split_at(len);
        self.data = after;
        Ok((tag, value))
    }

    /// Reads the next element, which must have tag `tag`.
    pub(crate) fn expect(&mut self, tag: u8) -> Result<&'a [u8], DerError> {
        match self.read()? {
            (t, value) if t == tag => Ok(value),
            _ => Err(DerError),
        }
    }

    /// Succeeds only if the input has been fully consumed.
    pub(crate) fn finish(&self) -> Result<(), DerError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DerError)
        }
    }
}

/// The magnitude of a positive DER INTEGER, without its sign byte. Rejects
/// empty, negative and non-minimal encodings.
pub(crate) fn positive_integer(value: &[u8]) -> Result<&[u8], DerError> {
    match value {
        [] => Err(DerError),
        [first, ..] if first & 0x80 != 0 => Err(DerError),
        [0, next, ..] if next & 0x80 == 0 => Err(DerError),
        [0, rest @ ..] if !rest.is_empty() => Ok(rest),
        [0] => Err(DerError), // zero is not positive
        _ => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_lengths() {
        let mut r = Reader::new(&[0x02, 0x01, 0x05]);
        assert_eq!(r.read(), Ok((0x02, &[0x05][..])));
        assert!(r.finish().is_ok());

        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(0xAA, 0x80));
        let mut r = Reader::new(&long);
        assert_eq!(r.read().unwrap().1.len(), 0x80);

        let mut long2 = vec![0x04, 0x82, 0x01, 0x00];
        long2.extend(std::iter::repeat_n(0, 256));
        assert_eq!(Reader::new(&long2).read().unwrap().1.len(), 256);
    }

    #[test]
    fn rejects_bad_lengths() {
        for bad in [
            &[0x30][..],                              // no length
            &[0x30, 0x80, 0x00, 0x00],                // indefinite
            &[0x30, 0x81, 0x05, 1, 2, 3, 4, 5],       // non-minimal long form
            &[0x30, 0x82, 0x00, 0x80],                // leading zero length byte
            &[0x30, 0x85, 1, 0, 0, 0, 0],             // 5 length bytes
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0], // beyond input
            &[0x30, 0x03, 0x01],                      // beyond input
            &[0x1f, 0x01, 0x00],                      // high tag number
        ] {
            assert_eq!(Reader::new(bad).read(), Err(DerError), "{bad:02x?}");
        }
    }

    #[test]
    fn whole_elements() {
        let mut r = Reader::new(&[0x30, 0x03, 0x02, 0x01, 0x07, 0x05, 0x00]);
        assert_eq!(
            r.read_element(),
            Ok((
                0x30,
                &[0x02, 0x01, 0x07][..],
                &[0x30, 0x03, 0x02, 0x01, 0x07][..]
            ))
        );
        assert_eq!(r.read_element(), Ok((0x05, &[][..], &[0x05, 0x00][..])));
        assert!(r.finish().is_ok());
        assert_eq!(Reader::new(&[0x30, 0x02]).read_element(), Err(DerError));
    }

    #[test]
    fn integers() {
        assert_eq!(positive_integer(&[0x01]), Ok(&[0x01][..]));
        assert_eq!(positive_integer(&[0x00, 0x80]), Ok(&[0x80][..]));
        assert_eq!(positive_integer(&[0x80]), Err(DerError));
        assert_eq!(positive_integer(&[0x00, 0x01]), Err(DerError));
        assert_eq!(positive_integer(&[0x00]), Err(DerError));
        assert_eq!(positive_integer(&[]), Err(DerError));
    }
}
