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
    /// RabbitMQ's consistent-hash exchange plugin: each message goes to one binding, chosen by a
    /// hash of its routing key (or of the header `hash-header`, or the property
    /// `hash-property`) on a ring where each binding has as many points as its binding key, a
    /// weight, says. The same key always reaches the same queue while the bindings stay.
    ConsistentHash,
    /// RabbitMQ 4's `x-local-random`: each message goes to one bound queue picked at random
    /// (every queue is local on a single node); binding keys are ignored.
    LocalRandom,
    /// The random-exchange plugin's `x-random`: the same routing as `x-local-random`.
    Random,
}

impl ExchangeKind {
    pub fn parse(s: &str) -> Option<ExchangeKind> {
        Some(match s {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            "x-delayed-message" => ExchangeKind::DelayedMessage,
            "x-consistent-hash" => ExchangeKind::ConsistentHash,
            "x-local-random" => ExchangeKind::LocalRandom,
            "x-random" => ExchangeKind::Random,
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
            ExchangeKind::ConsistentHash => "x-consistent-hash",
            ExchangeKind::LocalRandom => "x-local-random",
            ExchangeKind::Random => "x-random",
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
    /// Consistent-hash exchanges: one bucket per unit of weight, in binding order, each the
    /// index of its binding in `bindings`.
    hash_buckets: Vec<usize>,
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
            hash_buckets: Vec::new(),
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
        self.hash_buckets.clear();
        if self.routing == ExchangeKind::Direct {
            for (i, b) in self.bindings.iter().enumerate() {
                self.direct_index.entry(b.routing_key.clone()).or_default().push(i);
            }
        }
        if self.routing == ExchangeKind::ConsistentHash {
            // As RabbitMQ's plugin: a binding's weight is its number of buckets; a key's bucket
            // is a jump consistent hash over them, so shares follow the weights exactly (in
            // expectation) and a binding added last takes keys only from the others' buckets.
            for (i, b) in self.bindings.iter().enumerate() {
                let weight = hash_weight(&b.routing_key).unwrap_or(1);
                self.hash_buckets.extend(std::iter::repeat_n(i, weight as usize));
            }
        }
    }

    /// Consistent-hash exchanges: the destination for the message whose hash key is `key`.
    pub fn pick_hashed(&self, key: &[u8]) -> Option<&Destination> {
        if self.hash_buckets.is_empty() {
            return None;
        }
        let bucket = jump_hash(mix(fnv1a(key)), self.hash_buckets.len());
        Some(&self.bindings[self.hash_buckets[bucket]].destination)
    }

    /// Consistent-hash exchanges: what a message is hashed on (its routing key, the header
    /// `hash-header` names, or the property `hash-property` names); None when that header or
    /// property is missing, and the message then goes nowhere (as with RabbitMQ's plugin).
    pub fn hash_key(&self, routing_key: &str, message: &crate::message::Message) -> Option<Vec<u8>> {
        if let Some(h) = self.arguments.get("hash-header").and_then(|v| v.as_str()) {
            let headers = message.headers()?;
            return Some(match headers.get(h)? {
                amqp_codec::FieldValue::LongStr(b) | amqp_codec::FieldValue::ByteArray(b) => b.to_vec(),
                v => match v.as_i64() {
                    Some(n) => n.to_string().into_bytes(),
                    None => format!("{v:?}").into_bytes(),
                },
            });
        }
        if let Some(p) = self.arguments.get("hash-property").and_then(|v| v.as_str()) {
            let props = amqp_codec::BasicProperties::decode(&message.properties).ok()?;
            return match p {
                "message_id" => props.message_id.map(String::into_bytes),
                "correlation_id" => props.correlation_id.map(String::into_bytes),
                "timestamp" => props.timestamp.map(|t| t.to_string().into_bytes()),
                _ => None,
            };
        }
        Some(routing_key.as_bytes().to_vec())
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
            // Needs the whole message (see `hash_key`); `Vhost::route` picks for these.
            ExchangeKind::ConsistentHash => {}
            ExchangeKind::LocalRandom | ExchangeKind::Random => {
                if !self.bindings.is_empty() {
                    f(&self.bindings[random_below(self.bindings.len())].destination);
                }
            }
        }
    }
}

/// Checks a consistent-hash exchange's `hash-header` and `hash-property` arguments.
pub fn validate_hash_arguments(args: &FieldTable) -> Result<(), String> {
    let header = args.get("hash-header");
    let property = args.get("hash-property");
    if header.is_some() && property.is_some() {
        return Err("hash-header and hash-property are mutually exclusive".into());
    }
    if header.is_some_and(|h| h.as_str().is_none_or(str::is_empty)) {
        return Err("hash-header must be a header name".into());
    }
    if let Some(p) = property {
        match p.as_str() {
            Some("message_id" | "correlation_id" | "timestamp") => {}
            _ => return Err("hash-property must be one of message_id, correlation_id, timestamp".into()),
        }
    }
    Ok(())
}

/// Most points one consistent-hash binding may put on the ring.
pub const HASH_WEIGHT_MAX: u32 = 1000;

/// A consistent-hash binding key: its weight, a whole number from 1 to [`HASH_WEIGHT_MAX`].
pub fn hash_weight(key: &str) -> Option<u32> {
    key.trim().parse::<u32>().ok().filter(|w| (1..=HASH_WEIGHT_MAX).contains(w))
}

/// A uniform pick in 0..n from a per-thread xorshift generator seeded from the clock and the
/// thread (random exchanges need spread, not secrecy).
fn random_below(n: usize) -> usize {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            mix(t ^ (&t as *const u64 as u64)) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        ((u128::from(x) * n as u128) >> 64) as usize
    })
}

/// Lamping and Veach's jump consistent hash: a bucket in 0..n for `key`; growing n to n + 1
/// moves only the keys that go to the new bucket.
fn jump_hash(mut key: u64, n: usize) -> usize {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < n as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser: spreads FNV's output over the whole ring.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod hash_tests {
    use super::*;

    fn ring(weights: &[(u64, u32)]) -> Exchange {
        let mut x = Exchange::new("h", ExchangeKind::ConsistentHash, false, false, false, FieldTable::new());
        for &(q, w) in weights {
            x.bind(Binding {
                destination: Destination::Queue(q),
                routing_key: w.to_string(),
                arguments: FieldTable::new(),
            });
        }
        x
    }

    #[test]
    fn weights_share_keys_and_keys_stick() {
        let x = ring(&[(1, 10), (2, 10), (3, 20)]);
        let mut counts = [0u32; 4];
        for i in 0..40_000 {
            match x.pick_hashed(format!("key-{i}").as_bytes()) {
                Some(Destination::Queue(q)) => counts[*q as usize] += 1,
                other => panic!("{other:?}"),
            }
        }
        // Weight 20 takes half, 10 a quarter each.
        assert!(counts[3] > 19_000 && counts[3] < 21_000, "{counts:?}");
        assert!(counts[1] > 9_000 && counts[1] < 11_000 && counts[2] > 9_000 && counts[2] < 11_000, "{counts:?}");
        // Weights 1, 1, 2 (few buckets) keep the same shares.
        let small = ring(&[(1, 1), (2, 1), (3, 2)]);
        let mut c = [0u32; 4];
        for i in 0..40_000 {
            if let Some(Destination::Queue(q)) = small.pick_hashed(format!("key-{i}").as_bytes()) {
                c[*q as usize] += 1;
            }
        }
        assert!(c[3] > 19_000 && c[1] > 9_000 && c[2] > 9_000, "{c:?}");
        assert_eq!(x.pick_hashed(b"same"), x.pick_hashed(b"same"));
        // Adding a binding moves only keys that now land on it.
        let y = ring(&[(1, 10), (2, 10), (3, 20), (4, 10)]);
        for i in 0..2_000 {
            let k = format!("key-{i}");
            let (a, b) = (x.pick_hashed(k.as_bytes()), y.pick_hashed(k.as_bytes()));
            assert!(a == b || b == Some(&Destination::Queue(4)), "{k}: {a:?} -> {b:?}");
        }
    }

    #[test]
    fn random_exchanges_spread_over_every_binding() {
        let mut x = Exchange::new("r", ExchangeKind::LocalRandom, false, false, false, FieldTable::new());
        for q in 0..4 {
            x.bind(Binding {
                destination: Destination::Queue(q),
                routing_key: String::new(),
                arguments: FieldTable::new(),
            });
        }
        let mut counts = [0u32; 4];
        for _ in 0..4_000 {
            let mut n = 0;
            x.route_each("any", None, |d| {
                n += 1;
                if let Destination::Queue(q) = d {
                    counts[*q as usize] += 1;
                }
            });
            assert_eq!(n, 1, "exactly one destination per message");
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn weights_are_whole_numbers_in_range() {
        assert_eq!(hash_weight("3"), Some(3));
        assert_eq!(hash_weight("0"), None);
        assert_eq!(hash_weight("1001"), None);
        assert_eq!(hash_weight("one"), None);
    }
}
