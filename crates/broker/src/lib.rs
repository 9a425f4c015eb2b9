//! AMQP 0-9-1 semantics with RabbitMQ's extensions: vhosts, exchanges, bindings, routing, queues,
//! consumers, prefetch, acknowledgements, publisher confirms, transactions, message TTL, queue
//! expiry, dead-lettering and length limits.
//!
//! The broker touches no socket, no clock and no thread. Each method mirrors an AMQP operation,
//! takes the calling connection and channel (and the time, `now_ms`, where time matters), and
//! appends what must go out (replies, deliveries, confirms, returns, cancellations) to `Effects`
//! in the order it must be written. The server carries the effects out. Everything is
//! deterministic, which keeps it testable without sockets.

mod ack_timeout;
pub mod admin;
pub mod auth;
pub mod channel;
mod compaction;
pub mod dead_letter;
pub mod dedup;
pub mod delayed;
pub mod durable;
pub mod error;
pub mod exchange;
pub mod features;
pub mod headers;
pub mod journal;
pub mod limits;
pub mod message;
pub mod parameters;
pub mod policy;
pub mod queue;
pub mod stats;
mod timers;
pub mod topic;
pub mod trace;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use amqp_codec::properties::span_bytes;
use amqp_codec::*;

/// The broker's maps: std's `HashMap` with foldhash (randomly seeded per process) instead of
/// SipHash, which was the largest item of the publish path after the socket calls.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub use channel::{Channel, Deferred, TxOp, Unacked};
pub use dead_letter::{DeadLetter, Reason};
pub use error::{AmqpError, Result};
pub use exchange::{Binding, Destination, Exchange, ExchangeKind};
pub use features::{Overflow, QueueFeatures};
pub use journal::{Definition, Journal, MessageId, MessageRecord, NullJournal, SyncJob};
pub use message::Message;
pub use queue::{Consumer, Queue, QueuedMessage};
pub use stats::{MessageStats, Stat};

/// Identifies a client connection for the life of the process.
pub type ConnectionId = u64;
/// Identifies a queue incarnation (a queue deleted and declared again gets a new id).
pub type QueueId = u64;

/// The name of the direct reply-to pseudo queue.
pub const REPLY_TO_QUEUE: &str = "amq.rabbitmq.reply-to";
const REPLY_TO_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// The flags of a basic.publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishFlags {
    pub mandatory: bool,
    pub immediate: bool,
}

/// Something for the server to send to a connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    Method {
        channel: u16,
        method: Method,
    },
    Deliver {
        channel: u16,
        consumer_tag: Arc<str>,
        delivery_tag: u64,
        redelivered: bool,
        message: Arc<Message>,
    },
    GetOk {
        channel: u16,
        delivery_tag: u64,
        redelivered: bool,
        message_count: u32,
        message: Arc<Message>,
    },
    Return {
        channel: u16,
        reply_code: u16,
        reply_text: &'static str,
        message: Arc<Message>,
    },
    /// A publisher confirm: basic.ack (or basic.nack when `ack` is false) for one sequence number.
    Confirm {
        channel: u16,
        delivery_tag: u64,
        ack: bool,
    },
    /// The connection must be closed by the server (e.g. its vhost was deleted).
    CloseConnection {
        code: u16,
        text: String,
    },
}

/// The ordered output of one or more broker calls.
#[derive(Debug, Default)]
pub struct Effects {
    pub out: Vec<(ConnectionId, Outbound)>,
    /// A deadline earlier than the one `Broker::tick` last returned was set: the server must
    /// call `tick` at this time (milliseconds, the broker's clock) instead.
    pub tick_at_ms: Option<u64>,
}

impl Effects {
    /// True when there is nothing for the server to do.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty() && self.tick_at_ms.is_none()
    }
    pub fn push(&mut self, conn: ConnectionId, o: Outbound) {
        self.out.push((conn, o));
    }
    pub fn reply(&mut self, conn: ConnectionId, channel: u16, method: impl Into<Method>) {
        self.out.push((conn, Outbound::Method { channel, method: method.into() }));
    }
}

/// Limits and behaviour the broker enforces.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Consumers per channel.
    pub consumers_per_channel_max: usize,
    /// A queue with consumers and more ready messages than this signals flow pressure to the
    /// publishers feeding it, so they slow to the rate its consumers take messages.
    pub queue_flow_backlog: usize,
    /// Confirm persistent messages once they are written to the OS, before fsync (RabbitMQ's
    /// behaviour for classic queues). Off by default: a confirm means the message is on disk.
    /// Carried out by the syncer, which calls `journal_synced` between the write and the fsync.
    pub confirm_before_fsync: bool,
    /// Bytes of ready message bodies a queue keeps in memory; messages beyond it are paged out
    /// (only a 16-byte reference to their record in the message log stays in memory) and read
    /// back as consumers drain the queue. Persistent messages in durable queues use their
    /// journal record; others get a transient record that recovery ignores. Priority queues
    /// are not paged. Each message counts its body plus `queue_message_overhead_bytes`.
    pub queue_memory_bytes_max: usize,
    /// What a message in memory costs beyond its body (its entry, `Message`, properties), for
    /// the paging budget: without it a million 16-byte messages would count as 16 MB.
    pub queue_message_overhead_bytes: usize,
    /// Default consumer acknowledgement timeout in milliseconds (RabbitMQ's `consumer_timeout`,
    /// 30 minutes); 0 turns it off. Queues and consumers may set their own (`ack_timeout.rs`).
    pub consumer_timeout_ms: u64,
    /// This node's name, as traces and the API report it (`warren@host`).
    pub node_name: String,
}

impl BrokerConfig {
    /// The paging budget of each queue.
    pub fn page_budget(&self) -> queue::PageBudget {
        queue::PageBudget { bytes: self.queue_memory_bytes_max, per_message: self.queue_message_overhead_bytes }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            consumers_per_channel_max: 65_535,
            queue_flow_backlog: 20_000,
            confirm_before_fsync: false,
            queue_memory_bytes_max: 16 << 20,
            queue_message_overhead_bytes: 160,
            consumer_timeout_ms: 1_800_000,
            node_name: "warren@localhost".to_owned(),
        }
    }
}

/// Bytes of deliveries a connection's writer may have outstanding before the broker stops
/// dispatching to its consumers. The broker spends credit as it emits deliveries; the writer
/// refunds it once the bytes are on the socket, and resumes dispatch if the broker ran dry.
#[derive(Debug)]
pub struct WriteCredit {
    bytes: AtomicI64,
    starved: AtomicBool,
}

impl WriteCredit {
    pub fn new(bytes: i64) -> Arc<WriteCredit> {
        Arc::new(WriteCredit { bytes: AtomicI64::new(bytes), starved: AtomicBool::new(false) })
    }

    /// True when a delivery may go out. Marks the connection starved first, so a refund that
    /// races with this check always sees the mark and resumes dispatch.
    fn try_take(&self) -> bool {
        if self.bytes.load(Ordering::SeqCst) > 0 {
            return true;
        }
        self.starved.store(true, Ordering::SeqCst);
        self.bytes.load(Ordering::SeqCst) > 0
    }

    fn spend(&self, n: usize) {
        self.bytes.fetch_sub(n as i64, Ordering::SeqCst);
    }

    /// Gives back `n` written bytes; true when dispatch to this connection must be resumed.
    pub fn refund(&self, n: usize) -> bool {
        let after = self.bytes.fetch_add(n as i64, Ordering::SeqCst) + n as i64;
        after > 0 && self.starved.swap(false, Ordering::SeqCst)
    }

    pub fn available(&self) -> i64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

/// Bytes a delivery of `m` is charged against write credit.
pub fn delivery_cost(m: &Message) -> usize {
    m.size_bytes() + 64
}

#[derive(Debug)]
pub struct Vhost {
    pub name: String,
    pub exchanges: HashMap<String, Exchange>,
    pub queues: HashMap<String, QueueId>,
    /// Firehose tracing on (see `trace.rs`); not persisted.
    pub tracing: bool,
}

impl Vhost {
    fn new(name: &str) -> Self {
        let mut v =
            Vhost { name: name.to_owned(), exchanges: HashMap::default(), queues: HashMap::default(), tracing: false };
        for (n, k) in [
            ("", ExchangeKind::Direct),
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
        ] {
            v.exchanges.insert(n.to_owned(), Exchange::new(n, k, true, false, false, FieldTable::new()));
        }
        // Every vhost's firehose exchange, as RabbitMQ's: internal, so clients only bind to it.
        v.exchanges.insert(
            trace::TRACE_EXCHANGE.to_owned(),
            Exchange::new(trace::TRACE_EXCHANGE, ExchangeKind::Topic, true, false, true, FieldTable::new()),
        );
        v
    }

    /// Routes through the exchange graph (exchange-to-exchange bindings and alternate exchanges),
    /// appending the ids of every queue reached, each once. Allocates nothing unless the message
    /// travels beyond its first exchange.
    pub fn route<'a>(&'a self, exchange: &'a str, routing_key: &str, message: &Message, out: &mut Vec<QueueId>) {
        if exchange.is_empty() {
            // The default exchange: implicitly bound to every queue by name, nothing else.
            if let Some(&q) = self.queues.get(routing_key) {
                out.push(q);
            }
            return;
        }
        let mut headers: Option<Option<FieldTable>> = None;
        let mut pending: Vec<&str> = Vec::new();
        let mut visited: Vec<&str> = Vec::new();
        let mut current = exchange;
        let mut first: Option<&Exchange> = None;
        let before = out.len();
        loop {
            if let Some(x) = self.exchanges.get(current) {
                if first.is_none() {
                    x.published_in.set(x.published_in.get() + 1);
                    first = Some(x);
                }
                let h = if x.routing == ExchangeKind::Headers {
                    headers.get_or_insert_with(|| message.headers()).as_ref()
                } else {
                    None
                };
                let mut matched = false;
                let mut to = |d: &'a Destination| {
                    matched = true;
                    match d {
                        Destination::Queue(q) => out.push(*q),
                        Destination::Exchange(e) => pending.push(e.as_str()),
                    }
                };
                if x.routing == ExchangeKind::ConsistentHash {
                    if let Some(d) = x.hash_key(routing_key, message).and_then(|k| x.pick_hashed(&k)) {
                        to(d);
                    }
                } else {
                    x.route_each(routing_key, h, to);
                }
                if !matched {
                    if let Some(ae) = x.alternate_exchange() {
                        pending.push(ae);
                    }
                }
            }
            let next = loop {
                match pending.pop() {
                    None => break None,
                    Some(n) if n == exchange || visited.contains(&n) => continue,
                    Some(n) => break Some(n),
                }
            };
            let Some(n) = next else { break };
            visited.push(n);
            current = n;
        }
        if let Some(x) = first {
            x.published_out.set(x.published_out.get() + (out.len() - before) as u64);
        }
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }
}

#[derive(Debug)]
pub struct ConnectionState {
    pub vhost: String,
    pub user: String,
    pub exclusive_queues: Vec<QueueId>,
    pub credit: Arc<WriteCredit>,
    /// The (auth generation, exchange) of the last publish the permission check allowed (see
    /// `auth.rs`), so a stream of publishes to one exchange is checked once.
    pub publish_ok: std::cell::RefCell<Option<(u64, String)>>,
    /// The client announced `consumer_cancel_notify`: it is told with basic.cancel when a queue
    /// it consumes from goes away (true until `set_cancel_notify` says otherwise).
    pub cancel_notify: bool,
}

/// The whole broker state of one node.
#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub vhosts: HashMap<String, Vhost>,
    pub queues: HashMap<QueueId, Queue>,
    pub connections: HashMap<ConnectionId, ConnectionState>,
    pub channels: HashMap<(ConnectionId, u16), Channel>,
    next_queue_id: QueueId,
    name_counter: u64,
    name_seed: u64,
    /// Queues whose consumers may be able to take messages now.
    dirty: Vec<QueueId>,
    route_buf: Vec<QueueId>,
    /// Queues that passed `queue_flow_backlog` during publishes since the last `take_pressure`.
    pressure: Vec<QueueId>,
    journal: Box<dyn Journal>,
    /// See `page_in_failures`.
    page_in_failures: u64,
    next_msg_id: MessageId,
    /// The journal sequence known to be on stable storage.
    synced_seq: u64,
    /// Channels with publisher confirms waiting for the journal.
    confirm_waiters: Vec<(ConnectionId, u16)>,
    /// The broker's time: the largest `now_ms` a call brought (see `timers.rs`).
    now_ms: u64,
    /// (deadline, queue): when queues have a message or queue expiry due. Stale entries are
    /// skipped; each queue's `timer_ms` is its earliest live one.
    timers: BinaryHeap<Reverse<(u64, QueueId)>>,
    /// When the server's timer will call `tick` next, as far as the broker knows.
    timer_wake_ms: u64,
    /// A deadline before `timer_wake_ms` was set since the last `Effects` went out.
    wake_pending: bool,
    /// Recovered queues with x-expires whose period starts at the first tick.
    unarmed: Vec<QueueId>,
    /// Messages on their way to dead-letter exchanges, published before the call returns.
    dead_letters: VecDeque<DeadLetter>,
    /// Policies and operator policies of every vhost (see `policy.rs`).
    policies: Vec<policy::Policy>,
    /// Vhosts' connection and queue limits, by vhost name (see `limits.rs`).
    vhost_limits: std::collections::BTreeMap<String, limits::VhostLimits>,
    /// Global runtime parameters: name → JSON text (see `parameters.rs`).
    global_parameters: std::collections::BTreeMap<String, String>,
    /// (deadline, connection, channel): acknowledgement timeouts (see `ack_timeout.rs`).
    ack_timers: BinaryHeap<Reverse<(u64, ConnectionId, u16)>>,
    /// Channels the broker closed, until the client's channel.close-ok.
    server_closed: HashSet<(ConnectionId, u16)>,
    /// Messages held by delayed-message exchanges (see `delayed.rs`).
    delayed: delayed::Delayed,
    /// Node-wide message statistics (see `stats.rs`).
    totals: stats::MessageStats,
    churn: stats::Churn,
    /// Users, permissions and connection details (see `auth.rs`).
    auth: auth::Auth,
    /// Vhosts with tracing on (see `trace.rs`): while 0, nothing is traced or even looked up.
    tracing_vhosts: usize,
    /// Trace copies made during the current call, published once its dispatch is done.
    pending_traces: Vec<trace::PendingTrace>,
}

fn queue_desc(name: &str, vhost: &str) -> String {
    format!("queue '{name}' in vhost '{vhost}'")
}

fn exchange_desc(name: &str, vhost: &str) -> String {
    format!("exchange '{name}' in vhost '{vhost}'")
}

fn no_queue(name: &str, vhost: &str) -> AmqpError {
    AmqpError::not_found(format!("no queue '{name}' in vhost '{vhost}'"))
}

fn no_exchange(name: &str, vhost: &str) -> AmqpError {
    AmqpError::not_found(format!("no exchange '{name}' in vhost '{vhost}'"))
}

fn locked(name: &str, vhost: &str) -> AmqpError {
    AmqpError::resource_locked(format!(
        "cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
    ))
}

fn inequivalent(
    what: &str,
    arg: &str,
    name: &str,
    vhost: &str,
    received: impl std::fmt::Display,
    current: impl std::fmt::Display,
) -> AmqpError {
    AmqpError::precondition_failed(format!(
        "inequivalent arg '{arg}' for {what} '{name}' in vhost '{vhost}': received '{received}' but current is '{current}'"
    ))
}

/// Queue arguments whose values RabbitMQ compares on redeclaration.
const EQUIVALENCE_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
    "x-delivery-limit",
];

fn describe_value(v: Option<&FieldValue>) -> String {
    match v {
        None => "none".to_owned(),
        Some(v) => match v.as_i64() {
            Some(i) => format!("the value '{i}' of type '{}'", v.type_name()),
            None => match v.as_str() {
                Some(s) => format!("the value '{s}' of type '{}'", v.type_name()),
                None => format!("a value of type '{}'", v.type_name()),
            },
        },
    }
}

fn arg_equal(a: Option<&FieldValue>, b: Option<&FieldValue>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x == y,
        },
        _ => false,
    }
}

impl Default for Broker {
    fn default() -> Self {
        Broker::new(BrokerConfig::default(), 0x5eed)
    }
}

impl Broker {
    /// A broker with the default vhost "/". `name_seed` varies generated names between runs.
    pub fn new(config: BrokerConfig, name_seed: u64) -> Self {
        let mut b = Broker {
            config,
            vhosts: HashMap::default(),
            queues: HashMap::default(),
            connections: HashMap::default(),
            channels: HashMap::default(),
            next_queue_id: 1,
            name_counter: 0,
            name_seed,
            dirty: Vec::new(),
            route_buf: Vec::new(),
            pressure: Vec::new(),
            journal: Box::new(NullJournal),
            page_in_failures: 0,
            next_msg_id: 1,
            synced_seq: 0,
            confirm_waiters: Vec::new(),
            now_ms: 0,
            timers: BinaryHeap::new(),
            timer_wake_ms: u64::MAX,
            wake_pending: false,
            unarmed: Vec::new(),
            dead_letters: VecDeque::new(),
            policies: Vec::new(),
            vhost_limits: Default::default(),
            global_parameters: Default::default(),
            ack_timers: BinaryHeap::new(),
            server_closed: HashSet::new(),
            delayed: delayed::Delayed::default(),
            totals: stats::MessageStats::default(),
            churn: stats::Churn::default(),
            auth: auth::Auth::default(),
            tracing_vhosts: 0,
            pending_traces: Vec::new(),
        };
        b.add_vhost("/");
        b
    }

    pub fn add_vhost(&mut self, name: &str) -> bool {
        if self.vhosts.contains_key(name) {
            return false;
        }
        self.vhosts.insert(name.to_owned(), Vhost::new(name));
        self.journal.define(&Definition::Vhost { name: name.to_owned() });
        true
    }

    /// Replaces the journal (after recovery, which runs with the null journal).
    pub fn set_journal(&mut self, journal: Box<dyn Journal>) {
        self.journal = journal;
    }

    pub fn journal_mut(&mut self) -> &mut dyn Journal {
        &mut *self.journal
    }

    /// Journal records up to `seq` are on stable storage: release the confirms waiting for them.
    pub fn journal_synced(&mut self, seq: u64, fx: &mut Effects) {
        self.synced_seq = self.synced_seq.max(seq);
        let synced = self.synced_seq;
        self.delayed_synced(synced);
        let channels = &mut self.channels;
        self.confirm_waiters.retain(|key| {
            let Some(c) = channels.get_mut(key) else { return false };
            while let Some((_, jseq)) = c.confirms.front() {
                if *jseq > synced {
                    break;
                }
                if let Some((d, _)) = c.confirms.pop_front() {
                    fx.push(key.0, d.into_outbound(key.1, true));
                }
            }
            !c.confirms.is_empty()
        });
    }

    /// The journal failed: nack every confirm waiting for it (the publisher must not assume the
    /// message is safe). Later publishes keep waiting and are nacked the same way.
    pub fn journal_failed(&mut self, error: &str, fx: &mut Effects) {
        self.journal.sync_failed(error);
        let channels = &mut self.channels;
        for key in self.confirm_waiters.drain(..) {
            if let Some(c) = channels.get_mut(&key) {
                for (d, _) in c.confirms.drain(..) {
                    fx.push(key.0, d.into_outbound(key.1, false));
                }
            }
        }
    }

    /// Emits the confirm for publish `tag`, in order behind any confirm still waiting for the
    /// journal, so confirms on a channel always go out in sequence.
    fn confirm(&mut self, conn: ConnectionId, ch: u16, tag: u64, jseq: u64, fx: &mut Effects) {
        self.defer(conn, ch, Deferred::Confirm(tag), jseq, fx);
    }

    /// Sends `d` once journal sequence `jseq` is durable, in order behind what already waits.
    fn defer(&mut self, conn: ConnectionId, ch: u16, d: Deferred, jseq: u64, fx: &mut Effects) {
        let synced = self.synced_seq;
        let Some(c) = self.channels.get_mut(&(conn, ch)) else { return };
        if matches!(d, Deferred::Confirm(_)) {
            c.stats.inc(Stat::Confirm);
            self.totals.inc(Stat::Confirm);
        }
        if c.confirms.is_empty() && jseq <= synced {
            fx.push(conn, d.into_outbound(ch, true));
        } else {
            if c.confirms.is_empty() {
                self.confirm_waiters.push((conn, ch));
            }
            c.confirms.push_back((d, jseq));
        }
    }

    /// Tells the journal a message left `queue` for good.
    fn forget(journal: &mut dyn Journal, queue: QueueId, msg_id: MessageId) {
        if msg_id != 0 {
            journal.remove(queue, msg_id);
        }
    }

    /// A unique name such as `amq.gen-JzTY20BRgKO-HjmUJj0wLg` (22 URL-safe base64 characters).
    fn generate_name(&mut self, prefix: &str) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        self.name_counter += 1;
        let mut x = self.name_seed ^ self.name_counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut y = self.name_counter ^ self.name_seed.rotate_left(17);
        let mut s = String::with_capacity(prefix.len() + 22);
        s.push_str(prefix);
        for i in 0..22 {
            // splitmix64 steps: well spread, and unique because the counter is mixed in.
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x ^ y;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            y = y.wrapping_add(i);
            s.push(ALPHABET[(z & 63) as usize] as char);
        }
        s
    }

    // ---- connections and channels -------------------------------------------------------------

    /// connection.open: binds the connection to a vhost. 530 NOT_ALLOWED when it does not exist.
    pub fn connection_open(
        &mut self,
        conn: ConnectionId,
        vhost: &str,
        user: &str,
        credit: Arc<WriteCredit>,
    ) -> Result<()> {
        if !self.vhosts.contains_key(vhost) {
            return Err(AmqpError::not_allowed(format!("vhost {vhost} not found")));
        }
        self.churn.connections_opened += 1;
        self.connections.insert(
            conn,
            ConnectionState {
                vhost: vhost.to_owned(),
                user: user.to_owned(),
                exclusive_queues: Vec::new(),
                credit,
                publish_ok: Default::default(),
                cancel_notify: true,
            },
        );
        Ok(())
    }

    /// Records whether the connection's client announced the `consumer_cancel_notify`
    /// capability. RabbitMQ sends a server-initiated basic.cancel only to clients that did: one
    /// that did not may not know the method.
    pub fn set_cancel_notify(&mut self, conn: ConnectionId, yes: bool) {
        if let Some(c) = self.connections.get_mut(&conn) {
            c.cancel_notify = yes;
        }
    }

    /// The connection's writer has room again: dispatch to its consumers.
    pub fn resume_connection(&mut self, conn: ConnectionId, now_ms: u64, effects: &mut Effects) {
        self.advance(now_ms);
        let queues: Vec<QueueId> = self
            .channels
            .iter()
            .filter(|((c, _), _)| *c == conn)
            .flat_map(|(_, ch)| ch.consumers.values().copied())
            .collect();
        self.dirty.extend(queues);
        self.run_dispatch(effects);
    }

    /// Queues that signalled flow pressure since the last call.
    pub fn take_pressure(&mut self) -> Vec<QueueId> {
        std::mem::take(&mut self.pressure)
    }

    /// True while any of `queues` still has consumers and a backlog above the flow threshold.
    pub fn backlogged(&self, queues: &[QueueId]) -> bool {
        queues.iter().any(|q| {
            self.queues
                .get(q)
                .is_some_and(|q| !q.consumers.is_empty() && q.ready_len() > self.config.queue_flow_backlog)
        })
    }

    /// The connection is gone: close its channels (requeueing their unacked messages) and delete
    /// its exclusive queues.
    pub fn connection_closed(&mut self, conn: ConnectionId, now_ms: u64, effects: &mut Effects) {
        let mut chans: Vec<u16> = self.channels.keys().filter(|(c, _)| *c == conn).map(|(_, ch)| *ch).collect();
        chans.sort_unstable();
        for ch in chans {
            self.channel_closed(conn, ch, now_ms, effects);
        }
        self.server_closed.retain(|(c, _)| *c != conn);
        if let Some(state) = self.connections.remove(&conn) {
            self.churn.connections_closed += 1;
            for q in state.exclusive_queues {
                self.delete_queue_by_id(q, effects);
            }
        }
        self.run_dispatch(effects);
    }

    pub fn channel_open(&mut self, conn: ConnectionId, channel: u16) {
        self.server_closed.remove(&(conn, channel));
        self.churn.channels_opened += 1;
        self.channels.insert((conn, channel), Channel::new());
    }

    /// The channel is closed: requeue its unacked messages and remove its consumers.
    pub fn channel_closed(&mut self, conn: ConnectionId, channel: u16, now_ms: u64, effects: &mut Effects) {
        self.advance(now_ms);
        let Some(mut ch) = self.channels.remove(&(conn, channel)) else {
            self.server_closed.remove(&(conn, channel));
            return;
        };
        self.churn.channels_closed += 1;
        // Requeue newest first so each lands in front of the later ones already back.
        while let Some(u) = ch.unacked.pop_back() {
            if let Some(q) = self.queues.get_mut(&u.queue) {
                q.unacked_count -= 1;
                self.requeue_entry(u.queue, u.entry);
            }
        }
        for (tag, qid) in ch.consumers.drain() {
            self.remove_consumer(qid, conn, channel, &tag, effects);
        }
        self.run_dispatch(effects);
    }

    fn vhost_of(&self, conn: ConnectionId) -> Result<&str> {
        self.connections
            .get(&conn)
            .map(|c| c.vhost.as_str())
            .ok_or_else(|| AmqpError::channel_error("connection not open"))
    }

    fn channel_mut(&mut self, conn: ConnectionId, channel: u16) -> Result<&mut Channel> {
        self.channels
            .get_mut(&(conn, channel))
            .ok_or_else(|| AmqpError::channel_error(format!("channel {channel} not open")))
    }

    // ---- method dispatch ------------------------------------------------------------------------

    /// Applies one content-less method received on an open channel at time `now_ms`.
    pub fn handle(
        &mut self,
        conn: ConnectionId,
        channel: u16,
        method: Method,
        now_ms: u64,
        effects: &mut Effects,
    ) -> Result<()> {
        self.advance(now_ms);
        if self.is_server_closed(conn, channel) {
            // Spec: after the server's channel.close, everything but close-ok is discarded.
            return Ok(());
        }
        let r = self.handle_inner(conn, channel, method, effects);
        self.run_dispatch(effects);
        r
    }

    fn handle_inner(&mut self, conn: ConnectionId, ch: u16, method: Method, fx: &mut Effects) -> Result<()> {
        let method = self.expand_queue_shortcut(conn, ch, method)?;
        if self.auth.initialized {
            self.authorize(conn, &method)?;
        }
        match method {
            Method::ExchangeDeclare(m) => self.exchange_declare(conn, ch, m, fx),
            Method::ExchangeDelete(m) => self.exchange_delete(conn, ch, m, fx),
            Method::ExchangeBind(m) => {
                self.exchange_bind(conn, &m.source, &m.destination, &m.routing_key, m.arguments, true)?;
                if !m.nowait {
                    fx.reply(conn, ch, ExchangeBindOk);
                }
                Ok(())
            }
            Method::ExchangeUnbind(m) => {
                // RabbitMQ compat (since 3.2): unbinding from or to a missing exchange succeeds.
                match self.exchange_bind(conn, &m.source, &m.destination, &m.routing_key, m.arguments, false) {
                    Err(e) if e.code == amqp_codec::reply::NOT_FOUND => {}
                    r => r?,
                }
                if !m.nowait {
                    fx.reply(conn, ch, ExchangeUnbindOk);
                }
                Ok(())
            }
            Method::QueueDeclare(m) => self.queue_declare(conn, ch, m, fx),
            Method::QueueBind(m) => {
                self.queue_bind(conn, &m.queue, &m.exchange, &m.routing_key, m.arguments, true)?;
                if !m.nowait {
                    fx.reply(conn, ch, QueueBindOk);
                }
                Ok(())
            }
            Method::QueueUnbind(m) => {
                // RabbitMQ compat (since 3.2): unbinding a missing queue or exchange succeeds.
                match self.queue_bind(conn, &m.queue, &m.exchange, &m.routing_key, m.arguments, false) {
                    Err(e) if e.code == amqp_codec::reply::NOT_FOUND => {}
                    r => r?,
                }
                fx.reply(conn, ch, QueueUnbindOk);
                Ok(())
            }
            Method::QueuePurge(m) => {
                let qid = self.find_queue(conn, &m.queue)?;
                let purged = self.queues.get_mut(&qid).map(|q| q.purge()).unwrap_or_default();
                let n = purged.len();
                for msg_id in purged {
                    Self::forget(&mut *self.journal, qid, msg_id);
                }
                if !m.nowait {
                    fx.reply(conn, ch, QueuePurgeOk { message_count: n as u32 });
                }
                Ok(())
            }
            Method::QueueDelete(m) => self.queue_delete(conn, ch, m, fx),
            Method::BasicQos(m) => {
                if m.prefetch_size != 0 {
                    return Err(AmqpError::not_implemented(format!("prefetch_size!=0 ({})", m.prefetch_size)));
                }
                let c = self.channel_mut(conn, ch)?;
                if m.global {
                    c.global_prefetch = m.prefetch_count;
                } else {
                    c.prefetch_count = m.prefetch_count;
                }
                let queues: Vec<QueueId> = c.consumers.values().copied().collect();
                if !m.global {
                    // Better than RabbitMQ (as LavinMQ): a per-consumer limit set while the channel
                    // consumes also applies to its running consumers, not only to later ones.
                    // Celery raises its prefetch this way while it holds ETA and retried tasks;
                    // RabbitMQ 4 ignores that for existing consumers (rabbitmq-server#11948) and
                    // the worker stalls until one of them is acked.
                    for qid in &queues {
                        if let Some(q) = self.queues.get_mut(qid) {
                            for k in q.consumers.iter_mut().filter(|k| k.conn == conn && k.channel == ch) {
                                k.prefetch_count = m.prefetch_count;
                            }
                        }
                    }
                }
                self.dirty.extend(queues);
                fx.reply(conn, ch, BasicQosOk);
                Ok(())
            }
            Method::BasicConsume(m) => self.basic_consume(conn, ch, m, fx),
            Method::BasicCancel(m) => {
                let c = self.channel_mut(conn, ch)?;
                let tag: Arc<str> = m.consumer_tag.as_str().into();
                let qid = c.consumers.remove(&tag);
                if c.reply_consumer.as_deref() == Some(&*tag) {
                    c.reply_consumer = None;
                }
                if let Some(qid) = qid {
                    self.remove_consumer(qid, conn, ch, &tag, fx);
                }
                if !m.nowait {
                    fx.reply(conn, ch, BasicCancelOk { consumer_tag: m.consumer_tag });
                }
                Ok(())
            }
            Method::BasicGet(m) => self.basic_get(conn, ch, m, fx),
            Method::BasicAck(m) => {
                let c = self.channel_mut(conn, ch)?;
                if let Some(tx) = c.tx.as_mut() {
                    tx.push(TxOp::Ack { delivery_tag: m.delivery_tag, multiple: m.multiple });
                    return Ok(());
                }
                self.settle(conn, ch, m.delivery_tag, m.multiple, Settle::Ack, fx)
            }
            Method::BasicNack(m) => {
                let c = self.channel_mut(conn, ch)?;
                if let Some(tx) = c.tx.as_mut() {
                    tx.push(TxOp::Nack { delivery_tag: m.delivery_tag, multiple: m.multiple, requeue: m.requeue });
                    return Ok(());
                }
                let how = if m.requeue { Settle::Requeue } else { Settle::Discard };
                self.settle(conn, ch, m.delivery_tag, m.multiple, how, fx)
            }
            Method::BasicReject(m) => {
                let c = self.channel_mut(conn, ch)?;
                if let Some(tx) = c.tx.as_mut() {
                    tx.push(TxOp::Nack { delivery_tag: m.delivery_tag, multiple: false, requeue: m.requeue });
                    return Ok(());
                }
                let how = if m.requeue { Settle::Requeue } else { Settle::Discard };
                self.settle(conn, ch, m.delivery_tag, false, how, fx)
            }
            // RabbitMQ compat: redelivering to the original consumer (requeue=false) is not
            // implemented there; it closes the connection with 540 NOT_IMPLEMENTED.
            Method::BasicRecover(BasicRecover { requeue: false })
            | Method::BasicRecoverAsync(BasicRecoverAsync { requeue: false }) => {
                Err(AmqpError::not_implemented("requeue=false"))
            }
            Method::BasicRecover(_) => {
                self.recover(conn, ch)?;
                fx.reply(conn, ch, BasicRecoverOk);
                Ok(())
            }
            Method::BasicRecoverAsync(_) => self.recover(conn, ch),
            Method::ConfirmSelect(m) => {
                let c = self.channel_mut(conn, ch)?;
                if c.tx.is_some() {
                    return Err(AmqpError::precondition_failed("cannot switch from tx to confirm mode"));
                }
                c.confirm = true;
                if !m.nowait {
                    fx.reply(conn, ch, ConfirmSelectOk);
                }
                Ok(())
            }
            Method::TxSelect(_) => {
                let c = self.channel_mut(conn, ch)?;
                if c.confirm {
                    return Err(AmqpError::precondition_failed("cannot switch from confirm to tx mode"));
                }
                if c.tx.is_none() {
                    c.tx = Some(Vec::new());
                }
                fx.reply(conn, ch, TxSelectOk);
                Ok(())
            }
            Method::TxCommit(_) => {
                let c = self.channel_mut(conn, ch)?;
                let Some(ops) = c.tx.replace(Vec::new()) else {
                    return Err(AmqpError::precondition_failed("channel is not transactional"));
                };
                let mut durable_at = 0;
                for op in ops {
                    match op {
                        TxOp::Publish { mandatory, message } => {
                            durable_at = durable_at.max(self.publish_now(conn, ch, mandatory, message, fx)?)
                        }
                        TxOp::Ack { delivery_tag, multiple } => {
                            self.settle(conn, ch, delivery_tag, multiple, Settle::Ack, fx)?
                        }
                        TxOp::Nack { delivery_tag, multiple, requeue } => {
                            let how = if requeue { Settle::Requeue } else { Settle::Discard };
                            self.settle(conn, ch, delivery_tag, multiple, how, fx)?
                        }
                    }
                }
                // The commit-ok means the transaction's persistent messages are on disk.
                self.defer(conn, ch, Deferred::Reply(TxCommitOk.into()), durable_at, fx);
                Ok(())
            }
            Method::TxRollback(_) => {
                let c = self.channel_mut(conn, ch)?;
                if c.tx.is_none() {
                    return Err(AmqpError::precondition_failed("channel is not transactional"));
                }
                c.tx = Some(Vec::new());
                fx.reply(conn, ch, TxRollbackOk);
                Ok(())
            }
            Method::ChannelFlow(m) => {
                if !m.active {
                    // RabbitMQ compat: clients may not pause deliveries with channel.flow.
                    return Err(AmqpError::not_implemented("active=false"));
                }
                let c = self.channel_mut(conn, ch)?;
                c.flow_active = m.active;
                let queues: Vec<QueueId> = c.consumers.values().copied().collect();
                self.dirty.extend(queues);
                fx.reply(conn, ch, ChannelFlowOk { active: m.active });
                Ok(())
            }
            Method::AccessRequest(_) => {
                fx.reply(conn, ch, AccessRequestOk { ticket: 1 });
                Ok(())
            }
            other => Err(AmqpError::command_invalid(format!("unexpected method {} on channel {ch}", other.name()))),
        }
    }

    // ---- exchanges ------------------------------------------------------------------------------

    fn exchange_declare(&mut self, conn: ConnectionId, ch: u16, m: ExchangeDeclare, fx: &mut Effects) -> Result<()> {
        let vhost_name = self.vhost_of(conn)?.to_owned();
        let vhost = self.vhosts.get_mut(&vhost_name).ok_or_else(|| no_exchange(&m.exchange, &vhost_name))?;
        if m.passive {
            if m.exchange.is_empty() {
                // As RabbitMQ: the default exchange is off limits to passive declares too.
                return Err(AmqpError::access_refused("operation not permitted on the default exchange"));
            }
            if !vhost.exchanges.contains_key(&m.exchange) {
                return Err(no_exchange(&m.exchange, &vhost_name));
            }
        } else {
            if m.exchange.is_empty() {
                return Err(AmqpError::access_refused("operation not permitted on the default exchange"));
            }
            let kind = ExchangeKind::parse(&m.kind)
                .ok_or_else(|| AmqpError::precondition_failed(format!("unknown exchange type '{}'", m.kind)))?;
            if kind == ExchangeKind::DelayedMessage {
                let inner = m.arguments.get("x-delayed-type").and_then(|v| v.as_str()).and_then(ExchangeKind::parse);
                if inner.is_none_or(|k| k == ExchangeKind::DelayedMessage) {
                    // The delayed-message plugin's text.
                    return Err(AmqpError::precondition_failed(
                        "Invalid argument, 'x-delayed-type' must be an existing exchange type",
                    ));
                }
            }
            if kind == ExchangeKind::ConsistentHash {
                exchange::validate_hash_arguments(&m.arguments).map_err(AmqpError::precondition_failed)?;
            }
            if let Some(x) = vhost.exchanges.get(&m.exchange) {
                let d = |a: &str, r: &dyn std::fmt::Display, c: &dyn std::fmt::Display| {
                    inequivalent("exchange", a, &m.exchange, &vhost_name, r, c)
                };
                if x.kind != kind {
                    return Err(d("type", &m.kind, &x.kind.as_str()));
                }
                if x.durable != m.durable {
                    return Err(d("durable", &m.durable, &x.durable));
                }
                if x.auto_delete != m.auto_delete {
                    return Err(d("auto_delete", &m.auto_delete, &x.auto_delete));
                }
                if x.internal != m.internal {
                    return Err(d("internal", &m.internal, &x.internal));
                }
                if x.alternate_exchange() != m.arguments.get("alternate-exchange").and_then(|v| v.as_str()) {
                    return Err(AmqpError::precondition_failed(format!(
                        "inequivalent arg 'alternate-exchange' for exchange '{}' in vhost '{vhost_name}': received {} but current is {}",
                        m.exchange,
                        describe_value(m.arguments.get("alternate-exchange")),
                        describe_value(x.arguments.get("alternate-exchange"))
                    )));
                }
            } else {
                if m.exchange.starts_with("amq.") {
                    return Err(AmqpError::access_refused(format!(
                        "exchange name '{}' contains reserved prefix 'amq.*'",
                        m.exchange
                    )));
                }
                if let Some(v) = m.arguments.get("alternate-exchange") {
                    if v.as_str().is_none() {
                        return Err(AmqpError::precondition_failed(format!(
                            "invalid arg 'alternate-exchange' for {}: expected a string",
                            exchange_desc(&m.exchange, &vhost_name)
                        )));
                    }
                }
                if m.durable {
                    self.journal.define(&Definition::Exchange {
                        vhost: vhost_name.clone(),
                        name: m.exchange.clone(),
                        kind,
                        auto_delete: m.auto_delete,
                        internal: m.internal,
                        arguments: m.arguments.clone(),
                    });
                }
                let mut x = Exchange::new(&m.exchange, kind, m.durable, m.auto_delete, m.internal, m.arguments);
                x.policy_alternate = policy::alternate_for(&self.policies, &vhost_name, &m.exchange);
                vhost.exchanges.insert(m.exchange.clone(), x);
                if kind == ExchangeKind::DelayedMessage {
                    self.delayed.register(&vhost_name, &m.exchange);
                }
            }
        }
        if !m.nowait {
            fx.reply(conn, ch, ExchangeDeclareOk);
        }
        Ok(())
    }

    fn exchange_delete(&mut self, conn: ConnectionId, ch: u16, m: ExchangeDelete, fx: &mut Effects) -> Result<()> {
        let vhost_name = self.vhost_of(conn)?.to_owned();
        if m.exchange.is_empty() {
            return Err(AmqpError::access_refused("operation not permitted on the default exchange"));
        }
        if m.exchange.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system exchange '{}' in vhost '{vhost_name}' not allowed",
                m.exchange
            )));
        }
        let vhost = self.vhosts.get_mut(&vhost_name).ok_or_else(|| no_exchange(&m.exchange, &vhost_name))?;
        if let Some(x) = vhost.exchanges.get(&m.exchange) {
            let dest = Destination::Exchange(m.exchange.clone());
            let bound_to = vhost.exchanges.values().any(|o| o.bindings.iter().any(|b| b.destination == dest));
            if m.if_unused && (!x.bindings.is_empty() || bound_to) {
                return Err(AmqpError::precondition_failed(format!(
                    "{} in use",
                    exchange_desc(&m.exchange, &vhost_name)
                )));
            }
            let durable = x.durable;
            vhost.exchanges.remove(&m.exchange);
            Self::remove_destination(vhost, &dest);
            self.drop_delayed(&vhost_name, &m.exchange);
            if durable {
                self.journal
                    .define(&Definition::ExchangeDeleted { vhost: vhost_name.clone(), name: m.exchange.clone() });
            }
        }
        // RabbitMQ compat: deleting a missing exchange succeeds.
        if !m.nowait {
            fx.reply(conn, ch, ExchangeDeleteOk);
        }
        Ok(())
    }

    /// Removes every binding to `dest`, then auto-deletes exchanges that lost their last binding.
    fn remove_destination(vhost: &mut Vhost, dest: &Destination) {
        let mut emptied = Vec::new();
        for x in vhost.exchanges.values_mut() {
            if x.unbind_destination(dest) > 0 && x.auto_delete && x.bindings.is_empty() {
                emptied.push(x.name.clone());
            }
        }
        for name in emptied {
            vhost.exchanges.remove(&name);
            Self::remove_destination(vhost, &Destination::Exchange(name));
        }
    }

    fn exchange_bind(
        &mut self,
        conn: ConnectionId,
        source: &str,
        destination: &str,
        routing_key: &str,
        arguments: FieldTable,
        bind: bool,
    ) -> Result<()> {
        let vhost_name = self.vhost_of(conn)?.to_owned();
        let vhost = self.vhosts.get_mut(&vhost_name).ok_or_else(|| no_exchange(source, &vhost_name))?;
        if source.is_empty() || destination.is_empty() {
            return Err(AmqpError::access_refused("operation not permitted on the default exchange"));
        }
        if !vhost.exchanges.contains_key(destination) {
            return Err(no_exchange(destination, &vhost_name));
        }
        let x = vhost.exchanges.get(source).ok_or_else(|| no_exchange(source, &vhost_name))?;
        if x.routing == ExchangeKind::Headers && bind {
            headers::validate(&arguments).map_err(AmqpError::precondition_failed)?;
        }
        if x.routing == ExchangeKind::ConsistentHash && bind && exchange::hash_weight(routing_key).is_none() {
            return Err(AmqpError::precondition_failed(format!(
                "binding key '{routing_key}' of a consistent-hash exchange must be a weight from 1 to {}",
                exchange::HASH_WEIGHT_MAX
            )));
        }
        self.apply_binding(
            &vhost_name,
            source,
            Destination::Exchange(destination.to_owned()),
            routing_key,
            arguments,
            bind,
        );
        Ok(())
    }

    /// Adds or removes a binding whose ends exist, journaling it when both ends are durable, and
    /// auto-deletes the source exchange when it loses its last binding.
    fn apply_binding(
        &mut self,
        vhost_name: &str,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: FieldTable,
        bind: bool,
    ) {
        let durable_dest = match &destination {
            Destination::Queue(q) => {
                self.queues.get(q).map(|q| (q.durable && q.exclusive_owner.is_none(), q.id.to_string()))
            }
            Destination::Exchange(e) => {
                self.vhosts.get(vhost_name).and_then(|v| v.exchanges.get(e)).map(|x| (x.durable, e.clone()))
            }
        };
        let Some(vhost) = self.vhosts.get_mut(vhost_name) else { return };
        let Some(x) = vhost.exchanges.get_mut(source) else { return };
        let to_queue = matches!(destination, Destination::Queue(_));
        let journaled = x.durable && durable_dest.as_ref().is_some_and(|d| d.0);
        let b = Binding { destination, routing_key: routing_key.to_owned(), arguments };
        let def = journaled.then(|| {
            let (vhost, source, destination, routing_key, arguments) = (
                vhost_name.to_owned(),
                source.to_owned(),
                durable_dest.map(|d| d.1).unwrap_or_default(),
                routing_key.to_owned(),
                b.arguments.clone(),
            );
            if bind {
                Definition::Binding { vhost, source, to_queue, destination, routing_key, arguments }
            } else {
                Definition::BindingDeleted { vhost, source, to_queue, destination, routing_key, arguments }
            }
        });
        let changed = if bind {
            x.bind(b)
        } else {
            let removed = x.unbind(&b);
            if removed && x.auto_delete && x.bindings.is_empty() {
                let name = x.name.clone();
                vhost.exchanges.remove(&name);
                Self::remove_destination(vhost, &Destination::Exchange(name));
            }
            removed
        };
        if let (true, Some(def)) = (changed, def) {
            self.journal.define(&def);
        }
    }

    // ---- queues ---------------------------------------------------------------------------------

    /// Finds a queue by name for the connection, enforcing exclusivity.
    fn find_queue(&self, conn: ConnectionId, name: &str) -> Result<QueueId> {
        let vhost = self.vhost_of(conn)?;
        let qid = *self.vhosts.get(vhost).and_then(|v| v.queues.get(name)).ok_or_else(|| no_queue(name, vhost))?;
        let q = &self.queues[&qid];
        if let Some(owner) = q.exclusive_owner {
            if owner != conn {
                return Err(locked(name, vhost));
            }
        }
        Ok(qid)
    }

    fn queue_declare(&mut self, conn: ConnectionId, ch: u16, m: QueueDeclare, fx: &mut Effects) -> Result<()> {
        let vhost_name = self.vhost_of(conn)?.to_owned();
        let name = if m.queue.is_empty() && !m.passive { self.generate_name("amq.gen-") } else { m.queue.clone() };
        let existing = self.vhosts.get(&vhost_name).and_then(|v| v.queues.get(&name)).copied();
        self.churn.queues_declared += 1;
        let (qid, message_count, consumer_count) = match existing {
            Some(qid) => {
                let q = &self.queues[&qid];
                if let Some(owner) = q.exclusive_owner {
                    if owner != conn {
                        return Err(locked(&name, &vhost_name));
                    }
                }
                if !m.passive {
                    let d = |a: &str, r: bool, c: bool| inequivalent("queue", a, &name, &vhost_name, r, c);
                    if q.durable != m.durable {
                        return Err(d("durable", m.durable, q.durable));
                    }
                    if q.exclusive_owner.is_some() != m.exclusive {
                        // RabbitMQ compat: a mismatched exclusive flag is RESOURCE_LOCKED.
                        return Err(locked(&name, &vhost_name));
                    }
                    if q.auto_delete != m.auto_delete {
                        return Err(d("auto_delete", m.auto_delete, q.auto_delete));
                    }
                    for key in EQUIVALENCE_ARGS {
                        let (r, c) = (m.arguments.get(key), q.arguments.get(key));
                        if !arg_equal(r, c) {
                            return Err(AmqpError::precondition_failed(format!(
                                "inequivalent arg '{key}' for {}: received {} but current is {}",
                                queue_desc(&name, &vhost_name),
                                describe_value(r),
                                describe_value(c)
                            )));
                        }
                    }
                }
                (qid, q.message_count(), q.consumer_count())
            }
            None if m.passive => return Err(no_queue(&name, &vhost_name)),
            None => {
                if name.starts_with("amq.") && !m.queue.is_empty() {
                    return Err(AmqpError::access_refused(format!(
                        "queue name '{name}' contains reserved prefix 'amq.*'"
                    )));
                }
                validate_queue_arguments(&m.arguments, &name, &vhost_name)?;
                if let Some("quorum" | "stream") = m.arguments.get("x-queue-type").and_then(|v| v.as_str()) {
                    // RabbitMQ compat: replicated queue types are durable, shared and lasting;
                    // its checks, in its order. (Warren serves them as classic queues.)
                    let bad = |p: &str| {
                        AmqpError::precondition_failed(format!(
                            "invalid property '{p}' for {}",
                            queue_desc(&name, &vhost_name)
                        ))
                    };
                    if m.auto_delete {
                        return Err(bad("auto-delete"));
                    }
                    if m.exclusive {
                        return Err(bad("exclusive"));
                    }
                    if !m.durable {
                        return Err(bad("non-durable"));
                    }
                }
                self.check_queue_limit(&vhost_name, &name)?;
                let id = self.next_queue_id;
                self.next_queue_id += 1;
                let owner = m.exclusive.then_some(conn);
                if m.durable && !m.exclusive {
                    // Spec: exclusive queues never survive their connection, so never a restart.
                    self.journal.define(&Definition::Queue {
                        id,
                        vhost: vhost_name.clone(),
                        name: name.clone(),
                        auto_delete: m.auto_delete,
                        arguments: m.arguments.clone(),
                    });
                }
                let q = Queue::new(id, &vhost_name, &name, m.durable, owner, m.auto_delete, m.arguments);
                self.queues.insert(id, q);
                self.churn.queues_created += 1;
                if let Some(v) = self.vhosts.get_mut(&vhost_name) {
                    v.queues.insert(name.clone(), id);
                }
                self.apply_queue_policy(id);
                if m.exclusive {
                    if let Some(c) = self.connections.get_mut(&conn) {
                        c.exclusive_queues.push(id);
                    }
                }
                (id, 0, 0)
            }
        };
        // RabbitMQ compat: declaring a queue, passively too, renews its x-expires lease.
        self.touch_unused(qid);
        if let Some(c) = self.channels.get_mut(&(conn, ch)) {
            c.last_queue = Some(name.clone());
        }
        if !m.nowait {
            fx.reply(conn, ch, QueueDeclareOk { queue: name, message_count, consumer_count });
        }
        Ok(())
    }

    /// RabbitMQ's shortcut: an empty queue name means the queue the channel declared last (404
    /// when it declared none), and in queue.bind and queue.unbind an empty routing key with it
    /// means that queue's name.
    fn expand_queue_shortcut(&self, conn: ConnectionId, ch: u16, mut method: Method) -> Result<Method> {
        let last = || {
            self.channels
                .get(&(conn, ch))
                .and_then(|c| c.last_queue.clone())
                .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
        };
        match &mut method {
            Method::QueueBind(QueueBind { queue, routing_key, .. })
            | Method::QueueUnbind(QueueUnbind { queue, routing_key, .. })
                if queue.is_empty() =>
            {
                *queue = last()?;
                if routing_key.is_empty() {
                    routing_key.clone_from(queue);
                }
            }
            Method::QueuePurge(QueuePurge { queue, .. })
            | Method::QueueDelete(QueueDelete { queue, .. })
            | Method::BasicConsume(BasicConsume { queue, .. })
            | Method::BasicGet(BasicGet { queue, .. })
                if queue.is_empty() =>
            {
                *queue = last()?;
            }
            _ => {}
        }
        Ok(method)
    }

    fn queue_bind(
        &mut self,
        conn: ConnectionId,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
        bind: bool,
    ) -> Result<()> {
        let vhost_name = self.vhost_of(conn)?.to_owned();
        let qid = self.find_queue(conn, queue)?;
        if exchange.is_empty() {
            return Err(AmqpError::access_refused("operation not permitted on the default exchange"));
        }
        let vhost = self.vhosts.get(&vhost_name).ok_or_else(|| no_exchange(exchange, &vhost_name))?;
        let x = vhost.exchanges.get(exchange).ok_or_else(|| no_exchange(exchange, &vhost_name))?;
        if x.routing == ExchangeKind::Headers && bind {
            headers::validate(&arguments).map_err(AmqpError::precondition_failed)?;
        }
        if x.routing == ExchangeKind::ConsistentHash && bind && exchange::hash_weight(routing_key).is_none() {
            return Err(AmqpError::precondition_failed(format!(
                "binding key '{routing_key}' of a consistent-hash exchange must be a weight from 1 to {}",
                exchange::HASH_WEIGHT_MAX
            )));
        }
        self.apply_binding(&vhost_name, exchange, Destination::Queue(qid), routing_key, arguments, bind);
        Ok(())
    }

    fn queue_delete(&mut self, conn: ConnectionId, ch: u16, m: QueueDelete, fx: &mut Effects) -> Result<()> {
        let vhost_name = self.vhost_of(conn)?.to_owned();
        let qid = match self.find_queue(conn, &m.queue) {
            Ok(q) => q,
            // RabbitMQ compat: deleting a missing queue succeeds with a count of 0.
            Err(e) if e.code == amqp_codec::reply::NOT_FOUND => {
                if !m.nowait {
                    fx.reply(conn, ch, QueueDeleteOk { message_count: 0 });
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let q = &self.queues[&qid];
        if m.if_unused && !q.consumers.is_empty() {
            return Err(AmqpError::precondition_failed(format!("{} in use", queue_desc(&m.queue, &vhost_name))));
        }
        if m.if_empty && q.ready_len() != 0 {
            return Err(AmqpError::precondition_failed(format!("{} not empty", queue_desc(&m.queue, &vhost_name))));
        }
        // As RabbitMQ: delete-ok first, then the consumers' basic.cancel (a client waiting for
        // delete-ok on a channel that consumes from the queue must not get the cancel first).
        if !m.nowait {
            fx.reply(conn, ch, QueueDeleteOk { message_count: q.ready_len() as u32 });
        }
        self.delete_queue_by_id(qid, fx);
        Ok(())
    }

    /// Deletes a queue: bindings go, consumers are told with basic.cancel. Returns its ready count.
    pub fn delete_queue_by_id(&mut self, qid: QueueId, fx: &mut Effects) -> usize {
        let Some(q) = self.queues.remove(&qid) else {
            return 0;
        };
        self.churn.queues_deleted += 1;
        // Release its messages' records (journaled ones, and paged-out transient ones of any
        // queue), ready and unacknowledged, then the queue itself.
        for msg_id in q.ready_msg_ids() {
            Self::forget(&mut *self.journal, qid, msg_id);
        }
        for c in self.channels.values() {
            for u in c.unacked.iter().filter(|u| u.queue == qid) {
                Self::forget(&mut *self.journal, qid, u.entry.msg_id);
            }
        }
        if q.is_journaled() {
            self.journal.define(&Definition::QueueDeleted { id: qid });
        }
        if let Some(v) = self.vhosts.get_mut(&q.vhost) {
            v.queues.remove(&q.name);
            Self::remove_destination(v, &Destination::Queue(qid));
        }
        if let Some(owner) = q.exclusive_owner {
            if let Some(c) = self.connections.get_mut(&owner) {
                c.exclusive_queues.retain(|x| *x != qid);
            }
        }
        for c in &q.consumers {
            if let Some(chan) = self.channels.get_mut(&(c.conn, c.channel)) {
                chan.consumers.remove(&c.tag);
                // Spec ext (consumer_cancel_notify): tell the consumer its queue is gone.
                if self.connections.get(&c.conn).is_none_or(|s| s.cancel_notify) {
                    fx.reply(c.conn, c.channel, BasicCancel { consumer_tag: c.tag.to_string(), nowait: true });
                }
            }
        }
        q.ready_len()
    }

    // ---- consuming ------------------------------------------------------------------------------

    fn basic_consume(&mut self, conn: ConnectionId, ch: u16, m: BasicConsume, fx: &mut Effects) -> Result<()> {
        let tag: Arc<str> = if m.consumer_tag.is_empty() {
            self.generate_name("amq.ctag-").into()
        } else {
            m.consumer_tag.as_str().into()
        };
        {
            let max = self.config.consumers_per_channel_max;
            let c = self.channel_mut(conn, ch)?;
            if c.consumers.contains_key(&tag) || c.reply_consumer.as_deref() == Some(&*tag) {
                return Err(AmqpError::not_allowed(format!("attempt to reuse consumer tag '{tag}'")));
            }
            if c.consumers.len() >= max {
                return Err(AmqpError::not_allowed(format!("consumer limit of {max} per channel reached")));
            }
        }
        if m.queue == REPLY_TO_QUEUE {
            if !m.no_ack {
                return Err(AmqpError::precondition_failed("reply consumer cannot acknowledge"));
            }
            let c = self.channel_mut(conn, ch)?;
            if c.reply_consumer.is_some() {
                return Err(AmqpError::precondition_failed("reply consumer already set"));
            }
            c.reply_consumer = Some(tag.clone());
            if !m.nowait {
                fx.reply(conn, ch, BasicConsumeOk { consumer_tag: tag.to_string() });
            }
            return Ok(());
        }
        let vhost = self.vhost_of(conn)?.to_owned();
        let qid = self.find_queue(conn, &m.queue)?;
        let prefetch_count = self.channels.get(&(conn, ch)).map(|c| c.prefetch_count).unwrap_or(0);
        let credit =
            self.connections.get(&conn).map(|c| c.credit.clone()).unwrap_or_else(|| WriteCredit::new(i64::MAX / 2));
        let q = self.queues.get_mut(&qid).ok_or_else(|| no_queue(&m.queue, &vhost))?;
        if q.has_exclusive_consumer() || (m.exclusive && !q.consumers.is_empty()) {
            return Err(AmqpError::access_refused(format!("{} in exclusive use", queue_desc(&m.queue, &vhost))));
        }
        let priority = match m.arguments.get("x-priority") {
            None => 0,
            Some(v) => match v.as_i64().and_then(|p| i32::try_from(p).ok()) {
                Some(p) => p,
                None => {
                    return Err(AmqpError::precondition_failed(format!(
                        "invalid arg 'x-priority' for {}: {{unacceptable_type,{}}}",
                        queue_desc(&m.queue, &vhost),
                        v.type_name()
                    )))
                }
            },
        };
        q.add_consumer(Consumer {
            conn,
            channel: ch,
            tag: tag.clone(),
            no_ack: m.no_ack,
            exclusive: m.exclusive,
            prefetch_count,
            unacked: 0,
            timeout_ms: ack_timeout::consumer_timeout_arg(&m.arguments),
            arguments: m.arguments,
            credit,
            priority,
        });
        q.had_consumer = true;
        q.unused_deadline_ms = None;
        if let Some(c) = self.channels.get_mut(&(conn, ch)) {
            c.consumers.insert(tag.clone(), qid);
        }
        if !m.nowait {
            fx.reply(conn, ch, BasicConsumeOk { consumer_tag: tag.to_string() });
        }
        self.dirty.push(qid);
        Ok(())
    }

    fn remove_consumer(&mut self, qid: QueueId, conn: ConnectionId, ch: u16, tag: &str, fx: &mut Effects) {
        let Some(q) = self.queues.get_mut(&qid) else {
            return;
        };
        q.consumers.retain(|c| !(c.conn == conn && c.channel == ch && &*c.tag == tag));
        if q.next_consumer >= q.consumers.len() {
            q.next_consumer = 0;
        }
        if q.auto_delete && q.had_consumer && q.consumers.is_empty() {
            self.delete_queue_by_id(qid, fx);
        } else if q.consumers.is_empty() {
            self.touch_unused(qid);
        } else {
            // Another consumer (the next single active one, or a lower priority) may take over.
            self.dirty.push(qid);
        }
    }

    fn basic_get(&mut self, conn: ConnectionId, ch: u16, m: BasicGet, fx: &mut Effects) -> Result<()> {
        let qid = self.find_queue(conn, &m.queue)?;
        self.channel_mut(conn, ch)?;
        self.touch_unused(qid);
        let now = self.now_ms;
        let Some(q) = self.queues.get_mut(&qid) else {
            return Ok(());
        };
        let entry = loop {
            Self::page_in(q, &*self.journal, self.config.page_budget(), &mut self.page_in_failures);
            match q.pop() {
                None => {
                    q.stats.inc(Stat::GetEmpty);
                    self.totals.inc(Stat::GetEmpty);
                    if let Some(c) = self.channels.get_mut(&(conn, ch)) {
                        c.stats.inc(Stat::GetEmpty);
                    }
                    fx.reply(conn, ch, BasicGetEmpty { cluster_id: String::new() });
                    return Ok(());
                }
                // Expired messages are never handed out, even before the tick removes them.
                Some(e) if e.is_expired(now) => {
                    Self::dead_letter(q, e, Reason::Expired, &mut *self.journal, &mut self.dead_letters)
                }
                Some(e) => break e,
            }
        };
        let message_count = q.message_count();
        if !m.no_ack {
            q.unacked_count += 1;
        }
        let kind = if m.no_ack { Stat::GetNoAck } else { Stat::Get };
        q.stats.inc(kind);
        self.totals.inc(kind);
        if entry.redelivered {
            q.stats.inc(Stat::Redeliver);
            self.totals.inc(Stat::Redeliver);
        }
        if let Some(state) = self.connections.get(&conn) {
            state.credit.spend(delivery_cost(&entry.message));
        }
        let c = self.channel_mut(conn, ch)?;
        c.stats.inc(kind);
        if entry.redelivered {
            c.stats.inc(Stat::Redeliver);
        }
        let delivery_tag = c.next_tag();
        let (message, redelivered, msg_id) = (entry.message.clone(), entry.redelivered, entry.msg_id);
        if !m.no_ack {
            let timeout_ms = self.ack_timeout_ms(qid, None);
            let deadline_ms = if timeout_ms == 0 { 0 } else { self.now_ms.saturating_add(timeout_ms) };
            let c = self.channel_mut(conn, ch)?;
            c.unacked.push_back(Unacked {
                delivery_tag,
                queue: qid,
                entry,
                consumer_tag: None,
                deadline_ms,
                timeout_ms,
            });
            if deadline_ms != 0 {
                self.watch_ack(conn, ch, deadline_ms);
            }
        }
        if m.no_ack {
            Self::forget(&mut *self.journal, qid, msg_id);
        } else if !redelivered && msg_id != 0 {
            self.journal.delivered(qid, msg_id);
        }
        if let Some(q) = self.queues.get(&qid).filter(|q| self.traces(&q.vhost, &message)) {
            self.pending_traces.push(trace::PendingTrace {
                deliver: true,
                vhost: q.vhost.clone(),
                name: q.name.clone(),
                message: message.clone(),
                redelivered,
                conn,
                channel: ch,
                routed: Vec::new(),
            });
        }
        fx.push(conn, Outbound::GetOk { channel: ch, delivery_tag, redelivered, message_count, message });
        Ok(())
    }

    fn settle(
        &mut self,
        conn: ConnectionId,
        ch: u16,
        delivery_tag: u64,
        multiple: bool,
        how: Settle,
        _fx: &mut Effects,
    ) -> Result<()> {
        let c = self.channel_mut(conn, ch)?;
        let Some(done) = c.take_unacked(delivery_tag, multiple) else {
            return Err(AmqpError::precondition_failed(format!("unknown delivery tag {delivery_tag}")));
        };
        c.consumer_unacked -= done.iter().filter(|u| u.consumer_tag.is_some()).count() as u32;
        let acked = if matches!(how, Settle::Ack) { done.len() as u64 } else { 0 };
        c.stats.add(Stat::Ack, acked);
        if c.global_prefetch != 0 {
            // The channel-wide limit freed room for every queue this channel consumes from.
            let queues: Vec<QueueId> = c.consumers.values().copied().collect();
            self.dirty.extend(queues);
        }
        self.totals.add(Stat::Ack, acked);
        for u in done.into_iter().rev() {
            let Some(q) = self.queues.get_mut(&u.queue) else {
                continue;
            };
            q.unacked_count -= 1;
            if let Some(tag) = &u.consumer_tag {
                if let Some(cons) = q.consumer_mut(conn, ch, tag) {
                    cons.unacked -= 1;
                }
            }
            match how {
                Settle::Ack => {
                    q.stats.inc(Stat::Ack);
                    Self::forget(&mut *self.journal, u.queue, u.entry.msg_id)
                }
                Settle::Discard => {
                    Self::dead_letter(q, u.entry, Reason::Rejected, &mut *self.journal, &mut self.dead_letters)
                }
                Settle::Requeue => self.requeue_entry(u.queue, u.entry),
            }
            self.dirty.push(u.queue);
        }
        Ok(())
    }

    fn recover(&mut self, conn: ConnectionId, ch: u16) -> Result<()> {
        let c = self.channel_mut(conn, ch)?;
        let all: Vec<Unacked> = c.unacked.drain(..).collect();
        c.consumer_unacked = 0;
        for u in all.into_iter().rev() {
            let Some(q) = self.queues.get_mut(&u.queue) else {
                continue;
            };
            q.unacked_count -= 1;
            if let Some(tag) = &u.consumer_tag {
                if let Some(cons) = q.consumer_mut(conn, ch, tag) {
                    cons.unacked -= 1;
                }
            }
            self.requeue_entry(u.queue, u.entry);
        }
        Ok(())
    }

    // ---- publishing -----------------------------------------------------------------------------

    /// basic.publish with its content (the message carries the exchange and routing key),
    /// received at `now_ms`. Confirms, returns and deliveries go into `effects`.
    pub fn publish(
        &mut self,
        conn: ConnectionId,
        ch: u16,
        flags: PublishFlags,
        message: Message,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Result<()> {
        self.advance(now_ms);
        if self.is_server_closed(conn, ch) {
            return Ok(());
        }
        let r = self.publish_checked(conn, ch, flags, message, fx);
        self.run_dispatch(fx);
        r
    }

    fn publish_checked(
        &mut self,
        conn: ConnectionId,
        ch: u16,
        flags: PublishFlags,
        mut message: Message,
        fx: &mut Effects,
    ) -> Result<()> {
        if flags.immediate {
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        if self.auth.initialized {
            self.authorize_publish(conn, &message)?;
        }
        let state = self.connections.get(&conn).ok_or_else(|| AmqpError::channel_error("connection not open"))?;
        let vhost = self.vhosts.get(&state.vhost).ok_or_else(|| no_exchange(&message.exchange, &state.vhost))?;
        let Some(x) = vhost.exchanges.get(&message.exchange) else {
            return Err(no_exchange(&message.exchange, &vhost.name));
        };
        if x.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal {}",
                exchange_desc(&message.exchange, &vhost.name)
            )));
        }
        if let Some(uid) = message.user_id() {
            if uid != state.user.as_bytes() && !self.auth.may_impersonate(&state.user) {
                return Err(AmqpError::precondition_failed(format!(
                    "user_id property set to '{}' but authenticated user was '{}'",
                    String::from_utf8_lossy(uid),
                    state.user
                )));
            }
        }
        if let Some(span) = message.summary.expiration {
            let raw = span_bytes(&message.properties, span);
            if let Err(e) = features::parse_expiration(raw) {
                // RabbitMQ compat: the text carries the Erlang error term.
                return Err(AmqpError::precondition_failed(format!(
                    "invalid expiration '{}': {e}",
                    String::from_utf8_lossy(raw)
                )));
            }
        }
        if message.reply_to() == Some(REPLY_TO_QUEUE.as_bytes()) {
            let c = self.channels.get(&(conn, ch)).ok_or_else(|| AmqpError::channel_error("channel not open"))?;
            if c.reply_consumer.is_none() {
                return Err(AmqpError::precondition_failed("fast reply consumer does not exist"));
            }
            message = rewrite_reply_to(message, &format!("{REPLY_TO_PREFIX}{conn}.{ch}"));
        }
        let c = self.channel_mut(conn, ch)?;
        if let Some(tx) = c.tx.as_mut() {
            tx.push(TxOp::Publish { mandatory: flags.mandatory, message });
            return Ok(());
        }
        self.publish_now(conn, ch, flags.mandatory, message, fx).map(|_| ())
    }

    fn publish_now(
        &mut self,
        conn: ConnectionId,
        ch: u16,
        mandatory: bool,
        message: Message,
        fx: &mut Effects,
    ) -> Result<u64> {
        let seq = {
            let c = self.channel_mut(conn, ch)?;
            c.stats.inc(Stat::Publish);
            if c.confirm {
                c.next_publish_seq += 1;
                Some(c.next_publish_seq)
            } else {
                None
            }
        };
        let vhost_name = self.vhost_of(conn)?;
        // Only needed (and only allocated) while some vhost traces.
        let vhost_name_owned = if self.tracing_vhosts != 0 { vhost_name.to_owned() } else { String::new() };
        let vhost = self.vhosts.get(vhost_name).ok_or_else(|| AmqpError::channel_error("vhost gone"))?;
        let message = Arc::new(message);
        let maybe_delayed = !self.delayed.is_registered_empty() && !message.exchange.is_empty();
        let delayed = match maybe_delayed.then(|| vhost.exchanges.get(&message.exchange)).flatten() {
            Some(x) if x.kind == ExchangeKind::DelayedMessage => {
                delayed::delay_of(&message).map(|d| (d, x.durable, vhost_name.to_owned()))
            }
            _ => None,
        };
        let mut routed = std::mem::take(&mut self.route_buf);
        routed.clear();
        let mut delivered_direct = false;
        if message.exchange.is_empty() && message.routing_key.starts_with(REPLY_TO_PREFIX) {
            delivered_direct = self.deliver_reply(&message.routing_key[REPLY_TO_PREFIX.len()..], &message, fx);
        } else {
            vhost.route(&message.exchange, &message.routing_key, &message, &mut routed);
        }
        self.totals.inc(Stat::Publish);
        if routed.is_empty() && !delivered_direct {
            let s = if mandatory { Stat::ReturnUnroutable } else { Stat::DropUnroutable };
            self.totals.inc(s);
            if let Some(c) = self.channels.get_mut(&(conn, ch)) {
                c.stats.inc(s);
            }
        }
        if routed.is_empty() && !delivered_direct && mandatory {
            fx.push(
                conn,
                Outbound::Return {
                    channel: ch,
                    reply_code: reply::NO_ROUTE,
                    reply_text: "NO_ROUTE",
                    message: message.clone(),
                },
            );
        }
        // Traced as published, whatever happens next (held by a delayed exchange included).
        let traced = self.traces(vhost_name_owned.as_str(), &message).then(|| message.clone());
        let (jseq, refused) = match delayed {
            // Held until due; a mandatory message no queue would take now was returned above.
            Some((delay, durable, vhost)) if !(routed.is_empty() && mandatory) => {
                routed.clear();
                // The broker's clock counts whole milliseconds (rounded down): one more never
                // releases a message before its full delay.
                let due = self.now_ms.saturating_add(delay).saturating_add(1);
                (self.hold_delayed(&vhost, durable, message, due), false)
            }
            Some(_) => (0, false),
            None => self.enqueue(&mut routed, message, fx),
        };
        if let Some(message) = traced {
            let names = routed.iter().filter_map(|q| self.queues.get(q)).map(|q| q.name.clone()).collect();
            self.pending_traces.push(trace::PendingTrace {
                deliver: false,
                vhost: vhost_name_owned,
                name: message.exchange.clone(),
                message,
                redelivered: false,
                conn,
                channel: ch,
                routed: names,
            });
        }
        self.route_buf = routed;
        if let Some(seq) = seq {
            if refused {
                // RabbitMQ compat: refused by one queue (x-overflow reject-publish) is a nack,
                // even if other queues took the message.
                self.defer(conn, ch, Deferred::Nack(seq), jseq, fx);
            } else {
                self.confirm(conn, ch, seq, jseq, fx);
            }
        }
        Ok(jseq)
    }

    /// Puts a routed message into the queues of `routed`, removing from it the queues that
    /// refuse it (x-overflow reject-publish), and journals it once for the durable ones. Used
    /// by publishes and by dead-lettering alike. Returns the journal sequence number to wait
    /// for, and whether a queue refused the message.
    fn enqueue(&mut self, routed: &mut Vec<QueueId>, message: Arc<Message>, fx: &mut Effects) -> (u64, bool) {
        let now = self.now_ms;
        let message_ttl = match message.summary.expiration {
            None => None,
            Some(span) => features::parse_expiration(span_bytes(&message.properties, span)).ok(),
        };
        let persistent = message.is_persistent();
        // Reserved now, used only if a durable queue takes the message.
        let msg_id = self.next_msg_id;
        let mut durable: Vec<QueueId> = Vec::new();
        let mut durable_seqs: Vec<u64> = Vec::new();
        let mut durable_deadline = false;
        let mut fresh: Vec<(QueueId, u64)> = Vec::new();
        let mut refused = false;
        // Queues past their memory budget that take this message without journaling it.
        let mut to_page: Vec<(QueueId, u64)> = Vec::new();
        let mut dedup_id: Option<Option<bytes::Bytes>> = None;
        let mut i = 0;
        while i < routed.len() {
            let qid = routed[i];
            let Some(q) = self.queues.get_mut(&qid) else {
                routed.remove(i);
                continue;
            };
            if let Some(w) = q.dedup.as_deref_mut() {
                let id = dedup_id.get_or_insert_with(|| dedup::DedupWindow::id_of(&message));
                if let Some(id) = id {
                    if !w.admit(id, now) {
                        // A duplicate: handled (and confirmed), not enqueued again.
                        routed.remove(i);
                        continue;
                    }
                    // Recovery rebuilds the window with the arrival times.
                    durable_deadline |= persistent && q.is_journaled();
                }
            }
            let mut ttl = message_ttl;
            if let Some(f) = q.features.as_deref() {
                if f.overflow != Overflow::DropHead
                    && f.over_limit(q.ready_len() + 1, q.ready_bytes() + message.body.len())
                {
                    // RabbitMQ compat: only this queue refuses; the others take the message.
                    refused = true;
                    if f.overflow == Overflow::RejectPublishDlx {
                        Self::dead_letter_message(q, message.clone(), Reason::Maxlen, &mut self.dead_letters);
                    }
                    routed.remove(i);
                    continue;
                }
                ttl = match (ttl, f.message_ttl_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            // 0 means "no deadline", so a deadline is at least 1 ms into the broker's time.
            let expires_at_ms = ttl.map_or(0, |t| now.saturating_add(t).max(1));
            let journaled = persistent && q.is_journaled();
            if journaled {
                durable.push(qid);
                durable_deadline |= expires_at_ms != 0;
            }
            q.stats.inc(Stat::Publish);
            let seq = q.push(message.clone(), if journaled { msg_id } else { 0 }, expires_at_ms);
            // A message due already (TTL 0) is dispatched or expired below, never paged.
            let due_now = expires_at_ms != 0 && expires_at_ms <= now;
            if !journaled && !due_now && q.wants_page(seq, self.config.page_budget()) {
                to_page.push((qid, seq));
            }
            if journaled {
                durable_seqs.push(seq);
            }
            self.dirty.push(qid);
            if q.ready_len() > self.config.queue_flow_backlog
                && !q.consumers.is_empty()
                && !self.pressure.contains(&qid)
            {
                self.pressure.push(qid);
            }
            if expires_at_ms != 0 {
                if expires_at_ms <= now {
                    fresh.push((qid, seq));
                } else {
                    self.arm(qid, expires_at_ms);
                }
            }
            i += 1;
        }
        let mut jseq = 0;
        if !durable.is_empty() {
            self.next_msg_id += 1;
            // The arrival time lets recovery restore the deadlines (see `restore_message`).
            jseq = self.journal.publish(msg_id, &durable, &message, durable_deadline.then_some(now));
            if let Some(location) = self.journal.last_location() {
                let budget = self.config.page_budget();
                for (qid, seq) in durable.iter().zip(durable_seqs) {
                    if fresh.contains(&(*qid, seq)) {
                        continue;
                    }
                    if let Some(q) = self.queues.get_mut(qid) {
                        q.page_out(seq, location, budget);
                    }
                }
            }
        }
        if !to_page.is_empty() {
            // Transient (or in non-durable queues) but past the budget: written to the message
            // log only so the body can leave memory; recovery ignores the record.
            let id = self.next_msg_id;
            let queues: Vec<QueueId> = to_page.iter().map(|(q, _)| *q).collect();
            if let Some(location) = self.journal.page(id, &queues, &message) {
                self.next_msg_id += 1;
                let budget = self.config.page_budget();
                for (qid, seq) in to_page {
                    if let Some(q) = self.queues.get_mut(&qid) {
                        q.set_msg_id(seq, id);
                        if !q.page_out(seq, location, budget) {
                            // Not paged after all: release its share of the record.
                            q.set_msg_id(seq, 0);
                            self.journal.remove(qid, id);
                        }
                    }
                }
            }
        }
        // Spec ext (RabbitMQ): a message with TTL 0 goes to a consumer that can take it now, or
        // expires at once. Done after the journal record exists, as it may remove it again.
        for (qid, seq) in fresh {
            self.dispatch(qid, Some(seq), fx);
        }
        (jseq, refused)
    }

    /// Direct reply-to: deliver straight to the consumer named by the token, if it still exists.
    fn deliver_reply(&mut self, token: &str, message: &Arc<Message>, fx: &mut Effects) -> bool {
        let mut parts = token.splitn(2, '.');
        let (Some(Ok(conn)), Some(Ok(ch))) = (parts.next().map(str::parse::<u64>), parts.next().map(str::parse::<u16>))
        else {
            return false;
        };
        let Some(c) = self.channels.get_mut(&(conn, ch)) else {
            return false;
        };
        let Some(tag) = c.reply_consumer.clone() else {
            return false;
        };
        let delivery_tag = c.next_tag();
        if let Some(state) = self.connections.get(&conn) {
            state.credit.spend(delivery_cost(message));
        }
        fx.push(
            conn,
            Outbound::Deliver {
                channel: ch,
                consumer_tag: tag,
                delivery_tag,
                redelivered: false,
                message: message.clone(),
            },
        );
        true
    }

    // ---- delivery -------------------------------------------------------------------------------

    /// Runs what a call left to do: dispatch on the queues it touched, and publishing the
    /// dead letters it made (which may touch more queues), until nothing is left. Then asks the
    /// server for an earlier tick if a call set an earlier deadline.
    fn run_dispatch(&mut self, fx: &mut Effects) {
        loop {
            while let Some(qid) = self.dirty.pop() {
                self.dispatch(qid, None, fx);
            }
            let dead_letters = self.publish_dead_letters(fx);
            let traces = self.flush_traces(fx);
            if !dead_letters && !traces {
                break;
            }
        }
        if self.wake_pending {
            self.wake_pending = false;
            fx.tick_at_ms = Some(self.timer_wake_ms);
        }
    }

    /// Hands ready messages to consumers that can take them, round-robin, honouring prefetch and
    /// channel flow; dead-letters expired messages it meets at the head (so none is ever
    /// delivered, whatever the tick's lag); then drops the oldest messages beyond an x-max-length
    /// or x-max-length-bytes limit (x-overflow drop-head). `fresh` is a TTL-0 message just
    /// published: it may go to a consumer in this call only, and expires if none takes it.
    fn dispatch(&mut self, qid: QueueId, fresh: Option<u64>, fx: &mut Effects) {
        let now = self.now_ms;
        let Some(q) = self.queues.get_mut(&qid) else {
            return;
        };
        let n = q.consumers.len();
        let queue_timeout = q.features.as_deref().and_then(|f| f.consumer_timeout_ms);
        loop {
            if n > 0 {
                Self::page_in(q, &*self.journal, self.config.page_budget(), &mut self.page_in_failures);
            }
            let Some(head) = q.ready.front() else { break };
            if head.is_expired(now) && Some(head.seq) != fresh {
                if let Some(m) = q.pop() {
                    Self::dead_letter(q, m, Reason::Expired, &mut *self.journal, &mut self.dead_letters);
                }
                continue;
            }
            if n == 0 {
                break;
            }
            // Consumers are ordered by priority: the first group (of equal priority) with one
            // that can take the message wins, round-robin within the group. A single active
            // consumer queue only ever considers its first consumer.
            let can_take = |c: &Consumer| {
                if !c.no_ack && c.prefetch_count != 0 && c.unacked >= c.prefetch_count as u32 {
                    return false;
                }
                let Some(chan) = self.channels.get(&(c.conn, c.channel)) else {
                    return false;
                };
                if !chan.flow_active || (!c.no_ack && !chan.can_deliver()) {
                    return false;
                }
                c.credit.try_take()
            };
            let mut chosen = None;
            if q.single_active() {
                chosen = can_take(&q.consumers[0]).then_some(0);
            } else if q.consumers[0].priority == q.consumers[n - 1].priority {
                chosen = (0..n).map(|i| (q.next_consumer + i) % n).find(|&idx| can_take(&q.consumers[idx]));
            } else {
                let mut start = 0;
                while start < n && chosen.is_none() {
                    let prio = q.consumers[start].priority;
                    let len = q.consumers[start..].iter().take_while(|c| c.priority == prio).count();
                    let offset = q.next_consumer.checked_sub(start).filter(|&o| o < len).unwrap_or(0);
                    chosen = (0..len).map(|i| start + (offset + i) % len).find(|&idx| can_take(&q.consumers[idx]));
                    start += len;
                }
            }
            let Some(idx) = chosen else { break };
            q.next_consumer = (idx + 1) % n;
            let Some(entry) = q.pop() else { break };
            let cons = &mut q.consumers[idx];
            let Some(chan) = self.channels.get_mut(&(cons.conn, cons.channel)) else {
                break;
            };
            let delivery_tag = chan.next_tag();
            cons.credit.spend(delivery_cost(&entry.message));
            let kind = if cons.no_ack { Stat::DeliverNoAck } else { Stat::Deliver };
            q.stats.inc(kind);
            chan.stats.inc(kind);
            self.totals.inc(kind);
            if entry.redelivered {
                q.stats.inc(Stat::Redeliver);
                chan.stats.inc(Stat::Redeliver);
                self.totals.inc(Stat::Redeliver);
            }
            let out = Outbound::Deliver {
                channel: cons.channel,
                consumer_tag: cons.tag.clone(),
                delivery_tag,
                redelivered: entry.redelivered,
                message: entry.message.clone(),
            };
            if self.tracing_vhosts != 0
                && entry.message.exchange != trace::TRACE_EXCHANGE
                && self.vhosts.get(&q.vhost).is_some_and(|v| v.tracing)
            {
                self.pending_traces.push(trace::PendingTrace {
                    deliver: true,
                    vhost: q.vhost.clone(),
                    name: q.name.clone(),
                    message: entry.message.clone(),
                    redelivered: entry.redelivered,
                    conn: cons.conn,
                    channel: cons.channel,
                    routed: Vec::new(),
                });
            }
            if cons.no_ack {
                Self::forget(&mut *self.journal, qid, entry.msg_id);
            } else {
                if !entry.redelivered && entry.msg_id != 0 {
                    self.journal.delivered(qid, entry.msg_id);
                }
                cons.unacked += 1;
                chan.consumer_unacked += 1;
                q.unacked_count += 1;
                let timeout_ms = cons.timeout_ms.or(queue_timeout).unwrap_or(self.config.consumer_timeout_ms);
                let deadline_ms = if timeout_ms == 0 { 0 } else { now.saturating_add(timeout_ms) };
                chan.unacked.push_back(Unacked {
                    delivery_tag,
                    queue: qid,
                    entry,
                    consumer_tag: Some(cons.tag.clone()),
                    deadline_ms,
                    timeout_ms,
                });
                if deadline_ms != 0 && deadline_ms < chan.ack_timer_ms {
                    chan.ack_timer_ms = deadline_ms;
                    self.ack_timers.push(Reverse((deadline_ms, cons.conn, cons.channel)));
                    if deadline_ms < self.timer_wake_ms {
                        self.timer_wake_ms = deadline_ms;
                        self.wake_pending = true;
                    }
                }
            }
            fx.push(cons.conn, out);
        }
        if let Some(seq) = fresh {
            // Not taken at once: a TTL-0 message expires.
            if let Some(m) = q.take(seq) {
                Self::dead_letter(q, m, Reason::Expired, &mut *self.journal, &mut self.dead_letters);
            }
        }
        let drop_head = q.features.as_deref().filter(|f| f.overflow == Overflow::DropHead).map(|f| f.limits());
        if let Some(limits) = drop_head {
            while limits.exceeded(q.ready_len(), q.ready_bytes()) {
                Self::page_in(q, &*self.journal, self.config.page_budget(), &mut self.page_in_failures);
                let Some(m) = q.pop() else { break };
                Self::dead_letter(q, m, Reason::Maxlen, &mut *self.journal, &mut self.dead_letters);
            }
        }
        q.note_capacity(now);
        q.invariants();
    }

    /// Refills the in-memory head of `q` from its paged messages when it is empty.
    fn page_in(q: &mut Queue, journal: &dyn Journal, budget: queue::PageBudget, failures: &mut u64) {
        if q.ready.is_empty() && !q.paged.is_empty() {
            *failures += q.page_in(budget, |location| journal.read(location)) as u64;
        }
    }

    /// Paged messages that could not be read back from the journal (and so left their queue).
    pub fn page_in_failures(&self) -> u64 {
        self.page_in_failures
    }

    // ---- recovery -------------------------------------------------------------------------------

    /// Applies a journaled definition during recovery (run before `set_journal`, so nothing is
    /// journaled again).
    pub fn restore_definition(&mut self, d: Definition) {
        if self.auth.apply(&d) {
            return;
        }
        match d {
            Definition::Vhost { name } => {
                self.add_vhost(&name);
            }
            Definition::VhostDeleted { name } => {
                if let Some(v) = self.vhosts.remove(&name) {
                    for qid in v.queues.into_values() {
                        self.queues.remove(&qid);
                    }
                }
                self.policies.retain(|p| p.vhost != name);
                self.vhost_limits.remove(&name);
            }
            Definition::Exchange { vhost, name, kind, auto_delete, internal, arguments } => {
                if let Some(v) = self.vhosts.get_mut(&vhost) {
                    let mut x = Exchange::new(&name, kind, true, auto_delete, internal, arguments);
                    x.policy_alternate = policy::alternate_for(&self.policies, &vhost, &name);
                    if kind == ExchangeKind::DelayedMessage {
                        self.delayed.register(&vhost, &name);
                    }
                    v.exchanges.entry(name).or_insert(x);
                }
            }
            Definition::ExchangeDeleted { vhost, name } => {
                if let Some(v) = self.vhosts.get_mut(&vhost) {
                    if v.exchanges.remove(&name).is_some() {
                        Self::remove_destination(v, &Destination::Exchange(name));
                    }
                }
            }
            // Ids are never reused: a second record of the same id (a compaction interrupted by a
            // crash replays old records, then the snapshot) names the same queue.
            Definition::Queue { id, .. } if self.queues.contains_key(&id) => {}
            Definition::Queue { id, vhost, name, auto_delete, arguments } => {
                if let Some(v) = self.vhosts.get_mut(&vhost) {
                    v.queues.insert(name.clone(), id);
                    let q = Queue::new(id, &vhost, &name, true, None, auto_delete, arguments);
                    self.queues.insert(id, q);
                    self.apply_queue_policy(id);
                    if self.queues.get(&id).and_then(|q| q.features.as_ref()).is_some_and(|f| f.expires_ms.is_some()) {
                        // RabbitMQ compat: the x-expires period restarts when the broker does.
                        self.unarmed.push(id);
                    }
                    self.next_queue_id = self.next_queue_id.max(id + 1);
                }
            }
            Definition::QueueDeleted { id } => {
                self.delete_queue_by_id(id, &mut Effects::default());
            }
            Definition::Binding { vhost, source, to_queue, destination, routing_key, arguments } => {
                self.restore_binding(&vhost, &source, to_queue, destination, &routing_key, arguments, true)
            }
            Definition::BindingDeleted { vhost, source, to_queue, destination, routing_key, arguments } => {
                self.restore_binding(&vhost, &source, to_queue, destination, &routing_key, arguments, false)
            }
            d @ (Definition::Policy { .. } | Definition::PolicyDeleted { .. }) => {
                let vhost = match &d {
                    Definition::Policy { vhost, .. } | Definition::PolicyDeleted { vhost, .. } => vhost.clone(),
                    _ => String::new(),
                };
                self.restore_policy(d);
                // An expiry period a policy gives starts at the first tick, as for arguments.
                let changed = self.refresh_policies(&vhost);
                self.unarmed.extend(changed);
                self.dirty.clear();
            }
            Definition::QueueIdFloor { next } => self.next_queue_id = self.next_queue_id.max(next),
            Definition::VhostLimits { vhost, max_connections, max_queues } => {
                self.restore_vhost_limits(&vhost, limits::VhostLimits { max_connections, max_queues })
            }
            Definition::GlobalParameter { name, value } => self.restore_global_parameter(name, Some(value)),
            Definition::GlobalParameterCleared { name } => self.restore_global_parameter(name, None),
            // Applied by `auth.apply` above.
            Definition::UserLimits { .. }
            | Definition::User { .. }
            | Definition::UserDeleted { .. }
            | Definition::Permission { .. }
            | Definition::PermissionCleared { .. }
            | Definition::TopicPermission { .. }
            | Definition::TopicPermissionCleared { .. }
            | Definition::VhostMetadata { .. } => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn restore_binding(
        &mut self,
        vhost: &str,
        source: &str,
        to_queue: bool,
        destination: String,
        routing_key: &str,
        arguments: FieldTable,
        bind: bool,
    ) {
        let dest = if to_queue {
            match destination.parse::<QueueId>() {
                Ok(q) if self.queues.contains_key(&q) => Destination::Queue(q),
                _ => return,
            }
        } else {
            Destination::Exchange(destination)
        };
        self.apply_binding(vhost, source, dest, routing_key, arguments, bind);
    }

    /// Puts a recovered persistent message back into the durable queues it is still in:
    /// `removed(queue)` says the ack log recorded it gone from that queue, `delivered(queue)`
    /// that it had been delivered (it comes back redelivered). Its deadline in each queue is
    /// computed again from its recorded arrival time, so TTLs run across restarts (a message
    /// that expired while the broker was down expires at the first tick). Returns how many
    /// queues took it.
    pub fn restore_message(
        &mut self,
        record: MessageRecord,
        removed: impl Fn(QueueId) -> bool,
        delivered: impl Fn(QueueId) -> bool,
    ) -> usize {
        self.restore_message_at(record, None, removed, delivered, |_| 0)
    }

    /// `restore_message` for a record at `location` in the journal (see `Journal::read`): in
    /// queues past their memory budget only a reference to it is kept, as for a publish.
    /// `returns(queue)` is how often it came back to a queue with a delivery limit
    /// (`Journal::returned`): its delivery count, and `x-delivery-count` header, carry on.
    pub fn restore_message_at(
        &mut self,
        record: MessageRecord,
        location: Option<u64>,
        removed: impl Fn(QueueId) -> bool,
        delivered: impl Fn(QueueId) -> bool,
        returns: impl Fn(QueueId) -> u32,
    ) -> usize {
        self.next_msg_id = self.next_msg_id.max(record.msg_id + 1);
        let message = Arc::new(record.message);
        let message_ttl = message
            .summary
            .expiration
            .and_then(|span| features::parse_expiration(span_bytes(&message.properties, span)).ok());
        let mut n = 0;
        let mut dedup_id: Option<Option<bytes::Bytes>> = None;
        for q in record.queues {
            if let Some(w) = self.queues.get_mut(&q).and_then(|q| q.dedup.as_deref_mut()) {
                // Acknowledged messages count too: the window outlives the queue's contents.
                if let Some(id) = dedup_id.get_or_insert_with(|| dedup::DedupWindow::id_of(&message)) {
                    w.admit(id, record.arrival_ms.unwrap_or(0));
                }
            }
            if removed(q) {
                continue;
            }
            if !self.queues.contains_key(&q) {
                if self.restore_delayed(q, record.msg_id, &message, record.arrival_ms, location) {
                    n += 1;
                }
                continue;
            }
            if let Some(queue) = self.queues.get_mut(&q) {
                let ttl = match (message_ttl, queue.features.as_ref().and_then(|f| f.message_ttl_ms)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                // Records written without an arrival time (before TTL support) get no deadline.
                let expires_at_ms = match (record.arrival_ms, ttl) {
                    (Some(a), Some(t)) => a.saturating_add(t).max(1),
                    _ => 0,
                };
                let returned = returns(q);
                let limited = queue.features.as_deref().is_some_and(|f| f.delivery_limit.is_some());
                if returned > 0 && limited {
                    // As `requeue_entry` left it: the count in the header, the message in memory
                    // (a paged reference has no room for the count).
                    let count = FieldValue::I64(i64::from(returned));
                    let m = dead_letter::with_header(&message, "x-delivery-count", count)
                        .map_or_else(|| message.clone(), Arc::new);
                    queue.push_restored_returned(m, record.msg_id, delivered(q), expires_at_ms, returned);
                } else {
                    let seq = queue.push_restored(message.clone(), record.msg_id, delivered(q), expires_at_ms);
                    if let Some(location) = location {
                        queue.page_out(seq, location, self.config.page_budget());
                    }
                }
                if expires_at_ms != 0 {
                    self.arm(q, expires_at_ms);
                }
                n += 1;
            }
        }
        n
    }

    /// The next message id (recovery uses it to know where the log left off).
    pub fn next_msg_id(&self) -> MessageId {
        self.next_msg_id
    }

    /// Recovery: message id `id` was used (by a record that is not restored); never reuse it.
    pub fn reserve_msg_id(&mut self, id: MessageId) {
        self.next_msg_id = self.next_msg_id.max(id + 1);
    }

    // ---- inspection -----------------------------------------------------------------------------

    pub fn queue(&self, vhost: &str, name: &str) -> Option<&Queue> {
        let id = self.vhosts.get(vhost)?.queues.get(name)?;
        self.queues.get(id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Ack,
    Requeue,
    Discard,
}

/// Returns the message with its reply_to property replaced (direct reply-to).
fn rewrite_reply_to(message: Message, reply_to: &str) -> Message {
    let Ok(mut props) = BasicProperties::decode(&message.properties) else {
        return message;
    };
    props.reply_to = Some(reply_to.to_owned());
    let Ok(raw) = props.to_bytes() else {
        return message;
    };
    let summary = PropertiesSummary::scan(&raw).unwrap_or(message.summary);
    Message { properties: raw, summary, ..message }
}

/// Checks the types and ranges of the queue arguments RabbitMQ validates at declare.
fn validate_queue_arguments(args: &FieldTable, name: &str, vhost: &str) -> Result<()> {
    let bad = |key: &str, why: String| {
        AmqpError::precondition_failed(format!("invalid arg '{key}' for {}: {why}", queue_desc(name, vhost)))
    };
    for (key, v) in args.iter() {
        match key {
            "x-message-ttl" | "x-expires" | "x-max-length" | "x-max-length-bytes" | "x-delivery-limit"
            | "x-consumer-timeout" | "x-cache-size" | "x-cache-ttl" => {
                let Some(i) = v.as_i64() else {
                    return Err(bad(key, format!("{{unacceptable_type,{}}}", v.type_name())));
                };
                if i < 0 {
                    return Err(bad(key, format!("{{value_negative,{i}}}")));
                }
                if i == 0 && key == "x-expires" {
                    return Err(bad(key, format!("{{value_zero,{i}}}")));
                }
                if matches!(key, "x-message-ttl" | "x-expires") && i as u64 > features::EXPIRY_MS_MAX {
                    return Err(bad(key, format!("{{value_too_large,{i}}}")));
                }
            }
            "x-max-priority" => {
                let Some(i) = v.as_i64() else {
                    return Err(bad(key, format!("{{unacceptable_type,{}}}", v.type_name())));
                };
                if !(0..=255).contains(&i) {
                    return Err(bad(key, format!("{{value_out_of_range,{i}}}")));
                }
            }
            "x-single-active-consumer" | "x-message-deduplication" if !matches!(v, FieldValue::Bool(_)) => {
                return Err(bad(key, format!("{{unacceptable_type,{}}}", v.type_name())));
            }
            "x-dead-letter-exchange" | "x-dead-letter-routing-key" if v.as_str().is_none() => {
                return Err(bad(key, format!("{{unacceptable_type,{}}}", v.type_name())));
            }
            "x-dead-letter-routing-key" if args.get("x-dead-letter-exchange").is_none() => {
                return Err(bad(key, "routing_key_but_no_dlx_defined".to_owned()));
            }
            "x-overflow" => match v.as_str() {
                Some("drop-head" | "reject-publish" | "reject-publish-dlx") => {}
                _ => return Err(bad(key, "{unacceptable_value}".to_owned())),
            },
            "x-queue-type" => match v.as_str() {
                Some("classic" | "quorum" | "stream") => {}
                Some(other) => {
                    return Err(bad(key, format!("{{unsupported_queue_type,{other}}}")));
                }
                None => return Err(bad(key, format!("{{unacceptable_type,{}}}", v.type_name()))),
            },
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod compaction_tests;
#[cfg(test)]
mod delayed_tests;
#[cfg(test)]
mod feature_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod paging_tests;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod priority_tests;
#[cfg(test)]
mod tests;
