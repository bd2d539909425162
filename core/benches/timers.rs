//! Timer queue benchmarks: [`TimerQueue`] (binary heap with lazy deletion) against a naive
//! `Vec` that is scanned in full, at 10k and 100k armed deadlines.
//!
//! Run briefly with
//! `cargo bench -p tidewire --bench timers -- --warm-up-time 1 --measurement-time 2`.
//!
//! Every key is a periodic timer (a heartbeat): deadlines are spread uniformly over a
//! 100 s period and a fired timer is re-armed one period later, so each 1 s `handle_timeout`
//! step fires ~1% of the keys, forever.
//!
//! - `wake_at_deadline`: the run loop as adapters drive it: wake at `poll_timeout`, fire what
//!   is due (usually one timer), re-arm it, read the next deadline.
//! - `step`: one `handle_timeout`: fire everything due at `now` and re-arm it, then know the
//!   next deadline (the heap: k pops and k pushes, O(k log n); the Vec: one O(n) pass).
//! - `set`: re-arm one key (the heap: O(log n) amortized; the Vec: find the key, O(n)).
//! - `next_deadline`: the `poll_timeout` every run-loop turn (the heap: O(1); the Vec: O(n)).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_main};
use tidewire::rng::Rng;
use tidewire::time::{Duration, Instant, TimerQueue};

const PERIOD: Duration = Duration::from_secs(100);
const STEP: Duration = Duration::from_secs(1);
const SIZES: [u32; 2] = [10_000, 100_000];

#[allow(clippy::disallowed_methods, reason = "a bench starts virtual time from one real instant")]
fn start() -> Instant {
    Instant::now()
}

/// `n` deadlines spread uniformly over one period after `t0`.
fn deadlines(t0: Instant, n: u32) -> Vec<(u32, Instant)> {
    let mut rng = Rng::from_u64(7);
    (0..n).map(|k| (k, t0 + rng.duration_up_to(PERIOD))).collect()
}

fn heap_of(ds: &[(u32, Instant)]) -> TimerQueue<u32> {
    let mut q = TimerQueue::with_capacity(ds.len());
    for &(k, at) in ds {
        q.set(k, at);
    }
    q
}

/// The naive queue: fire and re-arm everything due, and find the next deadline, in one pass.
fn naive_step(v: &mut [(u32, Instant)], now: Instant) -> (usize, Option<Instant>) {
    let mut fired = 0;
    let mut next: Option<Instant> = None;
    for (_, at) in v.iter_mut() {
        if *at <= now {
            *at += PERIOD;
            fired += 1;
        }
        next = Some(next.map_or(*at, |n| n.min(*at)));
    }
    (fired, next)
}

fn step(c: &mut Criterion) {
    let mut g = c.benchmark_group("timers/step");
    for n in SIZES {
        let t0 = start();
        let ds = deadlines(t0, n);

        let mut q = heap_of(&ds);
        let mut now = t0;
        g.bench_function(BenchmarkId::new("heap", n), |b| {
            b.iter(|| {
                now += STEP;
                let mut fired = 0;
                while let Some((k, at)) = q.pop_expired(now) {
                    q.set(k, at + PERIOD);
                    fired += 1;
                }
                black_box((fired, q.next_deadline()))
            });
        });

        let mut v = ds.clone();
        let mut now = t0;
        g.bench_function(BenchmarkId::new("naive_vec", n), |b| {
            b.iter(|| {
                now += STEP;
                black_box(naive_step(&mut v, now))
            });
        });
    }
    g.finish();
}

/// The run-loop pattern: the adapter wakes exactly at `poll_timeout`, so each
/// `handle_timeout` fires the one (or few) timers due then and re-arms them. This is the
/// O(expired + log n) vs O(n) comparison the hub cares about.
fn wake(c: &mut Criterion) {
    let mut g = c.benchmark_group("timers/wake_at_deadline");
    for n in SIZES {
        let t0 = start();
        let ds = deadlines(t0, n);

        let mut q = heap_of(&ds);
        g.bench_function(BenchmarkId::new("heap", n), |b| {
            b.iter(|| {
                let now = q.next_deadline().unwrap_or(t0);
                let mut fired = 0;
                while let Some((k, at)) = q.pop_expired(now) {
                    q.set(k, at + PERIOD);
                    fired += 1;
                }
                black_box((fired, q.next_deadline()))
            });
        });

        let mut v = ds.clone();
        let mut now = v.iter().map(|&(_, at)| at).min().unwrap_or(t0);
        g.bench_function(BenchmarkId::new("naive_vec", n), |b| {
            b.iter(|| {
                let (fired, next) = naive_step(&mut v, now);
                now = next.unwrap_or(now);
                black_box(fired)
            });
        });
    }
    g.finish();
}

fn set(c: &mut Criterion) {
    let mut g = c.benchmark_group("timers/set");
    for n in SIZES {
        let t0 = start();
        let ds = deadlines(t0, n);
        // Re-arm keys in a scattered order to deadlines in the period after the first.
        let mut rng = Rng::from_u64(11);
        let rearm: Vec<(u32, Instant)> = (0..4096)
            .map(|_| {
                let k = u32::try_from(rng.up_to(u64::from(n - 1))).unwrap_or(0);
                (k, t0 + PERIOD + rng.duration_up_to(PERIOD))
            })
            .collect();

        let mut q = heap_of(&ds);
        let mut i = 0;
        g.bench_function(BenchmarkId::new("heap", n), |b| {
            b.iter(|| {
                let (k, at) = rearm[i % rearm.len()];
                i += 1;
                q.set(k, at);
            });
        });

        let mut v = ds.clone();
        let mut i = 0;
        g.bench_function(BenchmarkId::new("naive_vec", n), |b| {
            b.iter(|| {
                let (k, at) = rearm[i % rearm.len()];
                i += 1;
                if let Some(slot) = v.iter_mut().find(|(key, _)| *key == k) {
                    slot.1 = at;
                }
            });
        });
    }
    g.finish();
}

fn next_deadline(c: &mut Criterion) {
    let mut g = c.benchmark_group("timers/next_deadline");
    for n in SIZES {
        let t0 = start();
        let ds = deadlines(t0, n);
        let q = heap_of(&ds);
        g.bench_function(BenchmarkId::new("heap", n), |b| {
            b.iter(|| black_box(&q).next_deadline());
        });
        g.bench_function(BenchmarkId::new("naive_vec", n), |b| {
            b.iter(|| black_box(&ds).iter().map(|&(_, at)| at).min());
        });
    }
    g.finish();
}

/// The `criterion` entry points (the macro's generated function has no doc comment).
#[allow(missing_docs)]
mod harness {
    use super::{next_deadline, set, step, wake};
    criterion::criterion_group!(benches, wake, step, set, next_deadline);
}

criterion_main!(harness::benches);
