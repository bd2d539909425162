// The Tidewire live demo page: a ticking dashboard card, a chat room with presence and
// typing indicators, and a connection banner. Uses only tidewire.js (window.Tidewire).
//
// Two clients, one per job: the dashboard reads `public:ticks` over SSE (polling if SSE
// fails; it needs nothing a WebSocket adds), the chat uses a WebSocket (presence, acks; SSE
// and polling as fallbacks). The banner and `#transport` / `#state` speak for both.
(function () {
  'use strict';

  var TICKS = 'public:ticks';
  var CHAT = 'chat:lobby';
  var NAME_KEY = 'tidewire.demo.name';
  var TYPING_EVERY = 2000; // publish "typing" at most this often
  var TYPING_SHOWN = 4000; // and show someone's "typing" this long
  var OFFLINE = 'Offline — messages will be sent when back';

  var $ = function (id) { return document.getElementById(id); };
  var params = new URLSearchParams(location.search);

  // ----- who am I: ?token= wins, else the name stored in localStorage ---------------------------

  function storage(op, value) {
    try {
      if (op === 'get') return localStorage.getItem(NAME_KEY);
      localStorage.setItem(NAME_KEY, value);
    } catch (e) { /* storage disabled: the name lasts for this page only */ }
    return null;
  }
  var token = params.get('token') || null;
  if (!token && storage('get')) token = 'user:' + storage('get');
  var me = token && token.indexOf('user:') === 0 ? token.slice(5) : null;

  // ?transport=ws|sse|poll forces one transport, for both clients (for tests).
  var forced = params.get('transport');
  var only = ['ws', 'sse', 'poll'].indexOf(forced) >= 0 ? [forced] : null;

  // ?upgrade=MS: how often a client that fell back to a worse transport tries its better
  // ones again (default 60 s; for tests).
  var upgrade = /^[0-9]+$/.test(params.get('upgrade') || '') ? Number(params.get('upgrade')) : undefined;

  // The dashboard reads a public channel: it connects anonymously, so a rename (a new token)
  // reconnects only the chat.
  var dashboard = new Tidewire.Client({
    url: location.origin, transports: only || ['sse', 'poll'], upgradeRetryMs: upgrade
  });
  var chat = new Tidewire.Client({
    url: location.origin, token: token, transports: only || ['ws', 'sse', 'poll'], upgradeRetryMs: upgrade
  });
  // `reloaded`: chat messages shown from a history reload (see reloadChat), for tests.
  window.tidewireDemo = { chat: chat, dashboard: dashboard, reloaded: 0 };

  // ----- the dashboard card ---------------------------------------------------------------------

  var ticks = { last: null, gaps: 0, dups: 0, refetches: 0, recent: [] };

  dashboard.subscribe(TICKS, function (data) {
    var n = Number(data && typeof data === 'object' ? data.n : data);
    if (!Number.isFinite(n)) return;
    if (ticks.last !== null) {
      if (n > ticks.last + 1) ticks.gaps += n - ticks.last - 1;
      else if (n <= ticks.last) ticks.dups += 1;
    }
    if (ticks.last === null || n > ticks.last) ticks.last = n;
    ticks.recent.push({ n: n, v: data && typeof data.v === 'number' ? data.v : n });
    if (ticks.recent.length > 10) ticks.recent.shift();
    renderTicks();
  });

  function renderTicks() {
    $('tick-latest').textContent = ticks.last === null ? '—' : String(ticks.last);
    $('tick-gaps').textContent = String(ticks.gaps);
    $('tick-dups').textContent = String(ticks.dups);
    $('tick-refetches').textContent = String(ticks.refetches);
    var list = $('tick-list');
    list.textContent = '';
    ticks.recent.forEach(function (t) {
      var li = document.createElement('li');
      li.textContent = String(t.n);
      list.appendChild(li);
    });
    // Sparkline of the last 10 values, scaled to the box.
    var vs = ticks.recent.map(function (t) { return t.v; });
    var lo = Math.min.apply(null, vs);
    var hi = Math.max.apply(null, vs);
    var points = vs.map(function (v, i) {
      var x = vs.length > 1 ? (i * 100) / (vs.length - 1) : 50;
      var y = hi === lo ? 12 : 22 - ((v - lo) * 20) / (hi - lo);
      return x.toFixed(1) + ',' + y.toFixed(1);
    });
    $('tick-spark').querySelector('polyline').setAttribute('points', points.join(' '));
  }

  // ----- chat -------------------------------------------------------------------------------------

  var shown = new Map(); // client message id -> its <li>
  var typing = new Map(); // user -> until (ms)
  var lastTypingSent = 0;

  function messageLi(data) {
    var li = document.createElement('li');
    li.dataset.id = data.id;
    var who = document.createElement('span');
    who.className = 'who';
    who.textContent = String(data.user || '?') + ':';
    li.appendChild(who);
    li.appendChild(document.createTextNode(String(data.text || '')));
    return li;
  }

  function append(li) {
    var log = $('chat-log');
    var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    log.appendChild(li);
    while (log.children.length > 200) log.removeChild(log.firstChild);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  // One chat message (or typing notice). `place(li)` puts a new <li> in the log: `append` for
  // live messages, an insertion in order for history reloaded after a refetch.
  function onChat(data) {
    showMessage(data, null);
  }

  function showMessage(data, place) {
    if (!data || typeof data !== 'object') return;
    if (data.type === 'typing') {
      if (place) return; // history: no one is typing any more
      // A typing notice replayed after a reconnect is old news: only fresh ones show.
      var fresh = typeof data.at === 'number' && Math.abs(Date.now() - data.at) < TYPING_SHOWN;
      if (fresh && data.user && data.user !== me) typing.set(String(data.user), Date.now() + TYPING_SHOWN);
      renderTyping();
      return;
    }
    if (data.type !== 'chat' || typeof data.id !== 'string') return;
    typing.delete(String(data.user));
    renderTyping();
    var li = shown.get(data.id);
    if (li && li.dataset.state !== 'shown') {
      li.dataset.state = 'shown'; // our own message, now delivered
      li.classList.remove('pending', 'failed');
    } else if (li) {
      if (place) return; // reloaded history: already on screen
      // Delivered twice: never hidden, so that "exactly once" is checkable.
      var dup = messageLi(data);
      dup.classList.add('duplicate');
      append(dup);
    } else {
      li = messageLi(data);
      li.dataset.state = 'shown';
      shown.set(data.id, li);
      (place || append)(li);
      if (place) window.tidewireDemo.reloaded += 1;
    }
  }

  // After a refetch of the chat (the server lost the page's position, e.g. it restarted with
  // a new epoch), the subscription goes on from the head it was given: what the new epoch
  // held up to that head was published before the page came back and is never delivered
  // live (a message sent while this page was offline, by someone who reconnected first).
  // It is read once from the channel's log with a plain poll from the start of the epoch and
  // shown in order, before what arrived live since the refetch.
  var HISTORY_PAGES = 10; // a poll answers up to 100 events

  function reloadChat(head) {
    var pos = Tidewire.parsePos(head);
    if (!pos || pos.off === 0 || typeof fetch !== 'function') return;
    var log = $('chat-log');
    var anchor = log.lastElementChild; // history goes after what was shown before the refetch
    var place = function (li) {
      log.insertBefore(li, anchor ? anchor.nextSibling : log.firstChild);
      anchor = li;
      while (log.children.length > 200) log.removeChild(log.firstChild);
    };
    var page = function (from, left) {
      var url = location.origin + '/poll?ch=' + encodeURIComponent(CHAT) + '&pos=' +
        encodeURIComponent(pos.ep + ':' + from) + (token ? '&token=' + encodeURIComponent(token) : '');
      return fetch(url, { cache: 'no-store' })
        .then(function (res) { return res.status === 200 ? res.json() : null; })
        .then(function (body) {
          if (!body || body.recovered === false || !Array.isArray(body.events)) return;
          var last = from;
          body.events.forEach(function (e) {
            if (!e || e.ep !== pos.ep || typeof e.off !== 'number' || e.off <= last || e.off > pos.off) return;
            last = e.off;
            showMessage(e.data, place);
          });
          if (last < pos.off && last > from && left > 1) return page(last, left - 1);
          return undefined;
        });
    };
    page(0, HISTORY_PAGES).catch(function () { /* the notice already says it */ });
  }

  function renderTyping() {
    var now = Date.now();
    var names = [];
    typing.forEach(function (until, user) {
      if (until > now) names.push(user);
      else typing.delete(user);
    });
    $('typing').textContent = names.length === 0 ? ''
      : names.join(', ') + (names.length === 1 ? ' is typing…' : ' are typing…');
  }

  function send() {
    var input = $('chat-input');
    var text = input.value.trim();
    if (!text || !me) return;
    var id = chat.newId();
    var data = { type: 'chat', id: id, user: me, text: text, at: Date.now() };
    try {
      chat.publish(CHAT, data, { id: id });
    } catch (e) {
      $('chat-notice').textContent = 'Message too large.';
      return;
    }
    var li = messageLi(data);
    li.dataset.state = 'pending';
    li.classList.add('pending');
    shown.set(id, li);
    append(li);
    input.value = '';
    lastTypingSent = 0;
    renderBanner();
  }

  function typed() {
    var now = Date.now();
    if (!me || chat.state !== 'open' || now - lastTypingSent < TYPING_EVERY) return;
    lastTypingSent = now;
    chat.publish(CHAT, { type: 'typing', user: me, at: now }); // a demo convention, not the library's
  }

  chat.on('ack', function (ev) {
    var li = shown.get(ev.id);
    if (li && li.dataset.state === 'pending') li.dataset.state = 'sent';
    renderBanner();
  });

  chat.on('error', function (ev) {
    var li = ev.id && shown.get(ev.id);
    if (li && li.dataset.state !== 'shown') {
      li.dataset.state = 'failed';
      li.classList.remove('pending');
      li.classList.add('failed');
      li.title = 'Not sent: ' + ev.code;
    }
    if (ev.ch === CHAT && !ev.id && ev.code === 'forbidden') {
      $('chat-notice').textContent = 'The server refused the chat subscription.';
    }
    renderBanner();
  });

  dashboard.on('refetch', function (ev) {
    if (ev.ch !== TICKS) return;
    ticks.refetches += 1;
    ticks.last = null; // announced loss: the next tick starts a new baseline
    renderTicks();
  });

  chat.on('refetch', function (ev) {
    if (ev.ch !== CHAT) return;
    // What the old epoch held past this page's position is gone; the new one is reloaded.
    $('chat-notice').textContent = 'Some earlier messages could not be recovered.';
    reloadChat(ev.pos);
  });

  // ----- presence (WebSocket only: SSE and polling carry no presence) ------------------------------

  var here = new Set();
  var snapshotNext = true;

  chat.on('presence', function (ev) {
    if (ev.ch !== CHAT) return;
    ev.join.forEach(function (n) { here.add(n); });
    ev.leave.forEach(function (n) { here.delete(n); });
    if (!snapshotNext) {
      var parts = [];
      if (ev.join.length) parts.push(ev.join.join(', ') + ' joined');
      if (ev.leave.length) parts.push(ev.leave.join(', ') + ' left');
      $('presence-events').textContent = parts.join('; ');
    }
    snapshotNext = false;
    renderPresence();
  });

  function renderPresence() {
    var ul = $('presence');
    ul.textContent = '';
    Array.from(here).sort().forEach(function (n) {
      var li = document.createElement('li');
      li.textContent = n + (n === me ? ' (you)' : '');
      ul.appendChild(li);
    });
  }

  // ----- connection state and the banner (both clients) -----------------------------------------

  var lastClose = new Map(); // client -> its last `closed` state event

  chat.on('state', function (ev) {
    if (ev.state === 'open') {
      // A new connection: the server sends the full list again after the resubscription.
      here.clear();
      snapshotNext = true;
      renderPresence();
      $('presence-events').textContent = ev.transport === 'ws' ? '' : 'Presence needs a WebSocket.';
    }
  });
  [chat, dashboard].forEach(function (c) {
    c.on('state', function (ev) {
      if (ev.state === 'closed') lastClose.set(c, ev);
      renderConnection();
    });
  });

  // `#transport`: "chat: ws · dashboard: sse" (— while a client has no connection);
  // `#state`: one state when both are in it, else both.
  function renderConnection() {
    $('transport').textContent = 'chat: ' + (chat.transport || '—') + ' · dashboard: ' + (dashboard.transport || '—');
    $('state').textContent = chat.state === dashboard.state ? chat.state
      : 'chat: ' + chat.state + ' · dashboard: ' + dashboard.state;
    document.body.dataset.state = overallState();
    renderBanner();
  }

  /** The worse of the two states: closed, reconnecting, connecting / idle, open. */
  function overallState() {
    var order = ['closed', 'reconnecting', 'connecting', 'idle', 'open'];
    return order[Math.min(order.indexOf(chat.state), order.indexOf(dashboard.state))];
  }

  function bannerText() {
    if (chat.state === 'open' && dashboard.state === 'open') return '';
    if (chat.state === 'closed' || dashboard.state === 'closed') return closedText();
    // Messages wait in the chat client's queue: say so while it is not connected.
    var offline = chat.state !== 'open' && chat.queued > 0 ? OFFLINE + '. ' : '';
    // The soonest retry of a client that is waiting out its backoff.
    var due = null;
    [chat, dashboard].forEach(function (c) {
      if (c.state === 'reconnecting' && typeof c.nextRetryAt === 'number' && (due === null || c.nextRetryAt < due)) {
        due = c.nextRetryAt;
      }
    });
    if (due !== null) {
      var secs = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      return offline + 'Reconnecting in ' + secs + ' s…';
    }
    return offline + 'Connecting…';
  }

  function closedText() {
    var c = chat.state === 'closed' ? chat : dashboard;
    var last = lastClose.get(c);
    if (c === chat && last && last.reason === 'auth') {
      return 'Signed out: the server refused the credentials. Choose a name to sign in again.';
    }
    var what = chat.state === dashboard.state ? 'Disconnected' : (c === chat ? 'Chat' : 'Dashboard') + ' disconnected';
    return what + (last && last.code ? ' (code ' + last.code + ')' : '') + '. Reload the page to reconnect.';
  }

  function renderBanner() {
    var banner = $('banner');
    var text = bannerText();
    if (banner.textContent !== text) banner.textContent = text; // only real changes are announced
    banner.hidden = text === '';
    banner.dataset.kind = chat.state === 'closed' || dashboard.state === 'closed' ? 'closed' : 'warn';
  }

  setInterval(function () { renderBanner(); renderTyping(); }, 250);
  window.addEventListener('online', function () { chat.retryNow(); dashboard.retryNow(); });

  // ----- wiring ------------------------------------------------------------------------------------

  function showChat() {
    $('chat-area').hidden = !me;
    $('name-save').textContent = me ? 'Rename' : 'Join chat';
    if (me) $('name-input').value = me;
  }

  $('name-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var name = $('name-input').value.trim();
    if (!name || name === me) return;
    storage('set', name);
    var first = !me;
    me = name;
    token = 'user:' + name;
    chat.setToken(token); // reconnects the chat so that the server knows the new name
    if (first) chat.subscribe(CHAT, onChat);
    showChat();
    $('chat-input').focus();
  });

  $('chat-form').addEventListener('submit', function (e) {
    e.preventDefault();
    send();
  });
  $('chat-input').addEventListener('input', typed);

  if (me) chat.subscribe(CHAT, onChat);
  showChat();
  renderTicks();
  renderConnection();
})();
