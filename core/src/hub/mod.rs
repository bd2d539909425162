//! The hub: protocol-agnostic multi-connection logic (DESIGN.md "The hub") as one sans-IO
//! machine, [`Hub`].
//!
//! The hub addresses connections by [`ConnId`] over any [`Transport`] (WebSocket, SSE,
//! polling). It keeps named channels, each with a bounded [`ReplayLog`] (positions
//! `(epoch, offset)`), its members and a presence list; it checks every join and client
//! publish with the application's [`Authorize`] policy; it encodes each broadcast once per
//! transport format and hands the same [`Bytes`] to every receiver; it queues frames per
//! connection in bounded outboxes with the channel's slow-consumer policy; and it expires
//! polling clients and presence entries on a timer queue. WebSocket clients speak the
//! [envelope](crate::envelope) protocol; SSE and polling clients subscribe through the URL.
//!
//! # Method groups of [`Hub`]
//!
//! - **Connections:** [`connect`](Hub::connect) (after authenticating the upgrade),
//!   [`set_presence_name`](Hub::set_presence_name), [`disconnect`](Hub::disconnect),
//!   [`touch`](Hub::touch) (a polling client polled).
//! - **Inputs:** [`handle_envelope`](Hub::handle_envelope) (a WebSocket text message),
//!   [`handle_timeout`](Hub::handle_timeout).
//! - **Commands:** [`subscribe`](Hub::subscribe) / [`unsubscribe`](Hub::unsubscribe) (SSE and
//!   polling subscriptions from the URL), [`publish`](Hub::publish) (the trusted
//!   server-side publish: no authorization, no dedup), [`decide_join`](Hub::decide_join)
//!   (a join the policy left to the application, [`JoinVerdict::Defer`]; see [`JoinId`]),
//!   [`decide_publish`](Hub::decide_publish) (a vetted publish).
//! - **Outputs** (quinn `Endpoint`-like routing): [`poll_ready`](Hub::poll_ready) names a
//!   connection that has frames waiting, [`pull`](Hub::pull) gives its next frame (already
//!   in its transport's format), [`poll_event`](Hub::poll_event) gives a [`HubEvent`] (close
//!   this connection, published, joined, left, expired, a join or publish to decide),
//!   [`poll_timeout`](Hub::poll_timeout)
//!   says when to call `handle_timeout`.
//! - **Getters:** [`log`](Hub::log) (polling reads it), [`members`](Hub::members),
//!   [`presence`](Hub::presence), [`channels_of`](Hub::channels_of),
//!   [`counters`](Hub::counters), [`buffered`](Hub::buffered), [`stats`](Hub::stats), …
//!
//! # The run loop of an adapter
//!
//! The hub is one machine shared by every connection of a server (behind the adapter's one
//! lock or on its one task). After every mutation (a connect, an envelope, a subscribe, a
//! publish, a disconnect, a timeout), the adapter:
//!
//! 1. drains [`poll_event`](Hub::poll_event): on [`HubEvent::Close`] it closes that
//!    connection with the code (WebSocket) or ends the response (SSE) — the hub has already
//!    forgotten it; on [`HubEvent::Published`] it wakes the held polls of that channel;
//! 2. drains [`poll_ready`](Hub::poll_ready), and for each connection moves frames with
//!    [`pull`](Hub::pull) into its transport (`WsConnection::send` of a text message,
//!    `SseStream::send_frame`) while the transport has room. A connection whose transport
//!    was full MUST be pulled again when it has room (the hub names it again only when a new
//!    frame is queued for it);
//! 3. re-arms its one timer with [`poll_timeout`](Hub::poll_timeout).
//!
//! # Heartbeats
//!
//! Each transport keeps its own: a WebSocket's pings and dead-peer detection live in its
//! `WsConnection` (the adapter calls [`disconnect`](Hub::disconnect) when it closes); an SSE
//! response's keep-alive comments live in its `SseStream`; a polling client has no
//! connection to watch, so the hub expires it ([`HubConfig::poll_expiry`], default 60 s
//! without a [`touch`](Hub::touch)) with [`HubEvent::Expired`].
//!
//! # Guarantees
//!
//! - A subscriber that brings a position gets, on WebSocket, `subscribed{recovered:true}`
//!   *then* exactly the messages it missed, in order, then live ones; or, when the position
//!   is gone, `subscribed{recovered:false, pos: head}` and no replay (on SSE: an
//!   `event: reset` block with `data: {"ch":CH,"pos":"HEAD","recovered":false}` whose id is
//!   the head). Never a partial replay. Without a position, the subscriber starts at the
//!   head (`recovered:true`, nothing was missed; on SSE an id-only block gives it the head).
//! - Presence: a joining connection with a presence name that is new to the channel makes
//!   the other members get `presence{join:[name]}` ([`HubEvent::Joined`]); the joiner gets
//!   the whole list in one `presence` frame after its `subscribed` and replay (when the list
//!   is not empty). On SSE the same JSON travels as `event: presence` without an id.
//!   Leaves follow [`HubEvent::Left`]: at once on `unsub`, after
//!   [`HubConfig::presence_grace`] when the name's last connection dropped.
//! - Who said it: every channel message a client published carries its publisher's user
//!   as the server authenticated it (the connection's [`Principal`]), kept with it in the
//!   log so that replays carry it too: `"from":"ann"` in the WebSocket `msg` and in a poll's
//!   events, an `event: from` block just before the message on SSE (data
//!   `{"ch":..,"pos":"EP:OFF","from":"ann"}`; an `EventSource` listens for `from`, and
//!   consumers that do not see the message events they always saw). None for anonymous
//!   clients, trusted server-side publishes and channels listed in
//!   [`HubConfig::hide_publisher`]; the field is then absent, so those frames are unchanged.
//! - Publishes: the broadcast `msg` (to the publisher too, when it is a member) is queued
//!   before the publisher's `ack`; a repeated client `id` of the same user (or, for an
//!   anonymous client, of the same connection) is acknowledged again with the position of
//!   the first and not published; ids are remembered in a bounded window
//!   ([`HubConfig::dedup_window`]), across channels.
//! - Each channel's frames reach a connection in order: a connection queues each
//!   [`SlowConsumer`](crate::policy::SlowConsumer) policy in its own lane, and a channel's frames use one lane. Replies
//!   that belong to no channel (`ack`, `err`, `pong`) use the `Disconnect` lane.
//! - Memory is bounded: outboxes ([`HubConfig::outbox`], per lane), logs
//!   ([`HubConfig::log`]), the dedup window, presence lists, channels per connection and
//!   channels per hub.
//!
//! # Example
//!
//! Two WebSocket clients; one publishes, the other receives the `msg`; then a third
//! resumes from a position and gets only what it missed.
//!
//! ```
//! use tidewire::hub::{AllowAll, Hub, HubConfig, HubEvent, Principal, Transport};
//! use tidewire::Instant;
//!
//! let now = Instant::now();
//! let mut hub = Hub::new(HubConfig::default(), AllowAll, 0x5eed);
//! let ann = hub.connect(now, Transport::WebSocket, Principal::user("ann"));
//! let bob = hub.connect(now, Transport::WebSocket, Principal::user("bob"));
//! hub.handle_envelope(now, bob, br#"{"op":"sub","ch":"room:1"}"#);
//! hub.handle_envelope(now, ann, br#"{"op":"pub","ch":"room:1","id":"m1","data":{"t":"hi"},"ref":1}"#);
//! hub.handle_envelope(now, ann, br#"{"op":"pub","ch":"room:1","data":{"t":"again"}}"#);
//!
//! // The adapter's drain: events, then the frames of each ready connection.
//! let mut frames = Vec::new();
//! while let Some(ev) = hub.poll_event() {
//!     assert!(matches!(ev, HubEvent::Published { .. } | HubEvent::Joined { .. }));
//! }
//! while let Some(conn) = hub.poll_ready() {
//!     while let Some(frame) = hub.pull(conn) {
//!         frames.push((conn, String::from_utf8(frame.to_vec()).unwrap()));
//!     }
//! }
//! let epoch = hub.log("room:1").unwrap().epoch();
//! let for_bob: Vec<&str> = frames.iter().filter(|f| f.0 == bob).map(|f| f.1.as_str()).collect();
//! assert!(for_bob[0].starts_with(r#"{"op":"subscribed","ch":"room:1","recovered":true"#));
//! // The message carries its publisher as the server authenticated it: `"from":"ann"`.
//! assert_eq!(for_bob[2], format!(r#"{{"op":"msg","ch":"room:1","ep":"{epoch}","off":1,"from":"ann","data":{{"t":"hi"}}}}"#));
//! assert!(frames.iter().any(|f| f.0 == ann && f.1 == format!(r#"{{"op":"ack","ref":1,"ep":"{epoch}","off":1}}"#)));
//!
//! // Cy saw offset 1 before its connection dropped: it resumes and gets offset 2 only.
//! let cy = hub.connect(now, Transport::WebSocket, Principal::anonymous());
//! let sub = format!(r#"{{"op":"sub","ch":"room:1","pos":{{"ep":"{epoch}","off":1}}}}"#);
//! hub.handle_envelope(now, cy, sub.as_bytes());
//! let got: Vec<_> = std::iter::from_fn(|| hub.pull(cy)).collect();
//! assert!(got[0].starts_with(br#"{"op":"subscribed","ch":"room:1","recovered":true"#));
//! assert!(got[1].starts_with(br#"{"op":"msg","ch":"room:1""#) && got[1].ends_with(br#""off":2,"from":"ann","data":{"t":"again"}}"#));
//! assert!(got[2].starts_with(br#"{"op":"presence""#)); // who is there: bob (ann never joined)
//! assert_eq!(got.len(), 3);
//! ```

mod authz;
pub mod bus;
mod channel;
mod config;
mod conn;
pub mod envelope;
mod join;
mod outcome;
mod presence;
mod restore;
mod route;
#[cfg(test)]
mod tests;
mod vet;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

pub use authz::{Access, AllowAll, Authorize, DemoAuth, JoinVerdict, Principal};
pub use bus::{BusAction, BusHistory, BusToken};
pub use config::HubConfig;
pub use conn::{ConnId, Transport};
pub use join::{JoinDecision, JoinId, JoinRefusal};
pub use outcome::{HubError, HubEvent, HubStats, Subscription};
pub use vet::{PublishDecision, PublishId, PublishRefusal, PublishRequest};

use crate::envelope::{ClientMessage, ServerMessageRef};
use crate::policy::dedup::RecentIds;
use crate::policy::heartbeat::Heartbeat;
use crate::policy::outbox::OutboxCounters;
use crate::policy::ratelimit::RateLimit;
use crate::replay::{Position, ReplayLog};
use crate::rng::Rng;
use crate::time::{Instant, Monotonic, TimerQueue};
use crate::ws::CloseCode;
use channel::Channel;
use conn::{Conn, ConnMap, Lanes, Scope};

/// The deadlines of the hub, one [`TimerQueue`] for all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Timer {
    /// A polling client's expiry.
    Poll(ConnId),
    /// A presence entry's grace period (id from `Hub::graces`).
    Grace(u64),
    /// The oldest message of a channel's log ages out (channel id).
    Trim(u64),
    /// A held publish waits no longer for the application ([`PublishId`]).
    Vet(u64),
    /// A join waits no longer for the application ([`JoinId`]).
    Join(u64),
}

/// The hub. See the [module docs](self) for the method groups, the run loop and the
/// guarantees.
pub struct Hub {
    cfg: HubConfig,
    auth: Box<dyn Authorize + Send>,
    clock: Option<Monotonic>,
    rng: Rng,
    conns: ConnMap,
    next_conn: u64,
    channels: HashMap<Arc<str>, Channel>,
    /// Where the logs of channels dropped while idle ended (bounded, oldest forgotten
    /// first): a channel used again continues there, in the same epoch, so a client that
    /// was up to date is still up to date.
    dropped: HashMap<Arc<str>, Position>,
    dropped_order: VecDeque<Arc<str>>,
    /// Channel id → name, for trim timers.
    channel_ids: HashMap<u64, Arc<str>>,
    next_channel: u64,
    timers: TimerQueue<Timer>,
    /// Grace timer id → (channel, name).
    graces: HashMap<u64, (Arc<str>, Arc<str>)>,
    next_grace: u64,
    dedup: RecentIds<(Scope, Box<str>)>,
    /// Positions of remembered ids; pruned to the ids `dedup` still holds.
    dedup_pos: HashMap<(Scope, Box<str>), Position>,
    ready: VecDeque<ConnId>,
    events: VecDeque<HubEvent>,
    stats: HubStats,
    /// With a bus ([`Hub::with_bus`]).
    bus: Option<bus::BusState>,
    /// Publishes held for the application ([`HubConfig::vet_publishes`]).
    vetting: vet::Vetting,
    /// Joins waiting for the application's decision ([`JoinVerdict::Defer`]).
    joins: join::Joins,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("connections", &self.conns.len())
            .field("channels", &self.channels.len())
            .field("timers", &self.timers.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// An empty hub with the application's authorization policy. New channel logs draw
    /// their epochs from a generator seeded with `seed` (adapters seed it from OS entropy,
    /// so that a restarted server starts new epochs; tests use a fixed seed).
    #[must_use]
    pub fn new(cfg: HubConfig, auth: impl Authorize + Send + 'static, seed: u64) -> Self {
        let dedup = RecentIds::new(cfg.dedup_window);
        Self {
            cfg,
            auth: Box::new(auth),
            clock: None,
            rng: Rng::from_u64(seed),
            conns: ConnMap::default(),
            next_conn: 1,
            channels: HashMap::new(),
            dropped: HashMap::new(),
            dropped_order: VecDeque::new(),
            channel_ids: HashMap::new(),
            next_channel: 1,
            timers: TimerQueue::new(),
            graces: HashMap::new(),
            next_grace: 1,
            dedup,
            dedup_pos: HashMap::new(),
            ready: VecDeque::new(),
            events: VecDeque::new(),
            stats: HubStats::default(),
            bus: None,
            vetting: vet::Vetting::default(),
            joins: join::Joins::default(),
        }
    }

    fn advance(&mut self, now: Instant) -> Instant {
        self.clock.get_or_insert_with(|| Monotonic::new(now)).advance(now)
    }

    // -----------------------------------------------------------------------------------
    // Connections

    /// Registers a connection whose upgrade (WebSocket 101, SSE 200, a poll) was
    /// authenticated as `principal`. Its presence name is the principal's user (anonymous:
    /// none); see [`set_presence_name`](Self::set_presence_name).
    pub fn connect(&mut self, now: Instant, transport: Transport, principal: Principal) -> ConnId {
        let now = self.advance(now);
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let name: Option<Arc<str>> = principal.user.as_deref().map(Arc::from);
        let scope = name.clone().map_or(Scope::Conn(id), Scope::User);
        let expiry =
            (transport == Transport::Poll).then(|| Heartbeat::new(self.cfg.poll_expiry, now));
        if let Some(at) = expiry.as_ref().and_then(Heartbeat::poll_timeout) {
            self.timers.set(Timer::Poll(id), at);
        }
        let rate = match transport {
            Transport::WebSocket => self.cfg.rate_limit.map(|c| RateLimit::new(c, now)),
            _ => None,
        };
        let conn = Conn {
            transport,
            principal,
            scope,
            name,
            channels: std::collections::BTreeMap::new(),
            out: Lanes::new(self.cfg.outbox),
            ready: false,
            rate,
            expiry,
        };
        self.conns.insert(id, conn);
        id
    }

    /// Sets the name the connection's *future* joins show in presence lists (`None`: no
    /// presence). Joins already made keep their name. Returns `false` for an unknown
    /// connection.
    pub fn set_presence_name(&mut self, conn: ConnId, name: Option<&str>) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else { return false };
        c.name = name.map(Arc::from);
        true
    }

    /// The connection's transport ended (WebSocket closed, SSE response gone, or the
    /// application decided). Leaves every channel; its presence names stay for the grace
    /// period. Unknown connections are ignored.
    pub fn disconnect(&mut self, now: Instant, conn: ConnId) {
        let now = self.advance(now);
        self.remove(now, conn, true);
    }

    /// A polling client polled: it is alive (re-arms its expiry). Any other call for a
    /// connection is a no-op.
    pub fn touch(&mut self, now: Instant, conn: ConnId) {
        let now = self.advance(now);
        let Some(hb) = self.conns.get_mut(&conn).and_then(|c| c.expiry.as_mut()) else { return };
        hb.on_inbound(now);
        if let Some(at) = hb.poll_timeout() {
            self.timers.set(Timer::Poll(conn), at);
        }
    }

    // -----------------------------------------------------------------------------------
    // Inputs

    /// A WebSocket text message from `conn`: one envelope (`sub`, `unsub`, `pub`, `ping`).
    ///
    /// Every inbound envelope costs one token of the connection's rate limit; over it, the
    /// connection is closed with 1008 ([`HubEvent::Close`]). A malformed or unknown message
    /// is answered with `err` (code `bad_json`, `unknown_op` or `bad_message`, and its `ref`
    /// when readable) and changes nothing; so is a refused `sub` or `pub` ([`HubError`]
    /// codes). `pub` is answered with `ack` (with the position), `ping` with `pong`, `sub`
    /// with `subscribed` (see the [module docs](self)); `unsub` has no answer. Ignored for
    /// an unknown or non-WebSocket connection.
    pub fn handle_envelope(&mut self, now: Instant, conn: ConnId, frame: &[u8]) {
        let now = self.advance(now);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.transport != Transport::WebSocket {
            return;
        }
        if let Some(rl) = &mut c.rate
            && rl.check(now, 1).is_err()
        {
            self.stats.rate_limited += 1;
            self.close(now, conn, CloseCode::POLICY, "rate limit exceeded");
            return;
        }
        match ClientMessage::decode(frame) {
            Err(e) => self.reply_err(now, conn, e.reference, e.code, &e.msg),
            Ok(ClientMessage::Sub { ch, pos, reference }) => {
                if let Err(e) = self.join(now, conn, &ch, pos, reference) {
                    self.reply_err(now, conn, reference, e.code(), &e.to_string());
                }
            }
            Ok(ClientMessage::Unsub { ch, .. }) => {
                self.unsubscribe(now, conn, &ch);
            }
            Ok(ClientMessage::Pub { ch, id, data, reference }) => {
                self.client_publish(now, conn, &ch, id.as_deref(), &data, reference);
            }
            Ok(ClientMessage::Ping { reference }) => {
                self.reply(now, conn, ServerMessageRef::Pong { reference }.encode());
            }
        }
    }

    /// Fires every deadline `<= now`: polling clients that stopped polling expire
    /// ([`HubEvent::Expired`]), presence entries whose grace ran out leave
    /// ([`HubEvent::Left`] and a `presence` frame to the members), old messages leave the
    /// logs (and idle channels are dropped). Spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        while let Some((timer, _)) = self.timers.pop_expired(now) {
            match timer {
                Timer::Poll(id) => self.poll_deadline(now, id),
                Timer::Grace(g) => self.grace_deadline(now, g),
                Timer::Trim(cid) => self.trim_deadline(now, cid),
                Timer::Vet(id) => self.vet_deadline(now, id),
                Timer::Join(id) => self.join_deadline(now, id),
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Commands

    /// Joins `conn` to `ch`, resuming after `pos` when given: the subscription of an SSE
    /// stream or a polling client (from the URL; `Last-Event-ID` or `pos=`), and the same
    /// path a WebSocket `sub` takes. Frames for the connection are queued as described in
    /// the [module docs](self) (none for polling: read [`log`](Self::log)). Joining a
    /// channel the connection is in already changes nothing and returns its head. When the
    /// policy defers ([`JoinVerdict::Defer`]), the join waits for the application:
    /// [`Subscription::awaiting`] names it (see [`decide_join`](Self::decide_join)).
    ///
    /// # Errors
    /// [`HubError`]: unknown connection, bad name, forbidden, too many channels, too many
    /// pending joins.
    pub fn subscribe(
        &mut self,
        now: Instant,
        conn: ConnId,
        ch: &str,
        pos: Option<Position>,
    ) -> Result<Subscription, HubError> {
        let now = self.advance(now);
        self.join(now, conn, ch, pos, None)
    }

    /// Removes `conn` from `ch`; its presence name leaves at once (no grace: it left on
    /// purpose). A join of `ch` waiting for the application is cancelled
    /// ([`HubEvent::JoinDecided`]). Returns whether it was a member (or was joining).
    pub fn unsubscribe(&mut self, now: Instant, conn: ConnId, ch: &str) -> bool {
        let now = self.advance(now);
        if self.cancel_join(now, conn, ch) {
            return true;
        }
        let Some(held) = self.conns.get_mut(&conn).and_then(|c| c.channels.remove(ch)) else {
            return false;
        };
        self.leave(now, conn, ch, held, false);
        true
    }

    /// The trusted server-side publish (`POST /api/publish`, a ticker): appends `data` to
    /// `ch`'s log and broadcasts it. No authorization and no dedup.
    ///
    /// # Errors
    /// [`HubError::BadChannel`] or [`HubError::ChannelLimit`].
    pub fn publish(
        &mut self,
        now: Instant,
        ch: &str,
        data: &RawValue,
    ) -> Result<Position, HubError> {
        let now = self.advance(now);
        self.append(now, ch, data, None)
    }

    /// [`publish`](Self::publish) for a body that should hold one JSON value (the body of
    /// `POST /api/publish`): it is validated, then published as is.
    ///
    /// # Errors
    /// [`HubError::BadJson`] when `json` is not one JSON value; as [`publish`](Self::publish).
    pub fn publish_json(
        &mut self,
        now: Instant,
        ch: &str,
        json: &[u8],
    ) -> Result<Position, HubError> {
        let data: &RawValue = serde_json::from_slice(json).map_err(|_| HubError::BadJson)?;
        self.publish(now, ch, data)
    }

    /// A client's publish that arrived without a hub connection (e.g. `POST
    /// /api/publish` with the client's credentials): checked by the [`Authorize`] policy and
    /// deduplicated by `id` in the same window as WebSocket publishes of the same user (an
    /// anonymous principal's ids share one scope). A duplicate returns the position of the
    /// first (or the channel's head, when the window no longer holds that position).
    ///
    /// # Errors
    /// [`HubError::Forbidden`], [`HubError::BadChannel`], [`HubError::BadId`],
    /// [`HubError::BadJson`] and the errors of [`publish`](Self::publish).
    pub fn publish_as(
        &mut self,
        now: Instant,
        principal: &Principal,
        ch: &str,
        id: Option<&str>,
        json: &[u8],
    ) -> Result<Position, HubError> {
        let now = self.advance(now);
        let data: &RawValue = serde_json::from_slice(json).map_err(|_| HubError::BadJson)?;
        let scope =
            principal.user.as_deref().map_or(Scope::Anonymous, |u| Scope::User(Arc::from(u)));
        let pos = self.checked_publish(now, principal, scope, ch, id, data)?;
        Ok(pos.unwrap_or_else(|| {
            self.log(ch).map_or(Position::start(crate::replay::Epoch(0)), ReplayLog::head)
        }))
    }

    /// Whether `principal` may read or write `ch` by the hub's policy (for answering 403
    /// before an SSE 200 or a poll without joining).
    #[must_use]
    pub fn authorize(&self, principal: &Principal, ch: &str, access: Access) -> bool {
        match access {
            Access::Read => self.auth.can_read(principal, ch),
            _ => self.auth.can_write(principal, ch),
        }
    }

    // -----------------------------------------------------------------------------------
    // Outputs

    /// A connection that has frames waiting: pull them with [`pull`](Self::pull). A
    /// connection is named once each time a frame is queued for it after it was last
    /// named. New after `handle_envelope`, `subscribe`, `publish`, `disconnect` (presence)
    /// and `handle_timeout`.
    #[must_use]
    pub fn poll_ready(&mut self) -> Option<ConnId> {
        while let Some(id) = self.ready.pop_front() {
            if let Some(c) = self.conns.get_mut(&id) {
                c.ready = false;
                if !c.out.is_empty() {
                    return Some(id);
                }
            }
        }
        None
    }

    /// The next frame for `conn`, in its transport's format: a JSON envelope (send it as
    /// a WebSocket text message; it is valid UTF-8) or an SSE block (write it to the
    /// response body). `None` when nothing is queued or the connection is unknown.
    #[must_use]
    pub fn pull(&mut self, conn: ConnId) -> Option<Bytes> {
        self.conns.get_mut(&conn)?.out.pop()
    }

    /// The next event; see [`HubEvent`]. New after any mutation.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<HubEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout): the earliest polling expiry,
    /// presence grace or log trim. Changes after any mutation.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    // -----------------------------------------------------------------------------------
    // Getters

    /// The replay log of `ch`, if the channel exists: a poll reads
    /// `log.since(pos)` (or `log.head()`); an SSE stream may resume from it.
    #[must_use]
    pub fn log(&self, ch: &str) -> Option<&ReplayLog> {
        self.channels.get(ch).map(|c| &c.log)
    }

    /// The connections in `ch`, in id order.
    pub fn members(&self, ch: &str) -> impl Iterator<Item = ConnId> + '_ {
        self.channels.get(ch).into_iter().flat_map(|c| c.members.iter().copied())
    }

    /// The presence list of `ch` (names in grace included), sorted.
    pub fn presence(&self, ch: &str) -> impl Iterator<Item = &str> + '_ {
        self.channels.get(ch).into_iter().flat_map(|c| c.presence.names().map(|n| &**n))
    }

    /// The channels `conn` has joined, sorted.
    pub fn channels_of(&self, conn: ConnId) -> impl Iterator<Item = &str> + '_ {
        self.conns.get(&conn).into_iter().flat_map(|c| c.channels.keys().map(|k| &**k))
    }

    /// Whether `conn` is connected.
    #[must_use]
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// The transport of `conn`.
    #[must_use]
    pub fn transport(&self, conn: ConnId) -> Option<Transport> {
        self.conns.get(&conn).map(|c| c.transport)
    }

    /// The principal of `conn`.
    #[must_use]
    pub fn principal(&self, conn: ConnId) -> Option<&Principal> {
        self.conns.get(&conn).map(|c| &c.principal)
    }

    /// The outbox counters of `conn` (queued, dropped, conflated, sent), summed over its
    /// queues.
    #[must_use]
    pub fn counters(&self, conn: ConnId) -> Option<OutboxCounters> {
        self.conns.get(&conn).map(|c| c.out.counters())
    }

    /// Frames and bytes queued for `conn`.
    #[must_use]
    pub fn buffered(&self, conn: ConnId) -> Option<(usize, usize)> {
        self.conns.get(&conn).map(|c| (c.out.len(), c.out.bytes()))
    }

    /// Connections.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Channels.
    #[must_use]
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Hub-wide counters.
    #[must_use]
    pub fn stats(&self) -> HubStats {
        self.stats
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }
}
