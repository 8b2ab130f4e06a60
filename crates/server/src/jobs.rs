//! `GET /api/jobs/{id}`: where an asynchronous batch is.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::Uri;
use corral_store::{FileState, Job, JobState, Key};
use serde::Serialize;

use crate::app::AppState;
use crate::error::ApiError;
use crate::query;
use crate::tenant::Tenant;

/// A job as its tenant sees it.
#[derive(Debug, Serialize)]
pub(crate) struct JobView {
    id: String,
    state: JobState,
    created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended: Option<String>,
    files: Vec<FileView>,
}

#[derive(Debug, Serialize)]
struct FileView {
    /// The key, relative to the tenant, as for a synchronous upload.
    key: String,
    name: String,
    size: u64,
    sha256: String,
    state: FileState,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The job `id` of the request's tenant. Another tenant's job, like an
/// unknown one, is `404`.
pub(crate) async fn get(
    State(state): State<AppState>,
    tenant: Tenant,
    id: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<JobView>, ApiError> {
    query::check(&uri, "GET /api/jobs/{id}", &[])?;
    let Path(id) = id.map_err(|r| ApiError::BadRequest(r.body_text()))?;
    let not_found = || ApiError::NoJob(id.clone());
    let spool = state.spool.as_ref().ok_or_else(not_found)?;
    if uuid::Uuid::try_parse(&id).is_err() {
        return Err(not_found());
    }
    let job = (spool.job(&id).await)
        .map_err(ApiError::from)?
        .filter(|job| job.tenant == tenant.root().as_str())
        .ok_or_else(not_found)?;
    Ok(Json(view(job, &tenant)))
}

fn view(job: Job, tenant: &Tenant) -> JobView {
    JobView {
        id: job.id.clone(),
        state: job.state(),
        created: rfc3339(job.created),
        ended: job.ended.map(rfc3339),
        files: (job.files.into_iter())
            .map(|file| FileView {
                key: Key::parse(&file.key)
                    .map(|key| tenant.relative(&key).to_owned())
                    .unwrap_or(file.key),
                name: file.name,
                size: file.size,
                sha256: file.sha256,
                state: file.state,
                attempts: file.attempts,
                error: file.error,
            })
            .collect(),
    }
}

fn rfc3339(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
