//! [`Tenant`]: whose keys a request may touch.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use corral_store::Key;

use crate::app::AppState;
use crate::auth::TenantPolicy;
use crate::error::ApiError;

/// The tenant a request acts for. Every key a request names is taken
/// relative to the tenant's root, so no request reaches another tenant's
/// objects.
///
/// With an auth file, the request's bearer token names the tenant
/// ([`crate::Auth`]); without one, every request acts for the one anonymous
/// tenant, whose objects live under `anonymous/`.
#[derive(Debug, Clone)]
pub struct Tenant {
    policy: Arc<TenantPolicy>,
}

impl Tenant {
    /// The prefix under which this tenant's objects live.
    pub fn root(&self) -> &Key {
        self.policy.root()
    }

    /// The tenant's name and limits.
    pub(crate) fn policy(&self) -> &Arc<TenantPolicy> {
        &self.policy
    }

    /// The storage key of the tenant-relative `key`.
    ///
    /// # Errors
    ///
    /// [`ApiError::InvalidKey`] if `key` breaks the key rules.
    pub fn key(&self, key: &str) -> Result<Key, ApiError> {
        let key = Key::parse(key).map_err(ApiError::InvalidKey)?;
        self.root().join(&key).map_err(ApiError::InvalidKey)
    }

    /// The tenant-relative form of a storage key of this tenant.
    pub fn relative<'k>(&self, key: &'k Key) -> &'k str {
        key.strip_prefix(self.root())
            .expect("storage keys handed to a tenant lie under its root")
    }
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let policy = match &state.auth {
            Some(auth) => auth.authenticate(parts.headers.get(header::AUTHORIZATION))?,
            None => Arc::clone(&state.anonymous),
        };
        Ok(Self { policy })
    }
}
