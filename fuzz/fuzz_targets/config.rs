//! `config`: the `corral serve` config file (TOML) and the size and
//! duration values in it.
//!
//! Checks that parsing and validating any text never panics and that
//! settings which validate print as TOML that reads back to the same
//! settings (asserted inside `corral::fuzz::config`); and that `byte_size`
//! (`64KiB`) and `span` (`30s`) never panic and print values that parse
//! back to the same (asserted inside them), on the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = corral::fuzz::config(text);
    let _ = corral::fuzz::byte_size(text);
    let _ = corral::fuzz::span(text);
});
