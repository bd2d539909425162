//! The blocking Server-Sent Events client: the core's [`EventSource`] (reconnection with
//! `Last-Event-ID`, backoff, idle watchdog) on the adapter's outbound-socket driver.
//! [`connect`] an `http://` URL (no `https://`, no redirects) and pull [`SseConnection::next`].
//! The [crate docs](crate) have an example.

use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tidewire::sse::{EventSource, EventSourceConfig, SseClientConfig, SseClientEvent, SseState};

use crate::ConnectError;
use crate::outbound::{Client, Dial};

/// Settings of [`connect`]; start from `SseOptions::default()`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SseOptions {
    /// The core client's settings; `limits.max_queued` (default 1024) also bounds the events
    /// waiting for [`SseConnection::next`]. A zero `rng_seed` is replaced by OS entropy.
    pub client: SseClientConfig,
    /// Extra request headers, e.g. `Authorization` (not `Last-Event-ID`).
    pub headers: Vec<(String, String)>,
    /// Time for each TCP connection attempt and for writing its request (default 10 s).
    pub connect_timeout: Duration,
}

impl Default for SseOptions {
    fn default() -> Self {
        let connect_timeout = Duration::from_secs(10);
        Self { client: SseClientConfig::default(), headers: Vec::new(), connect_timeout }
    }
}

/// A reconnecting event-stream client. See the [module docs](self).
pub struct SseConnection {
    client: Client<EventSource>,
}

/// Creates a client for an `http://host[:port]/path[?query]` URL and waits for its first
/// attempt. Fails with [`ConnectError::Url`] for a bad URL or header, [`ConnectError::Io`]
/// without OS entropy or a timer thread; network failures are not errors: it reconnects.
pub fn connect(url: &str, opts: SseOptions) -> Result<SseConnection, ConnectError> {
    let target = tidewire::client::Target::parse(url, &["http"])?;
    let mut cfg = EventSourceConfig::new(target.host, target.port, target.path);
    let SseOptions { client, headers, connect_timeout } = opts;
    let max_events = client.limits.max_queued;
    (cfg.client, cfg.headers, cfg.connect_timeout) = (client, headers, Some(connect_timeout));
    if cfg.client.rng_seed == [0; 32] {
        getrandom::fill(&mut cfg.client.rng_seed).map_err(|e| io::Error::other(e.to_string()))?;
    }
    let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let es = EventSource::new(cfg, Instant::now(), unix_now)
        .map_err(|e| ConnectError::Url(e.to_string()))?;
    let dial = Dial { connect_timeout, write_timeout: connect_timeout, read_chunk: 16 << 10 };
    let client = Client::start(es, dial, max_events, "tidewire-sse")?;
    client.wait_while(|es| es.client().state() == SseState::Connecting);
    Ok(SseConnection { client })
}

impl SseConnection {
    /// The next event or state change, in order (it reconnects by itself). `None` once closed
    /// for good, after the `State(Closed)` change.
    #[allow(clippy::should_implement_trait)] // blocking, and `None` is final: not an iterator
    pub fn next(&mut self) -> Option<SseClientEvent> {
        self.client.next_event(None)
    }

    /// Closes the client for good ([`EventSource::close`]); [`next`](Self::next) returns the
    /// `State(Closed)` change, then `None`.
    pub fn close(&mut self) {
        self.client.with(EventSource::close);
    }

    /// The current state ([`SseClient::state`](tidewire::sse::SseClient::state)).
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

impl std::fmt::Debug for SseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.client.inspect(|es| {
            f.debug_struct("SseConnection")
                .field("state", &es.client().state())
                .field("last_event_id", &es.client().last_event_id())
                .finish_non_exhaustive()
        })
    }
}
