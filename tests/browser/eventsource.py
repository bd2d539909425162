"""Drives headless Chromium (selenium) against a Tidewire SSE endpoint, for
tests/tests/browser.rs.

Serves a tiny page on 127.0.0.1 (its own port, so the stream is cross-origin and the
server's CORS header is exercised too) whose script opens `new EventSource(URL)` and records
every `ticks` event: its `lastEventId`, its `n` and when it came. Talks to the Rust test
over stdin/stdout, one line each way:

  out  page URL                   the page is served
  out  pids chromedriver=PID      for the test's guard
  out  before COUNT LAST_N        at least --min-before events arrived
  in   restarted KILL_N           the server was killed after tick KILL_N and restarted
  out  event ID N T_MS            ... every event, then
  out  opens K / open T_MS (each) / errors K / resets K / messages K
  out  done

after at least --min-after events with n > KILL_N, a second `open` (the EventSource
reconnected by itself, with Last-Event-ID) and --min-live of them more than 150 ms after
that `open` (live ticks on the resumed stream, not only its replay). Saves a screenshot of the page. Every wait is
bounded; the browser is quit on every path. Exits 1 with a diagnosis on a timeout.

Network only on 127.0.0.1.
"""

import argparse
import http.server
import json
import os
import select
import sys
import threading
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Tidewire EventSource</title>
<link rel="icon" href="data:,">
<style>
 body { font: 14px sans-serif; margin: 16px; }
 #state { font-weight: bold; }
 ol { columns: 3; font-family: monospace; }
</style></head>
<body>
<h1>Tidewire EventSource</h1>
<p>source: <code id="url"></code></p>
<p>state: <span id="state">connecting</span>, opens: <span id="opens">0</span>,
 errors: <span id="errors">0</span></p>
<ol id="log"></ol>
<script>
const URL = __URL__;
window.__events = [];
window.__opens = 0;
window.__openTimes = [];
window.__errors = 0;
window.__resets = [];
window.__messages = 0;
document.getElementById('url').textContent = URL;
const states = ['connecting', 'open', 'closed'];
const show = () => {
  document.getElementById('state').textContent = states[es.readyState];
  document.getElementById('opens').textContent = window.__opens;
  document.getElementById('errors').textContent = window.__errors;
};
const es = new EventSource(URL);
es.onopen = () => { window.__opens++; window.__openTimes.push(Date.now()); show(); };
es.onerror = () => { window.__errors++; show(); };
es.onmessage = () => { window.__messages++; };
es.addEventListener('reset', (e) => { window.__resets.push(e.data); });
es.addEventListener('ticks', (e) => {
  let n = null;
  try { n = JSON.parse(e.data).n; } catch (err) { n = null; }
  window.__events.push({ id: e.lastEventId, n: n, t: Date.now() });
  const li = document.createElement('li');
  li.textContent = 'n=' + n + ' id=' + e.lastEventId;
  document.getElementById('log').appendChild(li);
  show();
});
</script>
</body></html>
"""

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1000,700",
]


def say(*parts):
    print(*parts, flush=True)


def serve_page(events_url):
    body = PAGE.replace("__URL__", json.dumps(events_url)).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] in ("/", "/index.html"):
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Timeout(Exception):
    pass


def wait_until(what, limit, cond, state):
    deadline = time.monotonic() + limit
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Timeout(f"{what}: not within {limit} s; page state: {json.dumps(state())}")
        time.sleep(0.05)


def read_line(limit):
    """One line from stdin within `limit` seconds, or None."""
    deadline = time.monotonic() + limit
    buf = b""
    fd = sys.stdin.fileno()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 1)
        if not chunk:
            return buf.decode() if buf else None
        if chunk == b"\n":
            return buf.decode()
        buf += chunk


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chromium", required=True)
    ap.add_argument("--chromedriver", required=True)
    ap.add_argument("--profile", required=True, help="a fresh --user-data-dir")
    ap.add_argument("--events-url", required=True)
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--min-before", type=int, default=3)
    ap.add_argument("--min-after", type=int, default=3)
    ap.add_argument("--min-live", type=int, default=2, help="after the reconnect's burst")
    ap.add_argument("--timeout", type=float, default=20.0, help="bound of each wait, s")
    args = ap.parse_args()

    page = serve_page(args.events_url)
    page_url = f"http://127.0.0.1:{page.server_address[1]}/"
    say("page", page_url)

    opts = webdriver.ChromeOptions()
    opts.binary_location = args.chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={args.profile}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=args.chromedriver, log_output=os.devnull)
    driver = webdriver.Chrome(service=service, options=opts)
    try:
        say(f"pids chromedriver={service.process.pid}")
        driver.set_page_load_timeout(args.timeout)
        driver.set_script_timeout(args.timeout)
        driver.get(page_url)

        def state():
            return driver.execute_script(
                "return {events: window.__events, opens: window.__opens,"
                " openTimes: window.__openTimes,"
                " errors: window.__errors, resets: window.__resets,"
                " messages: window.__messages};"
            )

        def console():
            try:
                return [e.get("message") for e in driver.get_log("browser")]
            except Exception as e:  # the log is a diagnosis only
                return [f"(no browser log: {e})"]

        try:
            events = wait_until(
                f"{args.min_before} events before the restart",
                args.timeout,
                lambda: (lambda ev: ev if len(ev) >= args.min_before else None)(
                    driver.execute_script("return window.__events;")
                ),
                state,
            )
            say("before", len(events), events[-1]["n"])

            line = read_line(args.timeout * 3)
            if line is None or not line.startswith("restarted "):
                raise Timeout(f"no `restarted N` line from the test (got {line!r})")
            kill_n = int(line.split()[1])

            def resumed():
                s = state()
                if s["opens"] < 2:
                    return None
                after = [e for e in s["events"] if isinstance(e["n"], int) and e["n"] > kill_n]
                # Live ticks on the resumed stream too, not only the replay at the reconnect.
                live = [e for e in after if e["t"] > s["openTimes"][-1] + 150]
                return s if len(after) >= args.min_after and len(live) >= args.min_live else None

            final = wait_until(
                f"{args.min_after} events after the restart (n > {kill_n}) on a reconnected"
                " EventSource",
                args.timeout,
                resumed,
                state,
            )
        except Timeout as e:
            say("timeout", e)
            for m in console():
                say("console", m)
            try:
                os.makedirs(os.path.dirname(args.screenshot), exist_ok=True)
                driver.save_screenshot(args.screenshot)
            except Exception:
                pass
            return 1

        os.makedirs(os.path.dirname(args.screenshot), exist_ok=True)
        if not driver.save_screenshot(args.screenshot):
            say("timeout", "the screenshot could not be saved")
            return 1
        for e in final["events"]:
            say("event", e["id"] or "-", e["n"], e["t"])
        say("opens", final["opens"])
        for t in final["openTimes"]:
            say("open", t)
        say("errors", final["errors"])
        say("resets", len(final["resets"]))
        say("messages", final["messages"])
        for m in console():
            say("console", m)
        say("done")
        return 0
    finally:
        driver.quit()
        page.shutdown()


if __name__ == "__main__":
    sys.exit(main())
