//! Vetted publishes through the [`Server`]: the hub holds a client publish
//! ([`HubConfig::vet_publishes`](crate::hub::HubConfig::vet_publishes)); the server hands
//! [`HubEvent::PublishRequested`](crate::hub::HubEvent::PublishRequested) to the
//! application as [`ServerEvent::Hub`](super::ServerEvent::Hub) on the queue of events that
//! need an answer (never dropped), and the application answers with
//! [`Server::decide_publish`]. A WebSocket `pub` is then acknowledged (or refused) on its
//! connection by the hub; an HTTP publish (`POST` on the publish route, by a credential
//! that is not trusted) is held, its connection waiting, and answered `200` with the
//! position, `403` when the application refused it, `503` when it did not decide within
//! `vet_timeout`, or the status of the hub's error (`429` past the pending bounds).
//!
//! With a bus (`Server::with_redis`) the same holds: the publish is decided before it
//! reaches Redis, and an accepted one is answered (on its WebSocket, or `200` over HTTP)
//! with the position Redis gave it, once Redis answered; `503` when the bus is down or drops
//! before answering. Without vetting, a client's HTTP publish on a bus waits for Redis's
//! answer the same way.

use super::{ConnHandle, Server};
use crate::hub::{PublishDecision, PublishId, PublishRefusal};
use crate::replay::Position;
use crate::time::Instant;

impl Server {
    /// The application's decision on a held publish
    /// ([`HubEvent::PublishRequested`](crate::hub::HubEvent::PublishRequested)); see
    /// [`Hub::decide_publish`](crate::hub::Hub::decide_publish). Returns `false` for an
    /// unknown id (decided already, timed out, or its connection left).
    pub fn decide_publish(
        &mut self,
        now: Instant,
        id: PublishId,
        decision: PublishDecision,
    ) -> bool {
        let known = self.hub.decide_publish(now, id, decision);
        self.route_hub_outputs(now);
        known
    }

    /// The hub decided a held publish that came without a hub connection: the HTTP
    /// requests waiting for it are answered.
    pub(super) fn publish_decided(
        &mut self,
        id: PublishId,
        result: &Result<Position, PublishRefusal>,
    ) {
        for conn in self.vetting.remove(&id).unwrap_or_default() {
            self.answer_publish(conn, result);
        }
    }

    fn answer_publish(&mut self, conn: ConnHandle, result: &Result<Position, PublishRefusal>) {
        match result {
            Ok(pos) => self.publish_ok(conn, *pos),
            Err(PublishRefusal::Hub(e)) => self.refuse(conn, *e),
            Err(r) => {
                let status = if matches!(r, PublishRefusal::Timeout) { 503 } else { 403 };
                let body = format!("{}\n", r.code());
                self.respond(conn, status, &[], body.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Transmit;
    use crate::hub::{DemoAuth, HubConfig, HubEvent, Principal};
    use crate::server::{Authenticate, Credential, ServerConfig, ServerEvent, Verdict};
    use crate::time::{Duration, test_epoch};

    /// `user:NAME` tokens; `admin` is trusted.
    struct Tokens;
    impl Authenticate for Tokens {
        fn authenticate(&self, req: &crate::http::Request) -> Verdict {
            match req.query_param("token").as_deref() {
                Some("admin") => {
                    Verdict::Allow(Credential { principal: Principal::anonymous(), trusted: true })
                }
                t => match DemoAuth::authenticate(t) {
                    Some(p) => Verdict::Allow(Credential::client(p)),
                    None => Verdict::Refuse(crate::server::Refusal::unauthorized()),
                },
            }
        }
    }

    fn server() -> (Server, Instant) {
        let hub = HubConfig {
            vet_publishes: true,
            vet_timeout: Duration::from_secs(5),
            max_pending_per_conn: 1,
            ..HubConfig::default()
        };
        let cfg = ServerConfig { hub, ..ServerConfig::default() };
        (Server::new(cfg, Tokens, DemoAuth, 7), test_epoch())
    }

    fn post(s: &mut Server, now: Instant, conn: u64, query: &str, body: &str) {
        let c = ConnHandle(conn);
        s.handle_accept(now, c);
        let head = format!(
            "POST /api/publish?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.handle_read(now, c, head.as_bytes());
    }

    fn response(s: &mut Server, now: Instant, conn: u64) -> String {
        let mut out = Vec::new();
        while let Some(Transmit::Bytes(b)) = s.poll_transmit(now, ConnHandle(conn)) {
            out.extend_from_slice(&b);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn requests(s: &mut Server) -> Vec<(PublishId, String)> {
        std::iter::from_fn(|| s.poll_event())
            .filter_map(|e| match e {
                ServerEvent::Hub(HubEvent::PublishRequested { id, principal, .. }) => {
                    Some((id, principal.user.unwrap_or_default()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_http_publish_waits_for_the_decision() {
        let (mut s, t0) = server();
        post(&mut s, t0, 1, "ch=chat:a&token=user:ann&id=m1", r#"{"t":"hi"}"#);
        post(&mut s, t0, 2, "ch=chat:a&token=user:ann&id=m1", r#"{"t":"hi"}"#); // resent
        post(&mut s, t0, 3, "ch=chat:a&token=user:bob", r#"{"t":"spam"}"#);
        assert_eq!(response(&mut s, t0, 1), "", "held until the application decides");
        let asked = requests(&mut s);
        assert_eq!(asked.iter().map(|a| a.1.as_str()).collect::<Vec<_>>(), ["ann", "bob"]);
        assert!(s.decide_publish(t0, asked[0].0, PublishDecision::Accept));
        assert!(s.decide_publish(t0, asked[1].0, PublishDecision::Refuse { code: "spam".into() }));
        let ep = s.hub().log("chat:a").unwrap().epoch();
        for conn in [1, 2] {
            let r = response(&mut s, t0, conn);
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
            assert!(r.ends_with(&format!(r#"{{"ep":"{ep}","off":1}}"#)), "{r}");
        }
        let r = response(&mut s, t0, 3);
        assert!(r.starts_with("HTTP/1.1 403 ") && r.ends_with("spam\n"), "{r}");
        assert_eq!(s.hub().log("chat:a").unwrap().len(), 1);
        // A trusted publish is not vetted.
        post(&mut s, t0, 4, "ch=chat:a&token=admin", "2");
        assert!(response(&mut s, t0, 4).starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(requests(&mut s).is_empty());
    }

    #[test]
    fn an_undecided_http_publish_times_out() {
        let (mut s, t0) = server();
        post(&mut s, t0, 1, "ch=chat:a&token=user:ann", "1");
        let asked = requests(&mut s);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        s.handle_timeout(t0 + Duration::from_secs(5));
        let r = response(&mut s, t0 + Duration::from_secs(5), 1);
        assert!(r.starts_with("HTTP/1.1 503 ") && r.ends_with("publish_timeout\n"), "{r}");
        assert!(!s.decide_publish(t0, asked[0].0, PublishDecision::Accept));
    }

    #[test]
    fn a_websocket_pub_is_vetted_and_the_request_is_never_dropped() {
        let (mut s, t0) = server();
        let c = ConnHandle(9);
        s.handle_accept(t0, c);
        let head = "GET /ws?token=user:ann HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                    Sec-WebSocket-Version: 13\r\n\r\n";
        s.handle_read(t0, c, head.as_bytes());
        assert!(response(&mut s, t0, 9).starts_with("HTTP/1.1 101 "));
        // A masked text frame: {"op":"pub",...}.
        let text = br#"{"op":"pub","ch":"chat:a","data":1,"ref":4}"#;
        let mut frame = vec![0x81, 0x80 | u8::try_from(text.len()).unwrap(), 0, 0, 0, 0];
        frame.extend_from_slice(text);
        // Many informational events first: the request still comes out.
        for i in 0..(s.config().max_events + 10) {
            s.with_hub(t0, |h| h.publish_json(t0, &format!("public:{i}"), b"1").unwrap());
        }
        s.handle_read(t0, c, &frame);
        let asked = requests(&mut s);
        assert_eq!(asked.len(), 1);
        s.decide_publish(t0, asked[0].0, PublishDecision::Accept);
        let out = response(&mut s, t0, 9);
        assert!(out.contains(r#""op":"ack","ref":4"#), "{out}");
        // Over the per-connection bound: refused at once.
        s.handle_read(t0, c, &frame);
        s.handle_read(t0, c, &frame);
        assert!(response(&mut s, t0, 9).contains("too_many_pending"));
    }
}
