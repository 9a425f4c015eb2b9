//! Data directory ownership: proves a second server refuses a data directory that a running one
//! holds (two writers would corrupt the journal), with a clear message and a non-zero exit.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{server_bin, Server};

#[test]
fn second_server_on_the_same_data_dir_is_refused() {
    let first = Server::start();
    let mut second = Command::new(server_bin())
        .args(["--port", "0", "--data-dir"])
        .arg(&first.data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("second server runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("the second server kept running on a data directory already in use");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(!status.success(), "the second server must not start");
    let mut stderr = String::new();
    second.stderr.take().expect("piped").read_to_string(&mut stderr).expect("stderr");
    assert!(stderr.contains("is in use by another warren-server"), "stderr: {stderr}");
    // The first one is unharmed.
    std::net::TcpStream::connect(first.addr()).expect("first server still listens");
}
