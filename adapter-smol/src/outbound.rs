//! The outbound-socket driver: the TCP connections an [`Outbound`] machine asks for (a
//! [`Session`](crate::Session)'s, an [`SseConnection`](crate::sse::SseConnection)'s, the
//! server's Redis bus), a task per socket running [`socket_loop`]; the lock is never held
//! across an `.await`.
//! [`Client`] owns an application's [`OutboundClient`].

use std::collections::VecDeque;
use std::future::Future;
use std::net::Shutdown;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use bytes::Bytes;
use event_listener::{Event as Notify, listener};
use smol::net::TcpStream;
use smol::{Async, Executor, future};
use tidewire::socket::{ClientDriver, Dialer, Outbound, OutboundClient, SockId, SocketTable};
use tidewire::ws::app::Pass;

use crate::conn::DriverWake;
use crate::pump::{Target, WRITE_STALL, socket_loop};

/// Most bytes of one read (into the thread's read buffer).
const MAX_READ: usize = 16 << 10;

/// One machine's sockets, kept under its owner's lock.
pub(crate) type Table = SocketTable<Arc<DriverWake>>;

/// The owner of an [`Outbound`] machine, as the driver sees it.
pub(crate) trait SocketOwner: Send + Sync + Sized + 'static {
    type Machine: Outbound;
    /// Runs `f` on the machine and its sockets under the owner's lock, then drains them.
    fn with<T>(&self, f: impl FnOnce(&mut Self::Machine, &mut Table, Instant) -> T) -> T;
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static);
}

/// How the sockets of an owner (built with `Arc::new_cyclic`) are opened: a task each, on
/// its executor.
pub(crate) struct Sockets<H>(pub(crate) Weak<H>);

impl<H: SocketOwner> Dialer for Sockets<H> {
    type Wake = Arc<DriverWake>;

    fn dial(&self, sock: SockId, host: String, port: u16, wake: &Arc<DriverWake>) -> bool {
        let Some(owner) = self.0.upgrade() else { return false };
        owner.spawn(run_socket(self.0.clone(), sock, host, port, wake.clone()));
        true
    }

    fn wake(&self, wake: &Arc<DriverWake>) {
        wake.notify();
    }
}

/// Feeds an input for `sock` to the machine; `false` if the machine closed it or is gone.
fn feed<H: SocketOwner>(
    owner: &Weak<H>,
    sock: SockId,
    f: impl FnOnce(&mut H::Machine, Instant, SockId),
) -> bool {
    owner.upgrade().is_some_and(|host| host.with(|m, t, now| t.feed(m, now, sock, f)))
}

/// Fails `sock`: forgets it, and reports the error unless the machine closed it.
fn fail<H: SocketOwner>(owner: &Weak<H>, sock: SockId) {
    if let Some(host) = owner.upgrade() {
        host.with(|m, t, now| t.fail(m, now, sock));
    }
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
        Some(Err(_)) => fail(&owner, sock),
        None => {}
    }
    if let Some(host) = owner.upgrade() {
        host.with(|_, t, _| t.remove(sock));
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
        host.with(|_, t, _| {
            // A ring before this pass is handled by it; one after it (under the lock) rings again.
            self.wake.reset();
            let Some(turn) = t.take(self.sock, wbuf) else { return Pass::Stop };
            Pass::Run { read: turn.read, deadline: None, shutdown: turn.closing }
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
        fail(self.owner, self.sock);
    }

    fn wake(&self) -> &DriverWake {
        self.wake
    }
}

/// An [`OutboundClient`] whose events and tasks may move between threads.
pub(crate) trait ClientMachine: OutboundClient<Event: Send> + Send + 'static {}
impl<M: OutboundClient<Event: Send> + Send + 'static> ClientMachine for M {}

/// An application's [`OutboundClient`] on the core's [`ClientDriver`] (its event queue, its
/// sockets, its end), its deadline fired by a timer task, closed on drop.
pub(crate) struct Client<M: ClientMachine> {
    shared: Arc<ClientState<M>>,
}

type Driver<M> = ClientDriver<M, Arc<DriverWake>>;

/// What the socket tasks and the timer task share with the application.
pub(crate) struct ClientState<M: ClientMachine> {
    driver: Mutex<Driver<M>>,
    socks: Sockets<Self>,
    /// Something for the timer task: a new deadline, the end.
    wake: Notify,
    /// Something for the application: an event, the end.
    changed: Notify,
    executor: Option<Arc<Executor<'static>>>,
}

impl<M: ClientMachine> ClientState<M> {
    fn lock(&self) -> MutexGuard<'_, Driver<M>> {
        self.driver.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// After every mutation, under the lock: sockets, then events while there is room.
    fn dispatch(&self, d: &mut Driver<M>) {
        if d.step(Instant::now(), &self.socks) {
            self.wake.notify(1);
        }
        self.changed.notify(usize::MAX);
    }

    /// The next queued event, and room for the machine's next ones.
    fn pop(&self, d: &mut Driver<M>) -> Option<M::Event> {
        let ev = d.pop()?;
        self.dispatch(d);
        Some(ev)
    }
}

impl<M: ClientMachine> SocketOwner for ClientState<M> {
    type Machine = M;

    fn with<T>(&self, f: impl FnOnce(&mut M, &mut Table, Instant) -> T) -> T {
        let mut d = self.lock();
        let (m, t) = d.parts_mut();
        let out = f(m, t, Instant::now());
        self.dispatch(&mut d);
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
        let shared = Arc::new_cyclic(|me| ClientState {
            driver: Mutex::new(ClientDriver::new(machine, max_events)),
            socks: Sockets(me.clone()),
            wake: Notify::new(),
            changed: Notify::new(),
            executor,
        });
        shared.with(|_, _, _| ());
        let timer = shared.clone();
        // The timer: fires the deadline until the machine is closed and its sockets are gone.
        shared.spawn(async move {
            crate::pump::run_timer(&timer.wake, |now| {
                let next = timer.lock().tick(now, &timer.socks);
                timer.changed.notify(usize::MAX);
                next
            })
            .await;
        });
        Self { shared }
    }

    /// Runs a command on the machine, then its outputs.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut M, Instant) -> T) -> T {
        self.shared.with(|m, _, now| f(m, now))
    }

    pub(crate) fn inspect<T>(&self, f: impl FnOnce(&M) -> T) -> T {
        f(self.shared.lock().machine())
    }

    pub(crate) fn try_next_event(&self) -> Option<M::Event> {
        self.shared.pop(&mut self.shared.lock())
    }

    /// The next event, waiting for it; `None` once the machine is finished.
    pub(crate) async fn next_event(&self) -> Option<M::Event> {
        wait(&self.shared.changed, || {
            let mut d = self.shared.lock();
            match self.shared.pop(&mut d) {
                Some(ev) => Some(Some(ev)),
                None => d.is_finished().then_some(None),
            }
        })
        .await
    }
}

impl<M: ClientMachine> Drop for Client<M> {
    /// Closes the machine; the timer task finishes its close (a WebSocket's handshake).
    fn drop(&mut self) {
        self.shared.lock().machine_mut().close(Instant::now());
        self.shared.wake.notify(1);
    }
}
