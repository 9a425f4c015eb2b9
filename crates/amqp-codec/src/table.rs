//! Field tables and field values with the type tags RabbitMQ uses (its errata of the 0-9-1 spec).
//! Tables keep their entries in wire order so that re-encoding is byte-for-byte identical, and
//! nesting is bounded by `MAX_TABLE_DEPTH` so hostile input cannot exhaust the stack.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{put_longstr, put_shortstr, Reader};
use crate::CodecError;

/// How deeply tables and arrays may nest inside each other.
pub const MAX_TABLE_DEPTH: usize = 64;

/// One value in a field table or array.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    /// Tag 'L': a signed 64-bit integer as pika and Qpid write it (RabbitMQ's own tag is 'l').
    I64L(i64),
    F32(f32),
    F64(f64),
    Decimal {
        scale: u8,
        value: u32,
    },
    LongStr(Bytes),
    Array(Vec<FieldValue>),
    Timestamp(u64),
    Table(FieldTable),
    Void,
    ByteArray(Bytes),
}

/// An ordered AMQP field table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldTable(pub Vec<(String, FieldValue)>);

impl FieldTable {
    pub fn new() -> Self {
        FieldTable(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The first entry with this key (RabbitMQ also takes the first of duplicated keys).
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Replaces the value of `key` or appends it.
    pub fn insert(&mut self, key: impl Into<String>, value: FieldValue) {
        let key = key.into();
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.0.push((key, value));
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub(crate) fn decode(r: &mut Reader<'_>, depth: usize) -> Result<FieldTable, CodecError> {
        if depth == 0 {
            return Err(CodecError::TooDeep(MAX_TABLE_DEPTH));
        }
        let data = r.longstr_bytes()?;
        let mut inner = Reader::new(data);
        let mut entries = Vec::new();
        while inner.remaining() > 0 {
            let key = inner.shortstr()?;
            let value = FieldValue::decode(&mut inner, depth - 1)?;
            entries.push((key, value));
        }
        Ok(FieldTable(entries))
    }

    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), CodecError> {
        let start = buf.len();
        buf.put_u32(0);
        for (k, v) in &self.0 {
            put_shortstr(buf, k)?;
            v.encode(buf)?;
        }
        let len = (buf.len() - start - 4) as u32;
        buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Decodes a table from its wire form (length prefix included).
    pub fn from_wire(data: &[u8]) -> Result<FieldTable, CodecError> {
        let mut r = Reader::new(data);
        let t = r.table()?;
        if r.remaining() != 0 {
            return Err(CodecError::TrailingBytes(r.remaining()));
        }
        Ok(t)
    }
}

impl FieldValue {
    fn decode(r: &mut Reader<'_>, depth: usize) -> Result<FieldValue, CodecError> {
        let tag = r.u8()?;
        Ok(match tag {
            b't' => FieldValue::Bool(r.u8()? != 0),
            b'b' => FieldValue::I8(r.u8()? as i8),
            b'B' => FieldValue::U8(r.u8()?),
            b's' => FieldValue::I16(r.u16()? as i16),
            b'u' => FieldValue::U16(r.u16()?),
            b'I' => FieldValue::I32(r.u32()? as i32),
            b'i' => FieldValue::U32(r.u32()?),
            b'l' => FieldValue::I64(r.u64()? as i64),
            b'L' => FieldValue::I64L(r.u64()? as i64),
            b'f' => FieldValue::F32(f32::from_bits(r.u32()?)),
            b'd' => FieldValue::F64(f64::from_bits(r.u64()?)),
            b'D' => FieldValue::Decimal { scale: r.u8()?, value: r.u32()? },
            b'S' => FieldValue::LongStr(r.longstr()?),
            b'x' => FieldValue::ByteArray(r.longstr()?),
            b'T' => FieldValue::Timestamp(r.u64()?),
            b'V' => FieldValue::Void,
            b'F' => FieldValue::Table(FieldTable::decode(r, depth)?),
            b'A' => {
                if depth == 0 {
                    return Err(CodecError::TooDeep(MAX_TABLE_DEPTH));
                }
                let data = r.longstr_bytes()?;
                let mut inner = Reader::new(data);
                let mut items = Vec::new();
                while inner.remaining() > 0 {
                    items.push(FieldValue::decode(&mut inner, depth - 1)?);
                }
                FieldValue::Array(items)
            }
            other => return Err(CodecError::UnknownFieldType(other)),
        })
    }

    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), CodecError> {
        match self {
            FieldValue::Bool(v) => {
                buf.put_u8(b't');
                buf.put_u8(*v as u8);
            }
            FieldValue::I8(v) => {
                buf.put_u8(b'b');
                buf.put_i8(*v);
            }
            FieldValue::U8(v) => {
                buf.put_u8(b'B');
                buf.put_u8(*v);
            }
            FieldValue::I16(v) => {
                buf.put_u8(b's');
                buf.put_i16(*v);
            }
            FieldValue::U16(v) => {
                buf.put_u8(b'u');
                buf.put_u16(*v);
            }
            FieldValue::I32(v) => {
                buf.put_u8(b'I');
                buf.put_i32(*v);
            }
            FieldValue::U32(v) => {
                buf.put_u8(b'i');
                buf.put_u32(*v);
            }
            FieldValue::I64(v) => {
                buf.put_u8(b'l');
                buf.put_i64(*v);
            }
            FieldValue::I64L(v) => {
                buf.put_u8(b'L');
                buf.put_i64(*v);
            }
            FieldValue::F32(v) => {
                buf.put_u8(b'f');
                buf.put_u32(v.to_bits());
            }
            FieldValue::F64(v) => {
                buf.put_u8(b'd');
                buf.put_u64(v.to_bits());
            }
            FieldValue::Decimal { scale, value } => {
                buf.put_u8(b'D');
                buf.put_u8(*scale);
                buf.put_u32(*value);
            }
            FieldValue::LongStr(b) => {
                buf.put_u8(b'S');
                put_longstr(buf, b);
            }
            FieldValue::ByteArray(b) => {
                buf.put_u8(b'x');
                put_longstr(buf, b);
            }
            FieldValue::Timestamp(v) => {
                buf.put_u8(b'T');
                buf.put_u64(*v);
            }
            FieldValue::Void => buf.put_u8(b'V'),
            FieldValue::Table(t) => {
                buf.put_u8(b'F');
                t.encode(buf)?;
            }
            FieldValue::Array(items) => {
                buf.put_u8(b'A');
                let start = buf.len();
                buf.put_u32(0);
                for item in items {
                    item.encode(buf)?;
                }
                let len = (buf.len() - start - 4) as u32;
                buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
        Ok(())
    }

    /// The value as text when it is a string (RabbitMQ's longstr), for argument checks.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongStr(b) | FieldValue::ByteArray(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The value as an integer when it is any integer type.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match self {
            FieldValue::I8(v) => *v as i64,
            FieldValue::U8(v) => *v as i64,
            FieldValue::I16(v) => *v as i64,
            FieldValue::U16(v) => *v as i64,
            FieldValue::I32(v) => *v as i64,
            FieldValue::U32(v) => *v as i64,
            FieldValue::I64(v) | FieldValue::I64L(v) => *v,
            _ => return None,
        })
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            FieldValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// RabbitMQ's name of the value's type, used in PRECONDITION_FAILED texts.
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldValue::Bool(_) => "bool",
            FieldValue::I8(_) => "byte",
            FieldValue::U8(_) => "unsignedbyte",
            FieldValue::I16(_) => "short",
            FieldValue::U16(_) => "unsignedshort",
            FieldValue::I32(_) => "signedint",
            FieldValue::U32(_) => "unsignedint",
            FieldValue::I64(_) | FieldValue::I64L(_) => "long",
            FieldValue::F32(_) => "float",
            FieldValue::F64(_) => "double",
            FieldValue::Decimal { .. } => "decimal",
            FieldValue::LongStr(_) => "longstr",
            FieldValue::Array(_) => "array",
            FieldValue::Timestamp(_) => "timestamp",
            FieldValue::Table(_) => "table",
            FieldValue::Void => "void",
            FieldValue::ByteArray(_) => "binary",
        }
    }
}

impl From<&str> for FieldValue {
    fn from(s: &str) -> Self {
        FieldValue::LongStr(Bytes::copy_from_slice(s.as_bytes()))
    }
}

#[cfg(any(test, feature = "arbitrary"))]
pub mod arbitrary {
    //! proptest strategies for strings, tables and values.
    use super::*;
    use proptest::prelude::*;

    pub fn shortstr() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._ -]{0,40}".prop_map(|s| s)
    }

    pub fn longstr() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
    }

    pub fn value() -> impl Strategy<Value = FieldValue> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            any::<i8>().prop_map(FieldValue::I8),
            any::<u8>().prop_map(FieldValue::U8),
            any::<i16>().prop_map(FieldValue::I16),
            any::<u16>().prop_map(FieldValue::U16),
            any::<i32>().prop_map(FieldValue::I32),
            any::<u32>().prop_map(FieldValue::U32),
            any::<i64>().prop_map(FieldValue::I64),
            any::<i64>().prop_map(FieldValue::I64L),
            proptest::num::f32::NORMAL.prop_map(FieldValue::F32),
            proptest::num::f64::NORMAL.prop_map(FieldValue::F64),
            (any::<u8>(), any::<u32>()).prop_map(|(scale, value)| FieldValue::Decimal { scale, value }),
            longstr().prop_map(FieldValue::LongStr),
            longstr().prop_map(FieldValue::ByteArray),
            any::<u64>().prop_map(FieldValue::Timestamp),
            Just(FieldValue::Void),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(FieldValue::Array),
                proptest::collection::vec((shortstr(), inner), 0..4).prop_map(|e| FieldValue::Table(FieldTable(e))),
            ]
        })
    }

    pub fn table() -> impl Strategy<Value = FieldTable> {
        proptest::collection::vec((shortstr(), value()), 0..5).prop_map(FieldTable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a table nested 1,000 deep is refused with TooDeep instead of overflowing the stack.
    #[test]
    fn deep_nesting_is_refused() {
        let mut inner: Vec<u8> = Vec::new();
        for _ in 0..1000 {
            let mut outer = Vec::new();
            outer.extend_from_slice(&((inner.len() + 3) as u32).to_be_bytes());
            outer.extend_from_slice(&[1, b'k', b'F']);
            outer.extend_from_slice(&inner);
            inner = outer;
        }
        assert_eq!(FieldTable::from_wire(&inner), Err(CodecError::TooDeep(MAX_TABLE_DEPTH)));
    }

    /// Proves a length prefix larger than the data is refused before any allocation.
    #[test]
    fn oversized_length_is_truncated_error() {
        let data = [0xff, 0xff, 0xff, 0xff, 1];
        assert_eq!(FieldTable::from_wire(&data), Err(CodecError::Truncated));
    }
}
