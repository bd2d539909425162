//! What the interop tests of both adapters share: the Python environment
//! (`scripts/py-venv.sh`), child processes that are killed when their guard drops, every wait
//! bounded in time, and the data both sides agree on (`tests/interop/server.py`).
//!
//! Network only on 127.0.0.1.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long `scripts/py-venv.sh` may take (a fresh venv plus one pip install).
const VENV_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the whole `client.py` battery may take against a debug-built server.
pub const CLIENT_PY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `server.py` may take to print its port.
const SERVER_PY_START: Duration = Duration::from_secs(30);
/// The bound of one step of a Tidewire client test (a round trip, a close…).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The sizes of the echo round trips, in bytes: around each frame-length encoding
/// (7-bit, 16-bit, 64-bit) and up to 16 MiB.
pub const SIZES: [usize; 8] = [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20];

/// What `server.py` sends on `/fragmented`, as whole messages.
pub const FRAGMENTED_TEXT: &str = "fragmented ✓ message";
/// The binary message of `/fragmented`: the bytes 0..=255 (sent in three fragments).
pub fn fragmented_binary() -> Vec<u8> {
    (0..=255u8).collect()
}

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The venv's python, from `scripts/py-venv.sh` (run once per test binary). Panics — the
/// test fails, it is never skipped — when the environment cannot be set up.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = PYTHON.get_or_init(|| {
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("scripts/py-venv.sh"));
        let out = run_bounded(cmd, VENV_TIMEOUT, "scripts/py-venv.sh");
        if !out.status.is_some_and(|s| s.success()) {
            return Err(format!("scripts/py-venv.sh failed:\n{}", out.describe()));
        }
        let path = out.stdout.lines().last().unwrap_or("").trim().to_owned();
        if path.is_empty() || !Path::new(&path).exists() {
            return Err(format!(
                "scripts/py-venv.sh printed no usable python:\n{}",
                out.describe()
            ));
        }
        Ok(PathBuf::from(path))
    });
    match result {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn python_command(script: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/interop").join(script))
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// A child process that is killed (and reaped) when the guard drops, so a failing or
/// timed-out test never leaves one behind.
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd`; panics with `name` when it cannot be started.
    pub fn spawn(mut cmd: Command, name: &str) -> Self {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child, name: name.to_owned() }
    }

    /// Waits for the child to exit until `deadline`; kills it and returns `None` after.
    pub fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {}
                Err(e) => panic!("waiting for {}: {e}", self.name),
            }
            if Instant::now() >= deadline {
                self.kill();
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Collects a pipe into a string on its own thread (so a chatty child never blocks on a
/// full pipe), echoing each line to the test's captured stderr with a prefix.
fn collect(
    pipe: impl Read + Send + 'static,
    prefix: String,
) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    let handle = thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            eprintln!("{prefix}{line}");
            let mut t = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            t.push_str(&line);
            t.push('\n');
        }
    });
    (text, handle)
}

/// What a bounded run of a process left.
pub struct Output {
    /// `None` when it was killed at the time limit.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub name: String,
    pub timeout: Duration,
}

impl Output {
    pub fn describe(&self) -> String {
        let status = match self.status {
            Some(s) => format!("{s}"),
            None => format!("KILLED after the {:?} time limit", self.timeout),
        };
        format!(
            "{}: {status}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.name, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion, killed at `timeout`, with stdout and stderr collected.
pub fn run_bounded(mut cmd: Command, timeout: Duration, name: &str) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let deadline = Instant::now() + timeout;
    let mut guard = ChildGuard::spawn(cmd, name);
    let (out, out_thread) =
        collect(guard.child.stdout.take().expect("piped"), format!("[{name}] "));
    let (err, err_thread) =
        collect(guard.child.stderr.take().expect("piped"), format!("[{name} stderr] "));
    let status = guard.wait_until(deadline);
    drop(guard);
    // The pipes close with the child (grandchildren are not expected).
    let _ = out_thread.join();
    let _ = err_thread.join();
    let take = |m: &Arc<Mutex<String>>| {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    };
    Output { status, stdout: take(&out), stderr: take(&err), name: name.to_owned(), timeout }
}

/// Runs the `client.py` battery against the echo server at `url` (with `--token` when the
/// server requires one) and fails the test unless it exits 0.
pub fn run_client_py(url: &str, token: Option<&str>) {
    run_client_py_with(url, token, &[]);
}

/// [`run_client_py`] with more arguments (e.g. `--deflate OFFER --expect-deflate`); returns
/// the battery's standard output.
pub fn run_client_py_with(url: &str, token: Option<&str>, args: &[&str]) -> String {
    let mut cmd = python_command("client.py");
    cmd.arg("--url").arg(url).args(args);
    if let Some(t) = token {
        cmd.arg("--token").arg(t);
    }
    let out = run_bounded(cmd, CLIENT_PY_TIMEOUT, "client.py");
    assert!(
        out.status.is_some_and(|s| s.success()),
        "the websockets client battery failed against {url}:\n{}",
        out.describe()
    );
    assert!(
        out.stdout.contains(" passed, 0 failed"),
        "client.py printed no closing line:\n{}",
        out.describe()
    );
    out.stdout
}

/// `max_frame` of the Tidewire peers with permessage-deflate: a 16 MiB message that does not
/// compress (random bytes) is a little larger once compressed (DEFLATE's stored blocks, 5
/// bytes per 64 KiB), over the default 16 MiB.
pub const DEFLATE_MAX_FRAME: usize = 32 << 20;

/// permessage-deflate with every message compressed (`min_size` 0: 0 and 1 B messages too),
/// otherwise the defaults (context takeover, window 15).
pub fn deflate_all() -> tidewire::ws::deflate::DeflateConfig {
    let mut d = tidewire::ws::deflate::DeflateConfig::default();
    d.min_size = 0;
    d
}

/// The `--expect-deflate` output of a client.py battery: every answer carries the expected
/// context-takeover parameters and the server's echoes came compressed: all of them with
/// context takeover on the server's side (the Tidewire servers of these tests compress
/// every message), those that shrink without it (Tidewire sends a message that does not
/// shrink uncompressed when its compressor has no context to keep in step: random bytes,
/// messages of a few bytes).
pub fn check_battery_deflate(stdout: &str, snct: bool, cnct: bool, offer: &str) {
    let (agreed, compressed, total) = deflate_report(stdout);
    for header in &agreed {
        assert_agreement(header, snct, cnct, &format!("offer {offer:?}:\n{stdout}"));
    }
    assert!(total > 200, "only {total} messages received:\n{stdout}");
    if snct {
        // The 200 pipelined messages alone hold 100 texts of 7 to 1393 bytes.
        assert!(compressed >= 50, "offer {offer:?}: {compressed} of {total} compressed:\n{stdout}");
    } else {
        assert_eq!(compressed, total, "offer {offer:?}: not every echo compressed:\n{stdout}");
    }
    eprintln!("offer {offer:?}: agreed {agreed:?}, {compressed} of {total} echoes compressed");
}

/// The permessage-deflate settings of a client.py battery (`--deflate`), named by the
/// context-takeover parameters the offer carries, and whether each is then expected in the
/// server's answer.
pub const TAKEOVER_MODES: [(bool, bool); 4] =
    [(false, false), (true, false), (false, true), (true, true)];

/// `server_no_context_takeover,client_no_context_takeover` or a part of it (the parameters
/// that are `true`), as `--deflate` of client.py and server.py take them; `""` for neither.
pub fn takeover_params(
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
) -> String {
    let mut p = Vec::new();
    if server_no_context_takeover {
        p.push("server_no_context_takeover");
    }
    if client_no_context_takeover {
        p.push("client_no_context_takeover");
    }
    p.join(",")
}

/// Checks a `Sec-WebSocket-Extensions` answer: permessage-deflate, with exactly the
/// context-takeover parameters expected.
pub fn assert_agreement(header: &str, snct: bool, cnct: bool, context: &str) {
    let params: Vec<&str> = header.split(';').map(str::trim).collect();
    assert_eq!(params.first(), Some(&"permessage-deflate"), "answer {header:?}\n{context}");
    assert_eq!(
        params.contains(&"server_no_context_takeover"),
        snct,
        "server_no_context_takeover in {header:?}\n{context}"
    );
    assert_eq!(
        params.contains(&"client_no_context_takeover"),
        cnct,
        "client_no_context_takeover in {header:?}\n{context}"
    );
}

/// What client.py --expect-deflate printed: the answers (`deflate agreed: …`, split on
/// ` | `) and the compressed and total messages received (`deflate received: N of M …`).
pub fn deflate_report(stdout: &str) -> (Vec<String>, u64, u64) {
    let agreed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("deflate agreed: "))
        .unwrap_or_else(|| panic!("no `deflate agreed` line:\n{stdout}"));
    let received = stdout
        .lines()
        .find_map(|l| l.strip_prefix("deflate received: "))
        .unwrap_or_else(|| panic!("no `deflate received` line:\n{stdout}"));
    let mut words = received.split(' ');
    let compressed = words.next().and_then(|w| w.parse().ok()).expect(received);
    let total = words.nth(1).and_then(|w| w.parse().ok()).expect(received);
    (agreed.split(" | ").map(str::to_owned).collect(), compressed, total)
}

/// The value of `"key": N` in a flat JSON object of server.py (`/deflate`'s `stats`).
pub fn json_number(json: &str, key: &str) -> u64 {
    let at = json.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("no {key} in {json}"));
    json[at + key.len() + 3..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number for {key} in {json}"))
}

/// The value of `"extensions": "…"` in the first message of server.py's `/deflate` (`None`
/// for `null`).
pub fn json_extensions(json: &str) -> Option<String> {
    let rest = json.split_once("\"extensions\":")?.1.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

/// A running `tests/interop/server.py` on 127.0.0.1. Killed on drop; it also stops by itself
/// when its stdin (held here) closes.
pub struct PyServer {
    pub port: u16,
    _stdin: Option<ChildStdin>,
    guard: ChildGuard,
    stderr: Arc<Mutex<String>>,
}

impl PyServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With more arguments, e.g. `--deflate server_no_context_takeover`.
    pub fn start_with(args: &[&str]) -> Self {
        let mut cmd = python_command("server.py");
        cmd.args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut guard = ChildGuard::spawn(cmd, "server.py");
        let stdin = guard.child.stdin.take();
        let (stderr, _) =
            collect(guard.child.stderr.take().expect("piped"), "[server.py stderr] ".to_owned());
        let stdout = guard.child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            for line in lines.map_while(Result::ok) {
                eprintln!("[server.py] {line}");
            }
        });
        let first = rx.recv_timeout(SERVER_PY_START);
        let port = match first {
            Ok(Some(Ok(line))) => line
                .strip_prefix("listening on ")
                .and_then(|p| p.trim().parse::<u16>().ok())
                .unwrap_or_else(|| panic!("server.py printed {line:?}, not `listening on PORT`")),
            other => {
                drop(guard);
                thread::sleep(Duration::from_millis(100));
                let err = stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                panic!(
                    "server.py did not print its port within {SERVER_PY_START:?} ({other:?}):\n{err}"
                );
            }
        };
        Self { port, _stdin: stdin, guard, stderr }
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// What the server logged so far (one line per connection).
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// The payload of a text echo of `size` bytes: 1- to 4-byte UTF-8 characters, exactly `size`
/// bytes long.
pub fn text_of_size(size: usize) -> String {
    let unit = "é€😀x"; // 2 + 3 + 4 + 1 = 10 bytes
    let mut s = unit.repeat(size / 10);
    s.extend(std::iter::repeat_n('a', size % 10));
    assert_eq!(s.len(), size);
    s
}

/// The payload of a binary echo of `size` bytes (every byte value, in a scrambled order).
pub fn binary_of_size(size: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::try_from(size).unwrap_or(u32::MAX);
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Runs `f` on its own thread and fails the test when it does not finish within `limit`
/// (the thread is left behind; the test's child guards are dropped by the panic).
pub fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: not done within {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the sender is dropped only after sending"),
        },
    }
}

/// Polls `cond` every 20 ms until it holds; fails the test with `what()` after `limit`.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool, what: impl FnOnce() -> String) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{} (after {limit:?})", what());
        thread::sleep(Duration::from_millis(20));
    }
}

/// The payload the Tidewire clients ping `server.py` with.
pub const CLIENT_PING: &[u8] = b"tidewire-client-ping";

/// Runs `client.py --hold CODE`: once its connection is open, calls `on_open` (which makes
/// the server close it), then fails the test unless the client saw a complete closing
/// handshake with `code`. Returns what `on_open` returned.
pub fn run_client_py_hold<R>(url: &str, code: u16, on_open: impl FnOnce() -> R) -> R {
    let mut cmd = python_command("client.py");
    cmd.arg("--url").arg(url).arg("--hold").arg(code.to_string());
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let deadline = Instant::now() + CLIENT_PY_TIMEOUT;
    let mut guard = ChildGuard::spawn(cmd, "client.py --hold");
    let (stderr, _) =
        collect(guard.child.stderr.take().expect("piped"), "[client.py stderr] ".to_owned());
    let stdout = guard.child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("[client.py] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let log = |lines: &[String]| {
        let err = stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        format!("--- stdout ---\n{}\n--- stderr ---\n{err}", lines.join("\n"))
    };
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(SERVER_PY_START) {
            Ok(line) if line == "open" => break,
            Ok(line) => lines.push(line),
            Err(_) => {
                panic!("client.py --hold did not open within {SERVER_PY_START:?}\n{}", log(&lines))
            }
        }
    }
    let result = on_open();
    let status = guard.wait_until(deadline);
    thread::sleep(Duration::from_millis(50));
    lines.extend(rx.try_iter());
    assert!(
        status.is_some_and(|s| s.success()),
        "client.py --hold {code} against {url}: {status:?}\n{}",
        log(&lines)
    );
    result
}
