//! [`RedisConfig`]: where the Redis server is, how the data is named and bounded, and how
//! the machine reconnects.

use crate::policy::BackoffConfig;
use crate::time::Duration;

/// Settings of a [`RedisBus`](super::RedisBus).
///
/// Defaults: `127.0.0.1:6379`, prefix `tw`, 1000 messages per channel log (match the
/// hub's [`LogLimits::max_count`](crate::replay::LogLimits::max_count)), dedup ids kept
/// 10 minutes, reconnect backoff from 100 ms up to 5 s with full jitter, 5 s to connect,
/// 5 s per command, at most 10 000 commands or 64 MiB awaiting replies, replies up to
/// 64 MiB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// The server's host name or address.
    pub host: String,
    /// The server's TCP port.
    pub port: u16,
    /// Prepended (with a `:`) to every key and pub/sub channel (see the
    /// [module docs](super) for the layout).
    pub key_prefix: String,
    /// The number of messages each channel's stream keeps (`XADD … MAXLEN ~`), and the
    /// most a history returns. Should equal the hub's `LogLimits::max_count`.
    pub log_max: usize,
    /// How long a publish id is remembered for deduplication (rounded up to whole seconds,
    /// at least 1 s).
    pub dedup_ttl: Duration,
    /// How reconnections are spaced.
    pub backoff: BackoffConfig,
    /// Both connections must be usable (connected and answering a `PING`) this soon after
    /// the attempt starts, or the attempt fails.
    pub connect_timeout: Duration,
    /// A command (or a subscription change) without its reply after this long means the
    /// connection is broken.
    pub command_timeout: Duration,
    /// The most commands awaiting their reply; a publish beyond it fails at once.
    pub max_pending: usize,
    /// The most encoded bytes of commands awaiting their reply; a publish beyond it fails
    /// at once.
    pub max_pending_bytes: usize,
    /// The largest reply (or unparsed input) a connection may buffer; more breaks the
    /// connection.
    pub max_reply_bytes: usize,
    /// Seeds the jitter and the epochs this machine proposes.
    pub rng_seed: [u8; 32],
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 6379,
            key_prefix: "tw".into(),
            log_max: 1000,
            dedup_ttl: Duration::from_secs(600),
            backoff: BackoffConfig {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(5),
                ..BackoffConfig::default()
            },
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            max_pending: 10_000,
            max_pending_bytes: 64 << 20,
            max_reply_bytes: 64 << 20,
            rng_seed: [0; 32],
        }
    }
}

/// Why [`RedisConfig::from_url`] refused a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The URL does not start with `redis://`.
    #[error("not a redis:// URL")]
    Scheme,
    /// The host is empty or holds characters a host name cannot.
    #[error("invalid host in the redis URL")]
    Host,
    /// The port is not a number from 1 to 65535.
    #[error("invalid port in the redis URL")]
    Port,
    /// The URL has credentials, a database number, a query or a TLS scheme, which this
    /// machine does not speak.
    #[error("unsupported part in the redis URL (credentials, database, query)")]
    Unsupported,
}

impl RedisConfig {
    /// The defaults with the host and port of `url`: `redis://HOST[:PORT][/]` (port 6379
    /// when absent; an IPv6 address in brackets, `redis://[::1]:6380`).
    ///
    /// # Errors
    /// [`UrlError`] for another scheme, a bad host or port, or parts this machine does not
    /// support (`user:password@`, a database path such as `/2`, `?query`).
    pub fn from_url(url: &str) -> Result<Self, UrlError> {
        let rest = url.strip_prefix("redis://").ok_or(UrlError::Scheme)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['@', '/', '?', '#']) {
            return Err(UrlError::Unsupported);
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(UrlError::Host)?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or(UrlError::Port)?)),
            }
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let valid_host = |h: &str| {
            !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
        };
        if !valid_host(host) {
            return Err(UrlError::Host);
        }
        let port = match port {
            None => 6379,
            Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u16>().ok().filter(|&p| p != 0).ok_or(UrlError::Port)?
            }
            Some(_) => return Err(UrlError::Port),
        };
        Ok(Self { host: host.to_owned(), port, ..Self::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = RedisConfig::from_url("redis://localhost:6380").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("localhost", 6380));
        let c = RedisConfig::from_url("redis://10.0.0.1/").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("10.0.0.1", 6379));
        let c = RedisConfig::from_url("redis://[::1]:7000").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 7000));
        assert_eq!(c.key_prefix, "tw");
        assert_eq!(RedisConfig::from_url("http://x"), Err(UrlError::Scheme));
        assert_eq!(RedisConfig::from_url("rediss://x"), Err(UrlError::Scheme));
        assert_eq!(RedisConfig::from_url("redis://"), Err(UrlError::Host));
        assert_eq!(RedisConfig::from_url("redis://a b"), Err(UrlError::Host));
        assert_eq!(RedisConfig::from_url("redis://h:0"), Err(UrlError::Port));
        assert_eq!(RedisConfig::from_url("redis://h:70000"), Err(UrlError::Port));
        assert_eq!(RedisConfig::from_url("redis://h:"), Err(UrlError::Port));
        assert_eq!(RedisConfig::from_url("redis://[::1]x"), Err(UrlError::Port));
        assert_eq!(RedisConfig::from_url("redis://u:p@h"), Err(UrlError::Unsupported));
        assert_eq!(RedisConfig::from_url("redis://h/2"), Err(UrlError::Unsupported));
    }
}
