"""The official rabbitmqadmin v2 CLI (a client of RabbitMQ's HTTP API, deserialising its JSON into
typed structs) against Warren: listing, declaring, publishing, getting and deleting, health checks
and a definitions export/import. scripts/test builds it into .tools; skipped when absent."""

import json
import os
import shutil
import subprocess

import pytest

from admin_util import Api


def rabbitmqadmin():
    path = os.environ.get("RABBITMQADMIN_BIN") or shutil.which("rabbitmqadmin")
    if not path or not os.access(path, os.X_OK):
        pytest.skip("rabbitmqadmin v2 not installed (scripts/test builds it into .tools)")
    return path


@pytest.fixture
def admin(broker):
    binary = rabbitmqadmin()
    if broker.mgmt_port is None:
        pytest.skip("the broker runs without the management API")

    def run(*args, ok=True):
        cmd = [binary, "--non-interactive", "--host", "127.0.0.1", "--port", str(broker.mgmt_port),
               "--username", "guest", "--password", "guest", *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if ok:
            assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
        return r

    return run


def test_declare_list_delete(admin, broker, uniq):
    api = Api(broker)
    admin("declare", "queue", "--name", uniq, "--durable", "true")
    admin("declare", "exchange", "--name", uniq + "-x", "--type", "topic")
    admin("declare", "binding", "--source", uniq + "-x", "--destination-type", "queue", "--destination", uniq,
          "--routing-key", "a.#")
    assert api.ok("GET", "/queues/%2F/" + uniq)["durable"] is True
    assert uniq in admin("list", "queues").stdout
    assert uniq + "-x" in admin("list", "exchanges").stdout
    assert "a.#" in admin("list", "bindings").stdout
    out = admin("publish", "message", "--exchange", uniq + "-x", "--routing-key", "a.b", "--payload", "hello").stdout
    assert "routed" in out
    assert "hello" in admin("get", "messages", "--queue", uniq).stdout
    admin("purge", "queue", "--name", uniq)
    assert api.ok("GET", "/queues/%2F/" + uniq)["messages"] == 0
    admin("delete", "queue", "--name", uniq)
    admin("delete", "exchange", "--name", uniq + "-x")
    assert api.get("/queues/%2F/" + uniq).status_code == 404


def test_users_vhosts_permissions(admin, broker, uniq):
    api = Api(broker)
    admin("declare", "vhost", "--name", uniq)
    admin("declare", "user", "--name", uniq, "--password", "pw", "--tags", "management")
    admin("declare", "permissions", "--vhost", uniq, "--user", uniq, "--configure", ".*", "--write", ".*",
          "--read", ".*")
    assert api.ok("GET", "/permissions/%s/%s" % (uniq, uniq))["configure"] == ".*"
    # A connection, a channel and a consumer to list (every field of each must decode).
    conn = broker.connect()
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_consume(q, lambda *a: None, consumer_tag="admin-listed-" + uniq)
    for what in ("users", "vhosts", "permissions", "nodes", "connections", "channels", "consumers", "policies"):
        out = admin("list", what).stdout
        if what == "consumers":
            assert "admin-listed-" + uniq in out, out
    conn.close()
    admin("delete", "user", "--name", uniq)
    admin("delete", "vhost", "--name", uniq)
    assert api.get("/vhosts/" + uniq).status_code == 404


def test_health_checks_and_overview(admin, broker):
    admin("show", "overview")
    admin("health_check", "local_alarms")
    admin("health_check", "cluster_wide_alarms")
    admin("health_check", "port_listener", "--port", str(broker.port))
    admin("health_check", "protocol_listener", "--protocol", "amqp")


def test_definitions_export_import(admin, broker, uniq, tmp_path):
    Api(broker).ok("PUT", "/queues/%2F/" + uniq, {"durable": True})
    out = admin("definitions", "export").stdout
    defs = json.loads(out)
    assert any(q["name"] == uniq for q in defs["queues"])
    Api(broker).ok("DELETE", "/queues/%2F/" + uniq)
    path = tmp_path / "defs.json"
    path.write_text(out)
    admin("definitions", "import", "--file", str(path))
    assert Api(broker).ok("GET", "/queues/%2F/" + uniq)["durable"] is True
