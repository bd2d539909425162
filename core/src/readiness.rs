//! The run loop of one non-blocking socket driven by readiness, as a machine: when to ask
//! the connection's machine for its next batch, when to write, read, yield or wait, when a
//! stalled write fails, and what the loop ends with. An async adapter (smol, tokio) runs the
//! same [`ReadinessLoop`] for every socket it pumps: it performs each [`Step`] (a system
//! call, its target's callback, a yield, a wait) and reports the result; the decisions are
//! here, once, and tested on virtual time.
//!
//! The adapter's loop, for a socket and its target (a server connection, an application
//! WebSocket, an outbound socket) whose `pass` works as [`AppSocket::poll_pass`](crate::ws::AppSocket::poll_pass):
//!
//! ```text
//! let mut lp = ReadinessLoop::new(max_read, stall);
//! loop {
//!     match lp.next(Instant::now, || target.is_rung()) {
//!         Step::Pass(now) => lp.passed(target.pass(now, lp.out())),
//!         Step::Write => lp.write(|slices| socket.write_vectored(slices)),
//!         Step::WriteFailed => target.write_failed(),
//!         Step::Read(max) => { let r = read(socket, max, |data| target.read(data)); lp.did_read(r, woke) }
//!         Step::Eof(error) => target.eof(error),
//!         Step::Yield => yield_now().await,
//!         Step::Wait { read, write, timer } => { /* readiness, the timer, the ring */ lp.woke(w, r, t, rung) }
//!         Step::Done(result) => return result,
//!     }
//! }
//! ```
//!
//! Two system calls are saved where it can be done safely: everything queued is written
//! before the socket is read, and before the loop registers for readability it yields once
//! and reads again (under load the next message is often there); when that retry finds
//! nothing, the next few waits register at once.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice};

use bytes::Bytes;

use crate::time::{Duration, Instant};
use crate::ws::app::Pass;

/// Chunks written by one vectored write at most.
pub const MAX_SLICES: usize = 64;
/// Passes that made progress without waiting before the loop yields once (fairness).
const BUDGET: u32 = 32;
/// Waits that register readability at once after a deferred read found nothing.
const DEFER_COOLDOWN: u32 = 8;

/// What the adapter does next, then calls [`ReadinessLoop::next`] again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Run the target's pass at this instant on [`ReadinessLoop::out`] (a batch is pulled
    /// only into an empty queue) and report it with [`ReadinessLoop::passed`].
    Pass(Instant),
    /// One vectored write, with [`ReadinessLoop::write`].
    Write,
    /// A write failed or stalled: tell the target that nothing more can be written.
    WriteFailed,
    /// One read of at most this many bytes, handed to the target; report it with
    /// [`ReadinessLoop::did_read`].
    Read(usize),
    /// The socket's read half ended (`true`: with an error): tell the target.
    Eof(bool),
    /// Let other tasks run once.
    Yield,
    /// Wait until the socket is readable (if `read`; without, drop a registration for
    /// readability), writable (if `write`), the timer fires (armed at `timer`, if any) or
    /// the target rings; report which with [`ReadinessLoop::woke`].
    Wait {
        /// Wait for readability.
        read: bool,
        /// Wait for writability.
        write: bool,
        /// The timer's instant.
        timer: Option<Instant>,
    },
    /// The loop is over: `Ok` when everything queued was written, else why not
    /// (`TimedOut` when the target ended first).
    Done(Result<(), ErrorKind>),
}

/// Where the loop is within one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A round begins: a pass, if one is due.
    Top,
    /// A pass was asked for: waiting for [`ReadinessLoop::passed`].
    Passing,
    /// Writing while the socket takes it.
    Writing,
    /// One read, unless paused or not readable.
    Reading,
    /// After the read: progress, a deferred read or a wait.
    Settling,
    /// The loop ended.
    Finished,
}

/// The decisions of one socket's run loop. See the [module docs](self).
#[derive(Debug)]
pub struct ReadinessLoop {
    /// What the target queued and the socket has not taken yet.
    out: VecDeque<Bytes>,
    max_read: usize,
    /// A write without progress this long fails.
    stall: Option<Duration>,
    stall_at: Option<Instant>,
    phase: Phase,
    /// The instant of this round.
    now: Instant,
    /// The last pass: read the socket, and the target's deadline.
    read: bool,
    due: Option<Instant>,
    /// A pass is due at the next round (after a read, a write, a ring or the deadline).
    pass: bool,
    /// The round's deadline: the target's and the stall's.
    deadline: Option<Instant>,
    /// The timer's instant; it is moved only to an earlier one.
    armed: Option<Instant>,
    /// Whether a read / write may progress (no `WouldBlock` since the last readiness).
    can_read: bool,
    can_write: bool,
    /// A registration for readiness is held (from a wait until it fired).
    read_registered: bool,
    write_registered: bool,
    eof: bool,
    /// The read half ended and the target was not told yet (`true`: with an error).
    eof_pending: Option<bool>,
    /// A write failed, and why; the loop's result.
    failed: Option<ErrorKind>,
    /// This round's write failure.
    lost: Option<ErrorKind>,
    /// A `FlushAndStop` pass: one round of writes, then the end.
    flush: bool,
    progressed: bool,
    /// The read woke a receiver: yield so that it answers before the next pass.
    delivered: bool,
    budget: u32,
    /// The next read is the retry of a deferred one.
    retry_pending: bool,
    retry_failed: bool,
    cooldown: u32,
}

impl ReadinessLoop {
    /// A loop reading at most `max_read` bytes at a time (at least 1), failing a write that
    /// makes no progress for `stall` (`None`: never).
    #[must_use]
    pub fn new(max_read: usize, stall: Option<Duration>, now: Instant) -> Self {
        Self {
            out: VecDeque::new(),
            max_read: max_read.max(1),
            stall,
            stall_at: None,
            phase: Phase::Top,
            now,
            read: false,
            due: None,
            pass: true,
            deadline: None,
            armed: None,
            can_read: true,
            can_write: true,
            read_registered: false,
            write_registered: false,
            eof: false,
            eof_pending: None,
            failed: None,
            lost: None,
            flush: false,
            progressed: false,
            delivered: false,
            budget: BUDGET,
            retry_pending: false,
            retry_failed: false,
            cooldown: 0,
        }
    }

    /// The queue the target's pass appends its batch to.
    pub fn out(&mut self) -> &mut VecDeque<Bytes> {
        &mut self.out
    }

    /// The next step. `clock` and `rung` (whether the target rang since its last pass)
    /// are asked only where a round begins.
    pub fn next(
        &mut self,
        mut clock: impl FnMut() -> Instant,
        mut rung: impl FnMut() -> bool,
    ) -> Step {
        loop {
            match self.phase {
                Phase::Top => {
                    self.now = clock();
                    (self.flush, self.progressed, self.lost) = (false, false, None);
                    (self.delivered, self.retry_failed) = (false, false);
                    let due = self.due.is_some_and(|d| d <= self.now);
                    if std::mem::take(&mut self.pass) || due || rung() {
                        self.phase = Phase::Passing;
                        return Step::Pass(self.now);
                    }
                    self.deadline = self.due;
                    self.phase = Phase::Writing;
                }
                // `passed` was not called: pass again.
                Phase::Passing => return Step::Pass(self.now),
                Phase::Writing => {
                    if self.can_write && !self.out.is_empty() && self.lost.is_none() {
                        return Step::Write;
                    }
                    if let Some(step) = self.after_writes() {
                        return step;
                    }
                }
                Phase::Reading => {
                    self.phase = Phase::Settling;
                    if !self.read || self.eof {
                        // Paused: a registration is dropped; try again on resume.
                        self.can_read = true;
                        self.read_registered = false;
                    } else if self.can_read {
                        return Step::Read(self.max_read);
                    }
                }
                Phase::Settling => {
                    if let Some(step) = self.settle() {
                        return step;
                    }
                }
                Phase::Finished => return Step::Done(self.result()),
            }
        }
    }

    /// The target's pass (after [`Step::Pass`]).
    pub fn passed(&mut self, pass: Pass) {
        self.phase = Phase::Writing;
        match pass {
            Pass::Run { shutdown: true, .. } if self.out.is_empty() => {
                self.phase = Phase::Finished;
            }
            Pass::Run { read, deadline, .. } => (self.read, self.due) = (read, deadline),
            // Failed: one non-blocking attempt to get the last bytes out, then down.
            Pass::FlushAndStop => {
                (self.can_write, self.flush) = (true, true);
                (self.read, self.due) = (false, None);
            }
            _ => self.phase = Phase::Finished,
        }
        if self.due.is_some_and(|d| d <= self.now) && self.phase == Phase::Writing {
            self.phase = Phase::Top;
        }
        self.deadline = self.due;
    }

    /// One vectored write of the queue's front with `write` (after [`Step::Write`]); what
    /// it wrote leaves the queue.
    pub fn write(&mut self, write: impl FnOnce(&[IoSlice<'_>]) -> io::Result<usize>) {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let n = slices.iter_mut().zip(&self.out).map(|(s, c)| *s = IoSlice::new(c)).count();
        match write(&slices[..n]) {
            Ok(0) => self.lost = Some(ErrorKind::WriteZero),
            Ok(n) => {
                crate::machine::consume(&mut self.out, n);
                self.progressed = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => self.can_write = false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => self.lost = Some(e.kind()),
        }
    }

    /// The read's result (after [`Step::Read`]); `delivered`: it woke a receiver.
    pub fn did_read(&mut self, read: io::Result<usize>, delivered: bool) {
        let retry = std::mem::take(&mut self.retry_pending);
        match read {
            Ok(n) if n > 0 => {
                // A short read emptied the receive queue: wait for readiness next.
                self.can_read = n == self.max_read;
                self.progressed = true;
                self.delivered = delivered;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.can_read = false;
                if retry {
                    // Register now, and at once for the next few waits.
                    self.retry_failed = true;
                    self.cooldown = DEFER_COOLDOWN;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            read => {
                self.eof = true;
                self.eof_pending = Some(read.is_err());
                self.progressed = true;
            }
        }
    }

    /// What ended the wait (after [`Step::Wait`]): writable, readable, the timer, a ring.
    pub fn woke(&mut self, writable: bool, readable: bool, timer: bool, rung: bool) {
        if writable {
            (self.write_registered, self.can_write) = (false, true);
        }
        if readable {
            (self.read_registered, self.can_read) = (false, true);
        }
        if timer {
            self.armed = None;
        }
        self.pass |= timer || rung;
        self.phase = Phase::Top;
    }

    /// After the round's writes: the end of a flush, the stall, a failed write.
    fn after_writes(&mut self) -> Option<Step> {
        if self.flush {
            self.phase = Phase::Finished;
            return None;
        }
        let now = self.now;
        if let (None, Some(stall)) = (self.lost, self.stall) {
            if self.out.is_empty() {
                self.stall_at = None;
            } else if self.progressed || self.stall_at.is_none() {
                self.stall_at = Some(now + stall);
            } else if self.stall_at.is_some_and(|s| s <= now) {
                self.lost = Some(ErrorKind::TimedOut);
            }
            self.deadline = self.deadline.into_iter().chain(self.stall_at).min();
        }
        if self.lost.is_some() {
            // The transport failed: nothing more can be written.
            self.out.clear();
            self.stall_at = None;
            self.failed = self.lost;
            self.pass = true;
            self.phase = Phase::Top;
            return Some(Step::WriteFailed);
        }
        self.phase = Phase::Reading;
        None
    }

    /// After the read: the end of the read half, progress (maybe a yield; else `None`, the
    /// next round), a deferred read, or a wait.
    fn settle(&mut self) -> Option<Step> {
        if let Some(error) = self.eof_pending.take() {
            return Some(Step::Eof(error));
        }
        self.phase = Phase::Top;
        if self.progressed {
            self.pass = true;
            self.budget -= 1;
            if self.delivered || self.budget == 0 {
                // A receiver was woken: let it (maybe on this thread) answer first.
                self.budget = BUDGET;
                return Some(Step::Yield);
            }
            return None;
        }
        self.budget = BUDGET;
        // Re-armed only for an earlier deadline (a later one is picked up when the earlier
        // fires).
        if let Some(d) = self.deadline
            && self.armed.is_none_or(|a| d < a)
        {
            self.armed = Some(d);
        }
        let write = !self.can_write && !self.out.is_empty();
        let read = self.read && !self.eof && !self.can_read;
        if read && !self.read_registered && !self.retry_failed {
            if self.cooldown == 0 {
                self.retry_pending = true;
                self.can_read = true;
                return Some(Step::Yield);
            }
            self.cooldown -= 1;
        }
        self.read_registered |= read;
        self.write_registered |= write;
        Some(Step::Wait { read, write, timer: self.armed })
    }

    fn result(&self) -> Result<(), ErrorKind> {
        match self.failed {
            Some(kind) => Err(kind),
            None if self.out.is_empty() => Ok(()),
            None => Err(ErrorKind::TimedOut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(read: bool, deadline: Option<Instant>) -> Pass {
        Pass::Run { read, deadline, shutdown: false }
    }

    fn would_block() -> io::Result<usize> {
        Err(ErrorKind::WouldBlock.into())
    }

    /// A loop at `t0` that passed once with `bytes` queued.
    fn queued(
        t0: Instant,
        stall: Option<Duration>,
        bytes: &'static [u8],
        pass: Pass,
    ) -> ReadinessLoop {
        let mut lp = ReadinessLoop::new(100, stall, t0);
        assert_eq!(lp.next(|| t0, || false), Step::Pass(t0));
        if !bytes.is_empty() {
            lp.out().push_back(Bytes::from_static(bytes));
        }
        lp.passed(pass);
        lp
    }

    #[test]
    fn writes_all_then_reads_and_retries_once_before_registering() {
        let t0 = crate::time::test_epoch();
        let mut lp = queued(t0, None, b"hello", run(true, None));
        assert_eq!(lp.next(|| t0, || false), Step::Write);
        lp.write(|slices| {
            assert_eq!(&*slices[0], b"hello");
            Ok(5)
        });
        assert_eq!(lp.next(|| t0, || false), Step::Read(100));
        lp.did_read(would_block(), false);
        // The write progressed: a pass first.
        assert_eq!(lp.next(|| t0, || false), Step::Pass(t0));
        lp.passed(run(true, None));
        // Nothing read since the last readiness: yield, then read once more.
        assert_eq!(lp.next(|| t0, || false), Step::Yield);
        assert_eq!(lp.next(|| t0, || false), Step::Read(100));
        lp.did_read(would_block(), false);
        let wait = Step::Wait { read: true, write: false, timer: None };
        assert_eq!(lp.next(|| t0, || false), wait);
        // Readable: read without a pass; then the registration is made at once (cooldown).
        lp.woke(false, true, false, false);
        assert_eq!(lp.next(|| t0, || false), Step::Read(100));
        lp.did_read(would_block(), false);
        assert_eq!(lp.next(|| t0, || false), wait);
    }

    #[test]
    fn a_full_read_reads_again_and_a_short_one_waits_for_readiness() {
        let t0 = crate::time::test_epoch();
        let mut lp = queued(t0, None, b"", run(true, None));
        assert_eq!(lp.next(|| t0, || false), Step::Read(100));
        lp.did_read(Ok(100), false);
        assert_eq!(lp.next(|| t0, || false), Step::Pass(t0));
        lp.passed(run(true, None));
        assert_eq!(lp.next(|| t0, || false), Step::Read(100));
        lp.did_read(Ok(10), true);
        // It woke a receiver: yield before the next pass.
        assert_eq!(lp.next(|| t0, || false), Step::Yield);
        assert_eq!(lp.next(|| t0, || false), Step::Pass(t0));
        lp.passed(run(true, None));
        assert_eq!(lp.next(|| t0, || false), Step::Yield); // the deferred read
    }

    #[test]
    fn a_write_stalled_past_its_limit_fails_and_the_loop_ends_with_why() {
        let t0 = crate::time::test_epoch();
        let stall = Duration::from_secs(10);
        let mut lp = queued(t0, Some(stall), b"0123456789", run(false, None));
        assert_eq!(lp.next(|| t0, || false), Step::Write);
        lp.write(|_| Ok(4));
        assert_eq!(lp.next(|| t0, || false), Step::Write);
        lp.write(|_| would_block());
        // The pass the progress asked for.
        assert_eq!(lp.next(|| t0, || false), Step::Pass(t0));
        lp.passed(run(false, None));
        let t1 = t0 + stall;
        let wait = Step::Wait { read: false, write: true, timer: Some(t1) };
        assert_eq!(lp.next(|| t0, || false), wait);
        lp.woke(false, false, true, false);
        assert_eq!(lp.next(|| t1, || false), Step::Pass(t1));
        lp.passed(run(false, None));
        assert_eq!(lp.next(|| t1, || false), Step::WriteFailed);
        assert_eq!(lp.next(|| t1, || false), Step::Pass(t1));
        lp.passed(Pass::Run { read: false, deadline: None, shutdown: true });
        assert_eq!(lp.next(|| t1, || false), Step::Done(Err(ErrorKind::TimedOut)));
    }

    #[test]
    fn a_write_that_progresses_restarts_the_stall_clock() {
        let t0 = crate::time::test_epoch();
        let stall = Duration::from_secs(10);
        let mut lp = queued(t0, Some(stall), b"0123456789", run(false, None));
        assert_eq!(lp.next(|| t0, || false), Step::Write);
        lp.write(|_| would_block());
        let wait = |at| Step::Wait { read: false, write: true, timer: Some(at) };
        assert_eq!(lp.next(|| t0, || false), wait(t0 + stall));
        let t1 = t0 + Duration::from_secs(9);
        lp.woke(true, false, false, false);
        assert_eq!(lp.next(|| t1, || false), Step::Write);
        lp.write(|_| Ok(5));
        assert_eq!(lp.next(|| t1, || false), Step::Write);
        lp.write(|_| would_block());
        assert_eq!(lp.next(|| t1, || false), Step::Pass(t1));
        lp.passed(run(false, None));
        // Armed only earlier: the timer stays; when it fires, the new limit is armed.
        assert_eq!(lp.next(|| t1, || false), wait(t0 + stall));
        lp.woke(false, false, true, false);
        let t2 = t0 + stall;
        assert_eq!(lp.next(|| t2, || false), Step::Pass(t2));
        lp.passed(run(false, None));
        assert_eq!(lp.next(|| t2, || false), wait(t1 + stall));
    }

    #[test]
    fn the_end_of_input_is_told_once_and_a_shutdown_ends_the_loop_when_written() {
        let t0 = crate::time::test_epoch();
        let mut lp = queued(t0, None, b"", run(true, None));
        assert_eq!(lp.next(|| t0, || false), Step::Read(100));
        lp.did_read(Ok(0), false);
        assert_eq!(lp.next(|| t0, || false), Step::Eof(false));
        assert_eq!(lp.next(|| t0, || false), Step::Pass(t0));
        lp.out().push_back(Bytes::from_static(b"bye"));
        lp.passed(Pass::Run { read: true, deadline: None, shutdown: true });
        assert_eq!(lp.next(|| t0, || false), Step::Write);
        lp.write(|_| Ok(3));
        // Read no more after the end; the next pass ends it.
        assert_eq!(lp.next(|| t0, || false), Step::Pass(t0));
        lp.passed(Pass::Run { read: true, deadline: None, shutdown: true });
        assert_eq!(lp.next(|| t0, || false), Step::Done(Ok(())));
    }

    #[test]
    fn flush_and_stop_tries_once_without_waiting() {
        let t0 = crate::time::test_epoch();
        let mut lp = queued(t0, None, b"last words", Pass::FlushAndStop);
        assert_eq!(lp.next(|| t0, || false), Step::Write);
        lp.write(|_| Ok(4));
        assert_eq!(lp.next(|| t0, || false), Step::Write);
        lp.write(|_| would_block());
        assert_eq!(lp.next(|| t0, || false), Step::Done(Err(ErrorKind::TimedOut)));
        let mut lp = queued(t0, None, b"last", Pass::FlushAndStop);
        assert_eq!(lp.next(|| t0, || false), Step::Write);
        lp.write(|_| Ok(4));
        assert_eq!(lp.next(|| t0, || false), Step::Done(Ok(())));
    }

    #[test]
    fn a_failed_write_reports_its_kind_and_a_stop_ends_at_once() {
        let t0 = crate::time::test_epoch();
        let mut lp = queued(t0, None, b"x", run(false, None));
        assert_eq!(lp.next(|| t0, || false), Step::Write);
        lp.write(|_| Err(ErrorKind::BrokenPipe.into()));
        assert_eq!(lp.next(|| t0, || false), Step::WriteFailed);
        assert_eq!(lp.next(|| t0, || false), Step::Pass(t0));
        lp.passed(Pass::Stop);
        assert_eq!(lp.next(|| t0, || false), Step::Done(Err(ErrorKind::BrokenPipe)));
    }

    #[test]
    fn deadlines_and_rings_bring_a_pass_and_a_due_deadline_passes_again() {
        let t0 = crate::time::test_epoch();
        let t5 = t0 + Duration::from_secs(5);
        let mut lp = queued(t0, None, b"", run(false, Some(t5)));
        let wait = Step::Wait { read: false, write: false, timer: Some(t5) };
        assert_eq!(lp.next(|| t0, || false), wait);
        // A ring: a pass at once.
        lp.woke(false, false, false, true);
        assert_eq!(lp.next(|| t0, || false), Step::Pass(t0));
        lp.passed(run(false, Some(t5)));
        assert_eq!(lp.next(|| t0, || false), wait);
        // The clock passed the deadline before the timer fired: the round begins with a pass.
        lp.woke(false, false, false, false);
        assert_eq!(lp.next(|| t5, || false), Step::Pass(t5));
        // A pass that leaves a due deadline passes again.
        lp.passed(run(false, Some(t5)));
        assert_eq!(lp.next(|| t5, || false), Step::Pass(t5));
        // A ring is looked at where a round begins (the timer stays until it fires).
        lp.passed(run(false, None));
        assert_eq!(lp.next(|| t5, || true), wait);
        lp.woke(false, false, true, false);
        assert_eq!(lp.next(|| t5, || true), Step::Pass(t5));
    }

    #[test]
    fn progress_yields_after_its_budget() {
        let t0 = crate::time::test_epoch();
        let mut lp = queued(t0, None, b"", run(true, None));
        let mut rounds = 0;
        loop {
            match lp.next(|| t0, || false) {
                Step::Read(n) => lp.did_read(Ok(n), false),
                Step::Pass(_) => lp.passed(run(true, None)),
                Step::Yield => break,
                step => panic!("unexpected {step:?}"),
            }
            rounds += 1;
        }
        // Each round is a read and a pass; the first pass came before.
        assert_eq!(rounds, 2 * BUDGET as usize - 1);
    }
}
