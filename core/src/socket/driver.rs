//! [`ClientDriver`]: what an adapter keeps behind its lock for an application's
//! [`OutboundClient`], so that the adapter's own part is its lock, its notifications and
//! its threads or tasks.

use super::{Dialer, OutboundClient, QueuedClient, SocketTable};
use crate::time::Instant;

/// An [`OutboundClient`] with its [`QueuedClient`] event queue, its [`SocketTable`], the
/// deadline its owner's timer waits for, and its end: the whole policy of an adapter's
/// client owner, sans-IO.
///
/// The owner's loop: feed the machine ([`parts_mut`](Self::parts_mut), or
/// [`machine_mut`](Self::machine_mut) for a command), then [`step`](Self::step) (sockets,
/// events, read gate), and tell its timer when `step` says so; hand out events with
/// [`pop`](Self::pop) (then `step`: room); let its timer run [`tick`](Self::tick) at the
/// deadline it returns, until it returns `None` (the end: closed, no socket left). An owner
/// dropped by its application either [`close`](OutboundClient::close)s the machine and
/// lets the timer run to that end (a WebSocket's close handshake, the last bytes), or
/// [`abandon`](Self::abandon)s it at once.
pub struct ClientDriver<M: OutboundClient, W> {
    client: QueuedClient<M>,
    socks: SocketTable<W>,
    /// The deadline the timer was last told to wait for.
    armed: Option<Instant>,
    /// The end: no event follows those queued, no socket is left (or all were abandoned).
    done: bool,
}

impl<M: OutboundClient, W: Default> ClientDriver<M, W> {
    /// `machine` with a queue of at most `max_events` and no socket yet; [`step`](Self::step)
    /// it at once for its first actions.
    pub fn new(machine: M, max_events: usize) -> Self {
        let client = QueuedClient::new(machine, max_events);
        Self { client, socks: SocketTable::default(), armed: None, done: false }
    }

    /// The machine, to read.
    #[must_use]
    pub fn machine(&self) -> &M {
        self.client.machine()
    }

    /// The machine, for a command; [`step`](Self::step) after it.
    pub fn machine_mut(&mut self) -> &mut M {
        self.client.machine_mut()
    }

    /// The sockets, to look.
    #[must_use]
    pub fn table(&self) -> &SocketTable<W> {
        &self.socks
    }

    /// The machine and its sockets, for a socket's input or take; [`step`](Self::step)
    /// after it.
    pub fn parts_mut(&mut self) -> (&mut M, &mut SocketTable<W>) {
        (self.client.machine_mut(), &mut self.socks)
    }

    /// After every input, command and [`pop`](Self::pop): drains the sockets, pulls the
    /// machine's events while the queue has room, gates reads (open while the queue has
    /// room, or once the machine is closed, so that its sockets see their end), rings the
    /// pumps. Returns whether the timer must hear of it: its deadline moved, or the end.
    pub fn step(&mut self, now: Instant, d: &(impl Dialer<Wake = W> + ?Sized)) -> bool {
        self.socks.drain(self.client.machine_mut(), now, d);
        self.client.pull(now);
        let room = self.client.wants_read() || self.client.machine().is_closed();
        self.socks.set_room(room);
        self.socks.ring(d);
        self.ended() || self.client.poll_timeout() != self.armed
    }

    /// The application's next event; [`step`](Self::step) after it.
    #[must_use]
    pub fn pop(&mut self) -> Option<M::Event> {
        self.client.pop()
    }

    /// The timer's turn: fires the machine's deadline when due, steps, and returns the
    /// deadline to wait for next, or `None` at the end (the machine is closed and its last
    /// socket gone), after which nothing more happens.
    pub fn tick(
        &mut self,
        now: Instant,
        d: &(impl Dialer<Wake = W> + ?Sized),
    ) -> Option<Option<Instant>> {
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.machine_mut().handle_timeout(now);
        }
        self.step(now, d);
        if self.ended() {
            self.done = true;
            return None;
        }
        self.armed = self.client.poll_timeout();
        Some(self.armed)
    }

    /// Ends at once, for an owner its application dropped that does not wait for the
    /// machine's close: closes the machine, steps, then closes every socket (each pump
    /// still writes what is queued for it).
    pub fn abandon(&mut self, now: Instant, d: &(impl Dialer<Wake = W> + ?Sized)) {
        self.client.machine_mut().close(now);
        self.step(now, d);
        self.socks.close_all();
        self.socks.ring(d);
        self.done = true;
    }

    /// Whether the end was reached ([`tick`](Self::tick) returned `None`, or
    /// [`abandon`](Self::abandon)).
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether no event will come: the end, or the machine is closed and its last event
    /// was taken.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.done || self.client.is_finished()
    }

    /// The machine is closed and its sockets are gone.
    fn ended(&self) -> bool {
        self.client.machine().is_closed() && self.socks.is_empty()
    }
}
