"""The RabbitMQ Java client (Debian's librabbitmq-client-java 5.0) against the real binary:
interop/java/WarrenJavaTest.java compiled and run, each of its checks driving a feature end to end
(properties, prefetch and acks, confirms, mandatory returns, channel errors, exchange types and
exchange-to-exchange bindings, transactions, direct reply-to, nack/reject/recover, a 5 MiB body,
exclusive queues, consumer cancel notification, a wrong password, automatic connection recovery
after the broker closes the connection)."""

import os
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SOURCE = os.path.join(ROOT, "interop", "java", "WarrenJavaTest.java")
JARS = ["/usr/share/java/amqp-client.jar", "/usr/share/java/slf4j-api.jar", "/usr/share/java/slf4j-nop.jar"]


def test_java_client(broker, tmp_path):
    missing = [j for j in JARS if not os.path.exists(j)]
    assert not missing, "scripts/test installs librabbitmq-client-java and libslf4j-java; missing %s" % missing
    subprocess.run(["javac", "-d", str(tmp_path), "-cp", JARS[0], SOURCE], check=True, timeout=120)
    cp = ":".join(JARS + [str(tmp_path)])
    r = subprocess.run(["java", "-cp", cp, "WarrenJavaTest", str(broker.port), str(broker.mgmt_port)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    passed = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("ok ")]
    assert len(passed) == 14, r.stdout
