//! The upload page (`/`) and the live view of the scheduler (`/live`),
//! with their scripts and styles (`/assets/…`), compiled into the binary.
//!
//! Both pages are plain clients of the API: the upload page sends files
//! with tus (`/api/uploads`) through a vendored tus-js-client 4.3.1
//! (`assets/vendor/tus-js-client`, MIT, its licence beside it) and lists
//! the tenant's files (`/api/files`); the live view draws `/api/stats`.
//! No build step: the files in `crates/server/assets` are served as they
//! are.
//!
//! Every answer carries a strong `ETag` (the SHA-256 of the file) and
//! `Cache-Control: no-cache`: a browser keeps the files and asks each time
//! whether they changed (`304`), so a new corral is never served stale
//! scripts. The pages are served without a token: they hold no data; the
//! API they call asks for one under `--auth`.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::files::none_match;

/// A file served: its name under `/assets/` (a page's: its path), its
/// type, its bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// What a page may load and call: only corral itself.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

macro_rules! asset {
    ($name:literal, $type:expr, $file:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../assets/", $file)),
        }
    };
}

/// The pages, by path, then the assets, by name.
const PAGES: [Asset; 2] = [
    asset!("/", HTML, "index.html"),
    asset!("/live", HTML, "live.html"),
];
const ASSETS: [Asset; 7] = [
    asset!("style.css", CSS, "style.css"),
    asset!("upload.js", JS, "upload.js"),
    asset!("live.js", JS, "live.js"),
    asset!("format.js", JS, "format.js"),
    asset!("tus.min.js", JS, "vendor/tus-js-client/tus.min.js"),
    asset!("tus.LICENSE.txt", TEXT, "vendor/tus-js-client/LICENSE"),
    asset!("favicon.svg", "image/svg+xml", "favicon.svg"),
];

/// `GET /`: the upload page.
pub(crate) async fn index(request: HeaderMap) -> Response {
    serve(&PAGES[0], &request)
}

/// `GET /live`: the live view.
pub(crate) async fn live(request: HeaderMap) -> Response {
    serve(&PAGES[1], &request)
}

/// `GET /assets/{name}`.
pub(crate) async fn asset(Path(name): Path<String>, request: HeaderMap) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => serve(asset, &request),
        None => ApiError::NoRoute(format!("/assets/{name}")).into_response(),
    }
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = etag(asset);
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.content_type == HTML {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    if none_match(request, &etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    (headers, asset.body).into_response()
}

/// The asset's strong tag, its SHA-256, computed once per asset.
fn etag(asset: &Asset) -> HeaderValue {
    static TAGS: OnceLock<Vec<(&'static str, HeaderValue)>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        (PAGES.iter().chain(&ASSETS))
            .map(|asset| {
                let tag = format!("\"{}\"", hex::encode(Sha256::digest(asset.body)));
                (
                    asset.name,
                    HeaderValue::try_from(tag).expect("hex is a header value"),
                )
            })
            .collect()
    });
    let (_, tag) = (tags.iter())
        .find(|(name, _)| *name == asset.name)
        .expect("every asset has its tag");
    tag.clone()
}
