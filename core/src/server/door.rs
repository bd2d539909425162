//! The second way in: a request whose head a host server (hyper, axum) already parsed.
//!
//! A host that owns the HTTP/1.1 parsing hands the server the method, the target and the
//! headers ([`ParsedHead`]) with [`Server::handle_parsed`], instead of the raw head; the
//! server checks and routes it exactly as a head it read itself (same limits, same
//! refusals, same routes, same authentication), so an integration needs no second
//! router. From then on the connection is an ordinary one: the body, or after an upgrade
//! the connection's bytes, go to [`Server::handle_read`], and
//! [`Server::poll_transmit`] gives HTTP/1.1 bytes. A host that must build its own response
//! object reads the status and headers of the first transmit with
//! [`ResponseParser`](crate::http::ResponseParser) and writes the rest as the body (for a
//! `101`, as the upgraded connection's bytes).

use super::{ConnHandle, Server};
use crate::time::Instant;

/// A request head another HTTP implementation parsed.
#[derive(Clone, Copy, Debug)]
pub struct ParsedHead<'a> {
    /// The method (`GET`, `POST`, ...).
    pub method: &'a str,
    /// The request target: path and query (`/events?ch=news`).
    pub target: &'a str,
    /// The header fields in the order received (names in any case).
    pub headers: &'a [(&'a str, &'a [u8])],
}

impl ParsedHead<'_> {
    /// The head in HTTP/1.1 form, or `None` when a part cannot be written into one (a
    /// line break, a NUL, an empty method or target).
    fn to_wire(self) -> Option<Vec<u8>> {
        let bad = |b: &[u8]| b.iter().any(|&c| matches!(c, b'\r' | b'\n' | 0));
        if self.method.is_empty() || self.target.is_empty() {
            return None;
        }
        if bad(self.method.as_bytes()) || bad(self.target.as_bytes()) || self.method.contains(' ') {
            return None;
        }
        let mut head = Vec::with_capacity(64 + self.target.len());
        head.extend_from_slice(self.method.as_bytes());
        head.push(b' ');
        head.extend_from_slice(self.target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in self.headers {
            if bad(name.as_bytes()) || bad(value) {
                return None;
            }
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        Some(head)
    }
}

impl Server {
    /// A new connection whose request head the host already parsed; `rest` is what the
    /// host read past the head (the start of a body). Routed as
    /// [`handle_accept`](Self::handle_accept) followed by [`handle_read`](Self::handle_read)
    /// of the same head would be: a head that cannot be an HTTP/1.1 head gets `400`, one
    /// over [`ServerConfig::max_head`](super::ServerConfig::max_head) gets `431`.
    pub fn handle_parsed(
        &mut self,
        now: Instant,
        conn: ConnHandle,
        head: ParsedHead<'_>,
        rest: &[u8],
    ) {
        self.handle_accept(now, conn);
        match head.to_wire() {
            Some(wire) => {
                self.handle_read(now, conn, &wire);
                if !rest.is_empty() {
                    self.handle_read(now, conn, rest);
                }
            }
            None => {
                self.respond(conn, 400, &[], b"malformed head\n");
                self.route_hub_outputs(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::DemoAuth;
    use crate::machine::Transmit;
    use crate::server::ServerConfig;

    fn answer(s: &mut Server, now: Instant, conn: ConnHandle) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(Transmit::Bytes(b)) = s.poll_transmit(now, conn) {
            out.extend_from_slice(&b);
        }
        out
    }

    #[test]
    fn a_parsed_head_is_served_like_a_read_one() {
        let now = crate::time::test_epoch();
        let headers: &[(&str, &[u8])] = &[("Host", b"x"), ("Content-Length", b"7")];
        let cases = [
            ("GET", "/poll?ch=public:a"),
            ("POST", "/api/publish?ch=public:a"),
            ("POST", "/api/publish?ch=chat:a&token=user:ann"),
            ("GET", "/events?ch=secret"),
            ("GET", "/ws"),
        ];
        for (method, target) in cases {
            let raw = format!(
                "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n{{\"n\":1}}"
            );
            let mut a = Server::new(ServerConfig::default(), DemoAuth, DemoAuth, 3);
            a.handle_accept(now, ConnHandle(1));
            a.handle_read(now, ConnHandle(1), raw.as_bytes());
            let mut b = Server::new(ServerConfig::default(), DemoAuth, DemoAuth, 3);
            let head = ParsedHead { method, target, headers };
            b.handle_parsed(now, ConnHandle(1), head, b"{\"n\":");
            b.handle_read(now, ConnHandle(1), b"1}");
            let (x, y) = (answer(&mut a, now, ConnHandle(1)), answer(&mut b, now, ConnHandle(1)));
            assert!(!x.is_empty());
            assert_eq!(String::from_utf8_lossy(&x), String::from_utf8_lossy(&y), "{target}");
        }
    }

    #[test]
    fn a_head_that_cannot_be_written_is_400() {
        let now = crate::time::test_epoch();
        let mut s = Server::new(ServerConfig::default(), DemoAuth, DemoAuth, 3);
        let headers: &[(&str, &[u8])] = &[("X", b"a\r\nInjected: 1")];
        let head = ParsedHead { method: "GET", target: "/poll?ch=public:a", headers };
        s.handle_parsed(now, ConnHandle(1), head, b"");
        let out = answer(&mut s, now, ConnHandle(1));
        assert!(out.starts_with(b"HTTP/1.1 400 "), "{}", String::from_utf8_lossy(&out));
    }
}
