//! A published message as the broker keeps it: routing info, the raw property list as the
//! publisher sent it, and the body. Shared by every queue it was routed to (`Arc<Message>`), never
//! copied per queue.

use amqp_codec::properties::span_bytes;
use amqp_codec::{FieldTable, PropertiesSummary};
use bytes::Bytes;

#[derive(Debug, Clone)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
    /// The raw property list (flags + values), forwarded unchanged to consumers.
    pub properties: Bytes,
    pub summary: PropertiesSummary,
    pub body: Bytes,
}

impl Message {
    pub fn new(
        exchange: String,
        routing_key: String,
        properties: Bytes,
        summary: PropertiesSummary,
        body: Bytes,
    ) -> Self {
        Message { exchange, routing_key, properties, summary, body }
    }

    /// Builds a message from owned properties (for messages the broker or tests create).
    pub fn with_properties(
        exchange: &str,
        routing_key: &str,
        props: &amqp_codec::BasicProperties,
        body: Bytes,
    ) -> Self {
        let properties = props.to_bytes().unwrap_or_else(|_| Bytes::from_static(&[0, 0]));
        let summary = PropertiesSummary::scan(&properties).unwrap_or_default();
        Message { exchange: exchange.to_owned(), routing_key: routing_key.to_owned(), properties, summary, body }
    }

    pub fn is_persistent(&self) -> bool {
        self.summary.delivery_mode == Some(2)
    }

    /// The headers table, decoded on demand (headers exchange, dead-lettering).
    pub fn headers(&self) -> Option<FieldTable> {
        let span = self.summary.headers?;
        FieldTable::from_wire(span_bytes(&self.properties, span)).ok()
    }

    pub fn user_id(&self) -> Option<&[u8]> {
        self.summary.user_id.map(|s| span_bytes(&self.properties, s))
    }

    pub fn reply_to(&self) -> Option<&[u8]> {
        self.summary.reply_to.map(|s| span_bytes(&self.properties, s))
    }

    /// Bytes of memory this message holds, for limits and statistics.
    pub fn size_bytes(&self) -> usize {
        self.body.len() + self.properties.len() + self.routing_key.len() + self.exchange.len()
    }
}
