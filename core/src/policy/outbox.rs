//! The per-connection outbound queue, bounded in bytes and in items, with a slow-consumer
//! policy for when it is full.
//!
//! Frames are shared [`Bytes`]: a room broadcast pushes the same payload into many outboxes
//! without copying it. The bounds ([`OutboxConfig::max_bytes`], [`OutboxConfig::max_items`])
//! hold after every operation. When a new frame does not fit, the [`SlowConsumer`] policy
//! decides:
//!
//! - [`SlowConsumer::Disconnect`] (default): the push returns [`PushOutcome::Disconnect`]; the
//!   owner MUST close the connection with WebSocket close code `TOO_SLOW`
//!   (4100, "too slow"), after which the client resumes from its last position. The outbox
//!   drops what it holds and refuses everything from then on.
//! - [`SlowConsumer::DropOldest`]: the oldest frames are dropped until the new one fits.
//! - [`SlowConsumer::Conflate`]: a frame pushed with a key replaces the queued frame with the
//!   same key *in place* (it keeps that key's position in the order, so a dashboard sees its
//!   tiles refresh in a stable order, each with its latest value). Frames without a key are
//!   never conflated; when a frame cannot replace anything and does not fit, the oldest frames
//!   are dropped, as with `DropOldest`.
//!
//! A frame larger than `max_bytes` on its own can never fit: under `Disconnect` it
//! disconnects, under the other policies it is dropped and counted.
//!
//! Every operation is O(1) amortized (plus one hash-map lookup under `Conflate`).
//!
//! ```
//! use bytes::Bytes;
//! use tidewire::policy::{Outbox, OutboxConfig, PushOutcome, SlowConsumer};
//!
//! let cfg = OutboxConfig { max_bytes: 1024, max_items: 3, policy: SlowConsumer::Conflate };
//! let mut out = Outbox::new(cfg);
//! assert_eq!(out.push(Bytes::from_static(b"cpu=10"), Some("cpu")), PushOutcome::Queued);
//! assert_eq!(out.push(Bytes::from_static(b"mem=40"), Some("mem")), PushOutcome::Queued);
//! assert_eq!(out.push(Bytes::from_static(b"cpu=75"), Some("cpu")), PushOutcome::Conflated);
//! assert_eq!(out.len(), 2);
//! assert_eq!(out.pop(), Some(Bytes::from_static(b"cpu=75"))); // latest value, first place
//! assert_eq!(out.pop(), Some(Bytes::from_static(b"mem=40")));
//! assert_eq!(out.counters().conflated, 1);
//! ```

use core::hash::Hash;
use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// What to do when a connection's outbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumer {
    /// Close the connection with 4100 "too slow"; the client resumes later.
    #[default]
    Disconnect,
    /// Drop the oldest queued frames to make room.
    DropOldest,
    /// Replace the queued frame with the same key; otherwise drop the oldest.
    Conflate,
}

/// Outbox bounds and policy. Defaults: 1 MiB, 4096 frames, [`SlowConsumer::Disconnect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxConfig {
    /// The most bytes queued at any time (sum of frame lengths).
    pub max_bytes: usize,
    /// The most frames queued at any time.
    pub max_items: usize,
    /// What to do when a frame does not fit.
    pub policy: SlowConsumer,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { max_bytes: 1 << 20, max_items: 4096, policy: SlowConsumer::Disconnect }
    }
}

/// What [`Outbox::push`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushOutcome {
    /// The frame was queued at the back.
    Queued,
    /// The frame was queued after dropping this many of the oldest frames.
    DroppedOldest(usize),
    /// The frame replaced the queued frame with the same key, in its place. If the larger
    /// frame needed room, older frames were dropped (see [`OutboxCounters::dropped`]).
    Conflated,
    /// The frame alone exceeds `max_bytes` (or `max_items` is 0), so it was dropped; the
    /// queue is unchanged.
    Dropped,
    /// The consumer is too slow: the owner MUST close with 4100 "too slow". The outbox is now
    /// closed: it holds nothing and refuses every later push with this same outcome.
    Disconnect,
}

/// What happened to the frames pushed so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OutboxCounters {
    /// Frames added to the queue as a new entry.
    pub queued: u64,
    /// Frames dropped: evicted from the queue, refused by a push, or discarded on disconnect.
    pub dropped: u64,
    /// Frames that replaced a queued frame with the same key (the replaced frame is not
    /// counted as dropped).
    pub conflated: u64,
    /// Frames handed out by [`Outbox::pop`].
    pub sent: u64,
}

#[derive(Clone, Debug)]
struct QueuedFrame<K> {
    frame: Bytes,
    key: Option<K>,
}

/// The outbound queue of one connection. See the [module docs](self).
///
/// - Commands: [`push`](Self::push).
/// - Outputs: [`pop`](Self::pop) (the next frame to write), [`peek`](Self::peek).
/// - Getters: [`len`](Self::len), [`bytes`](Self::bytes), [`is_empty`](Self::is_empty),
///   [`is_disconnected`](Self::is_disconnected), [`counters`](Self::counters),
///   [`config`](Self::config).
///
/// `K` is the conflation key (a topic name, a tile id); only [`SlowConsumer::Conflate`] looks
/// at it.
#[derive(Clone, Debug)]
pub struct Outbox<K> {
    cfg: OutboxConfig,
    queue: VecDeque<QueuedFrame<K>>,
    /// The absolute index of `queue[0]`; entry `i` has index `front + i`.
    front: u64,
    /// Under `Conflate`: the absolute index of the queued frame for each key.
    keys: HashMap<K, u64>,
    bytes: usize,
    disconnected: bool,
    counters: OutboxCounters,
}

impl<K: Hash + Eq + Clone> Outbox<K> {
    /// An empty outbox.
    #[must_use]
    pub fn new(cfg: OutboxConfig) -> Self {
        Self {
            cfg,
            queue: VecDeque::new(),
            front: 0,
            keys: HashMap::new(),
            bytes: 0,
            disconnected: false,
            counters: OutboxCounters::default(),
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &OutboxConfig {
        &self.cfg
    }

    /// How many frames are queued.
    #[must_use]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// How many bytes are queued (never more than `max_bytes`).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether a push returned [`PushOutcome::Disconnect`].
    #[must_use]
    pub fn is_disconnected(&self) -> bool {
        self.disconnected
    }

    /// The drop, conflation and delivery counters.
    #[must_use]
    pub fn counters(&self) -> OutboxCounters {
        self.counters
    }

    /// Queues `frame`; `key` lets a later frame with the same key replace it under
    /// [`SlowConsumer::Conflate`]. See [`PushOutcome`] and the [module docs](self).
    // Inlined where it is used: the hub's fan-out pushes once per receiver, and without the
    // hint whether `hub::conn::Lanes::push` gets it inlined depends on how the crate happens
    // to be split into codegen units (once it did not: fanout/100 of benches/hub.rs 10% slower).
    #[inline]
    pub fn push(&mut self, frame: Bytes, key: Option<K>) -> PushOutcome {
        if self.disconnected {
            self.counters.dropped += 1;
            return PushOutcome::Disconnect;
        }
        if frame.len() > self.cfg.max_bytes || self.cfg.max_items == 0 {
            return self.refuse();
        }
        let conflate = self.cfg.policy == SlowConsumer::Conflate;
        if conflate
            && let Some(k) = &key
            && let Some(&index) = self.keys.get(k)
        {
            self.replace(index, frame);
            return PushOutcome::Conflated;
        }
        let mut dropped = 0;
        while self.queue.len() >= self.cfg.max_items
            || frame.len() > self.cfg.max_bytes - self.bytes
        {
            if self.cfg.policy == SlowConsumer::Disconnect {
                return self.disconnect();
            }
            self.drop_front();
            dropped += 1;
        }
        let index = self.front + self.queue.len() as u64;
        let key = if conflate { key } else { None };
        if let Some(k) = &key {
            self.keys.insert(k.clone(), index);
        }
        self.bytes += frame.len();
        self.queue.push_back(QueuedFrame { frame, key });
        self.counters.queued += 1;
        if dropped == 0 { PushOutcome::Queued } else { PushOutcome::DroppedOldest(dropped) }
    }

    /// A frame that can never fit.
    fn refuse(&mut self) -> PushOutcome {
        if self.cfg.policy == SlowConsumer::Disconnect {
            return self.disconnect();
        }
        self.counters.dropped += 1;
        PushOutcome::Dropped
    }

    fn disconnect(&mut self) -> PushOutcome {
        self.disconnected = true;
        // The refused frame plus everything queued.
        self.counters.dropped += 1 + self.queue.len() as u64;
        self.queue.clear();
        self.keys.clear();
        self.front = 0;
        self.bytes = 0;
        PushOutcome::Disconnect
    }

    /// Replaces the frame at absolute `index` (which holds a keyed frame) with `frame`, then
    /// drops the oldest other frames until the byte bound holds again.
    fn replace(&mut self, mut index: u64, frame: Bytes) {
        let Some(i) = self.position(index) else { return };
        let new_len = frame.len();
        let old = core::mem::replace(&mut self.queue[i].frame, frame);
        // While making room, `bytes` counts every frame but the replaced one.
        self.bytes -= old.len();
        self.counters.conflated += 1;
        while new_len > self.cfg.max_bytes - self.bytes {
            if self.front == index {
                // The replaced frame is the oldest: drop the one behind it instead, and move
                // the replaced frame into that place (nothing survives between them, so the
                // order is unchanged).
                let Some(keep) = self.queue.pop_front() else { break };
                self.front += 1;
                let dropped = self.take_front().is_some();
                self.front -= 1;
                if let Some(k) = &keep.key {
                    self.keys.insert(k.clone(), self.front);
                }
                self.queue.push_front(keep);
                index = self.front;
                if !dropped {
                    break; // unreachable: new_len <= max_bytes
                }
                self.counters.dropped += 1;
            } else {
                self.drop_front();
            }
        }
        self.bytes += new_len;
    }

    fn position(&self, index: u64) -> Option<usize> {
        let i = usize::try_from(index.checked_sub(self.front)?).ok()?;
        (i < self.queue.len()).then_some(i)
    }

    /// Removes the oldest frame as dropped.
    fn drop_front(&mut self) {
        if self.take_front().is_some() {
            self.counters.dropped += 1;
        }
    }

    fn take_front(&mut self) -> Option<Bytes> {
        let queued = self.queue.pop_front()?;
        if let Some(k) = queued.key
            && self.keys.get(&k) == Some(&self.front)
        {
            self.keys.remove(&k);
        }
        self.front += 1;
        self.bytes -= queued.frame.len();
        Some(queued.frame)
    }

    /// The next frame to write, oldest first. May return something new after
    /// [`push`](Self::push).
    #[must_use]
    pub fn pop(&mut self) -> Option<Bytes> {
        let frame = self.take_front()?;
        self.counters.sent += 1;
        Some(frame)
    }

    /// The frame [`pop`](Self::pop) would return.
    #[must_use]
    pub fn peek(&self) -> Option<&Bytes> {
        self.queue.front().map(|s| &s.frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_bytes: usize, max_items: usize, policy: SlowConsumer) -> OutboxConfig {
        OutboxConfig { max_bytes, max_items, policy }
    }

    fn frame(n: usize, tag: u8) -> Bytes {
        Bytes::from(vec![tag; n])
    }

    fn drain(out: &mut Outbox<u32>) -> Vec<u8> {
        core::iter::from_fn(|| out.pop()).map(|f| f[0]).collect()
    }

    #[test]
    fn queues_in_order_and_shares_frames() {
        let mut out: Outbox<u32> = Outbox::new(OutboxConfig::default());
        let shared = frame(100, 1);
        assert_eq!(out.push(shared.clone(), None), PushOutcome::Queued);
        assert_eq!(out.push(frame(10, 2), None), PushOutcome::Queued);
        assert_eq!(out.bytes(), 110);
        assert_eq!(out.peek().map(|f| f.as_ptr()), Some(shared.as_ptr())); // not copied
        assert_eq!(drain(&mut out), [1, 2]);
        assert!(out.is_empty());
        assert_eq!(out.bytes(), 0);
        assert_eq!(out.counters(), OutboxCounters { queued: 2, sent: 2, ..Default::default() });
    }

    #[test]
    fn disconnect_when_full_then_refuse_everything() {
        let mut out: Outbox<u32> = Outbox::new(cfg(100, 10, SlowConsumer::Disconnect));
        assert_eq!(out.push(frame(60, 1), None), PushOutcome::Queued);
        assert_eq!(out.push(frame(60, 2), None), PushOutcome::Disconnect);
        assert!(out.is_disconnected());
        assert_eq!((out.len(), out.bytes()), (0, 0));
        assert_eq!(out.push(frame(1, 3), None), PushOutcome::Disconnect);
        assert_eq!(out.pop(), None);
        assert_eq!(out.counters().dropped, 3);
        // Too many items also disconnects, and so does a frame that can never fit.
        let mut out: Outbox<u32> = Outbox::new(cfg(100, 2, SlowConsumer::Disconnect));
        out.push(frame(1, 1), None);
        out.push(frame(1, 2), None);
        assert_eq!(out.push(frame(1, 3), None), PushOutcome::Disconnect);
        let mut out: Outbox<u32> = Outbox::new(cfg(100, 2, SlowConsumer::Disconnect));
        assert_eq!(out.push(frame(101, 1), None), PushOutcome::Disconnect);
    }

    #[test]
    fn drop_oldest_makes_room() {
        let mut out: Outbox<u32> = Outbox::new(cfg(100, 3, SlowConsumer::DropOldest));
        for tag in 1..=3 {
            assert_eq!(out.push(frame(30, tag), None), PushOutcome::Queued);
        }
        assert_eq!(out.push(frame(10, 4), None), PushOutcome::DroppedOldest(1)); // item bound
        assert_eq!(out.push(frame(70, 5), None), PushOutcome::DroppedOldest(2)); // byte bound
        assert_eq!(out.bytes(), 80);
        assert_eq!(out.push(frame(101, 6), None), PushOutcome::Dropped);
        assert_eq!(drain(&mut out), [4, 5]);
        assert_eq!(out.counters().dropped, 4);
        // Keys mean nothing without Conflate.
        out.push(frame(1, 7), Some(1));
        out.push(frame(1, 8), Some(1));
        assert_eq!(drain(&mut out), [7, 8]);
    }

    #[test]
    fn conflate_replaces_in_place() {
        let mut out = Outbox::new(cfg(1000, 10, SlowConsumer::Conflate));
        out.push(frame(10, 1), Some(7));
        out.push(frame(10, 2), None);
        out.push(frame(10, 3), Some(8));
        assert_eq!(out.push(frame(20, 4), Some(7)), PushOutcome::Conflated);
        assert_eq!(out.push(frame(5, 5), Some(8)), PushOutcome::Conflated);
        assert_eq!(out.push(frame(10, 6), None), PushOutcome::Queued);
        assert_eq!(out.bytes(), 45);
        assert_eq!(out.pop().map(|f| f[0]), Some(4));
        // Key 7 was sent: a new value for it goes to the back.
        assert_eq!(out.push(frame(10, 7), Some(7)), PushOutcome::Queued);
        assert_eq!(drain(&mut out), [2, 5, 6, 7]);
        assert_eq!(out.counters().conflated, 2);
    }

    #[test]
    fn conflate_falls_back_to_dropping_the_oldest() {
        let mut out = Outbox::new(cfg(1000, 2, SlowConsumer::Conflate));
        out.push(frame(1, 1), Some(1));
        out.push(frame(1, 2), None);
        assert_eq!(out.push(frame(1, 3), None), PushOutcome::DroppedOldest(1));
        // Key 1 was dropped with its frame: a new value is a new entry.
        assert_eq!(out.push(frame(1, 4), Some(1)), PushOutcome::DroppedOldest(1));
        assert_eq!(out.push(frame(1, 5), Some(1)), PushOutcome::Conflated);
        assert_eq!(drain(&mut out), [3, 5]);
        assert_eq!(out.push(frame(1001, 6), Some(1)), PushOutcome::Dropped);
    }

    #[test]
    fn a_growing_conflated_frame_keeps_its_place_and_the_byte_bound() {
        let mut out = Outbox::new(cfg(100, 10, SlowConsumer::Conflate));
        out.push(frame(10, 1), Some(1));
        out.push(frame(30, 2), None);
        out.push(frame(30, 3), Some(3));
        out.push(frame(30, 4), None);
        // Key 1 is the oldest and grows to 60 bytes: frames 2 and 3 go, key 1 stays first.
        assert_eq!(out.push(frame(60, 5), Some(1)), PushOutcome::Conflated);
        assert!(out.bytes() <= 100);
        assert_eq!(out.counters().dropped, 2);
        // Key 3 went with its frame; key 1 is still conflatable at its new place.
        assert_eq!(out.push(frame(20, 6), Some(1)), PushOutcome::Conflated);
        assert_eq!(out.push(frame(5, 7), Some(3)), PushOutcome::Queued);
        assert_eq!(drain(&mut out), [6, 4, 7]);
        // Growing a frame in the middle drops from the front.
        out.push(frame(40, 1), None);
        out.push(frame(40, 2), Some(2));
        assert_eq!(out.push(frame(90, 3), Some(2)), PushOutcome::Conflated);
        assert_eq!(drain(&mut out), [3]);
    }

    #[test]
    fn zero_items_refuses() {
        let mut out: Outbox<u32> = Outbox::new(cfg(100, 0, SlowConsumer::DropOldest));
        assert_eq!(out.push(frame(1, 1), None), PushOutcome::Dropped);
        assert!(out.is_empty());
    }
}
