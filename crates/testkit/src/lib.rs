//! Fixtures for testing and benchmarking corral.
//!
//! [`sim`] drives the real scheduler in virtual time against a simulated
//! backend; [`scenario`] holds the scenarios and their target figures, for
//! the scheduler's scenario tests and `corral bench sim`. [`s3`] installs and
//! runs a real S3-compatible server (moto) on 127.0.0.1 for backend tests.

pub mod s3;
pub mod scenario;
pub mod sim;
