//! The management API's view of this process (`mgmt::Node`), and the control file through which a
//! local `warrenctl` finds the node without a password: `<data-dir>/control.json`, mode 0600,
//! holding the management address and a random secret (as RabbitMQ's Erlang cookie does).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use broker::{Broker, Effects};

use crate::Shared;

/// The control file's name inside the data directory.
pub const CONTROL_FILE: &str = "control.json";

/// A random secret: 32 bytes as hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the control file readable by its owner only; removed by `ControlFile`'s drop.
pub fn write_control_file(data_dir: &Path, mgmt: SocketAddr, secret: &str) -> std::io::Result<ControlFile> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(CONTROL_FILE);
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    // Reach the node over loopback whatever address it listens on.
    let host = if mgmt.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), mgmt.port())
    } else {
        mgmt
    };
    let body = format!("{{\"management\":\"{host}\",\"secret\":\"{secret}\",\"pid\":{}}}\n", std::process::id());
    f.write_all(body.as_bytes())?;
    f.sync_all()?;
    Ok(ControlFile(path))
}

/// Removes the control file when the server exits.
pub struct ControlFile(PathBuf);

impl Drop for ControlFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `mgmt::Node` for the running server.
pub struct ServerNode {
    pub shared: Arc<Shared>,
    pub listeners: Vec<(String, SocketAddr)>,
    pub secret: String,
    pub node_name: String,
    pub started_at_ms: u64,
    pub shutdown: Arc<tokio::sync::watch::Sender<bool>>,
}

/// `warren@<hostname>`, as RabbitMQ's `rabbit@<hostname>`.
pub fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("warren@{host}")
}

impl mgmt::Node for ServerNode {
    fn with_broker(&self, f: &mut dyn FnMut(&mut Broker, &mut Effects)) {
        let mut fx = Effects::default();
        let mut broker = self.shared.broker.lock();
        let written = broker.journal_mut().written();
        f(&mut broker, &mut fx);
        self.shared.dispatch(&mut fx);
        if broker.journal_mut().written() != written {
            self.shared.wake_syncer();
        }
    }

    fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.listeners.clone()
    }

    fn alarms(&self) -> Vec<String> {
        let a = *self.shared.alarms.borrow();
        let mut out = Vec::new();
        if a.disk {
            out.push("disk".to_owned());
        }
        if a.memory {
            out.push("memory".to_owned());
        }
        out
    }

    fn node_name(&self) -> String {
        self.node_name.clone()
    }

    fn default_user(&self) -> (String, String) {
        (self.shared.config.default_user.clone(), self.shared.config.default_pass.clone())
    }

    fn control_secret(&self) -> String {
        self.secret.clone()
    }

    fn app_running(&self) -> bool {
        self.shared.app_running.load(Ordering::SeqCst)
    }

    fn set_app_running(&self, running: bool) {
        self.shared.app_running.store(running, Ordering::SeqCst);
        if !running {
            // RabbitMQ compat: stop_app closes every client connection as a shutdown does.
            self.with_broker(&mut |b, fx| {
                let ids: Vec<_> = b.connections.keys().copied().collect();
                for id in ids {
                    b.close_connection(id, "broker shutdown", fx);
                }
            });
        }
    }

    fn stop(&self) {
        let _ = self.shutdown.send(true);
    }

    fn started_at_ms(&self) -> u64 {
        self.started_at_ms
    }

    fn set_limit(&self, which: &str, body: &serde_json::Value) -> Result<(), String> {
        let done = self.shared.limits.set(which, body)?;
        tracing::info!("{done} (warrenctl)");
        Ok(())
    }

    fn resources(&self) -> serde_json::Map<String, serde_json::Value> {
        let config = &self.shared.config;
        let fd_used = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
        let fd_total = crate::prometheus::max_fds();
        let sockets = self.shared.connection_count.load(std::sync::atomic::Ordering::Relaxed);
        let v = serde_json::json!({
            "mem_used": crate::alarms::rss_bytes().unwrap_or(0),
            "mem_limit": match self.shared.limits.memory_limit() { u64::MAX => 0, l => l },
            "disk_free": crate::alarms::disk_free_bytes(&config.data_dir).unwrap_or(0),
            "disk_free_limit": self.shared.limits.disk_free_limit(),
            "fd_used": fd_used,
            "fd_total": fd_total,
            "sockets_used": sockets,
            "sockets_total": config.connection_max,
            "proc_used": 0,
            "proc_total": 0,
            "run_queue": 0,
        });
        match v {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }
}
