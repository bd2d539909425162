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
    use crate::hub::{DemoAuth, HubEvent, JoinDecision, JoinId, PublishDecision, PublishId};
    use crate::server::{ConnHandle, Credential, ServerEvent, Verdict};
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
        /// The server's events, in order.
        events: Vec<ServerEvent>,
    }

    impl H {
        fn new() -> Self {
            Self::with(ServerConfig::default(), DemoAuth)
        }

        fn with(cfg: ServerConfig, authz: impl Authorize + Send + 'static) -> Self {
            Self::authenticating(cfg, DemoAuth, authz)
        }

        fn authenticating(
            cfg: ServerConfig,
            authn: impl Authenticate + Send + 'static,
            authz: impl Authorize + Send + 'static,
        ) -> Self {
            let now = crate::time::test_epoch();
            let server = Server::with_redis(cfg, authn, authz, RedisConfig::default(), 7, now);
            let mut h =
                Self { server, now, socks: vec![], closed: vec![], sent: vec![], events: vec![] };
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
            while let Some(ev) = self.server.poll_event() {
                self.events.push(ev);
            }
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
        let mut h = H::with(cfg, DemoAuth);
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

    // -----------------------------------------------------------------------------------
    // A client's HTTP publish and deferred SSE and poll joins, on Redis

    /// A RESP array of bulk strings.
    fn arr(items: &[&str]) -> String {
        items.iter().fold(format!("*{}\r\n", items.len()), |s, i| s + &bulk(i))
    }

    /// Redis's answer to the history script: the epoch, the head and `(offset, data)`s.
    fn history(epoch: &str, head: u64, entries: &[(u64, &str)]) -> String {
        let flat: Vec<String> =
            entries.iter().flat_map(|(o, d)| [o.to_string(), (*d).to_owned()]).collect();
        let flat: Vec<&str> = flat.iter().map(String::as_str).collect();
        format!("*3\r\n{}{}{}", bulk(epoch), bulk(&head.to_string()), arr(&flat))
    }

    /// The pub/sub connection's confirmation of `SUBSCRIBE key`.
    fn subscribed(key: &str) -> String {
        format!("*3\r\n$9\r\nsubscribe\r\n{}:1\r\n", bulk(key))
    }

    impl H {
        fn request(&mut self, conn: u64, head: &str) {
            self.server.handle_accept(self.now, ConnHandle(conn));
            self.server.handle_read(self.now, ConnHandle(conn), head.as_bytes());
            self.drain();
        }

        fn post(&mut self, conn: u64, query: &str, body: &str) {
            let len = body.len();
            let head = format!(
                "POST /api/publish?{query} HTTP/1.1\r\nContent-Length: {len}\r\n\r\n{body}"
            );
            self.request(conn, &head);
        }

        /// POSTs `(conn, query, body)`, checks that nothing is answered before Redis and
        /// that the script call holds `part`, answers it at offset `off` of epoch `e1` and
        /// checks the `200` with that position.
        fn post_through_redis(
            &mut self,
            cmd: SockId,
            (conn, q, body): (u64, &str, &str),
            part: &str,
            off: u64,
        ) {
            self.post(conn, q, body);
            assert_eq!(self.response(conn), "", "no answer before Redis's");
            let sent = self.sent_to(cmd);
            assert!(sent.contains("EVALSHA") && sent.contains(part), "{sent:?}");
            self.feed(cmd, &bulk(&format!("e1:{off}")));
            let r = self.response(conn);
            let pos = format!(r#"{{"ep":"e1","off":{off}}}"#);
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with(&pos), "{r}");
        }

        /// What `conn` was written since the last call.
        fn response(&mut self, conn: u64) -> String {
            let mut out = Vec::new();
            while let Some(crate::Transmit::Bytes(b)) =
                self.server.poll_transmit(self.now, ConnHandle(conn))
            {
                out.extend_from_slice(&b);
            }
            String::from_utf8_lossy(&out).into_owned()
        }

        fn publish_requests(&mut self) -> Vec<(PublishId, String)> {
            std::mem::take(&mut self.events)
                .into_iter()
                .filter_map(|e| match e {
                    ServerEvent::Hub(HubEvent::PublishRequested { id, principal, .. }) => {
                        Some((id, principal.user.unwrap_or_default()))
                    }
                    _ => None,
                })
                .collect()
        }

        fn join_requests(&mut self) -> Vec<JoinId> {
            std::mem::take(&mut self.events)
                .into_iter()
                .filter_map(|e| match e {
                    ServerEvent::Hub(HubEvent::JoinRequested { id, .. }) => Some(id),
                    _ => None,
                })
                .collect()
        }

        /// Redis confirms the subscription of `key` and answers its history with `reply`.
        fn load(&mut self, (cmd, sub): (SockId, SockId), key: &str, reply: &str) {
            self.feed(sub, &subscribed(key));
            assert!(self.sent_to(cmd).contains("EVALSHA"), "the history is asked for");
            self.feed(cmd, reply);
        }

        fn later(&mut self, by: Duration) {
            self.now += by;
            self.server.handle_timeout(self.now);
            self.drain();
        }
    }

    #[test]
    fn an_http_client_publish_on_redis_is_vetted_then_answered_with_redis_position() {
        let hub = crate::hub::HubConfig {
            vet_publishes: true,
            vet_timeout: Duration::from_secs(2),
            ..crate::hub::HubConfig::default()
        };
        let mut h = H::with(ServerConfig { hub, ..ServerConfig::default() }, DemoAuth);
        let (cmd, _) = h.up();
        h.post(1, "ch=chat:a&token=user:ann&id=m1", r#"{"t":"hi"}"#);
        h.post(2, "ch=chat:a&token=user:ann&id=m1", r#"{"t":"hi"}"#); // resent
        h.post(3, "ch=chat:a&token=user:bob", r#"{"t":"spam"}"#);
        h.post(4, "ch=chat:a&token=user:cy", "1");
        assert_eq!(h.response(1), "", "held until the application decides");
        assert!(h.sent_to(cmd).is_empty(), "nothing reaches Redis before the decision");
        let asked = h.publish_requests();
        let users: Vec<&str> = asked.iter().map(|a| a.1.as_str()).collect();
        assert_eq!(users, ["ann", "bob", "cy"], "one request for ann's two");
        assert!(h.server.decide_publish(h.now, asked[0].0, PublishDecision::Accept));
        let spam = PublishDecision::Refuse { code: "spam".into() };
        assert!(h.server.decide_publish(h.now, asked[1].0, spam));
        h.drain();
        // One publish script for both waiters, with the publisher and the scoped id.
        let sent = h.sent_to(cmd);
        assert_eq!(sent.matches("EVALSHA").count(), 1, "{sent:?}");
        assert!(sent.contains("tw:chat:a:log") && sent.contains("user:ann:m1"), "{sent:?}");
        assert!(sent.contains("\u{0}3:ann{\"t\":\"hi\"}"), "{sent:?}");
        let r = h.response(3);
        assert!(r.starts_with("HTTP/1.1 403 ") && r.ends_with("spam\n"), "{r}");
        assert_eq!(h.response(1), "", "answered when Redis answers");
        h.feed(cmd, &bulk("e1:1"));
        for conn in [1, 2] {
            let r = h.response(conn);
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
            assert!(r.ends_with(r#"{"ep":"e1","off":1}"#), "{r}");
        }
        // Not decided in time.
        h.later(Duration::from_secs(2));
        let r = h.response(4);
        assert!(r.starts_with("HTTP/1.1 503 ") && r.ends_with("publish_timeout\n"), "{r}");
        assert!(h.sent_to(cmd).is_empty());
        assert!(h.server.violations().is_empty(), "{:?}", h.server.violations());
    }

    #[test]
    fn an_http_client_publish_on_redis_is_numbered_by_redis_without_vetting() {
        let mut h = H::new();
        let (cmd, _) = h.up();
        h.post_through_redis(cmd, (1, "ch=chat:a&token=user:ann&id=m1", "1"), "user:ann:m1", 7);
        // Refused by the policy, at once.
        h.post(2, "ch=public:a&token=user:ann", "1");
        assert!(h.response(2).starts_with("HTTP/1.1 403 "));
        assert!(h.sent_to(cmd).is_empty());
    }

    #[test]
    fn a_trusted_http_publish_on_redis_is_numbered_by_redis_and_answered_with_its_position() {
        // `admin` is a trusted back end; any other token a client.
        let authn = |req: &crate::http::Request| {
            let admin = req.token().as_deref() == Some("admin");
            let principal = crate::hub::Principal::anonymous();
            Verdict::Allow(Credential { trusted: admin, ..Credential::client(principal) })
        };
        let mut h = H::authenticating(ServerConfig::default(), authn, crate::hub::AllowAll);
        let (cmd, _) = h.up();
        h.post_through_redis(cmd, (1, "ch=news&token=admin&id=t1", r#"{"a":1}"#), "tw:news:log", 4);
        // The answer went to the connection, not to `take_submitted`'s queue.
        assert!(!h.server.poll_arrived());
        // The bus refuses (an error reply): 503.
        h.post(2, "ch=news&token=admin", "2");
        h.feed(cmd, "-ERR busy\r\n");
        assert!(h.response(2).starts_with("HTTP/1.1 503 "), "refused by the bus");
    }

    #[test]
    fn deferred_sse_and_poll_joins_on_redis_wait_for_the_decision_and_the_log() {
        let hub = crate::hub::HubConfig {
            join_timeout: Duration::from_secs(2),
            ..crate::hub::HubConfig::default()
        };
        let authz = crate::server::tests::LookUp;
        let mut h = H::with(ServerConfig { hub, ..ServerConfig::default() }, authz);
        let socks = h.up();
        let (_, sub) = socks;
        // SSE, allowed before the channel's log loaded: the stream opens, its first block
        // comes with the log.
        h.request(1, "GET /events?ch=private:a&token=user:ann HTTP/1.1\r\n\r\n");
        assert_eq!(h.response(1), "", "no head before the decision");
        assert!(h.sent_to(sub).contains("tw:private:a"));
        let asked = h.join_requests();
        assert!(h.server.decide_join(h.now, asked[0], JoinDecision::Allow));
        h.drain();
        let r = h.response(1);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"), "{r}");
        h.load(socks, "tw:private:a", &history("ab", 2, &[(1, "1"), (2, "2")]));
        let r = h.response(1);
        assert!(r.starts_with("id: ab:2\n\n"), "the head once loaded: {r:?}");
        h.feed(sub, &arr(&["message", "tw:private:a", "ab:3 3"]));
        let r = h.response(1);
        assert!(r.contains("id: ab:3\nevent: private:a\ndata: 3\n"), "{r:?}");

        // A poll is answered from the log once it loaded and the join was allowed, in
        // either order.
        for (conn, ch, log_first) in [(2, "private:b", true), (5, "private:e", false)] {
            h.request(conn, &format!("GET /poll?ch={ch}&pos=cd:0&token=user:ann HTTP/1.1\r\n\r\n"));
            let asked = h.join_requests();
            let key = format!("tw:{ch}");
            let reply = history("cd", 1, &[(1, "\"x\"")]);
            for step in [log_first, !log_first] {
                assert_eq!(h.response(conn), "", "waits for the log and the decision");
                if step {
                    h.load(socks, &key, &reply);
                } else {
                    assert!(h.server.decide_join(h.now, asked[0], JoinDecision::Allow));
                    h.drain();
                }
            }
            let r = h.response(conn);
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.contains(r#""data":"x""#), "{r}");
        }
        // An SSE client allowed before its log loaded goes away: nothing keeps the channel.
        h.request(6, "GET /events?ch=private:f&token=user:ann HTTP/1.1\r\n\r\n");
        let asked = h.join_requests();
        assert!(h.server.decide_join(h.now, asked[0], JoinDecision::Allow));
        h.drain();
        h.server.handle_lost(h.now, ConnHandle(6));
        h.drain();
        assert!(h.server.hub().log("private:f").is_none(), "not kept for a client that left");
        assert!(h.sent_to(sub).contains("UNSUBSCRIBE"), "no longer followed");

        // Refused while the log loads (SSE), not decided in time (a poll).
        h.request(3, "GET /events?ch=private:c&token=user:ann HTTP/1.1\r\n\r\n");
        h.request(4, "GET /poll?ch=private:d&token=user:ann HTTP/1.1\r\n\r\n");
        let asked = h.join_requests();
        assert_eq!(asked.len(), 2);
        let no = JoinDecision::Refuse { code: "not_yours".into() };
        assert!(h.server.decide_join(h.now, asked[0], no));
        h.drain();
        let r = h.response(3);
        assert!(r.starts_with("HTTP/1.1 403 ") && r.ends_with("not_yours\n"), "{r}");
        h.later(Duration::from_secs(2));
        let r = h.response(4);
        assert!(r.starts_with("HTTP/1.1 503 ") && r.ends_with("join_timeout\n"), "{r}");
        assert!(
            h.server.hub().log("private:c").is_none() && h.server.hub().log("private:d").is_none()
        );
        assert!(h.server.violations().is_empty(), "{:?}", h.server.violations());
    }
}
