"""Publisher deduplication (x-message-deduplication / x-deduplication-header, as the community
plugin names them) through pika against the real binary (issue 4): duplicates are confirmed but
not enqueued, the window is bounded, and it survives kill -9 for durable queues."""

import signal

import pika

from conftest import msg_count, wait_for


def dedup_props(msg_id, persistent=False):
    return pika.BasicProperties(headers={"x-deduplication-header": msg_id},
                                delivery_mode=2 if persistent else None)


def test_duplicates_are_confirmed_but_not_enqueued(connect, uniq):
    ch = connect().channel()
    ch.confirm_delivery()
    ch.queue_declare(uniq, arguments={"x-message-deduplication": True})
    for mid in ["a", "b", "a", "c", "b", "a"]:
        # confirm_delivery makes basic_publish raise on a nack; every one is acked.
        ch.basic_publish("", uniq, mid.encode(), dedup_props(mid))
    ch.basic_publish("", uniq, b"no id")
    ch.basic_publish("", uniq, b"no id")
    wait_for(5, lambda: msg_count(ch.connection, uniq) == 5)
    bodies = []
    while True:
        m, _, body = ch.basic_get(uniq, auto_ack=True)
        if m is None:
            break
        bodies.append(body)
    assert bodies == [b"a", b"b", b"c", b"no id", b"no id"]
    # Consumed ids are still remembered: the window outlives the queue's contents.
    ch.basic_publish("", uniq, b"a again", dedup_props("a"))
    assert msg_count(ch.connection, uniq) == 0


def test_window_is_bounded(connect, uniq):
    ch = connect().channel()
    ch.queue_declare(uniq, arguments={"x-message-deduplication": True, "x-cache-size": 2})
    for mid in ["1", "2", "3", "1"]:
        ch.basic_publish("", uniq, mid.encode(), dedup_props(mid))
    wait_for(5, lambda: msg_count(ch.connection, uniq) == 4)


def test_window_survives_kill_9(broker_factory, uniq):
    data_dir = broker_factory.new_data_dir()
    b1 = broker_factory.start(data_dir)
    ch = b1.connect().channel()
    ch.confirm_delivery()
    ch.queue_declare(uniq, durable=True, arguments={"x-message-deduplication": True})
    ch.basic_publish("", uniq, b"x", dedup_props("x", persistent=True))
    m, _, _ = ch.basic_get(uniq)
    ch.basic_ack(m.delivery_tag)
    ch.basic_publish("", uniq, b"y", dedup_props("y", persistent=True))
    b1.proc.send_signal(signal.SIGKILL)
    b1.proc.wait(timeout=5)
    b2 = broker_factory.start(data_dir)
    ch = b2.connect().channel()
    ch.confirm_delivery()
    for mid in ["x", "y", "z"]:
        ch.basic_publish("", uniq, mid.encode(), dedup_props(mid, persistent=True))
    wait_for(5, lambda: msg_count(ch.connection, uniq) == 2)
    got = [ch.basic_get(uniq, auto_ack=True)[2] for _ in range(2)]
    assert got == [b"y", b"z"]
