//! Delivery policies: small, pure, deterministic machines with no bytes, no clock and no
//! global RNG. Protocol machines, the hub and the client session compose them.

pub mod backoff;
pub mod dedup;
pub mod heartbeat;
pub mod outbox;
pub mod ratelimit;
pub mod sequencer;

pub use heartbeat::{Beat, Heartbeat, HeartbeatConfig, IdleRule};
