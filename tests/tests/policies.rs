//! Properties of the delivery policies and the timer queue, checked with proptest against
//! simple models. Time is virtual: one `Instant::now()` per case, then offsets from it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tidewire::policy::{
    Accepted, Backoff, BackoffConfig, DedupWindow, Jitter, Outbox, OutboxConfig, PushOutcome,
    RateLimit, RateLimitConfig, RecentIds, RetryHint, Sequencer, SequencerConfig, SlowConsumer,
    Verdict,
};
use tidewire::time::{Duration, Instant, TimerQueue};

/// Failing cases are saved next to this file (`policies.regressions`): the default looks
/// for a `lib.rs` above it, which an integration test does not have.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated),
        Just(Jitter::None)
    ]
}

// ---------------------------------------------------------------------------------------
// Backoff

proptest! {
    #![proptest_config(config())]

    /// Every delay is within its jitter mode's bound and never above the cap.
    #[test]
    fn backoff_delays_stay_in_bounds(
        base_ms in 0u64..5_000,
        cap_ms in 0u64..60_000,
        jitter in jitter(),
        seed in any::<u64>(),
        attempts in 1usize..60,
    ) {
        let t0 = Instant::now();
        let cfg = BackoffConfig { base: ms(base_ms), cap: ms(cap_ms), jitter, ..BackoffConfig::default() };
        let mut b = Backoff::new(cfg, seed);
        let mut prev = cfg.base;
        for n in 0..attempts {
            let d = b.next_delay(t0).expect("no limits configured");
            let exp = if n >= 32 { cfg.cap } else { cfg.base.saturating_mul(1 << n).min(cfg.cap) };
            prop_assert!(d <= cfg.cap, "attempt {n}: {d:?} above cap");
            match jitter {
                Jitter::Full => prop_assert!(d <= exp),
                Jitter::Equal => prop_assert!(d >= exp / 2 && d <= exp),
                Jitter::None => prop_assert_eq!(d, exp),
                _ => {
                    prop_assert!(d >= cfg.base.min(cfg.cap));
                    prop_assert!(d <= prev.saturating_mul(3).max(cfg.base).min(cfg.cap));
                    prev = d;
                }
            }
        }
        prop_assert_eq!(b.attempt() as usize, attempts);
    }

    /// A hint raises the next delay to at least min(hint, max_hint), never above
    /// max(cap, max_hint), and only that one delay.
    #[test]
    fn backoff_hints_raise_one_floor_within_max_hint(
        hint_ms in 0u64..1_000_000,
        max_hint_ms in 0u64..600_000,
        seed in any::<u64>(),
        jitter in jitter(),
    ) {
        let t0 = Instant::now();
        let cfg = BackoffConfig { jitter, max_hint: ms(max_hint_ms), ..BackoffConfig::default() };
        let mut b = Backoff::new(cfg, seed);
        b.on_hint(RetryHint::RetryAfter(ms(hint_ms)));
        let d = b.next_delay(t0).unwrap();
        prop_assert!(d >= ms(hint_ms.min(max_hint_ms)));
        prop_assert!(d <= cfg.cap.max(cfg.max_hint));
        for _ in 0..10 {
            prop_assert!(b.next_delay(t0).unwrap() <= cfg.cap);
        }
    }

    /// The attempt counter resets when a connection lasted at least `healthy_after`, and
    /// only then.
    #[test]
    fn backoff_resets_only_after_a_healthy_connection(
        failures in 1u32..20,
        up_ms in 0u64..30_000,
        healthy_ms in 0u64..20_000,
        seed in any::<u64>(),
    ) {
        let t0 = Instant::now();
        let cfg = BackoffConfig { healthy_after: ms(healthy_ms), ..BackoffConfig::default() };
        let mut b = Backoff::new(cfg, seed);
        for _ in 0..failures {
            b.next_delay(t0);
        }
        b.on_connected(t0 + ms(1));
        b.on_disconnected(t0 + ms(1 + up_ms));
        if up_ms >= healthy_ms {
            prop_assert_eq!(b.attempt(), 0);
        } else {
            prop_assert_eq!(b.attempt(), failures);
        }
    }
}

/// Full jitter draws uniformly from [0, d], so over many clients the mean delay is d/2.
/// The standard deviation of one draw is d/√12 ≈ 0.29·d, so the mean of 20,000 draws has a
/// standard deviation of about 0.002·d; a tolerance of 1% of d is about 5 standard deviations.
#[test]
fn full_jitter_mean_is_half_the_exponential() {
    let t0 = Instant::now();
    let clients = 20_000u32;
    let mut sums = [Duration::ZERO; 6];
    for seed in 0..clients {
        let mut b = Backoff::new(BackoffConfig::default(), u64::from(seed));
        for sum in &mut sums {
            *sum += b.next_delay(t0).unwrap();
        }
    }
    for (attempt, sum) in sums.into_iter().enumerate() {
        let mean = sum / clients;
        let exp = Duration::from_secs(1 << attempt).min(Duration::from_secs(30));
        let diff = mean.abs_diff(exp / 2);
        assert!(diff <= exp / 100, "attempt {attempt}: mean {mean:?}, expected {:?}", exp / 2);
    }
}

// ---------------------------------------------------------------------------------------
// Sequencer

/// A stream of `n` items of which some are lost, delivered shuffled and with duplicates,
/// each at an arrival offset in milliseconds.
fn stream() -> impl Strategy<Value = (u64, BTreeSet<u64>, Vec<(u64, u64)>)> {
    (1usize..150).prop_flat_map(|n| {
        let top = n as u64;
        (
            Just(top),
            proptest::collection::btree_set(0..top, 0..=n / 3),
            proptest::collection::vec((0..top, 0u64..1_000), 0..n),
            proptest::collection::vec(0u64..1_000, n),
            any::<u64>(),
        )
            .prop_map(|(n, lost, dups, times, shuffle)| {
                let mut arrivals: Vec<(u64, u64)> = (0..n)
                    .zip(times)
                    .filter(|(s, _)| !lost.contains(s))
                    .map(|(s, t)| (t, s))
                    .chain(dups.into_iter().filter(|(s, _)| !lost.contains(s)).map(|(s, t)| (t, s)))
                    .collect();
                // Sort by time, ties in an order fixed by `shuffle`.
                arrivals.sort_by_key(|&(t, s)| (t, s.wrapping_mul(shuffle | 1)));
                (n, lost, arrivals)
            })
    })
}

proptest! {
    #![proptest_config(config())]

    /// Every item that arrives before its gap times out is delivered exactly once, in order,
    /// and the gaps given up are exactly the items never sent (below the highest one sent:
    /// nothing is held past a loss at the tail, so it is not a gap), each exactly at its
    /// deadline.
    #[test]
    fn sequencer_delivers_once_in_order_and_reports_real_gaps((n, lost, arrivals) in stream()) {
        let t0 = Instant::now();
        // All items arrive within 1 s; a gap lives 5 s, so no real item is given up.
        let gap_timeout = Duration::from_secs(5);
        let mut s = Sequencer::new(SequencerConfig { window: 1024, gap_timeout }, 0);
        let mut delivered = Vec::new();
        let mut gaps: Vec<(std::ops::Range<u64>, Instant)> = Vec::new();
        let mut pushed_at: HashMap<u64, Instant> = HashMap::new();
        let mut now = t0;
        for &(t, seq) in &arrivals {
            now = t0 + ms(t);
            let verdict = s.push(now, seq, seq).unwrap();
            let first = !pushed_at.contains_key(&seq);
            pushed_at.entry(seq).or_insert(now);
            if !first {
                prop_assert!(matches!(verdict, Accepted::Stale | Accepted::Duplicate));
            }
            prop_assert!(s.held() <= 1024);
            prop_assert_eq!(s.handle_timeout(now), None);
            while let Some((seq, item)) = s.pop() {
                prop_assert_eq!(seq, item);
                delivered.push(seq);
            }
        }
        // Jump to each gap deadline in turn, as a run loop would.
        while let Some(deadline) = s.poll_timeout() {
            prop_assert!(deadline >= now);
            if deadline > now {
                // Never before the deadline (time only moves forward, so test just before).
                prop_assert_eq!(s.handle_timeout(deadline - Duration::from_nanos(1)), None);
            }
            now = deadline;
            let gap = s.handle_timeout(now).expect("a due deadline gives up a gap");
            gaps.push((gap, now));
            while let Some((seq, _)) = s.pop() {
                delivered.push(seq);
            }
        }

        let sent: BTreeSet<u64> = (0..n).filter(|x| !lost.contains(x)).collect();
        prop_assert_eq!(delivered, sent.iter().copied().collect::<Vec<_>>());
        let top = sent.iter().next_back().copied();
        let real_gaps: BTreeSet<u64> =
            lost.iter().copied().filter(|&x| top.is_some_and(|t| x < t)).collect();
        let reported: Vec<u64> = gaps.iter().flat_map(|(r, _)| r.clone()).collect();
        prop_assert_eq!(reported.len(), real_gaps.len(), "a gap was reported twice");
        prop_assert_eq!(reported.iter().copied().collect::<BTreeSet<_>>(), real_gaps);
        // Each gap is given up exactly gap_timeout after something was first held past it.
        for (r, at) in &gaps {
            let first_past =
                pushed_at.iter().filter(|(seq, _)| **seq >= r.end).map(|(_, t)| *t).min();
            prop_assert_eq!(Some(*at), first_past.map(|f| f + gap_timeout));
        }
        prop_assert_eq!(s.held(), 0);
    }

    /// With any timing and a small window: never more than the window held, delivery strictly
    /// increasing and exactly once, and nothing delivered that a reported gap covers.
    #[test]
    fn sequencer_stays_bounded_and_ordered_under_any_timing(
        window in 1usize..16,
        events in proptest::collection::vec((0u64..40, 0u64..300), 0..300),
    ) {
        let t0 = Instant::now();
        let mut s = Sequencer::new(SequencerConfig { window, gap_timeout: ms(100) }, 0);
        let mut now = t0;
        let mut delivered = Vec::new();
        let mut skipped = BTreeSet::new();
        for (seq, dt) in events {
            now += ms(dt);
            if let Ok(Accepted::Stale) = s.push(now, seq, seq) {
                prop_assert!(seq < s.next_expected());
            }
            prop_assert!(s.held() <= window);
            loop {
                while let Some((seq, _)) = s.pop() {
                    delivered.push(seq);
                }
                match s.handle_timeout(now) {
                    Some(r) => skipped.extend(r),
                    None => break,
                }
            }
        }
        prop_assert!(delivered.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(delivered.iter().all(|d| !skipped.contains(d)));
    }
}

// ---------------------------------------------------------------------------------------
// Dedup

proptest! {
    #![proptest_config(config())]

    /// DedupWindow against a set of everything seen: an unseen id inside the window is
    /// always Fresh, a seen one always Duplicate, and TooOld only below the window.
    #[test]
    fn dedup_window_matches_a_full_set(
        window in 1usize..300,
        ids in proptest::collection::vec(0u64..2_000, 0..500),
    ) {
        let mut w = DedupWindow::new(window);
        let width = w.window();
        let mut seen = HashSet::new();
        let mut high: Option<u64> = None;
        for id in ids {
            let v = w.check_and_insert(id);
            let too_old = high.is_some_and(|h| id < h && h - id >= width);
            if too_old {
                prop_assert_eq!(v, Verdict::TooOld);
            } else if seen.contains(&id) {
                prop_assert_eq!(v, Verdict::Duplicate);
            } else {
                prop_assert_eq!(v, Verdict::Fresh);
                seen.insert(id);
            }
            high = Some(high.map_or(id, |h| h.max(id)));
        }
    }

    /// RecentIds against a list of the last N distinct ids.
    #[test]
    fn recent_ids_match_a_list_of_the_last_n(
        cap in 1usize..20,
        ids in proptest::collection::vec(0u8..40, 0..400),
    ) {
        let mut r: RecentIds<Bytes> = RecentIds::new(cap);
        let mut model: VecDeque<u8> = VecDeque::new();
        for id in ids {
            let v = r.check_and_insert(Bytes::from(vec![id]));
            if model.contains(&id) {
                prop_assert_eq!(v, Verdict::Duplicate);
            } else {
                prop_assert_eq!(v, Verdict::Fresh);
                if model.len() == cap {
                    model.pop_front();
                }
                model.push_back(id);
            }
            prop_assert_eq!(r.len(), model.len());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Outbox

#[derive(Clone, Debug)]
enum OutOp {
    Push { len: usize, key: Option<u8> },
    Pop,
}

fn out_op() -> impl Strategy<Value = OutOp> {
    prop_oneof![
        3 => (0usize..400, proptest::option::of(0u8..6)).prop_map(|(len, key)| OutOp::Push { len, key }),
        1 => Just(OutOp::Pop),
    ]
}

fn policy() -> impl Strategy<Value = SlowConsumer> {
    prop_oneof![
        Just(SlowConsumer::Disconnect),
        Just(SlowConsumer::DropOldest),
        Just(SlowConsumer::Conflate)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..config() })]

    /// The byte and item bounds hold after every operation, `bytes()` is the sum of the
    /// queued frames, and the counters account for every frame.
    #[test]
    fn outbox_never_exceeds_its_bounds(
        max_bytes in 0usize..1_000,
        max_items in 0usize..12,
        policy in policy(),
        ops in proptest::collection::vec(out_op(), 0..300),
    ) {
        let cfg = OutboxConfig { max_bytes, max_items, policy };
        let mut out: Outbox<u8> = Outbox::new(cfg);
        let mut refused = 0u64;
        for op in ops {
            match op {
                OutOp::Push { len, key } => {
                    let outcome = out.push(Bytes::from(vec![0; len]), key);
                    if matches!(outcome, PushOutcome::Dropped | PushOutcome::Disconnect) {
                        refused += 1;
                    }
                    if outcome == PushOutcome::Disconnect {
                        prop_assert!(out.is_disconnected() && out.is_empty());
                    }
                }
                OutOp::Pop => {
                    let _ = out.pop();
                }
            }
            prop_assert!(out.bytes() <= max_bytes);
            prop_assert!(out.len() <= max_items);
            let c = out.counters();
            prop_assert_eq!(c.queued, c.sent + (c.dropped - refused) + out.len() as u64);
        }
        let bytes = out.bytes();
        let mut sum = 0;
        while let Some(f) = out.pop() {
            sum += f.len();
        }
        prop_assert_eq!(sum, bytes);
    }

    /// Without pressure, conflation keeps the latest value per key at the key's place in the
    /// order; frames without a key are never merged.
    #[test]
    fn conflation_keeps_the_latest_value_and_the_key_order(
        ops in proptest::collection::vec(
            prop_oneof![
                4 => (proptest::option::of(0u8..5), any::<u16>()).prop_map(Some),
                1 => Just(None),
            ],
            0..300,
        ),
    ) {
        let cfg = OutboxConfig { max_bytes: usize::MAX, max_items: usize::MAX, policy: SlowConsumer::Conflate };
        let mut out: Outbox<u8> = Outbox::new(cfg);
        let mut model: VecDeque<(Option<u8>, u16)> = VecDeque::new();
        for op in ops {
            match op {
                Some((key, value)) => {
                    let frame = Bytes::copy_from_slice(&value.to_be_bytes());
                    let outcome = out.push(frame, key);
                    match key.and_then(|k| model.iter_mut().find(|(mk, _)| *mk == Some(k))) {
                        Some(slot) => {
                            slot.1 = value;
                            prop_assert_eq!(outcome, PushOutcome::Conflated);
                        }
                        None => {
                            model.push_back((key, value));
                            prop_assert_eq!(outcome, PushOutcome::Queued);
                        }
                    }
                }
                None => {
                    let got = out.pop().map(|f| u16::from_be_bytes([f[0], f[1]]));
                    prop_assert_eq!(got, model.pop_front().map(|(_, v)| v));
                }
            }
        }
        let rest: Vec<u16> = std::iter::from_fn(|| out.pop()).map(|f| u16::from_be_bytes([f[0], f[1]])).collect();
        prop_assert_eq!(rest, model.into_iter().map(|(_, v)| v).collect::<Vec<_>>());
    }
}

// ---------------------------------------------------------------------------------------
// Rate limit

proptest! {
    #![proptest_config(config())]

    /// Over any interval [t_i, t_j] between two checks, the admitted cost is at most
    /// burst + rate · (t_j − t_i).
    #[test]
    fn rate_limit_never_admits_more_than_burst_plus_rate_times_t(
        rate in 0u32..2_000,
        burst in 0u32..50,
        checks in proptest::collection::vec((0u64..50_000_000, 0u32..10), 1..150),
    ) {
        let t0 = Instant::now();
        let mut rl = RateLimit::new(RateLimitConfig { rate_per_sec: rate, burst }, t0);
        let mut now_ns = 0u64;
        let mut admitted: Vec<(u64, u32)> = Vec::new();
        for (dt_ns, cost) in checks {
            now_ns += dt_ns;
            if rl.check(t0 + Duration::from_nanos(now_ns), cost).is_ok() {
                admitted.push((now_ns, cost));
            }
        }
        for i in 0..admitted.len() {
            let mut total = 0u128;
            for j in i..admitted.len() {
                total += u128::from(admitted[j].1);
                let span = u128::from(admitted[j].0 - admitted[i].0);
                let allowance = u128::from(burst) * 1_000_000_000 + u128::from(rate) * span;
                prop_assert!(total * 1_000_000_000 <= allowance, "{total} tokens in {span} ns");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Timer queue

#[derive(Clone, Debug)]
enum TimerOp {
    Set(u8, u64),
    Cancel(u8),
    Advance(u64),
}

fn timer_op() -> impl Strategy<Value = TimerOp> {
    prop_oneof![
        4 => (0u8..32, 0u64..1_000).prop_map(|(k, at)| TimerOp::Set(k, at)),
        1 => (0u8..32).prop_map(TimerOp::Cancel),
        2 => (0u64..200).prop_map(TimerOp::Advance),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// TimerQueue against a map scanned in full: the same deadlines pop, all of those <= now
    /// and none later, earliest first and ties in the order they were set.
    #[test]
    fn timer_queue_matches_a_naive_scan(ops in proptest::collection::vec(timer_op(), 0..400)) {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        // key -> (deadline offset, set order)
        let mut model: HashMap<u8, (u64, u64)> = HashMap::new();
        let mut order = 0u64;
        let mut now = 0u64;
        for op in ops {
            match op {
                TimerOp::Set(k, at) => {
                    q.set(k, t0 + ms(at));
                    model.insert(k, (at, order));
                    order += 1;
                }
                TimerOp::Cancel(k) => {
                    prop_assert_eq!(q.cancel(k), model.remove(&k).map(|(at, _)| t0 + ms(at)));
                }
                TimerOp::Advance(dt) => {
                    now += dt;
                    let mut due: Vec<(u64, u64, u8)> =
                        model.iter().filter(|(_, (at, _))| *at <= now).map(|(k, (at, o))| (*at, *o, *k)).collect();
                    due.sort_unstable();
                    for (at, _, k) in due {
                        prop_assert_eq!(q.pop_expired(t0 + ms(now)), Some((k, t0 + ms(at))));
                        model.remove(&k);
                    }
                    prop_assert_eq!(q.pop_expired(t0 + ms(now)), None);
                }
            }
            prop_assert_eq!(q.len(), model.len());
            prop_assert_eq!(q.next_deadline(), model.values().map(|(at, _)| t0 + ms(*at)).min());
        }
    }
}
