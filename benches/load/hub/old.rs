//! Hub load-bench server, OLD design (commit 7c81dbe): a `HubHandle` beside the WebSocket
//! server; each hub WebSocket is served by `HubHandle::serve_ws` on its connection's own
//! task (framing, unmasking and UTF-8 there), and only the hub calls take the hub's lock.
//! Routing as `adapter-smol/examples/live.rs` did at that commit: `/ws` with a `DemoAuth`
//! token goes to `hub.serve_ws`.
//!
//! Not an example of the repository: `benches/load/hub.sh` copies this file into a worktree
//! of 7c81dbe as `adapter-smol/examples/hub-bench.rs` and builds it there. Its twin `new.rs`
//! serves the same protocol with the single-owner `Server` of issue 14.
//!
//! `hub-bench --addr 127.0.0.1:0 [--threads 2]`: a smol `Executor` run on `--threads` OS
//! threads (default 2), every task of the server and the hub spawned on it; `DemoAuth` for
//! authentication and authorization; no inbound rate limit and no WebSocket keepalive.
//! Prints `listening on ADDR`.

use std::io::Write as _;
use std::sync::Arc;

use smol::Executor;
use tidewire::hub::{DemoAuth, HubConfig};
use tidewire_smol::{HttpRequest, HubHandle, HubOptions, Server, ServerConfig, Upgrade};

fn main() {
    let mut addr = "127.0.0.1:0".to_owned();
    let mut threads = 2usize;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = value,
            "--threads" => threads = value.parse().expect("--threads: a number"),
            other => panic!("unknown flag {other}"),
        }
    }
    let ex = Arc::new(Executor::new());
    // threads - 1 extra threads run the executor; the main thread is the last one.
    for _ in 1..threads.max(1) {
        let ex = ex.clone();
        std::thread::spawn(move || smol::block_on(ex.run(smol::future::pending::<()>())));
    }
    let main = ex.spawn(run(addr, ex.clone()));
    smol::block_on(ex.run(main));
}

async fn on_upgrade(hub: HubHandle, up: Upgrade) {
    if up.request().request().path_only() != "/ws" {
        let _ = up.reject(404, &[], b"not found\n").await;
        return;
    }
    let Some(principal) = DemoAuth::authenticate(up.request().request().token().as_deref()) else {
        let _ = up.reject(401, &[("WWW-Authenticate", "Bearer")], b"bad token\n").await;
        return;
    };
    let Ok(ws) = up.accept(None, &[]).await else { return };
    let name = principal.user.clone();
    let _ = hub.serve_ws(ws, principal, name).await;
}

async fn run(addr: String, ex: Arc<Executor<'static>>) {
    // The load is one message in flight per connection, far over the default 50/s.
    let cfg = HubConfig { rate_limit: None, ..HubConfig::default() };
    let mut opts = HubOptions::default();
    opts.executor = Some(ex.clone());
    let hub = HubHandle::with_options(cfg, DemoAuth, opts);
    let mut server_cfg = ServerConfig::default();
    server_cfg.executor = Some(ex.clone());
    server_cfg.ws.keepalive = None;
    let server = Server::bind(addr.as_str(), server_cfg)
        .await
        .unwrap_or_else(|e| panic!("cannot bind {addr}: {e}"));
    println!("listening on {}", server.local_addr());
    let _ = std::io::stdout().flush();
    let serving = ex.spawn(server.serve_with(
        move |up: Upgrade| on_upgrade(hub.clone(), up),
        |req: HttpRequest| async move {
            let _ = req.respond(404, &[], b"not found\n").await;
        },
    ));
    if let Err(e) = serving.await {
        eprintln!("serve: {e}");
    }
}
