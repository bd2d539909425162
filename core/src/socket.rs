//! The outbound-socket vocabulary shared by every machine that asks its adapter for
//! connections ([`ClientSession`](crate::client::ClientSession),
//! `redis::RedisBus`): the machine names each socket with a [`SockId`]
//! and asks for it to be opened or closed with a [`SocketAction`], so that one adapter
//! driver serves them all.
//!
//! The driver's part, for each machine:
//!
//! - [`SocketAction::Connect`]: open a TCP (or TLS) connection to `host:port`, then report
//!   the machine's `handle_connected(sock)` when it is up or `handle_error(sock)` when it
//!   fails;
//! - feed what the socket reads as `handle_read(sock, ..)` and its end as
//!   `handle_eof(sock)` (or `handle_error(sock)`); write what `poll_transmit` yields for it;
//! - [`SocketAction::Close`]: close it, and feed nothing more of it to the machine.
//!
//! A [`SockId`] is unique within the machine that made it; two machines may use the same
//! number, so a driver that serves several keys its sockets by machine as well.
//!
//! [`Outbound`] is that socket half of a machine, as a trait: an adapter's one driver is
//! generic over it. [`OutboundClient`] adds what an application sees of such a machine
//! (its events, its end, its read gate), and [`QueuedClient`] keeps one with the bounded
//! queue of events its application has not taken yet, so that an adapter owns a
//! [`ClientSession`](crate::client::ClientSession) and an
//! [`EventSource`](crate::sse::EventSource) with one piece of code.
//!
//! The driver's bookkeeping is here too, so that each adapter keeps only how it moves bytes
//! (threads, tasks) and how it waits: [`SocketTable`] holds one machine's open sockets with
//! their queued bytes, the bound on them and the read gate, and [`ClientDriver`] holds an
//! application's [`OutboundClient`] with its queue, its sockets, its timer's deadline and
//! its end.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::time::Instant;

mod driver;
mod table;
#[cfg(test)]
mod table_tests;

pub use driver::ClientDriver;
pub use table::{DEFAULT_MAX_QUEUED, Dialer, SocketTable, Turn};

/// A socket a machine asked its adapter to open, named by the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SockId(pub u64);

/// What the adapter must do with a machine's sockets, pulled with the machine's
/// `poll_action`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketAction {
    /// Open a TCP (or TLS) connection to `host:port` for `sock`; report the machine's
    /// `handle_connected` when it is up, or `handle_error` when it fails.
    Connect {
        /// The name of the new socket.
        sock: SockId,
        /// The host to connect to.
        host: String,
        /// The port to connect to.
        port: u16,
    },
    /// Close `sock` and feed nothing more of it to the machine. Bytes already pulled for
    /// it SHOULD be written first (a [`ClientSession`](crate::client::ClientSession)
    /// closes after its last request); a `RedisBus` does not need them.
    Close {
        /// The socket to close.
        sock: SockId,
    },
}

/// A machine over outbound sockets it asks its adapter for: the socket half of its run
/// loop, the same for every such machine, so that an adapter needs one outbound-socket
/// driver for all of them. Each machine keeps its own events (`poll_event`) and commands;
/// implemented by [`ClientSession`](crate::client::ClientSession), `redis::RedisBus` and
/// `server::Server` (its bus's sockets).
///
/// The driver's loop, after each input (a socket connected, read, ended or failed, or the
/// deadline): pull [`poll_action`](Self::poll_action) (open or close sockets) and
/// [`poll_transmit`](Self::poll_transmit) (write to them) until both are empty, then the
/// machine's events, then re-arm the one timer with [`poll_timeout`](Self::poll_timeout).
///
/// Input for a socket the machine closed, or does not know, is ignored.
pub trait Outbound {
    /// `sock` (of a [`SocketAction::Connect`]) is connected.
    fn handle_connected(&mut self, now: Instant, sock: SockId);
    /// `sock` read `data`.
    fn handle_read(&mut self, now: Instant, sock: SockId, data: &[u8]);
    /// `sock`'s peer finished sending.
    fn handle_eof(&mut self, now: Instant, sock: SockId);
    /// `sock` could not connect, or broke (a read or write error).
    fn handle_error(&mut self, now: Instant, sock: SockId);
    /// Fires every deadline `<= now`; spurious calls are no-ops.
    fn handle_timeout(&mut self, now: Instant);
    /// The next socket to open or close. New after any input or command.
    #[must_use]
    fn poll_action(&mut self) -> Option<SocketAction>;
    /// The next bytes to write, and to which socket (in order per socket). New after any
    /// input or command.
    #[must_use]
    fn poll_transmit(&mut self) -> Option<(SockId, Bytes)>;
    /// When [`handle_timeout`](Self::handle_timeout) must run next.
    #[must_use]
    fn poll_timeout(&self) -> Option<Instant>;
}

/// An [`Outbound`] machine that serves an application: besides its sockets, it queues
/// events for the application and ends for good. Implemented by
/// [`ClientSession`](crate::client::ClientSession) and
/// [`EventSource`](crate::sse::EventSource), so that an adapter needs one owner for both:
/// the machine behind its lock, a bounded queue of its events, its one timer, its read
/// gate and its close on drop.
///
/// The owner's part, on top of the [`Outbound`] driver's: pull
/// [`poll_event`](Self::poll_event) after every input and command; read no socket while
/// [`wants_read`](Self::wants_read) is `false` (nor while its own event queue is full);
/// arm its one timer with [`poll_deadline`](Self::poll_deadline); [`close`](Self::close)
/// the machine when the application drops it; stop once it [`is_closed`](Self::is_closed)
/// and its sockets are closed.
pub trait OutboundClient: Outbound {
    /// What the application is told.
    type Event;
    /// The next event for the application, in order. New after any input or command.
    #[must_use]
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// Closes the machine for good: its sockets are closed (a WebSocket after its close
    /// handshake) and its last event says so. Calls after the first are no-ops.
    fn close(&mut self, now: Instant);
    /// Whether the machine is closed for good: no event follows those already queued.
    #[must_use]
    fn is_closed(&self) -> bool;
    /// Whether the owner may read the sockets: `false` while the application leaves too
    /// many of the machine's events unpulled (by default always `true`).
    #[must_use]
    fn wants_read(&self) -> bool {
        true
    }
    /// Reads resume after the owner held them back ([`QueuedClient::pull`] calls it once
    /// per hold, when it ends): a machine whose deadlines measure the peer's silence
    /// restarts them (default: nothing).
    fn handle_resume(&mut self, now: Instant) {
        let _ = now;
    }

    /// When the owner's timer must fire: [`poll_timeout`](Outbound::poll_timeout), except
    /// that while the owner holds socket input back because the application is behind
    /// (`held`: `wants_read` is `false`, or the owner's own event queue is full) the
    /// watchdogs of the peer's silence wait, since the owner causes that silence. By
    /// default `poll_timeout` either way.
    #[must_use]
    fn poll_deadline(&self, held: bool) -> Option<Instant> {
        let _ = held;
        self.poll_timeout()
    }
}

/// An [`OutboundClient`] with the queue of the events its application has not taken yet,
/// bounded by `max_events`: what an adapter keeps behind its lock, so that its read gate,
/// its timer and its end are decided here, alike in every adapter.
///
/// Feed the machine through [`machine_mut`](Self::machine_mut) (and drive its sockets as
/// [`Outbound`] says), then [`pull`](Self::pull) its events; hand them to the application
/// with [`pop`](Self::pop). Read the sockets only while [`wants_read`](Self::wants_read)
/// (the queue has room and the machine takes input), arm the timer with
/// [`poll_timeout`](Self::poll_timeout), and stop once [`is_finished`](Self::is_finished).
pub struct QueuedClient<M: OutboundClient> {
    machine: M,
    events: VecDeque<M::Event>,
    max_events: usize,
    /// Reads were held back at the last [`pull`](Self::pull).
    held: bool,
}

impl<M: OutboundClient> QueuedClient<M> {
    /// `machine` with an empty queue of at most `max_events` (at least 1).
    pub fn new(machine: M, max_events: usize) -> Self {
        Self { machine, events: VecDeque::new(), max_events: max_events.max(1), held: false }
    }

    /// The machine, to read.
    #[must_use]
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The machine, for an input or a command; [`pull`](Self::pull) after it.
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    /// Moves the machine's events into the queue while it has room (step 3 of the run
    /// loop, after every input, command and [`pop`](Self::pop)); when this ends a hold on
    /// reads, the machine hears of it ([`OutboundClient::handle_resume`]).
    pub fn pull(&mut self, now: Instant) {
        while self.events.len() < self.max_events {
            let Some(ev) = self.machine.poll_event() else { break };
            self.events.push_back(ev);
        }
        let held = !self.wants_read();
        if self.held && !held {
            self.machine.handle_resume(now);
        }
        self.held = held;
    }

    /// The application's next event; [`pull`](Self::pull) after it, which makes room for
    /// the machine's next ones.
    #[must_use]
    pub fn pop(&mut self) -> Option<M::Event> {
        self.events.pop_front()
    }

    /// Events waiting for the application.
    #[must_use]
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event waits for the application.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Whether the sockets may be read: the queue has room and the machine
    /// [`wants_read`](OutboundClient::wants_read).
    #[must_use]
    pub fn wants_read(&self) -> bool {
        self.events.len() < self.max_events && self.machine.wants_read()
    }

    /// When the timer must fire: the machine's
    /// [`poll_deadline`](OutboundClient::poll_deadline), held while reads are.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.machine.poll_deadline(!self.wants_read())
    }

    /// Whether the machine is closed and the application took its last event.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.events.is_empty() && self.machine.is_closed()
    }
}

/// Implements [`Outbound`] for a machine whose inherent methods of the same names and
/// signatures are its socket half (the client session, the Redis bus).
macro_rules! outbound_by_inherent {
    ($machine:ty) => {
        impl $crate::socket::Outbound for $machine {
            fn handle_connected(&mut self, now: $crate::Instant, sock: $crate::socket::SockId) {
                <$machine>::handle_connected(self, now, sock);
            }
            fn handle_read(
                &mut self,
                now: $crate::Instant,
                sock: $crate::socket::SockId,
                data: &[u8],
            ) {
                <$machine>::handle_read(self, now, sock, data);
            }
            fn handle_eof(&mut self, now: $crate::Instant, sock: $crate::socket::SockId) {
                <$machine>::handle_eof(self, now, sock);
            }
            fn handle_error(&mut self, now: $crate::Instant, sock: $crate::socket::SockId) {
                <$machine>::handle_error(self, now, sock);
            }
            fn handle_timeout(&mut self, now: $crate::Instant) {
                <$machine>::handle_timeout(self, now);
            }
            fn poll_action(&mut self) -> Option<$crate::socket::SocketAction> {
                <$machine>::poll_action(self)
            }
            fn poll_transmit(&mut self) -> Option<($crate::socket::SockId, bytes::Bytes)> {
                <$machine>::poll_transmit(self)
            }
            fn poll_timeout(&self) -> Option<$crate::Instant> {
                <$machine>::poll_timeout(self)
            }
        }
    };
}
pub(crate) use outbound_by_inherent;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::{EventSource, EventSourceConfig, SseClientEvent};

    /// A bounded queue in front of an open `EventSource`: full, it refuses reads and holds
    /// the idle watchdog; a `pop` makes room and refills; closed and taken, it is finished.
    #[test]
    fn a_queued_client_bounds_its_events_and_holds_reads_while_full() {
        let now = crate::time::test_epoch();
        let es = EventSource::new(EventSourceConfig::new("example.org", 80, "/"), now, 0);
        let mut q = QueuedClient::new(es.unwrap(), 3);
        let Some(SocketAction::Connect { sock, .. }) = q.machine_mut().poll_action() else {
            panic!("no Connect");
        };
        let m = q.machine_mut();
        m.handle_connected(now, sock);
        m.handle_read(now, sock, b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
        m.handle_read(now, sock, b"data: 1\n\ndata: 2\n\ndata: 3\n\n");
        q.pull(now);
        // Connecting, Open, then the first event: full.
        assert_eq!(q.len(), 3);
        assert!(!q.wants_read());
        assert_eq!(q.poll_timeout(), None);
        // The application comes back after longer than the idle watchdog.
        let idle = q.machine().client().config().idle_timeout.expect("a watchdog");
        let later = now + idle * 2;
        for _ in 0..2 {
            assert!(matches!(q.pop(), Some(SseClientEvent::State(_))));
            q.pull(later);
            assert_eq!(q.len(), 3);
            assert!(!q.wants_read());
        }
        assert!(matches!(q.pop(), Some(SseClientEvent::Event(e)) if e.data == "1"));
        q.pull(later);
        assert!(q.wants_read() && q.len() == 2);
        // The hold ended: the watchdog starts over rather than firing for the silence
        // the application caused.
        assert_eq!(q.poll_timeout(), Some(later + idle));
        assert_eq!(q.poll_timeout(), q.machine().poll_timeout());
        q.machine_mut().close(later);
        q.pull(later);
        assert!(!q.is_finished());
        while q.pop().is_some() {
            q.pull(later);
        }
        assert!(q.is_finished() && q.is_empty());
    }
}
