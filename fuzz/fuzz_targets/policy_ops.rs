//! The delivery policies (`tidewire::policy`) driven by arbitrary operations, each checked
//! against a small model of what its docs promise. Time only moves forward; some operations
//! pass an older `now`, which every machine must treat as the newest one it has seen.
//!
//! Invariants:
//! - `Backoff`: a delay is at most `cap` (or the pending hint floor, which is at most
//!   `max_hint`) and at least that floor; `Jitter::None` gives exactly `min(cap, base·2ⁿ)`;
//!   no more than `max_attempts` delays and none past `max_elapsed` since the first failure;
//!   once it gives up it stays given up until a reset; a deadline never lies in the past;
//!   a healthy connection resets the counter.
//! - `Sequencer`: every accepted item comes out exactly once, in increasing order, with its
//!   payload; holes are given up only at their deadline; it never holds more than the window.
//! - `DedupWindow` and `RecentIds`: verdicts equal an exact model.
//! - `Outbox`: pops, outcomes and counters equal a naive model of the three slow-consumer
//!   policies; never more than `max_bytes` or `max_items` queued.
//! - `RateLimit`: over any interval `t`, at most `burst + rate·t` tokens are admitted; a
//!   refused check succeeds after its `retry_after`.
//! - `Heartbeat`: a ping never fires before its interval since the last activity (by its
//!   idle rule) and the last ping; expiry never before its timeout; `handle_timeout` acts
//!   only once `poll_timeout` has passed; nothing after expiry.
#![no_main]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidewire::policy::{
    Accepted, Backoff, BackoffConfig, Beat, DedupWindow, Heartbeat, HeartbeatConfig, IdleRule,
    Jitter, OrderError, Outbox, OutboxConfig, PushOutcome, RateLimit, RateLimitConfig, RecentIds,
    RetryHint, Sequencer, SequencerConfig, SlowConsumer, Verdict,
};
use tidewire::time::{Duration, Instant};
use tidewire::ws::{CloseClass, CloseCode};

fn ms(v: u16) -> Duration {
    Duration::from_millis(u64::from(v))
}

/// The instant a machine acts at when handed `call`: the newest it has seen.
fn at(last: &mut Instant, call: Instant) -> Instant {
    *last = (*last).max(call);
    *last
}

#[derive(Arbitrary, Debug)]
struct Config {
    base: u16,
    cap: u16,
    jitter: u8,
    healthy_after: u16,
    max_attempts: Option<u8>,
    max_elapsed: Option<u16>,
    restart_floor: u16,
    max_hint: u16,
    seed: u64,
    seq_window: u8,
    seq_gap: u16,
    seq_start: u64,
    dedup_window: u16,
    recent_capacity: u8,
    out_bytes: u8,
    out_items: u8,
    out_policy: u8,
    rate: u16,
    burst: u8,
    hb_interval: Option<u16>,
    hb_timeout: Option<u16>,
    hb_idle: u8,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Advance(u16),
    /// The next operation gets a `now` this far in the past.
    Stale(u16),
    Delay,
    Deadline,
    Connected,
    Disconnected,
    HintRetry(u16),
    HintRetryAfter(u16),
    HintClose(u16),
    Reset,
    SeqPush(i8, u8),
    SeqPop,
    SeqTimeout,
    SeqReset(u8),
    Dedup(u32),
    Recent(u8),
    OutPush {
        len: u8,
        key: Option<u8>,
    },
    OutPop,
    Rate(u8),
    HbInbound,
    HbOutbound,
    HbPong(u8),
    HbTimeout,
}

#[derive(Arbitrary, Debug)]
struct Input {
    cfg: Config,
    ops: Vec<Op>,
}

// ----- Backoff -----

struct BackoffCheck {
    cfg: BackoffConfig,
    b: Backoff,
    first_failure: Option<Instant>,
    given: u32,
    connected_since: Option<Instant>,
}

impl BackoffCheck {
    fn delay(&mut self, now: Instant, call: Instant) -> Option<Duration> {
        let floor = self.b.pending_floor();
        let exhausted = self.b.is_exhausted();
        let attempt = self.b.attempt();
        if let Some(f) = floor {
            assert!(f <= self.cfg.max_hint, "floor {f:?} above max_hint");
        }
        let d = self.b.next_delay(call);
        if exhausted {
            assert_eq!(d, None, "a delay after giving up");
        }
        let Some(d) = d else {
            assert!(self.b.is_exhausted());
            return None;
        };
        let first = *self.first_failure.get_or_insert(now);
        self.given += 1;
        assert_eq!(self.b.attempt(), attempt.saturating_add(1));
        if let Some(max) = self.cfg.max_attempts {
            assert!(self.given <= max, "{} delays, max_attempts {max}", self.given);
        }
        if let Some(max) = self.cfg.max_elapsed {
            assert!((now - first) + d <= max, "attempt past max_elapsed");
        }
        let hi = self.cfg.cap.max(floor.unwrap_or_default());
        assert!(d <= hi, "delay {d:?} above {hi:?} (cap {:?}, floor {floor:?})", self.cfg.cap);
        if let Some(f) = floor {
            assert!(d >= f, "delay {d:?} below the hint floor {f:?}");
        }
        let exp = if attempt >= 32 {
            self.cfg.cap
        } else {
            self.cfg.base.saturating_mul(1 << attempt).min(self.cfg.cap)
        };
        match self.cfg.jitter {
            Jitter::None => assert_eq!(d, exp.max(floor.unwrap_or_default())),
            Jitter::Equal => assert!(d >= exp / 2),
            Jitter::Decorrelated => assert!(d >= self.cfg.base.min(self.cfg.cap)),
            _ => {}
        }
        Some(d)
    }

    fn reset(&mut self) {
        self.first_failure = None;
        self.given = 0;
    }
}

// ----- Outbox model -----

#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    frame: Bytes,
    key: Option<u8>,
}

#[derive(Default)]
struct OutModel {
    slots: Vec<Slot>,
    disconnected: bool,
    queued: u64,
    dropped: u64,
    conflated: u64,
    sent: u64,
}

impl OutModel {
    fn bytes(&self) -> usize {
        self.slots.iter().map(|s| s.frame.len()).sum()
    }

    fn push(&mut self, cfg: &OutboxConfig, frame: Bytes, key: Option<u8>) -> PushOutcome {
        if self.disconnected {
            self.dropped += 1;
            return PushOutcome::Disconnect;
        }
        let disconnect = |m: &mut Self| {
            m.dropped += 1 + m.slots.len() as u64;
            m.slots.clear();
            m.disconnected = true;
            PushOutcome::Disconnect
        };
        if frame.len() > cfg.max_bytes || cfg.max_items == 0 {
            if cfg.policy == SlowConsumer::Disconnect {
                return disconnect(self);
            }
            self.dropped += 1;
            return PushOutcome::Dropped;
        }
        let conflate = cfg.policy == SlowConsumer::Conflate;
        if conflate
            && let Some(k) = key
            && let Some(mut i) = self.slots.iter().position(|s| s.key == Some(k))
        {
            self.slots[i].frame = frame;
            self.conflated += 1;
            // Drop the oldest other frames until the bytes fit again.
            while self.bytes() > cfg.max_bytes {
                let victim = if i == 0 { 1 } else { 0 };
                self.slots.remove(victim);
                self.dropped += 1;
                if victim < i {
                    i -= 1;
                }
            }
            return PushOutcome::Conflated;
        }
        let mut dropped = 0;
        while self.slots.len() >= cfg.max_items || self.bytes() + frame.len() > cfg.max_bytes {
            if cfg.policy == SlowConsumer::Disconnect {
                return disconnect(self);
            }
            self.slots.remove(0);
            self.dropped += 1;
            dropped += 1;
        }
        self.slots.push(Slot { frame, key: if conflate { key } else { None } });
        self.queued += 1;
        if dropped == 0 { PushOutcome::Queued } else { PushOutcome::DroppedOldest(dropped) }
    }

    fn pop(&mut self) -> Option<Bytes> {
        if self.slots.is_empty() {
            return None;
        }
        self.sent += 1;
        Some(self.slots.remove(0).frame)
    }
}

// ----- Heartbeat model -----

struct HbModel {
    cfg: HeartbeatConfig,
    last_in: Instant,
    last_out: Instant,
    last_ping: Option<(u64, Instant)>,
    unanswered_since: Option<Instant>,
    expired: bool,
}

impl HbModel {
    fn inbound(&mut self, now: Instant) {
        self.last_in = now;
        self.unanswered_since = None;
    }

    /// The earliest a ping may fire.
    fn ping_from(&self) -> Option<Instant> {
        let interval = self.cfg.interval?;
        let base = match self.cfg.idle {
            IdleRule::Inbound => Some(self.last_in),
            IdleRule::Outbound => Some(self.last_out),
            _ => None,
        };
        let ping = self.last_ping.map(|(_, at)| at);
        let from = match (base, ping) {
            (Some(b), Some(p)) => b.max(p),
            (Some(b), None) => b,
            (None, Some(p)) => p,
            (None, None) => self.last_in.min(self.last_out),
        };
        Some(from + interval)
    }

    fn dead_from(&self) -> Option<Instant> {
        let timeout = self.cfg.timeout?;
        if self.cfg.interval.is_none() {
            return Some(self.last_in + timeout);
        }
        self.unanswered_since.map(|s| s + timeout)
    }
}

fuzz_target!(|input: Input| {
    let c = &input.cfg;
    let t0 = Instant::now();
    let mut now = t0;
    let mut stale: Option<u16> = None;

    // Backoff.
    let jitter = [Jitter::Full, Jitter::Equal, Jitter::Decorrelated, Jitter::None]
        [usize::from(c.jitter % 4)];
    let bcfg = BackoffConfig {
        base: ms(c.base),
        cap: ms(c.cap),
        jitter,
        healthy_after: ms(c.healthy_after),
        max_attempts: c.max_attempts.map(u32::from),
        max_elapsed: c.max_elapsed.map(|v| ms(v) * 4),
        restart_floor: ms(c.restart_floor),
        max_hint: ms(c.max_hint) * 2,
    };
    let mut backoff = BackoffCheck {
        cfg: bcfg,
        b: Backoff::new(bcfg, c.seed),
        first_failure: None,
        given: 0,
        connected_since: None,
    };

    // Sequencer: items are their own sequence number plus a tag.
    let scfg = SequencerConfig { window: usize::from(c.seq_window), gap_timeout: ms(c.seq_gap) };
    let window = u64::from(c.seq_window.max(1));
    let start = c.seq_start % (u64::MAX - 1024);
    let mut seq: Sequencer<(u64, u8)> = Sequencer::new(scfg, start);
    let mut accepted: BTreeMap<u64, u8> = BTreeMap::new();
    let mut delivered_up_to: Option<u64> = None;
    let mut given_up: BTreeSet<u64> = BTreeSet::new();

    // Dedup.
    let mut dedup = DedupWindow::new(usize::from(c.dedup_window));
    let w = dedup.window();
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut high: Option<u64> = None;
    let cap = usize::from(c.recent_capacity).max(1);
    let mut recent: RecentIds<u8> = RecentIds::new(cap);
    let mut recent_model: VecDeque<u8> = VecDeque::new();

    // Outbox.
    let policy = [SlowConsumer::Disconnect, SlowConsumer::DropOldest, SlowConsumer::Conflate]
        [usize::from(c.out_policy % 3)];
    let ocfg = OutboxConfig {
        max_bytes: usize::from(c.out_bytes),
        max_items: usize::from(c.out_items % 16),
        policy,
    };
    let mut out: Outbox<u8> = Outbox::new(ocfg);
    let mut out_model = OutModel::default();
    let mut frame_no: u32 = 0;

    // Rate limit.
    let rcfg = RateLimitConfig { rate_per_sec: u32::from(c.rate), burst: u32::from(c.burst) };
    let mut rate = RateLimit::new(rcfg, t0);
    let mut admitted: Vec<(Instant, u64)> = Vec::new();

    // Heartbeat.
    let mut hcfg = HeartbeatConfig::default();
    hcfg.interval = c.hb_interval.map(|v| ms(v.max(1)));
    hcfg.timeout = c.hb_timeout.map(ms);
    hcfg.idle =
        [IdleRule::Inbound, IdleRule::Outbound, IdleRule::Fixed][usize::from(c.hb_idle % 3)];
    let mut hb = Heartbeat::new(hcfg, t0);
    let mut hbm = HbModel {
        cfg: hcfg,
        last_in: t0,
        last_out: t0,
        last_ping: None,
        unanswered_since: None,
        expired: false,
    };

    // The newest instant each machine has seen.
    let (mut b_now, mut s_now, mut r_now, mut h_now) = (t0, t0, t0, t0);

    for op in input.ops {
        // The instant passed to the machine; `now` stays the newest one.
        let call = match stale.take() {
            Some(back) => now.checked_sub(ms(back)).unwrap_or(t0).max(t0),
            None => now,
        };
        match op {
            Op::Advance(v) => now += ms(v),
            Op::Stale(v) => stale = Some(v),
            Op::Delay => drop(backoff.delay(at(&mut b_now, call), call)),
            Op::Deadline => {
                let now = at(&mut b_now, call);
                let before = backoff.b.clone();
                let at = backoff.b.next_deadline(call);
                // Same as a delay from the newest now.
                backoff.b = before;
                let d = backoff.delay(now, call);
                assert_eq!(at, d.map(|d| now + d));
                if let Some(at) = at {
                    assert!(at >= now, "deadline {at:?} in the past ({now:?})");
                }
            }
            Op::Connected => {
                let now = at(&mut b_now, call);
                backoff.b.on_connected(call);
                backoff.connected_since = Some(now);
            }
            Op::Disconnected => {
                let now = at(&mut b_now, call);
                backoff.b.on_disconnected(call);
                if let Some(since) = backoff.connected_since.take()
                    && now - since >= bcfg.healthy_after
                {
                    assert_eq!(backoff.b.attempt(), 0, "a healthy connection resets");
                    assert!(!backoff.b.is_exhausted());
                    backoff.reset();
                }
            }
            Op::HintRetry(v) => backoff.b.on_hint(RetryHint::SseRetry(ms(v))),
            Op::HintRetryAfter(v) => backoff.b.on_hint(RetryHint::RetryAfter(ms(v) * 8)),
            Op::HintClose(code) => {
                // The client's mapping: only 1012/1013 ask the backoff to wait.
                if CloseCode(code).class() == CloseClass::RetryLater {
                    backoff.b.on_hint(RetryHint::RetryLater);
                }
            }
            Op::Reset => {
                backoff.b.reset();
                backoff.reset();
            }

            Op::SeqPush(delta, tag) => {
                at(&mut s_now, call);
                let next = seq.next_expected();
                let s = next.saturating_add_signed(i64::from(delta));
                let r = seq.push(call, s, (s, tag));
                let expect = if s < next {
                    Ok(Accepted::Stale)
                } else if s - next >= window {
                    Err(OrderError::BeyondWindow { seq: s, limit: next.saturating_add(window) })
                } else if accepted.contains_key(&s) {
                    Ok(Accepted::Duplicate)
                } else if s == next {
                    Ok(Accepted::Ready)
                } else {
                    Ok(Accepted::Held)
                };
                assert_eq!(r, expect, "push {s} with next {next}");
                if matches!(r, Ok(Accepted::Ready | Accepted::Held)) {
                    accepted.insert(s, tag);
                }
                assert_eq!(seq.held(), accepted.len());
                assert!(seq.held() as u64 <= window);
            }
            Op::SeqPop => {
                if let Some((s, (inner, tag))) = seq.pop() {
                    assert_eq!(s, inner);
                    assert_eq!(accepted.remove(&s), Some(tag), "popped {s} not accepted");
                    assert!(delivered_up_to.is_none_or(|d| s > d), "{s} out of order");
                    assert!(!given_up.contains(&s));
                    delivered_up_to = Some(s);
                } else {
                    assert!(!accepted.contains_key(&seq.next_expected()));
                }
            }
            Op::SeqTimeout => {
                let now = at(&mut s_now, call);
                let due = seq.poll_timeout();
                let next = seq.next_expected();
                match seq.handle_timeout(call) {
                    Some(range) => {
                        assert!(due.is_some_and(|d| d <= now), "gave up a hole before its time");
                        assert_eq!(range.start, next);
                        assert!(range.end > range.start);
                        for s in range.clone() {
                            assert!(!accepted.contains_key(&s), "gave up held item {s}");
                            given_up.insert(s);
                        }
                        assert!(accepted.contains_key(&range.end), "skipped to a hole");
                    }
                    None => assert!(due.is_none_or(|d| d > now)),
                }
            }
            Op::SeqReset(v) => {
                let next = seq.next_expected().saturating_add(u64::from(v));
                seq.reset(next);
                accepted.clear();
                delivered_up_to = None;
                given_up.clear();
                assert_eq!(seq.held(), 0);
            }

            Op::Dedup(v) => {
                // Mostly near the high-water mark.
                let id = high.unwrap_or(1 << 40).wrapping_add(u64::from(v)).wrapping_sub(1 << 16);
                let expect = match high {
                    Some(h) if id <= h && h - id >= w => Verdict::TooOld,
                    _ if seen.contains(&id) => Verdict::Duplicate,
                    _ => Verdict::Fresh,
                };
                assert_eq!(dedup.check_and_insert(id), expect, "id {id}, high {high:?}");
                if expect != Verdict::TooOld {
                    seen.insert(id);
                    high = Some(high.map_or(id, |h| h.max(id)));
                    if let Some(h) = high {
                        seen.retain(|&s| h - s < w);
                    }
                }
                assert_eq!(dedup.high_water(), high);
            }
            Op::Recent(id) => {
                let expect =
                    if recent_model.contains(&id) { Verdict::Duplicate } else { Verdict::Fresh };
                assert_eq!(recent.check_and_insert(id), expect);
                if expect == Verdict::Fresh {
                    if recent_model.len() >= cap {
                        recent_model.pop_front();
                    }
                    recent_model.push_back(id);
                }
                assert_eq!(recent.len(), recent_model.len());
                assert!(recent.len() <= cap);
            }

            Op::OutPush { len, key } => {
                frame_no += 1;
                let mut f = frame_no.to_be_bytes().to_vec();
                f.resize(usize::from(len), b'.');
                let frame = Bytes::from(f);
                let key = key.map(|k| k % 4);
                let got = out.push(frame.clone(), key);
                let want = out_model.push(&ocfg, frame, key);
                assert_eq!(got, want);
            }
            Op::OutPop => assert_eq!(out.pop(), out_model.pop()),

            Op::Rate(cost) => {
                let now = at(&mut r_now, call);
                let cost = u32::from(cost % 8);
                let before = rate.clone();
                match rate.check(call, cost) {
                    Ok(()) => admitted.push((now, u64::from(cost))),
                    Err(e) => {
                        if e.retry_after != Duration::MAX {
                            let mut later = before;
                            let at = now + e.retry_after;
                            assert!(later.check(at, cost).is_ok(), "refused after retry_after");
                        }
                    }
                }
                // Over every interval ending now: admitted ≤ burst + rate·t.
                let mut sum: u128 = 0;
                for &(at, cost) in admitted.iter().rev() {
                    sum += u128::from(cost);
                    let t = (now - at).as_nanos();
                    let allowed =
                        u128::from(rcfg.burst) * 1_000_000_000 + u128::from(rcfg.rate_per_sec) * t;
                    assert!(sum * 1_000_000_000 <= allowed, "rate limit admitted too much");
                }
            }

            Op::HbInbound => {
                let now = at(&mut h_now, call);
                hb.on_inbound(call);
                hbm.inbound(now);
            }
            Op::HbOutbound => {
                let now = at(&mut h_now, call);
                hb.on_outbound(call);
                hbm.last_out = now;
            }
            Op::HbPong(t) => {
                let now = at(&mut h_now, call);
                hb.on_pong(call, u64::from(t % 4));
                hbm.inbound(now);
            }
            Op::HbTimeout => {
                let now = at(&mut h_now, call);
                let due = hb.poll_timeout();
                let beat = hb.handle_timeout(call);
                if beat.is_some() {
                    assert!(due.is_some_and(|d| d <= now), "fired before poll_timeout");
                }
                match beat {
                    Some(Beat::SendPing(token)) => {
                        assert!(!hbm.expired);
                        let from = hbm.ping_from().expect("a ping without an interval");
                        assert!(now >= from, "ping at {now:?} before {from:?}");
                        let prev = hbm.last_ping.map_or(0, |(t, _)| t);
                        assert_eq!(token, prev + 1);
                        hbm.last_ping = Some((token, now));
                        hbm.last_out = now;
                        hbm.unanswered_since.get_or_insert(now);
                    }
                    Some(Beat::Expired) => {
                        assert!(!hbm.expired);
                        let from = hbm.dead_from().expect("expired without a timeout");
                        assert!(now >= from, "expired at {now:?} before {from:?}");
                        hbm.expired = true;
                        assert!(hb.is_expired());
                    }
                    Some(_) => {}
                    None => {
                        if !hbm.expired {
                            assert!(hbm.ping_from().is_none_or(|p| p > now), "missed a ping");
                            assert!(hbm.dead_from().is_none_or(|d| d > now), "missed expiry");
                        }
                    }
                }
                if hbm.expired {
                    assert_eq!(hb.poll_timeout(), None);
                }
            }
        }
        assert!(out.bytes() <= ocfg.max_bytes && out.len() <= ocfg.max_items);
        assert_eq!((out.len(), out.bytes()), (out_model.slots.len(), out_model.bytes()));
        let cnt = out.counters();
        let m = &out_model;
        assert_eq!(
            (cnt.queued, cnt.dropped, cnt.conflated, cnt.sent),
            (m.queued, m.dropped, m.conflated, m.sent)
        );
    }

    // Every accepted item comes out, in order, once the holes are given up.
    let end = now.max(s_now) + Duration::from_secs(1 << 20);
    loop {
        while let Some((s, _)) = seq.pop() {
            assert!(accepted.remove(&s).is_some(), "popped {s} twice or never accepted");
            assert!(delivered_up_to.is_none_or(|d| s > d));
            delivered_up_to = Some(s);
        }
        if seq.handle_timeout(end).is_none() {
            break;
        }
    }
    assert!(accepted.is_empty(), "accepted but never delivered: {accepted:?}");
});
