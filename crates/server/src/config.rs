//! Command-line flags and the limits they set. Every bound the server enforces is named here
//! with its default, unit and flag.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Warren: a RabbitMQ-compatible AMQP 0-9-1 message broker.
#[derive(Debug, Clone, Parser)]
#[command(name = "warren-server", version, about, long_about = None)]
pub struct Config {
    /// AMQP port; 0 picks a free port (reported in the startup line).
    #[arg(long, default_value_t = 5672, env = "WARREN_PORT")]
    pub port: u16,

    /// Address to listen on; repeat for several. Default: every IPv6 and IPv4 address (dual stack),
    /// falling back to 0.0.0.0 where IPv6 is unavailable.
    #[arg(long = "bind", value_name = "ADDR")]
    pub bind: Vec<std::net::IpAddr>,

    /// AMQPS (AMQP over TLS) port, listened on when --tls-cert and --tls-key are given (RabbitMQ's
    /// 5671); 0 picks a free port. On the same addresses as --bind.
    #[arg(long, default_value_t = 5671, env = "WARREN_TLS_PORT")]
    pub tls_port: u16,

    /// PEM certificate chain of the AMQPS listener (the server's certificate first); with
    /// --tls-key, turns AMQPS on.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates: AMQPS clients are asked for a certificate, which must chain to one of
    /// them (RabbitMQ's verify_peer). Without it, client certificates are not asked for.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,

    /// With --tls-ca: refuse AMQPS clients that present no certificate (RabbitMQ's
    /// fail_if_no_peer_cert).
    #[arg(long, requires = "tls_ca")]
    pub tls_fail_if_no_peer_cert: bool,

    /// With --tls-ca: offer the EXTERNAL mechanism to AMQPS clients that presented a verified
    /// certificate, and log them in as the user the certificate names, without a password
    /// (RabbitMQ's rabbitmq_auth_mechanism_ssl and its ssl_cert_login_from).
    /// `distinguished_name`: the certificate's subject in RFC 4514 form, last RDN first
    /// (`CN=alice,OU=ops,O=Example`); `common_name`: its CN; `subject_alternative_name`: one of
    /// its subject alternative names (see --ssl-cert-login-san-type and -index).
    #[arg(long, value_enum, requires = "tls_ca")]
    pub ssl_cert_login_from: Option<CertLogin>,

    /// With --ssl-cert-login-from subject_alternative_name: which kind of name.
    #[arg(long, value_enum, default_value_t = SanType::Dns)]
    pub ssl_cert_login_san_type: SanType,

    /// With --ssl-cert-login-from subject_alternative_name: which of the names of that kind,
    /// counting from 0 in the certificate's order.
    #[arg(long, default_value_t = 0)]
    pub ssl_cert_login_san_index: usize,

    /// Directory for the node's data (created when missing).
    #[arg(long, default_value = "./warren-data", env = "WARREN_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Default user created on first start (RabbitMQ's guest).
    #[arg(long, default_value = "guest")]
    pub default_user: String,

    /// Password of the default user.
    #[arg(long, default_value = "guest")]
    pub default_pass: String,

    /// Largest frame, in bytes, offered in connection.tune (frame_max).
    #[arg(long, default_value_t = 131_072)]
    pub frame_max: u32,

    /// Most channels per connection offered in connection.tune (channel_max).
    #[arg(long, default_value_t = 2047)]
    pub channel_max: u16,

    /// Heartbeat interval in seconds offered in connection.tune; 0 disables.
    #[arg(long = "heartbeat", default_value_t = 60)]
    pub heartbeat_secs: u16,

    /// Largest message body in bytes; larger publishes are refused with 406 (max 512 MiB).
    #[arg(long, default_value_t = 128 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=536_870_912))]
    pub max_message_size: u64,

    /// Seconds a client has to complete the AMQP handshake.
    #[arg(long = "handshake-timeout", default_value_t = 10)]
    pub handshake_timeout_secs: u64,

    /// Confirm persistent messages before they are fsynced, as RabbitMQ does for classic queues
    /// (faster, but a confirmed message can be lost in a power failure). By default Warren
    /// confirms only after fsync.
    #[arg(long)]
    pub confirm_before_fsync: bool,

    /// Free disk space, in bytes, on the data directory's filesystem below which publishers are
    /// blocked (connection.blocked) until space is freed. RabbitMQ's default is 50 MB.
    #[arg(long, default_value_t = 50_000_000)]
    pub disk_free_limit: u64,

    /// Fraction of the machine's memory the broker may use before publishers are blocked
    /// (RabbitMQ 4's default, 0.6).
    #[arg(long, default_value_t = 0.6)]
    pub vm_memory_high_watermark: f64,

    /// Bytes of ready messages a queue keeps in memory, each counted as its body plus 160 bytes;
    /// messages beyond it stay only on disk and are read back when consumers reach them
    /// (priority queues keep everything in memory).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub queue_memory_max: usize,

    /// Size the definitions log (durable vhosts, users, policies, exchanges, queues, bindings)
    /// may reach before it is rewritten as a snapshot of the definitions in force; it is also
    /// rewritten whenever it doubles since the last snapshot. Keeps the log, and restart time,
    /// bounded however many durable queues are declared and deleted.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub definitions_compaction_bytes: u64,

    /// Milliseconds a delivery may stay unacknowledged before its channel is closed with 406
    /// (RabbitMQ's consumer_timeout); 0 turns it off. Queues (x-consumer-timeout, policy key
    /// consumer-timeout) and consumers (x-consumer-timeout) may set their own.
    #[arg(long, default_value_t = 1_800_000)]
    pub consumer_timeout: u64,

    /// Threads serving connections; 0 means half the cores, at least one. 1 runs every
    /// connection on one thread (fewest wake-ups, lowest CPU per message).
    #[arg(long, default_value_t = 0)]
    pub worker_threads: usize,

    /// How plain AMQP connections do their I/O. `auto` (the default): uring when the kernel
    /// allows it (a container's seccomp filter or `kernel.io_uring_disabled` may not), else
    /// epoll. `uring`: on io threads (as many as worker threads) that sleep in io_uring, one
    /// system call per round of sends, receives and waiting; fails to start without io_uring.
    /// `epoll`: on the tokio runtime. uring used as much or less CPU per message than epoll in
    /// every benchmark scenario (docs/benchmarks.md). AMQPS always uses the runtime.
    #[arg(long, value_enum, default_value_t = IoEngine::Auto, env = "WARREN_IO_ENGINE")]
    pub io_engine: IoEngine,

    /// Port of the HTTP management API (RabbitMQ's 15672); 0 picks a free port (reported in the
    /// startup line). Without this flag the default port is tried and, when it is taken, the
    /// server runs without the API and says so; an explicit port must be free.
    #[arg(long, env = "WARREN_MANAGEMENT_PORT")]
    pub management_port: Option<u16>,

    /// HTTPS port of the management API and console (RabbitMQ's management.ssl.port, usually
    /// 15671), with the certificate of --tls-cert and --tls-key; 0 picks a free port (reported in
    /// the startup line). Off unless given; the plain HTTP port stays open beside it.
    #[arg(long, env = "WARREN_MANAGEMENT_TLS_PORT", requires = "tls_cert")]
    pub management_tls_port: Option<u16>,

    /// Prometheus metrics port (RabbitMQ's 15692); 0 picks a free port (reported in the startup
    /// line). Without this flag the default port is tried and skipped with a warning when taken.
    #[arg(long, env = "WARREN_PROMETHEUS_PORT")]
    pub prometheus_port: Option<u16>,

    /// Run without the Prometheus metrics endpoint.
    #[arg(long)]
    pub no_prometheus: bool,

    /// Seconds between samples of message rates (RabbitMQ's collect_statistics_interval).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stats_interval_secs: u64,

    /// Run without the HTTP management API (and so without warrenctl).
    #[arg(long)]
    pub no_management: bool,

    /// Most client connections at once; more are refused.
    #[arg(long, default_value_t = 65_536)]
    pub connection_max: usize,
}

/// See [`Config::ssl_cert_login_from`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CertLogin {
    #[value(name = "distinguished_name")]
    DistinguishedName,
    #[value(name = "common_name")]
    CommonName,
    #[value(name = "subject_alternative_name", alias = "subject_alt_name")]
    SubjectAlternativeName,
}

/// See [`Config::ssl_cert_login_san_type`] (RabbitMQ's ssl_cert_login_san_type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SanType {
    Dns,
    Ip,
    Email,
    Uri,
}

/// See [`Config::io_engine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoEngine {
    Auto,
    Uring,
    Epoll,
}

impl Config {
    /// Threads serving connections: `--worker-threads`, or half the cores (at least one).
    pub fn threads(&self) -> usize {
        match self.worker_threads {
            0 => (std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) / 2).max(1),
            n => n,
        }
    }

    /// Parses from explicit arguments (tests) rather than the process's.
    pub fn from_args<I, T>(args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Config::parse_from(args)
    }

    pub fn bind_addrs(&self) -> Vec<SocketAddr> {
        self.bind.iter().map(|ip| SocketAddr::new(*ip, self.port)).collect()
    }
}
