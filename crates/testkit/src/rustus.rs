//! rustus, a tus 1.0 server in Rust, on 127.0.0.1 for benchmarks:
//! installed and started by this crate with no manual step, to measure
//! corral's tus endpoint against (`corral bench tus`).
//!
//! # Where it is installed
//!
//! `cargo install rustus --version 0.5.10 --locked` into `<target>/rustus`
//! (`<target>` found as in [`crate::s3s`]), building in
//! `<target>/rustus-build`, which is kept for a reinstall. Set
//! `CORRAL_RUSTUS` to the path of an existing binary to skip the install.
//! Once per target directory, under an exclusive file lock
//! (`<target>/rustus.lock`), complete once the marker file
//! `<target>/rustus/corral-installed`, written last, is there. It is a
//! benchmark's tool, not a dependency of the workspace. A cold install
//! compiles about 330 crates: several minutes on two cores.
//!
//! # How it runs
//!
//! File storage and file info storage in one directory of the caller's
//! (an upload `ID` is stored as `dir/ID`, its info as `dir/ID.info`), at
//! `/files`, with its default extensions (creation, creation with upload,
//! creation-defer-length, termination, concatenation, checksum, getting).
//! rustus reads a request's whole body into memory and refuses one over
//! `--max-body-size` (256 KiB by default) with 413, so
//! [`RustusConfig::max_body`] says the largest body to accept. By default
//! it does not `fsync` what it writes; [`RustusConfig::force_fsync`] makes
//! it `fsync` after each write (`--force-fsync true`). It logs each request at `INFO` (its
//! only way to say it has started); the output is drained by this crate.
//!
//! [`Rustus`] runs under the wrapper of `process.rs`: killed when dropped
//! or when this process exits. rustus takes a fixed `--port`, so a free one
//! is found as for s3s-fs.

use std::env;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::install::{InstallError, Step};
use crate::process::Process;

pub use crate::emulator::{Error, Result};

/// What `cargo install` installs. Changing it reinstalls.
const PACKAGE: &str = "rustus@0.5.10";

/// The server, in error messages.
const NAME: &str = "rustus";

/// The path rustus serves tus at.
const PATH: &str = "/files";

/// How long to wait for another process's install to finish.
const LOCK_TIMEOUT: Duration = Duration::from_secs(1800);

/// How many ports are tried before giving up.
const ATTEMPTS: usize = 5;

/// How [`Rustus::start`] configures rustus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustusConfig {
    /// The largest request body it accepts (`--max-body-size`).
    pub max_body: u64,
    /// Whether it `fsync`s after each write (`--force-fsync true`).
    pub force_fsync: bool,
}

impl Default for RustusConfig {
    /// rustus's own defaults: bodies up to 256 KiB, no `fsync`.
    fn default() -> Self {
        Self {
            max_body: 256 * 1024,
            force_fsync: false,
        }
    }
}

/// A running rustus on 127.0.0.1, storing into a directory of the caller's.
#[derive(Debug)]
pub struct Rustus {
    addr: SocketAddr,
    /// Where uploads and their info are stored; left in place on drop.
    dir: PathBuf,
    /// rustus, killed when this process exits or the value is dropped.
    process: Process,
}

impl Rustus {
    /// The path of the rustus binary, installing it first if this target
    /// directory has no complete install (unless `CORRAL_RUSTUS` names
    /// one).
    ///
    /// # Errors
    ///
    /// If cargo is missing, `cargo install` fails (with the tail of its
    /// output), or another process holds the install lock for 30 minutes.
    pub fn install() -> Result<PathBuf> {
        if let Some(path) = env::var_os("CORRAL_RUSTUS") {
            let path = PathBuf::from(path);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(Error::Io {
                    context: format!("CORRAL_RUSTUS={} is not a file", path.display()),
                    source: io::Error::from(io::ErrorKind::NotFound),
                })
            };
        }
        install(&crate::install::target_dir())
    }

    /// Installs rustus if needed and starts it on a free port, storing
    /// into `dir` (created if need be), as `config` says.
    ///
    /// # Errors
    ///
    /// As [`Rustus::install`], or if rustus exits before it answers on
    /// every port tried, or does not answer within 30 s.
    pub fn start(dir: &Path, config: &RustusConfig) -> Result<Self> {
        let binary = Self::install()?;
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            context: format!("cannot create {}", dir.display()),
            source,
        })?;
        let (process, addr) = crate::emulator::on_free_port(ATTEMPTS, |port| {
            crate::emulator::launch(
                NAME,
                &binary,
                |command| {
                    command
                        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                        .args(["--url", PATH, "--log-level", "INFO"])
                        .args(["--max-body-size", &config.max_body.to_string()])
                        .arg("--data-dir")
                        .arg(dir)
                        .arg("--info-dir")
                        .arg(dir);
                    if config.force_fsync {
                        // A flag that takes a value, as its environment
                        // variable does.
                        command.args(["--force-fsync", "true"]);
                    }
                },
                // Any line: the probe then says whether it answers.
                move |_line| Some(port),
                |addr| crate::emulator::answers_ok(addr, "/health", &[]),
            )
        })?;
        Ok(Self {
            addr,
            dir: dir.to_path_buf(),
            process,
        })
    }

    /// The creation URL, `http://127.0.0.1:PORT/files`.
    pub fn endpoint(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    /// The directory uploads are stored in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file an upload's bytes are stored in, given the upload's URL;
    /// `None` for a URL that is not one of this server's uploads.
    pub fn stored(&self, url: &str) -> Option<PathBuf> {
        let prefix = format!("{}/", self.endpoint());
        let id = url.strip_prefix(&prefix)?.trim_end_matches('/');
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        (!id.is_empty() && id.chars().all(plain)).then(|| self.dir.join(id))
    }

    /// The last few KiB of rustus's output, for diagnosing a failure.
    pub fn log_tail(&self) -> String {
        self.process.output()
    }
}

/// Makes sure `<target>/rustus` holds a complete install, and returns the
/// binary.
fn install(target: &Path) -> Result<PathBuf> {
    let root = target.join("rustus");
    let binary = root.join("bin").join("rustus");
    crate::install::ensure(
        &root,
        PACKAGE,
        LOCK_TIMEOUT,
        || binary.is_file(),
        |lock| {
            let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut install = Command::new(&cargo);
            install
                .args(["install", PACKAGE, "--locked", "--root"])
                .arg(&root)
                .arg("--target-dir")
                .arg(target.join("rustus-build"))
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("CARGO_BUILD_TARGET_DIR")
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                // Away from any workspace's `.cargo/config.toml`.
                .current_dir(target);
            lock.run(Step::Cargo, &mut install)?;
            if binary.is_file() {
                Ok(())
            } else {
                Err(InstallError::Io {
                    context: format!("`cargo install` left no {}", binary.display()),
                    source: io::Error::from(io::ErrorKind::NotFound),
                })
            }
        },
    )
    .map_err(Error::installing(NAME))?;
    Ok(binary)
}
