//! `/api/uploads`: resumable uploads, in tus 1.0.0 and the IETF draft
//! "Resumable Uploads for HTTP", on one endpoint.
//!
//! - `OPTIONS /api/uploads`: what the server supports (no token needed);
//! - `POST /api/uploads`: creates an upload, with its first bytes or all
//!   of them (`Location` names it);
//! - `HEAD /api/uploads/{id}`: its offset, length and metadata;
//! - `PATCH /api/uploads/{id}`: appends bytes at its offset;
//! - `DELETE /api/uploads/{id}`: terminates it.
//!
//! A `POST` with `X-HTTP-Method-Override` is the method it names. What a
//! header means and what to answer is [`crate::tus`]'s; this module reads
//! bodies and drives the store ([`corral_store::resumable`]).
//!
//! # An upload becomes a file
//!
//! When its last byte arrives, an upload becomes an ordinary file of its
//! tenant, at `{tenant}/{YYYY-MM-DD}/{uuid}/{name}` as a batch file would
//! be (`name` is the metadata's `filename`, made safe; `file` without
//! one), with its SHA-256, read, listed and deleted like any other. The
//! answer that completes it names the file in `Content-Location`
//! (`/api/files/{key}`). An upload sent whole in its creation request is
//! stored as a batch file is, in one call for a small file.
//!
//! # Bytes that arrive are kept
//!
//! A request's body is read by a task of its own, so a client that goes
//! away ends the body, not the work: what arrived is saved before the task
//! ends (the store keeps the bytes past the last part in the upload's
//! tail), and the client resumes from there. A request whose checksum was
//! given is all or nothing: cut short, its bytes cannot be verified, and
//! are dropped. A newer request on the same upload stops the one in
//! progress, which saves what it has ([`inflight`]).
//!
//! # Many instances
//!
//! A `PATCH` holds the upload's lease in the store while it runs (see
//! [`corral_store::resumable`]): on another instance sharing the store, a
//! request on the upload is answered `423 locked`, with `Retry-After` when
//! the lease's expiry says how long a dead holder keeps it. A `HEAD` asks
//! the store for the upload's state (one conditional read), so it never
//! answers an offset older than one another instance saved.
//!
//! # Admission
//!
//! As for a batch: the scheduler admits the request (`429`/`503` before
//! its body is read), and a request with a body reserves upload memory
//! (the store's buffer for one upload) before reading it, or waits, or
//! gets `429` with `Retry-After`. Every backend call is a job of the
//! tenant, in a group that the client's leaving does not cancel: the work
//! left when it leaves is to save what it sent.

mod inflight;
pub(crate) mod shared;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use corral_sched::Group;
use corral_store::{Key, Resuming, Store, UploadRecord, sanitize_file_name};
use http_body_util::BodyExt as _;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::admission::{Admitted, admit_memory};
use crate::app::AppState;
use crate::body::{BodyError, refuse};
use crate::error::ApiError;
use crate::tenant::Tenant;
use crate::tus::{
    self, Append, Concat, Creation, ExpectedChecksum, Metadata, Protocol, Reply, TusError,
    UPLOADS_PATH, UploadInfo, Verifier,
};

/// Why a request failed: the protocol's refusal, or one of corral's own
/// (admission, storage, the body).
#[derive(Debug)]
enum Failure {
    Tus(TusError),
    Api(ApiError),
    /// The body was cut short, and what arrived was saved: the answer says
    /// where the upload is, so that its client can resume it.
    Saved {
        failure: Box<Failure>,
        id: String,
        offset: u64,
    },
}

impl From<TusError> for Failure {
    fn from(error: TusError) -> Self {
        Self::Tus(error)
    }
}

impl<E: Into<ApiError>> From<E> for Failure {
    fn from(error: E) -> Self {
        Self::Api(error.into())
    }
}

impl Failure {
    /// A store error about the upload `id`, in the protocol's terms where
    /// it has them.
    fn of_store(id: &str, error: corral_store::Error) -> Self {
        use corral_store::Error as E;
        match error {
            E::NotFound { .. } => Self::Tus(TusError::NotFound { id: id.to_owned() }),
            E::Expired { .. } => Self::Tus(TusError::Gone { id: id.to_owned() }),
            E::Leased { until, .. } => {
                let left = until.duration_since(SystemTime::now()).unwrap_or_default();
                Self::Tus(TusError::Locked {
                    id: id.to_owned(),
                    retry_after: Some(left.as_secs() + 1),
                })
            }
            E::LeaseLost { .. } => Self::Tus(TusError::Locked {
                id: id.to_owned(),
                retry_after: None,
            }),
            error => Self::Api(error.into()),
        }
    }

    /// The answer, in the protocol the request spoke.
    fn respond(self, reply: &Reply<'_>) -> Response {
        match self {
            Self::Tus(error) => reply.refused(&error),
            Self::Api(error) => {
                let mut response = error.into_response();
                tus::stamp(reply.protocol, response.headers_mut());
                response
            }
            Self::Saved {
                failure,
                id,
                offset,
            } => {
                let mut response = failure.respond(reply);
                let headers = response.headers_mut();
                let location = format!("{UPLOADS_PATH}/{id}");
                if let Ok(location) = HeaderValue::from_str(&location) {
                    headers.insert(header::LOCATION, location);
                }
                headers.insert("upload-offset", HeaderValue::from(offset));
                response
            }
        }
    }
}

/// CORS for the upload routes: a page of any origin may upload (its
/// token, sent with each request, is what authorizes it) and read the
/// answers' protocol headers. A preflight (`OPTIONS` with
/// `Access-Control-Request-Method`) is answered by [`options`], as tus
/// discovery is, with the CORS headers added here: tower-http's CORS layer
/// would answer every `OPTIONS` itself, and discovery with it.
pub(crate) async fn cors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let from_browser = headers.contains_key(header::ORIGIN);
    let preflight = from_browser && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = next.run(request).await;
    if !from_browser {
        return response;
    }
    let headers = response.headers_mut();
    let list = |names: &[&str]| HeaderValue::from_str(&names.join(", ")).expect("header names");
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        list(tus::CORS_EXPOSE_HEADERS),
    );
    if preflight {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(tus::CORS_ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            list(tus::CORS_ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
    }
    response
}

/// `OPTIONS /api/uploads[/{id}]`: what the server supports.
pub(crate) async fn options(State(state): State<AppState>, headers: HeaderMap) -> Response {
    state.uploads.reply(tus::detect_options(&headers)).options()
}

/// `POST /api/uploads`: creates an upload.
pub(crate) async fn create(
    State(state): State<AppState>,
    admitted: Result<Admitted, ApiError>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let protocol = match tus::detect(&headers) {
        Ok(protocol) => protocol,
        Err(error) => return refuse(body, state.uploads.reply(Protocol::Tus).refused(&error)),
    };
    let reply = state.uploads.reply(protocol);
    let method = tus::effective_method(&method, &headers);
    if method != Method::POST {
        let error = ApiError::MethodNotAllowed {
            method: method.to_string(),
            path: UPLOADS_PATH.to_owned(),
            allowed: "OPTIONS, POST",
            hint: Some("send HEAD, PATCH or DELETE to the upload's own URL, /api/uploads/ID"),
        };
        return refuse(body, Failure::Api(error).respond(&reply));
    }
    let creation = Creation::parse(protocol, &headers, &state.uploads.tus);
    let admitted = admitted.map_err(Failure::Api);
    let (creation, admitted) = match creation
        .map_err(Failure::Tus)
        .and_then(|c| Ok((c, admitted?)))
    {
        Ok(both) => both,
        Err(failure) => return refuse(body, failure.respond(&reply)),
    };
    let work = Work::new(&state, admitted);
    let created = tokio::spawn(async move { work.create(creation, body).await }).await;
    match created.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic())) {
        Ok((id, progress)) => {
            let location = format!("{UPLOADS_PATH}/{id}");
            let (offset, expires) = (progress.offset, progress.expires);
            let response = reply.created(&location, offset, expires, progress.complete());
            progress.name_file(response)
        }
        Err(failure) => failure.respond(&reply),
    }
}

/// `HEAD`, `PATCH`, `DELETE` (or a `POST` overridden to one of them) on
/// `/api/uploads/{id}`.
pub(crate) async fn upload(
    State(state): State<AppState>,
    Path(id): Path<String>,
    admitted: Result<Admitted, ApiError>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let protocol = match tus::detect(&headers) {
        Ok(protocol) => protocol,
        Err(error) => return refuse(body, state.uploads.reply(Protocol::Tus).refused(&error)),
    };
    let reply = state.uploads.reply(protocol);
    let method = tus::effective_method(&method, &headers);
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(error) => return refuse(body, Failure::Api(error).respond(&reply)),
    };
    let work = Work::new(&state, admitted);
    let outcome = match method {
        Method::HEAD => work.head(&id).await.map(|info| reply.status(&info)),
        Method::DELETE => work.terminate(&id).await.map(|()| reply.terminated()),
        Method::PATCH => {
            let append = match Append::parse(protocol, &headers, &state.uploads.tus) {
                Ok(append) => append,
                Err(error) => return refuse(body, reply.refused(&error)),
            };
            let task = tokio::spawn(async move { work.append(id, append, body).await });
            let appended = task.await;
            return match appended
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
            {
                Ok(progress) => {
                    let (offset, expires) = (progress.offset, progress.expires);
                    let response = reply.appended(offset, expires, progress.complete());
                    progress.name_file(response)
                }
                Err(failure) => failure.respond(&reply),
            };
        }
        method => Err(Failure::Api(ApiError::MethodNotAllowed {
            method: method.to_string(),
            path: format!("{UPLOADS_PATH}/{id}"),
            allowed: "DELETE, HEAD, OPTIONS, PATCH",
            hint: None,
        })),
    };
    match outcome {
        Ok(response) => response,
        Err(failure) => refuse(body, failure.respond(&reply)),
    }
}

/// Where a request left its upload.
#[derive(Debug)]
struct Progress {
    /// The bytes stored.
    offset: u64,
    /// When the upload expires; `None` once it is complete.
    expires: Option<SystemTime>,
    /// The tenant-relative key of the file it became, once complete
    /// (none for a part of a concatenation, which is no file).
    file: Option<String>,
}

impl Progress {
    fn complete(&self) -> bool {
        self.expires.is_none()
    }

    /// `response`, naming the file the upload became in
    /// `Content-Location: /api/files/{key}`.
    fn name_file(&self, mut response: Response) -> Response {
        // Path segments: everything but unreserved characters and `/`.
        const SEGMENTS: &AsciiSet = &CONTROLS
            .add(b' ')
            .add(b'"')
            .add(b'#')
            .add(b'%')
            .add(b'<')
            .add(b'>')
            .add(b'?')
            .add(b'`')
            .add(b'{')
            .add(b'}');
        if let Some(file) = &self.file {
            let location = format!("/api/files/{}", utf8_percent_encode(file, SEGMENTS));
            if let Ok(value) = HeaderValue::from_str(&location) {
                (response.headers_mut()).insert(header::CONTENT_LOCATION, value);
            }
        }
        response
    }
}

/// A request's work, owned, so that it can run in a task of its own.
struct Work {
    state: AppState,
    tenant: Tenant,
    /// The tenant's group that the request's end does not cancel (see the
    /// [module docs](self)).
    group: Arc<Group>,
}

/// How the body of a request ended.
#[derive(Debug)]
enum Ending {
    /// Every byte arrived; the trailers, if any.
    Complete(Option<HeaderMap>),
    /// It stopped short: the client went away or went quiet, a newer
    /// request took over, or the server is stopping.
    Cut(Failure),
}

impl Work {
    fn new(state: &AppState, admitted: Admitted) -> Self {
        Self {
            state: state.clone(),
            group: admitted.group.detached(),
            tenant: admitted.tenant,
        }
    }

    fn store(&self) -> &Store {
        &self.state.store
    }

    fn owner(&self) -> &Key {
        self.tenant.root()
    }

    /// The upload's status: as stored when `fresh` (one call), else as
    /// this instance last saw it (see [`Store::known_upload_status`]).
    async fn status(&self, id: &str, fresh: bool) -> Result<UploadInfo, Failure> {
        let (store, group, owner) = (self.store(), &self.group, self.owner());
        let status = match fresh {
            true => store.upload_status(group, owner, id).await,
            false => store.known_upload_status(group, owner, id).await,
        };
        let status = status.map_err(|e| Failure::of_store(id, e))?;
        let metadata = match &status.record.metadata {
            Some(metadata) => Metadata::parse(metadata).unwrap_or_default(),
            None => Metadata::default(),
        };
        Ok(UploadInfo {
            offset: status.offset,
            length: status.record.length,
            complete: false,
            metadata,
            concat: status.record.partial.then_some(Concat::Partial),
            expires: Some(status.expires),
        })
    }

    /// The upload's status, once a request in progress on it has stopped
    /// and saved what it received: a client asks for the offset to resume
    /// from, and the request it resumes after is usually one it gave up on
    /// (tusd's lock does the same).
    async fn head(&self, id: &str) -> Result<UploadInfo, Failure> {
        let _turn = self.enter(id).await?;
        self.status(id, true).await
    }

    async fn terminate(&self, id: &str) -> Result<(), Failure> {
        // In turn: a request still sending is stopped first.
        let _turn = self.enter(id).await?;
        let store = self.store();
        let terminated = store.terminate_upload(&self.group, self.owner(), id).await;
        if matches!(
            terminated,
            Ok(()) | Err(corral_store::Error::NotFound { .. })
        ) {
            (self.state.uploads).set_open(self.owner().as_str(), id, false);
        }
        terminated.map_err(|e| Failure::of_store(id, e))
    }

    async fn enter(&self, id: &str) -> Result<inflight::Turn, Failure> {
        let upload = format!("{}/{id}", self.owner());
        let inflight = &self.state.uploads.inflight;
        inflight
            .enter(&upload)
            .await
            .map_err(|_| Failure::Tus(TusError::Superseded { id: id.to_owned() }))
    }

    /// Reserves the memory of one upload buffer for an upload of `length`.
    async fn reserve(&self, length: Option<u64>) -> Result<impl Sized, Failure> {
        let need = self.store().config().buffer_bound(length) as u64;
        Ok(admit_memory(&self.state, &self.tenant, need).await?)
    }

    /// A creation: the new upload's id, and where the request left it.
    async fn create(self, creation: Creation, body: Body) -> Result<(String, Progress), Failure> {
        let name = creation.metadata.filename().map(sanitize_file_name);
        let name = name.unwrap_or_else(|| "file".to_owned());
        let content_type = (creation.metadata.filetype().map(str::to_owned)).or_else(|| {
            mime_guess::from_path(&name)
                .first()
                .map(|mime| mime.to_string())
        });
        let record = UploadRecord {
            key: self.file_key(&name)?,
            length: creation.length,
            content_type,
            name: creation.metadata.filename().map(str::to_owned),
            metadata: (!creation.metadata.is_empty()).then(|| creation.metadata.encode()),
            partial: creation.concat == Some(Concat::Partial),
        };
        if let Some(Concat::Final(parts)) = &creation.concat {
            return self.concatenate(parts, record).await;
        }
        let uploads = &self.state.uploads;
        uploads.admit(self.owner().as_str())?;
        let store = self.store();
        let upload = store.begin_upload(&self.group, self.owner(), record);
        let id = upload.id().to_owned();
        let progress = if !creation.carries_data && creation.length == Some(0) {
            self.finish(upload).await?
        } else if !creation.carries_data {
            let expires = Some(upload.expires());
            let offset = upload.pause().await?;
            Progress {
                offset,
                expires,
                file: None,
            }
        } else {
            let _memory = self.reserve(creation.length).await?;
            let room = creation.room(&uploads.tus);
            let (checksum, completes) = (creation.checksum, creation.completes);
            (self.receive(upload, body, room, checksum, completes, None)).await?
        };
        if !progress.complete() {
            uploads.set_open(self.owner().as_str(), &id, true);
        }
        Ok((id, progress))
    }

    /// A final upload (tus concatenation): the completed partial uploads
    /// `parts`, in order, stored as the file of `record`.
    async fn concatenate(
        &self,
        parts: &[String],
        mut record: UploadRecord,
    ) -> Result<(String, Progress), Failure> {
        let store = self.store();
        let sizes = match store.partial_sizes(&self.group, self.owner(), parts).await {
            Ok(sizes) => sizes,
            Err(corral_store::Error::NotFound { key: id }) => {
                let status = store
                    .known_upload_status(&self.group, self.owner(), &id)
                    .await;
                return Err(Failure::Tus(match status {
                    Ok(status) if status.record.partial => TusError::PartialIncomplete { id },
                    _ => TusError::NotPartial { id },
                }));
            }
            Err(e) => return Err(e.into()),
        };
        let length = tus::final_length(&sizes, &self.state.uploads.tus)?;
        record.length = Some(length);
        let _memory = self.reserve(record.length).await?;
        let concatenated = store
            .concatenate(&self.group, self.owner(), parts, record)
            .await;
        let stored = concatenated.map_err(|e| match e {
            corral_store::Error::NotFound { key: id } => Failure::Tus(TusError::NotPartial { id }),
            e => e.into(),
        })?;
        let progress = Progress {
            offset: length,
            expires: None,
            file: Some(self.tenant.relative(&stored.key).to_owned()),
        };
        Ok((uuid::Uuid::now_v7().to_string(), progress))
    }

    async fn append(self, id: String, append: Append, body: Body) -> Result<Progress, Failure> {
        let turn = self.enter(&id).await?;
        let mut info = self.status(&id, false).await?;
        if info.offset != append.offset {
            // Another instance may have moved it on since.
            info = self.status(&id, true).await?;
        }
        let plan = append.check(&info, &self.state.uploads.tus)?;
        let length = info.length.or(plan.declare_length);
        let _memory = self.reserve(length).await?;
        let resumed = self
            .store()
            .resume_upload(&self.group, self.owner(), &id, append.offset)
            .await;
        let mut upload = resumed.map_err(|e| match e {
            corral_store::Error::OffsetMismatch { offset } => {
                Failure::Tus(TusError::OffsetMismatch {
                    expected: offset,
                    given: append.offset,
                })
            }
            e => Failure::of_store(&id, e),
        })?;
        if let Some(length) = plan.declare_length {
            upload.set_length(length);
        }
        let progress = self
            .receive(
                upload,
                body,
                plan.room,
                append.checksum,
                append.completes,
                Some(&turn),
            )
            .await?;
        if progress.complete() {
            (self.state.uploads).set_open(self.owner().as_str(), &id, false);
        }
        Ok(progress)
    }

    /// The key of a new upload's file named `name`:
    /// `{tenant}/{YYYY-MM-DD}/{uuid}/{name}`.
    fn file_key(&self, name: &str) -> Result<Key, Failure> {
        let date = chrono::Utc::now().format("%Y-%m-%d");
        let dir = uuid::Uuid::now_v7();
        let key = format!("{date}/{dir}/{name}");
        Ok(self.tenant.key(&key)?)
    }

    /// Completes `upload` into the file it becomes (none for a part of a
    /// concatenation).
    async fn finish(&self, upload: Resuming<'_>) -> Result<Progress, Failure> {
        let partial = upload.record().partial;
        let id = upload.id().to_owned();
        let stored = upload.finish().await;
        let stored = stored.map_err(|e| Failure::of_store(&id, e))?;
        Ok(Progress {
            offset: stored.size,
            expires: None,
            file: (!partial).then(|| self.tenant.relative(&stored.key).to_owned()),
        })
    }

    /// Reads `body` into `upload`, at most `room` bytes, checking it
    /// against `checksum`, then completes the upload if it is whole (or
    /// the request `completes` it), else saves it.
    async fn receive(
        &self,
        mut upload: Resuming<'_>,
        body: Body,
        room: u64,
        checksum: Option<ExpectedChecksum>,
        completes: bool,
        turn: Option<&inflight::Turn>,
    ) -> Result<Progress, Failure> {
        let mut verifier = checksum.as_ref().map(ExpectedChecksum::verifier);
        let ending = self
            .read_into(&mut upload, body, room, verifier.as_mut(), turn)
            .await;
        let trailers = match ending {
            Ok(Ending::Complete(trailers)) => trailers,
            Ok(Ending::Cut(failure)) => {
                // Bytes that cannot be verified are not kept, nor those of
                // a creation whose client is gone: it never learnt where
                // they are.
                let gone = matches!(
                    failure,
                    Failure::Api(ApiError::ClientGone | ApiError::BadRequest(_))
                );
                if checksum.is_some() || (gone && !upload.is_saved()) {
                    upload.discard().await;
                    return Err(failure);
                }
                let id = upload.id().to_owned();
                return match upload.pause().await {
                    Ok(offset) => Err(Failure::Saved {
                        failure: Box::new(failure),
                        id,
                        offset,
                    }),
                    Err(e) => {
                        tracing::warn!(error = %corral_store::error_chain(&e), "saving a cut upload failed");
                        Err(failure)
                    }
                };
            }
            Err(failure) => {
                upload.discard().await;
                return Err(failure);
            }
        };
        if let (Some(checksum), Some(verifier)) = (checksum, verifier) {
            let expected = match checksum {
                ExpectedChecksum::Header(expected) => Ok(expected),
                ExpectedChecksum::Trailer => tus::trailer_checksum(trailers.as_ref()),
            };
            if let Err(error) = expected.and_then(|expected| verifier.verify(&expected)) {
                upload.discard().await;
                return Err(Failure::Tus(error));
            }
        }
        let offset = upload.offset();
        if completes {
            upload.set_length(offset);
        }
        if upload.record().length == Some(offset) {
            return self.finish(upload).await;
        }
        let expires = Some(upload.expires());
        let id = upload.id().to_owned();
        let offset = upload.pause().await;
        let offset = offset.map_err(|e| Failure::of_store(&id, e))?;
        Ok(Progress {
            offset,
            expires,
            file: None,
        })
    }

    /// Reads `body` into `upload` until it ends or is cut (see [`Ending`]).
    ///
    /// # Errors
    ///
    /// The body goes past `room`, or a write fails: the caller discards
    /// this request's bytes.
    async fn read_into(
        &self,
        upload: &mut Resuming<'_>,
        mut body: Body,
        room: u64,
        mut verifier: Option<&mut Verifier>,
        turn: Option<&inflight::Turn>,
    ) -> Result<Ending, Failure> {
        let timeout = self.state.config.body_timeout;
        let scheduler = &self.state.scheduler;
        let mut received: u64 = 0;
        let id = upload.id().to_owned();
        let refused = |e| Failure::of_store(&id, e);
        let stopped = async {
            match turn {
                Some(turn) => turn.stopped().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stopped);
        loop {
            let frame = tokio::select! {
                biased;
                () = &mut stopped => {
                    // What the client sent before it gave up is still
                    // arriving: keep it, until the body ends or pauses.
                    let drain = async {
                        while let Ok(Some(Ok(frame))) = tokio::time::timeout(DRAIN_IDLE, body.frame()).await {
                            let Ok(data) = frame.into_data() else { break };
                            received += data.len() as u64;
                            if received > room {
                                break;
                            }
                            if let Some(verifier) = verifier.as_deref_mut() {
                                verifier.update(&data);
                            }
                            upload.write(data).await.map_err(refused)?;
                        }
                        Ok::<_, Failure>(())
                    };
                    if let Ok(drained) = tokio::time::timeout(DRAIN_TIME, drain).await {
                        drained?;
                    }
                    let id = upload.id().to_owned();
                    return Ok(Ending::Cut(Failure::Tus(TusError::Superseded { id })));
                }
                () = scheduler.cancelled() => {
                    return Ok(Ending::Cut(Failure::Api(ApiError::Cancelled)));
                }
                frame = tokio::time::timeout(timeout, body.frame()) => frame,
            };
            let frame = match frame {
                Err(_) => return Ok(Ending::Cut(Failure::Api(BodyError::Idle(timeout).into()))),
                Ok(None) => return Ok(Ending::Complete(None)),
                Ok(Some(Err(e))) => {
                    return Ok(Ending::Cut(Failure::Api(BodyError::read(e).into())));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let data: Bytes = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    let trailers = frame.into_trailers().ok();
                    return Ok(Ending::Complete(trailers));
                }
            };
            received += data.len() as u64;
            if received > room {
                let length = upload.record().length;
                return Err(Failure::Tus(match length {
                    Some(length) => TusError::ExceedsLength {
                        length,
                        end: upload.offset() + received,
                    },
                    None => TusError::TooLarge {
                        length: upload.offset() + received,
                        max: self.state.uploads.tus.max_size,
                    },
                }));
            }
            if let Some(verifier) = verifier.as_deref_mut() {
                verifier.update(&data);
            }
            upload.write(data).await.map_err(refused)?;
        }
    }
}

/// How long a stopped request goes on reading what its client had sent
/// (see [`Work::read_into`]): until the client has sent nothing for
/// `DRAIN_IDLE`, for at most `DRAIN_TIME`.
const DRAIN_IDLE: Duration = Duration::from_millis(100);
const DRAIN_TIME: Duration = Duration::from_secs(2);
