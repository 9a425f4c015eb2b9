//! warren-bench: the load generator behind `scripts/bench` and docs/benchmarks.md.
//!
//! Runs one scenario against one broker over AMQP 0-9-1 with amqprs (a client none of the brokers
//! under test ships), and prints what it measured: a line for people, and on request a JSON line
//! and a markdown table row. With `--broker-pid` it also reads the broker's CPU time and memory
//! from /proc, so brokers are compared per CPU-second spent, not only per second of wall time.
//! It starts and stops no broker: that is the script's job.

mod client;
mod feature_bench;
mod procfs;
mod report;
mod scenario;
mod url;

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

/// Drive an AMQP 0-9-1 broker with one benchmark scenario and report throughput, latency and the
/// broker's CPU and memory.
#[derive(Debug, Parser)]
#[command(name = "warren-bench", version, about)]
struct Args {
    /// The scenario to run.
    #[arg(long, value_enum, required_unless_present = "markdown_header")]
    scenario: Option<scenario::Name>,

    /// The broker to connect to.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    url: String,

    /// Length of the measured window, after the warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,

    /// Traffic before the window opens, not counted.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,

    /// The broker's process id: adds its CPU seconds over the window and its RSS at the end.
    #[arg(long)]
    broker_pid: Option<u32>,

    /// Threads for the generator. 1 (the default) runs everything on one thread, so the generator
    /// takes at most one of the machine's cores and leaves the rest to the broker. 2 runs the
    /// producers (and setup) on one thread and the consumers on another, each connection's tasks
    /// staying on its thread; more than 2 is a tokio multi-thread runtime with that many workers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,

    /// The broker's name in reports (e.g. warren, rabbitmq).
    #[arg(long, default_value = "")]
    label: String,

    /// confirm-1k: the consumer sends one basic.ack with multiple=true per this many deliveries
    /// (1 acks each delivery; capped at the prefetch of 1000).
    #[arg(long, default_value_t = 100)]
    multi_ack_every: u16,

    /// latency-1k: messages per second the producer sends.
    #[arg(long, default_value_t = 1000)]
    rate: u32,

    /// Producers pause while this many message copies (a fanout publish makes one per queue) are
    /// published but not yet received by a consumer. Bounds the generator's memory: amqprs
    /// queues received deliveries without limit.
    #[arg(long, default_value_t = scenario::UNDELIVERED_MAX_DEFAULT)]
    undelivered_max: u64,

    /// Durable queues and persistent (delivery_mode 2) messages, e.g. for confirm-1k with
    /// messages that must reach the disk before they are confirmed.
    #[arg(long)]
    persistent: bool,

    /// delayed and ttl-behind-head: how many messages to publish.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,

    /// delayed: seconds from the end of publishing until the first message is due.
    #[arg(long, default_value_t = 10)]
    delay_secs: u64,

    /// delayed: seconds the due times are spread over.
    #[arg(long, default_value_t = 30)]
    spread_secs: u64,

    /// Also print the result as one JSON line.
    #[arg(long)]
    json: bool,

    /// Also print the result as one markdown table row (see --markdown-header).
    #[arg(long)]
    markdown: bool,

    /// Print the markdown table header that --markdown rows belong under, and exit.
    #[arg(long)]
    markdown_header: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.markdown_header {
        println!("{}", report::MARKDOWN_HEADER);
        return Ok(());
    }
    let name = args.scenario.context("--scenario is required unless --markdown-header is given")?;
    // --threads 2: consumers get their own current-thread runtime on their own thread, so a
    // connection's reader, dispatcher and consumer tasks never wake each other across threads.
    let consumer_runtime = if args.threads == 2 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the consumers' runtime")?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("consumers".into())
            .spawn(move || {
                rt.block_on(async move {
                    let _ = stopped.await;
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .context("starting the consumers' thread")?;
        Some((handle, stop, thread))
    } else {
        None
    };
    let options = scenario::Options {
        consumer_runtime: consumer_runtime.as_ref().map(|(handle, _, _)| handle.clone()),
        url: url::AmqpUrl::parse(&args.url)?,
        label: args.label.clone(),
        warmup: Duration::from_secs(args.warmup_secs),
        window: Duration::from_secs(args.seconds.max(1)),
        broker_pid: args.broker_pid,
        multi_ack_every: args.multi_ack_every,
        rate_per_sec: args.rate,
        undelivered_max: args.undelivered_max,
        persistent: args.persistent,
        messages: args.messages,
        delay_secs: args.delay_secs,
        spread_secs: args.spread_secs,
    };

    // A current-thread runtime for one thread: the multi-thread one would add the main thread to
    // the worker, and the generator would compete with the broker for a second core.
    let runtime = if args.threads <= 2 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(usize::from(args.threads)).enable_all().build()
    }
    .context("building the tokio runtime")?;
    let outcome = runtime
        .block_on(async move { tokio::spawn(scenario::run(name, options)).await.context("scenario task panicked")? });
    // amqprs leaves reader and writer tasks behind closed connections; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Some((_, stop, thread)) = consumer_runtime {
        drop(stop);
        let _ = thread.join();
    }
    let outcome = outcome.with_context(|| format!("scenario {} failed", name.as_str()))?;

    println!("{}", outcome.human_line());
    if args.json {
        println!("{}", outcome.json_line());
    }
    if args.markdown {
        println!("{}", outcome.markdown_row());
    }
    let cores = f64::from(args.threads);
    if outcome.window_secs > 0.0 && outcome.generator_cpu_secs > 0.9 * cores * outcome.window_secs {
        eprintln!(
            "warren-bench: the generator used {:.2} CPU-s of {:.2} available: it may be the \
             bottleneck, so these rates are a lower bound for the broker",
            outcome.generator_cpu_secs,
            cores * outcome.window_secs
        );
    }
    Ok(())
}
