//! Time in the broker: message TTLs, queue expiry (`x-expires`) and the dead-lettering they and
//! the other reasons cause. The broker reads no clock. Every call that can act on time brings
//! `now_ms` (milliseconds since the Unix epoch, as the server's wall clock says; the broker keeps
//! the largest it has seen, so its time never goes back), and the server calls `Broker::tick`
//! when the earliest deadline comes: `tick` returns it, and `Effects::tick_at_ms` asks for an
//! earlier tick when a call sets an earlier deadline.
//!
//! Each queue keeps a min-heap of its message deadlines (see `Queue::take_expired`); the broker
//! keeps a min-heap of (deadline, queue) timers, at most one live entry per queue plus stale ones
//! that are skipped when they come up, so a tick costs O(log n) per expired message and nothing
//! for queues without deadlines.

use std::cmp::Reverse;

use crate::dead_letter::{dead_lettered_copy, is_cycle, DeadLetter, Reason};
use crate::queue::{Queue, QueuedMessage};
use crate::{Broker, Effects, Journal, QueueId};
use amqp_codec::FieldValue;

/// Stale broker timers tolerated before the heap is rebuilt, beyond twice the queue count.
const TIMERS_SLACK: usize = 1024;

impl Broker {
    /// Advances the broker's clock (never backwards).
    pub(crate) fn advance(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// The broker's time: the latest `now_ms` any call brought.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Expires the messages and queues whose deadline has come (dead-lettering what has a
    /// dead-letter exchange) and returns the next deadline, when the server must call again.
    pub fn tick(&mut self, now_ms: u64, fx: &mut Effects) -> Option<u64> {
        self.advance(now_ms);
        let now = self.now_ms;
        for qid in std::mem::take(&mut self.unarmed) {
            self.touch_unused(qid);
        }
        while let Some(&Reverse((deadline, qid))) = self.timers.peek() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            let Some(q) = self.queues.get_mut(&qid) else { continue };
            if q.timer_ms == deadline {
                q.timer_ms = u64::MAX;
            }
            if q.consumers.is_empty() && q.unused_deadline_ms.is_some_and(|d| d <= now) {
                // x-expires: unused for its whole period. RabbitMQ compat: its messages are
                // deleted with it, not dead-lettered.
                self.delete_queue_by_id(qid, fx);
                continue;
            }
            let (expired, paged) = q.take_expired(now);
            for m in expired {
                Self::dead_letter(q, m, Reason::Expired, &mut *self.journal, &mut self.dead_letters);
            }
            for p in paged {
                // Read back only when it goes to a dead-letter exchange.
                let dlx = q.features.as_deref().is_some_and(|f| f.dead_letter_exchange.is_some());
                match dlx.then(|| self.journal.read(p.location)) {
                    Some(Some(message)) => {
                        let m = p.into_queued(message);
                        Self::dead_letter(q, m, Reason::Expired, &mut *self.journal, &mut self.dead_letters);
                    }
                    Some(None) => {
                        self.page_in_failures += 1;
                        Self::forget(&mut *self.journal, q.id, p.msg_id);
                    }
                    None => Self::forget(&mut *self.journal, q.id, p.msg_id),
                }
            }
            q.invariants();
            if let Some(next) = q.next_deadline_ms() {
                // Everything due was handled above; never re-arm in the past (no spinning).
                debug_assert!(next > now, "queue {qid} still has a deadline due at {next} <= {now}");
                self.arm(qid, next.max(now + 1));
            }
        }
        self.check_ack_timeouts(fx);
        self.release_delayed(fx);
        self.run_dispatch(fx);
        let next = [self.timers.peek().map(|Reverse((d, _))| *d), self.next_ack_timer_ms(), self.delayed.next_due_ms()]
            .into_iter()
            .flatten()
            .min();
        self.timer_wake_ms = next.unwrap_or(u64::MAX);
        self.wake_pending = false;
        fx.tick_at_ms = None;
        next
    }

    /// Makes sure a broker timer fires for `qid` at `deadline_ms` or earlier.
    pub(crate) fn arm(&mut self, qid: QueueId, deadline_ms: u64) {
        let Some(q) = self.queues.get_mut(&qid) else { return };
        if deadline_ms >= q.timer_ms {
            return;
        }
        q.timer_ms = deadline_ms;
        if self.timers.len() > 2 * self.queues.len() + TIMERS_SLACK {
            self.rebuild_timers();
        }
        self.timers.push(Reverse((deadline_ms, qid)));
        if deadline_ms < self.timer_wake_ms {
            self.timer_wake_ms = deadline_ms;
            self.wake_pending = true;
        }
    }

    /// Drops stale timers: one entry per queue that has a deadline.
    fn rebuild_timers(&mut self) {
        self.timers.clear();
        for (qid, q) in &mut self.queues {
            q.timer_ms = q.next_deadline_ms().unwrap_or(u64::MAX);
            if q.timer_ms != u64::MAX {
                self.timers.push(Reverse((q.timer_ms, *qid)));
            }
        }
    }

    /// The queue was used (declared, basic.get, lost its last consumer): restart its x-expires
    /// period if it has one and no consumers.
    pub(crate) fn touch_unused(&mut self, qid: QueueId) {
        let now = self.now_ms;
        let Some(q) = self.queues.get_mut(&qid) else { return };
        let Some(expires) = q.features.as_ref().and_then(|f| f.expires_ms) else { return };
        if !q.consumers.is_empty() {
            return;
        }
        // One ms more, as for delayed messages: the broker's clock rounds down, so the queue is
        // never deleted before the full period.
        let deadline = now.saturating_add(expires).saturating_add(1);
        q.unused_deadline_ms = Some(deadline);
        self.arm(qid, deadline);
    }

    /// Puts an unacknowledged message back in its queue, or dead-letters it as expired when its
    /// deadline passed while it was out.
    pub(crate) fn requeue_entry(&mut self, qid: QueueId, mut entry: QueuedMessage) {
        let now = self.now_ms;
        let Some(q) = self.queues.get_mut(&qid) else { return };
        self.dirty.push(qid);
        if entry.is_expired(now) {
            Self::dead_letter(q, entry, Reason::Expired, &mut *self.journal, &mut self.dead_letters);
            return;
        }
        if let Some(limit) = q.features.as_deref().and_then(|f| f.delivery_limit) {
            entry.returns = entry.returns.saturating_add(1);
            if entry.msg_id != 0 {
                // So that a restart does not reset the count.
                self.journal.returned(qid, entry.msg_id);
            }
            if u64::from(entry.returns) > limit {
                Self::dead_letter(q, entry, Reason::DeliveryLimit, &mut *self.journal, &mut self.dead_letters);
                return;
            }
            // RabbitMQ compat (quorum queues): consumers see how often it came back.
            let count = FieldValue::I64(i64::from(entry.returns));
            if let Some(m) = crate::dead_letter::with_header(&entry.message, "x-delivery-count", count) {
                entry.message = std::sync::Arc::new(m);
            }
        }
        let deadline = entry.expires_at_ms;
        q.requeue(entry);
        if deadline != 0 {
            self.arm(qid, deadline);
        }
    }

    /// A message leaves `q` for good for `reason`: its journal entry goes and, when the queue
    /// has a dead-letter exchange, a copy is queued for `publish_dead_letters`.
    pub(crate) fn dead_letter(
        q: &Queue,
        entry: QueuedMessage,
        reason: Reason,
        journal: &mut dyn Journal,
        out: &mut std::collections::VecDeque<DeadLetter>,
    ) {
        Self::forget(journal, q.id, entry.msg_id);
        Self::dead_letter_message(q, entry.message, reason, out);
    }

    /// Queues a copy of `message` for `q`'s dead-letter exchange, if it has one.
    pub(crate) fn dead_letter_message(
        q: &Queue,
        message: std::sync::Arc<crate::Message>,
        reason: Reason,
        out: &mut std::collections::VecDeque<DeadLetter>,
    ) {
        let Some(f) = q.features.as_deref() else { return };
        let Some(exchange) = &f.dead_letter_exchange else { return };
        out.push_back(DeadLetter {
            message,
            vhost: q.vhost.clone(),
            queue: q.name.clone(),
            reason,
            exchange: exchange.clone(),
            routing_key: f.dead_letter_routing_key.clone(),
        });
    }

    /// Publishes the queued dead letters through their exchanges like new messages (journaled
    /// anew when persistent and routed to durable queues), dropping cycles as RabbitMQ does.
    /// Returns true when there were any.
    pub(crate) fn publish_dead_letters(&mut self, fx: &mut Effects) -> bool {
        if self.dead_letters.is_empty() {
            return false;
        }
        let time_secs = self.now_ms / 1000;
        while let Some(dl) = self.dead_letters.pop_front() {
            let Some((copy, deaths)) = dead_lettered_copy(&dl, time_secs) else { continue };
            let Some(vhost) = self.vhosts.get(&dl.vhost) else { continue };
            let mut routed = std::mem::take(&mut self.route_buf);
            routed.clear();
            vhost.route(&copy.exchange, &copy.routing_key, &copy, &mut routed);
            if dl.reason != Reason::Rejected {
                let queues = &self.queues;
                routed.retain(|qid| queues.get(qid).is_some_and(|q| !is_cycle(&deaths, &q.name)));
            }
            self.enqueue(&mut routed, std::sync::Arc::new(copy), fx);
            self.route_buf = routed;
        }
        true
    }
}
