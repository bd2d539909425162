//! The live demo: a page with a dashboard ticking every second, a chat room with presence
//! and a connection banner, served with one Tidewire hub over WebSocket, Server-Sent Events
//! and polling.
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
//! Everything runs on one thread: one `smol::Executor` driven by `block_on`.

use std::collections::HashMap;
use std::io::{ErrorKind, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_signal::{Signal, Signals};
use smol::stream::StreamExt;
use smol::{Executor, Timer, future};
use tidewire::hub::{ConnId, DemoAuth, HubConfig, HubEvent, Principal, Transport};
use tidewire::policy::SlowConsumer;
use tidewire::redis::RedisConfig;
use tidewire_smol::{HttpRequest, HubHandle, HubOptions, Server, ServerConfig, Upgrade};

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
trusted: `Authorization: Bearer <admin token>` with --admin-token, or, without
--admin-token, a request from loopback that carries no token.

A ticker publishes {\"n\":N} on public:ticks every --tick-ms.

options:
  --addr HOST:PORT    address to listen on (default 127.0.0.1:8080; port 0 picks one)
  --admin-token T     the bearer token of trusted publishes (default: none, and trusted
                      publishes are open to token-less requests from loopback)
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

Prints `listening on ADDR` once ready, and on stderr one line per connection opened,
refused or closed, with the reason: `ws open` / `ws closed ... code= reason= by=`,
`sse open` / `sse closed ... reason=` (ClientGone, TooSlow, Closed), `poll open` (once per
polling client: the hub keeps one connection per user and channel between polls) /
`poll closed ... reason=expired` (no poll for a minute), `... refused ...: WHY`.
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

/// What the demo shares between requests.
struct App {
    hub: HubHandle,
    admin_token: Option<String>,
    no_ws: bool,
    /// The polling clients the hub keeps between polls, for their `poll closed` lines.
    polls: Mutex<HashMap<ConnId, PollClient>>,
    /// How long a polling client may go without a poll (the hub's `poll_expiry`).
    poll_expiry: Option<Duration>,
}

/// Who a kept polling connection is, as its `poll open` line said.
struct PollClient {
    peer: SocketAddr,
    user: String,
    ch: String,
}

impl App {
    /// Logs `poll open` for each polling connection of `principal` on `ch` not seen before
    /// (the hub made it for this poll), and `poll closed` for the connections seen before
    /// that the hub no longer has although it announced no expiry or close (so that the
    /// list cannot grow).
    fn note_polls(&self, peer: SocketAddr, principal: &Principal, ch: &str) {
        let mut polls = self.polls.lock().unwrap_or_else(PoisonError::into_inner);
        let (conns, gone): (Vec<ConnId>, Vec<ConnId>) = self.hub.inspect(|h| {
            let conns = h
                .members(ch)
                .filter(|&c| {
                    h.transport(c) == Some(Transport::Poll) && h.principal(c) == Some(principal)
                })
                .collect();
            (conns, polls.keys().copied().filter(|&c| !h.is_connected(c)).collect())
        });
        for conn in gone {
            if let Some(p) = polls.remove(&conn) {
                eprintln!(
                    "poll closed {} {conn} user={} ch={:?} reason=gone (no event)",
                    p.peer, p.user, p.ch
                );
            }
        }
        for conn in conns {
            polls.entry(conn).or_insert_with(|| {
                let user = who(principal).to_owned();
                eprintln!("poll open {peer} {conn} user={user} ch={ch:?}");
                PollClient { peer, user, ch: ch.to_owned() }
            });
        }
    }

    /// The kept polling connection `conn` is gone: its `poll closed` line, if it had one.
    fn poll_gone(&self, conn: ConnId) -> Option<PollClient> {
        self.polls.lock().unwrap_or_else(PoisonError::into_inner).remove(&conn)
    }
}

fn who(p: &Principal) -> &str {
    p.user.as_deref().unwrap_or("-")
}

/// The demo's principal for a token, or `None` for a malformed one (401).
fn authenticate(token: Option<&str>) -> Option<Principal> {
    DemoAuth::authenticate(token)
}

async fn unauthorized(req: HttpRequest) {
    let _ = req.respond(401, &[("WWW-Authenticate", "Bearer")], b"bad token\n").await;
}

async fn on_upgrade(app: Arc<App>, up: Upgrade) {
    let peer = up.peer_addr();
    if app.no_ws {
        // 502, not 403: a blocked upgrade looks like a proxy failure, which clients answer by
        // falling back; a 403 means "not allowed" and asks for other credentials.
        eprintln!("ws refused {peer}: 502 (--no-ws)");
        let _ = up.reject(502, &[], b"WebSocket disabled (--no-ws)\n").await;
        return;
    }
    if up.request().request().path_only() != "/ws" {
        let _ = up.reject(404, &[], b"not found\n").await;
        return;
    }
    let Some(principal) = authenticate(up.request().request().token().as_deref()) else {
        eprintln!("ws refused {peer}: 401 (bad token)");
        let _ = up.reject(401, &[("WWW-Authenticate", "Bearer")], b"bad token\n").await;
        return;
    };
    let ws = match up.accept(None, &[]).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("ws refused {peer}: handshake failed ({e})");
            return;
        }
    };
    let user = who(&principal).to_owned();
    eprintln!("ws open {peer} user={user}");
    let name = principal.user.clone();
    let info = app.hub.serve_ws(ws, principal, name).await;
    let how = match &info.error {
        Some(e) => format!(" ({e})"),
        None => String::new(),
    };
    eprintln!(
        "ws closed {peer} user={user} code={} reason={:?} by={:?}{how}",
        info.code.0,
        info.reason.as_str(),
        info.initiator
    );
}

fn is_loopback(peer: SocketAddr) -> bool {
    peer.ip().is_loopback()
}

async fn on_http(app: Arc<App>, req: HttpRequest) {
    let peer = req.peer_addr();
    let method = req.request().method().to_owned();
    let path = req.request().path_only().to_owned();
    let get = method == "GET";
    let page = |body: &'static str, kind: &'static str| (body, kind);
    let asset = match path.as_str() {
        "/" | "/index.html" => Some(page(INDEX_HTML, "text/html; charset=utf-8")),
        "/tidewire.js" => Some(page(TIDEWIRE_JS, "text/javascript; charset=utf-8")),
        "/app.js" => Some(page(APP_JS, "text/javascript; charset=utf-8")),
        "/app.css" => Some(page(APP_CSS, "text/css; charset=utf-8")),
        _ => None,
    };
    if let Some((body, kind)) = asset {
        let _ = if get || method == "HEAD" {
            let headers = [("Content-Type", kind), ("Cache-Control", "no-cache")];
            let body = if get { body.as_bytes() } else { b"" };
            req.respond(200, &headers, body).await
        } else {
            req.respond(405, &[("Allow", "GET, HEAD")], b"GET only\n").await
        };
        return;
    }
    match path.as_str() {
        "/events" | "/poll" if !get => {
            let _ = req.respond(405, &[("Allow", "GET")], b"GET only\n").await;
        }
        "/events" => {
            let Some(principal) = authenticate(req.request().token().as_deref()) else {
                eprintln!("sse refused {peer}: 401 (bad token)");
                return unauthorized(req).await;
            };
            let ch = req.request().query_param("ch").unwrap_or_default();
            let user = who(&principal).to_owned();
            eprintln!("sse open {peer} user={user} ch={ch:?}");
            match app.hub.serve_sse(req, principal).await {
                Ok(end) => eprintln!("sse closed {peer} user={user} ch={ch:?} reason={end:?}"),
                Err(e) => eprintln!("sse refused {peer} user={user} ch={ch:?}: {e}"),
            }
        }
        "/poll" => {
            let Some(principal) = authenticate(req.request().token().as_deref()) else {
                eprintln!("poll refused {peer}: 401 (bad token)");
                return unauthorized(req).await;
            };
            let ch = req.request().query_param("ch").unwrap_or_default();
            let user = who(&principal).to_owned();
            match app.hub.serve_poll(req, principal.clone()).await {
                // Answered 400 / 403 / 503: no connection was kept.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::InvalidInput | ErrorKind::PermissionDenied | ErrorKind::Other
                    ) =>
                {
                    eprintln!("poll refused {peer} user={user} ch={ch:?}: {e}");
                }
                // Answered, or the client went away meanwhile: the hub keeps its connection.
                _ => app.note_polls(peer, &principal, &ch),
            }
        }
        "/api/publish" => {
            let r = req.request();
            let admin = app.admin_token.as_deref().is_some_and(|t| r.bearer_token() == Some(t));
            let (token, trusted) = if admin {
                // The bearer is the admin's; a user token may still come as ?token=.
                (r.query_param("token"), true)
            } else {
                let token = r.token();
                let open = app.admin_token.is_none() && token.is_none() && is_loopback(peer);
                (token, open)
            };
            let Some(principal) = authenticate(token.as_deref()) else {
                return unauthorized(req).await;
            };
            if let Err(e) = app.hub.serve_publish(req, principal, trusted).await {
                eprintln!("publish from {peer} refused: {e}");
            }
        }
        "/ws" => {
            let _ = req.respond(426, &[("Upgrade", "websocket")], b"WebSocket only\n").await;
        }
        _ => {
            let _ = req.respond(404, &[], b"not found\n").await;
        }
    }
}

/// Logs what the hub itself decides: closes, expiries, presence.
async fn log_hub_events(app: Arc<App>) {
    let hub = app.hub.clone();
    loop {
        match hub.event().await {
            HubEvent::Close { conn, code, reason } => match app.poll_gone(conn) {
                Some(p) => eprintln!(
                    "poll closed {} {conn} user={} ch={:?} reason={} {reason}",
                    p.peer, p.user, p.ch, code.0
                ),
                None => eprintln!("hub closed {conn}: {} {reason}", code.0),
            },
            HubEvent::Expired { conn } => {
                let idle =
                    app.poll_expiry.map_or_else(String::new, |d| format!(" (no poll for {d:?})"));
                match app.poll_gone(conn) {
                    Some(p) => eprintln!(
                        "poll closed {} {conn} user={} ch={:?} reason=expired{idle}",
                        p.peer, p.user, p.ch
                    ),
                    None => eprintln!("poll closed {conn} reason=expired{idle}"),
                }
            }
            HubEvent::Joined { ch, member } => eprintln!("presence {ch}: {member} joined"),
            HubEvent::Left { ch, member } => eprintln!("presence {ch}: {member} left"),
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
    let cfg = HubConfig {
        slow_consumers: vec![
            ("public:".into(), SlowConsumer::Disconnect),
            ("chat:".into(), SlowConsumer::Disconnect),
        ],
        ..HubConfig::default()
    };
    let mut opts = HubOptions::default();
    opts.executor = Some(ex.clone());
    let shared = args.redis.is_some();
    opts.redis = args.redis.clone();
    let poll_expiry = cfg.poll_expiry.timeout;
    let hub = HubHandle::with_options(cfg, DemoAuth, opts);

    let mut server_cfg = ServerConfig::default();
    server_cfg.executor = Some(ex.clone());
    let server = match Server::bind(args.addr.as_str(), server_cfg).await {
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
        let hub = hub.clone();
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
                    hub.submit_once("public:ticks", &format!("tick-{slot}"), data.as_bytes()).await
                } else {
                    hub.publish("public:ticks", format!("{{\"n\":{n}}}").as_bytes())
                };
                if let Err(e) = r {
                    eprintln!("ticker: {e}");
                }
            }
        })
    };
    let app = Arc::new(App {
        hub,
        admin_token: args.admin_token,
        no_ws: args.no_ws,
        polls: Mutex::new(HashMap::new()),
        poll_expiry,
    });
    let logger = ex.spawn(log_hub_events(app.clone()));
    let ws_app = app.clone();
    let serving = ex.spawn(server.serve_with(
        move |up: Upgrade| on_upgrade(ws_app.clone(), up),
        move |req: HttpRequest| on_http(app.clone(), req),
    ));

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
