//! The scale-out bus inside the [`Server`] (feature `redis`): a [`RedisBus`] next to the
//! hub, driven through the sockets it asks for, so that no adapter has Redis glue.
//!
//! - [`Server::with_redis`] builds a server whose hub lives on the bus
//!   ([`Hub::with_bus`]); the bus's first two `Connect`s are queued.
//! - The server is an [`Outbound`] machine for the bus's sockets: the adapter's
//!   outbound-socket driver opens them ([`Outbound::poll_action`]), writes to them
//!   ([`Outbound::poll_transmit`]) and feeds their input ([`Outbound::handle_read`], …).
//!   Those are the trait's methods: [`Server::handle_read`] and [`Server::poll_transmit`]
//!   are the inbound connections', so call these through the trait
//!   (`Outbound::handle_read(&mut server, now, sock, data)`) or from a generic driver.
//! - After every input and command the server moves the hub's requests
//!   ([`Hub::poll_bus`]) into the bus and the bus's answers
//!   ([`RedisEvent::apply`](crate::redis::RedisEvent::apply)) into the hub: joins follow
//!   channels, publishes are numbered by Redis, [`HubEvent::BusUp`](crate::hub::HubEvent)
//!   and its like reach [`Server::poll_event`] as [`ServerEvent::Hub`](super::ServerEvent).
//! - [`Server::poll_timeout`] includes the bus's deadlines (reconnection, connect and
//!   reply timeouts) and [`Server::handle_timeout`] fires them.
//! - [`Server::submit`] is the trusted publish through the bus, answered by
//!   [`Server::take_submitted`] with its token.

use bytes::Bytes;

use super::{Authenticate, Server, ServerConfig};
use crate::hub::{Authorize, BusToken, Hub, HubError};
use crate::redis::{RedisBus, RedisConfig};
use crate::socket::{Outbound, SockId, SocketAction};
use crate::time::Instant;

impl Server {
    /// A server whose hub shares every channel with other instances through Redis (see
    /// [`crate::redis`]): as [`new`](Self::new), plus the bus, which starts connecting at
    /// once. An all-zero `redis.rng_seed` is derived from `seed`.
    ///
    /// The server is then an [`Outbound`] machine for the bus's two sockets: the adapter's
    /// outbound-socket driver opens and closes them (`poll_action`), writes to them
    /// (`poll_transmit`) and feeds their input (`handle_connected`, `handle_read`, …).
    /// [`Server::handle_read`] and [`Server::poll_transmit`] are the inbound connections',
    /// so call the bus's through the trait (`Outbound::handle_read(&mut server, ..)`) or from
    /// a generic driver. The trait's `poll_timeout`/`handle_timeout` are the server's own,
    /// which include the bus's deadlines (reconnection, connect and reply timeouts).
    #[must_use]
    pub fn with_redis(
        cfg: ServerConfig,
        authn: impl Authenticate + Send + 'static,
        authz: impl Authorize + Send + 'static,
        mut redis: RedisConfig,
        seed: u64,
        now: Instant,
    ) -> Self {
        if redis.rng_seed == [0; 32] {
            redis.rng_seed[..8].copy_from_slice(&seed.to_le_bytes());
            redis.rng_seed[8..16].copy_from_slice(&(!seed).to_le_bytes());
        }
        let hub = Hub::with_bus(cfg.hub.clone(), authz, seed);
        let mut server = Self::around(cfg, authn, hub, seed);
        server.bus = Some(RedisBus::new(redis, now));
        server
    }

    /// The Redis bus (`None` without one).
    #[must_use]
    pub fn redis(&self) -> Option<&RedisBus> {
        self.bus.as_ref()
    }

    /// The trusted server-side publish through the bus ([`Hub::submit`]): `json` (one JSON
    /// value) is numbered by Redis, deduplicated by `id` across instances; the answer
    /// comes by [`take_submitted`](Self::take_submitted) with the token.
    ///
    /// # Errors
    /// [`HubError::Unavailable`] without a bus or while it is down; [`HubError::BadJson`],
    /// [`HubError::BadChannel`], [`HubError::BadId`].
    pub fn submit(
        &mut self,
        now: Instant,
        ch: &str,
        id: Option<&str>,
        json: &[u8],
    ) -> Result<BusToken, HubError> {
        self.with_hub(now, |hub| hub.submit(now, None, ch, id, json))
    }

    /// Part of every routing pass (`route_hub_outputs`): the hub's requests into the bus, the bus's answers into
    /// the hub. Returns whether anything moved (the hub may have new output).
    pub(super) fn drive_bus(&mut self, now: Instant) -> bool {
        let Some(bus) = self.bus.as_mut() else { return false };
        let mut moved = false;
        while let Some(action) = self.hub.poll_bus() {
            bus.execute(now, action);
            moved = true;
        }
        while let Some(event) = bus.poll_event() {
            event.apply(&mut self.hub, now);
            moved = true;
        }
        moved
    }

    /// The bus's part of [`handle_timeout`](Self::handle_timeout).
    pub(super) fn bus_timeout(&mut self, now: Instant) {
        if let Some(bus) = self.bus.as_mut()
            && bus.poll_timeout().is_some_and(|d| d <= now)
        {
            bus.handle_timeout(now);
        }
    }

    /// The bus's part of [`poll_timeout`](Self::poll_timeout).
    pub(super) fn bus_deadline(&self) -> Option<Instant> {
        self.bus.as_ref().and_then(RedisBus::poll_timeout)
    }

    /// Runs a socket input on the bus, then what it set in motion.
    fn bus_input(&mut self, now: Instant, f: impl FnOnce(&mut RedisBus, Instant)) {
        if let Some(bus) = self.bus.as_mut() {
            f(bus, now);
            self.route_hub_outputs(now);
        }
    }
}

/// The bus's sockets (none without a bus), for the adapter's outbound-socket driver: see
/// [`Server::with_redis`].
impl Outbound for Server {
    fn handle_connected(&mut self, now: Instant, sock: SockId) {
        self.bus_input(now, |bus, now| bus.handle_connected(now, sock));
    }

    fn handle_read(&mut self, now: Instant, sock: SockId, data: &[u8]) {
        self.bus_input(now, |bus, now| bus.handle_read(now, sock, data));
    }

    fn handle_eof(&mut self, now: Instant, sock: SockId) {
        self.bus_input(now, |bus, now| bus.handle_eof(now, sock));
    }

    fn handle_error(&mut self, now: Instant, sock: SockId) {
        self.bus_input(now, |bus, now| bus.handle_error(now, sock));
    }

    /// The whole server's: [`Server::handle_timeout`].
    fn handle_timeout(&mut self, now: Instant) {
        Server::handle_timeout(self, now);
    }

    fn poll_action(&mut self) -> Option<SocketAction> {
        self.bus.as_mut()?.poll_action()
    }

    fn poll_transmit(&mut self) -> Option<(SockId, Bytes)> {
        self.bus.as_mut()?.poll_transmit()
    }

    /// The whole server's: [`Server::poll_timeout`].
    fn poll_timeout(&self) -> Option<Instant> {
        Server::poll_timeout(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::DemoAuth;
    use crate::time::Duration;

    fn bulk(s: &str) -> String {
        format!("${}\r\n{s}\r\n", s.len())
    }

    struct H {
        server: Server,
        now: Instant,
        socks: Vec<SockId>,
        closed: Vec<SockId>,
        /// What each socket was sent, as text.
        sent: Vec<(SockId, String)>,
    }

    impl H {
        fn new() -> Self {
            let now = crate::time::test_epoch();
            let server = Server::with_redis(
                ServerConfig::default(),
                DemoAuth,
                DemoAuth,
                RedisConfig::default(),
                7,
                now,
            );
            let mut h = Self { server, now, socks: vec![], closed: vec![], sent: vec![] };
            h.drain();
            h
        }

        fn drain(&mut self) {
            while let Some(a) = Outbound::poll_action(&mut self.server) {
                match a {
                    SocketAction::Connect { sock, .. } => self.socks.push(sock),
                    SocketAction::Close { sock } => self.closed.push(sock),
                }
            }
            while let Some((sock, b)) = Outbound::poll_transmit(&mut self.server) {
                self.sent.push((sock, String::from_utf8_lossy(&b).into_owned()));
            }
            while self.server.poll_event().is_some() {}
        }

        /// Feeds `input` to `sock` one byte at a time.
        fn feed(&mut self, sock: SockId, input: &str) {
            for b in input.as_bytes().chunks(1) {
                Outbound::handle_read(&mut self.server, self.now, sock, b);
            }
            self.drain();
        }

        fn sent_to(&mut self, sock: SockId) -> String {
            let (mine, rest) =
                std::mem::take(&mut self.sent).into_iter().partition(|s| s.0 == sock);
            self.sent = rest;
            mine.into_iter().map(|(_, s): (SockId, String)| s).collect()
        }

        /// Connects the last two sockets asked for and answers their `PING`s.
        fn up(&mut self) -> (SockId, SockId) {
            let [.., cmd, sub] = self.socks[..] else { panic!("no connects") };
            Outbound::handle_connected(&mut self.server, self.now, cmd);
            Outbound::handle_connected(&mut self.server, self.now, sub);
            self.drain();
            assert!(self.sent_to(cmd).contains("PING"));
            assert!(self.sent_to(sub).contains("PING"));
            self.feed(cmd, "+PONG\r\n");
            self.feed(sub, "+PONG\r\n");
            (cmd, sub)
        }
    }

    #[test]
    fn the_bus_connects_and_the_hub_learns_it() {
        let mut h = H::new();
        assert_eq!(h.socks.len(), 2, "command and pub/sub connections");
        assert!(!h.server.hub().bus_is_up());
        assert!(h.server.poll_timeout().is_some(), "the connect timeout is the server's");
        h.up();
        assert!(h.server.hub().bus_is_up());
        assert!(h.server.redis().is_some_and(RedisBus::is_up));
    }

    #[test]
    fn a_submit_goes_through_redis_and_is_answered() {
        let mut h = H::new();
        let (cmd, _) = h.up();
        let token = h.server.submit(h.now, "public:news", None, br#"{"a":1}"#).unwrap();
        h.drain();
        let sent = h.sent_to(cmd);
        assert!(sent.contains("EVALSHA") && sent.contains("tw:public:news:log"), "{sent}");
        h.feed(cmd, &bulk("e1:1"));
        let answered = h.server.take_submitted(token);
        assert!(matches!(answered, Some(Ok(p)) if p.to_string() == "e1:1"), "{answered:?}");
        assert_eq!(h.server.take_submitted(token), None, "given once");
        assert_eq!(
            h.server.submit(h.now, "public:news", None, b"not json"),
            Err(HubError::BadJson)
        );
    }

    #[test]
    fn answers_wait_for_their_callers_past_max_events_and_forgotten_ones_are_discarded() {
        let cfg = ServerConfig { max_events: 2, ..ServerConfig::default() };
        let now = crate::time::test_epoch();
        let server = Server::with_redis(cfg, DemoAuth, DemoAuth, RedisConfig::default(), 7, now);
        let mut h = H { server, now, socks: vec![], closed: vec![], sent: vec![] };
        h.drain();
        let (cmd, _) = h.up();
        let tokens: Vec<_> = (0..5)
            .map(|i| h.server.submit(h.now, "public:news", None, format!("{i}").as_bytes()))
            .collect::<Result<_, _>>()
            .unwrap();
        h.server.forget_submitted(tokens[1]);
        h.drain();
        let replies: String = (1..=5).map(|off| bulk(&format!("e1:{off}"))).collect();
        h.feed(cmd, &replies);
        // Five answers, more than `max_events`: every waiting caller still gets its own.
        for (i, &token) in tokens.iter().enumerate() {
            let answer = h.server.take_submitted(token);
            if i == 1 {
                assert_eq!(answer, None, "forgotten: discarded on arrival");
            } else {
                let want = format!("e1:{}", i + 1);
                assert!(matches!(&answer, Some(Ok(p)) if p.to_string() == want), "{answer:?}");
            }
        }
    }

    #[test]
    fn a_broken_socket_takes_the_bus_down_and_the_server_timer_reconnects() {
        let mut h = H::new();
        let (cmd, sub) = h.up();
        Outbound::handle_eof(&mut h.server, h.now, cmd);
        h.drain();
        assert!(!h.server.hub().bus_is_up());
        assert_eq!(h.closed, [sub]);
        assert_eq!(h.server.submit(h.now, "public:news", None, b"1"), Err(HubError::Unavailable));
        let at = h.server.poll_timeout().expect("a reconnection deadline");
        h.socks.clear();
        h.now = at + Duration::from_millis(1);
        h.server.handle_timeout(h.now);
        h.drain();
        assert_eq!(h.socks.len(), 2, "a new attempt");
        h.up();
        assert!(h.server.hub().bus_is_up());
    }

    #[test]
    fn without_redis_there_are_no_sockets() {
        let mut s = Server::new(ServerConfig::default(), DemoAuth, DemoAuth, 7);
        let now = crate::time::test_epoch();
        assert!(Outbound::poll_action(&mut s).is_none());
        Outbound::handle_read(&mut s, now, SockId(0), b"+PONG\r\n");
        assert!(Outbound::poll_transmit(&mut s).is_none());
        assert_eq!(s.submit(now, "public:a", None, b"1"), Err(HubError::Unavailable));
    }
}
