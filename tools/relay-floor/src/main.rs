//! The floor under any broker's CPU per message at a low, steady rate: a relay that reads
//! 109-byte messages from one TCP connection and writes each, 60 bytes longer (the size of the
//! basic.deliver that Warren sends for a latency-1k publish), to another, doing nothing else.
//!
//! ```text
//! relay-floor [tokio|blocking|uring|all] [SECONDS]
//! ```
//!
//! The relay runs as a child process; the parent sends one message per millisecond over loopback
//! (as `warren-bench --scenario latency-1k` does), reads every relayed byte back, and reports the
//! child's CPU time (`utime + stime` from /proc, like scripts/bench) per message.
//!
//! - `tokio`: a current-thread tokio runtime, a reader task and a writer task joined by a
//!   channel: Warren's shape (epoll_wait + recvfrom + sendto and one wake-up per message).
//! - `blocking`: one thread blocked in `read`, then `write` (two syscalls, one wake-up).
//! - `uring`: io_uring, the send and the next receive submitted with the wait in one syscall.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const MESSAGE: usize = 109;
const EXTRA: usize = 60;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let mode = args.get(2).context("serve MODE PORT")?;
            let port: u16 = args.get(3).context("serve MODE PORT")?.parse()?;
            serve(mode, port)
        }
        mode => {
            let mode = mode.unwrap_or("all");
            let secs: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(20);
            let modes: Vec<&str> = if mode == "all" { vec!["tokio", "blocking", "uring"] } else { vec![mode] };
            for m in modes {
                measure(m, secs)?;
            }
            Ok(())
        }
    }
}

fn measure(mode: &str, secs: u64) -> Result<()> {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["serve", mode, &port.to_string()])
        .spawn()
        .context("starting the relay")?;
    let connect = || -> Result<TcpStream> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => return Ok(s),
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(e.into()),
            }
        }
    };
    let mut input = connect()?;
    let output = connect()?;
    input.set_nodelay(true)?;
    let mut out = output.try_clone()?;
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut total = 0usize;
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_secs(child.id())?;
    let start = Instant::now();
    let message = [7u8; MESSAGE];
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        input.write_all(&message)?;
        sent += 1;
        let next = start + Duration::from_micros(1000 * sent);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let cpu = cpu_secs(child.id())? - before;
    drop(input);
    let total = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))?;
    let _ = child.wait();
    if total != sent as usize * (MESSAGE + EXTRA) {
        bail!("relayed {total} bytes, expected {}", sent as usize * (MESSAGE + EXTRA));
    }
    println!(
        "relay-floor {mode}: {sent} messages in {secs} s, relay CPU {cpu:.2} s, {:.0} messages per CPU-s, {:.1} us per message",
        sent as f64 / cpu,
        cpu * 1e6 / sent as f64
    );
    Ok(())
}

/// utime + stime of a process, in seconds (100 clock ticks per second, as on every Linux here).
fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit(')').next().context("stat")?.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

fn serve(mode: &str, port: u16) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    let (input, _) = listener.accept()?;
    let (output, _) = listener.accept()?;
    output.set_nodelay(true)?;
    match mode {
        "tokio" => serve_tokio(input, output),
        "blocking" => serve_blocking(input, output),
        "uring" => serve_uring(input, output),
        other => bail!("unknown mode {other}"),
    }
}

fn serve_blocking(mut input: TcpStream, mut output: TcpStream) -> Result<()> {
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(65536);
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        out.clear();
        relay(&buf[..n], &mut out);
        output.write_all(&out)?;
    }
}

/// Each whole message in `input` becomes a message EXTRA bytes longer in `out`.
fn relay(input: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(input);
    out.resize(out.len() + EXTRA * (input.len() / MESSAGE), 0);
}

fn serve_tokio(input: TcpStream, output: TcpStream) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    input.set_nonblocking(true)?;
    output.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    rt.block_on(async move {
        let mut input = tokio::net::TcpStream::from_std(input)?;
        let mut output = tokio::net::TcpStream::from_std(output)?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let writer = tokio::spawn(async move {
            while let Some(v) = rx.recv().await {
                output.write_all(&v).await?;
            }
            anyhow::Ok(())
        });
        let mut buf = vec![0u8; 65536];
        loop {
            let n = input.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let mut out = Vec::with_capacity(n + EXTRA);
            relay(&buf[..n], &mut out);
            tx.send(out)?;
        }
        drop(tx);
        writer.await?
    })
}

fn serve_uring(input: TcpStream, output: TcpStream) -> Result<()> {
    use io_uring::{opcode, types, IoUring};
    use std::os::fd::AsRawFd;
    let (fin, fout) = (types::Fd(input.as_raw_fd()), types::Fd(output.as_raw_fd()));
    let mut ring = IoUring::new(64)?;
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(65536);
    const RECV: u64 = 1;
    let recv = |buf: &mut Vec<u8>| opcode::Recv::new(fin, buf.as_mut_ptr(), buf.len() as u32).build().user_data(RECV);
    // SAFETY: `buf` outlives the ring's use of it: the next receive is queued only after the
    // previous one completed, and the loop owns both until it returns.
    unsafe { ring.submission().push(&recv(&mut buf))? };
    let mut wait_for = 1;
    loop {
        ring.submit_and_wait(wait_for)?;
        let done: Vec<(u64, i32)> = ring.completion().map(|c| (c.user_data(), c.result())).collect();
        wait_for = 1;
        for (what, result) in done {
            if result < 0 {
                bail!("io_uring op {what} failed: {}", std::io::Error::from_raw_os_error(-result));
            }
            if what != RECV {
                continue;
            }
            if result == 0 {
                return Ok(());
            }
            out.clear();
            relay(&buf[..result as usize], &mut out);
            let send = opcode::Send::new(fout, out.as_ptr(), out.len() as u32).build().user_data(2);
            // SAFETY: `out` is not touched again until the send's completion has been reaped (the
            // next wait includes it); `buf` as above. A short send is not retried: on loopback a
            // send of a few hundred bytes into an empty buffer is whole, and `measure` checks it.
            unsafe {
                ring.submission().push(&send)?;
                ring.submission().push(&recv(&mut buf))?;
            }
            // The send completes during the submit; wait for it and the next receive together.
            wait_for = 2;
        }
    }
}
