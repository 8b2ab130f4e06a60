//! `auth_file`: the auth file (`--auth tokens.toml`, `[[tenant]]` entries).
//!
//! Checks that parsing and checking any text as `corral serve --auth`
//! does never panics: it either builds the tenants or returns an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = corral::fuzz::auth_file(text);
});
