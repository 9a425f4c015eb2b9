//! A connection's outbox: what the broker (under its lock) and the connection's own reader queue
//! for the connection's single writer task. Pushing takes this outbox's small lock once per batch;
//! the writer swaps the whole batch out and encodes it into one buffer, so many frames leave in
//! one syscall.

use broker::Outbound;
use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Outbox {
    items: Mutex<Vec<Outbound>>,
    notify: Notify,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&self, o: Outbound) {
        self.items.lock().push(o);
        self.notify.notify_one();
    }

    pub fn extend(&self, it: impl IntoIterator<Item = Outbound>) {
        self.items.lock().extend(it);
        self.notify.notify_one();
    }

    /// Moves everything queued into `into` (which the writer reuses between batches).
    pub fn take(&self, into: &mut Vec<Outbound>) {
        std::mem::swap(&mut *self.items.lock(), into);
    }

    pub fn is_empty(&self) -> bool {
        self.items.lock().is_empty()
    }

    /// Wakes the writer without queueing anything (e.g. to stop).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    pub async fn wait(&self) {
        self.notify.notified().await
    }
}
