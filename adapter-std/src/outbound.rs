//! The one outbound-socket driver: the TCP connections an [`Outbound`] machine asks for
//! (the [`Session`](crate::Session)'s, the [`SseConnection`](crate::sse::SseConnection)'s,
//! the server's Redis bus), whoever owns the machine.
//! The owner implements [`Host`] and calls [`drain`] under its lock after every mutation.
//! Per socket, a **reader thread** connects and feeds what it reads (while [`Host::admit`]
//! lets it), and a **writer thread** writes what [`drain`] queued; `SocketAction::Close`
//! drops the writer's sender, which writes what it has and shuts the socket down. Queued
//! bytes are bounded by [`MAX_QUEUED`]: past it [`drain`] stops pulling, and a writer that
//! brings the total back under it drains the machine again.
//!
//! [`Client`] is the one owner of an application's [`OutboundClient`] (a `ClientSession`,
//! an `EventSource`): the machine behind one mutex with its events queued for the
//! application (at most `max_events`: while full, or while the machine refuses input, the
//! sockets are not read), its deadline fired by a timer thread, closed on drop.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, TcpStream, ToSocketAddrs as _};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidewire::socket::{Outbound, OutboundClient, QueuedClient, SockId, SocketAction};

use crate::conn::{lock, wait_until};

/// Bytes queued for the writers of one machine before [`drain`] stops pulling.
const MAX_QUEUED: usize = 1 << 20;

/// How the driver opens, reads and writes its sockets.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dial {
    /// The longest a TCP connection attempt may take, over all resolved addresses.
    pub(crate) connect_timeout: Duration,
    /// A write that makes no progress for this long fails the socket.
    pub(crate) write_timeout: Duration,
    /// Bytes read at a time.
    pub(crate) read_chunk: usize,
}

/// The owner of an [`Outbound`] machine, as the driver sees it.
pub(crate) trait Host: Send + Sync + Sized + 'static {
    /// The machine.
    type Machine: Outbound;
    /// The driver's sockets, kept beside the machine.
    fn sockets(&self) -> &Sockets<Self>;
    /// Runs `f` on the machine under the owner's lock, then drains what it set in motion
    /// ([`drain`] and the owner's own outputs).
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
    writers: Mutex<HashMap<SockId, mpsc::Sender<Bytes>>>,
    queued: AtomicUsize,
    /// [`drain`] left transmits in the machine because of [`MAX_QUEUED`].
    starved: AtomicBool,
}

impl<H: Host> Sockets<H> {
    /// The table of `owner` (build the owner with `Arc::new_cyclic`).
    pub(crate) fn new(owner: Weak<H>, dial: Dial) -> Self {
        Self {
            owner,
            dial,
            writers: Mutex::new(HashMap::new()),
            queued: AtomicUsize::new(0),
            starved: AtomicBool::new(false),
        }
    }

    /// Whether no socket is open.
    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.writers).is_empty()
    }

    /// Whether `sock` is open (not closed by the machine, not failed).
    fn is_open(&self, sock: SockId) -> bool {
        lock(&self.writers).contains_key(&sock)
    }

    /// Drops every writer: each writes what it has, then shuts its socket down.
    pub(crate) fn close_all(&self) {
        lock(&self.writers).clear();
    }
}

/// Step 3 of the run loop for the machine's sockets: its bytes to the writers, its
/// actions carried out, until neither has more. Call under the owner's lock after every
/// mutation.
pub(crate) fn drain<H: Host>(host: &H, m: &mut H::Machine, now: Instant) {
    let table = host.sockets();
    loop {
        let mut progress = false;
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
                    let (tx, rx) = mpsc::channel();
                    lock(&table.writers).insert(sock, tx);
                    let owner = table.owner.clone();
                    let spawned = std::thread::Builder::new()
                        .name("tidewire-outbound".into())
                        .spawn(move || run_socket(&owner, sock, &name, port, rx));
                    if spawned.is_err() {
                        lock(&table.writers).remove(&sock);
                        m.handle_error(now, sock);
                    }
                }
                SocketAction::Close { sock } => {
                    lock(&table.writers).remove(&sock);
                }
                _ => {}
            }
        }
        if !progress {
            return;
        }
    }
}

/// Feeds one input for `sock` to the machine, unless the machine closed it. `false` when
/// the owner is gone or the socket closed.
fn feed<H: Host>(
    owner: &Weak<H>,
    sock: SockId,
    f: impl FnOnce(&mut H::Machine, Instant, SockId),
) -> bool {
    let Some(host) = owner.upgrade() else { return false };
    host.with(|m, now| {
        let open = host.sockets().is_open(sock);
        if open {
            f(m, now, sock);
        }
        open
    })
}

/// Ends `sock` for the machine: forgets its writer, then reports `f` (an end or error).
fn end<H: Host>(owner: &Weak<H>, sock: SockId, f: impl FnOnce(&mut H::Machine, Instant, SockId)) {
    let Some(host) = owner.upgrade() else { return };
    host.with(|m, now| {
        if lock(&host.sockets().writers).remove(&sock).is_some() {
            f(m, now, sock);
        }
    });
}

/// One socket: connect, then read on this thread while a writer thread writes.
fn run_socket<H: Host>(
    owner: &Weak<H>,
    sock: SockId,
    name: &str,
    port: u16,
    rx: mpsc::Receiver<Bytes>,
) {
    let Some(dial) = owner.upgrade().map(|h| h.sockets().dial) else { return };
    let stream = (name, port).to_socket_addrs().ok().and_then(|addrs| {
        addrs.into_iter().find_map(|a| TcpStream::connect_timeout(&a, dial.connect_timeout).ok())
    });
    let Some((stream, reader)) = stream.and_then(|s| s.try_clone().ok().map(|r| (s, r))) else {
        end(owner, sock, Outbound::handle_error);
        return;
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(dial.write_timeout.max(Duration::from_millis(1))));
    if !feed(owner, sock, Outbound::handle_connected) {
        return;
    }
    std::thread::scope(|scope| {
        let out = &stream;
        scope.spawn(move || write_loop(owner, sock, out, rx));
        let mut buf = vec![0u8; dial.read_chunk.max(512)];
        loop {
            if !owner.upgrade().is_some_and(|h| h.admit()) {
                break;
            }
            match (&reader).read(&mut buf) {
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
                    end(owner, sock, Outbound::handle_error);
                    break;
                }
            }
        }
    });
}

/// Writes what [`drain`] queued for `sock` until the machine closes it (its sender is
/// dropped) or a write fails; then shuts the socket down.
#[allow(clippy::needless_pass_by_value)] // moved to the writer thread: not `Sync`
fn write_loop<H: Host>(
    owner: &Weak<H>,
    sock: SockId,
    stream: &TcpStream,
    rx: mpsc::Receiver<Bytes>,
) {
    while let Ok(bytes) = rx.recv() {
        let written = (&*stream).write_all(&bytes);
        let Some(host) = owner.upgrade() else { break };
        let table = host.sockets();
        table.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
        if written.is_err() {
            end(owner, sock, Outbound::handle_error);
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

/// An application's [`OutboundClient`] machine, driven here: see the module docs.
/// `Session` and `SseConnection` are its typed fronts.
pub(crate) struct Client<M: ClientMachine> {
    shared: Arc<Owner<M>>,
    timer: Option<JoinHandle<()>>,
}

/// What the sockets and the timer thread share with the application.
pub(crate) struct Owner<M: ClientMachine> {
    core: Mutex<Core<M>>,
    /// Anything changed: an event, room in the queue, a deadline, the end.
    changed: Condvar,
    socks: Sockets<Self>,
}

struct Core<M: ClientMachine> {
    client: QueuedClient<M>,
    /// The timer thread ended: no more events.
    done: bool,
    /// The application dropped its end.
    stop: bool,
}

impl<M: ClientMachine> Owner<M> {
    fn core(&self) -> MutexGuard<'_, Core<M>> {
        lock(&self.core)
    }

    /// Step 3 of the run loop, under the lock: sockets, then events while there is room.
    fn after(&self, core: &mut Core<M>, now: Instant) {
        drain(self, core.client.machine_mut(), now);
        core.client.pull(now);
        self.changed.notify_all();
    }
}

impl<M: ClientMachine> Host for Owner<M> {
    type Machine = M;

    fn sockets(&self) -> &Sockets<Self> {
        &self.socks
    }

    fn with<T>(&self, f: impl FnOnce(&mut M, Instant) -> T) -> T {
        let mut core = self.core();
        let now = Instant::now();
        let out = f(core.client.machine_mut(), now);
        self.after(&mut core, now);
        out
    }

    fn admit(&self) -> bool {
        let mut core = self.core();
        while !core.client.wants_read() && !core.client.machine().is_closed() && !core.stop {
            core = wait_until(&self.changed, core, None);
        }
        !core.done && !core.stop
    }
}

impl<M: ClientMachine> Client<M> {
    /// Drives `machine` (its first actions at once), its timer on a thread named `name`.
    pub(crate) fn start(machine: M, dial: Dial, max_events: usize, name: &str) -> io::Result<Self> {
        let client = QueuedClient::new(machine, max_events);
        let shared = Arc::new_cyclic(|me| Owner {
            core: Mutex::new(Core { client, done: false, stop: false }),
            changed: Condvar::new(),
            socks: Sockets::new(me.clone(), dial),
        });
        shared.with(|_, _| ());
        let timer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new().name(name.into()).spawn(move || run_timer(&shared))?
        };
        Ok(Self { shared, timer: Some(timer) })
    }

    /// Runs a command on the machine, then its outputs.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut M, Instant) -> T) -> T {
        self.shared.with(f)
    }

    /// Reads the machine. Keep `f` short: the sockets wait for it.
    pub(crate) fn inspect<T>(&self, f: impl FnOnce(&M) -> T) -> T {
        f(self.shared.core().client.machine())
    }

    /// Waits while `pending` holds of the machine.
    pub(crate) fn wait_while(&self, pending: impl Fn(&M) -> bool) {
        let mut core = self.shared.core();
        while pending(core.client.machine()) && !core.done {
            core = wait_until(&self.shared.changed, core, None);
        }
    }

    /// The next event, waiting for it until `until` (then `None`). `None` once the machine
    /// is closed and its last event was handed out.
    pub(crate) fn next_event(&self, until: Option<Instant>) -> Option<M::Event> {
        let shared = &*self.shared;
        let mut core = shared.core();
        loop {
            if let Some(ev) = core.client.pop() {
                // Room: the machine's next events, and its sockets may be read again.
                shared.after(&mut core, Instant::now());
                return Some(ev);
            }
            if core.done || core.client.is_finished() || until.is_some_and(|t| Instant::now() >= t)
            {
                return None;
            }
            core = wait_until(&shared.changed, core, until);
        }
    }
}

impl<M: ClientMachine> Drop for Client<M> {
    fn drop(&mut self) {
        self.shared.core().stop = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
    }
}

/// The timer thread: fires the machine's deadline; after a close (or the application's
/// drop), ends once the machine closed its sockets.
fn run_timer<M: ClientMachine>(shared: &Owner<M>) {
    let mut core = shared.core();
    loop {
        let now = Instant::now();
        if core.stop {
            core.client.machine_mut().close(now);
            shared.after(&mut core, now);
            break;
        }
        if core.client.poll_timeout().is_some_and(|d| d <= now) {
            core.client.machine_mut().handle_timeout(now);
            shared.after(&mut core, now);
        }
        if core.client.machine().is_closed() && shared.socks.is_empty() {
            break;
        }
        match core.client.poll_timeout() {
            Some(d) if d <= now => {}
            until => core = wait_until(&shared.changed, core, until),
        }
    }
    core.done = true;
    drop(core);
    shared.socks.close_all();
    shared.changed.notify_all();
}
