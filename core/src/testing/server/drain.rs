//! The drain of a [`SimServer`] after every input: hub events, ready connections, and
//! each touched connection's transport moving what it can into the network.

use super::{Proto, Published, SSE_ROOM, SimServer};
use crate::hub::HubEvent;
use crate::machine::{Machine, Transmit};
use crate::replay::Position;
use crate::sse::StreamEnd;
use crate::testing::net::{LinkId, Net, Side};
use crate::time::Instant;
use crate::ws::{CloseCode, Message, SendError, Utf8Bytes};

impl SimServer {
    /// The adapter's drain: hub events, ready connections, then every touched
    /// connection's transport moves what it can into the network.
    pub(super) fn settle(&mut self, now: Instant, net: &mut Net) {
        loop {
            while let Some(ev) = self.hub.poll_event() {
                self.hub_event(now, net, ev);
            }
            while let Some(id) = self.hub.poll_ready() {
                if let Some(&link) = self.by_hub.get(&id) {
                    self.touched.push(link);
                }
            }
            if self.touched.is_empty() {
                break;
            }
            let mut touched = std::mem::take(&mut self.touched);
            touched.sort_unstable();
            touched.dedup();
            for link in touched {
                self.flush(now, net, link);
            }
        }
    }

    pub(super) fn hub_event(&mut self, now: Instant, net: &mut Net, ev: HubEvent) {
        match ev {
            HubEvent::Close { conn, code, reason } => {
                self.stats.closed_by_hub += 1;
                let Some(link) = self.by_hub.remove(&conn) else { return };
                self.touched.push(link);
                let Some(c) = self.conns.get_mut(&link) else { return };
                match &mut c.proto {
                    Proto::Ws { ws, hub, .. } => {
                        *hub = None;
                        let _ = ws.close(now, code, reason);
                        self.ws_events(now, link);
                    }
                    Proto::Sse { sse, hub } => {
                        *hub = None;
                        if code == CloseCode::TOO_SLOW {
                            sse.end(now, StreamEnd::TooSlow);
                        } else {
                            sse.close(now);
                        }
                        self.sse_events(now, link);
                    }
                    _ => {}
                }
            }
            HubEvent::Published { ch, pos } => {
                let before = Position { epoch: pos.epoch, offset: pos.offset.saturating_sub(1) };
                let data = self
                    .hub
                    .log(&ch)
                    .and_then(|l| l.since(before).ok().and_then(|mut it| it.next()))
                    .map(|(_, d)| d.clone())
                    .unwrap_or_default();
                self.published.push(Published { ch: ch.clone(), pos, data });
                for link in self.held.remove(&*ch).unwrap_or_default() {
                    self.recheck_poll(now, net, link);
                }
            }
            HubEvent::Expired { conn } => {
                if let Some(key) = self.poll_keys.remove(&conn) {
                    self.poll_clients.remove(&key);
                }
            }
            _ => {}
        }
    }

    /// Moves frames from the hub into the transport while it has room, then the
    /// transport's bytes into the network while the window has room.
    pub(super) fn flush(&mut self, now: Instant, net: &mut Net, link: LinkId) {
        let Some(c) = self.conns.get_mut(&link) else { return };
        match &mut c.proto {
            Proto::Ws { ws, hub: Some(id), stash, .. } => loop {
                let msg = match stash.take() {
                    Some(m) => m,
                    None => match self.hub.pull(*id) {
                        Some(f) => match Utf8Bytes::try_from_bytes(f) {
                            Ok(t) => Message::text(t),
                            Err(_) => continue,
                        },
                        None => break,
                    },
                };
                match ws.send(now, msg) {
                    Ok(()) => {}
                    Err(SendError::Backpressure(m)) => {
                        *stash = Some(m);
                        break;
                    }
                    Err(_) => break,
                }
            },
            Proto::Sse { sse, hub: Some(id) } => {
                while !sse.is_ended() && sse.buffered() < SSE_ROOM {
                    let Some(f) = self.hub.pull(*id) else { break };
                    sse.send_frame(now, f);
                }
            }
            _ => {}
        }
        // The transport's bytes, while the window has room.
        loop {
            let Some(c) = self.conns.get_mut(&link) else { return };
            if let Some(front) = c.out.front() {
                if net.space(link, Side::Server) == 0 {
                    break;
                }
                net.write(link, Side::Server, front.clone());
                c.out.pop_front();
                continue;
            }
            let t = match &mut c.proto {
                Proto::Ws { ws, .. } => ws.poll_transmit(),
                Proto::Sse { sse, .. } => sse.poll_transmit(),
                _ => None,
            };
            match t {
                Some(Transmit::Bytes(b)) => c.out.push_back(b),
                Some(_) => c.shutdown = true,
                None => break,
            }
        }
        match &mut self.conns.get_mut(&link).map(|c| &mut c.proto) {
            Some(Proto::Sse { .. }) => self.sse_events(now, link),
            Some(Proto::Ws { .. }) => self.ws_events(now, link),
            _ => {}
        }
        let Some(c) = self.conns.get_mut(&link) else { return };
        if c.shutdown && c.out.is_empty() {
            net.close(link, Side::Server);
            self.drop_conn(now, link);
            return;
        }
        let at = match &c.proto {
            Proto::Ws { ws, .. } => ws.poll_timeout(),
            Proto::Sse { sse, .. } => sse.poll_timeout(),
            Proto::Poll { poll, .. } => poll.poll_timeout(),
            Proto::Head(..) | Proto::Body { .. } => Some(c.head_deadline),
            Proto::Done => None,
        };
        match at {
            Some(at) => self.timers.set(link, at),
            None => {
                self.timers.cancel(link);
            }
        }
    }
}
