/*!
 * tidewire.js: the browser client of a Tidewire server. One file, no dependencies.
 *
 * It follows the same rules as the Rust `ClientSession` (core/src/client):
 *
 *  - Transports, best first: WebSocket (`/ws`, the envelope protocol), then SSE (one
 *    EventSource per channel at `/events?ch=..&pos=..`) with HTTP publish, then long polling
 *    (`/poll?ch=..&pos=..&wait=1`, ETag / If-None-Match) with HTTP publish. A transport
 *    that fails to *open* `wsFailuresBeforeFallback` times in a row is given up for the
 *    next one (after the last, the list starts over). While open on a worse transport than
 *    the first of the list, the better ones are tried again every `upgradeRetryMs`, best
 *    first (one attempt each, down to the current one), without dropping the working link
 *    until the new one is open: a WebSocket probe is open once its upgrade is; an SSE or
 *    polling candidate once every channel's stream opened / first poll was answered. The
 *    candidate resumes each channel from its position and its messages are delivered as
 *    they come (dedup by offset makes the overlap harmless), so a switch neither loses nor
 *    repeats a message. (The Rust session, as of this writing, only probes WebSocket.)
 *  - Reconnection with capped exponential backoff and FULL jitter:
 *    delay = random(0, min(cap, base * 2^attempt)). The attempt counter resets only after
 *    a connection stayed up for `backoff.healthyAfter` (10 s). Close 1012/1013 raise the
 *    floor of the next delay.
 *  - Close codes: 1000, 1002, 1003, 1007, 1009, 1010, 4000-4099 are terminal (state
 *    `closed`); 1008, 4003 and HTTP 401 need fresh credentials (an `error` event with code
 *    `auth`; unless `setToken()` is called before the next attempt is due, the client closes);
 *    anything else (1001, 1006, 1011, 1012, 1013, 4100-4199, ...) backs off and retries.
 *  - Delivery: every (re)connection resubscribes each channel with its last position.
 *    Messages at or before that position (same epoch) are duplicates or stale and are
 *    dropped; a new epoch is entered only through a refetch (`subscribed` with
 *    `recovered:false`, an SSE `reset` event, a poll body with `recovered:false`, or an
 *    unannounced epoch change), reported once as a `refetch` event.
 *  - Publishing: publishes are kept in a bounded queue (count and bytes; the oldest is
 *    dropped and counted) until acknowledged, and sent again in order with the SAME client
 *    id after every reconnection, so the server publishes each id once.
 *
 * Loading: `<script src="/tidewire.js">` or `import "/tidewire.js"` (an ES module import
 * runs it for its effect) both define `globalThis.Tidewire`; CommonJS gets `module.exports`.
 *
 * Everything the client touches in its environment (WebSocket, EventSource, fetch, the
 * clock, timers, randomness) can be passed in the options, so tests are deterministic.
 */
(function (root) {
  'use strict';

  var TRANSPORT_NAMES = { ws: 'WebSocket', sse: 'SSE', poll: 'polling' };

  var DEFAULTS = {
    url: null, // http(s)://host:port[/prefix]; default: the page's origin
    token: null, // sent as ?token= (EventSource and WebSocket cannot set headers)
    transports: ['ws', 'sse', 'poll'],
    backoff: { base: 1000, cap: 30000, healthyAfter: 10000, restartFloor: 5000, maxAttempts: Infinity },
    wsFailuresBeforeFallback: 2,
    upgradeRetryMs: 60000, // 0 or null: never try to move back to a better transport
    offlineQueue: { maxCount: 100, maxBytes: 65536 },
    pingInterval: 25000, // WebSocket: an app-level ping after this much inbound silence
    deadAfter: 20000, // ... and the socket is dead after this much more
    pollInterval: 500, // shortest time between two polls of one channel
    pollTimeout: 40000, // a poll unanswered for this long is dead (the server holds 25 s)
    autoConnect: true // connect on the next tick; false: call connect()
  };

  // ---------------------------------------------------------------------------------------
  // Small pure helpers (exported for tests and for applications)

  /** How a client treats a WebSocket close code: 'terminal' | 'auth' | 'later' | 'retry'. */
  function closeClass(code) {
    if (code === 1008 || code === 4003) return 'auth';
    if (code === 1012 || code === 1013) return 'later';
    if (code === 1000 || code === 1002 || code === 1003 || code === 1007 || code === 1009 || code === 1010) {
      return 'terminal';
    }
    if (code >= 4000 && code <= 4099) return 'terminal';
    // 1001, 1005, 1006, 1011, 1014, 1015, 4100-4199, and codes of unknown meaning: a live
    // service is not given up on.
    return 'retry';
  }

  /** "a1:17" -> {ep: "a1", off: 17}; null when the text is not a position. */
  function parsePos(text) {
    if (typeof text !== 'string') return null;
    var m = /^([0-9a-fA-F]+):([0-9]+)$/.exec(text);
    return m ? { ep: m[1], off: Number(m[2]) } : null;
  }

  /** {ep: "a1", off: 17} -> "a1:17". */
  function formatPos(pos) {
    return pos.ep + ':' + pos.off;
  }

  function byteLength(s) {
    if (typeof TextEncoder !== 'undefined') return new TextEncoder().encode(s).length;
    return s.length;
  }

  /**
   * Reconnect delays: min(cap, base * 2^attempt) spread by full jitter, a floor a server
   * hint may raise for the next delay only, a reset after a healthy connection.
   */
  function Backoff(cfg, random) {
    this.cfg = cfg;
    this.random = random;
    this.attempt = 0;
    this.floor = 0;
    this.connectedAt = null;
  }
  /** The next delay in ms, or null when `maxAttempts` delays were given. */
  Backoff.prototype.next = function () {
    if (this.attempt >= this.cfg.maxAttempts) return null;
    var exp = this.cfg.base;
    for (var i = 0; i < this.attempt && exp < this.cfg.cap; i++) exp *= 2;
    var ceiling = Math.min(this.cfg.cap, exp);
    var delay = Math.floor(this.random() * (ceiling + 1)); // uniform in [0, ceiling]
    delay = Math.min(delay, ceiling);
    if (this.floor > delay) delay = this.floor;
    this.floor = 0;
    this.attempt += 1;
    return delay;
  };
  Backoff.prototype.hint = function (floorMs) {
    this.floor = Math.max(this.floor, floorMs);
  };
  Backoff.prototype.reset = function () {
    this.attempt = 0;
  };
  Backoff.prototype.onConnected = function (now) {
    this.connectedAt = now;
  };
  Backoff.prototype.onDisconnected = function (now) {
    if (this.connectedAt !== null && now - this.connectedAt >= this.cfg.healthyAfter) this.attempt = 0;
    this.connectedAt = null;
  };

  // ---------------------------------------------------------------------------------------
  // The client

  function Client(options) {
    options = options || {};
    var o = {};
    for (var k in DEFAULTS) o[k] = options[k] !== undefined ? options[k] : DEFAULTS[k];
    o.backoff = Object.assign({}, DEFAULTS.backoff, options.backoff || {});
    o.offlineQueue = Object.assign({}, DEFAULTS.offlineQueue, options.offlineQueue || {});
    o.transports = o.transports.filter(function (t) { return TRANSPORT_NAMES[t]; });
    if (o.transports.length === 0) o.transports = ['ws'];
    if (!o.url && root.location) o.url = root.location.origin;
    o.url = String(o.url || '').replace(/\/+$/, '');
    this._o = o;

    // The environment (injectable).
    this._WebSocket = options.WebSocket || root.WebSocket;
    this._EventSource = options.EventSource || root.EventSource;
    this._fetch = options.fetch || (root.fetch && root.fetch.bind(root));
    this._now = options.now || function () { return Date.now(); };
    this._random = options.random || Math.random;
    this._setTimeout = options.setTimeout || root.setTimeout.bind(root);
    this._clearTimeout = options.clearTimeout || root.clearTimeout.bind(root);

    this._token = o.token || null;
    this._listeners = {};
    this._channels = new Map(); // name -> {fn, pos, refetchedAt}
    this._outbox = []; // unacknowledged publishes: {id, ref, ch, json, bytes, sent}
    this._outboxBytes = 0;
    this._subRefs = new Map(); // ref of a `sub` -> channel, to route its `err`
    this._timers = {};
    this._backoff = new Backoff(o.backoff, this._random);
    this._pubBackoff = new Backoff(Object.assign({}, o.backoff, { maxAttempts: Infinity }), this._random);
    this._tIndex = 0;
    this._openFailures = 0;
    this._link = null;
    this._probe = null; // a WebSocket trying to replace a worse link
    this._candidate = null; // an SSE / polling link trying to replace a worse one
    this._awaitingAuth = false;
    this._closedReason = null;
    this._ref = 0;
    this._idSeq = 0;
    this._nonce = Math.floor(this._random() * 0x100000000).toString(16).padStart(8, '0');

    /** 'idle' (not started) | 'connecting' | 'open' | 'reconnecting' | 'closed' */
    this.state = 'idle';
    /** When the next attempt starts (ms, the clock of `now()`), while reconnecting. */
    this.nextRetryAt = null;
    /** Publishes dropped from a full queue, and stale or duplicate messages dropped. */
    this.dropped = 0;
    this.duplicates = 0;

    if (o.autoConnect) {
      var self = this;
      this._setTimeout(function () { if (self.state === 'idle') self.connect(); }, 0);
    }
  }

  Object.defineProperty(Client.prototype, 'transport', {
    /** 'ws' | 'sse' | 'poll' while connecting or open, else null. */
    get: function () { return this._link ? this._link.transport : null; }
  });
  Object.defineProperty(Client.prototype, 'extensions', {
    /**
     * The extensions the server agreed to on the open WebSocket link (the socket's
     * `extensions`, e.g. 'permessage-deflate; server_no_context_takeover'), '' when none;
     * null when not open on WebSocket. Read-only, for diagnosis and tests.
     */
    get: function () {
      var link = this._link;
      if (!link || link.transport !== 'ws' || !link.open || !link.ws) return null;
      return typeof link.ws.extensions === 'string' ? link.ws.extensions : '';
    }
  });
  Object.defineProperty(Client.prototype, 'queued', {
    /** Publishes not yet acknowledged (waiting offline or in flight). */
    get: function () { return this._outbox.length; }
  });
  Object.defineProperty(Client.prototype, 'attempt', {
    get: function () { return this._backoff.attempt; }
  });

  // ----- public API ------------------------------------------------------------------------

  /** Adds a listener: 'state' | 'refetch' | 'presence' | 'ack' | 'error'. Returns a remover. */
  Client.prototype.on = function (type, fn) {
    (this._listeners[type] = this._listeners[type] || []).push(fn);
    var list = this._listeners[type];
    return function () { var i = list.indexOf(fn); if (i >= 0) list.splice(i, 1); };
  };

  /** Starts connecting (done automatically unless `autoConnect: false`). */
  Client.prototype.connect = function () {
    if (this.state !== 'idle' && this.state !== 'closed') return;
    this._backoff.reset();
    this._closedReason = null;
    this._startAttempt('start');
  };

  /**
   * Subscribes `onMessage(data, {ch, ep, off, from})` to channel `ch`; `opts.pos` ("EP:OFF")
   * resumes from a stored position. `from` is the publisher's user as the server
   * authenticated it (`null` for an anonymous client, a server-side publish, or a channel that
   * hides publishers): trust it, not a name inside `data`. Returns a function that
   * unsubscribes.
   */
  Client.prototype.subscribe = function (ch, onMessage, opts) {
    var self = this;
    var existing = this._channels.get(ch);
    if (existing) {
      existing.fn = onMessage;
    } else {
      var pos = opts && opts.pos ? parsePos(opts.pos) : null;
      this._channels.set(ch, { fn: onMessage, pos: pos, refetchedAt: null });
      var link = this._link;
      if (link) {
        if (link.transport === 'ws') {
          if (link.open) this._sendSub(ch);
        } else {
          this._openChannel(link, ch);
        }
      }
      var cand = this._candidate;
      if (cand) {
        cand.waiting.add(ch);
        this._openChannel(cand, ch);
      }
    }
    return function () { self.unsubscribe(ch); };
  };

  Client.prototype.unsubscribe = function (ch) {
    if (!this._channels.delete(ch)) return;
    var cand = this._candidate;
    if (cand) {
      this._closeChannel(cand, ch);
      cand.waiting.delete(ch);
    }
    var link = this._link;
    if (!link) return;
    if (link.transport === 'ws') {
      if (link.open) this._wsSend(JSON.stringify({ op: 'unsub', ch: ch }));
    } else {
      this._closeChannel(link, ch);
    }
    if (cand && this._candidate === cand && cand.waiting.size === 0) this._promoteCandidate(cand);
  };

  /** A fresh client message id (to embed in the data before publishing it with `{id}`). */
  Client.prototype.newId = function () {
    this._idSeq += 1;
    return this._nonce + '-' + this._idSeq;
  };

  /**
   * Publishes `data` (any JSON value) to `ch`; queued until acknowledged. `opts.id` sets the
   * client message id (default: a new one). Returns the id.
   */
  Client.prototype.publish = function (ch, data, opts) {
    var json = JSON.stringify(data);
    if (typeof ch !== 'string' || json === undefined) throw new TypeError('publish(ch, jsonValue)');
    var q = this._o.offlineQueue;
    var entry = {
      id: (opts && opts.id) || this.newId(),
      ref: ++this._ref,
      ch: ch,
      json: json,
      bytes: byteLength(ch) + byteLength(json),
      sent: false
    };
    if (entry.bytes > q.maxBytes) throw new RangeError('message larger than offlineQueue.maxBytes');
    this._outbox.push(entry);
    this._outboxBytes += entry.bytes;
    while (this._outbox.length > q.maxCount || this._outboxBytes > q.maxBytes) {
      var old = this._outbox.shift();
      this._outboxBytes -= old.bytes;
      this.dropped += 1;
      this._emit('error', { code: 'dropped', msg: 'offline queue full: oldest publish dropped', id: old.id, ch: old.ch });
    }
    this._flush();
    return entry.id;
  };

  /**
   * New credentials. After an auth failure the client reconnects with them at once; while
   * connected it reconnects so that the server sees them (a WebSocket is authorized once,
   * at the upgrade).
   */
  Client.prototype.setToken = function (token) {
    this._token = token || null;
    this._awaitingAuth = false;
    if (this.state === 'idle' || (this.state === 'closed' && this._closedReason !== 'auth')) return;
    this._teardown();
    this._closeProbe();
    if (this.state === 'closed') this._backoff.reset();
    this._closedReason = null;
    this._startAttempt('token');
  };

  /** While reconnecting: skip the rest of the delay (e.g. the browser went back online). */
  Client.prototype.retryNow = function () {
    if (this.state === 'reconnecting' && !this._awaitingAuth) this._startAttempt('retry-now');
  };

  /** Closes for good; publishes still queued fail with code 'closed'. */
  Client.prototype.close = function () {
    this._enterClosed({ reason: 'client' });
    var pending = this._outbox;
    this._outbox = [];
    this._outboxBytes = 0;
    for (var i = 0; i < pending.length; i++) {
      this._emit('error', { code: 'closed', msg: 'client closed', id: pending[i].id, ch: pending[i].ch });
    }
  };

  /** The last position seen on `ch` as "EP:OFF", or null. */
  Client.prototype.position = function (ch) {
    var c = this._channels.get(ch);
    return c && c.pos ? formatPos(c.pos) : null;
  };

  // ----- events and timers -------------------------------------------------------------------

  Client.prototype._emit = function (type, ev) {
    var list = (this._listeners[type] || []).slice();
    for (var i = 0; i < list.length; i++) this._safe(list[i], ev);
  };

  /** Runs application code: its exceptions are reported, and do not break the client. */
  Client.prototype._safe = function (fn, a, b) {
    try {
      fn(a, b);
    } catch (e) {
      if (typeof root.reportError === 'function') root.reportError(e);
      else if (root.console) root.console.error(e);
    }
  };

  Client.prototype._timer = function (name, delay, fn) {
    this._clearTimer(name);
    var self = this;
    this._timers[name] = this._setTimeout(function () {
      delete self._timers[name];
      fn.call(self);
    }, Math.max(0, delay));
  };

  Client.prototype._clearTimer = function (name) {
    if (this._timers[name] !== undefined) {
      this._clearTimeout(this._timers[name]);
      delete this._timers[name];
    }
  };

  Client.prototype._setState = function (state, why) {
    this.state = state;
    var ev = {
      state: state,
      reason: why.reason,
      attempt: this._backoff.attempt,
      nextRetryAt: this.nextRetryAt,
      transport: this.transport
    };
    if (why.code !== undefined) ev.code = why.code;
    if (why.status !== undefined) ev.status = why.status;
    this._emit('state', ev);
  };

  // ----- the connection lifecycle ------------------------------------------------------------

  Client.prototype._startAttempt = function (reason) {
    this._clearTimer('retry');
    this._teardown();
    var transport = this._o.transports[this._tIndex];
    var link = newLink(transport);
    this._link = link;
    this.nextRetryAt = null;
    this._setState('connecting', { reason: reason });
    if (this._link !== link) return; // a listener acted
    if (transport === 'ws') {
      link.ws = this._openWs({ role: 'link', link: link });
    } else if (this._channels.size === 0) {
      this._linkOpened(link, 'connected');
    } else {
      var self = this;
      Array.from(this._channels.keys()).forEach(function (ch) { self._openChannel(link, ch); });
    }
  };

  Client.prototype._linkOpened = function (link, reason) {
    if (this._link !== link || link.open) return;
    link.open = true;
    link.openedAt = link.lastInbound = this._now();
    this._openFailures = 0;
    this._awaitingAuth = false;
    this._backoff.onConnected(link.openedAt);
    this._setState('open', { reason: reason });
    if (this._link !== link) return;
    if (link.transport === 'ws') {
      var self = this;
      this._channels.forEach(function (_, ch) { self._sendSub(ch); });
      this._armHeartbeat(link);
    }
    this._armUpgrade();
    this._flush();
  };

  function newLink(transport) {
    return {
      transport: transport, open: false, openedAt: 0, ws: null,
      sources: new Map(), polls: new Map(), publishing: null, lastInbound: 0,
      waiting: null, rank: 0 // a candidate's: channels not yet open, its index in the list
    };
  }

  /** Closes every socket, stream, poll and publish of `link`. */
  function dropLink(link) {
    if (link.ws) closeQuietly(link.ws);
    link.sources.forEach(function (es) { es.close(); });
    link.polls.forEach(function (p) { p.stop(); });
    if (link.publishing) link.publishing.abort();
  }

  /** Drops every socket, stream and poll of the current link; unacked publishes go again. */
  Client.prototype._teardown = function () {
    var link = this._link;
    this._link = null;
    this._subRefs.clear();
    this._clearTimer('upgrade');
    this._clearTimer('heartbeat');
    this._clearTimer('pubRetry');
    for (var i = 0; i < this._outbox.length; i++) this._outbox[i].sent = false;
    if (link) dropLink(link);
  };

  /** Ends an upgrade attempt (a WebSocket probe or an SSE / polling candidate). */
  Client.prototype._closeProbe = function () {
    if (this._probe) {
      closeQuietly(this._probe);
      this._probe = null;
    }
    var cand = this._candidate;
    if (cand) {
      this._candidate = null;
      dropLink(cand);
    }
  };

  /** The current link or the upgrade candidate: streams and polls of either are live. */
  Client.prototype._owns = function (link) {
    return link === this._link || (link !== null && link === this._candidate);
  };

  /** A stream opened / a poll was answered on `link` for `ch`. */
  Client.prototype._channelOpened = function (link, ch) {
    if (link !== this._candidate) return this._linkOpened(link, 'connected');
    link.waiting.delete(ch);
    if (link.waiting.size === 0) this._promoteCandidate(link);
  };

  /** A stream or poll of `link` failed: the link goes down, or the candidate is given up. */
  Client.prototype._linkFailed = function (link, why) {
    if (link === this._candidate) return this._candidateFailed(link);
    this._linkDown(link, why, 'retry');
  };

  function closeQuietly(ws) {
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    try { ws.close(1000); } catch (e) { /* already closing */ }
  }

  /**
   * The current link failed. `fail`: 'retry' (back off), 'auth' (ask for credentials, then
   * back off) or 'terminal' (close). A link that never opened counts toward the fallback.
   */
  Client.prototype._linkDown = function (link, why, fail) {
    if (this._link !== link) return;
    this._teardown();
    this._closeProbe();
    if (link.open) {
      this._backoff.onDisconnected(this._now());
    } else if (fail === 'retry') {
      this._openFailures += 1;
      if (this._openFailures >= Math.max(1, this._o.wsFailuresBeforeFallback)) {
        this._openFailures = 0;
        this._tIndex = (this._tIndex + 1) % this._o.transports.length;
      }
    }
    if (fail === 'terminal') return this._enterClosed(why);
    if (fail === 'auth') {
      this._awaitingAuth = true;
      this._emit('error', { code: 'auth', msg: 'credentials refused; call setToken()', status: why.status, closeCode: why.code });
      if (this._link || this.state === 'closed') return; // the handler called setToken() or close()
    }
    this._scheduleRetry(why);
  };

  Client.prototype._scheduleRetry = function (why) {
    if (this.state === 'closed') return;
    var delay = this._backoff.next();
    if (delay === null) return this._enterClosed({ reason: 'exhausted' });
    this.nextRetryAt = this._now() + delay;
    this._timer('retry', delay, this._retryDue);
    this._setState('reconnecting', why);
  };

  Client.prototype._retryDue = function () {
    if (this.state !== 'reconnecting') return;
    if (this._awaitingAuth) return this._enterClosed({ reason: 'auth' });
    this._startAttempt('retry-due');
  };

  Client.prototype._enterClosed = function (why) {
    if (this.state === 'closed') return;
    this._teardown();
    this._closeProbe();
    for (var name in this._timers) this._clearTimer(name);
    this._awaitingAuth = false;
    this.nextRetryAt = null;
    this._closedReason = why.reason;
    this._setState('closed', why);
  };

  // ----- WebSocket ---------------------------------------------------------------------------

  Client.prototype._url = function (path, params, scheme) {
    var q = [];
    for (var k in params) {
      if (params[k] !== null && params[k] !== undefined) q.push(k + '=' + encodeURIComponent(params[k]));
    }
    if (this._token) q.push('token=' + encodeURIComponent(this._token));
    var base = this._o.url;
    if (scheme === 'ws') base = base.replace(/^http/, 'ws');
    return base + path + (q.length ? '?' + q.join('&') : '');
  };

  /** Opens a WebSocket whose role is 'link' (the current link's) or 'probe' (an upgrade try). */
  Client.prototype._openWs = function (h) {
    var self = this;
    var ws;
    var live = function () {
      return h.role === 'probe' ? self._probe === ws : self._link === h.link && h.link.ws === ws;
    };
    try {
      ws = new this._WebSocket(this._url('/ws', {}, 'ws'));
    } catch (e) {
      // A bad URL: fail like a connection that did not open, asynchronously.
      this._setTimeout(function () {
        if (h.role === 'link') self._linkDown(h.link, { reason: 'network' }, 'retry');
      }, 0);
      return null;
    }
    var opened = false;
    ws.onopen = function () {
      if (!live()) return;
      opened = true;
      if (h.role === 'probe') self._promote(h, ws);
      else self._linkOpened(h.link, 'connected');
    };
    ws.onmessage = function (ev) {
      if (!live() || h.role !== 'link') return;
      h.link.lastInbound = self._now();
      if (typeof ev.data === 'string') self._onFrame(ev.data);
    };
    ws.onerror = function () { /* a close event follows */ };
    ws.onclose = function (ev) {
      if (!live()) return;
      if (h.role === 'probe') {
        self._probe = null;
        self._startProbe(h.rank + 1); // the next better transport, if any
        return;
      }
      var code = ev && ev.code;
      if (!opened) return self._linkDown(h.link, { reason: 'network', code: code }, 'retry');
      var why = { reason: 'closed', code: code };
      var cls = closeClass(code);
      if (cls === 'later') self._backoff.hint(self._o.backoff.restartFloor);
      self._linkDown(h.link, why, cls === 'later' ? 'retry' : cls);
    };
    return ws;
  };

  /** The upgrade probe opened: move onto it and drop the worse transport. */
  Client.prototype._promote = function (h, ws) {
    this._probe = null;
    this._teardown();
    var now = this._now();
    this._backoff.onConnected(now);
    var link = newLink('ws');
    link.open = true;
    link.openedAt = link.lastInbound = now;
    link.ws = ws;
    h.role = 'link';
    h.link = link;
    this._link = link;
    this._tIndex = Math.max(0, this._o.transports.indexOf('ws'));
    this._openFailures = 0;
    this._setState('open', { reason: 'upgraded' });
    if (this._link !== link) return;
    var self = this;
    this._channels.forEach(function (_, ch) { self._sendSub(ch); });
    this._armHeartbeat(link);
    this._flush();
  };

  /** While open on a worse transport than the first of the list: try better ones later. */
  Client.prototype._armUpgrade = function () {
    var link = this._link;
    var o = this._o;
    if (link && link.open && link.transport !== o.transports[0] && o.upgradeRetryMs) {
      this._timer('upgrade', o.upgradeRetryMs, this._startProbe);
    } else {
      this._clearTimer('upgrade');
    }
  };

  /**
   * Tries the transport at index `rank` of the list (default the best), if it is better
   * than the current one: a WebSocket probe, or an SSE / polling candidate link (skipped
   * while there is no channel: it would have nothing to prove). Each failure tries the
   * next better one; when none is left, the next round is in `upgradeRetryMs`.
   */
  Client.prototype._startProbe = function (rank) {
    var link = this._link;
    var o = this._o;
    if (this._probe || this._candidate || !link || !link.open) return;
    rank = rank || 0;
    var current = o.transports.indexOf(link.transport);
    for (; rank < current; rank++) {
      var t = o.transports[rank];
      if (t === 'ws') {
        this._probe = this._openWs({ role: 'probe', link: null, rank: rank });
        if (this._probe) return;
      } else if (this._channels.size > 0) {
        var cand = newLink(t);
        cand.waiting = new Set(this._channels.keys());
        cand.rank = rank;
        this._candidate = cand;
        var self = this;
        Array.from(cand.waiting).forEach(function (ch) {
          if (self._candidate === cand) self._openChannel(cand, ch);
        });
        return;
      }
    }
    this._armUpgrade();
  };

  /** Every channel of the candidate opened: it becomes the link, the worse one goes. */
  Client.prototype._promoteCandidate = function (cand) {
    this._candidate = null;
    this._teardown(); // unacknowledged publishes go again, with the same ids
    var now = this._now();
    cand.open = true;
    cand.openedAt = cand.lastInbound = now;
    cand.waiting = null;
    this._link = cand;
    this._tIndex = cand.rank;
    this._openFailures = 0;
    this._backoff.onConnected(now);
    this._setState('open', { reason: 'upgraded' });
    if (this._link !== cand) return;
    this._armUpgrade();
    this._flush();
  };

  /** The candidate failed to open: it goes, the working link stays; the next one is tried. */
  Client.prototype._candidateFailed = function (cand) {
    if (this._candidate !== cand) return;
    this._candidate = null;
    dropLink(cand);
    this._startProbe(cand.rank + 1);
  };

  /** WebSocket liveness: ping after `pingInterval` of silence, dead `deadAfter` later. */
  Client.prototype._armHeartbeat = function (link) {
    var o = this._o;
    var now = this._now();
    var silent = now - link.lastInbound;
    if (silent >= o.pingInterval + o.deadAfter) {
      return this._linkDown(link, { reason: 'timeout' }, 'retry');
    }
    if (silent >= o.pingInterval && link.pingedAt !== link.lastInbound) {
      link.pingedAt = link.lastInbound; // one ping per silence
      this._wsSend('{"op":"ping"}');
    }
    var next = link.lastInbound + o.pingInterval;
    if (next <= now) next += o.deadAfter;
    this._timer('heartbeat', next - now, function () {
      if (this._link === link) this._armHeartbeat(link);
    });
  };

  Client.prototype._wsSend = function (text) {
    var link = this._link;
    if (!link || !link.open || !link.ws) return false;
    try {
      link.ws.send(text);
      return true;
    } catch (e) {
      return false;
    }
  };

  Client.prototype._sendSub = function (ch) {
    var c = this._channels.get(ch);
    var ref = ++this._ref;
    this._subRefs.set(ref, ch);
    var msg = { op: 'sub', ch: ch };
    if (c && c.pos) msg.pos = { ep: c.pos.ep, off: c.pos.off };
    msg.ref = ref;
    this._wsSend(JSON.stringify(msg));
  };

  /** One server envelope (DESIGN.md "Wire formats"). */
  Client.prototype._onFrame = function (text) {
    var m;
    try { m = JSON.parse(text); } catch (e) { return; }
    if (!m || typeof m !== 'object') return;
    var pos = typeof m.ep === 'string' && typeof m.off === 'number' ? { ep: m.ep, off: m.off } : null;
    switch (m.op) {
      case 'msg':
        if (pos) this._deliver(m.ch, pos, m.data, m.from);
        break;
      case 'subscribed':
        this._subRefs.forEach(function (ch, ref, map) { if (ch === m.ch) map.delete(ref); });
        if (pos && m.recovered === false) this._refetch(m.ch, pos);
        else if (pos) this._adoptIfUnknown(m.ch, pos);
        break;
      case 'ack':
        this._acked(m.ref, pos);
        break;
      case 'err':
        this._serverError(m);
        break;
      case 'presence':
        if (this._channels.has(m.ch)) {
          this._emit('presence', { ch: m.ch, join: m.join || [], leave: m.leave || [] });
        }
        break;
      default: // 'pong' and future ops
    }
  };

  Client.prototype._serverError = function (m) {
    var ev = { code: m.code, msg: m.msg };
    if (m.ref !== undefined && this._subRefs.has(m.ref)) {
      ev.ch = this._subRefs.get(m.ref);
      this._subRefs.delete(m.ref);
      this._channels.delete(ev.ch); // the subscription was refused: no membership
    } else {
      var e = this._takeOutbox(m.ref);
      if (e) { ev.id = e.id; ev.ch = e.ch; }
    }
    this._emit('error', ev);
  };

  // ----- delivery: once and in order per channel -----------------------------------------------

  Client.prototype._deliver = function (ch, pos, data, from) {
    var c = this._channels.get(ch);
    if (!c) return;
    if (c.pos && c.pos.ep === pos.ep) {
      if (pos.off <= c.pos.off) {
        this.duplicates += 1;
        return;
      }
    } else if (c.pos) {
      // Another epoch without a word from the server: what came before is unknown.
      this._reportRefetch(c, ch, { ep: pos.ep, off: Math.max(0, pos.off - 1) });
    }
    c.pos = pos;
    var meta = { ch: ch, ep: pos.ep, off: pos.off, from: typeof from === 'string' ? from : null };
    this._safe(c.fn, data, meta);
  };

  /** The server says the history is gone: refetch, then continue from `pos`. */
  Client.prototype._refetch = function (ch, pos) {
    var c = this._channels.get(ch);
    if (!c) return;
    c.pos = pos;
    this._reportRefetch(c, ch, pos);
  };

  Client.prototype._reportRefetch = function (c, ch, pos) {
    var key = formatPos(pos);
    if (c.refetchedAt === key) return; // one loss, one event
    c.refetchedAt = key;
    this._emit('refetch', { ch: ch, pos: key });
  };

  Client.prototype._adoptIfUnknown = function (ch, pos) {
    var c = this._channels.get(ch);
    if (c && !c.pos) c.pos = pos;
  };

  /** A cursor move without a message (a poll's `pos`): adopted when new or ahead. */
  Client.prototype._cursor = function (ch, pos) {
    var c = this._channels.get(ch);
    if (!c) return;
    if (!c.pos) c.pos = pos;
    else if (c.pos.ep === pos.ep) { if (pos.off > c.pos.off) c.pos = pos; }
    else this._refetch(ch, pos);
  };

  // ----- SSE and polling: one stream or poll loop per channel ------------------------------------

  Client.prototype._openChannel = function (link, ch) {
    if (link.transport === 'sse') this._openSse(link, ch);
    else if (link.transport === 'poll') this._poll(link, ch, true);
  };

  Client.prototype._closeChannel = function (link, ch) {
    var es = link.sources.get(ch);
    if (es) { es.close(); link.sources.delete(ch); }
    var p = link.polls.get(ch);
    if (p) { p.stop(); link.polls.delete(ch); }
  };

  Client.prototype._openSse = function (link, ch) {
    var self = this;
    var c = this._channels.get(ch);
    var url = this._url('/events', { ch: ch, pos: c && c.pos ? formatPos(c.pos) : null });
    var es = new this._EventSource(url);
    var opened = false;
    var live = function () { return self._owns(link) && link.sources.get(ch) === es; };
    link.sources.set(ch, es);
    es.onopen = function () {
      if (!live()) return;
      opened = true;
      self._channelOpened(link, ch);
    };
    // The server names a message's publisher in an `event: from` block just before it
    // (`{"ch":..,"pos":"EP:OFF","from":..}`): kept until the message at that position comes.
    var from = null;
    var onEvent = function (ev) {
      if (!live()) return;
      var pos = parsePos(ev.lastEventId);
      var by = from && from.pos === ev.lastEventId ? from.from : null;
      from = null;
      if (pos) self._deliver(ch, pos, parseData(ev.data), by);
    };
    if (ch !== 'from') {
      es.addEventListener('from', function (ev) {
        if (!live()) return;
        var d = parseData(ev.data);
        from = d && typeof d.pos === 'string' && typeof d.from === 'string' ? d : null;
      });
    }
    es.addEventListener(ch, onEvent); // `event: <channel>`
    if (ch !== 'message' && ch !== 'reset') es.addEventListener('message', onEvent);
    es.addEventListener('reset', function (ev) {
      if (!live()) return;
      var d = parseData(ev.data);
      var pos = d && parsePos(d.pos);
      if (pos) self._refetch(ch, pos);
    });
    es.onerror = function () {
      if (!live()) return;
      // EventSource would reconnect by itself (3 s, no jitter) or give up for good on an
      // HTTP error (readyState CLOSED). Either way Tidewire's backoff takes over.
      var refused = es.readyState === 2;
      es.close();
      link.sources.delete(ch);
      if (link === self._candidate) self._candidateFailed(link);
      else if (!opened && refused) self._diagnose(link, ch, url);
      else self._linkDown(link, { reason: 'network' }, 'retry');
    };
  };

  /** An EventSource hides the status of a refused request: ask once with fetch. */
  Client.prototype._diagnose = function (link, ch, url) {
    var self = this;
    var ctl = typeof AbortController !== 'undefined' ? new AbortController() : null;
    this._fetch(url, { headers: { Accept: 'text/event-stream' }, cache: 'no-store', signal: ctl && ctl.signal })
      .then(function (res) {
        if (ctl) ctl.abort();
        if (self._link !== link) return;
        if (res.status === 200) self._linkDown(link, { reason: 'protocol' }, 'retry');
        else self._httpFailure(link, ch, res);
      }, function () {
        self._linkDown(link, { reason: 'network' }, 'retry');
      });
  };

  /** A stream or poll answered with an error status. */
  Client.prototype._httpFailure = function (link, ch, res) {
    if (link === this._candidate) return this._candidateFailed(link);
    var status = res.status;
    if (status === 401) return this._linkDown(link, { reason: 'status', status: status }, 'auth');
    if (status === 403) {
      // This channel is not for us; the others carry on.
      this._closeChannel(link, ch);
      this._channels.delete(ch);
      this._emit('error', { code: 'forbidden', msg: 'subscription refused', ch: ch, status: status });
      if (this._channels.size === 0) this._linkOpened(link, 'connected');
      return;
    }
    var after = retryAfterMs(res);
    if (after) this._backoff.hint(after);
    this._linkDown(link, { reason: 'status', status: status }, 'retry');
  };

  /**
   * One poll of `ch`. The first poll of a link is short (answered at once, so the link opens
   * without waiting out a long poll); the next ones are long polls (`wait=1`).
   */
  Client.prototype._poll = function (link, ch, first) {
    var self = this;
    var c = this._channels.get(ch);
    if (!c || !this._owns(link)) return;
    var params = { ch: ch, pos: c.pos ? formatPos(c.pos) : null, wait: first ? null : '1' };
    var headers = {};
    if (c.pos) headers['If-None-Match'] = '"' + formatPos(c.pos) + '"';
    var ctl = typeof AbortController !== 'undefined' ? new AbortController() : null;
    var started = this._now();
    var state = { timer: null, stopped: false };
    state.stop = function () {
      state.stopped = true;
      if (state.timer !== null) self._clearTimeout(state.timer);
      if (ctl) ctl.abort();
    };
    var live = function () { return !state.stopped && self._owns(link) && link.polls.get(ch) === state; };
    link.polls.set(ch, state);
    var timedOut = false;
    state.timer = this._setTimeout(function () {
      timedOut = true;
      if (ctl) ctl.abort();
      if (live()) self._linkFailed(link, { reason: 'timeout' });
    }, this._o.pollTimeout);
    this._fetch(this._url('/poll', params), { headers: headers, cache: 'no-store', signal: ctl && ctl.signal })
      .then(function (res) {
        if (!live() || timedOut) return null;
        if (res.status === 304) return { status: 304 };
        if (res.status !== 200) {
          self._clearTimeout(state.timer);
          self._httpFailure(link, ch, res);
          return null;
        }
        return res.json().then(function (body) { return { status: 200, body: body }; });
      })
      .then(function (r) {
        if (!r || !live() || timedOut) return;
        self._clearTimeout(state.timer);
        state.timer = null;
        if (r.status === 200) {
          var pos = parsePos(r.body && r.body.pos);
          if (!pos) return self._linkFailed(link, { reason: 'protocol' });
          if (r.body.recovered === false) {
            self._refetch(ch, pos);
          } else {
            (r.body.events || []).forEach(function (e) {
              if (typeof e.ep === 'string' && typeof e.off === 'number') {
                self._deliver(ch, { ep: e.ep, off: e.off }, e.data, e.from);
              }
            });
            self._cursor(ch, pos);
          }
        }
        self._channelOpened(link, ch);
        if (!live()) return;
        var wait = Math.max(0, started + self._o.pollInterval - self._now());
        state.timer = self._setTimeout(function () {
          state.timer = null;
          if (live()) self._poll(link, ch, false);
        }, wait);
      })
      .catch(function () {
        if (live() && !timedOut) {
          self._clearTimeout(state.timer);
          self._linkFailed(link, { reason: 'network' });
        }
      });
  };

  // ----- publishing --------------------------------------------------------------------------

  /** Sends what can be sent: every unsent publish on a WebSocket, one at a time over HTTP. */
  Client.prototype._flush = function () {
    var link = this._link;
    if (!link || !link.open) return;
    if (link.transport === 'ws') {
      for (var i = 0; i < this._outbox.length; i++) {
        var e = this._outbox[i];
        if (e.sent) continue;
        // `data` is spliced in as the JSON text it already is.
        var frame = '{"op":"pub","ch":' + JSON.stringify(e.ch) + ',"id":' + JSON.stringify(e.id) +
          ',"data":' + e.json + ',"ref":' + e.ref + '}';
        if (!this._wsSend(frame)) break;
        e.sent = true;
      }
      return;
    }
    if (link.publishing || this._timers.pubRetry !== undefined || this._outbox.length === 0) return;
    this._httpPublish(link, this._outbox[0]);
  };

  Client.prototype._httpPublish = function (link, e) {
    var self = this;
    var ctl = typeof AbortController !== 'undefined' ? new AbortController() : { abort: function () {} };
    link.publishing = ctl;
    e.sent = true;
    var retry = function () {
      e.sent = false;
      self._timer('pubRetry', self._pubBackoff.next(), self._flush);
    };
    this._fetch(this._url('/api/publish', { ch: e.ch, id: e.id }), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: e.json,
      signal: ctl.signal
    }).then(function (res) {
      if (self._link !== link) return;
      if (res.status >= 200 && res.status < 300) {
        self._pubBackoff.reset();
        return res.json().catch(function () { return null; }).then(function (body) {
          if (self._link !== link) return;
          link.publishing = null; // only now: the next publish must not overtake this one
          var pos = body && typeof body.ep === 'string' ? { ep: body.ep, off: body.off } : null;
          self._acked(e.ref, pos);
          self._flush();
        });
      }
      link.publishing = null;
      if (res.status === 408 || res.status === 429 || res.status >= 500) return retry();
      self._pubBackoff.reset();
      var code = res.status === 401 ? 'auth' : res.status === 403 ? 'forbidden' : 'http_' + res.status;
      if (self._takeOutbox(e.ref)) {
        self._emit('error', { code: code, msg: 'publish refused', id: e.id, ch: e.ch, status: res.status });
      }
      self._flush();
    }, function () {
      if (self._link !== link) return;
      link.publishing = null;
      retry();
    });
  };

  Client.prototype._takeOutbox = function (ref) {
    for (var i = 0; i < this._outbox.length; i++) {
      if (this._outbox[i].ref === ref) {
        var e = this._outbox.splice(i, 1)[0];
        this._outboxBytes -= e.bytes;
        return e;
      }
    }
    return null;
  };

  Client.prototype._acked = function (ref, pos) {
    var e = this._takeOutbox(ref);
    if (e) this._emit('ack', { id: e.id, ref: e.ref, ch: e.ch, pos: pos ? formatPos(pos) : null });
  };

  function parseData(text) {
    try { return JSON.parse(text); } catch (e) { return text; }
  }

  function retryAfterMs(res) {
    var v = res.headers && res.headers.get ? res.headers.get('Retry-After') : null;
    return v && /^[0-9]+$/.test(v) ? Math.min(Number(v), 300) * 1000 : 0;
  }

  var Tidewire = {
    Client: Client,
    Backoff: Backoff,
    closeClass: closeClass,
    parsePos: parsePos,
    formatPos: formatPos,
    TRANSPORT_NAMES: TRANSPORT_NAMES,
    DEFAULTS: DEFAULTS
  };
  root.Tidewire = Tidewire;
  if (typeof module === 'object' && module && module.exports) module.exports = Tidewire;
})(typeof globalThis !== 'undefined' ? globalThis : this);
