//! The settings of a [`Hub`](super::Hub).

use crate::policy::heartbeat::HeartbeatConfig;
use crate::policy::outbox::{OutboxConfig, SlowConsumer};
use crate::policy::ratelimit::RateLimitConfig;
use crate::replay::LogLimits;
use crate::time::Duration;

/// Settings and bounds of a [`Hub`](super::Hub). Every bound is enforced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// Channels at most (default 10 000). A channel exists while it has members, presence
    /// entries or retained messages; past the bound, creating one fails with
    /// `channel_limit`.
    pub max_channels: usize,
    /// Longest channel name in bytes (default 256). Names are non-empty without control
    /// characters.
    pub max_channel_name: usize,
    /// Channels one connection may join (default 128; DESIGN.md "rooms per connection");
    /// past it, `err` with code `too_many_channels`.
    pub max_channels_per_conn: usize,
    /// Names in one channel's presence list (default 1024); past it, a joining connection
    /// gets no presence entry but is still a member.
    pub max_presence: usize,
    /// How long a dropped member stays in presence lists (default 5 s). Zero: leaves at once.
    pub presence_grace: Duration,
    /// Expiry of polling clients: [`HeartbeatConfig::expiry`] of 60 s by default; each
    /// [`Hub::touch`](super::Hub::touch) is a sign of life.
    pub poll_expiry: HeartbeatConfig,
    /// Each channel's replay log (default 1000 messages, 1 MiB, 2 min).
    pub log: LogLimits,
    /// Bounds of each connection's outbound queues (default 2 MiB, 4096 frames). Its
    /// `policy` is not used: each channel's policy comes from
    /// [`slow_consumers`](Self::slow_consumers). A connection has one queue per policy in
    /// use (at most three), each with these bounds. A resume replays up to a whole log in
    /// one step: keep `max_bytes` above [`log`](Self::log)`.max_bytes` plus the envelope
    /// overhead (about 60 bytes and the channel name per message), or a client resuming
    /// a full log is closed with 4100 under `Disconnect`.
    pub outbox: OutboxConfig,
    /// Slow-consumer policy by channel-name prefix: the first matching rule wins; channels
    /// that match none use [`SlowConsumer::Disconnect`] (close 4100). For example
    /// `("dash:", SlowConsumer::Conflate)` keeps only the latest value of each dashboard
    /// channel queued (the conflation key is the channel name).
    pub slow_consumers: Vec<(String, SlowConsumer)>,
    /// Inbound envelopes per WebSocket connection (default 50/s, burst 100); over it, the
    /// connection is closed with 1008. `None`: unlimited.
    pub rate_limit: Option<RateLimitConfig>,
    /// Client message ids remembered for idempotent publishes (default 65 536, hub-wide).
    pub dedup_window: usize,
    /// Longest client message id in bytes (default 128); longer is `bad_message`.
    pub max_id_len: usize,
    /// Channel-name prefixes whose publishers stay hidden (default none: shown). Every
    /// channel message a client publishes carries its publisher's user as the server
    /// authenticated it (`"from"` in the WebSocket `msg` and in a poll's events, an
    /// `event: from` block before it on SSE), kept with the message in the replay log;
    /// in a channel whose name starts with one of these, it carries none. Anonymous
    /// clients and trusted server-side publishes never show one. With a bus, the publisher
    /// travels with the message through the bus, so every instance shows it.
    pub hide_publisher: Vec<String>,
    /// Whether the application sees each client publish before it is logged (default
    /// `false`): a WebSocket `pub` or a [`Hub::request_publish`](super::Hub::request_publish)
    /// that passed the checks is held, [`HubEvent::PublishRequested`](super::HubEvent::PublishRequested)
    /// is emitted, and [`Hub::decide_publish`](super::Hub::decide_publish) accepts, replaces
    /// or refuses it. With a bus too: the publish is decided before it reaches the bus, and
    /// an accepted one is answered when the bus has numbered it.
    pub vet_publishes: bool,
    /// Held publishes per connection at most (default 16); past it, `too_many_pending`.
    pub max_pending_per_conn: usize,
    /// Held publishes in the hub at most (default 1024); past it, `too_many_pending`.
    pub max_pending: usize,
    /// How long a held publish waits for the decision (default 5 s); then it is refused
    /// with `publish_timeout`.
    pub vet_timeout: Duration,
    /// Joins waiting for the application's decision per connection at most (default 16;
    /// [`JoinVerdict::Defer`](super::JoinVerdict::Defer)); past it, `too_many_pending`.
    pub max_pending_joins_per_conn: usize,
    /// Joins waiting for the application's decision in the hub at most (default 1024);
    /// past it, `too_many_pending`.
    pub max_pending_joins: usize,
    /// How long a join waits for the application's decision (default 5 s); then it is
    /// refused with `join_timeout`.
    pub join_timeout: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            max_channels: 10_000,
            max_channel_name: 256,
            max_channels_per_conn: 128,
            max_presence: 1024,
            presence_grace: Duration::from_secs(5),
            poll_expiry: HeartbeatConfig::expiry(Duration::from_secs(60)),
            log: LogLimits::default(),
            // A whole default log (1 MiB) plus its envelopes must fit for a resume.
            outbox: OutboxConfig { max_bytes: 2 << 20, ..OutboxConfig::default() },
            slow_consumers: Vec::new(),
            rate_limit: Some(RateLimitConfig { rate_per_sec: 50, burst: 100 }),
            dedup_window: 1 << 16,
            max_id_len: 128,
            hide_publisher: Vec::new(),
            vet_publishes: false,
            max_pending_per_conn: 16,
            max_pending: 1024,
            vet_timeout: Duration::from_secs(5),
            max_pending_joins_per_conn: 16,
            max_pending_joins: 1024,
            join_timeout: Duration::from_secs(5),
        }
    }
}
