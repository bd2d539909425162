//! Configuration and limits of a [`WsConnection`](super::WsConnection).

use crate::policy::heartbeat::HeartbeatConfig;
use crate::time::Duration;

/// Limits and behaviour of one WebSocket connection. Every buffer has a limit here.
///
/// Build it with `WsConfig::default()` and change the fields you need:
///
/// ```
/// let mut cfg = tidewire::ws::WsConfig::default();
/// cfg.max_message = 1 << 20; // servers should lower the 64 MiB default
/// cfg.keepalive = None;      // e.g. for the Autobahn testsuite
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WsConfig {
    /// Largest frame payload accepted (default 16 MiB); larger → close 1009.
    pub max_frame: usize,
    /// Largest message (all fragments) accepted (default 64 MiB); larger → close 1009.
    pub max_message: usize,
    /// Largest handshake head, request or response (default 16 KiB); larger → 431.
    pub max_handshake: usize,
    /// Time for the opening handshake to complete (default 10 s; slowloris defence).
    pub handshake_timeout: Duration,
    /// Time for the peer to answer our close frame (and, on a client, to close the TCP
    /// connection after the close handshake) before the transport is shut down (default 5 s).
    pub close_timeout: Duration,
    /// Bytes that may wait in the outbound queue before `send` returns
    /// [`SendError::Backpressure`](super::SendError::Backpressure) (default 1 MiB). Control
    /// frames (pong, close) are always queued.
    pub max_outbound: usize,
    /// How long the outbox may stay full (a `send` hit backpressure and the queue has not
    /// drained to half of `max_outbound` since) before the connection is ended with 4100
    /// and [`ConnError::SendStalled`](super::ConnError::SendStalled) (default 30 s). `None`
    /// waits forever.
    pub send_timeout: Option<Duration>,
    /// Outgoing messages larger than this are split into fragments of this size (default
    /// `None`: one frame per message).
    pub max_send_fragment: Option<usize>,
    /// Keepalive pings and dead-peer detection (default ping after 25 s idle, dead 20 s
    /// later). `None` turns it off.
    pub keepalive: Option<HeartbeatConfig>,
    /// Client: subprotocols offered in `Sec-WebSocket-Protocol`, most preferred first.
    pub protocols: Vec<String>,
    /// Client: extra request headers (e.g. `Authorization`, `Origin`, `Cookie`).
    pub headers: Vec<(String, String)>,
    /// Seed of the ChaCha generator for mask keys and the `Sec-WebSocket-Key`. Adapters MUST
    /// fill it from OS entropy; tests use a constant.
    pub rng_seed: [u8; 32],
    /// permessage-deflate (RFC 7692; feature `deflate`): a client offers it, a server accepts
    /// a client's offer, as configured here (default `None`: not offered, offers declined).
    /// See [`deflate`](super::deflate) for the modes and their memory.
    #[cfg(feature = "deflate")]
    pub deflate: Option<super::deflate::DeflateConfig>,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            max_frame: 16 << 20,
            max_message: 64 << 20,
            max_handshake: 16 << 10,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            max_outbound: 1 << 20,
            send_timeout: Some(Duration::from_secs(30)),
            max_send_fragment: None,
            keepalive: Some(HeartbeatConfig::default()),
            protocols: Vec::new(),
            headers: Vec::new(),
            rng_seed: [0; 32],
            #[cfg(feature = "deflate")]
            deflate: None,
        }
    }
}
