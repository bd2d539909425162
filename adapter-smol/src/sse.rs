//! The Server-Sent Events client: [`connect`] an `http://` URL and read events with
//! [`SseConnection::next`]. It is the core's [`EventSource`] (EventSource semantics:
//! reconnection with `Last-Event-ID`, server `retry:`, backoff with jitter, an idle
//! watchdog, terminal statuses; the HTTP/1.1 request and response) on the adapter's
//! outbound-socket driver (`outbound.rs`), with a timer task, on
//! `SseOptions::executor`. While `max_queued` events (1024 by default) wait unpulled the
//! socket is not read and the idle watchdog waits, so a slow application pushes back on
//! the server through TCP. `https://` is not supported and
//! redirects are not followed (a 3xx fails the source).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{fmt, io};

use smol::Executor;
use tidewire::sse::{EventSource, EventSourceConfig, SseClientConfig, SseClientEvent, SseState};

use crate::ConnectError;
use crate::outbound::Client;

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
    client: Client<EventSource>,
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
    let max_events = opts.client.limits.max_queued;
    (cfg.client, cfg.headers, cfg.connect_timeout) =
        (opts.client, opts.headers, Some(opts.connect_timeout));
    if cfg.client.rng_seed == [0; 32] {
        getrandom::fill(&mut cfg.client.rng_seed).map_err(|e| io::Error::other(e.to_string()))?;
    }
    let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let es = EventSource::new(cfg, Instant::now(), unix_now)
        .map_err(|e| ConnectError::Url(e.to_string()))?;
    Ok(SseConnection { client: Client::start(es, max_events, opts.executor) })
}

impl SseConnection {
    /// The next event or state change, in order. Reconnections happen by themselves (they
    /// show as `State` changes; events continue after the last one received). `None` once
    /// the client is `Closed` for good (a terminal status or content type, the backoff gave
    /// up, or [`close`](Self::close)), after the `Closed` state change itself.
    pub async fn next(&mut self) -> Option<SseClientEvent> {
        self.client.next_event().await
    }

    /// Closes the stream for good: the connection is dropped, no more reconnections;
    /// [`next`](Self::next) returns what was queued, the `Closed` change, then `None`.
    pub fn close(&mut self) {
        self.client.with(EventSource::close);
    }

    /// The client's state.
    #[must_use]
    pub fn state(&self) -> SseState {
        self.client.inspect(|es| es.client().state())
    }

    /// The last event ID received (as of the events parsed so far; `""` for none): what the
    /// next reconnection sends as `Last-Event-ID`.
    #[must_use]
    pub fn last_event_id(&self) -> String {
        self.client.inspect(|es| es.client().last_event_id().to_owned())
    }

    /// While reconnecting: when the next attempt starts.
    #[must_use]
    pub fn next_retry_at(&self) -> Option<Instant> {
        self.client.inspect(|es| es.client().next_retry_at())
    }
}

impl fmt::Debug for SseConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.client.inspect(|es| {
            f.debug_struct("SseConnection")
                .field("state", &es.client().state())
                .field("last_event_id", &es.client().last_event_id())
                .finish_non_exhaustive()
        })
    }
}
