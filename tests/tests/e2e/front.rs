//! [`Front`]: a TCP relay on a fixed loopback port in front of a test server, so a test can
//! cut every client off the server (the network, or the server process as the clients see
//! it, goes away) while the server, its hub and its log live on, and later let the clients
//! back in on the same address. It can also be pointed at another server (an instance that
//! takes over the address).
//!
//! The adapters' `Server` owns its hub: a stopped server cannot hand its log to the next
//! one. The scenarios that restart "with the log kept" cut the clients off here instead.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// A relay from `addr` to its target. Cut and resumed by the test; cut when dropped.
pub(crate) struct Front {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    running: Option<Listening>,
}

/// Both sockets of one relayed connection, and how many of its two directions ended.
struct Relayed {
    client: TcpStream,
    server: TcpStream,
    ended: Arc<AtomicUsize>,
}

struct Listening {
    stop: Arc<AtomicBool>,
    /// Every relayed connection that may still be open, to cut them at once.
    sockets: Arc<Mutex<Vec<Relayed>>>,
    thread: thread::JoinHandle<()>,
}

impl Front {
    /// A relay on a free loopback port to `target`.
    pub(crate) fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the front");
        let addr = listener.local_addr().expect("front address");
        let target = Arc::new(Mutex::new(target));
        let running = Some(listen(listener, &target));
        Self { addr, target, running }
    }

    /// The address clients use.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// New connections go to `target` from now on.
    pub(crate) fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap_or_else(PoisonError::into_inner) = target;
    }

    /// Stops listening (connects are refused) and cuts every relayed connection (both
    /// sides see the end of the stream).
    pub(crate) fn cut(&mut self) {
        let Some(l) = self.running.take() else { return };
        l.stop.store(true, Ordering::SeqCst);
        l.thread.join().expect("front thread");
        for r in l.sockets.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            let _ = r.client.shutdown(Shutdown::Both);
            let _ = r.server.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same address.
    pub(crate) fn resume(&mut self) {
        if self.running.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the front cannot bind {} again: {e}",
                        self.addr
                    );
                    thread::sleep(Duration::from_millis(20));
                }
            }
        };
        self.running = Some(listen(listener, &self.target));
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.cut();
    }
}

fn listen(listener: TcpListener, target: &Arc<Mutex<SocketAddr>>) -> Listening {
    listener.set_nonblocking(true).expect("nonblocking listener");
    let stop = Arc::new(AtomicBool::new(false));
    let sockets = Arc::new(Mutex::new(Vec::new()));
    let (flag, all, target) = (stop.clone(), sockets.clone(), target.clone());
    let thread = thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((client, _)) => {
                    let to = *target.lock().unwrap_or_else(PoisonError::into_inner);
                    let _ = relay(client, to, &all);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(2));
                }
                Err(_) => thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    Listening { stop, sockets, thread }
}

/// Connects to `to` and copies both ways on two threads; a client whose server cannot be
/// reached is closed at once.
fn relay(client: TcpStream, to: SocketAddr, all: &Arc<Mutex<Vec<Relayed>>>) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let ended = Arc::new(AtomicUsize::new(0));
    {
        let mut all = all.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|r| r.ended.load(Ordering::SeqCst) < 2);
        let (client, server) = (client.try_clone()?, server.try_clone()?);
        all.push(Relayed { client, server, ended: ended.clone() });
    }
    let (c2, s2, e2) = (client.try_clone()?, server.try_clone()?, ended.clone());
    thread::spawn(move || {
        pipe(client, server);
        ended.fetch_add(1, Ordering::SeqCst);
    });
    thread::spawn(move || {
        pipe(s2, c2);
        e2.fetch_add(1, Ordering::SeqCst);
    });
    Ok(())
}

/// Copies `from` to `to` until the end of `from` (then ends `to`'s direction) or an error
/// (then cuts both).
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    match io::copy(&mut from, &mut to) {
        Ok(_) => {
            let _ = to.shutdown(Shutdown::Write);
        }
        Err(_) => {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        }
    }
}
