//! Fixtures for testing and benchmarking corral.
//!
//! [`sim`] drives the real scheduler in virtual time against a simulated
//! backend; [`scenario`] holds the scenarios and their target figures, for
//! the scheduler's scenario tests and `corral bench sim`.

pub mod scenario;
pub mod sim;
