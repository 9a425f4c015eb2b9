"""A definitions file exported by a real RabbitMQ (3.10.8, `rabbitmqctl export_definitions`,
committed as fixtures/rabbitmq-3.10-definitions.json) imports into Warren: its users log in
with their RabbitMQ password hashes, permissions, topic permissions, policies and the operator
policy (which 3.10 exports as a runtime parameter with a list-shaped definition) apply, and the
exchanges, queues and bindings route as they did in RabbitMQ."""

import json
import os

import pika
import pytest

from admin_util import Api, login
from conftest import msg_count, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))


def test_rabbitmq_export_imports(broker_factory):
    b = broker_factory.start(broker_factory.new_data_dir())
    api = Api(b)
    with open(os.path.join(HERE, "fixtures", "rabbitmq-3.10-definitions.json")) as f:
        defs = json.load(f)
    r = api.post("/definitions", defs)
    assert r.status_code in (200, 201, 204), r.text

    # alice's password was set in RabbitMQ ("s3cret-Alice"); only its hash is in the file.
    conn = login(b, "alice", "s3cret-Alice", vhost="shop")
    ch = conn.channel()
    ch.queue_declare("orders.extra")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("elsewhere")
    assert e.value.reply_code == 403
    conn.close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        login(b, "alice", "wrong", vhost="shop")

    perms = {(p["vhost"], p["user"]): p for p in api.ok("GET", "/permissions")}
    assert perms[("shop", "alice")]["configure"] == "^orders.*"
    topic = api.ok("GET", "/topic-permissions")
    assert any(t["user"] == "alice" and t["exchange"] == "amq.topic" for t in topic)
    assert api.ok("GET", "/queues/shop/orders.new")["policy"] == "orders-ttl"
    assert api.ok("GET", "/queues/shop/orders.new")["arguments"]["x-max-priority"] == 5
    assert [p["name"] for p in api.ok("GET", "/operator-policies/shop")] == ["cap"]

    # Routing as in RabbitMQ: orders (topic) -> orders.new; orders -> events (headers, e2e);
    # events' alternate exchange dlx -> dead for what its bindings do not take.
    conn = b.connect(virtual_host="shop")
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("orders", "orders.new.1", b"o1", pika.BasicProperties(priority=3))
    ch.basic_publish("events", "", b"audit", pika.BasicProperties(headers={"kind": "audit"}))
    ch.basic_publish("events", "", b"other", pika.BasicProperties(headers={"kind": "misc"}))
    wait_for(5, lambda: msg_count(conn, "orders.new") == 1)
    wait_for(5, lambda: msg_count(conn, "audit") == 1)
    wait_for(5, lambda: msg_count(conn, "dead") >= 1)
    conn.close()
