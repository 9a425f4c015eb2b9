"""AMQPS: --tls-cert/--tls-key open a TLS listener beside the plain one (pika with an SSL context,
certificates made here with openssl); --tls-ca verifies client certificates, and with
--tls-fail-if-no-peer-cert a client without one is refused. The management API shows ssl=true."""

import re
import ssl
import subprocess

import pika
import pytest
import requests

from admin_util import Api
from conftest import wait_for


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, both signed
    by the CA."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=Warren test CA", cwd=d)
    # Extensions make them X.509 v3 certificates, which rustls (webpki) requires.
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, ext in (("server", ["-extfile", "server.ext"]), ("client", ["-extfile", "client.ext"])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", "/CN=" + name, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", name + ".pem", "-days", "2", *ext, cwd=d)
    return d


def tls_params(broker, pki, client_cert=False):
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if client_cert:
        context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    return pika.ConnectionParameters(host="127.0.0.1", port=broker.tls_port, connection_attempts=1,
                                     ssl_options=pika.SSLOptions(context, server_hostname="localhost"))


def start(broker_factory, pki, *extra):
    return broker_factory.start(broker_factory.new_data_dir(), [
        "--tls-port", "0", "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), *extra])


def test_amqps_hello_world_beside_plain_amqp(broker_factory, pki):
    b = start(broker_factory, pki)
    assert b.tls_port and b.tls_port != b.port
    conn = pika.BlockingConnection(tls_params(b, pki))
    ch = conn.channel()
    ch.queue_declare("tls-hello")
    ch.confirm_delivery()
    body = b"x" * 300_000
    ch.basic_publish("", "tls-hello", body)
    plain = b.connect()
    method, _, got = plain.channel().basic_get("tls-hello", auto_ack=True)
    assert got == body, "published over TLS, read over plain AMQP"
    api = Api(b)
    conns = wait_for(5, lambda: api.ok("GET", "/connections") if len(api.ok("GET", "/connections")) == 2 else None)
    assert sorted(c["ssl"] for c in conns) == [False, True]
    listeners = {(l["protocol"], l["port"]) for l in api.ok("GET", "/overview")["listeners"]}
    assert ("amqp/ssl", b.tls_port) in listeners and ("amqp", b.port) in listeners
    conn.close()
    plain.close()


def test_large_deliveries_over_tls_do_not_wait_for_a_heartbeat(broker_factory, pki):
    """40 round trips of a 15 MB message over TLS, each back within 3 s. rustls may accept the
    plaintext while the socket is full and keep the last encrypted records until a flush; before
    the writer flushed after each write, about one round trip in 15 waited for the next heartbeat
    (half the 10 s negotiated here) to carry them (found by pika's TLS acceptance tests)."""
    b = start(broker_factory, pki)
    body = b"x" * 15_666_105
    params = tls_params(b, pki)
    params.heartbeat = 10
    for i in range(40):
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, body)
        for method, _, got in ch.consume(q, auto_ack=True, inactivity_timeout=3):
            assert method is not None, "round trip %d waited for a heartbeat" % i
            assert got == body
            break
        conn.close()


def test_plain_amqp_on_the_tls_port_is_refused(broker_factory, pki):
    b = start(broker_factory, pki)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port=b.tls_port, connection_attempts=1,
                                                          socket_timeout=5, blocked_connection_timeout=5))
    b.connect().close()


def test_client_certificates_verified_against_the_ca(broker_factory, pki):
    b = start(broker_factory, pki, "--tls-ca", str(pki / "ca.pem"), "--tls-fail-if-no-peer-cert")
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(tls_params(b, pki, client_cert=False))
    conn = pika.BlockingConnection(tls_params(b, pki, client_cert=True))
    conn.channel().queue_declare("mtls")
    conn.close()
    # Without --tls-fail-if-no-peer-cert a certificate is asked for, checked if given, not required.
    b = start(broker_factory, pki, "--tls-ca", str(pki / "ca.pem"))
    pika.BlockingConnection(tls_params(b, pki, client_cert=False)).close()
    pika.BlockingConnection(tls_params(b, pki, client_cert=True)).close()


def test_bad_key_file_is_a_clear_startup_error(broker_factory, pki, tmp_path):
    (tmp_path / "empty.pem").write_text("")
    r = subprocess.run([__import__("conftest").broker_binary(), "--port", "0", "--management-port", "0",
                        "--data-dir", str(tmp_path / "d"), "--tls-port", "0", "--tls-cert", str(pki / "server.pem"),
                        "--tls-key", str(tmp_path / "empty.pem")], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "no PEM private key in" in r.stderr, r.stderr


def external_params(broker, pki, cert):
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / (cert + ".pem")), str(pki / (cert + ".key")))
    return pika.ConnectionParameters(host="127.0.0.1", port=broker.tls_port, connection_attempts=1,
                                     credentials=pika.credentials.ExternalCredentials(),
                                     ssl_options=pika.SSLOptions(context, server_hostname="localhost"))


def test_external_login_names_the_user_by_certificate(broker_factory, pki):
    """EXTERNAL (RabbitMQ's rabbitmq_auth_mechanism_ssl): the verified client certificate is the
    credential; --ssl-cert-login-from picks the common name or the RFC 4514 subject."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "alice.key", "-out", "alice.csr",
            "-subj", "/O=Warren Test/OU=ops/CN=alice", cwd=pki)
    openssl("x509", "-req", "-in", "alice.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "alice.pem", "-days", "2", "-extfile", "client.ext", cwd=pki)

    b = start(broker_factory, pki, "--tls-ca", str(pki / "ca.pem"), "--ssl-cert-login-from", "common_name")
    api = Api(b)
    # Not a user yet: refused with 403, as a wrong password is.
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as e:
        pika.BlockingConnection(external_params(b, pki, "alice"))
    assert "403" in str(e.value) and "mechanism EXTERNAL" in str(e.value)
    api.make_user("alice", password="unused-by-external", perms=("^alice-.*", ".*", ".*"))
    conn = pika.BlockingConnection(external_params(b, pki, "alice"))
    ch = conn.channel()
    ch.queue_declare("alice-q")
    ch.basic_publish("", "alice-q", b"by certificate")
    assert ch.basic_get("alice-q", auto_ack=True)[2] == b"by certificate"
    # Logged in as alice: her permissions apply.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("bob-q")
    assert e.value.reply_code == 403
    conns = api.ok("GET", "/connections")
    assert [(c["user"], c["auth_mechanism"], c["ssl"]) for c in conns] == [("alice", "EXTERNAL", True)]
    conn.close()
    # Password logins still work on the same port.
    pika.BlockingConnection(tls_params(b, pki, client_cert=True)).close()

    # The distinguished name, last RDN first, as RabbitMQ's default ssl_cert_login_from.
    b = start(broker_factory, pki, "--tls-ca", str(pki / "ca.pem"), "--ssl-cert-login-from", "distinguished_name")
    Api(b).make_user("CN=alice,OU=ops,O=Warren Test")
    conn = pika.BlockingConnection(external_params(b, pki, "alice"))
    assert Api(b).ok("GET", "/connections")[0]["user"] == "CN=alice,OU=ops,O=Warren Test"
    conn.close()


def test_external_is_not_offered_without_a_certificate_or_the_flag(broker_factory, pki):
    b = start(broker_factory, pki, "--tls-ca", str(pki / "ca.pem"), "--ssl-cert-login-from", "common_name")
    Api(b).make_user("client")
    # No client certificate: EXTERNAL is not offered, pika refuses to go on.
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    params = pika.ConnectionParameters(host="127.0.0.1", port=b.tls_port, connection_attempts=1,
                                       credentials=pika.credentials.ExternalCredentials(),
                                       ssl_options=pika.SSLOptions(context, server_hostname="localhost"))
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(params)
    # Plain AMQP never offers it.
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        b.connect(credentials=pika.credentials.ExternalCredentials())
    # Without the flag, a certificate does not log anyone in.
    b = start(broker_factory, pki, "--tls-ca", str(pki / "ca.pem"))
    Api(b).make_user("client")
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(external_params(b, pki, "client"))
    pika.BlockingConnection(tls_params(b, pki, client_cert=True)).close()


def test_external_login_by_subject_alternative_name(broker_factory, pki):
    (pki / "svc.ext").write_text(
        "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:svc-a.example,email:ops@example.com,DNS:svc-b.example\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "svc.key", "-out", "svc.csr", "-subj", "/CN=svc", cwd=pki)
    openssl("x509", "-req", "-in", "svc.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "svc.pem", "-days", "2", "-extfile", "svc.ext", cwd=pki)
    for extra, user in (([], "svc-a.example"),
                        (["--ssl-cert-login-san-index", "1"], "svc-b.example"),
                        (["--ssl-cert-login-san-type", "email"], "ops@example.com")):
        b = start(broker_factory, pki, "--tls-ca", str(pki / "ca.pem"),
                  "--ssl-cert-login-from", "subject_alternative_name", *extra)
        api = Api(b)
        api.make_user(user)
        conn = pika.BlockingConnection(external_params(b, pki, "svc"))
        assert api.ok("GET", "/connections")[0]["user"] == user, extra
        conn.close()
        b.stop()


def test_management_api_over_https(broker_factory, pki):
    """--management-tls-port: the HTTP API and the console over HTTPS with the AMQPS certificate
    (RabbitMQ's management.ssl), beside the plain HTTP port; plain HTTP on the HTTPS port gets no
    answer."""
    b = start(broker_factory, pki, "--management-tls-port", "0")
    line = next(l for l in b.log if "listening:" in l)
    port = int(re.search(r"mgmt_tls=\S*?:(\d+)", line).group(1))
    assert port not in (b.port, b.tls_port, b.mgmt_port)
    url = "https://localhost:%d" % port
    r = requests.get(url + "/api/overview", auth=("guest", "guest"), verify=str(pki / "ca.pem"), timeout=10)
    assert r.status_code == 200, r.text
    listeners = {(l["protocol"], l["port"]) for l in r.json()["listeners"]}
    assert ("https", port) in listeners and ("http", b.mgmt_port) in listeners, listeners
    r = requests.get(url + "/api/overview", auth=("guest", "nope"), verify=str(pki / "ca.pem"), timeout=10)
    assert r.status_code == 401
    page = requests.get(url + "/", verify=str(pki / "ca.pem"), timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    with pytest.raises(requests.exceptions.RequestException):
        requests.get("http://127.0.0.1:%d/api/overview" % port, auth=("guest", "guest"), timeout=3)
