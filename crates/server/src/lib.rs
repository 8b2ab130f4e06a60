//! corral's HTTP API, on axum.
//!
//! [`router`] builds the API over an [`AppState`]; [`run`] serves it on a
//! listener until a shutdown future completes; [`Auth`] maps bearer tokens
//! to tenants. The routes are listed in the README; every error is JSON `{"error":{"code","message"}}` with the status
//! that fits (see [`ApiError`]).

mod app;
mod auth;
mod body;
mod config;
mod error;
mod files;
mod jobs;
mod memory;
mod metrics;
mod range;
mod serve;
mod tenant;
mod upload;

pub use app::{AppState, router};
pub use auth::{Auth, AuthError, TenantPolicy, TenantSpec, token_sha256};
pub use config::ServerConfig;
pub use error::ApiError;
pub use serve::run;
pub use tenant::Tenant;
