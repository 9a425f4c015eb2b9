//! The io thread against real sockets on loopback, with a tokio runtime beside it for timers.

use super::*;
use std::io::Read;
use std::net::{TcpListener, TcpStream as StdStream};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tokio runtime on its own thread (drives the timers) and one io thread.
fn setup() -> (tokio::runtime::Runtime, Handle) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let io = start("test-io", rt.handle().clone()).expect("io thread");
    (rt, io)
}

fn pair() -> (StdStream, StdStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = StdStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (server, _) = l.accept().expect("accept");
    client.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    (client, server)
}

/// Echoes until EOF, then shuts down its sending side.
fn echo(io: &Handle, server: StdStream) {
    echo_in(io, server, 10_000)
}

/// [`echo`], reading at most `chunk` bytes at a time.
fn echo_in(io: &Handle, server: StdStream, chunk: usize) {
    io.spawn(async move {
        let (mut rd, mut wr) = TcpStream::split(server).expect("split");
        let mut buf = vec![0u8; chunk];
        loop {
            let n = rd.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            wr.write_all(&buf[..n]).await.expect("write");
            wr.flush().await.expect("flush");
        }
        wr.shutdown().await.expect("shutdown");
    });
}

#[test]
fn echoes_small_and_large_writes_in_order() {
    if probe().is_err() {
        eprintln!("io_uring unavailable here; skipped");
        return;
    }
    let (_rt, io) = setup();
    let (mut client, server) = pair();
    echo(&io, server);
    for round in 0..50u32 {
        let msg = format!("ping {round}");
        client.write_all(msg.as_bytes()).expect("send");
        let mut back = vec![0u8; msg.len()];
        client.read_exact(&mut back).expect("echo");
        assert_eq!(back, msg.as_bytes());
    }
    // 8 MiB, more than the send bound and the socket buffers: exercises waiting for room and
    // short sends, written from another thread while this one reads.
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut writer = client.try_clone().expect("clone");
    let expected = big.clone();
    let t = std::thread::spawn(move || writer.write_all(&big).expect("send big"));
    let mut back = vec![0u8; expected.len()];
    client.read_exact(&mut back).expect("big echo");
    t.join().expect("writer");
    assert!(back == expected, "the 8 MiB echo differs");
    client.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("eof");
    assert!(rest.is_empty());
}

#[test]
fn dropping_the_halves_closes_the_socket() {
    if probe().is_err() {
        return;
    }
    let (_rt, io) = setup();
    let (mut client, server) = pair();
    io.spawn(async move {
        let (mut rd, wr) = TcpStream::split(server).expect("split");
        let mut b = [0u8; 1];
        let _ = rd.read(&mut b).await;
        drop(wr);
        // rd is dropped with a receive in flight: the cancel must still close the socket.
    });
    client.write_all(b"x").expect("send");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("EOF, not a timeout");
}

#[test]
fn aborting_a_task_closes_what_it_owns_and_timers_wake_tasks() {
    if probe().is_err() {
        return;
    }
    let (_rt, io) = setup();
    let (mut client, server) = pair();
    let (tx, rx) = std::sync::mpsc::channel();
    io.spawn(async move {
        let (rd, mut wr) = TcpStream::split(server).expect("split");
        // A tokio timer, driven by the runtime's thread, wakes this io-thread task.
        tokio::time::sleep(Duration::from_millis(20)).await;
        wr.write_all(b"hi").await.expect("write");
        let stuck = spawn_local(async move {
            let mut rd = rd;
            let mut b = [0u8; 1];
            let _ = rd.read(&mut b).await;
            drop(wr);
            7u32
        });
        stuck.abort();
        tx.send(stuck.await).expect("report");
    });
    let mut two = [0u8; 2];
    client.read_exact(&mut two).expect("hi");
    assert_eq!(&two, b"hi");
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).expect("join"), None);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("EOF after the abort");
}

#[test]
fn spawn_local_returns_the_output_and_wakes_cross_thread() {
    if probe().is_err() {
        return;
    }
    let (rt, io) = setup();
    let (tx, rx) = std::sync::mpsc::channel();
    let notify = Arc::new(tokio::sync::Notify::new());
    let n2 = notify.clone();
    io.spawn(async move {
        assert!(on_io_thread());
        let h = spawn_local(async move {
            n2.notified().await;
            41 + 1
        });
        tx.send(h.await).expect("report");
    });
    std::thread::sleep(Duration::from_millis(50));
    // Woken from a tokio worker thread while the io thread sleeps in the ring.
    rt.spawn(async move { notify.notify_one() });
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).expect("join"), Some(42));
    assert!(!on_io_thread());
}

#[test]
fn inline_sends_work_on_this_kernel() {
    if probe().is_err() {
        eprintln!("io_uring unavailable here; skipped");
        return;
    }
    // Where this fails, the reactor still works (with ordinary sends), but every message then
    // costs a second io_uring_enter: look at the kernel before accepting that.
    assert!(crate::reactor::inline_sends_work());
}

#[test]
fn rings_are_registered_and_entered_by_index_on_this_kernel() {
    if probe().is_err() {
        eprintln!("io_uring unavailable here; skipped");
        return;
    }
    // Two reactors on one thread: each ring gets its own index, and each is entered through it
    // (a wake pipe's byte completes the wait). Where registering fails, rings are entered by
    // descriptor, which costs a descriptor lookup per io_uring_enter: look at the kernel first.
    let (rx1, tx1) = std::os::unix::net::UnixStream::pair().expect("pair");
    let (rx2, tx2) = std::os::unix::net::UnixStream::pair().expect("pair");
    let mut a = crate::reactor::Reactor::new(rx1).expect("reactor");
    let mut b = crate::reactor::Reactor::new(rx2).expect("reactor");
    let (ia, ib) = (a.ring_index(), b.ring_index());
    assert!(ia.is_some() && ib.is_some() && ia != ib, "{ia:?} {ib:?}");
    for (r, mut tx) in [(&mut a, &tx1), (&mut b, &tx2)] {
        std::io::Write::write_all(&mut tx, &[1]).expect("wake byte");
        r.wait(true);
        let mut wakers = Vec::new();
        r.reap(&mut wakers);
        assert!(!r.wake_armed(), "the wake receive completed");
    }
}

#[test]
fn a_peer_that_stops_reading_does_not_hold_up_the_others() {
    if probe().is_err() {
        eprintln!("io_uring unavailable here; skipped");
        return;
    }
    // One io thread serves both: a send into the stalled peer's full window must neither fail
    // nor leave the thread asleep waiting for a completion that is not coming.
    let (_rt, io) = setup();
    let (mut stalled, stalled_srv) = pair();
    // A small send buffer and small sends: a whole send fits, overfills the socket while the
    // peer does not read, and the next finds no room at all (EAGAIN), not just too little (a
    // short send, which the large writes of `echoes_small_and_large_writes_in_order` make).
    socket2::SockRef::from(&stalled_srv).set_send_buffer_size(4096).expect("sndbuf");
    socket2::SockRef::from(&stalled).set_recv_buffer_size(64 * 1024).expect("rcvbuf");
    echo_in(&io, stalled_srv, 1000);
    let (mut lively, lively_srv) = pair();
    echo(&io, lively_srv);
    lively.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let big: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let expected = big.clone();
    let mut writer = stalled.try_clone().expect("clone");
    let t = std::thread::spawn(move || writer.write_all(&big).expect("send big"));
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..20u32 {
        let msg = format!("still here {round}");
        lively.write_all(msg.as_bytes()).expect("send");
        let mut back = vec![0u8; msg.len()];
        lively.read_exact(&mut back).expect("an echo within 2 s while the other peer is stalled");
        assert_eq!(back, msg.as_bytes());
    }
    let mut back = vec![0u8; expected.len()];
    stalled.read_exact(&mut back).expect("the stalled peer's echo");
    t.join().expect("writer");
    assert!(back == expected, "the stalled peer's 8 MiB echo differs");
}

#[test]
fn a_writer_over_the_send_bound_is_woken_when_a_whole_inline_send_completes() {
    if probe().is_err() {
        eprintln!("io_uring unavailable here; skipped");
        return;
    }
    // The task writes a MiB, then one byte more, which waits for room (past the send bound);
    // meanwhile it does not read, so only that send's completion can wake it. Once loopback's
    // buffers have grown, the MiB goes whole inline and posts no completion: the thread must
    // not sleep on the ring then.
    const MIB: usize = 1024 * 1024;
    let (_rt, io) = setup();
    let (mut client, server) = pair();
    client.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    io.spawn(async move {
        let (mut rd, mut wr) = TcpStream::split(server).expect("split");
        let block = vec![7u8; MIB];
        let mut go = [0u8; 1];
        for _ in 0..30 {
            wr.write_all(&block).await.expect("write MiB");
            wr.write_all(b"!").await.expect("write byte");
            if rd.read(&mut go).await.expect("read go") == 0 {
                return;
            }
        }
    });
    let mut back = vec![0u8; MIB + 1];
    for round in 0..30 {
        client.read_exact(&mut back).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(back[MIB], b'!');
        client.write_all(b"g").expect("go");
    }
}
