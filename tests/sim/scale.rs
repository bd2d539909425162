//! Scale scenarios on the real client session and hub.
//!
//! - `herd`: 1,000 WebSocket sessions lose their server at the same instant (a process
//!   crash: every connection reset, new ones refused for 5 s, then the server is back with
//!   its log) and reconnect with each jitter mode of the backoff. The table gives the
//!   connection attempts and the successful reconnects per 100 ms window.
//! - `storm`: 10,000 WebSocket sessions on one hub (1,000 in debug builds) and a broadcast
//!   storm of 100 messages of 2 KB within one second (200 KB per client: more than a
//!   client's window, WebSocket outbox and hub outbox hold), 1% of the clients not reading
//!   for 10 s from its start; every delivery is checked by the oracle.
//!   `SIM_STORM_CLIENTS`, `SIM_STORM_MESSAGES`, `SIM_STORM_BYTES` change it.
//!
//! `SIM_REPORT=1 cargo test -p tidewire-tests --release --test sim -- --nocapture herd`
//! prints the per-window series too.

use std::time::Instant as WallClock;

use tidewire::client::{SessionConfig, SessionEvent, SessionState, Transport};
use tidewire::policy::{BackoffConfig, Jitter};
use tidewire::testing::Sim;
use tidewire::time::Duration;

use crate::oracle::Oracle;
use crate::world;

const WINDOW: Duration = Duration::from_millis(100);

fn anonymous(jitter: Jitter) -> SessionConfig {
    let mut cfg = SessionConfig::new("sim", 80);
    cfg.transports = vec![Transport::WebSocket];
    cfg.backoff = BackoffConfig { jitter, ..BackoffConfig::default() };
    cfg
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Counts per 100 ms window of `times` (offsets from the crash).
fn windows(times: &[Duration]) -> Vec<u32> {
    let mut w = Vec::new();
    for t in times {
        let i = usize::try_from(t.as_millis() / WINDOW.as_millis()).unwrap_or(usize::MAX);
        if i >= w.len() {
            w.resize(i + 1, 0);
        }
        w[i] += 1;
    }
    w
}

struct Herd {
    attempts: Vec<Duration>,
    opens: Vec<Duration>,
}

fn herd_run(seed: u64, clients: usize, jitter: Jitter) -> Result<(Herd, Duration), String> {
    let mut sim = Sim::new(seed, world::net());
    let s = sim.add_server(world::server());
    for _ in 0..clients {
        sim.add_client(s, anonymous(jitter), |ss, now| {
            ss.subscribe(now, "public:herd").expect("valid channel");
        });
    }
    sim.run_for(Duration::from_secs(5));
    let open = (0..clients).filter(|&i| sim.client(i).session().state() == SessionState::Open);
    if open.count() != clients {
        return Err("not every session opened before the crash".into());
    }
    for i in 0..clients {
        sim.client_mut(i).drain_events();
    }
    let before: Vec<usize> = (0..clients).map(|i| sim.client(i).connect_times().len()).collect();
    let crash = sim.now();
    sim.crash_server(s, true);
    sim.run_for(Duration::from_secs(5));
    sim.restart_server(s, true);
    let _ = sim.publish(s, "public:herd", br#"{"after":"restart"}"#);
    sim.run_for(Duration::from_secs(150));
    let mut herd = Herd { attempts: Vec::new(), opens: Vec::new() };
    for (i, &n) in before.iter().enumerate() {
        let c = sim.client_mut(i);
        herd.attempts.extend(c.connect_times()[n..].iter().map(|t| *t - crash));
        let mut opened = false;
        for (t, e) in c.drain_events() {
            if let SessionEvent::State(ch) = e
                && ch.state == SessionState::Open
            {
                herd.opens.push(t - crash);
                opened = true;
            }
        }
        if !opened || c.session().state() != SessionState::Open {
            return Err(format!("client {i} did not reconnect"));
        }
    }
    herd.attempts.sort_unstable();
    herd.opens.sort_unstable();
    Ok((herd, sim.elapsed()))
}

#[test]
fn herd() {
    let clients = env_usize("SIM_HERD_CLIENTS").unwrap_or(1000);
    let report = std::env::var_os("SIM_REPORT").is_some();
    let modes = [
        ("none", Jitter::None),
        ("full", Jitter::Full),
        ("equal", Jitter::Equal),
        ("decorrelated", Jitter::Decorrelated),
    ];
    let mut peaks = Vec::new();
    let mut lines = Vec::new();
    world::run_seeds("scale::herd", &[7], |seed| {
        let mut total = Duration::ZERO;
        peaks.clear();
        lines.clear();
        for (name, jitter) in modes {
            let (h, simulated) = herd_run(seed, clients, jitter)?;
            total += simulated;
            let a = windows(&h.attempts);
            let o = windows(&h.opens);
            let pct = |v: &[Duration], q: usize| v[(v.len() - 1) * q / 100].as_secs_f64();
            peaks.push((name, a.iter().copied().max().unwrap_or(0)));
            lines.push(format!(
                "| {name:<12} | {:>8} | {:>14} | {:>17} | {:>6.1} s | {:>6.1} s | {:>6.1} s |",
                h.attempts.len(),
                a.iter().copied().max().unwrap_or(0),
                o.iter().copied().max().unwrap_or(0),
                pct(&h.opens, 50),
                pct(&h.opens, 99),
                pct(&h.opens, 100),
            ));
            if report {
                for (label, series) in [("attempts", &a), ("reconnects", &o)] {
                    lines.push(format!("  {name} {label} per 100 ms, from the crash:"));
                    for (row, chunk) in series.chunks(20).enumerate() {
                        if chunk.iter().any(|&n| n > 0) {
                            let cells: Vec<String> =
                                chunk.iter().map(|n| format!("{n:>4}")).collect();
                            lines.push(format!(
                                "    {:>5.1}s {}",
                                row as f64 * 2.0,
                                cells.join("")
                            ));
                        }
                    }
                }
            }
        }
        Ok(total)
    });
    println!("\nthundering herd: {clients} WebSocket sessions, process crash, 5 s down, log kept");
    println!(
        "| jitter       | attempts | peak att/100ms | peak reconn/100ms | p50 back | p99 back | all back |"
    );
    println!(
        "|--------------|----------|----------------|-------------------|----------|----------|----------|"
    );
    for l in &lines {
        println!("{l}");
    }
    let peak = |n: &str| peaks.iter().find(|p| p.0 == n).map_or(0, |p| p.1);
    assert!(
        peak("none") > peak("full"),
        "no jitter must bunch up more than full jitter: {peaks:?}"
    );
}

#[test]
fn storm() {
    let clients = env_usize("SIM_STORM_CLIENTS").unwrap_or(if cfg!(debug_assertions) {
        1_000
    } else {
        10_000
    });
    let messages = env_usize("SIM_STORM_MESSAGES").unwrap_or(100);
    let size = env_usize("SIM_STORM_BYTES").unwrap_or(2000);
    world::run_seeds("scale::storm", &[9], |seed| {
        let wall = WallClock::now();
        let mut sim = Sim::new(seed, world::net());
        let s = sim.add_server(world::server());
        for _ in 0..clients {
            sim.add_client(s, anonymous(Jitter::Full), |ss, now| {
                ss.subscribe(now, "public:storm").expect("valid channel");
            });
        }
        let mut oracle = Oracle::new(vec![None; clients], Duration::from_secs(47));
        sim.run_for(Duration::from_secs(5));
        oracle.start(&mut sim);
        let setup = wall.elapsed();
        // The storm: `messages` broadcasts within one second; 1% of the clients stop
        // reading for 10 s as it starts. The fastest readers keep up; the slowest
        // links and the paused clients overflow and are closed with 4100, then resume or
        // refetch.
        let storm_wall = WallClock::now();
        let start = sim.now();
        let mut peak = (0usize, 0usize);
        for k in 0..messages {
            if k == 0 {
                for i in (0..clients).step_by(100) {
                    sim.pause_client(i, Duration::from_secs(10));
                }
            }
            let body = format!("{{\"k\":{k},\"pad\":\"{}\"}}", "s".repeat(size));
            sim.publish(s, "public:storm", body.as_bytes()).map_err(|e| e.to_string())?;
            let (hub, transport) = sim.server(s).buffered_bytes();
            peak = (peak.0.max(hub), peak.1.max(transport));
            sim.run_for(Duration::from_secs(1) / u32::try_from(messages).unwrap_or(1));
            if k % 10 == 9 {
                // Keeps the delivered events (each with its data) from piling up.
                oracle.absorb(&mut sim);
            }
        }
        let mut drained_at = None;
        for _ in 0..60 {
            sim.run_for(Duration::from_secs(1));
            oracle.absorb(&mut sim);
            let head =
                sim.server(s).hub().log("public:storm").map(tidewire::replay::ReplayLog::head);
            let all = (0..clients).all(|i| oracle.position(i, "public:storm") == head);
            if all && drained_at.is_none() {
                drained_at = Some(sim.now() - start);
            }
        }
        oracle.settled(&mut sim, &[]);
        let storm_wall = storm_wall.elapsed();
        if !oracle.violations().is_empty() {
            return Err(oracle.violations().join("\n"));
        }
        let stats = sim.server(s).stats();
        println!(
            "storm: {clients} clients, {messages} broadcasts of {size} B in 1 s: {} deliveries checked, all delivered after {:.2?} simulated, \
             peak queued {} KiB in hub outboxes + {} KiB in transports, {} closed as too slow, {} refetches; setup {setup:.1?}, storm {storm_wall:.1?} wall ({:.0} deliveries/s)",
            oracle.tally.delivered,
            drained_at.unwrap_or_default(),
            peak.0 >> 10,
            peak.1 >> 10,
            stats.closed_by_hub,
            oracle.tally.refetches,
            oracle.tally.delivered as f64 / storm_wall.as_secs_f64(),
        );
        Ok(sim.elapsed())
    });
}
