"""Broader pika 1.x behaviour that RabbitMQ users rely on, against the broker.

Negative checks ("X does not happen") pump the connection for a short,
fixed time after a positive synchronisation point; everything else waits on
concrete events (deliveries, confirms, callbacks), never on sleeps.
"""

import contextlib
import datetime
import decimal
import os

import pika
import pika.exceptions as pe
import pytest

from conftest import msg_count, pump_for, queue_exists, wait_for


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def channel_error(code, text_prefix):
    """Expect the broker to close the channel with `code` and a reply text
    starting with `text_prefix`."""
    with pytest.raises(pe.ChannelClosedByBroker) as ei:
        yield ei
    assert (ei.value.reply_code, ei.value.reply_text[:len(text_prefix)]) == (code, text_prefix), \
        (ei.value.reply_code, ei.value.reply_text)


def sync(ch):
    """A cheap synchronous round trip; raises if the broker closed the channel
    because of an earlier asynchronous method (publish, ack, ...)."""
    ch.exchange_declare(exchange="amq.direct", passive=True)


def drain(ch, queue):
    """basic_get (auto-ack) until empty; returns the bodies."""
    out = []
    while True:
        m, _, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return out
        out.append(body)


def confirmed_publisher(connect):
    ch = connect().channel()
    ch.confirm_delivery()
    return ch


# ---------------------------------------------------------------------------
# connection-level
# ---------------------------------------------------------------------------

def test_server_capabilities_advertised(connection):
    """connection.start advertises the RabbitMQ capabilities pika and other clients check before using extensions."""
    caps = connection._impl.server_capabilities
    for cap in ("publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                "consumer_cancel_notify", "per_consumer_qos", "direct_reply_to",
                "authentication_failure_close", "connection.blocked"):
        assert caps.get(cap) is True, (cap, caps)


def test_wrong_password_is_refused_with_403(broker):
    """Connecting with a wrong password fails with an authentication error carrying 403 ACCESS_REFUSED."""
    params = broker.params(credentials=pika.PlainCredentials("guest", "not-the-password"))
    with pytest.raises((pe.ProbableAuthenticationError, pe.AuthenticationError)) as ei:
        pika.BlockingConnection(params)
    assert "403" in str(ei.value), str(ei.value)
    assert "ACCESS_REFUSED" in str(ei.value), str(ei.value)


def test_unknown_user_is_refused_with_403(broker):
    """Connecting as a user that does not exist fails with 403 ACCESS_REFUSED."""
    params = broker.params(credentials=pika.PlainCredentials("nobody", "guest"))
    with pytest.raises((pe.ProbableAuthenticationError, pe.AuthenticationError)) as ei:
        pika.BlockingConnection(params)
    assert "403" in str(ei.value), str(ei.value)


def test_unknown_vhost_is_refused_with_530(broker):
    """Opening vhost 'nope' is refused with connection.close 530 NOT_ALLOWED."""
    with pytest.raises((pe.ProbableAccessDeniedError, pe.ConnectionClosedByBroker)) as ei:
        pika.BlockingConnection(broker.params(virtual_host="nope"))
    assert "530" in str(ei.value), str(ei.value)
    assert "NOT_ALLOWED" in str(ei.value), str(ei.value)


# ---------------------------------------------------------------------------
# basic.get / ack / nack / reject
# ---------------------------------------------------------------------------

def test_basic_get_returns_messages_in_order_with_remaining_count(channel, uniq):
    """basic_get returns messages FIFO with the exchange, routing key, redelivered=False and the number of messages left."""
    q = uniq
    channel.queue_declare(queue=q)
    channel.confirm_delivery()
    for i in range(3):
        channel.basic_publish(exchange="", routing_key=q, body="m%d" % i)
    m, props, body = channel.basic_get(q)
    assert body == b"m0"
    assert m.message_count == 2
    assert m.redelivered is False
    assert (m.exchange, m.routing_key) == ("", q)
    assert m.delivery_tag == 1
    channel.basic_ack(m.delivery_tag)
    m2, _, body2 = channel.basic_get(q, auto_ack=True)
    assert (body2, m2.message_count, m2.delivery_tag) == (b"m1", 1, 2)


def test_basic_get_on_empty_queue(channel, uniq):
    """basic_get on an empty queue returns get-empty, i.e. (None, None, None) in pika."""
    channel.queue_declare(queue=uniq)
    assert channel.basic_get(uniq) == (None, None, None)
    assert channel.basic_get(uniq, auto_ack=True) == (None, None, None)


def test_nack_with_requeue_redelivers_with_redelivered_flag(channel, uniq):
    """basic_nack(requeue=True) puts the message back at the head of the queue and it comes back with redelivered=True."""
    q = uniq
    channel.queue_declare(queue=q)
    channel.confirm_delivery()
    channel.basic_publish(exchange="", routing_key=q, body=b"a")
    channel.basic_publish(exchange="", routing_key=q, body=b"b")
    m, _, body = channel.basic_get(q)
    assert (body, m.redelivered) == (b"a", False)
    channel.basic_nack(m.delivery_tag, requeue=True)
    m, _, body = channel.basic_get(q)
    assert (body, m.redelivered) == (b"a", True)
    channel.basic_ack(m.delivery_tag)
    m, _, body = channel.basic_get(q, auto_ack=True)
    assert (body, m.redelivered) == (b"b", False)


def test_reject_with_requeue_redelivers_with_redelivered_flag(channel, uniq):
    """basic_reject(requeue=True) requeues the message and the redelivery has redelivered=True."""
    q = uniq
    channel.queue_declare(queue=q)
    channel.confirm_delivery()
    channel.basic_publish(exchange="", routing_key=q, body=b"r")
    m, _, _ = channel.basic_get(q)
    channel.basic_reject(m.delivery_tag, requeue=True)
    m, _, body = channel.basic_get(q, auto_ack=True)
    assert (body, m.redelivered) == (b"r", True)
    assert channel.basic_get(q) == (None, None, None)


def test_reject_and_nack_without_requeue_discard(channel, uniq):
    """basic_reject(requeue=False) and basic_nack(requeue=False) drop the messages (no dead-letter exchange configured)."""
    q = uniq
    channel.queue_declare(queue=q)
    channel.confirm_delivery()
    for b in (b"x", b"y", b"z"):
        channel.basic_publish(exchange="", routing_key=q, body=b)
    m1, _, _ = channel.basic_get(q)
    channel.basic_reject(m1.delivery_tag, requeue=False)
    m2, _, _ = channel.basic_get(q)
    channel.basic_nack(m2.delivery_tag, requeue=False)
    m3, _, body = channel.basic_get(q, auto_ack=True)
    assert body == b"z" and m3.redelivered is False and m3.message_count == 0
    assert channel.queue_declare(queue=q, passive=True).method.message_count == 0


def test_nack_multiple_requeues_all_up_to_tag(channel, uniq):
    """basic_nack(multiple=True, requeue=True) requeues every unacked delivery up to the tag, in original order."""
    q = uniq
    channel.queue_declare(queue=q)
    channel.confirm_delivery()
    for i in range(4):
        channel.basic_publish(exchange="", routing_key=q, body="n%d" % i)
    tags = [channel.basic_get(q)[0].delivery_tag for _ in range(3)]
    channel.basic_nack(tags[-1], multiple=True, requeue=True)
    got = []
    for _ in range(4):
        m, _, body = channel.basic_get(q, auto_ack=True)
        got.append((body.decode(), m.redelivered))
    assert got == [("n0", True), ("n1", True), ("n2", True), ("n3", False)]


def test_ack_multiple_acks_all_up_to_tag(broker, connect, uniq):
    """basic_ack(multiple=True) settles every earlier delivery, so closing the channel requeues only the later ones."""
    q = uniq
    c = connect()
    ch = c.channel()
    ch.queue_declare(queue=q)
    ch.confirm_delivery()
    for i in range(4):
        ch.basic_publish(exchange="", routing_key=q, body="k%d" % i)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(4)]
    assert tags == [1, 2, 3, 4]
    ch.basic_ack(3, multiple=True)
    ch.close()
    ch2 = c.channel()
    wait_for(5, lambda: msg_count(c, q) == 1)
    m, _, body = ch2.basic_get(q, auto_ack=True)
    assert (body, m.redelivered) == (b"k3", True)


def test_ack_unknown_delivery_tag_closes_channel_406(channel, uniq):
    """Acking a delivery tag that was never issued closes the channel with 406 PRECONDITION_FAILED - unknown delivery tag."""
    channel.queue_declare(queue=uniq)
    channel.basic_ack(delivery_tag=42)
    with channel_error(406, "PRECONDITION_FAILED - unknown delivery tag 42"):
        sync(channel)


def test_double_ack_closes_channel_406(channel, uniq):
    """Acking the same delivery twice closes the channel with 406 PRECONDITION_FAILED."""
    channel.queue_declare(queue=uniq)
    channel.confirm_delivery()
    channel.basic_publish(exchange="", routing_key=uniq, body=b"1")
    m, _, _ = channel.basic_get(uniq)
    channel.basic_ack(m.delivery_tag)
    channel.basic_ack(m.delivery_tag)
    with channel_error(406, "PRECONDITION_FAILED - unknown delivery tag 1"):
        sync(channel)


def test_closing_channel_requeues_unacked_messages(connect, uniq):
    """Closing a channel that holds unacked deliveries puts them back in the queue, in order, marked redelivered."""
    q = uniq
    c = connect()
    ch = c.channel()
    ch.queue_declare(queue=q)
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish(exchange="", routing_key=q, body="u%d" % i)
    got = []
    ch.basic_consume(q, lambda _c, m, p, b: got.append(b))
    wait_for(5, lambda: len(got) == 3, pump=c)
    assert msg_count(c, q) == 0
    ch.close()
    wait_for(5, lambda: msg_count(c, q) == 3)
    ch2 = c.channel()
    redelivered = [ch2.basic_get(q, auto_ack=True) for _ in range(3)]
    assert [(r[2], r[0].redelivered) for r in redelivered] == [
        (b"u0", True), (b"u1", True), (b"u2", True)]


def test_closing_connection_requeues_unacked_messages(connect, uniq):
    """Closing a connection with unacked deliveries makes them available to another consumer with redelivered=True."""
    q = uniq
    c1 = connect()
    ch1 = c1.channel()
    ch1.queue_declare(queue=q)
    ch1.confirm_delivery()
    ch1.basic_publish(exchange="", routing_key=q, body=b"held")
    m, _, _ = ch1.basic_get(q)
    assert m is not None
    c1.close()
    c2 = connect()
    ch2 = c2.channel()
    wait_for(5, lambda: msg_count(c2, q) == 1)
    m, _, body = ch2.basic_get(q, auto_ack=True)
    assert (body, m.redelivered) == (b"held", True)


def test_prefetch_limits_unacked_deliveries(connect, uniq):
    """With basic_qos(prefetch_count=2) and no acks only 2 messages are delivered; each ack releases exactly one more."""
    q = uniq
    pub = confirmed_publisher(connect)
    pub.queue_declare(queue=q)
    for i in range(5):
        pub.basic_publish(exchange="", routing_key=q, body="p%d" % i)
    c = connect()
    ch = c.channel()
    ch.basic_qos(prefetch_count=2)
    got = []
    ch.basic_consume(q, lambda _c, m, p, b: got.append((m.delivery_tag, b)))
    wait_for(5, lambda: len(got) == 2, pump=c)
    pump_for(0.3, c)
    assert [b for _, b in got] == [b"p0", b"p1"]
    assert msg_count(c, q) == 3
    ch.basic_ack(got[0][0])
    wait_for(5, lambda: len(got) == 3, pump=c)
    pump_for(0.2, c)
    assert [b for _, b in got] == [b"p0", b"p1", b"p2"]
    ch.basic_ack(got[2][0], multiple=True)
    wait_for(5, lambda: len(got) == 5, pump=c)
    assert [b for _, b in got] == [b"p0", b"p1", b"p2", b"p3", b"p4"]


# ---------------------------------------------------------------------------
# publisher confirms / mandatory
# ---------------------------------------------------------------------------

def test_confirms_mandatory_unroutable_raises_unroutable_error(channel, uniq):
    """In confirm mode a mandatory publish that no queue accepts is returned, which pika raises as UnroutableError; routable ones succeed."""
    channel.queue_declare(queue=uniq)
    channel.confirm_delivery()
    channel.basic_publish(exchange="", routing_key=uniq, body=b"ok", mandatory=True)
    with pytest.raises(pe.UnroutableError) as ei:
        channel.basic_publish(exchange="", routing_key="no-such-queue-" + uniq,
                              body=b"lost", mandatory=True)
    returned = ei.value.messages
    assert len(returned) == 1
    assert returned[0].method.reply_code == 312
    assert returned[0].method.reply_text == "NO_ROUTE"
    assert returned[0].method.routing_key == "no-such-queue-" + uniq
    assert returned[0].body == b"lost"
    with pytest.raises(pe.UnroutableError):
        channel.basic_publish(exchange="amq.direct", routing_key="unbound-" + uniq,
                              body=b"lost", mandatory=True)
    # non-mandatory unroutable publishes are simply confirmed
    channel.basic_publish(exchange="amq.direct", routing_key="unbound-" + uniq, body=b"dropped")
    assert channel.queue_declare(queue=uniq, passive=True).method.message_count == 1


def test_mandatory_return_without_confirms_calls_return_callback(connect, uniq):
    """Without confirms, an unroutable mandatory message comes back via basic.return to the channel's return callback."""
    c = connect()
    ch = c.channel()
    returned = []
    ch.add_on_return_callback(lambda _c, m, p, b: returned.append((m.reply_code, m.exchange, m.routing_key, p.message_id, b)))
    ch.basic_publish(exchange="", routing_key="nowhere-" + uniq, body=b"bounce", mandatory=True,
                     properties=pika.BasicProperties(message_id="mid-1"))
    wait_for(5, lambda: returned, pump=c)
    assert returned == [(312, "", "nowhere-" + uniq, "mid-1", b"bounce")]


def test_confirm_delivery_tags_are_acked_in_bulk(connect, uniq):
    """Many publishes in confirm mode are all confirmed and all land in the queue."""
    ch = confirmed_publisher(connect)
    ch.queue_declare(queue=uniq)
    for i in range(200):
        ch.basic_publish(exchange="", routing_key=uniq, body=str(i))
    assert ch.queue_declare(queue=uniq, passive=True).method.message_count == 200


# ---------------------------------------------------------------------------
# declare / delete / purge errors and results
# ---------------------------------------------------------------------------

def test_passive_declare_missing_queue_404(channel):
    """queue_declare(passive=True) on a missing queue closes the channel with 404 NOT_FOUND - no queue 'nope' in vhost '/'."""
    with channel_error(404, "NOT_FOUND - no queue 'nope' in vhost '/'"):
        channel.queue_declare(queue="nope", passive=True)
    assert channel.is_closed


def test_passive_declare_missing_exchange_404(channel, uniq):
    """exchange_declare(passive=True) on a missing exchange closes the channel with 404 NOT_FOUND."""
    with channel_error(404, "NOT_FOUND - no exchange '%s' in vhost '/'" % uniq):
        channel.exchange_declare(exchange=uniq, passive=True)


def test_redeclare_queue_with_different_durable_flag_406(connection, uniq):
    """Redeclaring a queue with a different durable flag fails with 406 PRECONDITION_FAILED - inequivalent arg 'durable'."""
    ch = connection.channel()
    ch.queue_declare(queue=uniq, durable=False)
    ch.queue_declare(queue=uniq, durable=False)  # identical redeclare is fine
    with channel_error(406, "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '%s' in vhost '/'" % uniq):
        ch.queue_declare(queue=uniq, durable=True)
    connection.channel().queue_delete(uniq)


def test_redeclare_exchange_with_different_type_406(connection, uniq):
    """Redeclaring an exchange with another type fails with 406 PRECONDITION_FAILED - inequivalent arg 'type'."""
    ch = connection.channel()
    ch.exchange_declare(exchange=uniq, exchange_type="direct")
    with channel_error(406, "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '%s' in vhost '/'" % uniq):
        ch.exchange_declare(exchange=uniq, exchange_type="fanout")
    connection.channel().exchange_delete(uniq)


def test_declare_exchange_with_reserved_amq_prefix_403(channel, uniq):
    """Declaring an exchange named amq.* is refused with 403 ACCESS_REFUSED."""
    with channel_error(403, "ACCESS_REFUSED - exchange name 'amq.%s' contains reserved prefix 'amq.*'" % uniq):
        channel.exchange_declare(exchange="amq." + uniq, exchange_type="direct")


def test_exclusive_queue_from_other_connection_405(connect, uniq):
    """An exclusive queue cannot be declared, consumed or passively declared from another connection: 405 RESOURCE_LOCKED."""
    owner = connect()
    owner.channel().queue_declare(queue=uniq, exclusive=True)
    other = connect()
    prefix = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '%s' in vhost '/'" % uniq
    with channel_error(405, prefix):
        other.channel().queue_declare(queue=uniq)
    with channel_error(405, prefix):
        other.channel().queue_declare(queue=uniq, passive=True)
    with channel_error(405, prefix):
        other.channel().basic_consume(uniq, lambda *a: None)
    # the owner still uses it freely
    och = owner.channel()
    och.basic_publish(exchange="", routing_key=uniq, body=b"mine")
    wait_for(5, lambda: msg_count(owner, uniq) == 1)


def test_publish_to_missing_exchange_closes_channel_404(channel, uniq):
    """Publishing to an exchange that does not exist closes the channel with 404 NOT_FOUND - no exchange."""
    channel.basic_publish(exchange="missing-" + uniq, routing_key="k", body=b"x")
    with channel_error(404, "NOT_FOUND - no exchange 'missing-%s' in vhost '/'" % uniq):
        sync(channel)


def test_bind_to_default_exchange_403(channel, uniq):
    """Binding a queue to the default exchange is refused with 403 ACCESS_REFUSED."""
    channel.queue_declare(queue=uniq)
    with channel_error(403, "ACCESS_REFUSED - operation not permitted on the default exchange"):
        channel.queue_bind(queue=uniq, exchange="", routing_key="x")


def test_queue_declare_reports_message_and_consumer_counts(connect, uniq):
    """queue.declare-ok carries the queue name, ready message count and consumer count."""
    c = connect()
    ch = c.channel()
    ok = ch.queue_declare(queue=uniq)
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (uniq, 0, 0)
    ch.confirm_delivery()
    for _ in range(3):
        ch.basic_publish(exchange="", routing_key=uniq, body=b".")
    ok = ch.queue_declare(queue=uniq, passive=True)
    assert (ok.method.message_count, ok.method.consumer_count) == (3, 0)
    c2 = connect()
    c2.channel().basic_consume(uniq, lambda *a: None)
    c2.channel().basic_consume(uniq, lambda *a: None)
    ok = ch.queue_declare(queue=uniq, passive=True)
    assert ok.method.consumer_count == 2


def test_queue_purge_returns_message_count(channel, uniq):
    """queue_purge removes the ready messages and returns how many it removed."""
    channel.queue_declare(queue=uniq)
    channel.confirm_delivery()
    for i in range(7):
        channel.basic_publish(exchange="", routing_key=uniq, body=str(i))
    assert channel.queue_purge(uniq).method.message_count == 7
    assert channel.queue_purge(uniq).method.message_count == 0
    assert channel.basic_get(uniq) == (None, None, None)


def test_queue_delete_returns_count_and_removes_queue(connection, uniq):
    """queue_delete returns the number of messages deleted and the queue is gone afterwards (404 on passive declare)."""
    ch = connection.channel()
    ch.queue_declare(queue=uniq)
    ch.confirm_delivery()
    for i in range(4):
        ch.basic_publish(exchange="", routing_key=uniq, body=str(i))
    assert ch.queue_delete(uniq).method.message_count == 4
    assert not queue_exists(connection, uniq)


def test_queue_delete_if_empty_on_nonempty_queue_406(connection, uniq):
    """queue_delete(if_empty=True) on a queue with messages fails with 406 PRECONDITION_FAILED and keeps the queue."""
    ch = connection.channel()
    ch.queue_declare(queue=uniq)
    ch.confirm_delivery()
    ch.basic_publish(exchange="", routing_key=uniq, body=b"keep")
    with channel_error(406, "PRECONDITION_FAILED - queue '%s' in vhost '/' not empty" % uniq):
        ch.queue_delete(uniq, if_empty=True)
    assert msg_count(connection, uniq) == 1


def test_exchange_delete(connection, uniq):
    """exchange_delete removes the exchange: a later passive declare gets 404."""
    ch = connection.channel()
    ch.exchange_declare(exchange=uniq, exchange_type="topic")
    ch.exchange_declare(exchange=uniq, passive=True)
    ch.exchange_delete(uniq)
    with channel_error(404, "NOT_FOUND - no exchange '%s' in vhost '/'" % uniq):
        connection.channel().exchange_declare(exchange=uniq, passive=True)


# ---------------------------------------------------------------------------
# routing: exchange-to-exchange, headers, alternate exchange
# ---------------------------------------------------------------------------

def test_exchange_to_exchange_binding(connect, uniq):
    """exchange_bind routes messages from a source exchange through a destination exchange to its queues; exchange_unbind stops it."""
    ch = confirmed_publisher(connect)
    src, dst = "src-" + uniq, "dst-" + uniq
    ch.exchange_declare(exchange=src, exchange_type="direct")
    ch.exchange_declare(exchange=dst, exchange_type="fanout")
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(queue=q, exchange=dst)
    ch.exchange_bind(destination=dst, source=src, routing_key="k")
    ch.basic_publish(exchange=src, routing_key="k", body=b"via-e2e")
    ch.basic_publish(exchange=src, routing_key="other", body=b"filtered")
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"via-e2e"
    assert (m.exchange, m.routing_key) == (src, "k")
    assert ch.basic_get(q) == (None, None, None)
    ch.exchange_unbind(destination=dst, source=src, routing_key="k")
    with pytest.raises(pe.UnroutableError):
        ch.basic_publish(exchange=src, routing_key="k", body=b"after-unbind", mandatory=True)
    assert ch.basic_get(q) == (None, None, None)


def test_headers_exchange_x_match_all_and_any(connect, uniq):
    """A headers exchange routes on x-match=all (default) / any, ignoring the routing key."""
    ch = confirmed_publisher(connect)
    ex = "hdr-" + uniq
    ch.exchange_declare(exchange=ex, exchange_type="headers")
    bindings = {
        "all": {"x-match": "all", "format": "pdf", "type": "report"},
        "any": {"x-match": "any", "format": "pdf", "type": "report"},
        "default": {"format": "zip"},
        "int": {"x-match": "all", "n": 1},
    }
    queues = {}
    for name, args in bindings.items():
        q = ch.queue_declare(queue="", exclusive=True).method.queue
        ch.queue_bind(queue=q, exchange=ex, routing_key="ignored", arguments=args)
        queues[name] = q
    messages = {
        "m1": {"format": "pdf", "type": "report"},
        "m2": {"format": "pdf", "type": "log"},
        "m3": {"format": "zip", "type": "report"},
        "m4": {"format": "pdf", "type": "report", "extra": 1},
        "m5": None,
        "m6": {"type": "report"},
        "m7": {"format": "zip"},
        "m8": {"n": 1},
        "m9": {"n": 2},
    }
    for body, headers in messages.items():
        ch.basic_publish(exchange=ex, routing_key="whatever-%s" % body, body=body,
                         properties=pika.BasicProperties(headers=headers))
    got = {name: [b.decode() for b in drain(ch, q)] for name, q in queues.items()}
    assert got == {
        "all": ["m1", "m4"],
        "any": ["m1", "m2", "m3", "m4", "m6"],
        "default": ["m3", "m7"],
        "int": ["m8"],
    }


def test_alternate_exchange_receives_unroutable_messages(connect, uniq):
    """An exchange declared with the alternate-exchange argument forwards messages it cannot route to that exchange (and mandatory does not fire)."""
    ch = confirmed_publisher(connect)
    ae, main = "ae-" + uniq, "main-" + uniq
    ch.exchange_declare(exchange=ae, exchange_type="fanout")
    ch.exchange_declare(exchange=main, exchange_type="direct", arguments={"alternate-exchange": ae})
    q_unrouted = ch.queue_declare(queue="", exclusive=True).method.queue
    q_main = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(queue=q_unrouted, exchange=ae)
    ch.queue_bind(queue=q_main, exchange=main, routing_key="good")
    ch.basic_publish(exchange=main, routing_key="good", body=b"routed", mandatory=True)
    ch.basic_publish(exchange=main, routing_key="bad", body=b"unrouted", mandatory=True)
    assert drain(ch, q_main) == [b"routed"]
    m_unrouted = drain(ch, q_unrouted)
    assert m_unrouted == [b"unrouted"]


# ---------------------------------------------------------------------------
# message properties and bodies
# ---------------------------------------------------------------------------

HEADERS = {
    "string": "héllo wörld",
    "empty": "",
    "int": 42,
    "negative": -7,
    "int64": 2 ** 40,
    "neg64": -(2 ** 40),
    "true": True,
    "false": False,
    "bytes": b"\x00\x01\xfe\xff",
    "decimal": decimal.Decimal("3.14"),
    "decimal_int": decimal.Decimal("12"),
    "timestamp": datetime.datetime(2021, 3, 4, 5, 6, 7),
    "void": None,
    "array": [1, "two", True, [3, [4]], {"five": 5}],
    "empty_array": [],
    "nested": {"a": {"b": {"c": ["deep", 1]}}, "empty": {}},
}

PROPS = dict(
    content_type="application/json",
    content_encoding="gzip",
    headers=HEADERS,
    delivery_mode=2,
    priority=7,
    correlation_id="corr-123",
    reply_to="reply.queue",
    expiration="600000",
    message_id="msg-456",
    timestamp=1700000000,
    type="order.created",
    user_id="guest",
    app_id="warren-interop",
)


def _assert_props(props):
    for k, v in PROPS.items():
        if k == "headers":
            continue
        assert getattr(props, k) == v, (k, getattr(props, k), v)
    assert props.headers == HEADERS
    for k, v in HEADERS.items():  # 1 == True, so also compare the decoded types
        got = props.headers[k]
        assert isinstance(got, type(v)) and isinstance(got, bool) == isinstance(v, bool), (k, type(got))


def test_message_properties_round_trip(connect, uniq):
    """Every basic property, including a headers table with nested tables/arrays, ints, bools, bytes, decimals, timestamps and void, arrives unchanged via basic.deliver and basic.get."""
    c = connect()
    ch = c.channel()
    ch.queue_declare(queue=uniq)
    ch.confirm_delivery()
    body = b'{"id": 1}'
    ch.basic_publish(exchange="", routing_key=uniq, body=body, properties=pika.BasicProperties(**PROPS))
    ch.basic_publish(exchange="", routing_key=uniq, body=body, properties=pika.BasicProperties(**PROPS))
    m, props, got = ch.basic_get(uniq, auto_ack=True)
    assert got == body
    _assert_props(props)
    delivered = []
    ch.basic_consume(uniq, lambda _c, m, p, b: delivered.append((p, b)), auto_ack=True)
    wait_for(5, lambda: delivered, pump=c)
    _assert_props(delivered[0][0])
    assert delivered[0][1] == body


def test_empty_properties_stay_empty(channel, uniq):
    """A message published without properties is delivered with all properties unset."""
    channel.queue_declare(queue=uniq)
    channel.confirm_delivery()
    channel.basic_publish(exchange="", routing_key=uniq, body=b"bare")
    _, props, _ = channel.basic_get(uniq, auto_ack=True)
    for k in PROPS:
        assert getattr(props, k) is None, k


def test_user_id_mismatch_closes_channel_406(channel, uniq):
    """Publishing with user_id different from the authenticated user closes the channel with 406 PRECONDITION_FAILED."""
    channel.queue_declare(queue=uniq)
    channel.basic_publish(exchange="", routing_key=uniq, body=b"x",
                          properties=pika.BasicProperties(user_id="mallory"))
    with channel_error(406, "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'"):
        sync(channel)


def _body(size):
    return (bytes(range(256)) * (size // 256 + 1))[:size] if size < 300000 else os.urandom(size)


@pytest.mark.parametrize("size", [0, 1, 131072 - 8, 131072, 200 * 1024, 5 * 1024 * 1024],
                         ids=["0B", "1B", "frame_max-8", "frame_max", "200KB", "5MB"])
def test_body_sizes_arrive_intact(connect, uniq, size):
    """Bodies of 0 bytes up to 5 MB (split over many body frames) arrive byte-for-byte via basic.deliver and basic.get."""
    c = connect()
    ch = c.channel()
    ch.queue_declare(queue=uniq)
    ch.confirm_delivery()
    body = _body(size)
    ch.basic_publish(exchange="", routing_key=uniq, body=body)
    ch.basic_publish(exchange="", routing_key=uniq, body=body)
    _, _, got = ch.basic_get(uniq, auto_ack=True)
    assert len(got) == size and got == body
    delivered = []
    ch.basic_consume(uniq, lambda _c, m, p, b: delivered.append(b), auto_ack=True)
    wait_for(5, lambda: delivered, pump=c)
    assert len(delivered[0]) == size and delivered[0] == body


# ---------------------------------------------------------------------------
# transactions
# ---------------------------------------------------------------------------

def test_tx_commit_and_rollback_of_publishes(connect, uniq):
    """In tx mode publishes are invisible until tx_commit, and rolled-back publishes are never delivered."""
    c = connect()
    ch = c.channel()
    ch.queue_declare(queue=uniq)
    ch.tx_select()
    ch.basic_publish(exchange="", routing_key=uniq, body=b"rolled-back-1")
    ch.basic_publish(exchange="", routing_key=uniq, body=b"rolled-back-2")
    assert msg_count(c, uniq) == 0
    ch.tx_rollback()
    ch.basic_publish(exchange="", routing_key=uniq, body=b"committed")
    assert msg_count(c, uniq) == 0
    ch.tx_commit()
    assert msg_count(c, uniq) == 1
    other = c.channel()
    assert drain(other, uniq) == [b"committed"]


def test_tx_acks_are_transactional(connect, uniq):
    """An ack inside a rolled-back transaction has no effect (the message is requeued on channel close); a committed ack removes it."""
    c = connect()
    pub = c.channel()
    pub.queue_declare(queue=uniq)
    pub.confirm_delivery()
    pub.basic_publish(exchange="", routing_key=uniq, body=b"t")
    ch = c.channel()
    ch.tx_select()
    m, _, _ = ch.basic_get(uniq)
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()
    ch.close()
    wait_for(5, lambda: msg_count(c, uniq) == 1)
    ch = c.channel()
    ch.tx_select()
    m, _, body = ch.basic_get(uniq)
    assert (body, m.redelivered) == (b"t", True)
    ch.basic_ack(m.delivery_tag)
    ch.tx_commit()
    ch.close()
    assert msg_count(c, uniq) == 0


def test_tx_commit_without_select_406(channel):
    """tx_commit on a channel that is not transactional fails with 406 PRECONDITION_FAILED."""
    with channel_error(406, "PRECONDITION_FAILED - channel is not transactional"):
        channel.tx_commit()


# ---------------------------------------------------------------------------
# consumers: cancel, server-initiated cancel, auto-delete, exclusive
# ---------------------------------------------------------------------------

def test_basic_cancel_stops_deliveries(connect, uniq):
    """After basic_cancel the consumer receives nothing more; later messages stay in the queue."""
    c = connect()
    ch = c.channel()
    ch.queue_declare(queue=uniq)
    got = []
    tag = ch.basic_consume(uniq, lambda _c, m, p, b: got.append(b), auto_ack=True)
    pub = confirmed_publisher(connect)
    pub.basic_publish(exchange="", routing_key=uniq, body=b"before")
    wait_for(5, lambda: got, pump=c)
    ch.basic_cancel(tag)
    assert tag not in ch.consumer_tags
    pub.basic_publish(exchange="", routing_key=uniq, body=b"after")
    pump_for(0.3, c)
    assert got == [b"before"]
    assert drain(pub, uniq) == [b"after"]


def test_consumer_tag_is_echoed_in_deliveries(connect, uniq):
    """basic.consume-ok and every basic.deliver carry the client-chosen consumer tag."""
    c = connect()
    ch = c.channel()
    ch.queue_declare(queue=uniq)
    got = []
    mine = ch.basic_consume(uniq, lambda _c, m, p, b: got.append((m.consumer_tag, m.redelivered, b)),
                            auto_ack=True, consumer_tag="my-tag-" + uniq)
    assert mine == "my-tag-" + uniq
    assert ch.consumer_tags == ["my-tag-" + uniq]
    pub = confirmed_publisher(connect)
    pub.basic_publish(exchange="", routing_key=uniq, body=b"x")
    wait_for(5, lambda: got, pump=c)
    assert got == [("my-tag-" + uniq, False, b"x")]


def test_deleting_queue_cancels_its_consumers(connect, uniq):
    """Deleting a queue that has a consumer sends that consumer basic.cancel (pika's on_cancel callback fires with its tag)."""
    c = connect()
    ch = c.channel()
    ch.queue_declare(queue=uniq)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(uniq, lambda *a: None)
    other = connect().channel()
    assert other.queue_declare(queue=uniq, passive=True).method.consumer_count == 1
    other.queue_delete(uniq)
    wait_for(5, lambda: cancelled, pump=c)
    assert cancelled == [tag]
    assert tag not in ch.consumer_tags
    assert ch.is_open


def test_auto_delete_queue_disappears_after_last_consumer_cancels(connect, uniq):
    """An auto_delete queue survives until its last consumer cancels, then it is deleted."""
    c = connect()
    ch = c.channel()
    ch.queue_declare(queue=uniq, auto_delete=True)
    t1 = ch.basic_consume(uniq, lambda *a: None)
    t2 = ch.basic_consume(uniq, lambda *a: None)
    ch.basic_cancel(t1)
    assert queue_exists(c, uniq)
    ch.basic_cancel(t2)
    wait_for(5, lambda: not queue_exists(c, uniq))


def test_auto_delete_queue_without_consumers_is_kept(connect, uniq):
    """An auto_delete queue that never had a consumer is not deleted."""
    c = connect()
    ch = c.channel()
    ch.queue_declare(queue=uniq, auto_delete=True)
    ch.confirm_delivery()
    ch.basic_publish(exchange="", routing_key=uniq, body=b"x")
    assert queue_exists(c, uniq)
    assert msg_count(c, uniq) == 1
    ch.queue_delete(uniq)


def test_exclusive_consumer_blocks_other_consumers_403(connect, uniq):
    """While a queue has an exclusive consumer, another basic_consume is refused with 403 ACCESS_REFUSED."""
    c = connect()
    ch = c.channel()
    ch.queue_declare(queue=uniq)
    ch.basic_consume(uniq, lambda *a: None, exclusive=True)
    with channel_error(403, "ACCESS_REFUSED - queue '%s' in vhost '/' in exclusive use" % uniq):
        connect().channel().basic_consume(uniq, lambda *a: None)


def test_round_robin_between_consumers(connect, uniq):
    """Two consumers on one queue receive messages alternately (round robin)."""
    c = connect()
    ch = c.channel()
    ch.queue_declare(queue=uniq)
    got = {"a": [], "b": []}
    ch.basic_consume(uniq, lambda _c, m, p, b: got["a"].append(b), auto_ack=True)
    ch.basic_consume(uniq, lambda _c, m, p, b: got["b"].append(b), auto_ack=True)
    pub = confirmed_publisher(connect)
    for i in range(10):
        pub.basic_publish(exchange="", routing_key=uniq, body=str(i))
    wait_for(5, lambda: len(got["a"]) + len(got["b"]) == 10, pump=c)
    assert len(got["a"]) == 5 and len(got["b"]) == 5, got
    assert sorted(got["a"] + got["b"], key=int) == [str(i).encode() for i in range(10)]


# ---------------------------------------------------------------------------
# commonly used queue arguments (RabbitMQ extensions)
# ---------------------------------------------------------------------------

def test_dead_letter_exchange_on_reject(connect, uniq):
    """A message rejected without requeue from a queue with x-dead-letter-exchange is republished there with an x-death header."""
    ch = confirmed_publisher(connect)
    dlx = "dlx-" + uniq
    ch.exchange_declare(exchange=dlx, exchange_type="fanout")
    dlq = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(queue=dlq, exchange=dlx)
    ch.queue_declare(queue=uniq, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish(exchange="", routing_key=uniq, body=b"doomed")
    m, _, _ = ch.basic_get(uniq)
    ch.basic_reject(m.delivery_tag, requeue=False)
    wait_for(5, lambda: msg_count(ch.connection, dlq) == 1)
    m, props, body = ch.basic_get(dlq, auto_ack=True)
    assert body == b"doomed"
    death = props.headers["x-death"][0]
    assert (death["queue"], death["reason"], death["count"]) == (uniq, "rejected", 1)


def test_message_ttl_expires_messages(connect, uniq):
    """Messages in a queue with x-message-ttl=0 that cannot be delivered immediately are dropped, not returned by basic_get."""
    ch = confirmed_publisher(connect)
    ch.queue_declare(queue=uniq, arguments={"x-message-ttl": 0})
    ch.basic_publish(exchange="", routing_key=uniq, body=b"gone")
    wait_for(5, lambda: msg_count(ch.connection, uniq) == 0)
    assert ch.basic_get(uniq) == (None, None, None)


def test_max_length_drops_head(connect, uniq):
    """A queue with x-max-length=2 keeps only the 2 newest messages."""
    ch = confirmed_publisher(connect)
    ch.queue_declare(queue=uniq, arguments={"x-max-length": 2})
    for i in range(5):
        ch.basic_publish(exchange="", routing_key=uniq, body=str(i))
    assert drain(ch, uniq) == [b"3", b"4"]


# ---------------------------------------------------------------------------
# server lifecycle
# ---------------------------------------------------------------------------

def test_sigterm_closes_clients_and_exits_cleanly(broker_factory):
    """On SIGTERM the server closes open client connections and exits with status 0 within 5 s."""
    import signal
    import subprocess

    b = broker_factory.start(broker_factory.new_data_dir())
    conn = b.connect()
    conn.channel().queue_declare(queue="", exclusive=True)
    b.proc.send_signal(signal.SIGTERM)
    try:
        rc = b.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("warren-server still running 5 s after SIGTERM")
    assert rc == 0
    with pytest.raises(pe.AMQPConnectionError):
        wait_for(5, lambda: False, pump=conn)


def test_unbind_of_missing_queue_or_exchange_succeeds(connect, uniq):
    """RabbitMQ compat (since 3.2): queue.unbind and exchange.unbind never fail with not-found,
    like queue.delete and exchange.delete (client suites clean up in any order)."""
    ch = connect().channel()
    ch.exchange_declare("x-" + uniq, "direct", auto_delete=True)
    ch.queue_declare(uniq, auto_delete=True)
    ch.queue_bind(uniq, "x-" + uniq, "k")
    ch.queue_delete(uniq)            # the exchange loses its last binding and is auto-deleted too
    ch.queue_unbind(uniq, "x-" + uniq, "k")
    ch.exchange_unbind("nowhere-" + uniq, "neither-" + uniq, "k")
    ch.queue_declare(uniq + "-alive")
    assert ch.is_open
