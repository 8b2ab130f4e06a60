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
pub(crate) struct Histogram {
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

    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self.counts.each_ref().map(load),
            sum_micros: load(&self.sum_micros),
        }
    }
}

/// A latency histogram as read at one moment (see
/// [`Scheduler::counters`](crate::Scheduler::counters)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative), the last for `+Inf`.
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum_micros: u64,
}

impl HistogramSnapshot {
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`], then `+Inf`
    /// (the number of observations).
    pub fn cumulative(&self) -> [u64; LATENCY_BUCKETS.len() + 1] {
        let mut total = 0;
        self.counts.map(|count| {
            total += count;
            total
        })
    }

    /// The sum of all observations.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_micros)
    }
}

/// The scheduler's counters, kept lock-free as it runs; read through
/// [`Counters::snapshot`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) admitted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) calls: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) budget_exhausted: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) breaker_opened: AtomicU64,
    latency_success: Histogram,
    latency_loss: Histogram,
    latency_other: Histogram,
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

    /// Every counter now. Each is read on its own: a snapshot taken while
    /// calls run may count a call in one counter and not yet in another.
    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            admitted: load(&self.admitted),
            rejected: load(&self.rejected),
            calls: load(&self.calls),
            retries: load(&self.retries),
            budget_exhausted: load(&self.budget_exhausted),
            unavailable: load(&self.unavailable),
            breaker_opened: load(&self.breaker_opened),
            latency_success: self.latency_success.snapshot(),
            latency_loss: self.latency_loss.snapshot(),
            latency_other: self.latency_other.snapshot(),
        }
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The scheduler's counters since it started, as read at one moment (see
/// [`Scheduler::counters`](crate::Scheduler::counters)). Every count only
/// grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Groups let in.
    pub admitted: u64,
    /// Groups refused because the queue was full.
    pub rejected: u64,
    /// Calls dispatched, retries included.
    pub calls: u64,
    /// Retries made.
    pub retries: u64,
    /// Retries not made because the budget was empty.
    pub budget_exhausted: u64,
    /// Groups and attempts refused because the backend is down.
    pub unavailable: u64,
    /// Times the breaker opened.
    pub breaker_opened: u64,
    /// Latency of successful calls.
    pub latency_success: HistogramSnapshot,
    /// Latency of throttled or timed-out calls.
    pub latency_loss: HistogramSnapshot,
    /// Latency of calls that failed otherwise or were cancelled.
    pub latency_other: HistogramSnapshot,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_every_counter_and_bucket() {
        let counters = Counters::default();
        Counters::bump(&counters.calls);
        Counters::bump(&counters.calls);
        Counters::bump(&counters.rejected);
        counters.observe(Outcome::Success, Duration::from_millis(2));
        counters.observe(Outcome::Success, Duration::from_secs(60));
        counters.observe(Outcome::Loss, Duration::from_millis(1));
        let snapshot = counters.snapshot();
        assert_eq!(
            (snapshot.calls, snapshot.rejected, snapshot.retries),
            (2, 1, 0)
        );
        let success = snapshot.latency_success.cumulative();
        // 2 ms falls in the bucket up to 2.5 ms; 60 s only in +Inf.
        assert_eq!(success[..3], [0, 1, 1]);
        assert_eq!(success[LATENCY_BUCKETS.len() - 1], 1);
        assert_eq!(success[LATENCY_BUCKETS.len()], 2);
        let sum = Duration::from_secs(60) + Duration::from_millis(2);
        assert_eq!(snapshot.latency_success.sum(), sum);
        assert_eq!(snapshot.latency_loss.cumulative()[0], 1);
        assert_eq!(snapshot.latency_other, HistogramSnapshot::default());
    }
}
