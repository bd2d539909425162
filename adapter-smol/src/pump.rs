//! The socket pump: one task per socket runs [`socket_loop`], the one loop that moves bytes
//! between a non-blocking socket and a [`Target`]: a [`Hub`] connection of the core endpoint
//! (behind the server's one mutex, with one timer task per server), an [`App`] WebSocket (behind
//! its own `AppSocket` lock) or an outbound socket. A connection the core hands over stays on
//! its task: an upgrade goes on as an [`App`], a plain request goes to the application's handler.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::{Event as Notify, listener};
use smol::io::AsyncReadExt as _;
use smol::{Async, Executor, Timer, future};
use tidewire::Machine as _;
use tidewire::readiness::{ReadinessLoop, Step};
use tidewire::server::{ConnHandle, Server, ServerEvent};
use tidewire::ws::WsEvent;
use tidewire::ws::app::Pass;

use crate::conn::{DriverWake, WsConn};
use crate::http::HttpRequest;
use crate::outbound::{SocketOwner as _, Sockets, Table};
use crate::server::{Registration, ServerState, Upgrade};

/// Bytes pulled from the core endpoint for one connection before they are written.
const PULL_BOUND: usize = 256 << 10;
/// The longest a closing connection waits for the peer's end after the last response.
const LINGER: Duration = Duration::from_secs(2);
/// A stalled write loses the connection after this long (a hub connection's: without
/// `WsConfig::send_timeout`; an outbound socket's always).
pub(crate) const WRITE_STALL: Duration = Duration::from_secs(30);
/// Bytes pulled from an application WebSocket into one write batch at most.
const BATCH_BYTES: usize = 256 << 10;

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type Handler<T> = Box<dyn Fn(T) -> BoxFuture + Send + Sync>;
/// The application's handlers: upgrades and plain HTTP requests.
pub(crate) type Handlers = Arc<(Handler<Upgrade>, Handler<HttpRequest>)>;

thread_local! {
    /// The thread's read buffer: a waiting connection holds none (issue 17).
    static READ_BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The core endpoint and what the pump keeps beside it, under one lock.
pub(crate) struct Core {
    pub(crate) server: Server,
    /// With Redis: how the bus's sockets are opened.
    pub(crate) socks: Sockets<ServerState>,
    /// With Redis: the bus's sockets.
    pub(crate) bus_socks: Table,
    /// Each pumped connection's wake-up.
    wakers: HashMap<ConnHandle, Arc<DriverWake>>,
    /// The deadline the timer task waits for.
    armed: Option<Instant>,
}

impl Core {
    pub(crate) fn new(server: Server, socks: Sockets<ServerState>) -> Self {
        Self { server, socks, bus_socks: Table::default(), wakers: HashMap::new(), armed: None }
    }

    /// After every mutation: drives the bus's sockets, wakes the handle's waiters and the
    /// ready connections, re-arms the timer when the deadline changed.
    pub(crate) fn wake_waiters(&mut self, shared: &ServerState) {
        self.bus_socks.drain(&mut self.server, Instant::now(), &self.socks);
        if self.server.poll_arrived() {
            shared.arrived.notify(usize::MAX);
        }
        while let Some(conn) = self.server.poll_ready() {
            if let Some(w) = self.wakers.get(&conn) {
                w.notify();
            }
        }
        let next = self.server.poll_timeout();
        if next != self.armed {
            self.armed = next;
            shared.timer.notify(1);
        }
    }
}

/// The server's one timer: `handle_timeout` at the core's deadline. Ends with the server.
pub(crate) async fn run_core_timer(weak: Weak<ServerState>, wake: Arc<Notify>) {
    run_timer(&wake, |now| {
        let shared = weak.upgrade()?;
        let mut core = shared.core();
        if core.armed.is_some_and(|d| now >= d) {
            core.server.handle_timeout(now);
            core.wake_waiters(&shared);
        }
        Some(core.armed)
    })
    .await;
}

/// A timer task: on every wake-up (`wake` or the deadline) `step` returns the next deadline,
/// or `None` to end the task. The timer is re-armed only when the deadline changes.
pub(crate) async fn run_timer(
    wake: &Notify,
    mut step: impl FnMut(Instant) -> Option<Option<Instant>>,
) {
    let mut timer = Timer::never();
    let mut armed: Option<Instant> = None;
    loop {
        listener!(wake => listener);
        let now = Instant::now();
        let Some(deadline) = step(now) else { return };
        if deadline.is_some_and(|d| d <= now) {
            continue;
        }
        if deadline != armed {
            match deadline {
                Some(d) => timer.set_at(d),
                None => timer = Timer::never(),
            }
            armed = deadline;
        }
        future::or(
            async {
                (&mut timer).await;
            },
            listener,
        )
        .await;
        if armed.is_some_and(|d| d <= Instant::now()) {
            armed = None;
        }
    }
}

/// Spawns `task` on `executor`, or on smol's global executor when there is none.
pub(crate) fn spawn_on(
    executor: Option<&Arc<Executor<'static>>>,
    task: impl Future<Output = ()> + Send + 'static,
) {
    match executor {
        Some(ex) => ex.spawn(task).detach(),
        None => smol::spawn(task).detach(),
    }
}

/// One accepted connection: pumped through the core endpoint until it ends (a request of
/// the application's goes to its handler meanwhile) or is handed over as an upgrade (then
/// pumped as an [`App`]).
pub(crate) async fn run_conn(
    stream: Arc<Async<TcpStream>>,
    peer: SocketAddr,
    registration: Registration,
    handlers: Handlers,
) {
    let server = &registration.server;
    let conn = registration.conn;
    let cfg = &server.cfg;
    let (handover, ended) = {
        let mut hub = Hub::new(server, conn, peer, &handlers);
        let stall = cfg.endpoint.ws.send_timeout.unwrap_or(WRITE_STALL);
        let written = socket_loop(&stream, &mut hub, cfg.read_buffer, Some(stall)).await;
        (hub.handover.take(), hub.ended && written.is_ok())
    };
    let Some(ServerEvent::Upgrade { ws, .. }) = handover else {
        if ended && !server.core().server.is_shutting_down() {
            linger(&stream, Instant::now() + cfg.endpoint.ws.close_timeout.min(LINGER)).await;
        }
        let _ = stream.get_ref().shutdown(Shutdown::Both);
        return;
    };
    // Out of its box: the box is freed now.
    let mut ws = *ws;
    let request = std::iter::from_fn(|| ws.poll_event()).fold(None, |req, ev| match ev {
        WsEvent::UpgradeRequested(r) => Some(r),
        _ => req,
    });
    let close_timeout = cfg.endpoint.ws.close_timeout;
    let shared = Arc::new(WsConn::new(ws, close_timeout, peer));
    // Without a request: a malformed upgrade, whose answer (400, 426…) is written.
    if let Some(request) = request {
        let upgrade = Upgrade { shared: shared.clone(), request, server: server.clone(), conn };
        server.spawn((handlers.0)(upgrade));
    }
    run_ws(stream, shared, cfg.read_buffer).await;
}

/// Sends FIN after the last response, then discards input until the peer's end or `until`:
/// unread input would make the close a reset that destroys the response.
async fn linger(stream: &Async<TcpStream>, until: Instant) {
    let _ = stream.get_ref().shutdown(Shutdown::Write);
    let mut sink = [0u8; 512];
    while let Some(Ok(1..)) = crate::until(until, (&mut &*stream).read(&mut sink)).await {}
}

/// Pumps an application WebSocket until it is done (see [`App`]); a server's upgrade is not
/// driven before it is accepted or rejected ([`AppSocket::poll_pass`](tidewire::ws::AppSocket::poll_pass)).
pub(crate) async fn run_ws(stream: Arc<Async<TcpStream>>, shared: Arc<WsConn>, read_buffer: usize) {
    let mut app = App { stream: &stream, shared: &shared };
    if let Err(kind) = socket_loop(&stream, &mut app, read_buffer, None).await {
        let _ = shared.cut.set(kind);
    }
}

/// What a socket is pumped for.
pub(crate) trait Target {
    /// Under the target's lock: fires what is due, pulls the next batch into `wbuf`, forgets
    /// the handled wake-ups, says what next (as `AppSocket::poll_pass`).
    fn pass(&mut self, now: Instant, wbuf: &mut VecDeque<Bytes>) -> Pass;
    /// Bytes read from the socket; returns whether a waiting receiver was woken.
    fn read(&mut self, data: &[u8]) -> bool;
    /// The socket's read half ended (`error`: with an error).
    fn eof(&mut self, error: bool);
    /// A write failed or made no progress for too long: nothing more can be written.
    fn write_failed(&mut self);
    /// What rings when the target has work for the pump.
    fn wake(&self) -> &DriverWake;
}

/// The run loop, until `target` stops: the core's [`ReadinessLoop`] decides; this performs
/// its steps on the socket (vectored writes, reads into the thread's buffer), the target, one
/// timer and the readiness registrations. `stall`: a write without progress this long fails.
/// `Err`: why not everything queued was written (`TimedOut` when the target ended first).
pub(crate) async fn socket_loop(
    stream: &Async<TcpStream>,
    target: &mut impl Target,
    max_read: usize,
    stall: Option<Duration>,
) -> Result<(), io::ErrorKind> {
    let sock = stream.get_ref();
    let mut lp = ReadinessLoop::new(max_read, stall, Instant::now());
    let (mut timer, mut timer_at) = (Timer::never(), None);
    // Kept across waits: registered once, dropped only when they fired.
    let (mut readable, mut writable) = (None, None);
    loop {
        match lp.next(Instant::now, || target.wake().is_rung()) {
            Step::Pass(now) => {
                let pass = target.pass(now, lp.out());
                lp.passed(pass);
            }
            Step::Write => lp.write(|slices| (&mut &*sock).write_vectored(slices)),
            Step::WriteFailed => target.write_failed(),
            Step::Read(max) => {
                let mut delivered = false;
                let read = read_shared(sock, max, |data| delivered = target.read(data));
                lp.did_read(read, delivered);
            }
            Step::Eof(error) => target.eof(error),
            Step::Yield => future::yield_now().await,
            Step::Wait { read, write, timer: at } => {
                if at != timer_at {
                    timer_at = at;
                    match at {
                        Some(d) => timer.set_at(d),
                        None => timer = Timer::never(),
                    }
                }
                if !read {
                    readable = None;
                } else if readable.is_none() {
                    readable = Some(stream.readable());
                }
                if write && writable.is_none() {
                    writable = Some(stream.writable());
                }
                let wake = target.wake();
                let (w, r, t, rung) = future::poll_fn(|cx| {
                    // Every source waited for is polled, so that each registers its waker.
                    let w =
                        write && writable.as_mut().is_some_and(|f| Pin::new(f).poll(cx).is_ready());
                    let r =
                        read && readable.as_mut().is_some_and(|f| Pin::new(f).poll(cx).is_ready());
                    let t = at.is_some() && Pin::new(&mut timer).poll(cx).is_ready();
                    let rung = wake.poll(cx).is_ready();
                    if w || r || t || rung { Poll::Ready((w, r, t, rung)) } else { Poll::Pending }
                })
                .await;
                // A readiness error shows up again on the next read or write.
                if w {
                    writable = None;
                }
                if r {
                    readable = None;
                }
                if t {
                    timer_at = None;
                }
                lp.woke(w, r, t, rung);
            }
            Step::Done(result) => return result,
        }
    }
}

/// A connection of the core endpoint, pumped under the server's lock; dropped, the core loses it.
struct Hub<'a> {
    shared: &'a Arc<ServerState>,
    handlers: &'a Handlers,
    peer: SocketAddr,
    conn: ConnHandle,
    wake: Arc<DriverWake>,
    /// The core asked for `Transmit::Shutdown`: the rest is written, then the end.
    ended: bool,
    /// A read or write failed: the end.
    lost: bool,
    /// The upgrade the core handed over: the pump ends.
    handover: Option<ServerEvent>,
}

impl<'a> Hub<'a> {
    fn new(
        shared: &'a Arc<ServerState>,
        conn: ConnHandle,
        peer: SocketAddr,
        handlers: &'a Handlers,
    ) -> Self {
        let wake = Arc::new(DriverWake::default());
        let mut core = shared.core();
        core.wakers.insert(conn, wake.clone());
        core.server.handle_accept_from(Instant::now(), conn, peer);
        core.wake_waiters(shared);
        Self { shared, handlers, peer, conn, wake, ended: false, lost: false, handover: None }
    }
}

impl Drop for Hub<'_> {
    fn drop(&mut self) {
        let mut core = self.shared.core();
        core.wakers.remove(&self.conn);
        core.server.handle_lost(Instant::now(), self.conn);
        core.wake_waiters(self.shared);
    }
}

impl Target for Hub<'_> {
    fn pass(&mut self, now: Instant, wbuf: &mut VecDeque<Bytes>) -> Pass {
        if self.lost {
            return Pass::Stop;
        }
        let mut core = self.shared.core();
        // Pulled only once the socket took the last batch.
        if wbuf.is_empty() && !self.ended {
            self.ended = core.server.poll_batch(now, self.conn, wbuf, PULL_BOUND);
            core.wake_waiters(self.shared);
        }
        // A ring before this pass is handled by it (or once the socket took the batch); one
        // after it (under the lock) rings again.
        self.wake.reset();
        match core.server.poll_handover(self.conn) {
            Some(ServerEvent::Request { request, .. }) => {
                let req = HttpRequest::new(self.shared.clone(), self.conn, request, self.peer);
                self.shared.spawn((self.handlers.1)(req));
            }
            Some(upgrade) => {
                self.handover = Some(upgrade);
                return Pass::Stop;
            }
            None => {}
        }
        Pass::Run { read: !self.ended, deadline: None, shutdown: self.ended }
    }

    fn read(&mut self, data: &[u8]) -> bool {
        self.shared.with_core(|core| core.server.handle_read(Instant::now(), self.conn, data));
        false
    }

    fn eof(&mut self, error: bool) {
        if error {
            self.lost = true;
        } else {
            self.shared.with_core(|core| core.server.handle_eof(Instant::now(), self.conn));
        }
    }

    fn write_failed(&mut self) {
        self.lost = true;
    }

    fn wake(&self) -> &DriverWake {
        &self.wake
    }
}

/// An application WebSocket, pumped under its `AppSocket`'s lock. Dropped (even with the task),
/// it shuts the socket down and tells the application.
struct App<'a> {
    stream: &'a Async<TcpStream>,
    shared: &'a WsConn,
}

impl Drop for App<'_> {
    fn drop(&mut self) {
        let _ = self.stream.get_ref().shutdown(Shutdown::Both);
        // Wakes everyone still waiting on this connection: it is over.
        self.shared.update(|sock| sock.finish(Instant::now()));
        // The pump's waker keeps its task's memory: not past the task.
        self.shared.wake.forget();
    }
}

impl Target for App<'_> {
    fn pass(&mut self, now: Instant, wbuf: &mut VecDeque<Bytes>) -> Pass {
        let mut sock = self.shared.lock();
        let pass = sock.poll_pass(now, wbuf, BATCH_BYTES, tidewire::readiness::MAX_SLICES);
        self.shared.wake_up(&mut sock);
        // A ring before this pass is handled by it; one after it (under the lock) rings again.
        self.shared.wake.reset();
        pass
    }

    fn read(&mut self, data: &[u8]) -> bool {
        self.shared.update(|sock| sock.handle_read(Instant::now(), data)).1
    }

    fn eof(&mut self, _error: bool) {
        self.shared.update(|sock| sock.handle_eof(Instant::now()));
    }

    fn write_failed(&mut self) {
        self.shared.update(|sock| sock.handle_write_error(Instant::now()));
    }

    fn wake(&self) -> &DriverWake {
        &self.shared.wake
    }
}

/// One read of `sock` (at most `max` bytes) into the thread's read buffer; `f` gets what
/// arrived, if anything.
fn read_shared(sock: &TcpStream, max: usize, f: impl FnOnce(&[u8])) -> io::Result<usize> {
    // Taken out while in use (during the thread's teardown: a one-off buffer).
    let mut buf = READ_BUF.try_with(Cell::take).unwrap_or_default();
    if buf.len() < max {
        buf.resize(max, 0);
    }
    let read = (&mut &*sock).read(&mut buf[..max]);
    if let Ok(n) = read
        && n > 0
    {
        f(&buf[..n]);
    }
    let _ = READ_BUF.try_with(|cell| cell.set(buf));
    read
}
