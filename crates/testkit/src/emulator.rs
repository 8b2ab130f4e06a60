//! What the cloud storage emulators ([`crate::gcs`], [`crate::azure`])
//! share: why one could not be installed, started or used.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::http::{Failed, StatusError};
use crate::install::{InstallError, Step};
use crate::process::LaunchError;

/// A result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an emulator could not be installed, started or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program needed to install the emulator could not be run.
    #[error("cannot run `{program}` to install {emulator} ({hint})")]
    Missing {
        /// The emulator.
        emulator: &'static str,
        /// The program that was tried.
        program: String,
        /// What to do about it.
        hint: &'static str,
        /// Why running it failed.
        source: io::Error,
    },
    /// A step of the install failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Install {
        /// The command.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// The tail of its output.
        output: String,
    },
    /// Another process held the install lock for too long.
    #[error("another process held {} for {waited:?} while installing {emulator}", path.display())]
    LockTimeout {
        /// The emulator.
        emulator: &'static str,
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// The emulator exited before it was ready.
    #[error("{emulator} exited before it was ready ({status}); output:\n{output}")]
    Exited {
        /// The emulator.
        emulator: &'static str,
        /// How it exited.
        status: ExitStatus,
        /// The tail of its output.
        output: String,
    },
    /// The emulator was not ready in time.
    #[error("{emulator} was not ready within {waited:?} (last: {last}); output:\n{output}")]
    NotReady {
        /// The emulator.
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
                    Step::Cargo => "set CARGO",
                },
                source,
            },
            InstallError::Failed {
                command,
                status,
                output,
                ..
            } => Self::Install {
                command,
                status,
                output,
            },
            InstallError::Io { context, source } => Self::Io { context, source },
        }
    }

    /// A start of `emulator` that failed.
    pub(crate) fn launching(emulator: &'static str) -> impl FnOnce(LaunchError) -> Self {
        move |error| match error {
            LaunchError::Exited { status, output } => Self::Exited {
                emulator,
                status,
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
