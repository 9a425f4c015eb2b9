//! lapin against the real binary: routing through fanout, topic and headers exchanges, alternate
//! exchanges, and RabbitMQ's direct reply-to.

mod common;

use common::*;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

async fn declare_exchange(ch: &Channel, name: &str, kind: ExchangeKind, arguments: FieldTable) {
    within("exchange.declare", ch.exchange_declare(name, kind, ExchangeDeclareOptions::default(), arguments))
        .await
        .unwrap_or_else(|e| panic!("exchange.declare {name}: {e}"));
}

async fn bind_with(ch: &Channel, queue: &str, exchange: &str, routing_key: &str, args: FieldTable) {
    within("queue.bind", ch.queue_bind(queue, exchange, routing_key, QueueBindOptions::default(), args))
        .await
        .unwrap_or_else(|e| panic!("queue.bind {queue} to {exchange}: {e}"));
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.into())
}

/// Proves a fanout exchange copies each message to every bound queue, ignoring the routing key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_copies_to_every_queue() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    for q in ["f1", "f2", "f3"] {
        declare_queue(&ch, q).await;
        bind_with(&ch, q, "amq.fanout", "", FieldTable::default()).await;
    }
    publish_confirmed(&ch, "amq.fanout", "any-key", b"all", Default::default()).await;
    for q in ["f1", "f2", "f3"] {
        assert_eq!(drain(&ch, q).await, bodies(&["all"]), "{q}");
    }
}

/// Proves topic bindings match `*` as exactly one word and `#` as zero or more words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_wildcards() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    let bindings =
        [("star", "stock.*.nyse"), ("hash", "stock.#"), ("tail", "#.nyse"), ("exact", "stock.usd.nyse"), ("all", "#")];
    for (q, key) in bindings {
        declare_queue(&ch, q).await;
        bind_with(&ch, q, "amq.topic", key, FieldTable::default()).await;
    }
    for key in ["stock.usd.nyse", "stock.eur.gbp.nyse", "stock", "bond.nyse", "nyse", "other"] {
        publish_confirmed(&ch, "amq.topic", key, key.as_bytes(), Default::default()).await;
    }
    assert_eq!(drain(&ch, "star").await, bodies(&["stock.usd.nyse"]));
    assert_eq!(drain(&ch, "hash").await, bodies(&["stock.usd.nyse", "stock.eur.gbp.nyse", "stock"]));
    assert_eq!(drain(&ch, "tail").await, bodies(&["stock.usd.nyse", "stock.eur.gbp.nyse", "bond.nyse", "nyse"]));
    assert_eq!(drain(&ch, "exact").await, bodies(&["stock.usd.nyse"]));
    assert_eq!(
        drain(&ch, "all").await,
        bodies(&["stock.usd.nyse", "stock.eur.gbp.nyse", "stock", "bond.nyse", "nyse", "other"])
    );
}

/// Proves headers bindings with x-match=all need every bound header to match and x-match=any
/// needs one, with the routing key ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_x_match_all_and_any() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    declare_queue(&ch, "all").await;
    declare_queue(&ch, "any").await;
    let bound = |mode: &str| table(&[("x-match", s(mode)), ("format", s("pdf")), ("type", s("report"))]);
    bind_with(&ch, "all", "amq.headers", "", bound("all")).await;
    bind_with(&ch, "any", "amq.headers", "", bound("any")).await;

    let send = |headers: FieldTable| BasicProperties::default().with_headers(headers);
    let both = table(&[("format", s("pdf")), ("type", s("report")), ("extra", s("x"))]);
    let one = table(&[("format", s("pdf")), ("type", s("log"))]);
    let none = table(&[("format", s("zip"))]);
    publish_confirmed(&ch, "amq.headers", "ignored", b"both", send(both)).await;
    publish_confirmed(&ch, "amq.headers", "ignored", b"one", send(one)).await;
    publish_confirmed(&ch, "amq.headers", "ignored", b"none", send(none)).await;
    publish_confirmed(&ch, "amq.headers", "ignored", b"no headers", Default::default()).await;

    assert_eq!(drain(&ch, "all").await, bodies(&["both"]));
    assert_eq!(drain(&ch, "any").await, bodies(&["both", "one"]));
}

/// Proves x-match=all ignores `x-` prefixed binding arguments while all-with-x and any-with-x
/// match on them too (RabbitMQ 3.10+).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_x_match_with_x_variants() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    for (q, mode) in [("plain", "all"), ("all-x", "all-with-x"), ("any-x", "any-with-x")] {
        declare_queue(&ch, q).await;
        let args = table(&[("x-match", s(mode)), ("x-tag", s("blue"))]);
        bind_with(&ch, q, "amq.headers", "", args).await;
    }
    let send = |tag: &str| BasicProperties::default().with_headers(table(&[("x-tag", s(tag))]));
    publish_confirmed(&ch, "amq.headers", "", b"blue", send("blue")).await;
    publish_confirmed(&ch, "amq.headers", "", b"red", send("red")).await;
    assert_eq!(
        drain(&ch, "plain").await,
        bodies(&["blue", "red"]),
        "all without -with-x ignores x- arguments, so it matches everything"
    );
    assert_eq!(drain(&ch, "all-x").await, bodies(&["blue"]));
    assert_eq!(drain(&ch, "any-x").await, bodies(&["blue"]));
}

/// Proves a headers binding with an unknown x-match value is refused with 406 and RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_bad_x_match_is_406() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let r = within(
        "queue.bind",
        ch.queue_bind("q", "amq.headers", "", QueueBindOptions::default(), table(&[("x-match", s("some"))])),
    )
    .await;
    assert_eq!(
        expect_reply(r),
        (
            406,
            "PRECONDITION_FAILED - Invalid x-match field value <<\"some\">>; expected all, any, all-with-x, or any-with-x".into()
        )
    );
}

/// Proves a message the exchange cannot route goes to its alternate exchange, and a mandatory
/// publish routed that way is not returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_exchange_catches_unroutable() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    declare_exchange(&ch, "ae", ExchangeKind::Fanout, FieldTable::default()).await;
    declare_exchange(&ch, "main", ExchangeKind::Direct, table(&[("alternate-exchange", s("ae"))])).await;
    declare_queue(&ch, "routed").await;
    declare_queue(&ch, "unrouted").await;
    bind_with(&ch, "routed", "main", "known", FieldTable::default()).await;
    bind_with(&ch, "unrouted", "ae", "", FieldTable::default()).await;

    publish_confirmed(&ch, "main", "known", b"k", Default::default()).await;
    let c = publish_with(
        &ch,
        "main",
        "unknown",
        BasicPublishOptions { mandatory: true, ..Default::default() },
        b"u",
        Default::default(),
    )
    .await;
    assert_eq!(c, Confirmation::Ack(None), "routed via the alternate exchange: no basic.return");
    assert_eq!(drain(&ch, "routed").await, bodies(&["k"]));
    assert_eq!(drain(&ch, "unrouted").await, bodies(&["u"]));
}

/// Proves direct reply-to end to end: the requester consumes `amq.rabbitmq.reply-to` with no_ack,
/// publishes a request with reply_to set, the server sees a rewritten `amq.rabbitmq.reply-to.*`
/// address, and its reply published there reaches the requester with the correlation id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_round_trip() {
    let server = start_server();
    let requester = connect(&server).await;
    let responder = connect(&server).await;
    let rch = open_channel(&responder).await;
    declare_queue(&rch, "rpc").await;
    let mut requests = within(
        "basic.consume rpc",
        rch.basic_consume("rpc", "", BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()),
    )
    .await
    .expect("consume rpc");

    let qch = open_channel(&requester).await;
    let mut replies = within(
        "basic.consume amq.rabbitmq.reply-to",
        qch.basic_consume(
            "amq.rabbitmq.reply-to",
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("consume reply-to");
    within(
        "basic.publish request",
        qch.basic_publish(
            "",
            "rpc",
            BasicPublishOptions::default(),
            b"2+2",
            BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()).with_correlation_id("c-1".into()),
        ),
    )
    .await
    .expect("publish request");

    let req = next_delivery(&mut requests).await;
    assert_eq!(req.data, b"2+2");
    let reply_to = req.properties.reply_to().clone().expect("reply_to survives").to_string();
    assert!(
        reply_to.starts_with("amq.rabbitmq.reply-to."),
        "the broker rewrites reply_to to a routable address, got {reply_to}"
    );
    within(
        "basic.publish reply",
        rch.basic_publish(
            "",
            &reply_to,
            BasicPublishOptions::default(),
            b"4",
            BasicProperties::default().with_correlation_id("c-1".into()),
        ),
    )
    .await
    .expect("publish reply");

    let reply = next_delivery(&mut replies).await;
    assert_eq!(reply.data, b"4");
    assert_eq!(reply.routing_key.as_str(), reply_to);
    assert_eq!(reply.properties.correlation_id().as_ref().map(|c| c.as_str()), Some("c-1"));
}

/// Proves publishing with reply_to `amq.rabbitmq.reply-to` without consuming it first is refused
/// with 406 and RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_without_consumer_is_406() {
    let server = start_server();
    let conn = connect(&server).await;
    let mut events = events(&conn);
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "rpc").await;
    within(
        "basic.publish",
        ch.basic_publish(
            "",
            "rpc",
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
        ),
    )
    .await
    .expect("publish written");
    assert_eq!(next_close(&mut events).await, (406, "PRECONDITION_FAILED - fast reply consumer does not exist".into()));
}

/// Proves consuming `amq.rabbitmq.reply-to` in acknowledgement mode is refused with 406 and
/// RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_with_acks_is_406() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let r = within(
        "basic.consume",
        ch.basic_consume("amq.rabbitmq.reply-to", "", BasicConsumeOptions::default(), FieldTable::default()),
    )
    .await;
    assert_eq!(expect_reply(r), (406, "PRECONDITION_FAILED - reply consumer cannot acknowledge".into()));
}
