"""Shared fixtures for the Warren <-> pika interop suite.

The suite drives the REAL warren-server binary with the real `pika` client.

Which broker is used:
  * default: the binary at $WARREN_BIN, else <repo>/target/debug/warren-server,
    started once per test session as `warren-server --port 0 --data-dir <tmp>`;
  * if $WARREN_AMQP_PORT is set, no binary is started and the tests run
    against an already running broker on $WARREN_AMQP_HOST (default
    127.0.0.1):$WARREN_AMQP_PORT (useful to check the suite itself against a
    real RabbitMQ). Tests that need to restart the broker are skipped then.
"""

import collections
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import pika
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
DEFAULT_BIN = os.path.join(REPO_ROOT, "target", "debug", "warren-server")

PORT_RE = re.compile(r"amqp=\S*?:(\d+)")
MGMT_RE = re.compile(r"mgmt=\S*?:(\d+)")
TLS_RE = re.compile(r"amqps=\S*?:(\d+)")
STARTUP_DEADLINE_S = 20.0
STOP_DEADLINE_S = 5.0


def wait_for(deadline_s, predicate, pump=None, interval=0.01):
    """Return as soon as predicate() is truthy; fail after deadline_s seconds.

    If `pump` is a pika BlockingConnection (or a list of them), its I/O is
    processed between checks (so deliveries and callbacks are dispatched)
    instead of sleeping. Returns the predicate's truthy value.
    """
    conns = [] if pump is None else (pump if isinstance(pump, (list, tuple)) else [pump])
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(
                "condition not met within %.1fs: %r" % (deadline_s, predicate))
        if conns:
            for c in conns:
                c.process_data_events(time_limit=interval)
        else:
            time.sleep(interval)


def msg_count(conn, queue):
    """Ready messages in `queue`, through a passive declare on a throwaway channel."""
    ch = conn.channel()
    try:
        return ch.queue_declare(queue=queue, passive=True).method.message_count
    finally:
        if ch.is_open:
            ch.close()


def queue_exists(conn, queue):
    """True when `queue` exists (a passive declare succeeds); a 404 means it does not."""
    ch = conn.channel()
    try:
        ch.queue_declare(queue=queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, (e.reply_code, e.reply_text)
        return False
    ch.close()
    return True


def pump_for(seconds, conns):
    """Process I/O on the given connection(s) for `seconds` (used only to
    prove that something does NOT happen)."""
    conns = conns if isinstance(conns, (list, tuple)) else [conns]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for c in conns:
            c.process_data_events(time_limit=0.02)


class BrokerProcess:
    """A running warren-server (or an external broker)."""

    def __init__(self, host, port, proc=None, data_dir=None, log=None, mgmt_port=None, tls_port=None):
        self.host = host
        self.port = port
        # The AMQPS port (None unless started with --tls-cert/--tls-key).
        self.tls_port = tls_port
        # The HTTP management API's port (None when the server runs without it).
        self.mgmt_port = mgmt_port
        self.proc = proc
        self.data_dir = data_dir
        self.log = log if log is not None else collections.deque(maxlen=400)
        self.url = "amqp://guest:guest@%s:%d/%%2F" % (host, port)

    # -- helpers ---------------------------------------------------------
    @staticmethod
    def wait_for(deadline_s, predicate, pump=None):
        return wait_for(deadline_s, predicate, pump=pump)

    def params(self, **kw):
        kw.setdefault("credentials", pika.PlainCredentials("guest", "guest"))
        kw.setdefault("virtual_host", "/")
        kw.setdefault("connection_attempts", 1)
        kw.setdefault("blocked_connection_timeout", 30)
        return pika.ConnectionParameters(host=self.host, port=self.port, **kw)

    def connect(self, **kw):
        return pika.BlockingConnection(self.params(**kw))

    def log_tail(self, n=60):
        return "\n".join(list(self.log)[-n:])

    # -- lifecycle -------------------------------------------------------
    @property
    def managed(self):
        return self.proc is not None

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_DEADLINE_S)


def broker_binary():
    path = os.environ.get("WARREN_BIN") or DEFAULT_BIN
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("warren-server binary not found at %s (build it or set WARREN_BIN)"
                    % path, pytrace=False)
    return path


def start_broker(data_dir, extra_args=(), prefix=()):
    """Start warren-server on an ephemeral port; wait (<=20 s) for the line
    announcing `amqp=<addr>:<port>` on stdout or stderr."""
    binary = broker_binary()
    extra_args = list(extra_args)
    if not any(a in ("--management-port", "--no-management") for a in extra_args):
        # A free port for the HTTP API too, so parallel servers never compete for 15672.
        extra_args += ["--management-port", "0"]
    proc = subprocess.Popen(
        [*prefix, binary, "--port", "0", "--data-dir", data_dir, *extra_args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    log = collections.deque(maxlen=400)
    found = threading.Event()
    port_box = []

    def reader(stream, tag):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            log.append("[%s] %s" % (tag, line))
            if not found.is_set():
                m = PORT_RE.search(line)
                if m:
                    mg, tl = MGMT_RE.search(line), TLS_RE.search(line)
                    port_box.append((int(m.group(1)), int(mg.group(1)) if mg else None,
                                     int(tl.group(1)) if tl else None))
                    found.set()
        stream.close()

    for stream, tag in ((proc.stdout, "out"), (proc.stderr, "err")):
        threading.Thread(target=reader, args=(stream, tag), daemon=True).start()

    end = time.monotonic() + STARTUP_DEADLINE_S
    while not found.wait(0.05):
        if proc.poll() is not None or time.monotonic() > end:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            pytest.fail("warren-server did not announce amqp=<addr>:<port> within %ss "
                        "(exit code %r). Output:\n%s"
                        % (STARTUP_DEADLINE_S, proc.returncode, "\n".join(log)),
                        pytrace=False)
    port, mgmt_port, tls_port = port_box[0]
    return BrokerProcess("127.0.0.1", port, proc=proc, data_dir=data_dir, log=log, mgmt_port=mgmt_port,
                         tls_port=tls_port)


@pytest.fixture(scope="session")
def broker():
    """The broker under test, shared by the whole session."""
    ext_port = os.environ.get("WARREN_AMQP_PORT")
    if ext_port:
        yield BrokerProcess(os.environ.get("WARREN_AMQP_HOST", "127.0.0.1"), int(ext_port))
        return
    data_dir = tempfile.mkdtemp(prefix="warren-interop-")
    b = start_broker(data_dir)
    try:
        yield b
    finally:
        b.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def broker_factory():
    """Start private broker instances (e.g. to test restarts). Each started
    broker is stopped at teardown; data dirs are removed at teardown."""
    if os.environ.get("WARREN_AMQP_PORT"):
        pytest.skip("needs to start its own warren-server")
    started, dirs = [], []

    class Factory:
        @staticmethod
        def new_data_dir():
            d = tempfile.mkdtemp(prefix="warren-interop-priv-")
            dirs.append(d)
            return d

        @staticmethod
        def start(data_dir, extra_args=(), prefix=()):
            b = start_broker(data_dir, extra_args, prefix)
            started.append(b)
            return b

    try:
        yield Factory
    finally:
        for b in started:
            b.stop()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def uniq(request):
    """A name prefix unique to this test, e.g. 'test_basic_get-1a2b3c4d'."""
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:60]
    return "%s-%s" % (base, uuid.uuid4().hex[:8])


@pytest.fixture
def connection(broker):
    conn = broker.connect()
    yield conn
    if conn.is_open:
        try:
            conn.close()
        except Exception:
            pass


@pytest.fixture
def channel(connection):
    return connection.channel()


@pytest.fixture
def connect(broker):
    """Factory for extra connections, all closed at teardown."""
    conns = []

    def _connect(**kw):
        c = broker.connect(**kw)
        conns.append(c)
        return c

    yield _connect
    for c in conns:
        if c.is_open:
            try:
                c.close()
            except Exception:
                pass


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.roadmap("feature")` -> strict xfail (see pytest.ini)."""
    if os.environ.get("WARREN_ROADMAP_STRICT") == "1":
        return
    for item in items:
        m = item.get_closest_marker("roadmap")
        if m is not None:
            feature = m.args[0] if m.args else "roadmap feature"
            item.add_marker(pytest.mark.xfail(
                strict=True, reason="not implemented yet: %s" % feature))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        b = getattr(item, "funcargs", {}).get("broker")
        if isinstance(b, BrokerProcess) and b.managed:
            state = "running" if b.proc.poll() is None else "EXITED rc=%s" % b.proc.returncode
            rep.sections.append(("warren-server log tail (%s)" % state, b.log_tail()))
