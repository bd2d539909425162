//! The outbound-socket driver: the TCP connections an [`Outbound`] machine asks for (a
//! [`Session`](crate::Session)'s, an [`SseConnection`](crate::sse::SseConnection)'s, the
//! server's Redis bus), a task per socket running [`socket_loop`]; the lock is never held
//! across an `.await`.
//! [`Client`] owns an application's [`OutboundClient`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::Shutdown;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use bytes::Bytes;
use event_listener::{Event as Notify, listener};
use smol::net::TcpStream;
use smol::{Async, Executor, future};
use tidewire::socket::{Outbound, OutboundClient, QueuedClient, SockId, SocketAction};
use tidewire::ws::app::Pass;

use crate::conn::DriverWake;
use crate::pump::{Target, WRITE_STALL, socket_loop};

/// Bytes queued for one machine's sockets before [`drain`] stops pulling.
const MAX_QUEUED: usize = 1 << 20;
/// Most bytes of one read (into the thread's read buffer).
const MAX_READ: usize = 16 << 10;

/// The owner of an [`Outbound`] machine, as the driver sees it.
pub(crate) trait SocketOwner: Send + Sync + Sized + 'static {
    type Machine: Outbound;
    /// Runs `f` on the machine and its sockets under the owner's lock, then [`drain`]s.
    fn with<T>(&self, f: impl FnOnce(&mut Self::Machine, &mut Sockets<Self>, Instant) -> T) -> T;
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static);
}

/// The sockets of one machine, kept under its owner's lock.
pub(crate) struct Sockets<H> {
    owner: Weak<H>,
    open: HashMap<SockId, OutSocket>,
    /// Bytes in every socket's `out`.
    queued: usize,
    /// The owner takes socket input (see [`set_room`](Self::set_room)).
    room: bool,
}

/// One outbound socket's side of the lock.
#[derive(Default)]
struct OutSocket {
    out: VecDeque<Bytes>,
    /// The machine closed it: write `out`, then shut down.
    closing: bool,
    /// Rings its task: bytes queued, the close, room for input.
    wake: Arc<DriverWake>,
}

impl<H: SocketOwner> Sockets<H> {
    /// The sockets of `owner` (build the owner with `Arc::new_cyclic`).
    pub(crate) fn new(owner: Weak<H>) -> Self {
        Self { owner, open: HashMap::new(), queued: 0, room: true }
    }

    /// Whether the owner takes socket input (default: always); without, the sockets are not
    /// read, and they are woken when it does again.
    fn set_room(&mut self, room: bool) {
        if room && !self.room {
            self.open.values().for_each(|s| s.wake.notify());
        }
        self.room = room;
    }
}

/// Moves the machine's bytes to the sockets' queues and runs its actions; after every mutation.
pub(crate) fn drain<H: SocketOwner>(host: &H, m: &mut H::Machine, socks: &mut Sockets<H>) {
    let mut progress = true;
    while progress {
        progress = false;
        while socks.queued < MAX_QUEUED {
            let Some((sock, bytes)) = m.poll_transmit() else { break };
            progress = true;
            if let Some(s) = socks.open.get_mut(&sock) {
                socks.queued += bytes.len();
                s.out.push_back(bytes);
                s.wake.notify();
            }
        }
        while let Some(action) = m.poll_action() {
            progress = true;
            match action {
                SocketAction::Connect { sock, host: name, port } => {
                    let s = OutSocket::default();
                    let wake = s.wake.clone();
                    socks.open.insert(sock, s);
                    host.spawn(run_socket(socks.owner.clone(), sock, name, port, wake));
                }
                SocketAction::Close { sock } => {
                    if let Some(s) = socks.open.get_mut(&sock) {
                        s.closing = true;
                        s.wake.notify();
                    }
                }
                _ => {}
            }
        }
    }
}

/// Feeds an input for `sock` to the machine; `false` if the machine closed it or is gone.
fn feed<H: SocketOwner>(
    owner: &Weak<H>,
    sock: SockId,
    f: impl FnOnce(&mut H::Machine, Instant, SockId),
) -> bool {
    let Some(host) = owner.upgrade() else { return false };
    host.with(|m, socks, now| {
        let open = socks.open.get(&sock).is_some_and(|s| !s.closing);
        if open {
            f(m, now, sock);
        }
        open
    })
}

/// Waits on `notify` until `ready` gives a value. The listener is registered before each
/// check, in the future itself (no allocation): no notification is missed.
pub(crate) async fn wait<T>(notify: &Notify, mut ready: impl FnMut() -> Option<T>) -> T {
    loop {
        listener!(notify => listener);
        if let Some(out) = ready() {
            return out;
        }
        listener.await;
    }
}

/// One socket: connects, then is pumped until the machine closes it or it fails.
async fn run_socket<H: SocketOwner>(
    owner: Weak<H>,
    sock: SockId,
    name: String,
    port: u16,
    wake: Arc<DriverWake>,
) {
    let connect = async { Some(TcpStream::connect((name.as_str(), port)).await) };
    // Feeding nothing tells whether the machine closed the socket meanwhile.
    let closed = async {
        while feed(&owner, sock, |_, _, _| {}) {
            future::poll_fn(|cx| wake.poll(cx)).await;
        }
        None
    };
    match future::or(connect, closed).await {
        Some(Ok(stream)) => {
            let stream = Arc::<Async<std::net::TcpStream>>::from(stream);
            let _ = stream.get_ref().set_nodelay(true);
            if feed(&owner, sock, Outbound::handle_connected) {
                let mut out = OutTarget { owner: &owner, sock, wake: &wake, lost: false };
                // A peer that stops reading cannot hold a closed socket's task forever.
                let _ = socket_loop(&stream, &mut out, MAX_READ, Some(WRITE_STALL)).await;
            }
            let _ = stream.get_ref().shutdown(Shutdown::Both);
        }
        Some(Err(_)) => {
            feed(&owner, sock, Outbound::handle_error);
        }
        None => {}
    }
    if let Some(host) = owner.upgrade() {
        host.with(|_, socks, _| {
            if let Some(s) = socks.open.remove(&sock) {
                socks.queued -= s.out.iter().map(Bytes::len).sum::<usize>();
            }
        });
    }
}

/// An outbound socket, pumped under its owner's lock.
struct OutTarget<'a, H> {
    owner: &'a Weak<H>,
    sock: SockId,
    wake: &'a DriverWake,
    /// A read or write failed: the end.
    lost: bool,
}

impl<H: SocketOwner> Target for OutTarget<'_, H> {
    fn pass(&mut self, _: Instant, wbuf: &mut VecDeque<Bytes>) -> Pass {
        let Some(host) = self.owner.upgrade().filter(|_| !self.lost) else { return Pass::Stop };
        host.with(|_, socks, _| {
            // A ring before this pass is handled by it; one after it (under the lock) rings again.
            self.wake.reset();
            let room = socks.room;
            let Some(s) = socks.open.get_mut(&self.sock) else { return Pass::Stop };
            if wbuf.is_empty() {
                socks.queued -= s.out.iter().map(Bytes::len).sum::<usize>();
                wbuf.append(&mut s.out);
            }
            Pass::Run { read: room && !s.closing, deadline: None, shutdown: s.closing }
        })
    }

    fn read(&mut self, data: &[u8]) -> bool {
        feed(self.owner, self.sock, |m, now, sock| m.handle_read(now, sock, data));
        false
    }

    fn eof(&mut self, error: bool) {
        if error {
            self.write_failed();
        } else {
            feed(self.owner, self.sock, Outbound::handle_eof);
        }
    }

    fn write_failed(&mut self) {
        self.lost = true;
        feed(self.owner, self.sock, Outbound::handle_error);
    }

    fn wake(&self) -> &DriverWake {
        self.wake
    }
}

/// An [`OutboundClient`] whose events and tasks may move between threads.
pub(crate) trait ClientMachine: OutboundClient<Event: Send> + Send + 'static {}
impl<M: OutboundClient<Event: Send> + Send + 'static> ClientMachine for M {}

/// An application's [`OutboundClient`] with its event queue (while full, the sockets are not
/// read), its deadline fired by a timer task, closed on drop.
pub(crate) struct Client<M: ClientMachine> {
    shared: Arc<ClientState<M>>,
}

/// What the socket tasks and the timer task share with the application.
pub(crate) struct ClientState<M: ClientMachine> {
    core: Mutex<Core<M>>,
    /// Something for the timer task: a new deadline, the end.
    wake: Notify,
    /// Something for the application: an event, the end.
    changed: Notify,
    executor: Option<Arc<Executor<'static>>>,
}

struct Core<M: ClientMachine> {
    client: QueuedClient<M>,
    socks: Sockets<ClientState<M>>,
    /// The deadline the timer task waits for.
    deadline: Option<Instant>,
    /// The timer task ended: no more events.
    done: bool,
}

impl<M: ClientMachine> Core<M> {
    /// The machine is closed and its sockets are gone.
    fn ended(&self) -> bool {
        self.client.machine().is_closed() && self.socks.open.is_empty()
    }
}

impl<M: ClientMachine> ClientState<M> {
    fn lock(&self) -> MutexGuard<'_, Core<M>> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// After every mutation, under the lock: sockets, then events while there is room.
    fn dispatch(&self, core: &mut Core<M>) {
        drain(self, core.client.machine_mut(), &mut core.socks);
        core.client.pull(Instant::now());
        let room = core.client.wants_read() || core.client.machine().is_closed();
        core.socks.set_room(room);
        if core.ended() || core.client.poll_timeout() != core.deadline {
            self.wake.notify(1);
        }
        self.changed.notify(usize::MAX);
    }

    /// The next queued event, and room for the machine's next ones.
    fn pop(&self, core: &mut Core<M>) -> Option<M::Event> {
        let ev = core.client.pop()?;
        self.dispatch(core);
        Some(ev)
    }
}

impl<M: ClientMachine> SocketOwner for ClientState<M> {
    type Machine = M;

    fn with<T>(&self, f: impl FnOnce(&mut M, &mut Sockets<Self>, Instant) -> T) -> T {
        let mut core = self.lock();
        let Core { client, socks, .. } = &mut *core;
        let out = f(client.machine_mut(), socks, Instant::now());
        self.dispatch(&mut core);
        out
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        crate::pump::spawn_on(self.executor.as_ref(), task);
    }
}

impl<M: ClientMachine> Client<M> {
    /// Drives `machine` (its first actions at once), its tasks on `executor` or smol's.
    pub(crate) fn start(
        machine: M,
        max_events: usize,
        executor: Option<Arc<Executor<'static>>>,
    ) -> Self {
        let client = QueuedClient::new(machine, max_events);
        let shared = Arc::new_cyclic(|me| {
            let socks = Sockets::new(me.clone());
            let core = Mutex::new(Core { client, socks, deadline: None, done: false });
            ClientState { core, wake: Notify::new(), changed: Notify::new(), executor }
        });
        shared.with(|_, _, _| ());
        shared.spawn(run_client_timer(shared.clone()));
        Self { shared }
    }

    /// Runs a command on the machine, then its outputs.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut M, Instant) -> T) -> T {
        self.shared.with(|m, _, now| f(m, now))
    }

    pub(crate) fn inspect<T>(&self, f: impl FnOnce(&M) -> T) -> T {
        f(self.shared.lock().client.machine())
    }

    pub(crate) fn try_next_event(&self) -> Option<M::Event> {
        self.shared.pop(&mut self.shared.lock())
    }

    /// The next event, waiting for it; `None` once the machine is finished.
    pub(crate) async fn next_event(&self) -> Option<M::Event> {
        wait(&self.shared.changed, || {
            let mut core = self.shared.lock();
            match self.shared.pop(&mut core) {
                Some(ev) => Some(Some(ev)),
                None => (core.done || core.client.is_finished()).then_some(None),
            }
        })
        .await
    }
}

impl<M: ClientMachine> Drop for Client<M> {
    /// Closes the machine; the timer task finishes its close (a WebSocket's handshake).
    fn drop(&mut self) {
        self.shared.lock().client.machine_mut().close(Instant::now());
        self.shared.wake.notify(1);
    }
}

/// The timer task: fires the machine's deadline until it is closed and its sockets are gone.
async fn run_client_timer<M: ClientMachine>(shared: Arc<ClientState<M>>) {
    crate::pump::run_timer(&shared.wake, |now| {
        let mut core = shared.lock();
        if core.client.poll_timeout().is_some_and(|d| d <= now) {
            core.client.machine_mut().handle_timeout(now);
        }
        shared.dispatch(&mut core);
        if core.ended() {
            core.done = true;
            drop(core);
            shared.changed.notify(usize::MAX);
            return None;
        }
        core.deadline = core.client.poll_timeout();
        Some(core.deadline)
    })
    .await;
}
