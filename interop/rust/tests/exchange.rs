//! lapin against the real binary: exchange.declare (every type, passive, durable, auto-delete,
//! internal, equivalence), exchange.delete and exchange-to-exchange bindings.

mod common;

use common::*;
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions, QueueBindOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};

async fn declare_exchange(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    options: ExchangeDeclareOptions,
) -> lapin::Result<()> {
    within("exchange.declare", ch.exchange_declare(name, kind, options, FieldTable::default())).await
}

fn passive() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { passive: true, ..Default::default() }
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, routing_key: &str) {
    within(
        "queue.bind",
        ch.queue_bind(queue, exchange, routing_key, QueueBindOptions::default(), FieldTable::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("queue.bind {queue} to {exchange}: {e}"));
}

/// Proves each exchange type (direct, fanout, topic, headers) is declared, found again with a
/// passive declare, and accepts an identical redeclaration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_each_type_then_passive() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let kinds = [
        ("x.direct", ExchangeKind::Direct),
        ("x.fanout", ExchangeKind::Fanout),
        ("x.topic", ExchangeKind::Topic),
        ("x.headers", ExchangeKind::Headers),
    ];
    for (name, kind) in &kinds {
        declare_exchange(&ch, name, kind.clone(), Default::default())
            .await
            .unwrap_or_else(|e| panic!("declare {name}: {e}"));
    }
    for (name, kind) in &kinds {
        declare_exchange(&ch, name, kind.clone(), Default::default())
            .await
            .unwrap_or_else(|e| panic!("redeclare {name}: {e}"));
        declare_exchange(&ch, name, ExchangeKind::Direct, passive())
            .await
            .unwrap_or_else(|e| panic!("passive {name}: {e}"));
    }
    for builtin in ["amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"] {
        declare_exchange(&ch, builtin, ExchangeKind::Direct, passive())
            .await
            .unwrap_or_else(|e| panic!("passive {builtin}: {e}"));
    }
}

/// Proves a passive declare of a missing exchange closes the channel with 404 and RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_missing_exchange_is_404() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let r = declare_exchange(&ch, "nope", ExchangeKind::Direct, passive()).await;
    assert_eq!(expect_reply(r), (404, "NOT_FOUND - no exchange 'nope' in vhost '/'".into()));
}

/// Proves a redeclaration that differs in type or durable is refused with 406 and RabbitMQ's
/// `inequivalent arg` text, and that the original exchange is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_equivalence_mismatch_is_406() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    declare_exchange(&ch, "x", ExchangeKind::Direct, durable).await.expect("declare x");

    let r = declare_exchange(&ch, "x", ExchangeKind::Fanout, durable).await;
    assert_eq!(
        expect_reply(r),
        (
            406,
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'".into()
        )
    );

    let ch = open_channel(&conn).await;
    let r = declare_exchange(&ch, "x", ExchangeKind::Direct, Default::default()).await;
    assert_eq!(
        expect_reply(r),
        (
            406,
            "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'x' in vhost '/': received 'false' but current is 'true'".into()
        )
    );

    let ch = open_channel(&conn).await;
    declare_exchange(&ch, "x", ExchangeKind::Direct, durable).await.expect("the original declaration still matches");
}

/// Proves durable and auto-delete exchanges are accepted, and an auto-delete exchange goes away
/// when its last binding is removed (RabbitMQ's rule), while a plain one stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_and_auto_delete_exchanges() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_exchange(
        &ch,
        "x.durable",
        ExchangeKind::Fanout,
        ExchangeDeclareOptions { durable: true, ..Default::default() },
    )
    .await
    .expect("durable");
    declare_exchange(
        &ch,
        "x.auto",
        ExchangeKind::Fanout,
        ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
    )
    .await
    .expect("auto-delete");
    declare_queue(&ch, "q").await;
    bind(&ch, "q", "x.auto", "").await;
    bind(&ch, "q", "x.durable", "").await;
    for x in ["x.auto", "x.durable"] {
        within("queue.unbind", ch.queue_unbind("q", x, "", FieldTable::default())).await.expect("queue.unbind");
    }
    declare_exchange(&ch, "x.durable", ExchangeKind::Fanout, passive())
        .await
        .expect("a durable exchange outlives its bindings");
    let r = declare_exchange(&ch, "x.auto", ExchangeKind::Fanout, passive()).await;
    assert_eq!(expect_reply(r), (404, "NOT_FOUND - no exchange 'x.auto' in vhost '/'".into()));
}

/// Proves publishing to an internal exchange closes the channel with 403 ACCESS_REFUSED, while the
/// exchange still routes what other exchanges forward to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_internal_exchange_is_403() {
    let server = start_server();
    let conn = connect(&server).await;
    let mut events = events(&conn);
    let ch = open_channel(&conn).await;
    declare_exchange(
        &ch,
        "x.internal",
        ExchangeKind::Fanout,
        ExchangeDeclareOptions { internal: true, ..Default::default() },
    )
    .await
    .expect("declare internal");
    declare_exchange(&ch, "x.front", ExchangeKind::Fanout, Default::default()).await.expect("declare front");
    declare_queue(&ch, "q").await;
    bind(&ch, "q", "x.internal", "").await;
    within(
        "exchange.bind",
        ch.exchange_bind("x.internal", "x.front", "", ExchangeBindOptions::default(), FieldTable::default()),
    )
    .await
    .expect("exchange.bind");
    let pc = confirm_channel(&conn).await;
    publish_confirmed(&pc, "x.front", "", b"via front", Default::default()).await;
    assert_eq!(drain(&ch, "q").await, bodies(&["via front"]));

    publish(&pc, "x.internal", "", b"direct").await;
    assert_eq!(
        next_close(&mut events).await,
        (403, "ACCESS_REFUSED - cannot publish to internal exchange 'x.internal' in vhost '/'".into())
    );
    assert_eq!(drain(&ch, "q").await, Vec::<Vec<u8>>::new());
}

/// Proves an exchange name starting with `amq.` cannot be declared: 403 with RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_reserved_prefix_is_403() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let r = declare_exchange(&ch, "amq.mine", ExchangeKind::Direct, Default::default()).await;
    assert_eq!(
        expect_reply(r),
        (403, "ACCESS_REFUSED - exchange name 'amq.mine' contains reserved prefix 'amq.*'".into())
    );
}

/// Proves a built-in `amq.*` exchange cannot be deleted: 403 with RabbitMQ's
/// `deletion of system exchange ... not allowed` text (rabbit_channel:check_exchange_deletion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_system_exchange_is_403() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let r = within("exchange.delete", ch.exchange_delete("amq.direct", ExchangeDeleteOptions::default())).await;
    assert_eq!(
        expect_reply(r),
        (403, "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed".into())
    );
    let ch = open_channel(&conn).await;
    declare_exchange(&ch, "amq.direct", ExchangeKind::Direct, passive()).await.expect("amq.direct is still there");
}

/// Proves the default exchange can be neither bound to nor deleted: 403 with RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_exchange_operations_are_403() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let r = within(
        "queue.bind to the default exchange",
        ch.queue_bind("q", "", "q", QueueBindOptions::default(), FieldTable::default()),
    )
    .await;
    assert_eq!(expect_reply(r), (403, "ACCESS_REFUSED - operation not permitted on the default exchange".into()));
    let ch = open_channel(&conn).await;
    let r = within("exchange.delete of the default exchange", ch.exchange_delete("", ExchangeDeleteOptions::default()))
        .await;
    assert_eq!(expect_reply(r), (403, "ACCESS_REFUSED - operation not permitted on the default exchange".into()));
}

/// Proves exchange.delete with if-unused is refused with 406 while the exchange has bindings,
/// succeeds once they are gone, and deleting a missing exchange succeeds (RabbitMQ compat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_is_406_when_bound() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_exchange(&ch, "x", ExchangeKind::Direct, Default::default()).await.expect("declare");
    declare_queue(&ch, "q").await;
    bind(&ch, "q", "x", "k").await;
    let if_unused = ExchangeDeleteOptions { if_unused: true, ..Default::default() };
    let r = within("exchange.delete", ch.exchange_delete("x", if_unused)).await;
    assert_eq!(expect_reply(r), (406, "PRECONDITION_FAILED - exchange 'x' in vhost '/' in use".into()));

    let ch = open_channel(&conn).await;
    declare_exchange(&ch, "x", ExchangeKind::Direct, passive()).await.expect("still there after the refused delete");
    within("queue.unbind", ch.queue_unbind("q", "x", "k", FieldTable::default())).await.expect("unbind");
    within("exchange.delete", ch.exchange_delete("x", if_unused)).await.expect("unused now");
    let r = declare_exchange(&ch, "x", ExchangeKind::Direct, passive()).await;
    assert_eq!(expect_reply(r), (404, "NOT_FOUND - no exchange 'x' in vhost '/'".into()));

    let ch = open_channel(&conn).await;
    within(
        "exchange.delete of a missing exchange",
        ch.exchange_delete("never-declared", ExchangeDeleteOptions::default()),
    )
    .await
    .expect("RabbitMQ answers delete-ok for a missing exchange");
}

/// Proves exchange.bind routes end to end (source → destination → queue, honouring the binding's
/// routing key) and exchange.unbind stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_bind_and_unbind_route_end_to_end() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    declare_exchange(&ch, "src", ExchangeKind::Direct, Default::default()).await.expect("src");
    declare_exchange(&ch, "dst", ExchangeKind::Fanout, Default::default()).await.expect("dst");
    declare_queue(&ch, "q").await;
    bind(&ch, "q", "dst", "").await;
    within("exchange.bind", ch.exchange_bind("dst", "src", "k", ExchangeBindOptions::default(), FieldTable::default()))
        .await
        .expect("exchange.bind");

    let pc = confirm_channel(&conn).await;
    publish_confirmed(&pc, "src", "k", b"bound", Default::default()).await;
    publish_confirmed(&pc, "src", "other", b"wrong key", Default::default()).await;
    assert_eq!(drain(&ch, "q").await, bodies(&["bound"]));

    within(
        "exchange.unbind",
        ch.exchange_unbind("dst", "src", "k", ExchangeUnbindOptions::default(), FieldTable::default()),
    )
    .await
    .expect("exchange.unbind");
    publish_confirmed(&pc, "src", "k", b"after unbind", Default::default()).await;
    assert_eq!(drain(&ch, "q").await, Vec::<Vec<u8>>::new());
}

/// Proves publishing to a missing exchange closes the channel with 404 and RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_missing_exchange_is_404() {
    let server = start_server();
    let conn = connect(&server).await;
    let mut events = events(&conn);
    let ch = open_channel(&conn).await;
    publish(&ch, "nope", "k", b"x").await;
    assert_eq!(next_close(&mut events).await, (404, "NOT_FOUND - no exchange 'nope' in vhost '/'".into()));
}
