//! [`Upload`]: writing one object from a stream of chunks.
//!
//! # Memory
//!
//! An upload holds at most `max(multipart_threshold, part_size)` bytes plus
//! one incoming chunk: it buffers until the threshold, then cuts the buffer
//! into parts of `part_size` and waits for each part to be stored before it
//! accepts more bytes. A slow backend therefore slows the sender (TCP
//! backpressure) instead of growing the buffer. Every buffered byte is
//! counted in the store's [`BufferGauge`], so the bound can be checked.
//!
//! # Failure
//!
//! An upload that is dropped before [`Upload::finish`] succeeds (an error, a
//! client gone, a cancelled request) aborts its multipart upload in the
//! background, so no partial object is left behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::key::Key;
use crate::meta::{MetaDoc, meta_path};
use corral_sched::Group;

use crate::store::{Store, StoreConfig, error_chain};

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

/// Chunks waiting to be written, counted in the gauge until dropped.
#[derive(Debug)]
struct Buffer {
    chunks: Vec<Bytes>,
    len: usize,
    gauge: BufferGauge,
}

impl Buffer {
    fn push(&mut self, chunk: Bytes) {
        self.gauge.add(chunk.len());
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    /// Takes the first `n` bytes (or all, if fewer) without copying. The
    /// bytes stay counted in the gauge until the returned [`Part`] is dropped.
    fn take(&mut self, n: usize) -> Part {
        let mut taken = Vec::new();
        let mut remaining = n;
        let mut rest = std::mem::take(&mut self.chunks).into_iter();
        for mut chunk in rest.by_ref() {
            if chunk.len() > remaining {
                taken.push(chunk.split_to(remaining));
                self.chunks.push(chunk);
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

/// One object being written; made by [`Store::upload`].
///
/// Feed it with [`write`](Self::write), then call [`finish`](Self::finish).
/// Dropping it before `finish` succeeds aborts the write (see the
/// [module docs](self)).
#[derive(Debug)]
pub struct Upload<'g> {
    store: Store,
    /// The request's group: every call of the upload is one of its jobs.
    group: &'g Group,
    key: Key,
    content_type: Option<String>,
    name: Option<String>,
    hasher: Sha256,
    size: u64,
    buffer: Buffer,
    /// The backend's multipart upload, once the object outgrew the
    /// threshold. Owned here: if the upload is dropped while this is set,
    /// `Drop` aborts it.
    multipart: Option<Box<dyn MultipartUpload>>,
}

impl<'g> Upload<'g> {
    pub(crate) fn new(
        store: Store,
        group: &'g Group,
        key: Key,
        content_type: Option<String>,
        name: Option<String>,
    ) -> Self {
        let gauge = store.buffers().clone();
        Self {
            store,
            group,
            key,
            content_type,
            name,
            hasher: Sha256::new(),
            size: 0,
            buffer: Buffer {
                chunks: Vec::new(),
                len: 0,
                gauge,
            },
            multipart: None,
        }
    }

    /// The key being written.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
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
        self.buffer.push(chunk);
        let StoreConfig {
            multipart_threshold,
            part_size,
            ..
        } = *self.store.config();
        if self.multipart.is_none() {
            if self.buffer.len <= multipart_threshold {
                return Ok(());
            }
            let path = Path::from(self.key.as_str());
            let backend = self.store.backend();
            let started = self
                .store
                .call(self.group, self.key.as_str(), 0, || {
                    backend.put_multipart(&path)
                })
                .await?;
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
        // them until then. Once only: `MultipartUpload` numbers parts by
        // call, so a repeated call would add a part rather than replace one.
        let cost = part.len as u64;
        let put = multipart.put_part(part.payload.clone());
        self.store
            .call_once(self.group, self.key.as_str(), cost, put)
            .await
    }

    /// Stores what remains and completes the object; only then does it
    /// exist for readers.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Backend`] if the backend fails; nothing is left
    /// behind.
    pub async fn finish(mut self) -> Result<StoredObject> {
        let sha256 = hex::encode(self.hasher.finalize_reset());
        let rest = self.buffer.take(self.buffer.len);
        // From the call that makes the object exist until the caller hears
        // of it, a failure or a cancellation must not leave it behind.
        let unreported = Unreported {
            store: self.store.clone(),
            key: Some(self.key.clone()),
        };
        if self.multipart.is_some() {
            if rest.len > 0 {
                self.put_part(rest).await?;
            }
            let multipart = self.multipart.as_mut().expect("checked just above");
            self.store
                .call_once(self.group, self.key.as_str(), 0, multipart.complete())
                .await?;
            self.multipart = None;
        } else {
            let path = Path::from(self.key.as_str());
            let backend = self.store.backend();
            let cost = rest.len as u64;
            self.store
                .call(self.group, self.key.as_str(), cost, || {
                    backend.put(&path, rest.payload.clone())
                })
                .await?;
        }
        let doc = MetaDoc {
            size: self.size,
            sha256: sha256.clone(),
            content_type: self.content_type.take(),
            name: self.name.take(),
        };
        let json = PutPayload::from(serde_json::to_vec(&doc).expect("a MetaDoc always serializes"));
        let backend = self.store.backend();
        let path = meta_path(&self.key);
        let cost = json.content_length() as u64;
        self.store
            .call(self.group, self.key.as_str(), cost, || {
                backend.put(&path, json.clone())
            })
            .await?;
        unreported.disarm();
        Ok(StoredObject {
            key: self.key.clone(),
            size: self.size,
            sha256,
        })
    }
}

/// An object that is written but not yet reported to the caller; dropped
/// while armed, it is deleted in the background.
struct Unreported {
    store: Store,
    key: Option<Key>,
}

impl Unreported {
    fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for Unreported {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.store.delete_in_background(vec![key]);
        }
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        let Some(mut multipart) = self.multipart.take() else {
            return;
        };
        let store = self.store.clone();
        let key = self.key.clone();
        self.store.spawn_cleanup(async move {
            let abort = multipart.abort();
            if let Err(e) = store
                .call_once(store.system(), key.as_str(), 0, abort)
                .await
            {
                tracing::error!(%key, error = %error_chain(&e), "aborting an upload failed");
            }
        });
    }
}
