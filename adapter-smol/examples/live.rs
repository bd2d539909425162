//! The live demo: a page with a dashboard ticking every second, a chat room with presence
//! and a connection banner, served with one Tidewire hub over WebSocket, Server-Sent Events
//! and polling: the core endpoint's default routes serve the hub, the demo's HTTP handler
//! serves the pages.
//!
//! `cargo run --release -p tidewire-smol --example live -- --addr 127.0.0.1:8080`, then open
//! <http://127.0.0.1:8080/> (and `?transport=sse` or `?transport=poll` to force one).
//! `--help` lists the routes and flags.
//!
//! Slow consumers: every channel keeps the hub's `Disconnect` policy (close 4100 / the SSE
//! response ends, and the client resumes from its last position). `Conflate` or `DropOldest`
//! on `public:ticks` would skip ticks without telling the client, which the page's gap
//! counter would (rightly) report; on `chat:*` they would lose messages.
//!
//! WebSocket connections negotiate permessage-deflate (no context takeover either way; the
//! adapter's `deflate` feature, on by default).
//!
//! Everything runs on one thread: one `smol::Executor` driven by `block_on`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_signal::{Signal, Signals};
use smol::stream::StreamExt;
use smol::{Executor, Timer, future};
use tidewire::http::Request;
use tidewire::hub::{DemoAuth, HubConfig, HubEvent, Principal};
use tidewire::policy::SlowConsumer;
use tidewire::redis::RedisConfig;
use tidewire::server::{Authenticate, Credential, Refusal, Routes, ServerEvent, Verdict};
use tidewire_smol::{HttpRequest, Server, ServerConfig, ServerHandle, Upgrade};

const INDEX_HTML: &str = include_str!("../../web/index.html");
const TIDEWIRE_JS: &str = include_str!("../../web/tidewire.js");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");

const USAGE: &str = "\
usage: live [--addr HOST:PORT] [--admin-token T] [--no-ws] [--tick-ms MS] [--redis URL]

The Tidewire live demo: one hub served over WebSocket, Server-Sent Events and polling.

routes:
  GET  /                          the demo page (also /tidewire.js, /app.js, /app.css)
  GET  /ws                        WebSocket, envelope protocol (sub/unsub/pub/ping)
  GET  /events?ch=NAME[&pos=EP:OFF]
                                  Server-Sent Events of one channel, resumable
                                  (Last-Event-ID wins over pos=)
  GET  /poll?ch=NAME[&pos=EP:OFF][&wait=1]
                                  polling (ETag / If-None-Match -> 304; wait=1 holds
                                  up to 25 s)
  POST /api/publish?ch=NAME[&id=ID]
                                  JSON body -> published, answers {\"ep\":..,\"off\":..}

auth (demo): a token `user:<name>` as ?token= or `Authorization: Bearer`; users may read
public:* and chat:* and write chat:*; anonymous clients may read public:*. A malformed
token gets 401 before any 101/200; a refused channel 403 (an `err` on WebSocket).
POST /api/publish is a user publish (authorized, deduplicated by id) unless it is
trusted: `Authorization: Bearer <admin token>` with --admin-token (a trusted publish
skips the policy and is deduplicated by id in a window of its own).

A ticker publishes {\"n\":N} on public:ticks every --tick-ms.

options:
  --addr HOST:PORT    address to listen on (default 127.0.0.1:8080; port 0 picks one)
  --admin-token T     the bearer token of trusted publishes (default: none)
  --no-ws             answer /ws with 502 (as a proxy that blocks WebSocket would), so that
                      clients fall back to SSE / polling
  --tick-ms MS        interval of the public:ticks ticker (default 1000)
  --redis URL         share every channel with the other instances on this Redis
                      (redis://HOST[:PORT], e.g. redis://127.0.0.1:6379): publishes go
                      through Redis, which numbers them, so a client can move between
                      instances and resume exactly; while Redis is down publishes fail
                      with 503 / `unavailable` and clients keep what they have. Every
                      instance ticks; each tick slot is published once (its id is the slot)
  -h, --help          this text

Prints `listening on ADDR` once ready, and on stderr what the server decides: `ws refused
...: 502 (--no-ws)`, `... refused: 401 (bad token)`, `refused CONN: STATUS`, `hub closed
CONN: CODE REASON` (4100 too slow, 1008 rate limit), `poll closed CONN reason=expired`
(no poll for a minute), `presence CH: NAME joined/left`.
Ctrl-C or SIGTERM closes every WebSocket with 1001, ends every stream and held poll (5 s
grace) and exits 0.";

/// The wall-clock slot of a tick of length `every` (the same on every instance).
fn tick_slot(every: Duration) -> u128 {
    let since =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    since.as_millis() / every.as_millis().max(1)
}

struct Args {
    addr: String,
    admin_token: Option<String>,
    no_ws: bool,
    tick: Duration,
    redis: Option<RedisConfig>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:8080".into(),
        admin_token: None,
        no_ws: false,
        tick: Duration::from_secs(1),
        redis: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value()?,
            "--admin-token" => {
                let t = value()?;
                if t.is_empty() || t.contains(char::is_whitespace) {
                    return Err("--admin-token must be non-empty without spaces".into());
                }
                args.admin_token = Some(t);
            }
            "--no-ws" => args.no_ws = true,
            "--tick-ms" => {
                let v = value()?;
                let ms: u64 = v.parse().map_err(|_| format!("--tick-ms: not a number: {v}"))?;
                if ms == 0 {
                    return Err("--tick-ms must be at least 1".into());
                }
                args.tick = Duration::from_millis(ms);
            }
            "--redis" => {
                let v = value()?;
                let cfg = RedisConfig::from_url(&v).map_err(|e| format!("--redis {v}: {e}"))?;
                args.redis = Some(cfg);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    Ok(args)
}

/// Who a request is: the demo's tokens, the admin's bearer token (a trusted publisher),
/// and with `--no-ws` a 502 for every WebSocket upgrade.
struct LiveAuth {
    admin_token: Option<String>,
    no_ws: bool,
}

impl Authenticate for LiveAuth {
    /// Without `--admin-token`, a token-less publish from loopback is the application's
    /// trusted server-side publish (the demo listens on loopback).
    fn authenticate_from(&self, req: &Request, peer: Option<std::net::SocketAddr>) -> Verdict {
        let loopback = peer.is_some_and(|p| p.ip().is_loopback());
        if self.admin_token.is_none()
            && loopback
            && req.path_only() == "/api/publish"
            && req.token().is_none()
        {
            return Verdict::Allow(Credential { principal: Principal::anonymous(), trusted: true });
        }
        self.authenticate(req)
    }

    fn authenticate(&self, req: &Request) -> Verdict {
        let what = match req.path_only() {
            "/ws" => "ws",
            "/events" => "sse",
            "/poll" => "poll",
            _ => "publish",
        };
        if self.no_ws && req.is_websocket_upgrade() {
            // 502, not 403: a blocked upgrade looks like a proxy failure, which clients
            // answer by falling back; a 403 means "not allowed" and asks for other
            // credentials.
            eprintln!("ws refused {}: 502 (--no-ws)", req.host().unwrap_or("-"));
            return Verdict::Refuse(Refusal::new(502, "WebSocket disabled (--no-ws)"));
        }
        let admin = self.admin_token.as_deref().is_some_and(|t| req.bearer_token() == Some(t));
        // The admin's bearer is not a user's token; a user token may still come as ?token=.
        let token = if admin { req.query_param("token") } else { req.token() };
        match DemoAuth::authenticate(token.as_deref()) {
            Some(principal) if admin => Verdict::Allow(Credential { principal, trusted: true }),
            Some(principal) => Verdict::Allow(Credential::client(principal)),
            None => {
                eprintln!("{what} refused {}: 401 (bad token)", req.host().unwrap_or("-"));
                Verdict::Refuse(Refusal::unauthorized())
            }
        }
    }
}

/// Upgrades for any path but the hub's `/ws`.
async fn on_upgrade(up: Upgrade) {
    let _ = up.reject(404, &[], b"not found\n").await;
}

/// The demo's pages; the core serves the hub's routes before this handler sees anything.
async fn on_http(req: HttpRequest) {
    let method = req.request().method().to_owned();
    let get = method == "GET";
    let asset = match req.request().path_only() {
        "/" | "/index.html" => Some((INDEX_HTML, "text/html; charset=utf-8")),
        "/tidewire.js" => Some((TIDEWIRE_JS, "text/javascript; charset=utf-8")),
        "/app.js" => Some((APP_JS, "text/javascript; charset=utf-8")),
        "/app.css" => Some((APP_CSS, "text/css; charset=utf-8")),
        _ => None,
    };
    let _ = match asset {
        Some((body, kind)) if get || method == "HEAD" => {
            let headers = [("Content-Type", kind), ("Cache-Control", "no-cache")];
            let body = if get { body.as_bytes() } else { b"" };
            req.respond(200, &headers, body).await
        }
        Some(_) => req.respond(405, &[("Allow", "GET, HEAD")], b"GET only\n").await,
        None => req.respond(404, &[], b"not found\n").await,
    };
}

/// Logs what the server and the hub decide: refusals, closes, expiries, presence.
async fn log_events(handle: ServerHandle, poll_expiry: Option<Duration>) {
    loop {
        let Some(event) = handle.wait_event(Duration::from_secs(3600)).await else { continue };
        match event {
            ServerEvent::Refused { conn, status } => eprintln!("refused {}: {status}", conn.0),
            ServerEvent::Hub(HubEvent::Close { conn, code, reason }) => {
                eprintln!("hub closed {conn}: {} {reason}", code.0);
            }
            ServerEvent::Hub(HubEvent::Expired { conn }) => {
                let idle =
                    poll_expiry.map_or_else(String::new, |d| format!(" (no poll for {d:?})"));
                eprintln!("poll closed {conn} reason=expired{idle}");
            }
            ServerEvent::Hub(HubEvent::Joined { ch, member }) => {
                eprintln!("presence {ch}: {member} joined");
            }
            ServerEvent::Hub(HubEvent::Left { ch, member }) => {
                eprintln!("presence {ch}: {member} left");
            }
            _ => {}
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let ex = Arc::new(Executor::new());
    let code = smol::block_on(ex.run(run(args, ex.clone())));
    std::process::exit(code);
}

async fn run(args: Args, ex: Arc<Executor<'static>>) -> i32 {
    let mut signals = match Signals::new([Signal::Int, Signal::Term]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot install signal handlers: {e}");
            return 1;
        }
    };
    let mut cfg = ServerConfig::default();
    cfg.executor = Some(ex.clone());
    cfg.endpoint.routes = Routes::default();
    cfg.endpoint.hub = HubConfig {
        slow_consumers: vec![
            ("public:".into(), SlowConsumer::Disconnect),
            ("chat:".into(), SlowConsumer::Disconnect),
        ],
        ..HubConfig::default()
    };
    let poll_expiry = cfg.endpoint.hub.poll_expiry.timeout;
    let shared = args.redis.is_some();
    cfg.redis = args.redis.clone();
    // permessage-deflate, which every browser offers: no context takeover either way, so an
    // idle connection keeps no zlib state and a broadcast compressed once can be shared.
    #[cfg(feature = "deflate")]
    {
        cfg.endpoint.ws.deflate = Some(tidewire::ws::deflate::DeflateConfig::no_context_takeover());
    }
    let auth = LiveAuth { admin_token: args.admin_token, no_ws: args.no_ws };
    let server = match Server::bind_with(args.addr.as_str(), cfg, auth, DemoAuth).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot bind {}: {e}", args.addr);
            return 1;
        }
    };
    let handle = server.handle();
    println!("listening on {}", server.local_addr());
    let _ = std::io::stdout().flush();

    let ticker = {
        let hub = handle.clone();
        let every = args.tick;
        ex.spawn(async move {
            let mut n: u64 = 0;
            loop {
                Timer::after(every).await;
                n += 1;
                let r = if shared {
                    // Every instance ticks; the slot is the id, so each slot is stored once.
                    let slot = tick_slot(every);
                    let data = format!("{{\"n\":{slot}}}");
                    hub.publish_once("public:ticks", &format!("tick-{slot}"), data.as_bytes()).await
                } else {
                    hub.publish("public:ticks", format!("{{\"n\":{n}}}").as_bytes())
                };
                if let Err(e) = r {
                    eprintln!("ticker: {e}");
                }
            }
        })
    };
    let logger = ex.spawn(log_events(handle.clone(), poll_expiry));
    let serving = ex.spawn(server.serve_with(on_upgrade, on_http));

    let _ = signals.next().await;
    eprintln!("shutting down");
    drop(ticker.cancel());
    let report = handle.shutdown(Duration::from_secs(5)).await;
    eprintln!("shut down: {} closed, {} dropped", report.closed, report.dropped);
    drop(logger.cancel());
    match future::or(serving, async {
        Timer::after(Duration::from_secs(1)).await;
        Ok(())
    })
    .await
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("serve: {e}");
            1
        }
    }
}
