//! A bounds-checked cursor over one RabbitMQ Streams frame body: big-endian integers, the
//! protocol's strings, bytes, arrays and string maps, each borrowed from the body.
//!
//! Pure, runs on the connection's core. Invariants: no read goes past the end (a short read is
//! [`DecodeErrorKind::Truncated`] and consumes nothing of value, since the whole frame is then
//! refused); a count is checked against the bytes left before anything is allocated for it;
//! negative lengths and counts other than the protocol's null are `Malformed`.

use super::DecodeErrorKind;

type Result<T> = std::result::Result<T, DecodeErrorKind>;

/// Bytes of the smallest string: its int16 length.
pub(super) const MIN_STRING_BYTES: usize = 2;

/// The unread part of a frame body.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(body: &'a [u8]) -> Self {
        Reader { rest: body }
    }

    /// Bytes not read yet.
    pub(super) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// The next byte, not consumed.
    pub(super) fn peek_u8(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next `count` bytes.
    pub(super) fn take(&mut self, count: usize) -> Result<&'a [u8]> {
        if count > self.rest.len() {
            return Err(DecodeErrorKind::Truncated);
        }
        let (head, tail) = self.rest.split_at(count);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| DecodeErrorKind::Truncated)
    }

    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    pub(super) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(super) fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(super) fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(super) fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A string that may be null (int16 length -1).
    pub(super) fn nullable_string(&mut self) -> Result<Option<&'a str>> {
        let length = self.i16()?;
        if length == -1 {
            return Ok(None);
        }
        let length =
            usize::try_from(length).map_err(|_| DecodeErrorKind::Malformed("negative string length"))?;
        let bytes = self.take(length)?;
        let text =
            std::str::from_utf8(bytes).map_err(|_| DecodeErrorKind::Malformed("string is not UTF-8"))?;
        Ok(Some(text))
    }

    /// A string the protocol requires (null is `Malformed`).
    pub(super) fn string(&mut self) -> Result<&'a str> {
        self.nullable_string()?.ok_or(DecodeErrorKind::Malformed("null string where one is required"))
    }

    /// Bytes with an int32 length; null (-1) is `None`.
    pub(super) fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>> {
        let length = self.i32()?;
        if length == -1 {
            return Ok(None);
        }
        let length =
            usize::try_from(length).map_err(|_| DecodeErrorKind::Malformed("negative bytes length"))?;
        self.take(length).map(Some)
    }

    /// An int32 array count, checked against the bytes left: `count` elements of at least
    /// `min_element_bytes` each must fit, so the caller may allocate `count` elements.
    pub(super) fn count(&mut self, min_element_bytes: usize) -> Result<usize> {
        let count = self.i32()?;
        let count = usize::try_from(count).map_err(|_| DecodeErrorKind::Malformed("negative array count"))?;
        match count.checked_mul(min_element_bytes) {
            Some(bytes) if bytes <= self.rest.len() => Ok(count),
            _ => Err(DecodeErrorKind::Truncated),
        }
    }

    /// `[string]`.
    pub(super) fn string_array(&mut self) -> Result<Vec<&'a str>> {
        let count = self.count(MIN_STRING_BYTES)?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(self.string()?);
        }
        Ok(out)
    }

    /// `[string string]`: a map in wire order.
    pub(super) fn string_map(&mut self) -> Result<Vec<(&'a str, &'a str)>> {
        let count = self.count(2 * MIN_STRING_BYTES)?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let key = self.string()?;
            let value = self.string()?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// Ends the body: bytes left over are `Malformed`.
    pub(super) fn finish(self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeErrorKind::Malformed("trailing bytes after the command"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian_and_bounded() {
        let mut reader = Reader::new(&[0x01, 0x02, 0x03, 0x04, 0x05]);
        assert_eq!(reader.u16(), Ok(0x0102));
        assert_eq!(reader.u32(), Err(DecodeErrorKind::Truncated));
        assert_eq!(reader.remaining(), 3, "a short read consumes nothing");
        assert_eq!(reader.u8(), Ok(3));
        assert_eq!(reader.i16(), Ok(0x0405));
        assert!(reader.finish().is_ok());
    }

    #[test]
    fn strings_null_negative_and_utf8() {
        assert_eq!(Reader::new(&[0xff, 0xff]).nullable_string(), Ok(None));
        assert!(matches!(Reader::new(&[0xff, 0xff]).string(), Err(DecodeErrorKind::Malformed(_))));
        assert!(matches!(Reader::new(&[0xff, 0xfe]).nullable_string(), Err(DecodeErrorKind::Malformed(_))));
        assert!(matches!(Reader::new(&[0x80, 0x00]).nullable_string(), Err(DecodeErrorKind::Malformed(_))));
        assert_eq!(Reader::new(&[0x00, 0x03, b'a', b'b']).string(), Err(DecodeErrorKind::Truncated));
        assert!(matches!(Reader::new(&[0x00, 0x01, 0xff]).string(), Err(DecodeErrorKind::Malformed(_))));
        assert_eq!(Reader::new(&[0x00, 0x00]).string(), Ok(""));
        assert_eq!(Reader::new(&[0x00, 0x02, b'h', b'i']).string(), Ok("hi"));
    }

    #[test]
    fn counts_are_checked_before_allocating() {
        let huge = i32::MAX.to_be_bytes();
        assert_eq!(Reader::new(&huge).count(1), Err(DecodeErrorKind::Truncated));
        assert!(matches!(Reader::new(&(-1i32).to_be_bytes()).count(1), Err(DecodeErrorKind::Malformed(_))));
        let mut two = 2i32.to_be_bytes().to_vec();
        two.extend_from_slice(&[0, 0, 0]);
        assert_eq!(Reader::new(&two).count(2), Err(DecodeErrorKind::Truncated));
        assert_eq!(Reader::new(&two).count(1), Ok(2));
        assert_eq!(Reader::new(&0i32.to_be_bytes()).count(usize::MAX), Ok(0));
        assert_eq!(Reader::new(&1i32.to_be_bytes()).count(usize::MAX), Err(DecodeErrorKind::Truncated));
    }

    #[test]
    fn bytes_null_and_negative() {
        assert_eq!(Reader::new(&(-1i32).to_be_bytes()).nullable_bytes(), Ok(None));
        assert!(matches!(
            Reader::new(&(-2i32).to_be_bytes()).nullable_bytes(),
            Err(DecodeErrorKind::Malformed(_))
        ));
        assert_eq!(Reader::new(&[0, 0, 0, 1, 7]).nullable_bytes(), Ok(Some(&[7u8][..])));
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        assert!(matches!(Reader::new(&[0]).finish(), Err(DecodeErrorKind::Malformed(_))));
    }
}
