//! A fast S3 server on 127.0.0.1 for benchmarks: [s3s-fs], installed and
//! started by this crate with no manual step.
//!
//! # Why s3s-fs next to moto
//!
//! [`crate::s3`] runs moto, a faithful S3 written in Python that accepts any
//! signature. It is right for correctness tests and too slow for load: a
//! benchmark would measure moto. s3s-fs is the [s3s] S3 protocol stack in
//! Rust over plain files: it serves thousands of requests a second, stores
//! each object as a file (here on tmpfs when there is one) and, given an
//! access key and a secret, verifies SigV4 signatures, so a client that
//! signs wrongly fails here as it would on S3.
//!
//! # Where it is installed
//!
//! `cargo install s3s-fs@0.14.1 --features binary --locked` into
//! `<target>/s3s-fs`, where `<target>` is found as in [`crate::s3`]: the
//! first ancestor of the running executable holding cargo's `CACHEDIR.TAG`.
//! Set `CORRAL_S3S_FS` to the path of an existing binary to skip the
//! install. `cargo` is `$CARGO` (set by cargo for the tests it runs) or
//! `cargo` on `PATH`. The install is done once per target directory, under
//! an exclusive file lock (`<target>/s3s-fs.lock`), and is complete only
//! once the marker file `<target>/s3s-fs/corral-installed`, written last, is
//! there. A cold install compiles for about 2.5 minutes, so the tests of
//! this module are `#[ignore]`d: run them with `cargo test -p
//! corral-testkit --test s3s -- --ignored`.
//!
//! # Lifetimes
//!
//! [`S3sFs::start`] gives the caller a server of its own, on a port of its
//! own, storing into a fresh directory. Dropping it kills and reaps the
//! server and removes the directory. s3s-fs itself does not watch its stdin,
//! so it runs under a small `sh` wrapper that does: the wrapper's stdin is
//! a pipe from this process, and when that pipe reaches end of file — on
//! drop, or when this process exits however it exits — the wrapper kills
//! the server. A server cannot outlive its owner.
//!
//! s3s-fs takes a fixed `--port`, so a free one is found by binding port 0
//! and releasing it; another process may take it in between, in which case
//! s3s-fs exits and the start is retried on another port. The server is
//! ready once it has logged the address it bound and that address accepts
//! a connection.
//!
//! # Talking to it
//!
//! Path-style requests over plain HTTP to [`S3sFs::endpoint`], with
//! [`REGION`], [`ACCESS_KEY_ID`] and [`SECRET_ACCESS_KEY`]. A bucket is a
//! directory directly under the data directory; [`S3sFs::new_bucket`]
//! creates one.
//!
//! ```no_run
//! use corral_testkit::s3s::{self, S3sFs};
//!
//! let server = S3sFs::start()?;
//! let bucket = server.new_bucket("bench")?;
//! // AmazonS3Builder::new()
//! //     .with_endpoint(server.endpoint()).with_allow_http(true)
//! //     .with_virtual_hosted_style_request(false).with_bucket_name(&bucket)
//! //     .with_region(s3s::REGION).with_access_key_id(s3s::ACCESS_KEY_ID)
//! //     .with_secret_access_key(s3s::SECRET_ACCESS_KEY)
//! # Ok::<(), corral_testkit::s3s::Error>(())
//! ```
//!
//! This module is for Unix (`sh`, `/dev/shm`).
//!
//! [s3s-fs]: https://crates.io/crates/s3s-fs
//! [s3s]: https://github.com/s3s-project/s3s

use std::env;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::install::{InstallError, Step};
use crate::process::Process;

pub use crate::emulator::{Error, Result};

/// What `cargo install` installs. Changing it reinstalls.
const PACKAGE: &str = "s3s-fs@0.14.1";

/// The features it is installed with; `binary` builds the server.
const FEATURES: &str = "binary";

/// The server, in error messages.
const NAME: &str = "s3s-fs";

/// How long to wait for another process's install to finish.
const LOCK_TIMEOUT: Duration = Duration::from_secs(900);

/// How many ports are tried before giving up.
const ATTEMPTS: usize = 5;

/// What s3s-fs logs once it has bound its port.
const RUNNING: &str = "server is running at http://";

/// The region to configure S3 clients with.
pub const REGION: &str = "us-east-1";

/// The access key id the server accepts.
pub const ACCESS_KEY_ID: &str = "corral-bench";

/// The secret access key the server verifies signatures with.
pub const SECRET_ACCESS_KEY: &str = "corral-bench-secret";

/// A running s3s-fs on 127.0.0.1, storing into a directory of its own.
#[derive(Debug)]
pub struct S3sFs {
    addr: SocketAddr,
    /// s3s-fs, killed when this process exits or the value is dropped.
    process: Process,
    /// The data directory; removed on drop, after s3s-fs is gone.
    root: PathBuf,
}

impl S3sFs {
    /// The path of the s3s-fs binary, installing it first if this target
    /// directory has no complete install (unless `CORRAL_S3S_FS` names
    /// one).
    ///
    /// # Errors
    ///
    /// If cargo is missing, `cargo install` fails, or another process
    /// holds the install lock for over 15 minutes; see [`Error`].
    pub fn install() -> Result<PathBuf> {
        if let Some(path) = env::var_os("CORRAL_S3S_FS") {
            let path = PathBuf::from(path);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(Error::Io {
                    context: format!("CORRAL_S3S_FS={} is not a file", path.display()),
                    source: io::Error::from(io::ErrorKind::NotFound),
                })
            };
        }
        install(&crate::install::target_dir())
    }

    /// Installs s3s-fs if needed and starts a server of the caller's own on
    /// a free port, storing into a fresh directory (on tmpfs when
    /// `/dev/shm` is writable). Killed, and its data removed, on drop.
    ///
    /// # Errors
    ///
    /// As [`S3sFs::install`], or if s3s-fs exits before it is ready on
    /// every port tried, or is not ready within 30 s.
    pub fn start() -> Result<Self> {
        let binary = Self::install()?;
        crate::emulator::on_free_port(ATTEMPTS, |port| launch(&binary, data_dir()?, port))
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint for S3 clients, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory the objects are stored in, one subdirectory a bucket.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a bucket named `{prefix}-{n}` (lowercased), unique in this
    /// process, and returns its name.
    ///
    /// # Errors
    ///
    /// If its directory cannot be created.
    pub fn new_bucket(&self, prefix: &str) -> Result<String> {
        crate::emulator::create_unique(&prefix.to_ascii_lowercase(), |name| {
            let dir = self.root.join(name);
            fs::create_dir(&dir).map_err(|source| Error::Io {
                context: format!("cannot create {}", dir.display()),
                source,
            })
        })
    }

    /// The last few KiB of s3s-fs's output, for diagnosing a failure.
    pub fn log_tail(&self) -> String {
        self.process.output()
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        self.process.stop();
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Makes sure `<target>/s3s-fs` holds a complete install, and returns the
/// binary.
fn install(target: &Path) -> Result<PathBuf> {
    let root = target.join("s3s-fs");
    let binary = root.join("bin").join("s3s-fs");
    let what = format!("{PACKAGE} --features {FEATURES}");
    crate::install::ensure(
        &root,
        &what,
        LOCK_TIMEOUT,
        || binary.is_file(),
        |lock| {
            let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            // Its own build directory, kept for a reinstall: the one this test
            // was built in may be locked by the `cargo test` running us.
            let build = target.join("s3s-fs-build");
            let mut install = Command::new(&cargo);
            install
                .args([
                    "install",
                    PACKAGE,
                    "--features",
                    FEATURES,
                    "--locked",
                    "--root",
                ])
                .arg(&root)
                .arg("--target-dir")
                .arg(&build)
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

/// A fresh, empty directory for a server's data: on tmpfs if possible.
fn data_dir() -> Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let shm = Path::new("/dev/shm");
    let bases = [shm.to_path_buf(), env::temp_dir()];
    let mut last = None;
    for base in bases.iter().filter(|base| base.is_dir()) {
        let dir = base.join(format!(
            "corral-s3s-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // `create_dir`, not `_all`: the directory must be new, and a base
        // we may not write to is skipped.
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(error) => last = Some((dir, error)),
        }
    }
    let (dir, source) =
        last.unwrap_or_else(|| (env::temp_dir(), io::Error::from(io::ErrorKind::NotFound)));
    Err(Error::Io {
        context: format!("cannot create a data directory such as {}", dir.display()),
        source,
    })
}

/// Starts s3s-fs on `port` and waits until it is ready. On error the
/// server is stopped and `root` removed.
fn launch(binary: &Path, root: PathBuf, port: u16) -> Result<S3sFs> {
    let launched = crate::emulator::launch(
        NAME,
        binary,
        |command| {
            command
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args([
                    "--access-key",
                    ACCESS_KEY_ID,
                    "--secret-key",
                    SECRET_ACCESS_KEY,
                ])
                .arg(&root)
                // The one line we wait for; s3s-fs logs errors only otherwise.
                .env("RUST_LOG", "s3s_fs=info");
        },
        move |line| line.contains(RUNNING).then_some(port),
        crate::emulator::accepts,
    );
    match launched {
        Ok((process, addr)) => Ok(S3sFs {
            addr,
            process,
            root,
        }),
        Err(error) => {
            // s3s-fs is gone: `launch` stopped it.
            let _ = fs::remove_dir_all(&root);
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_is_new_and_empty() {
        let a = data_dir().unwrap();
        let b = data_dir().unwrap();
        assert_ne!(a, b);
        assert_eq!(fs::read_dir(&a).unwrap().count(), 0);
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }
}
