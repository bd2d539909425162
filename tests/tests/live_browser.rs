//! The live demo in a real browser (issue 7): headless Chromium from Debian's packages,
//! driven over WebDriver by selenium (`tests/browser/live.py`), against the page that the
//! smol `live` example serves itself.
//!
//! The page runs two Tidewire clients: the dashboard (`public:ticks`) on SSE by default
//! (transports `sse`, `poll`), the chat (`chat:lobby`) on WebSocket (`ws`, `sse`, `poll`);
//! `#transport` reads "chat: ws · dashboard: sse". Throughout both tests the script also
//! checks each page's banner against its two clients many times (`banner-check`): hidden
//! exactly when both are open, the offline notice exactly when the chat client holds queued
//! messages and is not open, the countdown to the soonest retry of a reconnecting client.
//!
//! - [`live_page_survives_a_server_restart`]: two browser sessions (ann and bob) load the
//!   page; the chat opens on WebSocket and the dashboard on SSE (neither ever on anything
//!   else before the kill); ticks arrive; ann's chat message shows once in both. The server is
//!   killed (SIGKILL): the banner appears in both pages within the client's heartbeat bound
//!   and counts down ("Reconnecting in N s"); a message ann sends meanwhile is queued
//!   ("Offline — messages will be sent when back"). The server is restarted on the same port
//!   (a new hub: a new epoch, so the pages get `recovered:false` and refetch): the banners
//!   go, the dashboards never count a gap or a duplicate tick, and the offline message shows
//!   exactly once in both chat logs. The pages load with `?upgrade=3000`: a client that came
//!   back on a worse transport of its list (the rotation goes on while the server is down)
//!   tries its better ones every 3 s, so both pages end with the chat on WebSocket and the
//!   dashboard on SSE again (ticking there, still without a gap or a duplicate).
//! - [`live_page_falls_back_when_websocket_is_blocked`]: the server runs with `--no-ws`
//!   (`/ws` answers 502): the chat tries WebSocket, then falls back to SSE; the dashboard is
//!   on SSE from the start (it never tries WebSocket); both keep working (ticks, chat both
//!   ways), while the chat's WebSocket probes (every 3 s) keep failing unseen.
//!
//! When the chat is on WebSocket, its socket negotiated permessage-deflate (the browser's
//! `ws.extensions`, read through the client's `extensions` getter, web/tidewire.js): the live
//! demo accepts it with no context takeover either way.
//!
//! Screenshots (test artifacts): `target/browser/live-connected.png` (the page open, with
//! ticks, the chat message and presence) and `target/browser/live-reconnecting.png` (the
//! banner counting down while the server is down, with the queued message).
//!
//! Set-up with `scripts/browser-setup.sh`: a failure fails the test, it is never skipped.
//! Every wait is bounded; the server, ChromeDriver and Chromium are killed on every path.
//! Network only on 127.0.0.1.

#[path = "../browser/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Driven, LiveServer, Scratch, Setup, browser_setup, now_ms, target_dir};

/// Ticks every 300 ms: several arrive in every phase of the test.
const TICK_MS: &str = "300";
/// How long the browsers may take to start and show the page open (a cold start on CI).
const FIRST_OPEN: Duration = Duration::from_secs(90);
/// The bound of the script's own waits (seconds, passed as `--timeout`).
const SCRIPT_WAIT_S: u64 = 25;
/// How long the pages may take to reconnect after the restart: the client's backoff grew
/// while the server was down (full jitter, up to 2^attempt s), and the rotation through
/// the transports may need one more round.
const RECONNECT_S: u64 = 45;
/// The page's `?upgrade=`: how often a client that fell back tries its better transports.
const UPGRADE_MS: &str = "3000";

fn live_script(setup: &Setup, scratch: &Scratch, base: &str, mode: &str) -> Command {
    let mut cmd = Command::new(&setup.python);
    cmd.arg(harness::repo_root().join("tests/browser/live.py"))
        .arg("--chromium")
        .arg(&setup.chromium)
        .arg("--chromedriver")
        .arg(&setup.chromedriver)
        .arg("--profile-dir")
        .arg(scratch.path())
        .args(["--base", base, "--mode", mode])
        .args(["--timeout", &SCRIPT_WAIT_S.to_string()])
        .args(["--reconnect-timeout", &RECONNECT_S.to_string()])
        .args(["--upgrade-ms", UPGRADE_MS])
        .arg("--failed-png")
        .arg(target_dir().join(format!("browser/live-{mode}-failed.png")))
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // selenium must not look for drivers or browsers itself (it is given both).
        .env("SE_OFFLINE", "true")
        .env("SE_AVOID_STATS", "true");
    cmd
}

/// The `fact SESSION KEY VALUE` lines: (SESSION, KEY) -> VALUE.
fn facts(lines: &[String]) -> BTreeMap<(String, String), String> {
    lines
        .iter()
        .filter_map(|l| {
            let mut p = l.strip_prefix("fact ")?.splitn(3, ' ');
            let (s, k, v) = (p.next()?, p.next()?, p.next().unwrap_or(""));
            Some(((s.to_owned(), k.to_owned()), v.to_owned()))
        })
        .collect()
}

/// The `banner-check SESSION samples=K bad=M` lines: many looks, none false.
fn check_banners(lines: &[String], transcript: &str, min_samples: u64) {
    for s in ["A", "B"] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("banner-check {s} ")))
            .unwrap_or_else(|| panic!("no `banner-check {s}`:\n{transcript}"));
        let samples: u64 = kv(line, "samples").and_then(|v| v.parse().ok()).expect(line);
        let bad: u64 = kv(line, "bad").and_then(|v| v.parse().ok()).expect(line);
        assert_eq!(bad, 0, "the banner of {s} disagreed with its clients: {line}\n{transcript}");
        assert!(samples >= min_samples, "only {samples} looks at the banner of {s}: {line}");
        eprintln!("{line}");
    }
}

/// `key=VALUE` in a line of the script.
fn kv<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ').find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

struct Facts {
    map: BTreeMap<(String, String), String>,
    transcript: String,
}

impl Facts {
    fn get(&self, session: &str, key: &str) -> &str {
        self.map
            .get(&(session.to_owned(), key.to_owned()))
            .map_or_else(|| panic!("no fact {session} {key}:\n{}", self.transcript), String::as_str)
    }

    fn num(&self, session: &str, key: &str) -> u64 {
        let v = self.get(session, key);
        v.parse().unwrap_or_else(|_| panic!("fact {session} {key} = {v:?}:\n{}", self.transcript))
    }

    fn expect(&self, session: &str, key: &str, want: u64) {
        assert_eq!(self.num(session, key), want, "{session} {key}:\n{}", self.transcript);
    }
}

/// A page's WebSocket `extensions` (spaces left out by the script): permessage-deflate, with
/// the live demo's no context takeover either way.
fn assert_deflate(extensions: Option<&str>, context: &str) {
    let ext = extensions.unwrap_or_else(|| panic!("no WebSocket extensions:\n{context}"));
    let mut params: Vec<&str> = ext.split(';').collect();
    assert_eq!(params.first(), Some(&"permessage-deflate"), "extensions {ext:?}:\n{context}");
    params.sort_unstable();
    assert!(
        params.contains(&"server_no_context_takeover")
            && params.contains(&"client_no_context_takeover"),
        "extensions {ext:?}:\n{context}"
    );
}

fn check_png(path: &std::path::Path) {
    let png = std::fs::read(path).unwrap_or_default();
    assert!(png.starts_with(b"\x89PNG"), "no screenshot at {}", path.display());
    eprintln!("screenshot: {} ({} bytes)", path.display(), png.len());
}

#[test]
fn live_page_survives_a_server_restart() {
    let started = Instant::now();
    let setup = browser_setup();
    let scratch = Scratch::new("live-restart");
    let connected_png = target_dir().join("browser/live-connected.png");
    let reconnecting_png = target_dir().join("browser/live-reconnecting.png");
    let failed_png = target_dir().join("browser/live-restart-failed.png");
    for p in [&connected_png, &reconnecting_png, &failed_png] {
        let _ = std::fs::remove_file(p);
    }

    let mut server = LiveServer::live(0, &["--tick-ms", TICK_MS]);
    let port = server.port;
    let mut cmd = live_script(&setup, &scratch, &server.base(), "restart");
    cmd.arg("--connected-png").arg(&connected_png).arg("--reconnecting-png").arg(&reconnecting_png);
    let mut script =
        Driven::spawn(cmd, "live.py restart", Some(scratch.path().to_string_lossy().into_owned()));

    // 1. Both pages open on WebSocket, ticking; a chat message from A shows in both.
    script.expect_line("both pages connected, chatting", FIRST_OPEN, |l| l == "ready");
    eprintln!("pages up, chat delivered after {:?}", started.elapsed());

    // 2. Kill the server: the banners, the countdown, a message queued offline.
    // The time of the kill is taken before it: the pages may see their connections end
    // (the dashboard's SSE stream at once) before `kill` has reaped the process.
    let killed_ms = now_ms();
    let killed = Instant::now();
    server.kill();
    script.send_line(&format!("killed {killed_ms}"));
    // The banner's bound (the client's heartbeat: 45 s), then the script's own waits.
    let wait = Duration::from_secs(45 + SCRIPT_WAIT_S * 4);
    script.expect_line("the banner counting down, the offline message", wait, |l| l == "down");
    let down_for = killed.elapsed();

    // 3. Restart on the same port (a new hub, a new epoch).
    let server2 = LiveServer::live(port, &["--tick-ms", TICK_MS]);
    script.send_line(&format!("restarted {}", now_ms()));
    let wait = Duration::from_secs(RECONNECT_S * 2 + SCRIPT_WAIT_S * 4);
    script.expect_line("the pages back, the offline message delivered", wait, |l| l == "done");
    let status = script.wait(Duration::from_secs(20));
    let transcript = script.transcript();
    assert!(status.is_some_and(|s| s.success()), "live.py: {status:?}\n{transcript}");
    drop(server2);
    let lines = script.seen.clone();
    let f = Facts { map: facts(&lines), transcript: transcript.clone() };

    // The chat on WebSocket, the dashboard (ticks) on SSE, each from the start.
    for s in ["A", "B"] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("connected {s} ")))
            .unwrap_or_else(|| panic!("no `connected {s}`:\n{transcript}"));
        assert_eq!(kv(line, "chat"), Some("ws"), "{line}");
        assert_eq!(kv(line, "dashboard"), Some("sse"), "{line}");
        assert_eq!(kv(line, "chat_seen"), Some("ws"), "{line}");
        assert_eq!(kv(line, "dashboard_seen"), Some("sse"), "{line}");
        // The browser's WebSocket negotiated permessage-deflate with the server (its
        // `extensions`, read through the client's `extensions` getter).
        assert_deflate(kv(line, "chat_extensions"), line);
    }
    // The banner came within the client's heartbeat bound (ping interval + dead-after); the
    // kill closes the TCP connections, so in practice at once.
    for s in ["A", "B"] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("banner {s} ")))
            .unwrap_or_else(|| panic!("no `banner {s}`:\n{transcript}"));
        let after: i64 = kv(line, "after_ms").and_then(|v| v.parse().ok()).expect(line);
        let bound: i64 = kv(line, "bound_ms").and_then(|v| v.parse().ok()).expect(line);
        assert!(after <= bound, "the banner of {s} after {after} ms > {bound} ms: {line}");
        eprintln!("banner of {s}: {after} ms after the kill (bound {bound} ms)");
    }
    // It counted down, and the screenshot shows it with the offline notice.
    // `countdown A N>N-1 dt_ms=D`: one step of the countdown, about a second apart (the
    // page redraws the banner every 250 ms).
    let countdown = lines
        .iter()
        .find(|l| l.starts_with("countdown "))
        .unwrap_or_else(|| panic!("no countdown:\n{transcript}"));
    let step: i64 = kv(countdown, "dt_ms").and_then(|v| v.parse().ok()).expect(countdown);
    assert!((0..=1500).contains(&step), "a countdown step of {step} ms: {countdown}");
    eprintln!("{countdown}");
    let shot = lines.iter().find(|l| l.starts_with("screenshot reconnecting ")).expect("shot");
    assert!(shot.contains("Offline — messages will be sent when back"), "{shot}");
    assert!(shot.contains("Reconnecting in "), "{shot}");

    for s in ["A", "B"] {
        // Exactly once: the message sent while connected, and the one sent offline.
        f.expect(s, "count-first", 1);
        f.expect(s, "count-offline", 1);
        f.expect(s, "duplicates-shown", 0);
        // No gap and no duplicate tick at any time, through the restart; the new epoch was
        // announced (one refetch), and ticks go on.
        f.expect(s, "max-gaps", 0);
        f.expect(s, "max-dups", 0);
        assert!(f.num(s, "refetches") >= 1, "{s}: no refetch after the restart:\n{transcript}");
        assert!(f.num(s, "ticks-after") >= 3, "{s}: ticks after the restart:\n{transcript}");
        assert_eq!(f.get(s, "chat-state"), "open", "{s}:\n{transcript}");
        assert_eq!(f.get(s, "dashboard-state"), "open", "{s}:\n{transcript}");
        assert_eq!(f.get(s, "banner"), "null", "{s}: the banner stays:\n{transcript}");
        // After the outage either client may be back on another transport of its list (the
        // rotation goes on while the server is down), but the dashboard never on WebSocket.
        let dash = f.get(s, "dashboard-transports");
        assert!(
            dash.starts_with("sse") && !dash.contains("ws"),
            "{s} dashboard {dash}:\n{transcript}"
        );
        assert!(f.get(s, "chat-transports").starts_with("ws"), "{s}:\n{transcript}");
        // In the end each is back on the best transport of its list.
        assert_eq!(f.get(s, "chat-transport"), "ws", "{s}:\n{transcript}");
        assert_eq!(f.get(s, "dashboard-transport"), "sse", "{s}:\n{transcript}");
        assert_eq!(f.get(s, "transport-text"), "chat: ws · dashboard: sse", "{s}:\n{transcript}");
        assert_deflate(Some(f.get(s, "chat-extensions")), &transcript);
    }
    check_banners(&lines, &transcript, 20);
    eprintln!("the server was down for {down_for:?}");
    for l in lines.iter().filter(|l| l.starts_with("reopened ") || l.starts_with("best ")) {
        eprintln!("{l}");
    }

    check_png(&connected_png);
    check_png(&reconnecting_png);
    eprintln!("the whole test took {:?}", started.elapsed());
}

#[test]
fn live_page_falls_back_when_websocket_is_blocked() {
    let started = Instant::now();
    let setup = browser_setup();
    let scratch = Scratch::new("live-no-ws");
    let _ = std::fs::remove_file(target_dir().join("browser/live-no-ws-failed.png"));
    let server = LiveServer::live(0, &["--tick-ms", TICK_MS, "--no-ws"]);
    let cmd = live_script(&setup, &scratch, &server.base(), "no-ws");
    let mut script =
        Driven::spawn(cmd, "live.py no-ws", Some(scratch.path().to_string_lossy().into_owned()));
    let wait = FIRST_OPEN + Duration::from_secs(SCRIPT_WAIT_S * 4);
    script.expect_line("the pages on SSE, chatting", wait, |l| l == "done");
    let status = script.wait(Duration::from_secs(20));
    let transcript = script.transcript();
    assert!(status.is_some_and(|s| s.success()), "live.py: {status:?}\n{transcript}");
    let log = server.stderr();
    drop(server);
    let f = Facts { map: facts(&script.seen), transcript: transcript.clone() };

    // The chat tried WebSocket, was refused (502), and fell back to SSE; the dashboard was on
    // SSE from the start.
    assert!(log.contains("ws refused") && log.contains("502 (--no-ws)"), "server log:\n{log}");
    let refused = log.lines().filter(|l| l.starts_with("ws refused")).count();
    eprintln!("WebSocket attempts refused (fallbacks and upgrade probes): {refused}");
    for s in ["A", "B"] {
        let line = script
            .seen
            .iter()
            .find(|l| l.starts_with(&format!("connected {s} ")))
            .unwrap_or_else(|| panic!("no `connected {s}`:\n{transcript}"));
        assert_eq!(kv(line, "chat_seen"), Some("ws,sse"), "{line}");
        assert_eq!(kv(line, "dashboard_seen"), Some("sse"), "{line}");
        assert_eq!(f.get(s, "chat-transport"), "sse", "{s}:\n{transcript}");
        assert_eq!(f.get(s, "chat-extensions"), "null", "not on WebSocket:\n{transcript}");
        assert_eq!(f.get(s, "dashboard-transport"), "sse", "{s}:\n{transcript}");
        assert_eq!(f.get(s, "transport-text"), "chat: sse · dashboard: sse", "{s}:\n{transcript}");
        assert_eq!(f.get(s, "chat-transports"), "ws,sse", "{s} never tried ws:\n{transcript}");
        assert_eq!(f.get(s, "dashboard-transports"), "sse", "{s}:\n{transcript}");
        assert_eq!(f.get(s, "chat-state"), "open", "{s}:\n{transcript}");
        assert_eq!(f.get(s, "dashboard-state"), "open", "{s}:\n{transcript}");
        assert_eq!(f.get(s, "banner"), "null", "{s}:\n{transcript}");
        f.expect(s, "count-msg", 1);
        f.expect(s, "count-back", 1);
        f.expect(s, "duplicates-shown", 0);
        f.expect(s, "max-gaps", 0);
        f.expect(s, "max-dups", 0);
        f.expect(s, "refetches", 0);
        assert!(f.num(s, "ticks-after") >= 3, "{s}: ticks on SSE:\n{transcript}");
    }
    check_banners(&script.seen, &transcript, 10);
    eprintln!("the whole test took {:?}", started.elapsed());
}
