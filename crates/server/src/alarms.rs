//! Resource alarms, as RabbitMQ raises them: free disk space on the data directory's filesystem
//! below `--disk-free-limit`, or resident memory above `--vm-memory-high-watermark` of the
//! machine's memory. While an alarm is on, every connection that has published is blocked: it is
//! sent connection.blocked (when the client supports it) and its socket is not read until the
//! alarm clears, so publishers stop while consumers keep draining queues.

use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

/// How often the resources are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// The alarms in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Alarms {
    pub disk: bool,
    pub memory: bool,
}

impl Alarms {
    pub fn any(&self) -> bool {
        self.disk || self.memory
    }

    /// The reason sent in connection.blocked, as RabbitMQ words it.
    pub fn reason(&self) -> &'static str {
        match (self.disk, self.memory) {
            (true, true) => "low on memory and disk",
            (true, false) => "low on disk",
            _ => "low on memory",
        }
    }
}

/// Bytes free for unprivileged users on the filesystem holding `dir`.
pub fn disk_free_bytes(dir: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// The memory high watermark in bytes: `fraction` of the machine's memory.
pub fn memory_limit_bytes(fraction: f64) -> Option<u64> {
    meminfo_total_bytes().map(|t| (t as f64 * fraction) as u64)
}

fn meminfo_total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// The process's resident memory in bytes.
pub fn rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Checks the resources every `CHECK_INTERVAL` and publishes changes, logging each transition.
pub async fn monitor(dir: std::path::PathBuf, disk_free_limit: u64, memory_fraction: f64, tx: watch::Sender<Alarms>) {
    let memory_limit = meminfo_total_bytes().map(|t| (t as f64 * memory_fraction) as u64);
    let mut ticker = tokio::time::interval(CHECK_INTERVAL);
    loop {
        ticker.tick().await;
        let free = disk_free_bytes(&dir);
        let rss = rss_bytes();
        let now = Alarms {
            disk: free.is_some_and(|f| f < disk_free_limit),
            memory: matches!((rss, memory_limit), (Some(r), Some(l)) if r > l),
        };
        let before = *tx.borrow();
        if now != before {
            if now.disk != before.disk {
                if now.disk {
                    tracing::warn!(
                        "disk alarm set: {} bytes free, limit {disk_free_limit}; publishers are blocked",
                        free.unwrap_or(0)
                    );
                } else {
                    tracing::info!("disk alarm cleared: {} bytes free", free.unwrap_or(0));
                }
            }
            if now.memory != before.memory {
                if now.memory {
                    tracing::warn!(
                        "memory alarm set: RSS {} bytes above the high watermark {}; publishers are blocked",
                        rss.unwrap_or(0),
                        memory_limit.unwrap_or(0)
                    );
                } else {
                    tracing::info!("memory alarm cleared");
                }
            }
            if tx.send(now).is_err() {
                return;
            }
        }
    }
}
