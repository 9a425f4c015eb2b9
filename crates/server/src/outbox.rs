//! A connection's outbox: what the broker (under its lock) and the connection's own reader queue
//! for the connection's single writer task. Pushing takes this outbox's small lock once per batch;
//! the writer swaps the whole batch out and encodes it into one buffer, so many frames leave in
//! one syscall.
//!
//! The writer's wake-up lives under the same lock as the items (a waker slot and a permit, the
//! semantics of tokio's `Notify::notify_one`): a push costs that one lock and, when the writer
//! waits, one wake. A `Notify` beside the lock cost a second lock and its waiter list per message.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use broker::Outbound;
use parking_lot::Mutex;

#[derive(Default)]
pub struct Outbox {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    items: Vec<Outbound>,
    /// Set by a push or a wake, taken by the `wait` that sees it: a wake with nobody waiting is
    /// kept for the next wait, so none is lost between `take` and `wait`.
    permit: bool,
    waker: Option<Waker>,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&self, o: Outbound) {
        self.add(|items| items.push(o));
    }

    pub fn extend(&self, it: impl IntoIterator<Item = Outbound>) {
        self.add(|items| items.extend(it));
    }

    /// Changes the items under the lock, sets the permit and wakes the writer if it waits.
    fn add(&self, f: impl FnOnce(&mut Vec<Outbound>)) {
        let waker = {
            let mut s = self.state.lock();
            f(&mut s.items);
            s.permit = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Moves everything queued into `into` (which the writer reuses between batches).
    pub fn take(&self, into: &mut Vec<Outbound>) {
        std::mem::swap(&mut self.state.lock().items, into);
    }

    pub fn is_empty(&self) -> bool {
        self.state.lock().items.is_empty()
    }

    /// Wakes the writer without queueing anything (e.g. to stop).
    pub fn wake(&self) {
        self.add(|_| {});
    }

    /// Completes once something was pushed or `wake` was called since the last wait completed
    /// (at once if that happened before this call).
    pub fn wait(&self) -> Wait<'_> {
        Wait(self)
    }
}

pub struct Wait<'a>(&'a Outbox);

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.0.state.lock();
        if s.permit {
            s.permit = false;
            return Poll::Ready(());
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn item() -> Outbound {
        Outbound::Method { channel: 0, method: amqp_codec::ConnectionCloseOk.into() }
    }

    #[tokio::test]
    async fn a_push_wakes_the_waiting_writer_and_a_push_before_the_wait_is_kept() {
        let o = std::sync::Arc::new(Outbox::new());
        // Before the wait: kept as a permit, so the wait completes at once, and only once.
        o.push(item());
        tokio::time::timeout(Duration::from_secs(1), o.wait()).await.expect("permit kept");
        assert!(tokio::time::timeout(Duration::from_millis(20), o.wait()).await.is_err(), "permit used up");
        let mut got = Vec::new();
        o.take(&mut got);
        assert_eq!(got.len(), 1);
        assert!(o.is_empty());
        // While waiting: woken by a push from another task, and by a bare wake.
        let o2 = o.clone();
        let pusher = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            o2.extend([item(), item()]);
            tokio::time::sleep(Duration::from_millis(20)).await;
            o2.wake();
        });
        tokio::time::timeout(Duration::from_secs(5), o.wait()).await.expect("woken by the push");
        o.take(&mut got);
        assert_eq!(got.len(), 2);
        tokio::time::timeout(Duration::from_secs(5), o.wait()).await.expect("woken by wake");
        pusher.await.expect("pusher");
    }
}
