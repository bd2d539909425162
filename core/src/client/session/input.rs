//! Socket input: the WebSocket's events and envelope frames, and the HTTP exchanges (SSE
//! streams, polls, publishes) of the session.

use super::{ClientSession, Fail, Input, Owner, Proto, Purpose, Socket, socket_deadline};
use crate::client::http::Progress;
use crate::client::types::{ClientMsgId, Reason, SessionEvent};
use crate::envelope::{self, PollBody, ServerMessage};
use crate::machine::Machine;
use crate::policy::{RetryHint, parse_retry_after};
use crate::socket::SockId;

/// A `Retry-After` in delta-seconds. The date form needs the wall clock, which the core
/// does not have: it is ignored.
fn retry_after_secs(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    parse_retry_after(v, 0)
}
use crate::replay::Position;
use crate::sse::{SseEvent, SseParser};
use crate::time::{Duration, Instant};
use crate::ws::{CloseClass, ConnError, HandshakeError, Message, WsEvent, WsState};

impl ClientSession {
    pub(super) fn sockets_deadline(&self) -> Option<Instant> {
        self.sockets.values().filter_map(socket_deadline).min()
    }

    pub(super) fn socket_input(&mut self, now: Instant, sock: SockId, input: Input<'_>) {
        let Some(s) = self.sockets.get(&sock) else { return };
        match s.proto {
            Proto::Ws { .. } => self.ws_input(now, sock, input),
            Proto::Http(_) => self.http_input(now, sock, input),
        }
    }

    pub(super) fn ws_input(&mut self, now: Instant, sock: SockId, input: Input<'_>) {
        let Some(s) = self.sockets.get_mut(&sock) else { return };
        let Proto::Ws { conn, head, retry_after, .. } = &mut s.proto else { return };
        match input {
            Input::Read(data) => {
                if let Some(reader) = head {
                    match reader.push(data) {
                        Ok(Progress::Head) => {}
                        Ok(Progress::Body(_)) | Err(_) => {
                            *retry_after = reader
                                .head()
                                .and_then(|r| r.header("retry-after"))
                                .and_then(retry_after_secs);
                            *head = None;
                        }
                    }
                }
                conn.handle_read(now, data);
            }
            Input::Eof | Input::Error => {
                conn.handle_eof(now);
                if matches!(input, Input::Error) || s.owner == Owner::Detached {
                    // Nothing more can be written: drop it once `Closed` is out.
                    s.connected = false;
                }
            }
            Input::Timeout => conn.handle_timeout(now),
        }
        let mut events = Vec::new();
        while let Some(ev) = conn.poll_event() {
            events.push(ev);
        }
        let owner = s.owner;
        let reached = s.reached;
        let dead = !s.connected && matches!(conn.state(), WsState::Closed);
        if dead || (owner == Owner::Detached && matches!(input, Input::Eof | Input::Error)) {
            self.close_socket(sock);
        }
        for ev in events {
            self.ws_event(now, sock, owner, reached, ev);
        }
    }

    pub(super) fn ws_event(
        &mut self,
        now: Instant,
        sock: SockId,
        owner: Owner,
        reached: bool,
        ev: WsEvent,
    ) {
        let live = match owner {
            Owner::Connection(g) => self.connection.as_ref().is_some_and(|l| l.generation == g),
            Owner::Probe => self.probe == Some(sock),
            Owner::Detached => false,
        };
        if !live {
            return;
        }
        match ev {
            WsEvent::Open { .. } => {
                if let Some(Socket { proto: Proto::Ws { head, .. }, .. }) =
                    self.sockets.get_mut(&sock)
                {
                    *head = None;
                }
                if owner == Owner::Probe {
                    self.promote(now, sock);
                } else {
                    self.connection_opened(now, Reason::Connected);
                }
            }
            WsEvent::Message(Message::Text(text)) => {
                if let Ok(frame) = ServerMessage::decode(text.as_bytes()) {
                    self.server_frame(frame);
                }
            }
            WsEvent::Closed(info) => {
                let mut retry_after = None;
                if let Some(s) = self.sockets.get_mut(&sock) {
                    s.owner = Owner::Detached;
                    if let Proto::Ws { retry_after: r, .. } = &s.proto {
                        retry_after = *r;
                    }
                }
                // A live connection's WebSocket is open exactly when the connection is.
                let opened = self.connection.as_ref().is_some_and(|l| l.open);
                let blocked = if reached { Fail::Blocked } else { Fail::Retry };
                if owner == Owner::Probe {
                    self.probe = None;
                    self.probe_failed = true;
                    self.arm_upgrade(now);
                    return;
                }
                let (reason, fail) = if opened {
                    let reason =
                        Reason::Closed { code: info.code, reason: info.reason.as_str().into() };
                    let fail = match info.code.class() {
                        CloseClass::Terminal => Fail::Terminal,
                        CloseClass::Reauthenticate => Fail::Auth,
                        CloseClass::RetryLater => {
                            // 1012/1013: the server restarts or is overloaded.
                            self.backoff.on_hint(RetryHint::RetryLater);
                            Fail::Retry
                        }
                        _ => Fail::Retry,
                    };
                    let reason = match info.error {
                        Some(ConnError::KeepaliveTimeout) => Reason::Timeout,
                        _ => reason,
                    };
                    (reason, fail)
                } else {
                    match info.error {
                        Some(ConnError::Handshake(HandshakeError::Status(s))) => {
                            if let Some(d) = retry_after {
                                self.backoff.on_hint(RetryHint::RetryAfter(d));
                            }
                            let fail =
                                if matches!(s, 401 | 403) { Fail::Auth } else { Fail::Blocked };
                            (Reason::Status(s), fail)
                        }
                        Some(ConnError::Handshake(HandshakeError::Timeout)) => {
                            (Reason::Timeout, blocked)
                        }
                        Some(ConnError::Handshake(HandshakeError::Eof)) | None => {
                            (Reason::Network, blocked)
                        }
                        Some(_) => (Reason::Protocol, Fail::Blocked),
                    }
                };
                self.connection_down(now, reason, fail);
            }
            _ => {}
        }
    }

    pub(super) fn server_frame(&mut self, frame: ServerMessage) {
        match frame {
            ServerMessage::Msg { ch, pos, from, data } => {
                self.channels.deliver(&mut self.events, &ch, pos, from, data);
            }
            ServerMessage::Subscribed { ch, recovered, pos } => {
                self.sub_refs.retain(|_, c| *c != ch);
                match (recovered, pos) {
                    (false, Some(pos)) => self.channels.refetch(&mut self.events, &ch, pos),
                    (true, Some(pos)) => self.channels.adopt_if_unknown(&ch, pos),
                    _ => {}
                }
            }
            ServerMessage::Ack { reference: Some(r), pos }
                if self.remove_outgoing(ClientMsgId(r)) =>
            {
                self.events.push_back(SessionEvent::Acked { id: ClientMsgId(r), pos });
            }
            ServerMessage::Err { reference, code, msg } => {
                if let Some(ch) = reference.and_then(|r| self.sub_refs.remove(&r)) {
                    self.channels.remove(&ch);
                    self.events.push_back(SessionEvent::SubscribeFailed { ch, code });
                } else if let Some(r) = reference
                    && self.remove_outgoing(ClientMsgId(r))
                {
                    self.events.push_back(SessionEvent::PublishFailed { id: ClientMsgId(r), code });
                } else {
                    self.events.push_back(SessionEvent::ServerError { code, msg });
                }
            }
            ServerMessage::Presence { ch, join, leave } if self.channels.contains(&ch) => {
                self.events.push_back(SessionEvent::Presence { ch, join, leave });
            }
            _ => {}
        }
    }

    pub(super) fn http_input(&mut self, now: Instant, sock: SockId, input: Input<'_>) {
        let Some(s) = self.sockets.get_mut(&sock) else { return };
        let Proto::Http(h) = &mut s.proto else { return };
        let live = match s.owner {
            Owner::Connection(g) => self.connection.as_ref().is_some_and(|l| l.generation == g),
            _ => false,
        };
        let blocked = if s.reached { Fail::Blocked } else { Fail::Retry };
        let is_sse = matches!(h.purpose, Purpose::Sse(_));
        let had_head = h.reader.head().is_some();
        let mut failed = None;
        let mut done = false;
        let mut sse_events = Vec::new();
        match input {
            Input::Read(data) => match h.reader.push(data) {
                Err(_) => failed = Some(Reason::Protocol),
                Ok(Progress::Head) => {}
                Ok(Progress::Body(body)) => {
                    if is_sse {
                        h.deadline = now + self.cfg.sse_idle_timeout;
                        if !had_head {
                            let ok = h.reader.head().is_some_and(|r| {
                                r.status() == 200
                                    && r.media_type().as_deref() == Some("text/event-stream")
                            });
                            if ok {
                                h.sse = Some(SseParser::new(self.cfg.sse_limits));
                            }
                        }
                        if let Some(p) = &mut h.sse {
                            let mut rest = &body[..];
                            // Pull as we push, so the parser's queue bound never trips.
                            while !rest.is_empty() {
                                let n = rest.len().min(16 << 10);
                                if p.push(&rest[..n]).is_err() {
                                    failed = Some(Reason::Protocol);
                                    break;
                                }
                                rest = &rest[n..];
                                while let Some(ev) = p.next_event() {
                                    sse_events.push(ev);
                                }
                            }
                        }
                    } else {
                        h.body.extend_from_slice(&body);
                        done = h.reader.is_complete();
                    }
                }
            },
            Input::Eof => {
                if !is_sse && h.reader.head().is_some() {
                    done = true;
                } else {
                    failed = Some(Reason::Network);
                }
            }
            Input::Error => failed = Some(Reason::Network),
            Input::Timeout => failed = Some(Reason::Timeout),
        }
        let head = h.reader.head().map(|r| {
            let retry = r.header("retry-after").and_then(retry_after_secs);
            (r.status(), retry)
        });
        let new_head = !had_head && head.is_some();
        let last_id = h.sse.as_ref().map(|p| p.last_event_id().to_owned());
        let purpose = h.purpose.clone();
        let started = h.started;
        let body = if done { std::mem::take(&mut h.body) } else { Vec::new() };
        if !live {
            return self.close_socket(sock);
        }
        match purpose {
            Purpose::Publish(id) => {
                if failed.is_some() {
                    self.close_socket(sock);
                    return self.publish_done(now, id, None, &[]);
                }
                if done {
                    self.close_socket(sock);
                    let status = head.map(|(s, _)| s);
                    self.publish_done(now, id, status, &body);
                }
            }
            Purpose::Sse(ch) => {
                if new_head && let Some((status, retry)) = head {
                    if !self.http_status_ok(now, sock, &ch, status, retry, true) {
                        return;
                    }
                    self.channels.set_joined(&ch);
                    self.connection_opened(now, Reason::Connected);
                    self.flush_publishes(now);
                }
                for ev in sse_events {
                    self.sse_event(&ch, ev);
                }
                if let Some(id) = last_id.and_then(|id| id.parse::<Position>().ok()) {
                    self.channels.cursor(&mut self.events, &ch, id);
                }
                if let Some(reason) = failed {
                    self.connection_down(now, reason, blocked);
                } else if matches!(input, Input::Eof) {
                    self.connection_down(now, Reason::Network, blocked);
                }
            }
            Purpose::Poll(ch) => {
                if let Some(reason) = failed {
                    return self.connection_down(now, reason, blocked);
                }
                if new_head
                    && let Some((status, retry)) = head
                    && !self.http_status_ok(now, sock, &ch, status, retry, false)
                {
                    return;
                }
                if !done {
                    return;
                }
                self.close_socket(sock);
                self.channels.set_socket(&ch, None);
                if head.is_some_and(|(s, _)| s == 200) {
                    let Ok(poll) = PollBody::decode(&body) else {
                        return self.connection_down(now, Reason::Protocol, Fail::Blocked);
                    };
                    if poll.recovered {
                        for e in poll.events {
                            self.channels.deliver(&mut self.events, &ch, e.pos, e.from, e.data);
                        }
                        self.channels.cursor(&mut self.events, &ch, poll.pos);
                    } else {
                        self.channels.refetch(&mut self.events, &ch, poll.pos);
                    }
                }
                self.channels.set_joined(&ch);
                self.connection_opened(now, Reason::Connected);
                self.flush_publishes(now);
                let at = (started + self.cfg.poll_interval).max(now);
                self.channels.schedule_poll(&ch, at);
            }
        }
    }

    /// Checks the status of a stream or poll. Returns `false` (after acting on it) unless
    /// the response may be read on.
    pub(super) fn http_status_ok(
        &mut self,
        now: Instant,
        sock: SockId,
        ch: &str,
        status: u16,
        retry: Option<Duration>,
        sse: bool,
    ) -> bool {
        let ok = if sse {
            status == 200
                && matches!(
                    self.sockets.get(&sock),
                    Some(Socket { proto: Proto::Http(h), .. }) if h.sse.is_some()
                )
        } else {
            matches!(status, 200 | 304)
        };
        if ok {
            return true;
        }
        self.close_socket(sock);
        match status {
            401 => self.connection_down(now, Reason::Status(status), Fail::Auth),
            403 => {
                self.channels.remove(ch);
                let code = "forbidden".to_owned();
                self.events.push_back(SessionEvent::SubscribeFailed { ch: ch.into(), code });
                if self.channels.is_empty() {
                    self.connection_opened(now, Reason::Connected);
                }
                self.flush_publishes(now);
            }
            _ => {
                if let Some(d) = retry {
                    self.backoff.on_hint(RetryHint::RetryAfter(d));
                }
                self.connection_down(now, Reason::Status(status), Fail::Blocked);
            }
        }
        false
    }

    pub(super) fn sse_event(&mut self, ch: &str, ev: SseEvent) {
        if ev.event == "reset" {
            if let Ok((_, pos)) = envelope::decode_reset(ev.data.as_bytes()) {
                self.channels.refetch(&mut self.events, ch, pos);
            }
            return;
        }
        if ev.event == "from" && ch != "from" {
            // The publisher of the message that follows (see `envelope::decode_from`).
            if let Ok((pos, from)) = envelope::decode_from(ev.data.as_bytes()) {
                self.channels.announce_from(ch, pos, from);
            }
            return;
        }
        if ev.event != ch && ev.event != "message" {
            return;
        }
        if let Ok(pos) = ev.id.parse::<Position>() {
            let from = self.channels.take_from(ch, pos);
            self.channels.deliver(&mut self.events, ch, pos, from, ev.data);
        }
    }
}
