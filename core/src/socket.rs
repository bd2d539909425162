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
//! generic over it.

use bytes::Bytes;

use crate::time::Instant;

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
