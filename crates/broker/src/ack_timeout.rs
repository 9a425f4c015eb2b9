//! The consumer acknowledgement timeout (RabbitMQ's `consumer_timeout`): a delivery left
//! unacknowledged for longer than its timeout closes its channel with 406 PRECONDITION_FAILED,
//! and the channel's unacknowledged messages go back to their queues. The timeout is, in order of
//! precedence, the consumer's `x-consumer-timeout` argument, the queue's `x-consumer-timeout`
//! argument (or `consumer-timeout` policy key), and the broker's default (30 minutes, as
//! RabbitMQ; 0 turns it off). RabbitMQ only allows per-queue and node-wide values.
//!
//! Each channel keeps at most one live entry in the broker's heap of ack timers: the earliest
//! deadline of its deliveries. When it comes, the channel's deliveries are scanned once: either
//! one is overdue (the channel is closed) or the entry moves to the new earliest deadline. With
//! one timeout value deadlines only grow, so that is one scan per timeout period per channel.
//!
//! The channel closed here stays known (`server_closed`) until the client's channel.close-ok:
//! methods and publishes the client sent meanwhile are discarded, as the spec asks.

use std::cmp::Reverse;

use amqp_codec::ChannelClose;
use amqp_codec::{FieldTable, FieldValue};

use crate::error::AmqpError;
use crate::{Broker, ConnectionId, Effects, QueueId};

/// The consumer's own `x-consumer-timeout`, if it gave a valid one.
pub(crate) fn consumer_timeout_arg(args: &FieldTable) -> Option<u64> {
    args.get("x-consumer-timeout").and_then(FieldValue::as_i64).and_then(|t| u64::try_from(t).ok())
}

impl Broker {
    /// The acknowledgement timeout of a delivery from `qid` (to a consumer with its own timeout
    /// `consumer`, if any), in milliseconds; 0 when none applies.
    pub fn ack_timeout_ms(&self, qid: QueueId, consumer: Option<u64>) -> u64 {
        consumer
            .or_else(|| self.queues.get(&qid)?.features.as_deref()?.consumer_timeout_ms)
            .unwrap_or(self.config.consumer_timeout_ms)
    }

    /// Makes sure the ack timer of channel (conn, ch) fires by `deadline_ms`.
    pub(crate) fn watch_ack(&mut self, conn: ConnectionId, ch: u16, deadline_ms: u64) {
        let Some(c) = self.channels.get_mut(&(conn, ch)) else { return };
        if deadline_ms >= c.ack_timer_ms {
            return;
        }
        c.ack_timer_ms = deadline_ms;
        self.ack_timers.push(Reverse((deadline_ms, conn, ch)));
        if deadline_ms < self.timer_wake_ms {
            self.timer_wake_ms = deadline_ms;
            self.wake_pending = true;
        }
    }

    /// Closes the channels with an overdue delivery (called by `tick`).
    pub(crate) fn check_ack_timeouts(&mut self, fx: &mut Effects) {
        let now = self.now_ms;
        while let Some(&Reverse((deadline, conn, ch))) = self.ack_timers.peek() {
            if deadline > now {
                break;
            }
            self.ack_timers.pop();
            let Some(c) = self.channels.get_mut(&(conn, ch)) else { continue };
            if c.ack_timer_ms != deadline {
                continue;
            }
            c.ack_timer_ms = u64::MAX;
            let overdue = c.unacked.iter().find(|u| u.deadline_ms != 0 && u.deadline_ms <= now);
            if let Some(u) = overdue {
                let timeout = u.timeout_ms;
                let e = AmqpError::precondition_failed(format!(
                    "delivery acknowledgement on channel {ch} timed out. Timeout value used: {timeout} ms. This \
                     timeout value can be configured, see consumers doc guide to learn more"
                ));
                fx.reply(
                    conn,
                    ch,
                    ChannelClose { reply_code: e.code, reply_text: e.reply_text(), class_id: 0, method_id: 0 },
                );
                self.channel_closed(conn, ch, now, fx);
                self.server_closed.insert((conn, ch));
                continue;
            }
            let next = c.unacked.iter().map(|u| u.deadline_ms).filter(|&d| d != 0).min();
            if let Some(next) = next {
                self.watch_ack(conn, ch, next);
            }
        }
        if self.ack_timers.len() > 2 * self.channels.len() + 1024 {
            let live = self.channels.iter().filter(|(_, c)| c.ack_timer_ms != u64::MAX);
            self.ack_timers = live.map(|(&(conn, ch), c)| Reverse((c.ack_timer_ms, conn, ch))).collect();
        }
    }

    /// The earliest ack timer, for the next tick.
    pub(crate) fn next_ack_timer_ms(&self) -> Option<u64> {
        self.ack_timers.peek().map(|Reverse((d, _, _))| *d)
    }

    /// True when the broker closed channel (conn, ch) and awaits the client's close-ok: what
    /// the client sends on it meanwhile is discarded.
    pub fn is_server_closed(&self, conn: ConnectionId, ch: u16) -> bool {
        !self.server_closed.is_empty() && self.server_closed.contains(&(conn, ch))
    }

    /// channel.close-ok from the client; true when it answers a close the broker sent (the
    /// channel number is then free again).
    pub fn channel_close_ok(&mut self, conn: ConnectionId, ch: u16) -> bool {
        self.server_closed.remove(&(conn, ch))
    }
}
