//! The socket pump of the crate docs ("How the server is driven"): moves bytes between the
//! sockets of the connections the core endpoint serves and the endpoint, which sits behind
//! one mutex. One task per accepted connection and one timer task per server each make one
//! mutation, then [`Core::wake_waiters`] wakes who its outputs concern. A connection the
//! core hands over ([`Server::poll_handover`]: an upgrade or a request for a path that is
//! not the hub's) leaves the pump: its task runs the application's handler.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event as Notify;
use smol::{Async, Timer, future};
use tidewire::server::{ConnHandle, Server, ServerEvent};
use tidewire::ws::{WsConnection, WsEvent};
use tidewire::{Machine, Transmit};

use crate::driver::{consume, read_shared, write_batch};
use crate::http::{HttpRequest, answer};
use crate::outbound::{Sockets, drain};
use crate::server::{Registration, ServerShared, Upgrade};

/// Bytes pulled from the core for one connection before they are written.
const PULL_BOUND: usize = 256 << 10;
/// A write that makes no progress for this long (without `WsConfig::send_timeout`) loses
/// the connection.
const WRITE_STALL: Duration = Duration::from_secs(30);

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type Handler<T> = Box<dyn Fn(T) -> BoxFuture + Send + Sync>;
/// The application's handlers: upgrades and plain HTTP requests.
pub(crate) type Handlers = Arc<(Handler<Upgrade>, Handler<HttpRequest>)>;

/// The core endpoint and what the pump keeps beside it, under one lock.
pub(crate) struct Core {
    pub(crate) server: Server,
    /// With Redis: the bus's sockets.
    pub(crate) socks: Sockets<ServerShared>,
    /// Each pumped connection's wake-up.
    wakers: HashMap<ConnHandle, Arc<Notify>>,
    /// The deadline the timer task waits for.
    armed: Option<Instant>,
}

impl Core {
    pub(crate) fn new(server: Server, socks: Sockets<ServerShared>) -> Self {
        Self { server, socks, wakers: HashMap::new(), armed: None }
    }

    /// After every mutation: the bus's sockets driven ([`crate::outbound`]), the handle's
    /// waiters woken when an event or bus answer arrived, ready connections woken, the timer
    /// re-armed when the deadline changed.
    pub(crate) fn wake_waiters(&mut self, shared: &ServerShared) {
        drain(shared, &mut self.server, &mut self.socks);
        if self.server.poll_arrived() {
            shared.arrived.notify(usize::MAX);
        }
        while let Some(conn) = self.server.poll_ready() {
            if let Some(w) = self.wakers.get(&conn) {
                w.notify(1);
            }
        }
        let next = self.server.poll_timeout();
        if next != self.armed {
            self.armed = next;
            shared.timer.notify(1);
        }
    }
}

/// The server's one timer: `handle_timeout` at the core's deadline (checked against the
/// clock on every wake-up). Ends with the server.
pub(crate) async fn run_timer(weak: Weak<ServerShared>, wake: Arc<Notify>) {
    crate::driver::run_timer(&wake, |now| {
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

/// Forgets a pumped connection however its task ends: the core loses it if it still has
/// it, its wake-up goes.
struct Pumped<'a> {
    shared: &'a ServerShared,
    conn: ConnHandle,
}

impl Drop for Pumped<'_> {
    fn drop(&mut self) {
        let mut core = self.shared.core();
        core.wakers.remove(&self.conn);
        core.server.handle_lost(Instant::now(), self.conn);
        core.wake_waiters(self.shared);
    }
}

/// What woke a waiting connection task.
enum Woke {
    Read(io::Result<usize>),
    Writable,
    Notified,
    Stalled,
}

/// One accepted connection: pumped through the core until it ends or is handed over.
#[allow(clippy::too_many_lines)] // one run loop, kept in one place
pub(crate) async fn run_conn(
    stream: Arc<Async<TcpStream>>,
    peer: SocketAddr,
    registration: Registration,
    handlers: Handlers,
) {
    let shared = registration.server.clone();
    let conn = registration.handle();
    let wake = Arc::new(Notify::new());
    let pumped = Pumped { shared: &shared, conn };
    {
        let mut core = shared.core();
        core.wakers.insert(conn, wake.clone());
        core.server.handle_accept_from(Instant::now(), conn, peer);
        core.wake_waiters(&shared);
    }
    let sock = stream.get_ref();
    let max_read = shared.cfg.read_buffer.max(1);
    let stall = shared.cfg.endpoint.ws.send_timeout.unwrap_or(WRITE_STALL);
    let mut wbuf: VecDeque<Bytes> = VecDeque::new();
    let mut eof = false;
    let mut ended = false;
    let mut stall_at: Option<Instant> = None;
    let handoff = loop {
        let listener = wake.listen();
        // Pull what the core has for this connection, while the socket took the last batch.
        let handoff = {
            let mut core = shared.core();
            if wbuf.is_empty() && !ended {
                let now = Instant::now();
                let mut pulled = 0;
                while pulled < PULL_BOUND {
                    match core.server.poll_transmit(now, conn) {
                        Some(Transmit::Bytes(b)) => {
                            pulled += b.len();
                            wbuf.push_back(b);
                        }
                        Some(_) => {
                            ended = true;
                            break;
                        }
                        None => break,
                    }
                }
                core.wake_waiters(&shared);
            }
            core.server.poll_handover(conn)
        };
        if let Some(h) = handoff {
            break Some(h);
        }
        // Write what the socket takes now.
        let mut wrote = false;
        while !wbuf.is_empty() {
            match write_batch(sock, &wbuf) {
                Ok(0) => return,
                Ok(n) => {
                    consume(&mut wbuf, n);
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
        if wbuf.is_empty() {
            stall_at = None;
            if ended {
                break None;
            }
            if wrote {
                continue;
            }
        } else if wrote || stall_at.is_none() {
            stall_at = Some(Instant::now() + stall);
        }
        let woke = {
            let read = async {
                if eof || ended {
                    future::pending().await
                } else {
                    // Into the thread's buffer, fed at once: no read buffer per connection.
                    let read = stream.read_with(|s| {
                        read_shared(s, max_read, |data| {
                            let mut core = shared.core();
                            core.server.handle_read(Instant::now(), conn, data);
                            core.wake_waiters(&shared);
                        })
                    });
                    Woke::Read(read.await)
                }
            };
            let write = async {
                if wbuf.is_empty() {
                    future::pending().await
                } else {
                    match stream.writable().await {
                        Ok(()) => Woke::Writable,
                        Err(e) => Woke::Read(Err(e)),
                    }
                }
            };
            let stalled = async {
                match stall_at {
                    Some(at) => Timer::at(at).await,
                    None => future::pending().await,
                };
                Woke::Stalled
            };
            let notified = async {
                listener.await;
                Woke::Notified
            };
            future::or(read, future::or(write, future::or(notified, stalled))).await
        };
        match woke {
            Woke::Read(Ok(n)) if n > 0 => {}
            Woke::Read(Ok(_)) => {
                eof = true;
                let mut core = shared.core();
                core.server.handle_eof(Instant::now(), conn);
                core.wake_waiters(&shared);
            }
            Woke::Read(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Woke::Read(Err(_)) | Woke::Stalled => return,
            Woke::Writable | Woke::Notified => {}
        }
    };
    drop(pumped);
    match handoff {
        None => {
            let _ = sock.shutdown(Shutdown::Both);
        }
        Some(ServerEvent::Upgrade { ws, .. }) => {
            // Out of its box before the application's await: the box is freed now.
            let ws = {
                let ws = ws;
                *ws
            };
            upgrade(stream, peer, registration, ws, &handlers).await;
        }
        Some(ServerEvent::Request { request, rest, .. }) => {
            let req = HttpRequest::new(stream, peer, request, rest.to_vec(), registration);
            (handlers.1)(req).await;
        }
        Some(_) => {}
    }
}

/// An upgrade for the application: its decision step, or the core's error response.
async fn upgrade(
    stream: Arc<Async<TcpStream>>,
    peer: SocketAddr,
    registration: Registration,
    mut conn: WsConnection,
    handlers: &Handlers,
) {
    let mut request = None;
    while let Some(ev) = conn.poll_event() {
        if let WsEvent::UpgradeRequested(req) = ev {
            request = Some(req);
        }
    }
    let Some(request) = request else {
        // A malformed upgrade: the core's answer (400, 426…), then the end.
        let _ = answer(&stream, &mut conn, registration.server.cfg.endpoint.ws.close_timeout).await;
        return;
    };
    (handlers.0)(Upgrade { conn, stream, request, peer, registration }).await;
}
