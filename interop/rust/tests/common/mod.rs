//! Helpers shared by the lapin interop tests: start the real `warren-server` binary, connect lapin
//! on the test's tokio runtime, bound every await by a deadline so a hang fails fast, and read
//! AMQP reply codes out of lapin's errors. Nothing here knows Warren's internals: the tests see the
//! broker only through lapin, as an application would.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_lite::{Stream, StreamExt};
use lapin::message::{BasicGetMessage, Delivery};
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ErrorKind, Event};
use testkit::Server;

/// The longest any single step may take; a broker that answers at all answers in milliseconds.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(3);

/// Starts the real binary on a free port with a fresh data directory.
pub fn start_server() -> Server {
    start_server_with(&[])
}

/// As [`start_server`], with extra command-line flags for the binary.
pub fn start_server_with(args: &[&str]) -> Server {
    let bin = testkit::server_bin();
    assert!(
        bin.exists(),
        "warren-server binary not found at {}: this crate does not depend on the server crate, \
         so build it first with `cargo build -p warren-server` (or set WARREN_BIN)",
        bin.display()
    );
    Server::start_with(args)
}

/// Awaits `fut`, failing the test with `what` if it takes longer than [`STEP_TIMEOUT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP_TIMEOUT:?} waiting for {what}"),
    }
}

/// Connection properties that run lapin on the current tokio runtime.
pub fn properties() -> ConnectionProperties {
    ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current())
}

/// Opens a lapin connection to the server as guest on vhost '/'.
pub async fn connect(server: &Server) -> Connection {
    within("connection.open", Connection::connect(&server.amqp_url(), properties()))
        .await
        .expect("connect to warren-server")
}

/// Opens a channel.
pub async fn open_channel(conn: &Connection) -> Channel {
    within("channel.open", conn.create_channel()).await.expect("channel.open")
}

/// Opens a channel in confirm mode.
pub async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = open_channel(conn).await;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await.expect("confirm.select");
    ch
}

/// The reply code and text of an AMQP protocol error (channel.close or connection.close).
pub fn reply_of(e: &lapin::Error) -> (u16, String) {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => (amqp.get_id(), amqp.get_message().to_string()),
        other => panic!("expected an AMQP protocol error, got {other:?} ({e})"),
    }
}

/// The reply code and text of a result that must have failed with a protocol error.
pub fn expect_reply<T: std::fmt::Debug>(r: lapin::Result<T>) -> (u16, String) {
    match r {
        Ok(v) => panic!("expected the broker to refuse, but it answered {v:?}"),
        Err(e) => reply_of(&e),
    }
}

/// A stream of the connection's events; lapin reports every channel.close and connection.close
/// the broker sends here. Create it before the action whose error it must see.
pub type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// Starts listening to the connection's events.
pub fn events(conn: &Connection) -> Events {
    Box::pin(conn.events_listener())
}

/// The reply code and text of the next channel.close or connection.close the broker sends. For
/// asynchronous methods (publish, ack, ...) that carry no reply of their own.
pub async fn next_close(events: &mut Events) -> (u16, String) {
    within("the broker's channel.close or connection.close", async {
        loop {
            match events.next().await {
                Some(Event::Error(e)) => return reply_of(&e),
                Some(_) => continue,
                None => panic!("the connection's event stream ended without an error"),
            }
        }
    })
    .await
}

/// Declares a plain (non-durable, non-exclusive) queue with this name.
pub async fn declare_queue(ch: &Channel, name: &str) -> lapin::Queue {
    within("queue.declare", ch.queue_declare(name, QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .unwrap_or_else(|e| panic!("queue.declare {name}: {e}"))
}

/// The queue's ready message count and consumer count, from a passive queue.declare.
pub async fn queue_counts(ch: &Channel, name: &str) -> (u32, u32) {
    let q = within(
        "passive queue.declare",
        ch.queue_declare(name, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("passive queue.declare {name}: {e}"));
    (q.message_count(), q.consumer_count())
}

/// Publishes on a confirm channel and waits for the broker's confirm, which it sends only once
/// the message is routed (so a later passive declare or basic.get sees it). Returns the
/// confirmation, which carries a basic.return if one came before the ack.
pub async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Confirmation {
    publish_with(ch, exchange, routing_key, BasicPublishOptions::default(), body, properties).await
}

/// As [`publish_confirmed`], with explicit publish options (mandatory).
pub async fn publish_with(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    options: BasicPublishOptions,
    body: &[u8],
    properties: BasicProperties,
) -> Confirmation {
    let confirm = within("basic.publish", ch.basic_publish(exchange, routing_key, options, body, properties))
        .await
        .expect("basic.publish");
    within("publisher confirm", confirm).await.expect("publisher confirm")
}

/// Publishes without waiting for anything but the frames to be written.
pub async fn publish(ch: &Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    within(
        "basic.publish",
        ch.basic_publish(exchange, routing_key, BasicPublishOptions::default(), body, BasicProperties::default()),
    )
    .await
    .expect("basic.publish");
}

/// basic.get with the given no_ack.
pub async fn get(ch: &Channel, queue: &str, no_ack: bool) -> Option<BasicGetMessage> {
    within("basic.get", ch.basic_get(queue, BasicGetOptions { no_ack }))
        .await
        .unwrap_or_else(|e| panic!("basic.get {queue}: {e}"))
}

/// The bodies of everything in the queue, taken with basic.get no_ack until get-empty.
pub async fn drain(ch: &Channel, queue: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(m) = get(ch, queue, true).await {
        out.push(m.delivery.data);
    }
    out
}

/// The next delivery on a consumer; fails if the stream ends, errors or stays silent.
pub async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    match within("basic.deliver", consumer.next()).await {
        Some(Ok(d)) => d,
        Some(Err(e)) => panic!("consumer error: {e}"),
        None => panic!("consumer stream ended"),
    }
}

/// Bodies as byte vectors, for comparing with deliveries.
pub fn bodies(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}
