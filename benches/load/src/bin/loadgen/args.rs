//! Command line of the load generator.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

pub(crate) const USAGE: &str = r#"usage: loadgen --url ws://HOST:PORT[/PATH] --conns N --size BYTES --secs S [--warmup S]
               [--window-ms 500] [--server-pid PID] [--text] [--hub] [--connect-burst 64]
       loadgen --url ws://HOST:PORT[/PATH] --idle N [--server-pid PID] [--settle-ms 500]

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
    })
}
