//! A ticker on `tidewire-std`: a hub server (the core endpoint's default routes, the demo's
//! tokens) whose ticker thread publishes `{"n":N}` on the channel `ticks` through
//! `ServerHandle::publish`. The core serves it as Server-Sent Events (resumable with
//! `Last-Event-ID`), by polling, and over the WebSocket envelope protocol.
//!
//! ```text
//! cargo run --release -p tidewire-std --example ticker -- --addr 127.0.0.1:8080 [--every-ms 1000]
//! curl -N http://127.0.0.1:8080/events?ch=ticks
//! curl -N -H 'Last-Event-ID: EPOCH:OFFSET' http://127.0.0.1:8080/events?ch=ticks
//! curl -i 'http://127.0.0.1:8080/poll?ch=ticks&pos=EPOCH:OFFSET&wait=1'
//! ```
//!
//! `ticks` is readable by everyone; every other channel follows the demo's policy
//! (`DemoAuth`: `public:*` for all, `chat:*` for users with a `user:NAME` token).
//!
//! With `--state FILE` the ticker saves, after each publish, the channel's last position and
//! the tick number in FILE (a temporary file renamed over it), and on start goes on counting
//! from the saved tick and the saved position (the core's `Server::restore`, through
//! `ServerHandle::with`): the channel keeps its epoch, so a client that had the last tick
//! resumes exactly across a `kill -9` and a restart; one that was behind gets `event: reset`
//! (the messages were not persisted), never a silent gap.
//!
//! Ctrl-C or SIGTERM ends every stream and held poll and exits 0.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tidewire_std::tidewire::hub::{Access, Authorize as _, DemoAuth, Principal};
use tidewire_std::tidewire::replay::Position;
use tidewire_std::tidewire::server::Routes;
use tidewire_std::{HttpRequest, Server, ServerConfig, Upgrade};

const USAGE: &str = "\
usage: ticker --addr HOST:PORT [--every-ms MS] [--state FILE]

Publishes {\"n\":N} on the channel `ticks` every MS milliseconds (tidewire-std) and serves:
  GET /events?ch=NAME             Server-Sent Events, resumable with Last-Event-ID
  GET /poll?ch=NAME[&pos=EP:OFF]  polling (ETag / If-None-Match, wait=1 for a long poll)
  GET /ws                         the WebSocket envelope protocol
  POST /api/publish?ch=NAME       a publish (the demo's policy)
Other paths get 404. Prints `listening on ADDR` once ready.

options:
  --addr HOST:PORT   address to listen on (default 127.0.0.1:8080; port 0 picks one)
  --every-ms MS      publishing interval in milliseconds (default 1000)
  --state FILE       the last position and tick number are saved in FILE after each
                     publish; on start the count goes on from the saved tick
  -h, --help         this help

Ctrl-C or SIGTERM ends every stream and held poll and exits 0.";

/// The channel the ticker publishes on.
const CHANNEL: &str = "ticks";

struct Args {
    addr: String,
    every: Duration,
    state: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args =
        Args { addr: "127.0.0.1:8080".into(), every: Duration::from_secs(1), state: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value()?,
            "--every-ms" => {
                let v = value()?;
                let ms: u64 = v.parse().map_err(|_| format!("bad --every-ms {v}"))?;
                if ms == 0 {
                    return Err("--every-ms must be at least 1".into());
                }
                args.every = Duration::from_millis(ms);
            }
            "--state" => args.state = Some(PathBuf::from(value()?)),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    Ok(args)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let mut cfg = ServerConfig::default();
    cfg.endpoint.routes = Routes::default();
    // Pages of other origins read the ticks too (the browser tests load one from a file).
    cfg.endpoint.response_headers = vec![("Access-Control-Allow-Origin".into(), "*".into())];
    let policy = |p: &Principal, ch: &str, access: Access| match access {
        Access::Read => ch == CHANNEL || DemoAuth.can_read(p, ch),
        Access::Write => DemoAuth.can_write(p, ch),
    };
    let server = Server::bind_with(&args.addr, cfg, DemoAuth, policy).unwrap_or_else(|e| {
        eprintln!("cannot bind {}: {e}", args.addr);
        std::process::exit(1);
    });
    let mut first_n: u64 = 0;
    if let Some(path) = &args.state {
        match load_state(path) {
            Ok(None) => {}
            Ok(Some((last, n))) => {
                match server.handle().with(|s, now| s.restore(now, CHANNEL, last)) {
                    Ok(()) => eprintln!("restored {CHANNEL} at {last}, tick {n}"),
                    Err(e) => eprintln!("cannot restore {CHANNEL} at {last} ({e}): a new epoch"),
                }
                first_n = n;
            }
            Err(e) => {
                eprintln!("cannot read the state file {}: {e}", path.display());
                std::process::exit(1);
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let handle = server.handle();
    let stopping = Arc::clone(&stop);
    if let Err(e) = ctrlc::set_handler(move || {
        stopping.store(true, Ordering::SeqCst);
        let report = handle.shutdown(Duration::from_secs(5));
        eprintln!("shut down: {} closed, {} dropped", report.closed, report.dropped);
    }) {
        eprintln!("cannot install the signal handler: {e}");
        std::process::exit(1);
    }

    let publisher = {
        let ticker = server.handle();
        let stop = Arc::clone(&stop);
        let every = args.every;
        let state = args.state.clone();
        std::thread::spawn(move || {
            let mut next = Instant::now() + every;
            let mut n = first_n;
            while !stop.load(Ordering::SeqCst) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(100)));
                    continue;
                }
                next += every;
                n += 1;
                match ticker.publish(CHANNEL, format!("{{\"n\":{n}}}")) {
                    Ok(pos) => {
                        if let Some(path) = &state
                            && let Err(e) = save_state(path, pos, n)
                        {
                            eprintln!("cannot save the state file {}: {e}", path.display());
                        }
                    }
                    Err(e) => eprintln!("publish failed: {e}"),
                }
            }
        })
    };

    println!("listening on {}", server.local_addr());
    let _ = std::io::stdout().flush();
    let result = server.serve_with(
        |upgrade: Upgrade| {
            let _ = upgrade.reject(404, &[], b"no WebSocket endpoint here\n");
        },
        |req: HttpRequest| {
            let cors = [("Access-Control-Allow-Origin", "*")];
            let _ = req.respond(404, &cors, b"not found\n");
        },
    );
    stop.store(true, Ordering::SeqCst);
    let _ = publisher.join();
    if let Err(e) = result {
        eprintln!("server error: {e}");
        std::process::exit(1);
    }
}

/// Reads the state file: `EPOCH:OFFSET N` (the last published position and its tick number).
/// `None` when there is no file yet.
fn load_state(path: &Path) -> std::io::Result<Option<(Position, u64)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{text:?}"));
    let (pos, n) = text.trim().split_once(' ').ok_or_else(bad)?;
    let pos: Position = pos.parse().map_err(|_| bad())?;
    let n: u64 = n.parse().map_err(|_| bad())?;
    Ok(Some((pos, n)))
}

/// Writes the state file atomically: a temporary file beside it, renamed over it (a reader,
/// or a restart after `kill -9`, sees the old state or the new one, never a torn one).
fn save_state(path: &Path, pos: Position, n: u64) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{pos} {n}\n"))?;
    std::fs::rename(&tmp, path)
}
