//! Model-based property test of a queue with priorities, per-message TTL, a length limit with
//! either overflow mode, and requeue: random operation sequences run against the broker and
//! against a small reference model, and every answer (which message a basic.get returns,
//! whether a publish is refused, how many messages are ready after a tick) must agree.

use proptest::prelude::*;

use super::tests::{setup, T0};
use super::*;

#[derive(Debug, Clone)]
enum Op {
    Publish { priority: Option<u8>, ttl: Option<u16> },
    Get,
    Ack(usize),
    Requeue(usize),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (proptest::option::of(0u8..12), proptest::option::of(0u16..300))
            .prop_map(|(priority, ttl)| Op::Publish { priority, ttl }),
        3 => Just(Op::Get),
        1 => (0usize..4).prop_map(Op::Ack),
        2 => (0usize..4).prop_map(Op::Requeue),
        2 => (0u16..200).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone)]
struct M {
    id: u64,
    level: u8,
    seq: u64,
    expires_at: u64,
}

/// The reference: a plain list, sorted on demand.
#[derive(Debug, Default)]
struct Model {
    ready: Vec<M>,
    unacked: Vec<(u64, M)>,
    now: u64,
}

impl Model {
    fn live(&self, m: &M) -> bool {
        m.expires_at == 0 || m.expires_at > self.now
    }
    fn sort(&mut self) {
        self.ready.sort_by_key(|m| (std::cmp::Reverse(m.level), m.seq));
    }
    fn drop_expired(&mut self) {
        let now = self.now;
        self.ready.retain(|m| m.expires_at == 0 || m.expires_at > now);
    }
}

/// A broker whose queues page past a budget of about four 1-digit bodies, on a simulated disk.
fn paging_broker() -> Broker {
    let config = BrokerConfig { queue_memory_bytes_max: 4, queue_message_overhead_bytes: 0, ..BrokerConfig::default() };
    let mut b = Broker::new(config, 1);
    let disk = std::sync::Arc::new(store::sim::SimDisk::new());
    let (j, _) =
        crate::durable::StoreJournal::open(std::path::Path::new("/data"), disk, &mut b, |_| {}).expect("opens");
    b.set_journal(Box::new(j));
    b.connection_open(1, "/", "guest", WriteCredit::new(1 << 30)).expect("vhost exists");
    b.channel_open(1, 1);
    b
}

fn run_case(
    max_priority: u8,
    max_length: Option<u64>,
    reject: bool,
    paging: bool,
    ops: Vec<Op>,
) -> std::result::Result<(), TestCaseError> {
    let mut b = if paging { paging_broker() } else { setup().0 };
    let mut args = FieldTable::new();
    if max_priority > 0 {
        args.insert("x-max-priority", FieldValue::I64(i64::from(max_priority)));
    }
    if let Some(n) = max_length {
        args.insert("x-max-length", FieldValue::I64(n as i64));
        args.insert("x-overflow", FieldValue::from(if reject { "reject-publish" } else { "drop-head" }));
    }
    let mut fx = Effects::default();
    b.handle(1, 1, QueueDeclare { queue: "q".into(), arguments: args, ..Default::default() }.into(), T0, &mut fx)
        .expect("declare");
    b.handle(1, 1, ConfirmSelect { nowait: false }.into(), T0, &mut fx).expect("confirm");
    let mut model = Model { now: T0, ..Default::default() };
    let mut next_id = 0u64;
    for op in ops {
        let mut fx = Effects::default();
        match op {
            Op::Publish { priority, ttl } => {
                next_id += 1;
                let props = BasicProperties { priority, expiration: ttl.map(|t| t.to_string()), ..Default::default() };
                let m = Message::with_properties("", "q", &props, bytes::Bytes::from(next_id.to_string()));
                b.publish(1, 1, PublishFlags::default(), m, model.now, &mut fx).expect("publish");
                let nacked = fx.out.iter().any(|(_, o)| matches!(o, Outbound::Confirm { ack: false, .. }));
                let level = if max_priority == 0 { 0 } else { priority.unwrap_or(0).min(max_priority) };
                let expires_at = ttl.map_or(0, |t| (model.now + u64::from(t)).max(1));
                model.drop_expired();
                let full = max_length.is_some_and(|n| model.ready.len() as u64 >= n);
                let want_nack = reject && full;
                prop_assert_eq!(nacked, want_nack, "publish refused?");
                if !want_nack && ttl != Some(0) {
                    model.ready.push(M { id: next_id, level, seq: next_id, expires_at });
                    model.sort();
                    if let (Some(n), false) = (max_length, reject) {
                        while model.ready.len() as u64 > n {
                            model.ready.remove(0);
                        }
                    }
                }
            }
            Op::Get => {
                b.handle(1, 1, BasicGet { queue: "q".into(), ..Default::default() }.into(), model.now, &mut fx)
                    .expect("get");
                let got = fx.out.iter().find_map(|(_, o)| match o {
                    Outbound::GetOk { delivery_tag, message, .. } => Some((
                        *delivery_tag,
                        std::str::from_utf8(&message.body).expect("utf8").parse::<u64>().expect("id"),
                    )),
                    _ => None,
                });
                model.drop_expired();
                model.sort();
                let want = if model.ready.is_empty() { None } else { Some(model.ready.remove(0)) };
                prop_assert_eq!(got.map(|g| g.1), want.as_ref().map(|m| m.id), "basic.get");
                if let (Some((tag, _)), Some(m)) = (got, want) {
                    model.unacked.push((tag, m));
                }
            }
            Op::Ack(i) | Op::Requeue(i) if i < model.unacked.len() => {
                let (tag, m) = model.unacked.remove(i);
                let requeue = matches!(op, Op::Requeue(_));
                let method: Method = if requeue {
                    BasicNack { delivery_tag: tag, multiple: false, requeue: true }.into()
                } else {
                    BasicAck { delivery_tag: tag, multiple: false }.into()
                };
                b.handle(1, 1, method, model.now, &mut fx).expect("settle");
                if requeue && model.live(&m) {
                    model.ready.push(m);
                    model.sort();
                    // RabbitMQ compat: a requeue can overflow the queue; drop-head trims it.
                    if let (Some(n), false) = (max_length, reject) {
                        model.drop_expired();
                        while model.ready.len() as u64 > n {
                            model.ready.remove(0);
                        }
                    }
                }
            }
            Op::Ack(_) | Op::Requeue(_) => {}
            Op::Advance(ms) => {
                model.now += u64::from(ms);
                b.tick(model.now, &mut fx);
                model.drop_expired();
                let q = b.queue("/", "q").expect("queue");
                prop_assert_eq!(q.message_count() as usize, model.ready.len(), "ready count after tick");
                q.invariants();
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn queue_matches_reference_model(
        max_priority in prop_oneof![Just(0u8), 1u8..10],
        max_length in proptest::option::of(1u64..6),
        reject in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run_case(max_priority, max_length, reject, false, ops)?;
    }

    /// The same with paging: a budget of a few bodies, so most messages live on the
    /// (simulated) disk and come back as the queue drains, limits counting them all.
    #[test]
    fn paging_queue_matches_reference_model(
        max_length in proptest::option::of(1u64..12),
        reject in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        run_case(0, max_length, reject, true, ops)?;
    }
}
