//! Resource alarms, as RabbitMQ raises them: free disk space on the data directory's filesystem
//! below `--disk-free-limit`, or resident memory above `--vm-memory-high-watermark` of the
//! machine's memory. While an alarm is on, every connection that has published is blocked: it is
//! sent connection.blocked (when the client supports it) and its socket is not read until the
//! alarm clears, so publishers stop while consumers keep draining queues.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
    rss_from_statm(&std::fs::read_to_string("/proc/self/statm").ok()?)
}

/// Resident bytes from `/proc/self/statm` ("size resident shared ..." in pages): a short line,
/// much cheaper for the kernel to produce than `/proc/self/status`.
fn rss_from_statm(text: &str) -> Option<u64> {
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as u64)
}

/// The monitor's readers: files opened once and read again in place, so a check costs no path
/// lookups (it runs twice a second for the life of the process).
struct Probes {
    statm: Option<std::fs::File>,
    dir: Option<std::fs::File>,
    buf: Vec<u8>,
}

impl Probes {
    fn open(dir: &Path) -> Self {
        Probes {
            statm: std::fs::File::open("/proc/self/statm").ok(),
            dir: std::fs::File::open(dir).ok(),
            buf: vec![0; 256],
        }
    }

    fn rss(&mut self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let n = self.statm.as_ref()?.read_at(&mut self.buf, 0).ok()?;
        rss_from_statm(std::str::from_utf8(&self.buf[..n]).ok()?)
    }

    fn disk_free(&self, dir: &Path) -> Option<u64> {
        match &self.dir {
            Some(f) => {
                let s = nix::sys::statvfs::fstatvfs(f).ok()?;
                Some(s.blocks_available() as u64 * s.fragment_size() as u64)
            }
            None => disk_free_bytes(dir),
        }
    }
}

/// The thresholds in force: set from the flags at start, changed at run time by
/// `warrenctl set_vm_memory_high_watermark` and `set_disk_free_limit` (not persisted, as
/// RabbitMQ's).
#[derive(Debug)]
pub struct Limits {
    pub disk_free_limit: AtomicU64,
    /// Bytes of resident memory above which the memory alarm is on; u64::MAX when the machine's
    /// memory is unknown.
    pub memory_limit: AtomicU64,
}

impl Limits {
    pub fn new(disk_free_limit: u64, memory_fraction: f64) -> Self {
        Limits {
            disk_free_limit: AtomicU64::new(disk_free_limit),
            memory_limit: AtomicU64::new(memory_limit_bytes(memory_fraction).unwrap_or(u64::MAX)),
        }
    }

    pub fn disk_free_limit(&self) -> u64 {
        self.disk_free_limit.load(Ordering::Relaxed)
    }

    pub fn memory_limit(&self) -> u64 {
        self.memory_limit.load(Ordering::Relaxed)
    }

    /// Sets a threshold from the management API's body: `vm_memory_high_watermark` takes
    /// `{"fraction": f}` (of the machine's memory, 0 to 1) or `{"absolute": bytes}`;
    /// `disk_free_limit` takes `{"bytes": n}` or `{"mem_relative": f}` (a multiple of the
    /// machine's memory). Returns what was set, for the log, or why not.
    pub fn set(&self, which: &str, body: &serde_json::Value) -> Result<String, String> {
        let fraction = |k: &str| body.get(k).and_then(serde_json::Value::as_f64);
        let bytes = |k: &str| body.get(k).and_then(serde_json::Value::as_u64);
        let total = || meminfo_total_bytes().ok_or("the machine's memory is unknown".to_owned());
        match which {
            "vm_memory_high_watermark" => {
                let limit = match (fraction("fraction"), bytes("absolute")) {
                    (Some(f), None) if (0.0..=1.0).contains(&f) => (total()? as f64 * f) as u64,
                    (Some(f), None) => return Err(format!("the fraction {f} is not between 0.0 and 1.0")),
                    (None, Some(b)) => b,
                    _ => return Err("expected {\"fraction\": F} or {\"absolute\": BYTES}".into()),
                };
                self.memory_limit.store(limit, Ordering::Relaxed);
                Ok(format!("memory high watermark set to {limit} bytes"))
            }
            "disk_free_limit" => {
                let limit = match (bytes("bytes"), fraction("mem_relative")) {
                    (Some(b), None) => b,
                    (None, Some(f)) if f >= 0.0 => (total()? as f64 * f) as u64,
                    _ => return Err("expected {\"bytes\": N} or {\"mem_relative\": F}".into()),
                };
                self.disk_free_limit.store(limit, Ordering::Relaxed);
                Ok(format!("disk free limit set to {limit} bytes"))
            }
            _ => Err(format!("no such limit '{which}'")),
        }
    }
}

/// Checks the resources every `CHECK_INTERVAL` and publishes changes, logging each transition.
pub async fn monitor(dir: std::path::PathBuf, limits: Arc<Limits>, tx: watch::Sender<Alarms>) {
    let mut ticker = tokio::time::interval(CHECK_INTERVAL);
    let mut probes = Probes::open(&dir);
    loop {
        ticker.tick().await;
        let (disk_free_limit, memory_limit) = (limits.disk_free_limit(), limits.memory_limit());
        let free = probes.disk_free(&dir);
        let rss = probes.rss();
        let now =
            Alarms { disk: free.is_some_and(|f| f < disk_free_limit), memory: rss.is_some_and(|r| r > memory_limit) };
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
                        memory_limit
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_resident_pages() {
        assert_eq!(rss_from_statm("1000 25 10 1 0 300 0\n"), Some(25 * page_size()));
        assert_eq!(rss_from_statm("garbage"), None);
        assert_eq!(rss_from_statm(""), None);
    }

    #[test]
    fn probes_read_again_in_place() {
        let dir = std::env::temp_dir();
        let mut p = Probes::open(&dir);
        let a = p.rss().expect("rss");
        // Touch 8 MiB so the second reading must differ: the file is re-read, not cached.
        let v = vec![1u8; 8 << 20];
        let b = p.rss().expect("rss again");
        assert!(b >= a + (6 << 20), "{a} then {b}");
        assert!(v.iter().all(|&x| x == 1));
        let free = p.disk_free(&dir).expect("disk free");
        assert!(free > 0);
        assert_eq!(Some(free).map(|f| f > 0), disk_free_bytes(&dir).map(|f| f > 0));
    }
}
