//! The hub's fan-out cost and its memory per connection.
//!
//! `cargo bench -p tidewire --bench hub -- --warm-up-time 1 --measurement-time 3`
//!
//! - `fanout/N`: one trusted publish to a channel with N WebSocket subscribers, then every
//!   receiver's frame pulled (what an adapter does), so the time covers encoding once,
//!   queueing N shared frames and handing them out. Divide by N for the cost per receiver
//!   (criterion's throughput is in receivers/s).
//! - Memory: printed before the timings, from the process's resident set before and after
//!   connecting and subscribing 10,000 and 100,000 WebSocket connections (two channels each,
//!   presence names; frames pulled as they are queued, as an adapter does), divided by the
//!   count. The presence list of a channel is capped (1024 names by default), so joins past
//!   it cost no presence traffic.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use serde_json::value::RawValue;
use tidewire::Instant;
use tidewire::hub::{AllowAll, ConnId, Hub, HubConfig, Principal, Transport};

fn hub_with(n: usize, channels: &[&str], now: Instant) -> (Hub, Vec<ConnId>) {
    let cfg = HubConfig { rate_limit: None, ..HubConfig::default() };
    let mut hub = Hub::new(cfg, AllowAll, 1);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = hub.connect(now, Transport::WebSocket, Principal::user(format!("u{i}")));
        for ch in channels {
            hub.subscribe(now, id, ch, None).unwrap();
        }
        // An adapter writes each connection's frames out as they come (the joiner's
        // presence list, the others' join notices), so none piles up here either.
        drain(&mut hub);
        ids.push(id);
    }
    (hub, ids)
}

/// Pulls every queued frame, as adapters do; returns the bytes handed out.
fn drain(hub: &mut Hub) -> usize {
    let mut bytes = 0;
    while let Some(id) = hub.poll_ready() {
        while let Some(frame) = hub.pull(id) {
            bytes += frame.len();
        }
    }
    while hub.poll_event().is_some() {}
    bytes
}

#[allow(clippy::disallowed_methods, reason = "a bench starts virtual time from one real instant")]
fn start() -> Instant {
    Instant::now()
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn memory_per_connection() {
    let now = start();
    for n in [10_000, 100_000] {
        let before = rss_bytes();
        let (hub, ids) = hub_with(n, &["chat:lobby", "public:ticks"], now);
        let after = rss_bytes();
        println!(
            "hub memory: {n} WebSocket connections, 2 channels each: {} bytes/connection (RSS {:.1} MiB -> {:.1} MiB)",
            after.saturating_sub(before) / n,
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
        );
        drop(black_box((hub, ids)));
    }
}

fn fanout(c: &mut Criterion) {
    memory_per_connection();
    let now = start();
    let data = RawValue::from_string(r#"{"n":1,"text":"a small chat message"}"#.into()).unwrap();
    let mut g = c.benchmark_group("fanout");
    for n in [100usize, 1_000, 10_000] {
        let (mut hub, _ids) = hub_with(n, &["room"], now);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                hub.publish(now, "room", &data).unwrap();
                black_box(drain(&mut hub))
            });
        });
    }
    g.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    fanout(&mut c);
}

criterion_main!(benches);
