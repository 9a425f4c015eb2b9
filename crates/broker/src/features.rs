//! The queue arguments that act on messages over time and at limits — `x-message-ttl`,
//! `x-expires`, `x-dead-letter-exchange`, `x-dead-letter-routing-key`, `x-max-length`,
//! `x-max-length-bytes`, `x-overflow` — parsed once when the queue is declared or recovered, and
//! the per-message `expiration` property. Validation (with RabbitMQ's error texts) happens at
//! declare in `validate_queue_arguments`; this module trusts what it is given.

use amqp_codec::{FieldTable, FieldValue};

/// RabbitMQ's largest TTL or expiry, in milliseconds (`?MAX_EXPIRY_TIMER`).
pub const EXPIRY_MS_MAX: u64 = 4_294_967_295;

/// What a queue at its length limit does with a new message (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest ready messages until the queue is within its limits.
    #[default]
    DropHead,
    /// Refuse the new message: basic.nack to a confirming publisher, else silently dropped.
    RejectPublish,
    /// Like `RejectPublish`, and dead-letter the refused message (reason maxlen).
    RejectPublishDlx,
}

/// The arguments of one queue that give it TTLs, dead-lettering or limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueFeatures {
    pub message_ttl_ms: Option<u64>,
    pub expires_ms: Option<u64>,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
    /// `x-delivery-limit`: returns to the queue a message may have before it is dead-lettered
    /// (reason delivery_limit) or dropped.
    pub delivery_limit: Option<u64>,
    /// `x-consumer-timeout`: the acknowledgement timeout of deliveries from this queue.
    pub consumer_timeout_ms: Option<u64>,
}

impl QueueFeatures {
    /// The features the arguments ask for; None when they ask for none, so plain queues carry
    /// nothing.
    pub fn from_arguments(args: &FieldTable) -> Option<Box<QueueFeatures>> {
        let int = |k: &str| args.get(k).and_then(FieldValue::as_i64).and_then(|i| u64::try_from(i).ok());
        let text = |k: &str| args.get(k).and_then(FieldValue::as_str).map(str::to_owned);
        let f = QueueFeatures {
            message_ttl_ms: int("x-message-ttl"),
            expires_ms: int("x-expires"),
            dead_letter_exchange: text("x-dead-letter-exchange"),
            dead_letter_routing_key: text("x-dead-letter-routing-key"),
            max_length: int("x-max-length"),
            max_length_bytes: int("x-max-length-bytes"),
            overflow: match args.get("x-overflow").and_then(FieldValue::as_str) {
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => Overflow::DropHead,
            },
            single_active_consumer: matches!(args.get("x-single-active-consumer"), Some(FieldValue::Bool(true))),
            delivery_limit: int("x-delivery-limit"),
            consumer_timeout_ms: int("x-consumer-timeout"),
        };
        (f != QueueFeatures::default()).then(|| Box::new(f))
    }

    pub fn limits(&self) -> Limits {
        Limits { max_length: self.max_length, max_length_bytes: self.max_length_bytes }
    }

    /// True when `ready` messages holding `ready_bytes` body bytes exceed a length limit.
    pub fn over_limit(&self, ready: usize, ready_bytes: usize) -> bool {
        self.limits().exceeded(ready, ready_bytes)
    }
}

/// `x-max-length` and `x-max-length-bytes` (ready messages and their body bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
}

impl Limits {
    pub fn exceeded(self, ready: usize, ready_bytes: usize) -> bool {
        self.max_length.is_some_and(|m| ready as u64 > m)
            || self.max_length_bytes.is_some_and(|m| ready_bytes as u64 > m)
    }
}

/// Parses a message's `expiration` property: milliseconds as decimal text. The error is the
/// Erlang term RabbitMQ puts in its PRECONDITION_FAILED text.
pub fn parse_expiration(raw: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(raw);
    // Erlang's string:to_integer: an optional sign, then digits; the rest is left over.
    let (sign, digits_from) = match raw.first() {
        Some(b'-') => (-1i128, 1),
        Some(b'+') => (1, 1),
        _ => (1, 0),
    };
    let digits = raw[digits_from..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err(format!("{{invalid_expiration,<<\"{text}\">>}}"));
    }
    let end = digits_from + digits;
    if end < raw.len() {
        return Err(format!("{{leftover_string,\"{}\"}}", String::from_utf8_lossy(&raw[end..])));
    }
    let magnitude: i128 =
        std::str::from_utf8(&raw[digits_from..end]).ok().and_then(|d| d.parse().ok()).unwrap_or(i128::MAX);
    let n = sign * magnitude;
    if n < 0 {
        return Err(format!("{{value_negative,{n}}}"));
    }
    if n > EXPIRY_MS_MAX as i128 {
        return Err(format!("{{value_too_large,{n}}}"));
    }
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves expiration texts parse as RabbitMQ parses them, with its error terms.
    #[test]
    fn expiration_parsing() {
        assert_eq!(parse_expiration(b"0"), Ok(0));
        assert_eq!(parse_expiration(b"60000"), Ok(60_000));
        assert_eq!(parse_expiration(b"abc"), Err("{invalid_expiration,<<\"abc\">>}".into()));
        assert_eq!(parse_expiration(b""), Err("{invalid_expiration,<<\"\">>}".into()));
        assert_eq!(parse_expiration(b"-1"), Err("{value_negative,-1}".into()));
        assert_eq!(parse_expiration(b"10s"), Err("{leftover_string,\"s\"}".into()));
        assert_eq!(parse_expiration(b"4294967296"), Err("{value_too_large,4294967296}".into()));
    }

    /// Proves a queue without the feature arguments carries no features, and one with them does.
    #[test]
    fn features_only_when_asked() {
        let plain = FieldTable(vec![("x-queue-type".into(), "classic".into())]);
        assert_eq!(QueueFeatures::from_arguments(&plain), None);
        let args = FieldTable(vec![
            ("x-max-length".into(), FieldValue::I32(2)),
            ("x-overflow".into(), "reject-publish-dlx".into()),
        ]);
        let f = QueueFeatures::from_arguments(&args).expect("features");
        assert_eq!((f.max_length, f.overflow), (Some(2), Overflow::RejectPublishDlx));
        assert!(f.over_limit(3, 0) && !f.over_limit(2, 1 << 30));
    }
}
