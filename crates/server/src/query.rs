//! The query parameters each route takes. An unknown one is refused with
//! `400 unknown_parameter`, never ignored: a misspelt `prefix` would
//! otherwise store files where the client did not mean them, and say
//! nothing.

use axum::extract::Query;
use axum::http::Uri;

use crate::error::ApiError;

/// Refuses the first parameter of `uri`'s query that is not `accepted` by
/// `route` (`METHOD /path`, for the message).
///
/// # Errors
///
/// [`ApiError::UnknownParameter`] for it, [`ApiError::BadRequest`] for a
/// query that cannot be decoded.
pub(crate) fn check(
    uri: &Uri,
    route: &'static str,
    accepted: &'static [&'static str],
) -> Result<(), ApiError> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    match pairs
        .into_iter()
        .find(|(name, _)| !accepted.contains(&name.as_str()))
    {
        Some((name, _)) => Err(ApiError::UnknownParameter {
            name,
            route,
            accepted,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_accepted_names_pass() {
        let check = |uri: &str| check(&uri.parse().unwrap(), "GET /x", &["prefix", "limit"]);
        assert!(check("/x").is_ok());
        assert!(check("/x?").is_ok());
        assert!(check("/x?prefix=a&limit=2").is_ok());
        assert!(check("/x?prefix").is_ok());
        match check("/x?limit=1&perfix=a") {
            Err(ApiError::UnknownParameter { name, .. }) => assert_eq!(name, "perfix"),
            other => panic!("{other:?}"),
        }
        // Decoded before it is compared.
        assert!(check("/x?pre%66ix=a").is_ok());
    }
}
