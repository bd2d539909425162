//! The driver task: one per connection, it owns the socket and runs the core's run loop
//! (read → one mutation → drain events and transmits → re-arm the one timer).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use smol::future;
use smol::{Async, Timer};
use tidewire::ws::WsState;
use tidewire::{Machine, Transmit};

use crate::conn::Shared;
use crate::server::Registration;

/// Chunks written in one vectored write at most.
pub(crate) const MAX_SLICES: usize = 64;
/// Bytes pulled from the core into one write batch at most (the rest stays in the core's
/// bounded outbox, where it counts against `max_outbound`).
pub(crate) const BATCH_BYTES: usize = 256 << 10;

/// Everything a driver task owns.
pub(crate) struct Driver {
    pub(crate) stream: Arc<Async<TcpStream>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) read_buffer: usize,
    /// How long a closed connection may still spend flushing before the socket is shut down.
    pub(crate) close_timeout: Duration,
    /// Server connections: deregisters when the task ends.
    pub(crate) registration: Option<Registration>,
}

enum Wake {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Timer,
    Notified,
}

impl Driver {
    /// Spawns the driver on smol's global executor.
    pub(crate) fn spawn(self) {
        smol::spawn(self.run()).detach();
    }

    async fn run(self) {
        let stream = &*self.stream;
        let shared = &*self.shared;
        let mut rbuf = vec![0u8; self.read_buffer.max(1)];
        let mut wbuf: VecDeque<Bytes> = VecDeque::new();
        let mut wbuf_bytes = 0usize;
        let mut timer = Timer::never();
        let mut armed: Option<Instant> = None;
        let mut eof = false;
        let mut write_failed = false;
        let mut shutdown_pulled = false;
        let mut linger: Option<Instant> = None;

        loop {
            let now = Instant::now();
            let (listener, read_ok, deadline, unclean, closed) = {
                let mut inner = shared.lock();
                let state = inner.conn.state();
                if inner.killed
                    || (inner.aborted && matches!(state, WsState::Connecting | WsState::Open))
                {
                    inner.conn.handle_eof(now);
                    shared.absorb_events(&mut inner);
                    drop(inner);
                    break;
                }
                if inner.conn.poll_timeout().is_some_and(|d| d <= now) {
                    inner.conn.handle_timeout(now);
                }
                shared.absorb_events(&mut inner);
                let closed = inner.conn.state() == WsState::Closed;
                let unclean = closed && inner.closed.as_ref().is_some_and(|c| !c.clean);
                // Pull a batch (everything, when failing: it is bounded by `max_outbound`).
                let mut pulled = false;
                while !shutdown_pulled
                    && (unclean || (wbuf_bytes < BATCH_BYTES && wbuf.len() < MAX_SLICES))
                {
                    match inner.conn.poll_transmit() {
                        Some(Transmit::Bytes(b)) => {
                            pulled = true;
                            if !write_failed && !b.is_empty() {
                                wbuf_bytes += b.len();
                                wbuf.push_back(b);
                            }
                        }
                        Some(Transmit::Shutdown) => shutdown_pulled = true,
                        Some(_) => {}
                        None => break,
                    }
                }
                if pulled {
                    shared.room.notify(usize::MAX);
                }
                let read_ok = !eof && (closed || !inner.inbound_full());
                inner.read_paused = !eof && !read_ok;
                let listener = shared.wake.listen();
                (listener, read_ok, inner.conn.poll_timeout(), unclean, closed)
            };

            if unclean {
                // Failed: one non-blocking attempt to get the close frame out, then down.
                flush_now(stream.get_ref(), &mut wbuf);
                break;
            }
            if shutdown_pulled && wbuf.is_empty() {
                break;
            }
            if closed && linger.is_none() {
                linger = Some(now + self.close_timeout);
            }
            if linger.is_some_and(|l| l <= now) {
                break;
            }
            let deadline = match (deadline, linger) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
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

            let wake = {
                let write = async {
                    if wbuf.is_empty() {
                        future::pending().await
                    } else {
                        Wake::Wrote(stream.write_with(|s| write_batch(s, &wbuf)).await)
                    }
                };
                let read = async {
                    if read_ok {
                        Wake::Read(stream.read_with(|s| (&mut &*s).read(&mut rbuf)).await)
                    } else {
                        future::pending().await
                    }
                };
                let fire = async {
                    (&mut timer).await;
                    Wake::Timer
                };
                let notified = async {
                    listener.await;
                    Wake::Notified
                };
                future::or(write, future::or(read, future::or(fire, notified))).await
            };

            match wake {
                Wake::Wrote(Ok(n)) if n > 0 => {
                    wbuf_bytes -= n;
                    consume(&mut wbuf, n);
                }
                Wake::Wrote(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Wake::Wrote(_) => {
                    // The transport failed: nothing more can be written.
                    write_failed = true;
                    wbuf.clear();
                    wbuf_bytes = 0;
                    let mut inner = shared.lock();
                    inner.conn.handle_eof(Instant::now());
                }
                Wake::Read(Ok(n)) if n > 0 => {
                    let mut inner = shared.lock();
                    inner.conn.handle_read(Instant::now(), &rbuf[..n]);
                }
                Wake::Read(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Wake::Read(_) => {
                    eof = true;
                    let mut inner = shared.lock();
                    inner.conn.handle_eof(Instant::now());
                }
                Wake::Timer => armed = None,
                Wake::Notified => {}
            }
        }

        let _ = stream.get_ref().shutdown(Shutdown::Both);
        // Wake everyone still waiting on this connection: it is over.
        shared.inbound.notify(usize::MAX);
        shared.room.notify(usize::MAX);
        drop(self.registration);
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
