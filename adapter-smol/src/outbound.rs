//! The one outbound-socket driver: the TCP connections an [`Outbound`] machine asks for
//! (the [`Session`](crate::Session)'s, the server's Redis bus), whoever owns the machine.
//!
//! The owner keeps the machine and its [`Sockets`] behind its lock and implements
//! [`Host`]; after every mutation, still under the lock, it calls [`drain`], which moves
//! the machine's bytes to the sockets' queues and carries out its [`SocketAction`]s. Each
//! socket is one task: it connects, then feeds what it reads to the machine
//! (`handle_read`, `handle_eof`, `handle_error`, waiting first for [`Host::room`]) while
//! writing what [`drain`] queued for it, in order; after `SocketAction::Close` it writes
//! what was queued before and shuts the socket down. The lock is never held across an
//! `.await`.
//!
//! Bytes queued for the sockets are bounded ([`MAX_QUEUED`] over all of a machine's
//! sockets): past it [`drain`] stops pulling `poll_transmit`, and the machine's own
//! buffers apply backpressure.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::Shutdown;
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;
use event_listener::Event as Notify;
use smol::future;
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::net::TcpStream;
use tidewire::socket::{Outbound, SockId, SocketAction};

/// Bytes queued for one machine's sockets before [`drain`] stops pulling.
const MAX_QUEUED: usize = 1 << 20;
/// Read buffer of each socket.
const READ_BUF: usize = 16 << 10;

/// The owner of an [`Outbound`] machine, as the driver sees it.
pub(crate) trait Host: Send + Sync + Sized + 'static {
    /// The machine.
    type Machine: Outbound;
    /// Runs `f` on the machine and its sockets under the owner's lock, then drains what
    /// it set in motion ([`drain`] and the owner's own outputs).
    fn with<T>(&self, f: impl FnOnce(&mut Self::Machine, &mut Sockets<Self>, Instant) -> T) -> T;
    /// Runs a socket's task.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static);
    /// Resolves once the owner takes more socket input (the default: at once).
    fn room(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// The sockets of one machine, kept under its owner's lock.
pub(crate) struct Sockets<H> {
    owner: Weak<H>,
    slots: HashMap<SockId, Slot>,
    /// Bytes in every slot's `out`.
    queued: usize,
}

/// One socket as the driver sees it.
struct Slot {
    out: VecDeque<Bytes>,
    /// The machine closed it: write `out`, then shut down.
    closing: bool,
    notify: Arc<Notify>,
}

impl<H: Host> Sockets<H> {
    /// The sockets of `owner` (build the owner with `Arc::new_cyclic`).
    pub(crate) fn new(owner: Weak<H>) -> Self {
        Self { owner, slots: HashMap::new(), queued: 0 }
    }

    /// How many sockets are open or still writing.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether `sock` is open and not closed by the machine.
    fn is_open(&self, sock: SockId) -> bool {
        self.slots.get(&sock).is_some_and(|s| !s.closing)
    }
}

/// Step 3 of the run loop for the machine's sockets: its bytes to their queues, its
/// actions carried out, until neither has more. Call under the owner's lock after every
/// mutation.
pub(crate) fn drain<H: Host>(host: &H, m: &mut H::Machine, socks: &mut Sockets<H>) {
    loop {
        let mut progress = false;
        while socks.queued < MAX_QUEUED {
            let Some((sock, bytes)) = m.poll_transmit() else { break };
            progress = true;
            if let Some(slot) = socks.slots.get_mut(&sock) {
                socks.queued += bytes.len();
                slot.out.push_back(bytes);
                slot.notify.notify(1);
            }
        }
        while let Some(action) = m.poll_action() {
            progress = true;
            match action {
                SocketAction::Connect { sock, host: name, port } => {
                    let notify = Arc::new(Notify::new());
                    let slot =
                        Slot { out: VecDeque::new(), closing: false, notify: notify.clone() };
                    socks.slots.insert(sock, slot);
                    host.spawn(run_socket(socks.owner.clone(), sock, name, port, notify));
                }
                SocketAction::Close { sock } => {
                    if let Some(slot) = socks.slots.get_mut(&sock) {
                        slot.closing = true;
                        slot.notify.notify(1);
                    }
                }
                _ => {}
            }
        }
        if !progress {
            return;
        }
    }
}

/// Feeds one input for `sock` to the machine unless the machine closed it. `false` when
/// it did, or the owner is gone.
fn feed<H: Host>(
    owner: &Weak<H>,
    sock: SockId,
    f: impl FnOnce(&mut H::Machine, Instant, SockId),
) -> bool {
    let Some(host) = owner.upgrade() else { return false };
    host.with(|m, socks, now| {
        let open = socks.is_open(sock);
        if open {
            f(m, now, sock);
        }
        open
    })
}

/// Waits until the machine closes `sock` (or forgets it).
async fn closing<H: Host>(owner: &Weak<H>, sock: SockId, notify: &Notify) {
    loop {
        let listener = notify.listen();
        let Some(host) = owner.upgrade() else { return };
        if host.with(|_, socks, _| !socks.is_open(sock)) {
            return;
        }
        drop(host);
        listener.await;
    }
}

/// One socket: connects, reads and writes until the machine closes it or it fails.
async fn run_socket<H: Host>(
    owner: Weak<H>,
    sock: SockId,
    name: String,
    port: u16,
    notify: Arc<Notify>,
) {
    let connect = async { Some(TcpStream::connect((name.as_str(), port)).await) };
    let connected = future::or(connect, async {
        closing(&owner, sock, &notify).await;
        None
    })
    .await;
    match connected {
        Some(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            if feed(&owner, sock, Outbound::handle_connected) {
                let reader = read_socket(&owner, sock, stream.clone());
                let writer = write_socket(&owner, sock, stream.clone(), &notify);
                future::or(reader, writer).await;
            }
            let _ = stream.shutdown(Shutdown::Both);
        }
        Some(Err(_)) => {
            feed(&owner, sock, Outbound::handle_error);
        }
        None => {}
    }
    if let Some(host) = owner.upgrade() {
        host.with(|_, socks, _| {
            if let Some(slot) = socks.slots.remove(&sock) {
                socks.queued -= slot.out.iter().map(Bytes::len).sum::<usize>();
            }
        });
    }
}

/// Feeds what `sock` reads to the machine; returns on an error (after end of file it
/// waits for the machine to close the socket).
async fn read_socket<H: Host>(owner: &Weak<H>, sock: SockId, mut stream: TcpStream) {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let Some(host) = owner.upgrade() else { return };
        host.room().await;
        drop(host);
        let read = stream.read(&mut buf).await;
        match read {
            Ok(0) => {
                feed(owner, sock, Outbound::handle_eof);
                return future::pending().await;
            }
            Ok(n) => {
                feed(owner, sock, |m, now, sock| m.handle_read(now, sock, &buf[..n]));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                feed(owner, sock, Outbound::handle_error);
                return;
            }
        }
    }
}

/// Writes what [`drain`] queued for `sock`; returns once the machine closed it (and its
/// bytes are written) or a write failed.
async fn write_socket<H: Host>(
    owner: &Weak<H>,
    sock: SockId,
    mut stream: TcpStream,
    notify: &Notify,
) {
    loop {
        let listener = notify.listen();
        let Some(host) = owner.upgrade() else { return };
        let taken = host.with(|_, socks, _| {
            let slot = socks.slots.get_mut(&sock)?;
            let chunks: Vec<Bytes> = slot.out.drain(..).collect();
            let close = slot.closing;
            socks.queued -= chunks.iter().map(Bytes::len).sum::<usize>();
            Some((chunks, close))
        });
        drop(host);
        let Some((chunks, close)) = taken else { return };
        if !chunks.is_empty() {
            for chunk in &chunks {
                if stream.write_all(chunk).await.is_err() {
                    feed(owner, sock, Outbound::handle_error);
                    return;
                }
            }
            continue;
        }
        if close {
            let _ = stream.flush().await;
            return;
        }
        listener.await;
    }
}
