//! lapin against the real binary: publisher confirms, mandatory returns, transactions, message
//! properties and body sizes that span frames.

mod common;

use common::*;
use lapin::options::{BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};
use lapin::BasicProperties;

/// Proves confirm.select is answered with select-ok and every publish on a confirm channel is
/// acked (lapin sees an ack, with no returned message, for each of 20 publishes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_ack_every_publish() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    assert!(ch.status().confirm());
    declare_queue(&ch, "q").await;
    let mut pending = Vec::new();
    for i in 0..20 {
        let body = format!("m{i}");
        pending.push(
            within(
                "basic.publish",
                ch.basic_publish("", "q", BasicPublishOptions::default(), body.as_bytes(), BasicProperties::default()),
            )
            .await
            .expect("publish"),
        );
    }
    for confirm in pending {
        let c = within("publisher confirm", confirm).await.expect("confirm");
        assert_eq!(c, Confirmation::Ack(None));
    }
    assert_eq!(queue_counts(&ch, "q").await, (20, 0));
}

/// Proves a mandatory publish that routes nowhere comes back as basic.return with 312 NO_ROUTE
/// before its confirm: lapin attaches the returned message to the ack only if the return came
/// first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_returns_312_before_the_ack() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    let props = BasicProperties::default().with_message_id("m-1".into());
    let c = publish_with(
        &ch,
        "amq.direct",
        "nobody-bound",
        BasicPublishOptions { mandatory: true, ..Default::default() },
        b"lost",
        props.clone(),
    )
    .await;
    assert!(c.is_ack(), "{c:?}");
    let returned = c.take_message().expect("basic.return must arrive before the ack");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.exchange.as_str(), "amq.direct");
    assert_eq!(returned.delivery.routing_key.as_str(), "nobody-bound");
    assert_eq!(returned.delivery.data, b"lost");
    assert_eq!(returned.delivery.properties, props);

    // Not mandatory: dropped silently, still acked.
    let c = publish_confirmed(&ch, "amq.direct", "nobody-bound", b"x", Default::default()).await;
    assert_eq!(c, Confirmation::Ack(None));
}

/// Proves tx.select/commit/rollback: rolled-back publishes are never routed, committed ones are,
/// and a rolled-back ack does not happen (the message is redelivered when the channel closes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_and_rollback() {
    let server = start_server();
    let conn = connect(&server).await;
    let probe = open_channel(&conn).await;
    declare_queue(&probe, "q").await;
    let tx = open_channel(&conn).await;
    within("tx.select", tx.tx_select()).await.expect("tx.select-ok");

    publish(&tx, "", "q", b"rolled back 1").await;
    publish(&tx, "", "q", b"rolled back 2").await;
    within("tx.rollback", tx.tx_rollback()).await.expect("tx.rollback-ok");
    assert_eq!(queue_counts(&probe, "q").await, (0, 0));

    publish(&tx, "", "q", b"committed").await;
    assert_eq!(queue_counts(&probe, "q").await, (0, 0), "nothing is routed before commit");
    within("tx.commit", tx.tx_commit()).await.expect("tx.commit-ok");
    assert_eq!(queue_counts(&probe, "q").await, (1, 0));

    let m = get(&tx, "q", false).await.expect("the committed message");
    assert_eq!(m.delivery.data, b"committed");
    within("basic.ack", tx.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())).await.expect("ack written");
    within("tx.rollback", tx.tx_rollback()).await.expect("tx.rollback-ok");
    within("channel.close", tx.close(200, "bye")).await.expect("close");
    let m = get(&probe, "q", true).await.expect("the rolled-back ack left the message unacked, so it is back");
    assert_eq!(m.delivery.data, b"committed");
    assert!(m.delivery.redelivered);
}

/// Proves an ack inside a committed transaction settles the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_committed_ack_settles() {
    let server = start_server();
    let conn = connect(&server).await;
    let probe = open_channel(&conn).await;
    declare_queue(&probe, "q").await;
    let pc = confirm_channel(&conn).await;
    publish_confirmed(&pc, "", "q", b"m", Default::default()).await;
    let tx = open_channel(&conn).await;
    within("tx.select", tx.tx_select()).await.expect("tx.select-ok");
    let m = get(&tx, "q", false).await.expect("a message");
    within("basic.ack", tx.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())).await.expect("ack written");
    within("tx.commit", tx.tx_commit()).await.expect("tx.commit-ok");
    within("channel.close", tx.close(200, "bye")).await.expect("close");
    assert_eq!(queue_counts(&probe, "q").await, (0, 0));
}

/// Proves confirm.select on a transactional channel is refused with 406 and RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_select_on_tx_channel_is_406() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    within("tx.select", ch.tx_select()).await.expect("tx.select-ok");
    let r = within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await;
    assert_eq!(expect_reply(r), (406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode".into()));
}

/// Proves tx.select on a confirm channel is refused with 406 and RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_select_on_confirm_channel_is_406() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    let r = within("tx.select", ch.tx_select()).await;
    assert_eq!(expect_reply(r), (406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode".into()));
}

/// Proves tx.commit on a channel that never selected tx is refused with 406 and RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_without_select_is_406() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = open_channel(&conn).await;
    let r = within("tx.commit", ch.tx_commit()).await;
    assert_eq!(expect_reply(r), (406, "PRECONDITION_FAILED - channel is not transactional".into()));
}

/// Every field type lapin can send, nested in tables and arrays.
fn rich_headers() -> FieldTable {
    let mut inner = FieldTable::default();
    inner.insert("deep".into(), AMQPValue::LongString("yes".into()));
    inner.insert("n".into(), AMQPValue::LongLongInt(-9_000_000_000));
    let mut nested = FieldTable::default();
    nested.insert("inner".into(), AMQPValue::FieldTable(inner.clone()));
    nested.insert(
        "list".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongInt(1),
            AMQPValue::LongString("two".into()),
            AMQPValue::FieldTable(inner),
        ])),
    );
    let mut h = FieldTable::default();
    h.insert("bool".into(), AMQPValue::Boolean(true));
    h.insert("i8".into(), AMQPValue::ShortShortInt(-8));
    h.insert("u8".into(), AMQPValue::ShortShortUInt(200));
    h.insert("i16".into(), AMQPValue::ShortInt(-16_000));
    h.insert("u16".into(), AMQPValue::ShortUInt(60_000));
    h.insert("i32".into(), AMQPValue::LongInt(-2_000_000_000));
    h.insert("u32".into(), AMQPValue::LongUInt(4_000_000_000));
    h.insert("i64".into(), AMQPValue::LongLongInt(i64::MIN));
    h.insert("f32".into(), AMQPValue::Float(1.5));
    h.insert("f64".into(), AMQPValue::Double(-2.25));
    h.insert("decimal".into(), AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 12345 }));
    h.insert("string".into(), AMQPValue::LongString(LongString::from("héllo wörld")));
    h.insert("timestamp".into(), AMQPValue::Timestamp(1_700_000_000));
    h.insert("bytes".into(), AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 255])));
    h.insert("void".into(), AMQPValue::Void);
    h.insert("nested".into(), AMQPValue::FieldTable(nested));
    h
}

/// Proves all 14 basic properties, including a headers table with every field type nested in
/// tables and arrays, arrive unchanged on basic.get and on basic.deliver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_properties_round_trip() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(rich_headers())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-42".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_123)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("interop".into())
        .with_cluster_id("cluster-a".into());
    publish_confirmed(&ch, "", "q", b"{}", props.clone()).await;
    publish_confirmed(&ch, "", "q", b"{}", props.clone()).await;

    let m = get(&ch, "q", true).await.expect("a message");
    assert_eq!(m.delivery.properties, props);
    assert_eq!(m.delivery.data, b"{}");

    let mut c = within(
        "basic.consume",
        ch.basic_consume(
            "q",
            "",
            lapin::options::BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("consume");
    let d = next_delivery(&mut c).await;
    assert_eq!(d.properties, props);
}

/// Proves a user_id property that is not the authenticated user is refused with 406 and
/// RabbitMQ's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_user_id_is_406() {
    let server = start_server();
    let conn = connect(&server).await;
    let mut events = events(&conn);
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    within(
        "basic.publish",
        ch.basic_publish(
            "",
            "q",
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_user_id("mallory".into()),
        ),
    )
    .await
    .expect("publish written");
    assert_eq!(
        next_close(&mut events).await,
        (406, "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'".into())
    );
}

/// Proves bodies of 0 bytes, 1 byte, frame_max + 1 bytes (split across body frames) and 1 MiB
/// arrive byte for byte, through basic.get and basic.deliver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_sizes_round_trip() {
    let server = start_server();
    let conn = connect(&server).await;
    let ch = confirm_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let sizes = [0usize, 1, 131_072 + 1, 1024 * 1024];
    let make = |n: usize| -> Vec<u8> { (0..n).map(|i| (i % 251) as u8).collect() };
    for &n in &sizes {
        publish_confirmed(&ch, "", "q", &make(n), Default::default()).await;
    }
    for &n in &sizes {
        let m = get(&ch, "q", true).await.expect("a message");
        assert_eq!(m.delivery.data.len(), n);
        assert!(m.delivery.data == make(n), "body of {n} bytes differs");
    }
    for &n in &sizes {
        publish_confirmed(&ch, "", "q", &make(n), Default::default()).await;
    }
    let mut c = within(
        "basic.consume",
        ch.basic_consume(
            "q",
            "",
            lapin::options::BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("consume");
    for &n in &sizes {
        let d = next_delivery(&mut c).await;
        assert_eq!(d.data.len(), n);
        assert!(d.data == make(n), "delivered body of {n} bytes differs");
    }
}
