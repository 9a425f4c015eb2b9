//! lapin against the real binary: queue.declare (server-named, passive, exclusive, reserved names,
//! equivalence, arguments), queue.bind/unbind, queue.purge and queue.delete.

mod common;

use common::*;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;

async fn declare(
    ch: &Channel,
    name: &str,
    options: QueueDeclareOptions,
    arguments: FieldTable,
) -> lapin::Result<lapin::Queue> {
    within("queue.declare", ch.queue_declare(name, options, arguments)).await
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions { passive: true, ..Default::default() }
}

async fn delete(ch: &Channel, name: &str, options: QueueDeleteOptions) -> lapin::Result<u32> {
    within("queue.delete", ch.queue_delete(name, options)).await
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, routing_key: &str) -> lapin::Result<()> {
    within(
        "queue.bind",
        ch.queue_bind(queue, exchange, routing_key, QueueBindOptions::default(), FieldTable::default()),
    )
    .await
}

/// Proves an empty name gets a server-generated `amq.gen-` name (22 more characters, unique), with
/// zero messages and consumers in declare-ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queue() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let a = declare(&ch, "", QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    let b = declare(&ch, "", QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    for q in [&a, &b] {
        let name = q.name().as_str();
        assert!(name.starts_with("amq.gen-"), "{name}");
        assert_eq!(name.len(), "amq.gen-".len() + 22, "{name}");
        assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
    }
    assert_ne!(a.name(), b.name());
    let pc = confirm_channel(&conn).await;
    publish_confirmed(&pc, "", a.name().as_str(), b"to a", Default::default()).await;
    assert_eq!(queue_counts(&ch, a.name().as_str()).await, (1, 0));
}

/// Proves a passive declare of a missing queue closes the channel with 404 and RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_missing_queue_is_404() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let r = declare(&ch, "x", passive(), FieldTable::default()).await;
    assert_eq!(expect_reply(r), (404, "NOT_FOUND - no queue 'x' in vhost '/'".into()));
}

/// Proves a passive declare reports the ready message count and consumer count of a live queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_reports_counts() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let pc = confirm_channel(&conn).await;
    for body in ["1", "2", "3"] {
        publish_confirmed(&pc, "", "q", body.as_bytes(), Default::default()).await;
    }
    assert_eq!(queue_counts(&ch, "q").await, (3, 0));
    let again = declare(&ch, "q", QueueDeclareOptions::default(), FieldTable::default()).await.expect("redeclare");
    assert_eq!((again.message_count(), again.consumer_count()), (3, 0));
}

/// Proves an exclusive queue is locked to its connection: another connection's declare, passive
/// declare and basic.get are refused with 405 RESOURCE_LOCKED and RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_from_another_connection_is_405() {
    let server = start_server();
    let owner = connect(&server).await;
    let och = open_channel(&owner).await;
    declare(&och, "ex", QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("declare exclusive");

    let locked = (
        405,
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'ex' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.".to_owned(),
    );
    let other = connect(&server).await;
    let ch = open_channel(&other).await;
    let r = declare(&ch, "ex", QueueDeclareOptions::default(), FieldTable::default()).await;
    assert_eq!(expect_reply(r), locked);
    let ch = open_channel(&other).await;
    let r = declare(&ch, "ex", passive(), FieldTable::default()).await;
    assert_eq!(expect_reply(r), locked);
    let ch = open_channel(&other).await;
    let r = within("basic.get", ch.basic_get("ex", Default::default())).await;
    assert_eq!(expect_reply(r), locked);

    // The owner still uses it freely.
    assert_eq!(queue_counts(&och, "ex").await, (0, 0));
}

/// Proves an exclusive queue is deleted when its connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_goes_with_its_connection() {
    let server = start_server();
    let owner = connect(&server).await;
    let och = open_channel(&owner).await;
    declare(&och, "ex", QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("declare exclusive");
    within("connection.close", owner.close(200, "bye")).await.expect("close");

    let other = connect(&server).await;
    let ch = open_channel(&other).await;
    let r = declare(&ch, "ex", passive(), FieldTable::default()).await;
    assert_eq!(expect_reply(r), (404, "NOT_FOUND - no queue 'ex' in vhost '/'".into()));
}

/// Proves a queue name with the reserved `amq.` prefix is refused with 403 and RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_prefix_is_403() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let r = declare(&ch, "amq.mine", QueueDeclareOptions::default(), FieldTable::default()).await;
    assert_eq!(
        expect_reply(r),
        (403, "ACCESS_REFUSED - queue name 'amq.mine' contains reserved prefix 'amq.*'".into())
    );
}

/// Proves a redeclaration that differs in durable, or in an argument RabbitMQ compares, is refused
/// with 406 and RabbitMQ's `inequivalent arg` text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_equivalence_mismatch_is_406() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let mut ttl = FieldTable::default();
    ttl.insert("x-message-ttl".into(), AMQPValue::LongInt(1000));
    declare(&ch, "q", QueueDeclareOptions::default(), ttl.clone()).await.expect("declare");

    let r = declare(&ch, "q", QueueDeclareOptions { durable: true, ..Default::default() }, ttl.clone()).await;
    assert_eq!(
        expect_reply(r),
        (
            406,
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'".into()
        )
    );

    let ch = open_channel(&conn).await;
    let mut other_ttl = FieldTable::default();
    other_ttl.insert("x-message-ttl".into(), AMQPValue::LongInt(2000));
    let r = declare(&ch, "q", QueueDeclareOptions::default(), other_ttl).await;
    assert_eq!(
        expect_reply(r),
        (
            406,
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received the value '2000' of type 'signedint' but current is the value '1000' of type 'signedint'".into()
        )
    );

    let ch = open_channel(&conn).await;
    declare(&ch, "q", QueueDeclareOptions::default(), ttl).await.expect("the original declaration still matches");
}

/// Proves a queue argument of the wrong type is refused at declare with 406 and RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_queue_argument_is_406() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongString("ten".into()));
    let r = declare(&ch, "q", QueueDeclareOptions::default(), args).await;
    assert_eq!(
        expect_reply(r),
        (
            406,
            "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'q' in vhost '/': {unacceptable_type,longstr}"
                .into()
        )
    );
}

/// Proves queue.bind routes only the bound routing keys, and queue.unbind removes exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_and_unbind_with_routing_keys() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    bind(&ch, "q", "amq.direct", "k1").await.expect("bind k1");
    bind(&ch, "q", "amq.direct", "k2").await.expect("bind k2");
    let pc = confirm_channel(&conn).await;
    for key in ["k1", "k2", "k3"] {
        publish_confirmed(&pc, "amq.direct", key, key.as_bytes(), Default::default()).await;
    }
    assert_eq!(drain(&ch, "q").await, bodies(&["k1", "k2"]));

    within("queue.unbind", ch.queue_unbind("q", "amq.direct", "k1", FieldTable::default())).await.expect("unbind k1");
    for key in ["k1", "k2"] {
        publish_confirmed(&pc, "amq.direct", key, key.as_bytes(), Default::default()).await;
    }
    assert_eq!(drain(&ch, "q").await, bodies(&["k2"]));
}

/// Proves binding to a missing exchange or a missing queue is refused with 404 and RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_to_missing_exchange_or_queue_is_404() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let r = bind(&ch, "q", "nope", "k").await;
    assert_eq!(expect_reply(r), (404, "NOT_FOUND - no exchange 'nope' in vhost '/'".into()));
    let ch = open_channel(&conn).await;
    let r = bind(&ch, "nope", "amq.direct", "k").await;
    assert_eq!(expect_reply(r), (404, "NOT_FOUND - no queue 'nope' in vhost '/'".into()));
}

/// Proves queue.purge removes the ready messages and returns how many it removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_returns_count() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let pc = confirm_channel(&conn).await;
    for body in ["1", "2", "3"] {
        publish_confirmed(&pc, "", "q", body.as_bytes(), Default::default()).await;
    }
    let purged = within("queue.purge", ch.queue_purge("q", Default::default())).await.expect("purge");
    assert_eq!(purged, 3);
    assert_eq!(queue_counts(&ch, "q").await, (0, 0));
    let purged = within("queue.purge", ch.queue_purge("q", Default::default())).await.expect("purge");
    assert_eq!(purged, 0);
}

/// Proves queue.delete if-unused is refused with 406 while the queue has a consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_is_406_with_a_consumer() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let _consumer =
        within("basic.consume", ch.basic_consume("q", "c", BasicConsumeOptions::default(), FieldTable::default()))
            .await
            .expect("consume");
    let other = open_channel(&conn).await;
    let r = delete(&other, "q", QueueDeleteOptions { if_unused: true, ..Default::default() }).await;
    assert_eq!(expect_reply(r), (406, "PRECONDITION_FAILED - queue 'q' in vhost '/' in use".into()));
    assert_eq!(queue_counts(&ch, "q").await, (0, 1));
}

/// Proves queue.delete if-empty is refused with 406 while the queue holds messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_empty_is_406_with_messages() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let pc = confirm_channel(&conn).await;
    publish_confirmed(&pc, "", "q", b"m", Default::default()).await;
    let r = delete(&ch, "q", QueueDeleteOptions { if_empty: true, ..Default::default() }).await;
    assert_eq!(expect_reply(r), (406, "PRECONDITION_FAILED - queue 'q' in vhost '/' not empty".into()));
    let ch = open_channel(&conn).await;
    assert_eq!(queue_counts(&ch, "q").await, (1, 0));
}

/// Proves a plain queue.delete returns the number of messages deleted with the queue, the queue is
/// gone afterwards, and deleting a missing queue answers delete-ok with 0 (RabbitMQ compat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_returns_count() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let pc = confirm_channel(&conn).await;
    publish_confirmed(&pc, "", "q", b"1", Default::default()).await;
    publish_confirmed(&pc, "", "q", b"2", Default::default()).await;
    assert_eq!(delete(&ch, "q", QueueDeleteOptions::default()).await.expect("delete"), 2);
    assert_eq!(delete(&ch, "q", QueueDeleteOptions::default()).await.expect("delete of a missing queue"), 0);
    let r = declare(&ch, "q", passive(), FieldTable::default()).await;
    assert_eq!(expect_reply(r), (404, "NOT_FOUND - no queue 'q' in vhost '/'".into()));
}

/// Proves an auto-delete queue survives until it has had a consumer, and is deleted when its last
/// consumer is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_with_its_last_consumer() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare(&ch, "auto", QueueDeclareOptions { auto_delete: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("declare");
    assert_eq!(queue_counts(&ch, "auto").await, (0, 0));
    // lapin cancels a consumer when its last handle drops, so both are kept alive.
    let mut consumers = Vec::new();
    for tag in ["c1", "c2"] {
        consumers.push(
            within(
                "basic.consume",
                ch.basic_consume("auto", tag, BasicConsumeOptions::default(), FieldTable::default()),
            )
            .await
            .expect("consume"),
        );
    }
    within("basic.cancel", ch.basic_cancel("c1", Default::default())).await.expect("cancel c1");
    assert_eq!(queue_counts(&ch, "auto").await, (0, 1));
    within("basic.cancel", ch.basic_cancel("c2", Default::default())).await.expect("cancel c2");
    let r = declare(&ch, "auto", passive(), FieldTable::default()).await;
    assert_eq!(expect_reply(r), (404, "NOT_FOUND - no queue 'auto' in vhost '/'".into()));
}
