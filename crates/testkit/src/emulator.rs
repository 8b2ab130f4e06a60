//! What the test servers ([`crate::s3`], [`crate::s3s`], [`crate::gcs`],
//! [`crate::azure`]) share: starting one and waiting until it answers, and
//! why one could not be installed, started or used.
//!
//! How each is installed, how it is told where to listen and how it says
//! it is listening are its own; the rest is here. A server either binds
//! port 0 and logs the port it got, or is given a port found free a moment
//! before (`on_free_port`) and logs that it is listening. Either way
//! `launch` runs it under the wrapper of `process.rs`, waits until its
//! output names the port, then probes that port until the server answers.

use std::ffi::OsStr;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::http::{self, Failed, StatusError};
use crate::install::{InstallError, Step};
use crate::process::{LaunchError, Process};

/// A result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long a server may take from spawn to answering.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one probe of a starting server may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a test server could not be installed, started or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program needed to install the server could not be run.
    #[error("cannot run `{program}` to install {emulator} ({hint})")]
    Missing {
        /// The server.
        emulator: &'static str,
        /// The program that was tried.
        program: String,
        /// What to do about it.
        hint: &'static str,
        /// Why running it failed.
        source: io::Error,
    },
    /// A step of the install failed.
    #[error("`{command}` failed ({status}{}):\n{output}", hint.map(|hint| format!("; {hint}")).unwrap_or_default())]
    Install {
        /// The command.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// What may be wrong, where something likely is.
        hint: Option<&'static str>,
        /// The tail of its output.
        output: String,
    },
    /// Another process held the install lock for too long.
    #[error("another process held {} for {waited:?} while installing {emulator}", path.display())]
    LockTimeout {
        /// The server.
        emulator: &'static str,
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// The install needs root, and this process is not.
    #[error("installing {emulator} needs root: run `{command}` as root")]
    NotRoot {
        /// The server.
        emulator: &'static str,
        /// What to run.
        command: String,
    },
    /// The server exited before it was ready, on every port tried.
    #[error("{emulator} exited before it was ready ({status}{}); output:\n{output}", ports_tried(*attempts))]
    Exited {
        /// The server.
        emulator: &'static str,
        /// How it last exited.
        status: ExitStatus,
        /// How many ports were tried (see `on_free_port`); 1 for a
        /// server that binds port 0 itself.
        attempts: usize,
        /// The tail of its last output.
        output: String,
    },
    /// The server was not ready in time.
    #[error("{emulator} was not ready within {waited:?} (last: {last}); output:\n{output}")]
    NotReady {
        /// The server.
        emulator: &'static str,
        /// How long we waited.
        waited: Duration,
        /// The last thing that went wrong while waiting.
        last: String,
        /// The tail of its output.
        output: String,
    },
    /// A request answered with a status that is not 2xx.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// Any other I/O failure.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// What went wrong.
        source: io::Error,
    },
}

fn ports_tried(attempts: usize) -> String {
    if attempts > 1 {
        format!(", {attempts} ports tried")
    } else {
        String::new()
    }
}

impl From<Failed> for Error {
    fn from(Failed { context, source }: Failed) -> Self {
        Self::Io { context, source }
    }
}

impl Error {
    /// An install of `emulator` that failed.
    pub(crate) fn installing(emulator: &'static str) -> impl FnOnce(InstallError) -> Self {
        move |error| match error {
            InstallError::LockTimeout { path, waited } => Self::LockTimeout {
                emulator,
                path,
                waited,
            },
            InstallError::Missing {
                step,
                program,
                source,
            } => Self::Missing {
                emulator,
                program,
                hint: match step {
                    Step::Venv | Step::Pip => "set CORRAL_PYTHON to another Python 3 interpreter",
                    Step::Npm => "Node.js 20 or later with npm is needed",
                    Step::Cargo => "set CARGO, or CORRAL_S3S_FS to a binary",
                    Step::Apt => "apt-get is needed: this install is for Debian",
                },
                source,
            },
            InstallError::Failed {
                step,
                command,
                status,
                output,
            } => Self::Install {
                command,
                status,
                hint: match step {
                    Step::Venv => Some("on Debian, `apt-get install python3-venv`"),
                    Step::Apt => Some("apt-get needs root and a reachable Debian mirror"),
                    _ => None,
                },
                output,
            },
            InstallError::NotRoot { command } => Self::NotRoot { emulator, command },
            InstallError::Io { context, source } => Self::Io { context, source },
        }
    }

    /// A start of `emulator` that failed.
    fn launching(emulator: &'static str) -> impl FnOnce(LaunchError) -> Self {
        move |error| match error {
            LaunchError::Exited { status, output } => Self::Exited {
                emulator,
                status,
                attempts: 1,
                output,
            },
            LaunchError::NotReady {
                waited,
                last,
                output,
            } => Self::NotReady {
                emulator,
                waited,
                last,
                output,
            },
            LaunchError::Io { context, source } => Self::Io { context, source },
        }
    }
}

/// Starts `emulator`, the program `program` as `configure` sets it up, on
/// 127.0.0.1, and waits until it is ready: until `port` has found in a
/// line of its output the port it listens on, and `probe` then succeeds
/// on that address, within 30 s. On error the server is stopped.
pub(crate) fn launch(
    emulator: &'static str,
    program: impl AsRef<OsStr>,
    configure: impl FnOnce(&mut Command),
    port: impl FnMut(&str) -> Option<u16> + Send + 'static,
    mut probe: impl FnMut(SocketAddr) -> Result<(), String>,
) -> Result<(Process, SocketAddr)> {
    let addr = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let started = Process::spawn(program, configure, port).and_then(|(mut process, port)| {
        let port = process.wait_ready(&port, READY_TIMEOUT, |&port| probe(addr(port)))?;
        Ok((process, addr(port)))
    });
    started.map_err(Error::launching(emulator))
}

/// A probe for [`launch`]: ready once a TCP connection to `addr` is
/// accepted (within `PROBE_TIMEOUT`), for a server with no endpoint to ask.
pub(crate) fn accepts(addr: SocketAddr) -> Result<(), String> {
    std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        .map(drop)
        .map_err(|error| format!("connect: {error}"))
}

/// A probe for [`launch`]: ready once `GET path` with `headers` answers
/// 200.
pub(crate) fn answers_ok(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(), String> {
    match answers(addr, path, headers)? {
        200 => Ok(()),
        status => Err(format!("GET {path} answered {status}")),
    }
}

/// The status a `GET path` with `headers` answers, or why it did not: for
/// [`launch`]'s probes.
pub(crate) fn answers(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<u16, String> {
    let response = http::request(addr, "GET", path, headers, &[], PROBE_TIMEOUT);
    response
        .map(|response| response.status)
        .map_err(|failed| format!("{}: {}", failed.context, failed.source))
}

/// Creates a bucket (or container) named `{prefix}-{n}`, unique in this
/// process, with `create`, and returns its name: how tests sharing a server
/// keep apart.
pub(crate) fn create_unique(
    prefix: &str,
    create: impl FnOnce(&str) -> Result<()>,
) -> Result<String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    create(&name)?;
    Ok(name)
}

/// Runs `launch` on a port that was free a moment ago, and again on
/// another while the server exits before it is ready, at most `attempts`
/// times: for a server that cannot bind port 0 and report the port it got.
/// Another process may take the port between our probe and the server's
/// bind; the server then fails to bind and exits, before it has said it
/// is listening, so a lost race is never mistaken for a ready server.
///
/// An [`Error::Exited`] says how many ports were tried.
pub(crate) fn on_free_port<T>(
    attempts: usize,
    mut launch: impl FnMut(u16) -> Result<T>,
) -> Result<T> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|source| Error::Io {
                context: "cannot bind 127.0.0.1:0 to find a free port".to_owned(),
                source,
            })?
            .port();
        match launch(port) {
            Err(Error::Exited { .. }) if attempt < attempts => {}
            Err(Error::Exited {
                emulator,
                status,
                output,
                ..
            }) => {
                return Err(Error::Exited {
                    emulator,
                    status,
                    attempts: attempt,
                    output,
                });
            }
            other => return other,
        }
    }
}
