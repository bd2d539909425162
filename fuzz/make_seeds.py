#!/usr/bin/env python3
"""Writes the hand-made seeds of the structured targets into corpus/<target>/:
`python3 make_seeds.py corpus`. Check one with `cargo fuzz fmt <target> <file>`.

Hand-made seeds in the byte layout of `arbitrary` 1.5 (ints little-endian, bool = 1 byte,
Option = bool + value, enum = u32 (v*count>>32), a String's length taken from the end of
the data, each element of a Vec after a "more" byte). The variant numbers follow the order
of the `Op` enums in fuzz_targets/; keep them in step when a target changes."""
import os, struct, sys

class E:
    def __init__(s): s.front = bytearray(); s.back = []
    def u8(s, v): s.front += bytes([v & 0xff]); return s
    def i8(s, v): return s.u8(v & 0xff)
    def u16(s, v): s.front += struct.pack('<H', v); return s
    def u32(s, v): s.front += struct.pack('<I', v); return s
    def u64(s, v): s.front += struct.pack('<Q', v); return s
    def b(s, v): return s.u8(1 if v else 0)
    def none(s): return s.u8(0)
    def some(s): return s.u8(1)
    def var(s, idx, count): return s.u32((idx * 2**32 + count - 1) // count)
    def bytes_(s, data):  # a Vec<u8> / String not at the tail
        s.front += data; s.back.append(len(data)); return s
    def vec(s, data):  # a Vec<u8> not at the tail: each byte after a "more" byte
        for x in data: s.more().u8(x)
        return s.end()
    def more(s): return s.u8(1)   # another element of a Vec
    def end(s): return s.u8(0)    # no more elements
    def out(s):
        data = bytes(s.front) + bytes(reversed(s.back))
        assert len(data) <= 256, len(data)
        return data

ROOT = sys.argv[1]
def save(target, name, e):
    d = os.path.join(ROOT, target); os.makedirs(d, exist_ok=True)
    open(os.path.join(d, name), 'wb').write(e.out())

# ---- policy_ops ----
def pcfg(e, jitter=3, out_policy=2):
    e.u16(100).u16(2000).u8(jitter).u16(500).some().u8(5).none().u16(300).u16(1000)
    e.u64(7).u8(4).u16(50).u64(10).u16(64).u8(3).u8(40).u8(4).u8(out_policy)
    e.u16(10).u8(2).some().u16(100).some().u16(50).u8(0)
    return e
P = 23
e = pcfg(E())
for op in [(2,), (2,), (3,), (4,), (0, 600), (5,), (2,), (8, 1013), (2,), (7, 9), (2,), (9,), (1, 50), (3,)]:
    e.more().var(op[0], P)
    if len(op) > 1: e.u16(op[1])
save('policy_ops', 'backoff', e.end())
e = pcfg(E())
for op in [(10, 0, 1), (10, 2, 2), (10, 2, 3), (10, 3, 4), (11,), (12,), (0, 60), (12,), (11,), (11,), (10, -2, 5), (13, 1), (10, 0, 6), (11,)]:
    e.more().var(op[0], P)
    if op[0] == 10: e.i8(op[1]).u8(op[2])
    elif op[0] == 0: e.u16(op[1])
    elif op[0] == 13: e.u8(op[1])
save('policy_ops', 'sequencer', e.end())
e = pcfg(E(), out_policy=2)
for length, key in [(10, 1), (10, 2), (12, 1), (30, None), (20, 2), (3, 3)]:
    e.more().var(16, P).u8(length)
    if key is None: e.none()
    else: e.some().u8(key)
e.more().var(17, P).more().var(17, P)
for v in [5, 5, 70000, 1]:
    e.more().var(14, P).u32(v)
for v in [1, 2, 1, 3, 4, 1]:
    e.more().var(15, P).u8(v)
save('policy_ops', 'outbox_dedup', e.end())
e = pcfg(E())
for op in [(18, 1), (18, 1), (18, 1), (0, 100), (18, 1), (22,), (0, 100), (22,), (21, 1), (0, 150), (22,), (0, 60), (22,), (19,), (20,), (0, 200), (22,)]:
    e.more().var(op[0], P)
    if len(op) > 1:
        (e.u16 if op[0] == 0 else e.u8)(op[1])
save('policy_ops', 'rate_heartbeat', e.end())

# ---- sse_client ----
def scfg(e, retry_5xx=False):
    e.u8(64).u8(128).u8(4).some().u16(3000).u16(1000).b(retry_5xx)
    e.u16(100).u16(2000).b(False).none().u16(60000).u16(50)
    return e
S = 9
def block(e, id_, event, data, retry):
    e.more().var(2, S)
    if id_ is None: e.none()
    else: e.some().bytes_(id_.encode())
    if event is None: e.none()
    else: e.some().u8(event)
    e.bytes_(data.encode())
    if retry is None: e.none()
    else: e.some().u16(retry)
e = scfg(E())
e.more().var(1, S).u8(0).u8(0).none()
block(e, '1', None, 'hello', 500)
block(e, '2', 3, 'two\nlines', None)
e.more().var(8, S).u8(9)
e.more().var(3, S)          # end of body: reconnect after `retry`
e.more().var(6, S)          # the retry fires: Connect with Last-Event-ID 2
e.more().var(1, S).u8(1).u8(1).none()
block(e, None, None, 'three', None)
e.more().var(8, S).u8(9)
save('sse_client', 'stream_reconnect', e.end())
e = scfg(E(), retry_5xx=True)
e.more().var(1, S).u8(7).u8(3).some().u16(2000)   # 503, Retry-After
e.more().var(6, S)
e.more().var(0, S).vec(b'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n')
e.more().var(0, S).vec(b'id: 9\ndata: x\n\n: ping\n')
e.more().var(5, S).u16(5000)  # idle timeout
e.more().var(8, S).u8(9)
save('sse_client', 'retry_5xx_raw_idle', e.end())
e = scfg(E())
e.more().var(1, S).u8(5).u8(4).none()   # 404: closed
e.more().var(7, S)
save('sse_client', 'not_found', e.end())

# ---- poll_request ----
R = 5
def pcfg2(e): return e.u64(0xa1).u16(2000).u8(3).u8(8).u16(4096).u16(1000)
e = pcfg2(E())
e.more().var(2, R).var(0, 3).u16(1)
e.more().var(2, R).var(1, 3).bytes_(b'plain text')
e.more().var(1, R).bytes_(b'ticks').some().var(0, 4).u8(1).none().u8(1)
e.more().var(1, R).bytes_(b'ticks').some().var(0, 4).u8(0).some().var(0, 4).u8(0).u8(1)
e.more().var(2, R).var(0, 3).u16(2)
e.more().var(4, R).u16(4000)
save('poll_request', 'long_poll_and_etag', e.end())
e = pcfg2(E())
for i in range(3): e.more().var(2, R).var(0, 3).u16(i)
e.more().var(1, R).bytes_(b'ch').some().var(2, 4).u64(0xb2).u64(1).none().u8(0)
e.more().var(1, R).bytes_(b'ch').some().var(1, 4).u8(3).none().u8(0)
e.more().var(1, R).bytes_(b'ch').none().none().u8(0)
e.more().var(0, R).vec(b'GET /poll?ch=a&pos=a1:0&wait=1 HTTP/1.1\r\nHost: x\r\n\r\n')
save('poll_request', 'gone_ahead_first', e.end())

# ---- hub_envelope ----
H = 7; EV = 5
e = E().some().u8(50).u8(20).u64(1)
e.more().var(1, H).u8(0).var(0, EV).u8(0).none().some().u64(1).b(False)            # ann sub chat:a
e.more().var(1, H).u8(1).var(0, EV).u8(0).none().none().b(False)                   # bob sub chat:a
e.more().var(1, H).u8(0).var(2, EV).u8(0).some().bytes_(b'm1').u8(0).some().u64(2).b(False)
e.more().var(1, H).u8(0).var(2, EV).u8(0).some().bytes_(b'm1').u8(1).some().u64(3).b(False)
e.more().var(1, H).u8(2).var(2, EV).u8(0).none().u8(0).some().u64(4).b(False)     # anonymous: forbidden
e.more().var(1, H).u8(2).var(3, EV).some().u64(5).b(False)
e.more().var(2, H).u8(1).var(2, EV).u8(1).none().u8(2).none().b(False).u8(12)       # cut
e.more().var(0, H).u8(1).vec(b'{"op":"dance","ref":9}')
e.more().var(3, H).u8(1).u8(9)
save('hub_envelope', 'sub_pub_dup_refused', e.end())
e = E().none().u64(2)
e.more().var(1, H).u8(3).var(0, EV).u8(2).none().none().b(False)                   # SSE: ignored
e.more().var(1, H).u8(0).var(0, EV).u8(3).none().none().b(False)                   # admin: forbidden
e.more().var(1, H).u8(0).var(0, EV).u8(4).none().none().b(False)                   # "": bad channel
e.more().var(1, H).u8(0).var(1, EV).u8(0).some().u64(1).b(True)                    # unsub with pos
e.more().var(1, H).u8(0).var(4, EV).bytes_(b'nope').some().u64(6)
e.more().var(0, H).u8(0).vec(b'{"op":"ping","ref":1,"x":2}')
e.more().var(0, H).u8(0).vec(b'\xff\xfe')
e.more().var(4, H).u16(6000)
e.more().var(5, H).u8(1)
save('hub_envelope', 'refusals', e.end())

# ---- hub_ops ----
O = 11
def hcfg(e, items=3): return e.u8(items).u16(300).u8(4).u16(500).u16(100).u64(3)
e = hcfg(E())
e.more().var(0, O).u8(0).some().u8(0)       # ws u0
e.more().var(0, O).u8(1).none()             # sse anonymous
e.more().var(1, O).u8(0).u8(0).none().b(False)
e.more().var(1, O).u8(1).u8(0).none().b(False)
for _ in range(3): e.more().var(3, O).u8(0)
e.more().var(6, O).u8(0).u8(9).more().var(6, O).u8(1).u8(9)
e.more().var(8, O).u8(0)                    # reconnect from the last position
e.more().var(3, O).u8(0)
e.more().var(6, O).u8(2).u8(9)
save('hub_ops', 'reliable_resume', e.end())
e = hcfg(E(), items=1)
e.more().var(0, O).u8(0).some().u8(1)
e.more().var(1, O).u8(0).u8(2).none().b(True)    # d:x
e.more().var(1, O).u8(0).u8(3).none().b(False)   # c:y
for ch in [2, 3, 2, 3, 2, 3]: e.more().var(3, O).u8(ch)
e.more().var(6, O).u8(0).u8(20)
e.more().var(1, O).u8(0).u8(0).none().b(False)   # a: overflow closes
for _ in range(3): e.more().var(3, O).u8(0)
save('hub_ops', 'lossy_and_too_slow', e.end())
e = hcfg(E(), items=8)
e.more().var(0, O).u8(0).some().u8(2)
e.more().var(1, O).u8(0).u8(1).none().b(False)
for idv in [1, 1, 2, 1]: e.more().var(4, O).u8(0).u8(1).some().u8(idv)
e.more().var(5, O).some().u8(2).u8(1).some().u8(1)
e.more().var(5, O).none().u8(1).some().u8(1)
e.more().var(0, O).u8(2).none()              # a poll client
e.more().var(1, O).u8(1).u8(1).some().var(0, 2).u8(2).b(False)
e.more().var(10, O).u16(3000)
e.more().var(6, O).u8(0).u8(20)
save('hub_ops', 'dedup_poll_expiry', e.end())

# ---- client_session ----
C = 11; SV = 11; EN = 7
def ccfg(e, transports=1, fallback=2):
    return e.u8(transports).u8(fallback).none().u16(100).u16(1000).b(False).none().u8(4).u16(400).some().b(True).b(False).b(False).u8(1)
e = ccfg(E())
e.more().var(6, C).u8(0).none()                       # subscribe a
e.more().var(8, C).u8(0).u8(0)                        # publish (queued)
e.more().var(0, C).u8(0)                              # connected
e.more().var(3, C).u8(0).var(1, SV).b(True).none()     # the 101
e.more().var(3, C).u8(0).var(3, SV).var(1, EN).u8(0).b(True).some().u8(0).u8(0)
e.more().var(3, C).u8(0).var(3, SV).var(0, EN).u8(0).u8(0).u8(1).u8(5)
e.more().var(3, C).u8(0).var(3, SV).var(0, EN).u8(0).u8(0).u8(1).u8(5)   # duplicate
e.more().var(3, C).u8(0).var(3, SV).var(2, EN).u8(1).some().u8(0).u8(2)  # ack ref 2
e.more().var(3, C).u8(0).var(3, SV).var(1, EN).u8(0).b(False).some().u8(1).u8(4)
e.more().var(3, C).u8(0).var(4, SV).u16(1012)
e.more().var(5, C)
save('client_session', 'websocket', e.end())
e = ccfg(E(), transports=2)
e.more().var(6, C).u8(1).some().u8(0).u8(2)
e.more().var(0, C).u8(0)
e.more().var(3, C).u8(0).var(6, SV).u8(0).b(True).none().none()
e.more().var(3, C).u8(0).var(7, SV).some().u8(0).u8(3).u8(0).bytes_(b'{"v":1}')
e.more().var(3, C).u8(0).var(8, SV).u8(1).u8(1).u8(7)
e.more().var(2, C).u8(0)
e.more().var(5, C)
save('client_session', 'sse', e.end())
e = ccfg(E(), transports=3)
e.more().var(6, C).u8(2).none()
e.more().var(8, C).u8(2).u8(1)
e.more().var(0, C).u8(0).more().var(0, C).u8(1)
e.more().var(3, C).u8(0).var(9, SV).u8(0).u8(2).u8(0).u8(3).b(True).more().u8(0).u8(2).u8(7).more().u8(0).u8(3).u8(8).end()
e.more().var(3, C).u8(1).var(10, SV).u8(0).some().u8(0).u8(4)
e.more().var(5, C)
e.more().var(10, C)
save('client_session', 'polling_publish', e.end())
e = ccfg(E())   # the server says "gone, you are at a1:4" twice, with a1:5 in between
e.more().var(6, C).u8(0).none()
e.more().var(0, C).u8(0)
e.more().var(3, C).u8(0).var(1, SV).b(True).none()
e.more().var(3, C).u8(0).var(3, SV).var(1, EN).u8(0).b(False).some().u8(0).u8(4)
e.more().var(3, C).u8(0).var(3, SV).var(0, EN).u8(0).u8(0).u8(5).u8(1)
e.more().var(3, C).u8(0).var(3, SV).var(1, EN).u8(0).b(False).some().u8(0).u8(4)
e.more().var(3, C).u8(0).var(3, SV).var(0, EN).u8(0).u8(0).u8(5).u8(1)
save('client_session', 'refetch_twice', e.end())
