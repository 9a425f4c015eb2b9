"""`--io-engine uring`: plain AMQP connections on io_uring threads, checked end to end with
pika (the whole interop suite also runs with WARREN_IO_ENGINE=uring in scripts/test)."""

import os
import threading

import pika
import pytest

from conftest import wait_for


def uring_broker(broker_factory):
    d = broker_factory.new_data_dir()
    try:
        return broker_factory.start(d, ["--io-engine", "uring"])
    except BaseException as e:  # pytest.fail from start_broker is an OutcomeException
        if "io_uring is not available" in str(e):
            pytest.skip("this kernel does not allow io_uring")
        raise


def thread_names(pid):
    names = []
    for t in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
            names.append(f.read().strip())
    return names


def test_connections_run_on_io_threads_and_round_trip(broker_factory, uniq):
    b = uring_broker(broker_factory)
    conn = b.connect()
    assert "warren-io-0" in thread_names(b.proc.pid)
    ch = conn.channel()
    q = uniq + "-q"
    ch.queue_declare(q)
    ch.confirm_delivery()
    bodies = [b"m%d" % i for i in range(2000)] + [os.urandom(5 * 1024 * 1024), b""]
    for body in bodies:
        ch.basic_publish("", q, body, pika.BasicProperties(headers={"n": len(body)}))
    got = []
    for _method, props, body in ch.consume(q, auto_ack=False, inactivity_timeout=10):
        assert body is not None, "timed out after %d deliveries" % len(got)
        assert props.headers["n"] == len(body)
        got.append(body)
        if len(got) == len(bodies):
            ch.basic_ack(0, multiple=True)
            break
    assert got == bodies
    ch.cancel()
    conn.close()


def test_many_connections_and_errors_on_io_threads(broker_factory, uniq):
    b = uring_broker(broker_factory)
    conns = [b.connect() for _ in range(40)]
    q = uniq + "-shared"
    chans = [c.channel() for c in conns]
    chans[0].queue_declare(q)
    for i, ch in enumerate(chans):
        ch.basic_publish("", q, b"from %d" % i)
    assert wait_for(5, lambda: chans[0].queue_declare(q, passive=True).method.message_count == 40)
    # A channel error (404) closes one channel and nothing else.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        chans[1].queue_declare(uniq + "-missing", passive=True)
    assert e.value.reply_code == 404
    assert chans[2].queue_declare(q, passive=True).method.message_count == 40
    for c in conns:
        c.close()
    # The server closed every socket: its descriptor count falls back.
    fds = lambda: len(os.listdir("/proc/%d/fd" % b.proc.pid))
    before = fds()
    extra = [b.connect() for _ in range(20)]
    assert fds() >= before + 20
    for c in extra:
        c.close()
    assert wait_for(5, lambda: fds() <= before), "sockets left open: %d > %d" % (fds(), before)


def test_a_consumer_that_stops_reading_does_not_stall_others(broker_factory, uniq):
    """A send that cannot complete at once (the peer's window is full) must not hold up other
    connections on the same io thread."""
    b = uring_broker(broker_factory)
    slow = b.connect()
    sch = slow.channel()
    big = uniq + "-big"
    sch.queue_declare(big)
    sch.basic_consume(big, lambda *a: None, auto_ack=True)  # never dispatched: never reads
    pub = b.connect().channel()
    for _ in range(40):
        pub.basic_publish("", big, b"x" * 1024 * 1024)
    other = b.connect()
    och = other.channel()
    q = uniq + "-rpc"
    och.queue_declare(q)
    # Round trips on another connection stay fast while the slow consumer's socket is full.
    import time
    worst = 0.0
    for i in range(200):
        t0 = time.monotonic()
        och.basic_publish("", q, b"%d" % i)
        m, _p, body = och.basic_get(q, auto_ack=True)
        worst = max(worst, time.monotonic() - t0)
        assert body == b"%d" % i
    assert worst < 0.5, "a round trip took %.3f s" % worst
    other.close()
    slow.close()
