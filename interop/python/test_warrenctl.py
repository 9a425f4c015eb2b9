"""warrenctl end to end: each command run as an operator would (the binary, finding the node
through its data directory's control file), its output and exit code checked, and its effect
checked through AMQP and the HTTP API."""

import json
import os
import stat
import subprocess
import threading

import pika
import pytest

from admin_util import Api, ctl, login, warrenctl_binary
from conftest import wait_for


@pytest.fixture
def node(broker_factory):
    return broker_factory.start(broker_factory.new_data_dir())


def ok(b, *args, input=None):
    r = ctl(b, *args, input=input)
    assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
    return r.stdout


def test_control_file_is_private(node):
    path = os.path.join(node.data_dir, "control.json")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600, oct(mode)
    assert set(json.load(open(path))) >= {"management", "secret"}


def test_users_vhosts_permissions(node):
    api = Api(node)
    assert ok(node, "add_user", "bob", "pw1").startswith('Adding user "bob" ...')
    r = ctl(node, "add_user", "bob", "pw1")
    assert r.returncode != 0 and "already exists" in r.stderr
    assert ok(node, "-q", "list_users").splitlines() == ["bob\t[]", "guest\t[administrator]"]
    ok(node, "set_user_tags", "bob", "monitoring", "policymaker")
    assert api.ok("GET", "/users/bob")["tags"] == ["monitoring", "policymaker"]
    ok(node, "add_vhost", "v1")
    assert "v1" in ok(node, "-q", "list_vhosts").split()
    ok(node, "set_permissions", "-p", "v1", "bob", "^b", ".*", ".*")
    assert ok(node, "-q", "list_permissions", "-p", "v1").splitlines() == ["bob\t^b\t.*\t.*"]
    assert ok(node, "-q", "list_user_permissions", "bob").splitlines() == ["v1\t^b\t.*\t.*"]
    conn = login(node, "bob", "pw1", vhost="v1")
    ch = conn.channel()
    ch.queue_declare("bq")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("other")
    assert e.value.reply_code == 403
    conn.close()
    ok(node, "change_password", "bob", "pw2")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        login(node, "bob", "pw1", vhost="v1")
    login(node, "bob", "pw2", vhost="v1").close()
    ok(node, "set_topic_permissions", "-p", "v1", "bob", "amq.topic", "^a", "^b")
    assert api.ok("GET", "/topic-permissions/v1/bob")[0]["write"] == "^a"
    ok(node, "clear_topic_permissions", "-p", "v1", "bob")
    ok(node, "clear_permissions", "-p", "v1", "bob")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        login(node, "bob", "pw2", vhost="v1")
    out = ok(node, "--formatter", "json", "list_users")
    assert {u["user"] for u in json.loads(out)} == {"bob", "guest"}
    ok(node, "delete_user", "bob")
    assert api.get("/users/bob").status_code == 404
    ok(node, "delete_vhost", "v1")
    assert api.get("/vhosts/v1").status_code == 404
    r = ctl(node, "delete_vhost", "v1")
    assert r.returncode == 65


def test_listings_and_queue_commands(node):
    conn = node.connect(client_properties={"connection_name": "ctl-test"})
    ch = conn.channel()
    ch.exchange_declare("ex", "topic")
    ch.queue_declare("q1", durable=True)
    ch.queue_bind("q1", "ex", "a.*")
    ch.confirm_delivery()
    for _ in range(3):
        ch.basic_publish("", "q1", b"m")
    ch.basic_consume("q1", lambda *a: None, consumer_tag="ctag-1", auto_ack=False)
    wait_for(5, lambda: True, pump=conn)
    lines = ok(node, "-q", "list_queues", "name", "messages", "consumers", "durable").splitlines()
    assert lines == ["q1\t3\t1\ttrue"]
    assert "ex\ttopic" in ok(node, "-q", "list_exchanges").splitlines()
    assert "ex\texchange\tq1\tqueue\ta.*\t[]" in ok(node, "-q", "list_bindings").splitlines()
    assert ok(node, "-q", "list_connections", "user", "peer_host", "state").splitlines() == ["guest\t127.0.0.1\trunning"]
    assert ok(node, "-q", "list_channels", "user", "consumer_count").splitlines() == ["guest\t1"]
    assert ok(node, "-q", "list_consumers", "queue_name", "consumer_tag", "ack_required").splitlines() == \
        ["q1\tctag-1\ttrue"]
    assert ctl(node, "list_queues", "bogus_column").returncode == 64
    ch.basic_cancel("ctag-1")
    conn.process_data_events(time_limit=0.2)
    # The unacked messages went back when the consumer's channel... stays open: close it.
    ch.close()
    assert wait_for(5, lambda: ok(node, "-q", "list_queues", "name", "messages").strip() == "q1\t3")
    ok(node, "purge_queue", "q1")
    assert ok(node, "-q", "list_queues", "name", "messages").strip() == "q1\t0"
    name = json.loads(ok(node, "--formatter", "json", "list_connections", "name"))[0]["name"]
    ok(node, "close_connection", name, "go away")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        wait_for(10, lambda: False, pump=conn)
    assert (e.value.reply_code, e.value.reply_text) == (320, "CONNECTION_FORCED - go away")
    assert "Queue was successfully deleted with 0 messages" in ok(node, "delete_queue", "q1")
    assert ok(node, "-q", "list_queues").strip() == ""


def test_definitions_and_reset(node, tmp_path):
    ok(node, "add_vhost", "v9")
    ok(node, "add_user", "carol", "pw")
    ok(node, "set_permissions", "-p", "v9", "carol", ".*", ".*", ".*")
    ok(node, "set_permissions", "-p", "v9", "guest", ".*", ".*", ".*")
    Api(node).ok("PUT", "/queues/v9/keep", {"durable": True})
    path = str(tmp_path / "defs.json")
    ok(node, "export_definitions", path)
    exported = json.load(open(path))
    assert {u["name"] for u in exported["users"]} == {"guest", "carol"}
    r = ctl(node, "reset")
    assert r.returncode == 69 and "stop_app" in r.stderr
    ok(node, "stop_app")
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        node.connect()
    ok(node, "reset")
    ok(node, "start_app")
    node.connect().close()
    assert Api(node).get("/vhosts/v9").status_code == 404
    ok(node, "import_definitions", path)
    assert Api(node).ok("GET", "/queues/v9/keep")["durable"] is True
    login(node, "carol", "pw", vhost="v9").close()
    out = ok(node, "export_definitions", "-")
    assert json.loads(out)["queues"] == exported["queues"]


def test_status_cluster_status_help_and_unknown_commands(node):
    assert "Status of node warren@" in ok(node, "status")
    out = ok(node, "cluster_status")
    assert "Running Nodes" in out and "warren@" in out
    assert "set_permissions" in ok(node, "set_permissions", "--help")
    r = ctl(node, "set_permision")
    assert r.returncode == 64 and "Did you mean 'set_permissions'?" in r.stderr
    r = ctl(node, "add_user", "onlyname")
    assert r.returncode == 64


def test_node_option_with_credentials(node):
    r = ctl(node, "-n", "127.0.0.1:%d" % node.mgmt_port, "--username", "guest", "--password", "guest", "-q",
            "list_users")
    assert r.returncode == 0 and "guest\t[administrator]" in r.stdout
    r = ctl(node, "-n", "http://guest:nope@127.0.0.1:%d" % node.mgmt_port, "list_users")
    assert r.returncode == 77 and "Login failed" in r.stderr


def test_missing_node_is_exit_69(tmp_path):
    class NoNode:
        data_dir = str(tmp_path)
    r = ctl(NoNode, "list_users")
    assert r.returncode == 69 and "control.json" in r.stderr


def test_stop(node):
    ok(node, "stop")
    node.proc.wait(timeout=10)
    assert node.proc.returncode == 0
    assert not os.path.exists(os.path.join(node.data_dir, "control.json"))


def test_policies(node):
    node.connect().channel().queue_declare("pq")
    out = ok(node, "set_policy", "--priority", "2", "--apply-to", "queues", "lim", "^pq$", '{"max-length": 5}')
    assert 'Setting policy "lim" for pattern "^pq$"' in out
    lines = ok(node, "-q", "list_policies").splitlines()
    assert lines == ['/\tlim\t^pq$\tqueues\t{"max-length":5}\t2']
    assert Api(node).ok("GET", "/queues/%2F/pq")["policy"] == "lim"
    ok(node, "clear_policy", "lim")
    assert ok(node, "-q", "list_policies").strip() == ""
    r = ctl(node, "set_policy", "bad", "x", "{not json")
    assert r.returncode == 65


def test_reset_survives_restart(broker_factory):
    """After reset and a restart the node is as fresh as after reset: the journal replays the
    wipe and the recreated vhost and default user."""
    d = broker_factory.new_data_dir()
    b = broker_factory.start(d)
    ok(b, "add_user", "dave", "pw")
    ok(b, "add_vhost", "gone")
    conn = b.connect()
    ch = conn.channel()
    ch.queue_declare("durable-q", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "durable-q", b"m", pika.BasicProperties(delivery_mode=2))
    conn.close()
    ok(b, "stop_app")
    ok(b, "reset")
    ok(b, "start_app")
    b.stop()
    b = broker_factory.start(d)
    api = Api(b)
    assert [u["name"] for u in api.ok("GET", "/users")] == ["guest"]
    assert [v["name"] for v in api.ok("GET", "/vhosts")] == ["/"]
    assert api.ok("GET", "/queues") == []
    login(b, "guest", "guest").close()


def test_authenticate_user_and_clear_password(node):
    ok(node, "add_user", "carol", "secret")
    out = ok(node, "authenticate_user", "carol", "secret")
    assert out.splitlines() == ['Authenticating user "carol" ...', "Success"]
    r = ctl(node, "authenticate_user", "carol", "wrong")
    assert r.returncode == 65, (r.stdout, r.stderr)
    assert 'failed to authenticate user "carol"' in r.stderr and "invalid credentials" in r.stderr
    assert ctl(node, "authenticate_user", "nobody", "x").returncode == 65
    assert ok(node, "clear_password", "carol").startswith('Clearing password for user "carol" ...')
    assert ctl(node, "authenticate_user", "carol", "secret").returncode == 65
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        login(node, "carol", "secret")
    assert ctl(node, "clear_password", "nobody").returncode == 65


def test_close_all_connections(node):
    ok(node, "add_vhost", "v2")
    ok(node, "set_permissions", "-p", "v2", "guest", ".*", ".*", ".*")
    closed = []
    in_default = [node.connect() for _ in range(2)]
    in_v2 = node.connect(virtual_host="v2")
    api = Api(node)
    wait_for(5, lambda: len(api.ok("GET", "/connections")) == 3)
    out = ok(node, "close_all_connections", "maintenance")
    assert "Closing all connections in vhost / ..." in out
    for c in in_default:
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            c.process_data_events(time_limit=2)
            c.channel()
        closed.append((e.value.reply_code, e.value.reply_text))
    assert closed == [(320, "CONNECTION_FORCED - maintenance")] * 2
    in_v2.process_data_events(time_limit=0.2)
    assert in_v2.is_open, "a connection to another vhost is left alone"
    ok(node, "close_all_connections", "--global", "everyone")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
        in_v2.process_data_events(time_limit=2)
        in_v2.channel()


def test_await_startup_waits_for_a_node_that_is_starting(broker_factory):
    d = broker_factory.new_data_dir()
    env = dict(os.environ, WARREN_DATA_DIR=d)
    waiter = subprocess.Popen([warrenctl_binary(), "await_startup", "--timeout", "30"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = []
    t = threading.Timer(1.0, lambda: started.append(broker_factory.start(d)))
    t.start()
    assert waiter.wait(timeout=40) == 0, waiter.stderr.read()
    t.join()
    assert started, "await_startup returned before the node was started"
    ok(started[0], "await_startup")


def test_vhost_limits(broker_factory):
    """set_vhost_limits / list_vhost_limits / clear_vhost_limits as rabbitmqctl's, enforced with
    RabbitMQ's codes and texts, visible in the HTTP API and kept across a restart."""
    d = broker_factory.new_data_dir()
    node = broker_factory.start(d)
    ok(node, "add_vhost", "lim")
    ok(node, "set_permissions", "-p", "lim", "guest", ".*", ".*", ".*")
    out = ok(node, "set_vhost_limits", "-p", "lim", '{"max-connections": 1, "max-queues": 1}')
    assert 'Applying limits for vhost "lim" ...' in out
    assert json.loads(ok(node, "-q", "list_vhost_limits", "-p", "lim")) == {"max-connections": 1, "max-queues": 1}
    assert Api(node).ok("GET", "/vhost-limits") == [
        {"vhost": "lim", "value": {"max-connections": 1, "max-queues": 1}}]
    first = node.connect(virtual_host="lim")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        node.connect(virtual_host="lim")
    assert "(530) \"NOT_ALLOWED - access to vhost 'lim' refused for user 'guest': connection limit (1) is reached\"" \
        in str(e.value)
    ch = first.channel()
    ch.queue_declare("one")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("two")
    assert e.value.reply_code == 406
    assert e.value.reply_text == \
        "PRECONDITION_FAILED - cannot declare queue 'two': queue limit in vhost 'lim' (1) is reached"
    first.close()
    # The definition replaces every limit the vhost had.
    ok(node, "set_vhost_limits", "-p", "lim", '{"max-queues": 5}')
    assert json.loads(ok(node, "-q", "list_vhost_limits", "-p", "lim")) == {"max-queues": 5}
    assert ctl(node, "set_vhost_limits", "-p", "lim", '{"max-channels": 5}').returncode == 65
    assert ctl(node, "set_vhost_limits", "-p", "lim", '{"max-queues": "x"}').returncode == 65
    api = Api(node)
    assert api.put("/vhost-limits/lim/max-connections", {"value": 2}).status_code == 204
    assert api.put("/vhost-limits/lim/max-channels", {"value": 2}).status_code == 400
    assert api.put("/vhost-limits/lim/max-queues", {"value": "many"}).status_code == 400
    assert api.put("/vhost-limits/nope/max-queues", {"value": 2}).status_code == 404
    exported = json.loads(ok(node, "-q", "export_definitions", "-"))
    assert {"vhost": "lim", "component": "vhost-limits", "name": "limits",
            "value": {"max-connections": 2, "max-queues": 5}} in exported["parameters"]
    node.stop()
    node = broker_factory.start(d)
    assert "lim\t{" in ok(node, "-q", "list_vhost_limits", "--global")
    assert json.loads(ok(node, "-q", "list_vhost_limits", "-p", "lim")) == {"max-connections": 2, "max-queues": 5}
    ok(node, "clear_vhost_limits", "-p", "lim")
    assert ok(node, "-q", "list_vhost_limits", "-p", "lim").strip() == ""
    conns = [node.connect(virtual_host="lim") for _ in range(3)]
    for c in conns:
        c.close()
    other = broker_factory.start(broker_factory.new_data_dir())
    ok(other, "import_definitions", "-", input=json.dumps(exported))
    assert json.loads(ok(other, "-q", "list_vhost_limits", "-p", "lim")) == {"max-connections": 2, "max-queues": 5}


def test_user_limits(broker_factory):
    """set_user_limits / list_user_limits / clear_user_limits as rabbitmqctl's: max-connections
    refuses connection.open and max-channels closes the connection that opens one channel too
    many, with RabbitMQ's 530 texts; kept across a restart and in the definitions export."""
    d = broker_factory.new_data_dir()
    node = broker_factory.start(d)
    ok(node, "add_user", "lu", "pw")
    ok(node, "set_permissions", "lu", ".*", ".*", ".*")
    ok(node, "set_user_limits", "lu", '{"max-connections": 1, "max-channels": 2}')
    assert json.loads(ok(node, "-q", "list_user_limits", "--user", "lu")) == {"max-connections": 1, "max-channels": 2}
    assert Api(node).ok("GET", "/users/lu")["limits"] == {"max-connections": 1, "max-channels": 2}
    first = login(node, "lu", "pw")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:
        login(node, "lu", "pw")
    assert "(530) \"NOT_ALLOWED - Connection refused for user 'lu': user connection limit (1) is reached\"" \
        in str(e.value)
    first.channel()
    first.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        first.channel()
    assert e.value.reply_code == 530
    assert e.value.reply_text == \
        "NOT_ALLOWED - number of channels opened for user 'lu' has reached the maximum allowed user limit of (2)"
    assert ctl(node, "set_user_limits", "lu", '{"max-queues": 1}').returncode == 65
    assert ctl(node, "set_user_limits", "nobody", '{"max-channels": 1}').returncode == 65
    node.stop()
    node = broker_factory.start(d)
    assert "lu\t{" in ok(node, "-q", "list_user_limits")
    exported = json.loads(ok(node, "-q", "export_definitions", "-"))
    assert [u["limits"] for u in exported["users"] if u["name"] == "lu"] == [{"max-connections": 1, "max-channels": 2}]
    ok(node, "clear_user_limits", "lu", "max-connections")
    assert json.loads(ok(node, "-q", "list_user_limits", "--user", "lu")) == {"max-channels": 2}
    ok(node, "clear_user_limits", "lu", "all")
    assert ok(node, "-q", "list_user_limits", "--user", "lu").strip() == ""
    conns = [login(node, "lu", "pw") for _ in range(2)]
    for c in conns:
        for _ in range(3):
            c.channel()
        c.close()
    other = broker_factory.start(broker_factory.new_data_dir())
    ok(other, "import_definitions", "-", input=json.dumps(exported))
    assert json.loads(ok(other, "-q", "list_user_limits", "--user", "lu")) == {"max-connections": 1, "max-channels": 2}


def test_ping_hash_password_and_force_reset(node):
    out = ok(node, "ping")
    assert out.strip().endswith("Ping succeeded")
    # hash_password's output is what the user database stores: a login with it works.
    h = ok(node, "hash_password", "s3cret").strip().splitlines()[-1]
    api = Api(node)
    api.ok("PUT", "/users/hashed", {"password_hash": h, "hashing_algorithm": "rabbit_password_hashing_sha256",
                                     "tags": ""})
    api.ok("PUT", "/permissions/%2F/hashed", {"configure": ".*", "write": ".*", "read": ".*"})
    login(node, "hashed", "s3cret").close()
    assert ok(node, "hash_password", "s3cret").strip().splitlines()[-1] != h, "a fresh salt each time"
    # force_reset, as reset, needs stop_app first.
    r = ctl(node, "force_reset")
    assert r.returncode == 69, (r.stdout, r.stderr)
    ok(node, "stop_app")
    ok(node, "force_reset")
    ok(node, "start_app")
    assert "hashed" not in [u["name"] for u in api.ok("GET", "/users")]


def node_resources(node):
    api = Api(node)
    return api.ok("GET", "/nodes/" + api.ok("GET", "/overview")["node"])


def test_alarm_thresholds_change_at_run_time(node):
    base = node_resources(node)
    assert not base["mem_alarm"] and not base["disk_free_alarm"]
    ok(node, "set_vm_memory_high_watermark", "absolute", "1MiB")
    assert node_resources(node)["mem_limit"] == 1024 * 1024
    assert wait_for(5, lambda: node_resources(node)["mem_alarm"]), "memory alarm after lowering the watermark"
    # Publishers are blocked: connection.blocked reaches a client that asks for it.
    conn = node.connect(blocked_connection_timeout=30)
    blocked = []
    conn.add_on_connection_blocked_callback(lambda *a: blocked.append(1))
    conn.channel().basic_publish("", "nowhere", b"x")
    assert wait_for(5, lambda: blocked, pump=conn)
    ok(node, "set_vm_memory_high_watermark", "0.9")
    assert wait_for(5, lambda: not node_resources(node)["mem_alarm"])
    conn.close()
    r = ctl(node, "set_vm_memory_high_watermark", "1.5")
    assert r.returncode == 64, (r.stdout, r.stderr)

    ok(node, "set_disk_free_limit", "1000TB")
    assert node_resources(node)["disk_free_limit"] == 1000 * 10**12
    assert wait_for(5, lambda: node_resources(node)["disk_free_alarm"])
    ok(node, "set_disk_free_limit", "1")
    assert wait_for(5, lambda: not node_resources(node)["disk_free_alarm"])
    ok(node, "set_disk_free_limit", "mem_relative", "0.0")
    assert node_resources(node)["disk_free_limit"] == 0
    r = ctl(node, "set_disk_free_limit", "12 parsecs")
    assert r.returncode == 64, (r.stdout, r.stderr)


def test_shutdown_waits_for_the_process(node):
    out = ok(node, "shutdown")
    assert "successfully shut down" in out
    assert node.proc.poll() is not None, "the process is gone when shutdown returns"


def test_feature_flags_all_on(node):
    out = ok(node, "list_feature_flags")
    assert "name\tstate" in out
    assert "Enabling all feature flags" in ok(node, "enable_feature_flag", "all")
    r = ctl(node, "enable_feature_flag", "khepri_db")
    assert r.returncode == 65 and "no feature flags" in r.stderr + r.stdout, (r.stdout, r.stderr)


def test_cluster_name_and_global_parameters(broker_factory):
    """set_cluster_name and the global parameter commands, as rabbitmqctl: the name reaches clients
    in connection.start, the HTTP API and cluster_status, is exported with the definitions, and
    it and the parameters survive a restart; clear and reset remove them."""
    d = broker_factory.new_data_dir()
    node = broker_factory.start(d)
    api = Api(node)
    default = api.ok("GET", "/cluster-name")["name"]
    assert default.startswith("warren@"), default
    conn = login(node, "guest", "guest")
    assert conn._impl.server_properties["cluster_name"] in (default, default.encode())
    conn.close()

    assert ok(node, "set_cluster_name", "orders-cluster") == "Setting cluster name to orders-cluster ...\n"
    ok(node, "set_global_parameter", "site", '{"region": "eu", "racks": [1, 2]}')
    ok(node, "set_global_parameter", "scratch", "42")
    assert ok(node, "clear_global_parameter", "scratch") == 'Clearing global runtime parameter "scratch" ...\n'
    r = ctl(node, "clear_global_parameter", "scratch")
    assert r.returncode == 65, (r.returncode, r.stderr)
    r = ctl(node, "set_global_parameter", "bad", "{not json")
    assert r.returncode == 65 and "could not parse JSON" in r.stderr

    def check(n):
        a = Api(n)
        assert a.ok("GET", "/cluster-name") == {"name": "orders-cluster"}
        assert a.ok("GET", "/overview")["cluster_name"] == "orders-cluster"
        assert a.ok("GET", "/global-parameters/site") == {"name": "site", "value": {"region": "eu", "racks": [1, 2]}}
        assert a.get("/global-parameters/scratch").status_code == 404
        exported = {p["name"]: p["value"] for p in a.ok("GET", "/definitions")["global_parameters"]}
        assert exported == {"cluster_name": "orders-cluster", "site": {"region": "eu", "racks": [1, 2]}}
        assert "Cluster name: orders-cluster" in ok(n, "cluster_status")
        assert json.loads(ok(n, "--formatter", "json", "cluster_status"))["cluster_name"] == "orders-cluster"
        listed = ok(n, "-q", "list_global_parameters").splitlines()
        assert 'cluster_name\t"orders-cluster"' in listed and any(l.startswith("site\t") for l in listed), listed
        c = login(n, "guest", "guest")
        assert c._impl.server_properties["cluster_name"] in ("orders-cluster", b"orders-cluster")
        c.close()

    check(node)
    node.stop()
    node = broker_factory.start(d)
    check(node)

    # The HTTP API: only administrators may change it, and a name must be a non-empty string.
    ok(node, "add_user", "mon", "pw")
    ok(node, "set_user_tags", "mon", "monitoring")
    assert Api(node, "mon", "pw").put("/cluster-name", {"name": "x"}).status_code == 401
    assert Api(node).put("/cluster-name", {"name": ""}).status_code == 400
    assert Api(node).put("/global-parameters/new", {"value": [1]}).status_code == 201
    assert Api(node).put("/global-parameters/new", {"value": [2]}).status_code == 204
    ok(node, "stop_app")
    ok(node, "reset")
    ok(node, "start_app")
    assert Api(node).ok("GET", "/global-parameters") == []
    assert Api(node).ok("GET", "/cluster-name")["name"] == default


def test_health_checks_as_rabbitmq_diagnostics(node):
    """The rabbitmq-diagnostics health checks container probes use: exit 0 with RabbitMQ's text
    when healthy, 69 when not (the app stopped, an alarm in effect)."""
    name = Api(node).ok("GET", "/overview")["node"]
    assert ok(node, "check_running") == "RabbitMQ on node %s is fully booted and running\n" % name
    assert ok(node, "check_local_alarms") == "Node %s reported no local alarms\n" % name
    assert ok(node, "check_alarms") == "Node %s reported no alarms, local or clustered\n" % name
    assert ok(node, "check_virtual_hosts") == "Node %s reported all vhosts as running\n" % name
    assert Api(node).ok("GET", "/vhosts/%2F")["cluster_state"] == {name: "running"}
    out = ok(node, "check_port_connectivity")
    assert out.startswith("Successfully connected to ports ") and str(node.port) in out, out
    assert str(node.mgmt_port) in out, out
    listeners = ok(node, "-q", "listeners")
    assert "port: %d, protocol: amqp, purpose: AMQP 0-9-1" % node.port in listeners, listeners
    assert ok(node, "-q", "server_version").strip() == Api(node).ok("GET", "/overview")["rabbitmq_version"]

    ok(node, "set_vm_memory_high_watermark", "absolute", "1MiB")
    assert wait_for(5, lambda: node_resources(node)["mem_alarm"])
    r = ctl(node, "check_local_alarms")
    assert r.returncode == 69 and "memory resource limit alarm on node %s" % name in r.stderr, (r.stdout, r.stderr)
    assert "memory resource limit alarm" in ok(node, "alarms")
    ok(node, "set_vm_memory_high_watermark", "0.9")
    assert wait_for(5, lambda: not node_resources(node)["mem_alarm"])
    ok(node, "check_alarms")

    ok(node, "stop_app")
    r = ctl(node, "check_running")
    assert r.returncode == 69 and "is not running" in r.stderr, (r.stdout, r.stderr)
    ok(node, "start_app")
    ok(node, "check_running")


def test_scripts_written_for_rabbitmqctl_work_through_a_symlink(node, tmp_path):
    """A script that calls rabbitmqctl or rabbitmq-diagnostics by name works when those names are
    symlinks to warrenctl."""
    for tool, args, expect in (("rabbitmqctl", ("-q", "list_users"), "guest\t[administrator]"),
                               ("rabbitmq-diagnostics", ("check_running",), "fully booted and running")):
        link = tmp_path / tool
        link.symlink_to(warrenctl_binary())
        env = dict(os.environ, WARREN_DATA_DIR=node.data_dir)
        r = subprocess.run([str(link), *args], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0 and expect in r.stdout, (tool, r.returncode, r.stdout, r.stderr)


def test_blocked_connection_outlives_its_heartbeat_timeout(node):
    """A publisher blocked by a resource alarm is not read from, so its heartbeats wait in the
    socket; as RabbitMQ pauses its heartbeat monitor while blocked, the unread time is not
    silence: blocked for four heartbeat intervals, the connection is still there when the alarm
    clears, and its publish goes through."""
    name = Api(node).ok("GET", "/overview")["node"]
    conn = node.connect(heartbeat=1, blocked_connection_timeout=60)
    ch = conn.channel()
    ch.queue_declare("after-block")
    blocked = []
    conn.add_on_connection_blocked_callback(lambda *a: blocked.append(1))
    ok(node, "set_vm_memory_high_watermark", "absolute", "1MiB")
    assert wait_for(5, lambda: Api(node).ok("GET", "/nodes/" + name)["mem_alarm"])
    ch.basic_publish("", "after-block", b"1")
    assert wait_for(5, lambda: blocked, pump=conn)
    conn.sleep(4.0)
    ok(node, "set_vm_memory_high_watermark", "0.9")
    ch.basic_publish("", "after-block", b"2")
    conn.sleep(1.5)
    assert conn.is_open
    assert ch.queue_declare("after-block", passive=True).method.message_count == 2
    conn.close()
