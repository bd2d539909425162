//! The shape every protocol machine in this crate shares.

use std::collections::VecDeque;

use bytes::{Buf as _, Bytes};

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

/// Pulls transmits from `next` (a machine's `poll_transmit`) into `batch` until this call
/// pulled `max_bytes` bytes, skipping empty ones: the bytes pulled, and whether a
/// [`Transmit::Shutdown`] ended it (nothing follows it, and nothing is pulled after it).
pub fn pull_batch(
    batch: &mut VecDeque<Bytes>,
    max_bytes: usize,
    mut next: impl FnMut() -> Option<Transmit>,
) -> (usize, bool) {
    let mut bytes = 0;
    while bytes < max_bytes {
        match next() {
            Some(Transmit::Bytes(b)) if b.is_empty() => {}
            Some(Transmit::Bytes(b)) => {
                bytes += b.len();
                batch.push_back(b);
            }
            Some(Transmit::Shutdown) => return (bytes, true),
            None => break,
        }
    }
    (bytes, false)
}

/// Drops the first `n` bytes (what a vectored write took) from a queue of chunks.
#[inline]
pub fn consume(chunks: &mut VecDeque<Bytes>, mut n: usize) {
    while let Some(front) = chunks.front_mut().filter(|_| n > 0) {
        if front.len() > n {
            return front.advance(n);
        }
        n -= front.len();
        chunks.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static str]) -> VecDeque<Bytes> {
        parts.iter().map(|p| Bytes::from_static(p.as_bytes())).collect()
    }

    #[test]
    fn a_batch_stops_at_its_size_or_at_the_shutdown() {
        let mut source = chunks(&["ab", "", "cd", "ef"]).into_iter().map(Transmit::Bytes);
        let mut batch = VecDeque::new();
        assert_eq!(pull_batch(&mut batch, 4, || source.next()), (4, false));
        assert_eq!(batch, chunks(&["ab", "cd"]), "the empty one skipped");
        let mut source = [Transmit::Bytes("x".into()), Transmit::Shutdown].into_iter();
        assert_eq!(pull_batch(&mut batch, 100, || source.next()), (1, true));
        assert_eq!(pull_batch(&mut batch, 100, || None), (0, false));
    }

    #[test]
    fn consume_drops_whole_chunks_then_advances_the_front() {
        let mut q = chunks(&["abc", "de", "fgh"]);
        consume(&mut q, 0);
        assert_eq!(q.len(), 3);
        consume(&mut q, 6);
        assert_eq!(q, chunks(&["gh"]));
        consume(&mut q, 2);
        assert!(q.is_empty());
    }
}
