//! A deterministic simulation of hubs and client sessions over a simulated network, in
//! virtual time (STYLE.md §7 "Simulation"). Enabled by the `testing` feature.
//!
//! Everything here drives the real machines of this crate: a [`SimServer`] runs the
//! shipped [`Server`](crate::server::Server) endpoint (the one the adapters pump), on its
//! default routes (`/ws`, `/events`, `/poll`, `/api/publish`) with
//! [`DemoAuth`](crate::hub::DemoAuth);
//! a [`SimClient`] runs a real [`ClientSession`](crate::client::ClientSession), whose
//! `Connect` actions open simulated links; a [`SimRequest`] is one raw HTTP/1.1 exchange
//! (a publish over `POST /api/publish`, a refused request). They exchange real HTTP/1.1,
//! WebSocket and SSE bytes.
//!
//! # Time
//!
//! [`Sim::new`] reads the clock once (`t0`); from then on time is virtual. Each step jumps
//! to the earliest pending delivery or node deadline (`poll_timeout`) and makes that one
//! mutation, so minutes of simulated time take milliseconds. Each node has its own clock,
//! the global one plus a skew that [`Sim::step_clock`] can only increase.
//!
//! # Faults, and how they map onto TCP
//!
//! The transport is TCP, a reliable ordered byte stream, so the faults are the ones TCP
//! lets through, and each is drawn by the scenario from the simulation's one seed:
//!
//! | fault | what the sim does |
//! |---|---|
//! | latency, jitter | each link draws a one-way latency; each segment adds a jitter draw, but never overtakes the one before it on that link |
//! | reordering | between connections only: an old connection's late bytes may arrive after a new connection's (TCP never reorders within one) |
//! | loss | a link that black-holes ([`Net::blackhole`]: no more bytes, no `FIN`, either way) or is reset ([`Net::reset`]); lost segments inside a live link are retransmitted by TCP, i.e. delayed |
//! | duplication | not in the network (TCP drops duplicate segments); it happens above it: a publish resent after a reconnect because its `ack` was lost (the hub dedups by client id), a client that restarts and resubscribes from an older position ([`Sim::restart_client`]; the application drops the overlap) |
//! | partition | a client group and a server cannot reach each other until it heals; segments wait and arrive after the heal (retransmission); connections inside are half-open, each side believing it is connected until its own heartbeat says otherwise |
//! | server crash | [`Sim::crash_server`]: a host crash (links go silent without `FIN`, new connections go unanswered) or a process crash (links reset, connections refused); [`Sim::restart_server`] brings it back with the same hub (log kept) or a new hub (new epochs); an old link that reaches the new incarnation is reset |
//! | slow consumer | [`Sim::pause_client`]: the client stops reading; the window fills, then the server's transport, then the hub's bounded outbox, which applies the channel's slow-consumer policy |
//! | clock step | [`Sim::step_clock`]: one node's clock jumps forward; the others' do not |
//! | blocking proxy | [`Sim::block_websocket`]: upgrades get 502 for a while, so sessions fall back to SSE or polling and probe their way back |
//!
//! # Use
//!
//! ```
//! use tidewire::client::{SessionConfig, SessionEvent, Transport};
//! use tidewire::testing::{NetConfig, ServerConfig, Sim};
//! use tidewire::Duration;
//!
//! let mut sim = Sim::new(7, NetConfig::default());
//! let server = sim.add_server(ServerConfig::default());
//! let mut cfg = SessionConfig::new("sim", 80);
//! cfg.token = Some("user:ann".into());
//! cfg.transports = vec![Transport::WebSocket];
//! let ann = sim.add_client(server, cfg, |s, now| s.subscribe(now, "chat:lobby").unwrap());
//! sim.run_for(Duration::from_secs(2));
//! sim.publish(server, "chat:lobby", br#"{"t":"hi"}"#).unwrap();
//! sim.run_for(Duration::from_secs(2));
//! let got = sim.client_mut(ann).drain_events();
//! assert!(got.iter().any(|(_, e)| matches!(e, SessionEvent::Message { data, .. } if data == r#"{"t":"hi"}"#)));
//! ```

pub mod client;
pub mod net;
pub mod request;
pub mod server;
pub mod sim;

pub use client::SimClient;
pub use net::{Delivery, LinkId, Net, NetConfig, NetEvent, NetStats, Side};
pub use request::SimRequest;
pub use server::{Published, ServerConfig, ServerStats, SimServer};
pub use sim::{Node, Sim};
