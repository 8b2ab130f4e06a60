//! [`Upload`]: writing one object from a stream of chunks.
//!
//! # Memory
//!
//! An upload holds at most `max(multipart_threshold, part size)` bytes plus
//! one incoming chunk: it buffers until the threshold, then cuts the buffer
//! into parts of `part_size` and waits for each part to be stored before it
//! accepts more bytes. A slow backend therefore slows the sender (TCP
//! backpressure) instead of growing the buffer. Every buffered byte is
//! counted in the store's [`BufferGauge`], so the bound can be checked.
//!
//! Incoming chunks are copied into the upload's own blocks of 64 KiB rather
//! than kept. A chunk handed up by the HTTP server is a slice of its
//! connection's read buffer, and holding the slice holds the whole buffer
//! (hyper reads up to about 400 KiB at once): with 500 uploads of ten
//! 256 KiB files in progress, corral held 49 MB of counted bytes in 640 MB
//! of resident memory that way. The copy costs a `memcpy` per byte, far
//! less than the SHA-256 computed over the same bytes.
//!
//! # Failure
//!
//! An upload that is dropped before [`Upload::finish`] succeeds (an error, a
//! client gone, a cancelled request) aborts its multipart upload in the
//! background, so no partial object is left behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use corral_sched::Group;
use futures::TryFutureExt;
use object_store::path::Path;
use object_store::{Attributes, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, watch};

use crate::batch::Intent;
use crate::client::Client;
use crate::error::{BackendError, Error, Result, error_chain};
use crate::hot::HotReads;
use crate::key::Key;
use crate::meta::{self, MetaDoc, meta_path};
use crate::multipart::{Multipart, PausedParts};
use crate::read::Reads;

/// Bytes held in memory by uploads in progress: now, and the most ever.
#[derive(Debug, Clone, Default)]
pub struct BufferGauge {
    inner: Arc<GaugeInner>,
}

#[derive(Debug, Default)]
struct GaugeInner {
    current: AtomicUsize,
    peak: AtomicUsize,
}

impl BufferGauge {
    /// Bytes held now.
    pub fn current(&self) -> usize {
        self.inner.current.load(Ordering::Relaxed)
    }

    /// The most bytes ever held at once.
    pub fn peak(&self) -> usize {
        self.inner.peak.load(Ordering::Relaxed)
    }

    fn add(&self, bytes: usize) {
        let now = self.inner.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.inner.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn sub(&self, bytes: usize) {
        self.inner.current.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The size of the blocks bytes are copied into.
const BLOCK: usize = 64 << 10;

/// Bytes waiting to be written, counted in the gauge until dropped: full
/// blocks, then the block being filled.
#[derive(Debug)]
struct Buffer {
    chunks: Vec<Bytes>,
    open: BytesMut,
    len: usize,
    gauge: BufferGauge,
}

impl Buffer {
    fn new(gauge: BufferGauge) -> Self {
        Self {
            chunks: Vec::new(),
            open: BytesMut::new(),
            len: 0,
            gauge,
        }
    }

    /// Copies `bytes` in (see the [module docs](self)).
    fn push(&mut self, mut bytes: &[u8]) {
        self.gauge.add(bytes.len());
        self.len += bytes.len();
        while !bytes.is_empty() {
            if self.open.capacity() == self.open.len() {
                self.seal();
                self.open.reserve(BLOCK);
            }
            let room = self.open.capacity() - self.open.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.open.extend_from_slice(now);
            bytes = later;
        }
    }

    /// Moves the block being filled to the full ones.
    fn seal(&mut self) {
        if !self.open.is_empty() {
            self.chunks.push(self.open.split().freeze());
        }
    }

    /// Takes the first `n` bytes (or all, if fewer). The bytes stay counted
    /// in the gauge until the returned [`Part`] is dropped.
    fn take(&mut self, n: usize) -> Part {
        self.seal();
        let mut taken = Vec::new();
        let mut remaining = n;
        let mut rest = std::mem::take(&mut self.chunks).into_iter();
        for mut chunk in rest.by_ref() {
            if chunk.len() > remaining {
                taken.push(chunk.split_to(remaining));
                self.chunks.push(chunk);
                remaining = 0;
                break;
            }
            remaining -= chunk.len();
            taken.push(chunk);
            if remaining == 0 {
                break;
            }
        }
        self.chunks.extend(rest);
        let len = n - remaining;
        self.len -= len;
        Part {
            payload: taken.into_iter().collect(),
            len,
            gauge: self.gauge.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taking_parts_keeps_the_count_and_the_bytes_exact() {
        let gauge = BufferGauge::default();
        let mut buffer = Buffer::new(gauge.clone());
        let data: Vec<u8> = (0..=255).cycle().take(300_000).collect();
        for chunk in data.chunks(7000) {
            buffer.push(chunk);
        }
        let mut out = Vec::new();
        while buffer.len >= 100_000 {
            let part = buffer.take(100_000);
            assert_eq!(part.len, 100_000);
            assert_eq!(part.payload.content_length(), 100_000);
            // Whole blocks of the upload's own, not the chunks pushed.
            assert!(part.payload.iter().all(|b| b.len() <= BLOCK));
            out.extend(part.payload.iter().flat_map(|b| b.to_vec()));
        }
        buffer.push(&data[..5]);
        let rest = buffer.take(buffer.len);
        assert_eq!(rest.len, 5);
        out.extend(rest.payload.iter().flat_map(|b| b.to_vec()));
        assert_eq!(out[300_000..], data[..5]);
        out.truncate(300_000);
        drop(rest);
        assert_eq!(out, data);
        assert_eq!(buffer.len, 0);
        drop(buffer);
        assert_eq!(gauge.current(), 0);
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.gauge.sub(self.len);
    }
}

/// Bytes on their way to the backend.
struct Part {
    payload: PutPayload,
    len: usize,
    gauge: BufferGauge,
}

impl Drop for Part {
    fn drop(&mut self) {
        self.gauge.sub(self.len);
    }
}

/// An upload stopped between requests by [`Upload::pause`]: everything
/// needed to go on with it, in any process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Paused {
    key: String,
    /// Bytes received so far.
    pub(crate) size: u64,
    /// The SHA-256 of those bytes, as its saved state (hex): the object's
    /// digest needs no read of what was stored.
    hasher: String,
    content_type: Option<String>,
    name: Option<String>,
    part_size: usize,
    /// The multipart upload, once the bytes outgrew one call.
    multipart: Option<PausedParts>,
    /// Bytes after the last part, stored in the upload's tail object.
    pub(crate) tail_len: u64,
}

impl Paused {
    /// Aborts the multipart upload of this paused upload, if it has one,
    /// as the store's own work (see [`Multipart::abort`]).
    pub(crate) async fn abort(self, client: &Client) -> Result<()> {
        match self.multipart {
            Some(parts) => {
                let multipart = Multipart::resume(client, &self.key, parts);
                multipart.abort(client, &self.key).await
            }
            None => Ok(()),
        }
    }
}

/// A stored object, as its writer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Its key.
    pub key: Key,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its bytes, lower-case hex.
    pub sha256: String,
}

/// What writing objects needs of the store: its calls, its reads to
/// correct when an object changes, and its gauge of buffered bytes.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    pub(crate) client: Client,
    pub(crate) hot: Arc<HotReads>,
    pub(crate) buffers: BufferGauge,
    /// Objects larger than this are stored by parts.
    pub(crate) multipart_threshold: usize,
}

impl Writer {
    /// Removes `keys` and their metadata, as the store's own calls (never
    /// refused, and not cancelled with a request), retrying throttles,
    /// transient failures and a backend that is down until they are gone
    /// (see [`Group::run_until_done`]); for rolling back the objects of a
    /// failed batch. Only a permanent refusal, or the store's close giving
    /// up, leaves an object behind, and is logged.
    pub(crate) async fn delete_all(&self, keys: Vec<Key>) {
        let system = self.client.system();
        for key in keys {
            // No look-up first: what is not there is already rolled back.
            let paths = [Path::from(key.as_str()), meta_path(&key)];
            self.hot.forget(key.as_str());
            let deleted = system
                .run_until_done(0, || self.client.delete_call(&paths).map_err(BackendError))
                .await
                .map_err(|e| Error::job(key.as_str(), e));
            if let Err(e) = deleted {
                tracing::error!(%key, error = %error_chain(&e), "rollback failed");
            }
        }
    }
}

/// One object being written; made by [`Store::upload`](crate::Store::upload).
///
/// Feed it with [`write`](Self::write), then call [`finish`](Self::finish).
/// Dropping it before `finish` succeeds aborts the write (see the
/// [module docs](self)).
#[derive(Debug)]
pub struct Upload<'g> {
    writer: Writer,
    /// The request's group: every call of the upload is one of its jobs.
    group: &'g Group,
    key: Key,
    content_type: Option<String>,
    name: Option<String>,
    hasher: Sha256,
    size: u64,
    buffer: Buffer,
    /// The size of each part (see [`crate::StoreConfig::part_size_for`]).
    part_size: usize,
    /// The backend's multipart upload, once the object outgrew the
    /// threshold. Owned here: if the upload is dropped while this is set,
    /// `Drop` aborts it.
    multipart: Option<Multipart>,
    /// The intent of the batch the object belongs to, held until its
    /// commit ends (see [`crate::batch`]).
    intent: Option<Intent>,
    /// Whether the upload can be paused (see [`Upload::pause`]).
    resumable: bool,
    /// Whether the object is written only if its key is free (see
    /// [`Upload::exclusive`]).
    exclusive: bool,
}

impl<'g> Upload<'g> {
    pub(crate) fn new(
        writer: Writer,
        group: &'g Group,
        key: Key,
        part_size: usize,
        content_type: Option<String>,
        name: Option<String>,
    ) -> Self {
        let gauge = writer.buffers.clone();
        Self {
            writer,
            group,
            key,
            part_size,
            content_type,
            name,
            hasher: Sha256::new(),
            size: 0,
            buffer: Buffer::new(gauge),
            multipart: None,
            intent: None,
            resumable: false,
            exclusive: false,
        }
    }

    /// Makes the upload one that can be paused between requests and
    /// resumed in another process (see [`pause`](Self::pause)).
    pub(crate) fn resumable(mut self) -> Self {
        self.resumable = true;
        self
    }

    /// Makes the upload write its object only if nothing is stored at its
    /// key yet: the call that stores it is a conditional create
    /// ([`PutMode::Create`]), so of two requests writing one resumable
    /// upload without its lease, one stores it and the other gets
    /// [`Error::Exists`] (see [`crate::resumable`]). For an object of one
    /// call only (at most the multipart threshold): completing a multipart
    /// upload is not conditional.
    ///
    /// A create refused because the key is taken by an object of the same
    /// size and SHA-256 is this upload's own (an earlier attempt of the
    /// same call that landed, though its answer was lost): it counts as
    /// stored, at the cost of one call to look.
    pub(crate) fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }

    /// Stops the upload so that [`resume`](Self::resume) can go on with it,
    /// in this process or another: the bytes not yet in a part are stored
    /// in the object at `tail` (one call, none if there are none), and the
    /// returned [`Paused`] says where everything is. Nothing is aborted.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Backend`] if the tail cannot be stored; the upload
    /// is then as it was when last paused.
    pub(crate) async fn pause(mut self, tail: &Path) -> Result<Paused> {
        assert!(self.resumable, "only a resumable upload is paused");
        // Out of the upload first: dropped on a failure below, it would be
        // aborted, and with it the parts the last saved state names.
        let multipart = self.multipart.take();
        let rest = self.buffer.take(self.buffer.len);
        let tail_len = rest.len as u64;
        if tail_len > 0 {
            let (client, key) = (&self.writer.client, self.key.as_str());
            let backend = client.backend();
            client
                .call(self.group, key, tail_len, || {
                    backend.put(tail, rest.payload.clone())
                })
                .await?;
        }
        let multipart = multipart.map(|multipart| {
            multipart
                .pause()
                .expect("a resumable upload's parts are numbered")
        });
        Ok(Paused {
            key: self.key.to_string(),
            size: self.size,
            hasher: hex::encode(self.hasher.serialize()),
            content_type: self.content_type.take(),
            name: self.name.take(),
            part_size: self.part_size,
            multipart,
            tail_len,
        })
    }

    /// Goes on with the upload `paused`: its tail (the bytes stored at
    /// `tail` by [`pause`](Self::pause)) is read back into the buffer, one
    /// call if there is one.
    ///
    /// # Errors
    ///
    /// [`crate::Error::CorruptState`] if `paused` does not describe an
    /// upload, [`crate::Error::Backend`] if the tail cannot be read.
    pub(crate) async fn resume(
        writer: Writer,
        group: &'g Group,
        paused: Paused,
        tail: &Path,
    ) -> Result<Upload<'g>> {
        let corrupt = |reason: &str| Error::CorruptState {
            key: paused.key.clone(),
            reason: reason.to_owned(),
        };
        let key = Key::try_from(paused.key.clone()).map_err(|_| corrupt("its key is invalid"))?;
        let state = hex::decode(&paused.hasher).map_err(|_| corrupt("its SHA-256 is not hex"))?;
        let state = state
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("its SHA-256 state has the wrong size"))?;
        let hasher = Sha256::deserialize(state).map_err(|_| corrupt("its SHA-256 is invalid"))?;
        let mut upload = Upload::new(
            writer,
            group,
            key,
            paused.part_size,
            paused.content_type,
            paused.name,
        )
        .resumable();
        upload.hasher = hasher;
        upload.size = paused.size;
        let (client, key) = (&upload.writer.client, upload.key.as_str());
        upload.multipart = (paused.multipart).map(|parts| Multipart::resume(client, key, parts));
        if paused.tail_len > 0 {
            let backend = client.backend();
            let range = 0..paused.tail_len;
            let bytes = client
                .call(group, key, paused.tail_len, || async {
                    match backend.get_range(tail, range.clone()).await {
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        got => got.map(Some),
                    }
                })
                .await?
                .ok_or_else(|| corrupt("its tail is missing"))?;
            upload.buffer.push(&bytes);
        }
        Ok(upload)
    }

    /// Drops the upload without aborting its multipart upload: what was
    /// stored since it was last paused is left for the paused state to
    /// overwrite or abort (a part of the same number replaces it).
    pub(crate) fn abandon(mut self) {
        self.multipart = None;
    }

    /// Makes the object part of the batch of `intent`: the batch is not
    /// rolled back before this upload's commit has ended, so a rollback
    /// never misses an object that lands late.
    pub fn within(mut self, intent: Intent) -> Self {
        self.intent = Some(intent);
        self
    }

    /// The key being written.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes written but not yet sent to the backend, held in memory.
    pub fn buffered(&self) -> usize {
        self.buffer.len
    }

    /// Adds `chunk` to the object, storing parts as they fill up.
    ///
    /// Not cancel safe: if this future is dropped, drop the upload too.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Backend`] if the backend refuses a part; the upload
    /// is then unusable and should be dropped.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.hasher.update(&chunk);
        self.size += chunk.len() as u64;
        self.buffer.push(&chunk);
        let multipart_threshold = self.writer.multipart_threshold;
        let part_size = self.part_size;
        if self.multipart.is_none() {
            if self.buffer.len <= multipart_threshold {
                return Ok(());
            }
            let attributes = match self.writer.client.keeps_attributes() {
                true => meta::attributes(self.content_type.as_deref(), None),
                false => Attributes::new(),
            };
            let key = self.key.as_str();
            let (client, resumable) = (&self.writer.client, self.resumable);
            let started = Multipart::start(client, self.group, key, attributes, resumable).await?;
            self.multipart = Some(started);
        }
        while self.buffer.len >= part_size {
            let part = self.buffer.take(part_size);
            self.put_part(part).await?;
        }
        Ok(())
    }

    async fn put_part(&mut self, part: Part) -> Result<()> {
        let multipart = self
            .multipart
            .as_mut()
            .expect("parts are only cut once the multipart upload exists");
        // `part` lives until the backend has the bytes, so the gauge counts
        // them until then.
        multipart
            .put_part(
                &self.writer.client,
                self.group,
                self.key.as_str(),
                &part.payload,
            )
            .await
    }

    /// Stores what remains and completes the object; only then does it
    /// exist for readers. The same as [`commit`](Self::commit), then
    /// awaiting its [`Committing`].
    ///
    /// # Errors
    ///
    /// [`crate::Error::Backend`] if the backend fails; nothing is left
    /// behind.
    pub async fn finish(self) -> Result<StoredObject> {
        self.commit().await?.await
    }

    /// Stores the last part of a multipart object, then starts the commit
    /// (the call that makes the object exist, and its metadata document if
    /// it needs one) and returns without waiting for it: the caller can
    /// receive its next file meanwhile, and learns the outcome by awaiting
    /// the [`Committing`].
    ///
    /// The commit runs in a task of its own, as work of the request's
    /// tenant that its cancellation does not stop: a commit cut off
    /// half-way can still land (the local backend renames on a blocking
    /// thread), and a request that is gone must not leave an object nobody
    /// was told of. If the [`Committing`] is dropped before it has told its
    /// outcome, or the commit fails, the task removes the object again.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Backend`] if the backend refuses the last part;
    /// nothing is left behind.
    pub async fn commit(mut self) -> Result<Committing> {
        let sha256 = hex::encode(self.hasher.finalize_reset());
        let mut rest = Some(self.buffer.take(self.buffer.len));
        if self.multipart.is_some()
            && let Some(part) = rest.take_if(|part| part.len > 0)
        {
            self.put_part(part).await?;
        }
        let held = rest.as_ref().map_or(0, |part| part.len);
        // A multipart object's last call sends no bytes: as good as begun.
        let (began, begun) = watch::channel(rest.is_none());
        let commit = Commit {
            began,
            writer: self.writer.clone(),
            group: self.group.detached(),
            key: self.key.clone(),
            multipart: self.multipart.take(),
            rest,
            exclusive: self.exclusive,
            doc: MetaDoc {
                size: self.size,
                sha256: sha256.clone(),
                content_type: self.content_type.take(),
                name: self.name.take(),
            },
        };
        let (sender, receiver) = oneshot::channel();
        let writer = self.writer.clone();
        let key = self.key.clone();
        let intent = self.intent.take();
        // The key counts as being cleaned up until the commit has settled it:
        // published, or rolled back.
        self.writer.client.spawn_cleanup_of(&self.key, async move {
            // Let go of the batch only once the object is settled.
            let _intent = intent;
            let mut commit = commit;
            let result = commit.publish().await;
            // Readers of an object this one replaced must not be served it.
            writer.hot.forget(key.as_str());
            let stored = result.is_ok();
            let taken = matches!(result, Err(Error::Exists { .. }));
            // The answer first: rolling back may take long (the backend is
            // down) and is the store's own work from here on.
            let told = sender.send(result).is_ok();
            if taken {
                // Another request's object: nothing of this one's to roll
                // back or remove.
            } else if !stored {
                commit.roll_back().await;
            } else if !told {
                // Nobody heard of it: it must not stay.
                writer.delete_all(vec![key]).await;
            }
        });
        Ok(Committing {
            outcome: receiver,
            held,
            begun,
            stored: StoredObject {
                key: self.key.clone(),
                size: self.size,
                sha256,
            },
        })
    }
}

/// An object's commit under way, made by [`Upload::commit`]; resolves to
/// the stored object once it exists for readers. Dropping it before then
/// has the object removed (see [`Upload::commit`]).
#[derive(Debug)]
#[must_use = "an object whose commit is not awaited is removed again"]
pub struct Committing {
    outcome: oneshot::Receiver<Result<()>>,
    held: usize,
    /// Whether the call that sends the object's bytes has left the
    /// scheduler's queue.
    begun: watch::Receiver<bool>,
    stored: StoredObject,
}

impl Committing {
    /// The object's bytes still held in memory until the commit has sent
    /// them: a single-call object's, none for a multipart one.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Waits until the call that sends the object's bytes has left the
    /// scheduler's queue for the backend (or the commit has ended): until
    /// then the backend is busy with others' work, and a caller that reads
    /// more meanwhile would only pile bytes up in memory.
    pub async fn begun(&mut self) {
        // An error is the commit having ended: nothing more to wait for.
        let _ = self.begun.wait_for(|begun| *begun).await;
    }
}

impl Future for Committing {
    type Output = Result<StoredObject>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let outcome = std::task::ready!(std::pin::Pin::new(&mut self.outcome).poll(cx));
        let result = outcome.map_err(|_| crate::Error::Cancelled).flatten();
        std::task::Poll::Ready(result.map(|()| self.stored.clone()))
    }
}

/// The last calls of an upload: make the object exist, then describe it.
struct Commit {
    /// Told once the call that sends the object's bytes is dispatched.
    began: watch::Sender<bool>,
    writer: Writer,
    /// Detached from the request's group: see [`Upload::commit`].
    group: Arc<Group>,
    key: Key,
    multipart: Option<Multipart>,
    /// The bytes of a single-call object (`None` once written as the last
    /// part of a multipart upload).
    rest: Option<Part>,
    /// Whether a single-call object is written only if its key is free.
    exclusive: bool,
    doc: MetaDoc,
}

/// Whether the object that took `key` (an exclusive commit's) is the one
/// `doc` describes, stored by an earlier attempt of its call: the same size
/// and the same SHA-256, read as any reader reads them ([`Reads::describe`],
/// one call; [`Reads::documented`], one more for an object with a metadata
/// document). An object with no SHA-256 to read (its document not written
/// yet, or unreadable) is judged by its size.
async fn stored_already(reads: &Reads, group: &Group, key: &Key, doc: &MetaDoc) -> Result<bool> {
    let (info, documented) = match reads.describe(group, key).await {
        // Gone again already: not this object either.
        Err(Error::NotFound { .. }) => return Ok(false),
        described => described?,
    };
    if info.size != doc.size {
        return Ok(false);
    }
    let sha256 = match reads.documented(group, info, documented).await {
        Ok(info) => info.sha256,
        Err(Error::CorruptMetadata { .. }) => None,
        Err(e) => return Err(e),
    };
    Ok(sha256.is_none_or(|sha256| sha256 == doc.sha256))
}

impl Commit {
    /// Removes what a failed [`publish`](Self::publish) may have left.
    async fn roll_back(mut self) {
        if let Some(multipart) = self.multipart.take()
            && let Err(e) = multipart
                .abort(&self.writer.client, self.key.as_str())
                .await
        {
            tracing::warn!(key = %self.key, error = %e, "aborting a failed upload failed");
        }
        // The object may exist by now (a complete that failed after
        // landing, a metadata document that could not be written).
        self.writer.delete_all(vec![self.key.clone()]).await;
    }

    async fn publish(&mut self) -> Result<()> {
        let (client, group, key) = (&self.writer.client, &self.group, self.key.as_str());
        let backend = client.backend();
        match &mut self.multipart {
            Some(multipart) => {
                multipart.complete(client, group, key).await?;
                self.multipart = None;
            }
            None => {
                let part = self
                    .rest
                    .take()
                    .expect("a single-call object has its bytes");
                let path = Path::from(key);
                let cost = part.len as u64;
                let doc = &self.doc;
                // Everything a reader needs travels with the object: one
                // call, and no document (see `crate::meta`).
                let inline = client.keeps_attributes() && meta::fits_inline(doc);
                let attributes = match (inline, client.keeps_attributes()) {
                    (true, _) => meta::attributes(doc.content_type.as_deref(), Some(doc)),
                    (false, true) => meta::attributes(doc.content_type.as_deref(), None),
                    (false, false) => Attributes::new(),
                };
                let mode = match self.exclusive {
                    true => PutMode::Create,
                    false => PutMode::Overwrite,
                };
                let began = &self.began;
                let put = client
                    .call(group, key, cost, || {
                        began.send_replace(true);
                        let options = PutOptions {
                            mode: mode.clone(),
                            attributes: attributes.clone(),
                            ..PutOptions::default()
                        };
                        let put = backend.put_opts(&path, part.payload.clone(), options);
                        async {
                            match put.await {
                                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                                put => put.map(|_| true),
                            }
                        }
                    })
                    .await?;
                if !put {
                    let reads = Reads {
                        client: client.clone(),
                        hot: self.writer.hot.clone(),
                    };
                    if !stored_already(&reads, group, &self.key, doc).await? {
                        return Err(Error::Exists {
                            key: key.to_owned(),
                        });
                    }
                }
                if inline {
                    return Ok(());
                }
            }
        }
        let json = serde_json::to_vec(&self.doc).expect("a MetaDoc always serializes");
        let json = PutPayload::from(json);
        let path = meta_path(&self.key);
        let cost = json.content_length() as u64;
        client
            .call(group, key, cost, || backend.put(&path, json.clone()))
            .await?;
        Ok(())
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        let Some(multipart) = self.multipart.take() else {
            return;
        };
        let client = self.writer.client.clone();
        let key = self.key.clone();
        let intent = self.intent.take();
        self.writer.client.spawn_cleanup_of(&self.key, async move {
            let _intent = intent;
            let aborted = multipart.abort(&client, key.as_str()).await;
            if let Err(e) = aborted {
                tracing::error!(%key, error = %error_chain(&e), "aborting an upload failed");
            }
        });
    }
}
