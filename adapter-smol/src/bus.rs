//! Scale-out over Redis ([`ServerConfig::redis`](crate::ServerConfig::redis)): the tasks
//! that run the core's sans-IO [`RedisBus`] next to the core endpoint's hub.
//!
//! The machine lives beside the endpoint, under its lock, so that what the hub asks
//! ([`Hub::poll_bus`](tidewire::hub::Hub::poll_bus)) and what Redis answers
//! ([`RedisEvent::apply`]) meet in one place. Around it:
//!
//! - one **bus task** per server: runs the machine's timer, opens and closes its sockets, and
//!   hands the bytes it wants written to the writer of each socket;
//! - per Redis socket, one **socket task**: connects, then reads (feeding the machine under
//!   the lock) while a writer task writes what the bus task queued, in order.

use std::collections::HashMap;
use std::io::{self, Read as _};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;
use smol::channel::{Receiver, Sender};
use smol::io::AsyncWriteExt as _;
use smol::{Async, Timer, future};
use tidewire::client::SockId;
use tidewire::redis::{RedisAction, RedisBus};

use crate::pump::Core;
use crate::server::ServerShared;

/// The adapter's side of the bus: how to reach the bus task and each socket's writer.
#[derive(Default)]
pub(crate) struct BusLink {
    /// The machine has something to do (actions, bytes to write, a new deadline).
    pub(crate) wake: event_listener::Event,
    /// Writers of the open sockets.
    writers: std::sync::Mutex<HashMap<SockId, Sender<Bytes>>>,
}

impl BusLink {
    fn writers(&self) -> std::sync::MutexGuard<'_, HashMap<SockId, Sender<Bytes>>> {
        self.writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs the machine's outputs under the endpoint's lock: due timeouts, the hub's requests,
/// the events (applied to the hub) and the bytes to write (queued to each socket's writer,
/// in order). Returns the socket actions (run by the caller outside the lock) and the
/// machine's next deadline.
pub(crate) fn pump(shared: &ServerShared, core: &mut Core) -> (Vec<RedisAction>, Option<Instant>) {
    let mut actions = Vec::new();
    let Some(link) = shared.bus.as_ref() else { return (actions, None) };
    loop {
        let now = Instant::now();
        let Core { server, redis, .. } = &mut *core;
        let Some(bus) = redis.as_mut() else { return (actions, None) };
        if bus.poll_timeout().is_some_and(|d| d <= now) {
            bus.handle_timeout(now);
        }
        server.with_hub(now, |hub| {
            while let Some(a) = hub.poll_bus() {
                bus.execute(now, a);
            }
        });
        while let Some(a) = bus.poll_action() {
            if let RedisAction::Close { sock } = &a {
                link.writers().remove(sock);
            }
            actions.push(a);
        }
        {
            let writers = link.writers();
            while let Some((sock, bytes)) = bus.poll_transmit() {
                if let Some(w) = writers.get(&sock) {
                    let _ = w.try_send(bytes);
                }
            }
        }
        let mut events = Vec::new();
        while let Some(ev) = bus.poll_event() {
            events.push(ev);
        }
        let busy = !events.is_empty();
        server.with_hub(now, |hub| {
            for ev in events {
                ev.apply(hub, now);
            }
        });
        core.settle(shared);
        if !busy && !core.server.hub().has_bus_actions() {
            let deadline = core.redis.as_ref().and_then(RedisBus::poll_timeout);
            return (actions, deadline);
        }
    }
}

/// The bus task: the machine's timer and socket actions. Ends with the server.
pub(crate) async fn run_bus(weak: Weak<ServerShared>) {
    let mut timer = Timer::never();
    let mut armed: Option<Instant> = None;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let Some(link) = inner.bus.as_ref() else { return };
        let listener = link.wake.listen();
        let (actions, deadline) = {
            let mut core = inner.core();
            pump(&inner, &mut core)
        };
        for a in actions {
            if let RedisAction::Connect { sock, host, port } = a {
                let (tx, rx) = smol::channel::unbounded();
                link.writers().insert(sock, tx);
                inner.spawn(run_socket(weak.clone(), sock, host, port, rx));
            }
        }
        drop(inner);
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
                armed = None;
            },
            listener,
        )
        .await;
    }
}

/// Feeds one socket event to the machine, then pumps and wakes the bus task.
fn feed(weak: &Weak<ServerShared>, f: impl FnOnce(&mut RedisBus, Instant)) -> bool {
    let Some(inner) = weak.upgrade() else { return false };
    let mut core = inner.core();
    let Some(bus) = core.redis.as_mut() else { return false };
    f(bus, Instant::now());
    drop(core);
    if let Some(link) = inner.bus.as_ref() {
        link.wake.notify(1);
    }
    true
}

/// One Redis connection: connect, then read until it ends; a writer task writes what the
/// bus task queues. Ends when the machine closes the socket (its writer is dropped).
async fn run_socket(
    weak: Weak<ServerShared>,
    sock: SockId,
    host: String,
    port: u16,
    rx: Receiver<Bytes>,
) {
    let addrs = smol::unblock(move || (host.as_str(), port).to_socket_addrs().map(Vec::from_iter));
    let mut stream = None;
    if let Ok(addrs) = addrs.await {
        for addr in addrs {
            if let Ok(s) = Async::<TcpStream>::connect(addr).await {
                stream = Some(s);
                break;
            }
        }
    }
    let Some(stream) = stream else {
        feed(&weak, |bus, now| bus.handle_error(now, sock));
        return;
    };
    let _ = stream.get_ref().set_nodelay(true);
    if !feed(&weak, |bus, now| bus.handle_connected(now, sock)) {
        return;
    }
    let stream = Arc::new(stream);
    let writer = {
        let stream = stream.clone();
        async move {
            while let Ok(bytes) = rx.recv().await {
                if (&*stream).write_all(&bytes).await.is_err() {
                    break;
                }
            }
            // Closed by the machine (or the write failed): end the reader too.
            let _ = stream.get_ref().shutdown(Shutdown::Both);
        }
    };
    let reader = async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stream.read_with(|s| (&mut &*s).read(&mut buf)).await {
                Ok(0) => {
                    feed(&weak, |bus, now| bus.handle_eof(now, sock));
                    return;
                }
                Ok(n) => {
                    if !feed(&weak, |bus, now| bus.handle_read(now, sock, &buf[..n])) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    feed(&weak, |bus, now| bus.handle_error(now, sock));
                    return;
                }
            }
        }
    };
    future::zip(writer, reader).await;
}
