//! The 14 basic-class properties. A publish keeps its properties as the raw bytes it arrived in
//! (forwarded untouched to consumers); `PropertiesSummary::scan` validates them and pulls out the
//! few fields routing needs without allocating; `BasicProperties` is the full, owned form.

use bytes::{BufMut, Bytes, BytesMut};

use crate::table::FieldTable;
use crate::wire::{put_shortstr, Reader};
use crate::CodecError;

const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;
const TIMESTAMP: u16 = 1 << 6;
const TYPE: u16 = 1 << 5;
const USER_ID: u16 = 1 << 4;
const APP_ID: u16 = 1 << 3;
const CLUSTER_ID: u16 = 1 << 2;
const RESERVED: u16 = 0b11;

/// All basic properties, owned.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BasicProperties {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub headers: Option<FieldTable>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub expiration: Option<String>,
    pub message_id: Option<String>,
    pub timestamp: Option<u64>,
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub app_id: Option<String>,
    pub cluster_id: Option<String>,
}

/// Byte range inside a raw property list.
pub type Span = (u32, u32);

/// What routing and queueing need from a message's properties, found without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PropertiesSummary {
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    /// The headers table's wire form, length prefix included.
    pub headers: Option<Span>,
    pub expiration: Option<Span>,
    pub user_id: Option<Span>,
    pub reply_to: Option<Span>,
}

impl PropertiesSummary {
    /// Validates a raw property list (flags + values) and records where the routing fields are.
    pub fn scan(raw: &[u8]) -> Result<PropertiesSummary, CodecError> {
        let mut r = Reader::new(raw);
        let flags = r.u16()?;
        if flags & RESERVED != 0 {
            return Err(CodecError::BadPropertyFlags(flags));
        }
        let mut s = PropertiesSummary::default();
        let span = |r: &mut Reader<'_>| -> Result<Span, CodecError> {
            let b = r.shortstr_bytes()?;
            let end = r.position() as u32;
            Ok((end - b.len() as u32, end))
        };
        if flags & CONTENT_TYPE != 0 {
            r.shortstr_bytes()?;
        }
        if flags & CONTENT_ENCODING != 0 {
            r.shortstr_bytes()?;
        }
        if flags & HEADERS != 0 {
            // RabbitMQ compat: the table's contents are checked only when something reads them
            // (headers exchange, dead-lettering); forwarding needs just its length.
            let start = r.position() as u32;
            r.longstr_bytes()?;
            s.headers = Some((start, r.position() as u32));
        }
        if flags & DELIVERY_MODE != 0 {
            s.delivery_mode = Some(r.u8()?);
        }
        if flags & PRIORITY != 0 {
            s.priority = Some(r.u8()?);
        }
        if flags & CORRELATION_ID != 0 {
            r.shortstr_bytes()?;
        }
        if flags & REPLY_TO != 0 {
            s.reply_to = Some(span(&mut r)?);
        }
        if flags & EXPIRATION != 0 {
            s.expiration = Some(span(&mut r)?);
        }
        if flags & MESSAGE_ID != 0 {
            r.shortstr_bytes()?;
        }
        if flags & TIMESTAMP != 0 {
            r.u64()?;
        }
        if flags & TYPE != 0 {
            r.shortstr_bytes()?;
        }
        if flags & USER_ID != 0 {
            s.user_id = Some(span(&mut r)?);
        }
        if flags & APP_ID != 0 {
            r.shortstr_bytes()?;
        }
        if flags & CLUSTER_ID != 0 {
            r.shortstr_bytes()?;
        }
        if r.remaining() != 0 {
            return Err(CodecError::TrailingBytes(r.remaining()));
        }
        Ok(s)
    }
}

/// The bytes of a span inside `raw`.
pub fn span_bytes(raw: &[u8], span: Span) -> &[u8] {
    &raw[span.0 as usize..span.1 as usize]
}

impl BasicProperties {
    /// Decodes a raw property list (flags + values).
    pub fn decode(raw: &[u8]) -> Result<BasicProperties, CodecError> {
        let mut r = Reader::new(raw);
        let flags = r.u16()?;
        if flags & RESERVED != 0 {
            return Err(CodecError::BadPropertyFlags(flags));
        }
        let mut p = BasicProperties::default();
        let has = |bit: u16| flags & bit != 0;
        if has(CONTENT_TYPE) {
            p.content_type = Some(r.shortstr()?);
        }
        if has(CONTENT_ENCODING) {
            p.content_encoding = Some(r.shortstr()?);
        }
        if has(HEADERS) {
            p.headers = Some(r.table()?);
        }
        if has(DELIVERY_MODE) {
            p.delivery_mode = Some(r.u8()?);
        }
        if has(PRIORITY) {
            p.priority = Some(r.u8()?);
        }
        if has(CORRELATION_ID) {
            p.correlation_id = Some(r.shortstr()?);
        }
        if has(REPLY_TO) {
            p.reply_to = Some(r.shortstr()?);
        }
        if has(EXPIRATION) {
            p.expiration = Some(r.shortstr()?);
        }
        if has(MESSAGE_ID) {
            p.message_id = Some(r.shortstr()?);
        }
        if has(TIMESTAMP) {
            p.timestamp = Some(r.u64()?);
        }
        if has(TYPE) {
            p.kind = Some(r.shortstr()?);
        }
        if has(USER_ID) {
            p.user_id = Some(r.shortstr()?);
        }
        if has(APP_ID) {
            p.app_id = Some(r.shortstr()?);
        }
        if has(CLUSTER_ID) {
            p.cluster_id = Some(r.shortstr()?);
        }
        if r.remaining() != 0 {
            return Err(CodecError::TrailingBytes(r.remaining()));
        }
        Ok(p)
    }

    /// Encodes flags and values (the raw property list of a content header).
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), CodecError> {
        let mut flags = 0u16;
        let mut set = |present: bool, bit: u16| {
            if present {
                flags |= bit
            }
        };
        set(self.content_type.is_some(), CONTENT_TYPE);
        set(self.content_encoding.is_some(), CONTENT_ENCODING);
        set(self.headers.is_some(), HEADERS);
        set(self.delivery_mode.is_some(), DELIVERY_MODE);
        set(self.priority.is_some(), PRIORITY);
        set(self.correlation_id.is_some(), CORRELATION_ID);
        set(self.reply_to.is_some(), REPLY_TO);
        set(self.expiration.is_some(), EXPIRATION);
        set(self.message_id.is_some(), MESSAGE_ID);
        set(self.timestamp.is_some(), TIMESTAMP);
        set(self.kind.is_some(), TYPE);
        set(self.user_id.is_some(), USER_ID);
        set(self.app_id.is_some(), APP_ID);
        set(self.cluster_id.is_some(), CLUSTER_ID);
        buf.put_u16(flags);
        let s = |buf: &mut BytesMut, v: &Option<String>| -> Result<(), CodecError> {
            if let Some(v) = v {
                put_shortstr(buf, v)?;
            }
            Ok(())
        };
        s(buf, &self.content_type)?;
        s(buf, &self.content_encoding)?;
        if let Some(h) = &self.headers {
            h.encode(buf)?;
        }
        if let Some(v) = self.delivery_mode {
            buf.put_u8(v);
        }
        if let Some(v) = self.priority {
            buf.put_u8(v);
        }
        s(buf, &self.correlation_id)?;
        s(buf, &self.reply_to)?;
        s(buf, &self.expiration)?;
        s(buf, &self.message_id)?;
        if let Some(v) = self.timestamp {
            buf.put_u64(v);
        }
        s(buf, &self.kind)?;
        s(buf, &self.user_id)?;
        s(buf, &self.app_id)?;
        s(buf, &self.cluster_id)?;
        Ok(())
    }

    pub fn to_bytes(&self) -> Result<Bytes, CodecError> {
        let mut buf = BytesMut::with_capacity(64);
        self.encode(&mut buf)?;
        Ok(buf.freeze())
    }
}

#[cfg(any(test, feature = "arbitrary"))]
pub mod arbitrary {
    //! proptest strategy for a full property set.
    use super::*;
    use crate::table::arbitrary::{shortstr, table};
    use proptest::prelude::*;

    pub fn properties() -> impl Strategy<Value = BasicProperties> {
        let s = || proptest::option::of(shortstr());
        (
            (s(), s(), proptest::option::of(table()), proptest::option::of(any::<u8>())),
            (proptest::option::of(any::<u8>()), s(), s(), s(), s()),
            (proptest::option::of(any::<u64>()), s(), s(), s(), s()),
        )
            .prop_map(|((ct, ce, h, dm), (pr, cid, rt, exp, mid), (ts, ty, uid, aid, clid))| BasicProperties {
                content_type: ct,
                content_encoding: ce,
                headers: h,
                delivery_mode: dm,
                priority: pr,
                correlation_id: cid,
                reply_to: rt,
                expiration: exp,
                message_id: mid,
                timestamp: ts,
                kind: ty,
                user_id: uid,
                app_id: aid,
                cluster_id: clid,
            })
    }
}
