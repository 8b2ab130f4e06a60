//! Reading, deleting and listing stored files.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use corral_store::{Key, ObjectInfo};
use serde::{Deserialize, Serialize};

use crate::admission::Admitted;
use crate::app::AppState;
use crate::error::ApiError;
use crate::{query, range};

/// The header that carries a file's SHA-256, in lower-case hex.
const SHA256_HEADER: &str = "x-corral-sha256";
/// Listing page size when the client gives none, and the most it may ask.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// A file's route, as [`query::check`] names it.
const FILE_ROUTE: &str = "/api/files/{key}";

/// `GET /api/files/{*key}`: the file's bytes, or the requested range.
pub(crate) async fn get(
    State(state): State<AppState>,
    admitted: Admitted,
    key: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    query::check(&uri, FILE_ROUTE, &[])?;
    respond(&state, &admitted, key, &headers, true).await
}

/// `HEAD /api/files/{*key}`: the headers `GET` would send.
pub(crate) async fn head(
    State(state): State<AppState>,
    admitted: Admitted,
    key: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    query::check(&uri, FILE_ROUTE, &[])?;
    respond(&state, &admitted, key, &headers, false).await
}

/// A `GET` is one backend call, whose answer carries the object's
/// description with its bytes (two for an object with a metadata
/// document); a `HEAD` is one call too. A `GET` whose `If-None-Match`
/// matches is answered `304` once that call's head has arrived, and its
/// body is dropped unread.
async fn respond(
    state: &AppState,
    Admitted { tenant, group }: &Admitted,
    key: Result<Path<String>, PathRejection>,
    request: &HeaderMap,
    with_body: bool,
) -> Result<Response, ApiError> {
    let Path(relative) = key.map_err(|r| ApiError::BadRequest(r.body_text()))?;
    let key = tenant.key(&relative)?;
    let not_found = |e| match e {
        corral_store::Error::NotFound { .. } => ApiError::NotFound(relative.clone()),
        e => e.into(),
    };
    let requested = range::requested(request.get(header::RANGE).and_then(|v| v.to_str().ok()));
    let (info, served, body) = if with_body {
        let reading = (state.store.get(group, &key, requested.clone()).await).map_err(not_found)?;
        let body = Body::from_stream(reading.body);
        (reading.info, reading.range, body)
    } else {
        let info = state.store.head(group, &key).await.map_err(not_found)?;
        let served = match &requested {
            None => 0..info.size,
            Some(range) => range::fit(range, info.size)
                .ok_or(ApiError::RangeNotSatisfiable { size: info.size })?,
        };
        (info, served, Body::empty())
    };
    let etag = etag(&info);
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::LAST_MODIFIED, http_date(info.last_modified));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(sha256) = info.sha256.as_deref().and_then(|s| s.parse().ok()) {
        headers.insert(SHA256_HEADER, sha256);
    }
    if none_match(request, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    headers.insert(header::CONTENT_TYPE, content_type(&info));
    let status = match requested {
        None => StatusCode::OK,
        Some(_) => {
            let value = format!("bytes {}-{}/{}", served.start, served.end - 1, info.size);
            headers.insert(header::CONTENT_RANGE, header_value(&value));
            StatusCode::PARTIAL_CONTENT
        }
    };
    headers.insert(header::CONTENT_LENGTH, (served.end - served.start).into());
    Ok((status, headers, body).into_response())
}

/// A strong entity tag: the content's SHA-256 where known (the same bytes
/// get the same tag on every backend), else the backend's own tag.
fn etag(info: &ObjectInfo) -> HeaderValue {
    let tag = info
        .sha256
        .clone()
        .or_else(|| {
            info.e_tag
                .as_deref()
                .map(|t| t.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| format!("{:x}-{:x}", info.size, info.last_modified.timestamp()));
    header_value(&format!("\"{tag}\""))
}

/// Whether `If-None-Match` names `etag` (or `*`), compared weakly as RFC
/// 9110 section 13.1.2 requires.
pub(crate) fn none_match(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.to_str().unwrap_or_default();
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn content_type(info: &ObjectInfo) -> HeaderValue {
    info.content_type
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or_else(|| {
            let guess = mime_guess::from_path(info.key.as_str()).first_or_octet_stream();
            header_value(guess.as_ref())
        })
}

fn http_date(time: DateTime<Utc>) -> HeaderValue {
    header_value(&time.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
}

/// A header value made from text corral built itself.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("corral builds header values from visible ASCII")
}

/// `DELETE /api/files/{*key}`: `204`, whether or not the file was there
/// (deletes are idempotent; see [`corral_store::Store::delete`]).
pub(crate) async fn delete(
    State(state): State<AppState>,
    Admitted { tenant, group }: Admitted,
    key: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    query::check(&uri, FILE_ROUTE, &[])?;
    let Path(relative) = key.map_err(|r| ApiError::BadRequest(r.body_text()))?;
    let key = tenant.key(&relative)?;
    state.store.delete(&group, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The query string of a listing.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    /// Only keys that start with this text.
    #[serde(default)]
    prefix: String,
    /// Page size, 1 to 1000.
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of a listing.
#[derive(Debug, Serialize)]
pub(crate) struct ListResponse {
    files: Vec<Listed>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct Listed {
    key: String,
    size: u64,
    last_modified: DateTime<Utc>,
}

/// `GET /api/files?prefix=&limit=&cursor=`: the tenant's files in key
/// order, a page at a time.
pub(crate) async fn list(
    State(state): State<AppState>,
    Admitted { tenant, group }: Admitted,
    uri: Uri,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ListResponse>, ApiError> {
    query::check(&uri, "GET /api/files", &["prefix", "limit", "cursor"])?;
    let Query(query) = query.map_err(|r| ApiError::BadRequest(r.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}, got {limit}"
        )));
    }
    // The complete segments of the prefix must be valid; the last, partial
    // one only matches keys, so anything goes.
    if let Some((dir, _)) = query.prefix.rsplit_once('/') {
        Key::parse(dir).map_err(ApiError::InvalidKey)?;
    }
    let after = query.cursor.as_deref().map(|c| tenant.key(c)).transpose()?;
    let page = state
        .store
        .list(&group, tenant.root(), &query.prefix, after.as_ref(), limit)
        .await?;
    Ok(Json(ListResponse {
        files: page
            .objects
            .iter()
            .map(|info| Listed {
                key: tenant.relative(&info.key).to_owned(),
                size: info.size,
                last_modified: info.last_modified,
            })
            .collect(),
        next_cursor: page.next.map(|key| tenant.relative(&key).to_owned()),
    }))
}
