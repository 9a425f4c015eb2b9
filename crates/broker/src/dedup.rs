//! Publisher deduplication per queue, with the argument and header names of the community
//! `rabbitmq-message-deduplication` plugin: a queue declared with `x-message-deduplication: true`
//! takes a message whose `x-deduplication-header` value it has seen within its window only once.
//! A duplicate is still confirmed to its publisher (it was handled), just not enqueued again.
//!
//! The window is bounded: the last `x-cache-size` ids (default 100,000), each forgotten after
//! `x-cache-ttl` milliseconds when that is set. It is persistent for durable queues: recovery
//! rebuilds it from the message log, which keeps every message record (acknowledged ones too)
//! until its whole segment is garbage-collected. The plugin only remembers messages still in the
//! queue; Warren remembers them after they are consumed as well.

use crate::HashMap;
use std::collections::VecDeque;

use amqp_codec::{FieldTable, FieldValue};
use bytes::Bytes;

use crate::message::Message;

/// Ids remembered when `x-cache-size` is not given.
pub const DEFAULT_WINDOW: usize = 100_000;
/// The most ids a window may hold (about 100 bytes each).
pub const MAX_WINDOW: usize = 10_000_000;

/// The ids seen by one queue, oldest first.
#[derive(Debug)]
pub struct DedupWindow {
    capacity: usize,
    ttl_ms: Option<u64>,
    /// id → times it is in `order` (an id seen again after expiring is queued twice).
    seen: HashMap<Bytes, (u32, u64)>,
    order: VecDeque<(Bytes, u64)>,
}

impl DedupWindow {
    /// The window the queue arguments ask for; None without `x-message-deduplication: true`.
    pub fn from_arguments(args: &FieldTable) -> Option<Box<DedupWindow>> {
        if !matches!(args.get("x-message-deduplication"), Some(FieldValue::Bool(true))) {
            return None;
        }
        let int = |k: &str| args.get(k).and_then(FieldValue::as_i64).and_then(|i| u64::try_from(i).ok());
        let capacity = int("x-cache-size").map_or(DEFAULT_WINDOW, |n| (n as usize).clamp(1, MAX_WINDOW));
        Some(Box::new(DedupWindow {
            capacity,
            ttl_ms: int("x-cache-ttl").filter(|&t| t > 0),
            seen: HashMap::default(),
            order: VecDeque::new(),
        }))
    }

    /// The message's deduplication id, if it carries one.
    pub fn id_of(message: &Message) -> Option<Bytes> {
        message.summary.headers?;
        match message.headers()?.get("x-deduplication-header")? {
            FieldValue::LongStr(b) => Some(b.clone()),
            v => v.as_i64().map(|i| Bytes::from(i.to_string())),
        }
    }

    /// Records `id` as seen at `now_ms`; false when it was already seen within the window (the
    /// message is a duplicate).
    pub fn admit(&mut self, id: &Bytes, now_ms: u64) -> bool {
        self.evict(now_ms);
        if let Some((_, seen_at)) = self.seen.get(id) {
            if self.ttl_ms.is_none_or(|ttl| seen_at.saturating_add(ttl) > now_ms) {
                return false;
            }
        }
        let e = self.seen.entry(id.clone()).or_insert((0, now_ms));
        e.0 += 1;
        e.1 = now_ms;
        self.order.push_back((id.clone(), now_ms));
        while self.order.len() > self.capacity {
            self.pop_oldest();
        }
        true
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn evict(&mut self, now_ms: u64) {
        let Some(ttl) = self.ttl_ms else { return };
        while self.order.front().is_some_and(|(_, at)| at.saturating_add(ttl) <= now_ms) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        let Some((id, _)) = self.order.pop_front() else { return };
        if let Some(e) = self.seen.get_mut(&id) {
            e.0 -= 1;
            if e.0 == 0 {
                self.seen.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(size: Option<i64>, ttl: Option<i64>) -> Box<DedupWindow> {
        let mut args = FieldTable::new();
        args.insert("x-message-deduplication", FieldValue::Bool(true));
        if let Some(s) = size {
            args.insert("x-cache-size", FieldValue::I64(s));
        }
        if let Some(t) = ttl {
            args.insert("x-cache-ttl", FieldValue::I64(t));
        }
        DedupWindow::from_arguments(&args).expect("window")
    }

    #[test]
    fn duplicates_within_the_window_are_refused() {
        let mut w = window(Some(2), None);
        let (a, b, c) = (Bytes::from("a"), Bytes::from("b"), Bytes::from("c"));
        assert!(w.admit(&a, 0));
        assert!(!w.admit(&a, 1));
        assert!(w.admit(&b, 2));
        assert!(w.admit(&c, 3), "a falls out of the 2-id window");
        assert!(w.admit(&a, 4));
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn ids_expire_after_the_ttl() {
        let mut w = window(None, Some(100));
        let a = Bytes::from("a");
        assert!(w.admit(&a, 1000));
        assert!(!w.admit(&a, 1099));
        assert!(w.admit(&a, 1100));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn off_unless_asked() {
        assert!(DedupWindow::from_arguments(&FieldTable::new()).is_none());
    }
}
