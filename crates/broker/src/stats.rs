//! Message statistics as RabbitMQ reports them under `message_stats`: cumulative counters per
//! queue, exchange, channel and for the whole node, and their rates per second.
//!
//! Counting is a plain `u64` increment inside structures the broker already holds under its lock
//! (no atomics, no lookups of their own on the hot path). Rates are computed by `Broker::
//! sample_stats`, which the server calls every few seconds: each object keeps the counts of the
//! previous sample, so a rate is (now − then) / interval, O(objects) per sample and nothing per
//! message.

/// The counters, with RabbitMQ's `message_stats` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Stat {
    /// Messages published (channel, vhost, node) or enqueued (queue).
    Publish,
    /// Messages published into an exchange.
    PublishIn,
    /// Messages routed out of an exchange (one per queue reached).
    PublishOut,
    Confirm,
    Deliver,
    DeliverNoAck,
    Get,
    GetNoAck,
    GetEmpty,
    Ack,
    Redeliver,
    ReturnUnroutable,
    DropUnroutable,
}

/// Every `Stat`, in order.
pub const ALL: [Stat; 13] = [
    Stat::Publish,
    Stat::PublishIn,
    Stat::PublishOut,
    Stat::Confirm,
    Stat::Deliver,
    Stat::DeliverNoAck,
    Stat::Get,
    Stat::GetNoAck,
    Stat::GetEmpty,
    Stat::Ack,
    Stat::Redeliver,
    Stat::ReturnUnroutable,
    Stat::DropUnroutable,
];

impl Stat {
    pub fn name(self) -> &'static str {
        match self {
            Stat::Publish => "publish",
            Stat::PublishIn => "publish_in",
            Stat::PublishOut => "publish_out",
            Stat::Confirm => "confirm",
            Stat::Deliver => "deliver",
            Stat::DeliverNoAck => "deliver_no_ack",
            Stat::Get => "get",
            Stat::GetNoAck => "get_no_ack",
            Stat::GetEmpty => "get_empty",
            Stat::Ack => "ack",
            Stat::Redeliver => "redeliver",
            Stat::ReturnUnroutable => "return_unroutable",
            Stat::DropUnroutable => "drop_unroutable",
        }
    }
}

const N: usize = ALL.len();

/// One object's counters and their latest rates.
#[derive(Debug, Clone, Default)]
pub struct MessageStats {
    count: [u64; N],
    prev: [u64; N],
    rate: [f64; N],
}

impl MessageStats {
    #[inline]
    pub fn add(&mut self, s: Stat, n: u64) {
        self.count[s as usize] += n;
    }

    #[inline]
    pub fn inc(&mut self, s: Stat) {
        self.count[s as usize] += 1;
    }

    pub fn count(&self, s: Stat) -> u64 {
        self.count[s as usize]
    }

    /// Per second, over the last sampling interval.
    pub fn rate(&self, s: Stat) -> f64 {
        self.rate[s as usize]
    }

    /// RabbitMQ's `deliver_get`: every delivery and basic.get-ok.
    pub fn deliver_get(&self) -> u64 {
        self.count(Stat::Deliver) + self.count(Stat::DeliverNoAck) + self.count(Stat::Get) + self.count(Stat::GetNoAck)
    }

    pub fn deliver_get_rate(&self) -> f64 {
        self.rate(Stat::Deliver) + self.rate(Stat::DeliverNoAck) + self.rate(Stat::Get) + self.rate(Stat::GetNoAck)
    }

    /// True when nothing was ever counted (RabbitMQ then omits `message_stats` fields).
    pub fn is_empty(&self) -> bool {
        self.count.iter().all(|&c| c == 0)
    }

    /// The counters with their names, skipping zeros (as RabbitMQ lists only what happened).
    pub fn nonzero(&self) -> impl Iterator<Item = (Stat, u64, f64)> + '_ {
        ALL.iter().filter(|s| self.count(**s) != 0).map(|&s| (s, self.count(s), self.rate(s)))
    }

    /// Turns the counts since the previous sample into rates over `secs`.
    pub fn sample(&mut self, secs: f64) {
        if secs <= 0.0 {
            return;
        }
        for i in 0..N {
            self.rate[i] = (self.count[i] - self.prev[i]) as f64 / secs;
        }
        self.prev = self.count;
    }

    /// Sets a counter (for counts kept elsewhere, e.g. an exchange's cells).
    pub fn set(&mut self, s: Stat, v: u64) {
        self.count[s as usize] = v;
    }

    /// Adds another object's counters and rates (for totals).
    pub fn absorb(&mut self, other: &MessageStats) {
        for i in 0..N {
            self.count[i] += other.count[i];
            self.rate[i] += other.rate[i];
        }
    }
}

/// Node-wide counters of objects coming and going (RabbitMQ's `*_opened_total` and friends).
#[derive(Debug, Clone, Copy, Default)]
pub struct Churn {
    pub connections_opened: u64,
    pub connections_closed: u64,
    pub channels_opened: u64,
    pub channels_closed: u64,
    pub queues_declared: u64,
    pub queues_created: u64,
    pub queues_deleted: u64,
}

impl crate::Broker {
    /// Computes every object's rates from the counts since the previous call, `secs` ago.
    pub fn sample_stats(&mut self, secs: f64) {
        self.totals.sample(secs);
        let period_ms = (secs * 1000.0) as u64;
        for q in self.queues.values_mut() {
            q.stats.sample(secs);
            q.note_capacity(self.now_ms);
            let has_consumers = !q.consumers.is_empty();
            q.capacity.sample(self.now_ms, period_ms, has_consumers);
        }
        for c in self.channels.values_mut() {
            c.stats.sample(secs);
        }
        for v in self.vhosts.values_mut() {
            for x in v.exchanges.values_mut() {
                x.stats.set(Stat::PublishIn, x.published_in.get());
                x.stats.set(Stat::PublishOut, x.published_out.get());
                x.stats.sample(secs);
            }
        }
    }

    /// Node-wide message statistics (every channel that ever existed).
    pub fn totals(&self) -> &MessageStats {
        &self.totals
    }

    /// Objects opened and closed since the start.
    pub fn churn(&self) -> Churn {
        self.churn
    }

    /// A vhost's message statistics: its queues' and its open channels' counters together, as
    /// RabbitMQ sums them for `/api/vhosts`.
    pub fn vhost_stats(&self, vhost: &str) -> MessageStats {
        let mut s = MessageStats::default();
        for c in
            self.channels.iter().filter(|((conn, _), _)| self.connections.get(conn).is_some_and(|c| c.vhost == vhost))
        {
            s.absorb(&c.1.stats);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_counts_since_the_last_sample() {
        let mut s = MessageStats::default();
        s.add(Stat::Publish, 50);
        s.sample(5.0);
        assert_eq!(s.rate(Stat::Publish), 10.0);
        s.add(Stat::Publish, 5);
        s.inc(Stat::Deliver);
        s.sample(5.0);
        assert_eq!((s.rate(Stat::Publish), s.rate(Stat::Deliver)), (1.0, 0.2));
        assert_eq!(s.count(Stat::Publish), 55);
        assert_eq!(s.deliver_get(), 1);
        let names: Vec<&str> = s.nonzero().map(|(k, _, _)| k.name()).collect();
        assert_eq!(names, ["publish", "deliver"]);
    }
}

#[cfg(test)]
mod broker_tests {
    use super::*;
    use crate::tests::{setup, T0};
    use crate::*;

    /// Proves publishes, deliveries, gets, acks, confirms and unroutables are counted on the
    /// queue, the channel, the exchange and the node, and that sampling turns them into rates.
    #[test]
    fn counts_and_rates() {
        let (mut b, mut fx) = setup();
        b.handle(1, 1, QueueDeclare { queue: "q".into(), ..Default::default() }.into(), T0, &mut fx).expect("q");
        b.handle(1, 1, ConfirmSelect { nowait: false }.into(), T0, &mut fx).expect("confirm");
        let m = |rk: &str| Message::with_properties("amq.direct", rk, &BasicProperties::default(), "x".into());
        b.handle(
            1,
            1,
            QueueBind {
                queue: "q".into(),
                exchange: "amq.direct".into(),
                routing_key: "q".into(),
                ..Default::default()
            }
            .into(),
            T0,
            &mut fx,
        )
        .expect("bind");
        for _ in 0..4 {
            b.publish(1, 1, PublishFlags::default(), m("q"), T0, &mut fx).expect("publish");
        }
        b.publish(1, 1, PublishFlags { mandatory: true, immediate: false }, m("none"), T0, &mut fx).expect("publish");
        b.publish(1, 1, PublishFlags::default(), m("none"), T0, &mut fx).expect("publish");
        b.handle(1, 1, BasicGet { queue: "q".into(), no_ack: false, ..Default::default() }.into(), T0, &mut fx)
            .expect("get");
        b.handle(1, 1, BasicAck { delivery_tag: 1, multiple: false }.into(), T0, &mut fx).expect("ack");
        b.handle(1, 1, BasicConsume { queue: "q".into(), no_ack: true, ..Default::default() }.into(), T0, &mut fx)
            .expect("consume");
        b.sample_stats(2.0);
        let q = b.queue("/", "q").expect("q");
        assert_eq!((q.stats.count(Stat::Publish), q.stats.count(Stat::Get), q.stats.count(Stat::Ack)), (4, 1, 1));
        assert_eq!(q.stats.count(Stat::DeliverNoAck), 3);
        assert_eq!(q.stats.rate(Stat::Publish), 2.0);
        let c = &b.channels[&(1, 1)];
        assert_eq!((c.stats.count(Stat::Publish), c.stats.count(Stat::Confirm)), (6, 6));
        assert_eq!((c.stats.count(Stat::ReturnUnroutable), c.stats.count(Stat::DropUnroutable)), (1, 1));
        let t = b.totals();
        assert_eq!((t.count(Stat::Publish), t.deliver_get(), t.count(Stat::Ack)), (6, 4, 1));
        let x = &b.vhosts["/"].exchanges["amq.direct"];
        assert_eq!((x.stats.count(Stat::PublishIn), x.stats.count(Stat::PublishOut)), (6, 4));
        assert_eq!(b.churn().queues_created, 1);
    }

    /// Proves consumer capacity: 1.0 while consumers take every message at once, lower for the
    /// share of the period messages waited behind a consumer at its prefetch limit, 0 without
    /// consumers.
    #[test]
    fn consumer_capacity_is_the_share_of_time_consumers_had_room() {
        let (mut b, mut fx) = setup();
        b.handle(1, 1, QueueDeclare { queue: "q".into(), ..Default::default() }.into(), T0, &mut fx).expect("q");
        b.handle(1, 1, BasicQos { prefetch_count: 1, ..Default::default() }.into(), T0, &mut fx).expect("qos");
        b.handle(1, 1, BasicConsume { queue: "q".into(), ..Default::default() }.into(), T0, &mut fx).expect("consume");
        let m = || Message::with_properties("", "q", &BasicProperties::default(), "x".into());
        b.publish(1, 1, PublishFlags::default(), m(), T0, &mut fx).expect("publish");
        let capacity = |b: &Broker| {
            let q = b.queue("/", "q").expect("q");
            q.capacity.value(!q.consumers.is_empty())
        };
        assert_eq!(capacity(&b), 1.0, "the consumer took the message at once");
        // A second message waits behind the unacked first: blocked from T0 ...
        b.publish(1, 1, PublishFlags::default(), m(), T0, &mut fx).expect("publish");
        b.tick(T0 + 1000, &mut fx);
        b.sample_stats(1.0);
        assert_eq!(capacity(&b), 0.0, "blocked for the whole second");
        // ... until the ack half a second into the next period.
        b.handle(1, 1, BasicAck { delivery_tag: 1, multiple: false }.into(), T0 + 1500, &mut fx).expect("ack");
        b.tick(T0 + 2000, &mut fx);
        b.sample_stats(1.0);
        assert_eq!(capacity(&b), 0.5);
        b.handle(
            1,
            1,
            BasicCancel { consumer_tag: b.queue("/", "q").expect("q").consumers[0].tag.to_string(), nowait: false }
                .into(),
            T0 + 2000,
            &mut fx,
        )
        .expect("cancel");
        b.sample_stats(1.0);
        assert_eq!(capacity(&b), 0.0, "no consumers");
    }
}
