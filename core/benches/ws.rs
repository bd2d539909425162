//! WebSocket codec benchmarks: unmasking (fast vs the scalar reference), server-side decode
//! of masked frames, and encoding on both sides.
//!
//! Run briefly with
//! `cargo bench -p tidewire --bench ws -- --warm-up-time 1 --measurement-time 2`.
//! Throughput is counted in payload bytes.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_main};
use tidewire::ws::frame::{FrameDecoder, OpCode, Role, encode_frame, encode_header};
use tidewire::ws::mask::{apply_mask, apply_mask_scalar};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251).to_le_bytes()[0]).collect()
}

/// A masked binary frame as a client sends it.
fn client_frame(len: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(true, OpCode::Binary, &payload(len), Some(KEY), &mut out);
    out.to_vec()
}

fn size_name(len: usize) -> String {
    match len {
        n if n >= 1 << 20 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 => format!("{}KiB", n >> 10),
        n => format!("{n}B"),
    }
}

fn mask(c: &mut Criterion) {
    let mut g = c.benchmark_group("mask");
    for len in [1 << 10, 64 << 10, 1 << 20] {
        let mut buf = payload(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("fast", size_name(len)), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(KEY)));
        });
        g.bench_function(BenchmarkId::new("scalar", size_name(len)), |b| {
            b.iter(|| apply_mask_scalar(black_box(&mut buf), black_box(KEY), 0));
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_server");
    for len in [16, 1 << 10, 64 << 10, 1 << 20] {
        let wire = client_frame(len);
        g.throughput(Throughput::Bytes(len as u64));

        // The read buffer is reused: once the frame is dropped its allocation is reclaimed,
        // so the steady state copies the wire bytes in once (like `handle_read`), then
        // parses and unmasks in place.
        let mut dec = FrameDecoder::new(Role::Server);
        let mut buf = BytesMut::with_capacity(wire.len());
        g.bench_function(BenchmarkId::new("tidewire", size_name(len)), |b| {
            b.iter(|| {
                buf.extend_from_slice(&wire);
                let frame = dec.decode(&mut buf, usize::MAX);
                black_box(frame)
            });
        });

        // Parse and unmask only: the input buffer is prepared outside the timed part.
        let size = if len >= 64 << 10 { BatchSize::PerIteration } else { BatchSize::SmallInput };
        g.bench_function(BenchmarkId::new("tidewire_no_ingest_copy", size_name(len)), |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| dec.decode(buf, usize::MAX),
                size,
            );
        });

        compare::decode(&mut g, len, &wire);
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for len in [16, 1 << 10, 64 << 10, 1 << 20] {
        let data = Bytes::from(payload(len));
        g.throughput(Throughput::Bytes(len as u64));

        // Server, zero copy: a header on the stack in front of the shared payload.
        g.bench_function(BenchmarkId::new("server_header_shared_payload", size_name(len)), |b| {
            b.iter(|| {
                let header = encode_header(true, 0, OpCode::Binary, data.len(), None);
                black_box((header, data.clone()))
            });
        });

        // Server, one contiguous buffer: header + copied payload.
        let mut out = BytesMut::with_capacity(len + 14);
        g.bench_function(BenchmarkId::new("server_copy", size_name(len)), |b| {
            b.iter(|| {
                out.clear();
                encode_frame(true, OpCode::Binary, &data, None, &mut out);
                black_box(out.len())
            });
        });

        // Client: header + masked copy of the payload.
        g.bench_function(BenchmarkId::new("client_masked", size_name(len)), |b| {
            b.iter(|| {
                out.clear();
                encode_frame(true, OpCode::Binary, &data, Some(black_box(KEY)), &mut out);
                black_box(out.len())
            });
        });
    }
    g.finish();
}

/// The same frames through `tungstenite`'s public API, for a ratio in the same run.
mod compare {
    use std::io::{self, Read, Write};

    use criterion::measurement::WallTime;
    use criterion::{BenchmarkGroup, BenchmarkId};
    use tungstenite::protocol::frame::FrameSocket;
    use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

    use super::{black_box, size_name};

    /// An endless stream repeating one frame's bytes; writes are discarded.
    struct Replay {
        wire: Vec<u8>,
        pos: usize,
    }

    impl Read for Replay {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let mut n = 0;
            while n < out.len() {
                let take = (self.wire.len() - self.pos).min(out.len() - n);
                out[n..n + take].copy_from_slice(&self.wire[self.pos..self.pos + take]);
                n += take;
                self.pos = (self.pos + take) % self.wire.len();
            }
            Ok(n)
        }
    }

    impl Write for Replay {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    pub(super) fn decode(g: &mut BenchmarkGroup<'_, WallTime>, len: usize, wire: &[u8]) {
        // Frame layer: header parse and payload split; this API does not unmask.
        let mut frames = FrameSocket::new(Replay { wire: wire.to_vec(), pos: 0 });
        g.bench_function(BenchmarkId::new("tungstenite_frame_no_unmask", size_name(len)), |b| {
            b.iter(|| black_box(frames.read(None).ok()));
        });

        // Message layer as a server: decode, unmask, message (no fragments here).
        let config = WebSocketConfig::default().max_message_size(None).max_frame_size(None);
        let mut ws = WebSocket::from_raw_socket(
            Replay { wire: wire.to_vec(), pos: 0 },
            Role::Server,
            Some(config),
        );
        g.bench_function(BenchmarkId::new("tungstenite_message", size_name(len)), |b| {
            b.iter(|| black_box(ws.read().ok()));
        });
    }
}

/// The `criterion` entry points (the macro's generated function has no doc comment).
#[allow(missing_docs)]
mod harness {
    use super::{decode, encode, mask};
    criterion::criterion_group!(benches, mask, decode, encode);
}

criterion_main!(harness::benches);
