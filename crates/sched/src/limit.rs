//! The limit on backend calls in flight.
//!
//! A [`Limit`] hands out owned [`Permit`]s; one permit is one backend call in
//! flight. The permit is moved into the work it guards, so completion,
//! cancellation (the future is dropped) and panic (the task unwinds) all give
//! the slot back: there is no path that forgets to release it.
//!
//! Only the `fixed:N` strategy exists so far. It is the baseline that the
//! adaptive strategy (which finds the backend's knee by itself) is measured
//! against, and the right choice when the backend's capacity is known.

use std::fmt;
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// How the limit on backend calls in flight is chosen.
///
/// Parsed from and displayed as the text used on the command line:
/// `fixed:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitConfig {
    /// At most `N` calls in flight, always.
    Fixed(NonZeroUsize),
}

impl Default for LimitConfig {
    /// `fixed:16`: enough to keep a local disk or a single S3 prefix busy
    /// without queueing inside the backend.
    fn default() -> Self {
        Self::Fixed(NonZeroUsize::new(16).expect("16 is not zero"))
    }
}

impl FromStr for LimitConfig {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidLimit {
            spec: spec.to_owned(),
            reason,
        };
        let (kind, arg) = spec.split_once(':').unwrap_or((spec, ""));
        match kind {
            "fixed" => arg
                .parse::<NonZeroUsize>()
                .map(Self::Fixed)
                .map_err(|_| invalid("expected fixed:N with N a whole number of at least 1")),
            _ => Err(invalid("the known strategies are: fixed:N")),
        }
    }
}

impl fmt::Display for LimitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "fixed:{n}"),
        }
    }
}

/// The limit on backend calls in flight, shared by every request.
///
/// Cloning is cheap and every clone shares the same slots.
#[derive(Debug, Clone)]
pub struct Limit {
    slots: Arc<Semaphore>,
    limit: usize,
}

/// One backend call's slot. Dropping it gives the slot back.
#[derive(Debug)]
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
}

impl Limit {
    /// A limit that follows `config`.
    pub fn new(config: LimitConfig) -> Self {
        let LimitConfig::Fixed(n) = config;
        Self {
            slots: Arc::new(Semaphore::new(n.get())),
            limit: n.get(),
        }
    }

    /// Waits for a free slot.
    ///
    /// Cancel safe: dropping the future before it completes takes no slot,
    /// and waiters are served first come, first served.
    pub async fn acquire(&self) -> Permit {
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Permit { _slot: slot }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Calls in flight right now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.slots.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn parses_and_displays_fixed() {
        let config: LimitConfig = "fixed:8".parse().unwrap();
        assert_eq!(config, LimitConfig::Fixed(NonZeroUsize::new(8).unwrap()));
        assert_eq!(config.to_string(), "fixed:8");
        assert_eq!(LimitConfig::default().to_string(), "fixed:16");
    }

    #[test]
    fn rejects_bad_specs() {
        for spec in [
            "", "fixed", "fixed:", "fixed:0", "fixed:-1", "fixed:x", "fast:3",
        ] {
            assert!(spec.parse::<LimitConfig>().is_err(), "{spec:?} parsed");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_in_flight_than_the_limit() {
        let limit = Limit::new("fixed:3".parse().unwrap());
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let limit = limit.clone();
            let peak = Arc::clone(&peak);
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire().await;
                peak.fetch_max(limit.in_flight(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(limit.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_and_panicked_work_gives_its_slot_back() {
        let limit = Limit::new("fixed:1".parse().unwrap());
        let held = limit.acquire().await;
        // A waiter that is cancelled takes no slot.
        let waiter = tokio::time::timeout(Duration::from_millis(5), limit.acquire()).await;
        assert!(waiter.is_err());
        drop(held);
        // A task that panics while holding the slot frees it as it unwinds.
        let permit = limit.acquire().await;
        let task = tokio::spawn(async move {
            let _permit = permit;
            panic!("job failed");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert_eq!(limit.in_flight(), 0);
        let _again = limit.acquire().await;
    }
}
