//! [`SimRequest`]: one raw HTTP/1.1 exchange over a simulated link, the way a test's raw
//! client (or `curl`) makes it over a socket.
//!
//! The request's bytes are whatever the test wrote (head and body), written once the link
//! is up. The response head is parsed with [`ResponseParser`]; the body is read by
//! `Content-Length`, or until the server closes. Once the answer is whole the client closes
//! its half, so a keep-alive server sees the end of the connection. A streaming answer (an
//! event stream) never ends by itself: its head and the body so far are readable all along.

use bytes::Bytes;

use super::net::{Delivery, LinkId, Net, NetEvent, Side};
use crate::http::{Response, ResponseParser};

/// The longest response head a [`SimRequest`] reads.
const MAX_HEAD: usize = 16 << 10;

/// One HTTP/1.1 request from a client node's host and its answer. See the
/// [module docs](self).
///
/// - Input: [`handle_net`](Self::handle_net) (the driver's).
/// - Getters: [`status`](Self::status), [`response`](Self::response), [`body`](Self::body),
///   [`is_done`](Self::is_done), [`was_reset`](Self::was_reset).
#[derive(Debug)]
pub struct SimRequest {
    client: usize,
    link: LinkId,
    /// The bytes to write once connected (taken then).
    request: Option<Bytes>,
    parser: ResponseParser,
    /// What arrived before the head was whole.
    head: Vec<u8>,
    response: Option<Response>,
    body: Vec<u8>,
    done: bool,
    reset: bool,
}

impl SimRequest {
    /// Client node `client` opens a connection to server node `server` to send `request`
    /// (a whole HTTP/1.1 request).
    pub(crate) fn open(net: &mut Net, client: usize, server: usize, request: Bytes) -> Self {
        let link = net.connect(client, server);
        Self {
            client,
            link,
            request: Some(request),
            parser: ResponseParser::new(MAX_HEAD),
            head: Vec::new(),
            response: None,
            body: Vec::new(),
            done: false,
            reset: false,
        }
    }

    /// The client node that sent it.
    #[must_use]
    pub fn client(&self) -> usize {
        self.client
    }

    /// Its connection.
    #[must_use]
    pub fn link(&self) -> LinkId {
        self.link
    }

    /// The answer's status, once its head arrived.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().map(Response::status)
    }

    /// The answer's head, once it arrived.
    #[must_use]
    pub fn response(&self) -> Option<&Response> {
        self.response.as_ref()
    }

    /// The answer's body so far.
    #[must_use]
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Whether the exchange is over: the whole answer arrived, the server closed, the
    /// connection was reset or refused, or the answer was not HTTP.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the connection was reset (or refused) before the answer was whole.
    #[must_use]
    pub fn was_reset(&self) -> bool {
        self.reset
    }

    /// A segment for this request's link arrived.
    pub fn handle_net(&mut self, net: &mut Net, d: Delivery) {
        if self.done {
            return;
        }
        match d.event {
            NetEvent::Connected => {
                if let Some(r) = self.request.take() {
                    net.write(self.link, Side::Client, r);
                }
            }
            NetEvent::Data(b) => self.read(net, &b),
            NetEvent::Eof => self.finish(net),
            NetEvent::Reset => {
                self.reset = true;
                self.done = true;
            }
            NetEvent::Accepted => {}
        }
    }

    fn read(&mut self, net: &mut Net, data: &[u8]) {
        if self.response.is_some() {
            self.body.extend_from_slice(data);
        } else {
            self.head.extend_from_slice(data);
            match self.parser.parse(&self.head) {
                Ok(Some((resp, len))) => {
                    self.body = self.head.split_off(len);
                    self.head = Vec::new();
                    self.response = Some(resp);
                }
                Ok(None) => return,
                Err(_) => return self.finish(net),
            }
        }
        let Some(resp) = &self.response else { return };
        let no_body = matches!(resp.status(), 100..=199 | 204 | 304);
        let length = resp.header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
        if no_body || length.is_some_and(|n| self.body.len() >= n) {
            self.finish(net);
        }
    }

    /// The exchange is over: the client closes its half.
    fn finish(&mut self, net: &mut Net) {
        self.done = true;
        net.close(self.link, Side::Client);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NetConfig, ServerConfig, Sim};
    use crate::client::SessionConfig;
    use crate::time::Duration;

    /// Sends `raw` from a client of a fresh simulated server; the finished exchange's
    /// status and body.
    fn exchange(raw: &str) -> (Option<u16>, String, bool) {
        let mut sim = Sim::new(3, NetConfig::default());
        let server = sim.add_server(ServerConfig::default());
        let client = sim.add_client(server, SessionConfig::new("sim", 80), |_, _| {});
        let r = sim.send_request(client, raw.to_owned());
        sim.run_for(Duration::from_secs(2));
        let r = sim.request(r);
        (r.status(), String::from_utf8_lossy(r.body()).into_owned(), r.is_done())
    }

    #[test]
    fn a_refused_upgrade_and_a_publish_over_http() {
        let (status, _, done) = exchange("GET /ws HTTP/1.1\r\nHost: sim\r\n\r\n");
        assert_eq!((status, done), (Some(426), true));
        let body = r#"{"i":1}"#;
        let (status, answer, done) = exchange(&format!(
            "POST /api/publish?ch=chat:x&token=user%3Aann HTTP/1.1\r\nHost: sim\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        assert_eq!((status, done), (Some(200), true), "{answer}");
        assert!(answer.contains(r#""off":1"#), "{answer}");
    }
}
