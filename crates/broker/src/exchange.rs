//! Exchanges, their bindings and routing. Routing is pure: given a message it returns the
//! destinations its bindings select; following exchange-to-exchange bindings and alternate
//! exchanges is done by `Vhost::route`.

use crate::HashMap;
use amqp_codec::FieldTable;

use crate::{headers, topic, QueueId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    /// RabbitMQ's delayed-message plugin type: routes as its `x-delayed-type` after holding a
    /// message for its `x-delay` header's milliseconds (see `delayed.rs`).
    DelayedMessage,
}

impl ExchangeKind {
    pub fn parse(s: &str) -> Option<ExchangeKind> {
        Some(match s {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            "x-delayed-message" => ExchangeKind::DelayedMessage,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::DelayedMessage => "x-delayed-message",
        }
    }
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    Queue(QueueId),
    Exchange(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub destination: Destination,
    pub routing_key: String,
    pub arguments: FieldTable,
}

#[derive(Debug, Clone)]
pub struct Exchange {
    pub name: String,
    /// The declared type.
    pub kind: ExchangeKind,
    /// How bindings are matched: `kind`, or for a delayed-message exchange its `x-delayed-type`.
    pub routing: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    pub bindings: Vec<Binding>,
    /// Direct exchanges: routing key → indexes into `bindings`.
    direct_index: HashMap<String, Vec<usize>>,
    /// `alternate-exchange` from the policy in force (the argument wins over it).
    pub policy_alternate: Option<String>,
    /// Messages published into it and copies routed out of it, counted while routing (which
    /// only reads the exchange); `stats` takes them in at each sample.
    pub published_in: std::cell::Cell<u64>,
    pub published_out: std::cell::Cell<u64>,
    pub stats: crate::stats::MessageStats,
}

impl Exchange {
    pub fn new(
        name: &str,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        let routing = match kind {
            ExchangeKind::DelayedMessage => arguments
                .get("x-delayed-type")
                .and_then(|v| v.as_str())
                .and_then(ExchangeKind::parse)
                .filter(|k| *k != ExchangeKind::DelayedMessage)
                .unwrap_or(ExchangeKind::Direct),
            k => k,
        };
        Exchange {
            name: name.to_owned(),
            kind,
            routing,
            durable,
            auto_delete,
            internal,
            arguments,
            bindings: Vec::new(),
            direct_index: HashMap::default(),
            policy_alternate: None,
            published_in: Default::default(),
            published_out: Default::default(),
            stats: Default::default(),
        }
    }

    pub fn alternate_exchange(&self) -> Option<&str> {
        self.arguments.get("alternate-exchange").and_then(|v| v.as_str()).or(self.policy_alternate.as_deref())
    }

    /// Adds a binding; false when an identical one exists (binding is idempotent).
    pub fn bind(&mut self, b: Binding) -> bool {
        if self.bindings.contains(&b) {
            return false;
        }
        self.bindings.push(b);
        self.reindex();
        true
    }

    /// Removes a binding; false when there was none.
    pub fn unbind(&mut self, b: &Binding) -> bool {
        let before = self.bindings.len();
        self.bindings.retain(|x| x != b);
        let removed = self.bindings.len() != before;
        if removed {
            self.reindex();
        }
        removed
    }

    /// Removes every binding to `dest`; returns how many went.
    pub fn unbind_destination(&mut self, dest: &Destination) -> usize {
        let before = self.bindings.len();
        self.bindings.retain(|x| x.destination != *dest);
        let n = before - self.bindings.len();
        if n > 0 {
            self.reindex();
        }
        n
    }

    fn reindex(&mut self) {
        self.direct_index.clear();
        if self.routing == ExchangeKind::Direct {
            for (i, b) in self.bindings.iter().enumerate() {
                self.direct_index.entry(b.routing_key.clone()).or_default().push(i);
            }
        }
    }

    /// Calls `f` with each destination bound for this routing key and headers.
    pub fn route_each<'a>(
        &'a self,
        routing_key: &str,
        headers: Option<&FieldTable>,
        mut f: impl FnMut(&'a Destination),
    ) {
        match self.routing {
            ExchangeKind::Direct | ExchangeKind::DelayedMessage => {
                if let Some(ix) = self.direct_index.get(routing_key) {
                    ix.iter().for_each(|&i| f(&self.bindings[i].destination));
                }
            }
            ExchangeKind::Fanout => self.bindings.iter().for_each(|b| f(&b.destination)),
            ExchangeKind::Topic => self
                .bindings
                .iter()
                .filter(|b| topic::matches(&b.routing_key, routing_key))
                .for_each(|b| f(&b.destination)),
            ExchangeKind::Headers => {
                self.bindings.iter().filter(|b| headers::matches(&b.arguments, headers)).for_each(|b| f(&b.destination))
            }
        }
    }
}
