//! Scale-out cost: messages per second and publish-to-delivery latency through Redis against
//! the in-process hub, with one and with two instances (issue 9).
//!
//! Run: `cargo bench -p tidewire-smol --bench bus` (needs `redis-server`:
//! `scripts/redis-setup.sh`). Each setup is measured in the same run, interleaved, and the
//! report gives ratios to the in-process hub beside the absolute numbers:
//!
//! - `local`: one hub, no Redis; the subscriber is on the publishing instance.
//! - `redis-1`: one hub on Redis; the subscriber is on the publishing instance.
//! - `redis-2`: two hubs on one Redis; the publisher is on A, the subscriber on B.
//!
//! Latency: one publish at a time (`ServerHandle::submit`), from the call to the `msg` frame
//! at a WebSocket subscriber. Throughput: `PUBLISHERS` tasks publishing back to back for
//! `SECONDS`, counting what the subscriber receives.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use smol::Timer;
use tidewire::redis::RedisConfig;
use tidewire::server::{Routes, Server as Core};
use tidewire_smol::{
    ClientOptions, Message, Server, ServerConfig, ServerHandle, Upgrade, WebSocket, connect,
};

const LATENCY_SAMPLES: usize = 2000;
const PUBLISHERS: usize = 16;
const SECONDS: u64 = 3;
const ROUNDS: usize = 2;

/// A throwaway `redis-server` on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (run scripts/redis-setup.sh)");
        let redis = Redis { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hub served on a loopback port (the core's default routes, anonymous, allow-all).
async fn instance(redis: Option<u16>) -> (ServerHandle, ServerHandle) {
    let mut cfg = ServerConfig::default();
    cfg.endpoint.routes = Routes::default();
    cfg.redis = redis.map(|port| RedisConfig { port, ..RedisConfig::default() });
    let server = Server::bind("127.0.0.1:0", cfg).await.unwrap();
    let hub = server.handle();
    smol::spawn(server.serve(|up: Upgrade| async move { drop(up) })).detach();
    if redis.is_some() {
        while !hub.inspect(Core::bus_is_up) {
            Timer::after(Duration::from_millis(5)).await;
        }
    }
    (hub.clone(), hub)
}

/// A WebSocket subscriber of `ch` on `addr`.
async fn subscriber(addr: SocketAddr, ch: &str) -> WebSocket {
    let mut ws = connect(&format!("ws://{addr}/ws"), ClientOptions::default()).await.unwrap();
    ws.send(Message::text(format!(r#"{{"op":"sub","ch":"{ch}"}}"#))).await.unwrap();
    loop {
        let m = ws.recv().await.unwrap();
        if m.as_text().is_some_and(|t| t.starts_with(r#"{"op":"subscribed""#)) {
            return ws;
        }
    }
}

/// Waits for the next `msg` frame.
async fn next_msg(ws: &mut WebSocket) {
    loop {
        let m = ws.recv().await.unwrap();
        if m.as_text().is_some_and(|t| t.starts_with(r#"{"op":"msg""#)) {
            return;
        }
    }
}

struct Setup {
    name: &'static str,
    publisher: ServerHandle,
    sub: WebSocket,
    _servers: Vec<ServerHandle>,
}

async fn setups(redis: u16) -> Vec<Setup> {
    let mut out = Vec::new();
    let (hub, server) = instance(None).await;
    let sub = subscriber(server.local_addr(), "bench:local").await;
    out.push(Setup { name: "local", publisher: hub, sub, _servers: vec![server] });
    let (hub, server) = instance(Some(redis)).await;
    let sub = subscriber(server.local_addr(), "bench:r1").await;
    out.push(Setup { name: "redis-1", publisher: hub, sub, _servers: vec![server] });
    let (a, sa) = instance(Some(redis)).await;
    let (_b, sb) = instance(Some(redis)).await;
    let sub = subscriber(sb.local_addr(), "bench:r2").await;
    out.push(Setup { name: "redis-2", publisher: a, sub, _servers: vec![sa, sb] });
    out
}

fn channel_of(name: &str) -> &'static str {
    match name {
        "local" => "bench:local",
        "redis-1" => "bench:r1",
        _ => "bench:r2",
    }
}

/// Publish-to-delivery latencies, sorted (microseconds).
async fn latency(s: &mut Setup) -> Vec<u64> {
    let ch = channel_of(s.name);
    let mut lat = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES {
        let t0 = Instant::now();
        s.publisher.submit(ch, format!(r#"{{"i":{i}}}"#).as_bytes()).await.unwrap();
        next_msg(&mut s.sub).await;
        lat.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    lat.sort_unstable();
    lat
}

/// Messages per second delivered to the subscriber while `PUBLISHERS` tasks publish.
async fn throughput(s: &mut Setup) -> f64 {
    let ch = channel_of(s.name);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..PUBLISHERS {
        let (hub, stop, sent) = (s.publisher.clone(), stop.clone(), sent.clone());
        tasks.push(smol::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if hub.submit(ch, br#"{"t":1}"#).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                // The in-process submit never waits: let the subscriber run.
                smol::future::yield_now().await;
            }
        }));
    }
    let t0 = Instant::now();
    let mut got = 0u64;
    while t0.elapsed() < Duration::from_secs(SECONDS) {
        next_msg(&mut s.sub).await;
        got += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await;
    }
    // Drain what is still in flight so the next round starts clean.
    let total = sent.load(Ordering::Relaxed);
    while got < total {
        next_msg(&mut s.sub).await;
        got += 1;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = (got as f64) / secs;
    rate.min(total as f64 / secs)
}

fn pct(v: &[u64], p: f64) -> u64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn main() {
    let redis = Redis::start();
    smol::block_on(async {
        let mut all = setups(redis.port).await;
        let mut lat: Vec<Vec<u64>> = vec![Vec::new(); all.len()];
        let mut rate: Vec<f64> = vec![0.0; all.len()];
        for _ in 0..ROUNDS {
            for (k, s) in all.iter_mut().enumerate() {
                lat[k].extend(latency(s).await);
                rate[k] = rate[k].max(throughput(s).await);
            }
        }
        println!("| setup | msgs/s | vs local | p50 µs | p99 µs | p50 vs local |");
        println!("|---|---|---|---|---|---|");
        for (k, s) in all.iter().enumerate() {
            lat[k].sort_unstable();
            #[allow(clippy::cast_precision_loss)]
            let (p50, p50_local) = (pct(&lat[k], 0.5) as f64, pct(&lat[0], 0.5) as f64);
            println!(
                "| {} | {:.0} | {:.2}× | {} | {} | {:.1}× |",
                s.name,
                rate[k],
                rate[k] / rate[0],
                pct(&lat[k], 0.5),
                pct(&lat[k], 0.99),
                p50 / p50_local,
            );
        }
    });
    drop(redis);
}
