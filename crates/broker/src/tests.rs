//! Broker unit tests: each drives the broker through AMQP operations and asserts on the effects.

use super::*;
use bytes::Bytes;

/// The broker's time in tests that do not depend on it (milliseconds since the epoch).
pub(super) const T0: u64 = 1_700_000_000_000;

/// A broker with connection 1 open on vhost "/" and channel 1 open on it.
pub(super) fn setup() -> (Broker, Effects) {
    let mut b = Broker::default();
    b.connection_open(1, "/", "guest", WriteCredit::new(1 << 30)).expect("vhost exists");
    b.channel_open(1, 1);
    (b, Effects::default())
}

fn declare(b: &mut Broker, fx: &mut Effects, name: &str) {
    b.handle(1, 1, QueueDeclare { queue: name.into(), ..Default::default() }.into(), T0, fx).expect("declares");
}

fn publish(b: &mut Broker, fx: &mut Effects, exchange: &str, rk: &str, body: &'static str) {
    let m = Message::with_properties(exchange, rk, &BasicProperties::default(), Bytes::from_static(body.as_bytes()));
    b.publish(1, 1, PublishFlags::default(), m, T0, fx).expect("publishes");
}

fn deliveries(fx: &mut Effects) -> Vec<(u64, bool, Bytes)> {
    fx.out
        .drain(..)
        .filter_map(|(_, o)| match o {
            Outbound::Deliver { delivery_tag, redelivered, message, .. } => {
                Some((delivery_tag, redelivered, message.body.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Proves a message published to the default exchange reaches a consumer of the named queue.
#[test]
fn default_exchange_delivers_to_consumer() {
    let (mut b, mut fx) = setup();
    declare(&mut b, &mut fx, "hello");
    b.handle(1, 1, BasicConsume { queue: "hello".into(), no_ack: true, ..Default::default() }.into(), T0, &mut fx)
        .expect("consumes");
    publish(&mut b, &mut fx, "", "hello", "Hello World!");
    let d = deliveries(&mut fx);
    assert_eq!(d, vec![(1, false, Bytes::from_static(b"Hello World!"))]);
}

/// Proves prefetch limits unacked deliveries and a nack with requeue redelivers in original order.
#[test]
fn prefetch_and_requeue_order() {
    let (mut b, mut fx) = setup();
    declare(&mut b, &mut fx, "q");
    for body in ["a", "b", "c"] {
        publish(&mut b, &mut fx, "", "q", body);
    }
    b.handle(1, 1, BasicQos { prefetch_count: 2, ..Default::default() }.into(), T0, &mut fx).expect("qos");
    b.handle(
        1,
        1,
        BasicConsume { queue: "q".into(), consumer_tag: "c".into(), ..Default::default() }.into(),
        T0,
        &mut fx,
    )
    .expect("consume");
    let d = deliveries(&mut fx);
    assert_eq!(d.iter().map(|x| x.2.clone()).collect::<Vec<_>>(), vec![Bytes::from("a"), Bytes::from("b")]);
    b.handle(1, 1, BasicNack { delivery_tag: 2, multiple: true, requeue: true }.into(), T0, &mut fx).expect("nack");
    let d = deliveries(&mut fx);
    assert_eq!(d, vec![(3, true, Bytes::from("a")), (4, true, Bytes::from("b"))]);
}

/// Proves a basic.qos (global=false) sent while the channel consumes changes the running
/// consumer's limit at once (raised: the waiting messages flow; lowered: none until acks bring
/// the unacked count below it), unlike RabbitMQ 4, where only later consumers get it.
#[test]
fn per_consumer_qos_applies_to_running_consumers() {
    let (mut b, mut fx) = setup();
    declare(&mut b, &mut fx, "q");
    for body in ["a", "b", "c", "d", "e"] {
        publish(&mut b, &mut fx, "", "q", body);
    }
    b.handle(1, 1, BasicQos { prefetch_count: 1, ..Default::default() }.into(), T0, &mut fx).expect("qos");
    let consume = BasicConsume { queue: "q".into(), consumer_tag: "c".into(), ..Default::default() };
    b.handle(1, 1, consume.into(), T0, &mut fx).expect("consume");
    assert_eq!(deliveries(&mut fx).len(), 1);
    b.handle(1, 1, BasicQos { prefetch_count: 3, ..Default::default() }.into(), T0, &mut fx).expect("qos");
    assert_eq!(deliveries(&mut fx).iter().map(|d| d.0).collect::<Vec<_>>(), vec![2, 3]);
    b.handle(1, 1, BasicQos { prefetch_count: 1, ..Default::default() }.into(), T0, &mut fx).expect("qos");
    b.handle(1, 1, BasicAck { delivery_tag: 2, multiple: true }.into(), T0, &mut fx).expect("ack");
    assert!(deliveries(&mut fx).is_empty(), "one unacked delivery is the new limit");
    b.handle(1, 1, BasicAck { delivery_tag: 3, multiple: false }.into(), T0, &mut fx).expect("ack");
    assert_eq!(deliveries(&mut fx).iter().map(|d| d.0).collect::<Vec<_>>(), vec![4]);
}

/// Proves an unknown delivery tag is a 406 and a missing queue a 404 with RabbitMQ's text.
#[test]
fn reply_codes_and_texts() {
    let (mut b, mut fx) = setup();
    let e = b.handle(1, 1, BasicAck { delivery_tag: 9, multiple: false }.into(), T0, &mut fx).expect_err("unknown tag");
    assert_eq!((e.code, e.reply_text().as_str()), (406, "PRECONDITION_FAILED - unknown delivery tag 9"));
    let e = b
        .handle(1, 1, QueueDeclare { queue: "q1".into(), passive: true, ..Default::default() }.into(), T0, &mut fx)
        .expect_err("missing");
    assert_eq!(e.reply_text(), "NOT_FOUND - no queue 'q1' in vhost '/'");
}

/// Proves closing a channel requeues its unacked messages to their original position.
#[test]
fn channel_close_requeues() {
    let (mut b, mut fx) = setup();
    declare(&mut b, &mut fx, "q");
    publish(&mut b, &mut fx, "", "q", "a");
    publish(&mut b, &mut fx, "", "q", "b");
    b.handle(1, 1, BasicGet { queue: "q".into(), ..Default::default() }.into(), T0, &mut fx).expect("get");
    b.channel_closed(1, 1, T0, &mut fx);
    let q = b.queue("/", "q").expect("exists");
    let bodies: Vec<_> = q.ready.iter().map(|m| (m.message.body.clone(), m.redelivered)).collect();
    assert_eq!(bodies, vec![(Bytes::from("a"), true), (Bytes::from("b"), false)]);
}

/// Proves topic routing through an exchange-to-exchange binding and the alternate exchange.
#[test]
fn e2e_and_alternate_exchange() {
    let (mut b, mut fx) = setup();
    for (name, kind, args) in [
        ("ae", "fanout", FieldTable::new()),
        ("t", "topic", FieldTable(vec![("alternate-exchange".into(), "ae".into())])),
        ("src", "direct", FieldTable::new()),
    ] {
        b.handle(
            1,
            1,
            ExchangeDeclare { exchange: name.into(), kind: kind.into(), arguments: args, ..Default::default() }.into(),
            T0,
            &mut fx,
        )
        .expect("declare");
    }
    declare(&mut b, &mut fx, "matched");
    declare(&mut b, &mut fx, "unrouted");
    b.handle(
        1,
        1,
        QueueBind { queue: "matched".into(), exchange: "t".into(), routing_key: "a.#".into(), ..Default::default() }
            .into(),
        T0,
        &mut fx,
    )
    .expect("bind");
    b.handle(
        1,
        1,
        QueueBind { queue: "unrouted".into(), exchange: "ae".into(), ..Default::default() }.into(),
        T0,
        &mut fx,
    )
    .expect("bind");
    b.handle(
        1,
        1,
        ExchangeBind { destination: "t".into(), source: "src".into(), routing_key: "k".into(), ..Default::default() }
            .into(),
        T0,
        &mut fx,
    )
    .expect("bind");
    let m = Message::with_properties("src", "k", &BasicProperties::default(), Bytes::new());
    b.publish(1, 1, PublishFlags::default(), m, T0, &mut fx).expect("pub");
    publish(&mut b, &mut fx, "t", "a.b", "x");
    assert_eq!(b.queue("/", "matched").expect("q").ready.len(), 1);
    assert_eq!(b.queue("/", "unrouted").expect("q").ready.len(), 1);
}

/// Proves deliveries pause when the connection's write credit runs out and resume, in order,
/// once the writer refunds it.
#[test]
fn write_credit_pauses_and_resumes_dispatch() {
    let mut b = Broker::default();
    let credit = WriteCredit::new(1);
    b.connection_open(1, "/", "guest", credit.clone()).expect("vhost exists");
    b.channel_open(1, 1);
    let mut fx = Effects::default();
    declare(&mut b, &mut fx, "q");
    b.handle(1, 1, BasicConsume { queue: "q".into(), no_ack: true, ..Default::default() }.into(), T0, &mut fx)
        .expect("consume");
    for body in ["a", "b", "c"] {
        publish(&mut b, &mut fx, "", "q", body);
    }
    // One delivery fits in the initial credit; the rest wait in the queue.
    assert_eq!(deliveries(&mut fx).len(), 1);
    assert_eq!(b.queue("/", "q").expect("q").ready.len(), 2);
    assert!(credit.refund(10_000), "the broker ran dry, so the refund must ask for a resume");
    b.resume_connection(1, T0, &mut fx);
    let d: Vec<_> = deliveries(&mut fx).into_iter().map(|x| x.2).collect();
    assert_eq!(d, vec![Bytes::from("b"), Bytes::from("c")]);
}

/// An in-memory journal that records what the broker asks of it, shared with the test.
#[derive(Debug, Default, Clone)]
pub(super) struct MemJournal(pub(super) Arc<std::sync::Mutex<MemLog>>);

#[derive(Debug, Default)]
pub(super) struct MemLog {
    pub(super) defs: Vec<Definition>,
    pub(super) messages: Vec<MessageRecord>,
    pub(super) removed: Vec<(QueueId, MessageId)>,
    pub(super) delivered: Vec<(QueueId, MessageId)>,
    seq: u64,
}

impl Journal for MemJournal {
    fn publish(&mut self, msg_id: MessageId, queues: &[QueueId], message: &Message, arrival_ms: Option<u64>) -> u64 {
        let mut l = self.0.lock().expect("lock");
        l.messages.push(MessageRecord { msg_id, queues: queues.to_vec(), message: message.clone(), arrival_ms });
        l.seq += 1;
        l.seq
    }
    fn remove(&mut self, queue: QueueId, msg_id: MessageId) {
        self.0.lock().expect("lock").removed.push((queue, msg_id));
    }
    fn delivered(&mut self, queue: QueueId, msg_id: MessageId) {
        self.0.lock().expect("lock").delivered.push((queue, msg_id));
    }
    fn define(&mut self, d: &Definition) {
        self.0.lock().expect("lock").defs.push(d.clone());
    }
    fn written(&self) -> u64 {
        self.0.lock().expect("lock").seq
    }
}

/// Replays everything `journal` recorded into a fresh broker, as recovery does.
pub(super) fn replay(journal: &MemJournal) -> Broker {
    let mut restored = Broker::default();
    let log = journal.0.lock().expect("lock");
    for d in log.defs.clone() {
        restored.restore_definition(d);
    }
    for rec in log.messages.clone() {
        let id = rec.msg_id;
        restored.restore_message(rec, |q| log.removed.contains(&(q, id)), |q| log.delivered.contains(&(q, id)));
    }
    restored
}

fn persistent(body: &'static str) -> Message {
    let props = BasicProperties { delivery_mode: Some(2), ..Default::default() };
    Message::with_properties("", "dq", &props, Bytes::from_static(body.as_bytes()))
}

/// Proves durable definitions and persistent messages are journaled, that a confirm waits for
/// the journal sync, and that replaying the journal into a new broker restores durable state
/// only: unacked messages come back redelivered, acked ones do not, transient things are gone.
#[test]
fn journal_replay_restores_durable_state() {
    let journal = MemJournal::default();
    let (mut b, mut fx) = setup();
    b.set_journal(Box::new(journal.clone()));
    b.handle(1, 1, QueueDeclare { queue: "dq".into(), durable: true, ..Default::default() }.into(), T0, &mut fx)
        .expect("dq");
    declare(&mut b, &mut fx, "tq");
    b.handle(
        1,
        1,
        ExchangeDeclare { exchange: "dx".into(), kind: "fanout".into(), durable: true, ..Default::default() }.into(),
        T0,
        &mut fx,
    )
    .expect("dx");
    b.handle(1, 1, QueueBind { queue: "dq".into(), exchange: "dx".into(), ..Default::default() }.into(), T0, &mut fx)
        .expect("bind");
    b.handle(1, 1, QueueBind { queue: "tq".into(), exchange: "dx".into(), ..Default::default() }.into(), T0, &mut fx)
        .expect("bind");
    b.handle(1, 1, ConfirmSelect { nowait: false }.into(), T0, &mut fx).expect("confirm");
    fx.out.clear();
    for body in ["a", "b", "c"] {
        b.publish(1, 1, PublishFlags::default(), persistent(body), T0, &mut fx).expect("publish");
    }
    let confirms = |fx: &mut Effects| fx.out.drain(..).filter(|(_, o)| matches!(o, Outbound::Confirm { .. })).count();
    assert_eq!(confirms(&mut fx), 0, "no confirm before the journal is synced");
    b.journal_synced(2, &mut fx);
    assert_eq!(confirms(&mut fx), 2);
    b.journal_synced(3, &mut fx);
    assert_eq!(confirms(&mut fx), 1);
    // "a" is acked, "b" delivered and left unacked, "c" never delivered.
    b.handle(1, 1, BasicGet { queue: "dq".into(), ..Default::default() }.into(), T0, &mut fx).expect("get a");
    b.handle(1, 1, BasicAck { delivery_tag: 1, multiple: false }.into(), T0, &mut fx).expect("ack a");
    b.handle(1, 1, BasicGet { queue: "dq".into(), ..Default::default() }.into(), T0, &mut fx).expect("get b");

    let restored = replay(&journal);
    let q = restored.queue("/", "dq").expect("durable queue restored");
    let got: Vec<_> = q.ready.iter().map(|m| (m.message.body.clone(), m.redelivered)).collect();
    assert_eq!(got, vec![(Bytes::from("b"), true), (Bytes::from("c"), false)]);
    assert!(restored.queue("/", "tq").is_none(), "transient queue not restored");
    let dx = &restored.vhosts["/"].exchanges["dx"];
    assert_eq!(dx.bindings.len(), 1, "only the durable binding comes back");
}

/// The methods of `fx`, as (connection, channel, method name), in order.
fn method_names(fx: &mut Effects) -> Vec<(u64, u16, &'static str)> {
    fx.out
        .drain(..)
        .filter_map(|(conn, o)| match o {
            Outbound::Method { channel, method } => Some((conn, channel, method.name())),
            _ => None,
        })
        .collect()
}

/// Proves that deleting a queue from the channel that consumes from it answers delete-ok before
/// the consumer's basic.cancel, as RabbitMQ does (py-amqp raises if the cancel comes first).
#[test]
fn queue_delete_answers_before_cancelling_its_consumers() {
    let (mut b, mut fx) = setup();
    declare(&mut b, &mut fx, "q");
    b.handle(
        1,
        1,
        BasicConsume { queue: "q".into(), consumer_tag: "c".into(), ..Default::default() }.into(),
        T0,
        &mut fx,
    )
    .expect("consumes");
    fx.out.clear();
    b.handle(1, 1, QueueDelete { queue: "q".into(), ..Default::default() }.into(), T0, &mut fx).expect("deletes");
    assert_eq!(method_names(&mut fx), vec![(1, 1, "queue.delete-ok"), (1, 1, "basic.cancel")]);
}

/// Proves a client that did not announce `consumer_cancel_notify` gets no basic.cancel when its
/// queue is deleted (RabbitMQ's rule), while one that did gets it.
#[test]
fn queue_deletion_cancels_only_consumers_that_asked_to_be_told() {
    let (mut b, mut fx) = setup();
    b.connection_open(2, "/", "guest", WriteCredit::new(1 << 30)).expect("opens");
    b.channel_open(2, 1);
    b.set_cancel_notify(2, false);
    declare(&mut b, &mut fx, "q");
    for conn in [1, 2] {
        let consume = BasicConsume { queue: "q".into(), consumer_tag: format!("c{conn}"), ..Default::default() };
        b.handle(conn, 1, consume.into(), T0, &mut fx).expect("consumes");
    }
    fx.out.clear();
    b.handle(1, 1, QueueDelete { queue: "q".into(), ..Default::default() }.into(), T0, &mut fx).expect("deletes");
    assert_eq!(method_names(&mut fx), vec![(1, 1, "queue.delete-ok"), (1, 1, "basic.cancel")]);
}

/// Proves RabbitMQ's empty-name shortcut: "" means the channel's last declared queue in
/// basic.consume, basic.get, queue.bind (with the routing key defaulting to the queue's name),
/// queue.purge and queue.delete; with no queue declared on the channel it is 404.
#[test]
fn empty_queue_name_means_the_last_declared_queue() {
    let (mut b, mut fx) = setup();
    let e = b.handle(1, 1, BasicGet { queue: "".into(), ..Default::default() }.into(), T0, &mut fx).expect_err("404");
    assert_eq!(e.code, amqp_codec::reply::NOT_FOUND);
    assert_eq!(e.reply_text(), "NOT_FOUND - no previously declared queue");
    b.channel_open(1, 2);
    declare(&mut b, &mut fx, "q");
    let bind = QueueBind { queue: "".into(), exchange: "amq.direct".into(), ..Default::default() };
    b.handle(1, 1, bind.into(), T0, &mut fx).expect("binds q with routing key q");
    let m = Message::with_properties("amq.direct", "q", &BasicProperties::default(), Bytes::from_static(b"x"));
    b.publish(1, 1, PublishFlags::default(), m, T0, &mut fx).expect("publishes");
    assert_eq!(b.queue("/", "q").expect("q").ready_len(), 1, "routed by the binding made with \"\"");
    fx.out.clear();
    b.handle(1, 1, QueuePurge { queue: "".into(), ..Default::default() }.into(), T0, &mut fx).expect("purges q");
    assert_eq!(method_names(&mut fx), vec![(1, 1, "queue.purge-ok")]);
    let consume = BasicConsume { queue: "".into(), consumer_tag: "c".into(), ..Default::default() };
    b.handle(1, 1, consume.into(), T0, &mut fx).expect("consumes q");
    assert_eq!(b.queue("/", "q").expect("q").consumers.len(), 1);
    // Another channel declared nothing: its "" is still 404.
    let e =
        b.handle(1, 2, QueueDelete { queue: "".into(), ..Default::default() }.into(), T0, &mut fx).expect_err("404");
    assert_eq!(e.code, amqp_codec::reply::NOT_FOUND);
    b.handle(1, 1, QueueDelete { queue: "".into(), ..Default::default() }.into(), T0, &mut fx).expect("deletes q");
    assert!(b.queue("/", "q").is_none());
}

/// Proves a passive exchange.declare of the default exchange is 403, as RabbitMQ.
#[test]
fn passive_declare_of_the_default_exchange_is_refused() {
    let (mut b, mut fx) = setup();
    let m = ExchangeDeclare { exchange: "".into(), passive: true, ..Default::default() };
    let e = b.handle(1, 1, m.into(), T0, &mut fx).expect_err("403");
    assert_eq!(e.code, amqp_codec::reply::ACCESS_REFUSED);
}
