//! [`SocketTable`]: the bookkeeping of one machine's outbound sockets that every adapter
//! driver needs, whatever moves its bytes (threads, tasks): which sockets are open, the
//! bytes queued for each, which the machine closed, the bound on queued bytes, and whether
//! the owner takes socket input.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::{Outbound, SockId, SocketAction};
use crate::time::Instant;

/// Bytes queued for one machine's sockets by default before [`SocketTable::drain`] stops
/// pulling its transmits: the machine keeps the rest until a socket's pump takes some.
pub const DEFAULT_MAX_QUEUED: usize = 1 << 20;

/// What an adapter does for a [`SocketTable`]: start the pump of a new socket, and ring
/// one. Each socket carries a [`Wake`](Self::Wake) of the adapter's (a waker, a condition
/// variable), made when the socket is opened.
pub trait Dialer {
    /// The adapter's wake-up of one socket's pump.
    type Wake: Default;
    /// Starts the pump of `sock`, which connects to `host:port` ([`SocketAction::Connect`])
    /// and is rung through `wake`. `false` when it could not start: the machine then hears
    /// `handle_error(sock)`.
    fn dial(&self, sock: SockId, host: String, port: u16, wake: &Self::Wake) -> bool;
    /// Rings the pump of a socket: bytes were queued for it, the machine closed it, or the
    /// owner takes input again.
    fn wake(&self, wake: &Self::Wake);
}

/// What a socket's pump may do now, as [`SocketTable::take`] and [`SocketTable::turn`] say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Turn {
    /// The socket may be read: the machine did not close it and the owner takes input.
    pub read: bool,
    /// The machine closed the socket: write what was taken, then shut it down and
    /// [`remove`](SocketTable::remove) it.
    pub closing: bool,
}

/// One open socket.
#[derive(Debug)]
struct Entry<W> {
    /// Bytes for the socket, not yet taken by its pump.
    out: VecDeque<Bytes>,
    /// The machine closed it: its pump writes `out`, then shuts it down.
    closing: bool,
    /// A ring is due at the next [`SocketTable::drain`].
    rung: bool,
    wake: W,
}

/// The outbound sockets of one [`Outbound`] machine, kept beside it under its owner's lock:
/// for each, the bytes queued for it and whether the machine closed it. Sans-IO: the
/// adapter's pumps move the bytes; this decides what they move and when they stop.
///
/// After every input or command of the machine, [`drain`](Self::drain): it moves the
/// machine's transmits into the sockets' queues (at most `max_queued` bytes in all: past
/// that the machine keeps them, backpressure), opens and closes sockets as the machine
/// asks, and rings the pumps that have work. A pump [`take`](Self::take)s its socket's bytes
/// and learns whether to read and whether to shut down; it feeds the machine only while
/// the socket [`is_open`](Self::is_open), and ends with [`remove`](Self::remove) (or
/// [`fail`](Self::fail) on an error). A socket stays in the table until then, closed or
/// not, so that an owner knows when its last bytes are written.
#[derive(Debug)]
pub struct SocketTable<W> {
    open: BTreeMap<SockId, Entry<W>>,
    /// Bytes in every socket's `out`.
    queued: usize,
    max_queued: usize,
    /// The owner takes socket input (see [`set_room`](Self::set_room)).
    room: bool,
}

impl<W: Default> Default for SocketTable<W> {
    /// An empty table bounded by [`DEFAULT_MAX_QUEUED`].
    fn default() -> Self {
        Self::new(DEFAULT_MAX_QUEUED)
    }
}

impl<W: Default> SocketTable<W> {
    /// An empty table that stops pulling transmits at `max_queued` queued bytes (at least 1).
    #[must_use]
    pub fn new(max_queued: usize) -> Self {
        let max_queued = max_queued.max(1);
        Self { open: BTreeMap::new(), queued: 0, max_queued, room: true }
    }

    /// Moves the machine's transmits to the sockets' queues while under the bound and runs
    /// its actions (a `Connect` opens a socket through `d`; a `Close` marks it closing),
    /// until the machine has neither; then rings the pumps that have work. After every
    /// input or command of the machine. Bytes for a socket not in the table are dropped.
    pub fn drain<M, D>(&mut self, m: &mut M, now: Instant, d: &D)
    where
        M: Outbound + ?Sized,
        D: Dialer<Wake = W> + ?Sized,
    {
        let mut progress = true;
        while progress {
            progress = false;
            while self.queued < self.max_queued {
                let Some((sock, bytes)) = m.poll_transmit() else { break };
                progress = true;
                if let Some(s) = self.open.get_mut(&sock) {
                    self.queued += bytes.len();
                    s.out.push_back(bytes);
                    s.rung = true;
                }
            }
            while let Some(action) = m.poll_action() {
                progress = true;
                self.act(m, now, d, action);
            }
        }
        self.ring(d);
    }

    /// Runs one of the machine's actions.
    fn act<M, D>(&mut self, m: &mut M, now: Instant, d: &D, action: SocketAction)
    where
        M: Outbound + ?Sized,
        D: Dialer<Wake = W> + ?Sized,
    {
        match action {
            SocketAction::Connect { sock, host, port } => {
                let entry =
                    Entry { out: VecDeque::new(), closing: false, rung: false, wake: W::default() };
                let wake = &self.open.entry(sock).or_insert(entry).wake;
                if !d.dial(sock, host, port, wake) {
                    self.fail(m, now, sock);
                }
            }
            SocketAction::Close { sock } => {
                if let Some(s) = self.open.get_mut(&sock) {
                    s.closing = true;
                    s.rung = true;
                }
            }
        }
    }

    /// Rings every pump a ring is due for.
    pub(super) fn ring<D: Dialer<Wake = W> + ?Sized>(&mut self, d: &D) {
        for s in self.open.values_mut().filter(|s| s.rung) {
            s.rung = false;
            d.wake(&s.wake);
        }
    }

    /// Whether the owner takes socket input (by default it does). While it does not, no
    /// socket may be read ([`Turn::read`]); when it does again, every pump is rung at the
    /// next [`drain`](Self::drain).
    pub fn set_room(&mut self, room: bool) {
        if room && !self.room {
            self.open.values_mut().for_each(|s| s.rung = true);
        }
        self.room = room;
    }

    /// Whether input of `sock` goes to the machine: it is in the table, not closing.
    #[must_use]
    pub fn is_open(&self, sock: SockId) -> bool {
        self.open.get(&sock).is_some_and(|s| !s.closing)
    }

    /// Feeds an input of `sock` to the machine (`f`) if it [`is_open`](Self::is_open);
    /// whether it was.
    pub fn feed<M: ?Sized>(
        &self,
        m: &mut M,
        now: Instant,
        sock: SockId,
        f: impl FnOnce(&mut M, Instant, SockId),
    ) -> bool {
        let open = self.is_open(sock);
        if open {
            f(m, now, sock);
        }
        open
    }

    /// What `sock`'s pump may do now; `None` once it is no longer in the table (its pump
    /// ends).
    #[must_use]
    pub fn turn(&self, sock: SockId) -> Option<Turn> {
        let s = self.open.get(&sock)?;
        Some(Turn { read: self.room && !s.closing, closing: s.closing })
    }

    /// Hands `sock`'s queued bytes to its pump, into `out`, but only once `out` is empty:
    /// the pump takes again when the socket took its last batch, so that a slow peer
    /// leaves the bytes queued here, counted against the bound. Then [`turn`](Self::turn).
    /// [`drain`](Self::drain) after it: the bound may have stopped the last one.
    pub fn take(&mut self, sock: SockId, out: &mut VecDeque<Bytes>) -> Option<Turn> {
        let s = self.open.get_mut(&sock)?;
        if out.is_empty() {
            self.queued -= s.out.iter().map(Bytes::len).sum::<usize>();
            out.append(&mut s.out);
        }
        self.turn(sock)
    }

    /// Forgets `sock` (its pump ended) and the bytes still queued for it; `false` if it was
    /// not in the table.
    pub fn remove(&mut self, sock: SockId) -> bool {
        let Some(s) = self.open.remove(&sock) else { return false };
        self.queued -= s.out.iter().map(Bytes::len).sum::<usize>();
        true
    }

    /// `sock` could not connect or broke: it is [`remove`](Self::remove)d, and the machine
    /// hears `handle_error` unless it had closed the socket.
    pub fn fail<M: Outbound + ?Sized>(&mut self, m: &mut M, now: Instant, sock: SockId) {
        let open = self.is_open(sock);
        if self.remove(sock) && open {
            m.handle_error(now, sock);
        }
    }

    /// Closes every socket, as if the machine had (the owner goes away): each pump writes
    /// what is queued, then shuts its socket down. Rung at the next [`drain`](Self::drain).
    pub fn close_all(&mut self) {
        for s in self.open.values_mut() {
            s.closing = true;
            s.rung = true;
        }
    }

    /// Whether no socket is left.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Sockets in the table.
    #[must_use]
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Bytes queued for the pumps, not yet taken.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.queued
    }
}
