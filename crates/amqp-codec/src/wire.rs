//! Primitive readers and writers for AMQP's integers, strings and tables. The reader works on a
//! borrowed slice and checks every length against the bytes actually present before copying.

use bytes::{BufMut, Bytes, BytesMut};

use crate::table::{FieldTable, MAX_TABLE_DEPTH};
use crate::CodecError;

/// A cursor over a method or header payload.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.remaining() < n {
            return Err(CodecError::Truncated);
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub fn shortstr_bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let len = self.u8()? as usize;
        self.take(len)
    }

    pub fn shortstr(&mut self) -> Result<String, CodecError> {
        let b = self.shortstr_bytes()?;
        std::str::from_utf8(b).map(str::to_owned).map_err(|_| CodecError::InvalidUtf8)
    }

    pub fn longstr_bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    pub fn longstr(&mut self) -> Result<Bytes, CodecError> {
        Ok(Bytes::copy_from_slice(self.longstr_bytes()?))
    }

    pub fn table(&mut self) -> Result<FieldTable, CodecError> {
        FieldTable::decode(self, MAX_TABLE_DEPTH)
    }
}

pub fn put_shortstr(buf: &mut BytesMut, s: &str) -> Result<(), CodecError> {
    let len = u8::try_from(s.len()).map_err(|_| CodecError::ShortStrTooLong)?;
    buf.put_u8(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

pub fn put_longstr(buf: &mut BytesMut, b: &[u8]) {
    // A longstr larger than 4 GiB cannot be framed at all; frame_max bounds every payload far below.
    buf.put_u32(b.len() as u32);
    buf.put_slice(b);
}
