// Deterministic stand-ins for the browser APIs tidewire.js uses: a clock with timers, a
// scripted random source, WebSocket, EventSource and fetch. Every one records what the
// client did and lets a test play the server.
'use strict';

const Tidewire = require('../tidewire.js');

/** Lets pending promise callbacks (fake fetch answers) run. */
function settle() {
  return new Promise((resolve) => setImmediate(resolve));
}

class FakeClock {
  constructor(start = 1_000_000) {
    this.t = start;
    this.timers = new Map();
    this.seq = 0;
    this.now = () => this.t;
    this.setTimeout = (fn, ms) => {
      const id = ++this.seq;
      this.timers.set(id, { at: this.t + Math.max(0, ms || 0), fn, id });
      return id;
    };
    this.clearTimeout = (id) => this.timers.delete(id);
  }
  /** Moves time forward by `ms`, firing due timers in order (and settling promises). */
  async advance(ms) {
    const end = this.t + ms;
    await settle();
    for (;;) {
      let next = null;
      for (const tm of this.timers.values()) {
        if (tm.at <= end && (!next || tm.at < next.at || (tm.at === next.at && tm.id < next.id))) next = tm;
      }
      if (!next) break;
      this.timers.delete(next.id);
      this.t = Math.max(this.t, next.at);
      next.fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
}

/** Random numbers from a list (cycled), for exact jitter. */
function scriptedRandom(values) {
  let i = 0;
  return () => values[i++ % values.length];
}

function makeWebSocket(log) {
  return class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.readyState = 0;
      this.closedByClient = null;
      log.push(this);
    }
    send(text) {
      if (this.readyState !== 1) throw new Error('not open');
      this.sent.push(text);
    }
    close(code) {
      this.closedByClient = code === undefined ? 1005 : code;
      this.readyState = 3;
    }
    // --- the server's side ---
    open() {
      this.readyState = 1;
      this.onopen && this.onopen({});
    }
    receive(obj) {
      this.onmessage && this.onmessage({ data: typeof obj === 'string' ? obj : JSON.stringify(obj) });
    }
    /** The connection ends with `code` (1006: never opened or dropped). */
    serverClose(code = 1006, reason = '') {
      this.readyState = 3;
      this.onerror && code === 1006 && this.onerror({});
      this.onclose && this.onclose({ code, reason, wasClean: code !== 1006 });
    }
    json() {
      return this.sent.map((s) => JSON.parse(s));
    }
  };
}

function makeEventSource(log) {
  return class FakeEventSource {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.listeners = {};
      this.closed = false;
      log.push(this);
    }
    addEventListener(type, fn) {
      (this.listeners[type] = this.listeners[type] || []).push(fn);
    }
    close() {
      this.closed = true;
      this.readyState = 2;
    }
    // --- the server's side ---
    open() {
      this.readyState = 1;
      this.onopen && this.onopen({});
    }
    /** One dispatched event: `event: type`, `data`, and the last event id. */
    emit(type, data, lastEventId = '') {
      const ev = { type, data: typeof data === 'string' ? data : JSON.stringify(data), lastEventId };
      for (const fn of this.listeners[type] || []) fn(ev);
    }
    /** A failure: readyState 0 = network error (would reconnect), 2 = refused (HTTP error). */
    error(readyState = 0) {
      this.readyState = readyState;
      this.onerror && this.onerror({});
    }
  };
}

/** fetch(): each call waits until the test answers it with respond() or fail(). */
function makeFetch(log) {
  return function fakeFetch(url, init = {}) {
    let resolve;
    let reject;
    const p = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const call = {
      url,
      init,
      method: init.method || 'GET',
      headers: init.headers || {},
      body: init.body,
      done: false,
      aborted: false,
      respond(status, body = null, headers = {}) {
        if (call.done) return;
        call.done = true;
        resolve({
          status,
          headers: { get: (n) => headers[n] ?? null },
          json: () => Promise.resolve(typeof body === 'string' ? JSON.parse(body) : body)
        });
      },
      fail() {
        if (call.done) return;
        call.done = true;
        reject(new TypeError('network error'));
      }
    };
    if (init.signal) {
      init.signal.addEventListener('abort', () => {
        call.aborted = true;
        if (!call.done) {
          call.done = true;
          reject(new Error('aborted'));
        }
      });
    }
    log.push(call);
    return p;
  };
}

/** A client wired to fakes. Returns the client and the handles a test needs. */
function setup(opts = {}) {
  const clock = new FakeClock();
  const sockets = [];
  const sources = [];
  const requests = [];
  const events = { state: [], refetch: [], presence: [], ack: [], error: [] };
  const client = new Tidewire.Client({
    url: 'http://demo.test',
    autoConnect: false,
    WebSocket: makeWebSocket(sockets),
    EventSource: makeEventSource(sources),
    fetch: makeFetch(requests),
    now: clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: opts.random || (() => 0.5),
    ...opts
  });
  for (const type of Object.keys(events)) client.on(type, (ev) => events[type].push(ev));
  return { client, clock, sockets, sources, requests, events, ws: () => sockets[sockets.length - 1] };
}

/** The query parameters of a URL as an object. */
function query(url) {
  return Object.fromEntries(new URL(url, 'http://x').searchParams);
}

module.exports = { Tidewire, FakeClock, scriptedRandom, setup, settle, query, makeEventSource };
