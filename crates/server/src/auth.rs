//! Bearer tokens, the tenants they stand for, and each tenant's limits.
//!
//! A request names its tenant with `Authorization: Bearer <token>`. corral
//! keeps only the SHA-256 of each token (the auth file holds hashes, so a
//! leaked file or backup gives no one access): the token a request presents
//! is hashed, and the hash looked up. Tokens are random 256-bit secrets
//! (`corral token` makes them), so a fast hash is enough: unlike a password,
//! such a token cannot be guessed from its hash by trying candidates. The
//! lookup is by hash, so its timing can only tell a caller something about
//! the hash of a token it does not have, never about the token.
//!
//! A tenant's objects live under its name (`{tenant}/…`), and every key a
//! request names is taken relative to that root ([`crate::Tenant`]): no
//! request can even name another tenant's object, so one tenant asking for
//! another's key gets `404`, exactly as for a key that does not exist.
//!
//! Each tenant may have limits tighter than the server's: the largest batch
//! it may send, and the most bytes its uploads may hold in corral at once
//! (their share of `--upload-memory`: bytes received and not yet stored),
//! so that one tenant cannot take all of a server shared with others.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::HeaderValue;
use corral_store::Key;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// One tenant as the auth file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSpec {
    /// The tenant's name, the root of its objects: 1 to 64 ASCII letters,
    /// digits, `.`, `-` or `_`, not starting with `.`.
    pub name: String,
    /// SHA-256 of each of its tokens, in hex (several, to rotate them).
    pub token_sha256: Vec<String>,
    /// Its largest batch, in bytes, if smaller than the server's.
    pub max_batch_size: Option<u64>,
    /// The most bytes its uploads in progress may hold (their reserved
    /// share of upload memory), if any limit. One upload alone may hold
    /// more, or an upload larger than the limit could never be sent.
    pub max_upload_memory: Option<u64>,
    /// The most bytes of its asynchronous uploads the spool may hold, not
    /// yet stored, if less than the whole spool.
    pub max_spooled_bytes: Option<u64>,
}

/// Why an auth file's tenants cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// A tenant name is not a valid key segment.
    #[error(
        "tenant name {0:?} is not valid: 1 to 64 ASCII letters, digits, '.', '-' or '_', not starting with '.'"
    )]
    InvalidName(String),
    /// Two tenants have the same name, letter case aside (they would
    /// share a directory on a store that ignores case).
    #[error("tenant {0:?} is listed twice (names are compared ignoring case)")]
    DuplicateName(String),
    /// A tenant has no token.
    #[error("tenant {0:?} has no token_sha256")]
    NoToken(String),
    /// A hash is not 64 hex digits.
    #[error("tenant {tenant:?}: {hash:?} is not a SHA-256 in hex (64 hex digits)")]
    InvalidHash {
        /// The tenant.
        tenant: String,
        /// The text given.
        hash: String,
    },
    /// Two tenants (or one twice) have the same token.
    #[error("tenants {0:?} and {1:?} have the same token")]
    DuplicateToken(String, String),
    /// No tenant at all.
    #[error("no tenants: the file must list at least one [[tenant]]")]
    Empty,
}

/// The tenants, by the hash of their tokens.
#[derive(Debug)]
pub struct Auth {
    by_hash: HashMap<[u8; 32], Arc<TenantPolicy>>,
}

impl Auth {
    /// The tenants of an auth file.
    ///
    /// # Errors
    ///
    /// [`AuthError`] for the first entry that breaks a rule.
    pub fn new(specs: Vec<TenantSpec>) -> Result<Self, AuthError> {
        if specs.is_empty() {
            return Err(AuthError::Empty);
        }
        let mut by_hash = HashMap::new();
        let mut names = HashSet::new();
        for spec in specs {
            let root = Some(&spec.name)
                .filter(|name| is_tenant_name(name))
                .and_then(|name| Key::segment(name).ok())
                .ok_or_else(|| AuthError::InvalidName(spec.name.clone()))?;
            if !names.insert(spec.name.to_ascii_lowercase()) {
                return Err(AuthError::DuplicateName(spec.name));
            }
            if spec.token_sha256.is_empty() {
                return Err(AuthError::NoToken(spec.name));
            }
            let policy = Arc::new(TenantPolicy {
                root,
                max_batch_size: spec.max_batch_size,
                max_upload_memory: spec.max_upload_memory,
                max_spooled_bytes: spec.max_spooled_bytes,
                queued: AtomicU64::new(0),
            });
            for hash in &spec.token_sha256 {
                let parsed = parse_hash(hash).ok_or_else(|| AuthError::InvalidHash {
                    tenant: spec.name.clone(),
                    hash: hash.clone(),
                })?;
                if let Some(other) = by_hash.insert(parsed, Arc::clone(&policy)) {
                    return Err(AuthError::DuplicateToken(
                        other.name().to_owned(),
                        spec.name.clone(),
                    ));
                }
            }
        }
        Ok(Self { by_hash })
    }

    /// The tenant whose token the `Authorization` header carries.
    ///
    /// Each refusal is logged at `info`, with why and, for an unknown
    /// token, the first 8 hex digits of its SHA-256: an operator compares
    /// them with the `token_sha256` entries of the auth file to tell a
    /// wrong token from one added to the file since corral started (it
    /// reads the file once). The token itself is never logged.
    ///
    /// # Errors
    ///
    /// [`ApiError::Unauthorized`] if the header is missing, is not a bearer
    /// token, or the token is unknown.
    pub fn authenticate(
        &self,
        header: Option<&HeaderValue>,
    ) -> Result<Arc<TenantPolicy>, ApiError> {
        let Some(header) = header else {
            tracing::info!(why = "no Authorization header", "refused a request: 401");
            return Err(ApiError::Unauthorized {
                reason: "this server needs a bearer token (Authorization: Bearer <token>)",
                token_given: false,
            });
        };
        let value = header.to_str().ok();
        let token = value
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty());
        let Some(token) = token else {
            // The scheme is no secret (`Basic`, `Token`): it tells the
            // operator which client sends it. What follows it may be.
            let scheme = value
                .and_then(|value| value.split_whitespace().next())
                .filter(|scheme| {
                    scheme.len() <= 16 && scheme.bytes().all(|b| b.is_ascii_alphabetic())
                })
                .unwrap_or("?");
            tracing::info!(why = "not a bearer token", scheme, "refused a request: 401");
            return Err(ApiError::Unauthorized {
                reason: "the Authorization header is not a bearer token",
                token_given: false,
            });
        };
        let hash = hash(token);
        self.by_hash.get(&hash).cloned().ok_or_else(|| {
            tracing::info!(
                why = "unknown token",
                token_sha256 = %format_args!("{}…", hex::encode(&hash[..4])),
                "refused a request: 401 (no tenant of the auth file corral read at start has \
                 this token: compare token_sha256 with the file's; restart corral after \
                 editing it)"
            );
            ApiError::Unauthorized {
                reason: "the token is not valid",
                token_given: true,
            }
        })
    }
}

/// A tenant's root and limits, shared by all its requests.
#[derive(Debug)]
pub struct TenantPolicy {
    root: Key,
    max_batch_size: Option<u64>,
    max_upload_memory: Option<u64>,
    max_spooled_bytes: Option<u64>,
    /// Bytes its uploads in progress hold now.
    queued: AtomicU64,
}

impl TenantPolicy {
    /// The tenant anonymous requests act for when there is no auth file;
    /// its objects live under `anonymous/`, and only the server's limits
    /// apply.
    pub(crate) fn anonymous() -> Self {
        Self {
            root: Key::segment("anonymous").expect("a valid segment"),
            max_batch_size: None,
            max_upload_memory: None,
            max_spooled_bytes: None,
            queued: AtomicU64::new(0),
        }
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        self.root.as_str()
    }

    pub(crate) fn root(&self) -> &Key {
        &self.root
    }

    /// The tenant's largest batch under the server's `limit`.
    /// Its own budget in the spool, if any.
    pub(crate) fn max_spooled_bytes(&self) -> Option<u64> {
        self.max_spooled_bytes
    }

    pub(crate) fn max_batch_size(&self, limit: u64) -> u64 {
        self.max_batch_size.map_or(limit, |own| own.min(limit))
    }

    /// Counts `bytes` more as held by this tenant's uploads until the
    /// returned guard is dropped.
    ///
    /// # Errors
    ///
    /// The bytes its uploads hold now and its limit, if `bytes` more would
    /// pass it.
    pub(crate) fn hold(self: &Arc<Self>, bytes: u64) -> Result<Held, (u64, u64)> {
        if let Some(limit) = self.max_upload_memory {
            self.queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                    Some(held + bytes).filter(|&total| total <= limit || held == 0)
                })
                .map_err(|held| (held, limit))?;
        } else {
            self.queued.fetch_add(bytes, Ordering::AcqRel);
        }
        Ok(Held {
            policy: Arc::clone(self),
            bytes,
        })
    }
}

/// A tenant's share of upload memory, counted while it lives.
#[derive(Debug)]
pub(crate) struct Held {
    policy: Arc<TenantPolicy>,
    bytes: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.policy.queued.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Whether `name` may name a tenant: 1 to 64 ASCII letters, digits, `.`,
/// `-` or `_`, not starting with `.`. Narrower than a key segment, so a
/// tenant's root reads the same in every store, shell and log.
fn is_tenant_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The SHA-256 of `token`, in lower-case hex: what an auth file lists.
pub fn token_sha256(token: &str) -> String {
    hex::encode(hash(token))
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let mut hash = [0; 32];
    hex::decode_to_slice(text.trim(), &mut hash).ok()?;
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, tokens: &[&str]) -> TenantSpec {
        TenantSpec {
            name: name.to_owned(),
            token_sha256: tokens.iter().map(|t| token_sha256(t)).collect(),
            max_batch_size: None,
            max_upload_memory: None,
            max_spooled_bytes: None,
        }
    }

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    }

    #[test]
    fn a_token_names_its_tenant() {
        let auth = Auth::new(vec![spec("acme", &["a1", "a2"]), spec("zeta", &["z1"])]).unwrap();
        let name = |header: Option<HeaderValue>| {
            auth.authenticate(header.as_ref())
                .map(|tenant| tenant.name().to_owned())
        };
        assert_eq!(name(Some(bearer("a1"))).unwrap(), "acme");
        assert_eq!(name(Some(bearer("a2"))).unwrap(), "acme");
        assert_eq!(name(Some(bearer("z1"))).unwrap(), "zeta");
        assert_eq!(
            name(Some(HeaderValue::from_static("bearer   z1 "))).unwrap(),
            "zeta"
        );
        for (header, token_given) in [
            (None, false),
            (Some(HeaderValue::from_static("Basic YTpi")), false),
            (Some(HeaderValue::from_static("Bearer ")), false),
            (Some(HeaderValue::from_static("Bearer")), false),
            (Some(bearer("nope")), true),
            // The hash is not a token.
            (Some(bearer(&token_sha256("a1"))), true),
            (Some(bearer("A1")), true),
        ] {
            match name(header.clone()) {
                Err(ApiError::Unauthorized { token_given: t, .. }) => {
                    assert_eq!(t, token_given, "{header:?}")
                }
                other => panic!("{header:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_files_are_refused_with_the_entry_named() {
        let hash = |t| token_sha256(t);
        let cases = [
            (vec![], AuthError::Empty),
            (
                vec![spec("../etc", &["x"])],
                AuthError::InvalidName("../etc".into()),
            ),
            (
                vec![spec("", &["x"])],
                AuthError::InvalidName(String::new()),
            ),
            (
                vec![spec("a b", &["x"])],
                AuthError::InvalidName("a b".into()),
            ),
            (
                vec![spec("..", &["x"])],
                AuthError::InvalidName("..".into()),
            ),
            (
                vec![spec(".corral", &["x"])],
                AuthError::InvalidName(".corral".into()),
            ),
            (
                vec![spec(&"a".repeat(65), &["x"])],
                AuthError::InvalidName("a".repeat(65)),
            ),
            (vec![spec("acme", &[])], AuthError::NoToken("acme".into())),
            (
                vec![spec("acme", &["x"]), spec("acme", &["y"])],
                AuthError::DuplicateName("acme".into()),
            ),
            (
                vec![spec("acme", &["x"]), spec("ACME", &["y"])],
                AuthError::DuplicateName("ACME".into()),
            ),
            (
                vec![spec("acme", &["x"]), spec("zeta", &["x"])],
                AuthError::DuplicateToken("acme".into(), "zeta".into()),
            ),
            (
                vec![TenantSpec {
                    token_sha256: vec![hash("x")[..63].to_owned()],
                    ..spec("acme", &[])
                }],
                AuthError::InvalidHash {
                    tenant: "acme".into(),
                    hash: hash("x")[..63].to_owned(),
                },
            ),
        ];
        for (specs, expected) in cases {
            assert_eq!(Auth::new(specs).unwrap_err(), expected);
        }
    }

    #[test]
    fn a_tenant_holds_at_most_its_queued_bytes() {
        let auth = Auth::new(vec![TenantSpec {
            max_upload_memory: Some(100),
            max_batch_size: Some(50),
            ..spec("acme", &["t"])
        }])
        .unwrap();
        let tenant = auth.authenticate(Some(&bearer("t"))).unwrap();
        assert_eq!(tenant.max_batch_size(1000), 50);
        assert_eq!(tenant.max_batch_size(10), 10);
        let first = tenant.hold(60).unwrap();
        let second = tenant.hold(40).unwrap();
        assert_eq!(tenant.hold(1).unwrap_err(), (100, 100));
        drop(first);
        let third = tenant.hold(60).unwrap();
        drop((second, third));
        // Alone, an upload larger than the limit still goes through, or it
        // could never be sent.
        let big = tenant.hold(500).unwrap();
        assert_eq!(tenant.hold(1).unwrap_err(), (500, 100));
        drop(big);
        assert_eq!(tenant.queued.load(Ordering::Acquire), 0);
    }
}
