// Unit tests of web/tidewire.js with fake WebSocket / EventSource / fetch, a fake clock and
// scripted randomness. Run: node --test web/test/
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { Tidewire, setup, query, scriptedRandom } = require('./fakes.js');

const A = { ep: 'a1' };

/** Connects over WebSocket and opens it. */
async function openWs(t) {
  t.client.connect();
  t.ws().open();
  await t.clock.advance(0);
  return t.ws();
}

test('backoff: full jitter stays within [0, min(cap, base*2^n)] and respects the cap', () => {
  const cfg = { base: 1000, cap: 30000, healthyAfter: 10000, maxAttempts: Infinity };
  const ceilings = [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
  const high = new Tidewire.Backoff(cfg, () => 0.9999999);
  assert.deepEqual(ceilings.map(() => high.next()), ceilings);
  const low = new Tidewire.Backoff(cfg, () => 0);
  assert.deepEqual(ceilings.map(() => low.next()), ceilings.map(() => 0));
  const mid = new Tidewire.Backoff(cfg, () => 0.5);
  assert.deepEqual([mid.next(), mid.next(), mid.next()], [500, 1000, 2000]);
  // Many draws: always inside the bounds, and spread (not a constant).
  const rnd = new Tidewire.Backoff(cfg, Math.random);
  const seen = new Set();
  for (let i = 0; i < 200; i++) {
    rnd.attempt = 10;
    const d = rnd.next();
    assert.ok(d >= 0 && d <= 30000, String(d));
    seen.add(d);
  }
  assert.ok(seen.size > 50);
  // A huge attempt number does not overflow.
  rnd.attempt = 5000;
  assert.ok(rnd.next() <= 30000);
});

test('backoff: maxAttempts closes the client with reason exhausted', async () => {
  const t = setup({ backoff: { maxAttempts: 2 }, transports: ['ws'] });
  t.client.connect();
  for (let i = 0; i < 3; i++) {
    t.ws().serverClose(1006);
    await t.clock.advance(60000);
  }
  assert.equal(t.client.state, 'closed');
  assert.equal(t.events.state.at(-1).reason, 'exhausted');
});

test('state events carry the reason, the attempt and the real nextRetryAt', async () => {
  const t = setup({ random: () => 0.9999999 });
  t.client.connect();
  const t0 = t.clock.now();
  t.ws().serverClose(1006);
  assert.equal(t.client.state, 'reconnecting');
  const ev = t.events.state.at(-1);
  assert.deepEqual(
    { state: ev.state, reason: ev.reason, attempt: ev.attempt, nextRetryAt: ev.nextRetryAt, code: ev.code },
    { state: 'reconnecting', reason: 'network', attempt: 1, nextRetryAt: t0 + 1000, code: 1006 }
  );
  assert.equal(t.client.nextRetryAt, t0 + 1000);
  await t.clock.advance(999);
  assert.equal(t.sockets.length, 1, 'no attempt before nextRetryAt');
  await t.clock.advance(1);
  assert.equal(t.sockets.length, 2);
  assert.equal(t.client.state, 'connecting');
  assert.equal(t.client.nextRetryAt, null);
  t.ws().open();
  assert.deepEqual(
    t.events.state.map((e) => [e.state, e.reason]),
    [['connecting', 'start'], ['reconnecting', 'network'], ['connecting', 'retry-due'], ['open', 'connected']]
  );
  assert.equal(t.events.state.at(-1).transport, 'ws');
  assert.equal(t.client.transport, 'ws');
});

test('backoff resets only after a connection stayed healthy for 10 s', async () => {
  const t = setup({ random: () => 0.9999999, transports: ['ws'] });
  t.client.connect();
  t.ws().serverClose(1006); // attempt 1: 1 s
  await t.clock.advance(1000);
  t.ws().serverClose(1006); // attempt 2: 2 s
  await t.clock.advance(2000);
  t.ws().open();
  await t.clock.advance(3000); // up 3 s only: not healthy
  t.ws().serverClose(1001);
  assert.equal(t.events.state.at(-1).nextRetryAt - t.clock.now(), 4000);
  assert.equal(t.client.attempt, 3);
  await t.clock.advance(4000);
  t.ws().open();
  await t.clock.advance(10000); // healthy
  t.ws().serverClose(1001);
  assert.equal(t.client.attempt, 1);
  assert.equal(t.client.nextRetryAt - t.clock.now(), 1000);
});

test('close codes: terminal codes close, retryable ones back off', async () => {
  for (const code of [1000, 1002, 1003, 1007, 1009, 4000, 4004, 4099]) {
    const t = setup();
    const ws = await openWs(t);
    ws.serverClose(code);
    assert.equal(t.client.state, 'closed', `code ${code}`);
    assert.equal(t.events.state.at(-1).code, code);
    await t.clock.advance(120000);
    assert.equal(t.sockets.length, 1, `no reconnect after ${code}`);
  }
  for (const code of [1001, 1006, 1011, 1014, 4100, 4199]) {
    const t = setup();
    const ws = await openWs(t);
    ws.serverClose(code);
    assert.equal(t.client.state, 'reconnecting', `code ${code}`);
    await t.clock.advance(1000);
    assert.equal(t.sockets.length, 2, `reconnects after ${code}`);
  }
});

test('close 1012/1013 raise the floor of the next delay', async () => {
  for (const code of [1012, 1013]) {
    const t = setup({ random: () => 0 });
    const ws = await openWs(t);
    ws.serverClose(code);
    assert.equal(t.client.nextRetryAt - t.clock.now(), 5000);
    await t.clock.advance(5000);
    t.ws().serverClose(1006); // the floor was for one delay only
    assert.equal(t.client.nextRetryAt - t.clock.now(), 0);
  }
});

test('1008 / 4003 / HTTP 401 emit error auth and close unless setToken() is called', async () => {
  for (const code of [1008, 4003]) {
    const t = setup({ token: 'user:ann' });
    const ws = await openWs(t);
    ws.serverClose(code);
    assert.equal(t.events.error.at(-1).code, 'auth');
    assert.equal(t.client.state, 'reconnecting');
    await t.clock.advance(60000);
    assert.equal(t.client.state, 'closed');
    assert.equal(t.events.state.at(-1).reason, 'auth');
    assert.equal(t.sockets.length, 1);
    // Fresh credentials reopen at once.
    t.client.setToken('user:bob');
    assert.equal(t.sockets.length, 2);
    assert.equal(query(t.ws().url).token, 'user:bob');
    t.ws().open();
    assert.equal(t.client.state, 'open');
  }
  // setToken() inside the error handler: no close, the next attempt uses the new token.
  const t = setup({ token: 'user:ann' });
  t.client.on('error', (e) => e.code === 'auth' && t.client.setToken('user:ann2'));
  const ws = await openWs(t);
  ws.serverClose(1008);
  assert.equal(t.client.state, 'connecting');
  assert.equal(query(t.ws().url).token, 'user:ann2');
});

test('every (re)connect resubscribes each channel with its last position', async () => {
  const t = setup();
  const got = [];
  t.client.subscribe('public:ticks', (d) => got.push(d.n));
  t.client.subscribe('chat:lobby', () => {});
  let ws = await openWs(t);
  assert.deepEqual(ws.json().map((m) => [m.op, m.ch, m.pos]), [
    ['sub', 'public:ticks', undefined],
    ['sub', 'chat:lobby', undefined]
  ]);
  ws.receive({ op: 'subscribed', ch: 'public:ticks', recovered: true, ep: 'a1', off: 4 });
  ws.receive({ op: 'subscribed', ch: 'chat:lobby', recovered: true, ep: 'b2', off: 0 });
  ws.receive({ op: 'msg', ch: 'public:ticks', ep: 'a1', off: 5, data: { n: 5 } });
  ws.serverClose(1006);
  await t.clock.advance(1000);
  ws = t.ws();
  ws.open();
  const subs = ws.json();
  assert.deepEqual(subs.map((m) => [m.op, m.ch, m.pos]), [
    ['sub', 'public:ticks', { ep: 'a1', off: 5 }],
    ['sub', 'chat:lobby', { ep: 'b2', off: 0 }]
  ]);
  assert.equal(t.client.position('public:ticks'), 'a1:5');
  // Replay after the position, then live.
  ws.receive({ op: 'subscribed', ch: 'public:ticks', recovered: true, ep: 'a1', off: 7 });
  ws.receive({ op: 'msg', ch: 'public:ticks', ep: 'a1', off: 6, data: { n: 6 } });
  ws.receive({ op: 'msg', ch: 'public:ticks', ep: 'a1', off: 7, data: { n: 7 } });
  assert.deepEqual(got, [5, 6, 7]);
});

test('subscribed with recovered:false emits refetch once and continues from the given position', async () => {
  const t = setup();
  const got = [];
  t.client.subscribe('public:ticks', (d, meta) => got.push(`${meta.ep}:${meta.off}`));
  let ws = await openWs(t);
  ws.receive({ op: 'msg', ch: 'public:ticks', ep: 'a1', off: 3, data: {} });
  ws.serverClose(1012);
  await t.clock.advance(30000);
  ws = t.ws();
  ws.open();
  assert.deepEqual(ws.json()[0].pos, { ep: 'a1', off: 3 });
  ws.receive({ op: 'subscribed', ch: 'public:ticks', recovered: false, ep: 'c3', off: 40 });
  ws.receive({ op: 'subscribed', ch: 'public:ticks', recovered: false, ep: 'c3', off: 40 });
  assert.deepEqual(t.events.refetch, [{ ch: 'public:ticks', pos: 'c3:40' }]);
  ws.receive({ op: 'msg', ch: 'public:ticks', ep: 'c3', off: 40, data: {} }); // at the position: old
  ws.receive({ op: 'msg', ch: 'public:ticks', ep: 'c3', off: 41, data: {} });
  assert.deepEqual(got, ['a1:3', 'c3:41']);
  assert.equal(t.events.refetch.length, 1);
  // The next resume carries the new epoch.
  ws.serverClose(1006);
  await t.clock.advance(30000);
  t.ws().open();
  assert.deepEqual(t.ws().json()[0].pos, { ep: 'c3', off: 41 });
});

test('duplicates and stale messages are dropped by offset; another epoch only through a refetch', async () => {
  const t = setup();
  const got = [];
  t.client.subscribe('c', (d, m) => got.push(`${m.ep}:${m.off}`));
  const ws = await openWs(t);
  for (const off of [1, 2, 2, 1, 4, 3, 5]) ws.receive({ op: 'msg', ch: 'c', ...A, off, data: off });
  assert.deepEqual(got, ['a1:1', 'a1:2', 'a1:4', 'a1:5']);
  assert.equal(t.client.duplicates, 3);
  // An unannounced epoch: one refetch, then the message.
  ws.receive({ op: 'msg', ch: 'c', ep: 'd4', off: 9, data: 0 });
  assert.deepEqual(t.events.refetch, [{ ch: 'c', pos: 'd4:8' }]);
  assert.deepEqual(got.at(-1), 'd4:9');
  // Messages for channels we do not hold are ignored.
  ws.receive({ op: 'msg', ch: 'other', ...A, off: 1, data: 0 });
  assert.equal(got.length, 5);
});

test('offline queue: bounded by count and bytes, oldest dropped and counted', () => {
  const t = setup({ offlineQueue: { maxCount: 3, maxBytes: 1000 } });
  const ids = [1, 2, 3, 4, 5].map((n) => t.client.publish('chat:lobby', { n }));
  assert.equal(t.client.queued, 3);
  assert.equal(t.client.dropped, 2);
  assert.deepEqual(t.events.error.map((e) => [e.code, e.id]), [['dropped', ids[0]], ['dropped', ids[1]]]);
  const b = setup({ offlineQueue: { maxCount: 100, maxBytes: 100 } });
  b.client.publish('c', 'x'.repeat(40)); // 1 + 42 bytes
  b.client.publish('c', 'y'.repeat(40));
  b.client.publish('c', 'z'.repeat(40));
  assert.equal(b.client.queued, 2);
  assert.equal(b.client.dropped, 1);
  assert.throws(() => b.client.publish('c', 'w'.repeat(200)), RangeError);
});

test('offline queue replays in order with the same ids after reconnect; acks by ref', async () => {
  const t = setup();
  const ids = ['a', 'b', 'c'].map((text) => t.client.publish('chat:lobby', { text }));
  assert.equal(t.client.queued, 3);
  let ws = await openWs(t);
  let pubs = ws.json().filter((m) => m.op === 'pub');
  assert.deepEqual(pubs.map((m) => [m.id, m.data.text, m.ch]), [
    [ids[0], 'a', 'chat:lobby'], [ids[1], 'b', 'chat:lobby'], [ids[2], 'c', 'chat:lobby']
  ]);
  const refs = pubs.map((m) => m.ref);
  assert.equal(new Set(refs).size, 3);
  // The exact frame: data is embedded as JSON.
  assert.equal(ws.sent.find((s) => s.includes('"pub"')),
    `{"op":"pub","ch":"chat:lobby","id":"${ids[0]}","data":{"text":"a"},"ref":${refs[0]}}`);
  ws.receive({ op: 'ack', ref: refs[0], ep: 'e1', off: 1 });
  assert.deepEqual(t.events.ack, [{ id: ids[0], ref: refs[0], ch: 'chat:lobby', pos: 'e1:1' }]);
  // Dropped before the other acks: both are sent again, same ids, same order.
  ws.serverClose(1006);
  const later = t.client.publish('chat:lobby', { text: 'd' });
  await t.clock.advance(1000);
  ws = t.ws();
  ws.open();
  pubs = ws.json().filter((m) => m.op === 'pub');
  assert.deepEqual(pubs.map((m) => m.id), [ids[1], ids[2], later]);
  assert.deepEqual(pubs.map((m) => m.ref).slice(0, 2), refs.slice(1));
  // An err for a publish fails that publish only.
  ws.receive({ op: 'err', ref: pubs[0].ref, code: 'forbidden', msg: 'no' });
  assert.deepEqual(t.events.error.at(-1), { code: 'forbidden', msg: 'no', id: ids[1], ch: 'chat:lobby' });
  assert.equal(t.client.queued, 2);
});

test('fallback WS -> SSE -> polling, then a periodic upgrade back to WebSocket', async () => {
  const t = setup({ token: 'user:ann', random: () => 0 });
  const got = [];
  t.client.subscribe('public:ticks', (d) => got.push(d.n), { pos: 'a1:2' });
  t.client.connect();
  t.ws().serverClose(1006); // never opened
  await t.clock.advance(0);
  assert.equal(t.sockets.length, 2);
  t.ws().serverClose(1006);
  await t.clock.advance(0);
  // SSE: one EventSource per channel, position and token in the URL.
  assert.equal(t.client.transport, 'sse');
  assert.equal(t.sources.length, 1);
  const es = t.sources[0];
  assert.ok(es.url.startsWith('http://demo.test/events?'));
  assert.deepEqual(query(es.url), { ch: 'public:ticks', pos: 'a1:2', token: 'user:ann' });
  es.error(0); // network error before open: closed, Tidewire's backoff instead of EventSource's
  assert.ok(es.closed);
  await t.clock.advance(0);
  t.sources[1].error(0);
  await t.clock.advance(0);
  // Polling: a short first poll, then long polls with If-None-Match.
  assert.equal(t.client.transport, 'poll');
  const p1 = t.requests.at(-1);
  assert.deepEqual(query(p1.url), { ch: 'public:ticks', pos: 'a1:2', token: 'user:ann' });
  assert.equal(p1.headers['If-None-Match'], '"a1:2"');
  p1.respond(200, { ch: 'public:ticks', pos: 'a1:3', recovered: true, events: [{ ep: 'a1', off: 3, data: { n: 3 } }] });
  await t.clock.advance(0);
  assert.equal(t.client.state, 'open');
  assert.deepEqual(got, [3]);
  await t.clock.advance(500); // poll interval
  const p2 = t.requests.at(-1);
  assert.deepEqual(query(p2.url), { ch: 'public:ticks', pos: 'a1:3', wait: '1', token: 'user:ann' });
  assert.equal(p2.headers['If-None-Match'], '"a1:3"');
  p2.respond(304);
  await t.clock.advance(500);
  const p3 = t.requests.at(-1);
  assert.notEqual(p3, p2);
  // After upgradeRetryMs a WebSocket probe; the poll keeps running until it opens.
  const before = t.sockets.length;
  for (let i = 0; i < 59; i++) {
    // The server answers each long poll with "nothing new".
    t.requests.filter((r) => !r.done).forEach((r) => r.respond(304));
    await t.clock.advance(1000);
  }
  assert.equal(t.sockets.length, before + 1);
  assert.equal(t.client.transport, 'poll');
  const probe = t.ws();
  probe.open();
  assert.equal(t.client.transport, 'ws');
  assert.deepEqual(t.events.state.at(-1), { state: 'open', reason: 'upgraded', attempt: t.client.attempt, nextRetryAt: null, transport: 'ws' });
  assert.ok(t.requests.at(-1).aborted, 'the running poll is stopped');
  const polls = t.requests.length;
  await t.clock.advance(5000);
  assert.equal(t.requests.length, polls, 'no more polls');
  assert.deepEqual(probe.json()[0], { op: 'sub', ch: 'public:ticks', pos: { ep: 'a1', off: 3 }, ref: probe.json()[0].ref });
});

test('a failed upgrade probe keeps the working transport and tries again later', async () => {
  const t = setup({ transports: ['ws', 'sse'], wsFailuresBeforeFallback: 1, upgradeRetryMs: 10000 });
  t.client.subscribe('public:ticks', () => {});
  t.client.connect();
  t.ws().serverClose(1006);
  await t.clock.advance(1000);
  t.sources[0].open();
  assert.equal(t.client.transport, 'sse');
  await t.clock.advance(10000);
  assert.equal(t.sockets.length, 2);
  t.ws().serverClose(1006);
  assert.equal(t.client.state, 'open');
  assert.equal(t.client.transport, 'sse');
  await t.clock.advance(10000);
  assert.equal(t.sockets.length, 3);
});

test('SSE: events by channel name with EP:OFF ids, reset -> refetch, HTTP publish with the same id', async () => {
  const t = setup({ transports: ['sse'], token: 'user:ann' });
  const got = [];
  t.client.subscribe('chat:lobby', (d, m) => got.push([d.text, m.off]));
  t.client.connect();
  const es = t.sources[0];
  assert.deepEqual(query(es.url), { ch: 'chat:lobby', token: 'user:ann' });
  es.open();
  assert.equal(t.client.state, 'open');
  es.emit('chat:lobby', { text: 'hi' }, 'a1:1');
  es.emit('chat:lobby', { text: 'hi' }, 'a1:1');
  es.emit('chat:lobby', { text: 'yo' }, 'a1:2');
  assert.deepEqual(got, [['hi', 1], ['yo', 2]]);
  es.emit('reset', { ch: 'chat:lobby', pos: 'f6:10', recovered: false });
  assert.deepEqual(t.events.refetch, [{ ch: 'chat:lobby', pos: 'f6:10' }]);
  // Publishing goes over HTTP, one at a time, in order.
  const id1 = t.client.publish('chat:lobby', { text: 'one' });
  const id2 = t.client.publish('chat:lobby', { text: 'two' });
  await t.clock.advance(0);
  const pubs = () => t.requests.filter((r) => r.method === 'POST');
  assert.equal(pubs().length, 1);
  assert.deepEqual(query(pubs()[0].url), { ch: 'chat:lobby', id: id1, token: 'user:ann' });
  assert.ok(pubs()[0].url.startsWith('http://demo.test/api/publish?'));
  assert.equal(pubs()[0].body, '{"text":"one"}');
  pubs()[0].fail(); // network: retried later with the same id
  await t.clock.advance(1000);
  assert.equal(pubs().length, 2);
  assert.equal(query(pubs()[1].url).id, id1);
  pubs()[1].respond(200, { ep: 'f6', off: 11 });
  await t.clock.advance(0);
  assert.deepEqual(t.events.ack.map((a) => [a.id, a.pos]), [[id1, 'f6:11']]);
  assert.equal(query(pubs()[2].url).id, id2);
  // A dropped stream: closed at once, reopened after Tidewire's backoff with the position.
  es.error(0);
  assert.ok(es.closed);
  assert.equal(t.client.state, 'reconnecting');
  await t.clock.advance(30000);
  assert.equal(query(t.sources.at(-1).url).pos, 'f6:10');
});

test('SSE refused: the status is learned with fetch; 401 -> auth, 403 -> that channel only', async () => {
  const t = setup({ transports: ['sse'] });
  t.client.subscribe('public:ticks', () => {});
  t.client.subscribe('chat:lobby', () => {});
  t.client.connect();
  t.sources[1].error(2); // readyState CLOSED: an HTTP error
  await t.clock.advance(0);
  const probe = t.requests.at(-1);
  assert.equal(query(probe.url).ch, 'chat:lobby');
  probe.respond(403);
  await t.clock.advance(0);
  assert.deepEqual(t.events.error.map((e) => [e.code, e.ch]), [['forbidden', 'chat:lobby']]);
  t.sources[0].open();
  assert.equal(t.client.state, 'open');
  // 401 needs credentials.
  const u = setup({ transports: ['sse'] });
  u.client.subscribe('public:ticks', () => {});
  u.client.connect();
  u.sources[0].error(2);
  await u.clock.advance(0);
  u.requests.at(-1).respond(401);
  await u.clock.advance(0);
  assert.equal(u.events.error.at(-1).code, 'auth');
  await u.clock.advance(60000);
  assert.equal(u.client.state, 'closed');
});

test('polling: recovered:false -> refetch; 401 -> auth; a dead long poll is dropped', async () => {
  const t = setup({ transports: ['poll'] });
  t.client.subscribe('public:ticks', () => {});
  t.client.connect();
  t.requests.at(-1).respond(200, { ch: 'public:ticks', pos: 'a1:5', recovered: true, events: [] });
  await t.clock.advance(500);
  assert.equal(t.client.position('public:ticks'), 'a1:5');
  t.requests.at(-1).respond(200, { ch: 'public:ticks', pos: 'b2:9', recovered: false, events: [] });
  await t.clock.advance(0);
  assert.deepEqual(t.events.refetch, [{ ch: 'public:ticks', pos: 'b2:9' }]);
  await t.clock.advance(500);
  assert.equal(query(t.requests.at(-1).url).pos, 'b2:9');
  await t.clock.advance(40000); // unanswered: dead
  assert.equal(t.client.state, 'reconnecting');
  assert.equal(t.events.state.at(-1).reason, 'timeout');
  await t.clock.advance(30000);
  t.requests.at(-1).respond(401);
  await t.clock.advance(0);
  assert.equal(t.events.error.at(-1).code, 'auth');
});

test('presence, server errors for subscriptions, unsubscribe', async () => {
  const t = setup();
  t.client.subscribe('chat:lobby', () => {});
  t.client.subscribe('secret:x', () => {});
  const ws = await openWs(t);
  const subRef = ws.json().find((m) => m.ch === 'secret:x').ref;
  ws.receive({ op: 'err', ref: subRef, code: 'forbidden', msg: 'no read' });
  assert.deepEqual(t.events.error.at(-1), { code: 'forbidden', msg: 'no read', ch: 'secret:x' });
  ws.receive({ op: 'presence', ch: 'chat:lobby', join: ['ann', 'bob'], leave: [] });
  ws.receive({ op: 'presence', ch: 'secret:x', join: ['eve'], leave: [] });
  assert.deepEqual(t.events.presence, [{ ch: 'chat:lobby', join: ['ann', 'bob'], leave: [] }]);
  t.client.unsubscribe('chat:lobby');
  assert.deepEqual(ws.json().at(-1), { op: 'unsub', ch: 'chat:lobby' });
});

test('heartbeat: a ping after 25 s of silence, dead after 20 s more', async () => {
  const t = setup();
  const ws = await openWs(t);
  await t.clock.advance(25000);
  assert.deepEqual(ws.json().at(-1), { op: 'ping' });
  ws.receive({ op: 'pong' });
  await t.clock.advance(25000);
  assert.equal(ws.json().filter((m) => m.op === 'ping').length, 2);
  await t.clock.advance(20000);
  assert.equal(t.client.state, 'reconnecting');
  assert.equal(t.events.state.at(-1).reason, 'timeout');
  assert.equal(ws.closedByClient, 1000);
});

test('close() fails what is queued and stops for good; listeners may throw', async () => {
  const t = setup();
  const reported = [];
  const saved = console.error;
  console.error = (e) => reported.push(e.message);
  t.client.on('state', () => { throw new Error('app bug'); });
  const ws = await openWs(t);
  console.error = saved;
  assert.deepEqual(reported, ['app bug', 'app bug']);
  const id = t.client.publish('c', 1);
  t.client.close();
  assert.equal(t.client.state, 'closed');
  assert.equal(ws.closedByClient, 1000);
  assert.deepEqual(t.events.error.at(-1), { code: 'closed', msg: 'client closed', id, ch: 'c' });
  assert.equal(t.client.queued, 0);
});

test('closeClass and positions', () => {
  assert.equal(Tidewire.closeClass(1000), 'terminal');
  assert.equal(Tidewire.closeClass(1008), 'auth');
  assert.equal(Tidewire.closeClass(4003), 'auth');
  assert.equal(Tidewire.closeClass(1013), 'later');
  assert.equal(Tidewire.closeClass(4150), 'retry');
  assert.equal(Tidewire.closeClass(4200), 'retry');
  assert.deepEqual(Tidewire.parsePos('a1:17'), { ep: 'a1', off: 17 });
  assert.equal(Tidewire.parsePos('zz:1'), null);
  assert.equal(Tidewire.parsePos(''), null);
  assert.equal(Tidewire.formatPos({ ep: 'a1', off: 0 }), 'a1:0');
  assert.equal(typeof scriptedRandom, 'function');
});

test('each message passes its publisher (`from`) to the callback, over WS, SSE and polling', async () => {
  const t = setup({ token: 'user:ann', random: () => 0 });
  const got = [];
  t.client.subscribe('chat:lobby', (d, meta) => got.push([d.t, meta.from]), { pos: 'a1:0' });
  const ws = await openWs(t);
  ws.receive({ op: 'msg', ch: 'chat:lobby', ep: 'a1', off: 1, from: 'ann', data: { t: 'hi' } });
  ws.receive({ op: 'msg', ch: 'chat:lobby', ep: 'a1', off: 2, data: { t: 'tick' } });
  assert.deepEqual(got, [['hi', 'ann'], ['tick', null]]);

  // SSE (a client whose WebSocket never opens): an `event: from` block names the publisher
  // of the message that follows it.
  const s = setup({ token: 'user:ann', random: () => 0 });
  const sse = [];
  s.client.subscribe('chat:lobby', (d, meta) => sse.push([d.t, meta.from]), { pos: 'a1:2' });
  s.client.connect();
  s.ws().serverClose(1006);
  await s.clock.advance(0);
  s.ws().serverClose(1006);
  await s.clock.advance(0);
  assert.equal(s.client.transport, 'sse');
  const es = s.sources.at(-1);
  es.open();
  es.emit('from', { ch: 'chat:lobby', pos: 'a1:3', from: 'bob' }, 'a1:2');
  es.emit('chat:lobby', { t: 'yo' }, 'a1:3');
  es.emit('chat:lobby', { t: 'anon' }, 'a1:4'); // no `from` block: no publisher
  es.emit('from', { ch: 'chat:lobby', pos: 'a1:9', from: 'eve' }, 'a1:4'); // not the next one
  es.emit('chat:lobby', { t: 'later' }, 'a1:5');
  assert.deepEqual(sse, [['yo', 'bob'], ['anon', null], ['later', null]]);

  // Polling (a client whose WebSocket and SSE never open): each event carries `from` when
  // there is one.
  const p = setup({ token: 'user:ann', random: () => 0 });
  const polled = [];
  p.client.subscribe('chat:lobby', (d, meta) => polled.push([d.t, meta.from]), { pos: 'a1:5' });
  p.client.connect();
  for (let i = 0; i < 2; i++) {
    p.ws().serverClose(1006);
    await p.clock.advance(0);
  }
  for (let i = 0; i < 2; i++) {
    p.sources.at(-1).error(0);
    await p.clock.advance(0);
  }
  assert.equal(p.client.transport, 'poll');
  p.requests.at(-1).respond(200, {
    ch: 'chat:lobby', pos: 'a1:7', recovered: true,
    events: [{ ep: 'a1', off: 6, from: 'cy', data: { t: 'p' } }, { ep: 'a1', off: 7, data: { t: 'q' } }]
  });
  await p.clock.advance(0);
  assert.deepEqual(polled, [['p', 'cy'], ['q', null]]);
});

test('extensions: what the open WebSocket negotiated, null on another transport or closed', async () => {
  const t = setup({ transports: ['ws'] });
  assert.equal(t.client.extensions, null);
  const ws = await openWs(t);
  assert.equal(t.client.extensions, ''); // a socket without the property: none negotiated
  ws.extensions = 'permessage-deflate; server_no_context_takeover';
  assert.equal(t.client.extensions, 'permessage-deflate; server_no_context_takeover');
  ws.serverClose(1006);
  assert.equal(t.client.extensions, null);
  const s = setup({ transports: ['sse'] });
  s.client.connect();
  await s.clock.advance(0);
  assert.equal(s.client.extensions, null);
});
