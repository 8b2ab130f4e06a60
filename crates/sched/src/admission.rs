//! Admission: whether new work may wait for a slot, and if not, when to
//! come back.
//!
//! The queue is bounded in jobs and bytes ([`QueueConfig`]). Past either
//! bound, a new group ([`Scheduler::group`](crate::Scheduler::group)) and
//! a new job of an admitted one are refused with a suggested wait rather
//! than queued: a request refused before its body is read costs the client
//! a retry, while one queued behind minutes of work costs it a timeout and
//! the process its memory. The wait is one rule, from how fast the queue
//! drains, so that every refusal says the same (`Retry-After` on the
//! wire). The other refusals, the backend down and shutdown, come from the
//! breaker and [`Scheduler::close`](crate::Scheduler::close); all of them
//! are a [`Refused`].

use std::time::Duration;

use tokio::time::Instant;

use crate::queue::FairQueue;

/// How much work may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Most jobs waiting; beyond, new groups and jobs are refused.
    pub max_jobs: usize,
    /// Most bytes of jobs waiting; beyond, new groups and jobs are refused.
    pub max_bytes: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_jobs: 10_000,
            max_bytes: 4 << 30,
        }
    }
}

/// Why a new group of work was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The queue is full; try again after `retry_after`.
    #[error("overloaded: retry after {} s", retry_after.as_secs())]
    Overloaded {
        /// A wait after which the queue has likely drained enough.
        retry_after: Duration,
    },
    /// The scheduler is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The backend is down (see [`crate::breaker`]); try again after
    /// `retry_after`.
    #[error("the storage backend is unavailable: retry after {} s", retry_after.as_secs())]
    Unavailable {
        /// When the breaker next probes the backend.
        retry_after: Duration,
    },
}

/// The queue's bounds and how fast it drains: what decides whether new
/// work is refused, and for how long.
#[derive(Debug)]
pub(crate) struct Admission {
    config: QueueConfig,
    drain: DrainRate,
}

impl Admission {
    pub(crate) fn new(config: QueueConfig, now: Instant) -> Self {
        Self {
            config,
            drain: DrainRate {
                window_start: now,
                count: 0,
                per_sec: 0.0,
            },
        }
    }

    /// A call succeeded at `now`: the queue drained by one.
    pub(crate) fn on_success(&mut self, now: Instant) {
        self.drain.record(now);
    }

    /// If `queue` is full: how long to wait before trying again, from how
    /// fast it drains (between 1 and 60 s).
    pub(crate) fn overloaded<T>(&self, queue: &FairQueue<T>) -> Option<Duration> {
        let jobs = queue.len();
        if jobs < self.config.max_jobs && queue.bytes() < self.config.max_bytes {
            return None;
        }
        let per_sec = self.drain.per_sec.max(1.0);
        let secs = (jobs as f64 / per_sec).ceil().clamp(1.0, 60.0);
        Some(Duration::from_secs_f64(secs))
    }
}

/// Completions per second, smoothed: how fast the queue drains.
#[derive(Debug)]
struct DrainRate {
    window_start: Instant,
    count: u64,
    per_sec: f64,
}

impl DrainRate {
    fn record(&mut self, now: Instant) {
        self.count += 1;
        let elapsed = (now - self.window_start).as_secs_f64();
        if elapsed >= 1.0 {
            let rate = self.count as f64 / elapsed;
            self.per_sec = if self.per_sec == 0.0 {
                rate
            } else {
                0.5 * self.per_sec + 0.5 * rate
            };
            self.window_start = now;
            self.count = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suggested_wait_is_the_queue_over_its_drain_rate_within_1_to_60_s() {
        let start = Instant::now();
        let config = QueueConfig {
            max_jobs: 20,
            max_bytes: u64::MAX,
        };
        let mut admission = Admission::new(config, start);
        let mut queue = FairQueue::default();
        for _ in 0..19 {
            queue.push(0, 0, 1, ());
        }
        assert_eq!(admission.overloaded(&queue), None);
        queue.push(0, 0, 1, ());
        // Nothing drained yet: counted as one a second.
        assert_eq!(admission.overloaded(&queue), Some(Duration::from_secs(20)));
        // Ten a second for a second: 20 jobs take 2 s.
        for tenth in 1..=10 {
            admission.on_success(start + Duration::from_millis(100 * tenth));
        }
        assert_eq!(admission.overloaded(&queue), Some(Duration::from_secs(2)));
        let slow = Admission::new(config, start);
        let mut long = FairQueue::default();
        for _ in 0..100 {
            long.push(0, 0, 1, ());
        }
        assert_eq!(slow.overloaded(&long), Some(Duration::from_secs(60)));
    }
}
