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
