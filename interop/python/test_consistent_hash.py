"""The x-consistent-hash exchange (RabbitMQ's rabbitmq_consistent_hash_exchange): binding keys are
weights, each message goes to exactly one bound queue, the same key always to the same queue."""

import collections

import pika
import pytest


def counts(ch, queues):
    return {q: ch.queue_declare(q, passive=True).method.message_count for q in queues}


def test_weighted_sticky_routing(connection, uniq):
    ch = connection.channel()
    x = uniq + "-ch"
    ch.exchange_declare(x, "x-consistent-hash")
    qs = [uniq + "-q%d" % i for i in range(3)]
    for q, w in zip(qs, ["1", "1", "2"]):
        ch.queue_declare(q)
        ch.queue_bind(q, x, w)
    ch.confirm_delivery()
    for i in range(4000):
        ch.basic_publish(x, "order-%d" % i, b"m")
    c = counts(ch, qs)
    assert sum(c.values()) == 4000, c          # each message to exactly one queue
    assert all(n > 400 for n in c.values()), c
    assert c[qs[2]] > max(c[qs[0]], c[qs[1]]), c  # twice the weight, more messages
    for q in qs:
        ch.queue_purge(q)
    # The same routing key always lands in the same queue.
    for _ in range(50):
        ch.basic_publish(x, "customer-42", b"m")
    assert sorted(counts(ch, qs).values()) == [0, 0, 50]


def test_hash_header_and_property(connection, uniq):
    ch = connection.channel()
    xh, xp = uniq + "-hh", uniq + "-hp"
    ch.exchange_declare(xh, "x-consistent-hash", arguments={"hash-header": "tenant"})
    ch.exchange_declare(xp, "x-consistent-hash", arguments={"hash-property": "message_id"})
    qs = [uniq + "-q%d" % i for i in range(4)]
    for q in qs:
        ch.queue_declare(q)
        ch.queue_bind(q, xh, "5")
        ch.queue_bind(q, xp, "5")
    ch.confirm_delivery()
    seen = collections.defaultdict(set)
    for i in range(40):
        tenant = "t%d" % (i % 4)
        ch.basic_publish(xh, "rk-%d" % i, tenant.encode(), pika.BasicProperties(headers={"tenant": tenant}))
    for q in qs:
        while True:
            m, _, body = ch.basic_get(q, auto_ack=True)
            if m is None:
                break
            seen[body].add(q)
    assert len(seen) == 4 and all(len(v) == 1 for v in seen.values()), dict(seen)  # ignores the routing key
    # No such header: the message goes nowhere (mandatory returns it).
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(xh, "rk", b"no tenant", mandatory=True)
    for i in range(20):
        ch.basic_publish(xp, "rk-%d" % i, b"p", pika.BasicProperties(message_id="same-id"))
    assert sorted(counts(ch, qs).values()) == [0, 0, 0, 20]


def test_bad_weights_and_arguments_are_406(connection, uniq):
    ch = connection.channel()
    x = uniq + "-ch"
    ch.exchange_declare(x, "x-consistent-hash")
    ch.queue_declare(uniq)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_bind(uniq, x, "heavy")
    assert e.value.reply_code == 406 and "weight" in e.value.reply_text
    ch = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.exchange_declare(uniq + "-bad", "x-consistent-hash",
                            arguments={"hash-header": "a", "hash-property": "message_id"})
    assert e.value.reply_code == 406 and "mutually exclusive" in e.value.reply_text


@pytest.mark.parametrize("kind", ["x-local-random", "x-random"])
def test_random_exchanges_pick_one_bound_queue(connection, uniq, kind):
    """RabbitMQ 4's x-local-random (and the random-exchange plugin's x-random): one queue per
    message, picked at random; binding keys do not matter."""
    ch = connection.channel()
    x = uniq + "-rnd"
    ch.exchange_declare(x, kind)
    qs = [uniq + "-q%d" % i for i in range(4)]
    for i, q in enumerate(qs):
        ch.queue_declare(q)
        ch.queue_bind(q, x, "ignored-%d" % i)
    ch.confirm_delivery()
    for i in range(2000):
        ch.basic_publish(x, "any", b"m")
    c = counts(ch, qs)
    assert sum(c.values()) == 2000 and all(n > 300 for n in c.values()), c
