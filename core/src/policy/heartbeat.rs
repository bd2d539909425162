//! Heartbeats: when to send a keepalive and when to declare the peer dead.
//!
//! One machine serves every transport: WebSocket pings (idle on inbound), SSE comment lines
//! (idle on outbound, no timeout: the client cannot answer) and server-side expiry of a
//! polling client that stopped polling (no pings, timeout only). Any inbound traffic counts
//! as life ([`Heartbeat::on_inbound`]).
//!
//! Deadlines are exact: [`Heartbeat::poll_timeout`] is the earliest of "send a ping" and
//! "peer dead", and [`Heartbeat::handle_timeout`] never fires before it.
//!
//! ```
//! use tidewire::policy::{Beat, Heartbeat, HeartbeatConfig};
//! use tidewire::time::{Duration, Instant};
//!
//! let t0 = Instant::now();
//! let mut hb = Heartbeat::new(HeartbeatConfig::default(), t0); // ping after 25 s idle, dead 20 s later
//! assert_eq!(hb.poll_timeout(), Some(t0 + Duration::from_secs(25)));
//! assert_eq!(hb.handle_timeout(t0 + Duration::from_secs(25)), Some(Beat::SendPing(1)));
//! assert_eq!(hb.poll_timeout(), Some(t0 + Duration::from_secs(45)));
//! hb.on_inbound(t0 + Duration::from_secs(30)); // the pong (or anything) arrives
//! assert_eq!(hb.poll_timeout(), Some(t0 + Duration::from_secs(55)));
//! assert_eq!(hb.handle_timeout(t0 + Duration::from_secs(55)), Some(Beat::SendPing(2)));
//! assert_eq!(hb.handle_timeout(t0 + Duration::from_secs(75)), Some(Beat::Expired));
//! assert!(hb.is_expired());
//! ```

use crate::time::{Duration, Instant, Monotonic};

/// What "idle" is measured against when deciding to send a keepalive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IdleRule {
    /// Ping when nothing has been received for `interval` (WebSocket).
    #[default]
    Inbound,
    /// Send a keepalive when nothing has been sent for `interval` (SSE comment lines,
    /// keeping proxies from closing a quiet stream).
    Outbound,
    /// Ping every `interval`, whatever the traffic.
    Fixed,
}

/// Heartbeat settings. Defaults: ping after 25 s idle on inbound, dead 20 s after an
/// unanswered ping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeartbeatConfig {
    /// Idle time before a keepalive is sent; `None` never sends one.
    pub interval: Option<Duration>,
    /// With `interval`: time after the first unanswered keepalive before the peer is dead.
    /// Without `interval`: time without inbound traffic before the peer is dead. `None`
    /// never declares the peer dead.
    pub timeout: Option<Duration>,
    /// What idle is measured against.
    pub idle: IdleRule,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval: Some(Duration::from_secs(25)),
            timeout: Some(Duration::from_secs(20)),
            idle: IdleRule::Inbound,
        }
    }
}

impl HeartbeatConfig {
    /// Keepalive pings every `interval` of inbound silence, dead `timeout` after an
    /// unanswered one.
    #[must_use]
    pub fn ping(interval: Duration, timeout: Duration) -> Self {
        Self { interval: Some(interval), timeout: Some(timeout), idle: IdleRule::Inbound }
    }

    /// Keepalives after `interval` of outbound silence and no dead-peer detection (SSE).
    #[must_use]
    pub fn keepalive_only(interval: Duration) -> Self {
        Self { interval: Some(interval), timeout: None, idle: IdleRule::Outbound }
    }

    /// No keepalives; dead after `timeout` without inbound traffic (polling clients).
    #[must_use]
    pub fn expiry(timeout: Duration) -> Self {
        Self { interval: None, timeout: Some(timeout), idle: IdleRule::Inbound }
    }
}

/// What the heartbeat asks of its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Beat {
    /// Send a keepalive now (a ping whose payload may carry this token, or an SSE comment).
    SendPing(u64),
    /// The peer is dead: no inbound traffic within the timeout. Fires once; the heartbeat
    /// then stays silent.
    Expired,
}

/// The heartbeat machine. See the [module docs](self).
///
/// - Inputs: [`on_inbound`](Self::on_inbound), [`on_outbound`](Self::on_outbound),
///   [`handle_timeout`](Self::handle_timeout).
/// - Outputs: [`poll_timeout`](Self::poll_timeout), the `Beat` returned by `handle_timeout`.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    cfg: HeartbeatConfig,
    clock: Monotonic,
    last_in: Instant,
    last_out: Instant,
    last_ping: Option<(u64, Instant)>,
    /// The first keepalive sent since the last inbound traffic, if any.
    unanswered_since: Option<Instant>,
    next_token: u64,
    rtt: Option<Duration>,
    expired: bool,
}

impl Heartbeat {
    /// A heartbeat that counts `now` as the last sign of life.
    #[must_use]
    pub fn new(cfg: HeartbeatConfig, now: Instant) -> Self {
        Self {
            cfg,
            clock: Monotonic::new(now),
            last_in: now,
            last_out: now,
            last_ping: None,
            unanswered_since: None,
            next_token: 1,
            rtt: None,
            expired: false,
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &HeartbeatConfig {
        &self.cfg
    }

    /// Inbound traffic (any byte) arrived: the peer is alive.
    pub fn on_inbound(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        self.last_in = now;
        self.unanswered_since = None;
    }

    /// A pong carrying `token` arrived: records the round-trip time (and counts as life).
    pub fn on_pong(&mut self, now: Instant, token: u64) {
        let now = self.clock.advance(now);
        if let Some((t, sent)) = self.last_ping
            && t == token
        {
            self.rtt = Some(now.saturating_duration_since(sent));
        }
        self.on_inbound(now);
    }

    /// Something was sent (matters for [`IdleRule::Outbound`]).
    pub fn on_outbound(&mut self, now: Instant) {
        self.last_out = self.clock.advance(now);
    }

    /// The round-trip time measured by the latest answered ping.
    #[must_use]
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Whether the peer has been declared dead.
    #[must_use]
    pub fn is_expired(&self) -> bool {
        self.expired
    }

    fn next_ping(&self) -> Option<Instant> {
        let interval = self.cfg.interval?;
        let ping_at = self.last_ping.map(|(_, at)| at);
        let base = match self.cfg.idle {
            IdleRule::Inbound => Some(self.last_in),
            IdleRule::Outbound => Some(self.last_out),
            IdleRule::Fixed => None,
        };
        let from = match (base, ping_at) {
            (Some(b), Some(p)) => b.max(p),
            (Some(b), None) => b,
            (None, Some(p)) => p,
            (None, None) => self.last_in.min(self.last_out),
        };
        Some(from + interval)
    }

    fn dead_at(&self) -> Option<Instant> {
        let timeout = self.cfg.timeout?;
        if self.cfg.interval.is_none() {
            return Some(self.last_in + timeout);
        }
        self.unanswered_since.map(|since| since + timeout)
    }

    /// The next deadline: the earlier of "send a keepalive" and "peer dead". `None` once
    /// expired or when neither is configured. Changes after every input.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.expired {
            return None;
        }
        match (self.next_ping(), self.dead_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires what is due at `now`: `Expired` wins over `SendPing`; `None` when nothing is
    /// due (a spurious wake-up). At most one beat per call; a caller that slept past several
    /// ping deadlines gets one ping, not a burst.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Beat> {
        let now = self.clock.advance(now);
        if self.expired {
            return None;
        }
        if self.dead_at().is_some_and(|d| d <= now) {
            self.expired = true;
            return Some(Beat::Expired);
        }
        if self.next_ping().is_some_and(|p| p <= now) {
            let token = self.next_token;
            self.next_token += 1;
            self.last_ping = Some((token, now));
            self.last_out = now;
            self.unanswered_since.get_or_insert(now);
            return Some(Beat::SendPing(token));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn inbound_traffic_postpones_the_ping() {
        let t0 = crate::time::test_epoch();
        let mut hb = Heartbeat::new(HeartbeatConfig::ping(secs(10), secs(5)), t0);
        for i in 1..=100 {
            hb.on_inbound(t0 + secs(i));
            assert_eq!(hb.handle_timeout(t0 + secs(i)), None);
        }
        assert_eq!(hb.poll_timeout(), Some(t0 + secs(110)));
    }

    #[test]
    fn never_fires_before_its_deadline() {
        let t0 = crate::time::test_epoch();
        let mut hb = Heartbeat::new(HeartbeatConfig::ping(secs(10), secs(5)), t0);
        assert_eq!(hb.handle_timeout(t0 + secs(10) - Duration::from_nanos(1)), None);
        assert_eq!(hb.handle_timeout(t0 + secs(10)), Some(Beat::SendPing(1)));
        // A second ping only after another interval, and the dead deadline is not moved by it.
        assert_eq!(hb.poll_timeout(), Some(t0 + secs(15)));
        assert_eq!(hb.handle_timeout(t0 + secs(15) - Duration::from_nanos(1)), None);
        assert_eq!(hb.handle_timeout(t0 + secs(15)), Some(Beat::Expired));
        assert_eq!(hb.poll_timeout(), None);
        assert_eq!(hb.handle_timeout(t0 + secs(100)), None);
    }

    #[test]
    fn repeated_pings_do_not_extend_the_timeout() {
        let t0 = crate::time::test_epoch();
        let mut hb = Heartbeat::new(HeartbeatConfig::ping(secs(2), secs(5)), t0);
        assert_eq!(hb.handle_timeout(t0 + secs(2)), Some(Beat::SendPing(1)));
        assert_eq!(hb.handle_timeout(t0 + secs(4)), Some(Beat::SendPing(2)));
        assert_eq!(hb.handle_timeout(t0 + secs(6)), Some(Beat::SendPing(3)));
        assert_eq!(hb.poll_timeout(), Some(t0 + secs(7)));
        assert_eq!(hb.handle_timeout(t0 + secs(7)), Some(Beat::Expired));
    }

    #[test]
    fn pong_measures_rtt() {
        let t0 = crate::time::test_epoch();
        let mut hb = Heartbeat::new(HeartbeatConfig::default(), t0);
        let Some(Beat::SendPing(tok)) = hb.handle_timeout(t0 + secs(25)) else { panic!() };
        hb.on_pong(t0 + secs(25) + Duration::from_millis(40), tok);
        assert_eq!(hb.rtt(), Some(Duration::from_millis(40)));
        assert!(!hb.is_expired());
    }

    #[test]
    fn outbound_rule_is_an_sse_keepalive() {
        let t0 = crate::time::test_epoch();
        let mut hb = Heartbeat::new(HeartbeatConfig::keepalive_only(secs(15)), t0);
        hb.on_outbound(t0 + secs(10));
        assert_eq!(hb.poll_timeout(), Some(t0 + secs(25)));
        assert_eq!(hb.handle_timeout(t0 + secs(25)), Some(Beat::SendPing(1)));
        assert_eq!(hb.poll_timeout(), Some(t0 + secs(40)));
        // Never expires: an SSE client cannot answer.
        assert_eq!(hb.handle_timeout(t0 + secs(1000)), Some(Beat::SendPing(2)));
    }

    #[test]
    fn expiry_only_for_polling_clients() {
        let t0 = crate::time::test_epoch();
        let mut hb = Heartbeat::new(HeartbeatConfig::expiry(secs(30)), t0);
        hb.on_inbound(t0 + secs(20));
        assert_eq!(hb.poll_timeout(), Some(t0 + secs(50)));
        assert_eq!(hb.handle_timeout(t0 + secs(49)), None);
        assert_eq!(hb.handle_timeout(t0 + secs(50)), Some(Beat::Expired));
    }

    #[test]
    fn fixed_rule_pings_despite_traffic() {
        let t0 = crate::time::test_epoch();
        let cfg =
            HeartbeatConfig { idle: IdleRule::Fixed, ..HeartbeatConfig::ping(secs(10), secs(5)) };
        let mut hb = Heartbeat::new(cfg, t0);
        hb.on_inbound(t0 + secs(9));
        assert_eq!(hb.handle_timeout(t0 + secs(10)), Some(Beat::SendPing(1)));
        hb.on_inbound(t0 + secs(11));
        assert_eq!(hb.poll_timeout(), Some(t0 + secs(20)));
    }

    #[test]
    fn time_going_back_is_clamped() {
        let t0 = crate::time::test_epoch() + secs(100);
        let mut hb = Heartbeat::new(HeartbeatConfig::ping(secs(10), secs(5)), t0);
        hb.on_inbound(t0 - secs(50));
        assert_eq!(hb.poll_timeout(), Some(t0 + secs(10)));
        assert_eq!(hb.handle_timeout(t0 - secs(99)), None);
    }
}
