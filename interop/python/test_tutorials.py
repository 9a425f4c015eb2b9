"""The six classic RabbitMQ tutorials (pika 1.x), run against the broker.

Each tutorial uses a real producer and a real consumer on separate
connections (tutorial 1 in separate processes). Ordering within one queue
from one publishing channel is used to synchronise: a final sentinel message
proves that everything published before it has already been routed.
"""

import os
import subprocess
import sys
import threading
import time
import uuid

import pika
import pytest

from conftest import HERE, pump_for, wait_for

SCRIPTS = os.path.join(HERE, "scripts")


def _script_env(broker):
    env = dict(os.environ)
    env["AMQP_HOST"] = broker.host
    env["AMQP_PORT"] = str(broker.port)
    return env


def _collect(ch, queue, into, auto_ack=True):
    """Consume `queue` on `ch`, appending decoded bodies to `into`."""
    def cb(c, method, props, body):
        into.append(body.decode())
        if not auto_ack:
            c.basic_ack(method.delivery_tag)
    return ch.basic_consume(queue=queue, on_message_callback=cb, auto_ack=auto_ack)


# ---------------------------------------------------------------------------
# 1. Hello World
# ---------------------------------------------------------------------------

def _purge_hello(broker):
    conn = broker.connect()
    try:
        ch = conn.channel()
        ch.queue_declare(queue="hello")
        ch.queue_purge(queue="hello")
    finally:
        conn.close()


def test_hello_world_scripts_consumer_first(broker):
    """The tutorial's receive.py, waiting on queue `hello`, prints the message sent by send.py in another process."""
    _purge_hello(broker)
    env = _script_env(broker)
    recv = subprocess.Popen(
        [sys.executable, os.path.join(SCRIPTS, "receive.py"), "--once"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        first = recv.stdout.readline()  # printed after basic.consume-ok
        assert first.strip() == "[*] Waiting for messages. To exit press CTRL+C", (
            first, recv.stderr.read() if recv.poll() is not None else "")
        sent = subprocess.run(
            [sys.executable, os.path.join(SCRIPTS, "send.py")],
            capture_output=True, text=True, env=env, timeout=15)
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.strip() == "[x] Sent 'Hello World!'"
        out, err = recv.communicate(timeout=15)
        assert recv.returncode == 0, err
        assert [l.strip() for l in out.strip().splitlines()] == ["[x] Received b'Hello World!'"]
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()


def test_hello_world_scripts_producer_first(broker):
    """A message sent by send.py before any consumer exists waits in `hello` and is received by a later receive.py."""
    _purge_hello(broker)
    env = _script_env(broker)
    sent = subprocess.run([sys.executable, os.path.join(SCRIPTS, "send.py")],
                          capture_output=True, text=True, env=env, timeout=15)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == "[x] Sent 'Hello World!'"
    recv = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS, "receive.py"), "--once"],
        capture_output=True, text=True, env=env, timeout=15)
    assert recv.returncode == 0, recv.stderr
    assert [l.strip() for l in recv.stdout.strip().splitlines()] == [
        "[*] Waiting for messages. To exit press CTRL+C",
        "[x] Received b'Hello World!'",
    ]


def test_hello_world_in_process(broker, connect):
    """Queue `hello` on the default exchange delivers a published body unchanged to a consumer on another connection."""
    q = "hello-inproc-%s" % uuid.uuid4().hex[:8]
    consumer = connect()
    cch = consumer.channel()
    declared = cch.queue_declare(queue=q)
    assert declared.method.queue == q
    assert declared.method.message_count == 0
    got = []
    _collect(cch, q, got)

    producer = connect()
    pch = producer.channel()
    pch.queue_declare(queue=q)
    pch.basic_publish(exchange="", routing_key=q, body=b"Hello World!")

    wait_for(5, lambda: got, pump=consumer)
    assert got == ["Hello World!"]
    cch.queue_delete(q)


# ---------------------------------------------------------------------------
# 2. Work queues
# ---------------------------------------------------------------------------

def test_work_queues_fair_dispatch_with_prefetch_1(broker, connect, uniq):
    """With prefetch_count=1 and manual acks, a busy worker holding an unacked task gets nothing more while the idle worker takes all the rest."""
    q = "task_queue-" + uniq
    w1c, w2c, pc = connect(), connect(), connect()
    w1, w2, p = w1c.channel(), w2c.channel(), pc.channel()
    for ch in (w1, w2, p):
        ch.queue_declare(queue=q, durable=True)
    w1.basic_qos(prefetch_count=1)
    w2.basic_qos(prefetch_count=1)

    busy = []            # worker 1 never acks (it's "busy")
    done = []            # worker 2 acks every task

    def busy_cb(ch, method, props, body):
        busy.append((body.decode(), props.delivery_mode))

    def work_cb(ch, method, props, body):
        done.append((body.decode(), props.delivery_mode))
        ch.basic_ack(delivery_tag=method.delivery_tag)

    w1.basic_consume(queue=q, on_message_callback=busy_cb)
    # Publish the first task while only worker 1 is consuming.
    persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    p.basic_publish(exchange="", routing_key=q, body="task 0....", properties=persistent)
    wait_for(5, lambda: busy, pump=w1c)
    w2.basic_consume(queue=q, on_message_callback=work_cb)

    for i in range(1, 7):
        p.basic_publish(exchange="", routing_key=q, body="task %d." % i, properties=persistent)

    wait_for(5, lambda: len(done) == 6, pump=[w1c, w2c])
    pump_for(0.3, [w1c, w2c])
    assert busy == [("task 0....", 2)]
    assert done == [("task %d." % i, 2) for i in range(1, 7)]

    # Once worker 1 acks, it becomes eligible again and gets the next task.
    w1.basic_ack(delivery_tag=1)
    p.basic_publish(exchange="", routing_key=q, body="task 7.", properties=persistent)
    # Worker 2 is idle too, so either may get it; exactly one must.
    wait_for(5, lambda: len(busy) + len(done) == 8, pump=[w1c, w2c])
    pump_for(0.2, [w1c, w2c])
    assert len(busy) + len(done) == 8
    w1.queue_delete(q)


def test_work_queues_two_threaded_workers_share_all_tasks(broker, connect, uniq):
    """Two worker threads with prefetch 1 and manual acks process every persistent task exactly once, and both get work."""
    q = "task_queue-" + uniq
    n_tasks = 20
    results = {}
    lock = threading.Lock()
    ready = threading.Barrier(3)
    stop = threading.Event()
    errors = []

    def worker(name):
        try:
            conn = broker.connect()
            ch = conn.channel()
            ch.queue_declare(queue=q, durable=True)
            ch.basic_qos(prefetch_count=1)

            def cb(c, method, props, body):
                # "Work" = count the dots, like the tutorial's time.sleep(dots).
                assert props.delivery_mode == 2
                with lock:
                    results.setdefault(body.decode(), []).append(name)
                c.basic_ack(delivery_tag=method.delivery_tag)

            ch.basic_consume(queue=q, on_message_callback=cb)
            ready.wait(10)
            while not stop.is_set():
                conn.process_data_events(time_limit=0.02)
            conn.close()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
            try:
                ready.abort()
            except Exception:
                pass

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("w1", "w2")]
    for t in threads:
        t.start()
    try:
        ready.wait(10)
        pconn = connect()
        pch = pconn.channel()
        pch.queue_declare(queue=q, durable=True)
        for i in range(n_tasks):
            pch.basic_publish(
                exchange="", routing_key=q, body="task %02d %s" % (i, "." * (i % 3)),
                properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
        wait_for(10, lambda: len(results) == n_tasks and not errors)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors
    assert sorted(results) == sorted("task %02d %s" % (i, "." * (i % 3)) for i in range(n_tasks))
    assert all(len(v) == 1 for v in results.values()), results
    by_worker = {"w1": 0, "w2": 0}
    for v in results.values():
        by_worker[v[0]] += 1
    assert by_worker["w1"] > 0 and by_worker["w2"] > 0, by_worker
    after = pch.queue_declare(queue=q, durable=True, passive=True)
    assert after.method.message_count == 0
    pch.queue_delete(q)


def test_work_queues_durable_queue_and_persistent_messages_survive_restart(broker_factory, uniq):
    """A durable queue and its persistent messages are still there after the broker is stopped with SIGTERM and restarted on the same data dir; a transient message is not."""
    q = "task_queue-" + uniq
    data_dir = broker_factory.new_data_dir()
    b1 = broker_factory.start(data_dir)
    conn = b1.connect()
    ch = conn.channel()
    ch.queue_declare(queue=q, durable=True)
    ch.confirm_delivery()
    ch.basic_publish(exchange="", routing_key=q, body=b"persistent 1",
                     properties=pika.BasicProperties(delivery_mode=2))
    ch.basic_publish(exchange="", routing_key=q, body=b"transient",
                     properties=pika.BasicProperties(delivery_mode=1))
    ch.basic_publish(exchange="", routing_key=q, body=b"persistent 2",
                     properties=pika.BasicProperties(delivery_mode=2, content_type="text/plain"))
    conn.close()
    b1.stop()
    assert b1.proc.returncode is not None

    b2 = broker_factory.start(data_dir)
    conn = b2.connect()
    ch = conn.channel()
    ok = ch.queue_declare(queue=q, durable=True, passive=True)
    assert ok.method.message_count == 2
    m1 = ch.basic_get(q, auto_ack=True)
    m2 = ch.basic_get(q, auto_ack=True)
    assert (m1[2], m2[2]) == (b"persistent 1", b"persistent 2")
    assert m1[1].delivery_mode == 2
    assert m2[1].content_type == "text/plain"
    assert ch.basic_get(q) == (None, None, None)
    conn.close()


# ---------------------------------------------------------------------------
# 3. Publish/Subscribe
# ---------------------------------------------------------------------------

def test_publish_subscribe_fanout_logs(broker, connect):
    """Fanout exchange `logs` copies every log line to two subscribers' exclusive server-named (amq.gen-*) queues."""
    subs = []
    for _ in range(2):
        c = connect()
        ch = c.channel()
        ch.exchange_declare(exchange="logs", exchange_type="fanout")
        result = ch.queue_declare(queue="", exclusive=True)
        qname = result.method.queue
        assert qname.startswith("amq.gen-"), qname
        ch.queue_bind(exchange="logs", queue=qname)
        got = []
        _collect(ch, qname, got)
        subs.append((c, ch, qname, got))
    assert subs[0][2] != subs[1][2]

    pc = connect()
    pch = pc.channel()
    pch.exchange_declare(exchange="logs", exchange_type="fanout")
    lines = ["info: Hello World!", "warning: disk 91%", "error: boom"]
    for line in lines:
        pch.basic_publish(exchange="logs", routing_key="", body=line)

    conns = [s[0] for s in subs]
    wait_for(5, lambda: all(len(s[3]) == len(lines) for s in subs), pump=conns)
    for s in subs:
        assert s[3] == lines

    # Exclusive queues vanish with their connection.
    gone = subs[0][2]
    subs[0][0].close()

    def queue_gone():
        ch = pc.channel()
        try:
            ch.queue_declare(queue=gone, passive=True)
        except pika.exceptions.ChannelClosedByBroker as e:
            return e.reply_code == 404
        ch.close()
        return False
    wait_for(5, queue_gone)


# ---------------------------------------------------------------------------
# 4. Routing
# ---------------------------------------------------------------------------

def test_routing_direct_exchange_by_severity(broker, connect, uniq):
    """A direct exchange delivers each severity only to the subscribers bound with that key; unbound severities are dropped."""
    ex = "direct_logs-" + uniq
    bindings = {"errors_only": ["error"], "all_but_debug": ["info", "warning", "error"]}
    subs = {}
    for name, keys in bindings.items():
        c = connect()
        ch = c.channel()
        ch.exchange_declare(exchange=ex, exchange_type="direct")
        qname = ch.queue_declare(queue="", exclusive=True).method.queue
        for severity in keys:
            ch.queue_bind(exchange=ex, queue=qname, routing_key=severity)
        ch.queue_bind(exchange=ex, queue=qname, routing_key="sentinel")
        got = []
        _collect(ch, qname, got)
        subs[name] = (c, got)

    pc = connect()
    pch = pc.channel()
    pch.exchange_declare(exchange=ex, exchange_type="direct")
    sent = [("info", "i1"), ("debug", "d1"), ("warning", "w1"), ("error", "e1"),
            ("Error", "E-case"), ("info", "i2"), ("error", "e2"), ("", "empty")]
    for sev, body in sent:
        pch.basic_publish(exchange=ex, routing_key=sev, body=body)
    pch.basic_publish(exchange=ex, routing_key="sentinel", body="END")

    conns = [c for c, _ in subs.values()]
    wait_for(5, lambda: all(got and got[-1] == "END" for _, got in subs.values()), pump=conns)
    assert subs["errors_only"][1] == ["e1", "e2", "END"]
    assert subs["all_but_debug"][1] == ["i1", "w1", "e1", "i2", "e2", "END"]


def test_routing_direct_multiple_bindings_same_key(broker, connect, uniq):
    """Two queues bound with the same key both get the message (direct exchange multicast)."""
    ex = "direct_logs-" + uniq
    c = connect()
    ch = c.channel()
    ch.exchange_declare(exchange=ex, exchange_type="direct")
    qs = []
    for _ in range(2):
        qn = ch.queue_declare(queue="", exclusive=True).method.queue
        ch.queue_bind(exchange=ex, queue=qn, routing_key="black")
        qs.append(qn)
    ch.confirm_delivery()
    ch.basic_publish(exchange=ex, routing_key="black", body="b", mandatory=True)
    for qn in qs:
        m, _, body = ch.basic_get(qn, auto_ack=True)
        assert body == b"b"
        assert m.routing_key == "black" and m.exchange == ex


# ---------------------------------------------------------------------------
# 5. Topics
# ---------------------------------------------------------------------------

TOPIC_PATTERNS = [
    "*.orange.*", "*.*.rabbit", "lazy.#", "#", "kern.*", "a.*.b", "a.#.b", "*", "#.end",
    "quick.orange.rabbit", "#.#", "*.#",
]

# routing key -> set of patterns that must match, per RabbitMQ semantics
# (words are split on '.', '*' = exactly one word (which may be empty),
#  '#' = zero or more words, an empty routing key has zero words).
TOPIC_CASES = {
    "quick.orange.rabbit": {"*.orange.*", "*.*.rabbit", "#", "quick.orange.rabbit", "#.#", "*.#"},
    "lazy.orange.elephant": {"*.orange.*", "lazy.#", "#", "#.#", "*.#"},
    "quick.orange.fox": {"*.orange.*", "#", "#.#", "*.#"},
    "lazy.brown.fox": {"lazy.#", "#", "#.#", "*.#"},
    "lazy.pink.rabbit": {"*.*.rabbit", "lazy.#", "#", "#.#", "*.#"},
    "quick.brown.fox": {"#", "#.#", "*.#"},
    "orange": {"#", "*", "#.#", "*.#"},
    "quick.orange.male.rabbit": {"#", "#.#", "*.#"},
    "lazy.orange.male.rabbit": {"lazy.#", "#", "#.#", "*.#"},
    "lazy": {"lazy.#", "#", "*", "#.#", "*.#"},                 # '#' matches zero words
    "lazy.": {"lazy.#", "#", "#.#", "*.#"},                      # one empty trailing word
    "kern": {"#", "*", "#.#", "*.#"},                            # '*' needs exactly one word
    "kern.critical": {"kern.*", "#", "#.#", "*.#"},
    "kern.critical.disk": {"#", "#.#", "*.#"},
    "kern.": {"kern.*", "#", "#.#", "*.#"},                      # '*' matches an empty word
    "Kern.critical": {"#", "#.#", "*.#"},                        # case-sensitive
    "a.b": {"a.#.b", "#", "#.#", "*.#"},
    "a.x.b": {"a.*.b", "a.#.b", "#", "#.#", "*.#"},
    "a..b": {"a.*.b", "a.#.b", "#", "#.#", "*.#"},               # empty middle word
    "a.x.y.b": {"a.#.b", "#", "#.#", "*.#"},
    "end": {"#.end", "#", "*", "#.#", "*.#"},
    "the.end": {"#.end", "#", "#.#", "*.#"},
    "the.end.not": {"#", "#.#", "*.#"},
    "": {"#", "#.#"},                                            # zero words
}


def test_topics_tutorial_patterns(broker, connect, uniq):
    """The tutorial's Q1 `*.orange.*` and Q2 `*.*.rabbit` + `lazy.#` receive exactly the documented messages; a key matching two bindings of one queue is delivered once."""
    ex = "topic_logs-" + uniq
    c = connect()
    ch = c.channel()
    ch.exchange_declare(exchange=ex, exchange_type="topic")
    q1 = ch.queue_declare(queue="", exclusive=True).method.queue
    q2 = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(exchange=ex, queue=q1, routing_key="*.orange.*")
    ch.queue_bind(exchange=ex, queue=q2, routing_key="*.*.rabbit")
    ch.queue_bind(exchange=ex, queue=q2, routing_key="lazy.#")
    got1, got2 = [], []
    _collect(ch, q1, got1)
    _collect(ch, q2, got2)
    ch.queue_bind(exchange=ex, queue=q1, routing_key="sentinel")
    ch.queue_bind(exchange=ex, queue=q2, routing_key="sentinel")

    pc = connect()
    pch = pc.channel()
    keys = ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox",
            "lazy.brown.fox", "lazy.pink.rabbit", "quick.brown.fox", "orange",
            "quick.orange.male.rabbit", "lazy.orange.male.rabbit"]
    for k in keys:
        pch.basic_publish(exchange=ex, routing_key=k, body=k)
    pch.basic_publish(exchange=ex, routing_key="sentinel", body="END")
    wait_for(5, lambda: got1[-1:] == ["END"] and got2[-1:] == ["END"], pump=c)
    assert got1 == ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "END"]
    assert got2 == ["quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox",
                    "lazy.pink.rabbit", "lazy.orange.male.rabbit", "END"]


def test_topics_matching_semantics_matrix(broker, connect, uniq):
    """Topic matching follows RabbitMQ exactly: '#' matches zero or more words, '*' exactly one (possibly empty) word, empty keys have zero words, matching is case-sensitive."""
    ex = "topic_matrix-" + uniq
    c = connect()
    ch = c.channel()
    ch.exchange_declare(exchange=ex, exchange_type="topic")
    queues = {}
    for pat in TOPIC_PATTERNS:
        qn = ch.queue_declare(queue="", exclusive=True).method.queue
        ch.queue_bind(exchange=ex, queue=qn, routing_key=pat)
        queues[pat] = qn
    ch.confirm_delivery()  # a confirm arrives only after routing is complete
    for key in TOPIC_CASES:
        ch.basic_publish(exchange=ex, routing_key=key, body=key.encode() or b"<empty>")

    actual = {}
    for pat, qn in queues.items():
        while True:
            m, _, body = ch.basic_get(qn, auto_ack=True)
            if m is None:
                break
            key = "" if body == b"<empty>" else body.decode()
            assert m.routing_key == key
            actual.setdefault(key, set()).add(pat)
            # each (key, pattern) at most once
    expected = {k: v for k, v in TOPIC_CASES.items() if v}
    mismatches = {k: {"expected": sorted(expected.get(k, set())), "got": sorted(actual.get(k, set()))}
                  for k in set(expected) | set(actual) if expected.get(k, set()) != actual.get(k, set())}
    assert not mismatches, mismatches


def test_topics_unbind_stops_routing(broker, connect, uniq):
    """After queue_unbind of `kern.*`, messages for kern.x no longer reach the queue, while the remaining `#.disk` binding still works."""
    ex = "topic_unbind-" + uniq
    c = connect()
    ch = c.channel()
    ch.exchange_declare(exchange=ex, exchange_type="topic")
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(exchange=ex, queue=q, routing_key="kern.*")
    ch.queue_bind(exchange=ex, queue=q, routing_key="#.disk")
    ch.confirm_delivery()
    ch.basic_publish(exchange=ex, routing_key="kern.a", body="1")
    ch.queue_unbind(exchange=ex, queue=q, routing_key="kern.*")
    ch.basic_publish(exchange=ex, routing_key="kern.b", body="2")
    ch.basic_publish(exchange=ex, routing_key="kern.disk", body="3")
    bodies = []
    while True:
        m, _, body = ch.basic_get(q, auto_ack=True)
        if m is None:
            break
        bodies.append(body)
    assert bodies == [b"1", b"3"]


# ---------------------------------------------------------------------------
# 6. RPC
# ---------------------------------------------------------------------------

def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class FibServer:
    """The tutorial's rpc_server.py, run in a thread with its own connection."""

    def __init__(self, broker, queue):
        self.broker = broker
        self.queue = queue
        self.seen_reply_to = []
        self.ready = threading.Event()
        self.error = None
        self.conn = None
        self.channel = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.conn = self.broker.connect()
            self.channel = ch = self.conn.channel()
            ch.queue_declare(queue=self.queue)
            ch.basic_qos(prefetch_count=1)

            def on_request(c, method, props, body):
                n = int(body)
                self.seen_reply_to.append(props.reply_to)
                c.basic_publish(exchange="", routing_key=props.reply_to,
                                properties=pika.BasicProperties(correlation_id=props.correlation_id),
                                body=str(fib(n)))
                c.basic_ack(delivery_tag=method.delivery_tag)

            ch.basic_consume(queue=self.queue, on_message_callback=on_request)
            self.ready.set()
            ch.start_consuming()
            self.conn.close()
        except Exception as e:  # pragma: no cover - surfaced by stop()
            self.error = e
            self.ready.set()

    def start(self):
        self.thread.start()
        assert self.ready.wait(10), "rpc server did not start"
        assert self.error is None, self.error
        return self

    def stop(self):
        if self.conn is not None and self.conn.is_open:
            self.conn.add_callback_threadsafe(self.channel.stop_consuming)
        self.thread.join(10)
        assert not self.thread.is_alive()
        assert self.error is None, self.error


class FibonacciRpcClient:
    """The tutorial's rpc_client.py (exclusive callback queue + correlation_id)."""

    def __init__(self, broker, queue):
        self.queue = queue
        self.connection = broker.connect()
        self.channel = self.connection.channel()
        result = self.channel.queue_declare(queue="", exclusive=True)
        self.callback_queue = result.method.queue
        self.channel.basic_consume(queue=self.callback_queue,
                                   on_message_callback=self.on_response, auto_ack=True)
        self.response = None
        self.corr_id = None
        self.stray = []

    def on_response(self, ch, method, props, body):
        if self.corr_id == props.correlation_id:
            self.response = body
        else:
            self.stray.append((props.correlation_id, body))

    def call(self, n):
        self.response = None
        self.corr_id = str(uuid.uuid4())
        self.channel.basic_publish(
            exchange="", routing_key=self.queue,
            properties=pika.BasicProperties(reply_to=self.callback_queue,
                                            correlation_id=self.corr_id),
            body=str(n))
        wait_for(5, lambda: self.response is not None, pump=self.connection)
        return int(self.response)


def test_rpc_fibonacci_with_callback_queue(broker, uniq):
    """RPC over an exclusive callback queue returns fib(n) for each request, matched by correlation_id."""
    q = "rpc_queue-" + uniq
    server = FibServer(broker, q).start()
    try:
        client = FibonacciRpcClient(broker, q)
        assert client.callback_queue.startswith("amq.gen-")
        for n in (0, 1, 2, 10, 30):
            assert client.call(n) == fib(n)
        assert client.call(30) == 832040
        assert client.stray == []
        client.connection.close()
    finally:
        server.stop()
    assert len(server.seen_reply_to) == 6
    assert set(server.seen_reply_to) == {client.callback_queue}


def test_rpc_direct_reply_to(broker, connect, uniq):
    """RPC via direct reply-to: the client consumes `amq.rabbitmq.reply-to` (auto_ack), the server sees a routable amq.rabbitmq.reply-to.* address, and replies arrive with the right correlation_id."""
    q = "rpc_queue-" + uniq
    server = FibServer(broker, q).start()
    try:
        c = connect()
        ch = c.channel()
        replies = []
        ch.basic_consume(queue="amq.rabbitmq.reply-to",
                         on_message_callback=lambda _c, m, p, b: replies.append((p.correlation_id, b)),
                         auto_ack=True)
        for i, n in enumerate((7, 20, 25)):
            corr = "corr-%d" % i
            ch.basic_publish(exchange="", routing_key=q, body=str(n),
                             properties=pika.BasicProperties(reply_to="amq.rabbitmq.reply-to",
                                                             correlation_id=corr))
            wait_for(5, lambda: len(replies) == i + 1, pump=c)
            assert replies[-1] == (corr, str(fib(n)).encode())
    finally:
        server.stop()
    assert len(server.seen_reply_to) == 3
    for rt in server.seen_reply_to:
        assert rt.startswith("amq.rabbitmq.reply-to."), rt


def test_direct_reply_to_requires_consumer_first(broker, connect, uniq):
    """Publishing with reply_to=amq.rabbitmq.reply-to without first consuming it closes the channel with 406 PRECONDITION_FAILED."""
    c = connect()
    ch = c.channel()
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.basic_publish(exchange="", routing_key=q, body=b"x",
                     properties=pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare(queue=q, passive=True)
    assert ei.value.reply_code == 406
    assert ei.value.reply_text.startswith("PRECONDITION_FAILED")
