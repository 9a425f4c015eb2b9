//! The Warren process: listeners, the AMQP handshake, per-connection reader and writer tasks,
//! heartbeats and shutdown. It decides no routing: every AMQP operation goes to `broker`, and the
//! effects that come back are queued on the outboxes of the connections they concern.

pub mod alarms;
pub mod config;
pub mod connection;
pub mod control;
mod gated;
pub mod outbox;
pub mod prometheus;
pub mod tls;

use broker::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use broker::durable::StoreJournal;
use broker::{Broker, BrokerConfig, ConnectionId, Effects};
use parking_lot::Mutex;
use store::FsDisk;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;
use outbox::Outbox;

/// What every connection task shares.
pub struct Shared {
    pub config: Config,
    /// The broker state. Lock order: `broker` before any outbox; never held across `.await`.
    pub broker: Mutex<Broker>,
    /// Outboxes of open connections, by connection id. Only touched under `broker`'s lock.
    pub outboxes: Mutex<HashMap<ConnectionId, Arc<Outbox>>>,
    next_connection_id: AtomicU64,
    pub connection_count: AtomicUsize,
    pub shutdown: watch::Receiver<bool>,
    /// Resource alarms in force (disk, memory).
    pub alarms: watch::Receiver<alarms::Alarms>,
    /// The thresholds of those alarms (changed at run time by warrenctl).
    pub limits: Arc<alarms::Limits>,
    /// Set and signalled when the journal has appends waiting for the syncer.
    sync_signal: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    /// Wakes the ticker when the broker set a deadline earlier than the one it sleeps until.
    tick_wake: (std::sync::Mutex<bool>, std::sync::Condvar),
    /// False after `warrenctl stop_app`: new AMQP connections are refused until `start_app`.
    pub app_running: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Tells the syncer the journal has something to sync.
    pub fn wake_syncer(&self) {
        signal(&self.sync_signal);
    }

    /// Tells the ticker to look at the broker's deadlines again.
    pub fn wake_ticker(&self) {
        let (lock, cvar) = &self.tick_wake;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_one();
    }

    pub fn next_connection_id(&self) -> ConnectionId {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Queues effects on their connections' outboxes. Called with the broker lock held so that
    /// no connection sees effects out of order with its own state changes.
    pub fn dispatch(&self, fx: &mut Effects) {
        if fx.tick_at_ms.take().is_some() {
            self.wake_ticker();
        }
        if fx.out.is_empty() {
            return;
        }
        let boxes = self.outboxes.lock();
        let mut it = fx.out.drain(..).peekable();
        // Each run for the same connection goes into its outbox under one lock, with one wake.
        while let Some((conn, first)) = it.next() {
            let run =
                std::iter::once(first).chain(std::iter::from_fn(|| it.next_if(|(c, _)| *c == conn).map(|(_, o)| o)));
            match boxes.get(&conn) {
                Some(b) => b.extend(run),
                None => run.for_each(drop),
            }
        }
    }
}

/// Binds the configured listeners: dual-stack `[::]` by default, `0.0.0.0` when IPv6 is missing.
/// An AMQP listener: plain, or AMQPS with its TLS acceptor.
pub struct AmqpListener {
    pub tcp: TcpListener,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl AmqpListener {
    /// The protocol name RabbitMQ lists for it: `amqp` or `amqp/ssl`.
    pub fn protocol(&self) -> &'static str {
        if self.tls.is_some() {
            "amqp/ssl"
        } else {
            "amqp"
        }
    }
}

/// The AMQP listeners (`--port` on every `--bind` address), then the AMQPS ones (`--tls-port`)
/// when `--tls-cert` and `--tls-key` are given.
pub fn bind(config: &Config) -> anyhow::Result<Vec<AmqpListener>> {
    let mut out: Vec<AmqpListener> =
        bind_port(config, config.port)?.into_iter().map(|tcp| AmqpListener { tcp, tls: None }).collect();
    if let Some(acceptor) = tls::acceptor(config)? {
        for tcp in bind_port(config, config.tls_port)? {
            out.push(AmqpListener { tcp, tls: Some(acceptor.clone()) });
        }
    }
    Ok(out)
}

fn bind_port(config: &Config, port: u16) -> anyhow::Result<Vec<TcpListener>> {
    let mut addrs = config.bind_addrs();
    let default = addrs.is_empty();
    if default {
        addrs.push(SocketAddr::from(([0u16; 8], port)));
    }
    let mut out = Vec::new();
    let mut port = port;
    for mut addr in addrs {
        if port != 0 {
            addr.set_port(port);
        }
        let l = match listen(addr) {
            Ok(l) => l,
            Err(e) if default => {
                tracing::warn!("IPv6 listener unavailable ({e}); listening on IPv4 only");
                listen(SocketAddr::from(([0, 0, 0, 0], port)))?
            }
            Err(e) => return Err(anyhow::anyhow!("cannot listen on {addr}: {e}")),
        };
        port = l.local_addr()?.port();
        out.push(l);
    }
    Ok(out)
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // Dual stack, as RabbitMQ listens on both families by default.
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Default port of the HTTP management API (RabbitMQ's).
pub const MANAGEMENT_PORT_DEFAULT: u16 = 15672;

/// Binds the management API's listener on every address (dual stack), or None when it is
/// turned off or its default port is taken (an explicitly requested port must bind).
pub fn bind_management(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    if config.no_management {
        return Ok(None);
    }
    let port = config.management_port.unwrap_or(MANAGEMENT_PORT_DEFAULT);
    let v6 = listen(SocketAddr::from(([0u16; 8], port)));
    let l = match v6 {
        Ok(l) => Ok(l),
        Err(_) => listen(SocketAddr::from(([0, 0, 0, 0], port))),
    };
    match l {
        Ok(l) => Ok(Some(l)),
        Err(e) if config.management_port.is_none() => {
            tracing::warn!("management API not started: cannot listen on port {port} ({e}); use --management-port");
            Ok(None)
        }
        Err(e) => Err(anyhow::anyhow!("cannot listen on management port {port}: {e}")),
    }
}

/// The management API's listeners and the control file's secret, for `run`.
pub struct Management {
    pub listener: TcpListener,
    pub secret: String,
    /// `--management-tls-port`: the HTTPS listener and its acceptor.
    pub tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
}

/// Binds the management API's HTTPS listener (`--management-tls-port`) with its acceptor, or None
/// when it is not asked for or the management API is off.
pub fn bind_management_tls(config: &Config) -> anyhow::Result<Option<(TcpListener, tokio_rustls::TlsAcceptor)>> {
    let Some(port) = config.management_tls_port.filter(|_| !config.no_management) else { return Ok(None) };
    let Some(acceptor) = tls::https_acceptor(config)? else { return Ok(None) };
    let l = listen(SocketAddr::from(([0u16; 8], port)))
        .or_else(|_| listen(SocketAddr::from(([0, 0, 0, 0], port))))
        .map_err(|e| anyhow::anyhow!("cannot listen on management TLS port {port}: {e}"))?;
    Ok(Some((l, acceptor)))
}

/// Holds the data directory's lock for as long as it lives.
pub struct DataDirLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

/// Takes an exclusive lock on the data directory, so two servers never write one journal.
pub fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<DataDirLock> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(DataDirLock(lock)),
        Err((_, e)) => Err(anyhow::anyhow!(
            "data directory {} is in use by another warren-server ({e}); use another --data-dir",
            dir.display()
        )),
    }
}

/// Builds the broker and replays the journal in the data directory into it (before listening).
pub fn open_broker(config: &Config) -> anyhow::Result<Broker> {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    let broker_config = BrokerConfig {
        confirm_before_fsync: config.confirm_before_fsync,
        queue_memory_bytes_max: config.queue_memory_max,
        consumer_timeout_ms: config.consumer_timeout,
        node_name: control::node_name(),
        ..BrokerConfig::default()
    };
    let mut broker = Broker::new(broker_config, seed);
    let dir = config.data_dir.join("journal");
    let started = std::time::Instant::now();
    let (mut journal, stats) =
        StoreJournal::open(&dir, Arc::new(FsDisk), &mut broker, |line| tracing::info!("recovery: {line}"))
            .map_err(|e| anyhow::anyhow!("cannot open the journal in {}: {e}", dir.display()))?;
    if stats.damaged_regions > 0 {
        tracing::warn!("recovery: {} damaged regions skipped or truncated (see above)", stats.damaged_regions);
    }
    tracing::info!(
        "recovered {} definitions and {} messages in {} ms",
        stats.definitions,
        stats.messages,
        started.elapsed().as_millis()
    );
    journal.set_definitions_compaction_min_bytes(config.definitions_compaction_bytes);
    broker.set_journal(Box::new(journal));
    if broker.compact_definitions_if_due() {
        tracing::info!("recovery: compacted the definitions log");
    }
    if broker.auth_uninitialized() {
        // RabbitMQ compat: a fresh node gets the default user, an administrator with full
        // permissions on "/".
        let hash = broker::auth::hash_password(&config.default_pass, rand::random());
        broker
            .put_user(&config.default_user, &hash, &["administrator".to_owned()])
            .map_err(|e| anyhow::anyhow!("cannot create the default user: {e}"))?;
        if broker.vhosts.contains_key("/") {
            broker
                .set_permissions("/", &config.default_user, ".*", ".*", ".*")
                .map_err(|e| anyhow::anyhow!("cannot set the default user's permissions: {e}"))?;
        }
        tracing::info!("created the default user '{}'", config.default_user);
    }
    Ok(broker)
}

/// Starts the io_uring threads that serve plain AMQP connections, as `--io-engine` says: none
/// for `epoll`, or for `auto` where io_uring is unavailable.
fn start_io_threads(config: &Config) -> anyhow::Result<Vec<uring::Handle>> {
    use config::IoEngine;
    if config.io_engine == IoEngine::Epoll {
        return Ok(Vec::new());
    }
    if let Err(e) = uring::probe() {
        if config.io_engine == IoEngine::Uring {
            anyhow::bail!("--io-engine uring: io_uring is not available: {e}");
        }
        tracing::info!("io_uring is not available ({e}); AMQP connections use epoll");
        return Ok(Vec::new());
    }
    let rt = tokio::runtime::Handle::current();
    let threads = (0..config.threads())
        .map(|i| uring::start(&format!("warren-io-{i}"), rt.clone()))
        .collect::<std::io::Result<Vec<_>>>()?;
    tracing::debug!("AMQP connections on {} io_uring thread(s)", threads.len());
    Ok(threads)
}

/// Serves AMQP on `listeners` until `shutdown` turns true.
/// `mgmt` serves the HTTP API (with `control_secret` granting the local warrenctl access);
/// `stop` ends the server when it sends true (signals, `warrenctl stop`).
pub async fn run(
    config: Config,
    broker: Broker,
    listeners: Vec<AmqpListener>,
    mgmt: Option<Management>,
    prometheus: Option<TcpListener>,
    stop: Arc<watch::Sender<bool>>,
) -> anyhow::Result<()> {
    let _ = STARTED_AT_MS.set(now_ms());
    let shutdown = stop.subscribe();
    let (alarm_tx, alarm_rx) = watch::channel(alarms::Alarms::default());
    let limits = Arc::new(alarms::Limits::new(config.disk_free_limit, config.vm_memory_high_watermark));
    tokio::spawn(alarms::monitor(config.data_dir.clone(), limits.clone(), alarm_tx));
    let sync_signal = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let mut broker = broker;
    {
        // The first ack after a sync wakes the syncer, which otherwise sleeps while the journal
        // is idle (publishes wake it themselves).
        let s = sync_signal.clone();
        broker.journal_mut().set_kick(Box::new(move || signal(&s)));
    }
    let shared = Arc::new(Shared {
        alarms: alarm_rx,
        limits,
        broker: Mutex::new(broker),
        config,
        outboxes: Mutex::new(HashMap::default()),
        next_connection_id: AtomicU64::new(0),
        connection_count: AtomicUsize::new(0),
        shutdown: shutdown.clone(),
        sync_signal,
        tick_wake: (std::sync::Mutex::new(false), std::sync::Condvar::new()),
        app_running: std::sync::atomic::AtomicBool::new(true),
    });
    let mut addrs: Vec<(String, SocketAddr)> =
        listeners.iter().filter_map(|l| Some((l.protocol().to_owned(), l.tcp.local_addr().ok()?))).collect();
    let mgmt_task = match mgmt {
        Some(Management { listener, secret, tls }) => {
            if let Ok(a) = listener.local_addr() {
                addrs.push(("http".to_owned(), a));
            }
            if let Some(a) = tls.as_ref().and_then(|(l, _)| l.local_addr().ok()) {
                addrs.push(("https".to_owned(), a));
            }
            let node: Arc<dyn mgmt::Node> = Arc::new(control::ServerNode {
                shared: shared.clone(),
                listeners: addrs,
                secret,
                node_name: control::node_name(),
                started_at_ms: now_ms(),
                shutdown: stop.clone(),
            });
            if let Some((l, acceptor)) = tls {
                tokio::spawn(mgmt::serve(l, node.clone(), shutdown.clone(), Some(acceptor)));
            }
            Some(tokio::spawn(mgmt::serve(listener, node, shutdown.clone(), None)))
        }
        None => None,
    };
    if let Some(listener) = prometheus {
        tokio::spawn(prometheus::serve(listener, shared.clone(), shutdown.clone()));
    }
    let ticker = {
        let shared = shared.clone();
        std::thread::Builder::new().name("warren-tick".into()).spawn(move || ticker(&shared))?
    };
    let syncer = {
        let shared = shared.clone();
        std::thread::Builder::new().name("warren-sync".into()).spawn(move || syncer(&shared))?
    };
    let io_threads = Arc::new(start_io_threads(&shared.config)?);
    let next_io = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for l in listeners {
        let shared = shared.clone();
        let (io_threads, next_io) = (io_threads.clone(), next_io.clone());
        let mut shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = l.tcp.accept() => match r {
                        Ok((stream, _)) if !shared.app_running.load(Ordering::SeqCst) => drop(stream),
                        Ok((stream, peer)) if l.tls.is_none() && !io_threads.is_empty() => {
                            // Plain AMQP on an io thread, round robin.
                            let io = &io_threads[next_io.fetch_add(1, Ordering::Relaxed) % io_threads.len()];
                            match stream.into_std() {
                                Ok(stream) => {
                                    let shared = shared.clone();
                                    io.spawn(async move {
                                        connection::serve(shared, connection::Accepted::Uring(stream), peer, None).await
                                    });
                                }
                                Err(e) => tracing::warn!(%peer, "cannot hand the connection to an io thread: {e}"),
                            }
                        }
                        Ok((stream, peer)) => {
                            let (shared, tls) = (shared.clone(), l.tls.clone());
                            tokio::spawn(async move {
                                connection::serve(shared, connection::Accepted::Tokio(stream), peer, tls).await
                            });
                        }
                        Err(e) => {
                            // EMFILE and friends: back off rather than spin.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    },
                    _ = shutdown.changed() => break,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    // Give connections a moment to send connection.close 320 to their clients.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while shared.connection_count.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    shared.wake_ticker();
    let _ = ticker.join();
    if let Some(t) = mgmt_task {
        let _ = t.await;
    }
    shared.wake_syncer();
    let _ = syncer.join();
    Ok(())
}

fn signal(s: &(std::sync::Mutex<bool>, std::sync::Condvar)) {
    let (lock, cvar) = s;
    *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
    cvar.notify_one();
}

/// The broker's clock: milliseconds since the Unix epoch. Wall-clock time, because deadlines of
/// persistent messages are kept across restarts as absolute times and x-death `time` is a
/// timestamp; the broker never lets its own time go back.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

static STARTED_AT_MS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// When `run` started (ms since the epoch), for uptimes.
pub fn started_at_ms() -> u64 {
    STARTED_AT_MS.get().copied().unwrap_or_else(now_ms)
}

/// Microseconds since the Unix epoch (the ticker's finer view of `now_ms`).
fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Longest the ticker sleeps without looking at the broker, bounding the harm of a missed
/// wake-up or a wall-clock jump.
const TICK_SLEEP_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Calls `Broker::tick` when the broker's earliest deadline (message TTL, queue expiry) comes,
/// sleeping in between; woken early when a call sets an earlier deadline (`Effects::tick_at_ms`).
/// The broker's timer, on its own thread so that due times (message TTLs, delayed messages, ack
/// timeouts) are met within a millisecond or so whatever the connections keep the runtime busy
/// with; std's sleep is finer than tokio's millisecond timer wheel.
fn ticker(shared: &Shared) {
    let interval = std::time::Duration::from_secs(shared.config.stats_interval_secs);
    let mut last_sample = std::time::Instant::now();
    loop {
        if last_sample.elapsed() >= interval {
            // Message rates for the API and the console (see broker/src/stats.rs).
            let secs = last_sample.elapsed().as_secs_f64();
            last_sample = std::time::Instant::now();
            shared.broker.lock().sample_stats(secs);
        }
        let next = {
            let mut fx = Effects::default();
            let mut broker = shared.broker.lock();
            let written = broker.journal_mut().written();
            let next = broker.tick(now_ms(), &mut fx);
            shared.dispatch(&mut fx);
            if broker.compact_definitions_if_due() {
                tracing::info!("compacted the definitions log");
            }
            if broker.journal_mut().written() != written {
                // Dead-lettered persistent messages were journaled.
                shared.wake_syncer();
            }
            next
        };
        if *shared.shutdown.borrow() {
            return;
        }
        // Until the start of the due millisecond (the broker counts whole milliseconds).
        let sleep = match next {
            Some(at) => {
                std::time::Duration::from_micros(at.saturating_mul(1000).saturating_sub(now_us())).min(TICK_SLEEP_MAX)
            }
            None => TICK_SLEEP_MAX,
        };
        let (lock, cvar) = &shared.tick_wake;
        let mut woken = lock.lock().unwrap_or_else(|e| e.into_inner());
        if !*woken && !sleep.is_zero() {
            woken = cvar.wait_timeout(woken, sleep).unwrap_or_else(|e| e.into_inner()).0;
        }
        *woken = false;
    }
}

/// Longest an acknowledgement waits in memory before it is synced to the ack log.
const ACK_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The group-commit loop: takes whatever the journal holds, fsyncs it (the job runs without the
/// broker lock when the journal supports it), then releases the publisher confirms waiting for it.
/// Many publishers share one fsync; a confirm waits at most one fsync plus the one in progress.
fn syncer(shared: &Shared) {
    let mut failed = false;
    let mut last_forced = std::time::Instant::now();
    loop {
        let stopping = *shared.shutdown.borrow();
        // Acks need no confirm, so they ride along with publishes' syncs, or go every 100 ms.
        let force = stopping || last_forced.elapsed() >= ACK_SYNC_INTERVAL;
        if force {
            last_forced = std::time::Instant::now();
        }
        let job = {
            let mut broker = shared.broker.lock();
            let job = broker.journal_mut().begin_sync(force);
            if let (Some(job), true) = (&job, broker.config.confirm_before_fsync) {
                // RabbitMQ's weaker promise: confirm once written to the OS, before the fsync.
                let mut fx = Effects::default();
                broker.journal_synced(job.target(), &mut fx);
                shared.dispatch(&mut fx);
            }
            job
        };
        match job {
            Some(job) => {
                let result = job.run();
                let mut fx = Effects::default();
                let mut broker = shared.broker.lock();
                match result {
                    Ok(seq) => broker.journal_synced(seq, &mut fx),
                    Err(e) => {
                        if !failed {
                            tracing::error!("journal write failed, persistent publishes are no longer confirmed: {e}");
                            failed = true;
                        }
                        broker.journal_failed(&e, &mut fx);
                    }
                }
                shared.dispatch(&mut fx);
            }
            None if stopping => return,
            None => {
                // Acks not yet synced: look again when they are due. Nothing at all: sleep until
                // woken (readers wake it when they journal a publish, the journal's kick on the
                // first ack since a sync; the flag is kept under a mutex, so none is missed).
                // An idle broker's syncer never wakes.
                let idle = shared.broker.lock().journal_mut().idle();
                let (lock, cvar) = &*shared.sync_signal;
                let mut pending = lock.lock().unwrap_or_else(|e| e.into_inner());
                if !*pending {
                    pending = if idle {
                        cvar.wait(pending).unwrap_or_else(|e| e.into_inner())
                    } else {
                        let due = ACK_SYNC_INTERVAL.saturating_sub(last_forced.elapsed());
                        cvar.wait_timeout(pending, due.max(std::time::Duration::from_millis(1)))
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    };
                }
                *pending = false;
            }
        }
    }
}
