//! The whole server's fan-out, compressed and not: one trusted publish of a 2 KiB
//! dashboard message to N hub WebSockets, then every receiver's bytes pulled
//! (`Server::poll_transmit`, what an adapter does), so the time covers the hub's encoding,
//! the N shared frames, each connection's frame header and, with permessage-deflate and
//! `server_no_context_takeover`, the one compression shared by all (issue 15).
//!
//! `cargo bench -p tidewire --features deflate --bench fanout -- --warm-up-time 1 --measurement-time 3`
//!
//! Criterion's throughput is in receivers/s: its inverse is the cost per receiver.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use tidewire::hub::{AllowAll, HubConfig};
use tidewire::server::{ConnHandle, Credential, Server, ServerConfig, Verdict};
use tidewire::ws::deflate::DeflateConfig;
use tidewire::{Instant, Transmit};

#[allow(clippy::disallowed_methods, reason = "a bench starts virtual time from one real instant")]
fn start() -> Instant {
    Instant::now()
}

/// A masked client text frame with a zero mask key (the payload reads as is).
fn client_text(payload: &str) -> Vec<u8> {
    let len = payload.len();
    assert!(len < 126);
    let mut f = vec![0x81, 0x80 | u8::try_from(len).unwrap(), 0, 0, 0, 0];
    f.extend_from_slice(payload.as_bytes());
    f
}

fn drain(s: &mut Server, now: Instant, conn: ConnHandle) -> usize {
    let mut n = 0;
    while let Some(Transmit::Bytes(b)) = s.poll_transmit(now, conn) {
        n += b.len();
    }
    n
}

fn server(n: u64, deflate: bool, now: Instant) -> Server {
    let mut cfg = ServerConfig::default();
    cfg.hub = HubConfig { rate_limit: None, ..HubConfig::default() };
    if deflate {
        cfg.ws.deflate = Some(DeflateConfig::no_context_takeover());
    }
    let anyone = |req: &tidewire::http::Request| {
        let user = req.query_param("u").unwrap_or_default();
        Verdict::Allow(Credential::client(tidewire::hub::Principal::user(user)))
    };
    let mut s = Server::new(cfg, anyone, AllowAll, 1);
    let ext = if deflate { "Sec-WebSocket-Extensions: permessage-deflate\r\n" } else { "" };
    for i in 0..n {
        let conn = ConnHandle(i);
        s.handle_accept(now, conn);
        let head = format!(
            "GET /ws?u=u{i} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
        );
        s.handle_read(now, conn, head.as_bytes());
        s.handle_read(now, conn, &client_text(r#"{"op":"sub","ch":"dash"}"#));
        drain(&mut s, now, conn);
    }
    while s.poll_event().is_some() {}
    for i in 0..n {
        drain(&mut s, now, ConnHandle(i));
    }
    s
}

fn fanout(c: &mut Criterion) {
    let now = start();
    let data = format!(
        "{{\"cpu\":[{}],\"host\":\"web-1\"}}",
        (0..700).map(|i| (i * 7 % 100).to_string()).collect::<Vec<_>>().join(",")
    );
    assert!(data.len() > 1500 && data.len() < 2600, "{}", data.len());
    let mut g = c.benchmark_group("fanout_2k");
    for n in [100u64, 1_000, 10_000] {
        g.throughput(Throughput::Elements(n));
        for deflate in [false, true] {
            let mut s = server(n, deflate, now);
            let name = if deflate { "deflate" } else { "plain" };
            let mut wire = 0;
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                b.iter(|| {
                    s.publish(now, "dash", data.as_bytes()).unwrap();
                    wire = 0;
                    for i in 0..n {
                        wire += drain(&mut s, now, ConnHandle(i));
                    }
                    black_box(wire);
                });
            });
            let (compressions, shared) = s.compression_counts();
            println!(
                "fanout_2k/{name}/{n}: {} bytes on the wire per receiver; {compressions} compressions, {shared} shared sends",
                wire / usize::try_from(n).unwrap()
            );
        }
    }
    g.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    fanout(&mut c);
}

criterion_main!(benches);
