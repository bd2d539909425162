//! One scripted scenario ([`SCRIPT`]) played on three stages: the deterministic simulation
//! ([`SimStage`]: the core `Server` with the simulated network for sockets, in virtual time)
//! and each adapter over loopback ([`Loopback`]). [`play`] interprets the script on any
//! [`Stage`] and gives a [`Transcript`]; stages that serve alike give equal transcripts.

use std::thread;
use std::time::Duration;

use tidewire::client::{SessionConfig, SessionEvent, Transport};
use tidewire::replay::ReplayLog;
use tidewire::testing::{NetConfig, Sim};

use super::http;
use super::scenario::Instance;
use super::{Backend, Client, Next, Spec, session_config};

/// The channel of the script.
pub(crate) const CH: &str = "chat:s";

/// The query that authenticates ann on a raw request.
const ANN: &str = "token=user%3Aann";

/// One step of the script.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step {
    /// A session of `user` over this transport only, subscribed to [`CH`]; sessions are
    /// numbered in the order they join.
    Join(&'static str, Transport),
    /// Waits until [`CH`]'s presence lists this many members.
    AwaitPresence(usize),
    /// A trusted publish of `{"i":n}` through the server's handle.
    Publish(u64),
    /// Session `k` publishes `{"i":n}`.
    ClientPublish(usize, u64),
    /// `POST /api/publish?ch=CH` as ann with `{"i":n}`; the status goes to the transcript.
    HttpPublish(u64),
    /// A `GET` of this path without credentials; the status goes to the transcript.
    Get(&'static str),
    /// Waits until every session has had this many messages.
    AwaitMessages(usize),
}

use Step::{AwaitMessages, AwaitPresence, ClientPublish, Get, HttpPublish, Join, Publish};

/// Three sessions (one per transport) on [`CH`]; 6 publishes through the handle, 3 from the
/// WebSocket session, 3 over HTTP, each batch delivered to everyone before the next; then
/// four refused or misdirected requests.
pub(crate) const SCRIPT: &[Step] = &[
    Join("ann", Transport::WebSocket),
    Join("bob", Transport::Sse),
    Join("cy", Transport::Polling),
    AwaitPresence(3),
    Publish(0),
    Publish(1),
    Publish(2),
    Publish(3),
    Publish(4),
    Publish(5),
    AwaitMessages(6),
    ClientPublish(0, 6),
    AwaitMessages(7),
    ClientPublish(0, 7),
    AwaitMessages(8),
    ClientPublish(0, 8),
    AwaitMessages(9),
    HttpPublish(9),
    HttpPublish(10),
    HttpPublish(11),
    AwaitMessages(12),
    Get("/events?ch=secret:x"),
    Get("/poll?ch=chat:s"),
    Get("/ws"),
    Get("/api/publish?ch=chat:s"),
];

/// What one play of [`SCRIPT`] observed, with epochs left out (each server draws its own).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Transcript {
    /// Per session, in join order: `(offset, data)` of every delivery, in order.
    pub deliveries: Vec<(Transport, Vec<(u64, String)>)>,
    /// The status of each scripted raw request.
    pub statuses: Vec<u16>,
    /// [`CH`]'s presence at the end.
    pub presence: Vec<String>,
    /// [`CH`]'s head offset at the end.
    pub head: Option<u64>,
}

/// A server with its sessions, driven by [`play`].
pub(crate) trait Stage {
    /// The stage's name, for messages.
    fn name(&self) -> String;
    /// Starts a session with `cfg` (the stage sets the server's address).
    fn join(&mut self, cfg: SessionConfig);
    /// Session `k` publishes `json` on [`CH`].
    fn client_publish(&mut self, k: usize, json: &str);
    /// A trusted publish of `json` on [`CH`].
    fn publish(&mut self, json: &str);
    /// Sends `head` and `body` on a new connection; the answer's status.
    fn request(&mut self, head: &str, body: &[u8]) -> u16;
    /// The messages session `k` received since the last call.
    fn messages(&mut self, k: usize) -> Vec<(u64, String)>;
    /// [`CH`]'s presence, sorted.
    fn presence(&mut self) -> Vec<String>;
    /// [`CH`]'s head offset.
    fn head(&mut self) -> Option<u64>;
    /// Lets 10 ms pass (real or virtual).
    fn pass(&mut self);
    /// Closes every session.
    fn close(&mut self);
}

/// How many [`Stage::pass`]es a wait may take (10 s).
const PATIENCE: usize = 1000;

/// The head of a raw request `method path` with a body of `len` bytes.
fn request_head(method: &str, path: &str, len: usize) -> String {
    let length = if len == 0 { String::new() } else { format!("Content-Length: {len}\r\n") };
    format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{length}\r\n")
}

/// Plays [`SCRIPT`] on `stage`.
pub(crate) fn play(stage: &mut impl Stage) -> Transcript {
    let name = stage.name();
    let mut transports = Vec::new();
    let mut got: Vec<Vec<(u64, String)>> = Vec::new();
    let mut statuses = Vec::new();
    let data = |i: u64| format!(r#"{{"i":{i}}}"#);
    for &step in SCRIPT {
        match step {
            Join(user, t) => {
                let mut cfg = session_config(0, Some(&format!("user:{user}")));
                cfg.transports = vec![t];
                stage.join(cfg);
                transports.push(t);
                got.push(Vec::new());
            }
            AwaitPresence(n) => {
                let mut passes = 0;
                while stage.presence().len() < n {
                    assert!(passes < PATIENCE, "{name}: presence {:?}", stage.presence());
                    stage.pass();
                    passes += 1;
                }
            }
            Publish(i) => stage.publish(&data(i)),
            ClientPublish(k, i) => stage.client_publish(k, &data(i)),
            HttpPublish(i) => {
                let path = format!("/api/publish?ch={CH}&{ANN}");
                let body = data(i);
                statuses
                    .push(stage.request(&request_head("POST", &path, body.len()), body.as_bytes()));
            }
            Get(path) => statuses.push(stage.request(&request_head("GET", path, 0), b"")),
            AwaitMessages(n) => {
                let mut passes = 0;
                loop {
                    for (k, g) in got.iter_mut().enumerate() {
                        g.extend(stage.messages(k));
                    }
                    if got.iter().all(|g| g.len() >= n) {
                        break;
                    }
                    let counts: Vec<usize> = got.iter().map(Vec::len).collect();
                    assert!(passes < PATIENCE, "{name}: {counts:?} of {n} messages");
                    stage.pass();
                    passes += 1;
                }
            }
        }
    }
    let presence = stage.presence();
    let head = stage.head();
    stage.close();
    Transcript { deliveries: transports.into_iter().zip(got).collect(), statuses, presence, head }
}

/// The message of a session event, if it is one.
fn message(ev: SessionEvent) -> Option<(u64, String)> {
    match ev {
        SessionEvent::Message { pos, data, .. } => Some((pos.offset, data)),
        _ => None,
    }
}

// ----------------------------------------------------------------------------------------

/// The simulation: server 0 runs `spec`'s endpoint with the default routes and `DemoAuth`
/// (what [`super::gated`] does with its gates open); session `k` is client node `k`.
pub(crate) struct SimStage {
    seed: u64,
    sim: Sim,
    clients: Vec<usize>,
}

impl SimStage {
    pub(crate) fn new(seed: u64, spec: &Spec) -> Self {
        let mut sim = Sim::new(seed, NetConfig::default());
        sim.add_server(spec.endpoint());
        Self { seed, sim, clients: Vec::new() }
    }
}

impl Stage for SimStage {
    fn name(&self) -> String {
        format!("sim (seed {})", self.seed)
    }

    fn join(&mut self, cfg: SessionConfig) {
        let c = self.sim.add_client(0, cfg, |s, now| s.subscribe(now, CH).unwrap());
        self.clients.push(c);
    }

    fn client_publish(&mut self, k: usize, json: &str) {
        self.sim.with_client(self.clients[k], |s, now| s.publish(now, CH, json)).unwrap();
    }

    fn publish(&mut self, json: &str) {
        self.sim.publish(0, CH, json.as_bytes()).unwrap();
    }

    fn request(&mut self, head: &str, body: &[u8]) -> u16 {
        let r = self.sim.send_request(self.clients[0], [head.as_bytes(), body].concat());
        for _ in 0..PATIENCE {
            if self.sim.request(r).is_done() {
                break;
            }
            self.pass();
        }
        self.sim.request(r).status().unwrap_or_else(|| panic!("{}: no answer", self.name()))
    }

    fn messages(&mut self, k: usize) -> Vec<(u64, String)> {
        let events = self.sim.client_mut(self.clients[k]).drain_events();
        events.into_iter().filter_map(|(_, ev)| message(ev)).collect()
    }

    fn presence(&mut self) -> Vec<String> {
        self.sim.server(0).hub().presence(CH).map(str::to_owned).collect()
    }

    fn head(&mut self) -> Option<u64> {
        self.sim.server(0).hub().log(CH).map(ReplayLog::head).map(|p| p.offset)
    }

    fn pass(&mut self) {
        self.sim.run_for(Duration::from_millis(10));
    }

    fn close(&mut self) {
        for &c in &self.clients {
            self.sim.with_client(c, tidewire::client::ClientSession::close);
        }
        self.pass();
    }
}

/// An adapter's server on a loopback port, with its sessions.
pub(crate) struct Loopback<B: Backend> {
    inst: Instance<B>,
    clients: Vec<B::Client>,
}

impl<B: Backend> Loopback<B> {
    pub(crate) fn new(spec: &Spec) -> Self {
        Self { inst: Instance::start(spec, "127.0.0.1:0"), clients: Vec::new() }
    }
}

impl<B: Backend> Stage for Loopback<B> {
    fn name(&self) -> String {
        B::NAME.to_owned()
    }

    fn join(&mut self, mut cfg: SessionConfig) {
        cfg.port = self.inst.addr.port();
        let c = B::session(cfg);
        c.subscribe(CH);
        self.clients.push(c);
    }

    fn client_publish(&mut self, k: usize, json: &str) {
        self.clients[k].publish(CH, json);
    }

    fn publish(&mut self, json: &str) {
        B::publish(&self.inst.hub, CH, json);
    }

    fn request(&mut self, head: &str, body: &[u8]) -> u16 {
        http::request(self.inst.addr, head, body).status
    }

    fn messages(&mut self, k: usize) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        loop {
            match self.clients[k].next(Duration::from_millis(1)) {
                Next::Event(ev) => out.extend(message(ev)),
                Next::Timeout => return out,
                Next::Ended => panic!("{} session {k}: ended", B::NAME),
            }
        }
    }

    fn presence(&mut self) -> Vec<String> {
        B::presence(&self.inst.hub, CH)
    }

    fn head(&mut self) -> Option<u64> {
        B::head(&self.inst.hub, CH).map(|p| p.offset)
    }

    fn pass(&mut self) {
        thread::sleep(Duration::from_millis(10));
    }

    fn close(&mut self) {
        for c in &self.clients {
            c.close();
        }
    }
}
