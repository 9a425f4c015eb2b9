"""Users, vhost access and permissions enforced on AMQP operations, checked with pika against the
real binary. Users are made per test through the HTTP API; reply codes and texts are RabbitMQ's."""

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import uuid

import pika
import pytest

from admin_util import Api, login, q
from conftest import wait_for


@pytest.fixture
def api(broker):
    return Api(broker)


def closed_by_broker(fn):
    """Runs fn; returns the (code, text) of the channel or connection close it caused."""
    with pytest.raises((pika.exceptions.ChannelClosedByBroker, pika.exceptions.ConnectionClosedByBroker)) as e:
        fn()
    return e.value.reply_code, e.value.reply_text


def test_password_hash_vector_from_hashlib_logs_in(broker, api, uniq):
    """A user created with a hash computed here (RabbitMQ's sha256 scheme) logs in with the password."""
    salt = os.urandom(4)
    digest = hashlib.sha256(salt + b"s3cret").digest()
    h = base64.b64encode(salt + digest).decode()
    r = api.put("/users/" + q(uniq), {"password_hash": h, "hashing_algorithm": "rabbit_password_hashing_sha256",
                                      "tags": ""})
    assert r.status_code == 201, r.text
    assert api.ok("GET", "/users/" + q(uniq))["password_hash"] == h
    api.ok("PUT", "/permissions/%2F/" + q(uniq), {"configure": ".*", "write": ".*", "read": ".*"})
    login(broker, uniq, "s3cret").close()


def test_wrong_password_is_refused_with_403(broker, api, uniq):
    api.make_user(uniq, "right")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as e:
        login(broker, uniq, "wrong")
    assert "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN" in str(e.value)
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        login(broker, "no-such-user-" + uniq, "x")


def test_vhost_missing_or_refused_is_530(broker, api, uniq):
    api.make_user(uniq, perms=None)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        login(broker, uniq, "pw", vhost="nope-" + uniq)
    assert "NOT_ALLOWED - vhost nope-%s not found" % uniq in str(e.value)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        login(broker, uniq, "pw")
    assert "NOT_ALLOWED - access to vhost '/' refused for user '%s'" % uniq in str(e.value)


# Each AMQP operation with the permissions it needs: (kind, resource, permission).
OPS = {
    "exchange.declare": [("exchange", "x", "configure")],
    "exchange.delete": [("exchange", "x", "configure")],
    "queue.declare": [("queue", "q", "configure")],
    "queue.delete": [("queue", "q", "configure")],
    "queue.bind": [("queue", "q", "write"), ("exchange", "x", "read")],
    "queue.unbind": [("queue", "q", "write"), ("exchange", "x", "read")],
    "exchange.bind": [("exchange", "x2", "write"), ("exchange", "x", "read")],
    "basic.publish": [("exchange", "x", "write")],
    "basic.publish default exchange": [("exchange", "amq.default", "write")],
    "basic.get": [("queue", "q", "read")],
    "basic.consume": [("queue", "q", "read")],
    "queue.purge": [("queue", "q", "read")],
}


def run_op(ch, op, names):
    x, x2, qn = names["x"], names["x2"], names["q"]
    if op == "exchange.declare":
        ch.exchange_declare(x, "direct")
    elif op == "exchange.delete":
        ch.exchange_delete(x)
    elif op == "queue.declare":
        ch.queue_declare(qn)
    elif op == "queue.delete":
        ch.queue_delete(qn)
    elif op == "queue.bind":
        ch.queue_bind(qn, x, "k")
    elif op == "queue.unbind":
        ch.queue_unbind(qn, x, "k")
    elif op == "exchange.bind":
        ch.exchange_bind(x2, x, "k")
    elif op.startswith("basic.publish"):
        ch.confirm_delivery()
        ch.basic_publish("" if "default" in op else x, qn, b"m")
    elif op == "basic.get":
        ch.basic_get(qn)
    elif op == "basic.consume":
        ch.basic_consume(qn, lambda *a: None)
    elif op == "queue.purge":
        ch.queue_purge(qn)


def setup_resources(connection, names):
    ch = connection.channel()
    ch.exchange_declare(names["x"], "direct")
    ch.exchange_declare(names["x2"], "direct")
    ch.queue_declare(names["q"])
    ch.queue_bind(names["q"], names["x"], "k")
    ch.close()


CASES = [(op, i) for op, needs in OPS.items() for i in range(len(needs))] + [(op, None) for op in OPS]


@pytest.mark.parametrize("op,missing", CASES, ids=["%s-%s" % (o, "granted" if m is None else OPS[o][m][2] + "-" + OPS[o][m][1])
                                                   for o, m in CASES])
def test_permission_matrix(broker, api, connection, uniq, op, missing):
    """Each operation succeeds with every permission granted and fails with 403 and RabbitMQ's
    text when exactly the one it needs on one resource is missing."""
    names = {"x": uniq + "-x", "x2": uniq + "-x2", "q": uniq + "-q"}
    setup_resources(connection, names)
    perms = {"configure": ".*", "write": ".*", "read": ".*"}
    expected = None
    if missing is not None:
        kind, res, perm = OPS[op][missing]
        name = names.get(res, res)
        # Each operation checks one resource per permission, so "^$" denies exactly that one.
        perms[perm] = "^$"
        expected = "ACCESS_REFUSED - access to %s '%s' in vhost '/' refused for user '%s'" % (kind, name, uniq)
    api.make_user(uniq, perms=(perms["configure"], perms["write"], perms["read"]))
    conn = login(broker, uniq, "pw")
    try:
        ch = conn.channel()
        if expected is None:
            run_op(ch, op, names)
            assert ch.is_open
        else:
            code, text = closed_by_broker(lambda: run_op(ch, op, names))
            assert (code, text) == (403, expected)
    finally:
        if conn.is_open:
            conn.close()


def test_passive_declares_need_no_permission(broker, api, connection, uniq):
    setup_resources(connection, {"x": uniq + "-x", "x2": uniq + "-x2", "q": uniq + "-q"})
    api.make_user(uniq, perms=("^$", "^$", "^$"))
    conn = login(broker, uniq, "pw")
    ch = conn.channel()
    ch.queue_declare(uniq + "-q", passive=True)
    ch.exchange_declare(uniq + "-x", passive=True)
    conn.close()


def test_permission_changes_apply_at_once(broker, api, uniq):
    api.make_user(uniq)
    conn = login(broker, uniq, "pw")
    ch = conn.channel()
    ch.queue_declare(uniq + "-a")
    api.ok("PUT", "/permissions/%2F/" + q(uniq), {"configure": "^$", "write": ".*", "read": ".*"})
    code, _ = closed_by_broker(lambda: ch.queue_declare(uniq + "-b"))
    assert code == 403
    api.ok("DELETE", "/permissions/%2F/" + q(uniq))
    ch = conn.channel()
    code, text = closed_by_broker(lambda: ch.basic_get(uniq + "-a"))
    assert code == 403 and "refused for user '%s'" % uniq in text
    conn.close()


def test_write_permission_change_stops_a_publish_stream(broker, api, uniq):
    """Publishes to one exchange are checked once and cached per connection; a permission
    change must still stop the very next publish."""
    api.make_user(uniq)
    conn = login(broker, uniq, "pw")
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(uniq)
    for _ in range(3):
        ch.basic_publish("", uniq, b"ok")
    api.ok("PUT", "/permissions/%2F/" + q(uniq), {"configure": ".*", "write": "^$", "read": ".*"})
    code, text = closed_by_broker(lambda: ch.basic_publish("", uniq, b"refused"))
    assert code == 403 and "exchange 'amq.default'" in text, text
    conn.close()


def test_reserved_amq_names_are_refused(broker, connection, uniq):
    ch = connection.channel()
    code, text = closed_by_broker(lambda: ch.exchange_declare("amq." + uniq, "direct"))
    assert code == 403 and "reserved prefix 'amq.*'" in text


def test_topic_permissions_limit_routing_keys(broker, api, uniq):
    api.make_user(uniq)
    r = api.put("/topic-permissions/%2F/" + q(uniq), {"exchange": "amq.topic", "write": "^allowed\\.", "read": ".*"})
    assert r.status_code in (201, 204), r.text
    conn = login(broker, uniq, "pw")
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("amq.topic", "allowed.x", b"m")
    code, text = closed_by_broker(lambda: ch.basic_publish("amq.topic", "other.x", b"m"))
    assert (code, text) == (403, "ACCESS_REFUSED - access to topic 'other.x' in exchange 'amq.topic' in vhost '/' "
                                 "refused for user '%s'" % uniq)
    if conn.is_open:
        conn.close()


def test_deleting_a_vhost_closes_its_connections_with_320(broker, api, uniq):
    api.ok("PUT", "/vhosts/" + q(uniq))
    api.ok("PUT", "/permissions/%s/guest" % q(uniq), {"configure": ".*", "write": ".*", "read": ".*"})
    conn = login(broker, "guest", "guest", vhost=uniq)
    ch = conn.channel()
    ch.queue_declare("q")
    api.ok("DELETE", "/vhosts/" + q(uniq))
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        wait_for(10, lambda: False, pump=conn)
    assert e.value.reply_code == 320 and "vhost '%s' is deleted" % uniq in e.value.reply_text
    assert api.get("/queues/" + q(uniq)).status_code == 404


def test_users_and_permissions_survive_restart(broker_factory):
    d = broker_factory.new_data_dir()
    b = broker_factory.start(d)
    api = Api(b)
    api.make_user("alice", "pw1", tags="monitoring", perms=("^a", "^b", "^c"))
    api.ok("PUT", "/vhosts/v2")
    b.stop()
    b = broker_factory.start(d)
    api = Api(b)
    assert api.ok("GET", "/users/alice")["tags"] == ["monitoring"]
    assert api.ok("GET", "/permissions/%2F/alice") == {"user": "alice", "vhost": "/", "configure": "^a",
                                                        "write": "^b", "read": "^c"}
    login(b, "alice", "pw1").close()
    assert api.get("/vhosts/v2").status_code == 200


def test_default_user_from_flags(broker_factory):
    b = broker_factory.start(broker_factory.new_data_dir(), ["--default-user", "admin", "--default-pass", "pw"])
    login(b, "admin", "pw").close()
    assert Api(b, "admin", "pw").ok("GET", "/whoami") == {"name": "admin", "tags": ["administrator"]}
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        login(b, "guest", "guest")


NETNS_CLIENT = """
import sys, pika
try:
    pika.BlockingConnection(pika.ConnectionParameters(host=sys.argv[1], port=int(sys.argv[2]),
        credentials=pika.PlainCredentials(sys.argv[3], sys.argv[4]), connection_attempts=1)).close()
    print("OK")
except Exception as e:
    print("ERR", e)
"""


NETNS_HTTP = """
import base64, sys, urllib.request, urllib.error
req = urllib.request.Request("http://%s:%s/api/whoami" % (sys.argv[1], sys.argv[2]),
                             headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
try:
    print(urllib.request.urlopen(req, timeout=30).status)
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"""


def test_guest_only_from_loopback(broker_factory):
    """guest is refused from a non-loopback peer address: server and client run in a network
    namespace made for the test, the client connecting to the namespace's own non-loopback
    address (traffic never leaves the namespace)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make a network namespace")
    ns = "warren-" + uuid.uuid4().hex[:8]
    addr = "10.213.%d.1" % (os.getpid() % 250)
    setup = [["ip", "netns", "add", ns],
             ["ip", "-n", ns, "link", "set", "lo", "up"],
             # A non-loopback address on the namespace's own lo: local traffic, non-loopback peer.
             ["ip", "-n", ns, "addr", "add", addr + "/32", "dev", "lo"]]
    for cmd in setup:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            pytest.skip("cannot make a network namespace here: %s" % r.stderr.strip())
    try:
        b = broker_factory.start(broker_factory.new_data_dir(), prefix=["ip", "netns", "exec", ns])
        py = sys.executable

        def connect(host, user, password):
            r = subprocess.run(["ip", "netns", "exec", ns, py, "-c", NETNS_CLIENT, host, str(b.port), user, password],
                               capture_output=True, text=True, timeout=60)
            return r.stdout.strip()

        assert connect("127.0.0.1", "guest", "guest") == "OK"
        out = connect(addr, "guest", "guest")
        assert out.startswith("ERR") and "ACCESS_REFUSED - user 'guest' can only connect via localhost" in out, out

        def http(host):
            r = subprocess.run(["ip", "netns", "exec", ns, py, "-c", NETNS_HTTP, host, str(b.mgmt_port)],
                               capture_output=True, text=True, timeout=60)
            return r.stdout.strip()

        assert http("127.0.0.1") == "200"
        assert http(addr) == '401 {"error":"not_authorised","reason":"User can only log in via localhost"}'
        b.stop()
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_deleting_a_user_closes_its_connections_with_320(broker, api, uniq):
    api.make_user(uniq)
    conn = login(broker, uniq, "pw")
    api.ok("DELETE", "/users/" + q(uniq))
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        wait_for(10, lambda: False, pump=conn)
    assert (e.value.reply_code, e.value.reply_text) == (320, "CONNECTION_FORCED - user '%s' is deleted" % uniq)
    assert api.get("/permissions/%2F/" + q(uniq)).status_code == 404


def test_empty_pattern_denies_like_rabbitmq(broker, api, uniq):
    """RabbitMQ reads an empty permission pattern as "^$": nothing (but the empty name) matches."""
    api.make_user(uniq, perms=(".*", "", ".*"))
    conn = login(broker, uniq, "pw")
    ch = conn.channel()
    ch.queue_declare(uniq)
    ch.confirm_delivery()
    code, text = closed_by_broker(lambda: ch.basic_publish("amq.direct", uniq, b"m"))
    assert (code, text) == (403, "ACCESS_REFUSED - access to exchange 'amq.direct' in vhost '/' refused for user '%s'"
                            % uniq)
    if conn.is_open:
        conn.close()
