//! Event-stream parser and encoder throughput, for small and large events.
//!
//! Run briefly with
//! `cargo bench -p tidewire --bench sse -- --warm-up-time 1 --measurement-time 2`.
//! Throughput is counted in bytes of the stream.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use tidewire::sse::{ParserLimits, SseParser, encode};

/// `size` letters.
fn text(size: usize) -> String {
    b"abcdefghijklmnopqrstuvwxyz".iter().cycle().take(size).map(|&b| char::from(b)).collect()
}

/// A stream of `count` events, each with an id, a type and `size` bytes of data on one line.
fn stream(count: usize, size: usize) -> Vec<u8> {
    let data = text(size);
    let mut out = Vec::new();
    for i in 0..count {
        let ev =
            encode::event(Some(&format!("a1:{i}")), Some("ticks"), data.as_str().into()).unwrap();
        out.extend_from_slice(&ev.to_bytes());
    }
    out
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse_parse");
    // Small events (a dashboard tick), medium, and large (a full-state snapshot).
    for (count, size) in [(1000, 16), (200, 1024), (4, 256 << 10)] {
        let input = stream(count, size);
        let limits = ParserLimits { max_line: 1 << 20, max_event: 1 << 20, max_queued: 4096 };
        g.throughput(Throughput::Bytes(input.len() as u64));
        for chunk in [input.len(), 1460] {
            let name = format!(
                "{size}B-events/{}",
                if chunk == input.len() { "whole" } else { "1460B-reads" }
            );
            g.bench_with_input(BenchmarkId::from_parameter(name), &input, |b, input| {
                b.iter(|| {
                    let mut p = SseParser::new(limits);
                    let mut n = 0;
                    for part in input.chunks(chunk) {
                        p.push(part).unwrap();
                        while let Some(e) = p.next_event() {
                            n += e.data.len();
                        }
                    }
                    black_box(n)
                });
            });
        }
    }
    g.finish();
}

fn encode_events(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse_encode");
    for size in [16usize, 1024, 256 << 10] {
        let data = tidewire::ws::Utf8Bytes::from(text(size));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &data, |b, data| {
            b.iter(|| {
                black_box(encode::event(Some("a1:17"), Some("ticks"), data.clone()).unwrap())
            });
        });
    }
    g.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    parse(&mut c);
    encode_events(&mut c);
}

criterion_main!(benches);
