//! Hub load-bench server, NEW design (issue 14, commit e187342 onward): every hub WebSocket
//! (`/ws`, envelope protocol) lives inside the one sans-IO `tidewire::server::Server` that
//! the adapter keeps behind one mutex, so framing, unmasking and UTF-8 run under that lock.
//!
//! Not an example of the repository: `benches/load/hub.sh` copies this file into a worktree
//! of the revision under test as `adapter-smol/examples/hub-bench.rs` and builds it there.
//! Its twin `old.rs` serves the same protocol with the `HubHandle` design of 7c81dbe.
//!
//! `hub-bench --addr 127.0.0.1:0 [--threads 2]`: a smol `Executor` run on `--threads` OS
//! threads (default 2), every task of the server spawned on it; routes `Routes::default()`;
//! `DemoAuth` for authentication (`?token=user:NAME`) and authorization (users may publish
//! to `chat:*`); no inbound rate limit, no WebSocket keepalive, no publisher in `chat:*`
//! messages (`hide_publisher`, as 7c81dbe had none). Prints `listening on ADDR`.

use std::io::Write as _;
use std::sync::Arc;

use smol::Executor;
use tidewire::hub::{DemoAuth, HubConfig};
use tidewire::server::Routes;
use tidewire_smol::{Server, ServerConfig};

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

async fn run(addr: String, ex: Arc<Executor<'static>>) {
    let mut cfg = ServerConfig::default();
    cfg.executor = Some(ex.clone());
    cfg.endpoint.routes = Routes::default();
    cfg.endpoint.ws.keepalive = None;
    // The load is one message in flight per connection, far over the default 50/s. No
    // publisher (`"from"`) in the messages, so that both servers send the same envelopes
    // (7c81dbe has no publisher field): the comparison is of the designs, not that feature.
    cfg.endpoint.hub = HubConfig {
        rate_limit: None,
        hide_publisher: vec!["chat:".into()],
        ..HubConfig::default()
    };
    let server = Server::bind_with(addr.as_str(), cfg, DemoAuth, DemoAuth)
        .await
        .unwrap_or_else(|e| panic!("cannot bind {addr}: {e}"));
    println!("listening on {}", server.local_addr());
    let _ = std::io::stdout().flush();
    // Hub routes are served by the core endpoint; any other upgrade is refused.
    let serving = ex.spawn(server.serve(|up| async move {
        let _ = up.reject(404, &[], b"not found\n").await;
    }));
    if let Err(e) = serving.await {
        eprintln!("serve: {e}");
    }
}
