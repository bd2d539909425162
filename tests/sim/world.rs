//! The settings shared by the scenarios, and the seed harness: fixed seeds in
//! `cargo test`, `SIM_SEEDS=N` for N more, `SIM_SEED=S` to replay one; a failure prints its
//! seed and the one-line command that replays it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant as WallClock;

use tidewire::client::{SessionConfig, Transport};
use tidewire::hub::HubConfig;
use tidewire::policy::{BackoffConfig, Jitter, OutboxConfig};
use tidewire::replay::LogLimits;
use tidewire::testing::{NetConfig, ServerConfig};
use tidewire::time::Duration;
use tidewire::ws::WsConfig;

/// Simulated milliseconds run by every scenario of this process.
static SIMULATED_MS: AtomicU64 = AtomicU64::new(0);

/// The seeds to run: `SIM_SEED` alone when set; else `fixed`, plus `SIM_SEEDS` more.
pub(crate) fn seeds(fixed: &[u64]) -> Vec<u64> {
    if let Some(s) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let more: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut all = fixed.to_vec();
    all.extend((0..more).map(|i| 0x51_0000 + i));
    all
}

/// Runs `scenario` for each seed; each returns the simulated time it covered, or what it
/// found broken. Prints the seed and its replay command for every failure, and the
/// simulated hours run, then fails the test if any seed failed.
pub(crate) fn run_seeds(
    test: &str,
    fixed: &[u64],
    mut scenario: impl FnMut(u64) -> Result<Duration, String>,
) {
    let started = WallClock::now();
    let mut simulated = Duration::ZERO;
    let mut failed = Vec::new();
    let seeds = seeds(fixed);
    for &seed in &seeds {
        let outcome = catch_unwind(AssertUnwindSafe(|| scenario(seed)));
        let err = match outcome {
            Ok(Ok(d)) => {
                simulated += d;
                continue;
            }
            Ok(Err(e)) => e,
            Err(p) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".into()),
        };
        eprintln!("\nsim {test} FAILED with seed {seed}:\n{err}");
        eprintln!(
            "replay: SIM_SEED={seed} cargo test -p tidewire-tests --test sim -- {test} --exact --nocapture\n"
        );
        failed.push(seed);
    }
    let ms = u64::try_from(simulated.as_millis()).unwrap_or(u64::MAX);
    let total = SIMULATED_MS.fetch_add(ms, Ordering::Relaxed) + ms;
    println!(
        "sim {test}: {} seeds, {:.2} simulated hours in {:.1?} wall ({:.2} h by all sim tests so far)",
        seeds.len(),
        simulated.as_secs_f64() / 3600.0,
        started.elapsed(),
        total as f64 / 3.6e6,
    );
    assert!(failed.is_empty(), "sim {test}: seeds {failed:?} failed (replay commands above)");
}

/// The network of the scenarios: 5–80 ms one way, 20 ms jitter, 32 KiB windows.
pub(crate) fn net() -> NetConfig {
    NetConfig { window: 32 << 10, ..NetConfig::default() }
}

/// The servers of the scenarios, with small bounds so that a burst of a few hundred
/// messages reaches them: logs of 1000 messages or 64 KiB (under the 128 KiB outbox, so
/// that any resume fits) kept 10 minutes, WebSocket outboxes of 32 KiB.
pub(crate) fn server() -> ServerConfig {
    let hub = HubConfig {
        log: LogLimits { max_count: 1000, max_bytes: 64 << 10, max_age: Duration::from_secs(600) },
        outbox: OutboxConfig { max_bytes: 128 << 10, ..OutboxConfig::default() },
        ..HubConfig::default()
    };
    let mut ws = WsConfig::default();
    ws.max_outbound = 32 << 10;
    let mut cfg = ServerConfig::default();
    cfg.hub = hub;
    cfg.ws = ws;
    cfg
}

/// A session of user `c{i}` on `transports`, with `jitter` in its backoff.
pub(crate) fn session(i: usize, transports: Vec<Transport>, jitter: Jitter) -> SessionConfig {
    let mut cfg = SessionConfig::new("sim", 80);
    cfg.token = Some(format!("user:c{i}"));
    cfg.transports = transports;
    cfg.backoff = BackoffConfig { jitter, ..BackoffConfig::default() };
    cfg
}
