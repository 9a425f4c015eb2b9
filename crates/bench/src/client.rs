//! The generator's side of AMQP: opening connections and channels with amqprs, reporting what the
//! broker closes or cancels, and the publisher-confirm window of the confirm scenario.
//!
//! Nothing here measures; it only keeps the client honest: a broker that closes a channel or
//! connection is reported on stderr with its reply code, instead of showing up as a silent stall.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use amqprs::callbacks::{ChannelCallback, ConnectionCallback};
use amqprs::channel::Channel;
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, Close, CloseChannel, Nack, Return};
use anyhow::{Context, Result};
use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::url::AmqpUrl;

/// What amqprs' callback traits return.
type CallbackResult<T> = std::result::Result<T, amqprs::error::Error>;

/// Opens one connection and one channel on it, both with callbacks that report closes.
/// `confirms` puts the channel in confirm mode and feeds its acks and nacks to that window.
pub async fn open(url: &AmqpUrl, name: &str, confirms: Option<Arc<ConfirmWindow>>) -> Result<(Connection, Channel)> {
    let args = OpenConnectionArguments::new(&url.host, url.port, &url.username, &url.password)
        .virtual_host(&url.vhost)
        .connection_name(name)
        .finish();
    let connection =
        Connection::open(&args).await.with_context(|| format!("{name}: connecting to {}:{}", url.host, url.port))?;
    connection
        .register_callback(ReportingConnection { name: name.to_owned() })
        .await
        .with_context(|| format!("{name}: registering connection callback"))?;
    let channel = connection.open_channel(None).await.with_context(|| format!("{name}: opening channel"))?;
    let confirm_mode = confirms.is_some();
    channel
        .register_callback(ReportingChannel { name: name.to_owned(), confirms })
        .await
        .with_context(|| format!("{name}: registering channel callback"))?;
    if confirm_mode {
        channel
            .confirm_select(amqprs::channel::ConfirmSelectArguments::new(false))
            .await
            .with_context(|| format!("{name}: confirm.select"))?;
    }
    Ok((connection, channel))
}

/// Bounds the publishes a confirm-mode producer has sent but the broker has not yet confirmed.
///
/// The producer takes a permit per publish; a confirm (ack or nack, single or `multiple`) gives
/// back one permit per publish it settles. Tags are tracked exactly in `outstanding`, so a
/// `multiple` confirm after single ones never counts a publish twice.
pub struct ConfirmWindow {
    permits: Semaphore,
    outstanding: Mutex<BTreeSet<u64>>,
    confirmed: AtomicU64,
    nacked: AtomicU64,
}

impl ConfirmWindow {
    pub fn new(outstanding_max: usize) -> Self {
        Self {
            permits: Semaphore::new(outstanding_max),
            outstanding: Mutex::new(BTreeSet::new()),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
        }
    }

    /// Waits for room in the window, then records `delivery_tag` as outstanding. Call before
    /// publishing it, so a fast confirm cannot arrive for a tag not yet recorded.
    pub async fn reserve(&self, delivery_tag: u64) -> Result<()> {
        self.permits.acquire().await.context("confirm window closed")?.forget();
        self.lock().insert(delivery_tag);
        Ok(())
    }

    pub fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::Relaxed)
    }

    pub fn nacked(&self) -> u64 {
        self.nacked.load(Ordering::Relaxed)
    }

    /// Settles `delivery_tag` (and every lower tag if `multiple`); returns how many it settled.
    fn settle(&self, delivery_tag: u64, multiple: bool) -> usize {
        let settled = {
            let mut outstanding = self.lock();
            if multiple {
                let above = outstanding.split_off(&(delivery_tag + 1));
                let settled = outstanding.len();
                *outstanding = above;
                settled
            } else {
                usize::from(outstanding.remove(&delivery_tag))
            }
        };
        self.permits.add_permits(settled);
        settled
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        // A panic while holding this lock already ends the run; the set itself stays consistent.
        self.outstanding.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct ReportingConnection {
    name: String,
}

#[async_trait]
impl ConnectionCallback for ReportingConnection {
    async fn close(&mut self, _connection: &Connection, close: Close) -> CallbackResult<()> {
        eprintln!("warren-bench: {}: broker closed the connection: {close}", self.name);
        Ok(())
    }

    async fn blocked(&mut self, _connection: &Connection, reason: String) {
        eprintln!("warren-bench: {}: connection.blocked: {reason}", self.name);
    }

    async fn unblocked(&mut self, _connection: &Connection) {
        eprintln!("warren-bench: {}: connection.unblocked", self.name);
    }

    async fn secret_updated(&mut self, _connection: &Connection) {}
}

struct ReportingChannel {
    name: String,
    confirms: Option<Arc<ConfirmWindow>>,
}

#[async_trait]
impl ChannelCallback for ReportingChannel {
    async fn close(&mut self, _channel: &Channel, close: CloseChannel) -> CallbackResult<()> {
        eprintln!("warren-bench: {}: broker closed the channel: {close}", self.name);
        Ok(())
    }

    async fn cancel(&mut self, _channel: &Channel, _cancel: Cancel) -> CallbackResult<()> {
        // Expected when teardown deletes the queues; a cancel during the measured window shows
        // up as the consumer's end, which the scenario reports.
        Ok(())
    }

    async fn flow(&mut self, _channel: &Channel, active: bool) -> CallbackResult<bool> {
        eprintln!("warren-bench: {}: channel.flow active={active}", self.name);
        Ok(active)
    }

    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        if let Some(window) = &self.confirms {
            let settled = window.settle(ack.delivery_tag(), ack.mutiple());
            window.confirmed.fetch_add(settled as u64, Ordering::Relaxed);
        }
    }

    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        if let Some(window) = &self.confirms {
            let settled = window.settle(nack.delivery_tag(), nack.multiple());
            window.nacked.fetch_add(settled as u64, Ordering::Relaxed);
        }
    }

    async fn publish_return(
        &mut self,
        _channel: &Channel,
        ret: Return,
        _basic_properties: BasicProperties,
        _content: Vec<u8>,
    ) {
        eprintln!("warren-bench: {}: basic.return: {ret}", self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Single and multiple confirms, in any mix, give back exactly one permit per publish.
    #[tokio::test]
    async fn window_settles_each_publish_once() {
        let window = ConfirmWindow::new(4);
        for tag in 1..=4 {
            window.reserve(tag).await.expect("room in window");
        }
        assert_eq!(window.permits.available_permits(), 0);
        assert_eq!(window.settle(3, false), 1);
        assert_eq!(window.settle(4, true), 3, "tags 1, 2 and 4; 3 was settled already");
        assert_eq!(window.settle(4, true), 0, "a repeated confirm settles nothing");
        assert_eq!(window.permits.available_permits(), 4);
    }
}
