//! The Server-Sent Events client: the core's [`EventSource`] (reconnection with
//! `Last-Event-ID`, backoff, idle watchdog) on the adapter's outbound-socket driver.
//! [`connect`] an `http://` URL (no `https://`, no redirects) and read [`SseConnection::next`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{fmt, io};

use smol::Executor;
use tidewire::sse::{EventSource, EventSourceConfig, SseClientConfig, SseClientEvent, SseState};

use crate::ConnectError;
use crate::outbound::Client;

/// Settings of [`connect`]; start from `SseOptions::default()`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SseOptions {
    /// The core client's settings; `limits.max_queued` (default 1024) also bounds the events
    /// waiting for [`SseConnection::next`]. A zero `rng_seed` is filled from OS entropy.
    pub client: SseClientConfig,
    /// Extra request headers (e.g. `Authorization`), sent on every attempt.
    pub headers: Vec<(String, String)>,
    /// Time for the TCP connection of one attempt (default 10 s).
    pub connect_timeout: Duration,
    /// The executor of the client's tasks. `None` (the default): smol's global executor.
    pub executor: Option<Arc<Executor<'static>>>,
}

impl Default for SseOptions {
    fn default() -> Self {
        let connect_timeout = Duration::from_secs(10);
        Self {
            client: SseClientConfig::default(),
            headers: vec![],
            connect_timeout,
            executor: None,
        }
    }
}

/// A reconnecting event stream. Read it with [`next`](Self::next); dropping it closes it.
pub struct SseConnection {
    client: Client<EventSource>,
}

/// Opens an `http://` event stream, connecting in the background ([`SseClientEvent::State`]
/// changes). Fails with [`ConnectError::Url`] for a bad URL or header, [`ConnectError::Io`]
/// without OS entropy.
#[allow(clippy::unused_async)] // async like the rest of the adapter's API
pub async fn connect(url: &str, opts: SseOptions) -> Result<SseConnection, ConnectError> {
    let target = tidewire::client::Target::parse(url, &["http"])?;
    let mut cfg = EventSourceConfig::new(target.host, target.port, target.path);
    let SseOptions { client, headers, connect_timeout, executor } = opts;
    let max_events = client.limits.max_queued;
    (cfg.client, cfg.headers, cfg.connect_timeout) = (client, headers, Some(connect_timeout));
    if cfg.client.rng_seed == [0; 32] {
        getrandom::fill(&mut cfg.client.rng_seed).map_err(|e| io::Error::other(e.to_string()))?;
    }
    let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let es = EventSource::new(cfg, Instant::now(), unix_now)
        .map_err(|e| ConnectError::Url(e.to_string()))?;
    Ok(SseConnection { client: Client::start(es, max_events, executor) })
}

impl SseConnection {
    /// The next event or state change, in order (it reconnects by itself). `None` once closed
    /// for good, after the `Closed` state change.
    pub async fn next(&mut self) -> Option<SseClientEvent> {
        self.client.next_event().await
    }

    /// Closes the stream for good ([`EventSource::close`]); [`next`](Self::next) returns what
    /// was queued, the `Closed` change, then `None`.
    pub fn close(&mut self) {
        self.client.with(EventSource::close);
    }

    /// The client's state ([`SseClient::state`](tidewire::sse::SseClient::state)).
    #[must_use]
    pub fn state(&self) -> SseState {
        self.client.inspect(|es| es.client().state())
    }

    /// The last event ID, sent as `Last-Event-ID` on the next reconnection
    /// ([`SseClient::last_event_id`](tidewire::sse::SseClient::last_event_id)).
    #[must_use]
    pub fn last_event_id(&self) -> String {
        self.client.inspect(|es| es.client().last_event_id().to_owned())
    }

    /// While reconnecting: when the next attempt starts
    /// ([`SseClient::next_retry_at`](tidewire::sse::SseClient::next_retry_at)).
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
