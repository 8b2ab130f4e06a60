//! The memory uploads may buffer, and the waiting room in front of it.
//!
//! Every upload reserves the most it may buffer before its body is read, so
//! the sum of upload buffers stays within `--upload-memory` whatever the
//! number of clients. When a thousand users send their batches at once, the
//! budget admits some and the rest must wait. Refusing them at once with
//! `429` makes every client guess when to come back: they return together
//! (a second herd) or give up. So an upload that finds the budget spent
//! waits for it, first come first served, without its body being read:
//! a waiting upload costs a connection and a small task, not its bytes,
//! and the client's sending is held back by TCP flow control.
//!
//! The wait is bounded twice: at most `--upload-queue` uploads wait, and
//! none waits longer than `--upload-wait`. Beyond either, the upload gets
//! `429` with a `Retry-After` estimated from how fast reserved memory has
//! been freed lately: the time to serve the uploads in the waiting room now,
//! and its own share. When it comes back, those are the uploads ahead of it
//! in line; the memory reserved now is not counted, as the uploads now
//! waiting will take it as it is freed. Coming back early costs little (the
//! upload waits in line again), coming back late leaves the backend idle:
//! counting what is reserved, a herd's last refused users came back after
//! the others had been served, and the backend idled 7 s of a 76 s run. It
//! is spread at random over its second half, so that uploads refused
//! together do not come back together (measured: without the spread, a
//! herd's refused users all came back at once after the others had
//! finished, leaving the backend idle for 6 s of a 75 s run).
//!
//! It is never longer than an upload may wait in line (`--upload-wait`):
//! a client back by then waits in line again, at the cost of a
//! connection. A longer estimate is the one most likely wrong: uploads
//! share the backend fairly, so those holding the memory end together and
//! free it in waves, and a rate measured between two waves is near zero.
//! Measured (`corral bench fleet`, uneven layout): a busy instance that
//! had freed two batches' memory in 21 s refused its last users with
//! 60 s; they came back 30 s later (the herd's clients wait at most 30 s),
//! 11 s after the fleet had stored everything else.
//!
//! `tokio::sync::Semaphore` is the budget (its waiters are served in FIFO
//! order, and a large reservation at the head is not overtaken by small
//! ones, so none starves); this module adds the bounds and the estimate.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::admission::refusal::{Refusal, wait};

/// The unit in which upload memory is reserved.
const UNIT: u64 = 64 << 10;

/// The upload memory budget and its waiting room.
#[derive(Debug)]
pub(crate) struct MemoryGate {
    budget: Arc<Semaphore>,
    /// The budget, in bytes.
    total: u64,
    max_waiting: usize,
    max_wait: Duration,
    /// Uploads waiting now.
    waiting: AtomicUsize,
    /// Bytes the uploads waiting now would reserve.
    waiting_bytes: AtomicU64,
    /// Bytes ever released by ended reservations; shared with them.
    released: Arc<AtomicU64>,
    /// How fast memory has been released lately.
    rate: Mutex<Rate>,
}

/// A smoothed rate of released bytes per second.
#[derive(Debug)]
struct Rate {
    at: Instant,
    released: u64,
    per_second: f64,
}

/// An upload's share of the budget, held until the upload ends.
#[derive(Debug)]
pub(crate) struct Reservation {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    released: Arc<AtomicU64>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.released.fetch_add(self.bytes, Ordering::Relaxed);
    }
}

impl MemoryGate {
    pub(crate) fn new(total: u64, max_waiting: usize, max_wait: Duration) -> Self {
        let units = usize::try_from(total / UNIT).unwrap_or(usize::MAX);
        Self {
            budget: Arc::new(Semaphore::new(units.min(Semaphore::MAX_PERMITS))),
            total,
            max_waiting,
            max_wait,
            waiting: AtomicUsize::new(0),
            waiting_bytes: AtomicU64::new(0),
            released: Arc::new(AtomicU64::new(0)),
            rate: Mutex::new(Rate {
                at: Instant::now(),
                released: 0,
                per_second: 0.0,
            }),
        }
    }

    /// Reserves `bytes`, waiting in line if the budget is spent (see the
    /// [module docs](self)).
    ///
    /// # Errors
    ///
    /// [`Refusal::MemorySpent`] if the waiting room is full or the wait
    /// runs out.
    pub(crate) async fn reserve(&self, bytes: u64) -> Result<Reservation, Refusal> {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        let bytes = u64::from(units) * UNIT;
        let reservation = |permit| Reservation {
            _permit: permit,
            bytes,
            released: Arc::clone(&self.released),
        };
        if let Ok(permit) = Arc::clone(&self.budget).try_acquire_many_owned(units) {
            return Ok(reservation(permit));
        }
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(self.overloaded(bytes));
        }
        // Counted in `waiting` above; uncounted when the wait ends.
        let waiting = Waiting::new(self, bytes);
        let acquire = Arc::clone(&self.budget).acquire_many_owned(units);
        let acquired = tokio::time::timeout(self.max_wait, acquire).await;
        drop(waiting);
        match acquired {
            Ok(Ok(permit)) => Ok(reservation(permit)),
            // The semaphore is never closed; a timeout is the only failure.
            _ => Err(self.overloaded(bytes)),
        }
    }

    /// Uploads waiting for memory now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Bytes reserved by uploads in progress now.
    pub(crate) fn reserved(&self) -> u64 {
        let free = self.budget.available_permits() as u64 * UNIT;
        self.total.saturating_sub(free)
    }

    /// The refusal of an upload of `bytes` that is not waiting (any more).
    fn overloaded(&self, bytes: u64) -> Refusal {
        let ahead = self.waiting_bytes.load(Ordering::Relaxed) + bytes;
        Refusal::MemorySpent {
            retry_after: self.estimate(ahead),
        }
    }

    /// When to come back for an upload that waits for `ahead` bytes to be
    /// freed: the time to free them at the recent rate (see
    /// [`crate::admission`]), spread.
    pub(crate) fn estimate(&self, ahead: u64) -> Duration {
        let estimate = wait(ahead as f64, self.release_rate());
        spread(estimate.min(self.max_wait), fastrand::f64())
    }

    /// Bytes released per second, smoothed over about ten seconds.
    fn release_rate(&self) -> f64 {
        let mut rate = self.rate.lock().expect("no panic while holding the lock");
        let now = Instant::now();
        let elapsed = now.duration_since(rate.at).as_secs_f64();
        if elapsed >= 1.0 {
            let released = self.released.load(Ordering::Relaxed);
            let recent = (released - rate.released) as f64 / elapsed;
            let weight = (elapsed / 10.0).min(1.0);
            rate.per_second += weight * (recent - rate.per_second);
            rate.at = now;
            rate.released = released;
        }
        rate.per_second
    }
}

/// `estimate` moved to the point `at` (in `0..1`) of its second half, in
/// whole seconds, at least one.
fn spread(estimate: Duration, at: f64) -> Duration {
    let seconds = estimate.as_secs_f64() * (0.5 + 0.5 * at);
    Duration::from_secs_f64(seconds.round().max(1.0))
}

/// Counts an upload (already counted in `waiting`) and its bytes in the
/// waiting room while it lives.
struct Waiting<'a> {
    gate: &'a MemoryGate,
    bytes: u64,
}

impl<'a> Waiting<'a> {
    fn new(gate: &'a MemoryGate, bytes: u64) -> Self {
        gate.waiting_bytes.fetch_add(bytes, Ordering::Relaxed);
        Self { gate, bytes }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.gate.waiting.fetch_sub(1, Ordering::Relaxed);
        self.gate
            .waiting_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[tokio::test(start_paused = true)]
    async fn uploads_wait_their_turn_in_order() {
        let gate = Arc::new(MemoryGate::new(2 * MIB, 10, Duration::from_secs(60)));
        let first = gate.reserve(2 * MIB).await.unwrap();
        assert_eq!(gate.reserved(), 2 * MIB);
        let (sender, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for (name, bytes) in [("big", 2 * MIB), ("small", MIB / 2)] {
            let (gate, sender) = (Arc::clone(&gate), sender.clone());
            waiters.push(tokio::spawn(async move {
                let reservation = gate.reserve(bytes).await.unwrap();
                sender.send(name).unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
                drop(reservation);
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.waiting(), 2);
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Nothing moves while the budget is spent: the small one does not
        // overtake the big one that came first.
        assert!(order.try_recv().is_err());
        drop(first);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(order.recv().await, Some("big"));
        assert_eq!(order.recv().await, Some("small"));
        assert_eq!((gate.waiting(), gate.reserved()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_waiting_room_or_a_long_wait_is_refused_with_an_estimate() {
        let gate = MemoryGate::new(4 * MIB, 1, Duration::from_secs(30));
        let held = gate.reserve(4 * MIB).await.unwrap();
        let waited = tokio::time::Instant::now();
        let error = gate.reserve(MIB).await.unwrap_err();
        assert_eq!(
            waited.elapsed(),
            Duration::from_secs(30),
            "waited its turn first"
        );
        let Refusal::MemorySpent { retry_after } = error else {
            panic!("{error:?}")
        };
        // Nothing served yet: the default estimate of 5 s, spread.
        assert!((3..=5).contains(&retry_after.as_secs()), "{retry_after:?}");

        // 4 MiB served in the last 10 s: 0.4 MiB/s.
        drop(held);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(gate.release_rate(), 0.4 * MIB as f64);
        let _held = gate.reserve(4 * MIB).await.unwrap();
        let room = async {
            let _waiting = gate.reserve(MIB).await;
        };
        let full = async {
            tokio::task::yield_now().await;
            assert_eq!(gate.waiting(), 1);
            gate.reserve(MIB).await.unwrap_err()
        };
        let ((), error) = tokio::join!(room, full);
        let Refusal::MemorySpent { retry_after } = error else {
            panic!("{error:?}")
        };
        // Ahead of it when it comes back: the 1 MiB waiting, then its own
        // 1 MiB; not the 4 MiB reserved, which the waiting room takes as it
        // is freed. 2 MiB at 0.4 MiB/s: 5 s, spread.
        assert!((3..=5).contains(&retry_after.as_secs()), "{retry_after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_upload_is_sent_away_for_longer_than_it_may_wait_in_line() {
        let gate = MemoryGate::new(4 * MIB, 0, Duration::from_secs(10));
        // 64 KiB freed in 10 s: 1 MiB ahead would take 160 s at that rate.
        drop(gate.reserve(UNIT).await.unwrap());
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(gate.release_rate(), UNIT as f64 / 10.0);
        let _held = gate.reserve(4 * MIB).await.unwrap();
        for _ in 0..20 {
            let error = gate.reserve(MIB - UNIT).await.unwrap_err();
            let Refusal::MemorySpent { retry_after } = error else {
                panic!("{error:?}")
            };
            // At most the 10 s of the line, spread over its second half.
            assert!((5..=10).contains(&retry_after.as_secs()), "{retry_after:?}");
        }
    }

    #[test]
    fn refused_uploads_are_told_to_come_back_at_spread_times() {
        let thirty = Duration::from_secs(30);
        assert_eq!(spread(thirty, 0.0), Duration::from_secs(15));
        assert_eq!(spread(thirty, 0.5), Duration::from_secs(23));
        assert_eq!(spread(thirty, 0.999), thirty);
        assert_eq!(spread(Duration::from_secs(1), 0.0), Duration::from_secs(1));
    }
}
