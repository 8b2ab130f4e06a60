//! What the scheduler counts, for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::limit::Outcome;

/// Upper bounds of the latency histogram's buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram with fixed buckets; lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), the last for `+Inf`.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(value.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`], then `+Inf`.
    pub fn cumulative(&self) -> Vec<u64> {
        let mut total = 0;
        self.counts
            .iter()
            .map(|count| {
                total += count.load(Ordering::Relaxed);
                total
            })
            .collect()
    }

    /// The sum of all observations.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_micros.load(Ordering::Relaxed))
    }
}

/// Counters of the scheduler since it started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Groups let in.
    pub admitted: AtomicU64,
    /// Groups refused because the queue was full.
    pub rejected: AtomicU64,
    /// Calls dispatched, retries included.
    pub calls: AtomicU64,
    /// Retries made.
    pub retries: AtomicU64,
    /// Retries not made because the budget was empty.
    pub budget_exhausted: AtomicU64,
    /// Groups and attempts refused because the backend is down.
    pub unavailable: AtomicU64,
    /// Times the breaker opened.
    pub breaker_opened: AtomicU64,
    /// Latency of successful calls.
    pub latency_success: Histogram,
    /// Latency of throttled or timed-out calls.
    pub latency_loss: Histogram,
    /// Latency of calls that failed otherwise or were cancelled.
    pub latency_other: Histogram,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn observe(&self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Success => &self.latency_success,
            Outcome::Loss => &self.latency_loss,
            Outcome::Ignore => &self.latency_other,
        }
        .observe(latency);
    }
}

/// A snapshot of the scheduler's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// The limit on calls in flight now (`usize::MAX` when unbounded).
    pub limit: usize,
    /// Calls in flight.
    pub in_flight: usize,
    /// Jobs waiting in the queue.
    pub queued_jobs: usize,
    /// Bytes of the jobs waiting.
    pub queued_bytes: u64,
    /// Whether the adaptive limit is probing the no-load latency (the limit
    /// is then briefly halved).
    pub probing: bool,
}
