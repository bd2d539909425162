//! The Autobahn|Testsuite fuzzingserver client on smol: fetches `/getCaseCount`, runs every
//! `/runCase?case=N&agent=NAME` echoing each message until the close, then
//! `/updateReports?agent=NAME`.
//!
//! `cargo run --release -p tidewire-smol --example echo-client -- --url ws://127.0.0.1:9001 --agent NAME
//! [--no-deflate]`
//!
//! Every connection offers permessage-deflate (RFC 7692; context takeover, window 15, every
//! message compressed) unless `--no-deflate` or the build is without the `deflate` feature.

use std::sync::Arc;

use smol::Executor;
use tidewire_smol::{ClientOptions, CloseCode, ConnectError, Message, WebSocket, connect};

const USAGE: &str = "\
usage: echo-client --url ws://HOST:PORT --agent NAME

The Autobahn|Testsuite fuzzingserver client (tidewire-smol adapter).

options:
  --url ws://HOST:PORT   the fuzzingserver (default ws://127.0.0.1:9001)
  --agent NAME           the agent name in the reports (default tidewire-smol)
  --no-deflate           do not offer permessage-deflate (offered by default; needs the
                         adapter's `deflate` feature, on by default)
  -h, --help             this text";

fn options(ex: &Arc<Executor<'static>>, deflate: bool) -> ClientOptions {
    let mut opts = ClientOptions::default();
    opts.executor = Some(ex.clone());
    opts.ws.keepalive = None;
    opts.ws.max_message = 64 << 20;
    opts.ws.max_frame = 64 << 20;
    if deflate {
        // Offered as the Autobahn|Testsuite exercises it: every message compressed.
        #[cfg(feature = "deflate")]
        {
            let mut d = tidewire::ws::deflate::DeflateConfig::default();
            d.min_size = 0;
            opts.ws.deflate = Some(d);
        }
    }
    opts
}

async fn open(opts: &ClientOptions, url: &str) -> Result<WebSocket, ConnectError> {
    connect(url, opts.clone()).await
}

fn main() {
    let mut url = "ws://127.0.0.1:9001".to_owned();
    let mut agent = "tidewire-smol".to_owned();
    let mut deflate = true;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next().unwrap_or_else(|| {
                eprintln!("{flag} needs a value");
                std::process::exit(2);
            })
        };
        match flag.as_str() {
            "--url" => url = value(),
            "--agent" => agent = value(),
            "--no-deflate" => deflate = false,
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("unknown flag {other} (try --help)");
                std::process::exit(2);
            }
        }
    }
    let url = url.trim_end_matches('/').to_owned();
    // One thread: `block_on` drives the reactor while the executor runs the driver tasks.
    let ex = Arc::new(Executor::new());
    let opts = options(&ex, deflate);
    if let Err(e) = smol::block_on(ex.run(run(&opts, &url, &agent))) {
        eprintln!("echo-client: {e}");
        std::process::exit(1);
    }
}

async fn run(
    opts: &ClientOptions,
    url: &str,
    agent: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut ws = open(opts, &format!("{url}/getCaseCount")).await?;
    let count: u32 = match ws.recv().await? {
        Message::Text(t) => t.as_str().trim().parse()?,
        Message::Binary(_) => return Err("getCaseCount: binary answer".into()),
    };
    let _ = ws.close(CloseCode::NORMAL, "");
    while ws.recv().await.is_ok() {}
    println!("running {count} cases");

    for case in 1..=count {
        match open(opts, &format!("{url}/runCase?case={case}&agent={agent}")).await {
            Ok(mut ws) => {
                while let Ok(msg) = ws.recv().await {
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                }
                // Wait for the close to finish before the next case.
                while ws.recv().await.is_ok() {}
            }
            Err(e) => eprintln!("case {case}: {e}"),
        }
    }

    let mut ws = open(opts, &format!("{url}/updateReports?agent={agent}")).await?;
    let _ = ws.close(CloseCode::NORMAL, "");
    while ws.recv().await.is_ok() {}
    println!("reports updated");
    Ok(())
}
