//! Retries: which failures to retry, how long to wait, and the budget that
//! keeps retries from amplifying an overload.
//!
//! # Why a budget and not only a maximum number of attempts
//!
//! "Retry up to 3 times" is safe for one caller and dangerous for a
//! thousand: when the backend is overloaded every call fails, every caller
//! retries, and the backend receives up to four times the load that
//! overloaded it. A retry budget bounds retries *in aggregate*: each first
//! attempt deposits a fraction of a token (`budget_ratio`, 0.1), a small
//! trickle (`budget_per_sec`) keeps an idle process able to retry, and each
//! retry spends a whole token. In steady state retries are at most about
//! 10% of calls, so a struggling backend sees at most ~1.1x the load, and a
//! failure that is truly transient is still retried. This is gRPC's retry
//! throttling and tower's `TpsBudget`, with the same intent.
//!
//! # Why throttles do not spend it
//!
//! A throttle (`429`, `503 SlowDown`) is the backend asking for fewer
//! calls, and the adaptive limit answers it by cutting the calls in
//! flight: a throttled call that waits its turn again adds nothing to the
//! load. Charged to the budget, the few dozen throttles of a cold start's
//! ramp emptied it, and every later throttle failed its request: a busy
//! backend turned into `500`s for 45% of a burst of users. So throttles are
//! retried for as long as their request lives, and only other transient
//! failures (`500`, `502`, `504`, resets), which say nothing about load and
//! which the limit does not slow down, are charged.
//!
//! # Backoff
//!
//! Exponential with full jitter (`delay = random(0, min(max, base x 2^n))`,
//! the AWS Architecture Blog's recommendation): callers that failed together
//! do not retry together. A `Retry-After` from the backend is a floor.

use std::time::Duration;

use tokio::time::Instant;

/// What a failed job's error means for retrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Retrying cannot help (not found, forbidden, invalid): fail at once.
    Permanent,
    /// It may work next time (500, 502, 504, a reset connection).
    Transient {
        /// How long the backend asked to wait, if it did.
        retry_after: Option<Duration>,
    },
    /// The backend is overloaded (429, 503 SlowDown, a timeout): the limit
    /// treats it as loss, and the call is retried for as long as its group
    /// lives, without spending the budget (see `Group::retry_wait`).
    Throttled {
        /// How long the backend asked to wait, if it did.
        retry_after: Option<Duration>,
    },
}

/// Tells the scheduler what kind of failure an error is.
pub trait Classify {
    /// The class of this failure.
    fn classify(&self) -> Class;
}

/// How failed jobs are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Most attempts per job, the first included.
    pub max_attempts: u32,
    /// The backoff before the first retry is drawn from `[0, base]`.
    pub base: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// Tokens a first attempt deposits in the budget; a retry costs one.
    pub budget_ratio: f64,
    /// Tokens deposited per second whatever the traffic.
    pub budget_per_sec: f64,
    /// Most tokens the budget holds.
    pub budget_max: f64,
    /// Seed of the jitter, for reproducible runs; `None` seeds randomly.
    pub seed: Option<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            budget_ratio: 0.1,
            budget_per_sec: 1.0,
            budget_max: 20.0,
            seed: None,
        }
    }
}

/// The retry budget: a token bucket fed by first attempts.
#[derive(Debug)]
pub(crate) struct Budget {
    tokens: f64,
    refilled: Instant,
    ratio: f64,
    per_sec: f64,
    max: f64,
}

impl Budget {
    pub(crate) fn new(config: &RetryConfig, now: Instant) -> Self {
        Self {
            // Full, like any token bucket: a fresh process may retry.
            tokens: config.budget_max,
            refilled: now,
            ratio: config.budget_ratio,
            per_sec: config.budget_per_sec,
            max: config.budget_max,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = (now - self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.max);
    }

    /// A first attempt was made.
    pub(crate) fn deposit(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + self.ratio).min(self.max);
    }

    /// Takes a token for a retry, if there is one.
    pub(crate) fn withdraw(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The wait before retry number `retry` (1 for the first retry).
pub(crate) fn backoff(
    config: &RetryConfig,
    retry: u32,
    retry_after: Option<Duration>,
    rng: &mut fastrand::Rng,
) -> Duration {
    let exponent = retry.saturating_sub(1).min(30);
    let cap = config
        .base
        .saturating_mul(1 << exponent)
        .min(config.max_backoff);
    let jittered = cap.mul_f64(rng.f64());
    jittered.max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_full_jitter_and_honours_retry_after() {
        let config = RetryConfig::default();
        let mut rng = fastrand::Rng::with_seed(7);
        for retry in 1..=10 {
            let cap = (config.base * (1 << (retry - 1))).min(config.max_backoff);
            let draws: Vec<Duration> = (0..200)
                .map(|_| backoff(&config, retry, None, &mut rng))
                .collect();
            assert!(draws.iter().all(|d| *d <= cap));
            // Full jitter: spread over the whole range, not bunched at the cap.
            assert!(draws.iter().any(|d| *d < cap / 4), "retry {retry}");
            assert!(draws.iter().any(|d| *d > cap * 3 / 4), "retry {retry}");
        }
        let floor = Duration::from_secs(3);
        assert!(backoff(&config, 1, Some(floor), &mut rng) >= floor);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_about_one_retry_per_ten_calls() {
        let config = RetryConfig {
            budget_per_sec: 0.0,
            budget_max: 5.0,
            ..RetryConfig::default()
        };
        let mut budget = Budget::new(&config, Instant::now());
        while budget.withdraw(Instant::now()) {}
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit(Instant::now());
            if budget.withdraw(Instant::now()) {
                retries += 1;
            }
        }
        assert!(
            (99..=100).contains(&retries),
            "{retries} retries for 1000 calls"
        );
        // Without calls, nothing accumulates beyond the trickle.
        assert!(!budget.withdraw(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_trickle_refills_an_idle_budget_up_to_its_cap() {
        let config = RetryConfig::default();
        let mut budget = Budget::new(&config, Instant::now());
        while budget.withdraw(Instant::now()) {}
        tokio::time::advance(Duration::from_secs(3)).await;
        let mut granted = 0;
        while budget.withdraw(Instant::now()) {
            granted += 1;
        }
        assert_eq!(granted, 3);
        tokio::time::advance(Duration::from_secs(3600)).await;
        budget.refill(Instant::now());
        assert_eq!(budget.tokens, config.budget_max);
    }
}
