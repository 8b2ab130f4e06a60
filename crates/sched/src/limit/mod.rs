//! The limit on backend calls in flight, and the strategies that set it.
//!
//! The scheduler asks the strategy for the limit at each dispatch and feeds
//! it one sample per finished call (when it was dispatched, how long it
//! took, its size, how it ended). Strategies:
//!
//! - `adaptive` (the default): finds the backend's knee by itself and
//!   follows it; `src/limit/adaptive.rs` explains the algorithm and why.
//! - `fixed:N`: at most `N` calls in flight, always. Right when the
//!   backend's capacity is known; the baseline adaptive is measured against.
//! - `unbounded` and `per-request:N`: **for comparison only**. They exist
//!   so that `corral bench` can run the naive designs (a task per file; a
//!   pool of N per request, as in the Go articles corral grew from) side by
//!   side with the real ones in the same binary. Neither bounds the calls
//!   in flight process-wide, which is the whole point of corral; never use
//!   them in production.

pub(crate) mod adaptive;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};
use adaptive::Adaptive;
pub use adaptive::{AdaptiveConfig, AdaptiveConfigBuilder};

/// How the limit on backend calls in flight is chosen.
///
/// Parsed from and displayed as the text used on the command line:
/// `adaptive`, `adaptive:MIN-MAX`, `fixed:N`, `unbounded`, `per-request:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitConfig {
    /// Follows the backend's capacity (see [`AdaptiveConfig`]).
    Adaptive(AdaptiveConfig),
    /// At most `N` calls in flight, always.
    Fixed(usize),
    /// No limit at all. For comparison in benchmarks only.
    Unbounded,
    /// At most `N` calls in flight per group, none process-wide. For
    /// comparison in benchmarks only.
    PerRequest(usize),
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self::Adaptive(AdaptiveConfig::default())
    }
}

impl FromStr for LimitConfig {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidLimit {
            spec: spec.to_owned(),
            reason,
        };
        let count = |arg: &str| match arg.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(invalid("expected a whole number of at least 1")),
        };
        let (kind, arg) = match spec.split_once(':') {
            Some((kind, arg)) => (kind, Some(arg)),
            None => (spec, None),
        };
        match (kind, arg) {
            ("adaptive", None) => Ok(Self::Adaptive(AdaptiveConfig::default())),
            ("adaptive", Some(range)) => {
                let (min, max) = range
                    .split_once('-')
                    .ok_or_else(|| invalid("expected adaptive:MIN-MAX, such as adaptive:2-128"))?;
                let (min, max) = (count(min)?, count(max)?);
                let config = AdaptiveConfig::builder().min(min).max(max).build()?;
                Ok(Self::Adaptive(config))
            }
            ("fixed", Some(n)) => count(n).map(Self::Fixed),
            ("unbounded", None) => Ok(Self::Unbounded),
            ("per-request", Some(n)) => count(n).map(Self::PerRequest),
            _ => Err(invalid(
                "the strategies are adaptive, adaptive:MIN-MAX, fixed:N, unbounded, per-request:N",
            )),
        }
    }
}

impl fmt::Display for LimitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Adaptive(config) if *config == AdaptiveConfig::default() => {
                f.write_str("adaptive")
            }
            Self::Adaptive(config) => write!(f, "adaptive:{}-{}", config.min(), config.max()),
            Self::Fixed(n) => write!(f, "fixed:{n}"),
            Self::Unbounded => f.write_str("unbounded"),
            Self::PerRequest(n) => write!(f, "per-request:{n}"),
        }
    }
}

/// How a backend call ended, as the limit sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded: its latency is a measurement.
    Success,
    /// The backend pushed back (throttled, timed out): a sign of overload.
    Loss,
    /// It failed for another reason, or was cancelled: no information.
    Ignore,
}

/// One finished backend call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// When it was dispatched.
    pub(crate) dispatched: Instant,
    /// How long it took.
    pub(crate) rtt: Duration,
    /// Its size, for normalising latency.
    pub(crate) cost: u64,
    /// Calls in flight when it was dispatched, itself included.
    pub(crate) in_flight: usize,
    pub(crate) outcome: Outcome,
}

/// The strategy in force.
#[derive(Debug)]
pub(crate) enum Limiter {
    Fixed(usize),
    Unbounded,
    PerRequest(usize),
    Adaptive(Box<Adaptive>),
}

impl Limiter {
    pub(crate) fn new(config: LimitConfig, now: Instant) -> Self {
        match config {
            LimitConfig::Adaptive(config) => Self::Adaptive(Box::new(Adaptive::new(config, now))),
            LimitConfig::Fixed(n) => Self::Fixed(n),
            LimitConfig::Unbounded => Self::Unbounded,
            LimitConfig::PerRequest(n) => Self::PerRequest(n),
        }
    }

    /// The process-wide limit now.
    pub(crate) fn limit(&self) -> usize {
        match self {
            Self::Fixed(n) => *n,
            Self::Unbounded | Self::PerRequest(_) => usize::MAX,
            Self::Adaptive(adaptive) => adaptive.limit(),
        }
    }

    /// The process-wide limit for one dispatch: as [`limit`](Self::limit),
    /// except that a fractional adaptive limit is dithered.
    pub(crate) fn dispatch_limit(&mut self) -> usize {
        match self {
            Self::Adaptive(adaptive) => adaptive.dispatch_limit(),
            other => other.limit(),
        }
    }

    /// The limit per group, if any.
    pub(crate) fn per_group(&self) -> Option<usize> {
        match self {
            Self::PerRequest(n) => Some(*n),
            _ => None,
        }
    }

    /// Whether the adaptive limit is probing the no-load latency.
    pub(crate) fn probing(&self) -> bool {
        matches!(self, Self::Adaptive(adaptive) if adaptive.probing())
    }

    pub(crate) fn on_sample(&mut self, sample: Sample, now: Instant) {
        if let Self::Adaptive(adaptive) = self {
            adaptive.on_sample(sample, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_every_strategy() {
        for spec in [
            "adaptive",
            "adaptive:2-64",
            "fixed:8",
            "unbounded",
            "per-request:3",
        ] {
            let config: LimitConfig = spec.parse().unwrap();
            assert_eq!(config.to_string(), spec);
        }
        assert_eq!(LimitConfig::default().to_string(), "adaptive");
        assert_eq!(
            "fixed:8".parse::<LimitConfig>().unwrap(),
            LimitConfig::Fixed(8)
        );
    }

    #[test]
    fn rejects_bad_specs_with_the_reason() {
        for spec in [
            "",
            "fixed",
            "fixed:",
            "fixed:0",
            "fixed:-1",
            "fixed:x",
            "fast:3",
            "adaptive:5",
            "adaptive:9-2",
            "adaptive:0-4",
            "unbounded:3",
            "per-request",
        ] {
            assert!(spec.parse::<LimitConfig>().is_err(), "{spec:?} parsed");
        }
        let error = "fast:3".parse::<LimitConfig>().unwrap_err().to_string();
        assert!(error.contains("fixed:N"), "{error}");
        let error = "adaptive:9-2".parse::<LimitConfig>().unwrap_err();
        assert!(
            matches!(error, Error::AdaptiveMinAboveMax { min: 9, max: 2 }),
            "{error}"
        );
    }
}
