//! The real tus clients and a reference tus server, run from Rust tests and
//! benchmarks: [tus-js-client] uploads files as a [`TusRun`] says and
//! reports on each ([`TusClient::run`]); [@tus/server] stores uploads into
//! a directory ([`TusNodeServer`]), so a benchmark can measure corral's tus
//! endpoint and Node's reference server in one run.
//!
//! # Why the JavaScript client
//!
//! corral's tus endpoint serves browsers and apps that use tus-js-client,
//! the protocol's reference client (Uppy uploads through it). A tus client
//! written here would share the endpoint's reading of the protocol; this
//! one does what those users' clients do: its creation, creation with
//! upload, chunking, retries, resumption through a URL storage and its
//! IETF-draft modes.
//!
//! # Where it is installed
//!
//! `crates/testkit/node` holds a `package.json` and a `package-lock.json`
//! pinning `tus-js-client` 4.3.1, `@tus/server` 2.4.5 and `@tus/file-store`
//! 2.1.1 (the file store released with it, on the same `@tus/utils`), and
//! the two scripts run here: `tus-run.mjs` and `tus-server.mjs`. All four
//! are compiled into this crate and written into `<target>/tus-node`
//! (`<target>` found as in [`crate::s3`]; set `CORRAL_TUS_NODE_DIR` for
//! another directory), where `npm ci` installs exactly what the lock says.
//! As for [`crate::azure`]: once per target directory, under an exclusive
//! file lock (`<target>/tus-node.lock`), complete once the marker file
//! `corral-installed`, written last, names the SHA-256 of the four files;
//! changing any of them reinstalls. Install scripts are not run. It needs
//! Node.js 20.19 or later (what `@tus/server` asks for) and npm on `PATH`.
//! A cold install takes a few seconds (37 packages, 15 MB).
//!
//! # The runner
//!
//! [`TusClient::run`] gives `node tus-run.mjs` the [`TusRun`] as JSON on
//! stdin and reads a [`TusReport`] from its stdout. Each file is `{size,
//! seed}`, whose bytes are made by a generator this module has too
//! ([`file_bytes`], [`FileContent`]), so a test can check what a server
//! stored without the bytes crossing a pipe; or `{path}`. A failed upload
//! is a report with its `error` set, not an error of `run`: `run` fails
//! only when the runner could not run or report at all.
//!
//! With [`TusRun::cut_at`], each upload is aborted once its progress passes
//! that fraction, then resumed by a second `tus.Upload` that finds the
//! first through `findPreviousUploads()`. In Node, tus-js-client would
//! resume nothing by default: its `urlStorage` is a `NoopUrlStorage` that
//! keeps nothing (its fingerprint of a `Buffer` would do). So the runner
//! gives both uploads a URL storage in memory and a fingerprint of the
//! seed and size. tus-js-client reports progress within a request at most
//! every 100 ms, which on 127.0.0.1 is often once per file; the runner
//! therefore feeds the request that crosses the cut from a stream that
//! stops at the cut's byte and then reports it, so the abort falls
//! mid-request at that byte every time ([`TusFileReport::bytes_sent_before_cut`]).
//! The offset the resumed upload starts from
//! ([`TusFileReport::offset_at_cut`]) is that of its first `PATCH` the
//! server accepted, read from tus-js-client's own requests (a `HEAD` of
//! our own could see another), or what its last `HEAD` answered if it had
//! nothing left to send. Not what its first `HEAD` answered: the cut
//! request and that `HEAD` travel on two connections, and a server that
//! reads the `HEAD` first answers the offset from before the cut
//! request's bytes (the `PATCH` from there then gets `409`, and
//! tus-js-client asks again).
//!
//! # What @tus/server does not do
//!
//! It has no concatenation extension: `parallelUploads` above 1 is
//! refused with 501. It speaks tus 1.0 only: the IETF-draft protocols send
//! no `Tus-Resumable` and are refused with 412. It accepts empty uploads.
//!
//! # Lifetimes
//!
//! The runner is killed if [`TusClient::run`]'s future is dropped, or
//! once the run's own timeout plus 30 s has passed. [`TusNodeServer`] runs
//! under the wrapper of `process.rs`: killed when dropped or when this
//! process exits.
//!
//! ```no_run
//! use corral_testkit::node::{self, TusClient, TusFile, TusNodeServer, TusRun};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join("tus-example");
//! let server = TusNodeServer::start(&dir)?;
//! let files = vec![TusFile::Generated { size: 1 << 20, seed: 7 }];
//! let report = TusClient::install()?
//!     .run(&TusRun::new(server.endpoint(), files))
//!     .await?;
//! let url = report.files[0].url.as_deref().expect("created");
//! let stored = std::fs::read(server.stored(url).expect("ours"))?;
//! assert_eq!(stored, node::file_bytes(1 << 20, 7));
//! # Ok(())
//! # }
//! ```
//!
//! This module is for Unix.
//!
//! [tus-js-client]: https://github.com/tus/tus-js-client
//! [@tus/server]: https://github.com/tus/tus-node-server

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::install;
use crate::process::Process;
use crate::script::{self, ScriptError};

/// A result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The files installed, by name. Changing any reinstalls.
const FILES: [(&str, &str); 4] = [
    ("package.json", include_str!("../node/package.json")),
    (
        "package-lock.json",
        include_str!("../node/package-lock.json"),
    ),
    (RUNNER, include_str!("../node/tus-run.mjs")),
    (SERVER, include_str!("../node/tus-server.mjs")),
];

/// The runner script.
const RUNNER: &str = "tus-run.mjs";

/// The server script.
const SERVER: &str = "tus-server.mjs";

/// What is installed, in error messages.
const NAME: &str = "tus-js-client and @tus/server";

/// The reference server, in error messages.
const SERVER_NAME: &str = "@tus/server";

/// The path @tus/server serves tus at.
const SERVER_PATH: &str = "/files";

/// How long to wait for another process's install to finish.
const LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// How long the runner may take past its own timeout to report.
const REPORT_GRACE: Duration = Duration::from_secs(30);

/// Why the tus clients or server could not be installed, started or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// npm missing, `npm ci` failing (with npm's output), the install lock
    /// held too long, or @tus/server exiting or not answering.
    #[error(transparent)]
    Setup(#[from] crate::emulator::Error),
    /// The runner could not run, or printed no report: `node` missing, a
    /// config it refused (it exits 2, saying why on stderr), a crash, or
    /// still running [`TusRun::timeout`] plus 30 s after it started.
    #[error(transparent)]
    Runner(#[from] ScriptError),
}

/// What [`TusClient::run`] uploads, and how: the runner's config, as JSON
/// with these names in camelCase.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TusRun {
    /// The creation URL, e.g. `http://127.0.0.1:PORT/api/uploads`.
    pub endpoint: String,
    /// Headers sent with every request, e.g. `Authorization`.
    pub headers: BTreeMap<String, String>,
    /// The files, uploaded in order, [`TusRun::concurrency`] at a time.
    pub files: Vec<TusFile>,
    /// How many uploads are in flight at once (at least 1).
    pub concurrency: usize,
    /// The most bytes one request carries; `None`: the whole file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
    /// Whether the creation request carries the first chunk (the
    /// creation-with-upload extension).
    pub upload_data_during_creation: bool,
    /// Upload each file as this many partial uploads, concatenated (the
    /// concatenation extension); `None`: one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_uploads: Option<usize>,
    /// The protocol tus-js-client speaks.
    pub protocol: TusProtocol,
    /// Abort each upload once its progress passes this fraction (0 to 1)
    /// and resume it with a new `tus.Upload`; see the module docs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut_at: Option<f64>,
    /// The delays before each retry of a failed request; `None`:
    /// tus-js-client's own (0, 1, 3 and 5 s); empty: no retries.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "millis_list"
    )]
    pub retry_delays: Option<Vec<Duration>>,
    /// Statuses retried besides those tus-js-client retries by itself
    /// (anything but a 4xx, or a 409 or 423), through its `onShouldRetry`:
    /// by default it gives up on a `429` at once, whatever `Retry-After`
    /// says, so a deployment behind an admission limit adds `429` here.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retry_statuses: Vec<u16>,
    /// Upload metadata of every file, over the defaults `filename` =
    /// `file-<index>.bin` and `filetype` = `application/octet-stream`.
    pub metadata: BTreeMap<String, String>,
    /// Make (or read) every file's bytes and hash them before the clock
    /// starts, all held in memory, so that the run's time is the uploads'
    /// alone; otherwise each file's are made when its upload starts, and
    /// count in the time (see `node/tus-run.mjs`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub prepare: bool,
    /// After this, the runner aborts the uploads still running and reports
    /// them failed, and those not started as not started.
    #[serde(rename = "timeoutMs", serialize_with = "millis")]
    pub timeout: Duration,
}

impl TusRun {
    /// `files` to `endpoint`, one at a time, with the defaults.
    pub fn new(endpoint: impl Into<String>, files: Vec<TusFile>) -> Self {
        Self {
            endpoint: endpoint.into(),
            files,
            ..Self::default()
        }
    }
}

impl Default for TusRun {
    /// No endpoint and no files; one at a time, each in one request, tus
    /// 1.0, no cut, tus-js-client's retries, a 2 minute timeout.
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            headers: BTreeMap::new(),
            files: Vec::new(),
            concurrency: 1,
            chunk_size: None,
            upload_data_during_creation: false,
            parallel_uploads: None,
            protocol: TusProtocol::default(),
            cut_at: None,
            retry_delays: None,
            retry_statuses: Vec::new(),
            metadata: BTreeMap::new(),
            prepare: false,
            timeout: Duration::from_secs(120),
        }
    }
}

/// A file to upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TusFile {
    /// `size` bytes made from `seed` (see [`file_bytes`]).
    Generated {
        /// Its length.
        size: u64,
        /// What its bytes are made from.
        seed: u32,
    },
    /// The file at `path`, read whole into memory.
    Path {
        /// Where it is.
        path: PathBuf,
    },
}

/// The protocol tus-js-client speaks (its `protocol` option).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum TusProtocol {
    /// tus 1.0.0.
    #[default]
    #[serde(rename = "tus-v1")]
    TusV1,
    /// draft-ietf-httpbis-resumable-upload-03 (interop version 5).
    #[serde(rename = "ietf-draft-03")]
    IetfDraft03,
    /// draft-ietf-httpbis-resumable-upload-05 (interop version 6).
    #[serde(rename = "ietf-draft-05")]
    IetfDraft05,
}

/// What a run did: the runner's report, as JSON with these names in
/// camelCase.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TusReport {
    /// One per [`TusRun::files`], in the same order.
    pub files: Vec<TusFileReport>,
    /// The run as a whole.
    pub totals: TusTotals,
    /// Whether [`TusRun::timeout`] passed before every upload ended.
    pub timed_out: bool,
    /// The tail of the runner's stderr (not part of its JSON).
    #[serde(skip)]
    pub stderr: String,
}

impl TusReport {
    /// The files whose upload failed, with their index.
    pub fn failures(&self) -> impl Iterator<Item = (usize, &TusFileReport)> {
        self.files
            .iter()
            .enumerate()
            .filter(|(_, file)| file.error.is_some())
    }
}

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TusFileReport {
    /// The upload's URL, once the server gave one.
    pub url: Option<String>,
    /// The file's length; `None` for a file at a path that was not read.
    pub size: Option<u64>,
    /// The SHA-256 of the file's bytes, what the client sent, in hex;
    /// `None` if they were never read.
    pub sha256: Option<String>,
    /// Where the resumed upload went on from: the `Upload-Offset` of its
    /// first `PATCH` the server accepted, or, if it sent none, the one the
    /// server answered to its last `HEAD` (see the [module docs](self)).
    /// `None` without a cut or a resumption.
    pub offset_at_cut: Option<u64>,
    /// The bytes of the file handed to requests when the upload was cut.
    /// `None` when it ended before the cut, or is empty.
    pub bytes_sent_before_cut: Option<u64>,
    /// Whether, after the cut, the new upload found the first and went on
    /// from its offset. Not when the cut fell before the server gave a URL
    /// (during a creation with upload): the new upload starts afresh.
    pub resumed: bool,
    /// Why the upload failed: tus-js-client's message, with the status and
    /// body of the response, or that the run timed out.
    pub error: Option<String>,
    /// From the start of its first upload to the end of its last.
    #[serde(rename = "elapsedMs", deserialize_with = "from_millis")]
    pub elapsed: Duration,
}

/// A run's figures.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TusTotals {
    /// From the first upload's start to the last one's end.
    #[serde(rename = "elapsedMs", deserialize_with = "from_millis")]
    pub elapsed: Duration,
    /// The bytes of the files uploaded without error.
    pub bytes: u64,
    /// `bytes` in MiB over `elapsed` in seconds; `None` if no time passed.
    pub mib_per_sec: Option<f64>,
    /// How many files failed.
    pub failed: usize,
}

pub(crate) fn millis<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    serializer.serialize_u64(millis)
}

pub(crate) fn millis_list<S: Serializer>(
    delays: &Option<Vec<Duration>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let millis = delays.as_ref().map(|delays| {
        (delays.iter())
            .map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            .collect::<Vec<_>>()
    });
    millis.serialize(serializer)
}

fn from_millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let millis = f64::deserialize(deserializer)?;
    Duration::try_from_secs_f64(millis / 1000.0).map_err(serde::de::Error::custom)
}

/// tus-js-client, installed, ready to run uploads.
#[derive(Debug, Clone)]
pub struct TusClient {
    /// The install directory, holding the scripts and `node_modules`.
    dir: PathBuf,
}

impl TusClient {
    /// Installs tus-js-client and @tus/server unless this target directory
    /// has a complete install of these very files; see the module docs.
    ///
    /// # Errors
    ///
    /// [`Error::Setup`] if npm is missing, `npm ci` fails (with the tail of
    /// its output) or another process holds the install lock for 10
    /// minutes.
    pub fn install() -> Result<Self> {
        let dir = crate::install::dir("CORRAL_TUS_NODE_DIR", "tus-node");
        let packages = ["tus-js-client", "@tus/server", "@tus/file-store"];
        install::npm_ci(&dir, "tus-node", &FILES, &packages, LOCK_TIMEOUT)
            .map_err(crate::emulator::Error::installing(NAME))?;
        Ok(Self { dir })
    }

    /// The client installed once for this process, on first use.
    ///
    /// # Errors
    ///
    /// The error of the one attempt to install, to every caller.
    pub fn shared() -> Result<&'static Self, &'static Error> {
        static SHARED: OnceLock<Result<TusClient>> = OnceLock::new();
        SHARED.get_or_init(Self::install).as_ref()
    }

    /// [`TusClient::shared`], or a panic that says why it cannot run: tus
    /// tests fail rather than skip.
    #[track_caller]
    pub fn require() -> &'static Self {
        crate::process::required(Self::shared(), "tus-js-client")
    }

    /// The install directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `node tus-run.mjs` on `run` and returns its report.
    ///
    /// Failed uploads are in the report, not errors. Needs a tokio runtime
    /// with IO and time enabled, and not paused: the deadline is a tokio
    /// timer.
    ///
    /// # Errors
    ///
    /// If node cannot be started, or the runner exits without a report
    /// ([`Error::Runner`], with its stderr: e.g. a config it refused), or
    /// still runs [`TusRun::timeout`] plus 30 s after it started.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future kills the runner, and with it its uploads.
    pub async fn run(&self, run: &TusRun) -> Result<TusReport> {
        let config = serde_json::to_vec(run).expect("a TusRun serializes");
        let mut command = tokio::process::Command::new("node");
        command.arg(self.dir.join(RUNNER)).arg("-");
        let limit = run.timeout.saturating_add(REPORT_GRACE);
        let output = script::run::<TusReport>(command, RUNNER, &config, limit).await?;
        Ok(TusReport {
            stderr: output.stderr,
            ..output.value
        })
    }
}

/// @tus/server with @tus/file-store on 127.0.0.1, storing into a
/// directory: Node's reference tus server, to compare corral with.
#[derive(Debug)]
pub struct TusNodeServer {
    addr: SocketAddr,
    /// Where uploads are stored; left in place on drop.
    dir: PathBuf,
    /// node, killed when this process exits or the value is dropped.
    process: Process,
}

/// The line `tus-server.mjs` prints once it listens.
#[derive(Deserialize)]
struct Listening {
    port: u16,
}

impl TusNodeServer {
    /// Starts a server storing each upload as `dir/<id>` (and its metadata
    /// as `dir/<id>.json`), creating `dir` if need be, installing first as
    /// [`TusClient::install`] does. Stopped on drop; `dir` is left.
    ///
    /// # Errors
    ///
    /// [`Error::Setup`] if the install fails, or the server exits or does
    /// not answer within 30 s (with its output).
    pub fn start(dir: &Path) -> Result<Self> {
        let client = TusClient::install()?;
        let script = client.dir.join(SERVER);
        let (process, addr) = crate::emulator::launch(
            SERVER_NAME,
            "node",
            |command| {
                command.arg(&script).arg(dir).arg("0");
            },
            |line| serde_json::from_str::<Listening>(line).ok().map(|l| l.port),
            // Any answer will do: GET of the creation URL is a 404.
            |addr| crate::emulator::answers(addr, SERVER_PATH, &[]).map(drop),
        )?;
        Ok(Self {
            addr,
            dir: dir.to_path_buf(),
            process,
        })
    }

    /// The creation URL, `http://127.0.0.1:PORT/files`.
    pub fn endpoint(&self) -> String {
        format!("http://{}{SERVER_PATH}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory uploads are stored in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file an upload's bytes are stored in, given the upload's URL;
    /// `None` for a URL that is not one of this server's uploads.
    pub fn stored(&self, url: &str) -> Option<PathBuf> {
        let prefix = format!("{}/", self.endpoint());
        let id = url.strip_prefix(&prefix)?;
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        (!id.is_empty() && id.chars().all(plain)).then(|| self.dir.join(id))
    }

    /// The last few KiB of the server's output, for diagnosing a test.
    pub fn log_tail(&self) -> String {
        self.process.output()
    }
}

/// The `size` bytes the runner makes from `seed`: see [`FileContent`].
pub fn file_bytes(size: u64, seed: u32) -> Vec<u8> {
    let capacity = usize::try_from(size).expect("a file to hold in memory fits in usize");
    let mut bytes = Vec::with_capacity(capacity);
    FileContent::new(size, seed)
        .read_to_end(&mut bytes)
        .expect("reading generated bytes cannot fail");
    bytes
}

/// The SHA-256, in hex, of [`file_bytes`]`(size, seed)`, without holding
/// them.
pub fn file_sha256(size: u64, seed: u32) -> String {
    let mut hash = Sha256::new();
    let mut content = FileContent::new(size, seed);
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = content
            .read(&mut buffer)
            .expect("reading generated bytes cannot fail");
        if n == 0 {
            return hex::encode(hash.finalize());
        }
        hash.update(&buffer[..n]);
    }
}

/// The bytes of a generated file, as a reader: xorshift32 words written
/// little-endian, the last one cut short at `size`, from a state of
/// `seed * 0x9E3779B1 ^ 0x85EBCA6B` (1 if that is 0). `tus-run.mjs`'s
/// `generate` makes the same; a test checks they agree.
#[derive(Debug, Clone)]
pub struct FileContent {
    state: u32,
    /// Bytes still to read.
    remaining: u64,
    /// The current word's bytes, of which `word[used..]` are unread.
    word: [u8; 4],
    used: usize,
}

impl FileContent {
    /// The `size` bytes made from `seed`.
    pub fn new(size: u64, seed: u32) -> Self {
        let state = seed.wrapping_mul(0x9E37_79B1) ^ 0x85EB_CA6B;
        Self {
            state: if state == 0 { 1 } else { state },
            remaining: size,
            word: [0; 4],
            used: 4,
        }
    }

    fn next_word(&mut self) -> [u8; 4] {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        x.to_le_bytes()
    }
}

impl Read for FileContent {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.remaining).map_or(buf.len(), |left| left.min(buf.len()));
        let mut out = &mut buf[..n];
        while !out.is_empty() {
            if self.used == 4 && out.len() >= 4 {
                let (word, rest) = out.split_at_mut(4);
                word.copy_from_slice(&self.next_word());
                out = rest;
                continue;
            }
            if self.used == 4 {
                self.word = self.next_word();
                self.used = 0;
            }
            let take = (4 - self.used).min(out.len());
            let (head, rest) = out.split_at_mut(take);
            head.copy_from_slice(&self.word[self.used..self.used + take]);
            self.used += take;
            out = rest;
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_bytes_do_not_depend_on_how_they_are_read() {
        let whole = file_bytes(1001, 42);
        assert_eq!(whole.len(), 1001);
        let mut content = FileContent::new(1001, 42);
        let mut pieces = Vec::new();
        let mut buffer = [0; 7];
        loop {
            let n = content.read(&mut buffer[..(pieces.len() % 7) + 1]).unwrap();
            if n == 0 {
                break;
            }
            pieces.extend_from_slice(&buffer[..n]);
        }
        assert_eq!(pieces, whole);
        assert_eq!(file_sha256(1001, 42), hex::encode(Sha256::digest(&whole)));
    }

    #[test]
    fn generated_bytes_are_prefixes_of_each_other_and_differ_by_seed() {
        assert_eq!(file_bytes(10, 3)[..], file_bytes(100, 3)[..10]);
        assert_ne!(file_bytes(64, 3), file_bytes(64, 4));
        assert!(file_bytes(0, 3).is_empty());
    }

    #[test]
    fn the_config_is_the_runner_s_json() {
        let run = TusRun {
            chunk_size: Some(1024),
            cut_at: Some(0.4),
            retry_delays: Some(vec![Duration::from_millis(250)]),
            ..TusRun::new(
                "http://127.0.0.1:1/files",
                vec![
                    TusFile::Generated { size: 5, seed: 1 },
                    TusFile::Path {
                        path: "/tmp/x".into(),
                    },
                ],
            )
        };
        let json = serde_json::to_value(&run).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "endpoint": "http://127.0.0.1:1/files",
                "headers": {},
                "files": [{"size": 5, "seed": 1}, {"path": "/tmp/x"}],
                "concurrency": 1,
                "chunkSize": 1024,
                "uploadDataDuringCreation": false,
                "protocol": "tus-v1",
                "cutAt": 0.4,
                "retryDelays": [250],
                "metadata": {},
                "timeoutMs": 120000,
            })
        );
    }
}
