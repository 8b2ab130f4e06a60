//! Helpers for the scheduler's unit tests: a job error of any class, a
//! seeded scheduler, and a probe of how many calls run at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{Class, Classify, LimitConfig, RetryConfig, SchedConfig, Scheduler};

/// A job's error, of the class it carries.
#[derive(Debug)]
pub(crate) struct Fail(pub(crate) Class);

impl Classify for Fail {
    fn classify(&self) -> Class {
        self.0
    }
}

/// A scheduler under `limit`, with a seeded retry jitter.
pub(crate) fn scheduler(limit: LimitConfig) -> Scheduler {
    Scheduler::new(SchedConfig {
        limit,
        retry: RetryConfig {
            seed: Some(7),
            ..RetryConfig::default()
        },
        ..SchedConfig::default()
    })
}

/// Calls running now and at most, overall and per group.
#[derive(Default)]
pub(crate) struct Running {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Running {
    /// A call that takes `time`.
    pub(crate) async fn call(&self, time: Duration) -> Result<(), Fail> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(time).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    /// The most calls that ran at once.
    pub(crate) fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// Whether nothing runs or waits.
pub(crate) fn idle(scheduler: &Scheduler) -> bool {
    let stats = scheduler.stats();
    stats.in_flight == 0 && stats.queued_jobs == 0 && stats.queued_bytes == 0
}
