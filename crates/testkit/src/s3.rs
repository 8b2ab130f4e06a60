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
//! moto runs with its stdin piped from this process and exits as soon as that
//! pipe reaches end of file, which the kernel guarantees when this process
//! exits, however it exits (a panic, `SIGKILL`). [`S3Server::start`] gives a
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

use crate::chain::chain;
use std::env;
use std::error::Error as StdError;
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// What is installed into the venv. Changing this reinstalls it.
const REQUIREMENTS: [&str; 3] = ["moto[s3]==5.2.5", "flask==3.1.3", "flask-cors==6.0.5"];

/// How long moto may take from spawn to answering `GET /`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait for another process's install to finish.
const LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The file, written last, whose content says the venv is complete.
const MARKER: &str = "corral-installed";

/// Output kept for error messages: pip's, and moto's stderr.
const TAIL_BYTES: usize = 8 * 1024;

/// Runs moto on port 0, prints the port it got, and exits when stdin closes:
/// the test process holds the other end, so moto cannot outlive it.
const LAUNCHER: &str = "\
import os, sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.buffer.read()
os._exit(0)
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

/// A result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the S3 test server could not be installed, started or used.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The Python interpreter could not be run.
    PythonMissing {
        /// The interpreter that was tried.
        python: String,
        /// Why running it failed.
        source: io::Error,
    },
    /// `python -m venv` failed.
    Venv {
        /// The venv being created.
        dir: PathBuf,
        /// How it exited.
        status: ExitStatus,
        /// The tail of its output.
        output: String,
    },
    /// `pip install` failed.
    Pip {
        /// How it exited.
        status: ExitStatus,
        /// The tail of its output.
        output: String,
    },
    /// Another process held the install lock for too long.
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// moto exited before it answered.
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// The tail of its stderr.
        stderr: String,
    },
    /// moto did not answer in time.
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// The last thing that went wrong while waiting.
        last: String,
        /// The tail of its stderr.
        stderr: String,
    },
    /// A request answered with a status that is not 2xx.
    Status {
        /// The request, as `METHOD /path`.
        request: String,
        /// The response's status.
        status: u16,
        /// The response's body, lossily decoded.
        body: String,
    },
    /// Any other I/O failure.
    Io {
        /// What was being done.
        context: String,
        /// What went wrong.
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PythonMissing { python, .. } => write!(
                f,
                "cannot run `{python}` to install moto (set CORRAL_PYTHON to another interpreter)"
            ),
            Self::Venv {
                dir,
                status,
                output,
            } => write!(
                f,
                "`python -m venv {}` failed ({status}; on Debian, `apt-get install python3-venv`):\n{output}",
                dir.display()
            ),
            Self::Pip { status, output } => write!(
                f,
                "`pip install {}` failed ({status}):\n{output}",
                REQUIREMENTS.join(" ")
            ),
            Self::LockTimeout { path, waited } => write!(
                f,
                "another process held {} for {waited:?} while installing moto",
                path.display()
            ),
            Self::Exited { status, stderr } => {
                write!(
                    f,
                    "moto exited before it answered ({status}); stderr:\n{stderr}"
                )
            }
            Self::NotReady {
                waited,
                last,
                stderr,
            } => write!(
                f,
                "moto did not answer GET / within {waited:?} (last: {last}); stderr:\n{stderr}"
            ),
            Self::Status {
                request,
                status,
                body,
            } => write!(f, "{request} answered {status}: {body}"),
            Self::Io { context, .. } => f.write_str(context),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::PythonMissing { source, .. } | Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A running moto server on 127.0.0.1.
#[derive(Debug)]
pub struct S3Server {
    addr: SocketAddr,
    /// The moto process, with its stdin piped from us: it exits when that
    /// pipe closes. Killed and reaped on drop.
    child: Child,
    /// The tail of moto's stderr, appended to by a thread that ends when
    /// moto does.
    stderr: Tail,
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
        let python = install()?;
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
        match Self::shared() {
            Ok(server) => server,
            Err(error) => panic!("the S3 test server is unavailable: {}", chain(error)),
        }
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
        self.request("PUT", &format!("/{name}"), &[], &[])?
            .ok()
            .map(drop)
    }

    /// Creates a bucket named `{prefix}-{n}`, unique in this process, and
    /// returns its name: how tests sharing a server stay apart.
    ///
    /// # Errors
    ///
    /// As [`S3Server::create_bucket`].
    pub fn new_bucket(&self, prefix: &str) -> Result<String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.create_bucket(&name)?;
        Ok(name)
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
        request(self.addr, method, path, headers, body, REQUEST_TIMEOUT)
    }

    /// The last few KiB of moto's stderr (one line per request, and any
    /// Python traceback), for diagnosing a failing test.
    pub fn log_tail(&self) -> String {
        self.stderr.get()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // Errors mean it has already exited; either way it is gone after wait.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response from [`S3Server::request`].
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// The request, as `METHOD /path`, for error messages.
    request: String,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The response if its status is 2xx.
    ///
    /// # Errors
    ///
    /// [`Error::Status`] with the body otherwise.
    pub fn ok(self) -> Result<Self> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(Error::Status {
                request: self.request,
                status: self.status,
                body: String::from_utf8_lossy(&self.body).into_owned(),
            })
        }
    }
}

fn venv_dir() -> PathBuf {
    env::var_os("CORRAL_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::install::target_dir().join("moto-venv"))
}

/// Makes sure the venv is complete, and returns its interpreter.
fn install() -> Result<PathBuf> {
    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    if let Some(parent) = venv.parent() {
        fs::create_dir_all(parent)
            .map_err(io_error(format!("cannot create {}", parent.display())))?;
    }

    // Held until this function returns. The OS releases it if we die, but
    // not while `venv` or `pip` run on: they get it as their stdin, so a
    // killed test leaves no half-written venv to a successor while they do.
    let lock_path = venv.with_extension("lock");
    let lock = crate::install::lock(&lock_path, LOCK_TIMEOUT).map_err(|e| match e {
        crate::install::LockError::Timeout { waited } => Error::LockTimeout {
            path: lock_path.clone(),
            waited,
        },
        crate::install::LockError::Io { context, source } => Error::Io { context, source },
    })?;

    let marker = venv.join(MARKER);
    let expected = REQUIREMENTS.join("\n");
    // `exists` follows the interpreter symlink, so a venv whose base Python
    // was removed counts as incomplete.
    if python.exists() && fs::read_to_string(&marker).is_ok_and(|m| m == expected) {
        return Ok(python);
    }

    if venv.exists() {
        fs::remove_dir_all(&venv).map_err(io_error(format!("cannot remove {}", venv.display())))?;
    }
    let base = env::var("CORRAL_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let lock_as_stdin = || {
        lock.try_clone()
            .map(Stdio::from)
            .map_err(io_error(format!("cannot share {}", lock_path.display())))
    };
    let output = Command::new(&base)
        .args(["-m", "venv"])
        .arg(&venv)
        .stdin(lock_as_stdin()?)
        .output()
        .map_err(|source| Error::PythonMissing {
            python: base.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Venv {
            dir: venv,
            status: output.status,
            output: crate::install::output_tail(&output.stdout, &output.stderr, TAIL_BYTES),
        });
    }

    let output = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .args(REQUIREMENTS)
        .stdin(lock_as_stdin()?)
        .output()
        .map_err(io_error(format!("cannot run {}", python.display())))?;
    if !output.status.success() {
        return Err(Error::Pip {
            status: output.status,
            output: crate::install::output_tail(&output.stdout, &output.stderr, TAIL_BYTES),
        });
    }

    fs::write(&marker, expected).map_err(io_error(format!("cannot write {}", marker.display())))?;
    Ok(python)
}

/// Starts moto from the venv's interpreter and waits until it answers.
fn launch(python: &Path) -> Result<S3Server> {
    let mut child = Command::new(python)
        .args(["-c", LAUNCHER])
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_error(format!("cannot run {}", python.display())))?;
    let stderr = Tail::drain(child.stderr.take().expect("stderr is piped"));

    // The first line of stdout is the port; the thread then drains the rest.
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        lines.for_each(drop);
    });

    // From here on, dropping `server` kills moto, on every error path too.
    let mut server = S3Server {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        child,
        stderr,
    };
    let started = Instant::now();
    let mut last = "no port reported yet".to_owned();
    loop {
        if let Some(status) = server
            .child
            .try_wait()
            .map_err(io_error("cannot wait for moto"))?
        {
            // Let the drain thread catch up with a traceback.
            thread::sleep(Duration::from_millis(100));
            return Err(Error::Exited {
                status,
                stderr: server.stderr.get(),
            });
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(Error::NotReady {
                waited: started.elapsed(),
                last,
                stderr: server.stderr.get(),
            });
        }
        if server.addr.port() == 0 {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => match line.trim().parse::<u16>() {
                    Ok(port) => {
                        server.addr.set_port(port);
                        last = "no answer yet".to_owned();
                    }
                    Err(_) => last = format!("moto printed {line:?}, not a port"),
                },
                // Disconnected: moto closed stdout; try_wait will tell why.
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
            continue;
        }
        match request(server.addr, "GET", "/", &[], &[], Duration::from_secs(2)) {
            Ok(response) if response.status == 200 => return Ok(server),
            Ok(response) => last = format!("GET / answered {}", response.status),
            Err(error) => last = chain(&error),
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The last [`TAIL_BYTES`] of a stream, filled by a thread.
#[derive(Debug, Clone)]
struct Tail(Arc<Mutex<Vec<u8>>>);

impl Tail {
    fn drain(mut stream: ChildStderr) -> Self {
        let tail = Self(Arc::default());
        let buffer = Arc::clone(&tail.0);
        thread::spawn(move || {
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = stream.read(&mut chunk) {
                let mut buffer = buffer.lock().unwrap_or_else(|e| e.into_inner());
                buffer.extend_from_slice(&chunk[..n]);
                let excess = buffer.len().saturating_sub(TAIL_BYTES);
                buffer.drain(..excess);
            }
        });
        tail
    }

    fn get(&self) -> String {
        let buffer = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response> {
    let name = format!("{method} {path}");
    let context = |what: &str| io_error(format!("{name}: {what}"));
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));

    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !has("content-type") {
        // What S3 assumes anyway; never a form type, whose body moto drops.
        head.push_str("Content-Type: application/octet-stream\r\n");
    }
    if !has("authorization") {
        head.push_str(&format!("Authorization: {DUMMY_AUTHORIZATION}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");

    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(context("connect"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(context("set timeouts"))?;
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(context("send"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(context("receive"))?;
    parse_response(&raw, method == "HEAD")
        .map(|mut response| {
            response.request = name.clone();
            response
        })
        .map_err(|problem| Error::Io {
            context: format!("{name}: {problem}"),
            source: io::Error::from(io::ErrorKind::InvalidData),
        })
}

/// Parses a whole `Connection: close` response.
fn parse_response(raw: &[u8], head_only: bool) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the response has no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
        request: String::new(),
    };

    let rest = &raw[end + 4..];
    if head_only || status == 204 || status == 304 {
        return Ok(response);
    }
    if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        response.body = dechunk(rest)?;
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad content-length {length:?}"))?;
        response.body = rest
            .get(..length)
            .ok_or_else(|| format!("body of {} bytes, expected {length}", rest.len()))?
            .to_vec();
    } else {
        response.body = rest.to_vec();
    }
    Ok(response)
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk has no size line")?;
        let size_line = String::from_utf8_lossy(&rest[..line_end]);
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(..size).ok_or("a chunk is cut short")?);
        rest = rest.get(size + 2..).ok_or("a chunk is cut short")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_with_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Amz-Meta-A: b\r\n\r\nhello";
        let response = parse_response(raw, false).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-amz-meta-a"), Some("b"));
        assert_eq!(response.body, b"hello");
    }

    #[test]
    fn parses_a_chunked_response() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw, false).unwrap().body, b"hello");
    }

    #[test]
    fn a_head_response_has_no_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        let response = parse_response(raw, true).unwrap();
        assert_eq!(response.header("Content-Length"), Some("5"));
        assert!(response.body.is_empty());
    }

    #[test]
    fn rejects_a_truncated_response() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le", false).is_err());
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello";
        assert!(parse_response(short, false).is_err());
    }

    #[test]
    fn the_target_dir_is_the_one_this_test_was_built_into() {
        let target = crate::install::target_dir();
        assert!(
            target.join("CACHEDIR.TAG").is_file(),
            "{}",
            target.display()
        );
        assert!(env::current_exe().unwrap().starts_with(&target));
    }
}
