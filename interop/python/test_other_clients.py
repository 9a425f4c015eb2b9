"""More clients from Debian's packages against the real binary, each running a script of ours:
Bunny (Ruby, ruby-bunny), php-amqplib (PHP) and rabbitmq-c's command-line tools (amqp-tools).
scripts/test installs the packages."""

import os
import subprocess

import pytest

HERE = os.path.dirname(__file__)
INTEROP = os.path.join(HERE, "..")


def run(cmd, timeout=60, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, "%s\n%s%s" % (cmd, r.stdout, r.stderr)
    return r.stdout


def test_ruby_bunny(broker):
    out = run(["ruby", os.path.join(INTEROP, "ruby", "bunny_test.rb"), str(broker.port)])
    assert out.splitlines()[-1] == "done", out


def test_php_amqplib(broker):
    out = run(["php", os.path.join(INTEROP, "php", "amqplib_test.php"), str(broker.port)])
    assert out.splitlines() == ["ok hello", "ok consume", "ok confirms", "ok return", "ok not found", "done"], out


def test_rabbitmq_c_amqp_tools(broker, uniq):
    s = ["--server", "127.0.0.1", "--port", str(broker.port)]
    q = "rabbitmq-c-" + uniq
    assert run(["amqp-declare-queue", *s, "--durable", "--queue", q]).strip() == q
    run(["amqp-publish", *s, "--routing-key", q, "--body", "from rabbitmq-c", "--persistent",
         "--content-type", "text/plain", "--header", "k: v"])
    assert run(["amqp-get", *s, "--queue", q]) == "from rabbitmq-c"
    run(["amqp-publish", *s, "--routing-key", q, "--body", "consumed"])
    assert run(["amqp-consume", *s, "--queue", q, "--count", "1", "cat"]) == "consumed"
    assert run(["amqp-delete-queue", *s, "--queue", q]).strip() == "0"
