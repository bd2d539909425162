//! [`SocketTable`] and [`ClientDriver`] on a scripted machine, in virtual time.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use bytes::Bytes;

use super::*;
use crate::time::{Duration, test_epoch};

/// A machine that does what the test queued, and logs its inputs.
#[derive(Default)]
struct Script {
    actions: VecDeque<SocketAction>,
    transmits: VecDeque<(SockId, Bytes)>,
    events: VecDeque<u32>,
    log: Vec<String>,
    deadline: Option<Instant>,
    closed: bool,
    /// Its `wants_read`.
    hungry: bool,
}

impl Script {
    fn new() -> Self {
        Self { hungry: true, ..Self::default() }
    }

    fn connect(&mut self, sock: u64) {
        let (host, port) = ("example.org".to_owned(), 80);
        self.actions.push_back(SocketAction::Connect { sock: SockId(sock), host, port });
    }

    fn send(&mut self, sock: u64, data: &'static [u8]) {
        self.transmits.push_back((SockId(sock), Bytes::from_static(data)));
    }
}

impl Outbound for Script {
    fn handle_connected(&mut self, _: Instant, sock: SockId) {
        self.log.push(format!("connected {}", sock.0));
    }
    fn handle_read(&mut self, _: Instant, sock: SockId, data: &[u8]) {
        self.log.push(format!("read {} {}", sock.0, data.len()));
    }
    fn handle_eof(&mut self, _: Instant, sock: SockId) {
        self.log.push(format!("eof {}", sock.0));
    }
    fn handle_error(&mut self, _: Instant, sock: SockId) {
        self.log.push(format!("error {}", sock.0));
    }
    fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            self.log.push("timeout".into());
            self.events.push_back(0);
        }
    }
    fn poll_action(&mut self) -> Option<SocketAction> {
        self.actions.pop_front()
    }
    fn poll_transmit(&mut self) -> Option<(SockId, Bytes)> {
        self.transmits.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }
}

impl OutboundClient for Script {
    type Event = u32;
    fn poll_event(&mut self) -> Option<u32> {
        self.events.pop_front()
    }
    /// Closes socket 1, its only one in these tests.
    fn close(&mut self, _: Instant) {
        if !std::mem::replace(&mut self.closed, true) {
            self.actions.push_back(SocketAction::Close { sock: SockId(1) });
        }
    }
    fn is_closed(&self) -> bool {
        self.closed
    }
    fn wants_read(&self) -> bool {
        self.hungry
    }
}

/// The adapter's side: the pumps it started and how often each was rung.
#[derive(Default)]
struct Pumps {
    dialed: RefCell<Vec<(SockId, String, u16)>>,
    rings: RefCell<BTreeMap<SockId, Rc<Cell<u32>>>>,
    /// `dial` fails.
    broken: bool,
}

/// The wake-up of one pump: its name and a count of rings.
#[derive(Default)]
struct Ring(Rc<Cell<u32>>);

impl Dialer for Pumps {
    type Wake = Ring;
    fn dial(&self, sock: SockId, host: String, port: u16, wake: &Ring) -> bool {
        self.dialed.borrow_mut().push((sock, host, port));
        self.rings.borrow_mut().insert(sock, wake.0.clone());
        !self.broken
    }
    fn wake(&self, wake: &Ring) {
        wake.0.set(wake.0.get() + 1);
    }
}

impl Pumps {
    fn rings(&self, sock: u64) -> u32 {
        self.rings.borrow().get(&SockId(sock)).map_or(0, |r| r.get())
    }
}

/// A table whose machine opened sockets 1 and 2.
fn two_sockets() -> (Script, Pumps, SocketTable<Ring>) {
    let (mut m, pumps, mut t) = (Script::new(), Pumps::default(), SocketTable::default());
    m.connect(1);
    m.connect(2);
    t.drain(&mut m, test_epoch(), &pumps);
    (m, pumps, t)
}

/// Connect opens the pump; transmits are queued per socket and ring it; a take hands them
/// over and a remove forgets the socket.
#[test]
fn a_table_queues_transmits_per_socket_and_rings_their_pumps() {
    let now = test_epoch();
    let (mut m, pumps, mut t) = two_sockets();
    m.send(1, b"hello");
    m.send(2, b"hi");
    m.send(9, b"nobody");
    m.send(1, b"again");
    t.drain(&mut m, now, &pumps);
    assert_eq!(pumps.dialed.borrow()[0], (SockId(1), "example.org".into(), 80));
    assert_eq!((t.len(), t.queued()), (2, 12));
    assert_eq!((pumps.rings(1), pumps.rings(2)), (1, 1));
    assert!(t.is_open(SockId(1)) && !t.is_open(SockId(9)));
    let fed = |t: &SocketTable<Ring>, m: &mut Script, sock| {
        t.feed(m, now, SockId(sock), Script::handle_eof)
    };
    assert!(fed(&t, &mut m, 1) && !fed(&t, &mut m, 9));
    assert_eq!(m.log, ["eof 1"]);

    let mut out = VecDeque::new();
    let turn = t.take(SockId(1), &mut out).unwrap();
    assert_eq!(turn, Turn { read: true, closing: false });
    assert_eq!(out, [Bytes::from_static(b"hello"), Bytes::from_static(b"again")]);
    assert_eq!(t.queued(), 2);
    // The pump still holds its batch: the next bytes wait here.
    m.send(1, b"more");
    t.drain(&mut m, now, &pumps);
    t.take(SockId(1), &mut out).unwrap();
    assert_eq!((out.len(), t.queued()), (2, 6));
    assert!(t.remove(SockId(2)) && !t.remove(SockId(2)));
    assert_eq!((t.len(), t.queued()), (1, 4));
    assert_eq!(t.take(SockId(2), &mut out), None);
}

/// Past the bound the machine keeps its transmits; after a take, the next drain pulls the
/// rest.
#[test]
fn a_table_stops_pulling_at_its_bound_until_a_take_makes_room() {
    let now = test_epoch();
    let (mut m, pumps) = (Script::new(), Pumps::default());
    let mut t = SocketTable::<Ring>::new(8);
    m.connect(1);
    t.drain(&mut m, now, &pumps);
    m.send(1, b"12345");
    m.send(1, b"6789");
    m.send(1, b"left");
    t.drain(&mut m, now, &pumps);
    assert_eq!((t.queued(), m.transmits.len()), (9, 1));
    let mut out = VecDeque::new();
    t.take(SockId(1), &mut out).unwrap();
    assert_eq!(t.queued(), 0);
    t.drain(&mut m, now, &pumps);
    assert!(m.transmits.is_empty());
    out.clear();
    t.take(SockId(1), &mut out).unwrap();
    assert_eq!(out, [Bytes::from_static(b"left")]);
}

/// A closed socket takes no more input, is rung, and stays until its pump removes it; an
/// error is reported only for a socket the machine had not closed.
#[test]
fn a_closed_socket_drains_its_bytes_and_a_failure_is_reported_once() {
    let now = test_epoch();
    let (mut m, pumps, mut t) = two_sockets();
    m.send(1, b"bye");
    m.actions.push_back(SocketAction::Close { sock: SockId(1) });
    t.drain(&mut m, now, &pumps);
    assert!(!t.is_open(SockId(1)) && pumps.rings(1) == 1);
    let mut out = VecDeque::new();
    let turn = t.take(SockId(1), &mut out).unwrap();
    assert_eq!((turn.read, turn.closing, out.len()), (false, true, 1));
    t.fail(&mut m, now, SockId(1));
    t.fail(&mut m, now, SockId(2));
    t.fail(&mut m, now, SockId(2));
    assert_eq!(m.log, ["error 2"]);
    assert!(t.is_empty());
}

/// A pump that cannot start is an error for the machine, which may ask again at once.
#[test]
fn a_dial_that_fails_is_reported_within_the_drain() {
    let now = test_epoch();
    let mut m = Script::new();
    let pumps = Pumps { broken: true, ..Pumps::default() };
    let mut t = SocketTable::<Ring>::default();
    m.connect(1);
    t.drain(&mut m, now, &pumps);
    assert_eq!(m.log, ["error 1"]);
    assert!(t.is_empty());
}

/// Without room no socket may be read; room back rings every pump; closing all marks every
/// socket closing.
#[test]
fn the_read_gate_and_close_all_ring_every_pump() {
    let now = test_epoch();
    let (mut m, pumps, mut t) = two_sockets();
    t.set_room(false);
    assert!(!t.turn(SockId(1)).unwrap().read);
    t.set_room(true);
    t.drain(&mut m, now, &pumps);
    assert!(t.turn(SockId(2)).unwrap().read);
    assert_eq!((pumps.rings(1), pumps.rings(2)), (1, 1));
    t.close_all();
    t.drain(&mut m, now, &pumps);
    assert_eq!((pumps.rings(1), pumps.rings(2)), (2, 2));
    assert!(t.turn(SockId(1)).unwrap().closing && !t.is_open(SockId(2)));
}

/// A client driver whose machine will open `socks`, with a queue of `max_events`.
fn client(socks: &[u64], max_events: usize) -> (ClientDriver<Script, Ring>, Pumps) {
    let mut m = Script::new();
    socks.iter().for_each(|&s| m.connect(s));
    (ClientDriver::new(m, max_events), Pumps::default())
}

/// A client's queue full closes the read gate; a pop reopens it; its timer fires the
/// deadline and ends once the machine is closed and its socket gone.
#[test]
fn a_client_driver_gates_reads_fires_its_deadline_and_ends() {
    let now = test_epoch();
    let (mut d, pumps) = client(&[1], 2);
    d.machine_mut().events.extend([1, 2]);
    d.machine_mut().deadline = Some(now + Duration::from_secs(1));
    assert!(d.step(now, &pumps), "a new deadline for the timer");
    assert!(!d.table().turn(SockId(1)).unwrap().read);
    assert_eq!(d.tick(now, &pumps), Some(Some(now + Duration::from_secs(1))));
    assert!(!d.step(now, &pumps), "nothing new for the timer");
    assert_eq!(d.pop(), Some(1));
    d.step(now, &pumps);
    assert!(d.table().turn(SockId(1)).unwrap().read);
    assert_eq!(pumps.rings(1), 1);

    let later = now + Duration::from_secs(1);
    assert_eq!(d.tick(later, &pumps), Some(None));
    assert_eq!(d.machine().log, ["timeout"]);
    d.machine_mut().close(later);
    d.step(later, &pumps);
    assert_eq!(d.tick(later, &pumps), Some(None), "its socket is still closing");
    assert!(d.parts_mut().1.remove(SockId(1)));
    assert_eq!(d.tick(later, &pumps), None);
    assert!(d.is_done() && d.is_finished());
    assert_eq!(d.pop(), Some(2), "queued events are still handed out");
}

/// Abandoned, a client closes its machine and every socket at once, and ends.
#[test]
fn an_abandoned_client_driver_closes_every_socket() {
    let now = test_epoch();
    let (mut d, pumps) = client(&[1, 2], 4);
    d.step(now, &pumps);
    d.abandon(now, &pumps);
    let t = d.parts_mut().1;
    assert!(t.turn(SockId(1)).unwrap().closing && t.turn(SockId(2)).unwrap().closing);
    // Socket 1 was rung for the machine's close, then for the owner's.
    assert_eq!((pumps.rings(1), pumps.rings(2)), (2, 1));
    assert!(d.is_done() && d.machine().is_closed());
}
