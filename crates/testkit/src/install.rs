//! What the installers of test servers ([`crate::s3`], [`crate::s3s`],
//! [`crate::gcs`], [`crate::azure`], [`crate::node`], [`crate::browser`])
//! share: where they install, how two processes avoid installing at once,
//! how an install is known to be complete, and how a failed one is
//! reported. [`apt`] installs a program of Debian's for the whole machine.

use std::env;
use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
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

/// Where a server is installed: the directory the environment variable
/// `var` names, or else `<target>/<name>`.
pub(crate) fn dir(var: &str, name: &str) -> PathBuf {
    env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join(name))
}

/// Why [`lock`] failed.
enum LockError {
    /// Another process held the lock for the whole timeout.
    Timeout { waited: Duration },
    /// The lock file could not be opened or locked.
    Io { context: String, source: io::Error },
}

/// Takes the exclusive lock on the file `path` (created if missing),
/// waiting at most `timeout` for another holder. The lock is held while
/// the returned file lives; the OS releases it if the process dies.
fn lock(path: &Path, timeout: Duration) -> Result<File, LockError> {
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
fn output_tail(stdout: &[u8], stderr: &[u8], bytes: usize) -> String {
    let mut all = stdout.to_vec();
    all.extend_from_slice(stderr);
    let start = all.len().saturating_sub(bytes);
    String::from_utf8_lossy(&all[start..]).into_owned()
}

/// The file, written last in an install directory, whose content says the
/// install is complete and what it installed.
const MARKER: &str = "corral-installed";

/// Output of a failed step kept for its error message.
const TAIL_BYTES: usize = 8 * 1024;

/// A step of an install, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// `python -m venv`.
    Venv,
    /// `pip install`.
    Pip,
    /// `npm install`.
    Npm,
    /// `cargo install`.
    Cargo,
    /// `apt-get update` or `apt-get install`.
    Apt,
}

/// Why [`ensure`] failed.
#[derive(Debug)]
pub(crate) enum InstallError {
    /// Another process held the install lock for the whole timeout.
    LockTimeout { path: PathBuf, waited: Duration },
    /// The program of a step could not be run.
    Missing {
        step: Step,
        program: String,
        source: io::Error,
    },
    /// A step exited unsuccessfully.
    Failed {
        step: Step,
        /// The command, for people.
        command: String,
        status: ExitStatus,
        /// The tail of its output.
        output: String,
    },
    /// An install that needs root was asked of another user.
    NotRoot {
        /// The command to run as root instead, for people.
        command: String,
    },
    /// Any other I/O failure.
    Io { context: String, source: io::Error },
}

impl InstallError {
    fn io(context: String) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { context, source }
    }
}

/// Makes sure the directory `dir` holds a complete install of `what`:
/// under the exclusive lock `<dir>.lock`, an install whose marker file
/// names `what` and which `complete` accepts is kept; anything else is
/// removed and `install` run, given the lock file (see [`Lock::stdin`]),
/// before the marker is written, last.
pub(crate) fn ensure(
    dir: &Path,
    what: &str,
    timeout: Duration,
    complete: impl FnOnce() -> bool,
    install: impl FnOnce(&Lock) -> Result<(), InstallError>,
) -> Result<(), InstallError> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(InstallError::io(format!(
            "cannot create {}",
            parent.display()
        )))?;
    }
    // Held until this function returns; the OS releases it if we die.
    let lock = Lock::take(dir.with_extension("lock"), timeout)?;
    let marker = dir.join(MARKER);
    if fs::read_to_string(&marker).is_ok_and(|m| m == what) && complete() {
        return Ok(());
    }
    if dir.exists() {
        fs::remove_dir_all(dir)
            .map_err(InstallError::io(format!("cannot remove {}", dir.display())))?;
    }
    install(&lock)?;
    fs::write(&marker, what).map_err(InstallError::io(format!(
        "cannot write {}",
        marker.display()
    )))
}

/// The install lock, held while an install runs.
pub(crate) struct Lock {
    file: File,
    path: PathBuf,
}

impl Lock {
    /// Takes the exclusive lock on the file `path`, waiting at most
    /// `timeout`.
    fn take(path: PathBuf, timeout: Duration) -> Result<Self, InstallError> {
        match lock(&path, timeout) {
            Ok(file) => Ok(Self { file, path }),
            Err(LockError::Timeout { waited }) => Err(InstallError::LockTimeout { path, waited }),
            Err(LockError::Io { context, source }) => Err(InstallError::Io { context, source }),
        }
    }

    /// The lock file as a child's stdin. The OS releases the lock when its
    /// holder dies, but not while a child holding it too runs on: a killed
    /// test leaves no half-written install to a successor while its `pip`
    /// or `npm` still writes.
    pub(crate) fn stdin(&self) -> Result<Stdio, InstallError> {
        self.file
            .try_clone()
            .map(Stdio::from)
            .map_err(InstallError::io(format!(
                "cannot share {}",
                self.path.display()
            )))
    }

    /// Runs `command`, one step of the install, holding the lock.
    pub(crate) fn run(&self, step: Step, command: &mut Command) -> Result<(), InstallError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let shown = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|part| part.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let output =
            command
                .stdin(self.stdin()?)
                .output()
                .map_err(|source| InstallError::Missing {
                    step,
                    program,
                    source,
                })?;
        if output.status.success() {
            return Ok(());
        }
        Err(InstallError::Failed {
            step,
            command: shown,
            status: output.status,
            output: output_tail(&output.stdout, &output.stderr, TAIL_BYTES),
        })
    }
}

/// Makes sure `venv` is a virtualenv holding `requirements`, and returns
/// its interpreter. The venv is made by `$CORRAL_PYTHON` (default
/// `python3`); see [`ensure`] for the lock and the marker.
pub(crate) fn venv(venv: &Path, requirements: &[&str]) -> Result<PathBuf, InstallError> {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(600);
    let python = venv.join("bin").join("python");
    // `exists` follows the interpreter symlink, so a venv whose base Python
    // was removed counts as incomplete.
    ensure(
        venv,
        &requirements.join("\n"),
        LOCK_TIMEOUT,
        || python.exists(),
        |lock| {
            let base = env::var("CORRAL_PYTHON").unwrap_or_else(|_| "python3".to_owned());
            lock.run(
                Step::Venv,
                Command::new(base).args(["-m", "venv"]).arg(venv),
            )?;
            let mut pip = Command::new(&python);
            pip.args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .args(requirements);
            lock.run(Step::Pip, &mut pip)
        },
    )?;
    Ok(python)
}

/// Makes sure the program `program` exists, installing the Debian
/// `packages` that provide it if not: `apt-get update`, then `apt-get
/// install -y --no-install-recommends`. That needs root: another user gets
/// [`InstallError::NotRoot`], naming the command to run. The install is
/// the machine's, not a target directory's, so its lock is too:
/// `<temp dir>/corral-apt.lock`, waited for at most `timeout`, so two test
/// processes never run apt at once; apt itself waits as long for the dpkg
/// lock of anyone else's.
pub(crate) fn apt(
    program: &Path,
    packages: &[&str],
    timeout: Duration,
) -> Result<(), InstallError> {
    if program.is_file() {
        return Ok(());
    }
    let shown = packages.join(" ");
    // Before the lock, whose file root may have made: no one else may
    // install, nor open it for writing.
    if !is_root() {
        return Err(InstallError::NotRoot {
            command: format!("apt-get update && apt-get install -y {shown}"),
        });
    }
    let lock = Lock::take(env::temp_dir().join("corral-apt.lock"), timeout)?;
    // Another process may have installed it while we waited.
    if program.is_file() {
        return Ok(());
    }
    let apt_get = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command
            .env("DEBIAN_FRONTEND", "noninteractive")
            .arg("-q")
            .arg(format!("-oDPkg::Lock::Timeout={}", timeout.as_secs()))
            .args(args);
        command
    };
    lock.run(Step::Apt, &mut apt_get(&["update"]))?;
    let mut install = apt_get(&["install", "-y", "--no-install-recommends"]);
    install.args(packages);
    lock.run(Step::Apt, &mut install)?;
    if program.is_file() {
        return Ok(());
    }
    Err(InstallError::Io {
        context: format!(
            "apt-get installed {shown}, but {} is still missing",
            program.display()
        ),
        source: io::ErrorKind::NotFound.into(),
    })
}

/// Whether this process runs as root, as `/proc/self/status` says; `false`
/// where it cannot be read.
fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .is_some_and(|effective| effective == "0")
}

/// What the marker of a complete install of `files` (name and text, as the
/// crate carries them) says: `label` and their SHA-256, so that a changed
/// file installs again.
fn marker(label: &str, files: &[(&str, &str)]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for (name, text) in files {
        hash.update((name.len() as u64).to_le_bytes());
        hash.update(name);
        hash.update((text.len() as u64).to_le_bytes());
        hash.update(text);
    }
    format!("{label} sha256:{}", hex::encode(hash.finalize()))
}

/// Installs into `dir` the npm packages that `files` (a `package.json`,
/// its `package-lock.json`, and scripts, as the crate carries them) lock,
/// with `npm ci`, once for their content (see [`marker`]): done when each
/// of `packages` is in `node_modules`.
pub(crate) fn npm_ci(
    dir: &Path,
    label: &str,
    files: &[(&str, &str)],
    packages: &[&str],
    timeout: Duration,
) -> Result<(), InstallError> {
    let complete = || {
        packages.iter().all(|package| {
            (dir.join("node_modules").join(package))
                .join("package.json")
                .is_file()
        })
    };
    ensure(dir, &marker(label, files), timeout, complete, |lock| {
        fs::create_dir_all(dir)
            .map_err(InstallError::io(format!("cannot create {}", dir.display())))?;
        for (name, text) in files {
            let path = dir.join(name);
            fs::write(&path, text)
                .map_err(InstallError::io(format!("cannot write {}", path.display())))?;
        }
        let mut npm = Command::new("npm");
        npm.args(["ci", "--prefix"]).arg(dir).args([
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
        ]);
        lock.run(Step::Npm, &mut npm)
    })
}
