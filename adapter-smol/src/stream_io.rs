//! The socket half of a server's long response (an SSE stream of [`Channels`] or of a
//! [`HubHandle`]): a write queue the response's machine fills, a watch on the read side for
//! the client going away, the one timer, and the wake-ups. The response's own loop decides
//! what to queue and when to stop; [`StreamIo::wait`] does the waiting.
//!
//! [`Channels`]: crate::Channels
//! [`HubHandle`]: crate::HubHandle

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Read as _};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use smol::{Async, Timer, future};

use crate::driver::{consume, flush_now, write_batch};

/// Read buffer of the end-of-file watch.
const WATCH_READ: usize = 256;

/// What woke [`StreamIo::wait`] that the response's machine must hear of.
pub(crate) enum Woke<'a> {
    /// The client sent bytes (a response's machine only watches them).
    Read(&'a [u8]),
    /// The client is gone: end of file, or a write failed (what was queued is dropped).
    Gone,
    /// Bytes went out, the deadline passed, or a notification came.
    Other,
}

/// A response's socket, its write queue, its timer.
pub(crate) struct StreamIo {
    stream: Arc<Async<TcpStream>>,
    rbuf: [u8; WATCH_READ],
    wbuf: VecDeque<Bytes>,
    wbuf_bytes: usize,
    timer: Timer,
    armed: Option<Instant>,
    eof: bool,
    write_failed: bool,
}

enum Wake {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Timer,
    Notified,
}

impl StreamIo {
    pub(crate) fn new(stream: Arc<Async<TcpStream>>) -> Self {
        Self {
            stream,
            rbuf: [0; WATCH_READ],
            wbuf: VecDeque::new(),
            wbuf_bytes: 0,
            timer: Timer::never(),
            armed: None,
            eof: false,
            write_failed: false,
        }
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.wbuf_bytes
    }

    /// Chunks queued (one vectored write takes a bounded number).
    pub(crate) fn chunks(&self) -> usize {
        self.wbuf.len()
    }

    /// Whether everything queued went out.
    pub(crate) fn is_flushed(&self) -> bool {
        self.wbuf.is_empty()
    }

    /// Queues `bytes` (dropped once a write failed: nobody reads them).
    pub(crate) fn push(&mut self, bytes: Bytes) {
        if !self.write_failed && !bytes.is_empty() {
            self.wbuf_bytes += bytes.len();
            self.wbuf.push_back(bytes);
        }
    }

    /// Writes what the socket takes right now, without waiting.
    pub(crate) fn flush_now(&mut self) {
        flush_now(self.stream.get_ref(), &mut self.wbuf);
    }

    /// Waits for the first of: queued bytes written, bytes (or the end) from the client,
    /// `deadline`, `notified`.
    pub(crate) async fn wait(
        &mut self,
        deadline: Option<Instant>,
        notified: impl Future<Output = ()>,
    ) -> Woke<'_> {
        if deadline != self.armed {
            match deadline {
                Some(d) => self.timer.set_at(d),
                None => self.timer = Timer::never(),
            }
            self.armed = deadline;
        }
        let wake = {
            let (stream, wbuf, rbuf, eof) = (&self.stream, &self.wbuf, &mut self.rbuf, self.eof);
            let write = async {
                if wbuf.is_empty() {
                    future::pending().await
                } else {
                    Wake::Wrote(stream.write_with(|s| write_batch(s, wbuf)).await)
                }
            };
            let read = async {
                if eof {
                    future::pending().await
                } else {
                    Wake::Read(stream.read_with(|s| (&mut &*s).read(rbuf)).await)
                }
            };
            let timer = &mut self.timer;
            let fire = async {
                timer.await;
                Wake::Timer
            };
            let notified = async {
                notified.await;
                Wake::Notified
            };
            future::or(write, future::or(read, future::or(fire, notified))).await
        };
        match wake {
            Wake::Wrote(Ok(n)) if n > 0 => {
                self.wbuf_bytes -= n;
                consume(&mut self.wbuf, n);
                Woke::Other
            }
            Wake::Wrote(Err(e)) if e.kind() == io::ErrorKind::Interrupted => Woke::Other,
            Wake::Wrote(_) => {
                self.write_failed = true;
                self.wbuf.clear();
                self.wbuf_bytes = 0;
                Woke::Gone
            }
            Wake::Read(Ok(n)) if n > 0 => Woke::Read(&self.rbuf[..n]),
            Wake::Read(Err(e)) if e.kind() == io::ErrorKind::Interrupted => Woke::Other,
            Wake::Read(_) => {
                self.eof = true;
                Woke::Gone
            }
            Wake::Timer => {
                self.armed = None;
                Woke::Other
            }
            Wake::Notified => Woke::Other,
        }
    }

    /// Closes both directions of the socket.
    pub(crate) fn shutdown(&self) {
        let _ = self.stream.get_ref().shutdown(Shutdown::Both);
    }
}
