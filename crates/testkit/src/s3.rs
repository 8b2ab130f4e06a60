//! A real S3-compatible server on 127.0.0.1 for tests, installed and started
//! by this crate with no manual step.
//!
//! # Why moto, and why installed from here
//!
//! The S3 backend has to be tested against something that speaks the S3 wire
//! protocol — signing, multipart uploads, metadata headers, error bodies —
//! not against `object_store`'s in-memory store, which shares none of that
//! code path. [moto] is a faithful S3 implementation that installs from PyPI
//! in seconds, needs no credentials (it accepts any signature) and runs as a
//! plain process. Every machine the project runs on is created afresh with
//! only the registries reachable, so nothing may be installed by hand: the
//! first test that asks for a server installs moto itself.
//!
//! # Where it is installed
//!
//! Into a virtualenv at `<target>/moto-venv`, created by `python3 -m venv`
//! (override the interpreter with `CORRAL_PYTHON`, or the whole directory
//! with `CORRAL_MOTO_VENV`). `<target>` is the first ancestor of the running
//! executable that holds the `CACHEDIR.TAG` cargo writes at the root of every
//! target directory, so it follows `CARGO_TARGET_DIR`, `--target-dir` and
//! cross targets without reading any of them; `cargo clean` removes it. The
//! install is done once per target directory, under an exclusive file lock
//! (`<target>/moto-venv.lock`, released by the OS if the holder dies), and is
//! complete only once the marker file `corral-installed`, written last and
//! naming the pinned requirements, is there: a half-finished or outdated
//! venv is removed and installed again. A cold install takes about 15 s.
//!
//! # Lifetimes
//!
//! Prefer [`S3Server::require`] (or [`S3Server::shared`]): one server per
//! test process, started on first use, which each test isolates itself from
//! by creating its own bucket ([`S3Server::new_bucket`]). Under `cargo test`
//! that is one server per test binary; under `cargo nextest`, which runs each
//! test in its own process, one per test (a warm start takes about 0.6 s). A
//! static is never dropped, so the server must not rely on [`Drop`] to die:
//! moto runs under a wrapper whose stdin is a pipe from this process and
//! which kills it as soon as that pipe reaches end of file, which the kernel
//! guarantees when this process exits, however it exits (a panic,
//! `SIGKILL`); see `process.rs`. [`S3Server::start`] gives a
//! test its own server, killed and reaped on drop, for tests that stop or
//! break the server.
//!
//! moto binds port 0 itself and reports the port it got, so two servers
//! starting at once can never race for a port that was free a moment before.
//!
//! # When the server cannot start: fail, never skip
//!
//! Every error says exactly why: the Python interpreter is missing, `venv`
//! or `pip` failed (with the tail of their output), or moto exited or did
//! not answer within 30 s (with the tail of its stderr). Tests call
//! [`S3Server::require`], which panics with that message. There is no
//! silent skip, neither in CI (`CI=true`) nor locally: a skipped S3 test is a
//! test that passes without testing anything, and the only prerequisites,
//! CPython 3 with `venv` and `pip` and a reachable PyPI, are part of the
//! project's machines. Do not add a skip.
//!
//! # Talking to it
//!
//! Use [`S3Server::endpoint`] with [`REGION`], [`ACCESS_KEY_ID`] and
//! [`SECRET_ACCESS_KEY`] for an S3 client (path-style requests, plain HTTP).
//! [`S3Server::request`] is a minimal std-only HTTP/1.1 client for setting up
//! and inspecting state independently of the code under test. moto accepts
//! unsigned requests, but answers 403 to a `GET` of an object when the
//! request carries no `Authorization` header at all (it then treats the
//! caller as anonymous), so [`S3Server::request`] sends a well-formed dummy
//! one; moto never checks the signature.
//!
//! ```no_run
//! use corral_testkit::s3::S3Server;
//!
//! let s3 = S3Server::require();
//! let bucket = s3.new_bucket("round-trip")?;
//! s3.request("PUT", &format!("/{bucket}/key"), &[], b"bytes")?.ok()?;
//! // An object_store client: AmazonS3Builder::new()
//! //     .with_endpoint(s3.endpoint()).with_allow_http(true)
//! //     .with_virtual_hosted_style_request(false).with_bucket_name(&bucket)
//! //     .with_region(REGION).with_access_key_id(ACCESS_KEY_ID)
//! //     .with_secret_access_key(SECRET_ACCESS_KEY)
//! # Ok::<(), corral_testkit::s3::Error>(())
//! ```
//!
//! # Where moto differs from S3
//!
//! - `UploadPart` to an aborted or unknown upload answers 500, not 404
//!   `NoSuchUpload`, so a client with default retries spends seconds
//!   retrying it: give clients in tests a short retry budget.
//! - A body sent as `application/x-www-form-urlencoded` (curl's default for
//!   `--data`) is parsed as a form and the object stored empty;
//!   [`S3Server::request`] sends `application/octet-stream` by default.
//!
//! This module is for Unix (the venv layout is `bin/python`).
//!
//! [moto]: https://pypi.org/project/moto/

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::http;
use crate::process::Process;

pub use crate::emulator::{Error, Result};
pub use crate::http::Response;

/// What is installed into the venv. Changing this reinstalls it.
const REQUIREMENTS: [&str; 3] = ["moto[s3]==5.2.5", "flask==3.1.3", "flask-cors==6.0.5"];

/// The server, in error messages.
const NAME: &str = "moto";

/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs moto on port 0, prints the port it got, and waits to be killed
/// (see [`crate::process`]).
const LAUNCHER: &str = "\
import threading
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
threading.Event().wait()
";

/// The region to configure S3 clients with; moto serves every region.
pub const REGION: &str = "us-east-1";

/// An access key id for S3 clients; moto accepts any.
pub const ACCESS_KEY_ID: &str = "corral-test";

/// A secret access key for S3 clients; moto accepts any.
pub const SECRET_ACCESS_KEY: &str = "corral-test";

/// Sent by [`S3Server::request`]: moto needs an `Authorization` header to
/// treat the caller as the bucket's owner, but does not check its signature.
const DUMMY_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 \
    Credential=corral-test/20260101/us-east-1/s3/aws4_request, \
    SignedHeaders=host, Signature=0";

/// A running moto server on 127.0.0.1.
#[derive(Debug)]
pub struct S3Server {
    addr: SocketAddr,
    /// moto, killed when this process exits or the value is dropped.
    process: Process,
}

impl S3Server {
    /// Starts a server of the caller's own, installing moto first if this
    /// target directory has no complete install.
    ///
    /// The server is killed when the value is dropped. Most tests should use
    /// [`S3Server::shared`] instead, which starts one server per process.
    ///
    /// # Errors
    ///
    /// If Python is missing, the install fails, or moto does not answer
    /// within 30 s; see [`Error`].
    pub fn start() -> Result<Self> {
        let venv = crate::install::dir("CORRAL_MOTO_VENV", "moto-venv");
        let python = crate::install::venv(&venv, &REQUIREMENTS).map_err(Error::installing(NAME))?;
        launch(&python)
    }

    /// The server shared by every test in this process, started on first
    /// use. Concurrent first callers wait for the one start.
    ///
    /// It is never dropped; moto exits when this process does.
    ///
    /// # Errors
    ///
    /// The error of the one attempt to start it, to every caller.
    pub fn shared() -> Result<&'static Self, &'static Error> {
        static SHARED: OnceLock<Result<S3Server>> = OnceLock::new();
        SHARED.get_or_init(Self::start).as_ref()
    }

    /// [`S3Server::shared`], or a panic that says why the server cannot
    /// run. S3 tests fail rather than skip; see the module docs.
    #[track_caller]
    pub fn require() -> &'static Self {
        crate::process::required(Self::shared(), "the S3 test server")
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint for S3 clients, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a bucket. Creating one that exists succeeds.
    ///
    /// # Errors
    ///
    /// If the request fails or moto rejects the name (S3 bucket names are
    /// 3 to 63 lowercase letters, digits, `-` and `.`).
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        self.request("PUT", &format!("/{name}"), &[], &[])?.ok()?;
        Ok(())
    }

    /// Creates a bucket named `{prefix}-{n}`, unique in this process, and
    /// returns its name: how tests sharing a server stay apart.
    ///
    /// # Errors
    ///
    /// As [`S3Server::create_bucket`].
    pub fn new_bucket(&self, prefix: &str) -> Result<String> {
        crate::emulator::create_unique(prefix, |name| self.create_bucket(name))
    }

    /// Sends one HTTP/1.1 request and reads the whole response.
    ///
    /// `path` is the request target, e.g. `/bucket/key?uploads`. Unless
    /// given in `headers`, `Content-Type: application/octet-stream` and a
    /// dummy `Authorization` (see the module docs) are sent. The status is
    /// returned whatever it is; see [`Response::ok`].
    ///
    /// # Errors
    ///
    /// If the connection or the response fails, or it takes over 30 s.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        let headers = with_defaults(headers);
        let response = http::request(self.addr, method, path, &headers, body, REQUEST_TIMEOUT);
        Ok(response?)
    }

    /// The last few KiB of moto's output (one line per request, and any
    /// Python traceback), for diagnosing a failing test.
    pub fn log_tail(&self) -> String {
        self.process.output()
    }
}

/// `headers`, and `Content-Type` and a dummy `Authorization` unless they
/// have them: what [`S3Server::request`] sends.
fn with_defaults<'a>(headers: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut all = Vec::with_capacity(headers.len() + 2);
    if !has("content-type") {
        // What S3 assumes anyway; never a form type, whose body moto drops.
        all.push(("Content-Type", "application/octet-stream"));
    }
    if !has("authorization") {
        all.push(("Authorization", DUMMY_AUTHORIZATION));
    }
    all.extend_from_slice(headers);
    all
}

/// Starts moto from the venv's interpreter and waits until it answers
/// `GET /`.
fn launch(python: &Path) -> Result<S3Server> {
    let (process, addr) = crate::emulator::launch(
        NAME,
        python,
        |command| {
            command.args(["-c", LAUNCHER]).env("PYTHONUNBUFFERED", "1");
        },
        // The first line of its stdout.
        |line| line.trim().parse().ok(),
        |addr| crate::emulator::answers_ok(addr, "/", &with_defaults(&[])),
    )?;
    Ok(S3Server { addr, process })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_target_dir_is_the_one_this_test_was_built_into() {
        let target = crate::install::target_dir();
        assert!(
            target.join("CACHEDIR.TAG").is_file(),
            "{}",
            target.display()
        );
        assert!(std::env::current_exe().unwrap().starts_with(&target));
    }
}
