"""Celery against the real binary: a real worker process (solo pool, late acks, prefetch 1, the
settings that make a worker take one task at a time) runs tasks, retries, groups and an ETA task,
and answers remote control. Celery 5.7 with kombu 5.7 uses per-consumer prefetch against a
RabbitMQ 4 and raises it with basic.qos while it holds ETA tasks: the worker must keep taking
tasks meanwhile (RabbitMQ 4 ignores that basic.qos for the running consumer, rabbitmq-server
#11948, and the worker stalls)."""

import os
import subprocess
import sys
import textwrap
import time

import celery
import pytest

TASKS = textwrap.dedent("""
    import os
    from celery import Celery

    app = Celery("tasks", broker=os.environ["BROKER_URL"], backend="rpc://")
    app.conf.task_acks_late = True
    app.conf.worker_prefetch_multiplier = 1
    app.conf.broker_connection_retry_on_startup = True

    @app.task
    def add(x, y):
        return x + y

    @app.task(bind=True, max_retries=3)
    def flaky(self, fail_times):
        if self.request.retries < fail_times:
            raise self.retry(countdown=0.1)
        return self.request.retries
""")


@pytest.fixture
def worker(broker, tmp_path, monkeypatch):
    (tmp_path / "tasks.py").write_text(TASKS)
    url = "amqp://guest:guest@127.0.0.1:%d//" % broker.port
    env = dict(os.environ, BROKER_URL=url, PYTHONPATH=str(tmp_path))
    monkeypatch.setenv("BROKER_URL", url)
    monkeypatch.syspath_prepend(str(tmp_path))
    log = open(tmp_path / "worker.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool=solo", "-c", "1",
                             "--without-gossip", "--loglevel=info"], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    import tasks
    deadline = time.time() + 30
    while not tasks.app.control.inspect(timeout=0.5).ping():
        assert proc.poll() is None and time.time() < deadline, open(tmp_path / "worker.log").read()
    yield tasks
    proc.terminate()
    proc.wait(timeout=15)
    sys.modules.pop("tasks", None)


def test_celery_worker_runs_tasks_retries_groups(worker):
    assert worker.add.delay(2, 3).get(timeout=20) == 5
    assert worker.flaky.delay(2).get(timeout=20) == 2
    assert celery.group(worker.add.s(i, i) for i in range(10))().get(timeout=20) == [2 * i for i in range(10)]
    assert list(worker.app.control.inspect(timeout=2).ping().values()) == [{"ok": "pong"}]


def test_celery_worker_keeps_taking_tasks_while_it_holds_an_eta_task(worker):
    """An ETA task an hour away sits in the worker; the worker raises its prefetch to take the next
    task, which must run at once, not after the hour."""
    far = worker.add.apply_async((1, 1), countdown=3600)
    time.sleep(0.5)
    assert worker.add.delay(3, 4).get(timeout=15) == 7
    far.revoke()
