//! lapin against the real binary: basic.qos, basic.consume/cancel, basic.get, acknowledgements
//! (ack, nack, reject, recover) and the broker-initiated basic.cancel.

mod common;

use common::*;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRecoverAsyncOptions, BasicRecoverOptions, BasicRejectOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, ConnectionState, Consumer, ConsumerState};

async fn consume(ch: &Channel, queue: &str, tag: &str, options: BasicConsumeOptions) -> Consumer {
    within("basic.consume", ch.basic_consume(queue, tag, options, FieldTable::default()))
        .await
        .unwrap_or_else(|e| panic!("basic.consume {queue}: {e}"))
}

async fn qos(ch: &Channel, prefetch_count: u16, global: bool) {
    within("basic.qos", ch.basic_qos(prefetch_count, BasicQosOptions { global })).await.expect("basic.qos-ok");
}

async fn ack(ch: &Channel, delivery_tag: u64, multiple: bool) {
    within("basic.ack", ch.basic_ack(delivery_tag, BasicAckOptions { multiple })).await.expect("basic.ack written");
}

/// Publishes each body to the queue through the default exchange and waits for the confirms.
async fn fill(conn: &lapin::Connection, queue: &str, items: &[&str]) {
    let pc = confirm_channel(conn).await;
    for body in items {
        publish_confirmed(&pc, "", queue, body.as_bytes(), Default::default()).await;
    }
}

/// Proves basic.qos global=false limits each consumer started afterwards on its own: two consumers
/// on one channel each hold `prefetch_count` unacked messages, and an ack lets one more through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_prefetch_is_per_consumer() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "qa").await;
    declare_queue(&ch, "qb").await;
    qos(&ch, 2, false).await;
    let mut a = consume(&ch, "qa", "a", Default::default()).await;
    let mut b = consume(&ch, "qb", "b", Default::default()).await;
    fill(&conn, "qa", &["a1", "a2", "a3"]).await;
    fill(&conn, "qb", &["b1", "b2", "b3"]).await;

    let probe = open_channel(&conn).await;
    assert_eq!(queue_counts(&probe, "qa").await, (1, 1));
    assert_eq!(queue_counts(&probe, "qb").await, (1, 1));
    let a1 = next_delivery(&mut a).await;
    assert_eq!(a1.data, b"a1");
    assert_eq!(next_delivery(&mut a).await.data, b"a2");
    assert_eq!(next_delivery(&mut b).await.data, b"b1");
    assert_eq!(next_delivery(&mut b).await.data, b"b2");

    ack(&ch, a1.delivery_tag, false).await;
    assert_eq!(next_delivery(&mut a).await.data, b"a3");
    assert_eq!(queue_counts(&probe, "qa").await, (0, 1));
    assert_eq!(queue_counts(&probe, "qb").await, (1, 1));
}

/// Proves basic.qos global=true is one limit shared by every consumer of the channel: with 3
/// allowed, the first queue's consumer takes all three and the second gets nothing until they
/// are acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_global_is_shared_by_the_channel() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "qa").await;
    declare_queue(&ch, "qb").await;
    qos(&ch, 3, true).await;
    let mut a = consume(&ch, "qa", "a", Default::default()).await;
    let mut b = consume(&ch, "qb", "b", Default::default()).await;
    fill(&conn, "qa", &["a1", "a2", "a3"]).await;
    fill(&conn, "qb", &["b1", "b2", "b3"]).await;

    let probe = open_channel(&conn).await;
    assert_eq!(queue_counts(&probe, "qa").await, (0, 1));
    assert_eq!(queue_counts(&probe, "qb").await, (3, 1));
    let mut last = 0;
    for want in ["a1", "a2", "a3"] {
        let d = next_delivery(&mut a).await;
        assert_eq!(d.data, want.as_bytes());
        last = d.delivery_tag;
    }
    ack(&ch, last, true).await;
    for want in ["b1", "b2", "b3"] {
        assert_eq!(next_delivery(&mut b).await.data, want.as_bytes());
    }
    assert_eq!(queue_counts(&probe, "qb").await, (0, 1));
}

/// Proves basic.consume with an empty tag gets a server-generated `amq.ctag-` tag, and deliveries
/// flow to that consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_with_server_generated_tag() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let mut c = consume(&ch, "q", "", Default::default()).await;
    let tag = c.tag();
    assert!(tag.as_str().starts_with("amq.ctag-"), "{tag}");
    assert_eq!(tag.as_str().len(), "amq.ctag-".len() + 22, "{tag}");
    fill(&conn, "q", &["hello"]).await;
    let d = next_delivery(&mut c).await;
    assert_eq!(d.data, b"hello");
    assert_eq!(d.routing_key.as_str(), "q");
    assert_eq!(d.exchange.as_str(), "");
    assert!(!d.redelivered);
    assert_eq!(queue_counts(&ch, "q").await, (0, 1));
}

/// Proves basic.consume on a missing queue closes the channel with 404 and RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_from_missing_queue_is_404() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let r = within("basic.consume", ch.basic_consume("nope", "", Default::default(), FieldTable::default())).await;
    assert_eq!(expect_reply(r), (404, "NOT_FOUND - no queue 'nope' in vhost '/'".into()));
}

/// Proves an exclusive consumer keeps every other consumer out (403 ACCESS_REFUSED), and an
/// exclusive consumer cannot join a queue that already has one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consumer_refuses_others_with_403() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    declare_queue(&ch, "shared").await;
    let exclusive = BasicConsumeOptions { exclusive: true, ..Default::default() };
    let _owner = consume(&ch, "q", "owner", exclusive).await;
    let in_use = |q: &str| (403, format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"));

    let other = open_channel(&conn).await;
    let r =
        within("second basic.consume", other.basic_consume("q", "second", Default::default(), FieldTable::default()))
            .await;
    assert_eq!(expect_reply(r), in_use("q"));

    let _plain = consume(&ch, "shared", "plain", Default::default()).await;
    let other = open_channel(&conn).await;
    let r = within(
        "exclusive basic.consume on a consumed queue",
        other.basic_consume("shared", "late", exclusive, FieldTable::default()),
    )
    .await;
    assert_eq!(expect_reply(r), in_use("shared"));
    assert_eq!(queue_counts(&ch, "q").await, (0, 1));
}

/// Proves reusing a consumer tag on one channel is a connection error, 530 NOT_ALLOWED with
/// RabbitMQ's text, while the same tag on another channel is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_a_consumer_tag_is_530() {
    let server = start_server();
    let conn = connect(&server).await;
    let mut events = events(&conn);
    let ch = open_channel(&conn).await;
    let ch2 = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let _first = consume(&ch, "q", "t", Default::default()).await;
    let _elsewhere = consume(&ch2, "q", "t", Default::default()).await;
    let r =
        within("basic.consume with a used tag", ch.basic_consume("q", "t", Default::default(), FieldTable::default()))
            .await;
    let reused = (530, "NOT_ALLOWED - attempt to reuse consumer tag 't'".to_owned());
    assert_eq!(expect_reply(r), reused);
    assert_eq!(next_close(&mut events).await, reused, "a connection.close");
    assert_ne!(conn.status().state(), ConnectionState::Connected);
}

/// Proves basic.cancel is answered with cancel-ok, ends the consumer's stream, and later messages
/// stay in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_deliveries() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let mut c = consume(&ch, "q", "c", BasicConsumeOptions { no_ack: true, ..Default::default() }).await;
    fill(&conn, "q", &["before"]).await;
    assert_eq!(next_delivery(&mut c).await.data, b"before");
    within("basic.cancel", ch.basic_cancel("c", BasicCancelOptions::default())).await.expect("basic.cancel-ok");
    assert!(within("end of the consumer stream", c.next()).await.is_none());
    assert_eq!(c.state(), ConsumerState::Canceled);
    fill(&conn, "q", &["after"]).await;
    assert_eq!(queue_counts(&ch, "q").await, (1, 0));
}

/// Proves basic.get returns one message with the remaining message_count, delivery tags count up
/// from 1 per channel, and an empty queue answers get-empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_get_empty() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    fill(&conn, "q", &["1", "2", "3"]).await;
    for (i, remaining) in [(1u64, 2u32), (2, 1), (3, 0)] {
        let m = get(&ch, "q", false).await.expect("a message");
        assert_eq!(m.message_count, remaining);
        assert_eq!(m.delivery.delivery_tag, i);
        assert_eq!(m.delivery.data, i.to_string().as_bytes());
        assert_eq!(m.delivery.routing_key.as_str(), "q");
        assert!(!m.delivery.redelivered);
    }
    assert!(get(&ch, "q", false).await.is_none(), "basic.get-empty");
    ack(&ch, 3, true).await;
    assert!(get(&ch, "q", true).await.is_none(), "basic.get-empty");
}

/// Proves basic.ack settles one tag, multiple=true settles every tag up to it, and what is left
/// unacked goes back to the queue (redelivered) when the channel closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_single_and_multiple() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    fill(&conn, "q", &["1", "2", "3", "4"]).await;
    for _ in 0..4 {
        get(&ch, "q", false).await.expect("a message");
    }
    ack(&ch, 1, false).await;
    ack(&ch, 3, true).await;
    within("channel.close", ch.close(200, "bye")).await.expect("close");

    let ch = open_channel(&conn).await;
    let m = get(&ch, "q", true).await.expect("the unacked message is back");
    assert_eq!(m.delivery.data, b"4");
    assert!(m.delivery.redelivered);
    assert_eq!(m.message_count, 0);
}

/// Proves acking an unknown delivery tag closes the channel with 406 and RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_of_unknown_delivery_tag_is_406() {
    let server = start_server();
    let conn = connect(&server).await;
    let mut events = events(&conn);
    let ch = open_channel(&conn).await;
    ack(&ch, 99, false).await;
    assert_eq!(next_close(&mut events).await, (406, "PRECONDITION_FAILED - unknown delivery tag 99".into()));
}

/// Proves a second ack of the same tag is an unknown tag: 406 with RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_ack_is_406() {
    let server = start_server();
    let conn = connect(&server).await;
    let mut events = events(&conn);
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    fill(&conn, "q", &["m"]).await;
    let m = get(&ch, "q", false).await.expect("a message");
    ack(&ch, m.delivery.delivery_tag, false).await;
    ack(&ch, m.delivery.delivery_tag, false).await;
    assert_eq!(next_close(&mut events).await, (406, "PRECONDITION_FAILED - unknown delivery tag 1".into()));
}

/// Proves basic.nack multiple with requeue puts the messages back in their original order, and
/// they are delivered again with redelivered set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_requeue_redelivers_in_original_order() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let mut c = consume(&ch, "q", "c", Default::default()).await;
    fill(&conn, "q", &["a", "b", "c"]).await;
    let mut last = 0;
    for want in ["a", "b", "c"] {
        let d = next_delivery(&mut c).await;
        assert_eq!(d.data, want.as_bytes());
        assert!(!d.redelivered);
        last = d.delivery_tag;
    }
    within("basic.nack", ch.basic_nack(last, BasicNackOptions { multiple: true, requeue: true }))
        .await
        .expect("nack written");
    for want in ["a", "b", "c"] {
        let d = next_delivery(&mut c).await;
        assert_eq!(d.data, want.as_bytes());
        assert!(d.redelivered, "{want} must be flagged redelivered");
        ack(&ch, d.delivery_tag, false).await;
    }
    assert_eq!(queue_counts(&ch, "q").await, (0, 1));
}

/// Proves basic.reject with requeue redelivers the message (redelivered set, ahead of later
/// messages), and without requeue drops it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_with_and_without_requeue() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    qos(&ch, 2, false).await;
    let mut c = consume(&ch, "q", "c", Default::default()).await;
    fill(&conn, "q", &["drop", "keep", "later"]).await;
    let dropped = next_delivery(&mut c).await;
    let kept = next_delivery(&mut c).await;
    assert_eq!((dropped.data.as_slice(), kept.data.as_slice()), (&b"drop"[..], &b"keep"[..]));

    within("basic.reject", ch.basic_reject(dropped.delivery_tag, BasicRejectOptions { requeue: false }))
        .await
        .expect("reject written");
    let d = next_delivery(&mut c).await;
    assert_eq!(d.data, b"later");
    assert!(!d.redelivered);
    within("basic.reject", ch.basic_reject(kept.delivery_tag, BasicRejectOptions { requeue: true }))
        .await
        .expect("reject written");
    let again = next_delivery(&mut c).await;
    assert_eq!(again.data, b"keep");
    assert!(again.redelivered);
    ack(&ch, d.delivery_tag, false).await;
    ack(&ch, again.delivery_tag, false).await;
    within("channel.close", ch.close(200, "bye")).await.expect("close");

    let probe = open_channel(&conn).await;
    assert_eq!(queue_counts(&probe, "q").await, (0, 0), "the rejected message must not come back");
}

/// Proves basic.nack without requeue discards every message up to the tag (multiple).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_without_requeue_discards() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    fill(&conn, "q", &["1", "2", "3"]).await;
    for _ in 0..3 {
        get(&ch, "q", false).await.expect("a message");
    }
    within("basic.nack", ch.basic_nack(2, BasicNackOptions { multiple: true, requeue: false }))
        .await
        .expect("nack written");
    within("channel.close", ch.close(200, "bye")).await.expect("close");
    let ch = open_channel(&conn).await;
    assert_eq!(drain(&ch, "q").await, bodies(&["3"]));
}

/// Proves basic.recover (requeue=true) is answered with recover-ok and redelivers every unacked
/// message, in order, flagged redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_redelivers_unacked() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let mut c = consume(&ch, "q", "c", Default::default()).await;
    fill(&conn, "q", &["a", "b"]).await;
    assert_eq!(next_delivery(&mut c).await.data, b"a");
    assert_eq!(next_delivery(&mut c).await.data, b"b");
    within("basic.recover", ch.basic_recover(BasicRecoverOptions { requeue: true })).await.expect("basic.recover-ok");
    for want in ["a", "b"] {
        let d = next_delivery(&mut c).await;
        assert_eq!(d.data, want.as_bytes());
        assert!(d.redelivered);
        ack(&ch, d.delivery_tag, false).await;
    }
    assert_eq!(queue_counts(&ch, "q").await, (0, 1));
}

/// Proves basic.recover-async (no reply) also redelivers every unacked message, flagged
/// redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_async_redelivers_unacked() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let mut c = consume(&ch, "q", "c", Default::default()).await;
    fill(&conn, "q", &["a"]).await;
    assert_eq!(next_delivery(&mut c).await.data, b"a");
    within("basic.recover-async", ch.basic_recover_async(BasicRecoverAsyncOptions { requeue: true }))
        .await
        .expect("recover-async written");
    let d = next_delivery(&mut c).await;
    assert_eq!(d.data, b"a");
    assert!(d.redelivered);
}

/// Proves a no_ack consumer's deliveries are settled on delivery: closing the channel requeues
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ack_consumer_needs_no_acks() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let mut c = consume(&ch, "q", "c", BasicConsumeOptions { no_ack: true, ..Default::default() }).await;
    fill(&conn, "q", &["1", "2"]).await;
    assert_eq!(next_delivery(&mut c).await.data, b"1");
    assert_eq!(next_delivery(&mut c).await.data, b"2");
    within("channel.close", ch.close(200, "bye")).await.expect("close");
    let probe = open_channel(&conn).await;
    assert_eq!(queue_counts(&probe, "q").await, (0, 0));
}

/// Proves deleting a queue that has a consumer sends that consumer basic.cancel
/// (consumer_cancel_notify): lapin ends the consumer's stream and marks it cancelled, and the
/// consumer's channel stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_consumed_queue_cancels_its_consumer() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let mut c = consume(&ch, "q", "c", Default::default()).await;
    fill(&conn, "q", &["m"]).await;
    let d = next_delivery(&mut c).await;
    assert_eq!(d.data, b"m");

    let other = open_channel(&conn).await;
    let deleted = within("queue.delete", other.queue_delete("q", QueueDeleteOptions::default())).await.expect("delete");
    assert_eq!(deleted, 0, "the one message is unacked, not ready");
    assert!(
        within("the consumer stream to end", c.next()).await.is_none(),
        "basic.cancel from the broker ends the stream"
    );
    assert_eq!(c.state(), ConsumerState::Canceled);
    declare_queue(&ch, "channel-still-open").await;
}
