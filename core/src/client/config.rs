//! The settings of a [`ClientSession`](super::ClientSession).

use crate::policy::{BackoffConfig, RateLimitConfig};
use crate::sse::ParserLimits;
use crate::time::Duration;
use crate::ws::WsConfig;

/// A way to reach the server, best first: WebSocket, then SSE (plus HTTP publish), then
/// long polling (plus HTTP publish).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Transport {
    /// One WebSocket at `{base}/ws` speaking the envelope protocol.
    WebSocket,
    /// One `GET {base}/events?ch=NAME` event stream per channel; publishes are
    /// `POST {base}/api/publish?ch=NAME`.
    Sse,
    /// One `GET {base}/poll?ch=NAME&pos=EP:OFF&wait=1` long poll per channel at a time;
    /// publishes are `POST {base}/api/publish?ch=NAME`.
    Polling,
}

/// How the token travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TokenPlacement {
    /// `Authorization: Bearer <token>` on every request (default).
    #[default]
    Bearer,
    /// `?token=<token>` on every URL (for servers or proxies that drop the header).
    Query,
}

/// Settings of a session. Build one with [`SessionConfig::new`] and change the fields you
/// need; every buffer and every wait has a bound here.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionConfig {
    /// The server's host name (for the adapter's `Connect` and the `Host` header).
    pub host: String,
    /// The server's TCP port.
    pub port: u16,
    /// A path prefix for every endpoint, e.g. `/realtime` (default empty): `{base}/ws`,
    /// `{base}/events`, `{base}/poll`, `{base}/api/publish`.
    pub base_path: String,
    /// The credentials, if any; replace them later with
    /// [`set_credentials`](super::ClientSession::set_credentials).
    pub token: Option<String>,
    /// How the token travels (default `Authorization: Bearer`).
    pub token_placement: TokenPlacement,
    /// The transports the session may use, best first (default all three). Must not be
    /// empty (an empty list is treated as `[WebSocket]`).
    pub transports: Vec<Transport>,
    /// A transport that fails to open this many times in a row is given up for the next one
    /// in [`transports`](Self::transports) (default 2: "blocked by a proxy"). After the last
    /// one fails as often, the session starts again from the first.
    pub fallback_after: u32,
    /// While on a worse transport than the first, try a better one this often (default
    /// 60 s). WebSocket is probed beside the working transport, which is dropped only once
    /// the WebSocket is open. Another better transport (SSE, from polling) is tried when
    /// WebSocket is not in the list before it, or its last probe failed: the session
    /// re-opens on it, resuming every channel from its position, and goes back at once
    /// when the attempt fails (delivery pauses for the attempt; nothing is lost). `None`
    /// never tries.
    pub upgrade_every: Option<Duration>,
    /// The delays between connection attempts (default base 1 s, cap 30 s, full jitter,
    /// healthy after 10 s, no limit).
    pub backoff: BackoffConfig,
    /// The WebSocket settings (limits, keepalive, extra headers). Its `rng_seed` is
    /// replaced by one drawn from the session's generator for each connection.
    pub ws: WsConfig,
    /// Limits of the event-stream parser of each SSE stream.
    pub sse_limits: ParserLimits,
    /// An SSE stream that delivers no byte for this long is dropped as dead (default 45 s:
    /// three times Tidewire's 15 s keep-alive).
    pub sse_idle_timeout: Duration,
    /// A long poll unanswered for this long is dropped as dead (default 40 s: the server
    /// holds it up to 25 s).
    pub poll_timeout: Duration,
    /// The shortest time between two polls of one channel (default 500 ms), so that a
    /// server that answers at once (short polling) is not polled in a busy loop.
    pub poll_interval: Duration,
    /// Time for an HTTP response head (publish, or the start of an SSE stream) to arrive
    /// after the request (default 10 s).
    pub request_timeout: Duration,
    /// The largest HTTP response head (default 16 KiB).
    pub max_head: usize,
    /// The largest HTTP response body of a poll or a publish (default 4 MiB).
    pub max_body: usize,
    /// Publishes kept while not acknowledged (queued offline or in flight) at most (default
    /// 1000). Past it the oldest is dropped and counted.
    pub max_queued: usize,
    /// Bytes of channel names and data kept for unacknowledged publishes at most (default
    /// 1 MiB). Past it the oldest are dropped and counted.
    pub max_queued_bytes: usize,
    /// The pace of envelopes (`sub`, `pub`) on a WebSocket (default 40/s, burst 80): under
    /// the hub's default inbound limit (50/s, burst 100; over it the connection is closed
    /// with 1008), so that neither the publishes queued while offline nor the `sub`s of many
    /// channels, all sent again after a reconnection, get the session closed. Envelopes
    /// wait for a token, `sub`s before publishes. `None`: no pacing.
    pub send_rate: Option<RateLimitConfig>,
    /// Seed of the session's ChaCha generator (backoff jitter, WebSocket keys and masks,
    /// the publish id prefix). Adapters MUST fill it from OS entropy; tests use a constant.
    pub rng_seed: [u8; 32],
}

/// Why [`SessionConfig::from_url`] or [`Target::parse`] refused a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// A scheme the caller does not speak (plain `http://` and `ws://` only: no TLS yet).
    #[error("unsupported URL scheme (plain http:// or ws:// only)")]
    Scheme,
    /// No host, a bad port, or a user-info part.
    #[error("the URL has no usable host and port")]
    Authority,
    /// A query or fragment (the session builds its own).
    #[error("the URL must not carry a query or fragment")]
    Query,
}

impl SessionConfig {
    /// The defaults for the server at `url`: `http://HOST[:PORT][/BASE]` (or `ws://`); the
    /// path becomes [`base_path`](Self::base_path), the port defaults to 80.
    ///
    /// ```
    /// use tidewire::client::SessionConfig;
    ///
    /// let cfg = SessionConfig::from_url("http://127.0.0.1:8080/realtime").unwrap();
    /// assert_eq!((cfg.host.as_str(), cfg.port, cfg.base_path.as_str()), ("127.0.0.1", 8080, "/realtime"));
    /// let cfg = SessionConfig::from_url("ws://[::1]").unwrap();
    /// assert_eq!((cfg.host.as_str(), cfg.port, cfg.base_path.as_str()), ("::1", 80, ""));
    /// assert!(SessionConfig::from_url("https://example.com").is_err()); // no TLS yet
    /// ```
    ///
    /// # Errors
    /// [`UrlError`] for another scheme, a missing host, a bad port, user info, a query.
    pub fn from_url(url: &str) -> Result<Self, UrlError> {
        let target = Target::parse(url, &["http", "ws"])?;
        if target.path.contains(['?', '#']) || url.contains('#') {
            return Err(UrlError::Query);
        }
        let mut cfg = Self::new(target.host, target.port);
        cfg.base_path = target.path.trim_end_matches('/').to_owned();
        Ok(cfg)
    }

    /// The defaults for a server at `host:port`.
    #[must_use]
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            base_path: String::new(),
            token: None,
            token_placement: TokenPlacement::Bearer,
            transports: vec![Transport::WebSocket, Transport::Sse, Transport::Polling],
            fallback_after: 2,
            upgrade_every: Some(Duration::from_secs(60)),
            backoff: BackoffConfig::default(),
            ws: WsConfig::default(),
            sse_limits: ParserLimits::default(),
            sse_idle_timeout: Duration::from_secs(45),
            poll_timeout: Duration::from_secs(40),
            poll_interval: Duration::from_millis(500),
            request_timeout: Duration::from_secs(10),
            max_head: 16 << 10,
            max_body: 4 << 20,
            max_queued: 1000,
            max_queued_bytes: 1 << 20,
            send_rate: Some(RateLimitConfig { rate_per_sec: 40, burst: 80 }),
            rng_seed: [0; 32],
        }
    }
}

/// Where a client connects, parsed from a URL by the WHATWG rules (the `url` crate).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Target {
    /// The scheme, lowercase (one of those [`parse`](Self::parse) accepted).
    pub scheme: String,
    /// A name or an IP address (an IPv6 one without brackets), to resolve.
    pub host: String,
    /// The port: the URL's, else the scheme's default (80 for `http` and `ws`).
    pub port: u16,
    /// The `Host` header: the host (an IPv6 one in brackets), with the port if the URL named
    /// one other than the default.
    pub authority: String,
    /// The request target: the path and query, at least `/`.
    pub path: String,
}

impl Target {
    /// Parses `url`, whose scheme must be one of `schemes` (lowercase, e.g. `&["ws"]`).
    ///
    /// ```
    /// use tidewire::client::{Target, UrlError};
    ///
    /// let t = Target::parse("ws://[::1]:9001/chat?room=1", &["ws"]).unwrap();
    /// assert_eq!((t.host.as_str(), t.port, t.authority.as_str()), ("::1", 9001, "[::1]:9001"));
    /// assert_eq!(t.path, "/chat?room=1");
    /// assert_eq!(Target::parse("http://a", &["ws"]), Err(UrlError::Scheme));
    /// ```
    ///
    /// # Errors
    /// [`UrlError::Scheme`] for another scheme, [`UrlError::Authority`] for a URL that does
    /// not parse, has no host, user info, or port 0.
    pub fn parse(url: &str, schemes: &[&str]) -> Result<Self, UrlError> {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        let scheme = scheme.filter(|s| schemes.contains(&s.as_str())).ok_or(UrlError::Scheme)?;
        let u = url::Url::parse(url).map_err(|_| UrlError::Authority)?;
        let host = match u.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err(UrlError::Authority),
        };
        let port = u.port_or_known_default().unwrap_or(80);
        if port == 0 || !u.username().is_empty() || u.password().is_some() {
            return Err(UrlError::Authority);
        }
        let authority = u.host_str().unwrap_or_default();
        let authority =
            u.port().map_or_else(|| authority.to_owned(), |p| format!("{authority}:{p}"));
        let path = &u[url::Position::BeforePath..url::Position::AfterQuery];
        let path = if path.is_empty() { "/".to_owned() } else { path.to_owned() };
        Ok(Self { scheme, host, port, authority, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_port_and_base() {
        let ok = [
            ("http://a:1", ("a", 1, "")),
            ("http://a", ("a", 80, "")),
            ("ws://a:9/x/y/", ("a", 9, "/x/y")),
            ("http://[::1]:7/", ("::1", 7, "")),
        ];
        for (url, (h, p, b)) in ok {
            let c = SessionConfig::from_url(url).unwrap();
            assert_eq!((c.host.as_str(), c.port, c.base_path.as_str()), (h, p, b), "{url}");
        }
        let bad = [
            ("ftp://a", UrlError::Scheme),
            ("wss://a", UrlError::Scheme),
            ("http://", UrlError::Authority),
            ("http://u@a", UrlError::Authority),
            ("http://a:0", UrlError::Authority),
            ("http://a:99999", UrlError::Authority),
            ("http://[::1", UrlError::Authority),
            ("http://a/?x=1", UrlError::Query),
        ];
        for (url, e) in bad {
            assert_eq!(SessionConfig::from_url(url).err(), Some(e), "{url}");
        }
    }

    #[test]
    fn targets_keep_the_request_target_and_the_host_header() {
        let cases = [
            ("ws://a/", ("a", 80, "a", "/")),
            ("ws://a:80", ("a", 80, "a", "/")),
            ("WS://Example.COM:9/x?y=1", ("example.com", 9, "example.com:9", "/x?y=1")),
            ("ws://[::1]/", ("::1", 80, "[::1]", "/")),
            ("ws://127.0.0.1:8080/chat", ("127.0.0.1", 8080, "127.0.0.1:8080", "/chat")),
        ];
        for (url, (h, p, a, path)) in cases {
            let t = Target::parse(url, &["ws"]).unwrap();
            assert_eq!(
                (t.host.as_str(), t.port, t.authority.as_str(), t.path.as_str()),
                (h, p, a, path)
            );
            assert_eq!(t.scheme, "ws");
        }
        assert_eq!(Target::parse("wss://a", &["ws"]), Err(UrlError::Scheme));
        assert_eq!(Target::parse("a:1", &["ws"]), Err(UrlError::Scheme));
        assert_eq!(Target::parse("ws://a b/", &["ws"]), Err(UrlError::Authority));
    }
}
