//! [`Store`]: one storage backend, shared by every request.
//!
//! The top of the storage layer, and thin: it opens the layers below and
//! hands each call to the one that does it. From the bottom up:
//!
//! 1. [`crate::error`], [`crate::key`], [`crate::meta`]: errors, keys, and
//!    what is stored about an object;
//! 2. [`crate::backend`]: opening a backend from its URL, and what it can do;
//! 3. [`crate::client`]: every call to it, through the scheduler, and the
//!    store's own background work;
//! 4. [`crate::multipart`], [`crate::orphan`], [`crate::upload`],
//!    [`crate::batch`], [`crate::hot`], [`crate::read`]: writing, sweeping,
//!    batches, reading;
//! 5. this module; and above it [`crate::spool`], which uses a `Store`.
//!
//! Each module imports only from the layers below it.

use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use corral_sched::{Group, Scheduler};
use futures::stream::StreamExt;
use object_store::GetRange;
use object_store::path::Path;

use crate::backend::{self, AzureOptions, CloudOptions, GcsOptions, Orphans, S3Options};
use crate::batch::{Batches, Intent};
use crate::client::Client;
use crate::error::{Error, Result, error_chain};
use crate::hot::HotReads;
use crate::key::Key;
use crate::meta::{ObjectInfo, meta_path, object_info};
use crate::orphan::Swept;
use crate::read::{Reading, Reads};
use crate::resumable::{Resumables, Resuming, UploadRecord, UploadStatus};
use crate::upload::{BufferGauge, Upload, Writer};

/// How the storage layer writes.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Files up to this size are buffered and stored with one call; larger
    /// ones become multipart uploads.
    pub multipart_threshold: usize,
    /// The size of each part of a multipart upload (the last may be smaller).
    pub part_size: usize,
    /// How an `s3://` store is reached.
    pub s3: S3Options,
    /// How a `gs://` store is reached.
    pub gcs: GcsOptions,
    /// How an `az://` store is reached.
    pub azure: AzureOptions,
    /// How often to abort multipart uploads left behind by processes that
    /// died (see [`Store::sweep_orphans`]): on opening, then at this
    /// interval. `None`: never.
    pub orphan_sweep: Option<Duration>,
    /// How old an unfinished multipart upload must be to be swept.
    pub orphan_age: Duration,
    /// The journal of synchronous batches' intents, a redb file created if
    /// missing (see [`crate::batch`]); `None`: batches are all or nothing
    /// only while the process lives.
    pub batch_journal: Option<PathBuf>,
    /// How long after its creation a resumable upload is removed,
    /// finished or not (see [`crate::resumable`]). At most `orphan_age`,
    /// or the orphan sweep aborts the parts of uploads still open.
    pub upload_expiry: Duration,
    /// How long the lease of a request on a resumable upload lasts unless
    /// renewed (see [`crate::resumable`]): what a request on another
    /// instance waits, at most, when the instance serving the upload dies.
    /// It must outlast a body's idle timeout, or a request waiting for its
    /// client's bytes loses it.
    pub upload_lease: Duration,
    /// Where this instance keeps the id its leases name, read or made
    /// when the store opens, once the journal of batches is locked: a
    /// corral restarted on the same journal is the same instance, and
    /// takes back at once the uploads its predecessor held (that one is
    /// dead: the lock says so). `None`: a new id at each opening, and a
    /// restarted instance waits for its old leases to expire.
    pub instance_file: Option<PathBuf>,
    /// Bytes of small objects that reads of hot keys may hold, to share
    /// one backend call among concurrent readers of a key and serve
    /// readers that come within a moment after (see [`crate::hot`]); 0
    /// turns sharing off.
    pub read_cache: usize,
}

/// The most parts of a multipart upload (S3's limit).
pub const MAX_PARTS: u64 = 10_000;

impl StoreConfig {
    /// The part size for an object of at most `size` bytes: `part_size`,
    /// grown (in whole MiB) as far as needed to stay within [`MAX_PARTS`]
    /// parts, so that a 5 TiB object can be stored.
    pub fn part_size_for(&self, size: Option<u64>) -> usize {
        let needed = size.map_or(0, |size| size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20));
        self.part_size
            .max(usize::try_from(needed).unwrap_or(usize::MAX))
    }

    /// The most bytes an upload of at most `size` bytes buffers, besides
    /// the chunk being parsed.
    pub fn buffer_bound(&self, size: Option<u64>) -> usize {
        self.multipart_threshold.max(self.part_size_for(size))
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            s3: S3Options::default(),
            gcs: GcsOptions::default(),
            azure: AzureOptions::default(),
            orphan_sweep: Some(Duration::from_secs(3600)),
            orphan_age: Duration::from_secs(24 * 3600),
            batch_journal: None,
            upload_expiry: Duration::from_secs(24 * 3600),
            upload_lease: Duration::from_secs(90),
            instance_file: None,
            read_cache: 64 << 20,
        }
    }
}

/// The instance id kept in `path`, made (a UUID) if there is none.
async fn instance_id(path: &std::path::Path) -> std::io::Result<String> {
    match tokio::fs::read_to_string(path).await {
        Ok(id) if uuid::Uuid::parse_str(id.trim()).is_ok() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = uuid::Uuid::now_v7().to_string();
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    // Whole or not at all: a torn id would be a new instance anyway.
    let staging = path.with_extension("new");
    tokio::fs::write(&staging, &id).await?;
    tokio::fs::rename(&staging, path).await?;
    Ok(id)
}

/// One storage backend, shared by every request. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: StoreConfig,
    /// Writes: the backend's calls, the reads to correct, the buffers.
    writer: Writer,
    /// Reads: the same calls, and the reads of hot keys.
    reads: Reads,
    /// Batches begun and not settled, and their journal.
    batches: Arc<Batches>,
    /// Uploads that go on over many requests.
    resumables: Arc<Resumables>,
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// The objects, in key order. Their `content_type` and `sha256` are not
    /// filled in: that would cost a call per object.
    pub objects: Vec<ObjectInfo>,
    /// Where the next page starts, if there is one.
    pub next: Option<Key>,
}

impl Store {
    /// Opens the store at `url`:
    ///
    /// - `file:///abs/dir`, or a plain path such as `./corral-data`: a local
    ///   directory, created if missing; writes are fsync'd before they are
    ///   acknowledged.
    /// - `s3://bucket/prefix`: an S3 bucket, or an S3-compatible store
    ///   ([`S3Options`]).
    /// - `gs://bucket/prefix`: a Google Cloud Storage bucket, configured by
    ///   `GOOGLE_SERVICE_ACCOUNT` or `GOOGLE_APPLICATION_CREDENTIALS`, or an
    ///   emulator ([`GcsOptions`]).
    /// - `az://container/prefix`: an Azure Blob Storage container, configured
    ///   by `AZURE_STORAGE_ACCOUNT_NAME` and `AZURE_STORAGE_ACCOUNT_KEY` (or
    ///   the other `AZURE_*` variables `object_store` reads), or an emulator
    ///   ([`AzureOptions`]).
    /// - `memory://`: in memory, gone when the process exits (for tests and
    ///   trials).
    ///
    /// Every backend call goes through `scheduler`: the process's, built by
    /// the caller, which shares it with whatever else needs it (the
    /// server's admission, metrics and shutdown).
    ///
    /// Then checks that the store accepts a write, and starts the orphan
    /// sweeper if [`StoreConfig::orphan_sweep`] asks for it.
    ///
    /// # Errors
    ///
    /// [`Error::Open`] if the URL is not understood, the directory cannot be
    /// created, or the store refuses the check write; [`Error::InUse`] if
    /// another process holds the journal of batches.
    pub async fn open(url: &str, config: StoreConfig, scheduler: Scheduler) -> Result<Self> {
        let options = CloudOptions {
            s3: &config.s3,
            gcs: &config.gcs,
            azure: &config.azure,
        };
        let backend = backend::open(url, options)?;
        let (batches, unfinished) = match &config.batch_journal {
            Some(path) => Batches::open(path).await.map_err(|e| match e {
                redb::Error::DatabaseAlreadyOpen => Error::InUse {
                    path: path.to_owned(),
                },
                e => Error::Open {
                    url: url.to_owned(),
                    reason: format!("cannot open the journal of batches {}", path.display()),
                    source: Some(Arc::new(e)),
                },
            })?,
            None => (Batches::in_memory(), Vec::new()),
        };
        let client = Client::new(backend, scheduler);
        client.check().await.map_err(|e| Error::Open {
            url: url.to_owned(),
            reason: match client.hint() {
                Some(hint) => format!("the check write failed, and {hint}"),
                None => "the check write failed".to_owned(),
            },
            source: Some(Arc::new(e)),
        })?;
        client.start_prober();
        if let Orphans::Local(_) = client.orphans() {
            // A local directory is one process's: whatever it is staging
            // at startup was left by a process that died, and goes before
            // anything is served.
            match client.sweep_orphans(Duration::ZERO).await {
                Ok(swept) if swept.aborted > 0 => {
                    tracing::info!(
                        removed = swept.aborted,
                        "removed the staging files of a process that died"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "removing stale staging files failed")
                }
            }
        }
        let batches = Arc::new(batches);
        Intent::recover(&client, &batches, unfinished);
        if let Orphans::Unsupported(why) = client.orphans() {
            tracing::info!(url = %client.url(), "corral does not sweep abandoned multipart uploads here: {why}");
        } else if let Some(every) = config.orphan_sweep {
            client.start_sweeper(every, config.orphan_age);
        }
        let hot = Arc::new(HotReads::new(config.read_cache));
        let writer = Writer {
            client: client.clone(),
            hot: hot.clone(),
            buffers: BufferGauge::default(),
            multipart_threshold: config.multipart_threshold,
        };
        let instance = match &config.instance_file {
            Some(path) => instance_id(path).await.map_err(|e| Error::Open {
                url: url.to_owned(),
                reason: format!("cannot keep the instance id in {}", path.display()),
                source: Some(Arc::new(e)),
            })?,
            None => uuid::Uuid::now_v7().to_string(),
        };
        let resumables = Arc::new(Resumables::new(
            writer.clone(),
            config.upload_expiry,
            config.upload_lease,
            instance,
        ));
        if let Some(every) = config.orphan_sweep {
            resumables.start_sweeper(every);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                writer: writer.clone(),
                reads: Reads { client, hot },
                batches,
                resumables,
            }),
        })
    }

    fn client(&self) -> &Client {
        &self.inner.writer.client
    }

    /// The scheduler the store was opened with.
    pub fn scheduler(&self) -> &Scheduler {
        self.client().scheduler()
    }

    /// The store's URL, for people (a local path is shown absolute).
    pub fn url(&self) -> &str {
        self.client().url()
    }

    /// How the store writes.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Bytes held in memory by uploads in progress.
    pub fn buffers(&self) -> &BufferGauge {
        &self.inner.writer.buffers
    }

    /// Starts writing the object `key`, its backend calls made as jobs of
    /// `group`. Nothing reaches the backend until bytes are written; see
    /// [`Upload`].
    ///
    /// `size`, if known, bounds the object's size and sizes its parts (see
    /// [`StoreConfig::part_size_for`]).
    pub fn upload<'g>(
        &self,
        group: &'g Group,
        key: Key,
        size: Option<u64>,
        content_type: Option<String>,
        name: Option<String>,
    ) -> Upload<'g> {
        let part_size = self.inner.config.part_size_for(size);
        Upload::new(
            self.inner.writer.clone(),
            group,
            key,
            part_size,
            content_type,
            name,
        )
    }

    /// Starts a resumable upload of `owner` (the tenant's root key), which
    /// becomes the object `record.key`, with an id of its own
    /// ([`Resuming::id`]); its backend calls are jobs of `group`. Nothing
    /// is stored until bytes arrive or it is paused: see
    /// [`crate::resumable`].
    pub fn begin_upload<'g>(
        &'g self,
        group: &'g Group,
        owner: &Key,
        record: UploadRecord,
    ) -> Resuming<'g> {
        let part_size = self.inner.config.part_size_for(record.length);
        (self.inner.resumables).begin(group, owner, record, part_size)
    }

    /// Goes on with the resumable upload `id` of `owner` at byte `offset`,
    /// taking its lease (one call; see [`crate::resumable`]).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no such upload,
    /// [`Error::OffsetMismatch`] if it is at another offset,
    /// [`Error::Leased`] if another instance is writing it,
    /// [`Error::LeaseLost`] if another instance took it as this one did,
    /// [`Error::CorruptState`] or [`Error::Backend`] if what it saved
    /// cannot be read.
    pub async fn resume_upload<'g>(
        &'g self,
        group: &'g Group,
        owner: &Key,
        id: &str,
        offset: u64,
    ) -> Result<Resuming<'g>> {
        self.inner.resumables.resume(group, owner, id, offset).await
    }

    /// The resumable upload `id` of `owner` as it stands: one call, a
    /// conditional read (no body when unchanged) if this process has
    /// touched it, since another instance may have moved it on.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no such upload (never created, or
    /// finished, terminated or expired); [`Error::Backend`] or
    /// [`Error::CorruptState`] if its state cannot be read.
    pub async fn upload_status(
        &self,
        group: &Group,
        owner: &Key,
        id: &str,
    ) -> Result<UploadStatus> {
        self.inner.resumables.status(group, owner, id, true).await
    }

    /// The resumable upload `id` of `owner` as this process last saw it:
    /// no call if it has touched it, else one. Another instance may have
    /// moved it on since; [`Store::resume_upload`] finds out.
    ///
    /// # Errors
    ///
    /// As [`Store::upload_status`].
    pub async fn known_upload_status(
        &self,
        group: &Group,
        owner: &Key,
        id: &str,
    ) -> Result<UploadStatus> {
        self.inner.resumables.status(group, owner, id, false).await
    }

    /// Ends the resumable upload `id` of `owner` without an object.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no such upload; [`Error::Leased`]
    /// if another instance is writing it, as far as this one knows; [`Error::Backend`]
    /// if the backend fails.
    pub async fn terminate_upload(&self, group: &Group, owner: &Key, id: &str) -> Result<()> {
        self.inner.resumables.terminate(group, owner, id).await
    }

    /// The sizes of the completed partial uploads `ids` of `owner`, in
    /// order: one call each.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming the first id that is no completed
    /// partial upload (see [`Store::upload_status`] to tell one still in
    /// progress); [`Error::Backend`] if the backend fails.
    pub async fn partial_sizes(
        &self,
        group: &Group,
        owner: &Key,
        ids: &[String],
    ) -> Result<Vec<u64>> {
        let mut sizes = Vec::with_capacity(ids.len());
        for id in ids {
            let key = crate::resumable::partial_key(owner, id);
            match self.inner.reads.head(group, &key).await {
                Ok(info) => sizes.push(info.size),
                Err(Error::NotFound { .. }) => return Err(Error::NotFound { key: id.clone() }),
                Err(e) => return Err(e),
            }
        }
        Ok(sizes)
    }

    /// Stores the completed partial uploads `ids` of `owner`, one after
    /// the other, as the object `record.key`, then removes them: their
    /// bytes are read back (a call each) and written once more, so that
    /// the object has its SHA-256. Its backend calls are jobs of `group`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming an id that is no completed partial
    /// upload; [`Error::Backend`] if the backend fails, and nothing is
    /// stored.
    pub async fn concatenate(
        &self,
        group: &Group,
        owner: &Key,
        ids: &[String],
        record: UploadRecord,
    ) -> Result<crate::StoredObject> {
        use futures::TryStreamExt as _;
        let mut upload = self.upload(
            group,
            record.key,
            record.length,
            record.content_type,
            record.name,
        );
        let keys: Vec<Key> = (ids.iter())
            .map(|id| crate::resumable::partial_key(owner, id))
            .collect();
        for (id, key) in ids.iter().zip(&keys) {
            let reading = match self.inner.reads.get(group, key, None).await {
                Err(Error::NotFound { .. }) => return Err(Error::NotFound { key: id.clone() }),
                reading => reading?,
            };
            let mut body = reading.body;
            while let Some(chunk) = body.try_next().await? {
                upload.write(chunk).await?;
            }
        }
        let stored = upload.finish().await?;
        self.inner.writer.delete_all(keys).await;
        Ok(stored)
    }

    /// Terminates the resumable uploads expired by `now`, as the store's
    /// own work; returns how many. Runs by itself at every orphan sweep
    /// interval ([`StoreConfig::orphan_sweep`]).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the uploads cannot be listed.
    pub async fn sweep_uploads(&self, now: std::time::SystemTime) -> Result<usize> {
        self.inner.resumables.sweep(now).await
    }

    /// What is known about the object `key`: one call, or two for an object
    /// with a metadata document (see [`crate::meta`]).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no such object, [`Error::Backend`] if
    /// the backend fails, [`Error::CorruptMetadata`] if its metadata document
    /// cannot be decoded.
    pub async fn head(&self, group: &Group, key: &Key) -> Result<ObjectInfo> {
        self.visible(key)?;
        self.inner.reads.head(group, key).await
    }

    /// Reads the object `key`, or the bytes `range` of it, in one call (see
    /// [`crate::read`]). A whole object is checked against its recorded
    /// SHA-256 as it streams; a mismatch ends the stream with an error
    /// instead of its last chunk, so the reader never sees a clean end of
    /// corrupt data.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no such object,
    /// [`Error::RangeNotSatisfiable`] if `range` selects no byte of it
    /// (learning its size then costs one more call), [`Error::Backend`] if
    /// the backend fails. Errors while streaming come as stream items.
    pub async fn get(&self, group: &Group, key: &Key, range: Option<GetRange>) -> Result<Reading> {
        self.visible(key)?;
        self.inner.reads.get(group, key, range).await
    }

    /// Removes the object `key` and its metadata document, in one call
    /// where the backend deletes in bulk (S3's `DeleteObjects`, Azure's
    /// batch), two where it does not (GCS), and no look-up first.
    ///
    /// A key that is not there is no error: deletes are idempotent, so a
    /// client that retries a delete whose answer it lost is not told it
    /// failed (and object stores do not say whether a key existed). A key
    /// of a batch not settled yet is left alone: the delete is ordered
    /// before the batch's acknowledgement.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the backend fails.
    pub async fn delete(&self, group: &Group, key: &Key) -> Result<()> {
        if self.visible(key).is_err() {
            return Ok(());
        }
        let paths = [Path::from(key.as_str()), meta_path(key)];
        self.inner.writer.hot.forget(key.as_str());
        let client = self.client();
        let deleted = (client.call(group, key.as_str(), 0, || client.delete_call(&paths))).await;
        // Again, for a read that began while the delete was under way.
        self.inner.writer.hot.forget(key.as_str());
        deleted
    }

    /// `NotFound` for a key of a batch not settled yet (see
    /// [`crate::batch`]): it does not exist for readers until then.
    fn visible(&self, key: &Key) -> Result<()> {
        match self.inner.batches.hides(key.as_str()) {
            true => Err(Error::NotFound {
                key: key.to_string(),
            }),
            false => Ok(()),
        }
    }

    /// Removes `keys` and their metadata, as the store's own calls, retried
    /// until they are gone; for rolling back. Only a permanent refusal, or
    /// [`Store::close`] giving up, leaves an object behind, and is logged.
    pub async fn delete_all(&self, keys: Vec<Key>) {
        self.inner.writer.delete_all(keys).await;
    }

    /// Waits until no cleanup of `key` is running: a writer that writes the
    /// same key again (a spooled file retried) calls it first, so that a
    /// late delete of the failed attempt cannot remove the new object.
    pub async fn settled(&self, key: &Key) {
        self.client().settled(key).await;
    }

    /// Records that a batch is about to write under `dir`, durably if the
    /// store has a journal, and hides `dir` until the batch is settled (see
    /// [`crate::batch`]).
    ///
    /// # Errors
    ///
    /// [`Error::Journal`] if the journal cannot record it; nothing has been
    /// written then.
    pub async fn begin_batch(&self, dir: Key) -> Result<Intent> {
        Intent::begin(self.client(), &self.inner.batches, dir).await
    }

    /// Aborts the multipart uploads under this store's prefix that were
    /// started more than `age` ago (see [`crate::orphan`]).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if listing fails. A failed abort is logged and
    /// the sweep goes on; the next sweep tries it again.
    pub async fn sweep_orphans(&self, age: Duration) -> Result<Swept> {
        self.client().sweep_orphans(age).await
    }

    /// Aborts every multipart upload still open for exactly `key`, whatever
    /// its age, and returns how many it aborted. For a writer that alone
    /// writes `key` and is about to write it again: a resumed asynchronous
    /// upload, whose earlier attempt may have died with its process.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if listing fails.
    pub async fn abort_unfinished(&self, key: &Key) -> Result<usize> {
        self.client().abort_unfinished(key).await
    }

    /// Lists up to `limit` objects whose keys start with `prefix` (a plain
    /// string prefix, as in S3) and come after `after`, in key order. Only
    /// keys under `root` are looked at.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the backend fails.
    pub async fn list(
        &self,
        group: &Group,
        root: &Key,
        prefix: &str,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<ListPage> {
        let full_prefix = format!("{root}/{prefix}");
        // object_store lists whole segments; list the deepest directory the
        // prefix names, then filter on the rest.
        let dir = full_prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
        let dir = Path::from(dir);
        let page = || self.list_page(&dir, after, &full_prefix, limit);
        let mut objects = self.client().call(group, dir.as_ref(), 0, page).await?;
        let next = (objects.len() > limit).then(|| {
            objects.truncate(limit);
            objects.last().map(|info| info.key.clone())
        });
        Ok(ListPage {
            objects,
            next: next.flatten(),
        })
    }

    /// The `limit + 1` first objects under `dir` after `offset` whose keys
    /// start with `prefix`: the extra one says whether another page
    /// follows. Memory is O(limit) whatever the listing's size.
    async fn list_page(
        &self,
        dir: &Path,
        after: Option<&Key>,
        prefix: &str,
        limit: usize,
    ) -> object_store::Result<Vec<ObjectInfo>> {
        // The listing is read whole and ordered here. Backends disagree on
        // their order outside ASCII: the local one lists such names
        // percent-encoded (below), the in-memory one in its map's order,
        // and moto, the S3 server of the tests, in the order of the encoded
        // keys where S3 documents byte order. Trusting an order to stop
        // early, or to start after the cursor, would skip keys on some.
        let mut listing = self.client().backend().list(Some(dir));
        let mut smallest = BinaryHeap::with_capacity(limit + 1);
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            // object_store's local backend lists names outside ASCII
            // percent-encoded (it stores them so on disk); corral's keys
            // never hold '%', so decoding is exact on every backend.
            let location = percent_encoding::percent_decode_str(meta.location.as_ref())
                .decode_utf8_lossy()
                .into_owned();
            let Ok(key) = Key::parse(&location) else {
                // Not something corral wrote; it cannot be read through the
                // API either, so it is not listed.
                continue;
            };
            if !key.as_str().starts_with(prefix)
                || after.is_some_and(|after| key <= *after)
                || self.inner.batches.hides(key.as_str())
            {
                continue;
            }
            smallest.push(Listed(object_info(key, meta)));
            if smallest.len() > limit + 1 {
                smallest.pop();
            }
        }
        Ok(smallest
            .into_sorted_vec()
            .into_iter()
            .map(|listed| listed.0)
            .collect())
    }

    /// Stops the background loops, waits for background cleanups (for at
    /// most ten seconds, then gives up those still retrying, and logs
    /// them), and closes the journal of batches. Call at shutdown.
    pub async fn close(&self) {
        self.client().close().await;
        self.inner.batches.close().await;
    }
}

/// An [`ObjectInfo`] ordered by key, for the listing heap.
struct Listed(ObjectInfo);

impl PartialEq for Listed {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}
impl Eq for Listed {}
impl PartialOrd for Listed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Listed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.key.cmp(&other.0.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::MetaDoc;
    use bytes::Bytes;
    use corral_testkit::azure::{self, AzureServer};
    use corral_testkit::gcs::GcsServer;
    use corral_testkit::s3::{self, S3Server};
    use futures::TryStreamExt;
    use object_store::{Attribute, Attributes};
    use object_store::{GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt};
    use std::ops::Range;
    use std::time::SystemTime;

    /// A scheduler of its own for each store, as `corral serve` builds one.
    fn scheduler() -> Scheduler {
        Scheduler::new(corral_sched::SchedConfig::default())
    }

    fn small_parts() -> StoreConfig {
        StoreConfig {
            multipart_threshold: 1000,
            part_size: 600,
            ..StoreConfig::default()
        }
    }

    /// The same store behaviours on every backend: a local directory,
    /// memory, and real S3, GCS and Azure servers (moto, fake-gcs-server
    /// and Azurite, installed and started by the testkit).
    async fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
        let (local, dir) = local().await;
        vec![
            (local, Some(dir)),
            (memory().await, None),
            (s3().await, None),
            (gcs().await, None),
            (azure().await, None),
        ]
    }

    async fn local() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let local = Store::open(dir.path().to_str().unwrap(), small_parts(), scheduler())
            .await
            .unwrap();
        (local, dir)
    }

    async fn memory() -> Store {
        Store::open("memory://", small_parts(), scheduler())
            .await
            .unwrap()
    }

    /// The cloud stores, each in a bucket of its own.
    async fn clouds() -> [Store; 3] {
        [s3().await, gcs().await, azure().await]
    }

    async fn s3() -> Store {
        let bucket = S3Server::require().new_bucket("store").unwrap();
        s3_in(&bucket, s3_config()).await
    }

    /// A cloud store's config: no sweeps (the tests that want them start
    /// them), and parts of 5 MiB, the least S3 and GCS take for all but
    /// the last.
    fn cloud_config() -> StoreConfig {
        StoreConfig {
            orphan_sweep: None,
            part_size: 5 << 20,
            multipart_threshold: 5 << 20,
            ..small_parts()
        }
    }

    async fn gcs() -> Store {
        let gcs = GcsServer::require();
        let bucket = gcs.new_bucket("store").unwrap();
        let config = StoreConfig {
            gcs: GcsOptions::emulator(&gcs.endpoint()),
            ..cloud_config()
        };
        Store::open(&format!("gs://{bucket}/corral"), config, scheduler())
            .await
            .unwrap()
    }

    async fn azure() -> Store {
        let azurite = AzureServer::require();
        let container = azurite.new_container("store").unwrap();
        let endpoint = azurite.account_endpoint();
        let config = StoreConfig {
            azure: AzureOptions::compatible(&endpoint, azure::ACCOUNT, azure::ACCESS_KEY),
            ..cloud_config()
        };
        Store::open(&format!("az://{container}/corral"), config, scheduler())
            .await
            .unwrap()
    }

    fn s3_config() -> StoreConfig {
        let mut config = cloud_config();
        config.s3 = S3Options::compatible(
            &S3Server::require().endpoint(),
            s3::REGION,
            s3::ACCESS_KEY_ID,
            s3::SECRET_ACCESS_KEY,
        );
        config
    }

    async fn s3_in(bucket: &str, config: StoreConfig) -> Store {
        Store::open(&format!("s3://{bucket}/corral"), config, scheduler())
            .await
            .unwrap()
    }

    /// The multipart uploads in progress in `bucket`, by key, as S3 lists
    /// them.
    fn open_uploads(bucket: &str) -> Vec<String> {
        let listing = S3Server::require()
            .request("GET", &format!("/{bucket}?uploads"), &[], b"")
            .unwrap()
            .ok()
            .unwrap();
        let body = String::from_utf8(listing.body).unwrap();
        let mut keys: Vec<String> = body
            .split("<Key>")
            .skip(1)
            .map(|rest| rest.split("</Key>").next().unwrap().to_owned())
            .collect();
        keys.sort();
        keys
    }

    // moto reports every upload as started in 2010, so these tests cannot
    // tell young uploads from old ones there; `orphan::tests` covers ages.
    #[tokio::test]
    async fn abandoned_multipart_uploads_under_the_prefix_are_aborted() {
        let bucket = S3Server::require().new_bucket("sweep").unwrap();
        let store = s3_in(&bucket, s3_config()).await;
        let raw = &store.client().parts().unwrap().store;
        let all = [
            "corral/t/abandoned.bin",
            "corral/t/with space.bin",
            "other/t/x.bin",
        ];
        for key in all {
            raw.create_multipart(&Path::from(key)).await.unwrap();
        }
        assert_eq!(open_uploads(&bucket), all);
        let swept = store.sweep_orphans(Duration::ZERO).await.unwrap();
        assert_eq!(
            swept,
            crate::Swept {
                aborted: 2,
                young: 0
            }
        );
        // Outside the store's prefix: not corral's to abort.
        assert_eq!(open_uploads(&bucket), ["other/t/x.bin"]);
    }

    #[tokio::test]
    async fn opening_a_store_sweeps_what_a_dead_process_left() {
        let bucket = S3Server::require().new_bucket("sweep-open").unwrap();
        let first = s3_in(&bucket, s3_config()).await;
        let raw = &first.client().parts().unwrap().store;
        raw.create_multipart(&Path::from("corral/t/crashed.bin"))
            .await
            .unwrap();
        let config = StoreConfig {
            orphan_sweep: Some(Duration::from_secs(3600)),
            orphan_age: Duration::ZERO,
            ..s3_config()
        };
        let second = s3_in(&bucket, config).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !open_uploads(&bucket).is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the sweep on open never came"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        second.close().await;
    }

    #[tokio::test]
    async fn objects_carry_their_metadata_for_other_s3_clients() {
        let bucket = S3Server::require().new_bucket("attrs").unwrap();
        let store = s3_in(&bucket, s3_config()).await;
        let stored = write(&store, "t/report.txt", b"hello").await;
        let head = S3Server::require()
            .request("HEAD", &format!("/{bucket}/corral/t/report.txt"), &[], b"")
            .unwrap()
            .ok()
            .unwrap();
        assert_eq!(head.header("content-length"), Some("5"));
        assert_eq!(head.header("content-type"), Some("text/plain"));
        assert_eq!(
            head.header("x-amz-meta-sha256"),
            Some(stored.sha256.as_str())
        );
    }

    fn key(text: &str) -> Key {
        Key::parse(text).unwrap()
    }

    fn group(store: &Store) -> Group {
        store.scheduler().group("tenant").unwrap()
    }

    async fn write(store: &Store, name: &str, content: &[u8]) -> crate::StoredObject {
        let writer = group(store);
        let mut upload = store.upload(&writer, key(name), None, Some("text/plain".into()), None);
        let size = if content.len() > 100_000 {
            64 << 10
        } else {
            250
        };
        for chunk in content.chunks(size) {
            upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        upload.finish().await.unwrap()
    }

    /// The attributes of the object `name` in the backend itself: what other
    /// readers of the bucket see.
    async fn attributes_in_backend(store: &Store, name: &str) -> Attributes {
        let head = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let path = Path::from(name);
        let got = store.client().backend().get_opts(&path, head).await;
        got.unwrap().attributes
    }

    /// The whole object `name`, read with [`Store::get`].
    async fn read_whole(store: &Store, name: &str) -> Vec<u8> {
        let reading = store.get(&group(store), &key(name), None).await.unwrap();
        let body: Vec<Bytes> = reading.body.try_collect().await.unwrap();
        body.concat()
    }

    /// The bytes of `info`'s object in `range`, read with [`Store::get`];
    /// the whole object for a range that covers it.
    async fn read_all(store: &Store, info: &ObjectInfo, range: Range<u64>) -> Vec<u8> {
        let whole = range == (0..info.size);
        let range = (!whole).then_some(GetRange::Bounded(range));
        let reading = store.get(&group(store), &info.key, range).await.unwrap();
        assert_eq!(&reading.info, info);
        let chunks: Vec<Bytes> = reading.body.try_collect().await.unwrap();
        chunks.concat()
    }

    #[tokio::test]
    async fn small_and_multipart_objects_round_trip_with_metadata() {
        for (store, _dir) in stores().await {
            let config = store.config();
            // Above the multipart threshold of every backend (S3's parts
            // are at least 5 MiB), with a short last part.
            let large = 2 * config.part_size.max(config.multipart_threshold) + 12_345;
            for (name, len) in [
                ("t/empty", 0),
                ("t/small", 999),
                ("t/parts", 2500),
                ("t/large", large),
            ] {
                let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let stored = write(&store, name, &content).await;
                assert_eq!(stored.size, len as u64);
                let info = store.head(&group(&store), &key(name)).await.unwrap();
                assert_eq!(info.size, len as u64, "{}", store.url());
                assert_eq!(info.sha256.as_deref(), Some(stored.sha256.as_str()));
                assert_eq!(info.content_type.as_deref(), Some("text/plain"));
                assert_eq!(read_all(&store, &info, 0..info.size).await, content);
                if store.client().keeps_attributes() {
                    let attributes = attributes_in_backend(&store, name).await;
                    let text = |attribute| attributes.get(&attribute).map(|v| v.to_string());
                    let single_call = len <= config.multipart_threshold;
                    // A multipart upload is typed when it starts, where the
                    // backend's parts interface takes attributes. object_store's
                    // Azure client takes none there: the blob gets Azure's
                    // default type, and corral's document has the real one
                    // (`info` above).
                    let typed = single_call
                        || (store.client().parts()).is_none_or(|parts| parts.attributes_on_create);
                    let content_type = text(Attribute::ContentType);
                    let expected = match typed {
                        true => "text/plain",
                        false => "application/octet-stream",
                    };
                    let expected = Some(expected);
                    assert_eq!(
                        content_type.as_deref(),
                        expected,
                        "{name} on {}",
                        store.url()
                    );
                    // Known before the call only for single-call objects.
                    let sha256 = text(Attribute::Metadata("sha256".into()));
                    assert_eq!(sha256.is_some(), single_call, "{name} on {}", store.url());
                    if single_call {
                        assert_eq!(sha256.as_deref(), Some(stored.sha256.as_str()));
                    }
                    // A document only where the attributes cannot say
                    // everything.
                    let doc = store.client().backend().head(&meta_path(&key(name))).await;
                    assert_eq!(doc.is_ok(), !single_call, "{name} on {}", store.url());
                }
                if len > 10 {
                    assert_eq!(read_all(&store, &info, 3..10).await, &content[3..10]);
                }
            }
            assert_eq!(store.buffers().current(), 0);
            let bound = config.multipart_threshold.max(config.part_size) + (64 << 10);
            assert!(store.buffers().peak() <= bound, "{}", store.url());
        }
    }

    async fn write_within(store: &Store, name: &str, content: &[u8], intent: &Intent) {
        let writer = group(store);
        let upload = store.upload(&writer, key(name), None, None, None);
        let mut upload = upload.within(intent.clone());
        for chunk in content.chunks(64 << 10) {
            upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        upload.finish().await.unwrap();
    }

    /// What the backend holds under `dir`, objects and metadata documents.
    async fn under(store: &Store, dir: &str) -> Vec<String> {
        let mut found = Vec::new();
        for root in [dir.to_owned(), format!(".corral/meta/{dir}")] {
            let listing = store.client().backend().list(Some(&Path::from(root)));
            let paths: Vec<ObjectMeta> = listing.try_collect().await.unwrap();
            found.extend(paths.into_iter().map(|meta| meta.location.to_string()));
        }
        found.sort();
        found
    }

    async fn listed(store: &Store, prefix: &str) -> Vec<String> {
        let page = store
            .list(&group(store), &key("t"), prefix, None, 100)
            .await;
        let page = page.unwrap();
        page.objects.iter().map(|o| o.key.to_string()).collect()
    }

    #[tokio::test]
    async fn a_batch_is_hidden_until_acknowledged_and_rolled_back_whole_if_not() {
        for (store, _dir) in stores().await {
            let config = store.config();
            let large = vec![3u8; 2 * config.part_size.max(config.multipart_threshold) + 10];
            write(&store, "t/outside", b"x").await;
            for (batch, acknowledged) in [("t/failed", false), ("t/stored", true)] {
                let intent = store.begin_batch(key(batch)).await.unwrap();
                write_within(&store, &format!("{batch}/a"), b"aaa", &intent).await;
                write_within(&store, &format!("{batch}/b"), &large, &intent).await;
                // Written, and not seen until the batch is settled.
                let written = under(&store, batch).await;
                let objects = written.iter().filter(|p| !p.starts_with(".corral"));
                assert_eq!(objects.count(), 2, "{}", store.url());
                let head = store
                    .head(&group(&store), &key(&format!("{batch}/a")))
                    .await;
                assert!(matches!(head, Err(Error::NotFound { .. })), "{head:?}");
                assert_eq!(listed(&store, "").await, ["t/outside"], "{}", store.url());
                if acknowledged {
                    intent.acknowledge().await.unwrap();
                } else {
                    intent.abandon().await;
                }
            }
            assert_eq!(under(&store, "t/failed").await, Vec::<String>::new());
            assert_eq!(
                listed(&store, "").await,
                ["t/outside", "t/stored/a", "t/stored/b"],
                "{}",
                store.url()
            );
            let info = store
                .head(&group(&store), &key("t/stored/b"))
                .await
                .unwrap();
            assert_eq!(read_all(&store, &info, 0..info.size).await, large);
        }
    }

    #[tokio::test]
    async fn batches_a_dead_process_left_open_are_rolled_back_when_the_store_opens() {
        let spool = tempfile::tempdir().unwrap();
        let journal = spool.path().join("batches.redb");
        let data = tempfile::tempdir().unwrap();
        let local = |journal: &std::path::Path| StoreConfig {
            batch_journal: Some(journal.to_owned()),
            ..small_parts()
        };
        let bucket = S3Server::require().new_bucket("recover").unwrap();
        let s3_journal = spool.path().join("s3-batches.redb");
        let s3 = || {
            let config = StoreConfig {
                batch_journal: Some(s3_journal.clone()),
                ..s3_config()
            };
            s3_in(&bucket, config)
        };
        let opened = [
            Store::open(data.path().to_str().unwrap(), local(&journal), scheduler())
                .await
                .unwrap(),
            s3().await,
        ];
        for store in &opened {
            let kept = store.begin_batch(key("t/kept")).await.unwrap();
            write_within(store, "t/kept/a", b"kept", &kept).await;
            kept.acknowledge().await.unwrap();
            let died = store.begin_batch(key("t/died")).await.unwrap();
            write_within(store, "t/died/a", b"lost", &died).await;
            died.die();
            if let Some(parts) = store.client().parts() {
                let path = Path::from("corral/t/died/b");
                parts.store.create_multipart(&path).await.unwrap();
            }
            store.close().await;
        }
        drop(opened);
        // A staging file the local backend left when the process died.
        std::fs::write(data.path().join("t/kept/a#3"), b"half").unwrap();

        let reopened = [
            Store::open(data.path().to_str().unwrap(), local(&journal), scheduler())
                .await
                .unwrap(),
            s3().await,
        ];
        assert!(
            !data.path().join("t/kept/a#3").exists(),
            "removed on opening"
        );
        for store in &reopened {
            // Hidden at once, gone soon.
            let head = store.head(&group(store), &key("t/died/a")).await;
            assert!(matches!(head, Err(Error::NotFound { .. })), "{head:?}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while !under(store, "t/died").await.is_empty() {
                assert!(tokio::time::Instant::now() < deadline, "{}", store.url());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(listed(store, "").await, ["t/kept/a"], "{}", store.url());
            store.close().await;
        }
        assert_eq!(open_uploads(&bucket), Vec::<String>::new());
    }

    /// Backend calls made through the store's scheduler by `work`.
    async fn calls<T>(store: &Store, work: impl Future<Output = T>) -> (T, u64) {
        let calls = || store.scheduler().counters().calls;
        let before = calls();
        let output = work.await;
        (output, calls() - before)
    }

    #[tokio::test]
    async fn a_small_file_carries_all_its_metadata_on_every_cloud_store() {
        let name = "résumé 1.txt";
        for store in clouds().await {
            let writer = group(&store);
            let content_type = Some("text/plain".to_owned());
            let mut upload =
                store.upload(&writer, key("t/cv"), None, content_type, Some(name.into()));
            upload.write(Bytes::from_static(b"cv")).await.unwrap();
            let stored = upload.finish().await.unwrap();
            let attributes = attributes_in_backend(&store, "t/cv").await;
            let text = |attribute| attributes.get(&attribute).map(|v| v.to_string());
            let metadata = |name: &'static str| text(Attribute::Metadata(name.into()));
            let encoded =
                percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
            let url = store.url();
            assert_eq!(
                text(Attribute::ContentType).as_deref(),
                Some("text/plain"),
                "{url}"
            );
            assert_eq!(metadata("sha256"), Some(stored.sha256), "{url}");
            assert_eq!(metadata("name"), Some(encoded.to_string()), "{url}");
            assert_eq!(metadata("corralmeta").as_deref(), Some("inline"), "{url}");
        }
    }

    #[tokio::test]
    async fn a_small_file_costs_one_call_to_store_read_or_delete_where_attributes_are_kept() {
        for store in clouds().await {
            let url = store.url().to_owned();
            // One job; on GCS, which has no bulk delete, it sends two
            // requests at once (the object, its document).
            let delete_calls = 1;
            let (_, stored) = calls(&store, write(&store, "t/one", b"one call")).await;
            let (info, described) = calls(&store, store.head(&group(&store), &key("t/one"))).await;
            let info = info.unwrap();
            let (_, read) = calls(&store, read_all(&store, &info, 0..info.size)).await;
            let (_, ranged) = calls(&store, read_all(&store, &info, 1..3)).await;
            let (deleted, removed) =
                calls(&store, store.delete(&group(&store), &key("t/one"))).await;
            deleted.unwrap();
            let counts = (stored, described, read, ranged, removed);
            assert_eq!(counts, (1, 1, 1, 1, delete_calls), "{url}");
            assert_eq!(
                info.sha256.as_deref(),
                Some(sha256_hex(b"one call").as_str())
            );
            assert_eq!(info.content_type.as_deref(), Some("text/plain"));
            // A multipart object has its SHA-256 in a document: one more
            // call to describe or read it.
            let large = vec![5u8; store.config().multipart_threshold + 1];
            write(&store, "t/large", &large).await;
            let (info, described) =
                calls(&store, store.head(&group(&store), &key("t/large"))).await;
            let info = info.unwrap();
            assert_eq!(info.sha256, Some(sha256_hex(&large)));
            assert_eq!(info.content_type.as_deref(), Some("text/plain"));
            let (whole, read) = calls(&store, read_all(&store, &info, 0..info.size)).await;
            assert_eq!(whole, large);
            let (_, ranged) = calls(&store, read_all(&store, &info, 1..5)).await;
            let (deleted, removed) =
                calls(&store, store.delete(&group(&store), &key("t/large"))).await;
            deleted.unwrap();
            let counts = (described, read, ranged, removed);
            assert_eq!(counts, (2, 2, 2, delete_calls), "{url}");
        }
    }

    #[tokio::test]
    async fn concurrent_reads_of_a_key_share_one_call_and_a_delete_is_seen_at_once() {
        let store = s3().await;
        let content = vec![9u8; 256 << 10];
        write(&store, "t/hot", &content).await;
        let readers = (0..200).map(|_| read_whole(&store, "t/hot"));
        let (bodies, read) = calls(&store, futures::future::join_all(readers)).await;
        assert!(bodies.iter().all(|body| *body == content));
        // Heads are served by the answer cached for a moment.
        let heads = (0..200).map(|_| async { store.head(&group(&store), &key("t/hot")).await });
        let (heads, headed) = calls(&store, futures::future::join_all(heads)).await;
        assert!(
            heads
                .into_iter()
                .all(|head| head.unwrap().size == content.len() as u64)
        );
        assert_eq!((read, headed), (1, 0));
        store.delete(&group(&store), &key("t/hot")).await.unwrap();
        let gone = store.get(&group(&store), &key("t/hot"), None).await;
        assert!(matches!(gone, Err(Error::NotFound { .. })));
        let gone = store.head(&group(&store), &key("t/hot")).await;
        assert!(matches!(gone, Err(Error::NotFound { .. })));

        // A large object's stream goes to one reader; the others read
        // their own, all of them whole.
        let large = vec![4u8; (crate::hot::MAX_SHARED_BODY + 1) as usize];
        write(&store, "t/large", &large).await;
        let readers = (0..5).map(|_| read_whole(&store, "t/large"));
        let bodies = futures::future::join_all(readers).await;
        assert!(bodies.iter().all(|body| *body == large));
    }

    #[tokio::test]
    async fn objects_stored_by_the_previous_release_stay_readable_and_deletable() {
        for store in clouds().await {
            stays_readable_and_deletable(&store).await;
        }
    }

    async fn stays_readable_and_deletable(store: &Store) {
        // As the previous release stored them: the SHA-256 in the
        // attributes without the marker, and a document beside.
        let (path, content) = (Path::from("t/old"), b"old".as_slice());
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata("sha256".into()),
            sha256_hex(content).into(),
        );
        let options = object_store::PutOptions::from(attributes);
        let raw = store.client().backend();
        raw.put_opts(&path, content.to_vec().into(), options)
            .await
            .unwrap();
        let doc = MetaDoc {
            size: 3,
            sha256: sha256_hex(content),
            content_type: Some("text/x-old".into()),
            name: Some("old".into()),
        };
        let doc = serde_json::to_vec(&doc).unwrap();
        raw.put(&meta_path(&key("t/old")), doc.into())
            .await
            .unwrap();
        let info = store.head(&group(store), &key("t/old")).await.unwrap();
        assert_eq!(info.sha256, Some(sha256_hex(content)));
        assert_eq!(info.content_type.as_deref(), Some("text/x-old"));
        assert_eq!(read_all(store, &info, 0..3).await, content);
        store.delete(&group(store), &key("t/old")).await.unwrap();
        let doc = raw.head(&meta_path(&key("t/old"))).await;
        assert!(
            matches!(doc, Err(object_store::Error::NotFound { .. })),
            "{doc:?}"
        );
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(bytes))
    }

    /// Regression: a spooled file retried while the rollback of its failed
    /// attempt still ran had its new object deleted by that rollback (an
    /// acknowledged file missing in 1 run of the R2 test in 20).
    #[tokio::test]
    async fn a_key_is_settled_only_once_its_cleanup_has_ended() {
        let store = Store::open("memory://", small_parts(), scheduler())
            .await
            .unwrap();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        store.client().spawn_cleanup_of(&key("t/k"), async move {
            released.await.ok();
        });
        let k = key("t/k");
        let settled = store.settled(&k);
        let mut settled = std::pin::pin!(settled);
        let early = tokio::time::timeout(Duration::from_millis(50), &mut settled).await;
        assert!(early.is_err(), "settled while its cleanup runs");
        // Another key is not held up.
        store.settled(&key("t/other")).await;
        release.send(()).unwrap();
        settled.await;
        store.close().await;
    }

    #[test]
    fn parts_grow_to_stay_within_ten_thousand() {
        let config = StoreConfig::default();
        assert_eq!(config.part_size_for(None), 8 << 20);
        assert_eq!(config.part_size_for(Some(5 << 30)), 8 << 20);
        let five_tib: u64 = 5 << 40;
        let part = config.part_size_for(Some(five_tib)) as u64;
        assert!(five_tib.div_ceil(part) <= MAX_PARTS);
        assert_eq!(part % (1 << 20), 0);
        assert_eq!(config.buffer_bound(Some(five_tib)), part as usize);
        assert_eq!(config.buffer_bound(None), 16 << 20);
    }

    #[tokio::test]
    async fn keys_with_spaces_and_unicode_round_trip_on_every_backend() {
        for (store, _dir) in stores().await {
            let names = [
                "t/with space.txt",
                "t/日本語/ファイル.md",
                "t/émoji 🎉 (2).bin",
            ];
            for name in names {
                let content = name.as_bytes();
                let stored = write(&store, name, content).await;
                let info = store.head(&group(&store), &key(name)).await.unwrap();
                assert_eq!(info.sha256.as_deref(), Some(stored.sha256.as_str()));
                assert_eq!(info.content_type.as_deref(), Some("text/plain"));
                assert_eq!(
                    read_all(&store, &info, 0..info.size).await,
                    content,
                    "{name}"
                );
            }
            let page = store
                .list(&group(&store), &key("t"), "", None, 10)
                .await
                .unwrap();
            let mut listed: Vec<String> = page.objects.iter().map(|o| o.key.to_string()).collect();
            let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            listed.sort();
            expected.sort();
            assert_eq!(listed, expected, "{}", store.url());
            // A non-ASCII prefix, and pages of one, in key order.
            let page = store
                .list(&group(&store), &key("t"), "日本", None, 10)
                .await
                .unwrap();
            assert_eq!(page.objects.len(), 1, "{}", store.url());
            let mut paged = Vec::new();
            let mut after = None;
            loop {
                let page = store
                    .list(&group(&store), &key("t"), "", after.as_ref(), 1)
                    .await
                    .unwrap();
                paged.extend(page.objects.iter().map(|o| o.key.to_string()));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(paged, expected, "{}", store.url());
        }
    }

    #[tokio::test]
    async fn a_corrupt_object_is_an_error_on_read_not_silent() {
        let (store, dir) = local().await;
        let content = vec![7u8; 300_000];
        write(&store, "t/corrupt", &content).await;
        let info = store.head(&group(&store), &key("t/corrupt")).await.unwrap();
        // Intact: the whole object reads back.
        assert_eq!(read_all(&store, &info, 0..info.size).await, content);
        // Flip one byte on disk, keeping the size.
        let path = dir.path().join("t/corrupt");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[150_000] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        // The intact bytes just read are cached for a moment; past it:
        store.inner.writer.hot.forget(info.key.as_str());
        // A small object is read whole and checked before its first byte
        // goes out (see `crate::hot`); a large one fails at its end.
        for read_cache in [store.config().read_cache, 0] {
            let mut config = store.config().clone();
            config.read_cache = read_cache;
            let store = Store::open(dir.path().to_str().unwrap(), config, scheduler())
                .await
                .unwrap();
            let read = match store.get(&group(&store), &info.key, None).await {
                Ok(reading) => reading.body.try_collect::<Vec<Bytes>>().await.map(drop),
                Err(e) => Err(e),
            };
            assert!(
                matches!(read, Err(Error::ChecksumMismatch { .. })),
                "read cache {read_cache}: {read:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_dropped_upload_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), small_parts(), scheduler())
            .await
            .unwrap();
        let writer = group(&store);
        let mut upload = store.upload(&writer, key("t/partial"), None, None, None);
        for _ in 0..10 {
            upload.write(Bytes::from(vec![7; 250])).await.unwrap();
        }
        drop(upload);
        store.close().await;
        let left: Vec<_> = walk(dir.path());
        assert!(left.is_empty(), "left behind: {left:?}");
        assert!(matches!(
            store.head(&group(&store), &key("t/partial")).await,
            Err(Error::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn a_cancelled_finish_never_leaves_an_object_nobody_was_told_of() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), small_parts(), scheduler())
            .await
            .unwrap();
        let writer = group(&store);
        let mut told = Vec::new();
        for i in 0..40 {
            let name = format!("t/object-{i}");
            let mut upload = store.upload(&writer, key(&name), None, None, None);
            for _ in 0..(i % 5) + 1 {
                upload.write(Bytes::from(vec![1; 700])).await.unwrap();
            }
            // Cancel the finish at every stage of the commit, by luck.
            let finish = upload.finish();
            let deadline = std::time::Duration::from_micros(50 * i);
            if let Ok(result) = tokio::time::timeout(deadline, finish).await {
                result.unwrap();
                told.push(name);
            }
        }
        store.close().await;
        let mut on_disk: Vec<String> = walk(dir.path())
            .iter()
            .filter_map(|p| p.strip_prefix(dir.path()).ok()?.to_str().map(str::to_owned))
            .filter(|p| !p.starts_with(".corral"))
            .collect();
        on_disk.sort();
        told.sort();
        assert_eq!(on_disk, told, "objects on disk are exactly those reported");
    }

    #[tokio::test]
    async fn a_failed_cleanup_does_not_stop_later_rollbacks() {
        let (store, _dir) = local().await;
        // Rolling back what was never written fails its look-up...
        store.delete_all(vec![key("t/never-written")]).await;
        // ...and the next rollback still works.
        write(&store, "t/rolled-back", b"x").await;
        store.delete_all(vec![key("t/rolled-back")]).await;
        let gone = store.head(&group(&store), &key("t/rolled-back")).await;
        assert!(matches!(gone, Err(Error::NotFound { .. })));
        // Even after a shutdown cancelled every request.
        write(&store, "t/after-shutdown", b"x").await;
        store.scheduler().shutdown(std::time::Duration::ZERO).await;
        store.delete_all(vec![key("t/after-shutdown")]).await;
        let meta = store
            .client()
            .backend()
            .head(&Path::from("t/after-shutdown"))
            .await;
        assert!(matches!(meta, Err(object_store::Error::NotFound { .. })));
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
        found
    }

    #[tokio::test]
    async fn listing_is_sorted_and_paginated_on_every_backend() {
        for (store, _dir) in stores().await {
            let names = ["t/b/2", "t/a/1", "t/c", "t/b/1", "t/a/2", "u/x", "t/bb"];
            for name in names {
                write(&store, name, b"x").await;
            }
            let root = key("t");
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let page = store
                    .list(&group(&store), &root, "", after.as_ref(), 2)
                    .await
                    .unwrap();
                assert!(page.objects.len() <= 2);
                seen.extend(page.objects.iter().map(|o| o.key.to_string()));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(
                seen,
                ["t/a/1", "t/a/2", "t/b/1", "t/b/2", "t/bb", "t/c"],
                "{}",
                store.url()
            );
            let page = store
                .list(&group(&store), &root, "b", None, 10)
                .await
                .unwrap();
            let keys: Vec<_> = page.objects.iter().map(|o| o.key.to_string()).collect();
            assert_eq!(keys, ["t/b/1", "t/b/2", "t/bb"]);
            let page = store
                .list(&group(&store), &root, "b/", None, 10)
                .await
                .unwrap();
            assert_eq!(page.objects.len(), 2);
            assert!(page.next.is_none());
        }
    }

    #[tokio::test]
    async fn delete_removes_object_and_metadata_and_is_idempotent() {
        for (store, _dir) in stores().await {
            write(&store, "t/gone", b"bye").await;
            store.delete(&group(&store), &key("t/gone")).await.unwrap();
            assert!(matches!(
                store.head(&group(&store), &key("t/gone")).await,
                Err(Error::NotFound { .. })
            ));
            // Deleting it again is no error: deletes are idempotent.
            store.delete(&group(&store), &key("t/gone")).await.unwrap();
            let meta = store
                .client()
                .backend()
                .head(&meta_path(&key("t/gone")))
                .await;
            assert!(matches!(meta, Err(object_store::Error::NotFound { .. })));
        }
    }

    #[tokio::test]
    async fn an_unusable_store_fails_at_open_with_the_reason() {
        let error = Store::open("s4://bucket", StoreConfig::default(), scheduler())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("unknown scheme"), "{error}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let under_a_file = file.path().join("data");
        let error = Store::open(
            under_a_file.to_str().unwrap(),
            StoreConfig::default(),
            scheduler(),
        )
        .await
        .unwrap_err();
        assert!(
            error.to_string().contains("cannot create directory"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn ranges_outside_the_object_are_refused() {
        for (store, _dir) in stores().await {
            write(&store, "t/r", b"0123456789").await;
            write(&store, "t/empty", b"").await;
            let refused = [
                ("t/r", GetRange::Bounded(10..11), 10),
                ("t/r", GetRange::Offset(10), 10),
                ("t/r", GetRange::Bounded(5..5), 10),
                ("t/r", GetRange::Suffix(0), 10),
                ("t/empty", GetRange::Offset(0), 0),
                ("t/empty", GetRange::Suffix(3), 0),
            ];
            for (name, range, size) in refused {
                let result = store
                    .get(&group(&store), &key(name), Some(range.clone()))
                    .await;
                assert!(
                    matches!(&result, Err(Error::RangeNotSatisfiable { size: s, .. }) if *s == size),
                    "{} {name} {range}: {:?}",
                    store.url(),
                    result.map(|r| r.range)
                );
            }
            // Ranges reaching past the end are cut to it.
            for (range, served) in [
                (GetRange::Bounded(8..20), 8..10),
                (GetRange::Suffix(30), 0..10),
                (GetRange::Offset(9), 9..10),
            ] {
                let reading = store
                    .get(&group(&store), &key("t/r"), Some(range.clone()))
                    .await;
                let reading = reading.unwrap();
                assert_eq!(reading.range, served, "{} {range}", store.url());
                let body: Vec<Bytes> = reading.body.try_collect().await.unwrap();
                assert_eq!(
                    body.concat(),
                    &b"0123456789"[served.start as usize..served.end as usize],
                    "{}",
                    store.url()
                );
            }
        }
    }

    fn record(name: &str, length: Option<u64>) -> UploadRecord {
        UploadRecord {
            key: key(&format!("t/tus/{name}")),
            length,
            content_type: Some("video/mp4".into()),
            name: Some(name.into()),
            metadata: Some("filename dmlkZW8ubXA0".into()),
            partial: false,
        }
    }

    /// `len` bytes that differ from one offset to the next.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    /// Sends `bytes` to the upload `id` at `offset`, in chunks, and pauses.
    async fn send_and_pause(store: &Store, id: &str, offset: u64, bytes: &[u8]) -> u64 {
        let group = group(store);
        let mut upload = store
            .resume_upload(&group, &key("t"), id, offset)
            .await
            .unwrap();
        for chunk in bytes.chunks(70_001) {
            upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        upload.pause().await.unwrap()
    }

    /// The same store in another process: nothing cached.
    async fn reopened(store: &Store, dir: Option<&tempfile::TempDir>) -> Store {
        let (url, config) = match dir {
            Some(dir) => (dir.path().to_str().unwrap().to_owned(), small_parts()),
            None => (store.url().to_owned(), s3_config()),
        };
        Store::open(&url, config, scheduler()).await.unwrap()
    }

    #[tokio::test]
    async fn a_resumable_upload_goes_on_in_another_process_and_becomes_an_ordinary_object() {
        let (local, dir) = local().await;
        for (store, dir) in [(local, Some(&dir)), (s3().await, None)] {
            let url = store.url().to_owned();
            // Two parts and a tail, cut inside the first part and inside
            // the tail.
            let part = store.config().part_size;
            let content = pattern(2 * part + 1234, 7);
            let cuts = [part / 3, part + part / 2, content.len()];
            // No length (deferred): parts of the configured size, which a
            // known length would grow to 1 MiB (see `part_size_for`).
            let length = None;
            let first = group(&store);
            let begun = store.begin_upload(&first, &key("t"), record("video.mp4", length));
            let u1 = begun.id().to_owned();
            let u1 = u1.as_str();
            assert_eq!(begun.pause().await.unwrap(), 0, "{url}");
            let offset = send_and_pause(&store, u1, 0, &content[..cuts[0]]).await;
            assert_eq!(offset, cuts[0] as u64, "{url}");
            let offset = send_and_pause(&store, u1, offset, &content[cuts[0]..cuts[1]]).await;
            assert_eq!(offset, cuts[1] as u64, "{url}");

            let other = reopened(&store, dir).await;
            let status = other
                .upload_status(&group(&other), &key("t"), u1)
                .await
                .unwrap();
            assert_eq!(status.offset, cuts[1] as u64, "{url}");
            assert_eq!(status.record, record("video.mp4", length), "{url}");
            // Another tenant's id finds nothing.
            let stranger = other.upload_status(&group(&other), &key("u"), u1).await;
            assert!(matches!(stranger, Err(Error::NotFound { .. })), "{url}");
            let writer = group(&other);
            let wrong = other.resume_upload(&writer, &key("t"), u1, 5).await;
            let at = cuts[1] as u64;
            assert!(
                matches!(wrong, Err(Error::OffsetMismatch { offset }) if offset == at),
                "{url}"
            );

            let mut upload = other
                .resume_upload(&writer, &key("t"), u1, at)
                .await
                .unwrap();
            upload
                .write(Bytes::copy_from_slice(&content[cuts[1]..]))
                .await
                .unwrap();
            let stored = upload.finish().await.unwrap();
            assert_eq!(stored.sha256, sha256_hex(&content), "{url}");
            assert_eq!(
                read_whole(&other, "t/tus/video.mp4").await,
                content,
                "{url}"
            );
            let info = other
                .head(&group(&other), &key("t/tus/video.mp4"))
                .await
                .unwrap();
            assert_eq!(info.content_type.as_deref(), Some("video/mp4"), "{url}");
            assert_eq!(
                info.sha256.as_deref(),
                Some(stored.sha256.as_str()),
                "{url}"
            );
            // Nothing of the upload is left but the object.
            let gone = other.upload_status(&group(&other), &key("t"), u1).await;
            assert!(matches!(gone, Err(Error::NotFound { .. })), "{url}");
            let left = upload_objects(&other).await;
            assert!(left.is_empty(), "{url}: {left:?}");
        }
        // The parts were files of their own, and went with the upload.
        let parts = dir.path().join(crate::backend::local_parts::PARTS_DIR);
        assert!(parts.is_dir());
        assert_eq!(walk(&parts), Vec::<std::path::PathBuf>::new());
    }

    #[tokio::test]
    async fn a_resumable_upload_costs_a_call_when_sent_whole_and_three_after_an_empty_creation() {
        let store = s3().await;
        let content = b"a small file".to_vec();
        let length = Some(content.len() as u64);
        let writer = group(&store);
        let whole = async {
            let mut upload = store.begin_upload(&writer, &key("t"), record("w.txt", length));
            upload.write(Bytes::from(content.clone())).await.unwrap();
            upload.finish().await.unwrap()
        };
        let (_, whole) = calls(&store, whole).await;
        let empty = store.begin_upload(&writer, &key("t"), record("e.txt", length));
        let e = empty.id().to_owned();
        let (_, created) = calls(&store, empty.pause()).await;
        let patch = async {
            let mut upload = store
                .resume_upload(&writer, &key("t"), &e, 0)
                .await
                .unwrap();
            upload.write(Bytes::from(content.clone())).await.unwrap();
            upload.finish().await.unwrap()
        };
        let (_, patched) = calls(&store, patch).await;
        // Cut in its creation: the bytes that came, and the state.
        let cut = async {
            let mut upload = store.begin_upload(&writer, &key("t"), record("c.txt", Some(99)));
            upload.write(Bytes::from(content.clone())).await.unwrap();
            upload.pause().await.unwrap()
        };
        let (offset, cut) = calls(&store, cut).await;
        // The patch: the object, the delete (its lease is put off, and
        // never needed: see "The first request after an empty creation").
        assert_eq!((whole, created, patched, cut), (1, 1, 2, 2));
        assert_eq!(offset, content.len() as u64);
        for name in ["t/tus/w.txt", "t/tus/e.txt"] {
            assert_eq!(read_whole(&store, name).await, content);
        }
    }

    /// Where two instances of a store share their uploads: a local
    /// directory (which lives as long as the returned guard) and a new
    /// bucket of moto named `bucket`, with their configs.
    fn shared_backends(bucket: &str) -> (tempfile::TempDir, [(String, StoreConfig); 2]) {
        let dir = tempfile::tempdir().unwrap();
        let bucket = S3Server::require().new_bucket(bucket).unwrap();
        let backends = [
            (dir.path().to_str().unwrap().to_owned(), small_parts()),
            (format!("s3://{bucket}/corral"), s3_config()),
        ];
        (dir, backends)
    }

    /// The names of what is stored of uploads in progress (states and
    /// tails), sorted.
    async fn upload_objects(store: &Store) -> Vec<String> {
        let listed: Vec<_> = (store.client().backend())
            .list(Some(&Path::from(".corral/uploads")))
            .try_collect()
            .await
            .unwrap();
        let mut names: Vec<String> = (listed.iter())
            .map(|meta| meta.location.filename().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }

    /// Two instances of a store sharing a directory or a bucket, with a
    /// short lease. (`memory://` is one store per process, so there is no
    /// second instance to race: its conditional writes are
    /// `object_store`'s own.)
    #[tokio::test]
    async fn a_resumable_upload_is_leased_to_one_instance_and_a_stale_write_is_refused() {
        let lease = Duration::from_millis(900);
        let (_dir, backends) = shared_backends("lease");
        for (url, config) in backends {
            let config = StoreConfig {
                upload_lease: lease,
                ..config
            };
            let a = Store::open(&url, config.clone(), scheduler())
                .await
                .unwrap();
            let b = Store::open(&url, config, scheduler()).await.unwrap();
            let (on_a, on_b) = (group(&a), group(&b));
            // Larger than the multipart threshold: a request takes its lease
            // when it begins.
            let content = pattern(a.config().multipart_threshold + 100, 3);
            let length = Some(content.len() as u64);
            let begun = a.begin_upload(&on_a, &key("t"), record("race.bin", length));
            let id = begun.id().to_owned();
            begun.pause().await.unwrap();

            // A takes the upload; B is refused until A releases it.
            let mut first = a.resume_upload(&on_a, &key("t"), &id, 0).await.unwrap();
            let refused = b.resume_upload(&on_b, &key("t"), &id, 0).await;
            assert!(
                matches!(&refused, Err(Error::Leased { until, .. }) if *until > SystemTime::now()),
                "{url}: {refused:?}"
            );
            let refused = b.terminate_upload(&on_b, &key("t"), &id).await;
            assert!(matches!(refused, Err(Error::Leased { .. })), "{url}");
            let cut = content.len() / 4;
            first
                .write(Bytes::copy_from_slice(&content[..cut]))
                .await
                .unwrap();
            assert_eq!(first.pause().await.unwrap(), cut as u64, "{url}");

            // Released: B goes on from where A left it.
            let status = b.upload_status(&on_b, &key("t"), &id).await.unwrap();
            assert_eq!(status.offset, cut as u64, "{url}");
            let at = cut as u64;
            let mut second = b.resume_upload(&on_b, &key("t"), &id, at).await.unwrap();
            // A's cached state is stale: its lease write is refused, and
            // the state read again names B.
            let refused = a.resume_upload(&on_a, &key("t"), &id, at).await;
            assert!(matches!(refused, Err(Error::Leased { .. })), "{url}");

            // B saves and releases it: A, whose cache still shows B's lease,
            // asks the store again and goes on at once.
            let saved = 2 * cut;
            second
                .write(Bytes::copy_from_slice(&content[cut..saved]))
                .await
                .unwrap();
            assert_eq!(second.pause().await.unwrap(), saved as u64, "{url}");
            let at = saved as u64;
            let mut third = a.resume_upload(&on_a, &key("t"), &id, at).await.unwrap();
            // A stalls holding the lease, as if dead; once it expires, B
            // takes the upload over from the last saved state.
            let stalled = 3 * cut;
            third
                .write(Bytes::copy_from_slice(&content[saved..stalled]))
                .await
                .unwrap();
            tokio::time::sleep(lease + Duration::from_millis(200)).await;
            let mut fourth = b.resume_upload(&on_b, &key("t"), &id, at).await.unwrap();
            // A wakes up: its write, on the version it leased, is refused
            // and overwrites nothing.
            let late = third.pause().await;
            assert!(
                matches!(late, Err(Error::LeaseLost { .. })),
                "{url}: {late:?}"
            );
            fourth
                .write(Bytes::copy_from_slice(&content[saved..]))
                .await
                .unwrap();
            let stored = fourth.finish().await.unwrap();
            assert_eq!(stored.sha256, sha256_hex(&content), "{url}");
            assert_eq!(read_whole(&a, "t/tus/race.bin").await, content, "{url}");
        }
    }

    /// An upload of `length` bytes created empty through `a`, then resumed
    /// at byte 0 through `a` (which puts its lease off) and through `b`
    /// (which takes it): its id and the two requests.
    async fn resumed_on_both<'g>(
        (a, on_a): (&'g Store, &'g Group),
        (b, on_b): (&'g Store, &'g Group),
        name: &str,
        length: Option<u64>,
    ) -> (String, Resuming<'g>, Resuming<'g>) {
        let begun = a.begin_upload(on_a, &key("t"), record(name, length));
        let id = begun.id().to_owned();
        begun.pause().await.unwrap();
        let through_a = a.resume_upload(on_a, &key("t"), &id, 0).await.unwrap();
        let through_b = b.resume_upload(on_b, &key("t"), &id, 0).await.unwrap();
        (id, through_a, through_b)
    }

    /// The first request after an empty creation, on the instance that
    /// created the upload, puts its lease off: another instance may take
    /// the upload meanwhile, and then only one of them stores the object,
    /// and the other's request fails with nothing of it left behind.
    #[tokio::test]
    async fn a_small_upload_written_through_two_instances_at_once_is_stored_by_one() {
        let (_dir, backends) = shared_backends("deferred");
        for (url, config) in backends {
            let a = Store::open(&url, config.clone(), scheduler())
                .await
                .unwrap();
            let b = Store::open(&url, config, scheduler()).await.unwrap();
            let (on_a, on_b) = (group(&a), group(&b));
            let content = pattern(900, 5);
            let length = Some(content.len() as u64);
            let half = Bytes::copy_from_slice(&content[..450]);

            // A finishes first: B, which holds the lease, cannot save.
            let (_, mut through_a, mut through_b) =
                resumed_on_both((&a, &on_a), (&b, &on_b), "one.bin", length).await;
            through_b.write(half.clone()).await.unwrap();
            through_a.write(Bytes::from(content.clone())).await.unwrap();
            let (stored, calls_a) = calls(&a, through_a.finish()).await;
            assert_eq!(stored.unwrap().sha256, sha256_hex(&content), "{url}");
            assert_eq!(calls_a, 2, "{url}: the object, the delete");
            let late = through_b.pause().await;
            assert!(
                matches!(late, Err(Error::LeaseLost { .. })),
                "{url}: {late:?}"
            );
            assert_eq!(read_whole(&a, "t/tus/one.bin").await, content, "{url}");

            // B finishes first: A's object finds the key taken, and fails
            // without removing B's.
            let other = pattern(900, 6);
            let (_, mut through_a, mut through_b) =
                resumed_on_both((&a, &on_a), (&b, &on_b), "two.bin", length).await;
            through_b.write(Bytes::from(other.clone())).await.unwrap();
            through_b.finish().await.unwrap();
            through_a.write(Bytes::from(content.clone())).await.unwrap();
            let refused = through_a.finish().await;
            assert!(
                matches!(refused, Err(Error::LeaseLost { .. })),
                "{url}: {refused:?}"
            );
            assert_eq!(read_whole(&a, "t/tus/two.bin").await, other, "{url}");

            // The same bytes through both (a client that sent them twice):
            // the object taken is A's own, and A's answer names it.
            let (_, mut through_a, mut through_b) =
                resumed_on_both((&a, &on_a), (&b, &on_b), "same.bin", length).await;
            through_b.write(Bytes::from(content.clone())).await.unwrap();
            through_b.finish().await.unwrap();
            through_a.write(Bytes::from(content.clone())).await.unwrap();
            let stored = through_a.finish().await.unwrap();
            assert_eq!(stored.sha256, sha256_hex(&content), "{url}");
            assert_eq!(read_whole(&a, "t/tus/same.bin").await, content, "{url}");

            // A pauses (a request cut short): it takes the lease then, and
            // finds B's; nothing of A's is stored.
            let (id, mut through_a, through_b) =
                resumed_on_both((&a, &on_a), (&b, &on_b), "three.bin", length).await;
            through_a.write(half.clone()).await.unwrap();
            let refused = through_a.pause().await;
            assert!(
                matches!(refused, Err(Error::Leased { .. })),
                "{url}: {refused:?}"
            );
            through_b.discard().await;
            let status = a.upload_status(&on_a, &key("t"), &id).await.unwrap();
            assert_eq!(status.offset, 0, "{url}");

            // Nothing is left of the uploads but their states' litter from
            // B's late tail, swept with the upload once it expires.
            a.terminate_upload(&on_a, &key("t"), &id).await.unwrap();
            let left = upload_objects(&a).await;
            assert!(
                left.iter().all(|path| path.contains(".tail.")),
                "{url}: {left:?}"
            );
            let later = SystemTime::now() + Duration::from_secs(30 * 24 * 3600);
            a.sweep_uploads(later).await.unwrap();
            let left = upload_objects(&a).await;
            assert!(left.is_empty(), "{url}: {left:?}");
        }
    }

    #[tokio::test]
    async fn an_instance_restarted_with_its_instance_file_takes_its_own_leases_back_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let spool = tempfile::tempdir().unwrap();
        let url = dir.path().to_str().unwrap().to_owned();
        let config = StoreConfig {
            instance_file: Some(spool.path().join("instance.id")),
            ..small_parts()
        };
        let before = Store::open(&url, config.clone(), scheduler())
            .await
            .unwrap();
        let writer = group(&before);
        // Larger than the multipart threshold, so that a request takes its
        // lease when it begins.
        let content = pattern(2000, 4);
        let begun = before.begin_upload(&writer, &key("t"), record("r.bin", Some(2000)));
        let id = begun.id().to_owned();
        begun.pause().await.unwrap();
        let mut held = before
            .resume_upload(&writer, &key("t"), &id, 0)
            .await
            .unwrap();
        held.write(Bytes::from_static(b"abc")).await.unwrap();
        // Dies holding the lease (90 s): neither paused nor released.
        std::mem::forget(held);
        let other = Store::open(&url, small_parts(), scheduler()).await.unwrap();
        let stranger = group(&other);
        let refused = other.resume_upload(&stranger, &key("t"), &id, 0).await;
        assert!(matches!(refused.map(|_| ()), Err(Error::Leased { .. })));
        let after = Store::open(&url, config, scheduler()).await.unwrap();
        let writer = group(&after);
        let mut again = after
            .resume_upload(&writer, &key("t"), &id, 0)
            .await
            .unwrap();
        again.write(Bytes::from(content.clone())).await.unwrap();
        again.finish().await.unwrap();
        assert_eq!(read_whole(&after, "t/tus/r.bin").await, content);
    }

    #[tokio::test]
    async fn bytes_discarded_leave_the_upload_as_it_was_and_terminating_leaves_nothing() {
        let (local, _dir) = local().await;
        let bucket = S3Server::require().new_bucket("resumable").unwrap();
        for store in [local, memory().await, s3_in(&bucket, s3_config()).await] {
            let url = store.url().to_owned();
            let part = store.config().part_size;
            let content = pattern(part + 10, 1);
            let length = Some(3 * part as u64);
            let writer = group(&store);
            let begun = store.begin_upload(&writer, &key("t"), record("d.bin", length));
            let d = begun.id().to_owned();
            let d = d.as_str();
            begun.pause().await.unwrap();
            let offset = send_and_pause(&store, d, 0, &content[..part / 2]).await;
            // A request whose bytes are refused: a part is stored, then
            // forgotten.
            let mut upload = store
                .resume_upload(&writer, &key("t"), d, offset)
                .await
                .unwrap();
            upload.write(Bytes::from(pattern(part, 99))).await.unwrap();
            upload.discard().await;
            let status = store.upload_status(&writer, &key("t"), d).await.unwrap();
            assert_eq!(status.offset, offset, "{url}");
            // The right bytes replace the part.
            let rest = pattern(3 * part - part / 2, 5);
            let mut upload = store
                .resume_upload(&writer, &key("t"), d, offset)
                .await
                .unwrap();
            upload.write(Bytes::from(rest.clone())).await.unwrap();
            let stored = upload.finish().await.unwrap();
            let expected = [&content[..part / 2], &rest[..]].concat();
            assert_eq!(stored.sha256, sha256_hex(&expected), "{url}");
            assert_eq!(read_whole(&store, "t/tus/d.bin").await, expected, "{url}");

            let begun = store.begin_upload(&writer, &key("t"), record("x.bin", length));
            let x = begun.id().to_owned();
            let x = x.as_str();
            begun.pause().await.unwrap();
            send_and_pause(&store, x, 0, &content).await;
            store.terminate_upload(&writer, &key("t"), x).await.unwrap();
            let gone = store.upload_status(&writer, &key("t"), x).await;
            assert!(
                matches!(gone, Err(Error::NotFound { .. })),
                "{url}: {gone:?}"
            );
            let again = store.terminate_upload(&writer, &key("t"), x).await;
            assert!(
                matches!(again, Err(Error::NotFound { .. })),
                "{url}: {again:?}"
            );
            let backend = store.client().backend();
            let left: Vec<_> = backend
                .list(Some(&Path::from(".corral")))
                .try_collect()
                .await
                .unwrap();
            let left: Vec<_> = left
                .iter()
                .map(|m| m.location.to_string())
                .filter(|p| !p.starts_with(".corral/meta"))
                .collect();
            assert!(left.is_empty(), "{url}: {left:?}");
        }
        assert_eq!(open_uploads(&bucket), Vec::<String>::new());
    }

    #[tokio::test]
    async fn the_sweep_removes_expired_uploads_and_an_expired_upload_is_refused() {
        let config = StoreConfig {
            upload_expiry: Duration::from_secs(3600),
            ..small_parts()
        };
        let store = Store::open("memory://", config, scheduler()).await.unwrap();
        let writer = group(&store);
        let mut ids = Vec::new();
        for name in ["a", "b"] {
            let begun = store.begin_upload(&writer, &key("t"), record(name, Some(5000)));
            let made = SystemTime::now();
            let expires = begun.expires();
            let expiry = expires
                .duration_since(made)
                .unwrap_or_default()
                .as_secs_f64();
            assert!((expiry - 3600.0).abs() < 2.0, "{expiry}");
            ids.push(begun.id().to_owned());
            begun.pause().await.unwrap();
            send_and_pause(&store, ids.last().unwrap(), 0, &pattern(1500, 3)).await;
        }
        // A completed part of a concatenation that never comes.
        let partial = UploadRecord {
            partial: true,
            ..record("p", Some(3))
        };
        let mut upload = store.begin_upload(&writer, &key("t"), partial);
        upload.write(Bytes::from_static(b"abc")).await.unwrap();
        upload.finish().await.unwrap();
        let soon = SystemTime::now() + Duration::from_secs(60);
        assert_eq!(store.sweep_uploads(soon).await.unwrap(), 0);
        let status = store.upload_status(&writer, &key("t"), &ids[0]).await;
        assert_eq!(status.unwrap().offset, 1500);
        let later = SystemTime::now() + Duration::from_secs(3601);
        assert_eq!(store.sweep_uploads(later).await.unwrap(), 3);
        let gone = store.upload_status(&writer, &key("t"), &ids[0]).await;
        assert!(matches!(gone, Err(Error::NotFound { .. })), "{gone:?}");
        let backend = store.client().backend();
        let left: Vec<_> = backend.list(None).try_collect().await.unwrap();
        let left: Vec<_> = left.iter().map(|m| m.location.to_string()).collect();
        assert!(
            left.iter()
                .all(|p| !p.starts_with(".corral/uploads") && !p.starts_with(".corral/objects")),
            "{left:?}"
        );

        // Past its expiry and not swept yet: refused as expired.
        let config = StoreConfig {
            upload_expiry: Duration::ZERO,
            ..small_parts()
        };
        let store = Store::open("memory://", config, scheduler()).await.unwrap();
        let writer = group(&store);
        let begun = store.begin_upload(&writer, &key("t"), record("c", None));
        let id = begun.id().to_owned();
        begun.pause().await.unwrap();
        let expired = store.resume_upload(&writer, &key("t"), &id, 0).await;
        assert!(matches!(expired, Err(Error::Expired { .. })), "{expired:?}");
    }

    #[tokio::test]
    async fn partial_uploads_are_concatenated_into_one_object_and_then_removed() {
        let (local, _dir) = local().await;
        for store in [local, s3().await] {
            let url = store.url().to_owned();
            let writer = group(&store);
            let part = store.config().part_size;
            let pieces = [pattern(part + 7, 1), pattern(3, 2), pattern(2 * part, 3)];
            let mut ids = Vec::new();
            for piece in &pieces {
                let record = UploadRecord {
                    partial: true,
                    ..record("ignored.bin", Some(piece.len() as u64))
                };
                let mut upload = store.begin_upload(&writer, &key("t"), record);
                ids.push(upload.id().to_owned());
                upload.write(Bytes::from(piece.clone())).await.unwrap();
                let stored = upload.finish().await.unwrap();
                assert!(
                    stored.key.as_str().starts_with(".corral/objects/t/"),
                    "{url}"
                );
            }
            // No file of the tenant's yet.
            let page = store.list(&writer, &key("t"), "", None, 100).await.unwrap();
            assert!(page.objects.is_empty(), "{url}: {page:?}");
            let sizes = store.partial_sizes(&writer, &key("t"), &ids).await.unwrap();
            assert_eq!(
                sizes,
                pieces.iter().map(|p| p.len() as u64).collect::<Vec<_>>()
            );
            let stranger = store.partial_sizes(&writer, &key("u"), &ids).await;
            assert!(
                matches!(stranger, Err(Error::NotFound { key }) if key == ids[0]),
                "{url}"
            );

            let whole = pieces.concat();
            let record = record("whole.bin", Some(whole.len() as u64));
            let stored = store
                .concatenate(&writer, &key("t"), &ids, record)
                .await
                .unwrap();
            assert_eq!(stored.sha256, sha256_hex(&whole), "{url}");
            assert_eq!(read_whole(&store, "t/tus/whole.bin").await, whole, "{url}");
            let gone = store.partial_sizes(&writer, &key("t"), &ids[..1]).await;
            assert!(matches!(gone, Err(Error::NotFound { .. })), "{url}");
        }
    }

    #[tokio::test]
    async fn a_tail_is_named_by_where_it_starts_so_a_saved_state_never_loses_its_own() {
        let (store, _dir) = local().await;
        let writer = group(&store);
        let content = pattern(3000, 9);
        // No length: parts of the configured 600 bytes (a known length of
        // 3,000 would take parts of 1 MiB, see `part_size_for`).
        let begun = store.begin_upload(&writer, &key("t"), record("tails.bin", None));
        let id = begun.id().to_owned();
        begun.pause().await.unwrap();
        // 500 bytes: no part yet, a tail from byte 0.
        assert_eq!(send_and_pause(&store, &id, 0, &content[..500]).await, 500);
        // 900 more: two parts of 600 stored, a tail from byte 1200. Had this
        // request's state been lost after its tail was written, the saved
        // state's tail (from byte 0) would still be there, unchanged.
        assert_eq!(
            send_and_pause(&store, &id, 500, &content[500..1400]).await,
            1400
        );
        let tails = [format!("{id}.tail.0"), format!("{id}.tail.1200")];
        assert_eq!(
            upload_objects(&store).await,
            [id.clone(), tails[0].clone(), tails[1].clone()]
        );
        let mut upload = store
            .resume_upload(&writer, &key("t"), &id, 1400)
            .await
            .unwrap();
        upload
            .write(Bytes::copy_from_slice(&content[1400..]))
            .await
            .unwrap();
        let stored = upload.finish().await.unwrap();
        assert_eq!(stored.sha256, sha256_hex(&content));
        assert_eq!(read_whole(&store, "t/tus/tails.bin").await, content);
        // Every tail goes with the state.
        assert_eq!(upload_objects(&store).await, Vec::<String>::new());
    }
}
