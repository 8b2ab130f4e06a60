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
use std::io::{self, BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// What `cargo install` installs. Changing it reinstalls.
const PACKAGE: &str = "s3s-fs@0.14.1";

/// The features it is installed with; `binary` builds the server.
const FEATURES: &str = "binary";

/// The file, written last, whose content says the install is complete.
const MARKER: &str = "corral-installed";

/// How long s3s-fs may take from spawn to accepting connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait for another process's install to finish.
const LOCK_TIMEOUT: Duration = Duration::from_secs(900);

/// How many ports are tried before giving up.
const ATTEMPTS: usize = 5;

/// Output kept for error messages: cargo's, and s3s-fs's.
const TAIL_BYTES: usize = 8 * 1024;

/// What s3s-fs logs once it has bound its port.
const RUNNING: &str = "server is running at http://";

/// Runs `"$@"` (s3s-fs and its arguments) and kills it when stdin, a pipe
/// from the owning process, reaches end of file. s3s-fs's own stdin is
/// /dev/null; the wrapper's exit status is s3s-fs's. Once s3s-fs has
/// exited, the watcher is stopped before it could kill a process that
/// reused the pid.
const WRAPPER: &str = r#"exec 3<&0 </dev/null
"$@" &
server=$!
(cat <&3; kill -9 "$server") >/dev/null 2>&1 &
watcher=$!
exec 3<&-
wait "$server"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

/// The region to configure S3 clients with.
pub const REGION: &str = "us-east-1";

/// The access key id the server accepts.
pub const ACCESS_KEY_ID: &str = "corral-bench";

/// The secret access key the server verifies signatures with.
pub const SECRET_ACCESS_KEY: &str = "corral-bench-secret";

/// A result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why s3s-fs could not be installed or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `cargo` could not be run.
    #[error("cannot run `{cargo}` to install {PACKAGE} (set CARGO, or CORRAL_S3S_FS to a binary)")]
    CargoMissing {
        /// The cargo that was tried.
        cargo: String,
        /// Why running it failed.
        source: io::Error,
    },
    /// `cargo install` failed.
    #[error(
        "`cargo install {PACKAGE} --features {FEATURES} --locked` failed ({status}):\n{output}"
    )]
    Install {
        /// How it exited.
        status: ExitStatus,
        /// The tail of its output.
        output: String,
    },
    /// `CORRAL_S3S_FS` names no file.
    #[error("CORRAL_S3S_FS={} is not a file", path.display())]
    NoBinary {
        /// The path it names.
        path: PathBuf,
    },
    /// Another process held the install lock for too long.
    #[error("another process held {} for {waited:?} while installing s3s-fs", path.display())]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// s3s-fs exited before it was ready, on every port tried.
    #[error(
        "s3s-fs exited before it was ready ({status}, {attempts} port(s) tried); output:\n{output}"
    )]
    Exited {
        /// How it last exited.
        status: ExitStatus,
        /// How many ports were tried.
        attempts: usize,
        /// The tail of its last output.
        output: String,
    },
    /// s3s-fs did not accept connections in time.
    #[error("s3s-fs was not ready within {waited:?} (last: {last}); output:\n{output}")]
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// The last thing that went wrong while waiting.
        last: String,
        /// The tail of its output.
        output: String,
    },
    /// Any other I/O failure.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// What went wrong.
        source: io::Error,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A running s3s-fs on 127.0.0.1, storing into a directory of its own.
#[derive(Debug)]
pub struct S3sFs {
    addr: SocketAddr,
    /// The `sh` wrapper running s3s-fs, with its stdin piped from us: when
    /// that pipe closes the wrapper kills s3s-fs. Closed, waited for and
    /// reaped on drop.
    child: Child,
    /// The data directory; removed on drop, after s3s-fs is gone.
    root: PathBuf,
    /// The tail of s3s-fs's stdout and stderr, appended to by threads that
    /// end when it does.
    output: Tail,
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
                Err(Error::NoBinary { path })
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
        let mut attempt = 0;
        loop {
            attempt += 1;
            let root = data_dir()?;
            match launch(&binary, root) {
                // Most likely the port was taken between our probe and its
                // bind; anything else fails again on the next port.
                Err(Error::Exited { .. }) if attempt < ATTEMPTS => {}
                Err(Error::Exited { status, output, .. }) => {
                    return Err(Error::Exited {
                        status,
                        attempts: attempt,
                        output,
                    });
                }
                other => return other,
            }
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
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{}-{}",
            prefix.to_ascii_lowercase(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = self.root.join(&name);
        fs::create_dir(&dir).map_err(io_error(format!("cannot create {}", dir.display())))?;
        Ok(name)
    }

    /// The last few KiB of s3s-fs's output, for diagnosing a failure.
    pub fn log_tail(&self) -> String {
        self.output.get()
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        // End of file on the wrapper's stdin: it kills s3s-fs, whose exit
        // ends the wrapper. Kill the wrapper too if that takes too long.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Makes sure `<target>/s3s-fs` holds a complete install, and returns the
/// binary.
fn install(target: &Path) -> Result<PathBuf> {
    let root = target.join("s3s-fs");
    let binary = root.join("bin").join("s3s-fs");
    fs::create_dir_all(target).map_err(io_error(format!("cannot create {}", target.display())))?;

    // Held until this function returns; the OS releases it if we die.
    let lock_path = root.with_extension("lock");
    let _lock = crate::install::lock(&lock_path, LOCK_TIMEOUT).map_err(|e| match e {
        crate::install::LockError::Timeout { waited } => Error::LockTimeout {
            path: lock_path.clone(),
            waited,
        },
        crate::install::LockError::Io { context, source } => Error::Io { context, source },
    })?;

    let marker = root.join(MARKER);
    let expected = format!("{PACKAGE} --features {FEATURES}");
    if binary.is_file() && fs::read_to_string(&marker).is_ok_and(|m| m == expected) {
        return Ok(binary);
    }
    if root.exists() {
        fs::remove_dir_all(&root).map_err(io_error(format!("cannot remove {}", root.display())))?;
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // Its own build directory, kept for a reinstall: the one this test was
    // built in may be locked by the `cargo test` running us.
    let build = target.join("s3s-fs-build");
    let output = Command::new(&cargo)
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
        .current_dir(target)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::CargoMissing {
            cargo: cargo.clone(),
            source,
        })?;
    if !output.status.success() || !binary.is_file() {
        return Err(Error::Install {
            status: output.status,
            output: crate::install::output_tail(&output.stdout, &output.stderr, TAIL_BYTES),
        });
    }
    fs::write(&marker, expected).map_err(io_error(format!("cannot write {}", marker.display())))?;
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

/// A port that was free a moment ago.
fn free_port() -> Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(io_error("cannot bind 127.0.0.1:0 to find a free port"))
}

/// Starts s3s-fs on a free port and waits until it is ready. On error the
/// server is dropped, which kills it and removes `root`.
fn launch(binary: &Path, root: PathBuf) -> Result<S3sFs> {
    let port = free_port()?;
    let spawned = Command::new("sh")
        .args(["-c", WRAPPER, "sh"])
        .arg(binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--access-key",
            ACCESS_KEY_ID,
            "--secret-key",
            SECRET_ACCESS_KEY,
        ])
        .arg(&root)
        // The one line we wait for; s3s-fs logs errors only otherwise.
        .env("RUST_LOG", "s3s_fs=info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(source) => {
            let _ = fs::remove_dir_all(&root);
            return Err(Error::Io {
                context: format!("cannot run sh to start {}", binary.display()),
                source,
            });
        }
    };
    let output = Tail::default();
    let (running, ready) = mpsc::channel();
    output.drain(child.stderr.take().expect("stderr is piped"), None);
    output.drain(child.stdout.take().expect("stdout is piped"), Some(running));

    // From here on, dropping `server` kills s3s-fs, on every error path too.
    let mut server = S3sFs {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        child,
        root,
        output,
    };
    let started = Instant::now();
    let mut logged = false;
    let mut last = "it has not logged its address yet".to_owned();
    loop {
        if let Some(status) = server
            .child
            .try_wait()
            .map_err(io_error("cannot wait for s3s-fs"))?
        {
            // Let the drain threads catch up with the error.
            thread::sleep(Duration::from_millis(100));
            return Err(Error::Exited {
                status,
                attempts: 1,
                output: server.output.get(),
            });
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(Error::NotReady {
                waited: started.elapsed(),
                last,
                output: server.output.get(),
            });
        }
        if !logged {
            // Disconnected: stdout closed; try_wait will tell why.
            match ready.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => {
                    logged = true;
                    last = "no connection yet".to_owned();
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
            continue;
        }
        match TcpStream::connect_timeout(&server.addr, Duration::from_secs(2)) {
            Ok(_) => return Ok(server),
            Err(error) => last = format!("connect: {error}"),
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The last [`TAIL_BYTES`] of a child's output, filled by threads.
#[derive(Debug, Clone, Default)]
struct Tail(Arc<Mutex<Vec<u8>>>);

impl Tail {
    /// Appends `stream` to the tail until it ends; sends to `running` once
    /// the line saying the server bound its port has gone by.
    fn drain(&self, stream: impl Read + Send + 'static, running: Option<mpsc::Sender<()>>) {
        let buffer = Arc::clone(&self.0);
        thread::spawn(move || {
            let mut running = running;
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            while let Ok(1..) = reader.read_until(b'\n', &mut line) {
                if running.is_some() && String::from_utf8_lossy(&line).contains(RUNNING) {
                    let _ = running.take().map(|tx| tx.send(()));
                }
                let mut buffer = buffer.lock().unwrap_or_else(|e| e.into_inner());
                buffer.extend_from_slice(&line);
                let excess = buffer.len().saturating_sub(TAIL_BYTES);
                buffer.drain(..excess);
                line.clear();
            }
        });
    }

    fn get(&self) -> String {
        let buffer = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buffer).into_owned()
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
