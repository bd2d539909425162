//! Chaos scenarios: hubs and a few dozen client sessions (WebSocket, SSE, polling, and
//! sessions that may fall back) under faults drawn from the seed, checked by the
//! [oracle](crate::oracle) after every simulated second and at the end.
//!
//! A run: a warm-up (everyone connected and subscribed, nothing published), a fault phase
//! (publishes from the servers and the clients, and a fault every few seconds), a settle
//! phase without faults (publishes stop 30 s before its end), the end checks, then every
//! session is closed and the servers must end up empty.

use std::collections::HashSet;

use tidewire::client::{ClientSession, SessionState, Transport};
use tidewire::policy::Jitter;
use tidewire::rng::Rng;
use tidewire::testing::{Node, Side, Sim};
use tidewire::time::Duration;

use crate::oracle::Oracle;
use crate::world;

/// Which faults a scenario draws from.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Mix {
    pub(crate) partitions: bool,
    pub(crate) losses: bool,
    pub(crate) crashes: bool,
    pub(crate) slow: bool,
    pub(crate) clocks: bool,
    pub(crate) client_restarts: bool,
    /// A proxy that blocks WebSocket upgrades for a while.
    pub(crate) proxies: bool,
    /// Clients on SSE and polling too (else WebSocket only).
    pub(crate) transports: bool,
    /// Sometimes two hubs.
    pub(crate) servers: bool,
}

impl Mix {
    pub(crate) const ALL: Self = Self {
        partitions: true,
        losses: true,
        crashes: true,
        slow: true,
        clocks: true,
        client_restarts: true,
        proxies: true,
        transports: true,
        servers: true,
    };
}

const ROOM: &str = "chat:room";
const FEED: &str = "public:feed";
const SEC: Duration = Duration::from_secs(1);

fn secs(rng: &mut Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_secs(lo + rng.up_to(hi - lo))
}

fn transports_of(i: usize, mixed: bool) -> Vec<Transport> {
    if !mixed {
        return vec![Transport::WebSocket];
    }
    match i % 6 {
        3 => vec![Transport::Sse],
        4 => vec![Transport::Polling],
        5 => vec![Transport::WebSocket, Transport::Sse, Transport::Polling],
        _ => vec![Transport::WebSocket],
    }
}

fn channels_of(i: usize) -> &'static [&'static str] {
    if i.is_multiple_of(2) { &[ROOM, FEED] } else { &[ROOM] }
}

struct Run {
    sim: Sim,
    oracle: Oracle,
    /// Server → when it restarts, and whether its log survives.
    restarts: Vec<Option<(tidewire::Instant, bool)>>,
    /// Server → when its proxy passes WebSocket again.
    unblocks: Vec<Option<tidewire::Instant>>,
    published: u64,
    client_pubs: u64,
    /// Bursts under way: server, channel, messages left, messages per second.
    bursts: Vec<(usize, &'static str, u64, u64)>,
    mixed: bool,
    faults: Vec<String>,
}

impl Run {
    /// One simulated second: publishes, maybe a fault, restarts due, then the oracle.
    fn second(&mut self, mix: &Mix, faults: bool, publish: bool) {
        let now = self.sim.now();
        for s in 0..self.sim.server_count() {
            if let Some((at, keep)) = self.restarts[s]
                && at <= now
            {
                self.restarts[s] = None;
                self.sim.restart_server(s, keep);
            }
            if self.unblocks[s].is_some_and(|at| at <= now) {
                self.unblocks[s] = None;
                self.sim.block_websocket(s, false);
            }
        }
        if publish {
            self.publishes();
        }
        if faults && self.sim.rng().up_to(5) == 0 {
            self.fault(mix);
        }
        self.sim.run_for(SEC);
        self.oracle.absorb(&mut self.sim);
    }

    fn publishes(&mut self) {
        let mut bursts = std::mem::take(&mut self.bursts);
        for (server, ch, left, per_sec) in &mut bursts {
            for _ in 0..(*per_sec).min(*left) {
                self.published += 1;
                let pad = "b".repeat(300);
                let body = format!("{{\"n\":{},\"burst\":\"{pad}\"}}", self.published);
                if self.sim.is_up(*server) {
                    let _ = self.sim.publish(*server, ch, body.as_bytes());
                }
            }
            *left = left.saturating_sub(*per_sec);
        }
        bursts.retain(|b| b.2 > 0);
        self.bursts = bursts;
        for s in 0..self.sim.server_count() {
            if !self.sim.is_up(s) {
                continue;
            }
            for ch in [ROOM, FEED] {
                for _ in 0..self.sim.rng().up_to(3) {
                    self.published += 1;
                    let body =
                        format!("{{\"n\":{},\"pad\":\"{}\"}}", self.published, "x".repeat(40));
                    let _ = self.sim.publish(s, ch, body.as_bytes());
                }
            }
        }
        for i in 0..self.sim.client_count() {
            if self.sim.rng().up_to(30) != 0 {
                continue;
            }
            self.client_pubs += 1;
            let data = format!("{{\"c\":{i},\"k\":{}}}", self.client_pubs);
            let sent = self.sim.with_client(i, |s, now| s.publish(now, ROOM, &data));
            if let Ok(id) = sent {
                self.oracle.sent(i, id, ROOM, data);
            }
        }
    }

    fn fault(&mut self, mix: &Mix) {
        let enabled = [
            mix.partitions,
            mix.losses,
            mix.losses,
            mix.crashes,
            mix.slow,
            mix.clocks,
            mix.client_restarts,
            mix.partitions,
            mix.proxies,
        ];
        let kinds: Vec<u64> = (0..9u64).zip(enabled).filter(|k| k.1).map(|k| k.0).collect();
        if kinds.is_empty() {
            return;
        }
        let pick = self.sim.rng().up_to(kinds.len() as u64 - 1);
        let kind = kinds[usize::try_from(pick).unwrap_or(0)];
        let clients = self.sim.client_count();
        let servers = self.sim.server_count();
        let c = usize::try_from(self.sim.rng().up_to(clients as u64 - 1)).unwrap_or(0);
        let s = usize::try_from(self.sim.rng().up_to(servers as u64 - 1)).unwrap_or(0);
        let at = self.sim.elapsed().as_secs();
        let what = match kind {
            0 if mix.partitions => {
                let heal = secs(self.sim.rng(), 3, 90);
                let mut group = HashSet::new();
                for i in 0..clients {
                    if self.sim.client(i).server() == s && self.sim.rng().up_to(1) == 0 {
                        group.insert(i);
                    }
                }
                let n = group.len();
                self.sim.partition(group, s, heal);
                format!("partition {n} clients from server {s} for {heal:?}")
            }
            1 if mix.losses => {
                self.sim.blackhole_client(c);
                format!("black-hole client {c}")
            }
            2 if mix.losses => {
                self.sim.reset_client(c);
                format!("reset client {c}")
            }
            3 if mix.crashes && self.restarts[s].is_none() && self.sim.is_up(s) => {
                let refuse = self.sim.rng().up_to(1) == 0;
                let keep = self.sim.rng().up_to(1) == 0;
                let down =
                    if refuse { secs(self.sim.rng(), 1, 10) } else { secs(self.sim.rng(), 2, 30) };
                self.sim.crash_server(s, refuse);
                self.restarts[s] = Some((self.sim.now() + down, keep));
                let how = if refuse { "process" } else { "host" };
                format!("{how} crash of server {s} for {down:?}, log kept: {keep}")
            }
            4 if mix.slow => {
                let d = secs(self.sim.rng(), 5, 40);
                self.sim.pause_client(c, d);
                // A burst spread over the first half of the pause: readers keep up, the
                // paused client's window, WebSocket outbox and hub outbox (192 KiB) fill.
                let burst = 100 + self.sim.rng().up_to(300);
                let server = self.sim.client(c).server();
                let ch = channels_of(c).last().copied().unwrap_or(ROOM);
                let per_sec = burst / (d.as_secs() / 2).max(1);
                self.bursts.push((server, ch, burst, per_sec));
                format!("pause client {c} for {d:?}, burst of {burst}")
            }
            5 if mix.clocks => {
                let d = secs(self.sim.rng(), 1, 40);
                let node =
                    if self.sim.rng().up_to(2) == 0 { Node::Server(s) } else { Node::Client(c) };
                self.sim.step_clock(node, d);
                format!("clock of {node:?} +{d:?}")
            }
            6 if mix.client_restarts => self.restart_client(c),
            7 if mix.partitions => {
                // A short partition of one client: half-open on both sides, then healed.
                let heal = secs(self.sim.rng(), 20, 70);
                let server = self.sim.client(c).server();
                self.sim.partition(HashSet::from([c]), server, heal);
                format!("partition client {c} for {heal:?}")
            }
            8 if self.unblocks[s].is_none() => {
                let d = secs(self.sim.rng(), 20, 120);
                self.sim.block_websocket(s, true);
                self.unblocks[s] = Some(self.sim.now() + d);
                format!("proxy of server {s} blocks WebSocket for {d:?}")
            }
            _ => return,
        };
        self.faults.push(format!("{at}s: {what}"));
    }

    /// Client `i` is open over links that work, to a server that is up, reads, and has
    /// read everything sent to it.
    fn is_back(&self, i: usize) -> bool {
        let c = self.sim.client(i);
        c.session().state() == SessionState::Open
            && self.sim.is_up(c.server())
            && !self.sim.net().is_paused(i)
            && c.links().all(|l| {
                // Caught up: nothing it has not read yet (a close may be on its way).
                let net = self.sim.net();
                net.peer_dead_since(l).is_none() && net.in_flight(l, Side::Server) == 0
            })
    }

    /// The application of client `c` restarts and resubscribes from a checkpoint a few
    /// messages older than what it has: the replay overlaps, the application drops it.
    fn restart_client(&mut self, c: usize) -> String {
        let lag = self.sim.rng().up_to(10);
        let chans: Vec<(&str, Option<tidewire::replay::Position>)> = channels_of(c)
            .iter()
            .map(|&ch| {
                let p = self.oracle.position(c, ch).map(|mut p| {
                    p.offset = p.offset.saturating_sub(lag);
                    p
                });
                (ch, p)
            })
            .collect();
        let mut cfg = world::session(c, transports_of(c, self.mixed), Jitter::Full);
        self.sim.rng().fill(&mut cfg.rng_seed);
        self.oracle.restarted(c, &chans);
        self.sim.restart_client(c, |now| {
            let mut s = ClientSession::new(cfg, now);
            for (ch, pos) in chans {
                let _ = s.subscribe_from(now, ch, pos);
            }
            s
        });
        format!("client {c} restarts {lag} messages back")
    }
}

/// One chaos run; returns the simulated time or the violations (with the fault log).
pub(crate) fn run(seed: u64, mix: Mix) -> Result<Duration, String> {
    let mut sim = Sim::new(seed, world::net());
    let servers = if mix.servers && sim.rng().up_to(1) == 0 { 2 } else { 1 };
    for _ in 0..servers {
        sim.add_server(world::server());
    }
    let drawn = 16 + usize::try_from(sim.rng().up_to(8)).unwrap_or(0);
    // `SIM_CHAOS_CLIENTS=N` runs a bigger world (e.g. 1,000 clients, for the speed report).
    let clients =
        std::env::var("SIM_CHAOS_CLIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(drawn);
    let wall = std::time::Instant::now();
    let mut users = Vec::new();
    for i in 0..clients {
        let cfg = world::session(i, transports_of(i, mix.transports), Jitter::Full);
        sim.add_client(i % servers, cfg, |s, now| {
            for ch in channels_of(i) {
                s.subscribe(now, ch).expect("valid channel");
            }
        });
        users.push(Some(format!("c{i}")));
    }
    // Heartbeat 25 s + 20 s (WebSocket), SSE idle 45 s, poll 40 s; plus the sampling
    // period and a round trip.
    let oracle = Oracle::new(users, Duration::from_secs(45) + Duration::from_secs(2));
    let mut run = Run {
        sim,
        oracle,
        restarts: vec![None; servers],
        unblocks: vec![None; servers],
        published: 0,
        client_pubs: 0,
        bursts: Vec::new(),
        mixed: mix.transports,
        faults: Vec::new(),
    };
    run.sim.run_for(Duration::from_secs(5));
    run.oracle.start(&mut run.sim);
    for _ in 0..180 {
        run.second(&mix, true, true);
    }
    // Presence must be right a grace period (5 s, plus a round trip) after every client
    // is back.
    let mut all_open: Option<u32> = None;
    for t in 0..200 {
        run.second(&mix, false, t < 170);
        let n = run.sim.client_count();
        if all_open.is_none() && (0..n).all(|i| run.is_back(i)) {
            all_open = Some(t);
        }
        if all_open.is_some_and(|a| t == a + 7) {
            run.oracle.presence(&run.sim, &[ROOM, FEED]);
        }
    }
    run.oracle.settled(&mut run.sim, &[ROOM, FEED]);
    for i in 0..run.sim.client_count() {
        run.sim.with_client(i, ClientSession::close);
    }
    for _ in 0..90 {
        run.second(&mix, false, false);
    }
    run.oracle.drained(&mut run.sim, &[ROOM, FEED]);
    if run.oracle.violations().is_empty() {
        let t = run.oracle.tally;
        if std::env::var_os("SIM_REPORT").is_some() {
            println!(
                "seed {seed}: {} servers, {clients} clients, {} faults, {} published, {} delivered, {} refetches, {} app dups, {} acks, {} closed by the hub, {} upgrades back to WebSocket; {:.0} s simulated in {:.2} s wall ({:.4} simulated hours per wall second)",
                servers,
                run.faults.len(),
                run.published,
                t.delivered,
                t.refetches,
                t.app_dups,
                t.acked,
                (0..servers).map(|s| run.sim.server(s).stats().closed_by_hub).sum::<u64>(),
                t.upgrades,
                run.sim.elapsed().as_secs_f64(),
                wall.elapsed().as_secs_f64(),
                run.sim.elapsed().as_secs_f64() / 3600.0 / wall.elapsed().as_secs_f64(),
            );
        }
        return Ok(run.sim.elapsed());
    }
    Err(format!(
        "violations:\n  {}\nfaults:\n  {}",
        run.oracle.violations().join("\n  "),
        run.faults.join("\n  ")
    ))
}

#[test]
fn mixed() {
    world::run_seeds("chaos::mixed", &[1, 2, 3, 4], |seed| run(seed, Mix::ALL));
}

#[test]
fn partitions() {
    let mix = Mix { partitions: true, transports: true, ..Mix::default() };
    world::run_seeds("chaos::partitions", &[11, 12], |seed| run(seed, mix));
}

#[test]
fn crashes() {
    let mix = Mix { crashes: true, transports: true, servers: true, ..Mix::default() };
    world::run_seeds("chaos::crashes", &[21, 22], |seed| run(seed, mix));
}

#[test]
fn slow_consumers() {
    let mix = Mix { slow: true, transports: true, ..Mix::default() };
    world::run_seeds("chaos::slow_consumers", &[31, 32], |seed| run(seed, mix));
}

#[test]
fn clocks_losses_restarts() {
    let mix = Mix {
        clocks: true,
        losses: true,
        client_restarts: true,
        transports: true,
        ..Mix::default()
    };
    world::run_seeds("chaos::clocks_losses_restarts", &[41, 42], |seed| run(seed, mix));
}

#[test]
fn blocking_proxies() {
    let mix = Mix { proxies: true, losses: true, transports: true, ..Mix::default() };
    world::run_seeds("chaos::blocking_proxies", &[51, 52], |seed| run(seed, mix));
}

#[test]
fn calm() {
    let mix = Mix { transports: true, servers: true, ..Mix::default() };
    world::run_seeds("chaos::calm", &[0], |seed| run(seed, mix));
}

/// Regression: a session that published while partitioned (1/s for 150 s, well under the
/// hub's 50/s) sent its whole queue at once after the heal, tripped the hub's inbound
/// limit (close 1008) and closed for good for want of new credentials. The session now
/// paces its envelopes (`SessionConfig::send_rate`).
#[test]
fn offline_queue_is_paced() {
    world::run_seeds("chaos::offline_queue_is_paced", &[5], |seed| {
        let mut sim = Sim::new(seed, world::net());
        sim.add_server(world::server());
        let cfg = world::session(0, vec![Transport::WebSocket], Jitter::Full);
        sim.add_client(0, cfg, |s, now| s.subscribe(now, ROOM).expect("valid channel"));
        let mut oracle = Oracle::new(vec![Some("c0".into())], Duration::from_secs(47));
        sim.run_for(Duration::from_secs(5));
        oracle.start(&mut sim);
        sim.partition(HashSet::from([0]), 0, Duration::from_secs(150));
        for k in 0..150 {
            let data = format!("{{\"c\":0,\"k\":{k}}}");
            let id = sim
                .with_client(0, |s, now| s.publish(now, ROOM, &data))
                .map_err(|e| e.to_string())?;
            oracle.sent(0, id, ROOM, data);
            sim.run_for(SEC);
            oracle.absorb(&mut sim);
        }
        for _ in 0..120 {
            sim.run_for(SEC);
            oracle.absorb(&mut sim);
        }
        oracle.settled(&mut sim, &[ROOM]);
        if oracle.tally.acked != 150 {
            return Err(format!("{} of 150 publishes acknowledged", oracle.tally.acked));
        }
        match oracle.violations() {
            [] => Ok(sim.elapsed()),
            v => Err(v.join("\n")),
        }
    });
}

/// Regression: a session with 120 channels (the hub allows 128 per connection) sent its 120
/// `sub`s at once on every connection, tripped the hub's inbound limit (burst 100, close
/// 1008) and closed for good. `sub`s are paced now too; here they also come back after a
/// reset.
#[test]
fn many_channels_are_paced() {
    world::run_seeds("chaos::many_channels_are_paced", &[6], |seed| {
        let mut sim = Sim::new(seed, world::net());
        sim.add_server(world::server());
        let names: Vec<String> = (0..120).map(|k| format!("public:c{k}")).collect();
        let cfg = world::session(0, vec![Transport::WebSocket], Jitter::Full);
        sim.add_client(0, cfg, |s, now| {
            for ch in &names {
                s.subscribe(now, ch).expect("valid channel");
            }
        });
        let mut oracle = Oracle::new(vec![Some("c0".into())], Duration::from_secs(47));
        sim.run_for(Duration::from_secs(5));
        oracle.start(&mut sim);
        for round in 0..60 {
            for ch in names.iter().step_by(7) {
                let _ = sim.publish(0, ch, format!("{{\"round\":{round}}}").as_bytes());
            }
            if round == 20 {
                sim.reset_client(0);
            }
            sim.run_for(SEC);
            oracle.absorb(&mut sim);
        }
        sim.run_for(Duration::from_secs(60));
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        oracle.settled(&mut sim, &all);
        match oracle.violations() {
            [] => Ok(sim.elapsed()),
            v => Err(v.join("\n")),
        }
    });
}
