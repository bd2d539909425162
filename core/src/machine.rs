//! The shape every protocol machine in this crate shares.

use bytes::Bytes;

use crate::time::Instant;

/// Something the transport must do, pulled from a machine with [`Machine::poll_transmit`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transmit {
    /// Write these bytes, in order, after every earlier `Bytes`.
    Bytes(Bytes),
    /// Everything before this has been written; now shut the write half down and close the
    /// transport. Nothing follows a `Shutdown`.
    Shutdown,
}

/// A sans-IO state machine: it changes state only when fed input (`handle_*`) or a passed
/// deadline, and the caller pulls every output (`poll_*`).
///
/// The run loop that drives any `Machine` is in the [crate docs](crate#the-run-loop).
pub trait Machine {
    /// What the machine reports to the application.
    type Event;

    /// Bytes arrived from the transport.
    fn handle_read(&mut self, now: Instant, data: &[u8]);
    /// The transport's read half reached end of file (or failed).
    fn handle_eof(&mut self, now: Instant);
    /// A deadline from [`Machine::poll_timeout`] may have passed. Spurious calls are no-ops.
    fn handle_timeout(&mut self, now: Instant);
    /// The next thing to write. New items may appear after any `handle_*` call or command.
    #[must_use]
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// The next application event. New events may appear after any `handle_*` call or command.
    #[must_use]
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// The earliest instant at which [`Machine::handle_timeout`] must be called, if any.
    #[must_use]
    fn poll_timeout(&self) -> Option<Instant>;
}
