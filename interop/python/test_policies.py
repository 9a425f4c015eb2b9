"""Policies and operator policies (issue 4) set with warrenctl, as operators do with rabbitmqctl,
acting on queues and exchanges that pika uses: every definition key Warren acts on, RabbitMQ's
rules for combining them with queue arguments, applying to existing queues at once, and
surviving kill -9."""

import json
import signal
import time

import pika
import pytest

from admin_util import Api, ctl, q
from conftest import msg_count, wait_for


def set_policy(broker, name, pattern, definition, *opts, operator=False):
    cmd = "set_operator_policy" if operator else "set_policy"
    r = ctl(broker, cmd, *opts, name, pattern, json.dumps(definition))
    assert r.returncode == 0, r.stderr
    return r


def clear_policy(broker, name, operator=False):
    r = ctl(broker, "clear_operator_policy" if operator else "clear_policy", name)
    assert r.returncode == 0, r.stderr


def publish_n(ch, queue, n, exchange=""):
    for i in range(n):
        ch.basic_publish(exchange, queue, b"m%d" % i)


def test_max_length_policy_applies_to_existing_queue_and_clears(broker, connect, uniq):
    ch = connect().channel()
    ch.queue_declare(uniq)
    publish_n(ch, uniq, 5)
    wait_for(5, lambda: msg_count(ch.connection, uniq) == 5)
    set_policy(broker, uniq, "^%s$" % uniq, {"max-length": 2}, "--apply-to", "queues")
    wait_for(5, lambda: msg_count(ch.connection, uniq) == 2)
    m, _, body = ch.basic_get(uniq, auto_ack=True)
    assert body == b"m3", "drop-head kept the newest"
    clear_policy(broker, uniq)
    publish_n(ch, uniq, 5)
    wait_for(5, lambda: msg_count(ch.connection, uniq) == 6)


def test_ttl_and_dead_letter_policy(broker, connect, uniq):
    ch = connect().channel()
    ch.exchange_declare("dlx-" + uniq, "fanout")
    ch.queue_declare("dlq-" + uniq)
    ch.queue_bind("dlq-" + uniq, "dlx-" + uniq)
    set_policy(broker, uniq, "^work-%s" % uniq, {"message-ttl": 200, "dead-letter-exchange": "dlx-" + uniq})
    ch.queue_declare("work-" + uniq)
    ch.basic_publish("", "work-" + uniq, b"job")
    wait_for(5, lambda: msg_count(ch.connection, "dlq-" + uniq) == 1)
    m, props, body = ch.basic_get("dlq-" + uniq, auto_ack=True)
    assert props.headers["x-death"][0]["reason"] == "expired"
    clear_policy(broker, uniq)


def test_argument_and_policy_rules(broker, connect, uniq):
    """max-length: the lower of argument and policy; overflow: the argument wins."""
    ch = connect().channel()
    ch.confirm_delivery()
    ch.queue_declare(uniq, arguments={"x-max-length": 3, "x-overflow": "reject-publish"})
    set_policy(broker, uniq, "^%s$" % uniq, {"max-length": 10, "overflow": "drop-head"}, "--priority", "5")
    for i in range(3):
        ch.basic_publish("", uniq, b"ok")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", uniq, b"refused: the argument's 3 and reject-publish apply")
    clear_policy(broker, uniq)


def test_operator_policy_caps_user_policy(broker, connect, uniq):
    ch = connect().channel()
    ch.queue_declare(uniq)
    set_policy(broker, uniq, "^%s$" % uniq, {"max-length": 100})
    set_policy(broker, uniq + "-op", "^%s$" % uniq, {"max-length": 2}, "--apply-to", "queues", operator=True)
    publish_n(ch, uniq, 5)
    wait_for(5, lambda: msg_count(ch.connection, uniq) == 2)
    listed = ctl(broker, "list_operator_policies", "--formatter", "json")
    assert uniq + "-op" in [p["name"] for p in json.loads(listed.stdout)]
    # The HTTP API sees the same operator policy.
    assert Api(broker).ok("GET", "/operator-policies/%2F/" + q(uniq + "-op"))["definition"] == {"max-length": 2}
    clear_policy(broker, uniq + "-op", operator=True)
    clear_policy(broker, uniq)


def test_highest_priority_policy_wins(broker, connect, uniq):
    ch = connect().channel()
    ch.queue_declare(uniq)
    set_policy(broker, uniq + "-lo", "^%s" % uniq, {"max-length": 1}, "--priority", "1")
    set_policy(broker, uniq + "-hi", uniq, {"max-length": 3}, "--priority", "9")
    publish_n(ch, uniq, 5)
    wait_for(5, lambda: msg_count(ch.connection, uniq) == 3)
    clear_policy(broker, uniq + "-lo")
    clear_policy(broker, uniq + "-hi")


def test_alternate_exchange_policy(broker, connect, uniq):
    ch = connect().channel()
    ch.exchange_declare("main-" + uniq, "direct")
    ch.exchange_declare("ae-" + uniq, "fanout")
    ch.queue_declare("unrouted-" + uniq)
    ch.queue_bind("unrouted-" + uniq, "ae-" + uniq)
    set_policy(broker, uniq, "^main-%s$" % uniq, {"alternate-exchange": "ae-" + uniq}, "--apply-to", "exchanges")
    ch.basic_publish("main-" + uniq, "nowhere", b"kept")
    wait_for(5, lambda: msg_count(ch.connection, "unrouted-" + uniq) == 1)
    clear_policy(broker, uniq)


def test_expires_and_delivery_limit_policies(broker, connect, uniq):
    ch = connect().channel()
    set_policy(broker, uniq, "^%s" % uniq, {"expires": 300, "delivery-limit": 0})
    ch.queue_declare(uniq + "-lim")
    ch.basic_publish("", uniq + "-lim", b"once")
    wait_for(5, lambda: msg_count(ch.connection, uniq + "-lim") == 1)
    m, _, _ = ch.basic_get(uniq + "-lim")
    ch.basic_nack(m.delivery_tag, requeue=True)
    assert msg_count(ch.connection, uniq + "-lim") == 0, "dropped past the delivery limit"
    # Unused for 300 ms: the queue is deleted.
    time.sleep(0.6)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(uniq + "-lim", passive=True)
    assert e.value.reply_code == 404
    clear_policy(broker, uniq)


def test_policies_survive_kill_9(broker_factory, uniq):
    data_dir = broker_factory.new_data_dir()
    b1 = broker_factory.start(data_dir)
    ch = b1.connect().channel()
    ch.queue_declare(uniq, durable=True)
    set_policy(b1, "limit", "^%s$" % uniq, {"max-length": 2})
    b1.proc.send_signal(signal.SIGKILL)
    b1.proc.wait(timeout=5)
    b2 = broker_factory.start(data_dir)
    ch = b2.connect().channel()
    publish_n(ch, uniq, 4)
    wait_for(5, lambda: msg_count(ch.connection, uniq) == 2)
    listed = ctl(b2, "list_policies", "--formatter", "json")
    assert listed.returncode == 0, listed.stderr
    assert [p["name"] for p in json.loads(listed.stdout)] == ["limit"]
