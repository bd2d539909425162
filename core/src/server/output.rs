//! The outputs of a [`Server`]: the drain after every input (hub events, ready
//! connections, deadlines) and [`Server::poll_transmit`], where frames move from the hub
//! into a transport.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{ConnHandle, Proto, Server, ServerEvent};
use crate::hub::HubEvent;
use crate::machine::{Machine, Transmit};
use crate::replay::Position;
use crate::sse::{SseStreamEvent, StreamEnd};
use crate::time::Instant;
use crate::ws::{CloseCode, Message, SendError, Utf8Bytes, WsEvent};

/// Sends a hub frame (JSON text) as a text message; a frame that is not UTF-8 (never
/// made by the hub) is dropped.
fn send_text(
    ws: &mut crate::ws::WsConnection,
    now: Instant,
    frame: &bytes::Bytes,
) -> Result<(), SendError> {
    match Utf8Bytes::try_from_bytes(frame.clone()) {
        Ok(t) => ws.send(now, Message::text(t)),
        Err(_) => Ok(()),
    }
}

/// Frames pulled from the hub into a WebSocket in one refill.
const WS_BATCH: usize = 64;

impl Server {
    /// After every input, routes what the hub (and the bus) produced: its events to
    /// connections and the application, its ready connections to the ready queue; then
    /// every connection touched gets its deadline re-armed.
    pub(super) fn route_hub_outputs(&mut self, now: Instant) {
        loop {
            #[cfg(feature = "redis")]
            let mut any = self.drive_bus(now);
            #[cfg(not(feature = "redis"))]
            let mut any = false;
            while let Some(ev) = self.hub.poll_event() {
                any = true;
                self.hub_event(now, ev);
            }
            while let Some(id) = self.hub.poll_ready() {
                any = true;
                if let Some(&conn) = self.by_hub.get(&id) {
                    self.touch(conn);
                }
            }
            if !any {
                break;
            }
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &conn in &dirty {
            self.rearm(conn);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Re-arms `conn`'s timer. A deadline that only moved later (a keepalive pushed back
    /// by traffic) keeps the earlier entry: it fires early once, `handle_timeout` is a
    /// no-op for the machine, and the timer is re-armed then. That keeps the timer heap
    /// from churning on every frame of a busy connection.
    fn rearm(&mut self, conn: ConnHandle) {
        let due = self.conns.get(&conn).and_then(super::conn::Conn::deadline);
        match (due, self.timers.get(conn)) {
            (Some(at), Some(armed)) if armed <= at => {}
            (Some(at), _) => self.timers.set(conn, at),
            (None, Some(_)) if self.conns.contains_key(&conn) => {}
            (None, _) => {
                self.timers.cancel(conn);
            }
        }
    }

    fn hub_event(&mut self, now: Instant, ev: HubEvent) {
        match ev {
            HubEvent::Close { conn: id, code, reason } => {
                self.stats.closed_by_hub += 1;
                let Some(conn) = self.by_hub.remove(&id) else { return };
                self.touch(conn);
                let Some(c) = self.conns.get_mut(&conn) else { return };
                match &mut c.proto {
                    Proto::Ws { ws, hub, .. } => {
                        *hub = None;
                        let _ = ws.close(now, code, reason);
                    }
                    Proto::Sse { sse, hub } => {
                        *hub = None;
                        if code == CloseCode::TOO_SLOW {
                            sse.end(now, StreamEnd::TooSlow);
                        } else {
                            sse.close(now);
                        }
                    }
                    _ => {}
                }
                self.conn_events(now, conn);
            }
            HubEvent::Published { ch, pos } => {
                if self.cfg.report_published {
                    let before =
                        Position { epoch: pos.epoch, offset: pos.offset.saturating_sub(1) };
                    let (from, data) = self
                        .hub
                        .log(&ch)
                        .and_then(|l| l.since_entries(before).ok().and_then(|mut it| it.next()))
                        .map(|e| (e.from.cloned(), e.data.clone()))
                        .unwrap_or_default();
                    self.push_event(ServerEvent::Published { ch: ch.clone(), pos, from, data });
                }
                self.wake_polls(now, &ch);
            }
            HubEvent::Synced { ref ch, .. } => {
                let ch = ch.clone();
                self.wake_polls(now, &ch);
                self.push_event(ServerEvent::Hub(ev));
            }
            HubEvent::Expired { conn: id } => {
                if let Some(key) = self.poll_keys.remove(&id) {
                    self.poll_clients.remove(&key);
                }
            }
            // They need an answer (`Server::decide_publish`, `Server::decide_join`): never
            // dropped.
            ev @ (HubEvent::PublishRequested { .. } | HubEvent::JoinRequested { .. }) => {
                self.events.push_decision(ServerEvent::Hub(ev));
            }
            // A trusted HTTP publish's answer goes to its connection; the others are kept by
            // token for `Server::take_submitted`, not an event.
            HubEvent::Submitted { token, result } => match self.submits.remove(&token) {
                Some(conn) => match result {
                    Ok(pos) => self.publish_ok(conn, pos),
                    Err(e) => self.refuse(conn, e),
                },
                None => self.push_submitted(token, result),
            },
            HubEvent::PublishDecided { id, result } => self.publish_decided(id, &result),
            ev @ HubEvent::JoinDecided { .. } => self.join_decided(now, ev),
            ev => self.push_event(ServerEvent::Hub(ev)),
        }
    }

    fn wake_polls(&mut self, now: Instant, ch: &str) {
        for conn in self.held.remove(ch).unwrap_or_default() {
            self.recheck_poll(now, conn);
        }
    }

    /// Handles what `conn`'s machine reports: envelopes into the hub, its end.
    pub(super) fn conn_events(&mut self, now: Instant, conn: ConnHandle) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        match &mut c.proto {
            Proto::Ws { ws, hub, .. } => {
                while let Some(ev) = ws.poll_event() {
                    match ev {
                        WsEvent::Message(m) => match (m.as_text(), *hub) {
                            (Some(text), Some(id)) => {
                                self.hub.handle_envelope(now, id, text.as_bytes());
                            }
                            (None, Some(_)) => {
                                let _ = ws.close(
                                    now,
                                    CloseCode::UNSUPPORTED_DATA,
                                    "text envelopes only",
                                );
                            }
                            _ => {}
                        },
                        WsEvent::Closed(_) => {
                            c.ends += 1;
                            if let Some(id) = hub.take() {
                                self.by_hub.remove(&id);
                                self.hub.disconnect(now, id);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Proto::Sse { sse, hub } => {
                while let Some(SseStreamEvent::Ended(_)) = sse.poll_event() {
                    c.ends += 1;
                    if let Some(id) = hub.take() {
                        self.by_hub.remove(&id);
                        self.hub.disconnect(now, id);
                    }
                }
            }
            _ => {}
        }
        if c.ends > 1 {
            self.violations.push(format!("{conn:?}: {} end events", c.ends));
        }
    }

    /// The next bytes to write on `conn`, or [`Transmit::Shutdown`] once it has said all
    /// it will (close the socket; the server has forgotten `conn`). `None`: nothing now;
    /// pull again when [`poll_ready`](Self::poll_ready) names it.
    ///
    /// Pull only while the socket takes the bytes: this is where the hub's frames move
    /// into the transport, so a connection that is not pulled holds its frames in its
    /// bounded hub outbox, under the channel's slow-consumer policy.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, conn: ConnHandle) -> Option<Transmit> {
        let t = self.next_transmit(now, conn);
        match t {
            Some(Transmit::Bytes(_)) => {}
            Some(_) => self.drop_conn(now, conn),
            None => self.rearm(conn),
        }
        self.route_hub_outputs(now);
        t
    }

    /// [`poll_transmit`](Self::poll_transmit) into `out` until about `max` bytes were pulled
    /// or nothing is left for now: whether the connection said all it will (write `out`,
    /// then close the socket). Pull again only once the socket took the batch.
    pub fn poll_batch(
        &mut self,
        now: Instant,
        conn: ConnHandle,
        out: &mut VecDeque<Bytes>,
        max: usize,
    ) -> bool {
        crate::machine::pull_batch(out, max, || self.poll_transmit(now, conn)).1
    }

    fn next_transmit(&mut self, now: Instant, conn: ConnHandle) -> Option<Transmit> {
        let mut refilled = false;
        loop {
            let c = self.conns.get_mut(&conn)?;
            if let Some(b) = c.out.pop_front() {
                return Some(Transmit::Bytes(b));
            }
            let t = match &mut c.proto {
                Proto::Ws { ws, .. } => ws.poll_transmit(),
                Proto::Sse { sse, .. } => sse.poll_transmit(),
                _ => None,
            };
            match t {
                Some(Transmit::Bytes(b)) => {
                    self.conn_events(now, conn);
                    return Some(Transmit::Bytes(b));
                }
                Some(_) => c.shutdown = true,
                None => {}
            }
            self.conn_events(now, conn);
            let c = self.conns.get_mut(&conn)?;
            if c.shutdown && c.out.is_empty() {
                return Some(Transmit::Shutdown);
            }
            if refilled || !self.refill(now, conn) {
                return None;
            }
            refilled = true;
        }
    }

    /// Moves every frame the hub holds for `conn` into its transport, as far as the
    /// transport takes them (a shutdown: nothing more will come after them).
    pub(super) fn refill_all(&mut self, now: Instant, conn: ConnHandle) {
        let room = self.cfg.sse_room;
        self.cfg.sse_room = usize::MAX;
        while self.refill(now, conn) {}
        self.cfg.sse_room = room;
    }

    /// Moves frames from the hub into `conn`'s transport while it has room. Whether any
    /// moved.
    fn refill(&mut self, now: Instant, conn: ConnHandle) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else { return false };
        let mut moved = false;
        match &mut c.proto {
            Proto::Ws { ws, hub: Some(id), stash } => {
                for _ in 0..WS_BATCH {
                    let Some(frame) = stash.take().or_else(|| self.hub.pull(*id)) else {
                        break;
                    };
                    #[cfg(feature = "deflate")]
                    let sent =
                        match self.compressed.prepare(ws, self.cfg.ws.deflate.as_ref(), &frame) {
                            Some(p) => ws.send_prepared(now, &p),
                            None => send_text(ws, now, &frame),
                        };
                    #[cfg(not(feature = "deflate"))]
                    let sent = send_text(ws, now, &frame);
                    match sent {
                        Ok(()) => moved = true,
                        Err(SendError::Backpressure(_)) => {
                            *stash = Some(frame);
                            break;
                        }
                        Err(_) => {}
                    }
                }
            }
            Proto::Sse { sse, hub: Some(id) } => {
                while !sse.is_ended() && sse.buffered() < self.cfg.sse_room {
                    let Some(f) = self.hub.pull(*id) else { break };
                    sse.send_frame(now, f);
                    moved = true;
                }
            }
            _ => {}
        }
        moved
    }
}
