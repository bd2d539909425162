#!/usr/bin/env python3
"""A `websockets` server that the Tidewire clients are tested against (issue 4, interop).

    python server.py --port 0        # prints "listening on PORT" once ready

Every path echoes text and binary messages (max message 32 MiB), except:

  /close/CODE   closes at once with CODE and reason "bye" (a closing handshake it starts)
  /reject       answers the upgrade with 401 and `WWW-Authenticate: Bearer`
  /ping         sends a ping with a payload; once the matching pong arrived it sends the text
                "pong-ok" (or "pong-missing" after 5 s without it), then echoes
  /fragmented   sends the text "fragmented ✓ message" in four fragments and the binary
                bytes 0..=255 in three, then echoes

Each connection logs one line to stderr. The server stops when its standard input reaches
EOF (so it never outlives the test process that started it) or on SIGTERM/SIGINT.
"""

import argparse
import asyncio
import signal
import sys
import threading
from http import HTTPStatus

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

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


async def handler(ws):
    path = path_of(ws.request.path)
    try:
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
    args = parser.parse_args()

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
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on {port}", flush=True)
        threading.Thread(target=watch_stdin, daemon=True).start()
        await stop
    log("stopped")


if __name__ == "__main__":
    asyncio.run(main())
