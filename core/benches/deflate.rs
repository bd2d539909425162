//! permessage-deflate (feature `deflate`): compression ratio and CPU per message for three
//! payloads (a 200 B chat JSON, a 2 KiB dashboard JSON, 64 KiB of text), with and without
//! context takeover, for flate2's zlib-rs backend (the one `tidewire` uses) against
//! miniz_oxide (flate2's default backend, driven directly), in the same run; then the whole
//! send path of a `WsConnection` and a `PreparedMessage` shared by a broadcast.
//!
//! `cargo bench -p tidewire --features deflate --bench deflate`. The ratios are printed
//! first (compressed / raw bytes over a sequence of similar but different messages, as a
//! chat or a dashboard sends them).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use miniz_oxide::deflate::core::{
    CompressorOxide, TDEFLFlush, compress as mz_compress, create_comp_flags_from_zip_params,
};
use miniz_oxide::inflate::stream::{InflateState, inflate as mz_inflate};
use miniz_oxide::{DataFormat, MZFlush};
use tidewire::ws::deflate::{DeflateConfig, PreparedMessage};
use tidewire::ws::{Message, WsConfig, WsConnection, WsEvent};
use tidewire::{Instant, Machine, Transmit};

const MESSAGES: usize = 64;

/// A small deterministic generator (no `rand` in benches).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[usize::try_from(self.next()).unwrap_or(0) % items.len()]
    }
}

const WORDS: &[&str] = &[
    "the", "message", "server", "client", "channel", "window", "compress", "frame", "socket",
    "river", "tide", "wire", "is", "a", "of", "and", "to", "in", "that", "it", "with", "as", "for",
    "was", "on", "are", "by", "this", "be", "from", "or", "have", "an", "they", "which", "one",
    "you", "were", "her", "all", "she", "there", "would", "their", "we", "him", "been", "has",
    "when", "who", "will", "more", "no", "if", "out",
];

fn sentence(rng: &mut Lcg, words: usize) -> String {
    (0..words).map(|_| rng.pick(WORDS)).collect::<Vec<_>>().join(" ")
}

/// Chat messages of about 200 bytes.
fn chat(rng: &mut Lcg) -> Vec<u8> {
    let user = rng.pick(&["alice", "bob", "carol", "dave", "erin"]);
    let s = format!(
        r#"{{"type":"message","channel":"general","id":"m-{}","user":{{"id":{},"name":"{user}"}},"ts":{},"text":"{}"}}"#,
        rng.next() % 1_000_000,
        rng.next() % 10_000,
        1_700_000_000_000 + rng.next() % 1_000_000,
        sentence(rng, 12)
    );
    let mut b = s.into_bytes();
    b.resize(200, b' ');
    b
}

/// Dashboard updates of about 2 KiB: many named series with changing numbers.
fn dashboard(rng: &mut Lcg) -> Vec<u8> {
    let mut s = String::from(r#"{"type":"tick","series":["#);
    let mut i = 0;
    while s.len() < 2000 {
        s.push_str(&format!(
            r#"{{"name":"cpu.core{i}","value":{}.{},"unit":"percent"}},"#,
            rng.next() % 100,
            rng.next() % 100
        ));
        i += 1;
    }
    s.push_str("]}");
    let mut b = s.into_bytes();
    b.truncate(2048);
    b
}

/// 64 KiB of English-like text.
fn text(rng: &mut Lcg) -> Vec<u8> {
    let mut s = String::new();
    while s.len() < 65_536 {
        s.push_str(&sentence(rng, 14));
        s.push_str(". ");
    }
    s.truncate(65_536);
    s.into_bytes()
}

fn payloads() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let mut rng = Lcg(42);
    vec![
        ("chat-200B", (0..MESSAGES).map(|_| chat(&mut rng)).collect()),
        ("dashboard-2KiB", (0..MESSAGES).map(|_| dashboard(&mut rng)).collect()),
        ("text-64KiB", (0..MESSAGES / 8).map(|_| text(&mut rng)).collect()),
    ]
}

/// One compressor: flate2/zlib-rs or miniz_oxide, with or without context takeover.
enum Deflater {
    ZlibRs(Box<Compress>),
    Miniz(Box<CompressorOxide>),
}

impl Deflater {
    fn new(backend: &str, level: u32) -> Self {
        match backend {
            "zlib-rs" => Self::ZlibRs(Box::new(Compress::new_with_window_bits(
                Compression::new(level),
                false,
                15,
            ))),
            _ => {
                let level = i32::try_from(level).unwrap_or(6);
                Self::Miniz(Box::new(CompressorOxide::new(create_comp_flags_from_zip_params(
                    level, -15, 0,
                ))))
            }
        }
    }

    fn reset(&mut self) {
        match self {
            Self::ZlibRs(c) => c.reset(),
            Self::Miniz(c) => c.reset(),
        }
    }

    /// One message: a sync flush, the 4-byte tail stripped (RFC 7692 §7.2.1).
    fn message(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(input.len() + 64);
        match self {
            Self::ZlibRs(c) => {
                c.compress_vec(input, out, FlushCompress::Sync).unwrap();
            }
            Self::Miniz(c) => {
                out.resize(input.len() + 64, 0);
                let (_, used, written) = mz_compress(c, input, out, TDEFLFlush::Sync);
                assert_eq!(used, input.len());
                out.truncate(written);
            }
        }
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
    }
}

enum Inflater {
    ZlibRs(Box<Decompress>),
    Miniz(Box<InflateState>),
}

impl Inflater {
    fn new(backend: &str) -> Self {
        match backend {
            "zlib-rs" => Self::ZlibRs(Box::new(Decompress::new_with_window_bits(false, 15))),
            _ => Self::Miniz(InflateState::new_boxed(DataFormat::Raw)),
        }
    }

    fn reset(&mut self) {
        match self {
            Self::ZlibRs(d) => d.reset(false),
            Self::Miniz(d) => d.reset(DataFormat::Raw),
        }
    }

    fn message(&mut self, wire: &[u8], raw_len: usize, out: &mut Vec<u8>) {
        let mut input = wire.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        out.clear();
        match self {
            Self::ZlibRs(d) => {
                out.reserve(raw_len + 64);
                d.decompress_vec(&input, out, FlushDecompress::Sync).unwrap();
            }
            Self::Miniz(d) => {
                out.resize(raw_len + 64, 0);
                let r = mz_inflate(d, &input, out, MZFlush::Sync);
                r.status.unwrap();
                out.truncate(r.bytes_written);
            }
        }
        assert_eq!(out.len(), raw_len);
    }
}

/// The compressed sequence in a mode (`context`: one state across messages).
fn compress_all(backend: &str, level: u32, context: bool, msgs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut d = Deflater::new(backend, level);
    msgs.iter()
        .map(|m| {
            if !context {
                d.reset();
            }
            let mut out = Vec::new();
            d.message(m, &mut out);
            out
        })
        .collect()
}

fn print_ratios() {
    println!(
        "\npermessage-deflate ratio (compressed / raw), {MESSAGES} messages per payload (8 of 64 KiB):"
    );
    println!(
        "{:<16} {:>8} {:>6} {:>10} {:>10}",
        "payload", "backend", "level", "context", "no context"
    );
    for (name, msgs) in payloads() {
        let raw: usize = msgs.iter().map(Vec::len).sum();
        for backend in ["zlib-rs", "miniz"] {
            for level in [1, 3, 6] {
                let ratio = |context| {
                    let c: usize =
                        compress_all(backend, level, context, &msgs).iter().map(Vec::len).sum();
                    #[allow(clippy::cast_precision_loss)]
                    let r = c as f64 / raw as f64;
                    r
                };
                println!(
                    "{name:<16} {backend:>8} {level:>6} {:>10.3} {:>10.3}",
                    ratio(true),
                    ratio(false)
                );
            }
        }
    }
    println!();
}

fn bench_backends(c: &mut Criterion) {
    print_ratios();
    let mut g = c.benchmark_group("deflate/compress");
    for (name, msgs) in payloads() {
        g.throughput(Throughput::Bytes(msgs[0].len() as u64));
        for backend in ["zlib-rs", "miniz"] {
            for level in [1, 3, 6] {
                for context in [true, false] {
                    let id =
                        format!("{backend}/l{level}/{}", if context { "ctx" } else { "no-ctx" });
                    g.bench_with_input(BenchmarkId::new(id, name), &msgs, |b, msgs| {
                        let mut d = Deflater::new(backend, level);
                        let mut out = Vec::new();
                        let mut i = 0;
                        b.iter(|| {
                            if !context {
                                d.reset();
                            }
                            d.message(black_box(&msgs[i % msgs.len()]), &mut out);
                            i += 1;
                            out.len()
                        });
                    });
                }
            }
        }
    }
    g.finish();

    let mut g = c.benchmark_group("deflate/inflate");
    for (name, msgs) in payloads() {
        g.throughput(Throughput::Bytes(msgs[0].len() as u64));
        for backend in ["zlib-rs", "miniz"] {
            for context in [true, false] {
                let wire = compress_all("zlib-rs", 6, context, &msgs);
                let id = format!("{backend}/{}", if context { "ctx" } else { "no-ctx" });
                g.bench_with_input(BenchmarkId::new(id, name), &wire, |b, wire| {
                    let mut d = Inflater::new(backend);
                    let mut out = Vec::new();
                    let mut i = 0;
                    b.iter(|| {
                        let k = i % wire.len();
                        if !context || k == 0 {
                            d.reset();
                        }
                        d.message(black_box(&wire[k]), msgs[k].len(), &mut out);
                        i += 1;
                    });
                });
            }
        }
    }
    g.finish();
}

#[allow(clippy::disallowed_methods, reason = "a bench starts virtual time from one real instant")]
fn start() -> Instant {
    Instant::now()
}

/// An open server connection with `deflate` negotiated (or not), drained.
fn open_server(deflate: Option<&DeflateConfig>) -> WsConnection {
    let t0 = start();
    let mut cfg = WsConfig::default();
    cfg.keepalive = None;
    cfg.max_outbound = usize::MAX >> 1;
    cfg.deflate = deflate.cloned();
    let mut c = WsConnection::client(cfg.clone(), "bench", "/", t0).unwrap();
    let mut s = WsConnection::server(cfg, t0);
    while let Some(Transmit::Bytes(b)) = c.poll_transmit() {
        s.handle_read(t0, &b);
    }
    assert!(matches!(s.poll_event(), Some(WsEvent::UpgradeRequested(_))));
    s.accept(t0, None, &[]).unwrap();
    while s.poll_transmit().is_some() {}
    while s.poll_event().is_some() {}
    assert_eq!(s.deflate_params().is_some(), deflate.is_some());
    s
}

fn bench_connection(c: &mut Criterion) {
    let t0 = start();
    let mut g = c.benchmark_group("deflate/ws-send");
    let mut no_ctx = DeflateConfig::no_context_takeover();
    no_ctx.min_size = 0;
    let mut ctx = DeflateConfig::default();
    ctx.min_size = 0;
    for (name, msgs) in payloads() {
        let msgs: Vec<Message> =
            msgs.into_iter().map(|m| Message::text(String::from_utf8(m).unwrap())).collect();
        g.throughput(Throughput::Bytes(msgs[0].len() as u64));
        for (mode, deflate) in
            [("plain", None), ("ctx", Some(ctx.clone())), ("no-ctx", Some(no_ctx.clone()))]
        {
            g.bench_with_input(BenchmarkId::new(mode, name), &msgs, |b, msgs| {
                let mut s = open_server(deflate.as_ref());
                let mut i = 0;
                b.iter(|| {
                    s.send(t0, msgs[i % msgs.len()].clone()).unwrap();
                    i += 1;
                    let mut n = 0;
                    while let Some(Transmit::Bytes(b)) = s.poll_transmit() {
                        n += b.len();
                    }
                    n
                });
            });
        }
        // A broadcast: compress once, then each receiver costs a header.
        g.bench_with_input(BenchmarkId::new("prepare-once", name), &msgs, |b, msgs| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                PreparedMessage::new(msgs[i % msgs.len()].clone(), &no_ctx)
            });
        });
        g.bench_with_input(BenchmarkId::new("send-prepared", name), &msgs, |b, msgs| {
            let prepared: Vec<PreparedMessage> =
                msgs.iter().map(|m| PreparedMessage::new(m.clone(), &no_ctx)).collect();
            let mut s = open_server(Some(&no_ctx));
            let mut i = 0;
            b.iter(|| {
                s.send_prepared(t0, &prepared[i % prepared.len()]).unwrap();
                i += 1;
                let mut n = 0;
                while let Some(Transmit::Bytes(b)) = s.poll_transmit() {
                    n += b.len();
                }
                n
            });
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(800))
}

/// The `criterion` entry points (the macro's generated function has no doc comment).
#[allow(missing_docs)]
mod harness {
    use super::{bench_backends, bench_connection, config};
    criterion::criterion_group! { name = benches; config = config(); targets = bench_backends, bench_connection }
}

criterion_main!(harness::benches);
