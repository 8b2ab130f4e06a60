//! An Azure Blob Storage emulator on 127.0.0.1 for tests, installed and
//! started by this crate with no manual step.
//!
//! # Why Azurite
//!
//! The Azure backend has to be tested against something that speaks Azure
//! Blob Storage's wire protocol — Shared Key signatures, block blobs built
//! from blocks, `x-ms-meta-*` metadata, XML listings with markers — not
//! against `object_store`'s in-memory store. [Azurite] is Microsoft's own
//! emulator, the one `object_store`'s CI and the Azure SDKs test against,
//! and it installs from npm.
//!
//! # Where it is installed
//!
//! `npm install azurite@3.37.0` into `<target>/azurite`, where `<target>` is
//! the cargo target directory found as in [`crate::s3`] (set
//! `CORRAL_AZURITE_DIR` for another directory), once per target directory,
//! under an exclusive file lock (`<target>/azurite.lock`), complete only
//! once the marker file `corral-installed`, written last, names the pinned
//! version. It needs Node.js 20 or later and npm on `PATH` (npm warns that
//! a dependency, `@azure/core-process`, asks for Node 22; Azurite runs on
//! 20 all the same). Install scripts are not run: Azurite needs none. A
//! cold install takes 25 to 40 s (360 MB of node modules); a start about
//! 1.5 s.
//!
//! # Lifetimes
//!
//! As for moto: [`AzureServer::require`] (or [`AzureServer::shared`]) gives
//! one server per test process, started on first use, which tests keep
//! apart by creating their own container ([`AzureServer::new_container`]);
//! it runs under a wrapper that kills it when this process exits, however
//! it exits (see `process.rs`). [`AzureServer::start`] gives a test its
//! own, stopped on drop.
//!
//! Only the blob service runs (`azurite-blob`), with
//! `--blobPort 0`: Azurite binds a port of the OS's choosing and logs the
//! one it got, so two servers starting at once never race for a port. Its
//! other options: `--inMemoryPersistence` (nothing is written to disk),
//! `--skipApiVersionCheck` (any `x-ms-version` `object_store` sends is
//! accepted), `--loose` (headers Azurite does not know are ignored rather
//! than refused) and `--disableTelemetry` (Azurite would otherwise report
//! usage over the network).
//!
//! # When the server cannot start: fail, never skip
//!
//! Every error says why (see [`Error`]): npm missing or failing, Azurite
//! exiting or not ready within 30 s, with the tail of its output.
//! [`AzureServer::require`] panics with it: Azure tests fail rather than
//! skip, locally and in CI.
//!
//! # Talking to it
//!
//! Azurite serves the well-known development account [`ACCOUNT`], with the
//! key [`ACCESS_KEY`], path-style: the account is the first segment of
//! every path. An `object_store` Azure client takes
//! [`AzureServer::account_endpoint`] as its endpoint:
//!
//! ```no_run
//! use corral_testkit::azure::{self, AzureServer};
//!
//! let azurite = AzureServer::require();
//! let container = azurite.new_container("round-trip")?;
//! // MicrosoftAzureBuilder::new().with_endpoint(azurite.account_endpoint())
//! //     .with_allow_http(true).with_account(azure::ACCOUNT)
//! //     .with_access_key(azure::ACCESS_KEY).with_container_name(&container)
//! # Ok::<(), corral_testkit::azure::Error>(())
//! ```
//!
//! (`object_store`'s `with_use_emulator(true)` would take the emulator's
//! URL only from the `AZURITE_BLOB_STORAGE_URL` environment variable, one
//! for the whole process; an endpoint is per client.)
//!
//! Containers are created with a Shared Key signed request
//! ([`AzureServer::create_container`]): Azurite, like Azure, lets no
//! anonymous caller create one.
//!
//! This module is for Unix.
//!
//! [Azurite]: https://github.com/Azure/Azurite

use std::env;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

use crate::http::{self, Response};
use crate::install::Step;
use crate::process::Process;

pub use crate::emulator::{Error, Result};

/// What is installed. Changing it reinstalls.
const PACKAGE: &str = "azurite@3.37.0";

/// The emulator, in error messages.
const NAME: &str = "Azurite";

/// How long to wait for another process's install to finish.
const LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What Azurite logs once it has bound its port, before the URL.
const LISTENING: &str = "successfully listens on http://";

/// The API version of the requests [`AzureServer::request`] signs.
const API_VERSION: &str = "2021-08-06";

/// The development account every Azurite serves.
pub const ACCOUNT: &str = "devstoreaccount1";

/// [`ACCOUNT`]'s key, published by Microsoft for the emulator.
pub const ACCESS_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite blob service on 127.0.0.1.
#[derive(Debug)]
pub struct AzureServer {
    addr: SocketAddr,
    /// Azurite, killed when this process exits or the value is dropped.
    process: Process,
}

impl AzureServer {
    /// Starts a server of the caller's own, installing Azurite first if
    /// this target directory has no complete install.
    ///
    /// It is stopped when the value is dropped. Most tests should use
    /// [`AzureServer::shared`] instead, which starts one server per
    /// process.
    ///
    /// # Errors
    ///
    /// If npm is missing, the install fails, or Azurite does not answer
    /// within 30 s; see [`Error`].
    pub fn start() -> Result<Self> {
        let blob = install()?;
        launch(&blob)
    }

    /// The server shared by every test in this process, started on first
    /// use. Concurrent first callers wait for the one start.
    ///
    /// It is never dropped; it is killed when this process exits.
    ///
    /// # Errors
    ///
    /// The error of the one attempt to start it, to every caller.
    pub fn shared() -> Result<&'static Self, &'static Error> {
        static SHARED: OnceLock<Result<AzureServer>> = OnceLock::new();
        SHARED.get_or_init(Self::start).as_ref()
    }

    /// [`AzureServer::shared`], or a panic that says why the server cannot
    /// run. Azure tests fail rather than skip; see the module docs.
    #[track_caller]
    pub fn require() -> &'static Self {
        crate::process::required(Self::shared(), "the Azure emulator")
    }

    /// The blob service's URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The account's URL, `http://127.0.0.1:PORT/devstoreaccount1`: the
    /// endpoint for Azure clients.
    pub fn account_endpoint(&self) -> String {
        format!("http://{}/{ACCOUNT}", self.addr)
    }

    /// Creates a container.
    ///
    /// # Errors
    ///
    /// If the request fails or Azurite refuses, e.g. because the container
    /// exists or its name is not 3 to 63 lowercase letters, digits and
    /// hyphens.
    pub fn create_container(&self, name: &str) -> Result<()> {
        let path = format!("/{ACCOUNT}/{name}?restype=container");
        self.request("PUT", &path, &[], &[])?.ok()?;
        Ok(())
    }

    /// Creates a container named `{prefix}-{n}`, unique in this process,
    /// and returns its name: how tests sharing a server stay apart.
    ///
    /// # Errors
    ///
    /// As [`AzureServer::create_container`].
    pub fn new_container(&self, prefix: &str) -> Result<String> {
        crate::emulator::create_unique(prefix, |name| self.create_container(name))
    }

    /// Sends one request, signed with [`ACCOUNT`]'s Shared Key, and reads
    /// the whole response, whatever its status. `path` starts with the
    /// account (`/devstoreaccount1/container/blob?comp=metadata`); its query
    /// is signed as one parameter a name, unencoded. `x-ms-date` and
    /// `x-ms-version` are added; the other `x-ms-*` headers given are
    /// signed.
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
        let date = httpdate::fmt_http_date(SystemTime::now());
        let mut all: Vec<(&str, &str)> = vec![("x-ms-date", &date), ("x-ms-version", API_VERSION)];
        all.extend_from_slice(headers);
        let signature = shared_key(method, path, &all, body.len());
        let authorization = format!("SharedKey {ACCOUNT}:{signature}");
        all.push(("Authorization", &authorization));
        let addr = self.addr;
        Ok(http::request(
            addr,
            method,
            path,
            &all,
            body,
            REQUEST_TIMEOUT,
        )?)
    }

    /// The last few KiB of Azurite's output (a line per request), for
    /// diagnosing a failing test.
    pub fn log_tail(&self) -> String {
        self.process.output()
    }
}

/// Makes sure Azurite is installed, and returns its blob service's script.
fn install() -> Result<PathBuf> {
    let dir = crate::install::dir("CORRAL_AZURITE_DIR", "azurite");
    let blob = dir.join("node_modules").join(".bin").join("azurite-blob");
    crate::install::ensure(
        &dir,
        PACKAGE,
        LOCK_TIMEOUT,
        || blob.exists(),
        |lock| {
            let mut npm = Command::new("npm");
            npm.args(["install", "--prefix"])
                .arg(&dir)
                .args([
                    "--no-audit",
                    "--no-fund",
                    "--ignore-scripts",
                    "--loglevel=error",
                ])
                .arg(PACKAGE);
            lock.run(Step::Npm, &mut npm)
        },
    )
    .map_err(Error::installing(NAME))?;
    Ok(blob)
}

/// Starts Azurite's blob service on a port of its choosing and waits until
/// it answers.
fn launch(blob: &Path) -> Result<AzureServer> {
    let (process, addr) = crate::emulator::launch(
        NAME,
        blob,
        |command| {
            command
                .args(["--blobHost", "127.0.0.1", "--blobPort", "0"])
                .args(["--inMemoryPersistence", "--skipApiVersionCheck", "--loose"])
                .arg("--disableTelemetry")
                // Whatever it may write, away from the test's directory.
                .current_dir(env::temp_dir());
        },
        |line| {
            let url = &line[line.find(LISTENING)? + LISTENING.len()..];
            url.trim().rsplit_once(':')?.1.parse().ok()
        },
        // Any answer will do: an unsigned request is refused.
        |addr| crate::emulator::answers(addr, "/", &[]).map(drop),
    )?;
    Ok(AzureServer { addr, process })
}

/// The Shared Key signature of a request to [`ACCOUNT`], in base64.
fn shared_key(method: &str, path: &str, headers: &[(&str, &str)], length: usize) -> String {
    let header = |name: &str| {
        let found = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map_or("", |(_, v)| *v)
    };
    let mut canonical: Vec<(String, &str)> = (headers.iter())
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-ms-"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim()))
        .collect();
    canonical.sort();
    let (resource, query) = path.split_once('?').unwrap_or((path, ""));
    let mut params: Vec<(String, &str)> = (query.split('&'))
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .collect();
    params.sort();

    let length = if length == 0 {
        String::new()
    } else {
        length.to_string()
    };
    let mut text = format!("{method}\n");
    for name in ["content-encoding", "content-language"] {
        text.push_str(&format!("{}\n", header(name)));
    }
    text.push_str(&format!("{length}\n"));
    for name in [
        "content-md5",
        "content-type",
        "date",
        "if-modified-since",
        "if-match",
        "if-none-match",
        "if-unmodified-since",
        "range",
    ] {
        text.push_str(&format!("{}\n", header(name)));
    }
    for (name, value) in &canonical {
        text.push_str(&format!("{name}:{value}\n"));
    }
    // Path-style: the account, then the path, which starts with it again.
    text.push_str(&format!("/{ACCOUNT}{resource}"));
    for (name, value) in &params {
        text.push_str(&format!("\n{name}:{value}"));
    }
    let key = BASE64
        .decode(ACCESS_KEY)
        .expect("the published key is base64");
    BASE64.encode(hmac_sha256(&key, text.as_bytes()))
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut padded = [0u8; BLOCK];
    if key.len() > BLOCK {
        padded[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        padded[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| padded.map(|k| k ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than a block.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
