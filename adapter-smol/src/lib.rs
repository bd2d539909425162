//! `tidewire-smol`: the smol / async-io adapter for the Tidewire sans-IO core.
//!
//! The adapter owns the socket, the clock and one timer per task; every protocol decision
//! stays in [`tidewire`]. The servers and clients arrive with issue 4.

pub use tidewire;
