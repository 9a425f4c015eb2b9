"""The HTTP management API against the real binary with `requests`: RabbitMQ's paths, JSON
field names, status codes and error bodies; the management-tag matrix; definitions round trips."""

import base64
import hashlib
import json
import os
import time

import pika
import pytest
import requests

from admin_util import Api, ctl, login, q
from conftest import wait_for


@pytest.fixture
def api(broker):
    return Api(broker)


def test_overview_and_whoami(api):
    o = api.ok("GET", "/overview")
    for key in ("management_version", "rabbitmq_version", "node", "object_totals", "queue_totals", "listeners"):
        assert key in o, key
    assert {"connections", "channels", "exchanges", "queues", "consumers"} <= set(o["object_totals"])
    assert {l["protocol"] for l in o["listeners"]} >= {"amqp", "http"}
    assert api.ok("GET", "/whoami") == {"name": "guest", "tags": ["administrator"]}


def test_authentication_errors(api):
    r = api.get("/overview", auth=None)
    assert r.status_code == 401 and r.json()["error"] == "not_authorised"
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    r = api.get("/overview", auth=("guest", "wrong"))
    assert (r.status_code, r.json()) == (401, {"error": "not_authorised", "reason": "Login failed"})
    assert api.get("/no-such-endpoint").status_code == 404


def test_management_tag_matrix(api, uniq):
    """What each tag may see and do, as RabbitMQ's management plugin decides."""
    api.ok("PUT", "/vhosts/" + q(uniq))
    users = {}
    for tag in ("", "management", "policymaker", "monitoring", "administrator"):
        name = "%s-%s" % (uniq, tag or "none")
        api.make_user(name, tags=tag, vhost=uniq)
        users[tag] = api.as_user(name, "pw")
    # No management tag: no access at all.
    r = users[""].get("/overview")
    assert (r.status_code, r.json()["reason"]) == (401, "Not management user")
    for tag in ("management", "policymaker", "monitoring", "administrator"):
        assert users[tag].get("/overview").status_code == 200, tag
        assert users[tag].get("/whoami").json()["tags"] == [tag]
    # Administrator-only endpoints.
    for tag in ("management", "policymaker", "monitoring"):
        r = users[tag].get("/users")
        assert (r.status_code, r.json()["reason"]) == (401, "Not administrator user"), tag
        assert users[tag].put("/vhosts/" + q(uniq + "-new")).status_code == 401
        assert users[tag].get("/definitions").status_code == 401
    assert users["administrator"].get("/users").status_code == 200
    # Management users see only the vhosts they have permissions in; monitoring sees all.
    seen = {v["name"] for v in users["management"].ok("GET", "/vhosts")}
    assert seen == {uniq}
    assert "/" in {v["name"] for v in users["monitoring"].ok("GET", "/vhosts")}
    r = users["management"].get("/queues/%2F")
    assert (r.status_code, r.json()["reason"]) == (401, "User not authorised to access virtual host")
    # /api/nodes needs monitoring.
    assert users["management"].get("/nodes").status_code == 401
    assert users["monitoring"].get("/nodes").status_code == 200


def test_queue_lifecycle_publish_get_purge(api, connection, uniq):
    path = "/queues/%2F/" + q(uniq)
    r = api.put(path, {"durable": True, "arguments": {"x-max-length": 10}})
    assert r.status_code == 201, r.text
    assert api.put(path, {"durable": True, "arguments": {"x-max-length": 10}}).status_code == 204
    r = api.put(path, {"durable": False})
    assert r.status_code == 400 and "inequivalent arg 'durable'" in r.json()["reason"]
    qj = api.ok("GET", path)
    assert (qj["name"], qj["vhost"], qj["durable"], qj["arguments"]) == (uniq, "/", True, {"x-max-length": 10})
    for key in ("messages", "messages_ready", "messages_unacknowledged", "consumers", "state", "type", "node"):
        assert key in qj
    r = api.ok("POST", "/exchanges/%2F/amq.default/publish",
               {"properties": {"headers": {"h": 1}}, "routing_key": uniq, "payload": "hello", "payload_encoding": "string"})
    assert r == {"routed": True}
    r = api.ok("POST", "/exchanges/%2F/amq.default/publish",
               {"properties": {}, "routing_key": uniq + "-nowhere", "payload": "x", "payload_encoding": "string"})
    assert r == {"routed": False}
    got = api.ok("POST", path + "/get", {"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert len(got) == 1 and got[0]["payload"] == "hello" and got[0]["properties"]["headers"] == {"h": 1}
    assert got[0]["payload_encoding"] == "string" and got[0]["routing_key"] == uniq
    assert wait_for(5, lambda: api.ok("GET", path)["messages"] == 1)
    qj = api.ok("GET", path)
    # aioamqp's tests read message_bytes (ready + unacknowledged body bytes), as RabbitMQ has it.
    assert (qj["message_bytes"], qj["message_bytes_ready"], qj["message_bytes_unacknowledged"]) == (5, 5, 0)
    assert api.delete(path + "/contents").status_code == 204
    assert api.ok("GET", path)["messages"] == 0
    assert api.delete(path + "?if-empty=true").status_code == 204
    assert api.get(path).status_code == 404
    assert api.delete(path).status_code == 404


def test_exchanges_and_bindings(api, uniq):
    x = "/exchanges/%2F/" + q(uniq)
    assert api.put(x, {"type": "topic", "durable": True}).status_code == 201
    assert api.ok("GET", x)["type"] == "topic"
    api.ok("PUT", "/queues/%2F/" + q(uniq))
    r = api.post("/bindings/%%2F/e/%s/q/%s" % (q(uniq), q(uniq)), {"routing_key": "a.#", "arguments": {}})
    assert r.status_code == 201 and "Location" in r.headers
    bindings = api.ok("GET", "/bindings/%%2F/e/%s/q/%s" % (q(uniq), q(uniq)))
    assert [(b["source"], b["destination"], b["destination_type"], b["routing_key"]) for b in bindings] == \
        [(uniq, uniq, "queue", "a.#")]
    assert "properties_key" in bindings[0]
    all_b = api.ok("GET", "/bindings/%2F")
    assert any(b["source"] == "" and b["destination"] == uniq and b["routing_key"] == uniq for b in all_b)
    pk = bindings[0]["properties_key"]
    assert api.delete("/bindings/%%2F/e/%s/q/%s/%s" % (q(uniq), q(uniq), q(pk))).status_code == 204
    assert api.ok("GET", "/bindings/%%2F/e/%s/q/%s" % (q(uniq), q(uniq))) == []
    r = api.put("/exchanges/%2F/amq.custom", {"type": "direct"})
    assert r.status_code == 401 and "reserved prefix" in r.json()["reason"]
    assert api.delete(x).status_code == 204


def test_connections_channels_consumers_and_close(broker, api, uniq):
    conn = broker.connect(client_properties={"connection_name": uniq})
    ch = conn.channel()
    ch.queue_declare(uniq)
    ch.basic_consume(uniq, lambda *a: None, consumer_tag=uniq)
    conns = wait_for(5, lambda: [c for c in api.ok("GET", "/connections") if c.get("user_provided_name") == uniq])
    c = conns[0]
    assert (c["user"], c["vhost"], c["state"], c["protocol"], c["channels"]) == ("guest", "/", "running", "AMQP 0-9-1", 1)
    assert c["peer_host"] == "127.0.0.1" and c["client_properties"]["connection_name"] == uniq
    chans = api.ok("GET", "/connections/%s/channels" % q(c["name"]))
    assert len(chans) == 1 and chans[0]["consumer_count"] == 1 and chans[0]["number"] == 1
    cons = [x for x in api.ok("GET", "/consumers/%2F") if x["consumer_tag"] == uniq]
    assert cons[0]["queue"] == {"name": uniq, "vhost": "/"} and cons[0]["ack_required"] is True
    assert cons[0]["consumer_timeout"] == 1_800_000 and cons[0]["channel_details"]["node"]
    queue = api.ok("GET", "/queues/%2F/" + q(uniq))
    assert queue["consumer_capacity"] == 1.0, "a consumer with room takes every message at once"
    assert [d["consumer_tag"] for d in queue["consumer_details"]] == [uniq]
    assert queue["consumer_details"][0]["channel_details"]["connection_name"] == c["name"]
    ch.queue_declare("idle-" + uniq)
    idle = api.ok("GET", "/queues/%2F/" + q("idle-" + uniq))
    assert idle["consumer_capacity"] == 0.0 and idle["consumer_details"] == []
    r = api.delete("/connections/" + q(c["name"]), headers={"X-Reason": "bye " + uniq})
    assert r.status_code == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        wait_for(10, lambda: False, pump=conn)
    assert (e.value.reply_code, e.value.reply_text) == (320, "CONNECTION_FORCED - bye " + uniq)


def test_pagination_sorting_columns_and_filters(api, uniq):
    for i in range(5):
        api.ok("PUT", "/queues/%%2F/%s-%d" % (q(uniq), i))
    r = api.ok("GET", "/queues/%%2F?page=2&page_size=2&name=%s&sort=name&sort_reverse=true&columns=name,vhost" % uniq)
    assert (r["page"], r["page_size"], r["page_count"], r["filtered_count"], r["item_count"]) == (2, 2, 3, 5, 2)
    assert r["items"] == [{"name": uniq + "-2", "vhost": "/"}, {"name": uniq + "-1", "vhost": "/"}]
    r = api.ok("GET", "/queues/%%2F?name=%s-[34]$&use_regex=true&columns=name" % uniq)
    assert sorted(x["name"] for x in r) == [uniq + "-3", uniq + "-4"]
    assert api.get("/queues?page=0").status_code == 400


def test_bad_requests(api, uniq):
    r = api.call("PUT", "/queues/%2F/" + q(uniq), data=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "bad_request"
    r = api.put("/users/" + q(uniq), {"tags": ""})
    assert r.status_code == 400
    r = api.put("/permissions/%2F/" + q(uniq + "-missing"), {"configure": ".*", "write": ".*", "read": ".*"})
    assert r.status_code == 404
    big = b"[" + b"1," * (11 * 1024 * 1024) + b"1]"
    r = api.call("POST", "/definitions", data=big, headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_health_checks_and_aliveness(broker, api):
    assert api.ok("GET", "/health/checks/alarms") == {"status": "ok"}
    assert api.ok("GET", "/health/checks/local-alarms") == {"status": "ok"}
    assert api.ok("GET", "/health/checks/virtual-hosts") == {"status": "ok"}
    assert api.ok("GET", "/health/checks/is-in-service") == {"status": "ok"}
    assert api.ok("GET", "/health/checks/port-listener/%d" % broker.port)["status"] == "ok"
    r = api.get("/health/checks/port-listener/1")
    assert r.status_code == 503 and r.json()["status"] == "failed"
    assert api.ok("GET", "/health/checks/protocol-listener/amqp")["status"] == "ok"
    assert api.ok("GET", "/aliveness-test/%2F") == {"status": "ok"}
    # RabbitMQ's deprecated node health check, as AMQPStorm calls it (with the node name from
    # the overview's contexts).
    assert api.ok("GET", "/healthchecks/node") == {"status": "ok"}
    assert api.ok("GET", "/healthchecks/node/") == {"status": "ok"}
    contexts = api.ok("GET", "/overview")["contexts"]
    assert contexts and contexts[0]["port"] == str(broker.mgmt_port)
    assert api.ok("GET", "/healthchecks/node/" + q(contexts[0]["node"])) == {"status": "ok"}
    assert api.get("/healthchecks/node/rabbit@elsewhere").status_code == 404


def test_listing_ten_thousand_queues_is_fast(broker_factory):
    b = broker_factory.start(broker_factory.new_data_dir())
    api = Api(b)
    conn = b.connect()
    ch = conn.channel()
    for i in range(10_000):
        ch.queue_declare("q-%05d" % i, durable=False)
    conn.close()
    started = time.monotonic()
    items = api.ok("GET", "/queues")
    took = time.monotonic() - started
    assert len(items) == 10_000
    # RabbitMQ takes seconds; the issue asks for under 200 ms (debug builds get some slack).
    assert took < 2.0, took


def test_definitions_round_trip(broker_factory):
    """export -> reset -> import -> export gives the same document."""
    b = broker_factory.start(broker_factory.new_data_dir())
    api = Api(b)
    api.ok("PUT", "/vhosts/v1")
    api.make_user("alice", "pw", tags="monitoring", vhost="v1", perms=("^a", ".*", "^$"))
    api.ok("PUT", "/topic-permissions/v1/alice", {"exchange": "amq.topic", "write": "^x", "read": ".*"})
    api.ok("PUT", "/exchanges/v1/ex1", {"type": "fanout", "durable": True, "arguments": {"alternate-exchange": "ae"}})
    api.ok("PUT", "/exchanges/v1/ex2", {"type": "topic", "durable": True})
    api.ok("PUT", "/queues/v1/q1", {"durable": True, "arguments": {"x-message-ttl": 1000}})
    api.ok("POST", "/bindings/v1/e/ex1/q/q1", {"routing_key": "rk", "arguments": {"k": "v"}})
    api.ok("POST", "/bindings/v1/e/ex1/e/ex2", {"routing_key": "", "arguments": {}})
    api.ok("PUT", "/policies/v1/p1", {"pattern": "^q", "definition": {"max-length": 7}, "priority": 1,
                                      "apply-to": "queues"})
    before = api.ok("GET", "/definitions")
    assert [p["name"] for p in before["policies"]] == ["p1"]
    assert ctl(b, "stop_app").returncode == 0
    assert ctl(b, "reset").returncode == 0
    assert ctl(b, "start_app").returncode == 0
    after_reset = api.ok("GET", "/definitions")
    assert [u["name"] for u in after_reset["users"]] == ["guest"] and after_reset["queues"] == []
    r = api.post("/definitions", before)
    assert r.status_code == 204, r.text
    after = api.ok("GET", "/definitions")
    # The default user was made again by reset with a new salt; everything else is identical.
    strip = lambda d: {**d, "users": [u for u in d["users"] if u["name"] != "guest"]}
    assert strip(after) == strip(before)
    login(b, "alice", "pw", vhost="v1").close()


def test_import_rabbitmq_definitions_file(broker_factory):
    """A definitions file in RabbitMQ's 3.x shape (string tags, a sha256 hash) imports and its
    users log in."""
    b = broker_factory.start(broker_factory.new_data_dir())
    salt = bytes([1, 2, 3, 4])
    h = base64.b64encode(salt + hashlib.sha256(salt + b"rabbit-pw").digest()).decode()
    defs = {
        "rabbit_version": "3.13.7",
        "rabbitmq_version": "3.13.7",
        "product_name": "RabbitMQ",
        "product_version": "3.13.7",
        "users": [{"name": "ops", "password_hash": h, "hashing_algorithm": "rabbit_password_hashing_sha256",
                   "tags": "administrator", "limits": {}}],
        "vhosts": [{"name": "prod", "limits": [], "description": "production", "tags": ["prod"],
                    "default_queue_type": "quorum",
                    "metadata": {"description": "production", "tags": ["prod"], "default_queue_type": "quorum"}}],
        "permissions": [{"user": "ops", "vhost": "prod", "configure": ".*", "write": ".*", "read": ".*"}],
        "topic_permissions": [{"user": "ops", "vhost": "prod", "exchange": "events", "write": ".*", "read": ".*"}],
        "parameters": [{"value": {"uri": "amqp://upstream", "ack-mode": "on-confirm"}, "vhost": "prod",
                        "component": "federation-upstream", "name": "up1"}],
        "global_parameters": [{"name": "cluster_name", "value": "rabbit@old"},
                              {"name": "internal_cluster_id", "value": "rabbitmq-cluster-id-abc"}],
        "policies": [{"vhost": "prod", "name": "ttl", "pattern": "^orders$", "apply-to": "queues",
                      "definition": {"message-ttl": 60000, "ha-mode": "all"}, "priority": 0}],
        "queues": [{"name": "orders", "vhost": "prod", "durable": True, "auto_delete": False,
                    "arguments": {"x-queue-type": "quorum", "x-delivery-limit": 20}},
                   {"name": "audit", "vhost": "prod", "durable": True, "auto_delete": False, "type": "classic",
                    "arguments": {"x-queue-type": "classic", "x-max-length": 1000}}],
        "exchanges": [{"name": "events", "vhost": "prod", "type": "topic", "durable": True, "auto_delete": False,
                       "internal": False, "arguments": {}}],
        "bindings": [{"source": "events", "vhost": "prod", "destination": "orders", "destination_type": "queue",
                      "routing_key": "order.*", "arguments": {}}],
    }
    api = Api(b)
    r = api.post("/definitions", defs)
    assert r.status_code == 204, r.text
    conn = login(b, "ops", "rabbit-pw", vhost="prod")
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("events", "order.new", b"o1")
    assert ch.queue_declare("orders", passive=True).method.message_count == 1
    conn.close()
    assert Api(b, "ops", "rabbit-pw").ok("GET", "/whoami")["tags"] == ["administrator"]
    assert Api(b).ok("GET", "/queues/prod/orders")["policy"] == "ttl"


def test_policies(api, connection, uniq):
    """Policies over the API: set, listed in RabbitMQ's shape, applied to the queue, cleared."""
    ch = connection.channel()
    ch.queue_declare(uniq)
    body = {"pattern": "^%s$" % uniq, "definition": {"max-length": 1}, "priority": 3, "apply-to": "queues"}
    assert api.put("/policies/%2F/" + q(uniq), body).status_code == 201
    p = api.ok("GET", "/policies/%2F/" + q(uniq))
    assert p == {"vhost": "/", "name": uniq, "pattern": "^%s$" % uniq, "apply-to": "queues",
                 "definition": {"max-length": 1}, "priority": 3}
    assert any(x["name"] == uniq for x in api.ok("GET", "/policies"))
    assert api.ok("GET", "/queues/%2F/" + q(uniq))["policy"] == uniq
    ch.confirm_delivery()
    for _ in range(3):
        ch.basic_publish("", uniq, b"m")
    assert api.ok("GET", "/queues/%2F/" + q(uniq))["messages_ready"] == 1
    r = api.put("/policies/%2F/" + q(uniq + "-bad"), {"pattern": "(", "definition": {}})
    assert r.status_code == 400
    assert api.delete("/policies/%2F/" + q(uniq)).status_code == 204
    assert api.get("/policies/%2F/" + q(uniq)).status_code == 404
    assert api.ok("GET", "/queues/%2F/" + q(uniq))["policy"] is None


def test_vhost_definitions_and_user_endpoints(api, uniq):
    """Per-vhost export/import carries queues, exchanges, bindings and policies only; the user
    helper endpoints answer in RabbitMQ's shape."""
    src, dst = uniq + "-src", uniq + "-dst"
    for v in (src, dst):
        api.ok("PUT", "/vhosts/" + q(v))
    api.ok("PUT", "/queues/%s/q1" % q(src), {"durable": True})
    api.ok("PUT", "/exchanges/%s/x1" % q(src), {"type": "direct"})
    api.ok("POST", "/bindings/%s/e/x1/q/q1" % q(src), {"routing_key": "k"})
    defs = api.ok("GET", "/definitions/" + q(src))
    assert "users" not in defs and "vhosts" not in defs
    assert [x["name"] for x in defs["queues"]] == ["q1"]
    assert api.post("/definitions/" + q(dst), defs).status_code == 204
    assert api.ok("GET", "/queues/%s/q1" % q(dst))["durable"] is True
    assert api.ok("GET", "/bindings/%s/e/x1/q/q1" % q(dst))[0]["routing_key"] == "k"
    assert api.ok("GET", "/aliveness-test/" + q(dst)) == {"status": "ok"}
    api.make_user(uniq + "-a", perms=None)
    api.make_user(uniq + "-b", perms=None)
    names = {u["name"] for u in api.ok("GET", "/users/without-permissions")}
    assert {uniq + "-a", uniq + "-b"} <= names
    assert api.post("/users/bulk-delete", {"users": [uniq + "-a", uniq + "-b"]}).status_code == 204
    assert api.get("/users/" + q(uniq + "-a")).status_code == 404


def test_connections_of_a_user(broker, api, uniq):
    api.make_user(uniq)
    conn = login(broker, uniq, "pw")
    rows = wait_for(5, lambda: api.ok("GET", "/connections/username/" + q(uniq)))
    assert [c["user"] for c in rows] == [uniq]
    assert api.delete("/connections/username/" + q(uniq)).status_code == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        wait_for(10, lambda: False, pump=conn)
    assert e.value.reply_code == 320


def test_vhost_metadata(broker_factory):
    """A vhost's description, tags and default queue type are kept, shown, exported and survive
    a restart."""
    d = broker_factory.new_data_dir()
    b = broker_factory.start(d)
    api = Api(b)
    body = {"description": "orders", "tags": "prod,eu", "default_queue_type": "quorum"}
    assert api.put("/vhosts/meta", body).status_code == 201
    v = api.ok("GET", "/vhosts/meta")
    assert (v["description"], v["tags"], v["default_queue_type"]) == ("orders", ["prod", "eu"], "quorum")
    assert v["metadata"] == {"description": "orders", "tags": ["prod", "eu"], "default_queue_type": "quorum"}
    exported = [x for x in api.ok("GET", "/definitions")["vhosts"] if x["name"] == "meta"][0]
    assert exported["metadata"]["description"] == "orders"
    b.stop()
    b = broker_factory.start(d)
    assert Api(b).ok("GET", "/vhosts/meta")["tags"] == ["prod", "eu"]
