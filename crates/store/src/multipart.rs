//! A multipart upload in progress, by whichever interface the backend
//! offers.
//!
//! `object_store`'s [`MultipartUpload`] works everywhere but numbers parts
//! by call: a repeated `put_part` adds a part rather than replacing one, so
//! a part cannot be retried by the scheduler. Backends that implement
//! [`MultipartStore`](object_store::multipart::MultipartStore) (S3, GCS, Azure) take explicit part numbers instead, so there each
//! part is an ordinary retriable call under the scheduler's budget.
//!
//! A multipart object's attributes are set when its upload starts, before
//! its SHA-256 is known: it gets its content type there (on S3 and GCS;
//! `object_store`'s Azure client takes no attributes for an upload by
//! parts, so there it is in the document only), and its SHA-256 only in
//! corral's metadata document (plus, on S3, the store's own checksum of
//! each part). Copying the finished object onto itself to add
//! the SHA-256 would cost a second write of every byte.

use corral_sched::Group;
use futures::TryFutureExt;
use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::{
    Attributes, MultipartId, MultipartUpload, ObjectStore, PutMultipartOptions, PutPayload,
};

use serde::{Deserialize, Serialize};

use crate::backend::Parts;
use crate::client::Client;
use crate::error::{BackendError, Result};

/// A multipart upload in progress.
#[derive(Debug)]
pub(crate) enum Multipart {
    /// Through `MultipartUpload`: each part is put once.
    Upload(Box<dyn MultipartUpload>),
    /// Through `MultipartStore`: parts by number, each retriable.
    Parts(Numbered),
}

/// An upload through `MultipartStore`.
#[derive(Debug)]
pub(crate) struct Numbered {
    parts: Parts,
    path: Path,
    id: MultipartId,
    /// The parts stored so far, in order.
    done: Vec<PartId>,
}

/// A multipart upload stopped between requests: what finds it again (see
/// [`Multipart::pause`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PausedParts {
    /// The backend's id of the upload.
    id: String,
    /// The parts stored so far, in order.
    parts: Vec<String>,
}

impl Multipart {
    /// Starts a multipart upload of `key`, with `attributes` where the
    /// backend takes them. One that is `resumable` can be paused (see
    /// [`pause`](Self::pause)).
    pub(crate) async fn start(
        client: &Client,
        group: &Group,
        key: &str,
        attributes: Attributes,
        resumable: bool,
    ) -> Result<Self> {
        let options = |attributes: &Attributes| PutMultipartOptions {
            attributes: attributes.clone(),
            ..PutMultipartOptions::default()
        };
        let parts = match resumable {
            true => client.resumable_parts(),
            false => client.parts(),
        };
        match parts {
            Some(parts) => {
                let path = parts.path(key);
                let backend = &parts.store;
                let attributes = match parts.attributes_on_create {
                    true => attributes,
                    false => Attributes::new(),
                };
                let created = client
                    .call(group, key, 0, || {
                        backend.create_multipart_opts(&path, options(&attributes))
                    })
                    .await;
                let id = match created {
                    Ok(id) => id,
                    Err(error) => {
                        abort_strays(client, key).await;
                        return Err(error);
                    }
                };
                Ok(Self::Parts(Numbered {
                    parts: parts.clone(),
                    path,
                    id,
                    done: Vec::new(),
                }))
            }
            None => {
                let path = Path::from(key);
                let backend = client.backend();
                let upload = client
                    .call(group, key, 0, || {
                        backend.put_multipart_opts(&path, options(&attributes))
                    })
                    .await?;
                Ok(Self::Upload(upload))
            }
        }
    }

    /// What finds this upload again after the process is gone; `None` for
    /// an upload whose parts are not numbered (not started `resumable`).
    pub(crate) fn pause(self) -> Option<PausedParts> {
        match self {
            Self::Upload(_) => None,
            Self::Parts(upload) => Some(PausedParts {
                id: upload.id,
                parts: upload
                    .done
                    .into_iter()
                    .map(|part| part.content_id)
                    .collect(),
            }),
        }
    }

    /// The upload `paused` of `key` again, to add parts to or complete.
    pub(crate) fn resume(client: &Client, key: &str, paused: PausedParts) -> Self {
        let parts = client
            .resumable_parts()
            .expect("a paused upload was started with numbered parts");
        Self::Parts(Numbered {
            path: parts.path(key),
            parts: parts.clone(),
            id: paused.id,
            done: paused
                .parts
                .into_iter()
                .map(|content_id| PartId { content_id })
                .collect(),
        })
    }

    /// Stores the next part.
    pub(crate) async fn put_part(
        &mut self,
        client: &Client,
        group: &Group,
        key: &str,
        payload: &PutPayload,
    ) -> Result<()> {
        let cost = payload.content_length() as u64;
        match self {
            Self::Upload(upload) => {
                let put = upload.put_part(payload.clone());
                client.call_once(group, key, cost, put).await
            }
            Self::Parts(upload) => {
                let index = upload.done.len();
                let (backend, path, id) = (&upload.parts.store, &upload.path, &upload.id);
                let part = client
                    .call(group, key, cost, || {
                        backend.put_part(path, id, index, payload.clone())
                    })
                    .await?;
                upload.done.push(part);
                Ok(())
            }
        }
    }

    /// Completes the upload: the object exists from here on.
    pub(crate) async fn complete(
        &mut self,
        client: &Client,
        group: &Group,
        key: &str,
    ) -> Result<()> {
        match self {
            Self::Upload(upload) => {
                client.call_once(group, key, 0, upload.complete()).await?;
            }
            Self::Parts(upload) => {
                let complete = || {
                    let backend = &upload.parts.store;
                    let parts =
                        backend.complete_multipart(&upload.path, &upload.id, upload.done.clone());
                    parts.map_err(BackendError)
                };
                group
                    .run_unless_acted_on(0, complete)
                    .await
                    .map_err(|e| crate::Error::job(key, e))?;
                abort_strays(client, key).await;
            }
        };
        Ok(())
    }

    /// Aborts the upload, as the store's own work: retried until done.
    pub(crate) async fn abort(self, client: &Client, key: &str) -> Result<()> {
        let system = client.system();
        match self {
            // The local store's upload: removing a staging file, which
            // fails only for good.
            Self::Upload(mut upload) => client.call_once(system, key, 0, upload.abort()).await,
            Self::Parts(upload) => {
                let backend = &upload.parts.store;
                let aborted = system
                    .run_until_done(0, || {
                        backend
                            .abort_multipart(&upload.path, &upload.id)
                            .map_err(BackendError)
                    })
                    .await
                    .map_err(|e| crate::Error::job(key, e));
                abort_strays(client, key).await;
                aborted
            }
        }
    }
}

/// Aborts the multipart uploads left open for `key` besides this one, once
/// this one is completed or aborted (or failed to start). A
/// `CreateMultipartUpload` whose answer was lost (a connection cut after
/// the store acted, a timeout) creates an upload whose id corral never
/// learns, and its retry (the scheduler's, or `object_store`'s own, which
/// corral cannot see) creates another. Keys are unique to one upload, so
/// every upload still open for `key` then is such a stray. One listing per
/// multipart upload, which has at least two parts: measured in the R2 test,
/// a front that cut 5% of connections left one stray in four runs.
async fn abort_strays(client: &Client, key: &str) {
    let Ok(key) = crate::Key::parse(key) else {
        return;
    };
    match client.abort_unfinished(&key).await {
        Ok(0) => {}
        Ok(aborted) => {
            tracing::info!(%key, aborted, "aborted stray multipart uploads of a start retried")
        }
        Err(e) => {
            tracing::warn!(%key, error = %crate::error::error_chain(&e), "listing stray multipart uploads failed; the orphan sweep will take them")
        }
    }
}
