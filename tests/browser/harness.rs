//! What the real-browser and real-HTTP-client tests share (`tests/tests/browser.rs`,
//! `tests/tests/poll_http.rs`; included with `#[path]`):
//!
//! - [`browser_setup`]: `scripts/browser-setup.sh` (Debian's Chromium and ChromeDriver, and
//!   selenium in the Python venv), run once per test binary. A failure fails the test; it is
//!   never skipped.
//! - [`ticker_exe`]: the `ticker` example of `tidewire-std`, built with
//!   `cargo build -p tidewire-std --example ticker` and located from cargo's own report (so it
//!   works on a clean checkout, whatever the target directory).
//! - [`Ticker`]: a running ticker on 127.0.0.1, killed (SIGKILL) when dropped.
//! - [`Driven`]: a child process talked to line by line (the selenium script), in its own
//!   process group; on drop the group and every process that names the run's scratch
//!   directory (Chromium, by its `--user-data-dir`) are killed.
//! - [`Scratch`]: a fresh directory under the target directory, removed when dropped.
//!
//! Every wait is bounded. Network only on 127.0.0.1.

#![allow(dead_code, unreachable_pub)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long `scripts/browser-setup.sh` may take (apt-get of Chromium and a pip install on a
/// fresh machine).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(900);
/// How long building the ticker may take (it waits for cargo's lock behind other builds).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// How long a ticker may take to print `listening on ADDR`.
pub const TICKER_START: Duration = Duration::from_secs(20);

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The cargo target directory: `CARGO_TARGET_DIR` (relative to the workspace) or `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// What `scripts/browser-setup.sh` printed.
#[derive(Clone, Debug)]
pub struct Setup {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
    /// The venv's python, with selenium.
    pub python: PathBuf,
}

/// Runs `scripts/browser-setup.sh` once per test binary. Panics (the test fails) when it
/// fails or prints no usable paths.
pub fn browser_setup() -> Setup {
    static SETUP: OnceLock<Result<Setup, String>> = OnceLock::new();
    let result = SETUP.get_or_init(|| {
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("scripts/browser-setup.sh")).current_dir(repo_root());
        let started = Instant::now();
        let out = run_bounded(cmd, SETUP_TIMEOUT, "scripts/browser-setup.sh");
        if !out.success() {
            return Err(format!("scripts/browser-setup.sh failed:\n{}", out.describe()));
        }
        eprintln!("scripts/browser-setup.sh took {:?}", started.elapsed());
        let field = |key: &str| {
            out.stdout
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(|v| PathBuf::from(v.trim()))
                .filter(|p| p.exists())
                .ok_or_else(|| {
                    format!("scripts/browser-setup.sh printed no usable {key}:\n{}", out.describe())
                })
        };
        Ok(Setup {
            chromium: field("chromium")?,
            chromedriver: field("chromedriver")?,
            python: field("python")?,
        })
    });
    match result {
        Ok(s) => s.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// The ticker example's binary, built once per test binary with cargo (the one running the
/// tests when known). Panics when the build fails.
pub fn ticker_exe() -> PathBuf {
    static EXE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = EXE.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-p",
            "tidewire-std",
            "--example",
            "ticker",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(repo_root());
        // Its stdout is cargo's JSON messages: kept for the diagnosis, not echoed.
        let out = run_bounded_with(cmd, BUILD_TIMEOUT, "cargo build --example ticker", false);
        if !out.success() {
            return Err(format!("building the ticker failed:\n{}", out.describe()));
        }
        let exe = out
            .stdout
            .lines()
            .filter(|l| l.contains(r#""reason":"compiler-artifact""#))
            .filter(|l| l.contains(r#""name":"ticker""#) && l.contains(r#""kind":["example"]"#))
            .find_map(json_field_executable)
            .map(PathBuf::from)
            .filter(|p| p.is_file());
        exe.ok_or_else(|| {
            format!("cargo reported no executable for the ticker:\n{}", out.describe())
        })
    });
    match result {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// The string value of `"executable"` in one line of cargo's JSON messages.
fn json_field_executable(line: &str) -> Option<String> {
    let rest = &line[line.find(r#""executable":""#)? + r#""executable":""#.len()..];
    let mut out = String::new();
    let mut chars = rest.chars();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                c => out.push(c), // `\\`, `\"`, `\/`
            },
            c => out.push(c),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------

/// Collects a pipe into a string on its own thread (so a chatty child never blocks on a
/// full pipe), echoing each line to the test's captured stderr with a prefix (`None`: not
/// echoed).
pub fn collect(
    pipe: impl Read + Send + 'static,
    prefix: Option<String>,
) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    let handle = thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some(prefix) = &prefix {
                eprintln!("{prefix}{line}");
            }
            let mut t = sink.lock().unwrap_or_else(PoisonError::into_inner);
            t.push_str(&line);
            t.push('\n');
        }
    });
    (text, handle)
}

fn text(m: &Arc<Mutex<String>>) -> String {
    m.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// What a bounded run printed.
#[derive(Debug)]
pub struct Output {
    /// `None`: killed at the time limit.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub name: String,
    pub timeout: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn describe(&self) -> String {
        let status = match self.status {
            Some(s) => format!("{s}"),
            None => format!("killed after {:?}", self.timeout),
        };
        format!(
            "{} exited: {status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.name, self.stdout, self.stderr
        )
    }
}

/// A child killed (SIGKILL) and reaped when dropped.
pub struct Guard {
    child: Child,
    name: String,
}

impl Guard {
    pub fn spawn(mut cmd: Command, name: &str) -> Self {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child, name: name.to_owned() }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child still runs (not yet reaped).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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

    /// SIGKILL (if still running), then reap.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` to completion, killed at `timeout`, with stdout and stderr collected (and
/// echoed to the test's captured stderr).
pub fn run_bounded(cmd: Command, timeout: Duration, name: &str) -> Output {
    run_bounded_with(cmd, timeout, name, true)
}

/// [`run_bounded`], echoing stdout only when `echo_stdout` (stderr always).
pub fn run_bounded_with(
    mut cmd: Command,
    timeout: Duration,
    name: &str,
    echo_stdout: bool,
) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let deadline = Instant::now() + timeout;
    let mut guard = Guard::spawn(cmd, name);
    let (out, out_thread) = collect(
        guard.child.stdout.take().expect("piped"),
        echo_stdout.then(|| format!("[{name}] ")),
    );
    let (err, err_thread) =
        collect(guard.child.stderr.take().expect("piped"), Some(format!("[{name} stderr] ")));
    let status = guard.wait_until(deadline);
    drop(guard);
    // A grandchild that outlives its parent (none expected) could hold the pipes open:
    // wait for the readers only a little.
    let limit = Instant::now() + Duration::from_secs(5);
    for t in [out_thread, err_thread] {
        while !t.is_finished() && Instant::now() < limit {
            thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
    Output { status, stdout: text(&out), stderr: text(&err), name: name.to_owned(), timeout }
}

/// SIGKILL to one process by its id, with the `kill` command (no libc here).
fn kill_pid(pid: &str) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", pid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGKILL to every process whose command line mentions `marker` (a path unique to this
/// run, such as Chromium's `--user-data-dir`): only this run's processes can match it.
pub fn kill_processes_mentioning(marker: &str) {
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    let me = std::process::id().to_string();
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            kill_pid(&pid);
        }
    }
}

/// A fresh directory under `<target>/browser/tmp/`, removed when dropped.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let unique = format!(
            "{name}-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = target_dir().join("browser/tmp").join(unique);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Whatever still runs from it (a browser left by a failed run) goes first.
        kill_processes_mentioning(&self.path.to_string_lossy());
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A child process talked to line by line: its stdout lines arrive on a channel, lines
/// are written to its stdin. It runs in its own process group; when dropped, the group (if
/// the child still runs) and every process that mentions `marker` are killed.
pub struct Driven {
    guard: Guard,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    marker: Option<String>,
    /// Every stdout line so far.
    pub seen: Vec<String>,
}

impl Driven {
    pub fn spawn(mut cmd: Command, name: &str, marker: Option<String>) -> Self {
        use std::os::unix::process::CommandExt as _;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut guard = Guard::spawn(cmd, name);
        let stdin = guard.child.stdin.take();
        let (stderr, _) =
            collect(guard.child.stderr.take().expect("piped"), Some(format!("[{name} stderr] ")));
        let stdout = guard.child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        let prefix = format!("[{name}] ");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("{prefix}{line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { guard, stdin, lines, stderr, marker, seen: Vec::new() }
    }

    /// The next stdout line within `limit`; `None` at the limit or when stdout closed.
    pub fn next_line(&mut self, limit: Duration) -> Option<String> {
        match self.lines.recv_timeout(limit) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Reads lines until one satisfies `pred` (returned) within `limit` overall; panics with
    /// the transcript otherwise.
    pub fn expect_line(
        &mut self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(line) if pred(&line) => return line,
                Some(line) if line.starts_with("timeout") => {
                    thread::sleep(Duration::from_millis(300));
                    panic!("{what}: the script gave up: {line}\n{}", self.transcript());
                }
                Some(_) => {}
                None => {
                    thread::sleep(Duration::from_millis(100));
                    panic!("{what}: not within {limit:?}\n{}", self.transcript());
                }
            }
        }
    }

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to the script: {e}\n{}", self.transcript()));
    }

    /// Waits for the exit until `limit` (killed after it: `None`).
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.guard.wait_until(Instant::now() + limit)
    }

    /// Everything it printed so far.
    pub fn transcript(&mut self) -> String {
        self.seen.extend(self.lines.try_iter());
        let mut s = String::from("--- stdout ---\n");
        for l in &self.seen {
            let _ = writeln!(s, "{l}");
        }
        let _ = write!(s, "--- stderr ---\n{}", text(&self.stderr));
        s
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.guard.running() {
            // Not reaped yet, so the group id is still ours.
            kill_pid(&format!("-{}", self.guard.id()));
        }
        self.guard.kill();
        if let Some(marker) = &self.marker {
            kill_processes_mentioning(marker);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The ticker
// ---------------------------------------------------------------------------------------

/// A running example of ours on 127.0.0.1 that prints `listening on ADDR` once ready (the
/// `ticker`, or `live`). SIGKILLed when dropped (or by [`Served::kill`]).
pub struct Served {
    guard: Guard,
    pub port: u16,
    stderr: Arc<Mutex<String>>,
}

/// The `ticker` example.
pub type Ticker = Served;
/// The `live` example (it serves the demo page itself).
pub type LiveServer = Served;

impl Served {
    /// Starts the ticker on `127.0.0.1:port` (0: a free port) publishing every `every_ms`,
    /// with `--state` when given.
    pub fn ticker(port: u16, every_ms: u64, state: Option<&Path>) -> Self {
        let mut args = vec!["--every-ms".to_owned(), every_ms.to_string()];
        if let Some(state) = state {
            args.push("--state".into());
            args.push(state.display().to_string());
        }
        Self::start(&ticker_exe(), "ticker", port, &args)
    }

    /// Starts `live --addr 127.0.0.1:PORT ARGS..` (port 0: a free one).
    pub fn live(port: u16, args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        Self::start(&live_exe(), "live", port, &args)
    }

    /// Starts `exe --addr 127.0.0.1:PORT ARGS..` and waits for `listening on`. A port just
    /// freed by a killed server is tried again for a few seconds.
    fn start(exe: &Path, name: &str, port: u16, args: &[String]) -> Self {
        let deadline = Instant::now() + TICKER_START;
        loop {
            let mut cmd = Command::new(exe);
            cmd.arg("--addr").arg(format!("127.0.0.1:{port}")).args(args);
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut guard = Guard::spawn(cmd, name);
            let prefix = format!("[{name} stderr] ");
            let (stderr, _) = collect(guard.child.stderr.take().expect("piped"), Some(prefix));
            let stdout = guard.child.stdout.take().expect("piped");
            let (tx, rx) = mpsc::channel();
            let tag = format!("[{name}]");
            thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                let _ = tx.send(lines.next());
                for line in lines.map_while(Result::ok) {
                    eprintln!("{tag} {line}");
                }
            });
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Some(Ok(line))) => {
                    let port = line
                        .strip_prefix("listening on ")
                        .and_then(|a| a.trim().rsplit_once(':'))
                        .and_then(|(_, p)| p.parse::<u16>().ok())
                        .unwrap_or_else(|| panic!("the {name} printed {line:?}"));
                    return Self { guard, port, stderr };
                }
                _ => {
                    let status = guard.wait_until(Instant::now() + Duration::from_secs(2));
                    thread::sleep(Duration::from_millis(50));
                    let err = text(&stderr);
                    if port != 0 && err.contains("cannot bind") && Instant::now() < deadline {
                        thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                    panic!("the {name} did not start ({status:?}):\n{err}");
                }
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, no shutdown: open connections break as at a crash.
    pub fn kill(&mut self) {
        self.guard.kill();
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        text(&self.stderr)
    }
}

/// Reads a ticker `--state` file: `(EPOCH:OFFSET, n)`.
pub fn read_state(path: &Path) -> Option<(String, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let (pos, n) = s.trim().split_once(' ')?;
    Some((pos.to_owned(), n.parse().ok()?))
}

/// Polls `cond` every 10 ms until it returns `Some`; panics with `what()` after `limit`.
pub fn wait_for<T>(
    limit: Duration,
    mut cond: impl FnMut() -> Option<T>,
    what: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "{} (after {limit:?})", what());
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// The live demo server (issue 7)
// ---------------------------------------------------------------------------------------

/// Builds `cargo build -p PACKAGE --example EXAMPLE` and returns the executable cargo reports
/// (the same way as [`ticker_exe`]).
pub fn build_example(package: &str, example: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-p",
        package,
        "--example",
        example,
        "--message-format=json-render-diagnostics",
    ])
    .current_dir(repo_root());
    let what = format!("cargo build -p {package} --example {example}");
    let out = run_bounded_with(cmd, BUILD_TIMEOUT, &what, false);
    if !out.success() {
        return Err(format!("{what} failed:\n{}", out.describe()));
    }
    let name = format!(r#""name":"{example}""#);
    out.stdout
        .lines()
        .filter(|l| l.contains(r#""reason":"compiler-artifact""#))
        .filter(|l| l.contains(&name) && l.contains(r#""kind":["example"]"#))
        .find_map(json_field_executable)
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .ok_or_else(|| format!("cargo reported no executable for {example}:\n{}", out.describe()))
}

/// The `live` example of `tidewire-smol`, built once per test binary.
pub fn live_exe() -> PathBuf {
    static EXE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match EXE.get_or_init(|| build_example("tidewire-smol", "live")) {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Milliseconds since the Unix epoch (the browser's `Date.now()` clock).
pub fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}
