//! The scenarios: which queues, producers and consumers each one sets up, and the common run that
//! warms up, measures a window and tears down.
//!
//! Every run declares its own uniquely named non-durable queues (and exchange), so runs never share
//! state with each other or with anything else on the broker, and deletes them at the end.
//!
//! Memory in the generator is bounded. Towards the broker, a producer without confirms is at most
//! amqprs' outgoing buffer (8192 frames) plus the socket buffers ahead of it, so TCP backpressure
//! paces it; a confirm-mode producer is at most `confirm_outstanding_max` publishes ahead of the
//! broker's confirms. But amqprs hands deliveries to consumers through unbounded in-process
//! queues, so a broker that delivers faster than the generator's consumers count would pile
//! messages up in the generator (seen: 170,000 messages, 185 MiB in 3 s). Producers therefore also
//! pause while more than `--undelivered-max` copies (default [`UNDELIVERED_MAX_DEFAULT`], about
//! 1 KiB of generator memory each) are published but not yet counted by a consumer. Latency
//! samples stop at [`LATENCY_SAMPLES_MAX`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel, ConsumerMessage,
    ExchangeDeclareArguments, ExchangeDeleteArguments, QueueBindArguments, QueueDeclareArguments, QueueDeleteArguments,
};
use amqprs::connection::Connection;
use amqprs::BasicProperties;
use anyhow::{bail, Context, Result};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::{interval, sleep, timeout, MissedTickBehavior};

use crate::client::{self, ConfirmWindow};
use crate::procfs::{self, Pid};
use crate::report::{Latency, Outcome};
use crate::url::AmqpUrl;

/// The scenarios `--scenario` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Name {
    /// 1 producer, 1 no-ack consumer, 16-byte transient messages, no confirms.
    #[value(name = "small-autoack")]
    SmallAutoack,
    /// 1 confirm-mode producer (1000 unconfirmed at most), 1 consumer with manual acks and
    /// prefetch 1000, 1 KiB messages.
    #[value(name = "confirm-1k")]
    Confirm1k,
    /// 1 producer to a fanout exchange bound to 4 queues, one no-ack consumer on each.
    #[value(name = "fanout-4")]
    Fanout4,
    /// 10 producers and 10 no-ack consumers on 10 queues, producer i to queue i.
    #[value(name = "ten-by-ten")]
    TenByTen,
    /// 1 producer at a fixed rate (`--rate`, default 1000/s) stamping each body with its send
    /// time, 1 no-ack consumer; reports latency percentiles.
    #[value(name = "latency-1k")]
    Latency1k,
    /// No traffic: the resident memory of an idle broker (`--broker-pid` required).
    #[value(name = "idle-rss")]
    IdleRss,
    /// small-autoack into a priority queue (x-max-priority 10), priorities 0..9 in turn.
    #[value(name = "priority-10")]
    Priority10,
    /// `--messages` persistent messages to a durable x-delayed-message exchange, due over
    /// `--spread-secs` after a `--delay-secs` lead; reports the broker's RSS with all pending
    /// and how late each arrives after its due time (see `feature_bench.rs`).
    #[value(name = "delayed")]
    Delayed,
    /// `--messages` messages with a 2 s per-message TTL behind one with a 1-hour TTL at the
    /// head; reports how long until they are gone (see `feature_bench.rs`).
    #[value(name = "ttl-behind-head")]
    TtlBehindHead,
    /// `--messages` persistent 1 KiB messages published with confirms into a durable queue with
    /// no consumer, then drained (manual acks, prefetch 1000); reports publish and drain rates
    /// and the broker's peak RSS throughout (see `feature_bench.rs`).
    #[value(name = "backlog")]
    Backlog,
}

impl Name {
    pub fn as_str(self) -> &'static str {
        match self {
            Name::SmallAutoack => "small-autoack",
            Name::Confirm1k => "confirm-1k",
            Name::Fanout4 => "fanout-4",
            Name::TenByTen => "ten-by-ten",
            Name::Latency1k => "latency-1k",
            Name::IdleRss => "idle-rss",
            Name::Priority10 => "priority-10",
            Name::Delayed => "delayed",
            Name::TtlBehindHead => "ttl-behind-head",
            Name::Backlog => "backlog",
        }
    }
}

/// What the command line fixes for every scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where consumers' connections and tasks run (`--threads 2`); None: the current runtime.
    pub consumer_runtime: Option<tokio::runtime::Handle>,
    pub url: AmqpUrl,
    pub label: String,
    pub warmup: Duration,
    pub window: Duration,
    pub broker_pid: Option<u32>,
    /// confirm-1k's consumer acks with `multiple` once per this many deliveries.
    pub multi_ack_every: u16,
    /// latency-1k's publish rate.
    pub rate_per_sec: u32,
    /// Producers pause while this many copies are published but not yet consumed.
    pub undelivered_max: u64,
    /// Durable queues and persistent (delivery_mode 2) messages.
    pub persistent: bool,
    /// delayed / ttl-behind-head: how many messages.
    pub messages: u64,
    /// delayed: the lead before the first message is due, and the span due times cover.
    pub delay_secs: u64,
    pub spread_secs: u64,
}

/// How a scenario's consumers settle deliveries.
#[derive(Debug, Clone, Copy)]
enum Acks {
    /// basic.consume with no-ack: the broker forgets a message once sent.
    None,
    /// Manual acks with `prefetch_count`, one basic.ack `multiple=true` per `every` deliveries.
    Multiple { prefetch_count: u16, every: u16 },
}

/// The shape of a scenario, from which [`run`] builds connections and tasks.
#[derive(Debug, Clone)]
struct Plan {
    name: &'static str,
    queues: usize,
    /// Producers publish to a fanout exchange bound to every queue; otherwise producer i publishes
    /// through the default exchange to queue i mod `queues`.
    fanout: bool,
    producers: usize,
    body_size_bytes: usize,
    confirm_outstanding_max: Option<usize>,
    acks: Acks,
    rate_per_sec: Option<u32>,
    /// Bodies carry their send time and consumers record latency.
    latency: bool,
    /// Queues are declared with this x-max-priority; producers cycle priorities below it.
    max_priority: Option<u8>,
}

const SMALL_BODY_SIZE_BYTES: usize = 16;
const CONFIRM_BODY_SIZE_BYTES: usize = 1024;
const CONFIRM_OUTSTANDING_MAX: usize = 1000;
const CONFIRM_PREFETCH_COUNT: u16 = 1000;
/// Latency samples kept per run, 32 MiB of memory; 10 s at 1000/s needs 10,000.
const LATENCY_SAMPLES_MAX: usize = 4 << 20;
/// Bytes at the start of a latency-scenario body: its send time in ns since the run's epoch.
const TIMESTAMP_SIZE_BYTES: usize = 8;
/// Copies (over all queues) that producers may have published and consumers not yet counted; past
/// it the producers pause until consumers catch up. Far above what a pipeline at 100,000 msg/s
/// holds in a steady state (a few milliseconds' worth, plus prefetch), so it binds only when
/// consumers fall behind.
pub const UNDELIVERED_MAX_DEFAULT: u64 = 20_000;
/// Consumers wake paused producers once per this many deliveries.
const CONSUMER_NOTIFY_EVERY: u64 = 256;
/// How long teardown waits for producers to stop and for each connection to close.
const TEARDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long connecting, declaring and subscribing may take before the run gives up: a wedged
/// broker must fail the scenario, not hang the harness.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

impl Plan {
    fn of(name: Name, options: &Options) -> Option<Self> {
        let base = Plan {
            name: name.as_str(),
            queues: 1,
            fanout: false,
            producers: 1,
            body_size_bytes: SMALL_BODY_SIZE_BYTES,
            confirm_outstanding_max: None,
            acks: Acks::None,
            rate_per_sec: None,
            latency: false,
            max_priority: None,
        };
        Some(match name {
            Name::SmallAutoack => base,
            Name::Confirm1k => Plan {
                body_size_bytes: CONFIRM_BODY_SIZE_BYTES,
                confirm_outstanding_max: Some(CONFIRM_OUTSTANDING_MAX),
                acks: Acks::Multiple {
                    prefetch_count: CONFIRM_PREFETCH_COUNT,
                    every: options.multi_ack_every.clamp(1, CONFIRM_PREFETCH_COUNT),
                },
                ..base
            },
            Name::Fanout4 => Plan { queues: 4, fanout: true, ..base },
            Name::TenByTen => Plan { queues: 10, producers: 10, ..base },
            Name::Latency1k => Plan { rate_per_sec: Some(options.rate_per_sec.max(1)), latency: true, ..base },
            Name::Priority10 => Plan { max_priority: Some(10), ..base },
            Name::IdleRss | Name::Delayed | Name::TtlBehindHead | Name::Backlog => return None,
        })
    }

    /// Deliveries one publish should produce.
    fn copies_per_publish(&self) -> u64 {
        if self.fanout {
            self.queues as u64
        } else {
            1
        }
    }
}

/// Counters and flags shared by the run and its tasks.
struct Shared {
    epoch: Instant,
    published: AtomicU64,
    delivered: AtomicU64,
    stop: AtomicBool,
    measuring: AtomicBool,
    latencies_ns: Mutex<Vec<u64>>,
    /// Deliveries one publish makes (the fanout's queue count, else 1).
    copies_per_publish: u64,
    /// `--undelivered-max`.
    undelivered_max: u64,
    /// `--persistent`.
    persistent: bool,
    /// Consumers' progress, for producers paused on `undelivered_max`.
    consumer_progress: Notify,
    /// Times a producer found consumers `undelivered_max` behind and paused.
    producer_pauses: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Copies published but not yet counted by a consumer.
    fn undelivered(&self) -> u64 {
        let published = self.published.load(Ordering::Relaxed);
        let delivered = self.delivered.load(Ordering::Relaxed);
        (published * self.copies_per_publish).saturating_sub(delivered)
    }

    /// Returns once consumers are less than `undelivered_max` copies behind the producers.
    async fn wait_for_consumers(&self) {
        if self.undelivered() < self.undelivered_max {
            return;
        }
        self.producer_pauses.fetch_add(1, Ordering::Relaxed);
        while !self.stop.load(Ordering::Relaxed) {
            // Created before the check so a notify_waiters between check and await is not lost.
            let progress = self.consumer_progress.notified();
            if self.undelivered() < self.undelivered_max {
                break;
            }
            // Bounded wait: a consumer that dies stops notifying, and the run must still end.
            let _ = timeout(Duration::from_millis(10), progress).await;
        }
    }

    fn record_latency(&self, latency_ns: u64) {
        let mut samples = self.latencies_ns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if samples.len() < LATENCY_SAMPLES_MAX {
            samples.push(latency_ns);
        }
    }
}

/// Runs `name` and returns what it measured.
pub async fn run(name: Name, options: Options) -> Result<Outcome> {
    let Some(plan) = Plan::of(name, &options) else {
        return match name {
            Name::Delayed => crate::feature_bench::delayed(&options).await,
            Name::TtlBehindHead => crate::feature_bench::ttl_behind_head(&options).await,
            Name::Backlog => crate::feature_bench::backlog(&options).await,
            _ => idle_rss(&options),
        };
    };
    let run = timeout(SETUP_TIMEOUT, Run::start(plan, options))
        .await
        .with_context(|| format!("broker did not finish the scenario's setup within {SETUP_TIMEOUT:?}"))??;
    run.measure_and_stop().await
}

fn idle_rss(options: &Options) -> Result<Outcome> {
    let pid = options.broker_pid.context("idle-rss needs --broker-pid")?;
    Ok(Outcome {
        scenario: Name::IdleRss.as_str(),
        label: options.label.clone(),
        broker_rss_kib: Some(procfs::rss_kib(Pid::Of(pid))?),
        generator_rss_kib: procfs::rss_kib(Pid::Myself)?,
        ..Outcome::default()
    })
}

/// A started scenario: its connections, tasks, and names to delete at the end.
struct Run {
    plan: Plan,
    options: Options,
    shared: Arc<Shared>,
    control_connection: Connection,
    control: Channel,
    queues: Vec<String>,
    exchange: Option<String>,
    producer_connections: Vec<Connection>,
    consumer_connections: Vec<Connection>,
    producers: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<()>>,
    confirm_windows: Vec<Arc<ConfirmWindow>>,
    /// Each task sends here at most once, when it fails; bounded by the number of tasks.
    failures: mpsc::UnboundedReceiver<String>,
}

/// The counters at one instant; a window is the difference of two.
struct Snapshot {
    at: Instant,
    published: u64,
    delivered: u64,
    confirmed: u64,
    nacked: u64,
    producer_pauses: u64,
    broker_ticks: Option<u64>,
    generator_ticks: u64,
}

impl Run {
    async fn start(plan: Plan, options: Options) -> Result<Self> {
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            measuring: AtomicBool::new(false),
            latencies_ns: Mutex::new(Vec::new()),
            copies_per_publish: plan.copies_per_publish(),
            undelivered_max: options.undelivered_max.max(1),
            persistent: options.persistent,
            consumer_progress: Notify::new(),
            producer_pauses: AtomicU64::new(0),
        });
        let started_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let run_id = format!("warren-bench-{}-{}-{started_ms}", plan.name, std::process::id());
        let url = &options.url;
        let (control_connection, control) = client::open(url, &format!("{run_id}-control"), None).await?;

        let queues: Vec<String> = (0..plan.queues).map(|i| format!("{run_id}-q{i}")).collect();
        for queue in &queues {
            control
                .queue_declare({
                    let mut args = if options.persistent {
                        QueueDeclareArguments::durable_client_named(queue)
                    } else {
                        QueueDeclareArguments::new(queue)
                    };
                    if let Some(max) = plan.max_priority {
                        let mut t = amqprs::FieldTable::new();
                        t.insert("x-max-priority".try_into().context("field name")?, amqprs::FieldValue::B(max));
                        args.arguments(t);
                    }
                    args
                })
                .await
                .with_context(|| format!("queue.declare {queue}"))?;
        }
        let exchange = if plan.fanout {
            let exchange = format!("{run_id}-fanout");
            control
                .exchange_declare(ExchangeDeclareArguments::new(&exchange, "fanout"))
                .await
                .with_context(|| format!("exchange.declare {exchange}"))?;
            for queue in &queues {
                control
                    .queue_bind(QueueBindArguments::new(queue, &exchange, ""))
                    .await
                    .with_context(|| format!("queue.bind {queue} to {exchange}"))?;
            }
            Some(exchange)
        } else {
            None
        };

        let (failure_tx, failures) = mpsc::unbounded_channel();

        // Consumers first, so that no publish finds a queue without its consumer.
        let mut consumers = Vec::new();
        let mut consumer_connections = Vec::new();
        for (i, queue) in queues.iter().enumerate() {
            let name = format!("{run_id}-consumer{i}");
            let (url, queue, acks, latency, shared) =
                (url.clone(), queue.clone(), plan.acks, plan.latency, shared.clone());
            let setup = async move {
                let (connection, channel) = client::open(&url, &name, None).await?;
                let ack_every = match acks {
                    Acks::None => None,
                    Acks::Multiple { prefetch_count, every } => {
                        channel
                            .basic_qos(BasicQosArguments::new(0, prefetch_count, false))
                            .await
                            .with_context(|| format!("{name}: basic.qos"))?;
                        Some(u64::from(every))
                    }
                };
                let (_consumer_tag, deliveries) = channel
                    .basic_consume_rx(
                        BasicConsumeArguments::new(&queue, &name).manual_ack(ack_every.is_some()).finish(),
                    )
                    .await
                    .with_context(|| format!("{name}: basic.consume {queue}"))?;
                let task = consume(channel, deliveries, ack_every, latency, shared);
                anyhow::Ok((connection, name, task))
            };
            // Opened on the consumers' runtime, so amqprs' tasks for the connection run there.
            let (connection, name, task) = match &options.consumer_runtime {
                Some(rt) => rt.spawn(setup).await.context("consumer setup panicked")??,
                None => setup.await?,
            };
            consumers.push(spawn_reporting(name, failure_tx.clone(), task, options.consumer_runtime.as_ref()));
            consumer_connections.push(connection);
        }

        let mut producers = Vec::new();
        let mut confirm_windows = Vec::new();
        let mut producer_connections = Vec::new();
        for i in 0..plan.producers {
            let name = format!("{run_id}-producer{i}");
            let window = plan.confirm_outstanding_max.map(|max| Arc::new(ConfirmWindow::new(max)));
            let (connection, channel) = client::open(url, &name, window.clone()).await?;
            let publish_args = match &exchange {
                Some(exchange) => BasicPublishArguments::new(exchange, ""),
                None => BasicPublishArguments::new("", &queues[i % queues.len()]),
            };
            let task = produce(channel, publish_args, plan.clone(), window.clone(), shared.clone());
            producers.push(spawn_reporting(name, failure_tx.clone(), task, None));
            confirm_windows.extend(window);
            producer_connections.push(connection);
        }

        Ok(Self {
            plan,
            options,
            shared,
            control_connection,
            control,
            queues,
            exchange,
            producer_connections,
            consumer_connections,
            producers,
            consumers,
            confirm_windows,
            failures,
        })
    }

    async fn measure_and_stop(mut self) -> Result<Outcome> {
        let measured = self.measure().await;
        self.stop().await;
        measured
    }

    async fn measure(&mut self) -> Result<Outcome> {
        self.wait(self.options.warmup).await?;
        let before = self.snapshot()?;
        self.shared.measuring.store(true, Ordering::Relaxed);
        self.wait(self.options.window).await?;
        self.shared.measuring.store(false, Ordering::Relaxed);
        let after = self.snapshot()?;
        let broker_rss_kib = self.options.broker_pid.map(|pid| procfs::rss_kib(Pid::Of(pid))).transpose()?;

        let window_secs = after.at.duration_since(before.at).as_secs_f64();
        let per_sec = |from: u64, to: u64| to.saturating_sub(from) as f64 / window_secs;
        let ticks_per_sec = procfs::clock_ticks_per_sec() as f64;
        let latency = if self.plan.latency {
            let mut samples = std::mem::take(
                &mut *self.shared.latencies_ns.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            Some(Latency::from_samples(&mut samples).context("no latency sample was recorded")?)
        } else {
            None
        };
        let confirms = !self.confirm_windows.is_empty();
        Ok(Outcome {
            scenario: self.plan.name,
            label: self.options.label.clone(),
            window_secs,
            published_per_sec: per_sec(before.published, after.published),
            delivered_per_sec: per_sec(before.delivered, after.delivered),
            confirmed_per_sec: confirms.then(|| per_sec(before.confirmed, after.confirmed)),
            nacked: confirms.then(|| after.nacked - before.nacked),
            latency,
            undelivered_at_end: (after.published * self.plan.copies_per_publish()) as i64 - after.delivered as i64,
            detail: String::new(),
            producer_pauses: after.producer_pauses - before.producer_pauses,
            broker_cpu_secs: match (before.broker_ticks, after.broker_ticks) {
                (Some(from), Some(to)) => Some(to.saturating_sub(from) as f64 / ticks_per_sec),
                _ => None,
            },
            broker_rss_kib,
            generator_cpu_secs: after.generator_ticks.saturating_sub(before.generator_ticks) as f64 / ticks_per_sec,
            generator_rss_kib: procfs::rss_kib(Pid::Myself)?,
        })
    }

    /// Sleeps for `duration`, or fails as soon as a producer or consumer does.
    async fn wait(&mut self, duration: Duration) -> Result<()> {
        tokio::select! {
            () = sleep(duration) => Ok(()),
            Some(failure) = self.failures.recv() => bail!("{failure}"),
        }
    }

    fn snapshot(&self) -> Result<Snapshot> {
        let broker_ticks = self.options.broker_pid.map(|pid| procfs::cpu_ticks(Pid::Of(pid))).transpose()?;
        Ok(Snapshot {
            at: Instant::now(),
            published: self.shared.published.load(Ordering::Relaxed),
            delivered: self.shared.delivered.load(Ordering::Relaxed),
            confirmed: self.confirm_windows.iter().map(|w| w.confirmed()).sum(),
            nacked: self.confirm_windows.iter().map(|w| w.nacked()).sum(),
            producer_pauses: self.shared.producer_pauses.load(Ordering::Relaxed),
            broker_ticks,
            generator_ticks: procfs::cpu_ticks(Pid::Myself)?,
        })
    }

    /// Stops producers, deletes what the run declared, closes every connection. Best effort: a
    /// broker that does not answer within [`TEARDOWN_GRACE`] is reported and left behind.
    async fn stop(self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for mut producer in self.producers {
            // A producer waiting on TCP backpressure or on confirms may never see the flag.
            if timeout(TEARDOWN_GRACE, &mut producer).await.is_err() {
                producer.abort();
            }
        }
        // Before deleting the exchange: amqprs may still hold publishes it has not written, and
        // connection.close goes out behind them.
        for connection in self.producer_connections {
            let _ = timeout(TEARDOWN_GRACE, connection.close()).await;
        }
        // Consumers go before their queues: GarageMQ (2020-02 snapshot) never answers a
        // queue.delete while a consumer holds unacked messages, and then stops serving anyone.
        for consumer in self.consumers {
            consumer.abort();
        }
        for connection in self.consumer_connections {
            let _ = timeout(TEARDOWN_GRACE, connection.close()).await;
        }
        for queue in &self.queues {
            let deleted = timeout(TEARDOWN_GRACE, self.control.queue_delete(QueueDeleteArguments::new(queue))).await;
            if !matches!(deleted, Ok(Ok(_))) {
                eprintln!("warren-bench: teardown: could not delete queue {queue}");
            }
        }
        if let Some(exchange) = &self.exchange {
            let deleted =
                timeout(TEARDOWN_GRACE, self.control.exchange_delete(ExchangeDeleteArguments::new(exchange))).await;
            if !matches!(deleted, Ok(Ok(()))) {
                eprintln!("warren-bench: teardown: could not delete exchange {exchange}");
            }
        }
        let _ = timeout(TEARDOWN_GRACE, self.control.close()).await;
        let _ = timeout(TEARDOWN_GRACE, self.control_connection.close()).await;
    }
}

/// Spawns `task` (on `runtime`, else the current one); if it fails, its error goes to the run,
/// which stops measuring.
fn spawn_reporting(
    name: String,
    failure_tx: mpsc::UnboundedSender<String>,
    task: impl Future<Output = Result<()>> + Send + 'static,
    runtime: Option<&tokio::runtime::Handle>,
) -> JoinHandle<()> {
    let task = async move {
        if let Err(error) = task.await {
            let _ = failure_tx.send(format!("{name}: {error:#}"));
        }
    };
    match runtime {
        Some(rt) => rt.spawn(task),
        None => tokio::spawn(task),
    }
}

/// Publishes until the run stops: as fast as amqprs' bounded outgoing buffer and TCP accept, or
/// at the plan's fixed rate; in confirm mode never more than the window ahead of the confirms.
async fn produce(
    channel: Channel,
    publish_args: BasicPublishArguments,
    plan: Plan,
    confirm_window: Option<Arc<ConfirmWindow>>,
    shared: Arc<Shared>,
) -> Result<()> {
    // No delivery_mode (transient messages) unless the run is --persistent.
    let mut properties = BasicProperties::default();
    if shared.persistent {
        properties.with_persistence(true);
    }
    let mut body = vec![b'w'; plan.body_size_bytes.max(TIMESTAMP_SIZE_BYTES)];
    body.truncate(plan.body_size_bytes);
    let mut ticker = plan.rate_per_sec.map(|rate| {
        let mut ticker = interval(Duration::from_secs(1) / rate);
        // Catch up after a stall, so the offered rate stays fixed (an open-loop generator).
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        ticker
    });
    let mut delivery_tag: u64 = 0;
    let mut published: u64 = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(max) = plan.max_priority {
            properties.with_priority((published % u64::from(max)) as u8);
            published += 1;
        }
        if let Some(ticker) = ticker.as_mut() {
            ticker.tick().await;
        }
        shared.wait_for_consumers().await;
        if let Some(window) = &confirm_window {
            // Spec: in confirm mode the broker numbers publishes on a channel from 1.
            delivery_tag += 1;
            window.reserve(delivery_tag).await?;
        }
        if plan.latency {
            body[..TIMESTAMP_SIZE_BYTES].copy_from_slice(&shared.now_ns().to_le_bytes());
        }
        channel.basic_publish(properties.clone(), body.clone(), publish_args.clone()).await.context("basic.publish")?;
        shared.published.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Counts deliveries until the run stops; acks with `multiple` every `ack_every` deliveries when
/// set; records latency from the body's timestamp when `latency`.
async fn consume(
    channel: Channel,
    mut deliveries: mpsc::UnboundedReceiver<ConsumerMessage>,
    ack_every: Option<u64>,
    latency: bool,
    shared: Arc<Shared>,
) -> Result<()> {
    let mut unacked: u64 = 0;
    while let Some(message) = deliveries.recv().await {
        let delivered = shared.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        if delivered.is_multiple_of(CONSUMER_NOTIFY_EVERY) {
            shared.consumer_progress.notify_waiters();
        }
        if latency && shared.measuring.load(Ordering::Relaxed) {
            let sent_ns = message
                .content
                .as_deref()
                .and_then(|body| body.get(..TIMESTAMP_SIZE_BYTES))
                .and_then(|stamp| <[u8; TIMESTAMP_SIZE_BYTES]>::try_from(stamp).ok())
                .map(u64::from_le_bytes)
                .context("delivery without the timestamp its producer wrote")?;
            shared.record_latency(shared.now_ns().saturating_sub(sent_ns));
        }
        if let Some(every) = ack_every {
            unacked += 1;
            if unacked >= every {
                let delivery_tag = message.deliver.as_ref().context("delivery without basic.deliver")?.delivery_tag();
                channel.basic_ack(BasicAckArguments::new(delivery_tag, true)).await.context("basic.ack")?;
                unacked = 0;
            }
        }
    }
    if shared.stop.load(Ordering::Relaxed) {
        Ok(())
    } else {
        bail!("consumer ended during the run (cancelled by the broker, or its channel closed)")
    }
}
