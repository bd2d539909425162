//! A ticker on smol: a hub server (the core endpoint's default routes, the demo's tokens)
//! whose ticker task publishes `{"n":N}` on the channel `ticks` through
//! `ServerHandle::publish`. The core serves it as Server-Sent Events (resumable with
//! `Last-Event-ID`), by polling, and over the WebSocket envelope protocol. `ticks` is
//! readable by everyone; every other channel follows the demo's policy (`DemoAuth`).
//!
//! `cargo run --release -p tidewire-smol --example ticker -- --addr 127.0.0.1:8080
//! [--every-ms 1000]`
//!
//! Then `curl -N 'http://127.0.0.1:8080/events?ch=ticks'` or
//! `curl 'http://127.0.0.1:8080/poll?ch=ticks&pos=EPOCH:OFFSET'`. Ctrl-C or SIGTERM ends
//! every stream (5 s grace) and exits 0.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use async_signal::{Signal, Signals};
use smol::future;
use smol::stream::StreamExt;
use smol::{Executor, Timer};
use tidewire_smol::tidewire::hub::{Access, Authorize as _, DemoAuth, Principal};
use tidewire_smol::tidewire::server::Routes;
use tidewire_smol::{HttpRequest, Server, ServerConfig, Upgrade};

/// The channel the ticker publishes on.
const CHANNEL: &str = "ticks";

const USAGE: &str = "\
usage: ticker --addr HOST:PORT [--every-ms 1000]

Publishes {\"n\":N} on channel `ticks` every --every-ms milliseconds and serves:
  GET /events?ch=NAME            Server-Sent Events of channel NAME (resumable with
                                 Last-Event-ID: EPOCH:OFFSET)
  GET /poll?ch=NAME&pos=EP:OFF   polling (ETag / If-None-Match → 304; wait=1 long-polls)
  GET /ws                        the WebSocket envelope protocol
  POST /api/publish?ch=NAME      a publish (the demo's policy)
Other paths get 404.

options:
  --addr HOST:PORT   address to listen on (default 127.0.0.1:8080; port 0 picks one)
  --every-ms MS      publishing interval in milliseconds (default 1000)
  -h, --help         this text

Prints `listening on ADDR` once ready. Ctrl-C or SIGTERM ends every stream and exits 0.";

struct Args {
    addr: String,
    every: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { addr: "127.0.0.1:8080".into(), every: Duration::from_secs(1) };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value()?,
            "--every-ms" => {
                let v = value()?;
                let ms: u64 = v.parse().map_err(|_| format!("--every-ms: not a number: {v}"))?;
                if ms == 0 {
                    return Err("--every-ms must be at least 1".into());
                }
                args.every = Duration::from_millis(ms);
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

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // One thread: `block_on` drives the reactor while the executor runs every task. `run`
    // is a task too, so that it is polled only when it was woken.
    let ex = Arc::new(Executor::new());
    let code = smol::block_on(ex.run(ex.spawn(run(args, ex.clone()))));
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
    // Pages of other origins read the ticks too.
    cfg.endpoint.response_headers = vec![("Access-Control-Allow-Origin".into(), "*".into())];
    let policy = |p: &Principal, ch: &str, access: Access| match access {
        Access::Read => ch == CHANNEL || DemoAuth.can_read(p, ch),
        Access::Write => DemoAuth.can_write(p, ch),
    };
    let server = match Server::bind_with(args.addr.as_str(), cfg, DemoAuth, policy).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot bind {}: {e}", args.addr);
            return 1;
        }
    };
    let handle = server.handle();
    println!("listening on {}", server.local_addr());
    let _ = std::io::stdout().flush();

    let publisher = {
        let hub = handle.clone();
        let every = args.every;
        ex.spawn(async move {
            let mut n: u64 = 0;
            loop {
                Timer::after(every).await;
                n += 1;
                let _ = hub.publish(CHANNEL, format!("{{\"n\":{n}}}").as_bytes());
            }
        })
    };
    let serving = ex.spawn(server.serve_with(
        |up: Upgrade| async move {
            let _ = up.reject(404, &[], b"no WebSocket here\n").await;
        },
        |req: HttpRequest| async move {
            let _ = req.respond(404, &[], b"not found\n").await;
        },
    ));
    let _ = signals.next().await;
    drop(publisher.cancel());
    let report = handle.shutdown(Duration::from_secs(5)).await;
    eprintln!("shut down: {} closed, {} dropped", report.closed, report.dropped);
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
