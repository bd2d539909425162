//! The outbound-socket driver: the TCP connections an [`Outbound`] machine asks for (a
//! [`Session`](crate::Session)'s, an [`SseConnection`](crate::sse::SseConnection)'s, the
//! server's Redis bus), a reader and a writer thread per socket, on the core's
//! [`SocketTable`] kept under the owner's lock. [`Client`] owns an application's
//! [`OutboundClient`] on the core's [`ClientDriver`].

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs as _};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tidewire::socket::{ClientDriver, Dialer, Outbound, OutboundClient, SockId, SocketTable};

use crate::conn::{lock, wait_until};

/// How the driver opens, reads and writes its sockets.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dial {
    /// The longest a TCP connect may take, per resolved address.
    pub(crate) connect_timeout: Duration,
    /// A write that makes no progress for this long fails the socket.
    pub(crate) write_timeout: Duration,
    /// Most bytes of one read.
    pub(crate) read_chunk: usize,
}

/// One machine's sockets, kept under its owner's lock.
pub(crate) type Table = SocketTable<Arc<Bell>>;

/// The owner of an [`Outbound`] machine, as the driver sees it.
pub(crate) trait Host: Send + Sync + Sized + 'static {
    type Machine: Outbound;
    /// Runs `f` on the machine and its sockets under the owner's lock, then drains them
    /// (and the owner's own outputs).
    fn with_table<T>(&self, f: impl FnOnce(&mut Self::Machine, &mut Table, Instant) -> T) -> T;
    /// Runs `f` on the sockets alone under the owner's lock, to look: nothing changes.
    fn table<T>(&self, f: impl FnOnce(&Table) -> T) -> T;
    /// Runs `f` on the machine under the owner's lock, then drains.
    fn with<T>(&self, f: impl FnOnce(&mut Self::Machine, Instant) -> T) -> T {
        self.with_table(|m, _, now| f(m, now))
    }
}

/// The wake-up of one socket's two threads: a count of rings, so that the reader and the
/// writer each wait for a ring after what they last saw (a ring is never missed).
pub(crate) type Bell = (Mutex<u64>, Condvar);

/// Rings both threads of a socket.
fn ring((rings, cv): &Bell) {
    *lock(rings) += 1;
    cv.notify_all();
}

/// Runs `look` until it gives a value, waiting for a ring after each `None` (counted before
/// it looked).
fn wait_for<T>((rings, cv): &Bell, mut look: impl FnMut() -> Option<T>) -> T {
    loop {
        let seen = *lock(rings);
        if let Some(out) = look() {
            return out;
        }
        let mut now = lock(rings);
        while *now == seen {
            now = wait_until(cv, now, None);
        }
    }
}

/// How one machine's sockets are opened: a thread each, which holds the owner until the
/// socket is closed (by the machine, or by the owner's end with [`SocketTable::close_all`]).
/// Build the owner with `Arc::new_cyclic`.
pub(crate) struct Sockets<H> {
    pub(crate) owner: Weak<H>,
    pub(crate) dial: Dial,
}

impl<H: Host> Dialer for Sockets<H> {
    type Wake = Arc<Bell>;

    fn dial(&self, sock: SockId, host: String, port: u16, bell: &Arc<Bell>) -> bool {
        let Some(owner) = self.owner.upgrade() else { return false };
        let (dial, bell) = (self.dial, Arc::clone(bell));
        let run = move || run_socket(&*owner, dial, sock, (&host, port), &bell);
        thread::Builder::new().name("tidewire-outbound".into()).spawn(run).is_ok()
    }

    fn wake(&self, bell: &Arc<Bell>) {
        ring(bell);
    }
}

/// Feeds an input for `sock` to the machine; `false` if the machine closed it.
fn feed<H: Host>(host: &H, sock: SockId, f: impl FnOnce(&mut H::Machine, Instant, SockId)) -> bool {
    host.with_table(|m, t, now| t.feed(m, now, sock, f))
}

/// Fails `sock`: forgets it, reports the error unless the machine closed it, and rings its
/// other thread.
fn fail<H: Host>(host: &H, sock: SockId, bell: &Bell) {
    host.with_table(|m, t, now| t.fail(m, now, sock));
    ring(bell);
}

/// One socket: connect, then read on this thread while a writer thread writes.
fn run_socket<H: Host>(host: &H, dial: Dial, sock: SockId, to: (&str, u16), bell: &Bell) {
    let connect = |a: SocketAddr| TcpStream::connect_timeout(&a, dial.connect_timeout).ok();
    let stream = to.to_socket_addrs().ok().and_then(|mut a| a.find_map(connect));
    let Some(stream) = stream else { return fail(host, sock, bell) };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(dial.write_timeout.max(Duration::from_millis(1))));
    // Closed meanwhile: the writer shuts the socket down at once and the reader stops.
    feed(host, sock, Outbound::handle_connected);
    thread::scope(|scope| {
        scope.spawn(|| write_loop(host, sock, &stream, bell));
        let mut buf = vec![0u8; dial.read_chunk.max(512)];
        // While the machine keeps the socket open, and only while its owner takes input.
        let may_read = |t: &Table| match t.turn(sock) {
            Some(turn) if !turn.read && !turn.closing => None,
            turn => Some(turn.is_some_and(|turn| turn.read)),
        };
        while wait_for(bell, || host.table(may_read)) {
            match (&stream).read(&mut buf) {
                Ok(0) => {
                    feed(host, sock, Outbound::handle_eof);
                    return;
                }
                Ok(n) if !feed(host, sock, |m, now, sock| m.handle_read(now, sock, &buf[..n])) => {
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return fail(host, sock, bell),
            }
        }
    });
}

/// Writes what the table queues for `sock` until the machine closed it and all is written,
/// or a write fails; then shuts the socket down and forgets it.
fn write_loop<H: Host>(host: &H, sock: SockId, mut stream: &TcpStream, bell: &Bell) {
    let mut batch = VecDeque::new();
    let failed = loop {
        // Drained after each take: the bound on queued bytes may have held the machine's.
        let turn = wait_for(bell, || {
            host.with_table(|_, t, _| match t.take(sock, &mut batch) {
                Some(turn) if batch.is_empty() && !turn.closing => None,
                turn => Some(turn),
            })
        });
        // Gone, or closed with everything written.
        if turn.is_none() || batch.is_empty() {
            break false;
        }
        if batch.drain(..).any(|b| stream.write_all(&b).is_err()) {
            break true;
        }
    };
    let _ = stream.shutdown(Shutdown::Both);
    if failed {
        fail(host, sock, bell);
    } else {
        host.with_table(|_, t, _| t.remove(sock));
    }
}

/// An [`OutboundClient`] whose events may move between threads.
pub(crate) trait ClientMachine: OutboundClient<Event: Send> + Send + 'static {}
impl<M: OutboundClient<Event: Send> + Send + 'static> ClientMachine for M {}

/// An application's [`OutboundClient`] on the core's [`ClientDriver`] (its event queue, its
/// sockets, its end), its deadline fired by a timer thread, abandoned on drop.
pub(crate) struct Client<M: ClientMachine> {
    shared: Arc<ClientShared<M>>,
    timer: Option<JoinHandle<()>>,
}

/// What the sockets and the timer thread share with the application.
pub(crate) struct ClientShared<M: ClientMachine> {
    driver: Mutex<ClientDriver<M, Arc<Bell>>>,
    /// Anything changed: an event, room in the queue, a deadline, the end.
    changed: Condvar,
    socks: Sockets<Self>,
}

impl<M: ClientMachine> Host for ClientShared<M> {
    type Machine = M;

    fn with_table<T>(&self, f: impl FnOnce(&mut M, &mut Table, Instant) -> T) -> T {
        let mut d = lock(&self.driver);
        let now = Instant::now();
        let (m, t) = d.parts_mut();
        let out = f(m, t, now);
        // After every mutation: sockets, then events while there is room.
        d.step(now, &self.socks);
        self.changed.notify_all();
        out
    }

    fn table<T>(&self, f: impl FnOnce(&Table) -> T) -> T {
        f(lock(&self.driver).table())
    }
}

impl<M: ClientMachine> Client<M> {
    /// Drives `machine` (its first actions at once), its timer on a thread named `name`.
    pub(crate) fn start(machine: M, dial: Dial, max_events: usize, name: &str) -> io::Result<Self> {
        let shared = Arc::new_cyclic(|me| ClientShared {
            driver: Mutex::new(ClientDriver::new(machine, max_events)),
            changed: Condvar::new(),
            socks: Sockets { owner: me.clone(), dial },
        });
        shared.with(|_, _| ());
        let owner = Arc::clone(&shared);
        let timer = thread::Builder::new().name(name.into()).spawn(move || run_timer(&owner))?;
        Ok(Self { shared, timer: Some(timer) })
    }

    /// Runs a command on the machine, then its outputs.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut M, Instant) -> T) -> T {
        self.shared.with(f)
    }

    /// Reads the machine. Keep `f` short: the sockets wait for it.
    pub(crate) fn inspect<T>(&self, f: impl FnOnce(&M) -> T) -> T {
        f(lock(&self.shared.driver).machine())
    }

    /// Waits while `pending` holds of the machine.
    pub(crate) fn wait_while(&self, pending: impl Fn(&M) -> bool) {
        let mut d = lock(&self.shared.driver);
        while pending(d.machine()) && !d.is_done() {
            d = wait_until(&self.shared.changed, d, None);
        }
    }

    /// The next event, waiting until `until`; `None` then, or once the machine is finished.
    pub(crate) fn next_event(&self, until: Option<Instant>) -> Option<M::Event> {
        let shared = &*self.shared;
        let mut d = lock(&shared.driver);
        loop {
            if let Some(ev) = d.pop() {
                // Room: the machine's next events, and its sockets may be read again.
                d.step(Instant::now(), &shared.socks);
                shared.changed.notify_all();
                return Some(ev);
            }
            if d.is_finished() || until.is_some_and(|t| Instant::now() >= t) {
                return None;
            }
            d = wait_until(&shared.changed, d, until);
        }
    }
}

impl<M: ClientMachine> Drop for Client<M> {
    /// Closes the machine and its sockets at once (each writes what is queued for it).
    fn drop(&mut self) {
        lock(&self.shared.driver).abandon(Instant::now(), &self.shared.socks);
        self.shared.changed.notify_all();
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
    }
}

/// The timer thread: fires the machine's deadline until it is closed without sockets (or
/// abandoned). A deadline already past returns from the wait at once.
fn run_timer<M: ClientMachine>(shared: &ClientShared<M>) {
    let mut d = lock(&shared.driver);
    loop {
        let next = if d.is_done() { None } else { d.tick(Instant::now(), &shared.socks) };
        shared.changed.notify_all();
        let Some(until) = next else { return };
        d = wait_until(&shared.changed, d, until);
    }
}
