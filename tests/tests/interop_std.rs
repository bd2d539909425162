//! Interop of `tidewire-std` with an independent implementation, Python's `websockets`
//! (issue 4): its client battery (`tests/interop/client.py`) against a Tidewire server, and a
//! Tidewire client against its server (`tests/interop/server.py`); both also with
//! permessage-deflate negotiated, in each context-takeover combination.
//!
//! Each test sets up Python with `scripts/py-venv.sh` and fails (never skips) when it cannot.
//! Every wait is bounded; child processes are killed when their guard drops. Network only on
//! 127.0.0.1.

mod interop;

use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::Bytes;
use interop::{STEP_TIMEOUT, bounded};
use tidewire::ws::deflate::DeflateConfig;
use tidewire::ws::{CloseCode, HandshakeError, Initiator, Message};
use tidewire_std::{
    ClientOptions, ConnectError, Event, RecvError, Server, ServerConfig, ServerHandle, Upgrade,
    WebSocket, connect,
};

const TOKEN: &str = "s3cret-interop-token";

// ----- Tidewire server, websockets client -----

/// A Tidewire echo server on 127.0.0.1:0, running on its own thread; shut down (1001, 5 s
/// grace) and joined when dropped.
struct EchoServer {
    handle: ServerHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl EchoServer {
    fn start(token: Option<&'static str>) -> Self {
        Self::start_with(token, None)
    }

    /// With permessage-deflate accepted per `deflate` (`None`: declined).
    fn start_with(token: Option<&'static str>, deflate: Option<DeflateConfig>) -> Self {
        let mut cfg = ServerConfig::default();
        if deflate.is_some() {
            cfg.endpoint.ws.max_frame = interop::DEFLATE_MAX_FRAME;
        }
        cfg.endpoint.ws.deflate = deflate;
        let server = Server::bind("127.0.0.1:0", cfg).expect("bind 127.0.0.1:0");
        let handle = server.handle();
        let thread = thread::spawn(move || server.serve(move |up| echo(up, token)));
        Self { handle, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.handle.local_addr())
    }

    /// Every connection of the battery has ended (threads/tasks and sockets released).
    fn assert_drained(&self) {
        let handle = self.handle.clone();
        interop::wait_for(
            Duration::from_secs(15),
            || handle.connections() == 0,
            || format!("{} connections still live after the battery", self.handle.connections()),
        );
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        let _ = bounded("server shutdown", Duration::from_secs(30), move || {
            handle.shutdown(Duration::from_secs(5))
        });
        if let Some(t) = self.thread.take() {
            let served =
                bounded("serve() returning after shutdown", Duration::from_secs(30), move || {
                    t.join()
                });
            if !thread::panicking() {
                served.expect("serve thread panicked").expect("serve() returned an error");
            }
        }
    }
}

/// The echo handler: 401 with `WWW-Authenticate: Bearer` unless the request carries the
/// token (when one is required), then echo every message until the close.
fn echo(up: Upgrade, token: Option<&str>) {
    if let Some(token) = token
        && up.request().token().as_deref() != Some(token)
    {
        let _ = up.reject(401, &[("WWW-Authenticate", "Bearer")], b"unauthorized\n");
        return;
    }
    let Ok(mut ws) = up.accept(None, &[]) else { return };
    while let Ok(msg) = ws.recv() {
        if ws.send(msg).is_err() {
            break;
        }
    }
}

#[test]
fn server_passes_websockets_client_battery() {
    let server = EchoServer::start(None);
    interop::run_client_py(&server.url(), None);
    server.assert_drained();
}

#[test]
fn server_with_token_passes_websockets_client_battery() {
    let server = EchoServer::start(Some(TOKEN));
    interop::run_client_py(&server.url(), Some(TOKEN));
    server.assert_drained();
}

/// permessage-deflate, offered by the websockets client with each combination of the
/// context-takeover parameters and accepted by the server (every message compressed): the
/// whole battery (0 B to 16 MiB, fragmented, pipelined, invalid UTF-8 inside compressed
/// data…), every connection negotiated, the answer carries what was asked, and the echoes
/// come back compressed.
#[test]
fn server_deflate_passes_websockets_client_battery_in_each_takeover_mode() {
    for (snct, cnct) in interop::TAKEOVER_MODES {
        let server = EchoServer::start_with(None, Some(interop::deflate_all()));
        let offer = interop::takeover_params(snct, cnct);
        let out = interop::run_client_py_with(
            &server.url(),
            None,
            &["--deflate", &offer, "--expect-deflate"],
        );
        interop::check_battery_deflate(&out, snct, cnct, &offer);
        server.assert_drained();
    }
}

/// The server imposes no context takeover either way on websockets' default offer.
#[test]
fn server_deflate_imposes_no_context_takeover_on_websockets_client() {
    let mut d = DeflateConfig::no_context_takeover();
    d.min_size = 0;
    let server = EchoServer::start_with(Some(TOKEN), Some(d));
    let out = interop::run_client_py_with(&server.url(), Some(TOKEN), &["--expect-deflate"]);
    interop::check_battery_deflate(&out, true, true, "default offer");
    server.assert_drained();
}

#[test]
fn server_shutdown_closes_websockets_client_with_1001() {
    let server = EchoServer::start(None);
    let handle = server.handle.clone();
    let report = interop::run_client_py_hold(&server.url(), 1001, move || {
        bounded("server shutdown", Duration::from_secs(30), move || {
            handle.shutdown(Duration::from_secs(5))
        })
    });
    assert_eq!((report.closed, report.dropped), (1, 0), "{report:?}");
    server.assert_drained();
}

// ----- websockets server, Tidewire client -----

fn open(url: &str) -> WebSocket {
    open_with(url, ClientOptions::default())
}

fn open_with(url: &str, opts: ClientOptions) -> WebSocket {
    let url = url.to_owned();
    let what = format!("connect {url}");
    bounded(&what, STEP_TIMEOUT, move || connect(&url, opts))
        .unwrap_or_else(|e| panic!("connect: {e:?}"))
}

/// Client options that offer permessage-deflate per `d` (and take the frames of a 16 MiB
/// message that does not compress).
fn deflate_options(d: DeflateConfig) -> ClientOptions {
    let mut opts = ClientOptions::default();
    opts.ws.max_frame = interop::DEFLATE_MAX_FRAME;
    opts.ws.deflate = Some(d);
    opts
}

/// One send and receive on `ws` within `STEP_TIMEOUT`.
fn round_trip(ws: WebSocket, msg: Message, py: &interop::PyServer) -> (WebSocket, Message) {
    let what = format!("echo {}", describe(&msg));
    let (ws, got) = step(ws, &what, move |ws| {
        ws.send(msg).expect("send");
        ws.recv()
    });
    (ws, got.unwrap_or_else(|e| panic!("{what}: {e:?}\n{}", py.log())))
}

/// A Tidewire client against the websockets server with permessage-deflate: `/deflate`
/// reports the server's answer (checked against the expected context takeover), every size
/// from 0 B to 16 MiB comes back intact, the server received every message compressed
/// (`min_size` 0), and fragmented compressed messages from the server arrive whole.
fn client_deflate_session(py: &interop::PyServer, d: DeflateConfig, snct: bool, cnct: bool) {
    let mut ws = open_with(&py.url("/deflate"), deflate_options(d.clone()));
    let (back, first) = step(ws, "the /deflate answer", WebSocket::recv);
    ws = back;
    let first = match first {
        Ok(Message::Text(t)) => t.as_str().to_owned(),
        other => panic!("/deflate: {other:?}\n{}", py.log()),
    };
    let header = interop::json_extensions(&first)
        .unwrap_or_else(|| panic!("/deflate: not negotiated: {first}\n{}", py.log()));
    interop::assert_agreement(&header, snct, cnct, &py.log());
    let mut sent = 0;
    for size in interop::SIZES {
        for msg in [
            Message::text(interop::text_of_size(size)),
            Message::binary(interop::binary_of_size(size)),
        ] {
            let (back, got) = round_trip(ws, msg.clone(), py);
            ws = back;
            sent += 1;
            assert!(got == msg, "echo {}: got {} back", describe(&msg), describe(&got));
        }
    }
    let (back, stats) = round_trip(ws, Message::text("stats"), py);
    ws = back;
    let Message::Text(stats) = stats else { panic!("stats: {stats:?}") };
    let stats = stats.as_str();
    // `stats` itself is counted too. With context takeover on the client's side every
    // message goes compressed (`min_size` 0); without, those that do not shrink go plain
    // (random bytes, a few bytes), while the 6 texts of 125 B and more shrink.
    assert_eq!(interop::json_number(stats, "messages"), sent + 1, "{stats}");
    let compressed = interop::json_number(stats, "compressed");
    if cnct {
        assert!(compressed >= 6, "{stats}");
    } else {
        assert_eq!(compressed, sent + 1, "{stats}");
    }
    eprintln!("client offer {d:?}: agreed {header:?}; the server received {stats}");
    close_cleanly(ws);

    let ws = open_with(&py.url("/fragmented"), deflate_options(d));
    let (ws, got) = step(ws, "receive fragmented messages", |ws| (ws.recv(), ws.recv()));
    match got {
        (Ok(Message::Text(t)), Ok(Message::Binary(b))) => {
            assert_eq!(t.as_str(), interop::FRAGMENTED_TEXT);
            assert_eq!(b.as_ref(), interop::fragmented_binary().as_slice());
        }
        other => panic!("expected the fragmented text then binary, got {other:?}\n{}", py.log()),
    }
    close_cleanly(ws);
}

/// The client offers each combination of the context-takeover parameters to websockets'
/// default server (which answers with window bits 12 both ways).
#[test]
fn client_deflate_round_trips_in_each_takeover_mode() {
    let py = interop::PyServer::start();
    for (snct, cnct) in interop::TAKEOVER_MODES {
        let mut d = interop::deflate_all();
        d.server_no_context_takeover = snct;
        d.client_no_context_takeover = cnct;
        client_deflate_session(&py, d, snct, cnct);
    }
}

/// The websockets server imposes no context takeover either way on the client's default
/// offer.
#[test]
fn client_deflate_accepts_imposed_no_context_takeover() {
    let py = interop::PyServer::start_with(&[
        "--deflate",
        "server_no_context_takeover,client_no_context_takeover",
    ]);
    client_deflate_session(&py, interop::deflate_all(), true, true);
}

/// Runs one step on the socket (moved to a helper thread and back) within `STEP_TIMEOUT`.
fn step<T: Send + 'static>(
    ws: WebSocket,
    what: &str,
    f: impl FnOnce(&mut WebSocket) -> T + Send + 'static,
) -> (WebSocket, T) {
    bounded(what, STEP_TIMEOUT, move || {
        let mut ws = ws;
        let v = f(&mut ws);
        (ws, v)
    })
}

fn describe(m: &Message) -> String {
    match m {
        Message::Text(t) => format!("text of {} bytes", t.len()),
        Message::Binary(b) => format!("binary of {} bytes", b.len()),
    }
}

/// Closes with 1000 and waits for the close handshake to finish cleanly.
fn close_cleanly(ws: WebSocket) {
    let (_, info) = step(ws, "close handshake", |ws| {
        ws.close(CloseCode::NORMAL, "done").expect("close");
        loop {
            if let Event::Closed(info) = ws.recv_event() {
                return info;
            }
        }
    });
    assert_eq!(info.code, CloseCode::NORMAL, "{info:?}");
    assert_eq!(info.initiator, Initiator::Local, "{info:?}");
    assert!(info.clean, "close handshake not clean: {info:?}");
}

#[test]
fn client_echo_round_trips_text_and_binary() {
    let py = interop::PyServer::start();
    let mut ws = open(&py.url("/echo"));
    for size in interop::SIZES {
        for msg in [
            Message::text(interop::text_of_size(size)),
            Message::binary(interop::binary_of_size(size)),
        ] {
            let what = format!("echo {}", describe(&msg));
            let sent = msg.clone();
            let (back, got) = step(ws, &what, move |ws| {
                ws.send(sent).expect("send");
                ws.recv()
            });
            ws = back;
            let got = got.unwrap_or_else(|e| panic!("{what}: {e:?}\n{}", py.log()));
            assert!(got == msg, "{what}: got {} back", describe(&got));
        }
    }
    close_cleanly(ws);
}

#[test]
fn client_receives_fragmented_messages_whole() {
    let py = interop::PyServer::start();
    let ws = open(&py.url("/fragmented"));
    let (ws, got) = step(ws, "receive fragmented messages", |ws| (ws.recv(), ws.recv()));
    match got {
        (Ok(Message::Text(t)), Ok(Message::Binary(b))) => {
            assert_eq!(t.as_str(), interop::FRAGMENTED_TEXT);
            assert_eq!(b.as_ref(), interop::fragmented_binary().as_slice());
        }
        other => panic!("expected the fragmented text then binary, got {other:?}\n{}", py.log()),
    }
    close_cleanly(ws);
}

#[test]
fn client_answers_server_ping() {
    let py = interop::PyServer::start();
    let ws = open(&py.url("/ping"));
    // The server pings on open and reports whether the matching pong came back.
    let (ws, got) = step(ws, "receive the ping verdict", WebSocket::recv);
    match got {
        Ok(Message::Text(t)) if t.as_str() == "pong-ok" => {}
        other => panic!("server ping not answered: {other:?}\n{}", py.log()),
    }
    close_cleanly(ws);
}

#[test]
fn client_ping_gets_matching_pong() {
    let py = interop::PyServer::start();
    let ws = open(&py.url("/echo"));
    let (ws, pong) = step(ws, "ping -> pong", |ws| {
        ws.ping(Bytes::from_static(interop::CLIENT_PING)).expect("ping");
        match ws.recv_event() {
            Event::Pong(p) => Ok(p),
            other => Err(other),
        }
    });
    match pong {
        Ok(p) => assert_eq!(p.as_ref(), interop::CLIENT_PING, "pong payload"),
        Err(other) => panic!("expected the pong, got {other:?}\n{}", py.log()),
    }
    close_cleanly(ws);
}

#[test]
fn client_sees_server_close_codes() {
    let py = interop::PyServer::start();
    for code in [1000u16, 1001, 4100] {
        let ws = open(&py.url(&format!("/close/{code}")));
        let (_ws, (event, again)) = step(ws, &format!("close {code}"), |ws| {
            let event = ws.recv_event();
            (event, ws.recv())
        });
        let Event::Closed(info) = event else {
            panic!("/close/{code}: expected Closed, got {event:?}\n{}", py.log());
        };
        assert_eq!(info.code, CloseCode(code), "/close/{code}: {info:?}");
        assert_eq!(info.reason.as_str(), "bye", "/close/{code}: {info:?}");
        assert_eq!(info.initiator, Initiator::Remote, "/close/{code}: {info:?}");
        assert!(info.clean, "/close/{code}: close handshake not clean: {info:?}");
        match again {
            Err(RecvError::Closed(i)) => assert_eq!(i, info, "/close/{code}: recv after Closed"),
            other => panic!("/close/{code}: recv after Closed gave {other:?}"),
        }
    }
}

#[test]
fn client_rejected_upgrade_is_status_401() {
    let py = interop::PyServer::start();
    let url = py.url("/reject");
    let res =
        bounded("connect /reject", STEP_TIMEOUT, move || connect(&url, ClientOptions::default()));
    match res {
        Err(ConnectError::Handshake(HandshakeError::Status(401))) => {}
        Err(other) => panic!("/reject: expected Handshake(Status(401)), got {other:?}"),
        Ok(_) => panic!("/reject: the upgrade succeeded\n{}", py.log()),
    }
}
