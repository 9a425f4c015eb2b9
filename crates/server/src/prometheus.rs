//! Prometheus metrics on port 15692 (`--prometheus-port`), with the metric names and labels of
//! RabbitMQ's `rabbitmq_prometheus` plugin, so its Grafana dashboards and alerts work:
//!
//! - `/metrics`: aggregated (no per-object labels): object counts, queue depths summed over all
//!   queues, node-wide message counters (`rabbitmq_global_*` and the `rabbitmq_channel_*`
//!   counters), churn counters, and the process's memory, descriptors, disk and uptime.
//! - `/metrics/per-object`: the same plus one sample per queue (`vhost`, `queue` labels) and per
//!   channel (`channel` label).
//! - `/metrics/detailed?family=...&vhost=...`: per-object queue metrics under RabbitMQ's
//!   `rabbitmq_detailed_` prefix, for the families `queue_coarse_metrics` and
//!   `queue_consumer_count` (all when no family is given), optionally limited to vhosts.
//!
//! The broker lock is held only to copy numbers out; formatting happens after. The HTTP side is a
//! few lines of our own: scrapers send one GET per connection.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use broker::stats::{MessageStats, Stat};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::{Config, Shared};

/// RabbitMQ's Prometheus port.
pub const PROMETHEUS_PORT_DEFAULT: u16 = 15692;
/// Longest request head accepted.
const REQUEST_BYTES_MAX: usize = 16 * 1024;

/// Binds the metrics port: `--prometheus-port`, else 15692 when free (else none, with a warning).
pub fn bind(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    if config.no_prometheus {
        return Ok(None);
    }
    let port = config.prometheus_port.unwrap_or(PROMETHEUS_PORT_DEFAULT);
    let l = crate::listen(SocketAddr::from(([0u16; 8], port)))
        .or_else(|_| crate::listen(SocketAddr::from(([0, 0, 0, 0], port))));
    match l {
        Ok(l) => Ok(Some(l)),
        Err(e) if config.prometheus_port.is_none() => {
            tracing::warn!("Prometheus metrics not started: cannot listen on port {port} ({e}); use --prometheus-port");
            Ok(None)
        }
        Err(e) => Err(anyhow::anyhow!("cannot listen on Prometheus port {port}: {e}")),
    }
}

/// Serves scrapes until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move { let _ = scrape(stream, &shared).await; });
                }
                Err(e) => {
                    tracing::warn!("metrics accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn scrape(mut stream: tokio::net::TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() + n > REQUEST_BYTES_MAX {
                return Err(std::io::Error::other("bad request"));
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(())
    };
    if tokio::time::timeout(std::time::Duration::from_secs(10), read).await.is_err() {
        return Ok(());
    }
    let line = String::from_utf8_lossy(head.split(|&b| b == b'\r').next().unwrap_or_default()).into_owned();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", render(shared, Mode::Aggregated)),
        ("GET" | "HEAD", "/metrics/per-object") => ("200 OK", render(shared, Mode::PerObject)),
        ("GET" | "HEAD", "/metrics/detailed") => ("200 OK", render(shared, Mode::Detailed(Detailed::parse(query)))),
        ("GET" | "HEAD", _) => ("404 Not Found", "not found\n".to_owned()),
        _ => ("405 Method Not Allowed", "method not allowed\n".to_owned()),
    };
    let content_type =
        if status.starts_with("200") { "text/plain; version=0.0.4; charset=utf-8" } else { "text/plain" };
    let response_head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response_head.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Aggregated,
    PerObject,
    Detailed(Detailed),
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Detailed {
    families: Vec<String>,
    vhosts: Vec<String>,
}

impl Detailed {
    fn parse(query: &str) -> Detailed {
        let mut d = Detailed::default();
        for kv in query.split('&') {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
            match k {
                "family" => d.families.push(v),
                "vhost" => d.vhosts.push(v),
                _ => {}
            }
        }
        d
    }

    fn wants(&self, family: &str) -> bool {
        self.families.is_empty() || self.families.iter().any(|f| f == family)
    }
}

/// What one scrape copies out of the broker.
struct Snapshot {
    queue_count: usize,
    connections: usize,
    channels: usize,
    consumers: usize,
    queues: Vec<QueueRow>,
    channel_rows: Vec<(String, MessageStats)>,
    totals: MessageStats,
    churn: broker::stats::Churn,
}

struct QueueRow {
    vhost: String,
    name: String,
    ready: u64,
    unacked: u64,
    ready_bytes: u64,
    consumers: u64,
    stats: MessageStats,
}

fn snapshot(shared: &Shared, per_object: bool) -> Snapshot {
    let b = shared.broker.lock();
    let mut consumers = 0;
    let mut queues = Vec::with_capacity(if per_object { b.queues.len() } else { 0 });
    let mut sum = QueueRow {
        vhost: String::new(),
        name: String::new(),
        ready: 0,
        unacked: 0,
        ready_bytes: 0,
        consumers: 0,
        stats: MessageStats::default(),
    };
    for q in b.queues.values() {
        consumers += q.consumers.len();
        let row = QueueRow {
            vhost: if per_object { q.vhost.clone() } else { String::new() },
            name: if per_object { q.name.clone() } else { String::new() },
            ready: q.ready_len() as u64,
            unacked: q.unacked_count as u64,
            ready_bytes: q.ready.bytes() as u64,
            consumers: q.consumers.len() as u64,
            stats: if per_object { q.stats.clone() } else { MessageStats::default() },
        };
        sum.ready += row.ready;
        sum.unacked += row.unacked;
        sum.ready_bytes += row.ready_bytes;
        sum.consumers += row.consumers;
        if per_object {
            queues.push(row);
        }
    }
    if !per_object {
        queues.push(sum);
    }
    let channel_rows = if per_object {
        b.channels.iter().map(|((conn, ch), c)| (format!("{conn}.{ch}"), c.stats.clone())).collect()
    } else {
        Vec::new()
    };
    Snapshot {
        queue_count: b.queues.len(),
        connections: b.connections.len(),
        channels: b.channels.len(),
        consumers,
        queues,
        channel_rows,
        totals: b.totals().clone(),
        churn: b.churn(),
    }
}

/// Escapes a label value for the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &str, v: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {v}");
        }
    }
    fn one(&mut self, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, "", v);
    }
}

/// The channel counters of `rabbitmq_prometheus`, by the `Stat` each one reads.
const CHANNEL_COUNTERS: [(&str, Stat, &str); 11] = [
    (
        "rabbitmq_channel_messages_published_total",
        Stat::Publish,
        "Total number of messages published into an exchange on a channel",
    ),
    (
        "rabbitmq_channel_messages_confirmed_total",
        Stat::Confirm,
        "Total number of messages published into an exchange and confirmed on the channel",
    ),
    (
        "rabbitmq_channel_messages_unroutable_returned_total",
        Stat::ReturnUnroutable,
        "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
    ),
    (
        "rabbitmq_channel_messages_unroutable_dropped_total",
        Stat::DropUnroutable,
        "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
    ),
    (
        "rabbitmq_channel_messages_delivered_ack_total",
        Stat::Deliver,
        "Total number of messages delivered to consumers in manual acknowledgement mode",
    ),
    (
        "rabbitmq_channel_messages_delivered_total",
        Stat::DeliverNoAck,
        "Total number of messages delivered to consumers in automatic acknowledgement mode",
    ),
    (
        "rabbitmq_channel_get_ack_total",
        Stat::Get,
        "Total number of messages fetched with basic.get in manual acknowledgement mode",
    ),
    (
        "rabbitmq_channel_get_total",
        Stat::GetNoAck,
        "Total number of messages fetched with basic.get in automatic acknowledgement mode",
    ),
    (
        "rabbitmq_channel_get_empty_total",
        Stat::GetEmpty,
        "Total number of times basic.get operations fetched no message",
    ),
    (
        "rabbitmq_channel_messages_redelivered_total",
        Stat::Redeliver,
        "Total number of messages redelivered to consumers",
    ),
    ("rabbitmq_channel_messages_acked_total", Stat::Ack, "Total number of messages acknowledged by consumers"),
];

fn render(shared: &Shared, mode: Mode) -> String {
    let per_object = mode != Mode::Aggregated;
    let snap = snapshot(shared, per_object);
    let mut out = Out(String::with_capacity(8192 + snap.queues.len() * 600));
    if let Mode::Detailed(d) = &mode {
        render_detailed(&mut out, &snap, d);
        return out.0;
    }
    render_node(&mut out, shared, &snap);
    let q_labels = |q: &QueueRow| {
        if per_object {
            format!("vhost=\"{}\",queue=\"{}\"", label(&q.vhost), label(&q.name))
        } else {
            String::new()
        }
    };
    for (name, help, get) in [
        (
            "rabbitmq_queue_messages_ready",
            "Messages ready to be delivered to consumers",
            (|q: &QueueRow| q.ready) as fn(&QueueRow) -> u64,
        ),
        ("rabbitmq_queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged", |q| q.unacked),
        ("rabbitmq_queue_messages", "Sum of ready and unacknowledged messages - total queue depth", |q| {
            q.ready + q.unacked
        }),
        ("rabbitmq_queue_messages_ready_bytes", "Size in bytes of ready messages", |q| q.ready_bytes),
        ("rabbitmq_queue_consumers", "Consumers on a queue", |q| q.consumers),
    ] {
        out.family(name, "gauge", help);
        for q in &snap.queues {
            out.sample(name, &q_labels(q), get(q));
        }
    }
    if per_object {
        for (name, stat, help) in [
            (
                "rabbitmq_queue_messages_published_total",
                Stat::Publish,
                "Total number of messages published into the queue",
            ),
            (
                "rabbitmq_queue_messages_delivered_total",
                Stat::DeliverNoAck,
                "Total number of messages delivered from the queue in automatic acknowledgement mode",
            ),
            (
                "rabbitmq_queue_messages_delivered_ack_total",
                Stat::Deliver,
                "Total number of messages delivered from the queue in manual acknowledgement mode",
            ),
            ("rabbitmq_queue_messages_acked_total", Stat::Ack, "Total number of messages acknowledged from the queue"),
        ] {
            out.family(name, "counter", help);
            for q in &snap.queues {
                out.sample(name, &q_labels(q), q.stats.count(stat));
            }
        }
    }
    for (name, stat, help) in CHANNEL_COUNTERS {
        out.family(name, "counter", help);
        if per_object {
            for (ch, s) in &snap.channel_rows {
                out.sample(name, &format!("channel=\"{}\"", label(ch)), s.count(stat));
            }
        } else {
            out.sample(name, "", snap.totals.count(stat));
        }
    }
    out.0
}

fn render_node(out: &mut Out, shared: &Shared, snap: &Snapshot) {
    let t = &snap.totals;
    out.family("rabbitmq_build_info", "untyped", "RabbitMQ & Erlang/OTP version info");
    out.sample(
        "rabbitmq_build_info",
        &format!(
            "rabbitmq_version=\"{}\",product_name=\"Warren\",product_version=\"{}\"",
            crate::connection::RABBITMQ_COMPAT_VERSION,
            env!("CARGO_PKG_VERSION")
        ),
        1,
    );
    out.family("rabbitmq_identity_info", "untyped", "RabbitMQ node & cluster identity info");
    let node = crate::control::node_name();
    out.sample(
        "rabbitmq_identity_info",
        &format!("rabbitmq_node=\"{}\",rabbitmq_cluster=\"{}\"", label(&node), label(&node)),
        1,
    );
    out.one("rabbitmq_connections", "gauge", "Connections currently open", snap.connections);
    out.one("rabbitmq_channels", "gauge", "Channels currently open", snap.channels);
    out.one("rabbitmq_consumers", "gauge", "Consumers currently connected", snap.consumers);
    out.one("rabbitmq_queues", "gauge", "Queues available", snap.queue_count);
    let c = snap.churn;
    out.one("rabbitmq_connections_opened_total", "counter", "Total number of connections opened", c.connections_opened);
    out.one(
        "rabbitmq_connections_closed_total",
        "counter",
        "Total number of connections closed or terminated",
        c.connections_closed,
    );
    out.one("rabbitmq_channels_opened_total", "counter", "Total number of channels opened", c.channels_opened);
    out.one("rabbitmq_channels_closed_total", "counter", "Total number of channels closed", c.channels_closed);
    out.one("rabbitmq_queues_declared_total", "counter", "Total number of queues declared", c.queues_declared);
    out.one("rabbitmq_queues_created_total", "counter", "Total number of queues created", c.queues_created);
    out.one("rabbitmq_queues_deleted_total", "counter", "Total number of queues deleted", c.queues_deleted);
    let p = "protocol=\"amqp091\"";
    for (name, v, help) in [
        ("rabbitmq_global_messages_received_total", t.count(Stat::Publish), "Total number of messages received from publishers"),
        ("rabbitmq_global_messages_routed_total", t.count(Stat::Publish) - t.count(Stat::ReturnUnroutable) - t.count(Stat::DropUnroutable), "Total number of messages routed to queues or streams"),
        ("rabbitmq_global_messages_confirmed_total", t.count(Stat::Confirm), "Total number of messages confirmed to publishers"),
        ("rabbitmq_global_messages_unroutable_dropped_total", t.count(Stat::DropUnroutable), "Total number of messages published as non-mandatory into an exchange and dropped as unroutable"),
        ("rabbitmq_global_messages_unroutable_returned_total", t.count(Stat::ReturnUnroutable), "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable"),
        ("rabbitmq_global_messages_delivered_total", t.deliver_get(), "Total number of messages delivered to consumers"),
        ("rabbitmq_global_messages_delivered_consume_manual_ack_total", t.count(Stat::Deliver), "Total number of messages delivered to consumers using basic.consume with manual acknowledgment"),
        ("rabbitmq_global_messages_delivered_consume_auto_ack_total", t.count(Stat::DeliverNoAck), "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment"),
        ("rabbitmq_global_messages_delivered_get_manual_ack_total", t.count(Stat::Get), "Total number of messages delivered to consumers using basic.get with manual acknowledgment"),
        ("rabbitmq_global_messages_delivered_get_auto_ack_total", t.count(Stat::GetNoAck), "Total number of messages delivered to consumers using basic.get with automatic acknowledgment"),
        ("rabbitmq_global_messages_get_empty_total", t.count(Stat::GetEmpty), "Total number of times basic.get operations fetched no message"),
        ("rabbitmq_global_messages_redelivered_total", t.count(Stat::Redeliver), "Total number of messages redelivered to consumers"),
        ("rabbitmq_global_messages_acknowledged_total", t.count(Stat::Ack), "Total number of messages acknowledged by consumers"),
    ] {
        out.family(name, "counter", help);
        out.sample(name, p, v);
    }
    out.family("rabbitmq_global_consumers", "gauge", "Current number of consumers");
    out.sample("rabbitmq_global_consumers", p, snap.consumers);
    let rss = crate::alarms::rss_bytes().unwrap_or(0);
    out.one("rabbitmq_process_resident_memory_bytes", "gauge", "Memory used in bytes", rss);
    let limit = match shared.limits.memory_limit() {
        u64::MAX => 0,
        l => l,
    };
    out.one("rabbitmq_resident_memory_limit_bytes", "gauge", "Memory high watermark in bytes", limit);
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
    out.one("rabbitmq_process_open_fds", "gauge", "Open file descriptors", fds);
    out.one("rabbitmq_process_max_fds", "gauge", "Open file descriptors limit", max_fds());
    let free = crate::alarms::disk_free_bytes(&shared.config.data_dir).unwrap_or(0);
    out.one("rabbitmq_disk_space_available_bytes", "gauge", "Disk space available in bytes", free);
    out.one(
        "rabbitmq_disk_space_available_limit_bytes",
        "gauge",
        "Free disk space low watermark in bytes",
        shared.limits.disk_free_limit(),
    );
    let alarms = *shared.alarms.borrow();
    out.one(
        "rabbitmq_alarms_memory_used_watermark",
        "gauge",
        "is 1 if VM memory watermark alarm is in effect",
        u8::from(alarms.memory),
    );
    out.one(
        "rabbitmq_alarms_free_disk_space_watermark",
        "gauge",
        "is 1 if free disk space watermark alarm is in effect",
        u8::from(alarms.disk),
    );
    let uptime = crate::now_ms().saturating_sub(crate::started_at_ms()) as f64 / 1000.0;
    out.one("rabbitmq_erlang_uptime_seconds", "gauge", "Node uptime", uptime);
}

fn render_detailed(out: &mut Out, snap: &Snapshot, d: &Detailed) {
    let rows: Vec<&QueueRow> =
        snap.queues.iter().filter(|q| d.vhosts.is_empty() || d.vhosts.contains(&q.vhost)).collect();
    let labels = |q: &QueueRow| format!("vhost=\"{}\",queue=\"{}\"", label(&q.vhost), label(&q.name));
    if d.wants("queue_coarse_metrics") {
        for (name, help, get) in [
            (
                "rabbitmq_detailed_queue_messages_ready",
                "Messages ready to be delivered to consumers",
                (|q: &QueueRow| q.ready) as fn(&QueueRow) -> u64,
            ),
            (
                "rabbitmq_detailed_queue_messages_unacked",
                "Messages delivered to consumers but not yet acknowledged",
                |q| q.unacked,
            ),
            ("rabbitmq_detailed_queue_messages", "Sum of ready and unacknowledged messages - total queue depth", |q| {
                q.ready + q.unacked
            }),
        ] {
            out.family(name, "gauge", help);
            for q in &rows {
                out.sample(name, &labels(q), get(q));
            }
        }
    }
    if d.wants("queue_consumer_count") {
        out.family("rabbitmq_detailed_queue_consumers", "gauge", "Consumers on a queue");
        for q in &rows {
            out.sample("rabbitmq_detailed_queue_consumers", &labels(q), q.consumers);
        }
    }
}

/// The soft limit on open files, from /proc/self/limits.
pub fn max_fds() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detailed_query_and_label_escaping() {
        let d = Detailed::parse("family=queue_coarse_metrics&vhost=%2F&vhost=prod");
        assert_eq!(d.families, ["queue_coarse_metrics"]);
        assert_eq!(d.vhosts, ["/", "prod"]);
        assert!(d.wants("queue_coarse_metrics") && !d.wants("queue_consumer_count"));
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
