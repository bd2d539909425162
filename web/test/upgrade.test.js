// Moving back up to a better transport once degraded (tidewire.js `upgradeRetryMs`), on
// virtual time: an SSE / polling client (the page's dashboard) that fell back to polling
// during an outage returns to SSE, and a failed attempt changes nothing. Every message is
// delivered exactly once, in order, through each switch. Run: node --test web/test/
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { setup, query } = require('./fakes.js');

const TICKS = 'public:ticks';
const OTHER = 'public:other';
const EVERY = 10000; // upgradeRetryMs of these tests

/** A poll answer with the events `offs` of epoch a1, ending at the last of them (or `pos`). */
function pollBody(ch, offs, pos) {
  const last = offs.length ? offs[offs.length - 1] : pos;
  return {
    ch,
    pos: 'a1:' + last,
    recovered: true,
    events: offs.map((off) => ({ ep: 'a1', off, data: { ch, n: off } }))
  };
}

/** The unanswered polls (GET /poll) of `ch`. */
function pendingPolls(t, ch) {
  return t.requests.filter((r) => !r.done && r.method === 'GET' && r.url.includes('/poll?') && query(r.url).ch === ch);
}

/** Answers every unanswered poll with 304 ("nothing new"), then lets `ms` pass. */
async function idle(t, ms) {
  for (let left = ms; left > 0; left -= 1000) {
    t.requests.filter((r) => !r.done && r.url.includes('/poll?')).forEach((r) => r.respond(304));
    await t.clock.advance(Math.min(1000, left));
  }
}

/**
 * A client with transports [sse, poll] subscribed to `channels`: opens on SSE, receives
 * offsets 1..2 on each, then the server goes away; SSE fails to open twice, so the client
 * falls back to polling, whose first poll per channel returns 3..4. Returns the test handles
 * and what each channel delivered.
 */
async function degradedToPolling(channels, opts = {}) {
  const t = setup({ transports: ['sse', 'poll'], upgradeRetryMs: EVERY, random: () => 0, ...opts });
  const got = {};
  for (const ch of channels) {
    got[ch] = [];
    t.client.subscribe(ch, (d, m) => got[ch].push(m.off));
  }
  t.client.connect();
  const first = t.sources.slice();
  first.forEach((es) => es.open());
  assert.equal(t.client.transport, 'sse');
  first.forEach((es, i) => [1, 2].forEach((off) => es.emit(channels[i], { n: off }, 'a1:' + off)));
  // The outage: the streams end, and two attempts to reopen them fail.
  first[0].error(0);
  assert.equal(t.client.state, 'reconnecting');
  for (let i = 0; i < 2; i++) {
    await t.clock.advance(0); // jitter 0: at once
    t.sources.at(-1).error(0);
  }
  await t.clock.advance(0);
  assert.equal(t.client.transport, 'poll');
  for (const ch of channels) {
    const p = pendingPolls(t, ch);
    assert.equal(p.length, 1, ch);
    assert.equal(query(p[0].url).pos, 'a1:2', 'polling resumes from the position');
    p[0].respond(200, pollBody(ch, [3, 4]));
  }
  await t.clock.advance(0);
  assert.equal(t.client.state, 'open');
  assert.equal(t.client.transport, 'poll');
  for (const ch of channels) assert.deepEqual(got[ch], [1, 2, 3, 4]);
  return { t, got };
}

test('degraded to polling, the client moves back to SSE after upgradeRetryMs with exact delivery', async () => {
  const { t, got } = await degradedToPolling([TICKS, OTHER]);
  const opened = t.clock.now();
  const sourcesBefore = t.sources.length;
  // Polling goes on; no attempt before the period is over.
  await t.clock.advance(500);
  pendingPolls(t, TICKS)[0].respond(200, pollBody(TICKS, [5]));
  await idle(t, EVERY - 1000);
  assert.equal(t.sources.length, sourcesBefore, 'nothing tried before upgradeRetryMs');
  await idle(t, opened + EVERY - t.clock.now());
  // One candidate stream per channel, each from the channel's own position.
  const cand = t.sources.slice(sourcesBefore);
  assert.deepEqual(cand.map((es) => query(es.url)), [{ ch: TICKS, pos: 'a1:5' }, { ch: OTHER, pos: 'a1:4' }]);
  assert.equal(t.client.transport, 'poll', 'the working transport stays until the new one is open');
  const states = t.events.state.length;

  // The ticks stream opens first and delivers while the other channel still polls; the
  // polls of both go on meanwhile (overlapping the streams: duplicates are dropped).
  cand[0].open();
  assert.equal(t.client.transport, 'poll');
  cand[0].emit(TICKS, { n: 6 }, 'a1:6');
  assert.deepEqual(got[TICKS], [1, 2, 3, 4, 5, 6]);
  pendingPolls(t, TICKS)[0].respond(200, pollBody(TICKS, [6, 7])); // 6 again, then 7
  pendingPolls(t, OTHER)[0].respond(200, pollBody(OTHER, [5]));
  await t.clock.advance(0);
  assert.deepEqual(got[TICKS], [1, 2, 3, 4, 5, 6, 7]);
  cand[0].emit(TICKS, { n: 7 }, 'a1:7'); // the stream catches up: a duplicate
  assert.equal(t.events.state.length, states, 'no state change while trying');

  // The second stream opens: the client is on SSE now, the polls are stopped.
  await t.clock.advance(500);
  const inFlight = t.requests.filter((r) => !r.done && r.url.includes('/poll?'));
  assert.ok(inFlight.length > 0);
  cand[1].open();
  assert.equal(t.client.transport, 'sse');
  assert.equal(t.client.state, 'open');
  assert.deepEqual(
    t.events.state.slice(states).map((e) => [e.state, e.reason, e.transport]),
    [['open', 'upgraded', 'sse']]
  );
  assert.ok(inFlight.every((r) => r.aborted), 'the polls are stopped');
  cand[1].emit(OTHER, { n: 5 }, 'a1:5'); // already polled
  cand[1].emit(OTHER, { n: 6 }, 'a1:6');
  cand[0].emit(TICKS, { n: 8 }, 'a1:8');
  assert.deepEqual(got[TICKS], [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual(got[OTHER], [1, 2, 3, 4, 5, 6]);
  assert.ok(t.client.duplicates >= 3);

  // On the best transport: no more polls, no more attempts.
  const requests = t.requests.length;
  const sources = t.sources.length;
  await t.clock.advance(EVERY * 3);
  assert.equal(t.requests.length, requests, 'no polls on SSE');
  assert.equal(t.sources.length, sources, 'no attempts on the best transport');
  assert.ok(cand.every((es) => !es.closed));

  // And SSE keeps its own rules: a dropped stream resumes from the position.
  cand[0].error(0);
  assert.equal(t.client.state, 'reconnecting');
  await t.clock.advance(0);
  assert.equal(t.client.transport, 'sse');
  assert.deepEqual(t.sources.slice(sources).map((es) => query(es.url).pos), ['a1:8', 'a1:6']);
});

test('an SSE attempt that fails keeps polling without a gap, and is tried again next period', async () => {
  const { t, got } = await degradedToPolling([TICKS]);
  const states = t.events.state.length;
  await idle(t, EVERY);
  const cand = t.sources.at(-1);
  assert.deepEqual(query(cand.url), { ch: TICKS, pos: 'a1:4' });
  // The server refuses the stream (e.g. a proxy that buffers it): readyState CLOSED.
  cand.error(2);
  assert.ok(cand.closed);
  await t.clock.advance(0);
  assert.equal(t.requests.filter((r) => r.url.includes('/events?')).length, 0, 'no diagnosis fetch for a candidate');
  assert.equal(t.client.transport, 'poll');
  assert.equal(t.client.state, 'open');
  assert.equal(t.events.state.length, states, 'the failed attempt is invisible');
  // Polling goes on from where it was: no gap.
  await t.clock.advance(500);
  const p = pendingPolls(t, TICKS);
  assert.equal(p.length, 1);
  assert.equal(query(p[0].url).pos, 'a1:4');
  p[0].respond(200, pollBody(TICKS, [5, 6]));
  await t.clock.advance(0);
  assert.deepEqual(got[TICKS], [1, 2, 3, 4, 5, 6]);

  // The next period: another try, from the new position; this one opens, and the client
  // moves to SSE.
  const sources = t.sources.length;
  await idle(t, EVERY);
  assert.equal(t.sources.length, sources + 1, 'tried again after upgradeRetryMs');
  const again = t.sources.at(-1);
  assert.equal(query(again.url).pos, 'a1:6');
  again.open();
  assert.equal(t.client.transport, 'sse');
  again.emit(TICKS, { n: 7 }, 'a1:7');
  assert.deepEqual(got[TICKS], [1, 2, 3, 4, 5, 6, 7]);
});

test('a candidate that opens one stream and loses another keeps polling, delivering each message once', async () => {
  const { t, got } = await degradedToPolling([TICKS, OTHER]);
  await idle(t, EVERY);
  const [a, b] = t.sources.slice(-2);
  a.open();
  a.emit(TICKS, { n: 5 }, 'a1:5'); // delivered by the candidate before it is given up
  b.error(0); // the other stream fails to open: the whole candidate goes
  assert.ok(a.closed && b.closed);
  assert.equal(t.client.transport, 'poll');
  assert.equal(t.client.state, 'open');
  assert.deepEqual(got[TICKS], [1, 2, 3, 4, 5]);
  // The poll of ticks then answers 5 (already delivered) and 6.
  await t.clock.advance(500);
  const p = pendingPolls(t, TICKS)[0];
  assert.equal(query(p.url).pos, 'a1:4', 'the poll was sent before the stream delivered 5');
  p.respond(200, pollBody(TICKS, [5, 6]));
  await t.clock.advance(500);
  assert.deepEqual(got[TICKS], [1, 2, 3, 4, 5, 6]);
  assert.equal(query(pendingPolls(t, TICKS)[0].url).pos, 'a1:6');
});

test('from polling with ws, sse, poll: WebSocket first; when it fails, SSE in the same round', async () => {
  const t = setup({ transports: ['ws', 'sse', 'poll'], wsFailuresBeforeFallback: 1, upgradeRetryMs: EVERY, random: () => 0 });
  const got = [];
  t.client.subscribe(TICKS, (d, m) => got.push(m.off), { pos: 'a1:2' });
  t.client.connect();
  t.ws().serverClose(1006); // WebSocket blocked
  await t.clock.advance(0);
  t.sources.at(-1).error(0); // SSE blocked too, this time
  await t.clock.advance(0);
  assert.equal(t.client.transport, 'poll');
  pendingPolls(t, TICKS)[0].respond(200, pollBody(TICKS, [3]));
  await t.clock.advance(0);
  assert.equal(t.client.state, 'open');
  const sockets = t.sockets.length;
  const sources = t.sources.length;
  await idle(t, EVERY);
  assert.equal(t.sockets.length, sockets + 1, 'WebSocket first');
  assert.equal(t.sources.length, sources);
  t.ws().serverClose(1006); // still blocked (e.g. 502 from a proxy)
  assert.equal(t.sources.length, sources + 1, 'then SSE at once');
  assert.equal(query(t.sources.at(-1).url).pos, 'a1:3');
  t.sources.at(-1).open();
  assert.equal(t.client.transport, 'sse');
  t.sources.at(-1).emit(TICKS, { n: 4 }, 'a1:4');
  assert.deepEqual(got, [3, 4]);
  // On SSE, still worse than WebSocket: the next rounds try WebSocket only.
  await t.clock.advance(EVERY);
  assert.equal(t.sockets.length, sockets + 2);
  t.ws().serverClose(1006);
  assert.equal(t.sources.length, sources + 1, 'SSE is not tried again: it is the current one');
  assert.equal(t.client.transport, 'sse');
  // WebSocket back: the probe opens, the client moves and resubscribes from the position.
  await t.clock.advance(EVERY);
  const probe = t.ws();
  probe.open();
  assert.equal(t.client.transport, 'ws');
  assert.deepEqual(probe.json()[0], { op: 'sub', ch: TICKS, pos: { ep: 'a1', off: 4 }, ref: probe.json()[0].ref });
});

test('a subscription made while a candidate is trying joins it; the outage ends the try', async () => {
  const { t, got } = await degradedToPolling([TICKS]);
  await idle(t, EVERY);
  const a = t.sources.at(-1);
  got[OTHER] = [];
  t.client.subscribe(OTHER, (d, m) => got[OTHER].push(m.off));
  const b = t.sources.at(-1);
  assert.notEqual(a, b);
  assert.deepEqual(query(b.url), { ch: OTHER });
  a.open();
  assert.equal(t.client.transport, 'poll', 'waits for the new channel too');
  b.open();
  assert.equal(t.client.transport, 'sse');
  // The next candidate is abandoned when the link itself goes down.
  const u = (await degradedToPolling([TICKS])).t;
  await idle(u, EVERY);
  const c = u.sources.at(-1);
  assert.ok(!c.closed);
  const states = u.events.state.length;
  u.requests.filter((r) => !r.done && r.url.includes('/poll?')).forEach((r) => r.fail());
  await u.clock.advance(0);
  assert.deepEqual(u.events.state.slice(states, states + 1).map((e) => [e.state, e.reason]), [['reconnecting', 'network']]);
  assert.ok(c.closed, 'the candidate goes with the link');
});
