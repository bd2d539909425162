//! Polling (`/poll`) against a real HTTP client (issue 5): Python's standard library
//! (`tests/browser/poll_client.py`, `http.client` only) against the std `ticker` example —
//! first request, catch-up, `If-None-Match` → 304, a held long poll answered by the next
//! tick, a gone position, bad positions → 400 — and a poll that resumes exactly across a
//! kill and restart of the ticker (`--state`).
//!
//! Needs only `python3` (no packages): a missing one fails the test, it is never skipped.
//! Every wait is bounded; the ticker is killed on every path. Network only on 127.0.0.1.

#[path = "../browser/harness.rs"]
mod harness;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use harness::{Output, Scratch, Ticker, read_state, repo_root, run_bounded, wait_for};

/// The ticker's interval here: a long poll is answered within it.
const EVERY_MS: u64 = 300;
/// The bound of one run of the client.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

fn poll_client(base: &str, extra: &[&str]) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("tests/browser/poll_client.py"))
        .arg("--url")
        .arg(base)
        .args(extra)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    run_bounded(cmd, CLIENT_TIMEOUT, "poll_client.py")
}

#[test]
fn python_http_client_polls_the_ticker() {
    let started = Instant::now();
    let ticker = Ticker::ticker(0, EVERY_MS, None);
    let out = poll_client(&ticker.base(), &[]);
    assert!(out.success(), "poll_client.py failed:\n{}", out.describe());
    for check in ["first", "catch_up", "not_modified", "long_poll", "gone", "bad_pos"] {
        assert!(
            out.stdout.lines().any(|l| l == format!("ok {check}")),
            "check {check} did not pass:\n{}",
            out.describe()
        );
    }
    assert!(out.stdout.contains("poll_client: 6 ok, 0 failed"), "{}", out.describe());
    eprintln!("took {:?}", started.elapsed());
}

#[test]
fn a_poll_resumes_exactly_across_a_ticker_kill_and_restart() {
    let scratch = Scratch::new("poll-restart");
    let state = scratch.path().join("ticker.state");
    let mut ticker = Ticker::ticker(0, EVERY_MS, Some(&state));
    let port = ticker.port;

    // Kill between two ticks (see the browser test): the saved position is the last one
    // any client can have.
    let (first, _) =
        wait_for(Duration::from_secs(5), || read_state(&state), || "no state file".into());
    let (saved, saved_n) = wait_for(
        Duration::from_secs(5),
        || read_state(&state).filter(|(p, _)| *p != first),
        || "the state file does not move".into(),
    );
    thread::sleep(Duration::from_millis(EVERY_MS / 3));
    ticker.kill();
    assert_eq!(read_state(&state), Some((saved.clone(), saved_n)), "a tick after the kill");

    thread::sleep(Duration::from_millis(500));
    let ticker = Ticker::ticker(port, EVERY_MS, Some(&state));
    // Two ticks of the new life, at least.
    thread::sleep(Duration::from_millis(EVERY_MS * 2 + 150));
    let out = poll_client(&ticker.base(), &["--resume-from", &saved, "--at-least", "2"]);
    assert!(out.success(), "polling from {saved} after the restart:\n{}", out.describe());
    let resumed = out.stdout.lines().find_map(|l| l.strip_prefix("resumed ")).unwrap_or("");
    let (epoch, offset) = saved.split_once(':').expect("EPOCH:OFFSET");
    let offset: u64 = offset.parse().expect("offset");
    let first_new = resumed.split(' ').next().unwrap_or("");
    assert_eq!(
        first_new,
        format!("{epoch}:{}", offset + 1),
        "the first tick after the restart is not the next one:\n{}",
        out.describe()
    );
}
