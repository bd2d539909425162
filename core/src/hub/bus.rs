//! Scale-out: the [`Hub`]'s boundary to a bus shared by several instances (DESIGN.md
//! "Scale-out"), sans-IO like the rest of the hub.
//!
//! # The ordering rule
//!
//! With a bus, no instance numbers messages. Every publish goes to the bus, whose one owner
//! per channel (with Redis: an atomic script on the server) assigns the next
//! `(epoch, offset)` and appends the message to the channel's shared log; every instance
//! that follows the channel, the publisher's included, gets it back from the live feed and
//! appends it to its local copy of the log at exactly that position, then fans it out. So
//! offsets are gap-free and in the same order everywhere, and a client that resumes on
//! another instance resumes exactly.
//!
//! # What the hub asks and what it is told
//!
//! A hub made with [`Hub::with_bus`] keeps a mirror of each channel it needs. The adapter
//! (which owns the connection to the bus) pulls [`BusAction`]s with [`Hub::poll_bus`] and
//! reports back:
//!
//! - [`BusAction::Follow`]: subscribe to the channel's live feed, then load its epoch, head
//!   and retained history and call [`Hub::bus_history`]. Until that, joins of the channel
//!   wait ([`Subscription::pending`](super::Subscription::pending)); live messages that
//!   arrive first are held and merged.
//! - [`BusAction::Fetch`]: the live feed skipped offsets (or the bus came back): load the
//!   history after `after` and call [`Hub::bus_history`].
//! - [`BusAction::Publish`]: append to the shared log (deduplicated by `id` across
//!   instances) and call [`Hub::bus_published`] with the position or the failure. With
//!   [`HubConfig::vet_publishes`](super::HubConfig::vet_publishes), a client publish
//!   reaches the bus only once the application accepted it
//!   ([`Hub::decide_publish`]), and is answered when the bus answers.
//! - [`BusAction::Unfollow`]: nobody here needs the channel any more.
//! - Each live message: [`Hub::bus_message`]. The connection to the bus dropped:
//!   [`Hub::bus_down`] (pending publishes fail with [`HubError::Unavailable`], new ones are
//!   refused at once, everything else keeps working from the mirrors); back:
//!   [`Hub::bus_up`] (the hub asks again for every channel it follows).
//!
//! The mirror of a channel follows the bus's epoch: when the bus lost a channel's log
//! (Redis restarted without its data), the history comes back in a new epoch, the mirror
//! starts over in it and clients learn it the usual way (`recovered: false`, or a message
//! of another epoch: the client session's `RefetchNeeded`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::channel::Follow;
use super::conn::{ConnId, Scope};
use super::{Hub, HubError, HubEvent, Principal, PublishId, PublishRefusal};
use crate::envelope::ServerMessageRef;
use crate::replay::{Epoch, Position, ReplayLog};
use crate::time::Instant;

/// Names a publish handed to the bus, until [`Hub::bus_published`] answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BusToken(pub u64);

/// A request of the hub to the bus, pulled with [`Hub::poll_bus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusAction {
    /// Receive `ch`'s live messages from now on, then load its epoch, head and retained
    /// history (creating the channel's epoch on the bus if it has none: `epoch` is this
    /// hub's proposal) and answer with [`Hub::bus_history`].
    Follow {
        /// The channel.
        ch: Arc<str>,
        /// The epoch to create when the bus has none for `ch`.
        epoch: Epoch,
        /// The newest position this hub holds of `ch` (`None`: it holds none yet). The
        /// history may start after it; and a bus whose offset for that epoch is *behind*
        /// it went back in time (restored from an older snapshot): it must start a new
        /// epoch, or it would hand out offsets the clients have seen.
        known: Option<Position>,
    },
    /// Stop receiving `ch`'s live messages.
    Unfollow {
        /// The channel.
        ch: Arc<str>,
    },
    /// Load `ch`'s history after `after` (up to the log bound) and answer with
    /// [`Hub::bus_history`].
    Fetch {
        /// The channel.
        ch: Arc<str>,
        /// The last position this hub holds.
        after: Position,
    },
    /// Append `data` to `ch`'s shared log and broadcast it; answer with
    /// [`Hub::bus_published`]. With `id`, the bus must store the message once per id (for
    /// a while) and answer a repeat with the first position.
    Publish {
        /// Answers name it.
        token: BusToken,
        /// The channel.
        ch: Arc<str>,
        /// One JSON value.
        data: Bytes,
        /// The publisher's message id, scoped by the publisher (user or connection).
        id: Option<Box<str>>,
        /// The epoch to create when the bus has none for `ch`.
        epoch: Epoch,
    },
}

/// A channel's history as the bus holds it, for [`Hub::bus_history`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusHistory {
    /// The channel's epoch on the bus.
    pub epoch: Epoch,
    /// The offset of the newest message the bus assigned (0: none yet).
    pub head: u64,
    /// Retained messages, oldest first: `(offset, data)`.
    pub entries: Vec<(u64, Bytes)>,
}

/// Who waits for a publish's answer.
#[derive(Debug)]
enum Waiter {
    /// A WebSocket `pub`: reply `ack`/`err` with its `ref`.
    Conn { conn: ConnId, reference: Option<u64> },
    /// [`Hub::submit`]: a [`HubEvent::Submitted`].
    App,
    /// A publish the application accepted ([`Hub::decide_publish`]): its waiters, held in
    /// the hub's vetting, are answered ([`Hub::bus_vetted`]).
    Vetted(PublishId),
    /// [`Hub::request_publish`] without vetting: a [`HubEvent::PublishDecided`].
    Request(PublishId),
}

/// The hub's side of the bus.
#[derive(Debug, Default)]
pub(super) struct BusState {
    pub(super) up: bool,
    /// Tells this hub's connection-scoped ids from other instances'.
    instance: u64,
    next_token: u64,
    waiting: HashMap<BusToken, Waiter>,
    pub(super) actions: VecDeque<BusAction>,
}

/// Live messages of a channel that arrived before the history they follow (while it
/// loads, or while a gap fills), bounded by the log's count.
#[derive(Debug, Default)]
pub(crate) struct LiveBacklog {
    pub(crate) msgs: VecDeque<(Position, Bytes)>,
}

impl Hub {
    /// A hub whose channels live on a bus shared with other instances (see the
    /// [module docs](self)): logs are mirrors filled from the bus, publishes go through
    /// the bus. The bus starts down: call [`bus_up`](Self::bus_up) once it is connected.
    #[must_use]
    pub fn with_bus(
        cfg: super::HubConfig,
        auth: impl super::Authorize + Send + 'static,
        seed: u64,
    ) -> Self {
        let mut hub = Self::new(cfg, auth, seed);
        let instance = hub.rng.next_u64();
        hub.bus = Some(BusState { instance, ..BusState::default() });
        hub
    }

    /// Whether this hub runs on a bus ([`with_bus`](Self::with_bus)).
    #[must_use]
    pub fn has_bus(&self) -> bool {
        self.bus.is_some()
    }

    /// Whether the bus is connected (always `false` without a bus).
    #[must_use]
    pub fn bus_is_up(&self) -> bool {
        self.bus.as_ref().is_some_and(|b| b.up)
    }

    /// The next request for the bus.
    #[must_use]
    pub fn poll_bus(&mut self) -> Option<BusAction> {
        self.bus.as_mut()?.actions.pop_front()
    }

    /// Whether [`poll_bus`](Self::poll_bus) has something (for an adapter's drain: wake
    /// the task that runs the bus).
    #[must_use]
    pub fn has_bus_actions(&self) -> bool {
        self.bus.as_ref().is_some_and(|b| !b.actions.is_empty())
    }

    /// Whether `ch`'s log is loaded (always, without a bus, for an existing channel): a
    /// poll of a channel that is not must wait for [`HubEvent::Synced`].
    #[must_use]
    pub fn is_synced(&self, ch: &str) -> bool {
        self.channels.get(ch).is_some_and(|c| matches!(c.follow, Follow::Local | Follow::Live))
    }

    /// Publishes through the bus (the bus-mode form of [`publish_as`](Self::publish_as), or
    /// of [`publish_json`](Self::publish_json) with `principal` `None`: trusted, no
    /// authorization). The answer comes as [`HubEvent::Submitted`] with the token.
    ///
    /// # Errors
    /// [`HubError::Unavailable`] without a bus or while it is down; [`HubError::BadJson`],
    /// [`HubError::BadChannel`], [`HubError::Forbidden`], [`HubError::BadId`].
    pub fn submit(
        &mut self,
        now: Instant,
        principal: Option<&Principal>,
        ch: &str,
        id: Option<&str>,
        json: &[u8],
    ) -> Result<BusToken, HubError> {
        let _ = self.advance(now);
        let data: &RawValue = serde_json::from_slice(json).map_err(|_| HubError::BadJson)?;
        self.check_publish(principal, ch, id)?;
        let scope = principal
            .map(|p| p.user.as_deref().map_or(Scope::Anonymous, |u| Scope::User(Arc::from(u))));
        let instance = self.bus.as_ref().map_or(0, |b| b.instance);
        let id = id.map(|i| scoped_id(instance, scope.as_ref(), i));
        let from = principal.and_then(|p| self.publisher(p, ch));
        self.send_to_bus(ch, data, from.as_deref(), id, Waiter::App)
    }

    /// A WebSocket `pub` in bus mode without vetting: checked like any publish, answered
    /// when the bus answers.
    pub(super) fn bus_client_publish(
        &mut self,
        conn: ConnId,
        ch: &str,
        msg_id: Option<&str>,
        data: &RawValue,
        reference: Option<u64>,
    ) -> Result<(), HubError> {
        let c = self.conns.get(&conn).ok_or(HubError::UnknownConn)?;
        let (principal, scope) = (c.principal.clone(), c.scope.clone());
        self.check_publish(Some(&principal), ch, msg_id)?;
        let instance = self.bus.as_ref().map_or(0, |b| b.instance);
        let id = msg_id.map(|i| scoped_id(instance, Some(&scope), i));
        let from = self.publisher(&principal, ch);
        self.send_to_bus(ch, data, from.as_deref(), id, Waiter::Conn { conn, reference }).map(drop)
    }

    /// [`Hub::request_publish`] in bus mode without vetting: the publish that
    /// [`submit`](Self::submit) handed to the bus as `token` is answered as a request, with
    /// [`HubEvent::PublishDecided`] under the id returned (the bus cannot have answered it
    /// yet: the action is only queued).
    pub(super) fn answer_as_request(&mut self, token: BusToken) -> PublishId {
        let id = self.vetting.next_id();
        if let Some(bus) = self.bus.as_mut() {
            bus.waiting.insert(token, Waiter::Request(id));
        }
        id
    }

    /// Hands a publish the application accepted to the bus, with its publisher and its id
    /// (`key`: the publisher's scope and its own id); the bus's answer goes to
    /// [`bus_vetted`](Self::bus_vetted).
    pub(super) fn send_vetted(
        &mut self,
        ch: &str,
        data: &RawValue,
        from: Option<&str>,
        key: Option<&(Scope, Box<str>)>,
        id: PublishId,
    ) -> Result<BusToken, HubError> {
        let instance = self.bus.as_ref().map_or(0, |b| b.instance);
        let bus_id = key.map(|(scope, m)| scoped_id(instance, Some(scope), m));
        self.send_to_bus(ch, data, from, bus_id, Waiter::Vetted(id))
    }

    /// Hands a publish to the bus, tagged with its publisher `from` ([`tag`]).
    fn send_to_bus(
        &mut self,
        ch: &str,
        data: &RawValue,
        from: Option<&str>,
        id: Option<Box<str>>,
        waiter: Waiter,
    ) -> Result<BusToken, HubError> {
        let epoch = Epoch(self.rng.next_u64().max(1));
        let Some(bus) = self.bus.as_mut().filter(|b| b.up) else {
            return Err(HubError::Unavailable);
        };
        let token = BusToken(bus.next_token);
        bus.next_token += 1;
        bus.waiting.insert(token, waiter);
        let data = tag(from, data.get().as_bytes());
        bus.actions.push_back(BusAction::Publish { token, ch: Arc::from(ch), data, id, epoch });
        Ok(token)
    }

    /// The bus answered a [`BusAction::Publish`]: the message's position (also for a
    /// repeated id: the first one's), or why it failed. The message itself arrives (or
    /// arrived) through [`bus_message`](Self::bus_message). Unknown tokens are ignored.
    pub fn bus_published(
        &mut self,
        now: Instant,
        token: BusToken,
        result: Result<Position, HubError>,
    ) {
        let now = self.advance(now);
        let Some(waiter) = self.bus.as_mut().and_then(|b| b.waiting.remove(&token)) else {
            return;
        };
        self.answer(now, token, waiter, result);
    }

    fn answer(
        &mut self,
        now: Instant,
        token: BusToken,
        waiter: Waiter,
        r: Result<Position, HubError>,
    ) {
        match (waiter, r) {
            (Waiter::Conn { conn, reference }, Ok(pos)) => {
                if self.conns.contains_key(&conn) {
                    self.reply(
                        now,
                        conn,
                        ServerMessageRef::Ack { reference, pos: Some(pos) }.encode(),
                    );
                }
            }
            (Waiter::Conn { conn, reference }, Err(e)) => {
                if self.conns.contains_key(&conn) {
                    self.reply_err(now, conn, reference, e.code(), &e.to_string());
                }
            }
            (Waiter::App, result) => self.events.push_back(HubEvent::Submitted { token, result }),
            (Waiter::Vetted(id), result) => self.bus_vetted(now, id, result),
            (Waiter::Request(id), result) => {
                let result = result.map_err(PublishRefusal::Hub);
                self.events.push_back(HubEvent::PublishDecided { id, result });
            }
        }
    }

    /// The connection to the bus is up (again): every channel this hub follows is asked
    /// for again ([`BusAction::Follow`]), so that what was missed while down is loaded.
    pub fn bus_up(&mut self, now: Instant) {
        let _ = self.advance(now);
        if self.bus.is_none() {
            return;
        }
        let mut names: Vec<(Arc<str>, Option<Position>)> = self
            .channels
            .iter()
            .map(|(k, c)| (k.clone(), (c.follow != Follow::Syncing).then(|| c.log.head())))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        // Fresh proposals: a bus that lost a channel must not revive the old epoch, whose
        // offsets the clients have seen already.
        let follows: Vec<BusAction> = names
            .into_iter()
            .map(|(ch, known)| BusAction::Follow {
                ch,
                epoch: Epoch(self.rng.next_u64().max(1)),
                known,
            })
            .collect();
        let Some(bus) = self.bus.as_mut() else { return };
        bus.up = true;
        bus.actions.retain(|a| !matches!(a, BusAction::Follow { .. } | BusAction::Fetch { .. }));
        bus.actions.extend(follows);
    }

    /// The connection to the bus is down: publishes waiting for an answer fail with
    /// [`HubError::Unavailable`] (the bus may or may not have stored them: a client retries
    /// with the same id), new ones are refused until [`bus_up`](Self::bus_up); channels,
    /// members, presence and the mirrored logs stay.
    pub fn bus_down(&mut self, now: Instant) {
        let now = self.advance(now);
        let Some(bus) = self.bus.as_mut() else { return };
        bus.up = false;
        bus.actions.retain(|a| !matches!(a, BusAction::Publish { .. }));
        // What the live feed gave before the break is loaded again after `bus_up`.
        for c in self.channels.values_mut() {
            c.backlog.msgs.clear();
        }
        let mut waiting: Vec<_> = bus.waiting.drain().collect();
        waiting.sort_by_key(|(t, _)| *t);
        for (token, waiter) in waiting {
            self.answer(now, token, waiter, Err(HubError::Unavailable));
        }
    }

    /// A live message of `ch` from the bus. Appended and fanned out when it is the next
    /// offset of the mirror; an older one is a duplicate and ignored; a later one (a gap)
    /// is held while the missing part loads ([`BusAction::Fetch`]); one of another epoch
    /// means the bus lost the channel's log: the mirror starts over in the new epoch.
    pub fn bus_message(&mut self, now: Instant, ch: &str, pos: Position, data: Bytes) {
        let now = self.advance(now);
        let Some(c) = self.channels.get_mut(ch) else { return };
        let max = self.cfg.log.max_count.max(1);
        match c.follow {
            Follow::Local => {}
            Follow::Syncing | Follow::Filling => {
                let backlog = &mut c.backlog.msgs;
                backlog.push_back((pos, data));
                while backlog.len() > max {
                    backlog.pop_front();
                }
            }
            Follow::Live => {
                let head = c.log.head();
                if pos.epoch == head.epoch && pos.offset <= head.offset {
                    return;
                }
                if pos.epoch == head.epoch && pos.offset == head.offset + 1 {
                    let key = self.channels.get_key_value(ch).map(|(k, _)| k.clone());
                    if let Some(key) = key {
                        self.mirror(now, &key, &data);
                    }
                    return;
                }
                // A gap, or another epoch: load what is missing first.
                c.follow = Follow::Filling;
                c.backlog.msgs.push_back((pos, data));
                let key = self.channels.get_key_value(ch).map(|(k, _)| k.clone());
                if let (Some(bus), Some(ch)) = (self.bus.as_mut(), key) {
                    bus.actions.push_back(BusAction::Fetch { ch, after: head });
                }
            }
        }
    }

    /// The history the bus holds for `ch` (the answer to [`BusAction::Follow`] or
    /// [`BusAction::Fetch`]). The mirror takes what follows its head, then the held live
    /// messages; it starts over when the bus's epoch differs or the bus no longer holds
    /// what follows the head (members are told their position is gone). Waiting joins
    /// complete ([`HubEvent::Synced`]). When held messages still leave a gap, another
    /// [`BusAction::Fetch`] follows.
    pub fn bus_history(&mut self, now: Instant, ch: &str, history: BusHistory) {
        let now = self.advance(now);
        let Some(key) = self.channels.get_key_value(ch).map(|(k, _)| k.clone()) else { return };
        let Some(c) = self.channels.get_mut(&key) else { return };
        if c.follow == Follow::Local {
            return;
        }
        let was_syncing = c.follow == Follow::Syncing;
        let head = c.log.head();
        let first = history.entries.first().map_or(history.head + 1, |e| e.0);
        if head.epoch != history.epoch || first > head.offset + 1 {
            // Start over in the bus's epoch, just before its oldest retained entry.
            let last = Position { epoch: history.epoch, offset: first.saturating_sub(1) };
            c.log = ReplayLog::continuing(last, self.cfg.log);
            if !was_syncing {
                self.reset_members(now, &key);
            }
        }
        let Some(c) = self.channels.get_mut(&key) else { return };
        let mut pending: Vec<(Position, Bytes)> = history
            .entries
            .into_iter()
            .map(|(off, d)| (Position { epoch: history.epoch, offset: off }, d))
            .collect();
        // Held live messages of another epoch predate the history (the bus lost the
        // channel meanwhile): a newer epoch's next live message asks again by itself.
        pending.extend(
            std::mem::take(&mut c.backlog.msgs).into_iter().filter(|m| m.0.epoch == history.epoch),
        );
        c.follow = Follow::Live;
        let mut gap = None;
        for (pos, data) in pending {
            let Some(c) = self.channels.get_mut(&key) else { return };
            let head = c.log.head();
            if pos.epoch == head.epoch && pos.offset <= head.offset {
                continue;
            }
            if gap.is_some() || pos.epoch != head.epoch || pos.offset != head.offset + 1 {
                gap.get_or_insert(head);
                c.backlog.msgs.push_back((pos, data));
                continue;
            }
            self.mirror(now, &key, &data);
        }
        if let Some(after) = gap {
            if let Some(c) = self.channels.get_mut(&key) {
                c.follow = Follow::Filling;
            }
            if let Some(bus) = self.bus.as_mut() {
                bus.actions.push_back(BusAction::Fetch { ch: key.clone(), after });
            }
        }
        if was_syncing {
            self.complete_joins(now, &key);
        }
    }

    /// Appends a message from the bus at the mirror's next offset and fans it out.
    fn mirror(&mut self, now: Instant, key: &Arc<str>, data: &Bytes) {
        let (from, data) = untag(data);
        let null = RawValue::NULL;
        let raw: &RawValue = serde_json::from_slice(&data).unwrap_or(null);
        let raw = raw.to_owned();
        self.log_and_fan_out(now, key, &data, &raw, from.as_ref());
    }

    /// Runs the joins that waited for `ch`'s history (they were authorized already);
    /// joins still waiting for the application start from the head they now can see.
    fn complete_joins(&mut self, now: Instant, key: &Arc<str>) {
        let Some(c) = self.channels.get_mut(key) else { return };
        let waiting = std::mem::take(&mut c.waiting);
        let head = c.log.head();
        self.anchor_joins(key, head);
        self.events.push_back(HubEvent::Synced { ch: key.clone() });
        for (conn, start) in waiting {
            let still =
                self.conns.get_mut(&conn).is_some_and(|c| c.channels.remove(&**key).is_some());
            if still && let Err(e) = self.join_authorized(now, conn, key, start) {
                self.reply_err(now, conn, None, e.code(), &e.to_string());
            }
        }
        // Nobody may be left to keep it (every waiting join failed).
        self.collect(key);
    }
}

/// A message as the bus stores and relays it: its JSON, preceded by its publisher when it
/// shows one (`\0`, the name's length in decimal, `:`, the name). JSON text never starts
/// with a NUL byte, so untagged data (trusted publishes, hidden publishers) is the JSON
/// itself and a tagged one cannot be mistaken for it.
fn tag(from: Option<&str>, json: &[u8]) -> Bytes {
    let Some(from) = from else { return Bytes::copy_from_slice(json) };
    let mut out = format!("\0{}:{from}", from.len()).into_bytes();
    out.extend_from_slice(json);
    Bytes::from(out)
}

/// The publisher and the JSON of a message from the bus ([`tag`]); data that is not
/// tagged, or tagged badly, has no publisher.
fn untag(data: &Bytes) -> (Option<Arc<str>>, Bytes) {
    let Some(rest) = data.strip_prefix(b"\0") else { return (None, data.clone()) };
    let Some(colon) = rest.iter().position(|&b| b == b':') else { return (None, data.clone()) };
    let len = std::str::from_utf8(&rest[..colon]).ok().and_then(|n| n.parse::<usize>().ok());
    let start = 1 + colon + 1;
    let name = len.and_then(|n| data.get(start..start.checked_add(n)?).map(|b| (n, b)));
    match name.and_then(|(n, b)| Some((n, std::str::from_utf8(b).ok()?))) {
        Some((n, name)) => (Some(Arc::from(name)), data.slice(start + n..)),
        None => (None, data.clone()),
    }
}

/// The bus-wide id of a publish: the publisher's scope and its own id.
fn scoped_id(instance: u64, scope: Option<&Scope>, id: &str) -> Box<str> {
    match scope {
        None => format!("server:{id}"),
        Some(Scope::User(u)) => format!("user:{u}:{id}"),
        Some(Scope::Anonymous) => format!("anon:{id}"),
        Some(Scope::Conn(c)) => format!("conn:{instance:x}.{}:{id}", c.0),
    }
    .into_boxed_str()
}

#[cfg(test)]
#[path = "bus_tests.rs"]
mod tests;
