//! [`Tenant`]: whose keys a request may touch.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use corral_store::Key;

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
