//! The router and the state its handlers share.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on, post};
use corral_sched::{Health, Scheduler};
use corral_store::{Spool, Store};
use tower::ServiceExt as _;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::TraceLayer;

use crate::admission::connection::Connections;
use crate::admission::refusal::Refusal;
use crate::auth::{Auth, TenantPolicy};
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::memory::MemoryGate;
use crate::metrics::{self, Metrics};
use crate::stats::{self, History};
use crate::tus::TusConfig;
use crate::uploads::shared::Uploads;
use crate::{files, jobs, page, tus, upload, uploads};

/// What every handler shares. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The storage backend.
    pub store: Store,
    /// The scheduler of every backend call: the one `store` was opened
    /// with, for admission, health and shutdown.
    pub scheduler: Scheduler,
    /// The limits requests are held to.
    pub config: Arc<ServerConfig>,
    /// What `/metrics` reports; the middleware counts every request into it.
    pub(crate) metrics: Arc<Metrics>,
    /// The memory uploads may buffer. Each upload holds its share until
    /// it ends, so the sum of upload buffers never exceeds
    /// `config.upload_memory`.
    pub(crate) upload_memory: Arc<MemoryGate>,
    /// The connections served at once, at most `config.max_connections`:
    /// [`crate::run`] gives each connection's task a place, held until
    /// the connection ends.
    pub(crate) connections: Connections,
    /// The tenants and their tokens; `None` serves one anonymous tenant.
    pub(crate) auth: Option<Arc<Auth>>,
    /// The tenant of every request when there is no auth.
    pub(crate) anonymous: Arc<TenantPolicy>,
    /// Where asynchronous uploads are spooled; `None`: every upload is
    /// synchronous.
    pub(crate) spool: Option<Spool>,
    /// Resumable uploads: their protocol settings and requests in progress.
    pub(crate) uploads: Arc<Uploads>,
    /// The last minutes of the scheduler, for `/api/stats`; filled by
    /// [`stats::sample_every`], which [`crate::run`] runs.
    pub(crate) stats: Arc<History>,
}

impl AppState {
    /// State over `store`, whose calls `scheduler` schedules (the one the
    /// store was opened with), with `config`'s limits.
    pub fn new(store: Store, scheduler: Scheduler, config: ServerConfig) -> Self {
        let upload_memory = Arc::new(MemoryGate::new(
            config.upload_memory,
            config.upload_queue,
            config.upload_wait,
        ));
        let tus = TusConfig {
            max_size: config.tus_max_size,
            expiry: store.config().upload_expiry,
        };
        let uploads = Arc::new(Uploads::new(tus, config.max_open_uploads));
        let connections = Connections::new(config.max_connections);
        Self {
            metrics: Arc::new(Metrics::new(
                store.clone(),
                scheduler.clone(),
                Arc::clone(&upload_memory),
                uploads.open_count(),
                connections.clone(),
            )),
            connections,
            uploads,
            upload_memory,
            stats: Arc::new(History::new()),
            store,
            scheduler,
            config: Arc::new(config),
            auth: None,
            anonymous: Arc::new(TenantPolicy::anonymous()),
            spool: None,
        }
    }

    /// The same state, taking asynchronous uploads (`Prefer:
    /// respond-async`) into `spool`.
    #[must_use]
    pub fn with_spool(mut self, spool: Spool) -> Self {
        self.spool = Some(spool);
        self
    }

    /// The same state, asking every `/api` request for a bearer token of one
    /// of `auth`'s tenants.
    #[must_use]
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = Some(Arc::new(auth));
        self
    }
}

/// The whole HTTP API. A path with a trailing slash is the path without
/// it (`POST /api/files/` uploads), as a user who types one expects.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route(FILES, post(upload::upload).get(files::list))
        .route(
            FILE,
            get(files::get).head(files::head).delete(files::delete),
        )
        .route(JOB, get(jobs::get))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/api/stats", get(stats::get))
        .route("/", get(page::index))
        .route("/live", get(page::live))
        .route("/assets/{name}", get(page::asset))
        .merge(upload_routes());
    // The path is rewritten before routing, so outside the router.
    let app = layered(routes, state).map_request(trim_trailing_slash);
    Router::new().fallback_service(app)
}

/// The resumable-upload routes, open to browsers of any origin (see
/// [`uploads::cors`]).
fn upload_routes() -> Router<AppState> {
    Router::new()
        .route(UPLOADS, post(uploads::create).options(uploads::options))
        .route(
            UPLOAD,
            on(
                MethodFilter::HEAD
                    .or(MethodFilter::PATCH)
                    .or(MethodFilter::DELETE)
                    .or(MethodFilter::POST),
                uploads::upload,
            )
            .options(uploads::options),
        )
        .layer(middleware::from_fn(uploads::cors))
}

const FILES: &str = "/api/files";
const FILE: &str = "/api/files/{*key}";
const JOB: &str = "/api/jobs/{id}";
const UPLOADS: &str = tus::UPLOADS_PATH;
const UPLOAD: &str = "/api/uploads/{id}";

/// `request`, its path without its trailing slashes (`/` stays `/`).
fn trim_trailing_slash(mut request: Request) -> Request {
    let path = request.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = match path.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        let mut parts = request.uri().clone().into_parts();
        // A path cut short of its slashes is still a valid path.
        parts.path_and_query = path_and_query.parse().ok();
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// `routes` with what every route gets: the fallbacks, the panic catcher,
/// metrics and tracing.
fn layered(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        // Uploads are streamed and limited by the upload handler itself.
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a handler panicked");
            axum::response::IntoResponse::into_response(ApiError::Panic)
        }))
        // Outside the panic catcher, so a panic is counted as the 500 it
        // becomes. `Router::layer` wraps each route after it matched, so the
        // middleware sees the route template (`MatchedPath`).
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state.metrics),
            metrics::track,
        ))
        .layer(TraceLayer::new_for_http().on_failure(
            |failure: ServerErrorsFailureClass, _: Duration, _: &tracing::Span| {
                // Each 5xx is logged where it is made, with its cause
                // (`error::respond`), and a refusal (a 503 while stopping)
                // is no error at all: only a body that fails while it is
                // sent is left to log.
                if let ServerErrorsFailureClass::Error(error) = failure {
                    tracing::warn!(%error, "an answer failed while its body was sent");
                }
            },
        ))
        .with_state(state)
}

/// Alive: `200` as long as the process serves.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready for new work: `503` from the moment shutdown begins, so that a
/// load balancer stops sending requests while those in progress finish,
/// and while the storage backend is down (`backend_unavailable`, with the
/// time to the next probe as `Retry-After`).
async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    let scheduler = &state.scheduler;
    if scheduler.is_closed() {
        return Err(Refusal::ShuttingDown.into());
    }
    if let Health::Down { retry_at, .. } = scheduler.health() {
        let wait = retry_at.saturating_duration_since(tokio::time::Instant::now());
        return Err(ApiError::from(Refusal::BackendUnavailable {
            retry_after: wait.max(Duration::from_secs(1)),
        }));
    }
    Ok("ready\n")
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

/// `405`, naming the methods the route takes (axum adds them as `Allow`)
/// and, for a `PUT` or `POST` meant to upload, how to upload.
///
/// On the resumable-upload routes, the answer is a tus one too
/// (`Tus-Resumable`).
async fn method_not_allowed(method: Method, uri: Uri, route: Option<MatchedPath>) -> Response {
    const HOW_TO_UPLOAD: &str = "upload with POST multipart/form-data to /api/files, one form part \
                          per file (curl -F file=@PATH http://HOST/api/files)";
    let route = route.as_ref().map(MatchedPath::as_str);
    let uploading = [Method::PUT, Method::POST, Method::PATCH].contains(&method);
    let (allowed, hint) = match route {
        Some(FILES) => ("GET, HEAD, POST", Some(HOW_TO_UPLOAD)),
        Some(FILE) => ("GET, HEAD, DELETE", uploading.then_some(HOW_TO_UPLOAD)),
        Some(UPLOADS) => ("OPTIONS, POST", None),
        Some(UPLOAD) => ("DELETE, HEAD, OPTIONS, PATCH, POST", None),
        _ => ("GET, HEAD", None),
    };
    let error = ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
        allowed,
        hint,
    };
    let mut response = error.into_response();
    if matches!(route, Some(UPLOADS | UPLOAD)) {
        tus::stamp(tus::Protocol::Tus, response.headers_mut());
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{HeaderMap, Request, StatusCode};
    use corral_store::{Store, StoreConfig};
    use serde_json::Value;
    use tower::ServiceExt as _;

    use super::*;

    async fn boom() -> &'static str {
        panic!("a bug")
    }

    async fn state() -> AppState {
        let scheduler = Scheduler::new(corral_sched::SchedConfig::default());
        let store = Store::open("memory://", StoreConfig::default(), scheduler.clone())
            .await
            .unwrap();
        AppState::new(store, scheduler, ServerConfig::default())
    }

    async fn call(app: &Router, method: Method, path: &str) -> (StatusCode, HeaderMap, Value) {
        let request = Request::builder().method(method).uri(path);
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (parts.status, parts.headers, body)
    }

    #[tokio::test]
    async fn every_405_names_the_methods_of_its_allow_header() {
        let app = router(state().await);
        for (method, path) in [
            (Method::PUT, "/api/files"),
            (Method::DELETE, "/api/files"),
            (Method::PUT, "/api/files/a.txt"),
            (Method::POST, "/api/files/a/b.txt"),
            (Method::POST, "/api/jobs/x"),
            (Method::POST, "/healthz"),
            (Method::DELETE, "/readyz"),
            (Method::PUT, "/metrics"),
            (Method::POST, "/"),
            (Method::POST, "/live"),
            (Method::DELETE, "/assets/upload.js"),
            (Method::POST, "/api/stats"),
            (Method::GET, "/api/uploads"),
            (Method::PUT, "/api/uploads/x"),
        ] {
            let (status, headers, body) = call(&app, method.clone(), path).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(body["error"]["code"], "method_not_allowed");
            let allow = headers[axum::http::header::ALLOW].to_str().unwrap();
            let set = |list: &str| {
                let mut methods: Vec<String> = list.split(',').map(|m| m.trim().into()).collect();
                methods.sort_unstable();
                methods
            };
            let message = body["error"]["message"].as_str().unwrap();
            let named = message.split("which takes ").nth(1).unwrap();
            let named = named.split(':').next().unwrap();
            assert_eq!(set(named), set(allow), "{message:?} against Allow: {allow}");
            assert!(message.starts_with(&format!("{method} is not allowed on {path}")));
            if method == Method::PUT && path.starts_with("/api/files") {
                assert!(message.contains("upload with POST multipart/form-data to /api/files"));
            }
        }
    }

    #[tokio::test]
    async fn a_trailing_slash_is_the_route_without_it() {
        let app = router(state().await);
        for path in ["/healthz/", "/api/files/", "/api/files//?limit=5"] {
            let (status, _, _) = call(&app, Method::GET, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
        }
        let (status, _, body) = call(&app, Method::PUT, "/api/files/").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
        let (status, _, _) = call(&app, Method::GET, "/live/").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, body) = call(&app, Method::GET, "/nowhere/").await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::NOT_FOUND, &"no_route".into())
        );
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_router_goes_on() {
        let state = state().await;
        let routes = Router::new()
            .route("/boom", get(boom))
            .route("/healthz", get(healthz));
        let app = layered(routes, state);
        let request = |path| Request::get(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request("/boom")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "internal_error");
        // Nothing of the panic is sent.
        assert!(!body.to_string().contains("a bug"), "{body}");
        let response = app.oneshot(request("/healthz")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
