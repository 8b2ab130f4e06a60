//! The adaptive limit: finds the backend's knee by itself and follows it.
//!
//! # What it aims at
//!
//! A backend serves some number of calls at once at its no-load latency
//! `R0`; calls beyond that wait in its queue. Little's law puts the knee at
//! `capacity x R0` calls in flight: below it, throughput is lost; above it,
//! throughput stays the same and every extra call only adds queueing delay
//! (and, for a cloud store, throttling). The limit tracks the knee from two
//! signals:
//!
//! - **latency**: queueing shows as latency above `R0`;
//! - **loss**: throttle answers (429, 503 SlowDown) and timeouts.
//!
//! # The algorithm
//!
//! It works in *rounds*: a round starts when the limit is set and ends once
//! a limit's worth of calls dispatched under it (at least 8) has come back,
//! about one RTT. Calls dispatched before the round began say nothing about
//! its limit and are left out of it.
//!
//! - **Queueing estimate.** Each successful call's latency is divided by the
//!   no-load latency `R0` of calls of its size (kept per power-of-two size
//!   class, so a mix of 64 KiB and 64 MiB uploads compares each with its
//!   own kind). The *mean* ratio of the round, minus one, is the queueing
//!   `q`. (The mean and not the minimum: one call too many in flight
//!   delays only some calls, and it is exactly that call that must be
//!   seen; the mean of 8 or more jittered latencies is good to about 2%.)
//! - **Cut.** If `q > 0.08`, the limit becomes `limit / (1 + q)`, rounded:
//!   above the knee, latency grows in proportion to calls in flight, so
//!   this lands on the knee in one step instead of creeping down. The limit
//!   it was cut from becomes the *ceiling*.
//! - **Grow.** If `q < 0.03` and the round used its whole limit (growing an
//!   unused limit would only store up a future burst), the limit grows: it
//!   doubles while starting up (until a round shows `q > 0.16`), then goes
//!   up by one per round. One step below the ceiling is the knee, and one
//!   call above the knee costs about 0.3x of latency (see
//!   `docs/BENCHMARKS.md`), so stepping up to the ceiling is tried only
//!   every 10 RTTs, doubling to 40 each time it finds queueing again. A try
//!   that finds none clears the ceiling: the knee moved up.
//! - Between `q = 0.03` and `0.08` it holds.
//! - **Loss.** A throttle answer or a timeout cuts at once, not at the end
//!   of the round: a throttled call comes back within milliseconds, and
//!   its slot would otherwise go to the next call, throttled too, so one
//!   slot over the backend's rate becomes a stream of 503s. The first loss
//!   sets the limit to 95% of what the rate actually served needs by
//!   Little's law (served calls/s x latency), but no lower than 0.8 of
//!   itself and no higher than 0.88 of it; every further loss within that
//!   RTT takes away the slot it was dispatched into. Until 50 rounds, or 30
//!   RTTs, pass without loss, the limit then creeps up by 0.045 calls per
//!   RTT near the limit of the last loss, and by one a round below it:
//!   below 90% of it, or one call under it if that is higher (a backend
//!   with a hard cap of 16 that refused a 17th call is back near 16 at
//!   once, not at 14 for seconds). Latency says little then (a backend that
//!   throttles need not queue), so the creep goes on unless queueing is
//!   above 8%, which still cuts. The limit is fractional here: 4.75 uses
//!   its fifth slot on 75% of dispatches, because at a few calls in flight
//!   a whole step overshoots the backend's rate by a fifth.
//!
//! # Sharing a backend
//!
//! Several processes (a fleet of corral instances) may share one backend
//! without talking to each other; each limit must find its share, and take
//! the room the others leave. Under a backend that refuses beyond a cap,
//! the call that gets the `503` is the one over the cap: the process that
//! grew last pays, whatever its share, so a cut in proportion to the limit
//! followed by growth in proportion to it (as this limit once crept, 0.5%
//! a round) keeps every share where it happened to start, and at small
//! limits, whose rounds last 8 calls and so several RTTs, the smallest
//! share grows slowest and starves. Here the creep is the same number of
//! calls per RTT whatever the limit, and a loss cuts at least 12% of the
//! limit: the room a large share gives up is taken back by all alike, so
//! the shares converge on equal ones (the `fleet` scenario: three
//! schedulers on one cap of 16 stay within 25% of a third). A process left
//! alone leaves the creep after 30 RTTs without loss and grows a call a
//! round. A single process keeps the hard-cap and token-bucket scenarios'
//! figures; under the token bucket its 503s rise from under 1% of calls to
//! about 1.5%, within the 2% allowed.
//!
//! The limit stays within `[min, max]`, by default `[2, 256]`. The floor
//! is 2, not 1, because of a backend the model above does not fit: one
//! that shares a few CPUs (a store on the same small machine, s3s-fs or
//! a local MinIO) has no flat latency below a knee; each call more in
//! flight adds latency and also throughput, less than its share. The
//! probes then find `R0` at one call in flight and every round above it
//! "queueing", and the limit settles at 1, where the backend idles
//! between calls while the next is dispatched. Measured (`corral bench
//! upload`, 200 x 1 MiB through `corral upload` to s3s-fs on two shared
//! cores): a limit held at 1 took 1.00 s, at 2 0.75 s, at 4 0.66 s and at
//! 8 0.63 s; the adaptive limit sank to 1 within 0.2 s when four batches
//! arrived at once and took 0.90 s, and with a floor of 2, 0.72 s. No
//! scenario's figure moves (the `knee` scenario's cold start at 1 lowers
//! the floor to start there). A backend that can only take one call at a
//! time is set with `--concurrency-min 1`. A local directory is the
//! extreme case, its calls being the process's own system calls: `corral
//! serve` puts its floor at 8 (see its `--concurrency-min`).
//!
//! # Keeping `R0` honest
//!
//! Everything rests on `R0`, and the published limiters go wrong there:
//!
//! - *A first measurement taken above the knee sticks* (Netflix's Vegas
//!   limiter): started at 100 calls in flight against a backend whose knee
//!   is 10, every call queues, the queued latency becomes `R0`, and the
//!   limiter sees no queueing at all. Here `R0` is measured by **probes**:
//!   for one round the limit is lowered, which drains any standing queue,
//!   and the mean latency of that round becomes `R0` (averaged with the
//!   previous probe's when within 10% of it, to shed noise). The first
//!   probe comes right after the first round; while a probe lowers `R0` by
//!   more than 10%, the next follows at once and halves the limit, so a
//!   cold start far above the knee halves its way down in a few rounds.
//!   Otherwise probes come every `probe_interval` (10 s) and dip to 75% of
//!   the limit, enough to get below a knee the limit exceeds by at most
//!   one call. A probe raises a measured `R0` only when it ran below the
//!   knee: the limiter saw no queueing before it, or lowering the limit did
//!   not make calls faster than in the round before (then the backend
//!   itself became slower, and the `slowdown` scenario checks that the
//!   limit follows instead of sinking to its minimum). A probe that could
//!   not reach below the knee never raises it. A round clearly faster than
//!   `R0` calls for a probe at once.
//! - *Pinning the limit low to measure `R0` costs throughput* (Envoy's
//!   gradient controller pins to a small minimum for a fixed time). Here a
//!   probe lasts one round at 75% of the limit: at 200 ms latency and a
//!   10-second interval, well under 1% of capacity. Under throttling,
//!   latency says nothing, and probes are put off.
//! - *A limit that grows without end under modest overload* (Netflix's
//!   Gradient2, issue #134: its growth term is added whatever the gradient
//!   says). Here the limit grows only when a round shows no queueing and
//!   used its whole limit; queueing above 8% cuts it.
//!
//! The scenarios of `corral-testkit` hold the algorithm to figures: within
//! 10 s of a cold start at 1 or 100, at least 95% of capacity; in steady
//! state at least 97%, a p99 at most 1.3x the no-load latency, and the
//! limit within `[knee, knee + 3]`; under a token bucket at most 2% of
//! calls throttled.

use std::time::Duration;

use tokio::time::Instant;

use super::{Outcome, Sample};
use crate::error::{Error, Result};

/// Below this queueing estimate the limit may grow.
const QUEUE_LOW: f64 = 0.03;
/// Above this queueing estimate the limit is cut.
const QUEUE_HIGH: f64 = 0.08;
/// What a loss multiplies the limit by when the served rate cannot say
/// better.
const LOSS_BACKOFF: f64 = 0.8;
/// The bins the served rate is counted in.
const RATE_BIN: Duration = Duration::from_millis(250);
/// Under throttling, a loss sets the limit to this share of what the
/// served rate needs.
const THROTTLED_TARGET: f64 = 0.95;
/// A loss cuts the limit to at most this share of itself: a cut in
/// proportion to the limit, which processes sharing a backend give up and
/// take back alike (see the module docs).
const THROTTLED_CUT: f64 = 0.88;
/// Under throttling, near the limit of the last loss, the limit grows by
/// this many calls per RTT, whatever the limit.
const THROTTLED_STEP: f64 = 0.045;
/// Rounds, or RTTs, without loss after which growth is no longer held
/// back: rounds of 8 calls at a limit of 2 last 4 RTTs, and a process left
/// alone on a backend should not creep for that long.
const THROTTLED_ROUNDS: u32 = 50;
const THROTTLED_RTTS: f64 = 30.0;
/// Time between two steps up to a new ceiling, in smoothed RTTs; doubled
/// after each step that finds queueing again, up to `CEILING_RTTS_MAX`.
const CEILING_RTTS: u32 = 10;
const CEILING_RTTS_MAX: u32 = 40;
/// Fewest samples a round or a probe decides on: a mean of 8 latencies
/// jittered by +-10% is good to about 2%, well inside the thresholds.
const MIN_SAMPLES: usize = 8;
/// A probe that lowers `R0` by more than this calls for another at once.
const PROBE_GAIN: f64 = 0.9;
/// Size classes: powers of two up to 2^47 bytes.
const CLASSES: usize = 48;

/// Settings of the adaptive limit: its range, where it starts, and how
/// often it probes the no-load latency.
///
/// Made by [`AdaptiveConfig::builder`], which checks that the settings
/// make sense together (the adaptive limit relies on `1 <= min <= initial
/// <= max`), or by [`Default`]: between 2 and 256, starting at 4, probing
/// every 10 s.
///
/// ```
/// use corral_sched::AdaptiveConfig;
///
/// let config = AdaptiveConfig::builder().min(2).max(64).build()?;
/// assert_eq!((config.min(), config.initial(), config.max()), (2, 4, 64));
/// assert!(AdaptiveConfig::builder().min(9).max(2).build().is_err());
/// # Ok::<(), corral_sched::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveConfig {
    min: usize,
    max: usize,
    initial: usize,
    probe_interval: Duration,
}

impl AdaptiveConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> AdaptiveConfigBuilder {
        AdaptiveConfigBuilder::default()
    }

    /// The limit never goes below this; at least 1.
    pub fn min(&self) -> usize {
        self.min
    }

    /// The limit never goes above this; at least [`min`](Self::min).
    pub fn max(&self) -> usize {
        self.max
    }

    /// The limit to start with, within `[min, max]`.
    pub fn initial(&self) -> usize {
        self.initial
    }

    /// Time between two probes of the no-load latency, once it is stable;
    /// longer than zero.
    pub fn probe_interval(&self) -> Duration {
        self.probe_interval
    }
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            min: 2,
            max: 256,
            initial: DEFAULT_INITIAL,
            probe_interval: Duration::from_secs(10),
        }
    }
}

/// Where the limit starts unless told otherwise: low, since growing to the
/// knee takes a few rounds of doubling, while starting far above it costs
/// a queue at the backend until the first probes cut it.
const DEFAULT_INITIAL: usize = 4;

/// Builds a checked [`AdaptiveConfig`]; unset settings keep their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveConfigBuilder {
    min: usize,
    max: usize,
    /// `None`: the default start, brought within `[min, max]`.
    initial: Option<usize>,
    probe_interval: Duration,
}

impl Default for AdaptiveConfigBuilder {
    fn default() -> Self {
        let defaults = AdaptiveConfig::default();
        Self {
            min: defaults.min,
            max: defaults.max,
            initial: None,
            probe_interval: defaults.probe_interval,
        }
    }
}

impl AdaptiveConfigBuilder {
    /// The lowest the limit may go [default: 2; see the module docs].
    pub fn min(mut self, min: usize) -> Self {
        self.min = min;
        self
    }

    /// The highest the limit may go [default: 256].
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The limit to start with [default: 4, or `min` or `max` if 4 is
    /// outside the range].
    pub fn initial(mut self, initial: usize) -> Self {
        self.initial = Some(initial);
        self
    }

    /// Time between two probes of the no-load latency [default: 10 s].
    pub fn probe_interval(mut self, probe_interval: Duration) -> Self {
        self.probe_interval = probe_interval;
        self
    }

    /// The settings, checked.
    ///
    /// # Errors
    ///
    /// - [`Error::AdaptiveMinZero`]: `min` is 0.
    /// - [`Error::AdaptiveMinAboveMax`]: `min` is above `max`.
    /// - [`Error::AdaptiveInitialOutOfRange`]: `initial` was set outside
    ///   `[min, max]`.
    /// - [`Error::AdaptiveProbeIntervalZero`]: `probe_interval` is zero.
    pub fn build(self) -> Result<AdaptiveConfig> {
        let Self {
            min,
            max,
            initial,
            probe_interval,
        } = self;
        if min == 0 {
            return Err(Error::AdaptiveMinZero);
        }
        if min > max {
            return Err(Error::AdaptiveMinAboveMax { min, max });
        }
        // `min <= max` holds from here, so `clamp` cannot panic.
        let initial = initial.unwrap_or(DEFAULT_INITIAL.clamp(min, max));
        if !(min..=max).contains(&initial) {
            return Err(Error::AdaptiveInitialOutOfRange { initial, min, max });
        }
        if probe_interval.is_zero() {
            return Err(Error::AdaptiveProbeIntervalZero);
        }
        Ok(AdaptiveConfig {
            min,
            max,
            initial,
            probe_interval,
        })
    }
}

/// The no-load latency of one size class.
#[derive(Debug, Clone, Copy)]
struct Base {
    latency: Duration,
    /// Whether a probe measured it; until then it is one call's latency,
    /// which any probe may replace.
    probed: bool,
}

/// The size class of a call of `cost` bytes.
fn class(cost: u64) -> usize {
    (u64::BITS - cost.max(1).leading_zeros()) as usize % CLASSES
}

#[derive(Debug)]
pub(crate) struct Adaptive {
    config: AdaptiveConfig,
    limit: f64,
    /// No-load latency per size class.
    base: [Option<Base>; CLASSES],
    /// Smoothed latency of successful calls, for timing rounds and probes.
    srtt: Option<Duration>,
    starting: bool,
    round: Round,
    probe: Option<Probe>,
    next_probe: Instant,
    /// The lowest limit that showed queueing or loss since the knee last
    /// moved up: growing back to it is done rarely.
    ceiling: Option<f64>,
    /// When the limit last stepped up to the ceiling.
    ceiling_tried: Instant,
    /// RTTs to wait between two steps up to the ceiling.
    ceiling_wait: u32,
    /// The queueing estimate of the last round.
    last_queue: f64,
    /// The mean latency per size class of the last round.
    last_means: [Option<Duration>; CLASSES],
    /// Whether the last probe lowered `R0`: the next follows at once and
    /// dips deeper.
    chasing: bool,
    /// Calls served per second, smoothed over about a second.
    served: RateMeter,
    /// When a loss last cut the limit.
    loss_cut: Option<Instant>,
    /// Rounds since the last loss, while throttling governs the limit.
    throttled: Option<u32>,
    /// The limit at the last loss.
    loss_limit: f64,
    /// Draws whether a fractional limit's last slot is used.
    dither: fastrand::Rng,
}

/// Successes per second, smoothed over about four bins.
#[derive(Debug)]
struct RateMeter {
    bin_start: Instant,
    count: u32,
    per_sec: f64,
}

impl RateMeter {
    fn record(&mut self, now: Instant) {
        let elapsed = now - self.bin_start;
        if elapsed >= RATE_BIN {
            let rate = f64::from(self.count) / elapsed.as_secs_f64();
            self.per_sec = if self.per_sec == 0.0 {
                rate
            } else {
                0.75 * self.per_sec + 0.25 * rate
            };
            self.bin_start = now;
            self.count = 0;
        }
        self.count += 1;
    }
}

#[derive(Debug)]
struct Round {
    /// Calls dispatched from here on belong to this round.
    start: Instant,
    /// Sum of latency / no-load latency over the round's successes.
    ratios: f64,
    samples: usize,
    /// Whether a call of the round was dispatched with the limit full.
    limited: bool,
    /// Latencies per size class, to lower `R0` when a round is faster.
    latencies: Latencies,
}

impl Round {
    fn new(start: Instant) -> Self {
        Self {
            start,
            ratios: 0.0,
            samples: 0,
            limited: false,
            latencies: Latencies::default(),
        }
    }
}

/// Sums and counts of latencies per size class.
#[derive(Debug)]
struct Latencies([(Duration, u32); CLASSES]);

impl Default for Latencies {
    fn default() -> Self {
        Self([(Duration::ZERO, 0); CLASSES])
    }
}

impl Latencies {
    fn add(&mut self, class: usize, latency: Duration) {
        let (sum, count) = &mut self.0[class];
        *sum += latency;
        *count += 1;
    }

    fn means(&self) -> impl Iterator<Item = (usize, Duration)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, (_, count))| *count > 0)
            .map(|(class, (sum, count))| (class, *sum / *count))
    }
}

#[derive(Debug)]
struct Probe {
    start: Instant,
    cap: usize,
    /// The limit to return to.
    saved: f64,
    latencies: Latencies,
    samples: usize,
}

impl Adaptive {
    pub(crate) fn new(config: AdaptiveConfig, now: Instant) -> Self {
        Self {
            config,
            // Within `[min, max]`: `AdaptiveConfig` is checked when built.
            limit: config.initial as f64,
            base: [None; CLASSES],
            srtt: None,
            starting: true,
            round: Round::new(now),
            probe: None,
            next_probe: now,
            ceiling: None,
            ceiling_tried: now,
            ceiling_wait: CEILING_RTTS,
            last_queue: 0.0,
            last_means: [None; CLASSES],
            chasing: true,
            served: RateMeter {
                bin_start: now,
                count: 0,
                per_sec: 0.0,
            },
            loss_cut: None,
            throttled: None,
            loss_limit: 0.0,
            dither: fastrand::Rng::with_seed(0x636f_7272_616c),
        }
    }

    /// The most calls in flight now: a fractional limit rounded up.
    pub(crate) fn limit(&self) -> usize {
        match &self.probe {
            Some(probe) => probe.cap,
            None => (self.limit.ceil() as usize).clamp(self.config.min, self.config.max),
        }
    }

    /// The limit for one dispatch. A fractional limit such as 4.75 uses its
    /// fifth slot on 75% of dispatches, so calls in flight average about
    /// 4.75: under throttling at a few calls in flight, whole steps are
    /// too coarse to sit just below the backend's rate.
    pub(crate) fn dispatch_limit(&mut self) -> usize {
        if self.probe.is_some() {
            return self.limit();
        }
        let floor = self.limit.floor();
        let extra = self.dither.f64() < self.limit - floor;
        ((floor as usize) + usize::from(extra)).clamp(self.config.min, self.config.max)
    }

    pub(crate) fn probing(&self) -> bool {
        self.probe.is_some()
    }

    /// Brings the limit back within `[min, max]`, a range the config's
    /// builder has checked is not empty (else `clamp` would panic).
    fn clamp(&mut self) {
        self.limit = self
            .limit
            .clamp(self.config.min as f64, self.config.max as f64);
    }

    /// A latency guess for timing: the smoothed RTT, or one second.
    fn rtt_guess(&self) -> Duration {
        self.srtt.unwrap_or(Duration::from_secs(1))
    }

    /// How many RTTs `span` is.
    fn rtts(&self, span: Duration) -> f64 {
        span.as_secs_f64() / self.rtt_guess().as_secs_f64()
    }

    pub(crate) fn on_sample(&mut self, sample: Sample, now: Instant) {
        let class = class(sample.cost);
        if sample.outcome == Outcome::Success {
            self.srtt = Some(match self.srtt {
                Some(srtt) => (srtt * 7 + sample.rtt) / 8,
                None => sample.rtt,
            });
        }
        if sample.outcome == Outcome::Success {
            self.served.record(now);
        }
        if self.probe.is_some() {
            self.on_probe_sample(sample, class, now);
            return;
        }
        if sample.outcome == Outcome::Loss {
            self.on_loss(sample.in_flight, now);
            return;
        }
        if sample.dispatched < self.round.start {
            return;
        }
        let round = &mut self.round;
        match sample.outcome {
            Outcome::Success => {
                // A size class seen for the first time starts from this
                // latency; the next probe corrects it.
                let base = self.base[class].get_or_insert(Base {
                    latency: sample.rtt,
                    probed: false,
                });
                let base = base.latency.max(Duration::from_micros(1));
                round.ratios += sample.rtt.as_secs_f64() / base.as_secs_f64();
                round.samples += 1;
                round.latencies.add(class, sample.rtt);
            }
            Outcome::Loss | Outcome::Ignore => {}
        }
        round.limited |= sample.in_flight >= self.limit.floor() as usize;
        // The round is over when a limit's worth of calls, and enough to
        // judge by, has come back.
        let needed = (self.limit.round() as usize).max(MIN_SAMPLES);
        if round.samples >= needed {
            self.end_round(now);
        }
    }

    fn end_round(&mut self, now: Instant) {
        let round = std::mem::replace(&mut self.round, Round::new(now));
        if round.samples > 0 {
            // A round clearly faster than R0 means R0 is stale: probe now.
            self.last_means = [None; CLASSES];
            for (class, mean) in round.latencies.means() {
                self.last_means[class] = Some(mean);
                if self.base[class].is_some_and(|base| mean < base.latency.mul_f64(PROBE_GAIN)) {
                    self.next_probe = now;
                }
            }
            let queue = round.ratios / round.samples as f64 - 1.0;
            self.last_queue = queue;
            let calm = self.loss_cut.map_or(0.0, |at| self.rtts(now - at));
            if let Some(rounds) = &mut self.throttled {
                *rounds += 1;
                if *rounds >= THROTTLED_ROUNDS || calm >= THROTTLED_RTTS {
                    self.throttled = None;
                }
            }
            if self.starting && queue <= 2.0 * QUEUE_HIGH {
                // Starting up, far below any knee seen so far: only clear
                // queueing ends the doubling, not the noise of a round.
                if round.limited && queue < QUEUE_HIGH {
                    self.limit *= 2.0;
                }
            } else if queue > QUEUE_HIGH {
                // Latency speaks in whole calls: a queue is a whole call
                // too many, and dithering would keep a fraction of one.
                self.cut((self.limit / (1.0 + queue)).round());
            } else if round.limited && (queue < QUEUE_LOW || self.throttled.is_some()) {
                if self.ceiling.is_some_and(|ceiling| self.limit >= ceiling) {
                    // The ceiling held no queueing this time: the knee moved.
                    self.ceiling = None;
                }
                self.grow(now, round.start);
            }
        }
        self.clamp();
        if now >= self.next_probe {
            // A routine probe needs only to dip below a limit that is at
            // most ~10% above the knee; a probe chasing a stale R0 halves.
            let dip = if self.chasing { 0.5 } else { 0.75 };
            self.probe = Some(Probe {
                start: now,
                cap: ((self.limit * dip).floor() as usize).max(self.config.min),
                saved: self.limit,
                latencies: Latencies::default(),
                samples: 0,
            });
        }
    }

    /// A throttle or a timeout: cut at once, not at the end of the round.
    /// A throttled call comes back within milliseconds, so its slot would
    /// otherwise be handed to the next call, which is throttled too: one
    /// slot over the backend's rate turns into a stream of 503s. Once per
    /// RTT, the limit becomes what the rate actually served needs by
    /// Little's law (served calls/s x latency), or 0.8 of itself if that
    /// says no less.
    fn on_loss(&mut self, in_flight: usize, now: Instant) {
        self.throttled = Some(0);
        let rtt = self.rtt_guess();
        if self.loss_cut.is_some_and(|at| now - at < rtt) {
            // More loss within the RTT of a cut: the backend could not take
            // this call on top of the others, so its slot goes.
            let cap = in_flight.saturating_sub(1) as f64;
            if cap < self.limit {
                self.limit = cap;
                self.clamp();
            }
            return;
        }
        self.loss_cut = Some(now);
        self.loss_limit = self.limit;
        let sustained = self.served.per_sec * rtt.as_secs_f64();
        let to = if sustained > 0.0 && sustained < self.limit / THROTTLED_TARGET {
            (sustained * THROTTLED_TARGET).max(self.limit * LOSS_BACKOFF)
        } else {
            self.limit * LOSS_BACKOFF
        };
        let to = to.min(self.limit * THROTTLED_CUT);
        self.cut(to);
        self.clamp();
        self.round = Round::new(now);
        // Under throttling, latency says nothing: a probe of R0 would only
        // cost throughput.
        self.next_probe = self.next_probe.max(now + self.config.probe_interval);
    }

    /// Lowers the limit to `to`, remembering where queueing or loss began.
    fn cut(&mut self, to: f64) {
        let from = self.limit.round();
        self.ceiling_wait = match self.ceiling {
            // The same ceiling again: wait longer before the next try.
            Some(ceiling) if from >= ceiling => (self.ceiling_wait * 2).min(CEILING_RTTS_MAX),
            _ => CEILING_RTTS,
        };
        self.ceiling = Some(self.ceiling.map_or(from, |ceiling| ceiling.min(from)));
        self.limit = to;
        self.starting = false;
    }

    /// Grows the limit after a round, begun at `round_start`, that showed
    /// room.
    fn grow(&mut self, now: Instant, round_start: Instant) {
        if self.throttled.is_some() {
            // Well below where the backend last throttled, step up; near
            // it, creep: a whole step would overshoot its rate by a fifth
            // at five calls in flight. The creep is per RTT, not per round
            // (see "Sharing a backend" in the module docs).
            let near = (0.9 * self.loss_limit).max(self.loss_limit - 1.0);
            self.limit = if self.limit < near {
                (self.limit + 1.0).min(near)
            } else {
                self.limit + THROTTLED_STEP * self.rtts(now - round_start).clamp(0.1, 4.0)
            };
            return;
        }
        // One step below the ceiling is the knee: trying the ceiling again
        // costs a round of queueing, so it is done only every so often.
        if self
            .ceiling
            .is_some_and(|ceiling| self.limit.round() + 1.0 >= ceiling)
        {
            if now - self.ceiling_tried < self.ceiling_wait * self.rtt_guess() {
                return;
            }
            self.ceiling_tried = now;
        }
        self.limit = self.limit.round() + 1.0;
    }

    fn on_probe_sample(&mut self, sample: Sample, class: usize, now: Instant) {
        let guess = self.rtt_guess();
        let probe = self.probe.as_mut().expect("called during a probe");
        if sample.dispatched >= probe.start && sample.outcome == Outcome::Success {
            probe.latencies.add(class, sample.rtt);
            probe.samples += 1;
        }
        let full = probe.samples >= probe.cap.max(MIN_SAMPLES);
        let timed_out = now - probe.start >= 8 * guess;
        if full || timed_out {
            self.end_probe(now);
        }
    }

    fn end_probe(&mut self, now: Instant) {
        let probe = self.probe.take().expect("called during a probe");
        let mut lowered = false;
        for (class, mean) in probe.latencies.means() {
            let base = &mut self.base[class];
            let measured = Some(Base {
                latency: mean,
                probed: true,
            });
            match *base {
                Some(old) if mean < old.latency.mul_f64(PROBE_GAIN) => {
                    lowered = true;
                    *base = measured;
                }
                // A measured R0 is raised only when the probe ran below the
                // knee: no queueing was seen before it, or lowering the
                // limit did not make calls faster (the backend itself got
                // slower; otherwise the limit would sink to its minimum).
                Some(old)
                    if old.probed
                        && mean > old.latency
                        && self.last_queue > QUEUE_HIGH
                        && self.last_means[class]
                            .is_none_or(|before| mean < before.mul_f64(PROBE_GAIN)) => {}
                // Close to a measured R0: average, to shed the noise of
                // one probe's few samples.
                Some(old) if old.probed && mean < old.latency.mul_f64(2.0 - PROBE_GAIN) => {
                    let latency = (old.latency + mean) / 2;
                    *base = Some(Base {
                        latency,
                        probed: true,
                    });
                }
                _ => *base = measured,
            }
        }
        self.limit = probe.saved;
        self.round = Round::new(now);
        self.chasing = lowered;
        self.next_probe = if lowered {
            now
        } else {
            now + self.config.probe_interval
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_are_powers_of_two() {
        assert_eq!(class(0), class(1));
        assert_eq!(class((64 << 10) - 1), 16);
        assert_eq!(class(64 << 10), 17);
        assert_eq!(class((128 << 10) - 1), 17);
        assert_ne!(class(64 << 10), class(64 << 20));
        assert!(class(u64::MAX) < CLASSES);
    }

    #[test]
    fn the_builder_starts_from_the_defaults() {
        let built = AdaptiveConfig::builder().build().unwrap();
        assert_eq!(built, AdaptiveConfig::default());
    }

    #[test]
    fn an_unset_start_is_brought_within_the_range() {
        let start = |min, max| {
            let config = AdaptiveConfig::builder().min(min).max(max).build();
            config.unwrap().initial()
        };
        assert_eq!(start(2, 64), DEFAULT_INITIAL);
        assert_eq!(start(8, 64), 8);
        assert_eq!(start(1, 2), 2);
        assert_eq!(start(3, 3), 3);
    }

    #[test]
    fn settings_that_contradict_each_other_are_refused_with_the_reason() {
        let builder = AdaptiveConfig::builder;
        let refused = |built: Result<AdaptiveConfig>| built.unwrap_err();
        assert!(matches!(
            refused(builder().min(0).build()),
            Error::AdaptiveMinZero
        ));
        // Once a panic of `usize::clamp` in the adaptive limit.
        assert!(matches!(
            refused(builder().min(9).max(2).build()),
            Error::AdaptiveMinAboveMax { min: 9, max: 2 }
        ));
        assert!(matches!(
            refused(builder().min(2).max(8).initial(9).build()),
            Error::AdaptiveInitialOutOfRange {
                initial: 9,
                min: 2,
                max: 8
            }
        ));
        assert!(matches!(
            refused(builder().initial(0).build()),
            Error::AdaptiveInitialOutOfRange { initial: 0, .. }
        ));
        assert!(matches!(
            refused(builder().probe_interval(Duration::ZERO).build()),
            Error::AdaptiveProbeIntervalZero
        ));
        let message = refused(builder().min(9).max(2).build()).to_string();
        assert_eq!(
            message,
            "the adaptive limit's minimum (9) is above its maximum (2)"
        );
    }
}
