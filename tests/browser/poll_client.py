"""Polls a Tidewire ticker (`/poll?ch=ticks`) with Python's own HTTP client (stdlib only),
for tests/tests/poll_http.rs. The ticker must publish `{"n":N}` on `ticks` every few hundred
milliseconds (`--every-ms 300`), N being its offset (a fresh ticker).

Checks, each printed as `ok NAME` (or `FAIL NAME: why`), then `poll_client: N ok, M failed`:

  first       a first request (no pos) answers 200 with the head position, no events, and
              that position as the ETag
  catch_up    from an older position: the missed ticks, in order, exactly once, and the
              new position (= the last event's) as `pos` and ETag
  not_modified  If-None-Match with the current ETag: 304 (with the ETag), no body
  long_poll   wait=1 from the head is held and answered by the next tick within 1.5 s
  gone        a well-formed position of another epoch: recovered false, the head position
  bad_pos     a malformed pos or If-None-Match, or no ch: 400

With --resume-from POS it checks only that polling from POS, a position saved before the
ticker was killed and restarted from its --state file, gets the ticks since, exactly.

Exits 0 only when every check passed. Every request has a timeout. Network only on
127.0.0.1.
"""

import argparse
import http.client
import json
import sys
import time
import urllib.parse

TIMEOUT = 10.0


class Fail(Exception):
    pass


def check(cond, why):
    if not cond:
        raise Fail(why)


class Client:
    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port

    def get(self, query, headers=None):
        """GET /poll?QUERY: (status, headers as a lower-cased dict, body bytes, seconds)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        try:
            started = time.monotonic()
            conn.request("GET", "/poll?" + query, headers=headers or {})
            resp = conn.getresponse()
            body = resp.read()
            took = time.monotonic() - started
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
            return resp.status, hdrs, body, took
        finally:
            conn.close()

    def poll(self, pos=None, wait=False, headers=None):
        q = {"ch": "ticks"}
        if pos is not None:
            q["pos"] = pos
        if wait:
            q["wait"] = "1"
        return self.get(urllib.parse.urlencode(q, safe=":"), headers)


def body_json(status, hdrs, body):
    check(status == 200, f"status {status}, body {body[:200]!r}")
    check(hdrs.get("content-type", "").startswith("application/json"), f"headers {hdrs}")
    doc = json.loads(body)
    check(doc.get("ch") == "ticks", f"ch in {doc}")
    check(hdrs.get("etag") == f'"{doc["pos"]}"', f"ETag {hdrs.get('etag')} for pos {doc['pos']}")
    return doc


def split_pos(pos):
    epoch, off = pos.split(":")
    return epoch, int(off)


def check_events(doc, after):
    """The events of `doc` follow position `after` one by one, n = offset; returns them."""
    epoch, off = split_pos(after)
    events = doc["events"]
    for i, e in enumerate(events):
        check(e["ep"] == epoch, f"event {e} of another epoch than {epoch}")
        check(e["off"] == off + 1 + i, f"event {i} is {e}, expected offset {off + 1 + i}")
        check(e["data"] == {"n": e["off"]}, f"event {e}: data is not {{'n': offset}}")
    if events:
        check(doc["pos"] == f"{epoch}:{events[-1]['off']}", f"pos {doc['pos']} != last event")
    else:
        check(doc["pos"] == after, f"no events but pos moved: {doc}")
    return events


def head(c):
    doc = body_json(*c.poll()[:3])
    return doc["pos"]


def t_first(c):
    status, hdrs, body, _ = c.poll()
    doc = body_json(status, hdrs, body)
    check(doc["recovered"] is True, f"recovered in {doc}")
    check(doc["events"] == [], f"a first request got events: {doc}")
    epoch, off = split_pos(doc["pos"])
    check(len(epoch) > 0 and off >= 0, f"pos {doc['pos']}")


def t_catch_up(c):
    old = head(c)
    _, old_off = split_pos(old)
    time.sleep(1.2)  # about 4 ticks
    status, hdrs, body, _ = c.poll(old)
    doc = body_json(status, hdrs, body)
    check(doc["recovered"] is True, f"recovered in {doc}")
    events = check_events(doc, old)
    check(len(events) >= 2, f"only {len(events)} missed ticks after 1.2 s: {doc}")
    # Once: from the new position, nothing older comes back.
    status, hdrs, body, _ = c.poll(doc["pos"])
    again = body_json(status, hdrs, body)
    check_events(again, doc["pos"])


def t_not_modified(c):
    # A tick may land between the two requests (every 300 ms): then 200 with exactly it,
    # and try again from there.
    for _ in range(10):
        pos = head(c)
        status, hdrs, body, _ = c.get("ch=ticks", {"If-None-Match": f'"{pos}"'})
        if status == 304:
            check(hdrs.get("etag") == f'"{pos}"', f"304 with ETag {hdrs.get('etag')}, not {pos}")
            check(body == b"", f"304 with a body {body!r}")
            # The same with pos= naming it and If-None-Match (what a browser sends).
            status, hdrs, body, _ = c.poll(pos, headers={"If-None-Match": f'"{pos}"'})
            if status == 304:
                return
            check_events(body_json(status, hdrs, body), pos)
            continue
        check_events(body_json(status, hdrs, body), pos)
    raise Fail("no 304 in 10 tries")


def t_long_poll(c):
    # Chained long polls: each is sent right after the previous answer (a tick), so it is
    # held until the next tick, about 300 ms later.
    pos = head(c)
    held = []
    for _ in range(4):
        status, hdrs, body, took = c.poll(pos, wait=True)
        doc = body_json(status, hdrs, body)
        check(doc["recovered"] is True, f"recovered in {doc}")
        events = check_events(doc, pos)
        check(len(events) >= 1, f"a long poll answered without news: {doc}")
        check(took < 1.5, f"the long poll took {took:.2f} s")
        held.append(took)
        pos = doc["pos"]
    check(max(held) >= 0.1, f"no long poll was held: {held}")


def t_gone(c):
    now = head(c)
    epoch, _ = split_pos(now)
    other = "1" if epoch != "1" else "2"
    status, hdrs, body, _ = c.poll(f"{other}:5")
    doc = body_json(status, hdrs, body)
    check(doc["recovered"] is False, f"recovered for another epoch: {doc}")
    check(doc["events"] == [], f"events for another epoch: {doc}")
    check(split_pos(doc["pos"])[0] == epoch, f"pos {doc['pos']} is not a head position")


def t_bad_pos(c):
    for query, headers in [
        ("ch=ticks&pos=zz", None),
        ("ch=ticks&pos=a1", None),
        ("ch=ticks&pos=a1:-1", None),
        ("ch=ticks&pos=a1:1:2", None),
        ("ch=ticks&pos=g1:1", None),
        ("ch=ticks", {"If-None-Match": '"not-a-position"'}),
        ("pos=a1:1", None),
    ]:
        status, _, body, _ = c.get(query, headers)
        check(status == 400, f"{query} {headers}: status {status}, body {body[:100]!r}")


CHECKS = [
    ("first", t_first),
    ("catch_up", t_catch_up),
    ("not_modified", t_not_modified),
    ("long_poll", t_long_poll),
    ("gone", t_gone),
    ("bad_pos", t_bad_pos),
]


def t_resume(pos, at_least):
    """After a restart: from `pos` (saved before it), the ticks since, exactly."""

    def run(c):
        status, hdrs, body, _ = c.poll(pos)
        doc = body_json(status, hdrs, body)
        check(doc["recovered"] is True, f"position {pos} not recovered: {doc}")
        events = check_events(doc, pos)
        check(len(events) >= at_least, f"{len(events)} ticks since {pos}, not {at_least}: {doc}")
        print("resumed", " ".join(f"{e['ep']}:{e['off']}" for e in events), flush=True)

    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument(
        "--resume-from",
        metavar="POS",
        help="only check that polling from POS (saved before a restart) gets the ticks since",
    )
    ap.add_argument("--at-least", type=int, default=1, help="ticks expected with --resume-from")
    args = ap.parse_args()
    c = Client(args.url)
    checks = CHECKS
    if args.resume_from:
        checks = [("resume", t_resume(args.resume_from, args.at_least))]
    ok = failed = 0
    for name, fn in checks:
        try:
            fn(c)
            print(f"ok {name}", flush=True)
            ok += 1
        except Exception as e:  # any error fails the check, with its reason
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            failed += 1
    print(f"poll_client: {ok} ok, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
