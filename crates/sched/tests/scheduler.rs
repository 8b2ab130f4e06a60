//! The scheduler's public behaviour, in virtual time: admission, retries
//! under a budget, errgroup semantics, panics, strategies, shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use corral_sched::{
    Class, Classify, JobError, LimitConfig, QueueConfig, Refused, RetryConfig, SchedConfig,
    Scheduler,
};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Permanent,
    Transient,
    Throttled(Option<Duration>),
}

impl Classify for Fail {
    fn classify(&self) -> Class {
        match *self {
            Fail::Permanent => Class::Permanent,
            Fail::Transient => Class::Transient { retry_after: None },
            Fail::Throttled(retry_after) => Class::Throttled { retry_after },
        }
    }
}

fn scheduler(limit: LimitConfig) -> Scheduler {
    let mut config = SchedConfig {
        limit,
        ..SchedConfig::default()
    };
    config.retry.seed = Some(7);
    Scheduler::new(config)
}

async fn ok() -> Result<(), Fail> {
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_new_groups_with_a_retry_delay() {
    let scheduler = Scheduler::new(SchedConfig {
        limit: LimitConfig::Fixed(1),
        queue: QueueConfig {
            max_jobs: 2,
            max_bytes: u64::MAX,
        },
        ..SchedConfig::default()
    });
    let group = Arc::new(scheduler.group("a").unwrap());
    let mut jobs = Vec::new();
    for _ in 0..3 {
        let group = Arc::clone(&group);
        jobs.push(tokio::spawn(async move {
            group
                .run(0, || async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok::<_, Fail>(())
                })
                .await
        }));
        tokio::task::yield_now().await;
    }
    let stats = scheduler.stats();
    assert_eq!((stats.in_flight, stats.queued_jobs), (1, 2));
    match scheduler.group("b") {
        Err(Refused::Overloaded { retry_after }) => {
            assert!(
                retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(60)
            );
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }
    // An admitted group adding to a full queue is refused too.
    assert!(matches!(
        group.run(0, ok).await,
        Err(JobError::Overloaded { .. })
    ));
    for job in jobs {
        job.await.unwrap().unwrap();
    }
    assert!(scheduler.group("b").is_ok());
    assert_eq!(scheduler.counters().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_with_backoff_and_permanent_ones_are_not() {
    let scheduler = scheduler(LimitConfig::Fixed(4));
    let group = scheduler.group("a").unwrap();
    let attempts = AtomicU32::new(0);
    let started = Instant::now();
    let value = group
        .run(0, || async {
            if attempts.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(Fail::Transient)
            } else {
                Ok(42)
            }
        })
        .await
        .unwrap();
    assert_eq!(value, 42);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    // Two backoffs, each at most 100 ms then 200 ms.
    assert!(started.elapsed() <= Duration::from_millis(300));
    assert_eq!(scheduler.counters().retries, 2);

    let group = scheduler.group("a").unwrap();
    let attempts = AtomicU32::new(0);
    let result = group
        .run(0, || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Fail::Permanent)
        })
        .await;
    assert!(matches!(
        result,
        Err(JobError::Failed {
            source: Fail::Permanent,
            attempts: 1
        })
    ));
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

/// A scheduler whose retry budget is empty and never refills.
fn without_budget() -> Scheduler {
    Scheduler::new(SchedConfig {
        retry: RetryConfig {
            max_attempts: 3,
            budget_per_sec: 0.0,
            budget_max: 0.0,
            seed: Some(1),
            ..RetryConfig::default()
        },
        ..SchedConfig::default()
    })
}

/// Regression: throttled calls spent the retry budget, and a cold start
/// met by a burst emptied it, failing 230 batches of 510 with `500`.
#[tokio::test(start_paused = true)]
async fn a_throttle_is_retried_after_retry_after_for_free_and_whatever_the_attempts() {
    let scheduler = without_budget();
    let group = scheduler.group("a").unwrap();
    let started = Instant::now();
    let attempts = AtomicU32::new(0);
    let result = group
        .run(0, || async {
            // Ten throttles, more than `max_attempts`, then a success.
            match attempts.fetch_add(1, Ordering::SeqCst) {
                0..10 => Err(Fail::Throttled(Some(Duration::from_secs(2)))),
                _ => Ok(()),
            }
        })
        .await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 11);
    // Retry-After is a floor.
    assert!(started.elapsed() >= Duration::from_secs(20));
    let counters = scheduler.counters();
    assert_eq!(counters.retries, 10);
    assert_eq!(counters.budget_exhausted, 0);
}

#[tokio::test(start_paused = true)]
async fn other_transient_failures_are_capped_in_attempts() {
    let scheduler = Scheduler::new(SchedConfig {
        retry: RetryConfig {
            max_attempts: 3,
            seed: Some(1),
            ..RetryConfig::default()
        },
        ..SchedConfig::default()
    });
    let group = scheduler.group("a").unwrap();
    let attempts = AtomicU32::new(0);
    let result = group
        .run(0, || async {
            // Throttles in between do not count as attempts.
            match attempts.fetch_add(1, Ordering::SeqCst) % 2 {
                0 => Err::<(), _>(Fail::Transient),
                _ => Err(Fail::Throttled(None)),
            }
        })
        .await;
    assert!(matches!(result, Err(JobError::Failed { attempts: 5, .. })));
    assert_eq!(attempts.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_cannot_be_repeated_is_tried_again_only_after_a_throttle() {
    let scheduler = without_budget();
    let group = scheduler.group("a").unwrap();
    let attempts = AtomicU32::new(0);
    let result = group
        .run_unless_acted_on(0, || async {
            match attempts.fetch_add(1, Ordering::SeqCst) {
                0..5 => Err(Fail::Throttled(None)),
                _ => Ok(()),
            }
        })
        .await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 6);
    // A transient failure may have been acted on: not repeated.
    let attempts = AtomicU32::new(0);
    let result = group
        .run_unless_acted_on(0, || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Fail::Transient)
        })
        .await;
    assert!(matches!(result, Err(JobError::Failed { attempts: 1, .. })));
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn work_owed_to_the_process_is_retried_until_done_without_a_budget() {
    let scheduler = without_budget();
    let system = scheduler.system_group();
    let attempts = AtomicU32::new(0);
    let result = system
        .run_until_done(0, || async {
            match attempts.fetch_add(1, Ordering::SeqCst) {
                0..20 => Err(Fail::Transient),
                20..40 => Err(Fail::Throttled(None)),
                _ => Ok(()),
            }
        })
        .await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 41);
    // A permanent failure still ends it at once.
    let result = system
        .run_until_done(0, || async { Err::<(), _>(Fail::Permanent) })
        .await;
    assert!(matches!(result, Err(JobError::Failed { attempts: 1, .. })));
}

/// Fails every call while `down` is set, as a stopped backend does.
struct Switch {
    down: std::sync::atomic::AtomicBool,
    calls: AtomicUsize,
}

impl Switch {
    async fn call(&self) -> Result<(), Fail> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        match self.down.load(Ordering::SeqCst) {
            true => Err(Fail::Transient),
            false => Ok(()),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_is_down_is_refused_at_once_and_probed_back() {
    let scheduler = scheduler(LimitConfig::Fixed(4));
    let backend = Switch {
        down: true.into(),
        calls: AtomicUsize::new(0),
    };
    // Requests fail on a stopped backend until the breaker opens: after
    // three seconds without a good answer and ten failed calls.
    let mut failed_slowly = 0;
    let refused = loop {
        match scheduler.group("a") {
            Ok(group) => {
                let result = group.run(0, || backend.call()).await;
                assert!(result.is_err());
                failed_slowly += 1;
                assert!(failed_slowly < 100, "the breaker never opened");
            }
            Err(refused) => break refused,
        }
    };
    let Refused::Unavailable { retry_after } = refused else {
        panic!("{refused:?}");
    };
    assert_eq!(retry_after, Duration::from_secs(1));
    assert!(matches!(
        scheduler.health(),
        corral_sched::Health::Down { .. }
    ));
    assert_eq!(scheduler.counters().breaker_opened, 1);
    // While open, nothing reaches the backend.
    let calls = backend.calls.load(Ordering::SeqCst);
    let system = scheduler.system_group();
    let result = system.run(0, || backend.call()).await;
    assert!(matches!(result, Err(JobError::Unavailable { .. })));
    assert_eq!(backend.calls.load(Ordering::SeqCst), calls);

    // The backend comes back; work that must be done waits for the probe
    // and goes through it.
    backend.down.store(false, Ordering::SeqCst);
    let started = Instant::now();
    system.run_until_done(0, || backend.call()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(scheduler.health(), corral_sched::Health::Up);
    let group = scheduler.group("a").unwrap();
    group.run(0, || backend.call()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_stops_retries_so_they_cannot_amplify_an_overload() {
    let scheduler = Scheduler::new(SchedConfig {
        retry: RetryConfig {
            budget_per_sec: 0.0,
            budget_max: 2.0,
            seed: Some(1),
            ..RetryConfig::default()
        },
        ..SchedConfig::default()
    });
    // Every call fails: without a budget each job would make 5 attempts.
    let calls = Arc::new(AtomicUsize::new(0));
    let mut failed = 0;
    for _ in 0..100 {
        let group = scheduler.group("a").unwrap();
        let calls = Arc::clone(&calls);
        let result = group
            .run(0, || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(Fail::Transient) }
            })
            .await;
        failed += usize::from(result.is_err());
    }
    assert_eq!(failed, 100);
    let calls = calls.load(Ordering::SeqCst);
    // The 2 tokens the budget starts with, plus 0.1 per first attempt:
    // about 12 retries, not 400.
    assert!((100..=115).contains(&calls), "{calls} calls for 100 jobs");
    assert!(scheduler.counters().budget_exhausted >= 85);
}

#[tokio::test(start_paused = true)]
async fn the_first_permanent_failure_cancels_the_rest_of_the_group() {
    let scheduler = scheduler(LimitConfig::Fixed(2));
    let group = Arc::new(scheduler.group("a").unwrap());
    let finished = Arc::new(AtomicUsize::new(0));
    let mut jobs = Vec::new();
    for i in 0..10 {
        let (group, finished) = (Arc::clone(&group), Arc::clone(&finished));
        jobs.push(tokio::spawn(async move {
            group
                .run(0, || async {
                    if i == 0 {
                        return Err(Fail::Permanent);
                    }
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
        }));
    }
    let mut cancelled = 0;
    let mut failed = 0;
    for job in jobs {
        match job.await.unwrap() {
            Err(JobError::Cancelled) => cancelled += 1,
            Err(JobError::Failed { .. }) => failed += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((failed, cancelled), (1, 9));
    assert_eq!(finished.load(Ordering::SeqCst), 0);
    assert!(group.is_cancelled());
    let stats = scheduler.stats();
    assert_eq!((stats.in_flight, stats.queued_jobs), (0, 0));
    // Other groups are untouched.
    scheduler.group("a").unwrap().run(0, ok).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_panicking_job_is_an_error_of_that_job_and_frees_its_slot() {
    let scheduler = scheduler(LimitConfig::Fixed(1));
    let group = scheduler.group("a").unwrap();
    let result = group
        .run(0, || async {
            panic!("boom");
            #[allow(unreachable_code)]
            Ok::<(), Fail>(())
        })
        .await;
    match result {
        Err(JobError::Panicked { message }) => assert_eq!(message, "boom"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(scheduler.stats().in_flight, 0);
    // The only slot is free for the next request.
    scheduler.group("b").unwrap().run(0, ok).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn fixed_limits_bound_calls_in_flight_process_wide() {
    for (limit, bound) in [
        (LimitConfig::Fixed(3), 3),
        (LimitConfig::PerRequest(2), 2 * 5),
    ] {
        let scheduler = scheduler(limit);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut jobs = Vec::new();
        for request in 0..5 {
            let group = Arc::new(scheduler.group(&format!("t{request}")).unwrap());
            for _ in 0..10 {
                let (group, running, peak) =
                    (Arc::clone(&group), Arc::clone(&running), Arc::clone(&peak));
                jobs.push(tokio::spawn(async move {
                    group
                        .run(0, || async {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            running.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Fail>(())
                        })
                        .await
                }));
            }
        }
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), bound, "{limit}");
    }
}

#[tokio::test(start_paused = true)]
async fn unbounded_runs_everything_at_once() {
    let scheduler = scheduler(LimitConfig::Unbounded);
    let group = scheduler.group("a").unwrap();
    let calls = (0..500).map(|_| {
        group.run(0, || async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, Fail>(())
        })
    });
    let started = Instant::now();
    futures::future::join_all(calls).await;
    assert_eq!(started.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn shutdown_refuses_new_work_drains_then_cancels_the_rest() {
    let scheduler = scheduler(LimitConfig::Fixed(2));
    let group = Arc::new(scheduler.group("a").unwrap());
    let short = {
        let group = Arc::clone(&group);
        tokio::spawn(async move {
            group
                .run(0, || async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok::<_, Fail>(())
                })
                .await
        })
    };
    let long = {
        let group = Arc::clone(&group);
        tokio::spawn(async move {
            group
                .run(0, || async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok::<_, Fail>(())
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    let started = Instant::now();
    let drained = scheduler.shutdown(Duration::from_secs(5)).await;
    assert!(!drained, "the hour-long job cannot finish in 5 s");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert!(
        short.await.unwrap().is_ok(),
        "work within the grace finishes"
    );
    assert!(matches!(long.await.unwrap(), Err(JobError::Cancelled)));
    assert!(matches!(scheduler.group("b"), Err(Refused::ShuttingDown)));
    assert_eq!(scheduler.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn an_idle_scheduler_shuts_down_at_once() {
    let scheduler = scheduler(LimitConfig::default());
    scheduler.group("a").unwrap().run(0, ok).await.unwrap();
    let started = Instant::now();
    assert!(scheduler.shutdown(Duration::from_secs(30)).await);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn system_work_survives_its_own_failures_a_cancelled_request_and_shutdown() {
    let scheduler = scheduler(LimitConfig::Fixed(2));
    let system = scheduler.system_group();
    let failed = system
        .run(0, || async { Err::<(), _>(Fail::Permanent) })
        .await;
    assert!(matches!(failed, Err(JobError::Failed { .. })));
    // One failed cleanup does not cancel the next.
    system.run(0, ok).await.unwrap();

    let request = scheduler.group("a").unwrap();
    let cleanup = request.detached();
    let failed = request
        .run(0, || async { Err::<(), _>(Fail::Permanent) })
        .await;
    assert!(matches!(failed, Err(JobError::Failed { .. })));
    assert!(request.is_cancelled());
    // The request is cancelled; what it must still finish is not.
    cleanup.run(0, ok).await.unwrap();

    assert!(scheduler.shutdown(Duration::ZERO).await);
    assert!(matches!(scheduler.group("b"), Err(Refused::ShuttingDown)));
    system.run(0, ok).await.unwrap();
    cleanup.run(0, ok).await.unwrap();
}
