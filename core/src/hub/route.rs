//! The hub's internals: joining and leaving, fan-out, presence announcements, replies and
//! deadlines. Every frame goes through [`enqueue`], which routes it to the connection's
//! lane and marks the connection ready.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::authz::{JoinVerdict, Principal};
use super::bus::{BusAction, LiveBacklog};
use super::channel::{self, Channel, Follow};
use super::conn::{Conn, ConnId, ConnMap, Scope, Transport};
use super::presence::{Arrival, Departure};
use super::{Hub, HubError, HubEvent, Subscription, Timer};
use crate::envelope::ServerMessageRef;
use crate::policy::heartbeat::Beat;
use crate::policy::outbox::{PushOutcome, SlowConsumer};
use crate::replay::{Epoch, Position, ReplayLog};
use crate::sse::SseStream;
use crate::sse::encode;
use crate::time::Instant;
use crate::ws::{CloseCode, Utf8Bytes};

/// Queues `frame` for `id`; `false` when the queue overflowed under `Disconnect` (the
/// caller MUST close the connection with 4100).
fn enqueue(
    conns: &mut ConnMap,
    ready: &mut VecDeque<ConnId>,
    id: ConnId,
    policy: SlowConsumer,
    frame: Bytes,
    key: Option<Arc<str>>,
) -> bool {
    let Some(conn) = conns.get_mut(&id) else { return true };
    queue(conn, ready, id, policy, frame, key)
}

/// Queues `frame` on `conn` (whose id is `id`) and marks it ready; `false` on overflow under
/// `Disconnect`. Once per receiver of a broadcast: inlined into the fan-out loop, which
/// codegen stopped doing by itself as the crate grew (5% of a 100-receiver fan-out).
#[inline]
fn queue(
    conn: &mut Conn,
    ready: &mut VecDeque<ConnId>,
    id: ConnId,
    policy: SlowConsumer,
    frame: Bytes,
    key: Option<Arc<str>>,
) -> bool {
    if conn.out.push(policy, frame, key) == PushOutcome::Disconnect {
        return false;
    }
    if !conn.ready && !conn.out.is_empty() {
        conn.ready = true;
        ready.push_back(id);
    }
    true
}

/// The SSE block that tells a stream its position is gone.
fn sse_reset(ch: &str, head: Position) -> Option<Bytes> {
    #[derive(Serialize)]
    struct Reset<'a> {
        ch: &'a str,
        pos: String,
        recovered: bool,
    }
    let data = serde_json::to_vec(&Reset { ch, pos: head.to_string(), recovered: false }).ok()?;
    SseStream::encode(head, Some("reset"), &Bytes::from(data)).ok()
}

/// A `presence` frame in both formats (SSE: `event: presence`, the envelope as data).
fn presence_frames(ch: &str, join: &[String], leave: &[String]) -> (Bytes, Option<Bytes>) {
    let ws = ServerMessageRef::Presence { ch, join, leave }.encode();
    let sse = Utf8Bytes::try_from_bytes(ws.clone())
        .ok()
        .and_then(|d| encode::event(None, Some("presence"), d).ok())
        .map(|e| e.to_bytes());
    (ws, sse)
}

/// The WebSocket `msg` of a logged message.
fn ws_msg(ch: &str, pos: Position, from: Option<&str>, data: &Bytes) -> Option<Bytes> {
    let data: &RawValue = serde_json::from_slice(data).ok()?;
    Some(ServerMessageRef::Msg { ch, pos, from, data }.encode())
}

/// The SSE frame of a logged message: its event block (`id: EP:OFF`, `event: CH`, the data
/// as published), preceded, when the publisher is shown, by an `event: from` block without
/// an id whose data is `{"ch":CH,"pos":"EP:OFF","from":USER}` — in the same frame, so that
/// the two are never parted by a queue. An `EventSource` reads the publisher with a `from`
/// listener and pairs it with the next message by position; a consumer that does not listen
/// for `from` sees exactly the events it saw before.
pub(super) fn sse_msg(pos: Position, ch: &str, from: Option<&str>, data: &Bytes) -> Option<Bytes> {
    let msg = SseStream::encode(pos, Some(ch), data).ok()?;
    // A channel named `from` would mistake the block for one of its messages.
    let Some(from) = from.filter(|_| ch != "from") else { return Some(msg) };
    #[derive(Serialize)]
    struct From<'a> {
        ch: &'a str,
        pos: String,
        from: &'a str,
    }
    let json = serde_json::to_vec(&From { ch, pos: pos.to_string(), from }).ok()?;
    let head = Utf8Bytes::try_from_bytes(Bytes::from(json)).ok()?;
    let head = encode::event(None, Some("from"), head).ok()?;
    let mut out = bytes::BytesMut::with_capacity(head.len() + msg.len());
    for chunk in head.chunks() {
        out.extend_from_slice(&chunk);
    }
    out.extend_from_slice(&msg);
    Some(out.freeze())
}

/// A frame and its conflation key.
type Keyed = (Bytes, Option<Arc<str>>);

/// Where a joining subscriber starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// After the position it brought (the messages it missed are replayed), or at the
    /// head (`None`).
    Brought(Option<Position>),
    /// It brought none and the application decided its join later: it starts as if it
    /// had joined when it asked, at the head as it was then (`subscribed` with that
    /// position, on SSE an id-only block with it), and what was published since is
    /// replayed. So a message published between the request and the decision arrives
    /// once, after the join.
    AskedAt(Position),
}

/// What a subscription starts with, before any live message: whether the start could be
/// served, how many messages were missed, and the frames that say so in `transport`'s format
/// (WebSocket: `subscribed` then the replay; SSE: the replay, a `reset` block, or an id-only
/// block with the head; polling: nothing).
fn opening(
    log: &ReplayLog,
    ch: &Arc<str>,
    transport: Transport,
    start: Start,
    conflate: Option<&Arc<str>>,
) -> (bool, usize, Vec<Keyed>) {
    let head = log.head();
    let (pos, asked_at) = match start {
        Start::Brought(pos) => (pos, None),
        Start::AskedAt(at) => (Some(at), Some(at)),
    };
    let missed = pos.map(|p| log.since_entries(p));
    let recovered = !matches!(missed, Some(Err(_)));
    let mut frames = Vec::new();
    if transport == Transport::Poll {
        return (recovered, 0, frames);
    }
    if transport == Transport::WebSocket {
        let shown = asked_at.filter(|_| recovered).unwrap_or(head);
        let subscribed = ServerMessageRef::Subscribed { ch, recovered, pos: Some(shown) };
        frames.push((subscribed.encode(), None));
    }
    let mut replayed = 0;
    match missed {
        Some(Ok(it)) => {
            if transport == Transport::Sse
                && let Some(at) = asked_at
            {
                frames.extend(encode::id_only(&at.to_string()).ok().map(|f| (f, None)));
            }
            for e in it {
                let from = e.from.map(|f| &**f);
                let frame = match transport {
                    Transport::WebSocket => ws_msg(ch, e.pos, from, e.data),
                    _ => sse_msg(e.pos, ch, from, e.data),
                };
                replayed += 1;
                frames.extend(frame.map(|f| (f, conflate.cloned())));
            }
        }
        Some(Err(_)) if transport == Transport::Sse => {
            frames.extend(sse_reset(ch, head).map(|f| (f, None)));
        }
        None if transport == Transport::Sse => {
            frames.extend(encode::id_only(&head.to_string()).ok().map(|f| (f, None)));
        }
        _ => {}
    }
    (recovered, replayed, frames)
}

impl Hub {
    /// The channel named `ch`, created (with a fresh epoch) if needed.
    pub(super) fn channel_entry(&mut self, ch: &str) -> Result<Arc<str>, HubError> {
        if !channel::valid_name(ch, self.cfg.max_channel_name) {
            return Err(HubError::BadChannel);
        }
        if let Some((key, _)) = self.channels.get_key_value(ch) {
            return Ok(key.clone());
        }
        if self.channels.len() >= self.cfg.max_channels {
            return Err(HubError::ChannelLimit);
        }
        let key: Arc<str> = Arc::from(ch);
        let id = self.next_channel;
        self.next_channel += 1;
        // A zero epoch is avoided so that "0:0" never matches by accident.
        let epoch = Epoch(self.rng.next_u64().max(1));
        // Nothing was published to a dropped channel (a publish creates it): its log goes
        // on from where it ended.
        let log = match self.dropped.remove(ch) {
            Some(end) if self.bus.is_none() => ReplayLog::continuing(end, self.cfg.log),
            _ => ReplayLog::new(epoch, self.cfg.log),
        };
        let epoch = log.epoch();
        let follow = match self.bus.as_mut() {
            None => Follow::Local,
            Some(bus) => {
                // With a bus the log is a mirror: ask for it (now, or once the bus is up).
                if bus.up {
                    bus.actions.push_back(BusAction::Follow {
                        ch: key.clone(),
                        epoch,
                        known: None,
                    });
                }
                Follow::Syncing
            }
        };
        let c = Channel {
            id,
            log,
            policy: channel::policy_for(&self.cfg.slow_consumers, ch),
            members: std::collections::BTreeSet::new(),
            presence: super::presence::Presence::default(),
            follow,
            backlog: LiveBacklog::default(),
            waiting: Vec::new(),
            asking: 0,
        };
        self.channels.insert(key.clone(), c);
        self.channel_ids.insert(id, key.clone());
        Ok(key)
    }

    /// Keeps where `ch`'s log ended, within `max_channels` remembered channels.
    fn remember_dropped(&mut self, ch: &str, end: Position) {
        let key: Arc<str> = Arc::from(ch);
        if self.dropped.insert(key.clone(), end).is_none() {
            self.dropped_order.push_back(key);
        }
        while self.dropped_order.len() > self.cfg.max_channels.max(1) {
            if let Some(old) = self.dropped_order.pop_front() {
                // Only forget it if it was not used (and dropped) again since.
                if !self.channels.contains_key(&old) {
                    self.dropped.remove(&old);
                }
            }
        }
    }

    /// Drops `ch` when it holds nothing any more.
    pub(super) fn collect(&mut self, ch: &str) {
        if self.channels.get(ch).is_some_and(Channel::is_idle)
            && let Some(c) = self.channels.remove(ch)
        {
            self.timers.cancel(Timer::Trim(c.id));
            self.channel_ids.remove(&c.id);
            if self.bus.is_none() {
                self.remember_dropped(ch, c.log.head());
            }
            if let Some(bus) = self.bus.as_mut() {
                let name: Arc<str> = Arc::from(ch);
                bus.actions.retain(|a| !matches!(a, BusAction::Follow { ch, .. } | BusAction::Fetch { ch, .. } if *ch == name));
                if bus.up {
                    bus.actions.push_back(BusAction::Unfollow { ch: name });
                }
            }
        }
    }

    /// A join (`sub`, [`Hub::subscribe`]): checked by the policy, then made now or held
    /// for the application's decision (`reference`: the `sub`'s, for its answer).
    pub(super) fn join(
        &mut self,
        now: Instant,
        id: ConnId,
        ch: &str,
        pos: Option<Position>,
        reference: Option<u64>,
    ) -> Result<Subscription, HubError> {
        let conn = self.conns.get(&id).ok_or(HubError::UnknownConn)?;
        if !channel::valid_name(ch, self.cfg.max_channel_name) {
            return Err(HubError::BadChannel);
        }
        match self.auth.join_verdict(&conn.principal, ch) {
            JoinVerdict::Allow => {}
            JoinVerdict::Refuse => return Err(HubError::Forbidden),
            JoinVerdict::Defer if conn.channels.contains_key(ch) => {}
            JoinVerdict::Defer => return self.ask_join(now, id, ch, pos, reference),
        }
        self.join_authorized(now, id, ch, Start::Brought(pos))
    }

    /// The part of a join after its authorization.
    pub(super) fn join_authorized(
        &mut self,
        now: Instant,
        id: ConnId,
        ch: &str,
        start: Start,
    ) -> Result<Subscription, HubError> {
        let conn = self.conns.get(&id).ok_or(HubError::UnknownConn)?;
        let transport = conn.transport;
        if conn.channels.contains_key(ch) {
            let c = self.channels.get(ch).ok_or(HubError::BadChannel)?;
            let head = c.log.head();
            // Asked again while the first join waits for the log: that join answers both
            // (one `subscribed`, once the log has loaded).
            let waiting = c.waiting.iter().any(|(w, _)| *w == id);
            if !waiting && transport == Transport::WebSocket {
                let frame =
                    ServerMessageRef::Subscribed { ch, recovered: true, pos: Some(head) }.encode();
                self.reply(now, id, frame);
            }
            return Ok(at_head(head, waiting));
        }
        // Joins waiting for the application count: each may become a channel.
        let asking = self.joins.of(id).len();
        if conn.channels.len() + asking >= self.cfg.max_channels_per_conn {
            return Err(HubError::TooManyChannels);
        }
        let name = conn.name.clone();
        let key = self.channel_entry(ch)?;
        let Some(c) = self.channels.get_mut(&key) else { return Err(HubError::BadChannel) };
        if c.follow == Follow::Syncing {
            // The mirror is loading: the join completes when it is (`bus_history`).
            let head = c.log.head();
            c.waiting.push((id, start));
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.channels.insert(key, None);
            }
            return Ok(at_head(head, true));
        }
        let head = c.log.head();
        let policy = c.policy;
        let conflate = (policy == SlowConsumer::Conflate).then(|| key.clone());

        let (recovered, replayed, mut frames) =
            opening(&c.log, &key, transport, start, conflate.as_ref());
        c.members.insert(id);

        // Presence: a new name is announced to the others; the joiner gets the list.
        let mut held = None;
        let mut joined = None;
        if let Some(name) = name {
            match c.presence.arrive(&name, self.cfg.max_presence) {
                Arrival::Joined => {
                    joined = Some(name.clone());
                    held = Some(name);
                }
                Arrival::Kept(grace) => {
                    if let Some(g) = grace {
                        self.timers.cancel(Timer::Grace(g));
                        self.graces.remove(&g);
                    }
                    held = Some(name);
                }
                Arrival::Full => {}
            }
        }
        if transport != Transport::Poll && !c.presence.is_empty() {
            let names: Vec<String> = c.presence.names().map(ToString::to_string).collect();
            let (ws, sse) = presence_frames(&key, &names, &[]);
            let frame = if transport == Transport::WebSocket { Some(ws) } else { sse };
            frames.extend(frame.map(|f| (f, None)));
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.channels.insert(key.clone(), held);
        }
        let mut ok = true;
        for (frame, k) in frames {
            ok = ok && enqueue(&mut self.conns, &mut self.ready, id, policy, frame, k);
        }
        if let Some(name) = joined {
            self.announce(now, &key, Some(id), &[name.to_string()], &[]);
            self.events.push_back(HubEvent::Joined { ch: key.clone(), member: name });
        }
        if !ok {
            self.too_slow(now, id);
        }
        Ok(Subscription { pos: head, recovered, replayed, pending: false, awaiting: None })
    }

    /// `id` is no longer in `ch`; `held` is the presence name it held there.
    pub(super) fn leave(
        &mut self,
        now: Instant,
        id: ConnId,
        ch: &str,
        held: Option<Arc<str>>,
        grace: bool,
    ) {
        let Some(c) = self.channels.get_mut(ch) else { return };
        c.members.remove(&id);
        // A join that waited for the channel's log (with a bus) is no longer wanted.
        c.waiting.retain(|w| w.0 != id);
        if let Some(name) = held {
            let timer = (grace && !self.cfg.presence_grace.is_zero()).then(|| {
                self.next_grace += 1;
                self.next_grace
            });
            match c.presence.depart(&name, timer) {
                Departure::Left => {
                    let key = self.channels.get_key_value(ch).map(|(k, _)| k.clone());
                    self.announce(now, ch, None, &[], &[name.to_string()]);
                    if let Some(key) = key {
                        self.events.push_back(HubEvent::Left { ch: key, member: name });
                    }
                }
                Departure::Grace(g) => {
                    if let Some((key, _)) = self.channels.get_key_value(ch) {
                        self.graces.insert(g, (key.clone(), name));
                        self.timers.set(Timer::Grace(g), now + self.cfg.presence_grace);
                    }
                }
                Departure::Stays => {}
            }
        }
        self.collect(ch);
    }

    /// Drops a connection from every channel (presence in grace when `grace`).
    pub(super) fn remove(&mut self, now: Instant, id: ConnId, grace: bool) -> bool {
        let Some(conn) = self.conns.remove(&id) else { return false };
        self.timers.cancel(Timer::Poll(id));
        self.drop_vetted(id);
        self.drop_joins(now, id);
        for (ch, held) in conn.channels {
            self.leave(now, id, &ch, held, grace);
        }
        true
    }

    /// Drops a connection and asks the adapter to close it.
    pub(super) fn close(
        &mut self,
        now: Instant,
        id: ConnId,
        code: CloseCode,
        reason: &'static str,
    ) {
        if self.remove(now, id, true) {
            self.events.push_back(HubEvent::Close { conn: id, code, reason });
        }
    }

    fn too_slow(&mut self, now: Instant, id: ConnId) {
        if self.conns.contains_key(&id) {
            self.stats.too_slow += 1;
            self.close(now, id, CloseCode::TOO_SLOW, "too slow");
        }
    }

    /// Queues a reply that belongs to no channel.
    pub(super) fn reply(&mut self, now: Instant, id: ConnId, frame: Bytes) {
        if !enqueue(&mut self.conns, &mut self.ready, id, SlowConsumer::Disconnect, frame, None) {
            self.too_slow(now, id);
        }
    }

    pub(super) fn reply_err(
        &mut self,
        now: Instant,
        id: ConnId,
        reference: Option<u64>,
        code: &str,
        msg: &str,
    ) {
        self.reply(now, id, ServerMessageRef::Err { reference, code, msg }.encode());
    }

    /// A `pub` envelope: authorize, dedup by client id, append, acknowledge.
    pub(super) fn client_publish(
        &mut self,
        now: Instant,
        id: ConnId,
        ch: &str,
        msg_id: Option<&str>,
        data: &RawValue,
        reference: Option<u64>,
    ) {
        if self.vets() {
            // With or without a bus: the application decides first.
            return self.vet_client_publish(now, id, ch, msg_id, data, reference);
        }
        if self.bus.is_some() {
            if let Err(e) = self.bus_client_publish(id, ch, msg_id, data, reference) {
                self.reply_err(now, id, reference, e.code(), &e.to_string());
            }
            return;
        }
        let Some(conn) = self.conns.get(&id) else { return };
        let (principal, scope) = (conn.principal.clone(), conn.scope.clone());
        match self.checked_publish(now, &principal, scope, ch, msg_id, data) {
            Ok(pos) => self.reply(now, id, ServerMessageRef::Ack { reference, pos }.encode()),
            Err(e) => self.reply_err(now, id, reference, e.code(), &e.to_string()),
        }
    }

    /// A client publish: name, policy, id length, dedup (a duplicate returns the first
    /// position, `None` when that was forgotten), append.
    pub(super) fn checked_publish(
        &mut self,
        now: Instant,
        principal: &Principal,
        scope: Scope,
        ch: &str,
        msg_id: Option<&str>,
        data: &RawValue,
    ) -> Result<Option<Position>, HubError> {
        self.check_publish(Some(principal), ch, msg_id)?;
        let key = msg_id.map(|m| (scope, Box::<str>::from(m)));
        if let Some(k) = &key
            && self.dedup.contains(k)
        {
            self.stats.duplicates += 1;
            return Ok(self.dedup_pos.get(k).copied());
        }
        let from = self.publisher(principal, ch);
        let pos = self.append(now, ch, data, from.as_ref())?;
        if let Some(k) = key {
            self.remember(k, pos);
        }
        Ok(Some(pos))
    }

    /// The checks of every publish: the channel's name, the policy (unless trusted: no
    /// principal), the id's length.
    pub(super) fn check_publish(
        &self,
        principal: Option<&Principal>,
        ch: &str,
        msg_id: Option<&str>,
    ) -> Result<(), HubError> {
        if !channel::valid_name(ch, self.cfg.max_channel_name) {
            return Err(HubError::BadChannel);
        }
        if principal.is_some_and(|p| !self.auth.can_write(p, ch)) {
            return Err(HubError::Forbidden);
        }
        if msg_id.is_some_and(|m| m.len() > self.cfg.max_id_len) {
            return Err(HubError::BadId);
        }
        Ok(())
    }

    pub(super) fn remember(&mut self, key: (Scope, Box<str>), pos: Position) {
        self.dedup.check_and_insert(key.clone());
        self.dedup_pos.insert(key, pos);
        if self.dedup_pos.len() > 2 * self.dedup.capacity() {
            let dedup = &self.dedup;
            self.dedup_pos.retain(|k, _| dedup.contains(k));
        }
    }

    /// The identity a publish by `principal` to `ch` shows: its user, unless the channel
    /// hides publishers ([`HubConfig::hide_publisher`](super::HubConfig::hide_publisher)).
    pub(super) fn publisher(&self, principal: &Principal, ch: &str) -> Option<Arc<str>> {
        let hidden = self.cfg.hide_publisher.iter().any(|p| ch.starts_with(p.as_str()));
        if hidden { None } else { principal.user.as_deref().map(Arc::from) }
    }

    /// Appends to `ch` and fans the message out, encoded once per format; `from` is the
    /// publisher to show.
    pub(super) fn append(
        &mut self,
        now: Instant,
        ch: &str,
        data: &RawValue,
        from: Option<&Arc<str>>,
    ) -> Result<Position, HubError> {
        if self.bus.is_some() {
            // With a bus, only the bus numbers messages (`submit`).
            return Err(HubError::Unavailable);
        }
        let key = self.channel_entry(ch)?;
        let bytes = Bytes::copy_from_slice(data.get().as_bytes());
        self.log_and_fan_out(now, &key, &bytes, data, from).ok_or(HubError::BadChannel)
    }

    /// Appends to `key`'s log (a channel that exists) and fans the message out, encoded
    /// once per format, with its publisher `from`. `None` for an unknown channel.
    pub(super) fn log_and_fan_out(
        &mut self,
        now: Instant,
        key: &Arc<str>,
        bytes: &Bytes,
        data: &RawValue,
        from: Option<&Arc<str>>,
    ) -> Option<Position> {
        let key = key.clone();
        let c = self.channels.get_mut(&key)?;
        let pos = c.log.append_from(now, bytes.clone(), from.cloned());
        let from = from.map(|f| &**f);
        if self.timers.get(Timer::Trim(c.id)).is_none()
            && let Some(at) = c.log.poll_timeout()
        {
            self.timers.set(Timer::Trim(c.id), at);
        }
        let conflate = (c.policy == SlowConsumer::Conflate).then(|| key.clone());
        let mut ws: Option<Bytes> = None;
        let mut sse: Option<Option<Bytes>> = None;
        let mut slow = Vec::new();
        for &m in &c.members {
            // One lookup per receiver: this loop is the fan-out's hot path.
            let Some(conn) = self.conns.get_mut(&m) else { continue };
            let frame = match conn.transport {
                Transport::WebSocket => ws
                    .get_or_insert_with(|| {
                        ServerMessageRef::Msg { ch: &key, pos, from, data }.encode()
                    })
                    .clone(),
                Transport::Sse => {
                    let f = sse.get_or_insert_with(|| sse_msg(pos, &key, from, bytes));
                    let Some(f) = f else { continue };
                    f.clone()
                }
                Transport::Poll => continue,
            };
            if !queue(conn, &mut self.ready, m, c.policy, frame, conflate.clone()) {
                slow.push(m);
            }
        }
        self.stats.published += 1;
        self.events.push_back(HubEvent::Published { ch: key, pos });
        for m in slow {
            self.too_slow(now, m);
        }
        Some(pos)
    }

    /// Tells every member of `key` that its position is gone (the bus's log started over):
    /// `subscribed{recovered:false}` on WebSocket, the `reset` block on SSE.
    pub(super) fn reset_members(&mut self, now: Instant, key: &Arc<str>) {
        let Some(c) = self.channels.get(key) else { return };
        let head = c.log.head();
        let policy = c.policy;
        let members: Vec<ConnId> = c.members.iter().copied().collect();
        let ws =
            ServerMessageRef::Subscribed { ch: key, recovered: false, pos: Some(head) }.encode();
        let sse = sse_reset(key, head);
        let mut slow = Vec::new();
        for m in members {
            let frame = match self.conns.get(&m).map(|c| c.transport) {
                Some(Transport::WebSocket) => ws.clone(),
                Some(Transport::Sse) => match &sse {
                    Some(f) => f.clone(),
                    None => continue,
                },
                _ => continue,
            };
            if !enqueue(&mut self.conns, &mut self.ready, m, policy, frame, None) {
                slow.push(m);
            }
        }
        for m in slow {
            self.too_slow(now, m);
        }
    }

    /// Tells the members of `ch` (but `except`) that names joined or left.
    fn announce(
        &mut self,
        now: Instant,
        ch: &str,
        except: Option<ConnId>,
        join: &[String],
        leave: &[String],
    ) {
        let Some(c) = self.channels.get(ch) else { return };
        let (ws, sse) = presence_frames(ch, join, leave);
        let mut slow = Vec::new();
        for &m in &c.members {
            let Some(conn) = self.conns.get(&m) else { continue };
            let frame = match conn.transport {
                Transport::WebSocket => ws.clone(),
                Transport::Sse => match &sse {
                    Some(f) => f.clone(),
                    None => continue,
                },
                Transport::Poll => continue,
            };
            if Some(m) != except
                && !enqueue(&mut self.conns, &mut self.ready, m, c.policy, frame, None)
            {
                slow.push(m);
            }
        }
        for m in slow {
            self.too_slow(now, m);
        }
    }

    pub(super) fn poll_deadline(&mut self, now: Instant, id: ConnId) {
        let Some(hb) = self.conns.get_mut(&id).and_then(|c| c.expiry.as_mut()) else { return };
        if hb.handle_timeout(now) == Some(Beat::Expired) {
            self.stats.expired += 1;
            self.remove(now, id, true);
            self.events.push_back(HubEvent::Expired { conn: id });
        } else if let Some(at) = hb.poll_timeout() {
            self.timers.set(Timer::Poll(id), at);
        }
    }

    pub(super) fn grace_deadline(&mut self, now: Instant, g: u64) {
        let Some((ch, name)) = self.graces.remove(&g) else { return };
        let Some(c) = self.channels.get_mut(&ch) else { return };
        if c.presence.expire(&name, g) {
            self.announce(now, &ch, None, &[], &[name.to_string()]);
            self.events.push_back(HubEvent::Left { ch: ch.clone(), member: name });
        }
        self.collect(&ch);
    }

    pub(super) fn trim_deadline(&mut self, now: Instant, cid: u64) {
        let Some(ch) = self.channel_ids.get(&cid).cloned() else { return };
        let Some(c) = self.channels.get_mut(&ch) else { return };
        c.log.handle_timeout(now);
        if let Some(at) = c.log.poll_timeout() {
            self.timers.set(Timer::Trim(cid), at);
        }
        self.collect(&ch);
    }
}

/// A subscription that starts at the channel's head with nothing replayed: a repeated
/// `sub`, or (`pending`) one whose join completes once the channel's log has loaded.
fn at_head(pos: Position, pending: bool) -> Subscription {
    Subscription { pos, recovered: true, replayed: 0, pending, awaiting: None }
}
