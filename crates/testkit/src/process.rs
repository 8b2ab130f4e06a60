//! How the test servers run: a child process that cannot outlive the test
//! process, the tail of its output for error messages, and the wait until
//! it is ready.
//!
//! Every server runs under a small `sh` wrapper whose stdin is a pipe from
//! this process. When that pipe reaches end of file — on [`Process::stop`],
//! or when this process exits however it exits (a panic, `SIGKILL`), which
//! the kernel guarantees — the wrapper kills the server with `SIGKILL`. A
//! static server, never dropped, is therefore still gone when the test
//! binary is; no server has to watch its own stdin.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Output kept for error messages.
const TAIL_BYTES: usize = 8 * 1024;

/// Runs `"$@"` (the server and its arguments) and kills it when stdin, a
/// pipe from the owning process, reaches end of file. The server's own
/// stdin is /dev/null; the wrapper's exit status is the server's. Once the
/// server has exited, the watcher is stopped before it could kill a
/// process that reused the pid.
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

/// Why a server did not become ready.
#[derive(Debug)]
pub(crate) enum LaunchError {
    /// It exited first.
    Exited {
        status: ExitStatus,
        /// The tail of its output.
        output: String,
    },
    /// It was not ready in time.
    NotReady {
        waited: Duration,
        /// The last thing that went wrong while waiting.
        last: String,
        output: String,
    },
    /// It could not be started or waited for.
    Io { context: String, source: io::Error },
}

/// A server process under the wrapper; stopped on drop.
#[derive(Debug)]
pub(crate) struct Process {
    /// The wrapper, with its stdin piped from us.
    child: Child,
    /// The tail of the server's stdout and stderr, appended to by threads
    /// that end when it does.
    output: Tail,
}

impl Process {
    /// Starts `program` with `args` under the wrapper. `watch` sees each
    /// line of the server's output (stdout and stderr) until it returns a
    /// value, which [`Process::wait_ready`] then receives: that the server
    /// has bound its port, or the port it bound.
    pub(crate) fn spawn<T: Send + 'static>(
        program: impl AsRef<OsStr>,
        configure: impl FnOnce(&mut Command),
        watch: impl FnMut(&str) -> Option<T> + Send + 'static,
    ) -> Result<(Self, mpsc::Receiver<T>), LaunchError> {
        let program = program.as_ref();
        let mut command = Command::new("sh");
        command.args(["-c", WRAPPER, "sh"]).arg(program);
        configure(&mut command);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LaunchError::Io {
                context: format!("cannot run sh to start {}", program.to_string_lossy()),
                source,
            })?;
        let output = Tail::default();
        let (found, seen) = mpsc::channel();
        let watch = Arc::new(Mutex::new(Some(watch)));
        output.drain(child.stdout.take().expect("stdout is piped"), {
            let (found, watch) = (found.clone(), Arc::clone(&watch));
            move |line| watch_line(&watch, &found, line)
        });
        output.drain(child.stderr.take().expect("stderr is piped"), move |line| {
            watch_line(&watch, &found, line)
        });
        Ok((Self { child, output }, seen))
    }

    /// Waits until the server's output has said what its `watch` looks
    /// for and `probe` then succeeds, for at most `timeout`.
    pub(crate) fn wait_ready<T>(
        &mut self,
        seen: &mpsc::Receiver<T>,
        timeout: Duration,
        mut probe: impl FnMut(&T) -> Result<(), String>,
    ) -> Result<T, LaunchError> {
        let started = Instant::now();
        let mut found = None;
        let mut last = "it has not said it is listening yet".to_owned();
        loop {
            let exited = self.child.try_wait().map_err(|source| LaunchError::Io {
                context: "cannot wait for the server".to_owned(),
                source,
            })?;
            if let Some(status) = exited {
                // Let the drain threads catch up with the error.
                thread::sleep(Duration::from_millis(100));
                return Err(LaunchError::Exited {
                    status,
                    output: self.output(),
                });
            }
            if started.elapsed() > timeout {
                return Err(LaunchError::NotReady {
                    waited: started.elapsed(),
                    last,
                    output: self.output(),
                });
            }
            let Some(value) = &found else {
                // Disconnected: its output closed; try_wait will tell why.
                match seen.recv_timeout(Duration::from_millis(100)) {
                    Ok(value) => {
                        found = Some(value);
                        last = "no answer yet".to_owned();
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
                continue;
            };
            match probe(value) {
                Ok(()) => return Ok(found.expect("just matched")),
                Err(error) => last = error,
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last few KiB of the server's output.
    pub(crate) fn output(&self) -> String {
        self.output.get()
    }

    /// Stops the server: end of file on the wrapper's stdin, whose watcher
    /// kills the server, whose exit ends the wrapper; the wrapper is killed
    /// too if that takes over 5 s. Reaped either way.
    pub(crate) fn stop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

fn watch_line<T, W: FnMut(&str) -> Option<T>>(
    watch: &Mutex<Option<W>>,
    found: &mpsc::Sender<T>,
    line: &str,
) {
    let mut watch = watch.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(value) = watch.as_mut().and_then(|watch| watch(line)) {
        let _ = found.send(value);
        *watch = None;
    }
}

/// The server a `shared()` constructor started, or a panic that says why
/// `what` cannot run: the test servers fail tests rather than skip them.
#[track_caller]
pub(crate) fn required<T, E: std::error::Error>(
    shared: Result<&'static T, &'static E>,
    what: &str,
) -> &'static T {
    match shared {
        Ok(server) => server,
        Err(error) => panic!("{what} is unavailable: {}", crate::chain::chain(error)),
    }
}

/// The last [`TAIL_BYTES`] of a child's output, filled by threads.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tail(Arc<Mutex<Vec<u8>>>);

impl Tail {
    /// Appends `stream` to the tail until it ends, showing each line to
    /// `line` once it is in the tail: whoever `line` wakes finds it there.
    pub(crate) fn drain(
        &self,
        stream: impl Read + Send + 'static,
        mut line: impl FnMut(&str) + Send + 'static,
    ) {
        let buffer = Arc::clone(&self.0);
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut bytes = Vec::new();
            while let Ok(1..) = reader.read_until(b'\n', &mut bytes) {
                {
                    let mut buffer = buffer.lock().unwrap_or_else(|e| e.into_inner());
                    buffer.extend_from_slice(&bytes);
                    let excess = buffer.len().saturating_sub(TAIL_BYTES);
                    buffer.drain(..excess);
                }
                line(&String::from_utf8_lossy(&bytes));
                bytes.clear();
            }
        });
    }

    /// What has been kept, lossily decoded.
    pub(crate) fn get(&self) -> String {
        let buffer = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_killed_when_it_is_stopped_and_says_what_it_printed() {
        let (mut process, seen) = Process::spawn(
            "sh",
            |command| {
                command.args(["-c", "echo listening on 42; exec sleep 600"]);
            },
            |line| {
                line.strip_prefix("listening on ")?
                    .trim()
                    .parse::<u16>()
                    .ok()
            },
        )
        .unwrap();
        let port = process
            .wait_ready(&seen, Duration::from_secs(10), |_| Ok(()))
            .unwrap();
        assert_eq!(port, 42);
        assert!(process.output().contains("listening on 42"));
        let started = Instant::now();
        process.stop();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "killed, not timed out"
        );
    }

    #[test]
    fn a_server_that_exits_first_is_an_error_with_its_output() {
        let (mut process, seen) = Process::spawn(
            "sh",
            |command| {
                command.args(["-c", "echo bind: address in use >&2; exit 3"]);
            },
            |_| None::<()>,
        )
        .unwrap();
        match process.wait_ready(&seen, Duration::from_secs(10), |()| Ok(())) {
            Err(LaunchError::Exited { status, output }) => {
                assert_eq!(status.code(), Some(3));
                assert!(output.contains("address in use"), "{output}");
            }
            other => panic!("{other:?}"),
        }
    }
}
