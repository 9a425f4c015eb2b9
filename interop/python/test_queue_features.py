"""Message TTL, queue expiry, dead-lettering and length limits through pika against the real
binary (issue 4): queue arguments, message properties, the x-death header as RabbitMQ writes
it, publisher confirms for refused messages, and deadlines across a restart."""

import calendar
import signal
import time

import pika
import pika.exceptions as pe
import pytest

from conftest import msg_count, pump_for, queue_exists, wait_for


def drain(ch, queue):
    """basic_get (auto-ack) until empty; returns (properties, body) pairs."""
    out = []
    while True:
        m, props, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return out
        out.append((props, body))


def dead_letter_setup(ch, uniq, durable=False):
    """A fanout exchange dlx-<uniq> bound to a queue dlq-<uniq>; returns their names."""
    dlx, dlq = "dlx-" + uniq, "dlq-" + uniq
    ch.exchange_declare(exchange=dlx, exchange_type="fanout", durable=durable)
    ch.queue_declare(queue=dlq, durable=durable)
    ch.queue_bind(queue=dlq, exchange=dlx)
    return dlx, dlq


def epoch(dt):
    return calendar.timegm(dt.utctimetuple())


def test_x_death_headers_as_rabbitmq_writes_them(connect, uniq):
    """A rejected message, dead-lettered again when it expires, carries one x-death entry per
    (queue, reason), newest first, with count, reason, queue, time, exchange, routing-keys and
    original-expiration, plus x-first-death-* and x-last-death-* headers; the copy loses its
    expiration property."""
    ch = connect().channel()
    dlx, dlq = dead_letter_setup(ch, uniq)
    # q1 rejects into q2 (via the default exchange); q2 expires into the fanout dlx.
    q1, q2 = "q1-" + uniq, "q2-" + uniq
    ch.queue_declare(q2, arguments={"x-message-ttl": 100, "x-dead-letter-exchange": dlx})
    ch.queue_declare(q1, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q2})
    before = time.time()
    ch.basic_publish("", q1, b"body", pika.BasicProperties(expiration="60000", headers={"mine": "kept"}))
    wait_for(5, lambda: msg_count(ch.connection, q1) == 1)
    m, _, _ = ch.basic_get(q1)
    ch.basic_reject(m.delivery_tag, requeue=False)
    wait_for(5, lambda: msg_count(ch.connection, dlq) == 1)
    [(props, body)] = drain(ch, dlq)
    assert body == b"body"
    assert props.expiration is None
    h = props.headers
    assert h["mine"] == "kept"
    deaths = h["x-death"]
    assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [(q2, "expired", 1), (q1, "rejected", 1)]
    expired, rejected = deaths
    assert list(rejected) == ["count", "reason", "queue", "time", "exchange", "routing-keys", "original-expiration"]
    assert (rejected["exchange"], rejected["routing-keys"], rejected["original-expiration"]) == ("", [q1], "60000")
    assert (expired["exchange"], expired["routing-keys"]) == ("", [q2])
    assert "original-expiration" not in expired, "the first copy had no expiration left"
    for d in deaths:
        assert before - 2 <= epoch(d["time"]) <= time.time() + 2
    assert (h["x-first-death-queue"], h["x-first-death-reason"], h["x-first-death-exchange"]) == (q1, "rejected", "")
    assert (h["x-last-death-queue"], h["x-last-death-reason"], h["x-last-death-exchange"]) == (q2, "expired", "")


def test_expired_message_removed_though_not_at_head(connect, uniq):
    """A message with a short per-message expiration behind a message without one is removed
    and dead-lettered when it expires (Warren does not wait for it to reach the head, unlike
    RabbitMQ); the messages around it stay, in order."""
    ch = connect().channel()
    dlx, dlq = dead_letter_setup(ch, uniq)
    ch.queue_declare(uniq, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", uniq, b"first")
    ch.basic_publish("", uniq, b"short", pika.BasicProperties(expiration="200"))
    ch.basic_publish("", uniq, b"last")
    wait_for(5, lambda: msg_count(ch.connection, uniq) == 2)
    assert [b for _, b in drain(ch, dlq)] == [b"short"]
    assert [b for _, b in drain(ch, uniq)] == [b"first", b"last"]


def test_queue_ttl_never_delivers_expired(connect, uniq):
    """With x-message-ttl, a message waiting longer than the TTL is gone: basic_get does not
    return it and a consumer that starts afterwards does not receive it."""
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(uniq, arguments={"x-message-ttl": 150})
    ch.basic_publish("", uniq, b"stale")
    wait_for(5, lambda: msg_count(conn, uniq) == 0)
    assert ch.basic_get(uniq) == (None, None, None)
    got = []
    ch.basic_consume(uniq, lambda c, m, p, b: got.append(b), auto_ack=True)
    ch.basic_publish("", uniq, b"fresh")
    wait_for(5, lambda: got, pump=conn)
    assert got == [b"fresh"]


def test_invalid_expiration_closes_channel_406(connect, uniq):
    """A publish whose expiration property is not a non-negative integer closes the channel with
    406 PRECONDITION_FAILED and RabbitMQ's text."""
    ch = connect().channel()
    ch.queue_declare(uniq)
    ch.basic_publish("", uniq, b"x", pika.BasicProperties(expiration="soon"))
    with pytest.raises(pe.ChannelClosedByBroker) as e:
        ch.queue_declare(uniq, passive=True)
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - invalid expiration 'soon': {invalid_expiration,<<\"soon\">>}"


def routable(ch, queue):
    """True while the default exchange routes to `queue` (a mandatory probe, which, unlike a
    passive declare, does not count as using the queue)."""
    try:
        ch.basic_publish("", queue, b"probe", mandatory=True)
        return True
    except pe.UnroutableError:
        return False


def test_x_expires_deletes_unused_queue(connect, uniq):
    """A queue with x-expires is deleted once unused (no consumer, no basic.get, no redeclare)
    for that long, not before, while one with a consumer outlives the period."""
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    idle, consumed = "idle-" + uniq, "consumed-" + uniq
    start = time.monotonic()
    ch.queue_declare(idle, arguments={"x-expires": 300})
    consumer = connect().channel()
    consumer.queue_declare(consumed, arguments={"x-expires": 300})
    consumer.basic_consume(consumed, lambda *a: None, auto_ack=True)
    wait_for(5, lambda: not routable(ch, idle))
    assert time.monotonic() - start >= 0.3, "deleted before its x-expires period"
    pump_for(0.3, consumer.connection)
    assert routable(ch, consumed), "a consumed queue does not expire"


def test_max_length_bytes_drops_oldest(connect, uniq):
    """A queue with x-max-length-bytes keeps the newest messages whose bodies fit, dropping the
    oldest first."""
    ch = connect().channel()
    ch.confirm_delivery()
    ch.queue_declare(uniq, arguments={"x-max-length-bytes": 10})
    for body in (b"aaaa", b"bbbb", b"cccc"):
        ch.basic_publish("", uniq, body)
    assert [b for _, b in drain(ch, uniq)] == [b"bbbb", b"cccc"]


def test_reject_publish_nacks_confirming_publisher(connect, uniq):
    """With x-overflow reject-publish, a publish to a full queue is nacked to a confirming
    publisher, while another queue it was routed to still takes it."""
    ch = connect().channel()
    ch.confirm_delivery()
    fan, full, other = "fan-" + uniq, "full-" + uniq, "other-" + uniq
    ch.exchange_declare(fan, "fanout")
    ch.queue_declare(full, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.queue_declare(other)
    ch.queue_bind(full, fan)
    ch.queue_bind(other, fan)
    ch.basic_publish(fan, "", b"fits")
    with pytest.raises(pe.NackError):
        ch.basic_publish(fan, "", b"refused")
    assert [b for _, b in drain(ch, full)] == [b"fits"]
    assert [b for _, b in drain(ch, other)] == [b"fits", b"refused"]
    ch.basic_publish(fan, "", b"room again")
    assert [b for _, b in drain(ch, full)] == [b"room again"]


def test_reject_publish_dlx_dead_letters_refused(connect, uniq):
    """With x-overflow reject-publish-dlx, the refused message is nacked and dead-lettered with
    reason maxlen; the queue keeps what it had."""
    ch = connect().channel()
    ch.confirm_delivery()
    dlx, dlq = dead_letter_setup(ch, uniq)
    ch.queue_declare(
        uniq, arguments={"x-max-length": 1, "x-overflow": "reject-publish-dlx", "x-dead-letter-exchange": dlx}
    )
    ch.basic_publish("", uniq, b"kept")
    with pytest.raises(pe.NackError):
        ch.basic_publish("", uniq, b"refused")
    [(props, body)] = drain(ch, dlq)
    assert body == b"refused"
    assert [(d["queue"], d["reason"]) for d in props.headers["x-death"]] == [(uniq, "maxlen")]
    assert [b for _, b in drain(ch, uniq)] == [b"kept"]


def test_max_length_drop_head_dead_letters_maxlen(connect, uniq):
    """With the default overflow (drop-head), the oldest messages beyond x-max-length are
    dead-lettered with reason maxlen, in order."""
    ch = connect().channel()
    ch.confirm_delivery()
    dlx, dlq = dead_letter_setup(ch, uniq)
    ch.queue_declare(uniq, arguments={"x-max-length": 1, "x-dead-letter-exchange": dlx})
    for body in (b"1", b"2", b"3"):
        ch.basic_publish("", uniq, body)
    dead = drain(ch, dlq)
    assert [b for _, b in dead] == [b"1", b"2"]
    assert {p.headers["x-death"][0]["reason"] for p, _ in dead} == {"maxlen"}
    assert [b for _, b in drain(ch, uniq)] == [b"3"]


def test_ttl_and_dead_letters_survive_kill_9(broker_factory, uniq):
    """Persistent messages keep their TTL state across kill -9 and restart: a message
    dead-lettered before the crash is in the dead-letter queue (not back in its queue), one whose
    per-message TTL ran out while the broker was down is dead-lettered at startup, and one still
    pending expires at its original deadline (not a full TTL after the restart)."""
    data_dir = broker_factory.new_data_dir()
    b1 = broker_factory.start(data_dir)
    ch = b1.connect().channel()
    ch.confirm_delivery()
    dlx, dlq = dead_letter_setup(ch, uniq, durable=True)
    ttl_q, plain_q = "ttl-" + uniq, "plain-" + uniq
    ttl_ms = 4000
    ch.queue_declare(ttl_q, durable=True, arguments={"x-message-ttl": ttl_ms, "x-dead-letter-exchange": dlx})
    ch.queue_declare(plain_q, durable=True, arguments={"x-dead-letter-exchange": dlx})
    persistent = pika.BasicProperties(delivery_mode=2)
    ch.basic_publish("", ttl_q, b"rejected", persistent)
    m, _, _ = ch.basic_get(ttl_q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    ch.basic_publish("", plain_q, b"expires while down", pika.BasicProperties(delivery_mode=2, expiration="1000"))
    published = time.monotonic()
    ch.basic_publish("", ttl_q, b"pending", persistent)
    # A confirmed publish fsyncs the message and ack logs up to here, the reject included.
    ch.basic_publish("", plain_q, b"marker", persistent)
    assert msg_count(ch.connection, dlq) == 1
    b1.proc.send_signal(signal.SIGKILL)
    b1.proc.wait(timeout=5)
    # Let the 1 s expiration pass while the broker is down.
    time.sleep(max(0.0, published + 1.2 - time.monotonic()))

    b2 = broker_factory.start(data_dir)
    conn = b2.connect()
    ch = conn.channel()
    wait_for(5, lambda: msg_count(conn, dlq) == 2)
    assert time.monotonic() - published < ttl_ms / 1000 - 0.5, "restart too slow for the check below"
    assert msg_count(conn, ttl_q) == 1, "the pending message is still there after the restart"
    wait_for(10, lambda: msg_count(conn, dlq) == 3)
    expired_after = time.monotonic() - published
    # Its deadline was kept: it expired ttl_ms after its publish, not ttl_ms after the restart.
    assert ttl_ms / 1000 - 0.1 <= expired_after < ttl_ms / 1000 + 1.0, expired_after
    dead = drain(ch, dlq)
    assert [b for _, b in dead] == [b"rejected", b"expires while down", b"pending"]
    assert [(p.headers["x-death"][0]["queue"], p.headers["x-death"][0]["reason"]) for p, _ in dead] == [
        (ttl_q, "rejected"),
        (plain_q, "expired"),
        (ttl_q, "expired"),
    ]
    assert dead[1][0].headers["x-death"][0]["original-expiration"] == "1000"
    assert [b for _, b in drain(ch, plain_q)] == [b"marker"]
    assert msg_count(conn, ttl_q) == 0


def test_quorum_and_stream_declarations_checked_as_rabbitmq(broker, connect, uniq):
    """Warren serves quorum and stream queues as classic ones, but refuses what RabbitMQ refuses
    for them (auto-delete, exclusive, non-durable, in that order) and reports the declared type."""
    from admin_util import Api
    conn = connect()
    for kind in ("quorum", "stream"):
        name = "%s-%s" % (uniq, kind)
        for kw, prop in (({"durable": True, "auto_delete": True, "exclusive": True}, "auto-delete"),
                         ({"durable": True, "exclusive": True}, "exclusive"),
                         ({}, "non-durable")):
            ch = conn.channel()
            with pytest.raises(pe.ChannelClosedByBroker) as e:
                ch.queue_declare(name, arguments={"x-queue-type": kind}, **kw)
            assert e.value.reply_code == 406
            assert e.value.reply_text == "PRECONDITION_FAILED - invalid property '%s' for queue '%s' in vhost '/'" % (
                prop, name)
        ch = conn.channel()
        ch.queue_declare(name, durable=True, arguments={"x-queue-type": kind})
        q = Api(broker).ok("GET", "/queues/%2F/" + name)
        assert q["type"] == kind and q["members"] == [q["node"]]
        ch.queue_delete(name)
