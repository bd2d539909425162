#!/usr/bin/env python3
"""A `websockets` server that the Tidewire clients are tested against (issue 4, interop).

    python server.py --port 0 [--deflate SETTINGS]   # prints "listening on PORT" once ready

Compression (permessage-deflate, RFC 7692): `--deflate default` (the default) is websockets'
own setting (it accepts an offer with server_max_window_bits=12, client_max_window_bits=12),
`--deflate none` declines every offer, and a comma-separated list of parameters of
ServerPerMessageDeflateFactory (`server_no_context_takeover`, `client_no_context_takeover`,
`server_max_window_bits=N`, `client_max_window_bits=N`) is what this server imposes.

Every path echoes text and binary messages (max message 32 MiB), except:

  /close/CODE   closes at once with CODE and reason "bye" (a closing handshake it starts)
  /reject       answers the upgrade with 401 and `WWW-Authenticate: Bearer`
  /ping         sends a ping with a payload; once the matching pong arrived it sends the text
                "pong-ok" (or "pong-missing" after 5 s without it), then echoes
  /fragmented   sends the text "fragmented ✓ message" in four fragments and the binary
                bytes 0..=255 in three, then echoes
  /deflate      first sends a JSON text {"extensions": the Sec-WebSocket-Extensions of its
                101, or null}, then echoes, except that the text "stats" is answered with
                {"messages": N, "compressed": N}: the messages received so far on this
                connection and how many of them came compressed (RSV1)

Each connection logs one line to stderr. The server stops when its standard input reaches
EOF (so it never outlives the test process that started it) or on SIGTERM/SIGINT.
"""

import argparse
import asyncio
import json
import signal
import sys
import threading
from http import HTTPStatus

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)

MAX_MESSAGE = 32 * 1024 * 1024

FRAGMENTED_TEXT = ["frag", "mented ", "✓", " message"]
FRAGMENTED_BINARY = [bytes(range(0, 100)), bytes(range(100, 200)), bytes(range(200, 256))]
PING_PAYLOAD = b"tidewire-interop-ping"


def log(*parts):
    print("server.py:", *parts, file=sys.stderr, flush=True)


def path_of(request_path):
    return request_path.split("?", 1)[0]


def process_request(connection, request):
    if path_of(request.path) == "/reject":
        response = connection.respond(HTTPStatus.UNAUTHORIZED, "unauthorized\n")
        response.headers["WWW-Authenticate"] = "Bearer"
        log("/reject: answered 401")
        return response
    return None


async def echo(ws):
    async for message in ws:
        await ws.send(message)


def deflate_settings(spec):
    """`--deflate`: (compression, extensions) for `serve`."""
    if spec == "default":
        return "deflate", None
    if spec == "none":
        return None, None
    kwargs = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = item.partition("=")
        kwargs[name] = int(value) if value else True
    return None, [ServerPerMessageDeflateFactory(**kwargs)]


def count_compressed(ws):
    """Counts the messages received on `ws` and those that came compressed: a wrapper
    around the negotiated PerMessageDeflate's `decode` (the first frame of a message carries
    RSV1). Installed before this connection's first message: the peer sends only after the
    first message of /deflate."""
    counts = {"messages": 0, "compressed": 0}
    for ext in ws.protocol.extensions:
        if isinstance(ext, PerMessageDeflate):
            decode = ext.decode

            def counting(frame, *args, decode=decode, **kwargs):
                if frame.opcode.name in ("TEXT", "BINARY"):
                    counts["messages"] += 1
                    counts["compressed"] += bool(frame.rsv1)
                return decode(frame, *args, **kwargs)

            ext.decode = counting
    return counts


async def deflate_echo(ws):
    counts = count_compressed(ws)
    header = ws.response.headers.get("Sec-WebSocket-Extensions")
    await ws.send(json.dumps({"extensions": header}))
    async for message in ws:
        if message == "stats":
            await ws.send(json.dumps(counts))
        else:
            await ws.send(message)


async def handler(ws):
    path = path_of(ws.request.path)
    try:
        if path == "/deflate":
            await deflate_echo(ws)
            log(f"{path}: peer closed with {ws.close_code} {ws.close_reason!r}")
            return
        if path.startswith("/close/"):
            code = int(path[len("/close/"):])
            await ws.close(code, "bye")
            log(f"{path}: closed, received close {ws.close_code}")
            return
        if path == "/ping":
            waiter = await ws.ping(PING_PAYLOAD)
            try:
                await asyncio.wait_for(waiter, 5)
                await ws.send("pong-ok")
                log("/ping: pong received")
            except asyncio.TimeoutError:
                await ws.send("pong-missing")
                log("/ping: NO PONG within 5 s")
        elif path == "/fragmented":
            await ws.send(FRAGMENTED_TEXT)
            await ws.send(FRAGMENTED_BINARY)
            log("/fragmented: sent both fragmented messages")
        await echo(ws)
        log(f"{path}: peer closed with {ws.close_code} {ws.close_reason!r}")
    except ConnectionClosed as exc:
        log(f"{path}: connection closed: {exc}")


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--deflate", default="default",
                        help="default | none | PARAMETERS (see the module docs)")
    args = parser.parse_args()
    compression, extensions = deflate_settings(args.deflate)

    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def request_stop():
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)

    def watch_stdin():
        # A daemon thread, so that a stop by signal never waits for this blocking read.
        while sys.stdin.readline():
            pass
        loop.call_soon_threadsafe(request_stop)

    async with serve(
        handler,
        args.host,
        args.port,
        process_request=process_request,
        max_size=MAX_MESSAGE,
        ping_interval=None,
        compression=compression,
        extensions=extensions,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on {port}", flush=True)
        threading.Thread(target=watch_stdin, daemon=True).start()
        await stop
    log("stopped")


if __name__ == "__main__":
    asyncio.run(main())
