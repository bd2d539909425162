//! The outbound-socket driver: the TCP connections an [`Outbound`] machine asks for (a
//! [`Session`](crate::Session)'s, an [`SseConnection`](crate::sse::SseConnection)'s, the
//! server's Redis bus), a reader and a writer thread per socket. [`Client`] owns an
//! application's [`OutboundClient`].

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs as _};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidewire::socket::{Outbound, OutboundClient, QueuedClient, SockId, SocketAction};

use crate::conn::{lock, wait_until};

/// Bytes queued for the writers of one machine before [`drain`] stops pulling.
const MAX_QUEUED: usize = 1 << 20;

/// How the driver opens, reads and writes its sockets.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dial {
    /// The longest a TCP connect may take, per resolved address.
    pub(crate) connect_timeout: Duration,
    /// A write that makes no progress for this long fails the socket.
    pub(crate) write_timeout: Duration,
    pub(crate) read_chunk: usize,
}

/// The owner of an [`Outbound`] machine, as the driver sees it.
pub(crate) trait Host: Send + Sync + Sized + 'static {
    type Machine: Outbound;
    fn sockets(&self) -> &Sockets<Self>;
    /// Runs `f` on the machine under the owner's lock, then [`drain`]s (and its own outputs).
    fn with<T>(&self, f: impl FnOnce(&mut Self::Machine, Instant) -> T) -> T;
    /// Waits while the owner takes no more socket input; `false` once it is gone.
    fn admit(&self) -> bool {
        true
    }
}

/// The open sockets of one machine: the senders of their writers.
pub(crate) struct Sockets<H> {
    owner: Weak<H>,
    dial: Dial,
    writers: Mutex<HashMap<SockId, Sender<Bytes>>>,
    queued: AtomicUsize,
    /// [`drain`] left transmits in the machine because of [`MAX_QUEUED`].
    starved: AtomicBool,
}

impl<H: Host> Sockets<H> {
    /// The table of `owner` (build the owner with `Arc::new_cyclic`).
    pub(crate) fn new(owner: Weak<H>, dial: Dial) -> Self {
        let writers = Mutex::default();
        Self { owner, dial, writers, queued: AtomicUsize::new(0), starved: AtomicBool::new(false) }
    }

    /// Drops every writer: each writes what it has, then shuts its socket down.
    pub(crate) fn close_all(&self) {
        lock(&self.writers).clear();
    }
}

/// Moves the machine's bytes to the writers and runs its actions; after every mutation.
pub(crate) fn drain<H: Host>(host: &H, m: &mut H::Machine, now: Instant) {
    let table = host.sockets();
    let mut progress = true;
    while progress {
        progress = false;
        while table.queued.load(Ordering::Acquire) < MAX_QUEUED {
            let Some((sock, bytes)) = m.poll_transmit() else { break };
            progress = true;
            if let Some(w) = lock(&table.writers).get(&sock) {
                table.queued.fetch_add(bytes.len(), Ordering::AcqRel);
                let _ = w.send(bytes);
            }
        }
        let full = table.queued.load(Ordering::Acquire) >= MAX_QUEUED;
        table.starved.store(full, Ordering::Release);
        while let Some(action) = m.poll_action() {
            progress = true;
            match action {
                SocketAction::Connect { sock, host: name, port } => {
                    let (tx, rx) = channel();
                    lock(&table.writers).insert(sock, tx);
                    let owner = table.owner.clone();
                    let spawned = thread::Builder::new()
                        .name("tidewire-outbound".into())
                        .spawn(move || run_socket(&owner, sock, &name, port, rx));
                    if spawned.is_err() {
                        lock(&table.writers).remove(&sock);
                        m.handle_error(now, sock);
                    }
                }
                SocketAction::Close { sock } => drop(lock(&table.writers).remove(&sock)),
                _ => {}
            }
        }
    }
}

/// Feeds an input for `sock` to the machine; `false` if the machine closed it or is gone.
fn feed<H: Host>(
    owner: &Weak<H>,
    sock: SockId,
    f: impl FnOnce(&mut H::Machine, Instant, SockId),
) -> bool {
    let Some(host) = owner.upgrade() else { return false };
    host.with(|m, now| {
        let open = lock(&host.sockets().writers).contains_key(&sock);
        if open {
            f(m, now, sock);
        }
        open
    })
}

/// Fails `sock`: forgets its writer, then reports the error unless the machine closed it.
fn fail<H: Host>(owner: &Weak<H>, sock: SockId) {
    let Some(host) = owner.upgrade() else { return };
    host.with(|m, now| {
        if lock(&host.sockets().writers).remove(&sock).is_some() {
            m.handle_error(now, sock);
        }
    });
}

/// One socket: connect, then read on this thread while a writer thread writes.
fn run_socket<H: Host>(owner: &Weak<H>, sock: SockId, name: &str, port: u16, rx: Receiver<Bytes>) {
    let Some(dial) = owner.upgrade().map(|h| h.sockets().dial) else { return };
    let connect = |a: SocketAddr| TcpStream::connect_timeout(&a, dial.connect_timeout).ok();
    let stream = (name, port).to_socket_addrs().ok().and_then(|mut a| a.find_map(connect));
    let Some(stream) = stream else { return fail(owner, sock) };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(dial.write_timeout.max(Duration::from_millis(1))));
    if !feed(owner, sock, Outbound::handle_connected) {
        return;
    }
    thread::scope(|scope| {
        scope.spawn(|| write_loop(owner, sock, &stream, rx));
        let mut buf = vec![0u8; dial.read_chunk.max(512)];
        while owner.upgrade().is_some_and(|h| h.admit()) {
            match (&stream).read(&mut buf) {
                Ok(0) => {
                    feed(owner, sock, Outbound::handle_eof);
                    break;
                }
                Ok(n) => {
                    if !feed(owner, sock, |m, now, sock| m.handle_read(now, sock, &buf[..n])) {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    fail(owner, sock);
                    break;
                }
            }
        }
    });
}

/// Writes what [`drain`] queued until the machine drops the sender or a write fails.
#[allow(clippy::needless_pass_by_value)] // moved to the writer thread: not `Sync`
fn write_loop<H: Host>(owner: &Weak<H>, sock: SockId, stream: &TcpStream, rx: Receiver<Bytes>) {
    while let Ok(bytes) = rx.recv() {
        let written = (&*stream).write_all(&bytes);
        let Some(host) = owner.upgrade() else { break };
        let table = host.sockets();
        table.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
        if written.is_err() {
            fail(owner, sock);
            break;
        }
        if table.starved.load(Ordering::Acquire) {
            host.with(|_, _| {});
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    if let Some(host) = owner.upgrade() {
        let left: usize = rx.try_iter().map(|b| b.len()).sum();
        host.sockets().queued.fetch_sub(left, Ordering::AcqRel);
    }
}

/// An [`OutboundClient`] whose events may move between threads.
pub(crate) trait ClientMachine: OutboundClient<Event: Send> + Send + 'static {}
impl<M: OutboundClient<Event: Send> + Send + 'static> ClientMachine for M {}

/// An application's [`OutboundClient`] with its event queue (while full, the sockets are not
/// read), its deadline fired by a timer thread, closed on drop.
pub(crate) struct Client<M: ClientMachine> {
    shared: Arc<ClientShared<M>>,
    timer: Option<JoinHandle<()>>,
}

/// What the sockets and the timer thread share with the application.
pub(crate) struct ClientShared<M: ClientMachine> {
    state: Mutex<ClientState<M>>,
    /// Anything changed: an event, room in the queue, a deadline, the end.
    changed: Condvar,
    socks: Sockets<Self>,
}

struct ClientState<M: ClientMachine> {
    client: QueuedClient<M>,
    /// The timer thread ended: no more events.
    done: bool,
    /// The application dropped its end.
    stop: bool,
}

impl<M: ClientMachine> ClientShared<M> {
    /// After every mutation, under the lock: sockets, then events while there is room.
    fn after(&self, st: &mut ClientState<M>, now: Instant) {
        drain(self, st.client.machine_mut(), now);
        st.client.pull(now);
        self.changed.notify_all();
    }
}

impl<M: ClientMachine> Host for ClientShared<M> {
    type Machine = M;

    fn sockets(&self) -> &Sockets<Self> {
        &self.socks
    }

    fn with<T>(&self, f: impl FnOnce(&mut M, Instant) -> T) -> T {
        let mut st = lock(&self.state);
        let now = Instant::now();
        let out = f(st.client.machine_mut(), now);
        self.after(&mut st, now);
        out
    }

    fn admit(&self) -> bool {
        let mut st = lock(&self.state);
        while !st.client.wants_read() && !st.client.machine().is_closed() && !st.stop {
            st = wait_until(&self.changed, st, None);
        }
        !st.done && !st.stop
    }
}

impl<M: ClientMachine> Client<M> {
    /// Drives `machine` (its first actions at once), its timer on a thread named `name`.
    pub(crate) fn start(machine: M, dial: Dial, max_events: usize, name: &str) -> io::Result<Self> {
        let client = QueuedClient::new(machine, max_events);
        let shared = Arc::new_cyclic(|me| ClientShared {
            state: Mutex::new(ClientState { client, done: false, stop: false }),
            changed: Condvar::new(),
            socks: Sockets::new(me.clone(), dial),
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
        f(lock(&self.shared.state).client.machine())
    }

    /// Waits while `pending` holds of the machine.
    pub(crate) fn wait_while(&self, pending: impl Fn(&M) -> bool) {
        let mut st = lock(&self.shared.state);
        while pending(st.client.machine()) && !st.done {
            st = wait_until(&self.shared.changed, st, None);
        }
    }

    /// The next event, waiting until `until`; `None` then, or once the machine is finished.
    pub(crate) fn next_event(&self, until: Option<Instant>) -> Option<M::Event> {
        let shared = &*self.shared;
        let mut st = lock(&shared.state);
        loop {
            if let Some(ev) = st.client.pop() {
                // Room: the machine's next events, and its sockets may be read again.
                shared.after(&mut st, Instant::now());
                return Some(ev);
            }
            if st.done || st.client.is_finished() || until.is_some_and(|t| Instant::now() >= t) {
                return None;
            }
            st = wait_until(&shared.changed, st, until);
        }
    }
}

impl<M: ClientMachine> Drop for Client<M> {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
    }
}

/// The timer thread: fires the machine's deadline until it is closed without sockets.
fn run_timer<M: ClientMachine>(shared: &ClientShared<M>) {
    let mut st = lock(&shared.state);
    loop {
        let now = Instant::now();
        if st.stop {
            st.client.machine_mut().close(now);
            shared.after(&mut st, now);
            break;
        }
        if st.client.poll_timeout().is_some_and(|d| d <= now) {
            st.client.machine_mut().handle_timeout(now);
            shared.after(&mut st, now);
        }
        if st.client.machine().is_closed() && lock(&shared.socks.writers).is_empty() {
            break;
        }
        match st.client.poll_timeout() {
            Some(d) if d <= now => {}
            until => st = wait_until(&shared.changed, st, until),
        }
    }
    st.done = true;
    drop(st);
    shared.socks.close_all();
    shared.changed.notify_all();
}
