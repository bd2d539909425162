//! What the end-to-end scenarios share: a session's [`Inbox`], a steady [`Publisher`] and a
//! hub server on a loopback port behind a [`Front`] ([`Site`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tidewire::client::{SessionConfig, SessionEvent, SessionState, StateChange, Transport};
use tidewire::hub::HubConfig;
use tidewire::replay::Position;

use super::front::Front;
use super::{Backend, Client, Next, Spec, session_config, settle};

pub(crate) const CHANNELS: &[&str] = &["chat:a", "chat:b", "chat:c"];

/// What a session delivered, in arrival order.
#[derive(Default)]
pub(crate) struct Inbox {
    /// Per channel: position, the publisher's sequence number `i`, the transport in use.
    pub(crate) msgs: HashMap<String, Vec<(Position, u64, Option<Transport>)>>,
    pub(crate) refetch: Vec<(String, Position)>,
    pub(crate) states: Vec<StateChange>,
    pub(crate) presence: Vec<(String, Vec<String>, Vec<String>)>,
    pub(crate) failed: Vec<(String, String)>,
    /// Per channel: each message's publisher as the server showed it.
    pub(crate) from: HashMap<String, Vec<Option<String>>>,
    pub(crate) total: usize,
}

/// The sequence number of a test message `{"i":N}`.
pub(crate) fn seq(data: &str) -> u64 {
    data.strip_prefix(r#"{"i":"#)
        .and_then(|s| s.strip_suffix('}'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a test message: {data}"))
}

impl Inbox {
    pub(crate) fn record(&mut self, ev: SessionEvent, transport: Option<Transport>) {
        match ev {
            SessionEvent::Message { ch, pos, data, from } => {
                self.from.entry(ch.clone()).or_default().push(from);
                self.msgs.entry(ch).or_default().push((pos, seq(&data), transport));
                self.total += 1;
            }
            SessionEvent::RefetchNeeded { ch, pos } => self.refetch.push((ch, pos)),
            SessionEvent::State(change) => self.states.push(change),
            SessionEvent::Presence { ch, join, leave } => self.presence.push((ch, join, leave)),
            SessionEvent::SubscribeFailed { ch, code } => self.failed.push((ch, code)),
            _ => {}
        }
    }

    /// Records events until `done` holds; fails after `secs`.
    pub(crate) fn pump(
        &mut self,
        c: &mut impl Client,
        secs: u64,
        what: &str,
        done: impl Fn(&Inbox) -> bool,
    ) {
        let end = Instant::now() + Duration::from_secs(secs);
        while !done(self) {
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}: {}", self.summary());
            self.step(c, left.min(Duration::from_millis(100)), what);
        }
    }

    /// Records every event that arrives within `d`.
    pub(crate) fn pump_for(&mut self, c: &mut impl Client, d: Duration) {
        let end = Instant::now() + d;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            self.step(c, left, "a quiet period");
        }
    }

    pub(crate) fn step(&mut self, c: &mut impl Client, wait: Duration, what: &str) {
        match c.next(wait) {
            Next::Event(ev) => self.record(ev, c.transport()),
            Next::Timeout => {}
            Next::Ended => panic!("session ended while waiting for {what}: {}", self.summary()),
        }
    }

    pub(crate) fn count(&self, ch: &str) -> usize {
        self.msgs.get(ch).map_or(0, Vec::len)
    }

    pub(crate) fn last_seq(&self, ch: &str) -> Option<u64> {
        self.msgs.get(ch).and_then(|m| m.last()).map(|m| m.1)
    }

    pub(crate) fn opens(&self) -> usize {
        self.states.iter().filter(|s| s.state == SessionState::Open).count()
    }

    pub(crate) fn saw(&self, state: SessionState) -> bool {
        self.states.iter().any(|s| s.state == state)
    }

    pub(crate) fn carried(&self, t: Transport) -> usize {
        self.msgs.values().flatten().filter(|m| m.2 == Some(t)).count()
    }

    pub(crate) fn summary(&self) -> String {
        let per: Vec<_> = CHANNELS
            .iter()
            .map(|ch| format!("{ch}: {} (last {:?})", self.count(ch), self.last_seq(ch)))
            .collect();
        let states: Vec<_> = self
            .states
            .iter()
            .map(|s| format!("{:?}/{:?}/{:?}", s.state, s.transport, s.reason))
            .collect();
        format!(
            "{} messages [{}], refetch {:?}, failed {:?}, states {:?}",
            self.total,
            per.join(", "),
            self.refetch,
            self.failed,
            states
        )
    }

    /// `ch` got exactly the sequence numbers `from..to`, in order, at consecutive offsets
    /// of one epoch.
    pub(crate) fn assert_exact(
        &self,
        ch: &str,
        from: u64,
        to: u64,
        msgs: &[(Position, u64, Option<Transport>)],
    ) {
        let seqs: Vec<u64> = msgs.iter().map(|m| m.1).collect();
        assert_eq!(seqs, (from..to).collect::<Vec<_>>(), "{ch}: {}", self.summary());
        for w in msgs.windows(2) {
            assert_eq!(w[0].0.epoch, w[1].0.epoch, "{ch}: epoch changed without a refetch");
            assert_eq!(w[0].0.offset + 1, w[1].0.offset, "{ch}: offsets not consecutive");
        }
    }
}

/// Publishes `{"i":N}` on every channel, N = 0, 1, …, every `every`, until finished.
pub(crate) struct Publisher {
    stop: Arc<AtomicBool>,
    /// Rounds published, and the `(channel, i)` whose publish failed.
    thread: thread::JoinHandle<(u64, Vec<(String, u64)>)>,
}

impl Publisher {
    pub(crate) fn start<B: Backend>(hub: &B::Handle, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (hub, flag) = (hub.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut i = 0;
            let mut failed = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                for ch in CHANNELS {
                    if B::try_publish(&hub, ch, &format!(r#"{{"i":{i}}}"#)).is_err() {
                        failed.push(((*ch).to_owned(), i));
                    }
                }
                i += 1;
                thread::sleep(every);
            }
            (i, failed)
        });
        Self { stop, thread }
    }

    /// Stops publishing; returns how many rounds were published (every one succeeded).
    pub(crate) fn finish(self) -> u64 {
        let (rounds, failed) = self.finish_with_failures();
        assert!(failed.is_empty(), "publishes failed: {failed:?}");
        rounds
    }

    /// Stops publishing; returns the rounds and the publishes that failed.
    pub(crate) fn finish_with_failures(self) -> (u64, Vec<(String, u64)>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

pub(crate) fn hub_config() -> HubConfig {
    HubConfig { presence_grace: Duration::from_millis(800), ..HubConfig::default() }
}

/// Waits until `user` is in the presence list of every channel of `chans`.
pub(crate) fn joined<B: Backend>(hub: &B::Handle, chans: &[&str], user: &str) {
    let ok = settle(|| chans.iter().all(|ch| B::presence(hub, ch).iter().any(|n| n == user)));
    assert!(ok, "{user} never joined {chans:?}");
}

/// A hub server of one adapter on a loopback port: its handle, its address.
pub(crate) struct Instance<B: Backend> {
    pub(crate) server: Option<B::Server>,
    /// The server's handle: the hub operations.
    pub(crate) hub: B::Handle,
    pub(crate) addr: std::net::SocketAddr,
}

impl<B: Backend> Instance<B> {
    /// Serves `spec` on `addr` (`127.0.0.1:0`, or the address of a stopped instance).
    pub(crate) fn start(spec: &Spec, addr: &str) -> Self {
        let server = B::serve(addr, spec);
        let hub = B::handle(&server);
        let addr = B::addr(&hub);
        Self { server: Some(server), hub, addr }
    }

    /// Graceful shutdown (1001 to every WebSocket); the port is free afterwards.
    pub(crate) fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            B::stop(s);
        }
    }
}

impl<B: Backend> Drop for Instance<B> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        }
    }
}

/// A hub server behind a [`Front`] on a loopback port: the sessions connect to the
/// front's address, which outlives the server behind it.
pub(crate) struct Site<B: Backend> {
    pub(crate) spec: Spec,
    pub(crate) gates: std::sync::Arc<super::Gates>,
    pub(crate) front: Front,
    pub(crate) inst: Instance<B>,
    /// The running server's handle (the hub operations).
    pub(crate) hub: B::Handle,
    /// The address clients use (the front's).
    pub(crate) addr: std::net::SocketAddr,
}

impl<B: Backend> Site<B> {
    pub(crate) fn start(cfg: HubConfig) -> Self {
        Self::serving(Spec::new(cfg))
    }

    /// Serves `spec` on a new loopback port, behind a front.
    pub(crate) fn serving(spec: Spec) -> Self {
        Self::around(Instance::start(&spec, "127.0.0.1:0"), spec)
    }

    /// Puts a front before a running instance.
    pub(crate) fn around(inst: Instance<B>, spec: Spec) -> Self {
        let front = Front::start(inst.addr);
        let (hub, addr) = (inst.hub.clone(), front.addr());
        Self { gates: spec.gates.clone(), spec, front, inst, hub, addr }
    }

    /// The clients lose the server: no connect succeeds, every connection is cut. The
    /// server and its hub (with its log) live on and keep taking publishes.
    pub(crate) fn cut(&mut self) {
        self.front.cut();
    }

    /// The clients reach the server again, on the same address.
    pub(crate) fn resume(&mut self) {
        self.front.resume();
    }

    /// The server stops for good (graceful shutdown: 1001 to every WebSocket).
    pub(crate) fn stop(&mut self) {
        self.inst.stop();
    }

    /// The server restarts on its port with a new hub (`cfg`): its log is gone, a new
    /// epoch starts.
    pub(crate) fn restart_with_new_hub(&mut self, cfg: HubConfig) {
        self.inst.stop();
        self.spec.hub = cfg;
        self.inst = Instance::start(&self.spec, &self.inst.addr.to_string());
        self.hub = self.inst.hub.clone();
    }

    /// Another instance takes over this site's address: this one stops (gracefully), new
    /// connections go to `to`.
    pub(crate) fn move_to(&mut self, to: Instance<B>) {
        self.inst.stop();
        self.front.retarget(to.addr);
        self.hub = to.hub.clone();
        self.inst = to;
    }

    /// A session of `user` (or anonymous) for this site, with `tune` applied.
    pub(crate) fn session(
        &self,
        user: Option<&str>,
        tune: impl FnOnce(&mut SessionConfig),
    ) -> B::Client {
        let token = user.map(|u| format!("user:{u}"));
        let mut cfg = session_config(self.addr.port(), token.as_deref());
        tune(&mut cfg);
        B::session(cfg)
    }

    /// Ann's session, subscribed to [`CHANNELS`] (and joined there).
    pub(crate) fn ann_on_channels(&self, tune: impl FnOnce(&mut SessionConfig)) -> B::Client {
        let c = self.session(Some("ann"), tune);
        for ch in CHANNELS {
            c.subscribe(ch);
        }
        joined::<B>(&self.hub, CHANNELS, "ann");
        c
    }
}

/// Publishes `{"i":N}` for each N of `seqs` on every channel of [`CHANNELS`].
pub(crate) fn publish_rounds<B: Backend>(hub: &B::Handle, seqs: std::ops::Range<u64>) {
    for i in seqs {
        for ch in CHANNELS {
            B::publish(hub, ch, &format!(r#"{{"i":{i}}}"#));
        }
    }
}
