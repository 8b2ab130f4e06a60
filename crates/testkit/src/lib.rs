//! Fixtures for testing and benchmarking corral.
//!
//! [`sim`] drives the real scheduler in virtual time against a simulated
//! backend; [`scenario`] holds the scenarios and their target figures, for
//! the scheduler's scenario tests and `corral bench sim`. [`s3`] installs and
//! runs a real S3-compatible server (moto) on 127.0.0.1 for backend tests.
//! [`herd`] is `corral bench herd`: many users uploading to a running corral
//! at once, retrying as real upload clients do, with every file checked.
//! [`front`] is a throttling reverse proxy in front of a real S3 server:
//! slots, a request rate, latency, bandwidth and injected faults, modelling
//! a cloud backend's limits for tests and benchmarks.
//! [`s3s`] installs and runs s3s-fs, a fast S3 server over files that
//! verifies signatures, for benchmarks. [`gcs`] and [`azure`] install and
//! run emulators of Google Cloud Storage (fake-gcs-server) and Azure Blob
//! Storage (Azurite) for backend tests, as [`s3`] does moto. [`node`] runs
//! the real tus client (tus-js-client) and Node's reference tus server
//! (@tus/server), installed from npm, for the tus endpoint's tests and
//! benchmarks; [`rustus`] installs and runs rustus, a tus server in Rust,
//! for the same benchmarks. [`s5cmd`] installs s5cmd, the S3 client that
//! `corral bench upload` compares corral's client with. [`browser`] installs Debian's Chromium and
//! drives it headless from Node scripts (playwright-core), and runs Uppy in
//! a page uploading to a tus endpoint of another origin, for end-to-end
//! tests. [`haproxy`] installs Debian's HAProxy and runs it before several
//! corral instances, for `corral bench fleet`.

pub mod azure;
pub mod browser;
mod chain;
pub mod emulator;
pub mod front;
pub mod gcs;
pub mod haproxy;
pub mod herd;
pub mod http;
mod install;
pub mod layers;
pub mod node;
mod process;
pub mod rustus;
pub mod s3;
pub mod s3s;
pub mod s5cmd;
pub mod scenario;
mod script;
pub mod sim;

pub use script::ScriptError;
