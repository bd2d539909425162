//! Command line of the load generator.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::deflate::{Mode, Payload};

pub(crate) const USAGE: &str = r#"usage: loadgen --url ws://HOST:PORT[/PATH] --conns N --size BYTES --secs S [--warmup S]
               [--window-ms 500] [--server-pid PID] [--text] [--hub] [--connect-burst 64]
               [--payload letters|json|prose] [--deflate no-context|context]
       loadgen --url ws://HOST:PORT[/PATH] --idle N [--server-pid PID] [--settle-ms 500]
               [--deflate no-context|context] [--prime K [--size BYTES --payload KIND]]

Load mode: N connections, each with exactly one message of BYTES in flight (send, wait for
the echo, send again). After the warmup it counts echoes per window for S seconds and
prints msgs/s (mean, per-window min and max), and with --server-pid the server's CPU time
over the same window. Idle mode: opens N connections, completes every handshake, holds them
and prints the server's VmRSS growth per connection.
--hub: a Tidewire hub (envelope protocol) instead of an echo server. Connection N opens
PATH?token=user:lgN (e.g. --url ws://HOST:PORT/ws), sends {"op":"sub","ch":"chat:lgN"}
and waits for `subscribed`; then each round trip is one
{"op":"pub","ch":"chat:lgN","data":DATA,"ref":K} and both its `ack` (ref K) and the `msg`
of chat:lgN carrying exactly DATA (a JSON string of BYTES bytes, quotes included).
--payload: what the echo messages hold: `letters` (default: abc...z repeated, binary
frames unless --text), `json` (a chat message: {"type":"message",...,"text":"..."}) or
`prose` (English-like words and sentences); json and prose go as text frames: distinct
messages of exactly BYTES bytes (16, or more: 128 KiB of them) that each connection sends
in turn.
--deflate: offer permessage-deflate (RFC 7692). `no-context` offers client_ and
server_no_context_takeover (the server must agree to server_no_context_takeover); `context`
offers plain permessage-deflate (both ends keep their LZ77 context). Everything sent is
compressed (flate2, zlib-rs, level 3); compressed replies are inflated and checked byte for
byte. In idle mode, every connection must have agreed, and --prime K first makes each
connection echo K messages (so zlib states that are created on first use exist) and then
frees the client's own states before the memory is read.
The last line is `RESULT key=value ...` for scripts."#;

/// What to run.
pub(crate) struct Args {
    pub(crate) addr: SocketAddr,
    /// `Host` header value.
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) conns: usize,
    pub(crate) size: usize,
    pub(crate) secs: Duration,
    pub(crate) warmup: Duration,
    pub(crate) window: Duration,
    /// Idle mode when set: hold this many connections and report memory.
    pub(crate) idle: Option<usize>,
    pub(crate) settle: Duration,
    pub(crate) server_pid: Option<u32>,
    /// Send text frames (the payload is ASCII) instead of binary ones.
    pub(crate) text: bool,
    /// Hub mode: publish on the connection's own channel and wait for the ack and the
    /// message instead of an echo.
    pub(crate) hub: bool,
    /// At most this many connections are opening (TCP connect + handshake) at once, so the
    /// server's listen backlog never overflows.
    pub(crate) connect_burst: usize,
    /// What the echo messages hold.
    pub(crate) payload: Payload,
    /// Offer permessage-deflate in this mode.
    pub(crate) deflate: Option<Mode>,
    /// Idle mode: echo this many messages per connection before holding them.
    pub(crate) prime: u32,
}

pub(crate) fn parse() -> Result<Args, String> {
    let mut url = None;
    let mut conns = 10;
    let mut size = 20;
    let mut secs = 3.0_f64;
    let mut warmup = 1.0_f64;
    let mut window_ms = 500;
    let mut idle = None;
    let mut settle_ms = 500;
    let mut server_pid = None;
    let mut text = false;
    let mut hub = false;
    let mut connect_burst = 64;
    let mut payload = Payload::Letters;
    let mut deflate = None;
    let mut prime = 0;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--text" {
            text = true;
            continue;
        }
        if flag == "--hub" {
            hub = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_owned());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--url" => url = Some(value),
            "--conns" => conns = value.parse().map_err(|e| bad(&e))?,
            "--size" => size = value.parse().map_err(|e| bad(&e))?,
            "--secs" => secs = value.parse().map_err(|e| bad(&e))?,
            "--warmup" => warmup = value.parse().map_err(|e| bad(&e))?,
            "--window-ms" => window_ms = value.parse().map_err(|e| bad(&e))?,
            "--idle" => idle = Some(value.parse().map_err(|e| bad(&e))?),
            "--settle-ms" => settle_ms = value.parse().map_err(|e| bad(&e))?,
            "--server-pid" => server_pid = Some(value.parse().map_err(|e| bad(&e))?),
            "--connect-burst" => connect_burst = value.parse().map_err(|e| bad(&e))?,
            "--payload" => payload = Payload::parse(&value)?,
            "--deflate" => deflate = Some(Mode::parse(&value)?),
            "--prime" => prime = value.parse().map_err(|e| bad(&e))?,
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    let url = url.ok_or_else(|| format!("--url is required\n{USAGE}"))?;
    let rest = url.strip_prefix("ws://").ok_or("only ws:// URLs are supported")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    if !(secs > 0.0 && secs <= 600.0 && (0.0..=600.0).contains(&warmup)) {
        return Err("--secs must be in (0, 600] and --warmup in [0, 600]".into());
    }
    if !(1..=60_000).contains(&window_ms) {
        return Err("--window-ms must be in 1..=60000".into());
    }
    if conns == 0 || size > 16 << 20 || connect_burst == 0 {
        return Err("--conns and --connect-burst must be > 0 and --size at most 16 MiB".into());
    }
    if hub && (deflate.is_some() || payload != Payload::Letters) {
        return Err("--hub takes neither --deflate nor --payload".into());
    }
    Ok(Args {
        addr,
        host: host.to_owned(),
        path: path.to_owned(),
        conns,
        size,
        secs: Duration::from_secs_f64(secs),
        warmup: Duration::from_secs_f64(warmup),
        window: Duration::from_millis(window_ms),
        idle,
        settle: Duration::from_millis(settle_ms),
        server_pid,
        text,
        hub,
        connect_burst,
        payload,
        deflate,
        prime,
    })
}
