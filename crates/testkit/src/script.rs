//! Running a Node script that reads its input as JSON on stdin and prints
//! its report as JSON on stdout: the tus runner ([`crate::node`]) and the
//! browser scripts ([`crate::browser`]).

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Output of a script kept for error messages.
const TAIL_BYTES: usize = 8 * 1024;

/// Why a script could not run, or did not report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptError {
    /// `node` could not be started.
    #[error("cannot run `node` for {script} (Node.js 20.19 or later is needed on PATH)")]
    NodeMissing {
        /// The script it was to run.
        script: String,
        /// Why it could not.
        source: io::Error,
    },
    /// The script exited without a report (e.g. an input it refused).
    #[error("{script} exited with {status}: {stderr}")]
    Failed {
        /// The script.
        script: String,
        /// How it exited.
        status: ExitStatus,
        /// The end of what it printed on stderr.
        stderr: String,
    },
    /// The script still ran after its time, and was killed.
    #[error("{script} still ran after {waited:?} and was killed: {stderr}")]
    Timeout {
        /// The script.
        script: String,
        /// How long it was given.
        waited: Duration,
        /// The end of what it printed on stderr.
        stderr: String,
    },
    /// The script exited cleanly, but its stdout is not the report.
    #[error("{script} printed no report that could be read: {stdout}")]
    Output {
        /// The script.
        script: String,
        /// Why its stdout could not be read.
        source: serde_json::Error,
        /// The end of its stdout.
        stdout: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// Talking to the script failed.
    #[error("cannot read from {script}")]
    Io {
        /// The script.
        script: String,
        /// The failure.
        source: io::Error,
    },
}

/// A script's report, and the end of what it printed on stderr.
#[derive(Debug)]
pub(crate) struct Output<T> {
    pub(crate) value: T,
    pub(crate) stderr: String,
}

/// Runs `command` (`node` and the script `script`, with its arguments),
/// writes `input` to its stdin, and reads its report from stdout; kills it
/// after `timeout`, or when the future is dropped.
pub(crate) async fn run<T: DeserializeOwned>(
    mut command: tokio::process::Command,
    script: &str,
    input: &[u8],
    timeout: Duration,
) -> Result<Output<T>, ScriptError> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ScriptError::NodeMissing {
            script: script.to_owned(),
            source,
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let finished = tokio::time::timeout(timeout, async {
        let write = async {
            // A script that exits early closes its stdin; its status and
            // stderr then say why.
            let _ = stdin.write_all(input).await;
            drop(stdin);
        };
        let (_, read_out, read_err) = tokio::join!(
            write,
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err)
        );
        read_out.and(read_err)?;
        child.wait().await
    })
    .await;
    let stderr = tail(&err);
    let script = script.to_owned();
    let status = match finished {
        Ok(status) => status.map_err(|source| ScriptError::Io {
            script: script.clone(),
            source,
        })?,
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(ScriptError::Timeout {
                script,
                waited: timeout,
                stderr,
            });
        }
    };
    if !status.success() {
        return Err(ScriptError::Failed {
            script,
            status,
            stderr,
        });
    }
    match serde_json::from_slice(&out) {
        Ok(value) => Ok(Output { value, stderr }),
        Err(source) => Err(ScriptError::Output {
            script,
            source,
            stdout: tail(&out),
            stderr,
        }),
    }
}

/// The last [`TAIL_BYTES`] of a child's output, lossily decoded.
fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(TAIL_BYTES);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}
