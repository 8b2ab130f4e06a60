//! What the installers of test servers ([`crate::s3`], [`crate::s3s`])
//! share: where they install, how two processes avoid installing at once,
//! and how a failed install is reported.

use std::env;
use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// The cargo target directory this executable was built into.
pub(crate) fn target_dir() -> PathBuf {
    // A test binary is <target>/[<triple>/]<profile>/deps/<name>-<hash>, an
    // example or bench elsewhere under <target>; cargo marks the root with
    // CACHEDIR.TAG.
    let from_exe = env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .skip(1)
            .find(|dir| dir.join("CACHEDIR.TAG").is_file())
            .map(Path::to_path_buf)
    });
    from_exe.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Why [`lock`] failed.
pub(crate) enum LockError {
    /// Another process held the lock for the whole timeout.
    Timeout { waited: Duration },
    /// The lock file could not be opened or locked.
    Io { context: String, source: io::Error },
}

/// Takes the exclusive lock on the file `path` (created if missing),
/// waiting at most `timeout` for another holder. The lock is held while
/// the returned file lives; the OS releases it if the process dies.
pub(crate) fn lock(path: &Path, timeout: Duration) -> Result<File, LockError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| LockError::Io {
            context: format!("cannot open {}", path.display()),
            source,
        })?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if started.elapsed() < timeout => {
                thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Timeout {
                    waited: started.elapsed(),
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(LockError::Io {
                    context: format!("cannot lock {}", path.display()),
                    source,
                });
            }
        }
    }
}

/// The last `bytes` of a failed command's output, for its error message.
pub(crate) fn output_tail(stdout: &[u8], stderr: &[u8], bytes: usize) -> String {
    let mut all = stdout.to_vec();
    all.extend_from_slice(stderr);
    let start = all.len().saturating_sub(bytes);
    String::from_utf8_lossy(&all[start..]).into_owned()
}
