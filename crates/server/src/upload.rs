//! `POST /api/files`: a batch of files in one `multipart/form-data` body.
//!
//! # Keys
//!
//! Each file is stored under
//! `{tenant}/{prefix/}{YYYY-MM-DD}/{batch-id}/{name}` and reported to the
//! client without the `{tenant}/` part:
//!
//! - `prefix` is the optional `prefix` query parameter or form field (a
//!   valid key; the field must come before the first file). It is the only
//!   parameter and the only text field taken: any other is refused
//!   (`unknown_parameter`, `unknown_field`) rather than ignored, so that a
//!   misspelt `prefix` does not store the files at the tenant's root;
//! - the date is the server's UTC date when the batch started;
//! - `batch-id` is a fresh UUIDv7: time-ordered, with 74 random bits, so no
//!   two batches share a directory;
//! - `name` is the file name made safe by [`sanitize_file_name`]; a name
//!   already used in the batch gets ` (2)`, ` (3)`, … before its extension.
//!
//! Keys therefore never collide, within a batch or across batches.
//!
//! # Memory
//!
//! The parts of a body arrive one after another, and each file is streamed
//! to storage as it arrives ([`corral_store::Upload`]). A request holds at
//! most one upload buffer, `max(multipart_threshold, part_size)` bytes, plus
//! the chunk being parsed; never a whole file and never the whole batch.
//!
//! A file's last call (the one that makes it exist) overlaps with receiving
//! the next files, up to [`MAX_COMMITTING`] calls at once: the batch is
//! stored in about the time its body takes to arrive, not that plus one
//! backend call per file. Those calls queue as one flow of the scheduler's
//! fair queue ([`corral_sched::Group::detached`]), so a request gains no
//! share by them. The next file is read on only while those calls are at
//! the backend, not waiting in the scheduler's queue: when the backend is
//! the bottleneck, a request holds one file's bytes, as if it waited for
//! each call, instead of piling up files the backend cannot take yet. The
//! bytes the calls still hold count within the same bound: when the next
//! file's buffer would take the sum past it, the next file waits for the
//! oldest call.
//!
//! # Asynchronous batches
//!
//! With `Prefer: respond-async` (and a spool configured), the files go to
//! the spool instead of the store, each as it arrives, with the same keys,
//! names and checks; the answer is `202` once the whole batch is durable
//! there ([`corral_store::Spool`]), and the spool's workers store it. A
//! batch that fails before that leaves nothing in the spool.
//!
//! # All or nothing
//!
//! The answer, `201`, is sent only once every file is stored. If any file
//! fails (too large, a storage error, a malformed body, the client gone) the
//! files already stored from the batch are deleted and the upload in
//! progress is aborted, and the error names the failed file. If the request
//! itself is dropped mid-way, the same cleanup runs in the background. The
//! batch's directory is journaled before its first byte is written and
//! forgotten just before its `201` ([`corral_store::batch`]): until then
//! nothing of it is listed or served, and a process that dies in between
//! rolls it back when it starts again.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use corral_store::{Committing, Intent, Key, sanitize_file_name};
use futures::FutureExt;
use multer::{Constraints, Field, Multipart, SizeLimit};
use serde::{Deserialize, Serialize};

use crate::admission::{Admitted, Room, admit_batch};
use crate::app::AppState;
use crate::body::{BodyError, BodyReader, refuse};
use crate::error::{ApiError, FileError};
use crate::query;
use crate::tenant::Tenant;
use corral_sched::{Group, Health, Scheduler};
use corral_store::JobWriter;

/// The most files of one request whose last call is under way while the
/// next file is received (see the [module docs](self)).
const MAX_COMMITTING: usize = 4;

/// Largest text field (such as `prefix`) read from the form.
const MAX_TEXT_FIELD: usize = 4096;

/// The query parameters and text fields an upload takes.
const FIELDS: &[&str] = &["prefix"];

/// The query string of an upload.
#[derive(Debug, Deserialize)]
pub(crate) struct UploadQuery {
    prefix: Option<String>,
}

/// The answer to a stored batch.
#[derive(Debug, Serialize)]
pub(crate) struct BatchResponse {
    files: Vec<StoredFile>,
}

/// One stored file.
#[derive(Debug, Serialize)]
pub(crate) struct StoredFile {
    /// The key to read it back with.
    key: String,
    /// The file name as the client sent it.
    name: String,
    size: u64,
    sha256: String,
}

pub(crate) async fn upload(
    State(state): State<AppState>,
    admitted: Result<Admitted, ApiError>,
    uri: Uri,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Everything that can be refused without reading the body is refused
    // first.
    let length = content_length(&headers);
    let size_bound = file_size_bound(&state, length);
    let early = async {
        let admitted = admitted?;
        let boundary = check_headers(&state, &admitted.tenant, length, &headers)?;
        query::check(&uri, "POST /api/files", FIELDS)?;
        let prefix = match query {
            Ok(Query(query)) => query.prefix.as_deref().map(parse_prefix).transpose()?,
            Err(rejection) => return Err(ApiError::BadRequest(rejection.body_text())),
        };
        // Spooled files go to disk as they arrive; others are buffered,
        // within memory reserved before the body is read, so that the sum
        // of upload buffers stays within --upload-memory whatever the
        // number of clients. Last, as it may wait.
        let buffer = state.store.config().buffer_bound(Some(size_bound)) as u64 + CHUNK_ALLOWANCE;
        let room = admit_batch(&state, &admitted.tenant, &headers, length, buffer).await?;
        Ok((admitted, boundary, room, prefix.flatten()))
    };
    // A request still running when the shutdown's grace period ends is
    // cancelled here, whatever it is waiting for (upload memory, a client
    // trickling its body, a backend call), and told so.
    let cancelled = state.scheduler.cancelled();
    let mut cancelled = std::pin::pin!(cancelled);
    let early = async {
        tokio::select! {
            early = early => early,
            () = &mut cancelled => Err(ApiError::Cancelled),
        }
    };
    let (Admitted { tenant, group }, boundary, room, prefix) = match early.await {
        Ok(accepted) => accepted,
        Err(error) => return refuse(body, error.into_response()),
    };
    // The memory stays reserved until the request ends.
    let (spooled, _memory) = match room {
        Room::Spool(writer) => (Some(writer), None),
        Room::Memory(held, reservation) => (None, Some((held, reservation))),
    };
    let reader = BodyReader::new(body, state.config.body_timeout);
    let mut rollback = Rollback {
        scheduler: state.scheduler.clone(),
        intent: None,
    };
    let batch = Batch {
        state: &state,
        tenant: &tenant,
        group: &group,
        size_bound,
        prefix_in_query: prefix.is_some(),
        prefix,
        names: HashSet::new(),
        files: Vec::new(),
        committing: VecDeque::new(),
        buffer_bound: state.store.config().buffer_bound(Some(size_bound)),
        dir: None,
        spooled,
    };
    let received = tokio::select! {
        received = batch.receive(reader.clone(), boundary, &mut rollback) => received,
        () = &mut cancelled => Err(ApiError::Cancelled.into()),
    };
    match received {
        Ok((files, None)) => {
            // Durably no longer to be rolled back, before it is told.
            let intent = rollback
                .intent
                .take()
                .expect("a stored batch has its intent");
            match intent.acknowledge().await {
                Ok(()) => (StatusCode::CREATED, Json(BatchResponse { files })).into_response(),
                Err(error) => ApiError::from(error).into_response(),
            }
        }
        Ok((files, Some(spooled))) => match spooled.commit().await {
            Ok(job) => accepted(&job.id, files),
            Err(error) => ApiError::from(error).into_response(),
        },
        Err(failure) => {
            rollback.run().await;
            // A cancelled request is answered at once, for the process to
            // stop in time; the connection's lingering close still lets
            // its client read the answer (see `crate::serve`).
            if !matches!(
                failure.error,
                ApiError::ClientGone | ApiError::SlowClient { .. } | ApiError::Cancelled
            ) {
                reader.linger().await;
            }
            failure.into_response()
        }
    }
}

/// `202` for a spooled batch: where to follow it, and its files' keys.
fn accepted(id: &str, files: Vec<StoredFile>) -> Response {
    let location = format!("/api/jobs/{id}");
    let body = AcceptedResponse {
        job: id.to_owned(),
        state: "queued",
        location: location.clone(),
        files,
    };
    (
        StatusCode::ACCEPTED,
        [
            (header::LOCATION, location),
            (
                HeaderName::from_static("preference-applied"),
                "respond-async".to_owned(),
            ),
        ],
        Json(body),
    )
        .into_response()
}

/// The answer to a spooled batch.
#[derive(Debug, Serialize)]
struct AcceptedResponse {
    job: String,
    state: &'static str,
    location: String,
    /// The keys the files will have, with their sizes and SHA-256s.
    files: Vec<StoredFile>,
}

/// The most a chunk of the body adds to an upload's buffer (hyper reads at
/// most about 400 KiB at once; the parser may hold one more).
const CHUNK_ALLOWANCE: u64 = 1 << 20;

/// The most bytes any file of this request can have: the body's `length`
/// if known, and never more than `--max-file-size`. Sizes parts and
/// buffers.
fn file_size_bound(state: &AppState, length: Option<u64>) -> u64 {
    let limit = state.config.max_file_size;
    length.map_or(limit, |length| length.min(limit))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Checks the size (`length`) and type of the body; returns the multipart
/// boundary.
fn check_headers(
    state: &AppState,
    tenant: &Tenant,
    length: Option<u64>,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    let limit = tenant.policy().max_batch_size(state.config.max_batch_size);
    if length.is_some_and(|length| length > limit) {
        return Err(ApiError::BatchTooLarge { limit });
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let is_form = content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("multipart/form-data"));
    if !is_form {
        return Err(ApiError::UnsupportedMediaType(format!(
            "expected a multipart/form-data body, got {:?}",
            content_type
        )));
    }
    multer::parse_boundary(content_type).map_err(|_| {
        ApiError::BadRequest("the multipart/form-data content type has no boundary".into())
    })
}

fn parse_prefix(prefix: &str) -> Result<Option<Key>, ApiError> {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        return Ok(None);
    }
    Key::parse(prefix).map(Some).map_err(ApiError::InvalidKey)
}

/// One batch being received.
struct Batch<'a> {
    state: &'a AppState,
    tenant: &'a Tenant,
    /// The request's group: every backend call of the batch is its job.
    group: &'a Group,
    /// The most bytes any file of the batch can have.
    size_bound: u64,
    /// The sub-prefix the files go under.
    prefix: Option<Key>,
    /// Whether the query string gave the prefix (then the form may not).
    prefix_in_query: bool,
    /// Names used so far in this batch.
    names: HashSet<String>,
    files: Vec<StoredFile>,
    /// The files received whose commit is under way, oldest first, named
    /// as the client sent them.
    committing: VecDeque<(String, Committing)>,
    /// The most bytes the batch's files hold in memory at once.
    buffer_bound: usize,
    /// Where this batch's files go; fixed by the first file.
    dir: Option<Key>,
    /// The spool the batch is written to, when it is asynchronous.
    spooled: Option<JobWriter>,
}

impl Batch<'_> {
    async fn receive(
        mut self,
        reader: BodyReader,
        boundary: String,
        rollback: &mut Rollback,
    ) -> Result<(Vec<StoredFile>, Option<JobWriter>), FileError> {
        let limit = SizeLimit::new().whole_stream(self.batch_limit());
        let constraints = Constraints::new().size_limit(limit);
        let mut multipart = Multipart::with_constraints(reader, boundary, constraints);
        while let Some(mut field) = multipart
            .next_field()
            .await
            .map_err(|e| self.parse_error(e))?
        {
            let Some(name) = field.file_name().map(str::to_owned) else {
                let text = read_text(&mut field)
                    .await
                    .map_err(|e| self.parse_error(e))?;
                // Refused, not ignored: a misspelt `prefix` would put the
                // files at the tenant's root. Before any file, nothing is
                // stored yet; after, the batch is rolled back.
                match field.name() {
                    Some("prefix") => {}
                    Some(name) => {
                        let (name, accepted) = (name.to_owned(), FIELDS);
                        return Err(ApiError::UnknownField { name, accepted }.into());
                    }
                    None => {
                        return Err(bad("a form part has neither a name nor a filename \
                             (Content-Disposition: form-data; name=...)")
                        .into());
                    }
                }
                if self.dir.is_some() {
                    return Err(bad("the prefix field must come before the files").into());
                }
                if self.prefix_in_query {
                    return Err(bad("prefix is given both in the query and the form").into());
                }
                self.prefix = parse_prefix(&text)?;
                continue;
            };
            let received = self.files.len() + self.committing.len();
            if received == self.state.config.max_files {
                let limit = self.state.config.max_files;
                return Err(ApiError::TooManyFiles { limit }.into());
            }
            self.receive_file(&mut field, name, rollback).await?;
        }
        self.settle(|batch| !batch.committing.is_empty()).await?;
        if self.files.is_empty() {
            return Err(
                bad("the body holds no file: send each file as a part with a filename").into(),
            );
        }
        Ok((self.files, self.spooled))
    }

    /// Receives one file: written to the spool and recorded, or streamed
    /// to the store and left committing (see [`Self::settle`]).
    async fn receive_file(
        &mut self,
        field: &mut Field<'_>,
        name: String,
        rollback: &mut Rollback,
    ) -> Result<(), FileError> {
        let own = |error| FileError {
            name: Some(name.clone()),
            error,
        };
        let dir = match &self.dir {
            Some(dir) => dir.clone(),
            None => {
                let dir = self.batch_dir().map_err(own)?;
                if self.spooled.is_none() {
                    // Recorded before anything is written under it.
                    let intent = self.state.store.begin_batch(dir.clone()).await;
                    rollback.intent = Some(intent.map_err(|e| own(e.into()))?);
                }
                self.dir = Some(dir.clone());
                dir
            }
        };
        let segment = unique_name(&mut self.names, sanitize_file_name(&name));
        let key = Key::segment(&segment)
            .and_then(|segment| dir.join(&segment))
            .map_err(|e| own(ApiError::InvalidKey(e)))?;
        // Most clients send application/octet-stream when they do not know;
        // leave the type to be guessed from the name on reading.
        let content_type = field
            .content_type()
            .filter(|mime| *mime != &mime_guess::mime::APPLICATION_OCTET_STREAM)
            .map(|mime| mime.to_string());
        let max = self.state.config.max_file_size;
        let limit = self.batch_limit();
        if let Some(spooled) = self.spooled.as_mut() {
            let spooled = async {
                let mut file = spooled.file(&key, &name, content_type).await?;
                while let Some(chunk) = next_chunk(field, file.size(), max, limit).await? {
                    file.write(&chunk).await?;
                }
                Ok(file.finish().await?)
            };
            let (size, sha256) = spooled.await.map_err(own)?;
            self.record(&key, name, size, sha256);
            return Ok(());
        }
        let intent = rollback
            .intent
            .clone()
            .expect("begun with the batch's directory");
        let mut upload = self
            .state
            .store
            .upload(
                self.group,
                key,
                Some(self.size_bound),
                content_type,
                Some(name.clone()),
            )
            .within(intent);
        while let Some(chunk) = next_chunk(field, upload.size(), max, limit)
            .await
            .map_err(own)?
        {
            let buffered = upload.buffered() + chunk.len();
            self.settle(|batch| batch.held() + buffered > batch.buffer_bound)
                .await?;
            // Read on only while the backend takes the earlier files.
            for (_, committing) in &mut self.committing {
                committing.begun().await;
            }
            upload.write(chunk).await.map_err(|e| own(e.into()))?;
        }
        self.settle(|batch| batch.committing.len() >= MAX_COMMITTING)
            .await?;
        let committing = upload.commit().await.map_err(|e| own(e.into()))?;
        self.committing.push_back((name, committing));
        Ok(())
    }

    /// Takes the outcomes of the commits under way that have ended, oldest
    /// first, and waits for the oldest while `wait` holds. A stored file is
    /// recorded; a failed one fails the batch, named.
    async fn settle(&mut self, wait: impl Fn(&Self) -> bool) -> Result<(), FileError> {
        loop {
            let wait = wait(self);
            let Some((_, committing)) = self.committing.front_mut() else {
                return Ok(());
            };
            let outcome = match wait {
                true => Some(committing.await),
                false => committing.now_or_never(),
            };
            let Some(outcome) = outcome else {
                return Ok(());
            };
            let (name, _) = self
                .committing
                .pop_front()
                .expect("the front was just seen");
            let stored = outcome.map_err(|e| FileError {
                name: Some(name.clone()),
                error: e.into(),
            })?;
            self.record(&stored.key, name, stored.size, stored.sha256);
        }
    }

    /// Adds a file received whole to the answer.
    fn record(&mut self, key: &Key, name: String, size: u64, sha256: String) {
        self.files.push(StoredFile {
            key: self.tenant.relative(key).to_owned(),
            name,
            size,
            sha256,
        });
    }

    /// Bytes held by the files whose commit is under way.
    fn held(&self) -> usize {
        self.committing.iter().map(|(_, c)| c.held()).sum()
    }

    /// `{tenant}/{prefix/}{date}/{batch-id}`.
    fn batch_dir(&self) -> Result<Key, ApiError> {
        let date = chrono::Utc::now().format("%Y-%m-%d");
        let batch = uuid::Uuid::now_v7();
        let mut dir = self.tenant.root().clone();
        if let Some(prefix) = &self.prefix {
            dir = dir.join(prefix).map_err(ApiError::InvalidKey)?;
        }
        let tail = Key::parse(&format!("{date}/{batch}")).map_err(ApiError::InvalidKey)?;
        dir.join(&tail).map_err(ApiError::InvalidKey)
    }

    /// The largest body this tenant may send.
    fn batch_limit(&self) -> u64 {
        (self.tenant.policy()).max_batch_size(self.state.config.max_batch_size)
    }

    fn parse_error(&self, error: multer::Error) -> FileError {
        parse_error(error, self.batch_limit()).into()
    }
}

/// The next chunk of a file of which `size` bytes came before, refused if
/// it takes the file past `max` bytes; the batch is at most `limit`.
async fn next_chunk(
    field: &mut Field<'_>,
    size: u64,
    max: u64,
    limit: u64,
) -> Result<Option<bytes::Bytes>, ApiError> {
    let chunk = field.chunk().await.map_err(|e| parse_error(e, limit))?;
    if chunk
        .as_ref()
        .is_some_and(|chunk| size + chunk.len() as u64 > max)
    {
        return Err(ApiError::FileTooLarge { limit: max });
    }
    Ok(chunk)
}

/// The answer to a multipart parser's `error`, for a batch of at most
/// `limit` bytes.
fn parse_error(error: multer::Error, limit: u64) -> ApiError {
    {
        match error {
            multer::Error::StreamReadFailed(source) => match source.downcast::<BodyError>() {
                Ok(body) => ApiError::from(*body),
                Err(other) => ApiError::BadRequest(format!("reading the body failed: {other}")),
            },
            multer::Error::StreamSizeExceeded { .. } => ApiError::BatchTooLarge { limit },
            multer::Error::FieldSizeExceeded { field_name, .. } => ApiError::BadRequest(format!(
                "form field {:?} is longer than {MAX_TEXT_FIELD} bytes",
                field_name.unwrap_or_default()
            )),
            other => ApiError::BadRequest(format!("malformed multipart body: {other}")),
        }
    }
}

fn bad(message: &str) -> ApiError {
    ApiError::BadRequest(message.to_owned())
}

/// Reads a text field, refusing one longer than [`MAX_TEXT_FIELD`].
async fn read_text(field: &mut Field<'_>) -> Result<String, multer::Error> {
    let mut text = Vec::new();
    while let Some(chunk) = field.chunk().await? {
        if text.len() + chunk.len() > MAX_TEXT_FIELD {
            return Err(multer::Error::FieldSizeExceeded {
                limit: MAX_TEXT_FIELD as u64,
                field_name: field.name().map(str::to_owned),
            });
        }
        text.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// `name`, or `name (2)`, `name (3)`… (before the extension), whichever is
/// not yet in `used`.
fn unique_name(used: &mut HashSet<String>, name: String) -> String {
    if used.insert(name.clone()) {
        return name;
    }
    let (stem, extension) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name.as_str(), ""),
    };
    (2..)
        .map(|n| format!("{stem} ({n}){extension}"))
        .find(|candidate| used.insert(candidate.clone()))
        .expect("some number is free")
}

/// A synchronous batch's intent, once it has one (see
/// [`corral_store::batch`]). If the batch fails, [`Rollback::run`] lets go
/// of it and waits for its directory to be rolled back; if the request is
/// dropped first, dropping the intent rolls it back in the background.
/// Either way the deletes are the store's own work, retried until done.
struct Rollback {
    scheduler: Scheduler,
    intent: Option<Intent>,
}

/// How long a failed batch's answer waits for its rollback; beyond, the
/// rollback goes on in the background (the backend is slow or down).
const ROLLBACK_WAIT: Duration = Duration::from_secs(10);

impl Rollback {
    /// Deletes the batch's objects, before the answer goes out if that
    /// takes less than [`ROLLBACK_WAIT`] and the backend is not known to be
    /// down. Not in the request's group: a failure has cancelled it.
    async fn run(self) {
        let Some(intent) = self.intent else {
            return;
        };
        let settled = intent.abandon();
        if self.scheduler.health() != Health::Up {
            return;
        }
        if tokio::time::timeout(ROLLBACK_WAIT, settled).await.is_err() {
            tracing::warn!("rolling back a failed batch goes on in the background");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_names_get_numbered() {
        let mut used = HashSet::new();
        let names = [
            "a.txt",
            "a.txt",
            "a (2).txt",
            "a.txt",
            "README",
            "README",
            ".txt",
        ];
        let unique: Vec<String> = names
            .iter()
            .map(|name| unique_name(&mut used, sanitize_file_name(name)))
            .collect();
        assert_eq!(
            unique,
            [
                "a.txt",
                "a (2).txt",
                "a (2) (2).txt",
                "a (3).txt",
                "README",
                "README (2)",
                "txt"
            ]
        );
    }
}
