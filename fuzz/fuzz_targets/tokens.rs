//! `tokens`: bearer tokens (`corral_server::Auth::authenticate`).
//!
//! One fixed `Auth` with two tenants; the input is the `Authorization`
//! header value (bytes `HeaderValue` refuses are skipped). Checks that it
//! never panics and returns a tenant only when the header is
//! `Bearer <token>` (scheme in any case, token trimmed) for one of the two
//! known tokens, and then the tenant that token belongs to.
#![no_main]

use std::sync::LazyLock;

use corral_server::{Auth, TenantSpec, token_sha256};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

const TOKENS: [(&str, &str); 2] = [
    ("acme", "corral_0123456789abcdef"),
    ("globex", "corral_fedcba9876543210"),
];

static AUTH: LazyLock<Auth> = LazyLock::new(|| {
    let specs = TOKENS
        .iter()
        .map(|(name, token)| TenantSpec {
            name: (*name).to_owned(),
            token_sha256: vec![token_sha256(token)],
            max_batch_size: None,
            max_queued_bytes: None,
        })
        .collect();
    Auth::new(specs).expect("a valid auth")
});

/// The tenant `header` should name, by the documented format alone.
fn expected(header: &[u8]) -> Option<&'static str> {
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, token) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    TOKENS
        .iter()
        .find(|(_, t)| *t == token)
        .map(|(name, _)| *name)
}

fuzz_target!(|data: &[u8]| {
    let Ok(header) = HeaderValue::from_bytes(data) else {
        return;
    };
    let got = AUTH.authenticate(Some(&header));
    // `to_str` refuses what is not visible ASCII; then nothing may pass.
    let want = header.to_str().ok().and_then(|_| expected(data));
    match (got, want) {
        (Ok(tenant), Some(name)) => assert_eq!(tenant.name(), name, "{header:?}"),
        (Err(_), None) => {}
        (Ok(tenant), None) => panic!("{header:?} accepted as {}", tenant.name()),
        (Err(e), Some(name)) => panic!("{header:?} refused for {name}: {e:?}"),
    }
});
