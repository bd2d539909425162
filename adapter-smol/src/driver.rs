//! The driver task of an application WebSocket: the run loop of the crate docs ("How an
//! application WebSocket is driven") over a non-blocking socket.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, Bytes};
use event_listener::Event as Notify;
use smol::future;
use smol::{Async, Executor, Timer};
use tidewire::ws::app::Pass;

use crate::conn::Shared;
use crate::server::Registration;

/// Chunks written in one vectored write at most.
pub(crate) const MAX_SLICES: usize = 64;
/// Bytes pulled from the core into one write batch at most (the rest stays in the core's
/// bounded outbox, where it counts against `max_outbound`).
pub(crate) const BATCH_BYTES: usize = 256 << 10;
/// Passes of the loop that made progress without waiting, after which the driver yields to
/// the executor once (fairness between connections on one thread).
const BUDGET: u32 = 32;
/// Waits for readability that register at once after a deferred read found nothing (see
/// `Driver::run`), before the driver tries deferring again.
const DEFER_COOLDOWN: u32 = 8;

thread_local! {
    /// The thread's read buffer: a driver reads into it and hands the bytes to its machine
    /// before it waits again, so a waiting connection holds no read buffer (issue 17).
    static READ_BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// One read of `sock` (at most `max` bytes) into the thread's read buffer; `f` gets what
/// arrived (it is not called for 0 bytes or an error).
pub(crate) fn read_shared(
    sock: &TcpStream,
    max: usize,
    f: impl FnOnce(&[u8]),
) -> io::Result<usize> {
    // Taken out while in use (during the thread's teardown: a one-off buffer).
    let mut buf = READ_BUF.try_with(Cell::take).unwrap_or_default();
    if buf.len() < max {
        buf.resize(max, 0);
    }
    let read = (&mut &*sock).read(&mut buf[..max]);
    if let Ok(n) = read
        && n > 0
    {
        f(&buf[..n]);
    }
    let _ = READ_BUF.try_with(|cell| cell.set(buf));
    read
}

/// Spawns `task` on `executor`, or on smol's global executor when there is none.
pub(crate) fn spawn_on<F>(executor: Option<&Arc<Executor<'static>>>, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match executor {
        Some(ex) => ex.spawn(task).detach(),
        None => smol::spawn(task).detach(),
    }
}

/// A timer task's loop: on every wake-up (a notification of `wake`, or the deadline) `step`
/// runs with the time and returns the next deadline, or `None` to end the task. The timer
/// is re-armed only when the deadline changes.
pub(crate) async fn run_timer(
    wake: &Notify,
    mut step: impl FnMut(Instant) -> Option<Option<Instant>>,
) {
    let mut timer = Timer::never();
    let mut armed: Option<Instant> = None;
    loop {
        let listener = wake.listen();
        let now = Instant::now();
        let Some(deadline) = step(now) else { return };
        if deadline.is_some_and(|d| d <= now) {
            continue;
        }
        if deadline != armed {
            match deadline {
                Some(d) => timer.set_at(d),
                None => timer = Timer::never(),
            }
            armed = deadline;
        }
        future::or(
            async {
                (&mut timer).await;
            },
            listener,
        )
        .await;
        if armed.is_some_and(|d| d <= Instant::now()) {
            armed = None;
        }
    }
}

/// Everything a driver task owns.
pub(crate) struct Driver {
    pub(crate) stream: Arc<Async<TcpStream>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) read_buffer: usize,
    /// Server connections: deregisters when the task ends.
    pub(crate) registration: Option<Registration>,
    /// Where the task runs (`None`: smol's global executor).
    pub(crate) executor: Option<Arc<Executor<'static>>>,
}

/// Runs when the driver ends, however it ends (even when its executor drops the task): the
/// socket is shut down, then the application learns that the connection is over.
struct Finish {
    stream: Arc<Async<TcpStream>>,
    shared: Arc<Shared>,
    registration: Option<Registration>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let _ = self.stream.get_ref().shutdown(Shutdown::Both);
        let mut sock = self.shared.lock();
        sock.finish(Instant::now());
        // Wakes everyone still waiting on this connection: it is over.
        self.shared.wake_up(&mut sock);
        drop(sock);
        // The driver's waker keeps its task's memory: not past the task.
        self.shared.wake.forget();
        drop(self.registration.take());
    }
}

/// What woke a waiting driver.
#[derive(Default)]
struct Woke {
    readable: bool,
    writable: bool,
    timer: bool,
}

impl Driver {
    /// Spawns the driver on its executor.
    pub(crate) fn spawn(mut self) {
        let executor = self.executor.take();
        spawn_on(executor.as_ref(), self.run());
    }

    #[allow(clippy::too_many_lines)] // one run loop, kept in one place
    async fn run(self) {
        let Driver { stream, shared, read_buffer, registration, .. } = self;
        let finish = Finish { stream, shared, registration };
        let stream = &*finish.stream;
        let sock = stream.get_ref();
        let shared = &*finish.shared;
        let max_read = read_buffer.max(1);
        let mut wbuf: VecDeque<Bytes> = VecDeque::new();
        let mut timer = Timer::never();
        let mut armed: Option<Instant> = None;
        let mut eof = false;
        // Whether a read / write may progress without waiting (no `WouldBlock` since the
        // last readiness).
        let mut can_read = true;
        let mut can_write = true;
        // Kept across passes: registered once, dropped only when they fired.
        let mut readable = None;
        let mut writable = None;
        let mut budget = BUDGET;
        // Before registering for readability, the driver yields once and reads again: under
        // load the peer's next message has often arrived meanwhile, which saves the
        // registration (a system call) and a trip through the reactor. When that read finds
        // nothing, the next few waits register at once.
        let mut retry_pending = false;
        let mut cooldown = 0u32;

        loop {
            let now = Instant::now();
            let pass = {
                let mut guard = shared.lock();
                let pass = guard.poll_pass(now, &mut wbuf, BATCH_BYTES, MAX_SLICES);
                shared.wake_up(&mut guard);
                // What rang before this pass is handled by it; a command after it (under
                // the lock) rings again.
                shared.wake.reset();
                pass
            };
            let (read_ok, deadline) = match pass {
                Pass::Run { read, deadline, shutdown } => {
                    if shutdown && wbuf.is_empty() {
                        break;
                    }
                    (read && !eof, deadline)
                }
                Pass::FlushAndStop => {
                    // Failed: one non-blocking attempt to get the close frame out, then down.
                    flush_now(sock, &mut wbuf);
                    break;
                }
                _ => break,
            };
            if deadline.is_some_and(|d| d <= now) {
                continue;
            }

            // Write what the socket takes now.
            let mut progressed = false;
            let mut write_failed = false;
            while can_write && !wbuf.is_empty() {
                match write_batch(sock, &wbuf) {
                    Ok(n) if n > 0 => {
                        consume(&mut wbuf, n);
                        progressed = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => can_write = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    _ => {
                        // The transport failed: nothing more can be written.
                        wbuf.clear();
                        let mut guard = shared.lock();
                        guard.handle_write_error(Instant::now());
                        shared.wake_up(&mut guard);
                        write_failed = true;
                    }
                }
            }
            if write_failed {
                continue;
            }

            // One read, when the application has room for what it brings.
            let mut delivered = false;
            let mut retry_failed = false;
            if !read_ok {
                // Paused: a readiness registered meanwhile is dropped; try again on resume.
                readable = None;
                can_read = true;
            } else if can_read {
                let is_retry = std::mem::take(&mut retry_pending);
                let read = read_shared(sock, max_read, |data| {
                    let mut guard = shared.lock();
                    guard.handle_read(Instant::now(), data);
                    delivered = shared.wake_up(&mut guard);
                });
                match read {
                    Ok(n) if n > 0 => {
                        // A short read emptied the receive queue: wait for readiness next.
                        can_read = n == max_read;
                        progressed = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        can_read = false;
                        if is_retry {
                            // Register now, and at once for the next few waits.
                            retry_failed = true;
                            cooldown = DEFER_COOLDOWN;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    _ => {
                        eof = true;
                        let mut guard = shared.lock();
                        guard.handle_eof(Instant::now());
                        shared.wake_up(&mut guard);
                        progressed = true;
                    }
                }
            }

            if progressed {
                budget -= 1;
                if delivered || budget == 0 {
                    // A receiver was woken: let it (on this thread, too) take what arrived and
                    // queue its answer, which is then written in the next pass.
                    budget = BUDGET;
                    future::yield_now().await;
                }
                continue;
            }
            budget = BUDGET;

            // Nothing more to do without waiting. A later deadline is picked up when the
            // earlier one fires, so the timer is re-armed only when the deadline moves earlier.
            if let Some(d) = deadline
                && armed.is_none_or(|a| d < a)
            {
                timer.set_at(d);
                armed = Some(d);
            }
            let want_write = !can_write && !wbuf.is_empty();
            let want_read = read_ok && !can_read;
            if want_read && readable.is_none() && !retry_failed {
                if cooldown == 0 {
                    retry_pending = true;
                    can_read = true;
                    future::yield_now().await;
                    continue;
                }
                cooldown -= 1;
            }
            if want_write && writable.is_none() {
                writable = Some(stream.writable());
            }
            if want_read && readable.is_none() {
                readable = Some(stream.readable());
            }
            let woke = future::poll_fn(|cx| {
                let mut woke = Woke::default();
                let mut any = false;
                if want_write
                    && let Some(w) = writable.as_mut()
                    && Pin::new(w).poll(cx).is_ready()
                {
                    woke.writable = true;
                    any = true;
                }
                if want_read
                    && let Some(r) = readable.as_mut()
                    && Pin::new(r).poll(cx).is_ready()
                {
                    woke.readable = true;
                    any = true;
                }
                if armed.is_some() && Pin::new(&mut timer).poll(cx).is_ready() {
                    woke.timer = true;
                    any = true;
                }
                if shared.wake.poll(cx).is_ready() {
                    any = true;
                }
                if any { Poll::Ready(woke) } else { Poll::Pending }
            })
            .await;
            // A readiness error shows up again on the next read or write.
            if woke.writable {
                writable = None;
                can_write = true;
            }
            if woke.readable {
                readable = None;
                can_read = true;
            }
            if woke.timer {
                armed = None;
            }
        }
        drop(readable);
        drop(writable);
        drop(finish);
    }
}

/// One vectored write of the queued chunks.
pub(crate) fn write_batch(s: &TcpStream, wbuf: &VecDeque<Bytes>) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    let mut n = 0;
    for (slot, chunk) in slices.iter_mut().zip(wbuf) {
        *slot = IoSlice::new(chunk);
        n += 1;
    }
    (&mut &*s).write_vectored(&slices[..n])
}

/// Drops the first `n` written bytes from the queue.
pub(crate) fn consume(wbuf: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = wbuf.front_mut() else { return };
        if front.len() <= n {
            n -= front.len();
            wbuf.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}

/// Writes what the non-blocking socket takes right now, without waiting.
pub(crate) fn flush_now(s: &TcpStream, wbuf: &mut VecDeque<Bytes>) {
    while !wbuf.is_empty() {
        match write_batch(s, wbuf) {
            Ok(n) if n > 0 => consume(wbuf, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => return,
        }
    }
}
