//! The Server-Sent Events client: [`connect`] an `http://` URL and read events with
//! [`SseConnection::next`]. It is the core's [`EventSource`] (EventSource semantics:
//! reconnection with `Last-Event-ID`, server `retry:`, backoff with jitter, an idle
//! watchdog, terminal statuses; the HTTP/1.1 request and response) on the adapter's
//! outbound-socket driver (`outbound.rs`), with a timer task, on
//! `SseOptions::executor`. Events wait in the machine; while `max_queued` of them (1024 by
//! default) wait unpulled the socket is not read and the idle watchdog waits, so a slow
//! application pushes back on the server through TCP. `https://` is not supported and
//! redirects are not followed (a 3xx fails the source).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{fmt, future::Future, io};

use event_listener::Event as Notify;
use smol::Executor;
use tidewire::sse::{EventSource, EventSourceConfig, SseClientConfig, SseClientEvent};
use tidewire::sse::{SseState, SseTimer};

use crate::ConnectError;
use crate::outbound::{self, Host, Sockets};

/// Settings of [`connect`]. Build it with `SseOptions::default()` and change the fields you
/// need.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SseOptions {
    /// The EventSource machine: default reconnection time, backoff, idle watchdog, parser
    /// limits, 5xx retries. An all-zero `rng_seed` (the default) is filled from OS entropy.
    pub client: SseClientConfig,
    /// Extra request headers (e.g. `Authorization`), sent on every attempt.
    pub headers: Vec<(String, String)>,
    /// Time for the TCP connection of one attempt (default 10 s); past it the attempt fails
    /// as a network error.
    pub connect_timeout: Duration,
    /// The executor of the client's tasks. `None` (the default): smol's global executor.
    pub executor: Option<Arc<Executor<'static>>>,
}

impl Default for SseOptions {
    fn default() -> Self {
        let connect_timeout = Duration::from_secs(10);
        Self {
            client: SseClientConfig::default(),
            headers: Vec::new(),
            connect_timeout,
            executor: None,
        }
    }
}

/// A reconnecting event stream. Read it with [`next`](Self::next); dropping it closes it.
pub struct SseConnection {
    shared: Arc<Shared>,
}

struct Shared {
    core: Mutex<(EventSource, Sockets<Shared>)>,
    /// Anything changed: the machine, its sockets, room in its queue.
    changed: Notify,
    executor: Option<Arc<Executor<'static>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, (EventSource, Sockets<Shared>)> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Host for Shared {
    type Machine = EventSource;

    fn with<T>(&self, f: impl FnOnce(&mut EventSource, &mut Sockets<Self>, Instant) -> T) -> T {
        let mut core = self.lock();
        let (es, socks) = &mut *core;
        let out = f(es, socks, Instant::now());
        outbound::drain(self, es, socks);
        self.changed.notify(usize::MAX);
        out
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        crate::driver::spawn_on(self.executor.as_ref(), task);
    }

    async fn room(&self) {
        loop {
            let listener = self.changed.listen();
            let room = {
                let es = &self.lock().0;
                es.wants_read() || es.client().state() == SseState::Closed
            };
            if room {
                return;
            }
            listener.await;
        }
    }
}

/// Opens an `http://` event stream; the first attempt starts at once, in the background.
/// Its progress (and every later reconnection) arrives as [`SseClientEvent::State`] changes
/// from [`SseConnection::next`].
///
/// # Errors
/// [`ConnectError::Url`] for a malformed or non-`http` URL or an extra header that cannot
/// be written; [`ConnectError::Io`] when OS entropy for the seed is unavailable.
#[allow(clippy::unused_async)] // async like the rest of the adapter's API
pub async fn connect(url: &str, opts: SseOptions) -> Result<SseConnection, ConnectError> {
    let url = url::Url::parse(url).map_err(|e| ConnectError::Url(e.to_string()))?;
    let host = url.host_str().filter(|_| url.scheme() == "http");
    let host = host.ok_or_else(|| ConnectError::Url("not an http://host URL".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let mut cfg = EventSourceConfig::new(host, url.port_or_known_default().unwrap_or(80), path);
    (cfg.client, cfg.headers, cfg.connect_timeout) =
        (opts.client, opts.headers, Some(opts.connect_timeout));
    if cfg.client.rng_seed == [0; 32] {
        getrandom::fill(&mut cfg.client.rng_seed).map_err(|e| io::Error::other(e.to_string()))?;
    }
    let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let es = EventSource::new(cfg, Instant::now(), unix_now)
        .map_err(|e| ConnectError::Url(e.to_string()))?;
    let shared = Arc::new_cyclic(|me| Shared {
        core: Mutex::new((es, Sockets::new(me.clone()))),
        changed: Notify::new(),
        executor: opts.executor,
    });
    shared.with(|_, _, _| ()); // the first `Connect`
    crate::driver::spawn_on(shared.executor.as_ref(), drive(shared.clone()));
    Ok(SseConnection { shared })
}

/// The timer task: fires the machine's deadline (not the idle watchdog while the
/// application is the bottleneck) until the machine is closed and its sockets are gone.
async fn drive(shared: Arc<Shared>) {
    crate::driver::run_timer(&shared.changed, |now| {
        let core = shared.lock();
        let es = &core.0;
        let paused = !es.wants_read() && es.client().timeout_reason() == Some(SseTimer::Idle);
        let deadline = es.poll_timeout().filter(|_| !paused);
        if es.client().state() == SseState::Closed && core.1.len() == 0 {
            return None;
        }
        drop(core);
        if deadline.is_some_and(|d| d <= now) {
            shared.with(|es, _, now| es.handle_timeout(now));
        }
        Some(deadline)
    })
    .await;
}

impl SseConnection {
    /// The next event or state change, in order. Reconnections happen by themselves (they
    /// show as `State` changes; events continue after the last one received). `None` once
    /// the client is `Closed` for good (a terminal status or content type, the backoff gave
    /// up, or [`close`](Self::close)), after the `Closed` state change itself.
    pub async fn next(&mut self) -> Option<SseClientEvent> {
        loop {
            let listener = self.shared.changed.listen();
            {
                let es = &mut self.shared.lock().0;
                let paused = !es.wants_read();
                if let Some(ev) = es.poll_event() {
                    if paused && es.wants_read() {
                        self.shared.changed.notify(usize::MAX);
                    }
                    return Some(ev);
                }
                if es.client().state() == SseState::Closed {
                    return None;
                }
            }
            listener.await;
        }
    }

    /// Closes the stream for good: the connection is dropped, no more reconnections;
    /// [`next`](Self::next) returns what was queued, the `Closed` change, then `None`.
    pub fn close(&mut self) {
        self.shared.with(|es, _, now| es.close(now));
    }

    /// The client's state.
    #[must_use]
    pub fn state(&self) -> SseState {
        self.shared.lock().0.client().state()
    }

    /// The last event ID received (as of the events parsed so far; `""` for none): what the
    /// next reconnection sends as `Last-Event-ID`.
    #[must_use]
    pub fn last_event_id(&self) -> String {
        self.shared.lock().0.client().last_event_id().to_owned()
    }

    /// While reconnecting: when the next attempt starts.
    #[must_use]
    pub fn next_retry_at(&self) -> Option<Instant> {
        self.shared.lock().0.client().next_retry_at()
    }
}

impl Drop for SseConnection {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for SseConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = self.shared.lock();
        let (state, id) = (core.0.client().state(), core.0.client().last_event_id());
        f.debug_struct("SseConnection")
            .field("state", &state)
            .field("last_event_id", &id)
            .finish_non_exhaustive()
    }
}
