//! The ring and the sockets it serves, owned by one io thread (a thread-local, never shared).
//!
//! Each socket has at most one receive and one send in flight. Their buffers live in the
//! socket's slot and are not touched (read, grown or freed) until the operation's completion has
//! been reaped; a socket whose halves are dropped with operations in flight cancels them and
//! keeps its slot, buffers and descriptor until every completion is in. That is the whole of the
//! safety argument for the one `unsafe` block below.
//!
//! Writes are buffered: `poll_write` appends to the socket's pending bytes and marks it dirty;
//! before the thread sleeps, [`Reactor::flush_dirty`] turns each dirty socket's pending bytes into
//! one send. So everything a task wrote in one round leaves in one send, submitted by the same
//! `io_uring_enter` that waits for the next completion.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};
use tokio::io::ReadBuf;

/// Receive buffer of a new socket; doubled (up to [`RECV_BUFFER_MAX`]) when a receive fills it.
const RECV_BUFFER_MIN: usize = 16 * 1024;
const RECV_BUFFER_MAX: usize = 256 * 1024;
/// `poll_write` stops accepting bytes while this many are pending or in flight.
const SEND_BUFFER_MAX: usize = 1024 * 1024;
/// `MSG_NOSIGNAL`: a send to a reset peer fails with EPIPE instead of raising SIGPIPE.
const MSG_NOSIGNAL: i32 = 0x4000;
/// `MSG_DONTWAIT`: a send into a full socket completes at once instead of waiting in the kernel
/// for room.
const MSG_DONTWAIT: i32 = 0x40;
/// `MSG_WAITALL`: a send that moves fewer bytes than asked counts as failed (so its completion is
/// posted even with `IOSQE_CQE_SKIP_SUCCESS`), and reports the bytes it did move.
const MSG_WAITALL: i32 = 0x100;
const EAGAIN: i32 = 11;
/// `IORING_RECVSEND_POLL_FIRST`.
const RECVSEND_POLL_FIRST: u16 = 1;
/// `IORING_ENTER_REGISTERED_RING`: the descriptor argument is a registered ring's index.
const ENTER_REGISTERED_RING: u32 = 1 << 4;

const KIND_RECV: u64 = 0;
const KIND_SEND: u64 = 1;
const KIND_CANCEL: u64 = 2;
const KIND_WAKE: u64 = 3;

fn user_data(kind: u64, slot: u32, gen: u32) -> u64 {
    kind << 62 | (slot as u64) << 32 | gen as u64
}

/// A socket's place in the reactor; halves hold it and go through the thread-local reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SockId {
    slot: u32,
    gen: u32,
}

struct Sock {
    stream: TcpStream,
    gen: u32,
    /// Halves not yet dropped (2, 1, 0).
    halves: u8,
    read_dropped: bool,
    // Receive side. `rbuf` belongs to the kernel while `r_inflight`.
    rbuf: Vec<u8>,
    r_pos: usize,
    r_len: usize,
    r_inflight: bool,
    /// The last receive left the socket empty (its completion lacked `IORING_CQE_F_SOCK_NONEMPTY`):
    /// the next waits for data before trying (`IORING_RECVSEND_POLL_FIRST`), saving an attempt
    /// that would find nothing.
    r_drained: bool,
    r_eof: bool,
    r_err: Option<io::Error>,
    r_waker: Option<Waker>,
    // Send side. `sbuf[s_off..]` belongs to the kernel while `s_inflight`.
    sbuf: Vec<u8>,
    s_off: usize,
    s_inflight: bool,
    pending: Vec<u8>,
    dirty: bool,
    /// The last send did not go whole into the socket (the peer's window was full): the next
    /// waits in the kernel for room, as an ordinary send, instead of going inline.
    congested: bool,
    /// The send in flight is an inline one (see [`Reactor::wait`]), and its place in the order
    /// of submission entries pushed.
    s_inline: Option<u64>,
    w_err: Option<io::ErrorKind>,
    w_waker: Option<Waker>,
}

pub(crate) struct Reactor {
    ring: IoUring,
    /// The ring's index among this thread's registered rings (`IORING_REGISTER_RING_FDS`), so
    /// that `io_uring_enter` skips looking its descriptor up; None where registering failed.
    ring_index: Option<u32>,
    socks: Vec<Option<Sock>>,
    free: Vec<u32>,
    next_gen: u32,
    dirty: Vec<SockId>,
    /// This kernel completes inline sends as [`Reactor::wait`] needs ([`inline_sends_work`]).
    inline_sends: bool,
    /// Submission entries pushed so far (numbers the inline sends).
    pushed: u64,
    /// Inline sends pushed and not yet known to be submitted: (socket, entry number).
    inline_pending: Vec<(SockId, u64)>,
    /// Inline sends the last `io_uring_enter` submitted: each has completed, and the whole ones
    /// posted no completion, so [`Reactor::reap`] completes them.
    inline_submitted: Vec<(SockId, u64)>,
    /// The read end of the wake pipe, with a receive always in flight into `wake_buf`.
    wake_rx: std::os::unix::net::UnixStream,
    wake_buf: Box<[u8; 64]>,
    wake_armed: bool,
    to_wake: Vec<Waker>,
    /// Completions being applied (kept between rounds for its capacity).
    cqes: Vec<(u64, i32, u32)>,
}

impl Drop for Reactor {
    fn drop(&mut self) {
        // The kernel cancels what is still in flight only after the ring's descriptor is gone,
        // and not synchronously: leak the buffers rather than free memory it may still write.
        // (Io threads live as long as the process, so this only runs at exit.)
        std::mem::forget(std::mem::take(&mut self.socks));
        std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new([0; 64])));
    }
}

impl Reactor {
    pub(crate) fn new(wake_rx: std::os::unix::net::UnixStream) -> io::Result<Self> {
        let ring = new_ring(1024)?;
        let ring_index = register_ring(&ring);
        Ok(Reactor {
            ring,
            ring_index,
            socks: Vec::new(),
            free: Vec::new(),
            next_gen: 1,
            dirty: Vec::new(),
            inline_sends: inline_sends_work(),
            pushed: 0,
            inline_pending: Vec::new(),
            inline_submitted: Vec::new(),
            wake_rx,
            wake_buf: Box::new([0; 64]),
            wake_armed: false,
            to_wake: Vec::new(),
            cqes: Vec::new(),
        })
    }

    #[cfg(test)]
    pub(crate) fn ring_index(&self) -> Option<u32> {
        self.ring_index
    }

    #[cfg(test)]
    pub(crate) fn wake_armed(&self) -> bool {
        self.wake_armed
    }

    /// Queues `entry`; when the submission queue is full, submits what it holds first.
    ///
    /// # Safety
    /// Every buffer `entry` points at must stay allocated, unmoved and untouched until the
    /// entry's completion has been reaped.
    unsafe fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: the caller's contract (buffers outlive the operation) is this function's.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.pushed += 1;
                return;
            }
            if let Err(e) = self.ring.submit() {
                tracing::error!("io_uring submit failed: {e}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    pub(crate) fn register(&mut self, stream: TcpStream) -> io::Result<SockId> {
        // io_uring waits on blocking sockets itself (by polling); a non-blocking one would
        // hand EAGAIN back to us.
        stream.set_nonblocking(false)?;
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let sock = Sock {
            stream,
            gen,
            halves: 2,
            read_dropped: false,
            rbuf: vec![0; RECV_BUFFER_MIN],
            r_pos: 0,
            r_len: 0,
            r_inflight: false,
            r_drained: false,
            r_eof: false,
            r_err: None,
            r_waker: None,
            sbuf: Vec::new(),
            s_off: 0,
            s_inflight: false,
            pending: Vec::new(),
            dirty: false,
            congested: false,
            s_inline: None,
            w_err: None,
            w_waker: None,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.socks[s as usize] = Some(sock);
                s
            }
            None => {
                self.socks.push(Some(sock));
                (self.socks.len() - 1) as u32
            }
        };
        Ok(SockId { slot, gen })
    }

    fn sock(&mut self, id: SockId) -> Option<&mut Sock> {
        self.socks.get_mut(id.slot as usize)?.as_mut().filter(|s| s.gen == id.gen)
    }

    fn submit_recv(&mut self, id: SockId) {
        // POLL_FIRST is as old as the kernels that pass the inline-send probe (5.19 against 6.0).
        let poll_first_ok = self.inline_sends;
        let Some(s) = self.sock(id) else { return };
        if s.r_inflight || s.r_eof || s.r_err.is_some() || s.read_dropped {
            return;
        }
        if s.r_len == s.rbuf.len() && s.rbuf.len() < RECV_BUFFER_MAX {
            // The last receive filled the buffer: more is likely waiting.
            let n = s.rbuf.len() * 2;
            s.rbuf.resize(n, 0);
        }
        s.r_pos = 0;
        s.r_len = 0;
        s.r_inflight = true;
        let e = opcode::Recv::new(types::Fd(s.stream.as_raw_fd()), s.rbuf.as_mut_ptr(), s.rbuf.len() as u32)
            .ioprio(if s.r_drained && poll_first_ok { RECVSEND_POLL_FIRST } else { 0 })
            .build()
            .user_data(user_data(KIND_RECV, id.slot, id.gen));
        // SAFETY: `rbuf` stays in the slot, unresized and unread, while `r_inflight`; the slot
        // is kept until this receive's completion (see `release`).
        unsafe { self.push(&e) };
    }

    pub(crate) fn poll_read(
        &mut self,
        id: SockId,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(s) = self.sock(id) else { return Poll::Ready(Err(io::ErrorKind::NotConnected.into())) };
        if s.r_pos < s.r_len {
            let n = (s.r_len - s.r_pos).min(out.remaining());
            out.put_slice(&s.rbuf[s.r_pos..s.r_pos + n]);
            s.r_pos += n;
            if s.r_pos == s.r_len {
                // Drained: the next receive goes out with the next submit, before it is asked.
                self.submit_recv(id);
            }
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = s.r_err.take() {
            return Poll::Ready(Err(e));
        }
        if s.r_eof {
            return Poll::Ready(Ok(()));
        }
        s.r_waker = Some(cx.waker().clone());
        if !s.r_inflight {
            self.submit_recv(id);
        }
        Poll::Pending
    }

    pub(crate) fn poll_write(
        &mut self,
        id: SockId,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(s) = self.sock(id) else { return Poll::Ready(Err(io::ErrorKind::NotConnected.into())) };
        if let Some(k) = s.w_err {
            return Poll::Ready(Err(k.into()));
        }
        let queued = s.pending.len() + if s.s_inflight { s.sbuf.len() - s.s_off } else { 0 };
        if queued >= SEND_BUFFER_MAX {
            s.w_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = 0;
        for b in bufs {
            s.pending.extend_from_slice(b);
            n += b.len();
        }
        if n > 0 && !s.dirty {
            s.dirty = true;
            self.dirty.push(id);
        }
        Poll::Ready(Ok(n))
    }

    /// Waits until every byte written has gone, then shuts down the sending side.
    pub(crate) fn poll_shutdown(&mut self, id: SockId, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(s) = self.sock(id) else { return Poll::Ready(Err(io::ErrorKind::NotConnected.into())) };
        if let Some(k) = s.w_err {
            return Poll::Ready(Err(k.into()));
        }
        if s.s_inflight || !s.pending.is_empty() {
            s.w_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(s.stream.shutdown(Shutdown::Write))
    }

    pub(crate) fn local_addr(&mut self, id: SockId) -> io::Result<std::net::SocketAddr> {
        self.sock(id).ok_or(io::ErrorKind::NotConnected)?.stream.local_addr()
    }

    /// A half was dropped: cancel what only it needed; free the socket when both are gone and
    /// nothing is in flight.
    ///
    /// Bytes already written still go out: a dropped write half submits what is pending. Once
    /// both halves are gone, what is still in flight is cancelled after that submission, so a
    /// peer with room gets everything and one that stopped reading cannot hold the socket open
    /// (as a close with unsent data in the socket would leave the kernel to send or drop it).
    pub(crate) fn drop_half(&mut self, id: SockId, read: bool) {
        let Some(s) = self.sock(id) else { return };
        s.halves = s.halves.saturating_sub(1);
        // Wakers are dropped after the reactor's borrow ends (one may hold the last reference to
        // a task, whose future may own another half): they go out with the next reap.
        let waker;
        let mut send_now = false;
        if read {
            s.read_dropped = true;
            waker = s.r_waker.take();
        } else {
            waker = s.w_waker.take();
            if !s.s_inflight && !s.pending.is_empty() {
                std::mem::swap(&mut s.sbuf, &mut s.pending);
                s.pending.clear();
                s.s_off = 0;
                send_now = true;
            }
        }
        let closing = s.halves == 0;
        let cancel_recv = s.r_inflight && read;
        self.to_wake.extend(waker);
        if send_now {
            self.submit_send(id);
        }
        let cancel_send = closing && self.sock(id).is_some_and(|s| s.s_inflight);
        for (yes, kind) in [(cancel_recv, KIND_RECV), (cancel_send, KIND_SEND)] {
            if yes {
                let e = opcode::AsyncCancel::new(user_data(kind, id.slot, id.gen)).build().user_data(user_data(
                    KIND_CANCEL,
                    id.slot,
                    id.gen,
                ));
                // SAFETY: a cancel points at no buffer.
                unsafe { self.push(&e) };
            }
        }
        self.release(id);
    }

    /// Frees a socket whose halves are gone once no operation of its is in flight (closing its
    /// descriptor, which the kernel's in-flight operations would otherwise keep open).
    fn release(&mut self, id: SockId) {
        let Some(s) = self.sock(id) else { return };
        if s.halves == 0 && !s.r_inflight && !s.s_inflight {
            self.socks[id.slot as usize] = None;
            self.free.push(id.slot);
        }
    }

    /// Turns each dirty socket's pending bytes into one send.
    pub(crate) fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for id in &dirty {
            let Some(s) = self.sock(*id) else { continue };
            s.dirty = false;
            if s.s_inflight || s.pending.is_empty() || s.halves == 0 {
                continue;
            }
            std::mem::swap(&mut s.sbuf, &mut s.pending);
            s.pending.clear();
            s.s_off = 0;
            self.submit_send(*id);
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn submit_send(&mut self, id: SockId) {
        let inline_ok = self.inline_sends;
        let seq = self.pushed;
        let Some(s) = self.sock(id) else { return };
        s.s_inflight = true;
        let inline = inline_ok && !s.congested;
        s.s_inline = inline.then_some(seq);
        let rest = &s.sbuf[s.s_off..];
        let mut e = opcode::Send::new(types::Fd(s.stream.as_raw_fd()), rest.as_ptr(), rest.len() as u32);
        if inline {
            e = e.flags(MSG_NOSIGNAL | MSG_DONTWAIT | MSG_WAITALL);
        } else {
            e = e.flags(MSG_NOSIGNAL);
        }
        let mut e = e.build().user_data(user_data(KIND_SEND, id.slot, id.gen));
        if inline {
            e = e.flags(squeue::Flags::SKIP_SUCCESS);
            self.inline_pending.push((id, seq));
        }
        // SAFETY: `sbuf` stays in the slot, unchanged, while `s_inflight`; the slot is kept until
        // this send's completion (see `release`), which for an inline send is the `reap` after
        // the `io_uring_enter` that submitted it.
        unsafe { self.push(&e) };
    }

    fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        self.wake_armed = true;
        let e = opcode::Recv::new(types::Fd(self.wake_rx.as_raw_fd()), self.wake_buf.as_mut_ptr(), 64)
            .build()
            .user_data(user_data(KIND_WAKE, 0, 0));
        // SAFETY: `wake_buf` is boxed, owned by the reactor and only replaced when the reactor
        // is dropped, where it is leaked.
        unsafe { self.push(&e) };
    }

    /// Submits everything queued and sleeps until a completion arrives.
    ///
    /// Sends go "inline" where the kernel allows ([`inline_sends_work`]): with `MSG_DONTWAIT`,
    /// so each completes during the submit, and with `IOSQE_CQE_SKIP_SUCCESS` and `MSG_WAITALL`,
    /// so a send that went whole posts no completion while one that did not (short, `EAGAIN`,
    /// an error) posts its result. So the one `io_uring_enter` that submits a round's sends
    /// also sleeps until the next real event, and returns at once when a send needs a follow-up.
    /// With ordinary sends, each send's own completion would end the sleep at once and cost a
    /// second `io_uring_enter` per message; counting on them instead, as an earlier version did,
    /// needed a timer for every sleep (about 15% of the CPU per message at 1,000 msg/s) and
    /// could not tell a short send from a whole one.
    pub(crate) fn wait(&mut self, block: bool) {
        self.arm_wake();
        // A whole inline send posts no completion, so none would end the sleep for a task that
        // waits on one (a writer past the send bound, a shutdown) while nothing else is coming
        // (say it is not reading): then submit without sleeping; the reap completes the send
        // and wakes the task.
        let block = block
            && !self.inline_pending.iter().any(|&(id, _)| {
                self.socks
                    .get(id.slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| s.gen == id.gen && s.w_waker.is_some())
            });
        let to_submit = self.ring.submission().len() as u32;
        let result = self.enter(to_submit, block as u32);
        match result {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(4 /* EINTR */) | Some(16 /* EBUSY */)) => {}
            Err(e) => {
                tracing::error!("io_uring_enter failed: {e}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // The kernel takes entries in order; those still in the queue were not submitted.
        let submitted = self.pushed - self.ring.submission().len() as u64;
        let n = self.inline_pending.partition_point(|&(_, seq)| seq < submitted);
        self.inline_submitted.extend(self.inline_pending.drain(..n));
    }

    /// Submits `to_submit` entries and waits for `min_complete` completions. Always with
    /// `GETEVENTS`, even when not waiting: it runs the ring's deferred task work (the completions
    /// of receives whose data came in), which only an enter with it runs.
    fn enter(&self, to_submit: u32, min_complete: u32) -> io::Result<()> {
        let flags = io_uring::EnterFlags::GETEVENTS.bits();
        match self.ring_index {
            Some(index) => {
                // SAFETY: no extended argument is passed (null, size 0); `index` is this
                // thread's registration of this ring, made on this thread in `new`.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_io_uring_enter,
                        index,
                        to_submit,
                        min_complete,
                        flags | ENTER_REGISTERED_RING,
                        std::ptr::null::<u8>(),
                        0usize,
                    )
                };
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            }
            // SAFETY: no extended argument is passed.
            None => unsafe { self.ring.submitter().enter::<()>(to_submit, min_complete, flags, None) }.map(drop),
        }
    }

    /// Applies every completion in the queue, then completes the inline sends that posted none
    /// (they went whole); moves the wakers to call (outside the borrow) into `wake`. No
    /// allocation once the buffers have grown to a round's size.
    pub(crate) fn reap(&mut self, wake: &mut Vec<Waker>) {
        let mut done = std::mem::take(&mut self.cqes);
        done.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
        for &(ud, res, flags) in &done {
            let kind = ud >> 62;
            let id = SockId { slot: ((ud >> 32) as u32) & 0x3fff_ffff, gen: ud as u32 };
            match kind {
                KIND_WAKE => {
                    self.wake_armed = false;
                    if res <= 0 {
                        tracing::error!("io thread wake pipe failed: {res}");
                    }
                }
                KIND_CANCEL => {}
                KIND_RECV => self.recv_done(id, res, io_uring::cqueue::sock_nonempty(flags)),
                _ => self.send_done(id, res),
            }
        }
        done.clear();
        self.cqes = done;
        let mut whole = std::mem::take(&mut self.inline_submitted);
        for &(id, seq) in &whole {
            // Still in flight after its completion (if any) was applied: it posted none.
            let Some(s) = self.sock(id) else { continue };
            if s.s_inflight && s.s_inline == Some(seq) {
                let len = (s.sbuf.len() - s.s_off) as i32;
                self.send_done(id, len);
            }
        }
        whole.clear();
        if self.inline_submitted.is_empty() {
            self.inline_submitted = whole;
        }
        wake.append(&mut self.to_wake);
    }

    fn recv_done(&mut self, id: SockId, res: i32, nonempty: bool) {
        let Some(s) = self.sock(id) else { return };
        s.r_inflight = false;
        s.r_drained = res > 0 && !nonempty;
        if s.read_dropped {
            self.release(id);
            return;
        }
        match res {
            0 => s.r_eof = true,
            n if n > 0 => {
                s.r_pos = 0;
                s.r_len = n as usize;
            }
            e => s.r_err = Some(io::Error::from_raw_os_error(-e)),
        }
        if let Some(w) = s.r_waker.take() {
            self.to_wake.push(w);
        }
    }

    fn send_done(&mut self, id: SockId, res: i32) {
        let Some(s) = self.sock(id) else { return };
        s.s_inflight = false;
        let was_inline = s.s_inline.take().is_some();
        if s.halves == 0 {
            self.release(id);
            return;
        }
        if res == -EAGAIN && was_inline {
            // The peer's window is full: send again as an ordinary send, which waits in the
            // kernel for room.
            s.congested = true;
            self.submit_send(id);
            return;
        }
        // A whole send ends congestion: the next may go inline again.
        s.congested = res >= 0 && s.s_off + res as usize != s.sbuf.len();
        if res < 0 {
            s.w_err = Some(io::Error::from_raw_os_error(-res).kind());
            s.pending = Vec::new();
        } else {
            s.s_off += res as usize;
            if res == 0 && s.s_off < s.sbuf.len() {
                s.w_err = Some(io::ErrorKind::WriteZero);
            } else if s.s_off < s.sbuf.len() {
                // A short send: the rest goes before anything written since.
                s.congested = true;
                self.submit_send(id);
                return;
            } else if !s.pending.is_empty() && !s.dirty {
                s.dirty = true;
                self.dirty.push(id);
            }
        }
        let s = self.sock(id).expect("socket checked above");
        if let Some(w) = s.w_waker.take() {
            self.to_wake.push(w);
        }
    }
}

/// A ring for one thread: only that thread submits, and the completion work the kernel defers
/// runs when it next enters the ring (`IORING_SETUP_DEFER_TASKRUN`, Linux 6.1), not in an
/// interrupt of whatever it is doing. Older kernels get cooperative task running (5.19).
fn new_ring(entries: u32) -> io::Result<IoUring> {
    match IoUring::builder().setup_single_issuer().setup_defer_taskrun().build(entries) {
        Ok(r) => Ok(r),
        Err(_) => IoUring::builder().setup_single_issuer().setup_coop_taskrun().build(entries),
    }
}

/// Registers `ring`'s descriptor for the calling thread (`IORING_REGISTER_RING_FDS`, Linux
/// 5.18) and returns its index, which `io_uring_enter` then takes instead of the descriptor.
fn register_ring(ring: &IoUring) -> Option<u32> {
    /// `struct io_uring_rsrc_update`.
    #[repr(C)]
    struct RsrcUpdate {
        offset: u32,
        resv: u32,
        data: u64,
    }
    const REGISTER_RING_FDS: libc::c_long = 20;
    // Any free index; the kernel writes the one it took into `offset`.
    let mut up = RsrcUpdate { offset: u32::MAX, resv: 0, data: ring.as_raw_fd() as u64 };
    // SAFETY: `up` is one valid `io_uring_rsrc_update`, which the kernel reads and writes back
    // during the call only.
    let r = unsafe {
        libc::syscall(libc::SYS_io_uring_register, ring.as_raw_fd(), REGISTER_RING_FDS, &mut up as *mut RsrcUpdate, 1)
    };
    (r == 1).then_some(up.offset)
}

/// Whether this kernel handles inline sends as [`Reactor::wait`] relies on: a send with
/// `MSG_DONTWAIT | MSG_WAITALL` and `IOSQE_CQE_SKIP_SUCCESS` completes during the submit that
/// issues it; posts no completion when it went whole; posts the bytes it moved when it went in
/// part; posts `EAGAIN` when the socket was full. (A kernel that reported `EAGAIN` for a partial
/// send would make us send those bytes twice.) Probed once per process on a socket pair; any
/// failure counts as "no", which costs an io thread a second `io_uring_enter` per send.
pub(crate) fn inline_sends_work() -> bool {
    static PROBED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBED.get_or_init(|| match probe_inline_sends() {
        Ok(true) => true,
        Ok(false) => {
            tracing::info!("io_uring: this kernel does not complete sends inline as needed; ordinary sends");
            false
        }
        Err(e) => {
            tracing::info!("io_uring: inline send probe failed ({e}); ordinary sends");
            false
        }
    })
}

fn probe_inline_sends() -> io::Result<bool> {
    use std::io::Read;
    const LEN: usize = 256 * 1024;
    // Read by the kernel only, and never freed: a send it still held when the ring is dropped
    // (on a kernel that fails the probe) reads memory that stays valid.
    static BUF: std::sync::OnceLock<&'static [u8]> = std::sync::OnceLock::new();
    let buf: &'static [u8] = BUF.get_or_init(|| Box::leak(vec![7u8; LEN].into_boxed_slice()));
    let (tx, mut rx) = std::os::unix::net::UnixStream::pair()?;
    // Small, so LEN bytes cannot go whole.
    socket2::SockRef::from(&tx).set_send_buffer_size(16 * 1024)?;
    rx.set_nonblocking(true)?;
    let mut ring = new_ring(8)?;
    // Submits one inline send of `len` bytes; returns the completion posted during the submit.
    let mut send = |len: usize| -> io::Result<Option<i32>> {
        let e = opcode::Send::new(types::Fd(tx.as_raw_fd()), buf.as_ptr(), len as u32)
            .flags(MSG_NOSIGNAL | MSG_DONTWAIT | MSG_WAITALL)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(1);
        // SAFETY: `buf` is static and only read.
        unsafe { ring.submission().push(&e) }.map_err(|_| io::Error::other("submission queue full"))?;
        ring.submit()?;
        Ok(ring.completion().next().map(|c: io_uring::cqueue::Entry| c.result()))
    };
    // Whole: no completion, and the byte arrived.
    if send(1)?.is_some() {
        return Ok(false);
    }
    let mut got = [0u8; 16];
    if !matches!(rx.read(&mut got), Ok(1)) {
        return Ok(false);
    }
    // In part: the bytes moved, which must be what the peer can read.
    let moved = match send(LEN)? {
        Some(n) if n > 0 && (n as usize) < LEN => n as usize,
        _ => return Ok(false),
    };
    // Full: EAGAIN.
    if send(1)? != Some(-EAGAIN) {
        return Ok(false);
    }
    let mut total = 0;
    let mut sink = vec![0u8; LEN];
    loop {
        match rx.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(total == moved)
}
