"""Durability and resource alarms through pika against the real binary."""

import os
import signal
import time

import pika
import pytest

from conftest import wait_for


def test_kill_9_keeps_confirmed_persistent_messages_and_definitions(broker_factory, uniq):
    """Confirmed persistent messages in a durable queue, and the durable exchange and binding that
    route to it, survive SIGKILL; transient messages, transient queues and acked messages do not."""
    data_dir = broker_factory.new_data_dir()
    b1 = broker_factory.start(data_dir)
    conn = b1.connect()
    ch = conn.channel()
    ch.exchange_declare("dx-" + uniq, "direct", durable=True)
    ch.queue_declare("dq-" + uniq, durable=True)
    ch.queue_declare("tq-" + uniq, durable=False)
    ch.queue_bind("dq-" + uniq, "dx-" + uniq, "k")
    ch.confirm_delivery()
    for i in range(200):
        ch.basic_publish("dx-" + uniq, "k", b"p%d" % i, pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("dx-" + uniq, "k", b"transient", pika.BasicProperties(delivery_mode=1))
    # Ack the first 10 and give the ack log time to be synced (acks are synced within 100 ms).
    for _ in range(10):
        method, _, _ = ch.basic_get("dq-" + uniq)
        ch.basic_ack(method.delivery_tag)
    ch.queue_declare("dq-" + uniq, durable=True, passive=True)
    time.sleep(0.3)
    b1.proc.send_signal(signal.SIGKILL)
    b1.proc.wait(timeout=5)

    b2 = broker_factory.start(data_dir)
    conn = b2.connect()
    ch = conn.channel()
    got = []
    while True:
        method, props, body = ch.basic_get("dq-" + uniq, auto_ack=True)
        if method is None:
            break
        got.append(body)
    assert got == [b"p%d" % i for i in range(10, 200)]
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("tq-" + uniq, passive=True)
    assert e.value.reply_code == 404
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("dx-" + uniq, "k", b"after", pika.BasicProperties(delivery_mode=2), mandatory=True)
    method, _, body = ch.basic_get("dq-" + uniq, auto_ack=True)
    assert body == b"after", "the durable binding routes after the restart"


def test_consumed_segments_are_removed_from_disk(broker_factory, uniq):
    """Message-log segments whose messages are all acked are deleted: after 12 MB of persistent
    messages (two 8 MiB segments) are consumed, only the segment being written stays, and the
    acked messages do not come back after a restart."""
    data_dir = broker_factory.new_data_dir()
    b1 = broker_factory.start(data_dir)
    ch = b1.connect().channel()
    ch.queue_declare(uniq, durable=True)
    ch.confirm_delivery()
    body = b"x" * 1024
    for _ in range(12000):
        ch.basic_publish("", uniq, body, pika.BasicProperties(delivery_mode=2))
    seg_dir = os.path.join(data_dir, "journal", "messages")
    segments = lambda: sorted(f for f in os.listdir(seg_dir) if f.endswith(".seg"))
    assert len(segments()) >= 2
    for method, _, _ in ch.consume(uniq, inactivity_timeout=5):
        assert method is not None, "the queue drained"
        ch.basic_ack(method.delivery_tag)
        if method.delivery_tag == 12000:
            break
    ch.cancel()
    # A round trip: the broker has handled every ack. Files go with the next group commit, and
    # acks are synced within 100 ms.
    ch.queue_declare(uniq, durable=True, passive=True)
    wait_for(5, lambda: len(segments()) == 1)
    time.sleep(0.3)
    b1.proc.send_signal(signal.SIGKILL)
    b1.proc.wait(timeout=5)
    b2 = broker_factory.start(data_dir)
    ch = b2.connect().channel()
    assert ch.queue_declare(uniq, durable=True, passive=True).method.message_count == 0


def test_definitions_log_is_compacted_and_survives_kill_9(broker_factory, uniq):
    """Declaring and deleting many durable queues grows the definitions log only up to
    --definitions-compaction-bytes (then it is rewritten as the definitions in force); after
    SIGKILL the kept queues, their binding and messages are back, the deleted ones are not, and
    a queue declared after the restart does not receive a deleted queue's messages."""
    data_dir = broker_factory.new_data_dir()
    limit = 64 * 1024
    b1 = broker_factory.start(data_dir, ["--definitions-compaction-bytes", str(limit)])
    ch = b1.connect().channel()
    ch.exchange_declare("cx-" + uniq, "topic", durable=True)
    ch.queue_declare("keep-" + uniq, durable=True)
    ch.queue_bind("keep-" + uniq, "cx-" + uniq, "k.#")
    ch.confirm_delivery()
    for i in range(600):
        q = "churn-%s-%d" % (uniq, i)
        ch.queue_declare(q, durable=True)
        ch.queue_bind(q, "cx-" + uniq, "c.%d" % i)
        if i == 599:
            # The newest queue dies with a message in it.
            ch.basic_publish("cx-" + uniq, "c.599", b"doomed", pika.BasicProperties(delivery_mode=2))
        ch.queue_delete(q)
    ch.basic_publish("cx-" + uniq, "k.1", b"kept", pika.BasicProperties(delivery_mode=2))
    defs_dir = os.path.join(data_dir, "journal", "definitions")
    size = lambda: sum(os.path.getsize(os.path.join(defs_dir, f)) for f in os.listdir(defs_dir))
    # 600 declarations, bindings and deletions write some 200 KB of records; the timer compacts
    # within a second of passing the limit.
    wait_for(5, lambda: size() < limit)
    b1.proc.send_signal(signal.SIGKILL)
    b1.proc.wait(timeout=5)

    b2 = broker_factory.start(data_dir, ["--definitions-compaction-bytes", str(limit)])
    ch = b2.connect().channel()
    assert ch.queue_declare("keep-" + uniq, durable=True, passive=True).method.message_count == 1
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("churn-%s-7" % uniq, passive=True)
    assert e.value.reply_code == 404
    ch = b2.connect().channel()
    ch.queue_declare("fresh-" + uniq, durable=True)
    assert ch.queue_declare("fresh-" + uniq, passive=True).method.message_count == 0
    ch.confirm_delivery()
    ch.basic_publish("cx-" + uniq, "k.2", b"routed", pika.BasicProperties(delivery_mode=2), mandatory=True)
    assert ch.queue_declare("keep-" + uniq, passive=True).method.message_count == 2


def test_disk_alarm_blocks_publishers_but_not_consumers(broker_factory, uniq):
    """With free disk below --disk-free-limit, a publishing connection is sent connection.blocked
    and its further publishes are not read, while another connection still consumes."""
    data_dir = broker_factory.new_data_dir()
    b = broker_factory.start(data_dir, ["--disk-free-limit", str(10**18)])
    q = "alarm-" + uniq
    consumer = b.connect()
    cch = consumer.channel()
    cch.queue_declare(q)
    blocked = []
    publisher = b.connect()
    publisher.add_on_connection_blocked_callback(lambda conn, frame: blocked.append(frame.method.reason))
    pch = publisher.channel()
    pch.basic_publish("", q, b"first")
    wait_for(5, lambda: blocked, pump=publisher)
    assert blocked == ["low on disk"]
    pch.basic_publish("", q, b"second")
    publisher.process_data_events(time_limit=0.3)
    # The consumer connection is not blocked: it gets what was accepted before the block.
    method, _, body = cch.basic_get(q, auto_ack=True)
    assert body == b"first"
    method, _, body = cch.basic_get(q, auto_ack=True)
    assert method is None, "the publish sent while blocked must not have been read"
