//! corral's HTTP API, on axum.
//!
//! [`router`] builds the API over an [`AppState`]; [`run`] serves it on a
//! listener until a shutdown future completes; [`Auth`] maps bearer tokens
//! to tenants. The routes are listed in the README; every error is JSON `{"error":{"code","message"}}` with the status
//! that fits (see [`ApiError`]).

mod admission;
mod app;
mod auth;
mod body;
mod config;
mod error;
mod files;
mod jobs;
mod memory;
mod metrics;
mod page;
mod query;
mod range;
mod serve;
mod stats;
mod tenant;
mod tus;
mod upload;
mod uploads;

pub use admission::Refusal;
pub use app::{AppState, router};
pub use auth::{Auth, AuthError, TenantPolicy, TenantSpec, token_sha256};
pub use config::ServerConfig;
pub use error::ApiError;
pub use serve::run;
pub use tenant::Tenant;

/// Entry points for the fuzz targets in `fuzz/`. Not an API.
#[doc(hidden)]
pub mod fuzz {
    /// What a `Range` header asks of an object of `size` bytes: the bytes
    /// to send, `Some(None)` for the whole object, `None` for `416`; with
    /// the invariant that a range always lies inside the object.
    pub fn range(header: &str, size: u64) -> Option<Option<std::ops::Range<u64>>> {
        let Some(range) = crate::range::requested(Some(header)) else {
            return Some(None);
        };
        let range = crate::range::fit(&range, size)?;
        assert!(
            range.start < range.end && range.end <= size,
            "{header:?}: {range:?} of {size}"
        );
        Some(Some(range))
    }
}
