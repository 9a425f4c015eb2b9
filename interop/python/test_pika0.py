"""The classic tutorials as written for pika 0.x (0.13.1, the last 0.x; basic_consume(callback,
queue=..., no_ack=...) argument order, exchange_type=) run unchanged against the real binary, in
their own venv (.venv-pika0, made by scripts/test). pika 0.13 predates Python 3.10, which removed
collections.Callable; the venv's sitecustomize.py puts it back, and nothing else is changed."""

import os
import subprocess
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PYTHON = os.path.join(ROOT, ".venv-pika0", "bin", "python")
SCRIPTS = os.path.join(os.path.dirname(__file__), "pika0")


@pytest.fixture
def run(broker_factory):
    assert os.path.exists(PYTHON), "scripts/test makes .venv-pika0 with pika 0.13.1"
    # A broker of its own: the tutorials' fixed queue names must start empty.
    broker = broker_factory.start(broker_factory.new_data_dir())
    env = dict(os.environ, AMQP_PORT=str(broker.port))

    def run(script, *args, background=False):
        cmd = [PYTHON, os.path.join(SCRIPTS, script), *args]
        if background:
            return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    return run


def finish(p, timeout=30):
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out
    return out


def test_pika0_version():
    r = subprocess.run([PYTHON, "-c", "import pika; print(pika.__version__)"], capture_output=True, text=True)
    assert r.stdout.strip() == "0.13.1", r.stdout + r.stderr


def test_pika0_hello_world(run):
    assert run("send.py") == " [x] Sent 'Hello World!'\n"
    out = run("receive.py")
    assert " [x] Received b'Hello World!'" in out


def test_pika0_work_queue(run):
    worker = run("worker.py", "3", background=True)
    run("new_task.py", "First message.", "Second message..", "Third message...")
    out = finish(worker)
    assert out.count(" [x] Done") == 3 and "Third message..." in out


def test_pika0_publish_subscribe(run):
    receiver = run("receive_logs.py", background=True)
    assert receiver.stdout.readline().strip() == "READY"
    run("emit_log.py", "warning: disk")
    assert " [x] b'warning: disk'" in finish(receiver)


def test_pika0_rpc(run):
    assert " [.] Got 832040" in run("rpc.py")
