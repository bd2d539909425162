//! The routes of a [`SimServer`]: what a request head turns its connection into.

use bytes::Bytes;

use super::{Conn, Proto, SimServer};
use crate::http::Request;
use crate::hub::{ConnId, DemoAuth, Principal, Transport};
use crate::machine::Machine;
use crate::poll::{Poll, PollRequest};
use crate::replay::{Epoch, Position};
use crate::sse::SseStream;
use crate::testing::net::{LinkId, Net};
use crate::time::Instant;
use crate::ws::WsConnection;

/// A position no log ever has (the hub never draws epoch 0): resuming from it is "gone".
const NOWHERE: Position = Position { epoch: Epoch(0), offset: 0 };

impl SimServer {
    /// Routes a complete request head; `rest` is what followed it.
    pub(super) fn route(
        &mut self,
        now: Instant,
        net: &mut Net,
        link: LinkId,
        req: Request,
        rest: &[u8],
    ) {
        let path = req.path_only().to_owned();
        let get = req.method() == "GET";
        let principal = DemoAuth::authenticate(req.token().as_deref());
        match path.as_str() {
            "/ws" if self.block_ws => self.respond(link, 502, b"WebSocket blocked\n"),
            "/ws" if req.is_websocket_upgrade() => {
                let mut cfg = self.cfg.ws.clone();
                self.rng.fill(&mut cfg.rng_seed);
                let mut ws = WsConnection::server_for(cfg, now, req);
                if !rest.is_empty() {
                    ws.handle_read(now, rest);
                }
                self.set_proto(
                    link,
                    Proto::Ws { ws: Box::new(ws), hub: None, principal, stash: None },
                );
                self.ws_events(now, link);
            }
            "/ws" => self.respond(link, 426, b"WebSocket only\n"),
            "/events" | "/poll" if !get => self.respond(link, 405, b"GET only\n"),
            "/events" | "/poll" | "/api/publish" if principal.is_none() => {
                self.respond(link, 401, b"bad token\n");
            }
            "/events" => {
                if let Some(p) = principal {
                    self.start_sse(now, link, &req, p);
                }
            }
            "/poll" => {
                if let Some(p) = principal {
                    self.start_poll(now, net, link, &req, &p);
                }
            }
            "/api/publish" if req.method() != "POST" => self.respond(link, 405, b"POST only\n"),
            "/api/publish" => {
                let Some(p) = principal else { return };
                let Some(ch) = req.query_param("ch").filter(|c| !c.is_empty()) else {
                    return self.respond(link, 400, b"missing ch parameter\n");
                };
                let need = match req.content_length() {
                    Ok(Some(n)) => usize::try_from(n).unwrap_or(usize::MAX),
                    Ok(None) => 0,
                    Err(e) => return self.respond(link, e.status(), b"bad length\n"),
                };
                if need > self.cfg.max_publish_body {
                    return self.respond(link, 413, b"body too large\n");
                }
                let id = req.query_param("id").filter(|i| !i.is_empty());
                let body = Vec::with_capacity(need);
                self.set_proto(link, Proto::Body { principal: p, ch, id, body, need });
                self.body(now, link, rest);
            }
            _ => self.respond(link, 404, b"not found\n"),
        }
    }

    fn set_proto(&mut self, link: LinkId, proto: Proto) {
        if let Some(c) = self.conns.get_mut(&link) {
            c.proto = proto;
        }
    }

    /// Queues a complete response; the connection closes after it.
    pub(super) fn respond(&mut self, link: LinkId, status: u16, body: &[u8]) {
        self.respond_with(link, status, &[], body);
    }

    fn respond_with(&mut self, link: LinkId, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        if status >= 400 {
            self.stats.refused += 1;
        }
        let bytes = crate::http::response(status, headers, body).unwrap_or_default();
        self.send_and_close(link, bytes);
    }

    fn send_and_close(&mut self, link: LinkId, bytes: Bytes) {
        self.touched.push(link);
        if let Some(c) = self.conns.get_mut(&link) {
            c.proto = Proto::Done;
            c.out.push_back(bytes);
            c.shutdown = true;
        }
    }

    /// Collects a publish body; answers once it is complete.
    pub(super) fn body(&mut self, now: Instant, link: LinkId, data: &[u8]) {
        let Some(Conn { proto: Proto::Body { principal, ch, id, body, need }, .. }) =
            self.conns.get_mut(&link)
        else {
            return;
        };
        let take = data.len().min(need.saturating_sub(body.len()));
        body.extend_from_slice(&data[..take]);
        if body.len() < *need {
            return;
        }
        let (principal, ch, id, body) =
            (principal.clone(), ch.clone(), id.clone(), std::mem::take(body));
        self.stats.publishes += 1;
        match self.hub.publish_as(now, &principal, &ch, id.as_deref(), &body) {
            Ok(pos) => {
                let reply = format!("{{\"ep\":\"{}\",\"off\":{}}}", pos.epoch, pos.offset);
                let h = [("Content-Type", "application/json")];
                self.respond_with(link, 200, &h, reply.as_bytes());
            }
            Err(e) => {
                let status = match e {
                    crate::hub::HubError::Forbidden => 403,
                    crate::hub::HubError::TooManyChannels | crate::hub::HubError::ChannelLimit => {
                        503
                    }
                    _ => 400,
                };
                self.respond(link, status, e.to_string().as_bytes());
            }
        }
    }

    fn start_sse(&mut self, now: Instant, link: LinkId, req: &Request, principal: Principal) {
        let Some(ch) = req.query_param("ch").filter(|c| !c.is_empty()) else {
            return self.respond(link, 400, b"missing ch parameter\n");
        };
        let from = req
            .last_event_id()
            .map(str::to_owned)
            .or_else(|| req.query_param("pos").filter(|p| !p.is_empty()))
            .map(|p| p.parse::<Position>().unwrap_or(NOWHERE));
        let id = self.hub.connect(now, Transport::Sse, principal);
        if let Err(e) = self.hub.subscribe(now, id, &ch, from) {
            self.hub.disconnect(now, id);
            let status = if e == crate::hub::HubError::Forbidden { 403 } else { 400 };
            return self.respond(link, status, e.to_string().as_bytes());
        }
        let Ok(sse) = SseStream::new(self.cfg.sse, now, &[]) else {
            self.hub.disconnect(now, id);
            return self.respond(link, 500, b"bad header\n");
        };
        self.stats.sse_started += 1;
        self.by_hub.insert(id, link);
        self.set_proto(link, Proto::Sse { sse: Box::new(sse), hub: Some(id) });
        self.touched.push(link);
    }

    /// The kept polling connection of (principal, channel), or a new one joined to it.
    fn poll_conn(
        &mut self,
        now: Instant,
        principal: &Principal,
        ch: &str,
    ) -> Result<ConnId, crate::hub::HubError> {
        let key = (principal.clone(), ch.to_owned());
        if let Some(&id) = self.poll_clients.get(&key) {
            if self.hub.channels_of(id).any(|c| c == ch) {
                self.hub.touch(now, id);
                return Ok(id);
            }
            self.poll_clients.remove(&key);
            self.poll_keys.remove(&id);
            self.hub.disconnect(now, id);
        }
        let id = self.hub.connect(now, Transport::Poll, principal.clone());
        if let Err(e) = self.hub.subscribe(now, id, ch, None) {
            self.hub.disconnect(now, id);
            return Err(e);
        }
        self.poll_keys.insert(id, key.clone());
        self.poll_clients.insert(key, id);
        Ok(id)
    }

    fn start_poll(
        &mut self,
        now: Instant,
        net: &mut Net,
        link: LinkId,
        req: &Request,
        principal: &Principal,
    ) {
        let preq = match PollRequest::from_request(req) {
            Ok(p) => p,
            Err(e) => return self.respond(link, e.status(), e.to_string().as_bytes()),
        };
        let hub = match self.poll_conn(now, principal, &preq.channel) {
            Ok(id) => id,
            Err(e) => {
                let status = if e == crate::hub::HubError::Forbidden { 403 } else { 503 };
                return self.respond(link, status, e.to_string().as_bytes());
            }
        };
        let poll = Poll::new(self.cfg.poll, now, preq);
        self.set_proto(link, Proto::Poll { poll: Box::new(poll), hub });
        self.recheck_poll(now, net, link);
    }

    /// Answers a poll if it can be answered now; holds it otherwise.
    pub(super) fn recheck_poll(&mut self, now: Instant, net: &mut Net, link: LinkId) {
        let Some(Conn { proto: Proto::Poll { poll, hub }, .. }) = self.conns.get_mut(&link) else {
            return;
        };
        let hub = *hub;
        let ch = poll.request().channel.clone();
        let answer = match self.hub.log(&ch) {
            Some(log) => poll.check(now, log),
            None => {
                return self.respond(link, 503, b"channel unavailable\n");
            }
        };
        self.answer_poll(now, net, link, hub, answer);
    }

    pub(super) fn answer_poll(
        &mut self,
        now: Instant,
        _net: &mut Net,
        link: LinkId,
        hub: ConnId,
        answer: Option<Bytes>,
    ) {
        self.hub.touch(now, hub);
        self.touched.push(link);
        match answer {
            Some(bytes) => {
                self.stats.polls += 1;
                self.send_and_close(link, bytes);
            }
            None => {
                let Some(Conn { proto: Proto::Poll { poll, .. }, .. }) = self.conns.get(&link)
                else {
                    return;
                };
                let ch = poll.request().channel.clone();
                let held = self.held.entry(ch).or_default();
                if !held.contains(&link) {
                    held.push(link);
                }
            }
        }
    }
}
