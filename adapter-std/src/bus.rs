//! Scale-out over Redis ([`ServerConfig::redis`](crate::ServerConfig::redis)): the threads
//! that run the core's sans-IO [`RedisBus`] next to the hub inside the core server.
//!
//! The machine lives beside the core server, under its lock, so that what the hub asks
//! ([`Hub::poll_bus`](tidewire::hub::Hub::poll_bus)) and what Redis answers
//! ([`RedisEvent::apply`](tidewire::redis::RedisEvent::apply)) meet in one place. Around it:
//!
//! - one **bus thread** per server: runs the machine's timer, opens and closes its sockets, and
//!   hands the bytes it wants written to the writer of each socket;
//! - per Redis socket, a **reader thread** (connects, then feeds what it reads to the
//!   machine under the lock) and a **writer thread** (writes what the bus thread queued, in
//!   order).

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidewire::client::SockId;
use tidewire::redis::{RedisAction, RedisBus};

use crate::conn::lock;
use crate::pump::{Core, core};
use crate::server::Shared;

/// The adapter's side of a hub's bus.
#[derive(Default)]
pub(crate) struct BusLink {
    /// Wakes the bus thread: actions, bytes to write, a new deadline, the end.
    pub(crate) cv: Condvar,
    /// Writers of the open sockets.
    writers: Mutex<HashMap<SockId, mpsc::Sender<Bytes>>>,
}

/// Runs the machine's outputs under the hub lock: due timeouts, the hub's requests, the
/// events (applied to the hub) and the bytes to write (queued to each socket's writer, in
/// order). Returns the socket actions (run by the caller outside the lock) and the
/// machine's next deadline.
fn pump(shared: &Shared, st: &mut Core) -> (Vec<RedisAction>, Option<Instant>) {
    let mut actions = Vec::new();
    let Some(link) = shared.bus.as_ref() else { return (actions, None) };
    loop {
        let now = Instant::now();
        let Core { server, redis, .. } = st;
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
                lock(&link.writers).remove(sock);
            }
            actions.push(a);
        }
        {
            let writers = lock(&link.writers);
            while let Some((sock, bytes)) = bus.poll_transmit() {
                if let Some(w) = writers.get(&sock) {
                    let _ = w.send(bytes);
                }
            }
        }
        let events: Vec<_> = std::iter::from_fn(|| bus.poll_event()).collect();
        let busy = !events.is_empty();
        server.with_hub(now, |hub| {
            for ev in events {
                ev.apply(hub, now);
            }
        });
        st.after(shared);
        if !busy && !st.server.hub().has_bus_actions() {
            return (actions, st.redis.as_ref().and_then(RedisBus::poll_timeout));
        }
    }
}

/// The bus thread: the machine's timer and socket actions. Ends with the [`Server`](crate::Server).
pub(crate) fn run_bus(inner: &Arc<Shared>) {
    let Some(link) = inner.bus.as_ref() else { return };
    let mut st = core(inner);
    loop {
        if st.stop {
            for w in lock(&link.writers).drain() {
                drop(w);
            }
            return;
        }
        let (actions, deadline) = pump(inner, &mut st);
        if !actions.is_empty() {
            drop(st);
            for a in actions {
                if let RedisAction::Connect { sock, host, port } = a {
                    let (tx, rx) = mpsc::channel();
                    lock(&link.writers).insert(sock, tx);
                    let shared = Arc::clone(inner);
                    let spawned = std::thread::Builder::new()
                        .name("tidewire-redis".into())
                        .spawn(move || run_socket(&shared, sock, &host, port, rx));
                    if spawned.is_err() {
                        feed(inner, |bus, now| bus.handle_error(now, sock));
                    }
                }
            }
            st = core(inner);
            continue;
        }
        let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        st = match wait {
            Some(d) if d.is_zero() => st,
            Some(d) => link.cv.wait_timeout(st, d).map_or_else(|p| p.into_inner().0, |r| r.0),
            None => link.cv.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner),
        };
    }
}

/// Feeds one socket event to the machine and wakes the bus thread.
fn feed(inner: &Shared, f: impl FnOnce(&mut RedisBus, Instant)) {
    let mut st = core(inner);
    if let Some(bus) = st.redis.as_mut() {
        f(bus, Instant::now());
    }
    drop(st);
    if let Some(link) = inner.bus.as_ref() {
        link.cv.notify_all();
    }
}

/// One Redis connection: connects, starts its writer, then reads until it ends. The
/// machine bounds the connect (it closes a socket that took too long: its writer is
/// dropped, which shuts the socket down).
fn run_socket(inner: &Shared, sock: SockId, host: &str, port: u16, rx: mpsc::Receiver<Bytes>) {
    let stream = (host, port).to_socket_addrs().ok().and_then(|addrs| {
        addrs.into_iter().find_map(|a| TcpStream::connect_timeout(&a, Duration::from_secs(5)).ok())
    });
    let Some(stream) = stream else {
        feed(inner, |bus, now| bus.handle_error(now, sock));
        return;
    };
    let _ = stream.set_nodelay(true);
    let Ok(mut reader) = stream.try_clone() else {
        feed(inner, |bus, now| bus.handle_error(now, sock));
        return;
    };
    feed(inner, |bus, now| bus.handle_connected(now, sock));
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut out = &stream;
            while let Ok(bytes) = rx.recv() {
                if out.write_all(&bytes).is_err() {
                    break;
                }
            }
            // Closed by the machine (or the write failed): end the reader too.
            let _ = stream.shutdown(Shutdown::Both);
        });
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let read = reader.read(&mut buf);
            match read {
                Ok(0) => {
                    feed(inner, |bus, now| bus.handle_eof(now, sock));
                    break;
                }
                Ok(n) => feed(inner, |bus, now| bus.handle_read(now, sock, &buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    feed(inner, |bus, now| bus.handle_error(now, sock));
                    break;
                }
            }
        }
    });
}
