//! `key`: object keys and the names clients send (`corral_store::key`).
//!
//! Checks that `sanitize_file_name` never panics and always yields one
//! valid key segment (`Key::segment` accepts it unchanged; no `/`, never
//! `.` or `..`), that sanitizing is idempotent, and that a valid segment of
//! at most 200 bytes (the length sanitizing keeps) is left as it is. For
//! `Key::parse`: an accepted key has no empty, `.` or `..` segment, every
//! segment is valid on its own, it is within `MAX_KEY_BYTES`, and parsing
//! its text again gives the same key.
#![no_main]

use corral_store::{Key, MAX_KEY_BYTES, sanitize_file_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    let out = sanitize_file_name(text);
    let segment = Key::segment(&out).unwrap_or_else(|e| panic!("{text:?} -> {out:?}: {e}"));
    assert_eq!(segment.as_str(), out);
    assert!(
        !out.contains('/') && !out.contains('\\'),
        "{text:?} -> {out:?}"
    );
    assert!(out != "." && out != "..", "{text:?} -> {out:?}");
    assert_eq!(sanitize_file_name(&out), out, "not idempotent on {text:?}");
    if text.len() <= 200 && Key::segment(text).is_ok() {
        assert_eq!(out, text, "a valid segment was changed");
    }

    if let Ok(key) = Key::parse(text) {
        assert_eq!(key.as_str(), text);
        assert!(text.len() <= MAX_KEY_BYTES);
        for part in text.split('/') {
            assert!(!part.is_empty() && part != "." && part != "..", "{text:?}");
            assert!(Key::segment(part).is_ok(), "{text:?}: segment {part:?}");
        }
        assert_eq!(Key::parse(key.as_str()).expect("reparse"), key);
    }
});
