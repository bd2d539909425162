//! The routes of a [`Server`]: what a request head turns its connection into.

use std::sync::Arc;

use bytes::Bytes;

use super::auth::origin_allowed;
use super::join::AfterJoin;
use super::route::Endpoint;
use super::{ConnHandle, Credential, Proto, Server, ServerEvent, Verdict, pending, status_of};
use crate::http::{BodyReader, Request};
use crate::hub::{ConnId, HubError, Principal, PublishRequest, Transport};
use crate::machine::Machine;
use crate::poll::{Poll, PollRequest};
use crate::replay::{Epoch, Position};
use crate::sse::SseStream;
use crate::time::Instant;
use crate::ws::WsConnection;

/// A position no log ever has (the hub never draws epoch 0): resuming from it is "gone".
const NOWHERE: Position = Position { epoch: Epoch(0), offset: 0 };

impl Server {
    /// Routes a complete request head; `rest` is what followed it.
    pub(super) fn route(&mut self, now: Instant, conn: ConnHandle, req: Request, rest: &[u8]) {
        if self.draining.is_some() {
            return self.respond(conn, 503, &[("Retry-After", "5")], b"shutting down\n");
        }
        let endpoint = self.cfg.routes.endpoint(&req);
        let get = req.method() == "GET";
        match endpoint {
            Endpoint::App => return self.hand_to_app(now, conn, req, rest),
            #[cfg(feature = "testing")]
            Endpoint::Ws if self.block_ws => {
                return self.respond(conn, 502, &[], b"WebSocket blocked\n");
            }
            Endpoint::Ws if !get || !req.is_websocket_upgrade() => {
                return self.respond(conn, 426, &[("Upgrade", "websocket")], b"WebSocket only\n");
            }
            Endpoint::Sse(_) | Endpoint::Poll(_) if !get => {
                return self.respond(conn, 405, &[("Allow", "GET")], b"GET only\n");
            }
            Endpoint::Publish(_) if req.method() != "POST" => {
                return self.respond(conn, 405, &[("Allow", "POST")], b"POST only\n");
            }
            _ => {}
        }
        if !matches!(endpoint, Endpoint::Poll(_))
            && !origin_allowed(&req, &self.cfg.allowed_origins)
        {
            return self.respond(conn, 403, &[], b"origin not allowed\n");
        }
        let peer = self.conns.get(&conn).and_then(|c| c.peer);
        let verdict = self.auth.authenticate_from(&req, peer);
        self.apply_verdict(now, conn, req, rest, verdict);
    }

    /// Hands a request for a path that is not the hub's to the application.
    fn hand_to_app(&mut self, now: Instant, conn: ConnHandle, req: Request, rest: &[u8]) {
        if req.is_websocket_upgrade() {
            let cfg = self.new_ws_config();
            let mut ws = WsConnection::server_for(cfg, now, req);
            if !rest.is_empty() {
                ws.handle_read(now, rest);
            }
            self.hand_over(conn);
            self.events.push_handover(ServerEvent::Upgrade { conn, ws: Box::new(ws) });
        } else {
            self.keep_for_app(now, conn, req, rest);
        }
    }

    pub(super) fn apply_verdict(
        &mut self,
        now: Instant,
        conn: ConnHandle,
        req: Request,
        rest: &[u8],
        verdict: Verdict,
    ) {
        match verdict {
            Verdict::Allow(cred) => self.serve(now, conn, req, rest, cred),
            Verdict::Refuse(r) => {
                let h: &[(&str, &str)] =
                    if r.status == 401 { &[("WWW-Authenticate", "Bearer")] } else { &[] };
                let body = format!("{}\n", r.reason);
                self.respond(conn, r.status, h, body.as_bytes());
            }
            Verdict::Defer => {
                let request = req.clone();
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.proto = Proto::Deciding { request: req, rest: pending(rest) };
                }
                self.events.push_decision(ServerEvent::Authenticate { conn, request });
            }
        }
    }

    /// Serves an authenticated request of a hub endpoint.
    fn serve(
        &mut self,
        now: Instant,
        conn: ConnHandle,
        req: Request,
        rest: &[u8],
        cred: Credential,
    ) {
        let channel = |from_path: Option<String>| {
            from_path.or_else(|| req.query_param("ch")).filter(|c| !c.is_empty())
        };
        match self.cfg.routes.endpoint(&req) {
            Endpoint::Ws => self.start_ws(now, conn, req, rest, cred.principal),
            Endpoint::Sse(ch) => match channel(ch) {
                Some(ch) => self.start_sse(now, conn, &req, &ch, cred.principal),
                None => self.respond(conn, 400, &[], b"missing ch parameter\n"),
            },
            Endpoint::Poll(ch) => match channel(ch) {
                Some(ch) => self.start_poll(now, conn, &req, ch, &cred.principal),
                None => self.respond(conn, 400, &[], b"missing ch parameter\n"),
            },
            Endpoint::Publish(ch) => match channel(ch) {
                Some(ch) => self.start_publish(now, conn, &req, rest, ch, cred),
                None => self.respond(conn, 400, &[], b"missing ch parameter\n"),
            },
            Endpoint::App => self.hand_to_app(now, conn, req, rest),
        }
    }

    pub(super) fn refuse(&mut self, conn: ConnHandle, e: HubError) {
        let body = format!("{e}\n");
        self.respond(conn, status_of(e), &[], body.as_bytes());
    }

    fn start_ws(
        &mut self,
        now: Instant,
        conn: ConnHandle,
        req: Request,
        rest: &[u8],
        principal: Principal,
    ) {
        let cfg = self.new_ws_config();
        let mut ws = WsConnection::server_for(cfg, now, req);
        let mut hub = None;
        // A valid upgrade waits in its decision step: it was authenticated, accept it.
        if ws.accept(now, None, &[]).is_ok() {
            self.stats.ws_opened += 1;
            let id = self.hub.connect(now, Transport::WebSocket, principal);
            self.by_hub.insert(id, conn);
            hub = Some(id);
        }
        if !rest.is_empty() {
            ws.handle_read(now, rest);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.proto = Proto::Ws { ws: Box::new(ws), hub, stash: None };
        }
        self.conn_events(now, conn);
    }

    fn start_sse(
        &mut self,
        now: Instant,
        conn: ConnHandle,
        req: &Request,
        ch: &str,
        principal: Principal,
    ) {
        let from = req
            .last_event_id()
            .map(str::to_owned)
            .or_else(|| req.query_param("pos").filter(|p| !p.is_empty()))
            .map(|p| p.parse::<Position>().unwrap_or(NOWHERE));
        let id = self.hub.connect(now, Transport::Sse, principal);
        match self.hub.subscribe(now, id, ch, from) {
            Err(e) => {
                self.hub.disconnect(now, id);
                return self.refuse(conn, e);
            }
            // No response head until the application decides (`join_decided`).
            Ok(sub) if sub.awaiting.is_some() => return self.await_join(conn, id, AfterJoin::Sse),
            Ok(_) => {}
        }
        self.open_sse(now, conn, id);
    }

    /// Starts the SSE response of `conn`, whose hub connection `id` joined its channel.
    pub(super) fn open_sse(&mut self, now: Instant, conn: ConnHandle, id: ConnId) {
        let extra = self.cfg.headers();
        let Ok(sse) = SseStream::new(self.cfg.sse, now, &extra) else {
            self.hub.disconnect(now, id);
            return self.respond(conn, 500, &[], b"bad header\n");
        };
        self.stats.sse_started += 1;
        self.by_hub.insert(id, conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.proto = Proto::Sse { sse: Box::new(sse), hub: Some(id) };
        }
        self.touch(conn);
    }

    /// The kept polling client of `key`, or a new one joined to its channel. `once`: a
    /// connection for this request only (the table of kept clients is full).
    fn poll_client(
        &mut self,
        now: Instant,
        principal: &Principal,
        ch: &str,
        sid: Option<Box<str>>,
    ) -> Result<(ConnId, bool), HubError> {
        let key = (principal.clone(), Arc::<str>::from(ch), sid);
        if let Some(&id) = self.poll_clients.get(&key) {
            // Kept while its join waits for the application: this poll waits for it too.
            let joining = self.hub.pending_join(id, ch).is_some();
            if joining || self.hub.channels_of(id).any(|c| c == ch) {
                self.hub.touch(now, id);
                return Ok((id, false));
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
        if self.poll_clients.len() >= self.cfg.max_poll_clients {
            return Ok((id, true));
        }
        self.poll_keys.insert(id, key.clone());
        self.poll_clients.insert(key, id);
        Ok((id, false))
    }

    fn start_poll(
        &mut self,
        now: Instant,
        conn: ConnHandle,
        req: &Request,
        ch: String,
        principal: &Principal,
    ) {
        let preq = match PollRequest::for_channel(req, ch) {
            Ok(p) => p,
            Err(e) => {
                let body = format!("{e}\n");
                return self.respond(conn, e.status(), &[], body.as_bytes());
            }
        };
        let sid = req
            .query_param("sid")
            .filter(|s| !s.is_empty() && s.len() <= self.cfg.max_sid)
            .map(String::into_boxed_str);
        let (hub, once) = match self.poll_client(now, principal, &preq.channel, sid) {
            Ok(id) => id,
            Err(e) => return self.refuse(conn, e),
        };
        let joining = self.hub.pending_join(hub, &preq.channel).is_some();
        let poll = Poll::new(self.cfg.poll, now, preq).with_headers(&self.cfg.headers());
        if joining {
            // Answered once the application decides (`join_decided`).
            return self.await_join(conn, hub, AfterJoin::Poll { poll: Box::new(poll), once });
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.proto = Proto::Poll { poll: Box::new(poll), hub, once };
        }
        self.recheck_poll(now, conn);
    }

    /// Answers a poll if it can be answered now; holds it otherwise.
    pub(super) fn recheck_poll(&mut self, now: Instant, conn: ConnHandle) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let Proto::Poll { poll, hub, .. } = &mut c.proto else { return };
        let hub = *hub;
        let ch = poll.request().channel.clone();
        self.hub.touch(now, hub);
        // With a bus, the channel's log may still be loading: hold until it is synced.
        if !self.hub.is_synced(&ch) {
            return self.hold(conn, ch);
        }
        let answer = match self.hub.log(&ch) {
            Some(log) => poll.check(now, log),
            None => return self.respond(conn, 503, &[], b"channel unavailable\n"),
        };
        match answer {
            Some(bytes) => self.poll_answered(now, conn, bytes),
            None => self.hold(conn, ch),
        }
    }

    fn hold(&mut self, conn: ConnHandle, ch: String) {
        let held = self.held.entry(Arc::from(ch)).or_default();
        if !held.contains(&conn) {
            held.push(conn);
        }
    }

    /// A held poll is answered at once (shutdown): with what the log has, or nothing new.
    pub(super) fn answer_poll_now(&mut self, now: Instant, conn: ConnHandle) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let Proto::Poll { poll, .. } = &mut c.proto else { return };
        let at = poll.poll_timeout().map_or(now, |d| d.max(now));
        let ch = poll.request().channel.clone();
        let answer = self.hub.log(&ch).and_then(|log| poll.check(at, log));
        match answer {
            Some(bytes) => self.poll_answered(now, conn, bytes),
            None => self.respond(conn, 503, &[("Retry-After", "5")], b"shutting down\n"),
        }
    }

    pub(super) fn poll_answered(&mut self, now: Instant, conn: ConnHandle, bytes: Bytes) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let Proto::Poll { poll, hub, once } = std::mem::replace(&mut c.proto, Proto::Done) else {
            return;
        };
        self.stats.polls += 1;
        self.unhold(&poll.request().channel, conn);
        if once {
            self.hub.disconnect(now, hub);
        } else {
            self.hub.touch(now, hub);
        }
        self.send_and_end(conn, bytes);
    }

    fn start_publish(
        &mut self,
        now: Instant,
        conn: ConnHandle,
        req: &Request,
        rest: &[u8],
        ch: String,
        cred: Credential,
    ) {
        let (max, timeout) = (self.cfg.max_publish_body, self.cfg.head_timeout);
        let reader = Box::new(BodyReader::new(now, req, max, timeout));
        let id = req.query_param("id").filter(|i| !i.is_empty());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.proto = Proto::Body { cred, ch, id, reader };
        }
        self.body(now, conn, rest);
    }

    /// Reads a publish body (any framing; `100 Continue` when asked); answers once it is
    /// complete, or why it cannot be read.
    pub(super) fn body(&mut self, now: Instant, conn: ConnHandle, data: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let Proto::Body { reader, .. } = &mut c.proto else { return };
        reader.handle_read(data);
        c.out.extend(reader.poll_transmit());
        let Some(outcome) = reader.poll_body() else { return };
        let Proto::Body { cred, ch, id, .. } = std::mem::replace(&mut c.proto, Proto::Done) else {
            return;
        };
        let body = match outcome {
            Ok(body) => body,
            Err(e) => {
                let text = format!("{e}\n");
                return match e.status() {
                    Some(status) => self.respond(conn, status, &[], text.as_bytes()),
                    None => self.end_quietly(now, conn),
                };
            }
        };
        self.stats.publishes += 1;
        if cred.trusted && self.has_bus() {
            // The bus numbers it (and dedups `id` across instances): answered when it answers.
            match self.hub.submit(now, None, &ch, id.as_deref(), &body) {
                Ok(token) => drop(self.submits.insert(token, conn)),
                Err(e) => self.refuse(conn, e),
            }
            return;
        }
        let result = if cred.trusted {
            self.trusted_publish(now, &ch, id.as_deref(), &body).map(PublishRequest::Published)
        } else {
            self.hub.request_publish(now, &cred.principal, &ch, id.as_deref(), &body)
        };
        match result {
            Ok(PublishRequest::Published(pos)) => self.publish_ok(conn, pos),
            // Held for the application, or (with a bus) waiting for the bus's answer:
            // answered by `publish_decided`.
            Ok(PublishRequest::Pending(pid)) => self.vetting.entry(pid).or_default().push(conn),
            Err(e) => self.refuse(conn, e),
        }
    }

    /// `200` with the position of a logged publish.
    pub(super) fn publish_ok(&mut self, conn: ConnHandle, pos: Position) {
        let reply = format!("{{\"ep\":\"{}\",\"off\":{}}}", pos.epoch, pos.offset);
        let mut h = vec![("Content-Type", "application/json"), ("Cache-Control", "no-store")];
        let extra = self.cfg.response_headers.clone();
        h.extend(extra.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        self.respond(conn, 200, &h, reply.as_bytes());
    }

    /// A trusted publish, deduplicated by `id` in a window of its own.
    pub(super) fn trusted_publish(
        &mut self,
        now: Instant,
        ch: &str,
        id: Option<&str>,
        json: &[u8],
    ) -> Result<Position, HubError> {
        if let Some(id) = id
            && let Some(pos) = self.trusted_ids.get(id)
        {
            return Ok(*pos);
        }
        let pos = self.hub.publish_json(now, ch, json)?;
        if let Some(id) = id {
            if self.trusted_order.len() >= self.cfg.trusted_dedup.max(1)
                && let Some(old) = self.trusted_order.pop_front()
            {
                self.trusted_ids.remove(&old);
            }
            self.trusted_ids.insert(id.into(), pos);
            self.trusted_order.push_back(id.into());
        }
        Ok(pos)
    }
}
