//! corral's scheduler: every call a corral process makes to a storage backend
//! passes through one [`Limit`] per backend, shared by every request, so the
//! number of calls in flight is bounded process-wide whatever the number of
//! clients (see `DESIGN.md`, "The problem, in numbers").
//!
//! This crate knows nothing of HTTP or storage: it bounds futures.

mod error;
mod limit;

pub use error::{Error, Result};
pub use limit::{Limit, LimitConfig, Permit};
