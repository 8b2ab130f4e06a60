//! `range`: the `Range` request header (`corral_server::fuzz::range`).
//!
//! The first 8 bytes (little-endian, zero-padded) are the object's size,
//! the rest the header text (lossy UTF-8). Checks that resolving never
//! panics and that a partial range always lies inside the object (the
//! assertion is inside `fuzz::range`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.len().min(8);
    let mut size = [0u8; 8];
    size[..split].copy_from_slice(&data[..split]);
    let size = u64::from_le_bytes(size);
    let header = String::from_utf8_lossy(&data[split..]);
    let _ = corral_server::fuzz::range(&header, size);
});
