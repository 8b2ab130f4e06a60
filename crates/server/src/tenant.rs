//! [`Tenant`]: whose keys a request may touch.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use corral_sched::Group;
use corral_sched::Refused;
use corral_store::Key;

use crate::app::AppState;
use crate::error::ApiError;

/// The tenant a request acts for. Every key a request names is taken
/// relative to the tenant's root, so no request reaches another tenant's
/// objects.
///
/// Until bearer tokens are configurable, every request acts for the one
/// anonymous tenant, whose objects live under `anonymous/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    root: Key,
}

impl Tenant {
    /// The anonymous tenant.
    pub fn anonymous() -> Self {
        Self {
            root: Key::segment("anonymous").expect("a valid segment"),
        }
    }

    /// The prefix under which this tenant's objects live.
    pub fn root(&self) -> &Key {
        &self.root
    }

    /// The storage key of the tenant-relative `key`.
    ///
    /// # Errors
    ///
    /// [`ApiError::InvalidKey`] if `key` breaks the key rules.
    pub fn key(&self, key: &str) -> Result<Key, ApiError> {
        let key = Key::parse(key).map_err(ApiError::InvalidKey)?;
        self.root.join(&key).map_err(ApiError::InvalidKey)
    }

    /// The tenant-relative form of a storage key of this tenant.
    pub fn relative<'k>(&self, key: &'k Key) -> &'k str {
        key.strip_prefix(&self.root)
            .expect("storage keys handed to a tenant lie under its root")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::anonymous())
    }
}

/// A request let in by the scheduler: its tenant, and the group its
/// backend calls are made in.
///
/// Extracting it is the admission check. It runs before the body is read,
/// so an overloaded server answers `429` with `Retry-After` at once, and a
/// stopping one `503`. Dropping it (the request ends, or the client went
/// away and the handler was dropped) cancels the request's backend calls.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) tenant: Tenant,
    pub(crate) group: Group,
}

impl FromRequestParts<AppState> for Admitted {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let tenant = Tenant::from_request_parts(parts, state).await?;
        let group = state
            .store
            .scheduler()
            .group(tenant.root().as_str())
            .map_err(|refused| match refused {
                Refused::Overloaded { retry_after } => ApiError::Overloaded { retry_after },
                _ => ApiError::ShuttingDown,
            })?;
        Ok(Self { tenant, group })
    }
}
