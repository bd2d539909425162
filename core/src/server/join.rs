//! Deferred joins through the [`Server`]: when the hub's policy answers
//! [`JoinVerdict::Defer`](crate::hub::JoinVerdict::Defer), the server hands
//! [`HubEvent::JoinRequested`] to the application as [`ServerEvent::Hub`] on the queue of
//! events that need an answer (never dropped), and the application answers with
//! [`Server::decide_join`]. Meanwhile:
//!
//! - a WebSocket `sub` waits in the hub (the connection goes on: other envelopes are
//!   served); it is answered with `subscribed` and the replay, or with `err`;
//! - an SSE request (`/events?ch=`) gets no response head yet; allowed, it gets its `200`
//!   and the stream opens as it would have at once; refused, it gets the status a refusal
//!   gets: `403` with the application's code as the body (`503` with `join_timeout` when
//!   the application did not decide in time, the hub's status for a hub error);
//! - a poll (`/poll?ch=`) waits the same way, then is answered from the log, or refused
//!   like the SSE request. Later polls of the same polling client wait for the same
//!   decision (one [`HubEvent::JoinRequested`]).
//!
//! [`HubEvent::JoinDecided`] is then passed on as an informational event.

use std::collections::HashMap;

use super::{ConnHandle, Proto, Server, ServerEvent};
use crate::hub::{ConnId, HubEvent, JoinDecision, JoinId, JoinRefusal, Subscription, Transport};
use crate::poll::Poll;
use crate::time::Instant;

/// What a connection whose join waits becomes once it is allowed.
pub(super) enum AfterJoin {
    /// An SSE stream: its response head goes out then.
    Sse,
    /// A poll, answered from the log then. `once`: as in [`Proto::Poll`].
    Poll { poll: Box<Poll>, once: bool },
}

/// Connections waiting for the decision on their hub connection's join.
#[derive(Debug, Default)]
pub(super) struct Joining {
    by_hub: HashMap<ConnId, Vec<ConnHandle>>,
}

impl Joining {
    /// Forgets every waiting connection (the simulated crash).
    #[cfg(feature = "testing")]
    pub(super) fn clear(&mut self) {
        self.by_hub.clear();
    }
}

impl Server {
    /// The application's decision on a join that waits
    /// ([`HubEvent::JoinRequested`]); see [`Hub::decide_join`](crate::hub::Hub::decide_join).
    /// The SSE request or poll waiting for it is answered. Returns `false` for an unknown
    /// id (decided already, timed out, cancelled).
    pub fn decide_join(&mut self, now: Instant, id: JoinId, decision: JoinDecision) -> bool {
        let known = self.hub.decide_join(now, id, decision);
        self.route_hub_outputs(now);
        known
    }

    /// `conn` waits for the decision on the join of its hub connection `hub`.
    pub(super) fn await_join(&mut self, conn: ConnHandle, hub: ConnId, then: AfterJoin) {
        if matches!(then, AfterJoin::Sse) {
            self.by_hub.insert(hub, conn);
        }
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.proto = Proto::Joining { hub, then };
        let waiting = self.joining.by_hub.entry(hub).or_default();
        if !waiting.contains(&conn) {
            waiting.push(conn);
        }
    }

    /// [`HubEvent::JoinDecided`]: the connections that waited for it are answered; a
    /// refused SSE or polling client leaves the hub. Then the event goes to the
    /// application.
    pub(super) fn join_decided(&mut self, now: Instant, ev: HubEvent) {
        if let HubEvent::JoinDecided { conn: hub, result, .. } = &ev {
            for conn in self.joining.by_hub.remove(hub).unwrap_or_default() {
                self.finish_join(now, conn, *hub, result);
            }
            if result.is_err() {
                match self.hub.transport(*hub) {
                    Some(Transport::Sse) => {
                        self.by_hub.remove(hub);
                        self.hub.disconnect(now, *hub);
                    }
                    Some(Transport::Poll) => {
                        if let Some(key) = self.poll_keys.remove(hub) {
                            self.poll_clients.remove(&key);
                        }
                        self.hub.disconnect(now, *hub);
                    }
                    _ => {}
                }
            }
        }
        self.push_event(ServerEvent::Hub(ev));
    }

    fn finish_join(
        &mut self,
        now: Instant,
        conn: ConnHandle,
        hub: ConnId,
        result: &Result<Subscription, JoinRefusal>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if !matches!(&c.proto, Proto::Joining { hub: h, .. } if *h == hub) {
            return;
        }
        let Proto::Joining { then, .. } = std::mem::replace(&mut c.proto, Proto::Done) else {
            return;
        };
        match (then, result) {
            (AfterJoin::Sse, Ok(_)) => self.open_sse(now, conn, hub),
            (AfterJoin::Poll { poll, once }, Ok(_)) => {
                c.proto = Proto::Poll { poll, hub, once };
                self.recheck_poll(now, conn);
            }
            (_, Err(JoinRefusal::Hub(e))) => self.refuse(conn, *e),
            (_, Err(r)) => {
                let status = if matches!(r, JoinRefusal::Refused { .. }) { 403 } else { 503 };
                let body = format!("{}\n", r.code());
                self.respond(conn, status, &[], body.as_bytes());
            }
        }
    }
}
