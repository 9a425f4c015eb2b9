"""Priority queues, consumer priorities, single active consumer and delivery limits through
pika against the real binary (issue 4), including prioritised messages across kill -9."""

import signal
import time

import pika
import pytest

from conftest import msg_count, pump_for, wait_for


def drain(ch, queue):
    out = []
    while True:
        m, props, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return out
        out.append((props, body))


def publish_prio(ch, queue, body, priority, persistent=False):
    props = pika.BasicProperties(priority=priority, delivery_mode=2 if persistent else None)
    ch.basic_publish("", queue, body, props)


def test_priority_queue_orders_by_priority_then_fifo(connect, uniq):
    ch = connect().channel()
    ch.queue_declare(uniq, arguments={"x-max-priority": 10})
    sent = [(b"a1", 1), (b"b5", 5), (b"c-", None), (b"d5", 5), (b"e10", 10), (b"f255", 255), (b"g0", 0)]
    for body, prio in sent:
        publish_prio(ch, uniq, body, prio)
    wait_for(5, lambda: msg_count(ch.connection, uniq) == len(sent))
    got = [b for _, b in drain(ch, uniq)]
    # Above x-max-priority counts as the maximum; no priority counts as 0.
    assert got == [b"e10", b"f255", b"b5", b"d5", b"a1", b"c-", b"g0"]


def test_priority_consumer_sees_high_first_after_backlog(connect, uniq):
    ch = connect().channel()
    ch.queue_declare(uniq, arguments={"x-max-priority": 5})
    for i in range(20):
        publish_prio(ch, uniq, b"low-%d" % i, 1)
    publish_prio(ch, uniq, b"urgent", 5)
    wait_for(5, lambda: msg_count(ch.connection, uniq) == 21)
    got = []
    ch.basic_qos(prefetch_count=1)

    def on_msg(c, m, p, body):
        got.append(body)
        c.basic_ack(m.delivery_tag)

    ch.basic_consume(uniq, on_msg)
    wait_for(5, lambda: len(got) == 21, pump=ch.connection)
    assert got[0] == b"urgent"
    assert got[1:] == [b"low-%d" % i for i in range(20)]


def test_invalid_max_priority_is_refused(connect, uniq):
    ch = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(uniq, arguments={"x-max-priority": 256})
    assert e.value.reply_code == 406
    assert "x-max-priority" in e.value.reply_text


def test_prioritised_messages_survive_kill_9(broker_factory, uniq):
    data_dir = broker_factory.new_data_dir()
    b1 = broker_factory.start(data_dir)
    ch = b1.connect().channel()
    ch.confirm_delivery()
    ch.queue_declare(uniq, durable=True, arguments={"x-max-priority": 9})
    for body, prio in [(b"p1", 1), (b"p9", 9), (b"p5", 5), (b"p9b", 9), (b"p0", None)]:
        publish_prio(ch, uniq, body, prio, persistent=True)
    b1.proc.send_signal(signal.SIGKILL)
    b1.proc.wait(timeout=5)
    b2 = broker_factory.start(data_dir)
    ch = b2.connect().channel()
    assert [b for _, b in drain(ch, uniq)] == [b"p9", b"p9b", b"p5", b"p1", b"p0"]


def test_consumer_priorities(connect, uniq):
    """The higher-priority consumer gets every message while it has room; the lower one gets
    messages only when the higher one is at its prefetch limit."""
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(uniq)
    ch.basic_qos(prefetch_count=3)
    got = {"high": [], "low": []}
    ch.basic_consume(uniq, lambda c, m, p, b: got["low"].append(m.delivery_tag), arguments={"x-priority": 1})
    ch.basic_consume(uniq, lambda c, m, p, b: got["high"].append(m.delivery_tag), arguments={"x-priority": 10})
    pub = connect().channel()
    for i in range(5):
        pub.basic_publish("", uniq, b"m%d" % i)
    wait_for(5, lambda: len(got["high"]) + len(got["low"]) == 5, pump=conn)
    assert (len(got["high"]), len(got["low"])) == (3, 2)


def test_single_active_consumer_fails_over(connect, uniq):
    conn = connect()
    ch1 = conn.channel()
    ch1.queue_declare(uniq, arguments={"x-single-active-consumer": True})
    first, second = [], []
    ch1.basic_consume(uniq, lambda c, m, p, b: (first.append(b), c.basic_ack(m.delivery_tag)))
    ch2 = conn.channel()
    ch2.basic_consume(uniq, lambda c, m, p, b: (second.append(b), c.basic_ack(m.delivery_tag)))
    pub = connect().channel()
    for i in range(6):
        pub.basic_publish("", uniq, b"m%d" % i)
    wait_for(5, lambda: len(first) == 6, pump=conn)
    assert second == []
    ch1.close()
    for i in range(6, 9):
        pub.basic_publish("", uniq, b"m%d" % i)
    wait_for(5, lambda: len(second) == 3, pump=conn)
    assert second == [b"m6", b"m7", b"m8"]


def test_delivery_limit_dead_letters_with_count_header(connect, uniq):
    ch = connect().channel()
    dlx, dlq = "dlx-" + uniq, "dlq-" + uniq
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(uniq, arguments={"x-delivery-limit": 2, "x-dead-letter-exchange": dlx})
    ch.basic_publish("", uniq, b"poison")
    counts = []
    for _ in range(3):
        wait_for(5, lambda: msg_count(ch.connection, uniq) == 1)
        m, props, _ = ch.basic_get(uniq)
        counts.append((props.headers or {}).get("x-delivery-count"))
        ch.basic_nack(m.delivery_tag, requeue=True)
    wait_for(5, lambda: msg_count(ch.connection, dlq) == 1)
    assert counts == [None, 1, 2]
    [(props, body)] = drain(ch, dlq)
    assert body == b"poison"
    assert props.headers["x-death"][0]["reason"] == "delivery_limit"
    assert msg_count(ch.connection, uniq) == 0


def test_delivery_count_survives_kill_9(broker_factory, uniq):
    """Returns to a queue with a delivery limit are journaled: after kill -9 the message comes
    back with its x-delivery-count, and the limit counts the returns made before the crash."""
    data_dir = broker_factory.new_data_dir()
    b1 = broker_factory.start(data_dir)
    ch = b1.connect().channel()
    ch.confirm_delivery()
    ch.queue_declare(uniq, durable=True, arguments={"x-delivery-limit": 3})
    ch.basic_publish("", uniq, b"poison", pika.BasicProperties(delivery_mode=2))
    for _ in range(2):
        m, _, _ = ch.basic_get(uniq)
        ch.basic_nack(m.delivery_tag, requeue=True)
    # A round trip after the nacks, then time for the 100 ms ack-log sync.
    ch.queue_declare(uniq, passive=True)
    time.sleep(0.5)
    b1.proc.send_signal(signal.SIGKILL)
    b1.proc.wait(timeout=5)
    b2 = broker_factory.start(data_dir)
    ch = b2.connect().channel()
    counts = []
    for _ in range(2):
        m, props, body = ch.basic_get(uniq)
        assert body == b"poison"
        counts.append((props.headers or {}).get("x-delivery-count"))
        ch.basic_nack(m.delivery_tag, requeue=True)
    assert counts == [2, 3]
    ch.queue_declare(uniq, passive=True)
    assert msg_count(ch.connection, uniq) == 0, "the fourth return is past the limit"


def test_consumer_ack_timeout_closes_channel_with_406(connect, uniq):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(uniq, arguments={"x-consumer-timeout": 300})
    ch.basic_publish("", uniq, b"slow")
    got = []
    ch.basic_consume(uniq, lambda c, m, p, b: got.append(b))
    wait_for(5, lambda: not ch.is_open, pump=conn)
    assert got == [b"slow"]
    reason = ch._closing_reason
    assert reason.reply_code == 406
    assert "delivery acknowledgement on channel %d timed out" % ch.channel_number in reason.reply_text
    assert "Timeout value used: 300 ms" in reason.reply_text
    # The message is back, and the connection and the channel number remain usable.
    ch2 = conn.channel()
    assert msg_count(conn, uniq) == 1
    m, _, body = ch2.basic_get(uniq)
    assert body == b"slow" and m.redelivered
    ch2.basic_ack(m.delivery_tag)


def test_per_consumer_timeout_argument(connect, uniq):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare(uniq)
    ch.basic_publish("", uniq, b"x")
    ch.basic_consume(uniq, lambda c, m, p, b: None, arguments={"x-consumer-timeout": 300})
    wait_for(5, lambda: not ch.is_open, pump=conn)
    assert ch._closing_reason.reply_code == 406
