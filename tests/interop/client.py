#!/usr/bin/env python3
"""A `websockets` client battery against an echo server (issue 4, interop).

    python client.py --url ws://127.0.0.1:PORT [--token T] [--only SUBSTRING]
        [--deflate OFFER] [--expect-deflate]

The server must echo every text and binary message (max message at least 16 MiB). With
--token it must answer an upgrade without the token (or with a wrong one) with 401 and
`WWW-Authenticate: Bearer`, and accept `Authorization: Bearer T` as well as `?token=T`;
every other check then sends the Authorization header.

Compression (permessage-deflate, RFC 7692): `--deflate default` (the default) offers it as
websockets does by default (client_max_window_bits, compressed with memLevel 5), `--deflate
none` offers nothing, and a comma-separated list of parameters of
ClientPerMessageDeflateFactory (`server_no_context_takeover`, `client_no_context_takeover`,
`server_max_window_bits=N`, `client_max_window_bits=N`) is the offer. With
--expect-deflate every connection that opens must have negotiated it (else its check
fails), and two more lines come before the closing one: "deflate agreed: HEADER[ | HEADER…]"
(each distinct Sec-WebSocket-Extensions of the server's 101) and "deflate received: N of M
messages compressed" (RSV1 on their first frame), with a check that N > 0.

Prints one line per check ("ok NAME" or "FAIL NAME: why") and a closing line
"client.py: N passed, N failed"; exits 1 when any check failed (2 on a usage error).

    python client.py --url ws://... --hold CODE

instead opens one connection, prints "open", echoes nothing and waits (30 s at most) for
the server to close it: exits 0 when the server's close frame carries CODE and the closing
handshake completed (e.g. 1001 on a graceful server shutdown), 1 otherwise.
"""

import argparse
import asyncio
import contextlib
import random
import sys
import time
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import CloseCode

MAX_MESSAGE = 32 * 1024 * 1024
CHECK_TIMEOUT = 60.0
SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20]


class CheckFailed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


def text_of_size(size):
    """A str whose UTF-8 encoding is exactly `size` bytes, with 1- to 4-byte characters."""
    unit = "é€😀x"  # 2 + 3 + 4 + 1 = 10 bytes
    s = unit * (size // 10) + "a" * (size % 10)
    assert len(s.encode()) == size
    return s


def binary_of_size(size):
    return random.Random(size).randbytes(size)


def describe(data):
    kind = "text" if isinstance(data, str) else "binary"
    raw = data.encode() if isinstance(data, str) else data
    head = raw[:16]
    return f"{kind} of {len(raw)} bytes starting {head!r}"


def deflate_settings(spec):
    """`--deflate`: (compression, extensions) for `connect`."""
    if spec == "default":
        return "deflate", None
    if spec == "none":
        return None, None
    kwargs = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = item.partition("=")
        kwargs[name] = int(value) if value else True
    return None, [ClientPerMessageDeflateFactory(**kwargs)]


class Battery:
    def __init__(self, url, token, deflate="default", expect_deflate=False):
        self.url = url
        self.token = token
        self.results = []
        self.compression, self.extensions = deflate_settings(deflate)
        self.expect_deflate = expect_deflate
        self.agreed = []  # distinct Sec-WebSocket-Extensions answers
        self.received = {"messages": 0, "compressed": 0}

    def headers(self):
        if self.token is None:
            return None
        return {"Authorization": f"Bearer {self.token}"}

    @contextlib.asynccontextmanager
    async def open(self, url=None, headers="default"):
        async with connect(
            url or self.url,
            additional_headers=self.headers() if headers == "default" else headers,
            max_size=MAX_MESSAGE,
            ping_interval=None,
            open_timeout=10,
            close_timeout=10,
            compression=self.compression,
            extensions=self.extensions,
        ) as ws:
            self.watch_deflate(ws)
            yield ws

    def watch_deflate(self, ws):
        """Records the agreement and counts the messages that arrive compressed (a wrapper
        around the negotiated PerMessageDeflate's `decode`; the server sends nothing before
        our first message, so none is missed)."""
        header = ws.response.headers.get("Sec-WebSocket-Extensions")
        deflates = [e for e in ws.protocol.extensions if isinstance(e, PerMessageDeflate)]
        if self.expect_deflate:
            expect(deflates, f"permessage-deflate not negotiated (the 101 said {header!r})")
        if header and header not in self.agreed:
            self.agreed.append(header)
        counts = self.received
        for ext in deflates:
            decode = ext.decode

            def counting(frame, *args, decode=decode, **kwargs):
                if frame.opcode.name in ("TEXT", "BINARY"):
                    counts["messages"] += 1
                    counts["compressed"] += bool(frame.rsv1)
                return decode(frame, *args, **kwargs)

            ext.decode = counting

    # ----- echo -----

    async def round_trip(self, ws, message):
        await ws.send(message)
        got = await ws.recv()
        expect(type(got) is type(message), f"sent {describe(message)}, got {describe(got)}")
        expect(got == message, f"sent {describe(message)}, got a different {describe(got)}")

    def echo_check(self, make, size):
        async def check():
            message = make(size)
            async with self.open() as ws:
                await self.round_trip(ws, message)
                # A second message on the same connection: the first left no residue.
                await self.round_trip(ws, make(min(size, 1000) + 1))
        return check

    async def check_pipelined(self):
        messages = [text_of_size(i * 7) if i % 2 else binary_of_size(i * 13) for i in range(200)]
        async with self.open() as ws:
            for m in messages:
                await ws.send(m)
            for i, m in enumerate(messages):
                got = await ws.recv()
                expect(got == m, f"message {i}: sent {describe(m)}, got {describe(got)}")

    # ----- fragmentation -----

    async def check_fragmented_text(self):
        async with self.open() as ws:
            await ws.send(["frag", "mented ", "tëxt ", "✓"])
            got = await ws.recv()
            expect(got == "fragmented tëxt ✓", f"got {got!r}")

    async def check_fragmented_text_split_codepoint(self):
        # "€" is e2 82 ac: its bytes arrive in three continuation frames.
        async with self.open() as ws:
            await ws.send([b"price: \xe2", b"\x82", b"\xac 5"], text=True)
            got = await ws.recv()
            expect(got == "price: € 5", f"got {got!r}")

    async def check_fragmented_binary(self):
        async with self.open() as ws:
            parts = [b"\x00\x01", b"", b"\x02" * 300, bytes(range(256))]
            await ws.send(parts)
            got = await ws.recv()
            expect(got == b"".join(parts), f"got {describe(got)}")

    async def check_fragmented_large(self):
        # 1 MiB in 64 fragments of 16 KiB.
        data = binary_of_size(1 << 20)
        async with self.open() as ws:
            await ws.send([data[i : i + 16384] for i in range(0, len(data), 16384)])
            got = await ws.recv()
            expect(got == data, f"got {describe(got)}")

    async def check_ping_between_fragments(self):
        # A control frame between the fragments of a data message (RFC 6455 §5.4).
        async with self.open() as ws:
            ws.protocol.send_text(b"before ", fin=False)
            ws.protocol.send_ping(b"mid-message")
            ws.protocol.send_continuation(b"after", fin=True)
            async with ws.send_context():
                pass  # flushes what the protocol queued
            got = await ws.recv()
            expect(got == "before after", f"got {got!r}")

    # ----- ping/pong -----

    def ping_check(self, payload):
        async def check():
            async with self.open() as ws:
                waiter = await ws.ping(payload)
                # The waiter completes only on a pong whose payload matches (websockets
                # ignores pongs that match no ping it sent).
                await asyncio.wait_for(waiter, 10)
                # The connection still echoes afterwards.
                await self.round_trip(ws, "after ping")
        return check

    # ----- close -----

    def close_check(self, code, reason):
        async def check():
            async with self.open() as ws:
                await self.round_trip(ws, "before close")
                await ws.close(code, reason)
                rcvd = ws.protocol.close_rcvd
                expect(rcvd is not None, "no close frame came back from the server")
                expect(
                    rcvd.code == code,
                    f"server answered close {code} with close {rcvd.code} {rcvd.reason!r}",
                )
                expect(
                    ws.protocol.close_rcvd_then_sent is False,
                    "close handshake order wrong (we initiated)",
                )
        return check

    async def check_invalid_utf8(self):
        async with self.open() as ws:
            await ws.send(b"bad \xff\xfe text", text=True)
            try:
                got = await asyncio.wait_for(ws.recv(), 10)
                raise CheckFailed(f"server echoed invalid UTF-8 instead of closing: {got!r}")
            except ConnectionClosed as exc:
                expect(exc.rcvd is not None, f"no close frame from the server: {exc}")
                expect(
                    exc.rcvd.code == CloseCode.INVALID_DATA,
                    f"expected close 1007, server sent {exc.rcvd.code} {exc.rcvd.reason!r}",
                )

    async def check_invalid_utf8_fragmented(self):
        async with self.open() as ws:
            # A 2-byte sequence lead byte followed, in the next fragment, by a non-continuation.
            await ws.send([b"ok \xce", b"\x41 rest"], text=True)
            try:
                got = await asyncio.wait_for(ws.recv(), 10)
                raise CheckFailed(f"server echoed invalid UTF-8 instead of closing: {got!r}")
            except ConnectionClosed as exc:
                expect(exc.rcvd is not None, f"no close frame from the server: {exc}")
                expect(
                    exc.rcvd.code == CloseCode.INVALID_DATA,
                    f"expected close 1007, server sent {exc.rcvd.code} {exc.rcvd.reason!r}",
                )

    # ----- authentication -----

    async def expect_401(self, url, headers):
        try:
            async with self.open(url=url, headers=headers) as ws:
                raise CheckFailed(f"upgrade accepted (101) without a valid token: {ws.response.status_code}")
        except InvalidStatus as exc:
            status = exc.response.status_code
            expect(status == 401, f"expected HTTP 401, got {status}")
            auth = exc.response.headers.get("WWW-Authenticate", "")
            expect(
                auth.lower().startswith("bearer"),
                f"401 without `WWW-Authenticate: Bearer` (got {auth!r})",
            )

    async def check_auth_missing(self):
        await self.expect_401(self.url, None)

    async def check_auth_wrong(self):
        await self.expect_401(self.url, {"Authorization": f"Bearer x{self.token}x"})

    async def check_auth_wrong_query(self):
        await self.expect_401(with_query(self.url, f"token=x{self.token}x"), None)

    async def check_auth_header(self):
        async with self.open() as ws:
            await self.round_trip(ws, "authorized by header")

    async def check_auth_query(self):
        async with self.open(url=with_query(self.url, f"token={self.token}"), headers=None) as ws:
            await self.round_trip(ws, "authorized by query")

    # ----- driver -----

    def checks(self):
        out = []
        if self.token is not None:
            out += [
                ("auth: no token -> 401", self.check_auth_missing),
                ("auth: wrong bearer token -> 401", self.check_auth_wrong),
                ("auth: wrong ?token= -> 401", self.check_auth_wrong_query),
                ("auth: Authorization: Bearer -> open", self.check_auth_header),
                ("auth: ?token= -> open", self.check_auth_query),
            ]
        for size in SIZES:
            out.append((f"echo text {size} B", self.echo_check(text_of_size, size)))
            out.append((f"echo binary {size} B", self.echo_check(binary_of_size, size)))
        out += [
            ("echo 200 pipelined messages", self.check_pipelined),
            ("fragmented text", self.check_fragmented_text),
            ("fragmented text, code point split across frames", self.check_fragmented_text_split_codepoint),
            ("fragmented binary", self.check_fragmented_binary),
            ("fragmented binary 1 MiB in 64 frames", self.check_fragmented_large),
            ("ping between fragments", self.check_ping_between_fragments),
            ("ping with payload -> matching pong", self.ping_check(b"tidewire?")),
            ("ping empty -> pong", self.ping_check(b"")),
            ("ping 125 B -> matching pong", self.ping_check(bytes(range(125)))),
            ("close 1000 with reason -> echo 1000", self.close_check(1000, "client done")),
            ("close 4000 -> echo 4000", self.close_check(4000, "app terminal")),
            ("close 3000 -> echo 3000", self.close_check(3000, "")),
            ("invalid UTF-8 text -> close 1007", self.check_invalid_utf8),
            ("invalid UTF-8 across fragments -> close 1007", self.check_invalid_utf8_fragmented),
        ]
        return out

    async def run(self, only):
        passed = failed = 0
        for name, check in self.checks():
            if only and only not in name:
                continue
            start = time.monotonic()
            try:
                await asyncio.wait_for(check(), CHECK_TIMEOUT)
            except asyncio.TimeoutError:
                failed += 1
                print(f"FAIL {name}: timed out after {CHECK_TIMEOUT:.0f} s", flush=True)
            except CheckFailed as exc:
                failed += 1
                print(f"FAIL {name}: {exc}", flush=True)
            except Exception as exc:  # noqa: BLE001 - any error fails the check, with its name
                failed += 1
                print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
            else:
                passed += 1
                print(f"ok   {name} ({time.monotonic() - start:.2f} s)", flush=True)
        if self.expect_deflate:
            print(f"deflate agreed: {' | '.join(self.agreed)}", flush=True)
            r = self.received
            print(f"deflate received: {r['compressed']} of {r['messages']} messages compressed",
                  flush=True)
            if r["compressed"] > 0:
                passed += 1
                print("ok   the server compressed messages", flush=True)
            else:
                failed += 1
                print("FAIL the server compressed messages: none came with RSV1", flush=True)
        print(f"client.py: {passed} passed, {failed} failed", flush=True)
        return failed == 0 and passed > 0


def with_query(url, query):
    parts = urlsplit(url)
    q = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", q, parts.fragment))


async def hold(url, token, code):
    battery = Battery(url, token)
    async with battery.open() as ws:
        print("open", flush=True)
        try:
            got = await asyncio.wait_for(ws.recv(), 30)
            print(f"FAIL hold: got a message instead of the close: {describe(got)}", flush=True)
            return False
        except asyncio.TimeoutError:
            print("FAIL hold: the server did not close within 30 s", flush=True)
            return False
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                print(f"FAIL hold: no close frame from the server: {exc}", flush=True)
                return False
            if exc.rcvd.code != code:
                print(f"FAIL hold: expected close {code}, got {exc.rcvd.code} {exc.rcvd.reason!r}", flush=True)
                return False
            if exc.sent is None or ws.protocol.close_rcvd_then_sent is not True:
                print(f"FAIL hold: closing handshake incomplete: {exc}", flush=True)
                return False
            print(f"ok   hold: server closed with {exc.rcvd.code} {exc.rcvd.reason!r}", flush=True)
            return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="ws://HOST:PORT[/path] of an echo server")
    parser.add_argument("--token", help="the server requires this bearer token")
    parser.add_argument("--only", help="run only the checks whose name contains this")
    parser.add_argument("--hold", type=int, metavar="CODE", help="wait for the server to close with CODE")
    parser.add_argument("--deflate", default="default",
                        help="default | none | OFFER PARAMETERS (see the module docs)")
    parser.add_argument("--expect-deflate", action="store_true",
                        help="every connection must negotiate permessage-deflate")
    args = parser.parse_args()
    if args.hold is not None:
        ok = asyncio.run(hold(args.url, args.token, args.hold))
    else:
        battery = Battery(args.url, args.token, args.deflate, args.expect_deflate)
        ok = asyncio.run(battery.run(args.only))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
