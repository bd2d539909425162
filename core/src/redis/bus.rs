//! [`RedisBus`]: the machine. See the [module docs](super).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::config::RedisConfig;
use super::resp::{Reply, ReplyReader, command};
use super::script::{self, ScriptKind};
use super::types::{RedisEvent, RedisState, RedisTimer};
use crate::hub::{BusAction, BusToken, HubError};
use crate::policy::Backoff;
use crate::replay::{Epoch, Position};
use crate::rng::Rng;
use crate::socket::{SockId, SocketAction};
use crate::time::{Instant, Monotonic};

/// One of the two connections of an attempt.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) sock: SockId,
    /// The adapter reported it connected.
    pub(super) connected: bool,
    /// It answered its `PING`.
    pub(super) pinged: bool,
    reader: ReplyReader,
}

impl Conn {
    fn new(sock: SockId, max: usize) -> Self {
        Self { sock, connected: false, pinged: false, reader: ReplyReader::new(max) }
    }
}

/// A call on the command connection, kept until its reply (and to resend it with `EVAL`).
#[derive(Debug)]
pub(super) enum Call {
    /// The first command of a connection.
    Ping,
    /// [`script::PUBLISH_LUA`].
    Publish { token: BusToken, ch: Arc<str>, data: Bytes, id: Option<Box<str>>, epoch: Epoch },
    /// [`script::HISTORY_LUA`]; `after: None` for the newest entries.
    History { ch: Arc<str>, epoch: Epoch, after: Option<Position> },
}

#[derive(Debug)]
pub(super) struct Pending {
    call: Call,
    sent: Instant,
    bytes: usize,
    /// Sent with `EVAL` (not `EVALSHA`).
    eval: bool,
}

/// Which history a followed channel waits for once its subscription is confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Want {
    /// The newest entries (a `Follow`), proposing this epoch if the channel has none.
    Tail(Epoch),
    /// The entries after a position (a `Fetch`).
    After(Position),
    /// The entries after what the hub holds (a `Follow` again, after a reconnection),
    /// proposing this epoch if the channel has none or went back in time.
    Resume(Epoch, Position),
}

/// A channel the hub follows.
#[derive(Debug, Default)]
pub(super) struct Followed {
    /// Its `SUBSCRIBE` is confirmed (on the current connection), with no change in flight.
    pub(super) subscribed: bool,
    /// A history to load once subscribed.
    pub(super) want: Option<Want>,
}

/// The sans-IO Redis bus. See the [module docs](super) for the layout, the scripts and the
/// run loop.
///
/// - Constructor: [`new`](Self::new) (the first attempt's two `Connect`s are queued).
/// - Getters: [`state`](Self::state), [`is_up`](Self::is_up),
///   [`pending_commands`](Self::pending_commands), [`followed`](Self::followed),
///   [`timeout_reason`](Self::timeout_reason), [`config`](Self::config).
/// - Command: [`execute`](Self::execute) (a [`BusAction`] of the hub).
/// - Socket inputs: [`handle_connected`](Self::handle_connected),
///   [`handle_read`](Self::handle_read), [`handle_eof`](Self::handle_eof),
///   [`handle_error`](Self::handle_error); time: [`handle_timeout`](Self::handle_timeout).
/// - Outputs: [`poll_action`](Self::poll_action), [`poll_transmit`](Self::poll_transmit),
///   [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct RedisBus {
    pub(super) cfg: RedisConfig,
    clock: Monotonic,
    rng: Rng,
    backoff: Backoff,
    shas: [String; 2],
    /// Per script: send `EVAL` rather than `EVALSHA` (after a `NOSCRIPT`, until an `EVAL`
    /// of it was answered).
    use_eval: [bool; 2],
    state: RedisState,
    next_sock: u64,
    pub(super) cmd: Option<Conn>,
    pub(super) sub: Option<Conn>,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    /// Send times of the replies the pub/sub connection owes (`PING`, each channel of a
    /// `SUBSCRIBE`/`UNSUBSCRIBE`), oldest first.
    pub(super) sub_waits: VecDeque<Instant>,
    pub(super) followed: BTreeMap<Arc<str>, Followed>,
    /// Subscription changes sent per channel and not yet confirmed.
    pub(super) inflight: HashMap<Arc<str>, u32>,
    reconnect_at: Option<Instant>,
    connect_deadline: Option<Instant>,
    actions: VecDeque<SocketAction>,
    transmits: VecDeque<(SockId, Bytes)>,
    pub(super) events: VecDeque<RedisEvent>,
}

impl RedisBus {
    /// A machine in state [`Connecting`](RedisState::Connecting): the `Connect`s of its
    /// command and pub/sub connections are queued.
    #[must_use]
    pub fn new(cfg: RedisConfig, now: Instant) -> Self {
        let mut rng = Rng::from_seed(cfg.rng_seed);
        let backoff = Backoff::with_rng(cfg.backoff, rng.fork());
        let shas = [script::sha1_hex(script::PUBLISH_LUA), script::sha1_hex(script::HISTORY_LUA)];
        let mut bus = Self {
            cfg,
            clock: Monotonic::new(now),
            rng,
            backoff,
            shas,
            use_eval: [false; 2],
            state: RedisState::Connecting,
            next_sock: 0,
            cmd: None,
            sub: None,
            pending: VecDeque::new(),
            pending_bytes: 0,
            sub_waits: VecDeque::new(),
            followed: BTreeMap::new(),
            inflight: HashMap::new(),
            reconnect_at: None,
            connect_deadline: None,
            actions: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        bus.start_attempt(now);
        bus
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &RedisConfig {
        &self.cfg
    }

    /// The connection state.
    #[must_use]
    pub fn state(&self) -> RedisState {
        self.state
    }

    /// Whether both connections are usable (an [`RedisEvent::Up`] was the last of `Up`
    /// and `Down`).
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.state == RedisState::Up
    }

    /// Commands sent on the command connection and not yet answered.
    #[must_use]
    pub fn pending_commands(&self) -> usize {
        self.pending.len()
    }

    /// The channels followed (subscribed, or to subscribe on the next connection).
    pub fn followed(&self) -> impl Iterator<Item = &str> + '_ {
        self.followed.keys().map(|k| &**k)
    }

    /// Carries out a request of the hub. While down, a `Publish` is answered at once with
    /// [`HubError::Unavailable`], `Follow`/`Unfollow` only change the set of channels to
    /// subscribe on the next connection, and a `Fetch` is dropped (the hub follows every
    /// channel again after [`RedisEvent::Up`]). While up, a `Publish` beyond
    /// [`max_pending`](RedisConfig::max_pending) or
    /// [`max_pending_bytes`](RedisConfig::max_pending_bytes) fails at once, and a history
    /// beyond them breaks the connection (the hub asks again after the reconnection).
    pub fn execute(&mut self, now: Instant, action: BusAction) {
        let now = self.clock.advance(now);
        let up = self.is_up();
        match action {
            BusAction::Publish { token, ch, data, id, epoch } => {
                if !up {
                    let result = Err(HubError::Unavailable);
                    self.events.push_back(RedisEvent::Published { token, result });
                    return;
                }
                let call = Call::Publish { token, ch, data, id, epoch };
                if let Err(Call::Publish { token, .. }) = self.send_call(now, call, false) {
                    let result = Err(HubError::Unavailable);
                    self.events.push_back(RedisEvent::Published { token, result });
                }
            }
            BusAction::Follow { ch, epoch, known: None } => self.follow(now, ch, Want::Tail(epoch)),
            BusAction::Follow { ch, epoch, known: Some(known) } => {
                self.follow(now, ch, Want::Resume(epoch, known));
            }
            BusAction::Fetch { ch, after } => {
                if up && self.followed.contains_key(&ch) {
                    self.follow(now, ch, Want::After(after));
                }
            }
            BusAction::Unfollow { ch } => self.unfollow(now, ch),
        }
    }

    fn follow(&mut self, now: Instant, ch: Arc<str>, want: Want) {
        let up = self.is_up();
        if !self.followed.contains_key(&ch) {
            self.followed.insert(ch.clone(), Followed::default());
            if self.sub.as_ref().is_some_and(|s| s.connected) {
                self.subscribe(now, b"SUBSCRIBE", std::slice::from_ref(&ch));
            }
        }
        if !up {
            return;
        }
        let Some(f) = self.followed.get_mut(&ch) else { return };
        if f.subscribed {
            self.load_history(now, ch, want);
        } else {
            // Subscribe first: the history is loaded once the subscription is confirmed.
            f.want = match (f.want, want) {
                (_, Want::Tail(e)) => Some(Want::Tail(e)),
                (_, Want::Resume(e, p)) => Some(Want::Resume(e, p)),
                (Some(w @ (Want::Tail(_) | Want::Resume(..))), Want::After(_)) => Some(w),
                (Some(Want::After(a)), Want::After(b)) => {
                    Some(Want::After(if a.epoch == b.epoch && a.offset < b.offset { a } else { b }))
                }
                (None, w) => Some(w),
            };
        }
    }

    fn unfollow(&mut self, now: Instant, ch: Arc<str>) {
        if self.followed.remove(&ch).is_some() && self.sub.as_ref().is_some_and(|s| s.connected) {
            self.subscribe(now, b"UNSUBSCRIBE", &[ch]);
        }
    }

    /// Sends the history script for `ch` (once subscribed). Breaks the connection when
    /// the pipeline is full: the hub asks again after the reconnection.
    pub(super) fn load_history(&mut self, now: Instant, ch: Arc<str>, want: Want) {
        // A `Fetch` proposes no epoch: a fresh one (see the module docs).
        let (epoch, after) = match want {
            Want::Tail(epoch) => (epoch, None),
            Want::Resume(epoch, known) => (epoch, Some(known)),
            Want::After(a) => (Epoch(self.rng.next_u64().max(1)), Some(a)),
        };
        if self.send_call(now, Call::History { ch, epoch, after }, false).is_err() {
            self.fail(now);
        }
    }

    /// Sends `SUBSCRIBE`/`UNSUBSCRIBE` for `chans` on the pub/sub connection.
    pub(super) fn subscribe(&mut self, now: Instant, verb: &'static [u8], chans: &[Arc<str>]) {
        let Some(sock) = self.sub.as_ref().map(|s| s.sock) else { return };
        for batch in chans.chunks(256) {
            let names: Vec<String> = batch.iter().map(|c| self.pubsub_name(c)).collect();
            let mut args: Vec<&[u8]> = vec![verb];
            args.extend(names.iter().map(String::as_bytes));
            self.transmits.push_back((sock, command(&args)));
            for ch in batch {
                *self.inflight.entry(ch.clone()).or_default() += 1;
                self.sub_waits.push_back(now);
            }
        }
    }

    /// The pub/sub channel of `ch`.
    pub(super) fn pubsub_name(&self, ch: &str) -> String {
        format!("{}:{ch}", self.cfg.key_prefix)
    }

    /// Encodes and sends a call on the command connection, or hands it back when the
    /// pipeline is full (or there is no command connection).
    fn send_call(&mut self, now: Instant, call: Call, resend: bool) -> Result<(), Call> {
        let Some(sock) = self.cmd.as_ref().map(|c| c.sock) else { return Err(call) };
        let (bytes, eval) = self.encode(&call);
        let full = self.pending.len() >= self.cfg.max_pending
            || self.pending_bytes.saturating_add(bytes.len()) > self.cfg.max_pending_bytes;
        if full && !resend {
            return Err(call);
        }
        self.pending_bytes = self.pending_bytes.saturating_add(bytes.len());
        self.pending.push_back(Pending { call, sent: now, bytes: bytes.len(), eval });
        self.transmits.push_back((sock, bytes));
        Ok(())
    }

    /// The call's command, and whether it is an `EVAL`.
    fn encode(&self, call: &Call) -> (Bytes, bool) {
        let p = &self.cfg.key_prefix;
        match call {
            Call::Ping => (command(&[b"PING"]), false),
            Call::Publish { ch, data, id, epoch, .. } => {
                let kind = ScriptKind::Publish;
                let (meta, log) = (format!("{p}:{ch}:meta"), format!("{p}:{ch}:log"));
                let dedup = id.as_ref().map(|id| format!("{p}#id:{id}"));
                let mut keys: Vec<&[u8]> = vec![meta.as_bytes(), log.as_bytes()];
                keys.extend(dedup.as_ref().map(String::as_bytes));
                let ttl =
                    self.cfg.dedup_ttl.as_secs() + u64::from(self.cfg.dedup_ttl.subsec_nanos() > 0);
                let (epoch, max, chan, ttl) = (
                    epoch.to_string(),
                    self.cfg.log_max.to_string(),
                    self.pubsub_name(ch),
                    ttl.max(1).to_string(),
                );
                let args: [&[u8]; 5] =
                    [epoch.as_bytes(), data, max.as_bytes(), chan.as_bytes(), ttl.as_bytes()];
                let eval = self.use_eval[kind.index()];
                (script::call(kind, &self.shas[kind.index()], eval, &keys, &args), eval)
            }
            Call::History { ch, epoch, after } => {
                let kind = ScriptKind::History;
                let (meta, log) = (format!("{p}:{ch}:meta"), format!("{p}:{ch}:log"));
                let (from, after, after_epoch) = match after {
                    Some(a) => (
                        format!("{}-0", a.offset.saturating_add(1)),
                        a.offset.to_string(),
                        a.epoch.to_string(),
                    ),
                    None => (String::new(), String::new(), String::new()),
                };
                let (epoch, max) = (epoch.to_string(), self.cfg.log_max.max(1).to_string());
                let args: [&[u8]; 5] = [
                    epoch.as_bytes(),
                    max.as_bytes(),
                    from.as_bytes(),
                    after.as_bytes(),
                    after_epoch.as_bytes(),
                ];
                let keys: [&[u8]; 2] = [meta.as_bytes(), log.as_bytes()];
                let eval = self.use_eval[kind.index()];
                (script::call(kind, &self.shas[kind.index()], eval, &keys, &args), eval)
            }
        }
    }

    // ----- sockets -----

    fn start_attempt(&mut self, now: Instant) {
        self.state = RedisState::Connecting;
        self.reconnect_at = None;
        self.connect_deadline = Some(now + self.cfg.connect_timeout);
        for slot in [&mut self.cmd, &mut self.sub] {
            let sock = SockId(self.next_sock);
            self.next_sock += 1;
            *slot = Some(Conn::new(sock, self.cfg.max_reply_bytes));
            let (host, port) = (self.cfg.host.clone(), self.cfg.port);
            self.actions.push_back(SocketAction::Connect { sock, host, port });
        }
    }

    /// `sock` is connected: its first commands are queued.
    pub fn handle_connected(&mut self, now: Instant, sock: SockId) {
        let now = self.clock.advance(now);
        if let Some(c) = self.cmd.as_mut().filter(|c| c.sock == sock && !c.connected) {
            c.connected = true;
            let _ = self.send_call(now, Call::Ping, true);
        } else if let Some(s) = self.sub.as_mut().filter(|s| s.sock == sock && !s.connected) {
            s.connected = true;
            self.transmits.push_back((sock, command(&[b"PING"])));
            self.sub_waits.push_back(now);
            let chans: Vec<Arc<str>> = self.followed.keys().cloned().collect();
            self.subscribe(now, b"SUBSCRIBE", &chans);
        }
    }

    /// Bytes read from `sock`. Input that is not RESP2, or more than
    /// [`max_reply_bytes`](RedisConfig::max_reply_bytes) without a whole reply, breaks the
    /// connection.
    pub fn handle_read(&mut self, now: Instant, sock: SockId, data: &[u8]) {
        let now = self.clock.advance(now);
        let is_cmd = self.cmd.as_ref().is_some_and(|c| c.sock == sock);
        let is_sub = self.sub.as_ref().is_some_and(|c| c.sock == sock);
        if !is_cmd && !is_sub {
            return;
        }
        let conn = if is_cmd { &mut self.cmd } else { &mut self.sub };
        if conn.as_mut().is_some_and(|c| c.reader.push(data).is_err()) {
            self.fail(now);
            return;
        }
        loop {
            let conn = if is_cmd { &mut self.cmd } else { &mut self.sub };
            let Some(c) = conn.as_mut().filter(|c| c.sock == sock) else { return };
            match c.reader.next_reply() {
                Ok(Some(reply)) => {
                    let ok = if is_cmd {
                        self.on_cmd_reply(now, &reply)
                    } else {
                        self.on_sub_reply(now, reply)
                    };
                    if !ok {
                        self.fail(now);
                        return;
                    }
                }
                Ok(None) => return,
                Err(_) => {
                    self.fail(now);
                    return;
                }
            }
        }
    }

    /// `sock` ended (the peer closed it): the connection is broken.
    pub fn handle_eof(&mut self, now: Instant, sock: SockId) {
        self.handle_error(now, sock);
    }

    /// `sock` failed (to connect, or later): the connection is broken.
    pub fn handle_error(&mut self, now: Instant, sock: SockId) {
        let now = self.clock.advance(now);
        let mine = [&self.cmd, &self.sub].into_iter().flatten().any(|c| c.sock == sock);
        if mine {
            // It needs no `Close`.
            if self.cmd.as_ref().is_some_and(|c| c.sock == sock) {
                self.cmd = None;
            } else {
                self.sub = None;
            }
            self.fail(now);
        }
    }

    /// A reply on the command connection; `false`: the connection is unusable.
    fn on_cmd_reply(&mut self, now: Instant, reply: &Reply) -> bool {
        let Some(p) = self.pending.pop_front() else { return false };
        self.pending_bytes = self.pending_bytes.saturating_sub(p.bytes);
        let kind = match &p.call {
            Call::Ping => None,
            Call::Publish { .. } => Some(ScriptKind::Publish),
            Call::History { .. } => Some(ScriptKind::History),
        };
        if let Some(kind) = kind {
            if script::is_noscript(reply) {
                if p.eval {
                    return false; // EVAL itself cannot answer NOSCRIPT
                }
                self.use_eval[kind.index()] = true;
                return self.send_call(now, p.call, true).is_ok();
            }
            if p.eval && !matches!(reply, Reply::Error(_)) {
                self.use_eval[kind.index()] = false; // now cached
            }
        }
        match p.call {
            Call::Ping => {
                if matches!(reply, Reply::Error(_)) {
                    return false;
                }
                if let Some(c) = self.cmd.as_mut() {
                    c.pinged = true;
                }
                self.maybe_up(now);
            }
            Call::Publish { token, .. } => {
                let result = script::parse_position(reply).ok_or(HubError::Unavailable);
                self.events.push_back(RedisEvent::Published { token, result });
            }
            Call::History { ch, .. } => {
                let Some(history) = script::parse_history(reply) else { return false };
                if self.followed.contains_key(&ch) {
                    self.events.push_back(RedisEvent::History { ch: ch.to_string(), history });
                }
            }
        }
        true
    }

    /// Emits `Up` once both connections answered their `PING`.
    pub(super) fn maybe_up(&mut self, now: Instant) {
        let ready = |c: &Option<Conn>| c.as_ref().is_some_and(|c| c.pinged);
        if self.state == RedisState::Connecting && ready(&self.cmd) && ready(&self.sub) {
            self.state = RedisState::Up;
            self.connect_deadline = None;
            self.backoff.on_connected(now);
            self.events.push_back(RedisEvent::Up);
        }
    }

    /// A connection broke: both are closed, pending publishes fail, `Down` is emitted if
    /// `Up` was, and the next attempt is scheduled.
    pub(super) fn fail(&mut self, now: Instant) {
        if matches!(self.state, RedisState::Waiting | RedisState::Exhausted) {
            return;
        }
        let was_up = self.is_up();
        for conn in [self.cmd.take(), self.sub.take()].into_iter().flatten() {
            self.actions.push_back(SocketAction::Close { sock: conn.sock });
        }
        self.transmits.clear();
        for p in std::mem::take(&mut self.pending) {
            if let Call::Publish { token, .. } = p.call {
                self.events
                    .push_back(RedisEvent::Published { token, result: Err(HubError::Unavailable) });
            }
        }
        self.pending_bytes = 0;
        self.sub_waits.clear();
        self.inflight.clear();
        for f in self.followed.values_mut() {
            *f = Followed::default();
        }
        self.connect_deadline = None;
        if was_up {
            self.backoff.on_disconnected(now);
            self.events.push_back(RedisEvent::Down);
        }
        match self.backoff.next_deadline(now) {
            Some(at) => {
                self.state = RedisState::Waiting;
                self.reconnect_at = Some(at);
            }
            None => self.state = RedisState::Exhausted,
        }
    }

    // ----- time -----

    fn reply_deadline(&self) -> Option<Instant> {
        let oldest = [self.pending.front().map(|p| p.sent), self.sub_waits.front().copied()];
        oldest.into_iter().flatten().min().map(|t| t + self.cfg.command_timeout)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due, with the reason.
    #[must_use]
    pub fn timeout_reason(&self) -> Option<(RedisTimer, Instant)> {
        [
            self.reconnect_at.map(|t| (RedisTimer::Reconnect, t)),
            self.connect_deadline.map(|t| (RedisTimer::Connect, t)),
            self.reply_deadline().map(|t| (RedisTimer::Reply, t)),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(_, t)| *t)
    }

    /// The next deadline. May change after any input or command.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timeout_reason().map(|(_, t)| t)
    }

    /// Fires what is due: the next connection attempt, or a connection that took too long
    /// to open or to answer (broken). Spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if self.reconnect_at.is_some_and(|t| t <= now) {
            self.start_attempt(now);
            return;
        }
        let late = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if late(self.connect_deadline) || late(self.reply_deadline()) {
            self.fail(now);
        }
    }

    // ----- outputs -----

    /// The next socket action. New ones may follow [`new`](Self::new), any `handle_*` and
    /// [`execute`](Self::execute).
    #[must_use]
    pub fn poll_action(&mut self) -> Option<SocketAction> {
        self.actions.pop_front()
    }

    /// The next bytes to write, and the socket to write them to. Drain
    /// [`poll_action`](Self::poll_action) first: bytes are only queued for connected
    /// sockets. New ones may follow any `handle_*` and [`execute`](Self::execute).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(SockId, Bytes)> {
        self.transmits.pop_front()
    }

    /// The next event for the hub ([`RedisEvent::apply`]). New ones may follow any
    /// `handle_*` and [`execute`](Self::execute).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<RedisEvent> {
        self.events.pop_front()
    }
}
