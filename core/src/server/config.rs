//! The settings of a [`Server`](super::Server): limits, routes, allowed origins.

use crate::hub::HubConfig;
use crate::poll::PollConfig;
use crate::sse::SseStreamConfig;
use crate::time::Duration;
use crate::ws::WsConfig;

use super::route::Routes;

/// Settings of a [`Server`](super::Server). Build it with `ServerConfig::default()` and
/// change the fields you need.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The hub's settings (channels, replay logs, outboxes, slow-consumer policies).
    pub hub: HubConfig,
    /// Every WebSocket's settings (hub and application upgrades). Its `rng_seed` is drawn
    /// per connection from the server's generator.
    pub ws: WsConfig,
    /// Every SSE response's settings (keep-alive, `retry:` hint, its outbox).
    pub sse: SseStreamConfig,
    /// Polling (long-poll hold, events per response).
    pub poll: PollConfig,
    /// Which paths the hub serves; everything else goes to the application.
    pub routes: Routes,
    /// The largest request head (default 16 KiB; over it: `431`).
    pub max_head: usize,
    /// Time for a request's head, and a publish's body, to arrive (default 10 s; then
    /// `408`). A deferred authentication must be decided within the same time (then `503`).
    pub head_timeout: Duration,
    /// The largest body of a publish request (default 64 KiB; over it: `413`).
    pub max_publish_body: usize,
    /// The largest body the server reads for a request of the application's own paths
    /// (default 1 MiB; over it: `413`); [`Server::read_body`](super::Server::read_body)
    /// may ask for less. The body is read from the request's arrival on, so this also
    /// bounds what such a connection holds before the application asks.
    pub max_request_body: usize,
    /// Polling clients kept between polls (default 4096), keyed by (principal, channel,
    /// `sid` query parameter). Past it a poll gets a hub connection for that request only.
    pub max_poll_clients: usize,
    /// Longest `sid` query parameter honoured (default 128 bytes; a longer one is ignored).
    pub max_sid: usize,
    /// Ids remembered for deduplicating trusted publishes (default 4096).
    pub trusted_dedup: usize,
    /// Bytes an SSE response may hold before the server stops pulling from the hub for it
    /// (default 64 KiB).
    pub sse_room: usize,
    /// Informational events ([`ServerEvent::Published`](super::ServerEvent::Published),
    /// [`ServerEvent::Hub`](super::ServerEvent::Hub), ...) kept until polled (default 1024;
    /// the oldest is dropped when full). Events that need an answer are never dropped.
    pub max_events: usize,
    /// Origins allowed besides the server's own (exact `scheme://host[:port]` strings).
    /// A hub WebSocket, SSE stream or publish that carries a `Cookie` and comes from any
    /// other `Origin` is refused with `403` (cross-site WebSocket hijacking, CSRF).
    pub allowed_origins: Vec<String>,
    /// Extra headers on every response of the hub's SSE, poll and publish endpoints (e.g.
    /// CORS: `Access-Control-Allow-Origin`). A header that cannot be written is dropped.
    pub response_headers: Vec<(String, String)>,
    /// Whether to report every published message as
    /// [`ServerEvent::Published`](super::ServerEvent::Published) (default `false`; the
    /// simulation's oracle turns it on).
    pub report_published: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hub: HubConfig::default(),
            ws: WsConfig::default(),
            sse: SseStreamConfig::default(),
            poll: PollConfig::default(),
            routes: Routes::default(),
            max_head: 16 << 10,
            head_timeout: Duration::from_secs(10),
            max_publish_body: 64 << 10,
            max_request_body: 1 << 20,
            max_poll_clients: 4096,
            max_sid: 128,
            trusted_dedup: 4096,
            sse_room: 64 << 10,
            max_events: 1024,
            allowed_origins: Vec::new(),
            response_headers: Vec::new(),
            report_published: false,
        }
    }
}

impl ServerConfig {
    /// [`response_headers`](Self::response_headers) as borrowed pairs, the writable ones.
    pub(crate) fn headers(&self) -> Vec<(&str, &str)> {
        self.response_headers
            .iter()
            .filter(|(n, v)| crate::http::check_header(n, v).is_ok())
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
}
