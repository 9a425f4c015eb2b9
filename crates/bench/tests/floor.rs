//! warren-floor runs end to end: it starts its relay, offers the traffic and prints a CPU figure.

use std::process::Command;

fn floor(engine: &str) -> f64 {
    let out = Command::new(env!("CARGO_BIN_EXE_warren-floor"))
        .args(["--engine", engine, "--seconds", "1"])
        .output()
        .expect("warren-floor runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "warren-floor --engine {engine} failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figure = text
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no figure in {text:?}"));
    assert!(text.contains("µs of CPU per message"), "{text}");
    figure
}

/// Proves the epoll relay moves the traffic and the tool measures its CPU (above zero).
#[test]
fn epoll_relay_reports_cpu_per_message() {
    assert!(floor("epoll") > 0.0);
}

/// Proves the same on Warren's io_uring engine, where the kernel has it.
#[test]
fn uring_relay_reports_cpu_per_message() {
    if uring::probe().is_err() {
        eprintln!("io_uring unavailable here: skipped");
        return;
    }
    assert!(floor("uring") > 0.0);
}
