//! Protocol tests: the real `warren-server` binary on a free port, driven by the raw frame client
//! with what real clients cannot send. Each test checks the exact reply code, a reply text in
//! RabbitMQ's shape, and that the connection (or the server) carries on as RabbitMQ's would.
//!
//! Nothing here sleeps to synchronise: every wait is a receive with a deadline.

use std::time::{Duration, Instant};

use amqp_codec::reply::{self, *};
use amqp_codec::*;
use bytes::Bytes;
use testkit::raw::{self, RawClient, Recv};
use testkit::Server;

/// How long any one reply may take; generous because parallel tests share two cores.
const REPLY: Duration = Duration::from_secs(5);
/// How long the server may take to drop a connection it closed: its 3 s wait for close-ok (which
/// it never sees once our framing is broken) plus margin.
const CLOSE: Duration = Duration::from_secs(6);

fn connect(server: &Server) -> RawClient {
    RawClient::connect(server.addr()).expect("connect")
}

/// A connection through the whole handshake as guest on `/`, with the server's tune.
fn logged_in(server: &Server) -> RawClient {
    let mut c = connect(server);
    c.handshake("guest", "guest", "/").expect("handshake");
    c
}

/// Through start-ok and tune-ok with `answer`, then connection.open on `/`.
fn logged_in_tuned(server: &Server, answer: impl FnOnce(&ConnectionTune) -> ConnectionTuneOk) -> RawClient {
    let mut c = connect(server);
    c.start("PLAIN", &raw::plain("guest", "guest")).expect("start");
    c.tune(answer).expect("tune");
    c.open("/").expect("open");
    c
}

fn recv_method(c: &mut RawClient) -> (u16, Method) {
    c.recv_method(REPLY).expect("a method frame from the server")
}

fn assert_text_shape(code: u16, text: &str) {
    let prefix = format!("{} - ", reply::name(code));
    assert!(text.starts_with(&prefix), "reply text {text:?} does not start with {prefix:?}");
}

/// Expects connection.close with `code`, answers close-ok, and expects the socket to close.
fn expect_connection_close(c: &mut RawClient, code: u16) -> ConnectionClose {
    let close = match recv_method(c) {
        (0, Method::ConnectionClose(close)) => close,
        other => panic!("expected connection.close {code}, got {other:?}"),
    };
    assert_eq!(close.reply_code, code, "{close:?}");
    assert_text_shape(code, &close.reply_text);
    // The server may have stopped parsing our bytes (a broken frame leaves it unable to find the
    // next one), so the close-ok may go unread or even fail to send; the socket must close anyway.
    let _ = c.send_method(0, ConnectionCloseOk);
    c.expect_closed(CLOSE).expect("socket closed after connection.close");
    close
}

/// Expects channel.close with `code` on `ch` and answers close-ok.
fn expect_channel_close(c: &mut RawClient, ch: u16, code: u16) -> ChannelClose {
    let close = match recv_method(c) {
        (n, Method::ChannelClose(close)) if n == ch => close,
        other => panic!("expected channel.close {code} on channel {ch}, got {other:?}"),
    };
    assert_eq!(close.reply_code, code, "{close:?}");
    assert_text_shape(code, &close.reply_text);
    c.send_method(ch, ChannelCloseOk).expect("send channel.close-ok");
    close
}

fn declare_queue(c: &mut RawClient, ch: u16, queue: &str) {
    c.send_method(ch, QueueDeclare { queue: queue.into(), ..Default::default() }).expect("send queue.declare");
    match recv_method(c) {
        (n, Method::QueueDeclareOk(ok)) if n == ch && ok.queue == queue => {}
        other => panic!("expected queue.declare-ok for '{queue}', got {other:?}"),
    }
}

/// basic.get with no_ack; the body of the message it returns.
fn get_body(c: &mut RawClient, ch: u16, queue: &str) -> Bytes {
    c.send_method(ch, BasicGet { queue: queue.into(), no_ack: true, ..Default::default() }).expect("send basic.get");
    match recv_method(c) {
        (n, Method::BasicGetOk(_)) if n == ch => {}
        other => panic!("expected basic.get-ok from '{queue}', got {other:?}"),
    }
    c.recv_content(REPLY).expect("content after basic.get-ok")
}

/// Proves a wrong protocol header (another AMQP version, or HTTP) is answered with exactly the
/// header Warren speaks, `AMQP 0 0 9 1`, and the socket is then closed.
#[test]
fn wrong_protocol_header_gets_ours_then_close() {
    let server = Server::start();
    for header in [&b"AMQP\x00\x00\x09\x00"[..], b"HTTP/1.1"] {
        let mut c = connect(&server);
        c.send_raw(header).expect("send header");
        let reply = c.recv_bytes(8, REPLY).expect("a reply");
        assert_eq!(&reply[..], &PROTOCOL_HEADER[..], "reply to {:?}", String::from_utf8_lossy(header));
        c.expect_closed(REPLY).expect("socket closed after the reply");
    }
}

/// Proves the handshake timeout (1 s here) disconnects both a client that sends nothing and one
/// that stops after the protocol header, and not before the timeout.
#[test]
fn handshake_timeout_closes_stalled_sockets() {
    let server = Server::start_with(&["--handshake-timeout", "1"]);
    let t0 = Instant::now();
    let mut silent = connect(&server);
    let mut stalled = connect(&server);
    stalled.send_raw(PROTOCOL_HEADER).expect("send header");
    match recv_method(&mut stalled) {
        (0, Method::ConnectionStart(_)) => {}
        other => panic!("expected connection.start, got {other:?}"),
    }
    silent.expect_closed(REPLY).expect("silent socket closed by the server");
    stalled.expect_closed(REPLY).expect("stalled socket closed by the server");
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(900), "closed after only {waited:?}");
}

/// Proves a wrong password gets connection.close 403 ACCESS_REFUSED with RabbitMQ's text.
#[test]
fn bad_password_is_access_refused() {
    let server = Server::start();
    let mut c = connect(&server);
    c.start("PLAIN", &raw::plain("guest", "wrong")).expect("start");
    let close = expect_connection_close(&mut c, ACCESS_REFUSED);
    assert!(
        close.reply_text.starts_with("ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"),
        "{close:?}"
    );
}

/// Proves a client that does not announce `authentication_failure_close` gets no connection.close
/// for a wrong password, only a closed socket (RabbitMQ's rule: aioamqp would take the close for
/// the connection.tune it waits for).
#[test]
fn bad_password_without_failure_close_capability_just_closes() {
    let server = Server::start();
    let mut c = connect(&server);
    c.start_with(PROTOCOL_HEADER, "PLAIN", &raw::plain("guest", "wrong"), FieldTable::new()).expect("start");
    c.expect_closed(REPLY).expect("socket closed, with no frame first");
}

/// Proves the AMQP 0-9 protocol header (`AMQP 1 1 0 9`, which aioamqp sends) is served as
/// 0-9-1, as RabbitMQ does.
#[test]
fn amqp_0_9_header_is_served_as_0_9_1() {
    let server = Server::start();
    let mut c = connect(&server);
    let start = c.start_with(b"AMQP\x01\x01\x00\x09", "PLAIN", &raw::plain("guest", "guest"), FieldTable::new());
    assert_eq!(start.map(|s| (s.version_major, s.version_minor)).expect("connection.start"), (0, 9));
    c.tune(raw::echo_tune).expect("tune");
    c.open("/").expect("open");
    c.open_channel(1).expect("channel");
}

/// Proves AMQPLAIN logins work (response: a LOGIN/PASSWORD table without its length prefix) and a
/// wrong AMQPLAIN password is refused naming that mechanism.
#[test]
fn amqplain_login() {
    let server = Server::start();
    let mut c = connect(&server);
    let start = c.start("AMQPLAIN", &raw::amqplain("guest", "guest")).expect("start");
    let mechanisms = String::from_utf8_lossy(&start.mechanisms).into_owned();
    assert!(mechanisms.split(' ').any(|m| m == "AMQPLAIN"), "offered: {mechanisms}");
    c.tune(raw::echo_tune).expect("tune after an AMQPLAIN login");
    c.open("/").expect("open");
    c.open_channel(1).expect("channel on the AMQPLAIN connection");

    let mut bad = connect(&server);
    bad.start("AMQPLAIN", &raw::amqplain("guest", "wrong")).expect("start");
    let close = expect_connection_close(&mut bad, ACCESS_REFUSED);
    assert!(
        close.reply_text.starts_with("ACCESS_REFUSED - Login was refused using authentication mechanism AMQPLAIN"),
        "{close:?}"
    );
}

/// Proves connection.open for a vhost that does not exist gets 530 NOT_ALLOWED with RabbitMQ's
/// text, blaming connection.open.
#[test]
fn missing_vhost_is_not_allowed() {
    let server = Server::start();
    let mut c = connect(&server);
    c.start("PLAIN", &raw::plain("guest", "guest")).expect("start");
    c.tune(raw::echo_tune).expect("tune");
    c.send_method(0, ConnectionOpen { virtual_host: "nope".into(), ..Default::default() }).expect("send open");
    let close = expect_connection_close(&mut c, NOT_ALLOWED);
    assert_eq!(close.reply_text, "NOT_ALLOWED - vhost nope not found");
    assert_eq!((close.class_id, close.method_id), (10, 40));
}

/// Proves an 8 KB connection.start-ok whose client-properties nest 1,000 tables deep gets a
/// connection.close naming the nesting (not a crash), and the server then serves a new connection.
#[test]
fn deeply_nested_client_properties_refused() {
    let server = Server::start();
    let mut c = connect(&server);
    c.send_raw(PROTOCOL_HEADER).expect("send header");
    match recv_method(&mut c) {
        (0, Method::ConnectionStart(_)) => {}
        other => panic!("expected connection.start, got {other:?}"),
    }
    let start_ok = deep_start_ok(1000, FRAME_MIN_SIZE as usize);
    c.send_raw(&start_ok).expect("send start-ok");
    let close = expect_connection_close(&mut c, FRAME_ERROR);
    assert!(close.reply_text.contains("nesting"), "{close:?}");
    logged_in(&server).open_channel(1).expect("a new connection after the refused one");
}

/// A connection.start-ok frame of exactly `frame_bytes` whose client_properties are
/// `{"a": {"a": ... {}}}` `depth` tables deep, plus a padding string to reach the size.
fn deep_start_ok(depth: usize, frame_bytes: usize) -> Vec<u8> {
    let build = |pad: usize| {
        let mut t = FieldTable::new();
        for _ in 0..depth {
            let mut outer = FieldTable::new();
            outer.insert("a", FieldValue::Table(t));
            t = outer;
        }
        t.insert("pad", FieldValue::LongStr(Bytes::from(vec![b'x'; pad])));
        let m = ConnectionStartOk {
            client_properties: t,
            mechanism: "PLAIN".into(),
            response: raw::plain("guest", "guest").into(),
            locale: "en_US".into(),
        };
        let mut buf = bytes::BytesMut::new();
        frame::write_method(&mut buf, 0, &m.into()).expect("encodes");
        buf.to_vec()
    };
    let unpadded = build(0).len();
    let frame = build(frame_bytes - unpadded);
    assert_eq!(frame.len(), frame_bytes);
    frame
}

/// Proves the negotiated frame_max (16 KB here, below the server's offer) is enforced from the
/// frame header alone: a frame of frame_max is accepted, and so is one whose payload is frame_max
/// (8 bytes more: RabbitMQ's slack for clients that forget the framing), and a header declaring
/// one byte more gets connection.close 501 although its payload is never sent.
#[test]
fn oversize_frame_refused_from_its_header() {
    let server = Server::start();
    let frame_max = 16 * 1024;
    let mut c = logged_in_tuned(&server, |t| ConnectionTuneOk { frame_max, ..raw::echo_tune(t) });
    c.open_channel(1).expect("channel");
    // A body frame of exactly frame_max bytes (payload + 8 bytes of framing) is allowed.
    let body = vec![1u8; frame_max as usize - 8];
    c.publish(1, "", "no-such-queue", &body).expect("publish at the limit");
    declare_queue(&mut c, 1, "after-big-frame");
    // One body frame whose payload is frame_max (send_body would split it).
    let body = vec![1u8; frame_max as usize];
    let publish = BasicPublish { routing_key: "no-such-queue".into(), ..Default::default() };
    c.send_method(1, publish).expect("publish");
    c.send_header(1, body.len() as u64).expect("header");
    c.send_frame(frame::FRAME_BODY, 1, &body).expect("a body frame of frame_max + 8 bytes");
    declare_queue(&mut c, 1, "after-fudged-frame");

    let mut header = vec![frame::FRAME_BODY, 0, 1];
    header.extend_from_slice(&(frame_max + 1).to_be_bytes());
    c.send_raw(&header).expect("send the frame header only");
    let close = expect_connection_close(&mut c, FRAME_ERROR);
    assert!(close.reply_text.contains(&frame_max.to_string()), "{close:?}");
}

/// Proves a frame whose frame-end octet is not 0xCE gets connection.close 501.
#[test]
fn bad_frame_end_is_frame_error() {
    let server = Server::start();
    let mut c = logged_in(&server);
    let mut open = raw::frame_bytes(frame::FRAME_METHOD, 1, &[0, 20, 0, 10, 0]);
    *open.last_mut().expect("a frame has an end octet") = 0x00;
    c.send_raw(&open).expect("send");
    expect_connection_close(&mut c, FRAME_ERROR);
}

/// Proves an unknown method (class 60, method 999) gets connection.close 540 NOT_IMPLEMENTED
/// blaming those ids.
#[test]
fn unknown_method_is_not_implemented() {
    let server = Server::start();
    let mut c = logged_in(&server);
    c.open_channel(1).expect("channel");
    c.send_frame(frame::FRAME_METHOD, 1, &[0, 60, 0x03, 0xE7]).expect("send");
    let close = expect_connection_close(&mut c, NOT_IMPLEMENTED);
    assert_eq!((close.class_id, close.method_id), (60, 999));
}

/// Proves a frame of an undefined type (9) gets connection.close 501.
#[test]
fn unknown_frame_type_is_frame_error() {
    let server = Server::start();
    let mut c = logged_in(&server);
    c.send_frame(9, 0, &[]).expect("send");
    expect_connection_close(&mut c, FRAME_ERROR);
}

/// Proves a method on a channel that was never opened gets connection.close 504 CHANNEL_ERROR.
#[test]
fn method_on_unopened_channel_is_channel_error() {
    let server = Server::start();
    let mut c = logged_in(&server);
    c.send_method(5, BasicQos { prefetch_count: 1, ..Default::default() }).expect("send");
    let close = expect_connection_close(&mut c, CHANNEL_ERROR);
    assert!(close.reply_text.starts_with("CHANNEL_ERROR - expected 'channel.open'"), "{close:?}");
}

/// Proves a channel.close that crosses the server's own (a publish to a missing exchange, then
/// the client's close at once) is answered with close-ok, and that the client's close-ok for the
/// server's close, arriving after, is absorbed: the connection stays up and the channel number
/// is free again (amqp091-go's TestChannelExceptionWithCloseIssue43).
#[test]
fn crossing_channel_closes_keep_the_connection() {
    let server = Server::start();
    let mut c = logged_in(&server);
    c.open_channel(1).expect("channel");
    c.open_channel(2).expect("channel");
    c.publish(1, "no-such-exchange", "k", b"x").expect("publish");
    let close = ChannelClose { reply_code: 200, reply_text: "bye".into(), class_id: 0, method_id: 0 };
    c.send_method(1, close).expect("close");
    // Read as they come; the client's close-ok for the server's close goes after both.
    let close = match recv_method(&mut c) {
        (1, Method::ChannelClose(close)) => close,
        other => panic!("expected channel.close 404, got {other:?}"),
    };
    assert_eq!(close.reply_text, "NOT_FOUND - no exchange 'no-such-exchange' in vhost '/'");
    assert!(matches!(recv_method(&mut c), (1, Method::ChannelCloseOk(_))), "close-ok for the client's close");
    c.send_method(1, ChannelCloseOk).expect("close-ok for the server's close");
    declare_queue(&mut c, 2, "after-crossed-closes");
    c.open_channel(1).expect("channel 1 is free again");
    declare_queue(&mut c, 1, "on-reopened-channel");
}

/// Proves basic.recover and basic.recover-async with requeue=false get connection.close 540
/// NOT_IMPLEMENTED, as RabbitMQ, which does not redeliver to the original consumer.
#[test]
fn recover_without_requeue_is_not_implemented() {
    for method in [Method::from(BasicRecover { requeue: false }), Method::from(BasicRecoverAsync { requeue: false })] {
        let server = Server::start();
        let mut c = logged_in(&server);
        c.open_channel(1).expect("channel");
        c.send_method(1, method).expect("send");
        let close = expect_connection_close(&mut c, NOT_IMPLEMENTED);
        assert_eq!(close.reply_text, "NOT_IMPLEMENTED - requeue=false");
    }
}

/// Proves a second channel.open on an open channel gets connection.close 504 with RabbitMQ's text.
#[test]
fn second_channel_open_is_channel_error() {
    let server = Server::start();
    let mut c = logged_in(&server);
    c.open_channel(1).expect("channel");
    c.send_method(1, ChannelOpen::default()).expect("send");
    let close = expect_connection_close(&mut c, CHANNEL_ERROR);
    assert_eq!(close.reply_text, "CHANNEL_ERROR - second 'channel.open' seen");
}

/// Proves the channel_max the client negotiated (10 here) bounds how many channels are open at
/// once, as RabbitMQ: any channel number opens (65535 included) until 10 are open, and the 11th
/// gets connection.close 530 NOT_ALLOWED.
#[test]
fn channels_beyond_channel_max_are_not_allowed() {
    let server = Server::start();
    let mut c = logged_in_tuned(&server, |t| ConnectionTuneOk { channel_max: 10, ..raw::echo_tune(t) });
    c.open_channel(65535).expect("channel 65535");
    for n in 1..=9 {
        c.open_channel(n).expect("channels up to channel_max");
    }
    c.send_method(11, ChannelOpen::default()).expect("send");
    let close = expect_connection_close(&mut c, NOT_ALLOWED);
    assert_eq!(
        close.reply_text,
        "NOT_ALLOWED - number of channels opened (10) has reached the negotiated channel_max (10)"
    );
}

/// Proves a content header with no basic.publish before it gets connection.close 505.
#[test]
fn header_without_publish_is_unexpected_frame() {
    let server = Server::start();
    let mut c = logged_in(&server);
    c.open_channel(1).expect("channel");
    c.send_header(1, 5).expect("send");
    let close = expect_connection_close(&mut c, UNEXPECTED_FRAME);
    assert!(close.reply_text.starts_with("UNEXPECTED_FRAME - expected method frame"), "{close:?}");
}

/// Proves a method frame where a content header is due (right after basic.publish) gets
/// connection.close 505 saying a header was expected, blaming basic.publish as RabbitMQ does.
#[test]
fn method_instead_of_content_header_is_unexpected_frame() {
    let server = Server::start();
    let mut c = logged_in(&server);
    c.open_channel(1).expect("channel");
    c.send_method(1, BasicPublish { routing_key: "q".into(), ..Default::default() }).expect("send publish");
    c.send_method(1, BasicQos { prefetch_count: 1, ..Default::default() }).expect("send qos");
    let close = expect_connection_close(&mut c, UNEXPECTED_FRAME);
    assert!(close.reply_text.starts_with("UNEXPECTED_FRAME - expected content header"), "{close:?}");
    assert_eq!((close.class_id, close.method_id), (60, 40), "{close:?}");
}

/// Proves a method frame where a content body is due (publish, header of 10 bytes, then a method)
/// gets connection.close 505 saying a body was expected, blaming basic.publish as RabbitMQ does.
#[test]
fn method_instead_of_content_body_is_unexpected_frame() {
    let server = Server::start();
    let mut c = logged_in(&server);
    c.open_channel(1).expect("channel");
    c.send_method(1, BasicPublish { routing_key: "q".into(), ..Default::default() }).expect("send publish");
    c.send_header(1, 10).expect("send header");
    c.send_method(1, BasicQos { prefetch_count: 1, ..Default::default() }).expect("send qos");
    let close = expect_connection_close(&mut c, UNEXPECTED_FRAME);
    // RabbitMQ: "UNEXPECTED_FRAME - expected content body, got non content body frame instead".
    assert!(close.reply_text.starts_with("UNEXPECTED_FRAME - expected content body"), "{close:?}");
    assert_eq!((close.class_id, close.method_id), (60, 40), "{close:?}");
}

/// Proves a body frame carrying more bytes than the content header declared gets
/// connection.close 501.
#[test]
fn body_larger_than_declared_is_frame_error() {
    let server = Server::start();
    let mut c = logged_in(&server);
    c.open_channel(1).expect("channel");
    c.send_method(1, BasicPublish { routing_key: "q".into(), ..Default::default() }).expect("send publish");
    c.send_header(1, 10).expect("send header");
    c.send_body(1, &[0u8; 11]).expect("send body");
    expect_connection_close(&mut c, FRAME_ERROR);
}

/// Proves a message above --max-message-size (1000 bytes here) gets channel.close 406 with
/// RabbitMQ's text naming both sizes, and the connection stays usable: a message of exactly the
/// limit goes through on another channel.
#[test]
fn message_above_max_size_closes_channel_only() {
    let server = Server::start_with(&["--max-message-size", "1000"]);
    let mut c = logged_in(&server);
    c.open_channel(1).expect("channel");
    c.publish(1, "", "sized", &[7u8; 1001]).expect("publish");
    let close = expect_channel_close(&mut c, 1, PRECONDITION_FAILED);
    assert_eq!(close.reply_text, "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000");
    assert_eq!((close.class_id, close.method_id), (60, 40));

    c.open_channel(2).expect("another channel");
    declare_queue(&mut c, 2, "sized");
    c.publish(2, "", "sized", &[7u8; 1000]).expect("publish");
    assert_eq!(get_body(&mut c, 2, "sized").len(), 1000);
}

/// Proves a client with Nagle's algorithm on (as amqplib's default) gets connection.open-ok
/// without waiting for a delayed ACK: it writes tune-ok and open back to back and holds open
/// until tune-ok is ACKed, and tune-ok has no reply to carry that ACK. Without an immediate ACK
/// the wait is the kernel's delayed-ACK timer, 40 ms or more; the best of five is far below.
#[test]
fn nagle_client_is_not_held_up_by_a_delayed_ack_in_the_handshake() {
    let server = Server::start();
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let mut c = connect(&server);
        c.set_nodelay(false).expect("nagle on");
        c.start("PLAIN", &raw::plain("guest", "guest")).expect("start");
        let t0 = Instant::now();
        c.tune(raw::echo_tune).expect("tune");
        c.open("/").expect("open");
        best = best.min(t0.elapsed());
    }
    assert!(best < Duration::from_millis(20), "tune-ok to open-ok took at best {best:?}");
}

/// Proves that with heartbeat 1 s negotiated, a client that stays silent is disconnected after
/// two missed checks, as RabbitMQ does (2 to 3 intervals after its last data): not at once,
/// and within 3.5 s.
#[test]
fn silent_client_disconnected_by_heartbeat_timeout() {
    let server = Server::start();
    let mut c = logged_in_tuned(&server, |t| ConnectionTuneOk { heartbeat: 1, ..raw::echo_tune(t) });
    let t0 = Instant::now();
    c.expect_closed(REPLY).expect("socket closed for missed heartbeats");
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_secs(1), "closed after only {waited:?}");
    assert!(waited <= Duration::from_millis(3500), "closed only after {waited:?}");
}

/// Proves a client that stops reading (its socket buffers full of deliveries) and stops sending
/// heartbeats is let go: the server gives up on the connection after two heartbeat intervals
/// and, since its writer is stuck in a write to the full socket, closes the socket 2 s later
/// instead of keeping it, and the stuck writer, for as long as the client lives.
#[test]
fn client_that_stops_reading_is_closed() {
    let server = Server::start();
    let pid = server.pid().expect("running");
    let sockets = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("fds")
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|l| l.to_string_lossy().starts_with("socket:"))
            .count()
    };
    let mut c = logged_in_tuned(&server, |t| ConnectionTuneOk { heartbeat: 1, ..raw::echo_tune(t) });
    c.open_channel(1).expect("channel");
    declare_queue(&mut c, 1, "never-read");
    let body = vec![7u8; 64 * 1024];
    let mut p = logged_in(&server);
    p.open_channel(1).expect("channel");
    for _ in 0..400 {
        p.publish(1, "", "never-read", &body).expect("publish");
    }
    declare_queue(&mut p, 1, "never-read");
    let with_both = sockets();
    let consume = BasicConsume { queue: "never-read".into(), no_ack: true, ..Default::default() };
    c.send_method(1, consume).expect("consume");
    // 26 MB of deliveries: more than both socket buffers and the connection's 4 MiB write credit,
    // so the writer blocks. The client never reads again.
    let deadline = Instant::now() + Duration::from_secs(12);
    while sockets() >= with_both {
        assert!(Instant::now() < deadline, "the server still holds the socket of a client that stopped reading");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(c);
}

/// Proves that with heartbeat 1 s the server sends heartbeat frames on channel 0 while idle,
/// every half interval as RabbitMQ (so a client that gives up after one silent interval, as
/// @cloudamqp/amqp-client does, stays connected), and that the client's own heartbeats keep the
/// connection open past the 2 s timeout.
#[test]
fn heartbeats_flow_both_ways() {
    let server = Server::start();
    let mut c = logged_in_tuned(&server, |t| ConnectionTuneOk { heartbeat: 1, ..raw::echo_tune(t) });
    let t0 = Instant::now();
    for i in 0..6 {
        let before = Instant::now();
        match c.recv(Duration::from_secs(2)).expect("a frame within 2 s") {
            Recv::Frame(Frame::Heartbeat { channel: 0 }) => {}
            other => panic!("expected heartbeat {i}, got {other:?}"),
        }
        // The first may come sooner (the check after the handshake's last write).
        if i > 0 {
            let gap = before.elapsed();
            assert!(gap <= Duration::from_millis(800), "heartbeat {i} after {gap:?}: not every half interval");
        }
        c.send_heartbeat().expect("send heartbeat");
    }
    assert!(t0.elapsed() >= Duration::from_millis(2000), "6 heartbeats in {:?}", t0.elapsed());
    c.open_channel(1).expect("connection alive after the heartbeats");
}

/// Proves the server's heartbeat, checked every idle interval (half the negotiated 2 s) as
/// RabbitMQ's heartbeat sender does, comes one to two idle intervals after the last write once
/// traffic stops, and not while replies keep the connection busy.
#[test]
fn heartbeat_follows_the_last_write() {
    let server = Server::start();
    let mut c = logged_in_tuned(&server, |t| ConnectionTuneOk { heartbeat: 2, ..raw::echo_tune(t) });
    c.open_channel(1).expect("channel");
    let declare = || QueueDeclare { queue: "hb".into(), ..Default::default() };
    let busy_until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < busy_until {
        c.send_method(1, declare()).expect("send declare");
        match c.recv(Duration::from_secs(2)).expect("a reply") {
            Recv::Frame(Frame::Method { method: Method::QueueDeclareOk(_), .. }) => {}
            other => panic!("a heartbeat or anything else while replies flow every 250 ms: {other:?}"),
        }
        c.send_heartbeat().expect("our heartbeat");
        std::thread::sleep(Duration::from_millis(250));
    }
    let last_write = Instant::now();
    match c.recv(Duration::from_secs(3)).expect("a heartbeat after the traffic") {
        Recv::Frame(Frame::Heartbeat { channel: 0 }) => {}
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    let after = last_write.elapsed();
    assert!(after >= Duration::from_millis(900) && after <= Duration::from_millis(2600), "heartbeat {after:?} after");
}

/// Proves that once the server sent channel.close, frames on that channel (a queue.declare, a
/// whole publish, even a channel.open) are dropped until channel.close-ok, after which the
/// channel id opens again.
#[test]
fn frames_after_channel_close_are_dropped_until_close_ok() {
    let server = Server::start();
    let mut c = logged_in(&server);
    c.open_channel(1).expect("channel");
    c.send_method(1, BasicGet { queue: "nope".into(), ..Default::default() }).expect("send get");
    let close = match recv_method(&mut c) {
        (1, Method::ChannelClose(close)) => close,
        other => panic!("expected channel.close, got {other:?}"),
    };
    assert_eq!(close.reply_code, NOT_FOUND, "{close:?}");
    assert_eq!(close.reply_text, "NOT_FOUND - no queue 'nope' in vhost '/'");

    c.send_method(1, QueueDeclare { queue: "dropped".into(), ..Default::default() }).expect("send");
    c.publish(1, "", "dropped", b"dropped").expect("send");
    c.send_method(1, ChannelOpen::default()).expect("send");
    c.send_method(1, ChannelCloseOk).expect("send close-ok");
    // Had anything above been applied, declare-ok or a 504 would arrive before this open-ok.
    c.open_channel(1).expect("channel 1 again, as the next reply");
    c.send_method(1, QueueDeclare { queue: "dropped".into(), passive: true, ..Default::default() }).expect("send");
    let close = expect_channel_close(&mut c, 1, NOT_FOUND);
    assert_eq!(close.reply_text, "NOT_FOUND - no queue 'dropped' in vhost '/'");
}

/// Proves connection.close from the client is answered with connection.close-ok, after which the
/// server leaves the socket to the client to close, as RabbitMQ does (a client that reads EOF
/// before it has closed may report a lost connection: amqp091-go's close listeners get a 501
/// EOF), and still closes it itself when the client does not (within 3 s).
#[test]
fn client_connection_close_gets_close_ok() {
    let server = Server::start();
    let mut c = logged_in(&server);
    c.open_channel(1).expect("channel");
    let close = ConnectionClose { reply_code: REPLY_SUCCESS, reply_text: "bye".into(), ..Default::default() };
    c.send_method(0, close).expect("send close");
    match recv_method(&mut c) {
        (0, Method::ConnectionCloseOk(_)) => {}
        other => panic!("expected connection.close-ok, got {other:?}"),
    }
    match c.recv(Duration::from_millis(500)) {
        Err(_) => {}
        Ok(Recv::Closed) => panic!("the server closed the socket before the client"),
        Ok(other) => panic!("nothing expected after close-ok, got {other:?}"),
    }
    c.expect_closed(REPLY).expect("socket closed by the server after waiting for the client");
}

/// Proves that when the server closes (here: a hard error) and the client answers close-ok, the
/// server closes the socket at once.
#[test]
fn server_close_answered_then_socket_closed_at_once() {
    let server = Server::start();
    let mut c = logged_in(&server);
    c.send_method(5, BasicQos { prefetch_count: 1, ..Default::default() }).expect("send");
    match recv_method(&mut c) {
        (0, Method::ConnectionClose(close)) => assert_eq!(close.reply_code, CHANNEL_ERROR),
        other => panic!("expected connection.close, got {other:?}"),
    }
    let started = Instant::now();
    c.send_method(0, ConnectionCloseOk).expect("close-ok");
    c.expect_closed(REPLY).expect("socket closed after our close-ok");
    assert!(started.elapsed() < Duration::from_secs(1), "closed after {:?}", started.elapsed());
}

/// Proves publishing to a missing exchange closes only that channel, with 404 and RabbitMQ's
/// exact text, while another open channel on the same connection keeps working.
#[test]
fn publish_to_missing_exchange_closes_only_that_channel() {
    let server = Server::start();
    let mut c = logged_in(&server);
    c.open_channel(1).expect("channel 1");
    c.open_channel(2).expect("channel 2");
    c.publish(1, "nope", "rk", b"lost").expect("publish");
    let close = expect_channel_close(&mut c, 1, NOT_FOUND);
    assert_eq!(close.reply_text, "NOT_FOUND - no exchange 'nope' in vhost '/'");
    assert_eq!((close.class_id, close.method_id), (60, 40));

    declare_queue(&mut c, 2, "still-works");
    c.publish(2, "", "still-works", b"hello").expect("publish");
    assert_eq!(&get_body(&mut c, 2, "still-works")[..], b"hello");
}

/// Proves SIGTERM first sends a connected client connection.close 320 CONNECTION_FORCED, then
/// the process exits in time (testkit's stop() returns true).
#[test]
fn sigterm_closes_connections_with_connection_forced() {
    let mut server = Server::start();
    let mut c = logged_in(&server);
    c.open_channel(1).expect("channel");
    let stopper = std::thread::spawn(move || server.stop());
    expect_connection_close(&mut c, CONNECTION_FORCED);
    assert!(stopper.join().expect("stop thread"), "server did not exit after SIGTERM");
}
