//! Delivery policies: small, pure, deterministic machines with no bytes, no clock and no
//! global RNG. Protocol machines, the hub and the client session compose them.

pub mod backoff;
pub mod dedup;
pub mod heartbeat;
pub mod outbox;
pub mod ratelimit;
pub mod sequencer;

pub use backoff::{Backoff, BackoffConfig, Jitter, RetryHint, parse_retry_after};
pub use dedup::{DedupWindow, RecentIds, Verdict};
pub use heartbeat::{Beat, Heartbeat, HeartbeatConfig, IdleRule};
pub use outbox::{Outbox, OutboxConfig, OutboxCounters, PushOutcome, SlowConsumer};
pub use ratelimit::{OverLimit, RateLimit, RateLimitConfig};
pub use sequencer::{Accepted, OrderError, Sequencer, SequencerConfig};
