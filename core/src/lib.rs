//! # Tidewire
//!
//! The sans-IO core of a realtime web library. (Crate docs being written.)

pub mod machine;
pub mod policy;
pub mod rng;
pub mod time;
pub mod ws;

pub use machine::{Machine, Transmit};
pub use time::{Duration, Instant};
