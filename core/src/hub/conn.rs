//! One connection as the hub sees it: its transport, principal, memberships and the
//! outbound queue the adapter pulls from.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::authz::Principal;
use crate::policy::heartbeat::Heartbeat;
use crate::policy::outbox::{Outbox, OutboxConfig, OutboxCounters, PushOutcome, SlowConsumer};
use crate::policy::ratelimit::RateLimit;

/// A connection's handle, chosen by the hub in [`Hub::connect`](super::Hub::connect) and
/// never reused by the same hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// The hub's connections by id. Ids are the hub's own sequential numbers, not peer input,
/// so a fast non-DoS-resistant hash is safe here; it is what every receiver of a broadcast
/// looks up.
pub(crate) type ConnMap = rustc_hash::FxHashMap<ConnId, Conn>;

/// How a connection reaches its client; decides the format of the frames pulled for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// WebSocket: every frame is one envelope (a JSON text message).
    WebSocket,
    /// Server-Sent Events: every frame is an event-stream block, ready for the response
    /// body (`SseStream::send_frame`).
    Sse,
    /// Polling: nothing is queued; the adapter reads [`Hub::log`](super::Hub::log) on each
    /// poll and wakes held polls on [`HubEvent::Published`](super::HubEvent::Published).
    Poll,
}

/// Who a publish's client id belongs to: the user when known (a retry after a reconnect
/// is still a duplicate), else the connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    User(Arc<str>),
    Conn(ConnId),
    /// Anonymous publishes made without a connection (HTTP): one shared scope.
    Anonymous,
}

/// The lane of a slow-consumer policy: one bounded queue per policy in use, so that a
/// dropping policy never drops another channel's frames.
fn lane(policy: SlowConsumer) -> usize {
    match policy {
        SlowConsumer::DropOldest => 1,
        SlowConsumer::Conflate => 2,
        _ => 0,
    }
}

/// Up to three outboxes (one per [`SlowConsumer`] policy), created on first use and pulled
/// round-robin. A channel's frames always go to the lane of its policy, so each channel's
/// frames leave in order; replies that belong to no channel (`ack`, `err`, `pong`) use the
/// `Disconnect` lane.
#[derive(Debug)]
pub(crate) struct Lanes {
    cfg: OutboxConfig,
    lanes: [Option<Outbox<Arc<str>>>; 3],
    next: usize,
}

impl Lanes {
    pub(crate) fn new(cfg: OutboxConfig) -> Self {
        Self { cfg, lanes: [None, None, None], next: 0 }
    }

    pub(crate) fn push(
        &mut self,
        policy: SlowConsumer,
        frame: Bytes,
        key: Option<Arc<str>>,
    ) -> PushOutcome {
        let cfg = OutboxConfig { policy, ..self.cfg };
        self.lanes[lane(policy)].get_or_insert_with(|| Outbox::new(cfg)).push(frame, key)
    }

    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        // Every pull of every receiver comes here (twice: the last one finds nothing), so
        // the round-robin walk avoids divisions and calls into empty lanes.
        let n = self.lanes.len();
        let mut at = self.next;
        for _ in 0..n {
            let after = if at + 1 == n { 0 } else { at + 1 };
            if let Some(out) = &mut self.lanes[at]
                && !out.is_empty()
                && let Some(frame) = out.pop()
            {
                self.next = after;
                return Some(frame);
            }
            at = after;
        }
        None
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lanes.iter().flatten().all(Outbox::is_empty)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.lanes.iter().flatten().map(Outbox::bytes).sum()
    }

    pub(crate) fn len(&self) -> usize {
        self.lanes.iter().flatten().map(Outbox::len).sum()
    }

    pub(crate) fn counters(&self) -> OutboxCounters {
        let mut sum = OutboxCounters::default();
        for c in self.lanes.iter().flatten().map(Outbox::counters) {
            sum.queued += c.queued;
            sum.dropped += c.dropped;
            sum.conflated += c.conflated;
            sum.sent += c.sent;
        }
        sum
    }
}

/// A connection's state in the hub.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) transport: Transport,
    pub(crate) principal: Principal,
    pub(crate) scope: Scope,
    /// The name its future joins show in presence lists.
    pub(crate) name: Option<Arc<str>>,
    /// Channels joined, each with the presence name this connection holds there (`None`:
    /// anonymous, or the list was full when it joined).
    pub(crate) channels: BTreeMap<Arc<str>, Option<Arc<str>>>,
    pub(crate) out: Lanes,
    /// Whether the connection is in the hub's ready queue.
    pub(crate) ready: bool,
    pub(crate) rate: Option<RateLimit>,
    /// Polling clients only: expires when they stop polling.
    pub(crate) expiry: Option<Heartbeat>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_keep_policies_apart_and_pull_round_robin() {
        let cfg = OutboxConfig { max_bytes: 100, max_items: 2, policy: SlowConsumer::Disconnect };
        let mut l = Lanes::new(cfg);
        let f = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert_eq!(l.push(SlowConsumer::Disconnect, f("a1"), None), PushOutcome::Queued);
        assert_eq!(l.push(SlowConsumer::Disconnect, f("a2"), None), PushOutcome::Queued);
        for s in ["d1", "d2", "d3"] {
            l.push(SlowConsumer::DropOldest, f(s), None);
        }
        let k: Arc<str> = Arc::from("k");
        l.push(SlowConsumer::Conflate, f("c1"), Some(k.clone()));
        assert_eq!(l.push(SlowConsumer::Conflate, f("c2"), Some(k)), PushOutcome::Conflated);
        assert_eq!((l.len(), l.bytes()), (5, 10));
        let order: Vec<Bytes> = std::iter::from_fn(|| l.pop()).collect();
        assert_eq!(order, [f("a1"), f("d2"), f("c2"), f("a2"), f("d3")]);
        let c = l.counters();
        assert_eq!((c.queued, c.dropped, c.conflated, c.sent), (6, 1, 1, 5));
        assert!(l.is_empty());
        // The reliable lane disconnects when full; the others never do.
        l.push(SlowConsumer::Disconnect, f("a"), None);
        l.push(SlowConsumer::Disconnect, f("b"), None);
        assert_eq!(l.push(SlowConsumer::Disconnect, f("c"), None), PushOutcome::Disconnect);
    }
}
