"""Prometheus metrics (issue 6) scraped from the real binary and parsed with the official Python
client's parser: RabbitMQ's metric names and labels, values that follow AMQP traffic, the
per-object and detailed endpoints, and a scrape of 100,000 queues."""

import re
import time

import pika
import requests
from prometheus_client.parser import text_string_to_metric_families

from admin_util import Api
from conftest import msg_count, wait_for

PROM_RE = re.compile(r"prometheus=\S*?:(\d+)")

# Names from RabbitMQ's rabbitmq_prometheus plugin (metrics.md), as Grafana dashboards use them.
RABBITMQ_AGGREGATED = {
    "rabbitmq_build_info", "rabbitmq_identity_info", "rabbitmq_connections", "rabbitmq_channels",
    "rabbitmq_consumers", "rabbitmq_queues", "rabbitmq_connections_opened_total",
    "rabbitmq_connections_closed_total", "rabbitmq_channels_opened_total", "rabbitmq_channels_closed_total",
    "rabbitmq_queues_declared_total", "rabbitmq_queues_created_total", "rabbitmq_queues_deleted_total",
    "rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked", "rabbitmq_queue_messages",
    "rabbitmq_queue_messages_ready_bytes", "rabbitmq_queue_consumers",
    "rabbitmq_channel_messages_published_total", "rabbitmq_channel_messages_confirmed_total",
    "rabbitmq_channel_messages_unroutable_returned_total", "rabbitmq_channel_messages_unroutable_dropped_total",
    "rabbitmq_channel_messages_delivered_total", "rabbitmq_channel_messages_delivered_ack_total",
    "rabbitmq_channel_messages_acked_total", "rabbitmq_channel_messages_redelivered_total",
    "rabbitmq_channel_get_total", "rabbitmq_channel_get_ack_total", "rabbitmq_channel_get_empty_total",
    "rabbitmq_global_messages_received_total", "rabbitmq_global_messages_routed_total",
    "rabbitmq_global_messages_confirmed_total", "rabbitmq_global_messages_delivered_total",
    "rabbitmq_global_messages_acknowledged_total", "rabbitmq_global_messages_unroutable_dropped_total",
    "rabbitmq_global_messages_unroutable_returned_total", "rabbitmq_global_consumers",
    "rabbitmq_process_resident_memory_bytes", "rabbitmq_resident_memory_limit_bytes",
    "rabbitmq_process_open_fds", "rabbitmq_process_max_fds", "rabbitmq_disk_space_available_bytes",
    "rabbitmq_disk_space_available_limit_bytes", "rabbitmq_alarms_memory_used_watermark",
    "rabbitmq_alarms_free_disk_space_watermark", "rabbitmq_erlang_uptime_seconds",
}


def prom_port(b):
    for line in b.log:
        m = PROM_RE.search(line)
        if m:
            return int(m.group(1))
    raise AssertionError("no prometheus= in the startup line")


def scrape(b, path="/metrics"):
    r = requests.get("http://127.0.0.1:%d%s" % (prom_port(b), path), timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    names = set()
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            names.add(s.name)
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return names, samples


def test_names_and_values_follow_traffic(broker_factory, uniq):
    b = broker_factory.start(broker_factory.new_data_dir(), ["--prometheus-port", "0"])
    conn = b.connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(uniq)
    for _ in range(5):
        ch.basic_publish("", uniq, b"m")
    try:
        ch.basic_publish("", "nowhere-" + uniq, b"lost", mandatory=True)
    except pika.exceptions.UnroutableError:
        pass
    m, _, _ = ch.basic_get(uniq)
    ch.basic_ack(m.delivery_tag)
    names, s = scrape(b)
    missing = RABBITMQ_AGGREGATED - names
    assert not missing, missing
    proto = (("protocol", "amqp091"),)
    assert s[("rabbitmq_global_messages_received_total", proto)] == 6
    assert s[("rabbitmq_global_messages_routed_total", proto)] == 5
    assert s[("rabbitmq_global_messages_confirmed_total", proto)] == 6
    assert s[("rabbitmq_global_messages_unroutable_returned_total", proto)] == 1
    assert s[("rabbitmq_global_messages_acknowledged_total", proto)] == 1
    assert s[("rabbitmq_queue_messages_ready", ())] == 4
    assert s[("rabbitmq_connections", ())] == 1
    assert s[("rabbitmq_channels", ())] == 1
    assert s[("rabbitmq_queues", ())] == 1
    assert s[("rabbitmq_process_resident_memory_bytes", ())] > 1 << 20
    names, s = scrape(b, "/metrics/per-object")
    assert s[("rabbitmq_queue_messages_ready", (("queue", uniq), ("vhost", "/")))] == 4
    assert s[("rabbitmq_queue_messages_published_total", (("queue", uniq), ("vhost", "/")))] == 5
    _, s = scrape(b, "/metrics/detailed?family=queue_coarse_metrics&vhost=%2F")
    assert s[("rabbitmq_detailed_queue_messages", (("queue", uniq), ("vhost", "/")))] == 4
    conn.close()


def test_message_rates_in_the_api(broker_factory, uniq):
    """The API's message_stats carry counters and *_details.rate sampled every second here."""
    b = broker_factory.start(broker_factory.new_data_dir(), ["--stats-interval-secs", "1"])
    conn = b.connect()
    ch = conn.channel()
    ch.queue_declare(uniq)
    for _ in range(50):
        ch.basic_publish("", uniq, b"m")
    wait_for(5, lambda: msg_count(conn, uniq) == 50)
    api = Api(b)

    def stats():
        return api.ok("GET", "/overview").get("message_stats", {})

    wait_for(5, lambda: stats().get("publish") == 50 and stats().get("publish_details", {}).get("rate", 0) > 0)
    q = api.ok("GET", "/queues/%2F/" + uniq)
    assert q["message_stats"]["publish"] == 50
    [node] = api.ok("GET", "/nodes")
    assert node["mem_used"] > 1 << 20 and node["mem_limit"] > node["mem_used"]
    assert node["disk_free"] > node["disk_free_limit"] == 50_000_000
    assert 0 < node["fd_used"] < node["fd_total"]
    assert node["sockets_used"] == 1
    [c] = api.ok("GET", "/connections")
    assert c["recv_oct"] > 50 * 1 and c["recv_cnt"] > 0 and c["send_oct"] > 0 and c["send_cnt"] > 0
    conn.close()


def test_scrape_of_100k_queues_under_2s(broker_factory):
    b = broker_factory.start(broker_factory.new_data_dir(), ["--prometheus-port", "0"])
    api = Api(b)
    n = 100_000
    defs = {"queues": [{"name": "q%06d" % i, "vhost": "/", "durable": False, "auto_delete": False,
                        "arguments": {}} for i in range(n)]}
    r = api.post("/definitions", defs)
    assert r.status_code in (200, 201, 204), r.text
    _, s = scrape(b)
    assert s[("rabbitmq_queues", ())] == n
    start = time.monotonic()
    r = requests.get("http://127.0.0.1:%d/metrics/per-object" % prom_port(b), timeout=60)
    elapsed = time.monotonic() - start
    assert r.status_code == 200
    assert r.text.count("rabbitmq_queue_messages_ready{") == n
    assert elapsed < 2.0, elapsed
