//! Reading objects: [`Reads`], the read path under [`crate::Store`]'s
//! `head` and `get`.
//!
//! One call per read wherever the backend allows it: a GET's answer
//! carries the object's size, entity tag and attributes with its bytes,
//! and an object written with its SHA-256 in its attributes needs no
//! metadata document (see [`crate::meta`]). Whole reads of one key share
//! their call and a small object's answer is cached for a moment (see
//! [`crate::hot`]). A whole object is checked against its SHA-256 as it
//! streams.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use corral_sched::Group;
use futures::FutureExt;
use futures::stream::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{Attributes, GetOptions, GetRange, ObjectMeta, ObjectStoreExt};

use crate::client::Client;
use crate::error::{Error, Result, refuses_range};
use crate::hot::{Answer, Body, ByteStream, HotReads, Kind};
use crate::key::Key;
use crate::meta::{self, MetaDoc, ObjectInfo, meta_path, object_info};

/// An object being read (see [`crate::Store::get`]).
pub struct Reading {
    /// What is known about the object.
    pub info: ObjectInfo,
    /// The bytes of the object that `body` carries: all of them, or the
    /// requested range as it fits the object.
    pub range: Range<u64>,
    /// Those bytes, as they arrive.
    pub body: ByteStream,
}

/// The read path of one store: its calls, and its reads of hot keys.
/// Cloning is cheap. Whether a key may be read at all (a batch not settled
/// hides its keys) is the store's to check first.
#[derive(Debug, Clone)]
pub(crate) struct Reads {
    pub(crate) client: Client,
    pub(crate) hot: Arc<HotReads>,
}

impl Reads {
    /// What is known about the object `key`: one call, or two for an object
    /// with a metadata document (see [`crate::meta`]).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no such object, [`Error::Backend`] if
    /// the backend fails, [`Error::CorruptMetadata`] if its metadata document
    /// cannot be decoded.
    pub(crate) async fn head(&self, group: &Group, key: &Key) -> Result<ObjectInfo> {
        let hot = &self.hot;
        if !hot.enabled() {
            return self.head_call(group, key).await;
        }
        let answer = hot
            .read(key.as_str(), Kind::Head, || {
                let (reads, group, key) = (self.clone(), group.detached(), key.clone());
                async move {
                    let info = reads.head_call(&group, &key).await?;
                    Ok(Answer {
                        info,
                        body: Body::None,
                    })
                }
                .boxed()
            })
            .await?;
        Ok(answer.info.clone())
    }

    async fn head_call(&self, group: &Group, key: &Key) -> Result<ObjectInfo> {
        let (info, documented) = self.describe(group, key).await?;
        self.documented(group, info, documented).await
    }

    /// The object `key` as its entry and attributes describe it, in one
    /// call, and whether it has a metadata document to read or remove too
    /// (see [`crate::meta`]).
    pub(crate) async fn describe(&self, group: &Group, key: &Key) -> Result<(ObjectInfo, bool)> {
        let backend = self.client.backend();
        let path = Path::from(key.as_str());
        if !self.client.keeps_attributes() {
            let meta = (self
                .client
                .call(group, key.as_str(), 0, || backend.head(&path)))
            .await?;
            return Ok((object_info(key.clone(), meta), true));
        }
        let head = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let got = self
            .client
            .call(group, key.as_str(), 0, || {
                backend.get_opts(&path, head.clone())
            })
            .await?;
        Ok(self.described(key, got.meta, &got.attributes))
    }

    /// An object's entry and attributes, as an [`ObjectInfo`], and whether
    /// its metadata document has the rest.
    fn described(
        &self,
        key: &Key,
        meta: ObjectMeta,
        attributes: &Attributes,
    ) -> (ObjectInfo, bool) {
        let mut info = object_info(key.clone(), meta);
        if !self.client.keeps_attributes() {
            return (info, true);
        }
        let (content_type, sha256) = meta::from_attributes(attributes);
        info.content_type = content_type;
        let documented = sha256.is_none();
        info.sha256 = sha256;
        (info, documented)
    }

    /// `info` completed from its object's metadata document, if it has one
    /// (one call).
    pub(crate) async fn documented(
        &self,
        group: &Group,
        mut info: ObjectInfo,
        documented: bool,
    ) -> Result<ObjectInfo> {
        if !documented {
            return Ok(info);
        }
        let backend = self.client.backend();
        let key = &info.key;
        let meta_path = meta_path(key);
        // A missing document is an answer, not a failure: it must not
        // cancel the request's other calls.
        let document = self
            .client
            .call(group, key.as_str(), 0, || async {
                match backend.get(&meta_path).await {
                    Ok(found) => found.bytes().await.map(Some),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        // No document: written by an older version, or its writer crashed
        // between the object and the document. The object is still served.
        let doc = document
            .map(|bytes| {
                serde_json::from_slice::<MetaDoc>(&bytes).map_err(|source| Error::CorruptMetadata {
                    key: key.to_string(),
                    source: source.into(),
                })
            })
            .transpose()?;
        if let Some(doc) = doc {
            info.content_type = doc.content_type.or(info.content_type);
            info.sha256 = Some(doc.sha256);
        }
        Ok(info)
    }

    /// Reads the object `key`, or the bytes `range` of it, in one call: the
    /// backend's answer to the GET carries the object's size, entity tag
    /// and attributes along with the bytes. An object with a metadata
    /// document costs one more call (see [`crate::meta`]).
    ///
    /// The call ends with the answer's head: a slow reader holds no backend
    /// slot while the body streams. A whole object is checked against its
    /// recorded SHA-256 as it streams; a mismatch ends the stream with an
    /// error instead of its last chunk, so the reader never sees a clean
    /// end of corrupt data.
    ///
    /// Whole reads of one key share their call while it is in flight, and
    /// a small object's answer is cached for a moment (see [`crate::hot`]).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is no such object,
    /// [`Error::RangeNotSatisfiable`] if `range` selects no byte of it
    /// (learning its size then costs one more call), [`Error::Backend`] if
    /// the backend fails. Errors while streaming come as stream items.
    pub(crate) async fn get(
        &self,
        group: &Group,
        key: &Key,
        range: Option<GetRange>,
    ) -> Result<Reading> {
        let hot = &self.hot;
        if range.is_some() || !hot.enabled() {
            return self.fetch(group, key, range).await;
        }
        let answer = hot
            .read(key.as_str(), Kind::Get, || {
                let (reads, group, key) = (self.clone(), group.detached(), key.clone());
                async move { reads.fetch_to_share(&group, &key).await }.boxed()
            })
            .await?;
        let taken = match &answer.body {
            Body::Shared { bytes, .. } => {
                Some(futures::stream::once(futures::future::ready(Ok(bytes.clone()))).boxed())
            }
            Body::Stream(stream) => stream.lock().expect("never poisoned").take(),
            Body::None => None,
        };
        match taken {
            Some(body) => Ok(Reading {
                info: answer.info.clone(),
                range: 0..answer.info.size,
                body,
            }),
            // A large object's stream went to another reader.
            None => self.fetch(group, key, None).await,
        }
    }

    /// The answer of a shared whole read: the bytes of a small object,
    /// read whole and verified, else the stream of a large one.
    async fn fetch_to_share(&self, group: &Group, key: &Key) -> Result<Answer> {
        let reading = self.fetch(group, key, None).await?;
        let Some(reservation) = self.hot.reserve(reading.info.size) else {
            return Ok(Answer {
                info: reading.info,
                body: Body::Stream(std::sync::Mutex::new(Some(reading.body))),
            });
        };
        let chunks: Vec<Bytes> = reading.body.try_collect().await?;
        Ok(Answer {
            info: reading.info,
            body: Body::Shared {
                bytes: chunks.concat().into(),
                _reserved: reservation,
            },
        })
    }

    async fn fetch(&self, group: &Group, key: &Key, range: Option<GetRange>) -> Result<Reading> {
        if let Some(range) = range.as_ref().filter(|range| selects_nothing(range)) {
            return Err(self.unsatisfiable(group, key, range, None).await);
        }
        let backend = self.client.backend();
        let path = Path::from(key.as_str());
        let options = GetOptions {
            range: range.clone(),
            ..GetOptions::default()
        };
        // A backend refuses a range past the end with an error that does
        // not say so in any type; it is an answer to look into, not a
        // failure that cancels the request's other calls.
        let answer = self
            .client
            .call(group, key.as_str(), 0, || async {
                match backend.get_opts(&path, options.clone()).await {
                    Err(e) if range.is_some() && refuses_range(&e) => Ok(Err(e)),
                    other => other.map(Ok),
                }
            })
            .await?;
        let found = match (answer, &range) {
            (Ok(found), _) => found,
            // Azure takes no suffix ranges: learn the size, then ask for
            // the bytes (two calls).
            (Err(object_store::Error::NotSupported { .. }), Some(GetRange::Suffix(n))) => {
                let (info, _) = self.describe(group, key).await?;
                let bytes = info.size.saturating_sub(*n)..info.size;
                if bytes.is_empty() {
                    return Err(Error::RangeNotSatisfiable {
                        key: key.to_string(),
                        size: info.size,
                    });
                }
                return Box::pin(self.fetch(group, key, Some(GetRange::Bounded(bytes)))).await;
            }
            (Err(refusal), Some(range)) => {
                return Err(self.unsatisfiable(group, key, range, Some(refusal)).await);
            }
            (Err(refusal), None) => return Err(Error::backend(key.as_str(), refusal, 1)),
        };
        let (info, documented) = self.described(key, found.meta.clone(), &found.attributes);
        let served = found.range.clone();
        if range.is_some() && served.is_empty() {
            return Err(Error::RangeNotSatisfiable {
                key: key.to_string(),
                size: info.size,
            });
        }
        let info = self.documented(group, info, documented).await?;
        let owned = key.to_string();
        let stream = found
            .into_stream()
            .map_err(move |e| Error::backend(&owned, e, 1));
        let body = match (&range, &info.sha256) {
            (None, Some(expected)) => verified(stream, key.to_string(), expected.clone()),
            _ => stream.boxed(),
        };
        Ok(Reading {
            info,
            range: served,
            body,
        })
    }

    /// The error for `range`, which selects no byte of `key`, once a head
    /// has told its size; or `refusal`, the backend's own answer to the
    /// range, if the range fits the object after all.
    async fn unsatisfiable(
        &self,
        group: &Group,
        key: &Key,
        range: &GetRange,
        refusal: Option<object_store::Error>,
    ) -> Error {
        let size = match self.describe(group, key).await {
            Ok((info, _)) => info.size,
            Err(e) => return e,
        };
        let fits = range.as_range(size).is_ok_and(|bytes| !bytes.is_empty());
        match refusal {
            Some(refusal) if fits => Error::backend(key.as_str(), refusal, 1),
            _ => Error::RangeNotSatisfiable {
                key: key.to_string(),
                size,
            },
        }
    }
}

/// `stream`, checked against `expected` (lower-case hex SHA-256): the last
/// chunk is held back until the digest of everything is known, then
/// released, or replaced by [`Error::ChecksumMismatch`].
fn verified(
    stream: impl futures::Stream<Item = Result<Bytes>> + Send + 'static,
    key: String,
    expected: String,
) -> ByteStream {
    use sha2::{Digest, Sha256};
    let state = (Box::pin(stream), Sha256::new(), None::<Bytes>, false);
    futures::stream::unfold(state, move |(mut stream, mut hasher, mut held, done)| {
        let (key, expected) = (key.clone(), expected.clone());
        async move {
            if done {
                return None;
            }
            loop {
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        hasher.update(&chunk);
                        if let Some(previous) = held.replace(chunk) {
                            return Some((Ok(previous), (stream, hasher, held, false)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (stream, hasher, None, true))),
                    None => {
                        let actual = hex::encode(hasher.finalize_reset());
                        let last = if actual == expected {
                            Ok(held.take().unwrap_or_default())
                        } else {
                            tracing::error!(%key, %expected, %actual, "stored object is corrupt");
                            Err(Error::ChecksumMismatch { key })
                        };
                        return Some((last, (stream, hasher, None, true)));
                    }
                }
            }
        }
    })
    .boxed()
}

/// Whether `range` selects no byte of any object: empty, or the last zero
/// bytes.
fn selects_nothing(range: &GetRange) -> bool {
    range.is_valid().is_err() || *range == GetRange::Suffix(0)
}
