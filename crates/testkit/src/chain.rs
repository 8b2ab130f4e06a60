//! An error with its causes on one line, for messages and reports.
//!
//! `corral_store::error_chain` does the same; the test kit does not depend
//! on the crates it tests, so it keeps its own.

use std::error::Error;

/// `error: cause: cause ...`.
pub(crate) fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
