//! The scheduler's scenarios, each with three seeds: every figure must
//! reach its target. Virtual time makes them exact, not wall-clock claims.

use corral_testkit::scenario::{self, Outcome};

const SEEDS: [u64; 3] = [1, 2, 3];

fn check(outcomes: impl IntoIterator<Item = Outcome>) {
    let mut missed = Vec::new();
    for outcome in outcomes {
        for figure in outcome.missed() {
            missed.push(format!(
                "{} (seed {}): {figure}",
                outcome.scenario, outcome.seed
            ));
        }
    }
    assert!(missed.is_empty(), "missed:\n{}", missed.join("\n"));
}

#[test]
fn knee_from_a_cold_start_at_1() {
    check(SEEDS.map(|seed| scenario::knee(seed, 1)));
}

#[test]
fn knee_from_a_cold_start_at_100() {
    check(SEEDS.map(|seed| scenario::knee(seed, 100)));
}

#[test]
fn step_down_and_up() {
    check(SEEDS.map(scenario::step));
}

#[test]
fn a_backend_that_gets_slower_is_followed() {
    check(SEEDS.map(scenario::slowdown));
}

#[test]
fn throttle_by_a_token_bucket() {
    check(SEEDS.map(scenario::throttle));
}

#[test]
fn a_hard_cap_that_rejects_beyond_its_slots() {
    check(SEEDS.map(scenario::hard_cap));
}

/// Issue 14's fleet in virtual time: instances that share a backend
/// without talking converge on equal shares, and the one left alone takes
/// the room the others leave within seconds.
#[test]
fn a_fleet_of_schedulers_shares_one_backend_and_takes_the_room_it_leaves() {
    check(SEEDS.map(scenario::fleet));
}

/// Regression: docs/BENCHMARKS.md published the throttle scenario's 503s
/// at 0.6% to 0.9% of calls, its retries at 0 and its failed jobs at 0,
/// which cannot all be true. The retries were miscopied into the hand-made
/// table (the command printed 0.006 / 0.009 / 0.007); here the counts are
/// checked against each other, counted by three parties: the backend, the
/// scheduler and the observer of each call.
///
/// The identity, from `Group::execute` in corral-sched: every attempt
/// that fails goes to `retry_wait`. `None` ends the job
/// [`JobError::Failed`](corral_sched::JobError) (`lost.failed`); `Some`
/// counts a retry (`Counters::retries`) before its backoff, and the
/// retry's call is made unless the job ends first, cancelled in the
/// backoff or refused at the start of the retry (`lost.abandoned`). The
/// simulated backend's only failure is a throttle, and nothing but a
/// worker's own job cancels its group, so:
///
/// - throttled calls = the scheduler's retries + jobs failed for good;
/// - the scheduler's retries = retry calls + jobs abandoned after a call.
#[test]
fn every_throttled_call_is_retried_or_ends_its_job() {
    for seed in SEEDS {
        for (scenario, record) in [
            ("throttle", scenario::throttle_record(seed)),
            ("hard cap", scenario::hard_cap_record(seed)),
        ] {
            let at = format!(
                "{scenario}, seed {seed}: {} throttled ({} observed), {:?}, \
                 {} calls observed ({} retries), {:?}",
                record.throttled,
                record.throttled_calls(),
                record.scheduler,
                record.calls.len(),
                record.retry_calls(),
                record.lost,
            );
            assert!(record.throttled > 0, "nothing to check: {at}");
            assert_eq!(record.throttled, record.throttled_calls(), "{at}");
            assert_eq!(
                record.throttled,
                record.scheduler.retries + record.lost.failed,
                "{at}"
            );
            assert_eq!(
                record.scheduler.retries,
                record.retry_calls() + record.lost.abandoned,
                "{at}"
            );
            assert_eq!(
                record.scheduler.dispatched,
                record.calls.len() as u64,
                "{at}"
            );
            assert_eq!(record.unaccounted_throttles(), 0.0, "{at}");
        }
    }
}

#[test]
fn a_late_small_tenant_is_not_stuck_behind_a_big_one() {
    check(SEEDS.map(scenario::fairness));
}

#[test]
fn a_dropped_request_leaves_nothing_queued_or_running() {
    check(SEEDS.map(scenario::cancellation));
}

/// Regression: a cold start met by 510 users at once once answered `500`
/// to 230 of them, their throttled calls having emptied the retry budget.
///
/// Every figure on every seed, but one: `time / floor` goes over 1.5 on
/// about one seed in ten (10 of seeds 1 to 100 at 3d96331, 9 since the
/// fair queue refunds failed attempts), where the adaptive limit swings
/// between 16 and 4 under the hard cap for the whole run. That is an open
/// defect of the limiter (see docs/BENCHMARKS.md); until it is fixed, at
/// most one seed of the ten may miss that figure, and by no more than 1.5
/// times the floor again.
#[test]
fn a_cold_start_burst_fails_no_batch_for_a_throttle() {
    let outcomes: Vec<Outcome> = (1..=10).map(scenario::cold_burst).collect();
    let mut slow = Vec::new();
    for outcome in &outcomes {
        for figure in &outcome.figures {
            println!("{} (seed {}): {figure}", outcome.scenario, outcome.seed);
            if figure.name == "time / floor" && !figure.met() {
                slow.push(figure.value);
            }
        }
    }
    assert!(
        slow.len() <= 1 && slow.iter().all(|&value| value <= 2.25),
        "time / floor over 1.5 on {} seeds: {slow:?}",
        slow.len()
    );
    let mut missed = Vec::new();
    for outcome in &outcomes {
        for figure in outcome.missed() {
            if figure.name != "time / floor" {
                missed.push(format!(
                    "{} (seed {}): {figure}",
                    outcome.scenario, outcome.seed
                ));
            }
        }
    }
    assert!(missed.is_empty(), "missed:\n{}", missed.join("\n"));
}
