// A smoke test of the demo page's script (app.js) against a tiny fake DOM, a fake WebSocket
// server (the chat) and fake EventSources (the dashboard): tick counters, chat rendered
// exactly once per client id, the banner and `#transport` of the two clients.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { FakeClock, makeEventSource } = require('./fakes.js');

class El {
  constructor(tag, id) {
    this.tagName = tag;
    this.id = id;
    this.children = [];
    this.text = '';
    this.dataset = {};
    this.attrs = {};
    this.hidden = false;
    this.value = '';
    this.listeners = {};
    this.scrollTop = 0;
    this.clientHeight = 100;
    this.scrollHeight = 0;
    const set = new Set();
    this.classList = {
      add: (...c) => c.forEach((x) => set.add(x)),
      remove: (...c) => c.forEach((x) => set.delete(x)),
      contains: (c) => set.has(c)
    };
  }
  get textContent() { return this.text + this.children.map((c) => c.textContent).join(''); }
  set textContent(v) { this.text = String(v); this.children = []; }
  get firstChild() { return this.children[0]; }
  get lastElementChild() { return this.children.at(-1) || null; }
  get nextSibling() {
    const sibs = this.parent ? this.parent.children : [];
    return sibs[sibs.indexOf(this) + 1] || null;
  }
  appendChild(c) { this.children.push(c); c.parent = this; return c; }
  insertBefore(c, ref) {
    const i = ref ? this.children.indexOf(ref) : -1;
    this.children.splice(i < 0 ? this.children.length : i, 0, c);
    c.parent = this;
    return c;
  }
  removeChild(c) { this.children.splice(this.children.indexOf(c), 1); c.parent = null; }
  querySelector(sel) { return (this.child = this.child || new El(sel)); }
  setAttribute(k, v) { this.attrs[k] = v; }
  addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
  fire(type) { (this.listeners[type] || []).forEach((fn) => fn({ preventDefault() {} })); }
  focus() {}
}

function loadPage(search, extra = {}) {
  const clock = new FakeClock(Date.now());
  const els = {};
  const sockets = [];
  const sources = [];
  const intervals = [];
  class WebSocket {
    constructor(url) { this.url = url; this.sent = []; sockets.push(this); }
    send(t) { this.sent.push(JSON.parse(t)); }
    close() {}
  }
  const store = {};
  const sandbox = {
    document: {
      getElementById: (id) => (els[id] = els[id] || new El('div', id)),
      createElement: (tag) => new El(tag),
      createTextNode: (t) => ({ textContent: String(t) }),
      body: new El('body')
    },
    location: { search, origin: 'http://demo.test' },
    localStorage: { getItem: (k) => store[k] ?? null, setItem: (k, v) => { store[k] = String(v); } },
    URLSearchParams,
    WebSocket,
    EventSource: makeEventSource(sources),
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    setInterval: (fn) => { intervals.push(fn); return intervals.length; },
    addEventListener: () => {},
    console,
    ...extra
  };
  sandbox.window = sandbox;
  vm.createContext(sandbox);
  const dir = path.join(__dirname, '..');
  vm.runInContext(fs.readFileSync(path.join(dir, 'tidewire.js'), 'utf8'), sandbox);
  vm.runInContext(fs.readFileSync(path.join(dir, 'app.js'), 'utf8'), sandbox);
  const $ = (id) => sandbox.document.getElementById(id);
  const demo = sandbox.tidewireDemo;
  return {
    clock, $, sockets, sources, store, chat: demo.chat, dashboard: demo.dashboard,
    ws: () => sockets.at(-1),
    // The newest EventSource of a channel.
    es: (ch) => sources.filter((e) => e.url.includes('ch=' + encodeURIComponent(ch))).at(-1),
    tick: () => intervals.forEach((fn) => fn()) // the page's 250 ms redraw
  };
}

// The dashboard's SSE: `event: public:ticks`, `id: EP:OFF`.
const tick = (es, off, n, ep = 'a1') => es.emit('public:ticks', { n }, ep + ':' + off);

const msg = (ch, off, data) => ({ data: JSON.stringify({ op: 'msg', ch, ep: 'a1', off, data }) });

test('two clients: the dashboard on SSE, the chat on WebSocket; ticks, gaps and duplicates', async () => {
  const p = loadPage('');
  assert.equal(JSON.stringify(p.dashboard._o.transports), '["sse","poll"]');
  assert.equal(JSON.stringify(p.chat._o.transports), '["ws","sse","poll"]');
  assert.equal(p.$('transport').textContent, 'chat: — · dashboard: —');
  await p.clock.advance(0);
  assert.equal(p.$('banner').textContent, 'Connecting…');
  assert.equal(p.$('transport').textContent, 'chat: ws · dashboard: sse');
  const ws = p.ws();
  assert.equal(ws.url, 'ws://demo.test/ws');
  assert.equal(p.sockets.length, 1, 'one WebSocket: the chat');
  const es = p.es('public:ticks');
  assert.equal(es.url, 'http://demo.test/events?ch=public%3Aticks');
  assert.equal(p.sources.length, 1, 'one EventSource: the dashboard');
  ws.onopen();
  assert.deepEqual(ws.sent.map((m) => m.ch), [], 'anonymous: no chat, and no ticks over the WebSocket');
  assert.equal(p.$('banner').textContent, 'Connecting…', 'the dashboard is not open yet');
  assert.equal(p.$('state').textContent, 'chat: open · dashboard: connecting');
  es.open();
  assert.equal(p.$('banner').hidden, true);
  assert.equal(p.$('banner').textContent, '');
  assert.equal(p.$('state').textContent, 'open');
  let off = 0;
  for (const n of [1, 2, 3, 5, 5, 6]) tick(es, ++off, n);
  assert.equal(p.$('tick-latest').textContent, '6');
  assert.equal(p.$('tick-gaps').textContent, '1');
  assert.equal(p.$('tick-dups').textContent, '1');
  assert.equal(p.$('tick-list').children.length, 6);
  for (let n = 7; n < 20; n++) tick(es, ++off, n);
  assert.equal(p.$('tick-list').children.length, 10);
  // A duplicate by offset never reaches the page.
  tick(es, off, 19);
  assert.equal(p.$('tick-dups').textContent, '1');
  // The dashboard's stream drops: the banner counts down to its retry; the chat stays open.
  es.error(0);
  assert.equal(p.dashboard.state, 'reconnecting');
  assert.equal(p.chat.state, 'open');
  assert.match(p.$('banner').textContent, /^Reconnecting in \d+ s…$/);
  assert.equal(p.$('banner').hidden, false);
  assert.equal(p.$('transport').textContent, 'chat: ws · dashboard: —');
  // It resumes from its position on a new stream.
  await p.clock.advance(60000);
  const es2 = p.es('public:ticks');
  assert.notEqual(es2, es);
  assert.equal(es2.url, 'http://demo.test/events?ch=public%3Aticks&pos=a1%3A' + off);
  es2.open();
  assert.equal(p.$('banner').hidden, true);
  assert.equal(p.$('transport').textContent, 'chat: ws · dashboard: sse');
});

test('the banner counts down to the soonest retry of a reconnecting client', async () => {
  const p = loadPage('');
  await p.clock.advance(0);
  p.ws().onopen();
  p.es('public:ticks').open();
  p.ws().onclose({ code: 1006 });
  p.es('public:ticks').error(0);
  assert.equal(p.chat.state, 'reconnecting');
  assert.equal(p.dashboard.state, 'reconnecting');
  assert.equal(p.$('state').textContent, 'reconnecting');
  const now = Date.now();
  p.chat.nextRetryAt = now + 7400;
  p.dashboard.nextRetryAt = now + 2400;
  p.tick();
  assert.equal(p.$('banner').textContent, 'Reconnecting in 3 s…');
  p.chat.nextRetryAt = now + 1400;
  p.tick();
  assert.equal(p.$('banner').textContent, 'Reconnecting in 2 s…');
  // A client that is connecting has no retry time: the other one's still counts.
  await p.clock.advance(60000);
  assert.equal(p.chat.state, 'connecting');
  assert.equal(p.dashboard.state, 'connecting');
  assert.equal(p.$('banner').textContent, 'Connecting…');
  p.ws().onclose({ code: 1006 });
  assert.equal(p.chat.state, 'reconnecting');
  assert.match(p.$('banner').textContent, /^Reconnecting in \d+ s…$/);
});

test('chat: one li per client id, pending until delivered; offline banner', async () => {
  const p = loadPage('?token=user:ann');
  await p.clock.advance(0);
  const ws = p.ws();
  assert.equal(ws.url, 'ws://demo.test/ws?token=user%3Aann');
  // The dashboard connects anonymously: it reads a public channel.
  const es = p.es('public:ticks');
  assert.equal(es.url, 'http://demo.test/events?ch=public%3Aticks');
  ws.onopen();
  es.open();
  assert.equal(p.$('banner').hidden, true);
  assert.deepEqual(ws.sent.map((m) => m.ch), ['chat:lobby']);
  p.$('chat-input').value = 'hello';
  p.$('chat-form').fire('submit');
  const pub = ws.sent.find((m) => m.op === 'pub' && m.data.type === 'chat');
  assert.equal(pub.data.text, 'hello');
  assert.equal(pub.id, pub.data.id);
  const log = p.$('chat-log');
  assert.equal(log.children.length, 1);
  assert.equal(log.children[0].dataset.id, pub.id);
  assert.equal(log.children[0].dataset.state, 'pending');
  ws.onmessage({ data: JSON.stringify({ op: 'ack', ref: pub.ref, ep: 'a1', off: 1 }) });
  ws.onmessage(msg('chat:lobby', 1, pub.data));
  assert.equal(log.children.length, 1);
  assert.equal(log.children[0].dataset.state, 'shown');
  ws.onmessage(msg('chat:lobby', 2, { type: 'chat', id: 'x-1', user: 'bob', text: 'hi ann' }));
  assert.equal(log.children.length, 2);
  assert.equal(log.children[1].textContent, 'bob:hi ann');
  ws.onmessage(msg('chat:lobby', 3, { type: 'typing', user: 'bob', at: Date.now() }));
  assert.equal(p.$('typing').textContent, 'bob is typing…');
  ws.onmessage({ data: JSON.stringify({ op: 'presence', ch: 'chat:lobby', join: ['ann', 'bob'], leave: [] }) });
  assert.deepEqual(p.$('presence').children.map((li) => li.textContent), ['ann (you)', 'bob']);
  ws.onmessage({ data: JSON.stringify({ op: 'presence', ch: 'chat:lobby', join: [], leave: ['bob'] }) });
  assert.equal(p.$('presence-events').textContent, 'bob left');
  // Offline: queued, and the banner says so.
  ws.onclose({ code: 1006 });
  p.$('chat-input').value = 'later';
  p.$('chat-form').fire('submit');
  assert.match(p.$('banner').textContent, /^Offline — messages will be sent when back\. Reconnecting in \d+ s…$/);
  assert.equal(log.children.length, 3);
  assert.equal(p.chat.queued, 1);
  assert.equal(p.$('transport').textContent, 'chat: — · dashboard: sse');
  // Trying again: still offline, and said so.
  await p.clock.advance(60000);
  assert.equal(p.chat.state, 'connecting');
  assert.equal(p.$('banner').textContent, 'Offline — messages will be sent when back. Connecting…');
  // Open again: the queued message goes out, nothing shows while it is in flight.
  const ws2 = p.ws();
  ws2.onopen();
  assert.equal(p.$('banner').hidden, true);
  const again = ws2.sent.find((m) => m.op === 'pub' && m.data.text === 'later');
  assert.ok(again, 'the queued message is sent on the new connection');
  // The dashboard dropping alone does not make the chat "offline".
  es.error(0);
  assert.equal(p.chat.queued, 1);
  assert.match(p.$('banner').textContent, /^Reconnecting in \d+ s…$/);
  ws2.onmessage({ data: JSON.stringify({ op: 'ack', ref: again.ref, ep: 'a1', off: 4 }) });
  assert.equal(p.chat.queued, 0);
});

test('the name form stores the name and joins the chat; ?transport= forces both clients', async () => {
  const p = loadPage('?transport=sse');
  assert.equal(JSON.stringify(p.chat._o.transports), '["sse"]');
  assert.equal(JSON.stringify(p.dashboard._o.transports), '["sse"]');
  await p.clock.advance(0);
  assert.equal(p.$('transport').textContent, 'chat: sse · dashboard: sse');
  const ticks = p.es('public:ticks');
  ticks.open();
  assert.equal(p.chat.state, 'open', 'no channel yet: open at once');
  assert.equal(p.$('banner').hidden, true);
  assert.equal(p.$('chat-area').hidden, true);
  p.$('name-input').value = 'cy';
  p.$('name-form').fire('submit');
  assert.equal(p.store['tidewire.demo.name'], 'cy');
  assert.equal(p.$('chat-area').hidden, false);
  // Only the chat reconnects with the new token; the dashboard's stream goes on.
  const chatEs = p.es('chat:lobby');
  assert.equal(chatEs.url, 'http://demo.test/events?ch=chat%3Alobby&token=user%3Acy');
  assert.equal(ticks.closed, false);
  assert.equal(p.es('public:ticks'), ticks);
  chatEs.open();
  assert.equal(p.$('banner').hidden, true);
  assert.equal(p.$('presence-events').textContent, 'Presence needs a WebSocket.');

  const w = loadPage('?transport=ws');
  assert.equal(JSON.stringify(w.chat._o.transports), '["ws"]');
  assert.equal(JSON.stringify(w.dashboard._o.transports), '["ws"]');
  const bogus = loadPage('?transport=carrier-pigeon');
  assert.equal(JSON.stringify(bogus.chat._o.transports), '["ws","sse","poll"]');
  assert.equal(JSON.stringify(bogus.dashboard._o.transports), '["sse","poll"]');
});

test('a dashboard refetch (SSE reset) counts once and starts a new baseline', async () => {
  const p = loadPage('');
  await p.clock.advance(0);
  p.ws().onopen();
  const es = p.es('public:ticks');
  es.open();
  for (let off = 1; off <= 5; off++) tick(es, off, off + 100);
  es.emit('reset', { ch: 'public:ticks', pos: 'b2:0', recovered: false });
  assert.equal(p.$('tick-refetches').textContent, '1');
  tick(es, 1, 1, 'b2');
  tick(es, 2, 2, 'b2');
  assert.equal(p.$('tick-latest').textContent, '2');
  assert.equal(p.$('tick-gaps').textContent, '0');
  assert.equal(p.$('tick-dups').textContent, '0', 'n went down, but after an announced loss');
});

test('a closed chat says why; the dashboard goes on', async () => {
  const p = loadPage('?token=user:ann');
  await p.clock.advance(0);
  p.ws().onopen();
  p.es('public:ticks').open();
  p.ws().onclose({ code: 4000 });
  assert.equal(p.chat.state, 'closed');
  assert.equal(p.$('banner').textContent, 'Chat disconnected (code 4000). Reload the page to reconnect.');
  assert.equal(p.$('banner').dataset.kind, 'closed');
});

test('chat refetch (a new epoch): what the new epoch held up to the head is reloaded once, in order', async () => {
  const fetches = [];
  const history = {
    ch: 'chat:lobby', pos: 'b2:3', recovered: true, events: [
      { ep: 'b2', off: 1, data: { type: 'chat', id: 'bob-1', user: 'bob', text: 'sent while ann was away' } },
      { ep: 'b2', off: 2, data: { type: 'typing', user: 'bob', at: 1 } },
      { ep: 'b2', off: 3, data: { type: 'chat', id: 'live-1', user: 'bob', text: 'live' } }
    ]
  };
  let answer;
  const fetch = (url) => {
    fetches.push(url);
    return new Promise((resolve) => { answer = () => resolve({ status: 200, json: async () => history }); });
  };
  const p = loadPage('?token=user:ann', { fetch });
  await p.clock.advance(0);
  let ws = p.ws();
  ws.onopen();
  ws.onmessage({ data: JSON.stringify({ op: 'msg', ch: 'chat:lobby', ep: 'a1', off: 7, data: { type: 'chat', id: 'old-1', user: 'bob', text: 'before' } }) });
  ws.onclose({ code: 1006 });
  await p.clock.advance(60000);
  ws = p.ws();
  ws.onopen();
  const sub = ws.sent.find((m) => m.op === 'sub' && m.ch === 'chat:lobby');
  assert.deepEqual(sub.pos, { ep: 'a1', off: 7 });
  ws.onmessage({ data: JSON.stringify({ op: 'subscribed', ch: 'chat:lobby', recovered: false, ep: 'b2', off: 2 }) });
  assert.deepEqual(fetches, ['http://demo.test/poll?ch=chat%3Alobby&pos=b2%3A0&token=user%3Aann']);
  assert.equal(p.$('chat-notice').textContent, 'Some earlier messages could not be recovered.');
  // A live message arrives before the history does: the history goes before it.
  ws.onmessage({ data: JSON.stringify({ op: 'msg', ch: 'chat:lobby', ep: 'b2', off: 3, data: history.events[2].data }) });
  answer();
  await p.clock.advance(0);
  const log = p.$('chat-log');
  assert.deepEqual(log.children.map((li) => li.dataset.id), ['old-1', 'bob-1', 'live-1']);
  assert.ok(log.children.every((li) => !li.classList.contains('duplicate')));
  assert.equal(p.$('typing').textContent, '', 'an old typing notice is not shown');
});

test('?upgrade=MS: a dashboard that fell back to polling is back on SSE after MS, counting no gap', async () => {
  assert.equal(loadPage('').dashboard._o.upgradeRetryMs, 60000);
  assert.equal(loadPage('?upgrade=x').chat._o.upgradeRetryMs, 60000);
  const polls = [];
  const fetch = (url) => new Promise((resolve) => polls.push({ url, resolve }));
  const answer = (status, body) => polls.filter((c) => !c.done).forEach((c) => {
    c.done = true;
    c.resolve({ status, headers: { get: () => null }, json: () => Promise.resolve(body) });
  });
  const p = loadPage('?upgrade=5000', { fetch });
  assert.equal(p.chat._o.upgradeRetryMs, 5000);
  assert.equal(p.dashboard._o.upgradeRetryMs, 5000);
  await p.clock.advance(0);
  const first = p.es('public:ticks');
  first.open();
  tick(first, 1, 1);
  // The server goes away: the stream ends and SSE fails to open twice: polling.
  first.error(0);
  for (let i = 0; i < 2; i++) {
    await p.clock.advance(2000);
    p.es('public:ticks').error(0);
  }
  await p.clock.advance(4000);
  assert.equal(p.dashboard.transport, 'poll');
  answer(200, { ch: 'public:ticks', pos: 'a1:3', recovered: true, events: [2, 3].map((n) => ({ ep: 'a1', off: n, data: { n } })) });
  await p.clock.advance(0);
  assert.match(p.$('transport').textContent, /dashboard: poll$/);
  const sources = p.sources.length;
  for (let i = 0; i < 5; i++) {
    answer(304);
    await p.clock.advance(1000);
  }
  assert.equal(p.sources.length, sources + 1, 'SSE tried again after 5 s');
  const back = p.es('public:ticks');
  assert.match(back.url, /pos=a1%3A3/);
  back.open();
  assert.match(p.$('transport').textContent, /dashboard: sse$/);
  tick(back, 3, 3); // the overlap: dropped by the client
  tick(back, 4, 4);
  assert.equal(p.$('tick-latest').textContent, '4');
  assert.equal(p.$('tick-gaps').textContent, '0');
  assert.equal(p.$('tick-dups').textContent, '0');
});
