//! warren-floor: what the latency-1k traffic costs a process that does nothing but move the bytes.
//!
//! latency-1k sends one ~100-byte publish every millisecond and reads one ~130-byte delivery
//! back. Any broker pays, per message, for waking up, one TCP receive (with the ACK it sends the
//! producer) and one TCP send (which, on loopback, runs the consumer's receive and wakes it).
//! This tool measures that floor on the machine at hand: it starts itself as a *relay* process
//! that accepts a consumer and a producer connection and copies every chunk it reads from the
//! producer to the consumer (grown by 30%, as a delivery is larger than its publish), with no
//! parsing, no routing and no allocation per message; then, as the generator, it offers the
//! same traffic as latency-1k from one thread and reports the relay's CPU time per message from
//! `/proc/<pid>/task/*/schedstat` (nanoseconds, every thread of the relay).
//!
//!   warren-floor --engine uring --seconds 20
//!   warren-floor --engine epoll --seconds 20
//!
//! The relay runs on Warren's own I/O engines: `uring` is the io_uring thread Warren's
//! connections run on (one `io_uring_enter` per message), `epoll` a tokio current-thread runtime
//! (epoll_wait, recv and send). A broker's CPU per message at latency-1k can come close to this
//! figure, not below it. See docs/benchmarks.md.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{interval, MissedTickBehavior};

/// Bytes per publish: about a latency-1k basic.publish with its header and 16-byte body.
const PUBLISH_BYTES: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Engine {
    /// Warren's io_uring engine.
    Uring,
    /// A tokio current-thread runtime (epoll).
    Epoll,
}

#[derive(Parser, Debug)]
#[command(about = "Measures the CPU per message of a do-nothing relay under latency-1k's traffic")]
struct Args {
    /// The relay's I/O engine.
    #[arg(long, value_enum, default_value_t = Engine::Uring)]
    engine: Engine,
    /// Measured seconds (after 2 s of warm-up).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Messages per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Internal: run as the relay, listening on this address (printed on stdout once bound).
    #[arg(long, hide = true)]
    relay: Option<SocketAddr>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.relay {
        Some(addr) => relay(addr, args.engine),
        None => generate(&args),
    }
}

/// Accepts the consumer, then the producer, and copies producer → consumer until either closes.
fn relay(addr: SocketAddr, engine: Engine) -> Result<()> {
    let listener = TcpListener::bind(addr).context("binding the relay")?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let (consumer, _) = listener.accept().context("accepting the consumer")?;
    let (producer, _) = listener.accept().context("accepting the producer")?;
    for s in [&consumer, &producer] {
        s.set_nodelay(true)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match engine {
        Engine::Uring => {
            let io = uring::start("floor-io", rt.handle().clone()).context("starting the io_uring thread")?;
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            io.spawn(async move {
                let r = async {
                    let (mut from, _keep) = uring::TcpStream::split(producer)?;
                    let (_keep2, mut to) = uring::TcpStream::split(consumer)?;
                    copy(&mut from, &mut to).await
                }
                .await;
                let _ = done_tx.send(r);
            });
            rt.block_on(done_rx).context("relay task dropped")??;
        }
        Engine::Epoll => rt.block_on(async move {
            producer.set_nonblocking(true)?;
            consumer.set_nonblocking(true)?;
            let mut from = tokio::net::TcpStream::from_std(producer)?;
            let mut to = tokio::net::TcpStream::from_std(consumer)?;
            copy(&mut from, &mut to).await
        })?,
    }
    Ok(())
}

/// The relay's loop: one read, one write of 1.3 times the bytes read; one buffer of each.
async fn copy<R, W>(from: &mut R, to: &mut W) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut inbuf = vec![0u8; 64 * 1024];
    let mut outbuf = vec![b'd'; 64 * 1024 * 2];
    loop {
        let n = from.read(&mut inbuf).await?;
        if n == 0 {
            return Ok(());
        }
        let out = (n + n * 3 / 10).min(outbuf.len());
        outbuf[..n].copy_from_slice(&inbuf[..n]);
        to.write_all(&outbuf[..out]).await?;
    }
}

/// Starts the relay, offers the traffic from one thread and prints the relay's CPU per message.
fn generate(args: &Args) -> Result<()> {
    let exe = std::env::current_exe()?;
    let engine = match args.engine {
        Engine::Uring => "uring",
        Engine::Epoll => "epoll",
    };
    let mut child = Command::new(exe)
        .args(["--relay", "127.0.0.1:0", "--engine", engine])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the relay")?;
    let pid = child.id();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().context("relay stdout")?), &mut line)?;
    let addr: SocketAddr = line.trim().parse().context("the relay's address")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let seconds = args.seconds.max(1);
    let rate = args.rate.max(1);
    let outcome = rt.block_on(async move {
        let mut consumer = tokio::net::TcpStream::connect(addr).await?;
        consumer.set_nodelay(true)?;
        // The relay accepts the consumer first: let it, before the producer connects.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut producer = tokio::net::TcpStream::connect(addr).await?;
        producer.set_nodelay(true)?;
        let warmup = Duration::from_secs(2);
        let total = warmup + Duration::from_secs(seconds);
        let sender = tokio::spawn(async move {
            let msg = [b'p'; PUBLISH_BYTES];
            let mut ticker = interval(Duration::from_secs(1) / rate);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
            let end = tokio::time::Instant::now() + total + Duration::from_millis(200);
            while tokio::time::Instant::now() < end {
                ticker.tick().await;
                producer.write_all(&msg).await?;
            }
            Ok::<_, std::io::Error>(producer)
        });
        let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = received.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match consumer.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => counted.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed),
                };
            }
        });
        tokio::time::sleep(warmup).await;
        let relay0 = schedstat_ns(pid)?;
        let gen0 = schedstat_ns(std::process::id())?;
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let relay1 = schedstat_ns(pid)?;
        let gen1 = schedstat_ns(std::process::id())?;
        let producer = sender.await??;
        drop(producer);
        reader.abort();
        // Every message must have come back through the relay (grown by 30%), or the figure
        // would be that of a relay that did not do the work.
        let expected = (warmup.as_secs() + seconds) * u64::from(rate) * (PUBLISH_BYTES as u64 * 13 / 10);
        let got = received.load(std::sync::atomic::Ordering::Relaxed);
        if got < expected * 9 / 10 {
            bail!("the relay delivered {got} bytes of the {expected} expected");
        }
        Ok::<_, anyhow::Error>((relay1 - relay0, gen1 - gen0))
    });
    let _ = child.kill();
    let _ = child.wait();
    let (relay_ns, gen_ns) = outcome?;
    let messages = seconds as f64 * f64::from(rate);
    println!(
        "{engine} relay: {:.2} µs of CPU per message (generator {:.2}; over {seconds} s, {messages:.0} messages)",
        relay_ns as f64 / 1000.0 / messages,
        gen_ns as f64 / 1000.0 / messages,
    );
    Ok(())
}

/// The run time of every thread of `pid` so far, in nanoseconds.
fn schedstat_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path().join("schedstat");
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let Some(first) = text.split_whitespace().next() else { bail!("empty {}", path.display()) };
        total += first.parse::<u64>().with_context(|| format!("parsing {}", path.display()))?;
    }
    Ok(total)
}
