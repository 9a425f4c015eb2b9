//! One-shot benchmarks of queue features (issue 4), not steady-state rates:
//!
//! - `delayed`: `--messages` persistent messages through a durable `x-delayed-message` exchange,
//!   due over `--spread-secs` starting `--delay-secs` after the run starts. Reports the broker's
//!   RSS once all are pending and how late each one arrives after its due time (each body carries
//!   its due time in ms since the epoch; broker and generator share the machine's clock).
//! - `ttl-behind-head`: one message with a 1-hour TTL, then `--messages` with a 2-second TTL
//!   behind it. Reports how long after the last publish the queue is down to the one message
//!   (RabbitMQ only expires messages at the head, so there it stays full for the hour).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ExchangeDeclareArguments, ExchangeDeleteArguments, QueueBindArguments, QueueDeclareArguments, QueueDeleteArguments,
};
use amqprs::{BasicProperties, FieldTable, FieldValue};
use anyhow::{Context, Result};

use crate::client::{self, ConfirmWindow};
use crate::procfs::{self, Pid};
use crate::report::{Latency, Outcome};
use crate::scenario::Options;

/// Publishes confirmed in this many at most ahead of the broker.
const CONFIRM_WINDOW: usize = 5_000;

/// Unconfirmed publishes at most in `delayed`. A message's `x-delay` counts from when the broker
/// reads it, but its due time is computed here when it is published: every message ahead of it
/// in the pipeline makes it look later. 5,000 in flight at 250k/s would add up to 20 ms.
const DELAYED_CONFIRM_WINDOW: usize = 200;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn rss_mib(options: &Options) -> Option<f64> {
    let pid = options.broker_pid?;
    procfs::rss_kib(Pid::Of(pid)).ok().map(|k| k as f64 / 1024.0)
}

fn mib(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |m| format!("{m:.1} MiB"))
}

/// Publishes with a confirm window; returns when every publish is confirmed.
async fn publish_all(
    channel: &Channel,
    window: &ConfirmWindow,
    n: u64,
    mut next: impl FnMut(u64) -> (BasicProperties, Vec<u8>, BasicPublishArguments),
) -> Result<()> {
    for i in 0..n {
        window.reserve(i + 1).await?;
        let (props, body, args) = next(i);
        channel.basic_publish(props, body, args).await.context("basic.publish")?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while window.confirmed() + window.nacked() < n {
        anyhow::ensure!(Instant::now() < deadline, "publishes not confirmed within 120 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn run_id(name: &str) -> String {
    format!("warren-bench-{name}-{}-{}", std::process::id(), now_ms())
}

pub async fn delayed(options: &Options) -> Result<Outcome> {
    let id = run_id("delayed");
    let (exchange, queue) = (format!("{id}-x"), format!("{id}-q"));
    let window = Arc::new(ConfirmWindow::new(DELAYED_CONFIRM_WINDOW));
    let (connection, channel) = client::open(&options.url, &id, Some(window.clone())).await?;
    let mut xargs = FieldTable::new();
    xargs.insert("x-delayed-type".try_into().context("name")?, FieldValue::from("direct"));
    channel
        .exchange_declare(
            ExchangeDeclareArguments::new(&exchange, "x-delayed-message").durable(true).arguments(xargs).finish(),
        )
        .await
        .context("exchange.declare x-delayed-message (is the delayed-message plugin available?)")?;
    channel.queue_declare(QueueDeclareArguments::durable_client_named(&queue)).await.context("queue.declare")?;
    channel.queue_bind(QueueBindArguments::new(&queue, &exchange, "k")).await.context("queue.bind")?;

    let n = options.messages.max(1);
    let first_due = now_ms() + options.delay_secs * 1000;
    let spread_ms = options.spread_secs * 1000;
    let started = Instant::now();
    let x_delay: amqprs::FieldName = "x-delay".try_into().context("name")?;
    publish_all(&channel, &window, n, |i| {
        let due = first_due + i * spread_ms / n;
        let mut headers = FieldTable::new();
        headers.insert(x_delay.clone(), FieldValue::l(due.saturating_sub(now_ms()) as i64));
        let mut props = BasicProperties::default();
        props.with_persistence(true).with_headers(headers);
        let mut body = due.to_le_bytes().to_vec();
        body.resize(16, b'd');
        (props, body, BasicPublishArguments::new(&exchange, "k"))
    })
    .await?;
    let publish_secs = started.elapsed().as_secs_f64();
    let pending_rss = rss_mib(options);
    let pending_cpu = options.broker_pid.and_then(|p| procfs::cpu_ticks(Pid::Of(p)).ok());
    anyhow::ensure!(
        now_ms() < first_due,
        "publishing took {publish_secs:.1} s, past the first due time: raise --delay-secs"
    );

    let (_, mut rx) = channel
        .basic_consume_rx(BasicConsumeArguments::new(&queue, "lateness").manual_ack(false).finish())
        .await
        .context("basic.consume")?;
    let mut lateness_ns = Vec::with_capacity(n as usize);
    let mut early = 0u64;
    let deadline = Instant::now() + Duration::from_secs(options.delay_secs + options.spread_secs + 60);
    let mut peak_rss = pending_rss;
    let mut last_sample = Instant::now();
    while (lateness_ns.len() as u64) < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(m)) = tokio::time::timeout(left, rx.recv()).await else { break };
        let arrived_us = now_us();
        let due_ms = m
            .content
            .as_deref()
            .and_then(|b| b.get(..8))
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .context("body without its due time")?;
        let late_us = arrived_us as i64 - (due_ms * 1000) as i64;
        if late_us < 0 {
            early += 1;
        }
        lateness_ns.push(late_us.max(0) as u64 * 1000);
        if last_sample.elapsed() >= Duration::from_millis(500) {
            if let Some(now) = rss_mib(options) {
                peak_rss = Some(peak_rss.map_or(now, |p| p.max(now)));
            }
            last_sample = Instant::now();
        }
    }
    let received = lateness_ns.len();
    let latency = Latency::from_samples(&mut lateness_ns);
    let end_cpu = options.broker_pid.and_then(|p| procfs::cpu_ticks(Pid::Of(p)).ok());
    let _ = channel.queue_delete(QueueDeleteArguments::new(&queue)).await;
    let _ = channel.exchange_delete(ExchangeDeleteArguments::new(&exchange)).await;
    let _ = connection.close().await;
    let detail = format!(
        "{n} messages published in {publish_secs:.1} s ({:.0}/s); broker RSS with all pending {}, peak while \
         releasing {}; {received} received, {early} before their due time; lateness after due time p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms; broker CPU while releasing {}",
        n as f64 / publish_secs,
        mib(pending_rss),
        mib(peak_rss),
        latency.map_or(0.0, |l| l.p50_us / 1000.0),
        latency.map_or(0.0, |l| l.p99_us / 1000.0),
        latency.map_or(0.0, |l| l.max_us / 1000.0),
        match (pending_cpu, end_cpu) {
            (Some(a), Some(b)) => format!("{:.2} s", (b - a) as f64 / procfs::clock_ticks_per_sec() as f64),
            _ => "-".to_owned(),
        }
    );
    Ok(Outcome {
        scenario: "delayed",
        label: options.label.clone(),
        latency,
        broker_rss_kib: pending_rss.map(|m| (m * 1024.0) as u64),
        generator_rss_kib: procfs::rss_kib(Pid::Myself)?,
        detail,
        ..Outcome::default()
    })
}

pub async fn ttl_behind_head(options: &Options) -> Result<Outcome> {
    let id = run_id("ttl");
    let queue = format!("{id}-q");
    let window = Arc::new(ConfirmWindow::new(CONFIRM_WINDOW));
    let (connection, channel) = client::open(&options.url, &id, Some(window.clone())).await?;
    channel.queue_declare(QueueDeclareArguments::new(&queue)).await.context("queue.declare")?;
    let n = options.messages.max(1);
    let started = Instant::now();
    publish_all(&channel, &window, n + 1, |i| {
        let mut props = BasicProperties::default();
        props.with_expiration(if i == 0 { "3600000" } else { "2000" });
        (props, vec![b't'; 16], BasicPublishArguments::new("", &queue))
    })
    .await?;
    let published_at = Instant::now();
    let publish_secs = started.elapsed().as_secs_f64();
    let full_rss = rss_mib(options);
    let limit = Duration::from_secs(30);
    let mut count = u64::MAX;
    while published_at.elapsed() < limit {
        let declared = channel
            .queue_declare(QueueDeclareArguments::new(&queue).passive(true).finish())
            .await
            .context("passive queue.declare")?;
        count = declared.map_or(0, |(_, messages, _)| u64::from(messages));
        if count <= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone_after = published_at.elapsed().as_secs_f64();
    let after_rss = rss_mib(options);
    let _ = channel.queue_delete(QueueDeleteArguments::new(&queue)).await;
    let _ = connection.close().await;
    let detail = if count <= 1 {
        format!(
            "{n} messages with a 2 s TTL behind a 1-hour head, published in {publish_secs:.1} s; all expired {:.2} s \
             after the last publish (2 s TTL); broker RSS {} full, {} after expiry",
            gone_after,
            mib(full_rss),
            mib(after_rss)
        )
    } else {
        format!(
            "{n} messages with a 2 s TTL behind a 1-hour head, published in {publish_secs:.1} s; still {count} in the \
             queue {:.0} s after the last publish; broker RSS {} full, {} at the end",
            limit.as_secs_f64(),
            mib(full_rss),
            mib(after_rss)
        )
    };
    Ok(Outcome {
        scenario: "ttl-behind-head",
        label: options.label.clone(),
        broker_rss_kib: after_rss.map(|m| (m * 1024.0) as u64),
        generator_rss_kib: procfs::rss_kib(Pid::Myself)?,
        detail,
        ..Outcome::default()
    })
}

/// Samples the broker's RSS every 250 ms into a shared maximum until dropped.
struct RssWatch {
    peak_kib: Arc<std::sync::atomic::AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: Option<u32>) -> RssWatch {
        let peak_kib = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let task = pid.map(|pid| {
            let peak = peak_kib.clone();
            tokio::spawn(async move {
                loop {
                    if let Ok(k) = procfs::rss_kib(Pid::Of(pid)) {
                        peak.fetch_max(k, std::sync::atomic::Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        });
        RssWatch { peak_kib, task }
    }

    fn peak_mib(&self) -> Option<f64> {
        self.task.as_ref()?;
        Some(self.peak_kib.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

pub async fn backlog(options: &Options) -> Result<Outcome> {
    let id = run_id("backlog");
    let queue = format!("{id}-q");
    let window = Arc::new(ConfirmWindow::new(1000));
    let (connection, channel) = client::open(&options.url, &id, Some(window.clone())).await?;
    channel.queue_declare(QueueDeclareArguments::durable_client_named(&queue)).await.context("queue.declare")?;
    let n = options.messages.max(1);
    let watch = RssWatch::start(options.broker_pid);
    let body = vec![b'b'; 1024];
    let started = Instant::now();
    publish_all(&channel, &window, n, |_| {
        let mut props = BasicProperties::default();
        props.with_persistence(true);
        (props, body.clone(), BasicPublishArguments::new("", &queue))
    })
    .await?;
    let publish_secs = started.elapsed().as_secs_f64();
    let after_publish = rss_mib(options);
    let peak_publish = watch.peak_mib();

    let (consume_conn, consume_ch) = client::open(&options.url, &format!("{id}-consumer"), None).await?;
    consume_ch.basic_qos(BasicQosArguments::new(0, 1000, false)).await.context("basic.qos")?;
    let (_, mut rx) = consume_ch
        .basic_consume_rx(BasicConsumeArguments::new(&queue, "drain").manual_ack(true).finish())
        .await
        .context("basic.consume")?;
    let started = Instant::now();
    let mut received = 0u64;
    while received < n {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await else { break };
        received += 1;
        if received.is_multiple_of(500) || received == n {
            let tag = m.deliver.as_ref().map(|d| d.delivery_tag()).context("delivery without basic.deliver")?;
            consume_ch.basic_ack(BasicAckArguments::new(tag, true)).await.context("basic.ack")?;
        }
    }
    let drain_secs = started.elapsed().as_secs_f64();
    let peak = watch.peak_mib();
    drop(watch);
    let _ = channel.queue_delete(QueueDeleteArguments::new(&queue)).await;
    let _ = consume_conn.close().await;
    let _ = connection.close().await;
    let detail = format!(
        "{n} persistent 1 KiB messages: published with confirms in {publish_secs:.1} s ({:.0}/s), broker RSS {} \
         after publishing (peak {}); drained {received} in {drain_secs:.1} s ({:.0}/s); broker peak RSS throughout {}",
        n as f64 / publish_secs,
        mib(after_publish),
        mib(peak_publish),
        received as f64 / drain_secs,
        mib(peak)
    );
    Ok(Outcome {
        scenario: "backlog",
        label: options.label.clone(),
        broker_rss_kib: peak.map(|m| (m * 1024.0) as u64),
        generator_rss_kib: procfs::rss_kib(Pid::Myself)?,
        detail,
        ..Outcome::default()
    })
}
