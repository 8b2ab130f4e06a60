//! `GET /api/stats`: the scheduler's last minutes, a sample a second, for
//! the live view (`/live`) and for scripts.
//!
//! A task started with the server ([`sample_every`]) reads the same
//! sources `/metrics` reads — the scheduler's state and counters, the
//! refusals counted by the metrics middleware, the upload memory's waiting
//! room, the spool's bytes — once per [`INTERVAL`], and keeps the last
//! [`CAPACITY`] samples (five minutes) in a ring buffer, so that a page
//! opened now shows the last minutes at once. Nothing is computed twice:
//! a sample is a reading of those sources, plus what changed in the
//! counters since the previous sample.
//!
//! Counts over an interval (refusals, calls, latency quantiles) cover the
//! time since the previous sample. The latency quantiles are estimated
//! from the scheduler's histogram buckets ([`corral_sched::LATENCY_BUCKETS`])
//! as Prometheus's `histogram_quantile` does: linearly within the bucket
//! the quantile falls in, and the highest finite bound when it falls past
//! it. They cover the calls that ended in the interval and succeeded or
//! were throttled or timed out (cancelled calls say nothing of the
//! backend). An interval with no such call has no quantile (`null`), not 0.
//!
//! The endpoint exposes no tenant's data, only the process's load, and is
//! open like `/metrics`: no token is asked for, with or without `--auth`.
//! The history is per process, like every metric.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use corral_sched::{CounterSnapshot, LATENCY_BUCKETS};
use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior};

use crate::app::AppState;
use crate::error::ApiError;
use crate::query;

/// How often a sample is taken.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// How many samples are kept: five minutes of them.
pub(crate) const CAPACITY: usize = 300;

/// One reading, as `/api/stats` sends it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Sample {
    /// When it was taken, in milliseconds since the Unix epoch.
    pub(crate) t: u64,
    /// The limit on backend calls in flight; `null` when unbounded.
    pub(crate) limit: Option<u64>,
    /// Backend calls in flight.
    pub(crate) in_flight: u64,
    /// Backend calls waiting in the scheduler's queue, and their bytes.
    pub(crate) queued_jobs: u64,
    pub(crate) queued_bytes: u64,
    /// Uploads waiting for upload memory.
    pub(crate) upload_waiting: u64,
    /// File bytes waiting in the spool; `null` without a spool.
    pub(crate) spool_bytes: Option<u64>,
    /// New work refused (`429`, `503`) since the previous sample.
    pub(crate) refusals: u64,
    /// Backend calls dispatched since the previous sample.
    pub(crate) calls: u64,
    /// Backend latency of the calls that ended since the previous sample,
    /// median and 99th percentile, in milliseconds; `null` with no call.
    pub(crate) latency_p50_ms: Option<f64>,
    pub(crate) latency_p99_ms: Option<f64>,
}

/// What `GET /api/stats` answers.
#[derive(Debug, Serialize)]
struct Body {
    interval_ms: u64,
    capacity: usize,
    /// A reading taken for this request, its counts since the last sample.
    now: Sample,
    /// The samples kept, oldest first.
    samples: Vec<Sample>,
}

/// The counters a sample subtracts from the previous sample's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    refusals: u64,
    calls: u64,
    /// Cumulative latency counts per bucket, then `+Inf`.
    latency: [u64; LATENCY_BUCKETS.len() + 1],
}

impl Totals {
    fn read(refusals: u64, counters: &CounterSnapshot) -> Self {
        let success = counters.latency_success.cumulative();
        let loss = counters.latency_loss.cumulative();
        Self {
            refusals,
            calls: counters.calls,
            latency: std::array::from_fn(|i| success[i] + loss[i]),
        }
    }
}

/// The samples kept, and the totals the next one counts from. One per
/// [`AppState`].
#[derive(Debug)]
pub(crate) struct History {
    inner: Mutex<Inner>,
    /// The wall clock at `started`: samples are dated by tokio's clock from
    /// there, so that they stay in order and one interval apart in virtual
    /// time too.
    epoch: SystemTime,
    started: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    samples: VecDeque<Sample>,
    previous: Totals,
}

impl History {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::default(),
            epoch: SystemTime::now(),
            started: Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch, now.
    fn now_ms(&self) -> u64 {
        let now = self.epoch + self.started.elapsed();
        now.duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64)
    }

    /// Reads `state` now. `record`: keeps the sample and counts the next
    /// from it; otherwise the history is left as it was.
    fn read(&self, state: &AppState, record: bool) -> Sample {
        let stats = state.scheduler.stats();
        let totals = Totals::read(state.metrics.refusals_total(), &state.scheduler.counters());
        let t = self.now_ms();
        // Poisoning would need a panic while the lock is held, in the few
        // lines below, which do not panic.
        let mut inner = self.inner.lock().expect("the stats lock is not poisoned");
        let previous = inner.previous;
        let latency: Vec<u64> = (totals.latency.iter().zip(previous.latency))
            .map(|(now, before)| now.saturating_sub(before))
            .collect();
        let sample = Sample {
            t,
            limit: (stats.limit != usize::MAX).then_some(stats.limit as u64),
            in_flight: stats.in_flight as u64,
            queued_jobs: stats.queued_jobs as u64,
            queued_bytes: stats.queued_bytes,
            upload_waiting: state.upload_memory.waiting() as u64,
            spool_bytes: state.spool.as_ref().map(corral_store::Spool::used),
            refusals: totals.refusals.saturating_sub(previous.refusals),
            calls: totals.calls.saturating_sub(previous.calls),
            latency_p50_ms: quantile(&latency, 0.5).map(|secs| secs * 1000.0),
            latency_p99_ms: quantile(&latency, 0.99).map(|secs| secs * 1000.0),
        };
        if record {
            inner.previous = totals;
            if inner.samples.len() == CAPACITY {
                inner.samples.pop_front();
            }
            inner.samples.push_back(sample);
        }
        sample
    }

    fn samples(&self) -> Vec<Sample> {
        let inner = self.inner.lock().expect("the stats lock is not poisoned");
        inner.samples.iter().copied().collect()
    }
}

/// Samples `state` every [`INTERVAL`] into its history, until dropped.
/// Ticks missed (a stalled runtime) are skipped, not made up.
pub(crate) async fn sample_every(state: AppState) {
    let mut ticks = tokio::time::interval_at(Instant::now() + INTERVAL, INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        state.stats.read(&state, true);
    }
}

/// `GET /api/stats`.
pub(crate) async fn get(State(state): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    query::check(&uri, "GET /api/stats", &[])?;
    let body = Body {
        interval_ms: INTERVAL.as_millis() as u64,
        capacity: CAPACITY,
        now: state.stats.read(&state, false),
        samples: state.stats.samples(),
    };
    let no_store = [(axum::http::header::CACHE_CONTROL, "no-store")];
    Ok(axum::response::IntoResponse::into_response((
        no_store,
        Json(body),
    )))
}

type Response = axum::response::Response;

/// The `q`-quantile, in seconds, of the observations counted in
/// `cumulative` (cumulative counts per bucket of [`LATENCY_BUCKETS`], then
/// `+Inf`); `None` with no observation.
fn quantile(cumulative: &[u64], q: f64) -> Option<f64> {
    let total = *cumulative.last()?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let bucket = cumulative.iter().position(|&count| count as f64 >= rank)?;
    let Some(&upper) = LATENCY_BUCKETS.get(bucket) else {
        // Past the last finite bound: that bound is all that is known.
        return LATENCY_BUCKETS.last().copied();
    };
    let lower = bucket.checked_sub(1).map_or(0.0, |i| LATENCY_BUCKETS[i]);
    let below = bucket.checked_sub(1).map_or(0, |i| cumulative[i]);
    let within = cumulative[bucket] - below;
    Some(lower + (upper - lower) * (rank - below as f64) / within as f64)
}

#[cfg(test)]
mod tests {
    use corral_sched::{SchedConfig, Scheduler};
    use corral_store::{Store, StoreConfig};

    use super::*;
    use crate::admission::refusal::Refusal;
    use crate::config::ServerConfig;

    async fn state() -> AppState {
        let scheduler = Scheduler::new(SchedConfig::default());
        let store = Store::open("memory://", StoreConfig::default(), scheduler.clone())
            .await
            .unwrap();
        AppState::new(store, scheduler, ServerConfig::default())
    }

    fn cumulative(per_bucket: &[(usize, u64)]) -> Vec<u64> {
        let mut counts = vec![0; LATENCY_BUCKETS.len() + 1];
        for &(bucket, count) in per_bucket {
            counts[bucket] += count;
        }
        counts
            .iter()
            .scan(0, |total, count| {
                *total += count;
                Some(*total)
            })
            .collect()
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        // 100 calls between 10 and 25 ms (bucket 4).
        let counts = cumulative(&[(4, 100)]);
        let p50 = quantile(&counts, 0.5).unwrap();
        assert!((p50 - 0.0175).abs() < 1e-9, "{p50}");
        let p99 = quantile(&counts, 0.99).unwrap();
        assert!((p99 - (0.010 + 0.015 * 0.99)).abs() < 1e-9, "{p99}");
        // 99 fast calls (under 1 ms), 1 slow one (between 2.5 and 5 s).
        let counts = cumulative(&[(0, 99), (11, 1)]);
        assert!(quantile(&counts, 0.5).unwrap() <= 0.001);
        assert!(quantile(&counts, 0.99).unwrap() <= 0.001);
        assert!(quantile(&counts, 0.999).unwrap() > 2.5);
    }

    #[test]
    fn no_call_has_no_quantile_and_the_overflow_bucket_its_lower_bound() {
        assert_eq!(quantile(&cumulative(&[]), 0.5), None);
        let past = cumulative(&[(LATENCY_BUCKETS.len(), 3)]);
        assert_eq!(quantile(&past, 0.5), LATENCY_BUCKETS.last().copied());
    }

    #[tokio::test(start_paused = true)]
    async fn the_history_keeps_the_last_five_minutes_a_second_apart() {
        let state = state().await;
        let sampler = tokio::spawn(sample_every(state.clone()));
        tokio::time::sleep(INTERVAL * 10 + INTERVAL / 2).await;
        let samples = state.stats.samples();
        assert_eq!(samples.len(), 10);
        tokio::time::sleep(INTERVAL * 400).await;
        let samples = state.stats.samples();
        assert_eq!(samples.len(), CAPACITY);
        for pair in samples.windows(2) {
            assert_eq!(pair[1].t - pair[0].t, 1000, "{pair:?}");
        }
        // The oldest kept is the 111th taken: the first 110 were dropped.
        let first = state.stats.epoch + INTERVAL * 111;
        let first = first.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert_eq!(samples[0].t, first);
        sampler.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn each_refusal_is_counted_in_the_interval_it_came_in() {
        let state = state().await;
        let sampler = tokio::spawn(sample_every(state.clone()));
        tokio::time::sleep(INTERVAL * 2 + INTERVAL / 2).await;
        state.metrics.count_refusal(&Refusal::ShuttingDown);
        state.metrics.count_refusal(&Refusal::ShuttingDown);
        // Seen at once by a request, before the next sample.
        assert_eq!(state.stats.read(&state, false).refusals, 2);
        tokio::time::sleep(INTERVAL * 3).await;
        let refusals: Vec<u64> = state.stats.samples().iter().map(|s| s.refusals).collect();
        assert_eq!(refusals, [0, 0, 2, 0, 0]);
        let sample = state.stats.samples()[4];
        assert_eq!(sample.limit, Some(state.scheduler.stats().limit as u64));
        assert_eq!((sample.in_flight, sample.queued_jobs), (0, 0));
        assert_eq!((sample.latency_p50_ms, sample.latency_p99_ms), (None, None));
        // No spool in this state.
        assert_eq!(sample.spool_bytes, None);
        sampler.abort();
    }
}
