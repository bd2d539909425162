// A smoke test of the demo page's script (app.js) against a tiny fake DOM and a fake
// WebSocket server: tick counters, chat rendered exactly once per client id, the banner.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { FakeClock } = require('./fakes.js');

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
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    setInterval: () => 0,
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
  return { clock, $, sockets, ws: () => sockets.at(-1), store, client: sandbox.tidewireDemo.client };
}

const msg = (ch, off, data) => ({ data: JSON.stringify({ op: 'msg', ch, ep: 'a1', off, data }) });

test('ticks: latest, last 10, gaps and duplicates from consecutive n', async () => {
  const p = loadPage('');
  await p.clock.advance(0);
  assert.equal(p.$('banner').textContent, 'Connecting…');
  const ws = p.ws();
  assert.equal(ws.url, 'ws://demo.test/ws');
  ws.onopen();
  assert.equal(p.$('banner').hidden, true);
  assert.equal(p.$('transport').textContent, 'ws');
  assert.deepEqual(ws.sent.map((m) => m.ch), ['public:ticks'], 'anonymous: no chat');
  let off = 0;
  for (const n of [1, 2, 3, 5, 5, 6]) ws.onmessage(msg('public:ticks', ++off, { n }));
  assert.equal(p.$('tick-latest').textContent, '6');
  assert.equal(p.$('tick-gaps').textContent, '1');
  assert.equal(p.$('tick-dups').textContent, '1');
  assert.equal(p.$('tick-list').children.length, 6);
  for (let n = 7; n < 20; n++) ws.onmessage(msg('public:ticks', ++off, { n }));
  assert.equal(p.$('tick-list').children.length, 10);
  // A duplicate by offset never reaches the page.
  ws.onmessage(msg('public:ticks', off, { n: 19 }));
  assert.equal(p.$('tick-dups').textContent, '1');
  ws.onclose({ code: 1006 });
  assert.match(p.$('banner').textContent, /^Reconnecting in \d+ s…$/);
  assert.equal(p.$('banner').hidden, false);
});

test('chat: one li per client id, pending until delivered; offline banner', async () => {
  const p = loadPage('?token=user:ann');
  await p.clock.advance(0);
  const ws = p.ws();
  assert.equal(ws.url, 'ws://demo.test/ws?token=user%3Aann');
  ws.onopen();
  assert.deepEqual(ws.sent.map((m) => m.ch), ['public:ticks', 'chat:lobby']);
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
  assert.equal(p.client.queued, 1);
});

test('the name form stores the name and joins the chat', async () => {
  const p = loadPage('?transport=sse');
  assert.equal(p.$('chat-area').hidden, true);
  p.$('name-input').value = 'cy';
  p.$('name-form').fire('submit');
  assert.equal(p.store['tidewire.demo.name'], 'cy');
  assert.equal(p.$('chat-area').hidden, false);
  assert.equal(JSON.stringify(p.client._o.transports), '["sse"]');
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
