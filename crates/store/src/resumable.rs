//! Resumable uploads: an object written over many requests, possibly by
//! many processes, that becomes an ordinary object when its last byte
//! arrives.
//!
//! # Where an upload lives
//!
//! An upload in progress is an [`Upload`] paused between requests (see
//! [`Upload::pause`]): its multipart upload, its parts so far, the saved
//! state of its SHA-256, and the bytes after its last part. Everything is
//! in the object store, so any process can go on with it:
//!
//! - `.corral/uploads/{owner}/{id}`: its state, a JSON document (the
//!   [`UploadRecord`] the client asked for, its offset, the paused upload);
//! - `.corral/uploads/{owner}/{id}.tail.{start}`: the bytes received after
//!   its last part, which ends at byte `start`. Parts must be at least 5 MiB on S3, and a request cut off after
//!   3 MiB must not lose them, so they wait here until the next request
//!   reads them back in front of its own bytes.
//!
//! The owner (the tenant's root key) is part of the path: another tenant's
//! upload id finds nothing.
//!
//! # Calls
//!
//! Each backend call is a job of the request's group, through the
//! scheduler. An upload sent whole in its first request is an ordinary
//! upload and costs what one costs (one call for a small file): no state
//! is ever written. An empty creation costs one call (the state); a
//! request that stops before the end costs one for its tail (if any bytes
//! are past the last part) and one for the state; the request that ends an
//! upload costs what its object costs plus one bulk delete of the state
//! and tail; a request on an upload made before takes its lease first (one
//! call, see below), but for the first request after an empty creation on
//! the instance that made it, which puts its lease off. The state of an
//! upload this process has touched is cached, so a request on it reads
//! nothing back: a small file sent in a request after an empty creation
//! costs three calls in all (state, object, delete).
//!
//! # Integrity
//!
//! Bytes are appended only at the offset the state records
//! ([`Error::OffsetMismatch`] otherwise). A request whose bytes are refused
//! (a checksum that does not match) is [discarded](Resuming::discard): the
//! state is left as it was, and parts stored meanwhile are replaced by the
//! next request's parts of the same numbers. The SHA-256 of the object is
//! carried across requests in the state, so it is never read back.
//!
//! # Many instances: the lease
//!
//! Several processes (a fleet behind a load balancer) may serve one
//! upload, one request at a time: the store keeps them apart, with no
//! coordinator but its own conditional writes. Every write of a state is
//! conditional: the first [`PutMode::Create`], each later one
//! [`PutMode::Update`] on the version the writer read or last wrote. A
//! write refused because the state changed meanwhile is
//! [`Error::LeaseLost`], never an overwrite.
//!
//! A request that goes on with an upload
//! ([`Store::resume_upload`](crate::Store::resume_upload)) first takes
//! its *lease*: it writes the state back, unchanged but for the lease,
//! naming this instance (`holder`: an id drawn when the store opens, or
//! kept beside the journal of batches so that a restarted corral is the
//! same instance, see `StoreConfig::instance_file`) and an expiry
//! (`until`, now plus the store's `upload_lease`). That write is
//! conditional too, so of two instances racing for an upload exactly one
//! gets it; the other, and any request that finds a live lease of another
//! instance's, is refused with [`Error::Leased`] until the holder
//! releases it (the state saved when the request ends names no holder)
//! or it expires. The holder renews it while the request runs (a write
//! each third of the lease, before its next write of the upload's
//! objects, so only requests that long pay for it). An instance that dies
//! holding a lease holds it until `until`; then another takes the upload
//! over from the last state saved, as after a restart. Expiry is read
//! against this machine's clock: the instances' clocks must agree to well
//! within a lease.
//!
//! Taking the lease is the one call a lease costs: a request that stops
//! short costs three (lease, tail, state), one that ends the upload its
//! object's calls plus two (lease, delete). Within a process the server
//! runs one request per upload at a time, so a lease this instance holds
//! is taken over by its next request on the upload.
//!
//! # The first request after an empty creation
//!
//! tus clients create an upload empty and send its bytes in a `PATCH`
//! right after, most often to the same instance. When that instance
//! wrote the state last, nothing of the upload is stored but its state,
//! no lease is held, and the object is one call (its length is at most
//! the multipart threshold), the request *puts its lease off*
//! (`Resumables::deferrable`): it takes it only before it writes
//! anything but the object (a part, a tail, the state: a request cut
//! short, or one sending more than it said), and writes the object only
//! if its key is free (`Upload::exclusive`, `PutMode::Create`). What it
//! writes is still kept apart from another instance's request on the
//! upload, which may have taken the lease meanwhile (the cache cannot
//! know): of two objects, one is stored and the other request gets
//! [`Error::LeaseLost`] with nothing written; a late lease is refused
//! ([`Error::Leased`]) before anything is written; and the holder, once
//! the object is stored and the state gone, cannot save
//! ([`Error::LeaseLost`]; a tail it wrote first is litter that names an
//! upload, removed by the sweep once the upload has expired). So the
//! `PATCH` costs the object and the delete, and no lease.
//!
//! # The cache
//!
//! The state of an upload this process has touched is cached with its
//! version. Another instance may have written it since: a conditional
//! write on a stale version is refused, and the state is read again (one
//! call) before the request goes on or is refused. A status
//! ([`Store::upload_status`](crate::Store::upload_status)) asks the
//! store whether the cached version is still the latest (a conditional
//! read, one call, no body when it is).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use corral_sched::Group;
use futures::{StreamExt, TryFutureExt};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::backend::local::NotDurable;
use crate::error::{BackendError, Error, Result};
use crate::key::Key;
use crate::upload::{Paused, StoredObject, Upload, Writer};

/// Where the states of uploads in progress live.
const UPLOADS: &str = ".corral/uploads";

/// States kept in memory at most; beyond, the oldest are read back.
const CACHED: usize = 10_000;

/// What a client asked for when it created an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// The object the upload becomes.
    pub key: Key,
    /// Its length in bytes, once known.
    pub length: Option<u64>,
    /// Its content type, if the client named one.
    pub content_type: Option<String>,
    /// The file's name as the client gave it.
    pub name: Option<String>,
    /// The client's own metadata, kept as sent to be shown again.
    pub metadata: Option<String>,
    /// Whether the upload is a part of a concatenation to come: then it
    /// becomes no file of its own, but an object of the store's, under
    /// `.corral/objects/{owner}/{id}`, until
    /// [`Store::concatenate`](crate::Store::concatenate) takes it.
    #[serde(default)]
    pub partial: bool,
}

/// An upload in progress, as a status request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    /// What the client asked for.
    pub record: UploadRecord,
    /// The bytes stored so far.
    pub offset: u64,
    /// When it expires.
    pub expires: SystemTime,
}

/// When the upload `id`, made at the time its UUIDv7 holds, expires after
/// `expiry`; `None` for an id that is no UUIDv7 (never made here).
pub fn expires(id: &str, expiry: Duration) -> Option<SystemTime> {
    let uuid = uuid::Uuid::parse_str(id).ok()?;
    let (seconds, nanos) = uuid.get_timestamp()?.to_unix();
    let made = SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos);
    Some(made + expiry)
}

/// The state document of an upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    record: UploadRecord,
    /// The upload as it was last paused (bytes received, parts, hash).
    paused: Paused,
    /// Where the tails ever written start (one per last part they
    /// followed), so that they are removed with the state. A tail is named
    /// by its start: the one a saved state names is never overwritten by a
    /// later request that stored more parts, only by one whose tail starts
    /// at the same byte, and so begins with the same bytes.
    #[serde(default)]
    tails: Vec<u64>,
    /// Who is writing the upload, and until when at most; `None` when no
    /// request is (see the [module docs](self)).
    #[serde(default)]
    lease: Option<Lease>,
}

/// The lease of an upload: the instance writing it, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    /// The holder's instance id.
    holder: String,
    /// When the lease expires, in milliseconds since the Unix epoch.
    until_ms: u64,
}

impl Lease {
    fn until(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.until_ms)
    }
}

/// A state as stored: the state, and the version it was read or written
/// as, on which the next write of it is conditional.
#[derive(Debug, Clone)]
struct Versioned {
    state: State,
    version: UpdateVersion,
}

/// Milliseconds since the Unix epoch of `time`.
fn epoch_ms(time: SystemTime) -> u64 {
    let since = time.duration_since(SystemTime::UNIX_EPOCH);
    since.map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

/// A conditional write of a state refused: it changed since the version
/// the write was based on (or exists, for a first write).
#[derive(Debug)]
struct Changed;

/// The resumable uploads of a store.
#[derive(Debug)]
pub(crate) struct Resumables {
    writer: Writer,
    /// How long after its creation an upload is removed, finished or not.
    expiry: Duration,
    /// How long a lease lasts unless renewed (see the [module docs](self)).
    lease: Duration,
    /// This instance's id, as the holder of the leases it takes.
    instance: String,
    /// States of uploads this process has touched, by state path.
    cache: Mutex<HashMap<String, Versioned>>,
}

/// Where the completed partial upload `id` of `owner` waits for its
/// concatenation.
pub(crate) fn partial_key(owner: &Key, id: &str) -> Key {
    let key = Key::parse(&format!("{owner}/{id}")).expect("an owner and an upload id make a key");
    Key::reserved(&key)
}

/// Where the state of `owner`'s upload `id` lives.
fn state_path(owner: &Key, id: &str) -> Path {
    Path::from(format!("{UPLOADS}/{owner}/{id}"))
}

/// Where the tail of the upload whose state is at `state`, starting at
/// byte `start`, lives.
fn tail_path(state: &Path, start: u64) -> Path {
    Path::from(format!("{state}.tail.{start}"))
}

/// Where the tail of `paused` lives.
fn paused_tail(state: &Path, paused: &Paused) -> Path {
    tail_path(state, paused.size - paused.tail_len)
}

impl Resumables {
    pub(crate) fn new(writer: Writer, expiry: Duration, lease: Duration, instance: String) -> Self {
        Self {
            writer,
            expiry,
            lease,
            instance,
            cache: Mutex::default(),
        }
    }

    /// Sweeps expired uploads every `every`, from `every` after now, until
    /// the store closes.
    pub(crate) fn start_sweeper(self: &Arc<Self>, every: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let client = self.writer.client.clone();
        let stop = client.stopping().clone();
        client.spawn_cleanup(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = stop.cancelled() => return,
                }
                let Some(resumables) = weak.upgrade() else {
                    return;
                };
                tokio::select! {
                    swept = resumables.sweep(SystemTime::now()) => match swept {
                        Ok(0) => {}
                        Ok(swept) => tracing::info!(swept, "removed expired resumable uploads"),
                        Err(e) => tracing::warn!(error = %crate::error_chain(&e), "sweeping expired resumable uploads failed"),
                    },
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    /// Whether the upload `id` has expired by `now`.
    fn expired(&self, id: &str, now: SystemTime) -> bool {
        expires(id, self.expiry).is_none_or(|expires| expires <= now)
    }

    fn cached(&self, path: &Path) -> Option<Versioned> {
        let cache = self.cache.lock().expect("never poisoned");
        cache.get(path.as_ref()).cloned()
    }

    fn remember(&self, path: &Path, state: Option<Versioned>) {
        let mut cache = self.cache.lock().expect("never poisoned");
        match state {
            Some(state) => {
                if cache.len() >= CACHED
                    && let Some(evicted) = cache.keys().next().cloned()
                {
                    cache.remove(&evicted);
                }
                cache.insert(path.to_string(), state);
            }
            None => {
                cache.remove(path.as_ref());
            }
        }
    }

    /// The state at `path`: cached, or read (one call).
    async fn state(&self, group: &Group, path: &Path) -> Result<Versioned> {
        match self.cached(path) {
            Some(cached) => Ok(cached),
            None => self.read(group, path, None).await,
        }
    }

    /// The state at `path` as stored now (one call). With `cached`, a
    /// conditional read: the store sends the state only if it changed.
    async fn read(
        &self,
        group: &Group,
        path: &Path,
        cached: Option<Versioned>,
    ) -> Result<Versioned> {
        let client = &self.writer.client;
        let backend = client.backend();
        let options = GetOptions {
            if_none_match: cached.as_ref().and_then(|c| c.version.e_tag.clone()),
            ..GetOptions::default()
        };
        // A missing state is an answer, not a failure of the request's
        // group (which would cancel its other calls); so is an unchanged
        // one.
        let got = client
            .call(group, path.as_ref(), 0, || async {
                match backend.get_opts(path, options.clone()).await {
                    Ok(got) => {
                        let version = UpdateVersion {
                            e_tag: got.meta.e_tag.clone(),
                            version: got.meta.version.clone(),
                        };
                        got.bytes().await.map(|bytes| Some(Some((bytes, version))))
                    }
                    Err(object_store::Error::NotModified { .. }) => Ok(Some(None)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        let (bytes, version) = match (got, cached) {
            (Some(Some(read)), _) => read,
            (Some(None), Some(cached)) => return Ok(cached),
            _ => {
                self.remember(path, None);
                return Err(Error::NotFound {
                    key: path.to_string(),
                });
            }
        };
        let state: State = serde_json::from_slice(&bytes).map_err(|e| Error::CorruptState {
            key: path.to_string(),
            reason: e.to_string(),
        })?;
        let read = Versioned { state, version };
        self.remember(path, Some(read.clone()));
        Ok(read)
    }

    /// Writes `state` to `path` (one call): on the version `on`, or as a
    /// new object without one. The version written, or [`Changed`].
    async fn write(
        &self,
        group: &Group,
        path: &Path,
        state: &State,
        on: Option<&UpdateVersion>,
    ) -> Result<Result<UpdateVersion, Changed>> {
        let json = serde_json::to_vec(state).expect("a state always serializes");
        let json = PutPayload::from(json);
        let mut options = PutOptions::from(match on {
            Some(version) => PutMode::Update(version.clone()),
            None => PutMode::Create,
        });
        // An upload that has received nothing loses nothing in a crash: its
        // state need not be synced to disk (see `NotDurable`).
        if state.paused.size == 0 {
            options.extensions.insert(NotDurable);
        }
        let client = &self.writer.client;
        let backend = client.backend();
        let cost = json.content_length() as u64;
        // A refusal is an answer, not a failure of the request's group.
        client
            .call(group, path.as_ref(), cost, || async {
                match backend.put_opts(path, json.clone(), options.clone()).await {
                    Ok(put) => Ok(Ok(UpdateVersion {
                        e_tag: put.e_tag,
                        version: put.version,
                    })),
                    // Removed (the upload was finished or terminated
                    // elsewhere) is changed too.
                    Err(
                        object_store::Error::Precondition { .. }
                        | object_store::Error::AlreadyExists { .. }
                        | object_store::Error::NotFound { .. },
                    ) => Ok(Err(Changed)),
                    Err(e) => Err(e),
                }
            })
            .await
    }

    /// Takes the lease of the upload `id`, whose state is at `path`, for
    /// this instance, from the cached state or, if it is stale, the one
    /// stored (one call, two if stale). The state as leased.
    async fn take(&self, group: &Group, id: &str, path: &Path) -> Result<Versioned> {
        // Whether `current` is as stored now, not as this process last saw it.
        let (mut current, mut fresh) = match self.cached(path) {
            Some(cached) => (cached, false),
            None => (self.read(group, path, None).await?, true),
        };
        loop {
            let now = SystemTime::now();
            if let Some(lease) = &current.state.lease
                && lease.holder != self.instance
                && lease.until() > now
            {
                if !fresh {
                    // Released since, perhaps: ask (a conditional read).
                    current = self.read(group, path, Some(current)).await?;
                    fresh = true;
                    continue;
                }
                return Err(Error::Leased {
                    upload: id.to_owned(),
                    until: lease.until(),
                });
            }
            let mut state = current.state.clone();
            state.lease = Some(Lease {
                holder: self.instance.clone(),
                until_ms: epoch_ms(now + self.lease),
            });
            match self
                .write(group, path, &state, Some(&current.version))
                .await?
            {
                Ok(version) => {
                    let leased = Versioned { state, version };
                    self.remember(path, Some(leased.clone()));
                    return Ok(leased);
                }
                // Written since by another instance: as it is now.
                Err(Changed) if !fresh => {
                    current = self.read(group, path, None).await?;
                    fresh = true;
                }
                Err(Changed) => return Err(self.lost(path, id)),
            }
        }
    }

    /// Starts a new upload of `owner`: nothing is stored until bytes
    /// arrive or it is paused.
    pub(crate) fn begin<'g>(
        &'g self,
        group: &'g Group,
        owner: &Key,
        mut record: UploadRecord,
        part_size: usize,
    ) -> Resuming<'g> {
        let id = uuid::Uuid::now_v7().to_string();
        if record.partial {
            record.key = partial_key(owner, &id);
        }
        let state = state_path(owner, &id);
        let upload = Upload::new(
            self.writer.clone(),
            group,
            record.key.clone(),
            part_size,
            record.content_type.clone(),
            record.name.clone(),
        )
        .resumable();
        Resuming {
            resumables: self,
            group,
            upload,
            record,
            id,
            state,
            saved: None,
            leased_at: None,
            deferred: false,
        }
    }

    /// Goes on with the upload `id` of `owner` at byte `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no such upload,
    /// [`Error::OffsetMismatch`] if it is at another offset,
    /// [`Error::CorruptState`] or [`Error::Backend`] if its state or tail
    /// cannot be read.
    pub(crate) async fn resume<'g>(
        &'g self,
        group: &'g Group,
        owner: &Key,
        id: &str,
        offset: u64,
    ) -> Result<Resuming<'g>> {
        let path = state_path(owner, id);
        self.live(id, &path)?;
        if let Some(untouched) = self.cached(&path).filter(|c| self.deferrable(c, offset)) {
            let writer = self.writer.clone();
            let paused = untouched.state.paused.clone();
            let tail = paused_tail(&path, &paused);
            // No tail to read: no call.
            let upload = Upload::resume(writer, group, paused, &tail).await?;
            return Ok(Resuming {
                resumables: self,
                group,
                upload: upload.exclusive(),
                record: untouched.state.record.clone(),
                id: id.to_owned(),
                state: path,
                saved: Some(untouched),
                leased_at: None,
                deferred: true,
            });
        }
        let leased = self.take(group, id, &path).await?;
        let paused = leased.state.paused.clone();
        if paused.size != offset {
            // The caller checked the offset against the state it knew,
            // which another instance has moved on since.
            self.release(group, &path, leased).await;
            return Err(Error::OffsetMismatch {
                offset: paused.size,
            });
        }
        let writer = self.writer.clone();
        let tail = paused_tail(&path, &paused);
        let upload = match Upload::resume(writer, group, paused, &tail).await {
            Ok(upload) => upload,
            Err(e) => {
                self.release(group, &path, leased).await;
                return Err(e);
            }
        };
        Ok(Resuming {
            resumables: self,
            group,
            upload,
            record: leased.state.record.clone(),
            id: id.to_owned(),
            state: path,
            saved: Some(leased),
            leased_at: Some(tokio::time::Instant::now()),
            deferred: false,
        })
    }

    /// Whether a request at `offset` on the upload whose state this
    /// process last wrote as `cached` may put off taking its lease (see
    /// "The first request after an empty creation" in the module docs):
    /// nothing of it is stored but its state, no lease is held, and its
    /// object is one call.
    fn deferrable(&self, cached: &Versioned, offset: u64) -> bool {
        let state = &cached.state;
        let small = (state.record.length)
            .is_some_and(|length| length <= self.writer.multipart_threshold as u64);
        offset == 0
            && state.paused.size == 0
            && state.paused.tail_len == 0
            && state.tails.is_empty()
            && state.lease.is_none()
            && small
    }

    /// The upload `id` of `owner` as it stands: as stored (one call, a
    /// conditional read if it is cached) when `fresh`, else as this
    /// process last saw it (no call if it is cached), which another
    /// instance may have moved on from since.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no such upload; [`Error::Backend`]
    /// or [`Error::CorruptState`] if its state cannot be read.
    pub(crate) async fn status(
        &self,
        group: &Group,
        owner: &Key,
        id: &str,
        fresh: bool,
    ) -> Result<UploadStatus> {
        let path = state_path(owner, id);
        self.live(id, &path)?;
        let state = match fresh {
            true => self.read(group, &path, self.cached(&path)).await?,
            false => self.state(group, &path).await?,
        }
        .state;
        Ok(UploadStatus {
            record: state.record,
            offset: state.paused.size,
            expires: expires(id, self.expiry).expect("a live upload's id holds its time"),
        })
    }

    /// The lease of the upload `id`, at `path`, is lost: what this process
    /// knows of it is stale.
    fn lost(&self, path: &Path, id: &str) -> Error {
        self.remember(path, None);
        Error::LeaseLost {
            upload: id.to_owned(),
        }
    }

    /// Writes the state `leased` back with no lease (one call), so that
    /// another instance may go on at once; on failure, it expires.
    async fn release(&self, group: &Group, path: &Path, leased: Versioned) {
        let mut state = leased.state;
        state.lease = None;
        match self.write(group, path, &state, Some(&leased.version)).await {
            Ok(Ok(version)) => self.remember(path, Some(Versioned { state, version })),
            Ok(Err(Changed)) => self.remember(path, None),
            Err(e) => {
                self.remember(path, None);
                tracing::warn!(%path, error = %crate::error_chain(&e), "releasing an upload's lease failed; it will expire");
            }
        }
    }

    /// Refuses the upload `id` at `path` if it is no id of this store's or
    /// has expired.
    fn live(&self, id: &str, path: &Path) -> Result<()> {
        if expires(id, self.expiry).is_none() {
            // No id this store made.
            return Err(Error::NotFound {
                key: path.to_string(),
            });
        }
        if self.expired(id, SystemTime::now()) {
            return Err(Error::Expired {
                upload: id.to_owned(),
            });
        }
        Ok(())
    }

    /// Ends the upload `id` of `owner` without an object: its multipart
    /// upload is aborted, its state and tail removed.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no such upload; [`Error::Backend`]
    /// if the backend fails.
    pub(crate) async fn terminate(&self, group: &Group, owner: &Key, id: &str) -> Result<()> {
        let path = state_path(owner, id);
        let state = self.state(group, &path).await?.state;
        if let Some(lease) = &state.lease
            && lease.holder != self.instance
            && lease.until() > SystemTime::now()
        {
            return Err(Error::Leased {
                upload: id.to_owned(),
                until: lease.until(),
            });
        }
        self.remove(group, &path, state).await
    }

    /// Aborts the upload whose state, at `path`, is `state`, and removes
    /// it.
    async fn remove(&self, group: &Group, path: &Path, state: State) -> Result<()> {
        match state.paused.abort(&self.writer.client).await {
            // Aborted already, by a terminate cut off before its delete.
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.forget(group, path, &state.tails).await
    }

    /// Removes the state and the tails that start at `tails`.
    async fn forget(&self, group: &Group, state: &Path, tails: &[u64]) -> Result<()> {
        self.remember(state, None);
        let mut paths = vec![state.clone()];
        paths.extend(tails.iter().map(|&start| tail_path(state, start)));
        let client = &self.writer.client;
        group
            .run(0, || client.delete_call(&paths).map_err(BackendError))
            .await
            .map_err(|e| Error::job(state.as_ref(), e))
    }

    /// Terminates every upload expired by `now`, as the store's own work;
    /// returns how many. A listing, and no read: an upload's id says when
    /// it was made.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the uploads cannot be listed; an upload that
    /// cannot be terminated is logged and left for the next sweep.
    pub(crate) async fn sweep(&self, now: SystemTime) -> Result<usize> {
        let client = &self.writer.client;
        let system = client.system();
        let prefix = Path::from(UPLOADS);
        let mut listing = client.backend().list(Some(&prefix));
        let (mut found, mut tails) = (Vec::new(), Vec::new());
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| Error::backend(UPLOADS, e, 1))?;
            let path = meta.location.as_ref();
            let Some((owner, id)) = (path.strip_prefix(UPLOADS))
                .and_then(|rest| rest.trim_start_matches('/').rsplit_once('/'))
            else {
                continue;
            };
            // A tail of an expired upload goes with it, and so does one
            // that no state names (written by a request that lost the
            // upload to another, see the module docs).
            if let Some((upload, _)) = id.split_once(".tail.") {
                if self.expired(upload, now) {
                    tails.push(meta.location.clone());
                }
                continue;
            }
            if !self.expired(id, now) {
                continue;
            }
            if let Ok(owner) = Key::parse(owner) {
                found.push((owner, id.to_owned()));
            }
        }
        let mut swept = 0;
        // Completed parts of a concatenation that never came.
        let prefix = Path::from(crate::key::RESERVED);
        let mut listing = client.backend().list(Some(&prefix));
        let mut partials = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| Error::backend(crate::key::RESERVED, e, 1))?;
            let path = meta.location.to_string();
            let Ok(key) = Key::try_from(path) else {
                continue;
            };
            let id = key.as_str().rsplit('/').next().unwrap_or_default();
            if self.expired(id, now) {
                partials.push(key);
            }
        }
        swept += partials.len();
        self.writer.delete_all(partials).await;
        for (owner, id) in found {
            // Expired: whoever holds it, its time is over.
            let path = state_path(&owner, &id);
            let removed = async {
                let state = self.state(system, &path).await?.state;
                self.remove(system, &path, state).await
            };
            match removed.await {
                Ok(()) => swept += 1,
                Err(e) => {
                    tracing::warn!(%owner, %id, error = %crate::error_chain(&e), "removing an expired upload failed")
                }
            }
        }
        if !tails.is_empty() {
            let removed = system
                .run(0, || client.delete_call(&tails).map_err(BackendError))
                .await
                .map_err(|e| Error::job(UPLOADS, e));
            if let Err(e) = removed {
                tracing::warn!(error = %crate::error_chain(&e), "removing the tails of expired uploads failed");
            }
        }
        Ok(swept)
    }
}

/// A resumable upload receiving bytes: made by
/// [`Store::begin_upload`](crate::Store::begin_upload) or
/// [`Store::resume_upload`](crate::Store::resume_upload). End it with
/// [`finish`](Self::finish) once every byte is in, [`pause`](Self::pause)
/// to go on later, or [`discard`](Self::discard) to forget what this
/// request sent.
#[derive(Debug)]
#[must_use = "an upload neither paused nor finished loses the bytes of this request"]
pub struct Resuming<'g> {
    resumables: &'g Resumables,
    group: &'g Group,
    upload: Upload<'g>,
    record: UploadRecord,
    id: String,
    /// Where its state lives.
    state: Path,
    /// The state as stored, with the lease this request holds, if it was
    /// ever saved: the next write of the state is on its version.
    saved: Option<Versioned>,
    /// When the lease was taken or last renewed; `None` for a new upload,
    /// which needs none (no other request knows of it), and for one whose
    /// lease is `deferred`.
    leased_at: Option<tokio::time::Instant>,
    /// Whether the lease is not taken yet: taken before the upload writes
    /// anything but its object, which is written only if its key is free.
    deferred: bool,
}

impl Resuming<'_> {
    /// The upload's id, by which its owner finds it again.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the upload expires: removed, finished or not.
    pub fn expires(&self) -> SystemTime {
        let expiry = self.resumables.expiry;
        expires(&self.id, expiry).expect("an upload's id holds its time")
    }

    /// Bytes received so far.
    pub fn offset(&self) -> u64 {
        self.upload.size()
    }

    /// What the client asked for.
    pub fn record(&self) -> &UploadRecord {
        &self.record
    }

    /// Sets the length of an upload created without one.
    pub fn set_length(&mut self, length: u64) {
        self.record.length = Some(length);
    }

    /// Adds `chunk`, storing parts as they fill up, and renews the
    /// upload's lease when a third of it has passed (one call).
    ///
    /// Not cancel safe: if this future is dropped, pause or discard.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if a part is refused, [`Error::LeaseLost`] if
    /// another instance took the upload over: [`discard`](Self::discard)
    /// the upload then.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let threshold = self.resumables.writer.multipart_threshold;
        if self.deferred && self.upload.buffered() + chunk.len() > threshold {
            // More than its length said: a part is to be stored.
            self.take_deferred().await?;
        }
        self.renew_if_due().await?;
        self.upload.write(chunk).await
    }

    /// Takes the lease put off by [`Resumables::resume`] (one call, two if
    /// another instance wrote the state since), before the first write of
    /// anything but the object. [`Error::Leased`] if another instance
    /// holds it; [`Error::OffsetMismatch`] if it went on with the upload
    /// meanwhile, so that this request's bytes no longer follow what is
    /// stored.
    async fn take_deferred(&mut self) -> Result<()> {
        let resumables = self.resumables;
        let leased = resumables.take(self.group, &self.id, &self.state).await?;
        let seen = self.saved.as_ref().map(|saved| &saved.state.paused);
        if seen != Some(&leased.state.paused) {
            let offset = leased.state.paused.size;
            resumables.release(self.group, &self.state, leased).await;
            return Err(Error::OffsetMismatch { offset });
        }
        self.saved = Some(leased);
        self.leased_at = Some(tokio::time::Instant::now());
        self.deferred = false;
        Ok(())
    }

    /// Renews the lease if a third of it has passed: before every write
    /// of the upload's objects, so that an instance whose lease expired
    /// while it stalled (and another took the upload over) finds out
    /// before it writes, not after.
    async fn renew_if_due(&mut self) -> Result<()> {
        match self.leased_at {
            Some(leased_at) if leased_at.elapsed() >= self.resumables.lease / 3 => {
                self.renew().await
            }
            _ => Ok(()),
        }
    }

    /// Writes the saved state back with the lease extended (one call).
    async fn renew(&mut self) -> Result<()> {
        let resumables = self.resumables;
        let saved = self.saved.as_ref().expect("a leased upload was saved");
        let mut state = saved.state.clone();
        let until = SystemTime::now() + resumables.lease;
        state.lease = Some(Lease {
            holder: resumables.instance.clone(),
            until_ms: epoch_ms(until),
        });
        let on = Some(&saved.version);
        match resumables
            .write(self.group, &self.state, &state, on)
            .await?
        {
            Ok(version) => {
                let renewed = Versioned { state, version };
                resumables.remember(&self.state, Some(renewed.clone()));
                self.saved = Some(renewed);
                self.leased_at = Some(tokio::time::Instant::now());
                Ok(())
            }
            Err(Changed) => Err(self.resumables.lost(&self.state, &self.id)),
        }
    }

    /// Stores what is not stored yet and saves the state, releasing the
    /// lease (two calls at most: the tail, the state), so that the upload
    /// can go on from [`offset`](Self::offset) in any process. Returns
    /// that offset.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the backend fails: the upload is then at the
    /// offset it was last saved at (its lease expires).
    /// [`Error::LeaseLost`] if another instance took the upload over: its
    /// state is left as that one saved it.
    pub async fn pause(mut self) -> Result<u64> {
        if self.deferred {
            self.take_deferred().await?;
        }
        self.renew_if_due().await?;
        let state_path = &self.state;
        let start = self.upload.size() - self.upload.buffered() as u64;
        let paused = self.upload.pause(&tail_path(state_path, start)).await?;
        let saved = self.saved.as_ref();
        let mut tails = saved.map_or_else(Vec::new, |saved| saved.state.tails.clone());
        if paused.tail_len > 0 && !tails.contains(&start) {
            tails.push(start);
        }
        let state = State {
            record: self.record,
            tails,
            paused,
            lease: None,
        };
        let resumables = self.resumables;
        let on = saved.map(|saved| &saved.version);
        match resumables.write(self.group, state_path, &state, on).await? {
            Ok(version) => {
                let offset = state.paused.size;
                resumables.remember(state_path, Some(Versioned { state, version }));
                Ok(offset)
            }
            Err(Changed) => Err(resumables.lost(state_path, &self.id)),
        }
    }

    /// Whether the upload was ever saved ([`pause`](Self::pause)d): a
    /// client may know of it, and resume it.
    pub fn is_saved(&self) -> bool {
        self.saved.is_some()
    }

    /// Forgets the bytes this request sent: the upload stays as it was
    /// last saved, and its lease is released (one call). One never saved
    /// is gone, its parts aborted in the background.
    pub async fn discard(self) {
        match self.saved {
            // Nothing stored, no lease taken.
            Some(_) if self.deferred => drop(self.upload),
            Some(saved) => {
                self.upload.abandon();
                (self.resumables)
                    .release(self.group, &self.state, saved)
                    .await;
            }
            None => drop(self.upload),
        }
    }

    /// Completes the object and removes the upload's state: one bulk
    /// delete after the object's own calls, none if it was never saved.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the backend fails. The object is then rolled
    /// back with its multipart upload, so the upload is gone: its state is
    /// removed too, and the client starts again, as with a batch file
    /// whose commit failed; but an upload whose lease was put off (see the
    /// [module docs](self)) had stored nothing, and keeps its state for the
    /// client to send again. [`Error::LeaseLost`] if another instance took
    /// the upload over, or stored its object first: nothing is written.
    pub async fn finish(mut self) -> Result<StoredObject> {
        if let Err(e) = self.renew_if_due().await {
            self.upload.abandon();
            return Err(e);
        }
        let stored = match self.upload.finish().await {
            // Another request of the upload stored it first, through
            // another instance: this one's bytes are not what is stored.
            Err(Error::Exists { .. }) => Err(self.resumables.lost(&self.state, &self.id)),
            stored => stored,
        };
        if stored.is_err() && self.deferred {
            // Its state stays for the client to ask again.
            return stored;
        }
        if let Some(saved) = self.saved {
            let forgotten = self
                .resumables
                .forget(self.group, &self.state, &saved.state.tails);
            if let Err(e) = forgotten.await {
                // Litter for the sweep: it names nothing that exists.
                tracing::warn!(state = %self.state, error = %crate::error_chain(&e), "removing a finished upload's state failed");
            }
        }
        stored
    }
}
