//! The blocking Server-Sent Events client: [`connect`] to an `http://` event stream and
//! pull events with [`SseConnection::next`]; it reconnects by itself.
//!
//! It is the core's [`EventSource`] (EventSource semantics, WHATWG HTML §9.2: reconnection
//! with `Last-Event-ID`, server `retry:`, backoff with jitter, an idle watchdog, terminal
//! statuses; the HTTP/1.1 request and response: close-delimited, `Content-Length` or
//! chunked bodies) on the adapter's outbound-socket driver (`outbound.rs`): a reader
//! and a writer thread per connection. Its deadlines fire inside [`SseConnection::next`];
//! while `max_queued` events (1024 by default) wait unpulled the socket is not read.
//! Redirects are not followed (a `3xx` fails the source) and `https://` is not supported.
//!
//! ```no_run
//! use tidewire_std::sse::{SseOptions, connect};
//! use tidewire_std::tidewire::sse::SseClientEvent;
//!
//! let mut events = connect("http://127.0.0.1:8080/events?ch=ticks", SseOptions::default())?;
//! while let Some(ev) = events.next() {
//!     match ev {
//!         SseClientEvent::Event(e) => println!("{} {}: {}", e.id, e.event, e.data),
//!         SseClientEvent::State(s) => println!("now {:?} ({:?})", s.state, s.reason),
//!         _ => {}
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tidewire::sse::{EventSource, EventSourceConfig, SseClientConfig, SseClientEvent, SseState};
pub use tidewire::sse::{SseEvent, StateChange};

use crate::ConnectError;
use crate::outbound::{Client, Dial};

/// Settings of [`connect`]. Build with `SseOptions::default()` and change fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SseOptions {
    /// Reconnection time, backoff, idle watchdog (30 s by default), parser limits, 5xx
    /// retries. A zero `rng_seed` is replaced by OS entropy.
    pub client: SseClientConfig,
    /// Extra request headers, e.g. `Authorization` (not `Last-Event-ID`, which the client
    /// manages).
    pub headers: Vec<(String, String)>,
    /// Time to establish each TCP connection, over all resolved addresses, and to write its
    /// request (default 10 s).
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

/// Creates an event-stream client for an `http://host[:port]/path[?query]` URL and makes
/// its first connection attempt: when this returns, the stream is open, is waiting to
/// reconnect (the attempt failed), or was refused for good (the status or type was wrong;
/// [`SseConnection::next`] reports why). The state changes are queued for `next`.
///
/// # Errors
/// [`ConnectError::Url`] for an invalid URL (or one that is not `http://`) or an extra
/// header that cannot be written; [`ConnectError::Io`] when the OS has no entropy for the
/// backoff's jitter or no thread for its timer. Network failures are not errors: the
/// client reconnects.
pub fn connect(url: &str, opts: SseOptions) -> Result<SseConnection, ConnectError> {
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
    let (connect_timeout, read_chunk) = (opts.connect_timeout, 16 << 10);
    let dial = Dial { connect_timeout, write_timeout: connect_timeout, read_chunk };
    let client = Client::start(es, dial, max_events, "tidewire-sse")?;
    client.wait_while(|es| es.client().state() == SseState::Connecting);
    Ok(SseConnection { client })
}

impl SseConnection {
    /// The next event or state change, in order; reconnects by itself as the core
    /// [`EventSource`] decides. `None` once the client is closed for good (a terminal status
    /// or type, the backoff gave up, or [`close`](Self::close)), after its last
    /// `State(Closed)` change was returned.
    #[allow(clippy::should_implement_trait)] // blocking, and `None` is final: not an iterator
    pub fn next(&mut self) -> Option<SseClientEvent> {
        self.client.next_event(None)
    }

    /// Closes the client for good: the connection is dropped, no reconnection follows.
    /// [`next`](Self::next) returns the `State(Closed)` change, then `None`.
    pub fn close(&mut self) {
        self.client.with(EventSource::close);
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> SseState {
        self.client.inspect(|es| es.client().state())
    }

    /// The last event ID (`""` if none): what the next reconnection sends as
    /// `Last-Event-ID`.
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
