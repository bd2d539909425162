//! A throwaway `redis-server` for the tests that need a real one (the test fails, never
//! skips, when it is not installed: run `scripts/redis-setup.sh`).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on 127.0.0.1 without persistence: a restart is a new, empty instance.
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    child: Option<Child>,
}

fn setup_hint() -> String {
    "redis-server is not installed: run scripts/redis-setup.sh (it installs Debian's \
     redis-server with apt-get)"
        .to_owned()
}

impl RedisServer {
    /// Starts a server on a free port. Panics (the test fails) without `redis-server`.
    pub(crate) fn start() -> Self {
        let ok = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{}", setup_hint());
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut server = Self { port, child: None };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no", "--logfile", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning redis-server: {e}; {}", setup_hint()));
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (its data is gone).
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a new, empty server on the same port.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
