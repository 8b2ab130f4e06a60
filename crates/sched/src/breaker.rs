//! The circuit breaker: tells a backend that is down from one that is only
//! busy, and stops sending it work while it is down.
//!
//! # Why
//!
//! A busy backend answers some calls and throttles others; the limit slows
//! down and throttled calls wait their turn again. A backend that is down
//! (stopped, unreachable, failing every call) answers none, and each
//! request would spend seconds of retries to learn what the previous one
//! learnt. Once the backend has given no good answer for a while, the
//! breaker *opens*: new requests and new attempts are refused at once
//! ([`Refused::Unavailable`](crate::Refused::Unavailable)), which the
//! server answers `503` with `Retry-After`. After a wait, one call is let
//! through as a *probe*; a good answer closes the breaker, a failure opens
//! it again for twice as long (up to `max_wait`).
//!
//! A good answer is any answer that shows the backend at work: a success,
//! or a permanent refusal such as `404` or `403`. A failure is a transient
//! error (`5xx`, a reset or refused connection) or a throttle or timeout.
//! A throttle alone does not open the breaker while other calls succeed:
//! the breaker opens only when *nothing* succeeded for `silence` despite
//! at least `failures` failed calls.
//!
//! No crate is used: tower has no breaker, and the ones on crates.io
//! (`failsafe`) count failures per call site and know nothing of the
//! scheduler's admission, which is where refusing must happen.

use std::time::Duration;

use tokio::time::Instant;

/// When the breaker opens, and how it probes the backend back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failed calls in a row, with no good answer between them, that open
    /// the breaker, provided `silence` has also passed.
    pub failures: u32,
    /// How long without a good answer opens the breaker, provided
    /// `failures` calls failed meanwhile.
    pub silence: Duration,
    /// The wait before the first probe once open.
    pub first_wait: Duration,
    /// The longest wait between two probes; the wait doubles after each
    /// failed probe.
    pub max_wait: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 10,
            silence: Duration::from_secs(3),
            first_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Whether the backend is usable, as far as the scheduler knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// It answers.
    Up,
    /// It gave no good answer for a while; calls are refused.
    Down {
        /// Since when it is down.
        since: Instant,
        /// When the next probe may go.
        retry_at: Instant,
    },
}

/// What the breaker says to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Go ahead.
    Go,
    /// Go ahead, as the probe: report how it ended.
    Probe,
    /// Do not call; try again after this wait.
    Refuse(Duration),
}

#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    /// Failed calls since the last good answer.
    failures: u32,
    last_answer: Instant,
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open {
        since: Instant,
        retry_at: Instant,
        wait: Duration,
        /// Whether a probe is out now.
        probing: bool,
    },
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig, now: Instant) -> Self {
        Self {
            config,
            failures: 0,
            last_answer: now,
            state: State::Closed,
        }
    }

    pub(crate) fn health(&self) -> Health {
        match self.state {
            State::Closed => Health::Up,
            State::Open {
                since, retry_at, ..
            } => Health::Down { since, retry_at },
        }
    }

    /// Whether an attempt may call the backend now.
    pub(crate) fn admit(&mut self, now: Instant) -> Admit {
        if let Some(wait) = self.refuses(now) {
            return Admit::Refuse(wait);
        }
        match &mut self.state {
            State::Closed => Admit::Go,
            State::Open { probing, .. } => {
                *probing = true;
                Admit::Probe
            }
        }
    }

    /// How long a new request should wait, if the breaker refuses calls
    /// now: it is open, and the next probe is not due or is already out.
    /// At least a second, the least `Retry-After` can say.
    pub(crate) fn refuses(&self, now: Instant) -> Option<Duration> {
        match self.state {
            State::Closed => None,
            State::Open {
                retry_at, probing, ..
            } => (probing || now < retry_at).then(|| {
                retry_at
                    .saturating_duration_since(now)
                    .max(Duration::from_secs(1))
            }),
        }
    }

    /// The backend gave a good answer: the breaker closes.
    pub(crate) fn on_answer(&mut self, now: Instant) {
        self.failures = 0;
        self.last_answer = now;
        self.state = State::Closed;
    }

    /// A call failed (transient, throttled or timed out); `probe` says
    /// whether it was the probe. Returns whether that opened the breaker.
    pub(crate) fn on_failure(&mut self, now: Instant, probe: bool) -> bool {
        self.failures = self.failures.saturating_add(1);
        match &mut self.state {
            State::Open {
                retry_at,
                wait,
                probing,
                ..
            } => {
                if probe {
                    *wait = (*wait * 2).min(self.config.max_wait);
                    *retry_at = now + *wait;
                    *probing = false;
                }
                false
            }
            State::Closed => {
                let open = self.failures >= self.config.failures
                    && now - self.last_answer >= self.config.silence;
                if open {
                    self.state = State::Open {
                        since: now,
                        retry_at: now + self.config.first_wait,
                        wait: self.config.first_wait,
                        probing: false,
                    };
                }
                open
            }
        }
    }

    /// The probe ended without telling how (it was cancelled): the next
    /// attempt may probe.
    pub(crate) fn probe_dropped(&mut self) {
        if let State::Open { probing, .. } = &mut self.state {
            *probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig::default()
    }

    #[tokio::test(start_paused = true)]
    async fn failures_among_successes_never_open_it() {
        let mut breaker = Breaker::new(config(), Instant::now());
        for _ in 0..1000 {
            tokio::time::advance(Duration::from_millis(10)).await;
            // A throttled burst of 50, then one success: a busy backend.
            for _ in 0..50 {
                assert!(!breaker.on_failure(Instant::now(), false));
            }
            breaker.on_answer(Instant::now());
        }
        assert_eq!(breaker.health(), Health::Up);
        assert_eq!(breaker.admit(Instant::now()), Admit::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn it_opens_after_silence_and_enough_failures_only() {
        let mut breaker = Breaker::new(config(), Instant::now());
        // Many failures at once: not yet silence.
        for _ in 0..100 {
            assert!(!breaker.on_failure(Instant::now(), false));
        }
        // Silence, but only one failure after it... which is the tenth or
        // more in a row: open.
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(breaker.on_failure(Instant::now(), false));
        let since = Instant::now();
        assert_eq!(
            breaker.health(),
            Health::Down {
                since,
                retry_at: since + Duration::from_secs(1)
            }
        );

        // Silence with too few failures keeps it closed.
        let mut quiet = Breaker::new(config(), Instant::now());
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..9 {
            assert!(!quiet.on_failure(Instant::now(), false));
        }
        assert_eq!(quiet.health(), Health::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_at_a_time_with_a_doubling_wait_until_an_answer_closes_it() {
        let mut breaker = Breaker::new(config(), Instant::now());
        tokio::time::advance(Duration::from_secs(3)).await;
        for _ in 0..10 {
            breaker.on_failure(Instant::now(), false);
        }
        assert_eq!(
            breaker.admit(Instant::now()),
            Admit::Refuse(Duration::from_secs(1))
        );
        let mut waits = Vec::new();
        for _ in 0..7 {
            let Health::Down { retry_at, .. } = breaker.health() else {
                panic!("down");
            };
            waits.push((retry_at - Instant::now()).as_secs());
            tokio::time::advance(retry_at - Instant::now()).await;
            assert_eq!(breaker.admit(Instant::now()), Admit::Probe);
            // Only one probe out at a time.
            assert!(matches!(breaker.admit(Instant::now()), Admit::Refuse(_)));
            assert!(!breaker.on_failure(Instant::now(), true));
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);

        // A probe cancelled before it answered lets the next one go.
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(breaker.admit(Instant::now()), Admit::Probe);
        breaker.probe_dropped();
        assert_eq!(breaker.admit(Instant::now()), Admit::Probe);
        breaker.on_answer(Instant::now());
        assert_eq!(breaker.health(), Health::Up);
        assert_eq!(breaker.admit(Instant::now()), Admit::Go);
    }
}
