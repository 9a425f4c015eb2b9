//! lapin against the real binary: connection and channel lifecycle, how channel errors and
//! connection errors reach the client, access.request and channel.flow.

mod common;

use common::*;
use lapin::options::{AccessRequestOptions, ChannelFlowOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{ChannelState, ConnectionState, ErrorKind, ExchangeKind};

/// Proves the handshake completes with lapin (tune values are the server's defaults) and that
/// connection.close is answered with close-ok, leaving the connection closed for lapin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_open_and_close() {
    let server = start_server();
    let conn = connect(&server).await;
    assert_eq!(conn.status().state(), ConnectionState::Connected);
    assert_eq!(conn.status().vhost(), "/");
    assert_eq!(conn.status().username(), "guest");
    assert_eq!(conn.configuration().frame_max(), 131_072);
    assert_eq!(conn.configuration().channel_max(), 2047);
    assert_eq!(conn.configuration().heartbeat(), 60);

    within("connection.close", conn.close(200, "bye")).await.expect("connection.close-ok");
    assert_ne!(conn.status().state(), ConnectionState::Connected);
    let err = within("channel.open on a closed connection", conn.create_channel())
        .await
        .expect_err("a closed connection opens no channel");
    assert!(matches!(err.kind(), ErrorKind::InvalidConnectionState(_)), "{err:?}");
}

/// Proves channels open with distinct ids, channel.close is answered with close-ok, a closed
/// channel refuses further methods locally, and the other channel keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_open_and_close() {
    let server = start_server();
    let conn = connect(&server).await;
    let a = open_channel(&conn).await;
    let b = open_channel(&conn).await;
    assert_ne!(a.id(), b.id());
    assert_eq!(a.status().state(), ChannelState::Connected);

    within("channel.close", a.close(200, "done")).await.expect("channel.close-ok");
    assert_eq!(a.status().state(), ChannelState::Closed);
    let err = within(
        "queue.declare on a closed channel",
        a.queue_declare("q", QueueDeclareOptions::default(), FieldTable::default()),
    )
    .await
    .expect_err("a closed channel sends nothing");
    assert!(matches!(err.kind(), ErrorKind::InvalidChannelState(..)), "{err:?}");

    let q = declare_queue(&b, "still-works").await;
    assert_eq!(q.name().as_str(), "still-works");
    assert_eq!(conn.status().state(), ConnectionState::Connected);
}

/// Proves a soft error (404 on a passive declare) closes only its channel: the connection and its
/// other channels stay usable, as RabbitMQ does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_error_closes_only_that_channel() {
    let server = start_server();
    let conn = connect(&server).await;
    let a = open_channel(&conn).await;
    let b = open_channel(&conn).await;
    let r = within(
        "passive queue.declare",
        a.queue_declare("missing", QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()),
    )
    .await;
    assert_eq!(expect_reply(r), (404, "NOT_FOUND - no queue 'missing' in vhost '/'".into()));
    assert_ne!(a.status().state(), ChannelState::Connected);
    declare_queue(&b, "after-error").await;
    let c = open_channel(&conn).await;
    declare_queue(&c, "on-a-new-channel").await;
    assert_eq!(conn.status().state(), ConnectionState::Connected);
}

/// Proves a hard error (an unknown exchange type) closes the whole connection with its reply code,
/// and every channel of it stops working. RabbitMQ 4 answers an unknown type with
/// `PRECONDITION_FAILED - unknown exchange type 'x-nope'` on the channel (3.x: 503 with the same
/// text on the connection); this test pins RabbitMQ 4's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_exchange_type_is_refused_as_rabbitmq_does() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let r = within(
        "exchange.declare",
        ch.exchange_declare("x", ExchangeKind::Custom("x-nope".into()), Default::default(), FieldTable::default()),
    )
    .await;
    assert_eq!(expect_reply(r), (406, "PRECONDITION_FAILED - unknown exchange type 'x-nope'".into()));
}

/// Proves a connection-level error (immediate=true, 540 NOT_IMPLEMENTED) reaches lapin as the
/// reason of the connection.close, and every channel of that connection then fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_error_closes_every_channel() {
    let server = start_server();
    let conn = connect(&server).await;
    let mut events = events(&conn);
    let a = open_channel(&conn).await;
    let b = open_channel(&conn).await;
    declare_queue(&a, "q").await;
    within(
        "basic.publish immediate",
        a.basic_publish(
            "",
            "q",
            lapin::options::BasicPublishOptions { immediate: true, ..Default::default() },
            b"x",
            Default::default(),
        ),
    )
    .await
    .expect("publish frames written");
    assert_eq!(next_close(&mut events).await, (540, "NOT_IMPLEMENTED - immediate=true".into()));
    assert_ne!(conn.status().state(), ConnectionState::Connected);
    for ch in [&a, &b] {
        let err = within(
            "queue.declare after the connection closed",
            ch.queue_declare("q2", QueueDeclareOptions::default(), FieldTable::default()),
        )
        .await
        .expect_err("the connection is gone");
        match err.kind() {
            ErrorKind::InvalidChannelState(..) => {}
            ErrorKind::ProtocolError(e) => assert_eq!(e.get_id(), 540, "{err:?}"),
            other => panic!("unexpected error {other:?}"),
        }
    }
}

/// Proves access.request (deprecated, still sent by old clients) is answered with request-ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_request_is_answered() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    within("access.request", ch.access_request("/data", AccessRequestOptions::default()))
        .await
        .expect("access.request-ok");
    declare_queue(&ch, "after-access-request").await;
}

/// Proves channel.flow active=true is answered with flow-ok active=true and deliveries continue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_active_true_is_acknowledged() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let active =
        within("channel.flow", ch.channel_flow(ChannelFlowOptions { active: true })).await.expect("channel.flow-ok");
    assert!(active);
    declare_queue(&ch, "q").await;
    let pc = confirm_channel(&conn).await;
    publish_confirmed(&pc, "", "q", b"m", Default::default()).await;
    let mut consumer = within("basic.consume", ch.basic_consume("q", "", Default::default(), FieldTable::default()))
        .await
        .expect("basic.consume");
    assert_eq!(next_delivery(&mut consumer).await.data, b"m");
}

/// Proves channel.flow active=false from a client is refused as RabbitMQ refuses it (RabbitMQ
/// never implemented client-initiated flow: `NOT_IMPLEMENTED - active=false`, a connection error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_active_false_is_not_implemented_as_in_rabbitmq() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let r = within("channel.flow", ch.channel_flow(ChannelFlowOptions { active: false })).await;
    assert_eq!(expect_reply(r), (540, "NOT_IMPLEMENTED - active=false".into()));
}
