"""Helpers for the administration tests: the HTTP management API through `requests`,
warrenctl through its binary, and users made for one test."""

import os
import subprocess
import urllib.parse

import pika
import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def q(name):
    """A path segment as the API wants it ("/" -> "%2F")."""
    return urllib.parse.quote(name, safe="")


class Api:
    def __init__(self, broker, user="guest", password="guest"):
        if broker.mgmt_port is None:
            pytest.skip("the broker runs without the management API")
        self.base = "http://127.0.0.1:%d/api" % broker.mgmt_port
        self.auth = (user, password)

    def as_user(self, user, password):
        a = Api.__new__(Api)
        a.base, a.auth = self.base, (user, password)
        return a

    def call(self, method, path, body=None, auth="default", **kw):
        auth = self.auth if auth == "default" else auth
        return requests.request(method, self.base + path, json=body, auth=auth, timeout=30, **kw)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def put(self, path, body=None, **kw):
        return self.call("PUT", path, body if body is not None else {}, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body if body is not None else {}, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)

    def ok(self, method, path, body=None):
        r = self.call(method, path, body)
        assert r.status_code in (200, 201, 204), (method, path, r.status_code, r.text)
        return r.json() if r.content else None

    def make_user(self, name, password="pw", tags="", vhost="/", perms=(".*", ".*", ".*")):
        self.ok("PUT", "/users/" + q(name), {"password": password, "tags": tags})
        if perms is not None:
            c, w, r = perms
            self.ok("PUT", "/permissions/%s/%s" % (q(vhost), q(name)), {"configure": c, "write": w, "read": r})


def warrenctl_binary():
    path = os.environ.get("WARRENCTL_BIN") or os.path.join(
        os.path.dirname(os.environ.get("WARREN_BIN") or os.path.join(REPO_ROOT, "target", "debug", "x")), "warrenctl")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("warrenctl not found at %s (cargo build -p warren-ctl)" % path, pytrace=False)
    return path


def ctl(broker, *args, input=None):
    """Runs warrenctl against `broker`'s data directory; returns the CompletedProcess."""
    if broker.data_dir is None:
        pytest.skip("warrenctl needs the node's data directory")
    env = dict(os.environ, WARREN_DATA_DIR=broker.data_dir)
    return subprocess.run([warrenctl_binary(), *args], capture_output=True, text=True, env=env, input=input,
                          timeout=60)


def login(broker, user, password, vhost="/"):
    return broker.connect(credentials=pika.PlainCredentials(user, password), virtual_host=vhost)
