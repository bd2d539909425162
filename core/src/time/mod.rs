//! Time as data: the `Instant`/`Duration` types every machine takes, the monotonic clamp,
//! and timer tables that turn named deadlines into `poll_timeout` / `handle_timeout`.
//!
//! Nothing in this crate reads a clock: every instant comes in as a `now` argument.

mod queue;
mod table;

pub use queue::TimerQueue;
pub use std::time::{Duration, Instant};
pub use table::{Monotonic, TimerKind, TimerTable};

/// The one real instant unit tests start their virtual time from (the only clock read in
/// this crate's tests; the library itself never reads one).
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_epoch() -> Instant {
    Instant::now()
}
