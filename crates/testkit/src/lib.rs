//! Test-only helpers: start, kill and restart the real `warren-server` binary on a free port with
//! a temporary data directory, and wait for conditions without sleeping blindly.

pub mod raw;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Polls `predicate` until it holds or `deadline` passes; panics with `what` on timeout.
pub fn wait_for(deadline: Duration, what: &str, mut predicate: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !predicate() {
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The path of the server binary: `$WARREN_BIN`, else `target/<profile>/warren-server` next to
/// the test executable.
pub fn server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("WARREN_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    profile_dir.join("warren-server")
}

/// A running `warren-server` process, killed on drop.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    extra_args: Vec<String>,
    _tmp: Option<TempDir>,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        // The counter keeps names unique when parallel tests read the same (coarse) clock.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let p = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Server {
    /// Starts the binary on port 0 with a fresh data directory and extra flags.
    pub fn start_with(args: &[&str]) -> Server {
        let tmp = TempDir::new("warren-test");
        let data_dir = tmp.0.clone();
        let mut s = Server {
            child: None,
            port: 0,
            data_dir,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            _tmp: Some(tmp),
        };
        s.spawn();
        s
    }

    pub fn start() -> Server {
        Self::start_with(&[])
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new(server_bin());
        cmd.arg("--port").arg(&port).arg("--data-dir").arg(&self.data_dir).args(&self.extra_args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", server_bin().display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(p) = parse_port(&line) {
                        let _ = tx.send(p);
                        sent = true;
                    }
                }
            }
        });
        self.port = rx.recv_timeout(Duration::from_secs(20)).expect("server printed its listening line");
        self.child = Some(child);
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited in time.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Starts the binary again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The port from the startup line (`... amqp=[::]:5672 ...`).
pub fn parse_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("amqp=")? + 5..];
    let token = rest.split_whitespace().next()?;
    token.rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    /// Proves the startup line parser finds the port for IPv6 and IPv4 listeners.
    #[test]
    fn parses_startup_line() {
        assert_eq!(super::parse_port("warren-server 0.1.0 listening: amqp=[::]:5672 data_dir=x"), Some(5672));
        assert_eq!(super::parse_port("listening: amqp=0.0.0.0:41 amqp=[::1]:41"), Some(41));
        assert_eq!(super::parse_port("nothing here"), None);
    }
}
