"""Drives headless Chromium (selenium) through the live demo page of the smol `live` example,
for tests/tests/live_browser.rs. Two browser sessions (two Chromium processes, one user
each) open the page the server itself serves; the Rust test owns the server (it kills and
restarts it) and talks to this script over stdin/stdout, one line each way.

The page has two Tidewire clients (`window.tidewireDemo.chat` and `.dashboard`): the chat
on WebSocket by default, the dashboard on SSE. `#transport` reads "chat: X · dashboard: Y"
(X, Y: ws / sse / poll, or — without a connection); the script checks that text against the
clients' own `transport`, and splits what the recorder saw of it into one sequence each.

Every wait also looks at both pages' banners against their clients (`banner_truthful`):
hidden exactly when both clients are open; "Offline — messages will be sent when back" exactly
when the chat client holds queued messages and is not open; "Reconnecting in N s" exactly when
a client is reconnecting, N counted down to the soonest `nextRetryAt` (allowing for the page's
250 ms redraw on a loaded machine); else "Connecting…".

Every page gets a recorder (a MutationObserver of the whole document, installed before the
page's own scripts run, with `Page.addScriptToEvaluateOnNewDocument`): each change of
`#banner` (text, or null when hidden), of `#transport`, and of the dashboard (`#tick-latest`
with `#tick-gaps`, `#tick-dups`, `#tick-refetches`) is kept with its `Date.now()`, so that
what happened between two looks (or before the page had loaded) is not lost.

--mode restart (the server runs plain WebSocket):

  out  pids chromedriver=PID             (one per session, for the test's diagnosis)
  out  connected SESSION chat=ws dashboard=sse chat_seen=ws dashboard_seen=sse ticks=K latest=N
  out  chat ID                           A's message, seen once in both logs
  out  screenshot connected PATH
  out  ready                             the test kills the server now and answers
  in   killed T_MS                       (Date.now() clock, taken just before the kill)
  out  banner SESSION after_ms=D bound_ms=B text=...
  out  offline ID                        a message sent from A while the server is down
  out  countdown SESSION N>N-1 ... dt_ms=D
  out  screenshot reconnecting PATH text=...
  out  down                              the test restarts the server now and answers
  in   restarted T_MS
  out  reopened SESSION after_ms=D chat=T dashboard=T
  out  best SESSION after_ms=D           both clients back on ws / sse (a client that came
                                         back on a worse transport of its list moves up
                                         after --upgrade-ms), and ticking there
  out  fact SESSION KEY VALUE            ... what the test checks, then
  out  banner-check SESSION samples=K bad=M [first=...]
  out  done

--mode no-ws (the server answers /ws with 502):

  out  connected SESSION chat=sse dashboard=sse chat_seen=ws,sse dashboard_seen=sse ticks=K latest=N
  out  chat ID
  out  fact SESSION KEY VALUE ...
  out  banner-check SESSION samples=K bad=M [first=...]
  out  done

The pages load with `?upgrade=MS` (--upgrade-ms): how often a client that fell back tries
its better transports again.

Every wait is bounded (--timeout, or the page's own heartbeat bound); a wait that runs out
prints `timeout WHAT: page state`, the browser consoles and the recorders, saves page A's
screenshot to --failed-png (a diagnosis) and exits 1. Both browsers are quit on every
path. Network only on 127.0.0.1.
"""

import argparse
import json
import os
import re
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from eventsource import CHROMIUM_FLAGS, Timeout, read_line, say

FLAGS = [f for f in CHROMIUM_FLAGS if not f.startswith("--window-size=")] + [
    "--window-size=1100,860",
    # Two browsers side by side: neither may slow its timers down (the banner's countdown,
    # the client's backoff) for being in the background.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]

OFFLINE = "Offline — messages will be sent when back"
RECONNECTING = re.compile(r"Reconnecting in (\d+) s")

RECORDER = """
if (!window.__rec) {
  const rec = { banner: [], transport: [], ticks: [], installedAt: Date.now() };
  window.__rec = rec;
  const $ = (id) => document.getElementById(id);
  const push = (list, v) => {
    const last = list[list.length - 1];
    if (!last || JSON.stringify(last.v) !== JSON.stringify(v)) list.push({ t: Date.now(), v: v });
  };
  const look = () => {
    const ids = ['banner', 'transport', 'tick-latest', 'tick-gaps', 'tick-dups', 'tick-refetches'];
    if (ids.some((id) => !$(id))) return; // still being parsed
    push(rec.banner, $('banner').hidden ? null : $('banner').textContent);
    push(rec.transport, $('transport').textContent);
    push(rec.ticks, {
      latest: $('tick-latest').textContent, gaps: Number($('tick-gaps').textContent),
      dups: Number($('tick-dups').textContent), refetches: Number($('tick-refetches').textContent)
    });
  };
  window.__recLook = look;
  new MutationObserver(look).observe(document,
    { attributes: true, childList: true, characterData: true, subtree: true });
  look(); // installed late (see Session): what the page shows now
}
"""

STATE = """
const $ = (id) => document.getElementById(id);
const c = window.tidewireDemo && window.tidewireDemo.chat;
const d = window.tidewireDemo && window.tidewireDemo.dashboard;
return {
  chatState: c ? c.state : null,
  dashState: d ? d.state : null,
  chatTransport: c ? c.transport : null,
  dashTransport: d ? d.transport : null,
  chatExtensions: c ? c.extensions : null,
  transport: $('transport').textContent,
  queued: c ? c.queued : null,
  banner: $('banner').hidden ? null : $('banner').textContent,
  latest: $('tick-latest').textContent,
  gaps: $('tick-gaps').textContent,
  dups: $('tick-dups').textContent,
  refetches: $('tick-refetches').textContent,
  presence: Array.from($('presence').children).map((li) => li.textContent),
  chat: Array.from($('chat-log').children).map((li) => ({
    id: li.dataset.id, state: li.dataset.state || null, cls: li.className, text: li.textContent
  })),
  notice: $('chat-notice').textContent,
  now: Date.now()
};
"""


# One look at the banner and both clients, in one turn of the page's event loop.
BANNER = """
const d = window.tidewireDemo;
const $ = (id) => document.getElementById(id);
const cs = [d.chat, d.dashboard];
const due = cs.filter((c) => c.state === 'reconnecting' && typeof c.nextRetryAt === 'number')
  .map((c) => c.nextRetryAt);
return {
  text: $('banner').hidden ? null : $('banner').textContent,
  now: Date.now(),
  due: due.length ? Math.min(...due) : null,
  offline: d.chat.state !== 'open' && d.chat.queued > 0,
  open: cs.every((c) => c.state === 'open'),
  closed: cs.filter((c) => c.state === 'closed').length,
  states: cs.map((c) => c.state)
};
"""

# The banner's countdown is redrawn every 250 ms: on a loaded machine a redraw may come late.
REDRAW_SLACK_MS = 1500


def banner_truthful(b):
    """None when the banner `b` (BANNER's answer) says what the clients are doing, else why not."""
    text = b["text"]
    if b["closed"]:
        return f"a client closed: {b['states']}"
    if b["open"]:
        return None if text is None else f"shown while both are open: {text!r}"
    if text is None:
        return f"hidden while not both open: {b['states']}"
    if (OFFLINE in text) != b["offline"]:
        return f"offline notice {OFFLINE in text} but queued-and-not-open {b['offline']}: {text!r}"
    m = RECONNECTING.search(text)
    if b["due"] is None:
        return None if not m and text.endswith("Connecting…") else f"no client reconnecting: {text!r}"
    if not m:
        return f"a client reconnecting (due in {b['due'] - b['now']} ms), no countdown: {text!r}"
    left = b["due"] - b["now"]
    lo = max(0, -(-left // 1000))
    hi = max(0, -(-(left + REDRAW_SLACK_MS) // 1000))
    n = int(m.group(1))
    if not lo <= n <= hi:
        return f"countdown {n} s, but the soonest retry is in {left} ms ({b['states']}): {text!r}"
    return None


class Session:
    def __init__(self, name, args, url):
        self.name = name
        opts = webdriver.ChromeOptions()
        opts.binary_location = args.chromium
        profile = os.path.join(args.profile_dir, f"chromium-{name}")
        for flag in FLAGS + [f"--user-data-dir={profile}"]:
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.service = Service(executable_path=args.chromedriver, log_output=os.devnull)
        self.driver = webdriver.Chrome(service=self.service, options=opts)
        say(f"pids chromedriver={self.service.process.pid}")
        self.driver.set_page_load_timeout(args.timeout)
        self.driver.set_script_timeout(args.timeout)
        self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
        self.driver.get(url)
        seen = self.js("return window.__rec ? window.__rec.transport.length : -1;")
        if seen <= 0:
            # Not seen at document start (a diagnosis line): installed now, it misses only
            # what happened before.
            late = self.js(RECORDER + "window.__recLook(); return window.__rec.transport.length;")
            say(f"recorder {name} late: at load {seen}, now {late}")
        self.banner_samples = 0
        self.banner_bad = []

    def look_at_banner(self):
        """One `banner_truthful` sample, kept for the `banner-check` line."""
        why = banner_truthful(self.js(BANNER))
        self.banner_samples += 1
        if why:
            self.banner_bad.append(why)

    def js(self, script, *a):
        return self.driver.execute_script(script, *a)

    def state(self):
        return self.js(STATE)

    def rec(self):
        return self.js("return window.__rec;")

    def count(self, msg_id):
        return self.js(
            "return document.querySelectorAll("
            "'#chat-log li[data-id=\"' + arguments[0] + '\"]').length;",
            msg_id,
        )

    def send_chat(self, text):
        """Types `text` and clicks Send, as a user would; returns the new message's id."""
        before = {li["id"] for li in self.state()["chat"]}
        box = self.driver.find_element(By.ID, "chat-input")
        box.clear()
        box.send_keys(text)
        self.driver.find_element(By.ID, "chat-send").click()
        new = [li for li in self.state()["chat"] if li["id"] not in before and text in li["text"]]
        if len(new) != 1:
            raise Timeout(f"{self.name}: sending {text!r} added {new!r}")
        return new[0]["id"]

    def console(self):
        try:
            return [e.get("message") for e in self.driver.get_log("browser")]
        except Exception as e:  # a diagnosis only
            return [f"(no browser log: {e})"]

    def quit(self):
        try:
            self.driver.quit()
        except Exception:
            pass


def wait_until(what, limit, cond, sessions):
    deadline = time.monotonic() + limit
    while True:
        for s in sessions:
            s.look_at_banner()
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            states = {s.name: s.state() for s in sessions}
            raise Timeout(f"{what}: not within {limit:.1f} s; pages: {json.dumps(states)}")
        time.sleep(0.05)


def ticks_after(s, t_ms):
    """The distinct `#tick-latest` values the recorder saw after `t_ms`."""
    return [
        int(e["v"]["latest"])
        for e in s.rec()["ticks"]
        if e["t"] >= t_ms and e["v"]["latest"].isdigit()
    ]


def no_spaces(extensions):
    """A WebSocket's `extensions` as one word of a line: spaces left out, `-` for none
    (the empty string) and `null` when not on WebSocket."""
    if extensions is None:
        return "null"
    return extensions.replace(" ", "") or "-"


def transport_text(chat, dash):
    return f"chat: {chat or '—'} · dashboard: {dash or '—'}"


def seen(rec, who):
    """What `#transport` said of `who` ('chat' or 'dashboard') over time: its transports in
    order, repeats and '—' left out."""
    out = []
    for e in rec["transport"]:
        m = re.fullmatch(r"chat: (\S+) · dashboard: (\S+)", e["v"])
        v = m and m.group(1 if who == "chat" else 2)
        if v and v != "—" and (not out or out[-1] != v):
            out.append(v)
    return out


def opened(s, chat=None, dash=None):
    """Both clients open, no banner, `#transport` true to both (and on `chat` / `dash`)."""
    st = s.state()
    ok = st["chatState"] == "open" and st["dashState"] == "open" and st["banner"] is None
    ok = ok and st["transport"] == transport_text(st["chatTransport"], st["dashTransport"])
    return (ok and (chat is None or st["chatTransport"] == chat)
            and (dash is None or st["dashTransport"] == dash))


def wait_connected(sessions, chat, dash, limit, min_ticks=3):
    for s in sessions:
        wait_until(
            f"{s.name}: chat open on {chat}, dashboard on {dash}, with {min_ticks} ticks",
            limit,
            lambda: opened(s, chat, dash) and len(set(ticks_after(s, 0))) >= min_ticks,
            sessions,
        )
        st = s.state()
        rec = s.rec()
        say(f"connected {s.name} chat={st['chatTransport']} dashboard={st['dashTransport']}"
            f" chat_seen={','.join(seen(rec, 'chat'))}"
            f" dashboard_seen={','.join(seen(rec, 'dashboard'))}"
            f" ticks={len(ticks_after(s, 0))} latest={st['latest']}"
            f" chat_extensions={no_spaces(st['chatExtensions'])}")


def chat_once(sender, others, text, limit, sessions):
    """`sender` sends `text`; it must show once in every page's log, delivered."""
    msg_id = sender.send_chat(text)
    for s in [sender] + others:
        wait_until(
            f"{s.name}: message {msg_id} delivered",
            limit,
            lambda: any(li["id"] == msg_id and li["state"] == "shown" for li in s.state()["chat"]),
            sessions,
        )
    say("chat", msg_id)
    return msg_id


def screenshot(s, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not s.driver.save_screenshot(path):
        raise Timeout(f"the screenshot {path} could not be saved")


def countdown(rec, since_ms):
    """The first `Reconnecting in N s` followed directly by `... N-1 s` (N >= 2) after
    `since_ms`: (N, dt_ms), or None."""
    seen = [e for e in rec["banner"] if e["t"] >= since_ms]
    for a, b in zip(seen, seen[1:]):
        ma = a["v"] and RECONNECTING.search(a["v"])
        mb = b["v"] and RECONNECTING.search(b["v"])
        if ma and mb and int(mb.group(1)) == int(ma.group(1)) - 1 and int(ma.group(1)) >= 2:
            return int(ma.group(1)), b["t"] - a["t"]
    return None


def facts(s, ids, since_ms):
    """The `fact` lines of one page: what the test asserts."""
    st = s.state()
    rec = s.rec()
    for name, msg_id in ids.items():
        say(f"fact {s.name} count-{name} {s.count(msg_id)}")
    say(f"fact {s.name} duplicates-shown {sum('duplicate' in li['cls'] for li in st['chat'])}")
    say(f"fact {s.name} max-gaps {max(e['v']['gaps'] for e in rec['ticks'])}")
    say(f"fact {s.name} max-dups {max(e['v']['dups'] for e in rec['ticks'])}")
    say(f"fact {s.name} refetches {st['refetches']}")
    say(f"fact {s.name} ticks-after {len(set(ticks_after(s, since_ms)))}")
    say(f"fact {s.name} transport-text {st['transport']}")
    say(f"fact {s.name} chat-transport {st['chatTransport']}")
    say(f"fact {s.name} chat-extensions {no_spaces(st['chatExtensions'])}")
    say(f"fact {s.name} dashboard-transport {st['dashTransport']}")
    say(f"fact {s.name} chat-transports {','.join(seen(rec, 'chat'))}")
    say(f"fact {s.name} dashboard-transports {','.join(seen(rec, 'dashboard'))}")
    say(f"fact {s.name} chat-state {st['chatState']}")
    say(f"fact {s.name} dashboard-state {st['dashState']}")
    say(f"fact {s.name} banner {json.dumps(st['banner'], ensure_ascii=False)}")
    say(f"fact {s.name} reloaded {s.js('return window.tidewireDemo.reloaded;')}")
    say(f"fact {s.name} chat-duplicates {s.js('return window.tidewireDemo.chat.duplicates;')}")
    say(f"fact {s.name} dashboard-duplicates"
        f" {s.js('return window.tidewireDemo.dashboard.duplicates;')}")


def banner_checks(sessions):
    for s in sessions:
        first = f" first={json.dumps(s.banner_bad[0], ensure_ascii=False)}" if s.banner_bad else ""
        say(f"banner-check {s.name} samples={s.banner_samples} bad={len(s.banner_bad)}{first}")


def run_restart(args, a, b):
    sessions = [a, b]
    wait_connected(sessions, "ws", "sse", args.timeout)
    for s, other in ((a, "bob"), (b, "ann")):
        wait_until(f"{s.name}: presence shows {other}", args.timeout,
                   lambda: any(other in p for p in s.state()["presence"]), sessions)
    first = chat_once(a, [b], "hello from ann", args.timeout, sessions)
    if a.state()["banner"] is not None:
        raise Timeout("the banner shows on the connected page")
    screenshot(a, args.connected_png)
    say("screenshot connected", args.connected_png)

    say("ready")
    line = read_line(args.timeout * 3)
    if line is None or not line.startswith("killed "):
        raise Timeout(f"no `killed T_MS` line from the test (got {line!r})")
    killed_ms = int(line.split()[1])

    # The banner, within the chat client's own dead-connection bound (the WebSocket
    # heartbeat; the dashboard's SSE stream fails as soon as its connection does).
    c = a.js("const c = window.tidewireDemo.chat; return [c._o.pingInterval, c._o.deadAfter];")
    bound_ms = c[0] + c[1]
    for s in sessions:
        wait_until(f"{s.name}: the banner after the kill", bound_ms / 1000.0,
                   lambda: s.state()["banner"] is not None, sessions)
        shown = next(e for e in s.rec()["banner"] if e["t"] >= killed_ms and e["v"] is not None)
        say(f"banner {s.name} after_ms={shown['t'] - killed_ms} bound_ms={bound_ms}"
            f" text={json.dumps(shown['v'], ensure_ascii=False)}")

    # A message typed while the server is down: queued, and said so.
    offline_id = a.send_chat("sent while offline by ann")
    say("offline", offline_id)
    wait_until("A: the offline notice in the banner", args.timeout,
               lambda: OFFLINE in (a.state()["banner"] or ""), sessions)

    # The countdown, then a screenshot of the banner counting down (taken again if the
    # client left `reconnecting` while it was being taken).
    cd = wait_until("A: a countdown N s -> N-1 s", args.timeout,
                    lambda: countdown(a.rec(), killed_ms), sessions)
    say(f"countdown A {cd[0]}>{cd[0] - 1} dt_ms={cd[1]}")

    def shot():
        before = a.state()["banner"] or ""
        m = RECONNECTING.search(before)
        if not (m and int(m.group(1)) >= 1 and OFFLINE in before):
            return None
        screenshot(a, args.reconnecting_png)
        after = a.state()["banner"] or ""
        return before if RECONNECTING.search(after) and OFFLINE in after else None

    text = wait_until("A: a screenshot of the reconnecting banner", args.timeout, shot, sessions)
    shown = json.dumps(text, ensure_ascii=False)
    say(f"screenshot reconnecting {args.reconnecting_png} text={shown}")
    for s in sessions:
        if s.count(offline_id) != (1 if s is a else 0):
            raise Timeout(f"{s.name}: the offline message {offline_id} before the restart")
    say("down")

    line = read_line(args.timeout * 3)
    if line is None or not line.startswith("restarted "):
        raise Timeout(f"no `restarted T_MS` line from the test (got {line!r})")
    restarted_ms = int(line.split()[1])

    # Backoff may have grown while the server was down (full jitter up to 2^attempt s).
    for s in sessions:
        wait_until(f"{s.name}: reconnected, no banner", args.reconnect_timeout,
                   lambda: opened(s), sessions)
        st = s.state()
        say(f"reopened {s.name} after_ms={st['now'] - restarted_ms} chat={st['chatTransport']}"
            f" dashboard={st['dashTransport']}")
    for s in sessions:
        wait_until(f"{s.name}: the offline message {offline_id} delivered", args.timeout,
                   lambda: any(li["id"] == offline_id and li["state"] == "shown"
                               for li in s.state()["chat"]), sessions)
        wait_until(f"{s.name}: 3 ticks after the restart", args.timeout,
                   lambda: len(set(ticks_after(s, restarted_ms))) >= 3, sessions)
    # Back on the best transport of each list: a client that came back on a worse one (the
    # rotation went on while the server was down) tries its better ones every --upgrade-ms,
    # and moves without losing or repeating a tick (the counters of the facts below).
    for s in sessions:
        wait_until(f"{s.name}: back on ws (chat) and sse (dashboard)", args.timeout,
                   lambda: opened(s, "ws", "sse"), sessions)
        best_ms = s.state()["now"]
        wait_until(f"{s.name}: 2 ticks on sse", args.timeout,
                   lambda: len(set(ticks_after(s, best_ms))) >= 2, sessions)
        say(f"best {s.name} after_ms={best_ms - restarted_ms}")
    # A little longer, for a late duplicate to show.
    time.sleep(1.0)
    for s in sessions:
        facts(s, {"first": first, "offline": offline_id}, restarted_ms)
    banner_checks(sessions)


def run_no_ws(args, a, b):
    sessions = [a, b]
    wait_connected(sessions, "sse", "sse", args.timeout)
    msg = chat_once(a, [b], "hello over a fallback", args.timeout, sessions)
    back = chat_once(b, [a], "and back", args.timeout, sessions)
    started = int(time.time() * 1000)
    for s in sessions:
        wait_until(f"{s.name}: 3 more ticks", args.timeout,
                   lambda: len(set(ticks_after(s, started))) >= 3, sessions)
    for s in sessions:
        facts(s, {"msg": msg, "back": back}, started)
    banner_checks(sessions)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chromium", required=True)
    ap.add_argument("--chromedriver", required=True)
    ap.add_argument("--profile-dir", required=True, help="fresh; one --user-data-dir each")
    ap.add_argument("--base", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--mode", choices=["restart", "no-ws"], required=True)
    ap.add_argument("--connected-png")
    ap.add_argument("--reconnecting-png")
    ap.add_argument("--failed-png", help="page A when a wait ran out (a diagnosis)")
    ap.add_argument("--timeout", type=float, default=20.0, help="bound of each wait, s")
    ap.add_argument("--reconnect-timeout", type=float, default=45.0)
    ap.add_argument("--upgrade-ms", type=int, help="the page's ?upgrade= (default: the client's)")
    args = ap.parse_args()

    sessions = []
    try:
        users = ("ann", "bob") if args.mode == "restart" else ("cat", "dan")
        for name, user in zip("AB", users):
            url = f"{args.base}/?token=user:{user}"
            if args.upgrade_ms is not None:
                url += f"&upgrade={args.upgrade_ms}"
            sessions.append(Session(name, args, url))
        try:
            if args.mode == "restart":
                run_restart(args, *sessions)
            else:
                run_no_ws(args, *sessions)
        except Timeout as e:
            say("timeout", e)
            for s in sessions:
                for m in s.console():
                    say("console", s.name, m)
                for kind in ("banner", "transport", "ticks"):
                    say("record", s.name, kind, json.dumps(s.rec()[kind])[-3000:])
            banner_checks(sessions)
            for s in sessions:
                for why in s.banner_bad[:5]:
                    say("banner-bad", s.name, why)
            if args.failed_png:
                try:
                    screenshot(sessions[0], args.failed_png)
                    say("screenshot failed", args.failed_png)
                except Exception:
                    pass
            return 1
        for s in sessions:
            for m in s.console():
                say("console", s.name, m)
        say("done")
        return 0
    finally:
        for s in sessions:
            s.quit()


if __name__ == "__main__":
    sys.exit(main())
