//! permessage-deflate (tidewire feature `deflate`) through the public API: a client and a
//! server negotiate it and exchange messages, and what an idle connection costs in heap in
//! each mode, counted by an allocator that tracks the bytes live on the test's thread.
//!
//! Time is virtual: one `Instant::now()` per case and no clock advance.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tidewire::ws::deflate::{DeflateConfig, DeflateMemory, DeflateParams, PreparedMessage};
use tidewire::ws::{Message, WsConfig, WsConnection, WsEvent};
use tidewire::{Instant, Machine, Transmit};

/// Counts the heap bytes allocated minus freed on each thread.
struct Counting;

/// Taken by every test that compresses: the spare zlib states are pooled per process, so
/// a state another test gives back while the heap test counts would be counted against it.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn add(n: usize, sign: isize) {
    let n = isize::try_from(n).unwrap_or(isize::MAX);
    let _ = LIVE.try_with(|live| live.set(live.get() + sign * n));
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counted.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size(), 1);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size(), 1);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(layout.size(), -1);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(layout.size(), -1);
        add(new_size, 1);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

fn cfg(deflate: Option<DeflateConfig>) -> WsConfig {
    let mut c = WsConfig::default();
    c.keepalive = None;
    c.deflate = deflate;
    c
}

fn drain(conn: &mut WsConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(t) = conn.poll_transmit() {
        if let Transmit::Bytes(b) = t {
            out.extend_from_slice(&b);
        }
    }
    out
}

fn messages(conn: &mut WsConnection) -> Vec<Message> {
    std::iter::from_fn(|| conn.poll_event())
        .filter_map(|e| match e {
            WsEvent::Message(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// A client and a server after the handshake, events drained.
fn pair(client: WsConfig, server: WsConfig, now: Instant) -> (WsConnection, WsConnection) {
    let mut c = WsConnection::client(client, "example.com", "/chat", now).unwrap();
    let mut s = WsConnection::server(server, now);
    s.handle_read(now, &drain(&mut c));
    assert!(matches!(s.poll_event(), Some(WsEvent::UpgradeRequested(_))));
    s.accept(now, None, &[]).unwrap();
    c.handle_read(now, &drain(&mut s));
    assert!(matches!(c.poll_event(), Some(WsEvent::Open { .. })));
    assert!(matches!(s.poll_event(), Some(WsEvent::Open { .. })));
    (c, s)
}

fn chat(i: usize) -> String {
    format!(
        r#"{{"type":"message","channel":"general","id":{i},"user":"alice","text":"the tide comes in, message number {i}, over the wire and back again"}}"#
    )
    .repeat(3)
}

/// Different chat lines, `len` bytes in all.
fn chats(len: usize) -> String {
    let mut s: String = (0..len / 50 + 1).map(chat).collect();
    s.truncate(len);
    s
}

#[test]
fn a_client_and_a_server_exchange_compressed_messages() {
    let _serial = serial();
    let now = Instant::now();
    for (client, server) in [
        (DeflateConfig::default(), DeflateConfig::default()),
        (DeflateConfig::default(), DeflateConfig::no_context_takeover()),
        (DeflateConfig::no_context_takeover(), DeflateConfig::default()),
    ] {
        let (mut c, mut s) = pair(cfg(Some(client)), cfg(Some(server)), now);
        let agreed = s.deflate_params().expect("negotiated");
        assert_eq!(c.deflate_params(), Some(agreed));
        let sent: Vec<Message> = (0..50).map(|i| Message::text(chat(i))).collect();
        let raw: usize = sent.iter().map(Message::len).sum();
        for m in &sent {
            c.send(now, m.clone()).unwrap();
            s.send(now, m.clone()).unwrap();
        }
        let (up, down) = (drain(&mut c), drain(&mut s));
        assert!(
            up.len() * 2 < raw && down.len() * 2 < raw,
            "{agreed:?}: {} {} of {raw}",
            up.len(),
            down.len()
        );
        s.handle_read(now, &up);
        c.handle_read(now, &down);
        assert_eq!(messages(&mut s), sent);
        assert_eq!(messages(&mut c), sent);
    }
}

#[test]
fn a_broadcast_is_compressed_once() {
    let _serial = serial();
    let now = Instant::now();
    let server_cfg = DeflateConfig::no_context_takeover();
    let mut pairs: Vec<(WsConnection, WsConnection)> = (0..5)
        .map(|_| pair(cfg(Some(DeflateConfig::default())), cfg(Some(server_cfg.clone())), now))
        .collect();
    // Large enough that its compressed form (> 256 B) is queued as shared bytes.
    let prepared = PreparedMessage::new(Message::text(chats(10_000)), &server_cfg);
    let shared = prepared.compressed().expect("worth compressing").clone();
    for (c, s) in &mut pairs {
        assert!(s.takes_prepared(prepared.window_bits()));
        s.send_prepared(now, &prepared).unwrap();
        let mut seen_shared = false;
        let mut wire = Vec::new();
        while let Some(Transmit::Bytes(b)) = s.poll_transmit() {
            seen_shared |= b.as_ptr() == shared.as_ptr();
            wire.extend_from_slice(&b);
        }
        assert!(seen_shared, "the compressed payload is shared, not copied");
        c.handle_read(now, &wire);
        assert_eq!(messages(c), [prepared.message().clone()]);
    }
}

/// Heap bytes one idle server connection holds after a message each way, in a mode.
fn idle_bytes(
    client: Option<&DeflateConfig>,
    server: Option<&DeflateConfig>,
    message_len: usize,
) -> isize {
    let (client, server) = (client.cloned(), server.cloned());
    const N: usize = 20;
    let now = Instant::now();
    let exchange = |c: &mut WsConnection, s: &mut WsConnection| {
        let m = Message::text(chats(message_len));
        c.send(now, m.clone()).unwrap();
        s.send(now, m).unwrap();
        s.handle_read(now, &drain(c));
        c.handle_read(now, &drain(s));
        assert_eq!(messages(s).len(), 1);
        assert_eq!(messages(c).len(), 1);
    };
    // Warm up: the process's pool and lazily sized buffers.
    let (mut c, mut s) = pair(cfg(client.clone()), cfg(server.clone()), now);
    exchange(&mut c, &mut s);
    drop((c, s));
    let mut servers = Vec::with_capacity(N);
    let reserved = live();
    for _ in 0..N {
        let (mut c, mut s) = pair(cfg(client.clone()), cfg(server.clone()), now);
        exchange(&mut c, &mut s);
        assert_eq!(s.deflate_params().is_some(), server.is_some() && client.is_some());
        drop(c);
        servers.push(s);
    }
    let total = live() - reserved;
    drop(servers);
    total / isize::try_from(N).unwrap()
}

#[test]
fn an_idle_connection_costs_little_more_without_context_takeover() {
    let _serial = serial();
    let plain = idle_bytes(None, None, 1000);
    let offer = DeflateConfig::default();
    let offer = Some(&offer);
    let no_ctx = idle_bytes(offer, Some(&DeflateConfig::no_context_takeover()), 1000);
    let mut per_message = DeflateConfig::no_context_takeover();
    per_message.memory = DeflateMemory::PerMessage;
    let per_msg = idle_bytes(offer, Some(&per_message), 1000);
    let ctx = idle_bytes(offer, Some(&DeflateConfig::default()), 1000);
    let mut small = DeflateConfig::default();
    small.server_max_window_bits = 10;
    small.client_max_window_bits = 10;
    let ctx_small = idle_bytes(offer, Some(&small), 1000);
    eprintln!(
        "heap per idle server connection after a 1000 B message each way: plain {plain} B, \
         no context (pool) {no_ctx} B ({:+}), no context (per message) {per_msg} B ({:+}), \
         context takeover w15 {ctx} B ({:+}), context takeover w10 {ctx_small} B ({:+})",
        no_ctx - plain,
        per_msg - plain,
        ctx - plain,
        ctx_small - plain
    );
    assert!(no_ctx - plain < 1024, "no context takeover costs {} B more", no_ctx - plain);
    assert!(per_msg - plain < 1024, "per-message allocation costs {} B more", per_msg - plain);
    assert!(ctx - plain > 100 << 10, "context takeover keeps its states: {}", ctx - plain);
    assert!(ctx_small < ctx, "a smaller window costs less");
}

#[test]
fn without_a_server_that_agrees_nothing_changes() {
    let _serial = serial();
    let now = Instant::now();
    let (mut c, mut s) = pair(cfg(Some(DeflateConfig::default())), cfg(None), now);
    assert_eq!((c.deflate_params(), s.deflate_params()), (None, None));
    c.send(now, Message::text(chat(1))).unwrap();
    s.handle_read(now, &drain(&mut c));
    assert_eq!(messages(&mut s), [Message::text(chat(1))]);
    let (c, _) = pair(
        cfg(Some(DeflateConfig::no_context_takeover())),
        cfg(Some(DeflateConfig::default())),
        now,
    );
    assert_eq!(
        c.deflate_params(),
        Some(DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateParams::default()
        })
    );
}
