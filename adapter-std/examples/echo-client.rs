//! The Autobahn|Testsuite fuzzingserver client on `tidewire-std`.
//!
//! ```text
//! cargo run --release -p tidewire-std --example echo-client -- --url ws://127.0.0.1:9001 --agent NAME \
//!     [--no-deflate]
//! ```
//!
//! Every connection offers permessage-deflate (RFC 7692; context takeover, window 15, every
//! message compressed) unless `--no-deflate` or the build is without the `deflate` feature.
//!
//! Fetches the case count from `{url}/getCaseCount`, runs `{url}/runCase?case=N&agent=NAME`
//! for every case, echoing each message until the server closes, then asks for
//! `{url}/updateReports?agent=NAME`.

use tidewire_std::{ClientOptions, WebSocket, connect};

const USAGE: &str = "\
usage: echo-client --url ws://HOST:PORT --agent NAME [--no-deflate]

Runs every case of an Autobahn fuzzingserver at URL, echoing each message (tidewire-std).

options:
  --url URL      the fuzzingserver (default ws://127.0.0.1:9001)
  --agent NAME   the agent name in the reports (default tidewire-std)
  --no-deflate   do not offer permessage-deflate (offered by default; needs the adapter's
                 `deflate` feature, on by default)
  -h, --help     this help";

fn parse_args() -> Result<(String, String, bool), String> {
    let (mut url, mut agent) = ("ws://127.0.0.1:9001".to_owned(), "tidewire-std".to_owned());
    let mut deflate = true;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = value()?,
            "--agent" => agent = value()?,
            "--no-deflate" => deflate = false,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    Ok((url.trim_end_matches('/').to_owned(), agent, deflate))
}

fn options(deflate: bool) -> ClientOptions {
    let mut opts = ClientOptions::default();
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

fn open(opts: &ClientOptions, url: &str) -> Option<WebSocket> {
    match connect(url, opts.clone()) {
        Ok(ws) => Some(ws),
        Err(e) => {
            eprintln!("{url}: {e}");
            None
        }
    }
}

fn main() {
    let (url, agent, deflate) = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let opts = options(deflate);
    let Some(mut ws) = open(&opts, &format!("{url}/getCaseCount")) else { std::process::exit(1) };
    let count: u32 = match ws.recv() {
        Ok(msg) => msg.as_text().and_then(|t| t.trim().parse().ok()).unwrap_or(0),
        Err(e) => {
            eprintln!("getCaseCount: {e}");
            std::process::exit(1);
        }
    };
    while ws.recv().is_ok() {}
    println!("{count} cases");

    for case in 1..=count {
        let Some(mut ws) = open(&opts, &format!("{url}/runCase?case={case}&agent={agent}")) else {
            continue;
        };
        while let Ok(msg) = ws.recv() {
            if ws.send(msg).is_err() {
                // Closing: keep receiving until the close handshake ends.
            }
        }
    }

    let Some(mut ws) = open(&opts, &format!("{url}/updateReports?agent={agent}")) else {
        std::process::exit(1)
    };
    while ws.recv().is_ok() {}
    println!("reports updated");
}
