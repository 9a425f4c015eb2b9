//! The AMQP 0-9-1 wire format with RabbitMQ's extensions: frames, methods, content headers,
//! basic properties, field tables and reply codes. It does no I/O, knows nothing of queues, never
//! panics on peer input, and checks every peer-supplied length against a limit before allocating.

mod generated;
#[cfg(any(test, feature = "arbitrary"))]
pub use generated::arbitrary as generated_arbitrary;
pub mod frame;
pub mod properties;
pub mod reply;
pub mod table;
pub mod wire;

pub use frame::{
    Frame, FrameDecoder, FRAME_END, FRAME_HEADER_SIZE, FRAME_MIN_NEGOTIABLE, FRAME_MIN_SIZE, PROTOCOL_HEADER,
};
pub use generated::*;
pub use properties::{BasicProperties, PropertiesSummary};
pub use table::{FieldTable, FieldValue};

/// Everything that can be wrong with bytes received from a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("unexpected end of data")]
    Truncated,
    #[error("frame of {size} bytes exceeds frame_max {frame_max}")]
    FrameTooLarge { size: u64, frame_max: u32 },
    #[error("frame end octet is {0:#04x}, expected 0xce")]
    BadFrameEnd(u8),
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    #[error("unknown method {class_id}/{method_id}")]
    UnknownMethod { class_id: u16, method_id: u16 },
    #[error("unknown field table value type {0:#04x}")]
    UnknownFieldType(u8),
    #[error("field table nesting deeper than {0} levels")]
    TooDeep(usize),
    #[error("short string is not valid UTF-8")]
    InvalidUtf8,
    #[error("short string longer than 255 bytes")]
    ShortStrTooLong,
    #[error("{0} trailing bytes after method arguments")]
    TrailingBytes(usize),
    #[error("invalid property flags {0:#06x}")]
    BadPropertyFlags(u16),
}
