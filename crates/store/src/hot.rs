//! Reads of hot keys: single-flight, and a small cache.
//!
//! A thousand users opening the same shared file at once must not make a
//! thousand backend calls. Concurrent reads of one key (whole `GET`s, and
//! `HEAD`s) share one call while it is in flight: the first reader starts a
//! [`Flight`], the others wait for its answer. A small object's bytes (up
//! to [`MAX_SHARED_BODY`]) are read whole into memory by the flight, and
//! every reader gets them as a stream of its own; then the answer stays in
//! a cache for [`TTL`], so readers that come just after the flight landed
//! share it too. A larger object's stream goes to one reader; the others
//! learn its description from the flight and make their own call, since
//! fanning one stream out to readers of different speeds would hold the
//! whole object for the slowest.
//!
//! - **Memory stays bounded**: the bodies held, by flights and by the
//!   cache together, never exceed the configured capacity
//!   ([`crate::StoreConfig::read_cache`]); a small object that does not fit
//!   is streamed to its one reader as if there were no cache.
//! - **A shared call is one job** of the first reader's tenant, in a group
//!   detached from any one request: it is not cancelled while any reader
//!   still waits for it, and it is dropped (taking its job out of the
//!   queue, or freeing its slot) when the last one goes away. The map of
//!   flights holds them weakly, so a flight nobody waits for is never
//!   joined later with a slot still held.
//! - **Never across tenants**: entries are keyed by the full key, which
//!   begins with the tenant's prefix.
//! - **Deletes and writes invalidate**: [`HotReads::forget`] drops the
//!   key's entry and flight, and an answer whose flight began before any
//!   forget is not cached. Another instance's delete or overwrite is seen
//!   once the entry expires, after at most [`TTL`].
//!
//! Why not a cache crate: moka, the well-kept one, coalesces concurrent
//! loads of one key, but if the caller running a load is dropped it runs
//! the load again for the next waiter: a second backend call for one
//! flight, and a slot taken twice. What is needed here is a few maps
//! around [`futures::future::Shared`], whose semantics are exactly "runs
//! while anyone polls it".

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};

use futures::stream::BoxStream;

use crate::error::Result;
use crate::meta::ObjectInfo;

/// The bytes of an object, as they arrive from the backend.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// How long an answer stays cached.
pub const TTL: Duration = Duration::from_secs(2);

/// The largest object whose bytes a flight reads into memory to share.
pub const MAX_SHARED_BODY: u64 = 1 << 20;

/// What a cached head weighs against the capacity, besides its key.
const HEAD_WEIGHT: usize = 256;

/// The answer to a shared read.
pub(crate) struct Answer {
    /// What is known about the object.
    pub(crate) info: ObjectInfo,
    /// Its bytes, when they are shared.
    pub(crate) body: Body,
}

/// The bytes of a shared read's answer.
pub(crate) enum Body {
    /// Not read: the answer to a head.
    None,
    /// The whole object, verified, for every reader; the bytes are counted
    /// against the capacity until the answer is dropped.
    Shared {
        /// The object's bytes.
        bytes: Bytes,
        /// Their place in the capacity.
        _reserved: Reservation,
    },
    /// The stream of a larger object, for the first reader who takes it.
    Stream(Mutex<Option<ByteStream>>),
}

/// What a shared read is: the same key may have a flight of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// A whole `GET`.
    Get,
    /// A `HEAD`.
    Head,
}

type Fetch = BoxFuture<'static, Result<Arc<Answer>>>;
type Flight = Shared<Fetch>;

/// The flights in the air and the answers cached, for one store.
pub(crate) struct HotReads {
    core: Arc<Core>,
}

struct Core {
    /// Bytes of bodies that flights and the cache may hold; 0: no sharing.
    capacity: usize,
    /// Bumped by every [`HotReads::forget`]: an answer whose flight began
    /// under an older epoch is not cached.
    epoch: AtomicU64,
    state: Mutex<State>,
    /// Bytes reserved by bodies in flight and in the cache, and by heads.
    /// Apart from the state's lock, since reservations are dropped with
    /// entries while it is held.
    used: AtomicUsize,
}

#[derive(Default)]
struct State {
    flights: HashMap<(String, Kind), (u64, WeakShared<Fetch>)>,
    cached: HashMap<String, Cached>,
    /// Cached keys in the order they were cached, which is the order they
    /// expire in; an entry whose id no longer matches was replaced.
    order: VecDeque<(u64, String)>,
    next_id: u64,
}

struct Cached {
    id: u64,
    until: Instant,
    answer: Arc<Answer>,
    /// Its place in the capacity, for a head; a body holds its own.
    _reserved: Option<Reservation>,
}

/// Bytes counted against the capacity until dropped.
pub(crate) struct Reservation {
    bytes: usize,
    core: Arc<Core>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.core.used.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

impl Core {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("never poisoned")
    }

    /// A flight landed with `answer`: it leaves the map, and its answer is
    /// cached unless a key was forgotten since it began.
    fn land(
        self: &Arc<Self>,
        key: &str,
        kind: Kind,
        id: u64,
        epoch: u64,
        answer: Option<&Arc<Answer>>,
    ) {
        let mut state = self.lock();
        let slot = (key.to_owned(), kind);
        if state.flights.get(&slot).is_some_and(|(own, _)| *own == id) {
            state.flights.remove(&slot);
        }
        let Some(answer) = answer else { return };
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        let reserved = match answer.body {
            Body::Shared { .. } => None,
            _ => match self.reserve(&mut state, HEAD_WEIGHT + key.len()) {
                Some(reserved) => Some(reserved),
                None => return,
            },
        };
        // A large object's stream is its one reader's: the cache keeps
        // only its description.
        let answer = match answer.body {
            Body::Stream(_) => Arc::new(Answer {
                info: answer.info.clone(),
                body: Body::None,
            }),
            _ => Arc::clone(answer),
        };
        let cached = Cached {
            id,
            until: Instant::now() + TTL,
            answer,
            _reserved: reserved,
        };
        state.cached.insert(key.to_owned(), cached);
        state.order.push_back((id, key.to_owned()));
    }

    /// Reserves `bytes` of the capacity, evicting the oldest entries as
    /// needed; `None` if they do not fit even then.
    fn reserve(self: &Arc<Self>, state: &mut State, bytes: usize) -> Option<Reservation> {
        state.expire(Instant::now());
        loop {
            let fits = self
                .used
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                    (used + bytes <= self.capacity).then_some(used + bytes)
                });
            if fits.is_ok() {
                return Some(Reservation {
                    bytes,
                    core: Arc::clone(self),
                });
            }
            if !state.evict_oldest() {
                return None;
            }
        }
    }
}

impl State {
    /// The cached answer for a read of `kind` of `key`, if fresh.
    fn fresh(&mut self, key: &str, kind: Kind) -> Option<Arc<Answer>> {
        self.expire(Instant::now());
        let cached = self.cached.get(key)?;
        match (&cached.answer.body, kind) {
            (Body::Shared { .. }, _) | (_, Kind::Head) => Some(Arc::clone(&cached.answer)),
            _ => None,
        }
    }

    /// Drops the entries that expired by `now`.
    fn expire(&mut self, now: Instant) {
        while let Some((id, key)) = self.order.front() {
            match self.cached.get(key) {
                Some(cached) if cached.id == *id && cached.until > now => return,
                _ => {}
            }
            self.evict_oldest();
        }
    }

    /// Drops the oldest entry; `false` if there was none.
    fn evict_oldest(&mut self) -> bool {
        let Some((id, key)) = self.order.pop_front() else {
            return false;
        };
        if self.cached.get(&key).is_some_and(|cached| cached.id == id) {
            self.cached.remove(&key);
        }
        true
    }
}

impl std::fmt::Debug for HotReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.core.lock();
        f.debug_struct("HotReads")
            .field("capacity", &self.core.capacity)
            .field("used", &self.core.used.load(Ordering::SeqCst))
            .field("flights", &state.flights.len())
            .field("cached", &state.cached.len())
            .finish()
    }
}

impl HotReads {
    /// Sharing with bodies up to `capacity` bytes held at once; 0 turns
    /// sharing off.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            core: Arc::new(Core {
                capacity,
                epoch: AtomicU64::new(0),
                state: Mutex::default(),
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// Whether reads are shared at all.
    pub(crate) fn enabled(&self) -> bool {
        self.core.capacity > 0
    }

    /// The answer for `key`, from the cache (a `Get` answer serves a
    /// `Head` too), from a flight of `kind` in the air, or from a new
    /// flight that runs `fetch`. A `Head` also joins a `Get` in the air.
    pub(crate) async fn read<F>(&self, key: &str, kind: Kind, fetch: F) -> Result<Arc<Answer>>
    where
        F: FnOnce() -> BoxFuture<'static, Result<Answer>>,
    {
        let flight = {
            let mut state = self.core.lock();
            if let Some(answer) = state.fresh(key, kind) {
                return Ok(answer);
            }
            let kinds: &[Kind] = match kind {
                Kind::Get => &[Kind::Get],
                Kind::Head => &[Kind::Head, Kind::Get],
            };
            let joined = kinds.iter().find_map(|kind| {
                let (_, weak) = state.flights.get(&(key.to_owned(), *kind))?;
                weak.upgrade()
            });
            match joined {
                Some(flight) => flight,
                None => self.launch(&mut state, key, kind, fetch()),
            }
        };
        flight.await
    }

    /// Starts the flight of `fetch`, which caches its answer when it lands
    /// and leaves the map of flights.
    fn launch(
        &self,
        state: &mut State,
        key: &str,
        kind: Kind,
        fetch: BoxFuture<'static, Result<Answer>>,
    ) -> Flight {
        let id = state.next_id;
        state.next_id += 1;
        let epoch = self.core.epoch.load(Ordering::SeqCst);
        let (core, owned) = (Arc::clone(&self.core), key.to_owned());
        let flight = async move {
            let answer = fetch.await.map(Arc::new);
            core.land(&owned, kind, id, epoch, answer.as_ref().ok());
            answer
        }
        .boxed()
        .shared();
        let weak = flight.downgrade().expect("the flight was not polled yet");
        state.flights.insert((key.to_owned(), kind), (id, weak));
        flight
    }

    /// Reserves `size` bytes for a body to share, if it is small enough
    /// and fits; `None`: stream it to its one reader instead.
    pub(crate) fn reserve(&self, size: u64) -> Option<Reservation> {
        if size > MAX_SHARED_BODY {
            return None;
        }
        let bytes = usize::try_from(size).ok()?;
        let mut state = self.core.lock();
        self.core.reserve(&mut state, bytes)
    }

    /// Forgets what is known of `key`: its cached answer, and its flights
    /// for readers still to come. Call on every delete and write.
    pub(crate) fn forget(&self, key: &str) {
        self.core.epoch.fetch_add(1, Ordering::SeqCst);
        let mut state = self.core.lock();
        state.cached.remove(key);
        state.flights.remove(&(key.to_owned(), Kind::Get));
        state.flights.remove(&(key.to_owned(), Kind::Head));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;
    use tokio::sync::oneshot;

    fn info(size: u64) -> ObjectInfo {
        ObjectInfo {
            key: Key::parse("t/k").unwrap(),
            size,
            e_tag: None,
            last_modified: chrono::DateTime::UNIX_EPOCH,
            content_type: None,
            sha256: None,
        }
    }

    /// A fetch that counts its runs and its drops, and answers a head when
    /// `release` is sent.
    fn gated(
        runs: &Arc<AtomicUsize>,
        dropped: &Arc<AtomicUsize>,
    ) -> (oneshot::Sender<()>, BoxFuture<'static, Result<Answer>>) {
        struct Guard(Arc<AtomicUsize>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (release, released) = oneshot::channel();
        let (runs, guard) = (Arc::clone(runs), Guard(Arc::clone(dropped)));
        let fetch = async move {
            let _guard = guard;
            runs.fetch_add(1, Ordering::SeqCst);
            released.await.ok();
            Ok(Answer {
                info: info(3),
                body: Body::None,
            })
        };
        (release, fetch.boxed())
    }

    #[tokio::test]
    async fn a_flight_runs_while_any_reader_waits_and_is_dropped_with_the_last() {
        let hot = Arc::new(HotReads::new(1 << 20));
        let (runs, dropped) = (Arc::default(), Arc::default());
        let (release, fetch) = gated(&runs, &dropped);
        let mut fetch = Some(fetch);
        let first = hot.read("t/k", Kind::Head, || fetch.take().unwrap());
        let mut first = Box::pin(first);
        // Polled once: the flight is in the air.
        assert!(futures::poll!(first.as_mut()).is_pending());
        let joined = tokio::spawn({
            let hot = Arc::clone(&hot);
            async move {
                hot.read("t/k", Kind::Head, || unreachable!())
                    .await
                    .map(|a| a.info.size)
            }
        });
        tokio::task::yield_now().await;
        // The first reader goes away; the second still waits, so the call
        // goes on, and its answer reaches the second.
        drop(first);
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        release.send(()).unwrap();
        assert_eq!(joined.await.unwrap().unwrap(), 3);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Cached now: no flight for the next reader.
        let cached = hot.read("t/k", Kind::Head, || unreachable!()).await;
        assert_eq!(cached.unwrap().info.size, 3);

        // A flight that every reader left is dropped, and the next reader
        // starts a flight of its own instead of joining a dead one.
        hot.forget("t/k");
        let (_never, fetch) = gated(&runs, &dropped);
        let mut fetch = Some(fetch);
        let mut lone = Box::pin(hot.read("t/k", Kind::Head, || fetch.take().unwrap()));
        assert!(futures::poll!(lone.as_mut()).is_pending());
        drop(lone);
        assert_eq!(dropped.load(Ordering::SeqCst), 2);
        let (release, fetch) = gated(&runs, &dropped);
        release.send(()).unwrap();
        let again = hot.read("t/k", Kind::Head, || fetch).await;
        assert_eq!(again.unwrap().info.size, 3);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_answer_fetched_across_a_forget_is_not_cached() {
        let hot = HotReads::new(1 << 20);
        let (runs, dropped) = (Arc::default(), Arc::default());
        let (release, fetch) = gated(&runs, &dropped);
        let mut flight = Box::pin(hot.read("t/k", Kind::Head, || fetch));
        assert!(futures::poll!(flight.as_mut()).is_pending());
        // Deleted while the read was in the air.
        hot.forget("t/k");
        release.send(()).unwrap();
        flight.await.unwrap();
        let (release, fetch) = gated(&runs, &dropped);
        release.send(()).unwrap();
        hot.read("t/k", Kind::Head, || fetch).await.unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "the stale answer was cached"
        );
    }

    #[test]
    fn bodies_held_never_exceed_the_capacity() {
        let hot = HotReads::new(1000);
        let first = hot.reserve(600).expect("fits");
        assert!(hot.reserve(600).is_none(), "over the capacity");
        assert!(hot.reserve(MAX_SHARED_BODY + 1).is_none());
        drop(first);
        let second = hot.reserve(1000).expect("fits once the first is gone");
        assert_eq!(hot.core.used.load(Ordering::SeqCst), 1000);
        drop(second);
        assert_eq!(hot.core.used.load(Ordering::SeqCst), 0);
        assert!(!HotReads::new(0).enabled());
    }
}
