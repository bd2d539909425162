//! The oracle: what each client should have received, given the servers' publish logs and
//! its subscriptions, checked against what its session delivered.
//!
//! Per client and channel it keeps a chain: the position the client stands at. A message
//! must be the next offset of the same epoch (exactly once, in order, no gap) and carry
//! the data the server logged at that position; a `RefetchNeeded` may move the chain
//! anywhere, but only when the history really is gone (another epoch than the server's
//! log, or the next message trimmed). At the end, every subscribed client must stand at
//! its server's head, presence lists must equal the subscribed users, and no queue may
//! have gone past its bound at any sample.

use std::collections::{BTreeSet, HashMap};

use tidewire::Instant;
use tidewire::client::{ClientMsgId, SessionEvent, SessionState};
use tidewire::replay::Position;
use tidewire::testing::Sim;
use tidewire::time::Duration;

#[derive(Debug, Default)]
struct Chain {
    cur: Option<Position>,
    delivered: u64,
}

#[derive(Debug, Default)]
struct View {
    chains: HashMap<String, Chain>,
    state: Option<SessionState>,
    closed_events: u32,
    /// Duplicates the application dropped after its restart from an older checkpoint.
    app_dups: u64,
    restarted: bool,
    /// After a restart: the older position each channel was resubscribed from, until its
    /// first message or refetch.
    resumed_from: HashMap<String, Position>,
    user: Option<String>,
    /// Publishes sent and not yet answered: id → (channel, data).
    pending: HashMap<ClientMsgId, (String, String)>,
}

/// Counters over a run.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tally {
    /// Messages delivered to clients.
    pub(crate) delivered: u64,
    /// `RefetchNeeded` events.
    pub(crate) refetches: u64,
    /// Duplicates dropped by restarted applications.
    pub(crate) app_dups: u64,
    /// Publishes acknowledged.
    pub(crate) acked: u64,
    /// Sessions that moved back onto WebSocket after a fallback (`Reason::Upgraded`).
    pub(crate) upgrades: u64,
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Oracle {
    truth: HashMap<(String, Position), String>,
    /// The publisher each logged message shows.
    senders: HashMap<(String, Position), Option<String>>,
    /// How often each client publish's data was logged, per epoch.
    logged: HashMap<(u64, String), u32>,
    views: Vec<View>,
    /// Bound on being "Open" over a dead link: heartbeat interval + timeout + slack.
    pub(crate) dead_peer_bound: Duration,
    violations: Vec<String>,
    /// Counters.
    pub(crate) tally: Tally,
}

impl Oracle {
    /// An oracle for a simulation whose clients have the given users.
    pub(crate) fn new(users: Vec<Option<String>>, dead_peer_bound: Duration) -> Self {
        let views = users.into_iter().map(|user| View { user, ..View::default() }).collect();
        Self { views, dead_peer_bound, ..Self::default() }
    }

    fn fail(&mut self, at: Duration, mut msg: String) {
        if self.violations.len() < 20 {
            msg.insert_str(0, &format!("[{:.3}s] ", at.as_secs_f64()));
            self.violations.push(msg);
        }
    }

    /// The violations so far.
    pub(crate) fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Starts each client's chains at its session's current positions (after a warm-up
    /// in which nothing was published), dropping the warm-up's events.
    pub(crate) fn start(&mut self, sim: &mut Sim) {
        self.absorb_truth(sim);
        let at = sim.elapsed();
        for i in 0..sim.client_count() {
            let events = sim.client_mut(i).drain_events();
            let view = &mut self.views[i];
            for (_, e) in events {
                if let SessionEvent::State(c) = e {
                    view.state = Some(c.state);
                }
            }
            let s = sim.client(i).session();
            let chans: Vec<(String, Option<Position>)> =
                s.channels().map(|c| (c.to_owned(), s.position(c))).collect();
            for (ch, pos) in chans {
                if pos.is_none() {
                    self.fail(at, format!("client {i}: no position on {ch} after warm-up"));
                }
                self.views[i].chains.insert(ch, Chain { cur: pos, delivered: 0 });
            }
        }
    }

    /// Records a publish the scenario made through client `i`'s session.
    pub(crate) fn sent(&mut self, i: usize, id: ClientMsgId, ch: &str, data: String) {
        self.views[i].pending.insert(id, (ch.to_owned(), data));
    }

    /// Client `i`'s application restarted: from now on it drops what it already had.
    pub(crate) fn restarted(&mut self, i: usize, from: &[(&str, Option<Position>)]) {
        let view = &mut self.views[i];
        view.restarted = true;
        // The old session's publishes die with it (ids restart in the new one).
        view.pending.clear();
        view.resumed_from =
            from.iter().filter_map(|(ch, p)| p.map(|p| ((*ch).to_owned(), p))).collect();
    }

    /// Client `i`'s current chain position on `ch` (its application's checkpoint).
    pub(crate) fn position(&self, i: usize, ch: &str) -> Option<Position> {
        self.views[i].chains.get(ch).and_then(|c| c.cur)
    }

    fn absorb_truth(&mut self, sim: &mut Sim) {
        for s in 0..sim.server_count() {
            for p in sim.server_mut(s).drain_published() {
                let data = String::from_utf8_lossy(&p.data).into_owned();
                if data.contains("\"c\":") {
                    let n = self.logged.entry((p.pos.epoch.0, data.clone())).or_default();
                    *n += 1;
                    if *n > 1 {
                        let msg = format!("client publish {data} logged {n} times in one epoch");
                        self.fail(sim.elapsed(), msg);
                    }
                }
                let from = p.from.as_deref().map(str::to_owned);
                self.senders.insert((p.ch.to_string(), p.pos), from);
                self.truth.insert((p.ch.to_string(), p.pos), data);
            }
        }
    }

    /// Takes in everything that happened since the last call and checks it; samples the
    /// dead-peer rule and the queue bounds.
    pub(crate) fn absorb(&mut self, sim: &mut Sim) {
        self.absorb_truth(sim);
        let at = sim.elapsed();
        for over in sim.check_bounds() {
            self.fail(at, format!("bound: {over}"));
        }
        for i in 0..sim.client_count() {
            let events = sim.client_mut(i).drain_events();
            let trace = std::env::var("SIM_TRACE").ok().and_then(|t| t.parse::<usize>().ok());
            for (t, e) in events {
                if trace == Some(i) {
                    println!("[{:.3}s] client {i}: {e:?}", (t - sim.t0()).as_secs_f64());
                }
                self.event(sim, i, e);
            }
            self.dead_peer(sim, i);
        }
    }

    fn event(&mut self, sim: &Sim, i: usize, e: SessionEvent) {
        let at = sim.elapsed();
        match e {
            SessionEvent::Message { ch, pos, from, data } => {
                self.tally.delivered += 1;
                let truth = self.truth.get(&(ch.clone(), pos)).cloned();
                let sender = self.senders.get(&(ch.clone(), pos)).cloned();
                if sender.as_ref().is_some_and(|s| *s != from) {
                    let msg = format!("client {i} {ch} {pos}: from {from:?} != {sender:?}");
                    return self.fail(at, msg);
                }
                let view = &mut self.views[i];
                view.resumed_from.remove(&ch);
                let restarted = view.restarted;
                let Some(chain) = view.chains.get_mut(&ch) else {
                    return self.fail(at, format!("client {i}: message on unsubscribed {ch}"));
                };
                match chain.cur {
                    Some(cur)
                        if cur.epoch == pos.epoch && pos.offset <= cur.offset && restarted =>
                    {
                        view.app_dups += 1;
                        self.tally.app_dups += 1;
                        return;
                    }
                    Some(cur) if cur.epoch == pos.epoch && pos.offset == cur.offset + 1 => {}
                    cur => {
                        let cur = cur.map_or("none".into(), |c| c.to_string());
                        return self.fail(at, format!("client {i} {ch}: got {pos} at {cur}"));
                    }
                }
                chain.cur = Some(pos);
                chain.delivered += 1;
                if truth.as_deref() != Some(data.as_str()) {
                    self.fail(at, format!("client {i} {ch} {pos}: data {data} != {truth:?}"));
                }
            }
            SessionEvent::RefetchNeeded { ch, pos } => {
                self.tally.refetches += 1;
                let server = sim.server(sim.client(i).server());
                let view = &mut self.views[i];
                let resumed = view.resumed_from.remove(&ch);
                let Some(chain) = view.chains.get_mut(&ch) else { return };
                // The position the session asked for: its chain's, or after a restart the
                // older checkpoint it resubscribed from.
                let basis = resumed.or(chain.cur);
                let justified = match basis {
                    None => true,
                    Some(cur) => match server.hub().log(&ch) {
                        Some(log) => log.epoch() != cur.epoch || log.since(cur).is_err(),
                        None => true,
                    },
                };
                let was = chain.cur;
                chain.cur = Some(pos);
                if !justified {
                    let was = was.map_or("none".into(), |c| c.to_string());
                    self.fail(at, format!("client {i} {ch}: refetch at {was} (to {pos}) while the log still holds it"));
                }
            }
            SessionEvent::State(c) => {
                if c.reason == tidewire::client::Reason::Upgraded {
                    self.tally.upgrades += 1;
                }
                let view = &mut self.views[i];
                view.state = Some(c.state);
                if c.state == SessionState::Closed {
                    view.closed_events += 1;
                    if view.closed_events > 1 {
                        self.fail(at, format!("client {i}: second Closed ({:?})", c.reason));
                    }
                }
            }
            SessionEvent::Acked { id, pos } => {
                self.tally.acked += 1;
                let Some((ch, data)) = self.views[i].pending.remove(&id) else {
                    return self.fail(at, format!("client {i}: ack for unknown {id:?}"));
                };
                let Some(pos) = pos else { return };
                // A duplicate acknowledged after its first position was forgotten gets the
                // head: only a logged position is checked.
                if let Some(logged) = self.truth.get(&(ch.clone(), pos))
                    && logged != &data
                    && !self.logged.contains_key(&(pos.epoch.0, data.clone()))
                {
                    self.fail(
                        at,
                        format!("client {i}: ack {pos} on {ch} holds {logged}, sent {data}"),
                    );
                }
            }
            SessionEvent::PublishFailed { id, code } => {
                self.views[i].pending.remove(&id);
                if code != "closed" {
                    self.fail(at, format!("client {i}: publish {id:?} failed: {code}"));
                }
            }
            SessionEvent::SubscribeFailed { ch, code } => {
                self.fail(at, format!("client {i}: subscribe {ch} failed: {code}"));
            }
            _ => {}
        }
    }

    /// A session may not stay `Open` over links that are all dead for longer than the
    /// heartbeat bound.
    fn dead_peer(&mut self, sim: &Sim, i: usize) {
        let c = sim.client(i);
        if c.session().state() != SessionState::Open {
            return;
        }
        let now = sim.now();
        let mut oldest: Option<Instant> = None;
        for link in c.links() {
            match sim.net().peer_dead_since(link) {
                Some(t) => oldest = Some(oldest.map_or(t, |o| o.max(t))),
                None => return,
            }
        }
        if let Some(t) = oldest
            && now.saturating_duration_since(t) > self.dead_peer_bound
        {
            let msg = format!(
                "client {i}: Open over dead links for {:?}",
                now.saturating_duration_since(t)
            );
            self.fail(sim.elapsed(), msg);
        }
    }

    /// The end of a run, after the faults stopped and the system settled: every client is
    /// open and at its server's head, nothing is left unacknowledged, presence lists are
    /// the subscribed users, and the servers saw no broken rule.
    pub(crate) fn settled(&mut self, sim: &mut Sim, presence_channels: &[&str]) {
        self.absorb(sim);
        let at = sim.elapsed();
        for i in 0..sim.client_count() {
            let c = sim.client(i);
            let s = c.session();
            if s.state() != SessionState::Open {
                self.fail(at, format!("client {i}: {:?} after settling", s.state()));
                continue;
            }
            if s.queued_publishes() > 0 {
                self.fail(
                    at,
                    format!("client {i}: {} publishes unacknowledged", s.queued_publishes()),
                );
            }
            let hub = sim.server(c.server()).hub();
            let chains: Vec<(String, Option<Position>)> =
                self.views[i].chains.iter().map(|(k, v)| (k.clone(), v.cur)).collect();
            for (ch, cur) in chains {
                let head = hub.log(&ch).map(tidewire::replay::ReplayLog::head);
                if cur != head || head.is_none() {
                    self.fail(at, format!("client {i} {ch}: at {cur:?}, head {head:?}"));
                }
            }
        }
        self.presence(sim, presence_channels);
        for s in 0..sim.server_count() {
            let v: Vec<String> = sim.server(s).violations().to_vec();
            for v in v {
                self.fail(at, v);
            }
        }
    }

    /// Presence lists must be the users subscribed to each channel (run it a grace period
    /// after every client is back).
    pub(crate) fn presence(&mut self, sim: &Sim, presence_channels: &[&str]) {
        let at = sim.elapsed();
        for s in 0..sim.server_count() {
            for &ch in presence_channels {
                let want: BTreeSet<String> = (0..sim.client_count())
                    .filter(|&i| sim.client(i).server() == s)
                    .filter(|&i| sim.client(i).session().channels().any(|c| c == ch))
                    .filter_map(|i| self.views[i].user.clone())
                    .collect();
                let got: BTreeSet<String> =
                    sim.server(s).hub().presence(ch).map(str::to_owned).collect();
                if want != got {
                    let extra: Vec<_> = got.difference(&want).collect();
                    let missing: Vec<_> = want.difference(&got).collect();
                    self.fail(
                        at,
                        format!("server {s} presence {ch}: extra {extra:?}, missing {missing:?}"),
                    );
                }
            }
        }
    }

    /// After every session was closed and the servers had time to notice: no connection,
    /// presence entry or hub membership is left, and each session closed exactly once.
    pub(crate) fn drained(&mut self, sim: &mut Sim, channels: &[&str]) {
        self.absorb(sim);
        let at = sim.elapsed();
        for i in 0..sim.client_count() {
            if self.views[i].closed_events != 1 {
                let n = self.views[i].closed_events;
                self.fail(at, format!("client {i}: {n} Closed events after close"));
            }
        }
        for s in 0..sim.server_count() {
            let server = sim.server(s);
            let hub = server.hub();
            if hub.connection_count() != 0 || server.connection_count() != 0 {
                let msg = format!(
                    "server {s}: {} hub connections, {} transports left",
                    hub.connection_count(),
                    server.connection_count()
                );
                self.fail(at, msg);
                for d in server.describe_connections(sim.net()) {
                    self.fail(at, format!("server {s} left: {d}"));
                }
            }
            for &ch in channels {
                if hub.members(ch).next().is_some() || hub.presence(ch).next().is_some() {
                    self.fail(at, format!("server {s} {ch}: members or presence left"));
                }
            }
            let v: Vec<String> = server.violations().to_vec();
            for v in v {
                self.fail(at, v);
            }
        }
    }
}
