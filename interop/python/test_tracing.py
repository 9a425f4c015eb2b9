"""The firehose tracer (rabbitmqctl trace_on): copies of every publish and delivery in a vhost go
to its amq.rabbitmq.trace exchange, as RabbitMQ's, and nothing is traced while it is off."""

import pika
import pytest

from admin_util import Api, ctl
from conftest import wait_for


@pytest.fixture
def node(broker_factory):
    return broker_factory.start(broker_factory.new_data_dir())


def drain(ch, q):
    got = []
    while True:
        m, props, body = ch.basic_get(q, auto_ack=True)
        if m is None:
            return got
        got.append((m.routing_key, props.headers or {}, body))


def test_trace_on_copies_publishes_and_deliveries(node):
    conn = node.connect()
    ch = conn.channel()
    ch.queue_declare("work")
    tq = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(tq, "amq.rabbitmq.trace", "#")
    # Off: nothing traced.
    ch.basic_publish("", "work", b"untraced")
    assert ch.basic_get("work", auto_ack=True)[2] == b"untraced"
    assert drain(ch, tq) == []

    r = ctl(node, "trace_on")
    assert r.returncode == 0, r.stderr
    assert Api(node).ok("GET", "/vhosts/%2F")["tracing"] is True
    ch.basic_publish("", "work", b"hello", pika.BasicProperties(content_type="text/plain", delivery_mode=2,
                                                                 headers={"k": "v"}))
    m, _, body = ch.basic_get("work", auto_ack=False)
    assert body == b"hello"
    ch.basic_ack(m.delivery_tag)
    traces = wait_for(5, lambda: drain(ch, tq))
    assert [t[0] for t in traces] == ["publish.", "deliver.work"], traces
    (_, pub, pbody), (_, dlv, dbody) = traces
    assert pbody == dbody == b"hello"
    assert pub["exchange_name"] == "" and pub["routing_keys"] == ["work"]
    assert pub["properties"]["content_type"] == "text/plain"
    assert pub["properties"]["delivery_mode"] == 2
    assert pub["properties"]["headers"] == {"k": "v"}
    assert pub["routed_queues"] == ["work"]
    assert pub["user"] == "guest" and pub["vhost"] == "/" and pub["node"].startswith("warren@")
    assert dlv["redelivered"] == 0 and "routed_queues" not in dlv
    # Consuming from the trace queue is not itself traced (no loop).
    assert drain(ch, tq) == []

    # Publishing to the trace exchange is refused: it is internal, as RabbitMQ's.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_publish("amq.rabbitmq.trace", "x", b"no")
        ch.queue_declare("work", passive=True)
    assert e.value.reply_code == 403

    ch = conn.channel()
    assert ctl(node, "trace_off").returncode == 0
    ch.basic_publish("", "work", b"off again")
    assert ch.basic_get("work", auto_ack=True)[2] == b"off again"
    assert drain(ch, tq) == []
    assert Api(node).ok("GET", "/vhosts/%2F")["tracing"] is False
    conn.close()


def test_trace_of_consumer_deliveries_and_other_vhosts(node):
    api = Api(node)
    api.ok("PUT", "/vhosts/other", {"description": "kept"})
    api.ok("PUT", "/permissions/other/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    # Over HTTP, as the management UI does; the description stays.
    api.ok("PUT", "/vhosts/other", {"tracing": True})
    v = api.ok("GET", "/vhosts/other")
    assert v["tracing"] is True and v["description"] == "kept"
    conn = node.connect(virtual_host="other")
    ch = conn.channel()
    tq = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(tq, "amq.rabbitmq.trace", "deliver.#")
    ch.exchange_declare("orders", "topic")
    ch.queue_declare("eu")
    ch.queue_bind("eu", "orders", "eu.*")
    got = []
    ch.basic_consume("eu", lambda c, m, p, b: got.append(b), auto_ack=True)
    ch.basic_publish("orders", "eu.fr", b"commande")
    wait_for(5, lambda: got, pump=conn)
    traces = wait_for(5, lambda: drain(ch, tq))
    assert [(t[0], t[1]["exchange_name"], t[1]["routing_keys"], t[2]) for t in traces] == [
        ("deliver.eu", "orders", ["eu.fr"], b"commande")]
    # "/" does not trace.
    assert api.ok("GET", "/vhosts/%2F")["tracing"] is False
    r = ctl(node, "trace_on", "-p", "nope")
    assert r.returncode == 65, (r.stdout, r.stderr)
    conn.close()


def test_a_delayed_publish_is_traced_when_published(node):
    conn = node.connect()
    ch = conn.channel()
    tq = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(tq, "amq.rabbitmq.trace", "#")
    ch.exchange_declare("later", "x-delayed-message", arguments={"x-delayed-type": "direct"})
    ch.queue_declare("late")
    ch.queue_bind("late", "later", "k")
    assert ctl(node, "trace_on").returncode == 0
    ch.basic_publish("later", "k", b"soon", pika.BasicProperties(headers={"x-delay": 300}))
    first = wait_for(5, lambda: drain(ch, tq))
    assert [(t[0], t[1]["routed_queues"]) for t in first] == [("publish.later", [])], first
    m = wait_for(5, lambda: ch.basic_get("late", auto_ack=True)[0])
    assert m is not None
    assert [t[0] for t in wait_for(5, lambda: drain(ch, tq))] == ["deliver.late"]
    conn.close()
