//! The deterministic simulation of hubs and client sessions (issue 8), on
//! [`tidewire::testing`]: real `Hub`s behind the real HTTP/WebSocket/SSE/polling machines,
//! real `ClientSession`s, a simulated TCP network in virtual time, faults drawn from one
//! seed, and an oracle.
//!
//! Invariants ([`oracle`]), checked every simulated second and at the end:
//! - every message published while a client is subscribed reaches it exactly once and in
//!   order per channel, with the data the server logged at that position, or the client
//!   was told `RefetchNeeded` (and only when the history really was gone);
//! - every client publish is logged at most once per epoch and acknowledged;
//! - no session stays `Open` over dead links longer than heartbeat interval + timeout;
//! - no queue (hub outboxes, WebSocket and SSE buffers, send buffers) passes its bound;
//! - every server-side connection ends with exactly one `Closed`/`Ended`, every session
//!   closes exactly once, and nothing is left in the hubs after everyone left;
//! - presence lists equal the subscribed users a grace period after everyone is back.
//!
//! Running:
//! - `cargo test -p tidewire-tests --test sim` runs the fixed seeds;
//! - `SIM_SEEDS=N` runs N more seeds per scenario, `SIM_SEED=S` replays one seed (a failure
//!   prints the command), `SIM_TRACE=I` prints client I's events, `SIM_REPORT=1` prints
//!   each run's counters;
//! - `SIM_REPORT=1 cargo test -p tidewire-tests --release --test sim -- --nocapture herd`
//!   prints the thundering-herd table with its per-100 ms series, `... storm` the
//!   broadcast storm's numbers (10,000 clients in release, 1,000 in debug builds;
//!   `SIM_STORM_CLIENTS` overrides).

mod chaos;
mod net;
mod oracle;
mod scale;
mod world;
