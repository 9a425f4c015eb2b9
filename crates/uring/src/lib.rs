//! Warren's io threads: each runs a small executor for connection tasks and sleeps in
//! `io_uring_enter`, the one system call that also submits the round's sends and receives.
//!
//! Why: at a low, steady message rate a broker's CPU per message is mostly system calls and
//! wake-ups. An epoll loop pays `epoll_wait`, `recv` and `send` per message; here one
//! `io_uring_enter` submits the send, re-arms the receive and sleeps until the next message
//! (`tools/relay-floor` measures both floors; see docs/benchmarks.md).
//!
//! - [`start`] spawns an io thread and returns a [`Handle`] that any thread may use to spawn
//!   tasks onto it.
//! - On an io thread, [`spawn_local`] spawns a sibling task and [`TcpStream::split`] turns an
//!   accepted socket into tokio `AsyncRead`/`AsyncWrite` halves served by the ring.
//! - Tasks may use tokio's timers and sync primitives: the thread enters the tokio runtime's
//!   context, whose own thread drives the timers and wakes our tasks through their wakers.
//!
//! Wakers are `Send`: a wake from another thread (a timer, the broker's ticker, another io
//! thread) queues the task on the thread's injector and, if it sleeps, writes one byte into its
//! wake pipe, on which a receive is always in flight.

#![deny(unsafe_code)]

// The only module with `unsafe`: ring entries whose buffers the kernel uses (see its docs).
#[allow(unsafe_code)]
mod reactor;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use reactor::{Reactor, SockId};

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What other threads share with one io thread.
struct Shared {
    injector: Mutex<Vec<Arc<Task>>>,
    /// The thread is (about to be) asleep in the ring: a cross-thread wake must write the pipe.
    sleeping: AtomicBool,
    wake_tx: UnixStream,
}

impl Shared {
    fn inject(&self, task: Arc<Task>) {
        self.injector.lock().push(task);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            // Non-blocking: a full pipe already holds a wake-up.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }
}

struct Task {
    future: Mutex<Option<BoxFuture>>,
    scheduled: AtomicBool,
    aborted: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        schedule(self);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        schedule(self.clone());
    }
}

thread_local! {
    /// Set on io threads only.
    static CURRENT: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
    static RUN_QUEUE: RefCell<VecDeque<Arc<Task>>> = const { RefCell::new(VecDeque::new()) };
    static REACTOR: RefCell<Option<Reactor>> = const { RefCell::new(None) };
}

fn schedule(task: Arc<Task>) {
    if task.scheduled.swap(true, Ordering::AcqRel) {
        return;
    }
    let local = CURRENT.with(|c| c.borrow().as_ref().is_some_and(|s| Arc::ptr_eq(s, &task.shared)));
    if local {
        RUN_QUEUE.with(|q| q.borrow_mut().push_back(task));
    } else {
        let shared = task.shared.clone();
        shared.inject(task);
    }
}

/// True on an io thread (where [`spawn_local`] and [`TcpStream::split`] work).
pub fn on_io_thread() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}

/// Whether io_uring works here (a seccomp filter, as Docker's default one, may forbid it).
pub fn probe() -> io::Result<()> {
    let ring = io_uring::IoUring::new(4)?;
    ring.submit()?;
    let mut p = io_uring::Probe::new();
    ring.submitter().register_probe(&mut p)?;
    for op in [io_uring::opcode::Recv::CODE, io_uring::opcode::Send::CODE, io_uring::opcode::AsyncCancel::CODE] {
        if !p.is_supported(op) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, format!("io_uring lacks opcode {op}")));
        }
    }
    Ok(())
}

/// Spawns tasks onto one io thread from any thread.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F) {
        let task = Arc::new(Task {
            future: Mutex::new(Some(Box::pin(f))),
            scheduled: AtomicBool::new(true),
            aborted: AtomicBool::new(false),
            shared: self.shared.clone(),
        });
        self.shared.inject(task);
    }
}

/// Starts an io thread named `name`; its tasks run inside `tokio`'s context (timers, sync).
pub fn start(name: &str, tokio: tokio::runtime::Handle) -> io::Result<Handle> {
    let (wake_rx, wake_tx) = UnixStream::pair()?;
    wake_tx.set_nonblocking(true)?;
    let shared = Arc::new(Shared { injector: Mutex::new(Vec::new()), sleeping: AtomicBool::new(false), wake_tx });
    let thread_shared = shared.clone();
    // The ring is made on its thread: it is set up for a single issuer, its creator.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        let reactor = match Reactor::new(wake_rx) {
            Ok(r) => r,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let _tokio = tokio.enter();
        CURRENT.with(|c| *c.borrow_mut() = Some(thread_shared.clone()));
        REACTOR.with(|r| *r.borrow_mut() = Some(reactor));
        let _ = ready_tx.send(Ok(()));
        run(&thread_shared);
    })?;
    ready_rx.recv().map_err(|_| io::Error::other("the io thread died starting"))??;
    Ok(Handle { shared })
}

/// Polls at most this many tasks before checking the ring without sleeping, so a busy thread
/// still sees its sockets.
const POLLS_PER_ROUND: usize = 4096;

fn run(shared: &Arc<Shared>) -> ! {
    let mut injected = Vec::new();
    let mut wakers = Vec::new();
    loop {
        std::mem::swap(&mut *shared.injector.lock(), &mut injected);
        if !injected.is_empty() {
            RUN_QUEUE.with(|q| q.borrow_mut().extend(injected.drain(..)));
        }
        let mut polls = 0;
        while polls < POLLS_PER_ROUND {
            let Some(task) = RUN_QUEUE.with(|q| q.borrow_mut().pop_front()) else { break };
            poll_task(task);
            polls += 1;
        }
        let more = RUN_QUEUE.with(|q| !q.borrow().is_empty());
        let block = !more && {
            shared.sleeping.store(true, Ordering::SeqCst);
            // A wake queued before `sleeping` was set wrote no byte: look once more.
            let empty = shared.injector.lock().is_empty();
            if !empty {
                shared.sleeping.store(false, Ordering::SeqCst);
            }
            empty
        };
        with_reactor(|r| {
            r.flush_dirty();
            r.wait(block);
            r.reap(&mut wakers)
        });
        shared.sleeping.store(false, Ordering::SeqCst);
        for w in wakers.drain(..) {
            w.wake();
        }
    }
}

fn poll_task(task: Arc<Task>) {
    task.scheduled.store(false, Ordering::Release);
    let mut slot = task.future.lock();
    if task.aborted.load(Ordering::Acquire) {
        let dropped = slot.take();
        drop(slot);
        drop(dropped);
        return;
    }
    let Some(fut) = slot.as_mut() else { return };
    let waker = Waker::from(task.clone());
    let mut cx = Context::from_waker(&waker);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
        Ok(Poll::Pending) => {}
        Ok(Poll::Ready(())) => {
            let done = slot.take();
            drop(slot);
            drop(done);
        }
        Err(_) => {
            tracing::error!("a task on an io thread panicked; it is dropped");
            let done = slot.take();
            drop(slot);
            drop(done);
        }
    }
}

fn with_reactor<T>(f: impl FnOnce(&mut Reactor) -> T) -> Option<T> {
    REACTOR.try_with(|r| r.try_borrow_mut().ok().and_then(|mut r| r.as_mut().map(f))).ok().flatten()
}

fn not_io_thread() -> io::Error {
    io::Error::other("socket used off its io thread")
}

/// The output of a task spawned with [`spawn_local`].
pub struct JoinHandle<T> {
    state: Arc<Mutex<JoinState<T>>>,
    task: Arc<Task>,
}

struct JoinState<T> {
    out: Option<T>,
    done: bool,
    waker: Option<Waker>,
}

/// Marks the task done when its future completes or is dropped (aborted).
struct Finish<T>(Arc<Mutex<JoinState<T>>>);

impl<T> Drop for Finish<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.0.lock();
            s.done = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> JoinHandle<T> {
    /// Drops the task's future at its next turn (closing what it owns); the handle then yields
    /// None.
    pub fn abort(&self) {
        self.task.aborted.store(true, Ordering::Release);
        schedule(self.task.clone());
    }
}

impl<T> Future for JoinHandle<T> {
    /// None when the task was aborted or panicked.
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.state.lock();
        if s.done {
            return Poll::Ready(s.out.take());
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Spawns a task onto the current io thread. Panics off an io thread.
pub fn spawn_local<F>(f: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let shared = CURRENT.with(|c| c.borrow().clone()).expect("spawn_local off an io thread");
    let state = Arc::new(Mutex::new(JoinState { out: None, done: false, waker: None }));
    let finish = Finish(state.clone());
    let fut = async move {
        let out = f.await;
        finish.0.lock().out = Some(out);
        drop(finish);
    };
    let task = Arc::new(Task {
        future: Mutex::new(Some(Box::pin(fut))),
        scheduled: AtomicBool::new(true),
        aborted: AtomicBool::new(false),
        shared,
    });
    RUN_QUEUE.with(|q| q.borrow_mut().push_back(task.clone()));
    JoinHandle { state, task }
}

/// An accepted TCP socket served by the current io thread's ring.
pub struct TcpStream;

impl TcpStream {
    /// Hands `stream` to the current io thread's ring and returns its two halves.
    pub fn split(stream: std::net::TcpStream) -> io::Result<(ReadHalf, WriteHalf)> {
        let id = with_reactor(|r| r.register(stream)).ok_or_else(not_io_thread)??;
        Ok((ReadHalf { id }, WriteHalf { id }))
    }
}

/// The receiving half: tokio's `AsyncRead`, fed by one receive in flight at a time.
pub struct ReadHalf {
    id: SockId,
}

/// The sending half: tokio's `AsyncWrite`. Writes are buffered (up to 1 MiB) and leave in one
/// send per socket when the thread next enters the ring; `poll_flush` does not wait for them,
/// `poll_shutdown` does.
pub struct WriteHalf {
    id: SockId,
}

impl ReadHalf {
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        with_reactor(|r| r.local_addr(self.id)).ok_or_else(not_io_thread)?
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        with_reactor(|r| r.poll_read(self.id, cx, buf)).unwrap_or_else(|| Poll::Ready(Err(not_io_thread())))
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        with_reactor(|r| r.poll_write(self.id, cx, &[io::IoSlice::new(buf)]))
            .unwrap_or_else(|| Poll::Ready(Err(not_io_thread())))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        with_reactor(|r| r.poll_write(self.id, cx, bufs)).unwrap_or_else(|| Poll::Ready(Err(not_io_thread())))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_reactor(|r| r.poll_shutdown(self.id, cx)).unwrap_or_else(|| Poll::Ready(Err(not_io_thread())))
    }
}

impl Drop for ReadHalf {
    fn drop(&mut self) {
        with_reactor(|r| r.drop_half(self.id, true));
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        with_reactor(|r| r.drop_half(self.id, false));
    }
}

#[cfg(test)]
mod tests;
