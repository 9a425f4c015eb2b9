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


from test_tls import openssl, pki, start as start_tls  # noqa: E402,F401 (pki is a fixture)
from admin_util import Api  # noqa: E402


def test_java_client_logs_in_with_external(broker_factory, pki, tmp_path):
    """EXTERNAL with the Java client's DefaultSaslConfig.EXTERNAL over AMQPS: the certificate
    (CN=client) is the login, no password."""
    missing = [j for j in JARS if not os.path.exists(j)]
    assert not missing, "scripts/test installs librabbitmq-client-java and libslf4j-java; missing %s" % missing
    openssl("pkcs12", "-export", "-in", "client.pem", "-inkey", "client.key", "-out", "client.p12",
            "-passout", "pass:secret", cwd=pki)
    subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", str(pki / "ca.pem"),
                    "-keystore", str(tmp_path / "trust.p12"), "-storetype", "PKCS12", "-storepass", "secret"],
                   check=True, capture_output=True, timeout=60)
    b = start_tls(broker_factory, pki, "--tls-ca", str(pki / "ca.pem"), "--ssl-cert-login-from", "common_name")
    Api(b).make_user("client")
    source = os.path.join(ROOT, "interop", "java", "WarrenJavaExternal.java")
    subprocess.run(["javac", "-d", str(tmp_path), "-cp", JARS[0], source], check=True, timeout=120)
    cp = ":".join(JARS + [str(tmp_path)])
    run = lambda: subprocess.run(["java", "-cp", cp, "WarrenJavaExternal", str(b.tls_port), str(pki / "client.p12"),
                                  str(tmp_path / "trust.p12"), "secret"], capture_output=True, text=True, timeout=120)
    r = run()
    assert r.returncode == 0 and "ok external" in r.stdout, r.stdout + r.stderr
    # The certificate names a user who no longer exists: refused, as RabbitMQ does.
    Api(b).ok("DELETE", "/users/client")
    r = run()
    assert r.returncode != 0 and "ACCESS_REFUSED" in r.stdout + r.stderr, r.stdout + r.stderr
