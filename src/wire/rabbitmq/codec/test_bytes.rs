//! Frames written byte by byte for the tests, independent of the encoders under test.

/// A frame being written: size prefix (filled in by [`Bytes::done`]), key, version, fields.
pub(super) struct Bytes(pub(super) Vec<u8>);

impl Bytes {
    pub(super) fn frame(key: u16, version: u16) -> Self {
        Bytes(vec![0; 4]).u16(key).u16(version)
    }

    pub(super) fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    pub(super) fn u8(self, value: u8) -> Self {
        self.raw(&[value])
    }

    pub(super) fn u16(self, value: u16) -> Self {
        self.raw(&value.to_be_bytes())
    }

    pub(super) fn i16(self, value: i16) -> Self {
        self.raw(&value.to_be_bytes())
    }

    pub(super) fn u32(self, value: u32) -> Self {
        self.raw(&value.to_be_bytes())
    }

    pub(super) fn i32(self, value: i32) -> Self {
        self.raw(&value.to_be_bytes())
    }

    pub(super) fn u64(self, value: u64) -> Self {
        self.raw(&value.to_be_bytes())
    }

    pub(super) fn i64(self, value: i64) -> Self {
        self.raw(&value.to_be_bytes())
    }

    pub(super) fn string(self, value: &str) -> Self {
        self.u16(value.len() as u16).raw(value.as_bytes())
    }

    pub(super) fn bytes(self, value: &[u8]) -> Self {
        self.u32(value.len() as u32).raw(value)
    }

    /// The whole frame, size prefix included.
    pub(super) fn done(mut self) -> Vec<u8> {
        let size = (self.0.len() - 4) as u32;
        self.0[..4].copy_from_slice(&size.to_be_bytes());
        self.0
    }
}

/// A frame read back field by field (for the responses the reference crate cannot decode).
pub(super) struct Fields<'a>(pub(super) &'a [u8]);

impl Fields<'_> {
    fn take(&mut self, count: usize) -> &[u8] {
        let (head, tail) = self.0.split_at(count);
        self.0 = tail;
        head
    }

    pub(super) fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }

    pub(super) fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }

    pub(super) fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().unwrap())
    }

    pub(super) fn string(&mut self) -> String {
        let len = self.u16() as usize;
        String::from_utf8(self.take(len).to_vec()).unwrap()
    }

    pub(super) fn rest(&self) -> usize {
        self.0.len()
    }
}
