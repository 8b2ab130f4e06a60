//! A real browser for end-to-end tests: Debian's Chromium, headless, driven
//! from Node scripts through [playwright-core]; and [Uppy], the upload
//! widget, uploading to a tus endpoint from a page of another origin
//! ([`Browser::uppy`]).
//!
//! # Why a browser
//!
//! [`crate::node`] runs tus-js-client in Node, where nothing stands between
//! the client and the server. A page stands behind CORS: every request to
//! an upload endpoint of another origin is preflighted (tus sends headers
//! no simple request may carry), and the page can read only the answer's
//! headers that the server exposes. Only a browser enforces that, and Uppy
//! in a page is what corral's browser users run.
//!
//! # What is installed
//!
//! Chromium is Debian's (`/usr/bin/chromium`, package `chromium`):
//! playwright's own browser builds are downloads no registry serves.
//! Missing, it is installed with `apt-get update && apt-get install -y
//! --no-install-recommends chromium`, which needs root, under a lock of the
//! machine's (`<temp dir>/corral-apt.lock`) so two test processes do not
//! run apt at once. Not root, the error names the command to run. Set
//! `CORRAL_CHROMIUM` to use another Chromium and install none.
//!
//! `crates/testkit/browser` holds a `package.json` and a
//! `package-lock.json` pinning `playwright-core` 1.65.2 and `uppy` 6.0.1,
//! and the scripts and page run here. Uppy's package ships a prebuilt ES
//! module bundle (`dist/uppy.min.mjs`, Uppy's core and every plugin, Tus
//! on tus-js-client 4.3.1), so the page needs no bundler. They are kept
//! apart from [`crate::node`]'s install, which tus tests and benchmarks
//! need without a browser: this one is 79 packages and 47 MB, and a change
//! to either does not reinstall the other. As there, the files are compiled
//! into this crate and written into `<target>/browser-node` (set
//! `CORRAL_BROWSER_DIR` for another directory), where `npm ci` installs
//! exactly what the lock says, once per target directory, under
//! `<target>/browser-node.lock`, complete once the marker names the
//! SHA-256 of those files. Install scripts are not run.
//!
//! A cold install on a fresh machine takes about half a minute: apt's
//! update and Chromium with its libraries (about 20 s), then `npm ci`
//! (about 7 s).
//!
//! # Scripts
//!
//! [`Browser::run_script`] runs an ES module in the install directory, so
//! that it can import `playwright-core` and `./browser.mjs`, the helpers
//! every script here uses: `readInput()` (JSON on stdin), `launch()`
//! (Chromium, headless, with the flags a closed network needs),
//! `serve(routes)` (static files from 127.0.0.1), `watchNetwork(page,
//! origin)` (the page's requests to other origins, CORS preflights
//! included, through the DevTools protocol) and `writeOutput(value)` (one
//! JSON line on stdout, then exit).
//!
//! # Uppy
//!
//! [`Browser::uppy`] runs `uppy-run.mjs`: it serves `uppy.html`, its
//! script and Uppy's bundle from a port of its own, opens the page in
//! Chromium, and calls the page's `corralUppy(config)`, which adds the
//! [`UppyRun`]'s files to an Uppy with the Tus plugin, each a `Blob` of
//! the bytes [`crate::node::file_bytes`] makes from its size and seed, and
//! uploads them with `uppy.upload()`. The [`UppyReport`] says, per file,
//! its upload URL or the error Uppy reported (with the answer's status),
//! and lists what the page sent to the tus server and what was answered.
//! A failed upload is a report with its `error` set, not an error of
//! `uppy`.
//!
//! With [`UppyRun::pause_at`], each upload is paused through
//! `uppy.pauseResume` once its progress passes that fraction, which aborts
//! the request in flight, and resumed as soon as the pause has taken
//! effect: tus-js-client then asks the server (`HEAD`) what it kept.
//!
//! # Lifetimes
//!
//! The script, and with it Chromium and the page's server, is killed if
//! [`Browser::run_script`]'s or [`Browser::uppy`]'s future is dropped, or
//! once the timeout given (for Uppy: the run's own plus a minute) has
//! passed.
//!
//! ```no_run
//! use corral_testkit::browser::{Browser, UppyFile, UppyRun};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let files = vec![UppyFile::generated("a.bin", 1 << 20, 7)];
//! let run = UppyRun::new("http://127.0.0.1:3000/api/uploads", files);
//! let report = Browser::install()?.uppy(&run).await?;
//! assert!(report.files[0].upload_url.is_some(), "{report:#?}");
//! # Ok(())
//! # }
//! ```
//!
//! This module is for Debian (or any Unix with a Chromium of its own).
//!
//! [playwright-core]: https://playwright.dev
//! [Uppy]: https://uppy.io

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::install;
use crate::script::{self, ScriptError};

/// A result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The files installed, by name. Changing any reinstalls.
const FILES: [(&str, &str); 6] = [
    ("package.json", include_str!("../browser/package.json")),
    (
        "package-lock.json",
        include_str!("../browser/package-lock.json"),
    ),
    ("browser.mjs", include_str!("../browser/browser.mjs")),
    ("uppy.html", include_str!("../browser/uppy.html")),
    ("uppy-page.mjs", include_str!("../browser/uppy-page.mjs")),
    (UPPY_RUNNER, include_str!("../browser/uppy-run.mjs")),
];

/// The Uppy runner script.
const UPPY_RUNNER: &str = "uppy-run.mjs";

/// Where Debian's package puts Chromium.
const CHROMIUM: &str = "/usr/bin/chromium";

/// The Debian packages that provide [`CHROMIUM`].
const CHROMIUM_PACKAGES: [&str; 1] = ["chromium"];

/// What is installed, in error messages.
const CHROMIUM_NAME: &str = "Chromium";
const NPM_NAME: &str = "playwright-core and Uppy";

/// How long to wait for another process's install to finish.
const LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// How long the Uppy runner may take past the run's own timeout: starting
/// Chromium, loading the page, closing.
const UPPY_GRACE: Duration = Duration::from_secs(60);

/// Why the browser could not be installed, or a script could not run or
/// report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Chromium or the npm packages could not be installed: not root, apt
    /// or `npm ci` failing (with its output), or the install lock held too
    /// long.
    #[error(transparent)]
    Setup(#[from] crate::emulator::Error),
    /// A script could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// Where.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// A script could not run, or printed no output: `node` missing, an
    /// unsuccessful exit (with its stderr), still running after its time,
    /// or output that is not what was expected.
    #[error(transparent)]
    Script(#[from] ScriptError),
}

/// What a script printed: its JSON output, and the tail of its stderr.
#[derive(Debug, Clone)]
pub struct ScriptOutput<T> {
    /// The script's stdout, parsed.
    pub value: T,
    /// The last few KiB of its stderr, for diagnosing a test.
    pub stderr: String,
}

/// Chromium and the npm packages, installed, ready to run scripts.
#[derive(Debug, Clone)]
pub struct Browser {
    /// The install directory, holding the scripts and `node_modules`.
    dir: PathBuf,
    /// The Chromium executable the scripts launch.
    chromium: PathBuf,
}

impl Browser {
    /// Installs Chromium unless it is there (or `CORRAL_CHROMIUM` names
    /// one), and the npm packages unless this target directory has a
    /// complete install of these very files; see the module docs.
    ///
    /// # Errors
    ///
    /// [`Error::Setup`] if Chromium is missing and this process is not
    /// root (naming the command to run as root), apt-get or `npm ci` fails
    /// (with the tail of its output), or another process holds an install
    /// lock for 10 minutes.
    pub fn install() -> Result<Self> {
        let chromium = match std::env::var_os("CORRAL_CHROMIUM") {
            Some(chromium) => PathBuf::from(chromium),
            None => {
                let chromium = PathBuf::from(CHROMIUM);
                crate::install::apt(&chromium, &CHROMIUM_PACKAGES, LOCK_TIMEOUT)
                    .map_err(crate::emulator::Error::installing(CHROMIUM_NAME))?;
                chromium
            }
        };
        let dir = crate::install::dir("CORRAL_BROWSER_DIR", "browser-node");
        let packages = ["playwright-core", "uppy"];
        install::npm_ci(&dir, "browser-node", &FILES, &packages, LOCK_TIMEOUT)
            .map_err(crate::emulator::Error::installing(NPM_NAME))?;
        Ok(Self { dir, chromium })
    }

    /// The browser installed once for this process, on first use.
    ///
    /// # Errors
    ///
    /// The error of the one attempt to install, to every caller.
    pub fn shared() -> Result<&'static Self, &'static Error> {
        static SHARED: OnceLock<Result<Browser>> = OnceLock::new();
        SHARED.get_or_init(Self::install).as_ref()
    }

    /// [`Browser::shared`], or a panic that says why it cannot run:
    /// browser tests fail rather than skip.
    #[track_caller]
    pub fn require() -> &'static Self {
        crate::process::required(Self::shared(), "the browser")
    }

    /// The install directory: the scripts and their `node_modules`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The Chromium executable the scripts launch.
    pub fn chromium(&self) -> &Path {
        &self.chromium
    }

    /// Runs the ES module `source` with node, from the install directory,
    /// given `input` as JSON on stdin and `CORRAL_CHROMIUM` in its
    /// environment, and parses its stdout as JSON. The script may import
    /// `playwright-core` and `./browser.mjs` (see the module docs).
    ///
    /// Needs a tokio runtime with IO and time enabled, and not paused.
    ///
    /// # Errors
    ///
    /// [`Error::Write`] if the script cannot be written; [`Error::Script`]
    /// if node cannot start, the script exits unsuccessfully (with its
    /// stderr), is still running after `timeout`, or prints no `T`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future kills the script, and with it its browser.
    pub async fn run_script<T: DeserializeOwned>(
        &self,
        source: &str,
        input: &impl Serialize,
        timeout: Duration,
    ) -> Result<ScriptOutput<T>> {
        // Named by its content, so that two runs of one script share a
        // file, written whole (by rename) before either runs it.
        let name = format!("script-{}.mjs", &hex::encode(Sha256::digest(source))[..16]);
        let path = self.dir.join(&name);
        let partial = self
            .dir
            .join(format!("{name}.{}.partial", std::process::id()));
        fs::write(&partial, source)
            .and_then(|()| fs::rename(&partial, &path))
            .map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
        self.run_file(&name, input, timeout).await
    }

    /// Uploads `run`'s files with Uppy in Chromium, and returns the report.
    ///
    /// Failed uploads are in the report, not errors. Needs a tokio runtime
    /// with IO and time enabled, and not paused.
    ///
    /// # Errors
    ///
    /// As [`Browser::run_script`], with the run's timeout plus a minute.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future kills the runner, Chromium, and their uploads.
    pub async fn uppy(&self, run: &UppyRun) -> Result<UppyReport> {
        let limit = run.timeout.saturating_add(UPPY_GRACE);
        let output = self.run_file(UPPY_RUNNER, run, limit).await?;
        Ok(UppyReport {
            stderr: output.stderr,
            ..output.value
        })
    }

    /// Runs `<dir>/<script>`, as [`Browser::run_script`] does.
    async fn run_file<T: DeserializeOwned>(
        &self,
        name: &str,
        input: &impl Serialize,
        timeout: Duration,
    ) -> Result<ScriptOutput<T>> {
        let input = serde_json::to_vec(input).expect("a script's input serializes");
        let mut command = tokio::process::Command::new("node");
        command
            .arg(self.dir.join(name))
            .current_dir(&self.dir)
            .env("CORRAL_CHROMIUM", &self.chromium);
        let output = script::run(command, name, &input, timeout).await?;
        Ok(ScriptOutput {
            value: output.value,
            stderr: output.stderr,
        })
    }
}

/// What [`Browser::uppy`] uploads, and how: the page's config, as JSON
/// with these names in camelCase. Options left `None` are Uppy's defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UppyRun {
    /// The Tus plugin's `endpoint`, e.g.
    /// `http://127.0.0.1:PORT/api/uploads`.
    pub endpoint: String,
    /// The Tus plugin's `headers`, sent with every request, e.g.
    /// `authorization`.
    pub headers: BTreeMap<String, String>,
    /// The files, added to Uppy in order.
    pub files: Vec<UppyFile>,
    /// The most bytes one request carries; `None`: the whole file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
    /// Upload each file as this many partial uploads, concatenated
    /// (tus-js-client's option, passed through by the Tus plugin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_uploads: Option<usize>,
    /// How many files upload at once (the Tus plugin's `limit`, 20 by
    /// default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The delays between retries of a failed request; `Some(vec![])`: no
    /// retries.
    #[serde(
        serialize_with = "crate::node::millis_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_delays: Option<Vec<Duration>>,
    /// Pause each upload once its progress passes this fraction, then
    /// resume it (see the module docs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_at: Option<f64>,
    /// How long the uploads may take, from the page's call to Uppy.
    #[serde(rename = "timeoutMs", serialize_with = "crate::node::millis")]
    pub timeout: Duration,
}

impl UppyRun {
    /// `files` to `endpoint`, with Uppy's defaults and two minutes.
    pub fn new(endpoint: impl Into<String>, files: Vec<UppyFile>) -> Self {
        Self {
            endpoint: endpoint.into(),
            headers: BTreeMap::new(),
            files,
            chunk_size: None,
            parallel_uploads: None,
            limit: None,
            retry_delays: None,
            pause_at: None,
            timeout: Duration::from_secs(120),
        }
    }
}

/// A file the page makes: a `Blob` of [`crate::node::file_bytes`]`(size,
/// seed)`, added to Uppy as `name` (which the Tus plugin sends as the
/// metadata's `name` and `filename`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UppyFile {
    /// Its name.
    pub name: String,
    /// Its length in bytes.
    pub size: u64,
    /// The seed of its bytes.
    pub seed: u32,
}

impl UppyFile {
    /// The file `name` of `size` bytes made from `seed`.
    pub fn generated(name: impl Into<String>, size: u64, seed: u32) -> Self {
        Self {
            name: name.into(),
            size,
            seed,
        }
    }

    /// The SHA-256, in hex, of its bytes.
    pub fn sha256(&self) -> String {
        crate::node::file_sha256(self.size, self.seed)
    }
}

/// What [`Browser::uppy`] reports.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UppyReport {
    /// The page's origin, `http://127.0.0.1:PORT`: another than the tus
    /// server's.
    pub origin: String,
    /// Whether the uploads were still going at [`UppyRun::timeout`].
    pub timed_out: bool,
    /// Each file, in the run's order.
    pub files: Vec<UppyFileReport>,
    /// How many files `uppy.upload()` counted as uploaded.
    pub successful: usize,
    /// How many it counted as failed.
    pub failed: usize,
    /// What the page sent to other origins, in order, CORS preflights
    /// included.
    pub requests: Vec<PageRequest>,
    /// What the page's console said, and its uncaught errors: a request
    /// refused by CORS is explained here.
    pub console: Vec<String>,
    /// The tail of the runner's stderr.
    #[serde(skip)]
    pub stderr: String,
}

impl UppyReport {
    /// The page's requests with this method, e.g. `OPTIONS`.
    pub fn requests_by(&self, method: &str) -> impl Iterator<Item = &PageRequest> {
        let method = method.to_owned();
        self.requests.iter().filter(move |r| r.method == method)
    }
}

/// One file's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UppyFileReport {
    /// Its name.
    pub name: String,
    /// Its length in bytes.
    pub size: u64,
    /// The upload's URL, once Uppy reported it uploaded.
    pub upload_url: Option<String>,
    /// The error Uppy reported for it, if any.
    pub error: Option<String>,
    /// The status of the answer that failed it, if one came.
    pub status: Option<u16>,
    /// The progress, in bytes, at which it was paused.
    pub paused_at_bytes: Option<u64>,
    /// Whether it was resumed after that pause.
    pub resumed: bool,
}

/// A request the page made to another origin, as the DevTools protocol
/// saw it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PageRequest {
    /// Its method.
    pub method: String,
    /// Its URL.
    pub url: String,
    /// Chromium's kind of request: `XHR`, `Preflight`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The answer's status; `None` if none came.
    pub status: Option<u16>,
    /// The answer's headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// Why it failed, e.g. a CORS error, if it did.
    pub failure: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_is_the_page_s_json() {
        let run = UppyRun {
            parallel_uploads: Some(3),
            retry_delays: Some(vec![]),
            pause_at: Some(0.4),
            ..UppyRun::new(
                "http://127.0.0.1:1/api/uploads",
                vec![UppyFile::generated("a.bin", 5, 1)],
            )
        };
        assert_eq!(
            serde_json::to_value(&run).unwrap(),
            serde_json::json!({
                "endpoint": "http://127.0.0.1:1/api/uploads",
                "headers": {},
                "files": [{"name": "a.bin", "size": 5, "seed": 1}],
                "parallelUploads": 3,
                "retryDelays": [],
                "pauseAt": 0.4,
                "timeoutMs": 120000,
            })
        );
    }
}
