//! The frame layer: splitting a byte stream into frames and writing frames. The declared size of
//! every frame is checked against the negotiated `frame_max` as soon as its 7-byte header is
//! visible, before the payload is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{CodecError, Method};

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// Type (1) + channel (2) + size (4).
pub const FRAME_HEADER_SIZE: usize = 7;
/// Header plus frame-end octet: the bytes a frame takes beyond its payload.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;
/// Spec: no peer may refuse frames up to this size, and frame_max may not be set below it.
pub const FRAME_MIN_SIZE: u32 = 8192;
/// RabbitMQ compat: the smallest frame_max a client may negotiate. The spec says 8192, RabbitMQ
/// accepts 4096, and clients rely on it (amqplib asks for 4096 by default).
pub const FRAME_MIN_NEGOTIABLE: u32 = 4096;
/// The protocol header a 0-9-1 client opens with.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// One frame as it came off the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Method {
        channel: u16,
        method: Method,
    },
    /// A content header; `properties` is the raw property list (flags + values), kept as sent.
    Header {
        channel: u16,
        class_id: u16,
        body_size: u64,
        properties: Bytes,
    },
    Body {
        channel: u16,
        payload: Bytes,
    },
    Heartbeat {
        channel: u16,
    },
}

/// Errors from `FrameDecoder`, carrying the channel when it is known so the connection can
/// report it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub channel: u16,
    pub error: CodecError,
    /// For method frames that failed to decode: the class and method ids when they were readable.
    pub method: Option<(u16, u16)>,
}

/// Cuts frames out of a read buffer.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    pub frame_max: u32,
}

impl FrameDecoder {
    pub fn new(frame_max: u32) -> Self {
        FrameDecoder { frame_max }
    }

    /// Removes and returns the next whole frame from `buf`, `Ok(None)` when more bytes are needed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < FRAME_HEADER_SIZE {
            return Ok(None);
        }
        let kind = buf[0];
        let channel = u16::from_be_bytes([buf[1], buf[2]]);
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as u64;
        let err = |error| FrameError { channel, error, method: None };
        let total = size + FRAME_OVERHEAD as u64;
        // RabbitMQ compat: a payload of up to frame_max bytes is accepted (a frame of frame_max
        // + 8), since many clients cut bodies into frame_max-sized chunks and forget the 8 bytes
        // of framing; RabbitMQ allows exactly that much slack. A larger one is refused here.
        if self.frame_max != 0 && size > self.frame_max as u64 {
            return Err(err(CodecError::FrameTooLarge { size: total, frame_max: self.frame_max }));
        }
        if !matches!(kind, FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT) {
            return Err(err(CodecError::UnknownFrameType(kind)));
        }
        let total = total as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        if buf[total - 1] != FRAME_END {
            return Err(err(CodecError::BadFrameEnd(buf[total - 1])));
        }
        let mut frame = buf.split_to(total);
        frame.advance(FRAME_HEADER_SIZE);
        frame.truncate(size as usize);
        let payload = frame.freeze();
        let frame = match kind {
            FRAME_METHOD => {
                let method = Method::decode(&payload).map_err(|error| {
                    let ids = (payload.len() >= 4).then(|| {
                        (u16::from_be_bytes([payload[0], payload[1]]), u16::from_be_bytes([payload[2], payload[3]]))
                    });
                    FrameError { channel, error, method: ids }
                })?;
                Frame::Method { channel, method }
            }
            FRAME_HEADER => {
                if payload.len() < 14 {
                    return Err(err(CodecError::Truncated));
                }
                let class_id = u16::from_be_bytes([payload[0], payload[1]]);
                let body_size = u64::from_be_bytes([
                    payload[4],
                    payload[5],
                    payload[6],
                    payload[7],
                    payload[8],
                    payload[9],
                    payload[10],
                    payload[11],
                ]);
                Frame::Header { channel, class_id, body_size, properties: payload.slice(12..) }
            }
            FRAME_BODY => Frame::Body { channel, payload },
            _ => Frame::Heartbeat { channel },
        };
        Ok(Some(frame))
    }
}

/// Writes a method frame.
pub fn write_method(buf: &mut BytesMut, channel: u16, method: &Method) -> Result<(), CodecError> {
    let start = buf.len();
    buf.put_u8(FRAME_METHOD);
    buf.put_u16(channel);
    buf.put_u32(0);
    method.encode(buf)?;
    let size = (buf.len() - start - FRAME_HEADER_SIZE) as u32;
    buf[start + 3..start + 7].copy_from_slice(&size.to_be_bytes());
    buf.put_u8(FRAME_END);
    Ok(())
}

/// Writes a content header frame with a raw property list.
pub fn write_header(buf: &mut BytesMut, channel: u16, class_id: u16, body_size: u64, properties: &[u8]) {
    buf.put_u8(FRAME_HEADER);
    buf.put_u16(channel);
    buf.put_u32((12 + properties.len()) as u32);
    buf.put_u16(class_id);
    buf.put_u16(0);
    buf.put_u64(body_size);
    buf.put_slice(properties);
    buf.put_u8(FRAME_END);
}

/// Writes a body as as many body frames as `frame_max` requires (none for an empty body).
pub fn write_body(buf: &mut BytesMut, channel: u16, body: &[u8], frame_max: u32) {
    let chunk_max = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for chunk in body.chunks(chunk_max) {
        buf.put_u8(FRAME_BODY);
        buf.put_u16(channel);
        buf.put_u32(chunk.len() as u32);
        buf.put_slice(chunk);
        buf.put_u8(FRAME_END);
    }
}

/// Writes a basic.deliver method frame from borrowed fields (the delivery hot path: no
/// intermediate `Method` value, no allocation).
pub fn write_deliver(
    buf: &mut BytesMut,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
) {
    fn short(s: &str) -> &[u8] {
        &s.as_bytes()[..s.len().min(255)]
    }
    let (ct, ex, rk) = (short(consumer_tag), short(exchange), short(routing_key));
    let size = 4 + 1 + ct.len() + 8 + 1 + 1 + ex.len() + 1 + rk.len();
    buf.reserve(size + FRAME_OVERHEAD);
    buf.put_u8(FRAME_METHOD);
    buf.put_u16(channel);
    buf.put_u32(size as u32);
    buf.put_u16(60);
    buf.put_u16(60);
    buf.put_u8(ct.len() as u8);
    buf.put_slice(ct);
    buf.put_u64(delivery_tag);
    buf.put_u8(redelivered as u8);
    buf.put_u8(ex.len() as u8);
    buf.put_slice(ex);
    buf.put_u8(rk.len() as u8);
    buf.put_slice(rk);
    buf.put_u8(FRAME_END);
}

/// Writes a heartbeat frame.
pub fn write_heartbeat(buf: &mut BytesMut) {
    buf.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn encode(channel: u16, m: Method) -> BytesMut {
        let mut b = BytesMut::new();
        write_method(&mut b, channel, &m).expect("encodes");
        b
    }

    /// Proves the encoder emits the exact bytes of a known frame (basic.qos prefetch 10 on channel 1).
    #[test]
    fn golden_basic_qos() {
        let b = encode(1, BasicQos { prefetch_size: 0, prefetch_count: 10, global: false }.into());
        assert_eq!(&b[..], &[1, 0, 1, 0, 0, 0, 11, 0, 60, 0, 10, 0, 0, 0, 0, 0, 10, 0, 0xCE][..]);
    }

    /// Proves a golden connection.tune-ok and heartbeat frame decode to the expected values.
    #[test]
    fn golden_tune_ok_and_heartbeat() {
        let bytes: &[u8] =
            &[1, 0, 0, 0, 0, 0, 12, 0, 10, 0, 31, 0x07, 0xFF, 0, 2, 0, 0, 0, 60, 0xCE, 8, 0, 0, 0, 0, 0, 0, 0xCE];
        let mut buf = BytesMut::from(bytes);
        let d = FrameDecoder::new(131072);
        let f = d.decode(&mut buf).expect("valid").expect("complete");
        assert_eq!(
            f,
            Frame::Method {
                channel: 0,
                method: ConnectionTuneOk { channel_max: 2047, frame_max: 131072, heartbeat: 60 }.into()
            }
        );
        assert_eq!(d.decode(&mut buf).expect("valid"), Some(Frame::Heartbeat { channel: 0 }));
        assert!(buf.is_empty());
    }

    /// Proves bit fields pack into one octet in order (queue.declare durable + auto_delete).
    #[test]
    fn golden_bits_packing() {
        let b = encode(
            1,
            QueueDeclare { queue: "q".into(), durable: true, auto_delete: true, ..Default::default() }.into(),
        );
        // frame header 7, class/method 4, ticket 2, shortstr 2, bits 1, table 4, end 1
        assert_eq!(b[7 + 4 + 2 + 2], 0b0000_1010);
    }

    /// Proves an oversize frame is refused from its header alone, before its payload arrives,
    /// and that a payload of exactly frame_max (RabbitMQ's 8 bytes of slack) is not.
    #[test]
    fn oversize_frame_refused_before_buffering() {
        let mut buf = BytesMut::from(&[3u8, 0, 1, 0, 0x10, 0, 0][..]);
        let err = FrameDecoder::new(131072).decode(&mut buf).expect_err("too large");
        assert!(matches!(err.error, CodecError::FrameTooLarge { .. }), "{err:?}");
        let mut buf = BytesMut::from(&[3u8, 0, 1, 0, 0x02, 0, 1][..]);
        let err = FrameDecoder::new(131072).decode(&mut buf).expect_err("one byte past the slack");
        assert!(matches!(err.error, CodecError::FrameTooLarge { .. }), "{err:?}");
        let mut buf = BytesMut::from(&[3u8, 0, 1, 0, 0x02, 0, 0][..]);
        assert!(FrameDecoder::new(131072).decode(&mut buf).expect("a payload of frame_max").is_none());
    }

    /// Proves a missing frame-end octet is a frame error.
    #[test]
    fn bad_frame_end() {
        let mut buf = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0][..]);
        let err = FrameDecoder::new(131072).decode(&mut buf).expect_err("bad end");
        assert_eq!(err.error, CodecError::BadFrameEnd(0));
    }

    /// Proves the hand-written deliver encoder agrees with the generated one.
    #[test]
    fn deliver_fast_path_matches_generated() {
        let mut a = BytesMut::new();
        write_deliver(&mut a, 7, "ctag", 42, true, "amq.topic", "a.b");
        let b = encode(
            7,
            BasicDeliver {
                consumer_tag: "ctag".into(),
                delivery_tag: 42,
                redelivered: true,
                exchange: "amq.topic".into(),
                routing_key: "a.b".into(),
            }
            .into(),
        );
        assert_eq!(a, b);
    }

    /// Proves a body is split into frames of at most frame_max bytes.
    #[test]
    fn body_split_at_frame_max() {
        let mut buf = BytesMut::new();
        write_body(&mut buf, 1, &[7u8; 20000], 8192);
        let d = FrameDecoder::new(8192);
        let mut total = 0;
        let mut frames = 0;
        while let Some(Frame::Body { payload, .. }) = d.decode(&mut buf).expect("valid") {
            assert!(payload.len() <= 8192 - 8);
            total += payload.len();
            frames += 1;
        }
        assert_eq!((total, frames), (20000, 3));
    }
}
