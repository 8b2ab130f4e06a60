//! A `corral serve` process for the binary's tests.

// Each test crate uses what it needs.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};

pub(crate) mod tus;

/// A `corral serve` on a port of its own, killed on drop.
pub(crate) struct Corral {
    pub(crate) child: Child,
    pub(crate) url: String,
    log: PathBuf,
    /// Held open so the server never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Corral {
    pub(crate) fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("corral.log");
        let mut command = corral();
        command.args(["serve", "--listen", "127.0.0.1:0"]);
        if !args.contains(&"--spool-dir") {
            command.arg("--spool-dir").arg(dir.path().join("spool"));
        }
        let mut child = command
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let Some(address) = line
            .strip_prefix("corral listening on http://")
            .and_then(|rest| rest.split(',').next())
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "corral did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Self {
            url: format!("http://{address}"),
            child,
            log,
            _stdout: stdout,
            _dir: dir,
        }
    }

    /// A corral storing under `pfx/` in `bucket` of the test S3 server
    /// (moto), with `args` added.
    pub(crate) fn on_moto(bucket: &str, args: &[&str]) -> Self {
        let endpoint = corral_testkit::s3::S3Server::require().endpoint();
        Self::on_s3(&endpoint, bucket, args)
    }

    /// The same, reaching S3 through `endpoint` (a front before it).
    pub(crate) fn on_s3(endpoint: &str, bucket: &str, args: &[&str]) -> Self {
        use corral_testkit::s3;
        Self::on_s3_with(
            endpoint,
            bucket,
            args,
            &[
                ("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY_ID),
                ("AWS_SECRET_ACCESS_KEY", s3::SECRET_ACCESS_KEY),
            ],
        )
    }

    /// The same, with the credentials `env` gives.
    pub(crate) fn on_s3_with(
        endpoint: &str,
        bucket: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let store = format!("s3://{bucket}/pfx");
        let mut all = vec![
            "--store",
            &store,
            "--s3-endpoint",
            endpoint,
            "--s3-region",
            corral_testkit::s3::REGION,
            "--s3-path-style",
            "--s3-allow-http",
            // moto dates every multipart upload in 2010, so a sweep would
            // abort uploads in progress.
            "--orphan-sweep",
            "0s",
        ];
        all.extend_from_slice(args);
        Self::start(&all, env)
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The logs once they hold `text`, or after 5 s.
    pub(crate) fn logs_with(&self, text: &str) -> String {
        for _ in 0..100 {
            let logs = self.logs();
            if logs.contains(text) {
                return logs;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.logs()
    }
}

impl Drop for Corral {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `corral` binary, with no `CORRAL_*` variable of the test run's
/// environment: every test starts from a clean slate.
pub(crate) fn corral() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_corral"));
    for (name, _) in std::env::vars() {
        if name.starts_with("CORRAL_") {
            command.env_remove(name);
        }
    }
    command
}

/// What a `corral bench` command printed, once it succeeded.
pub(crate) struct Printed {
    pub(crate) stdout: String,
    stderr: String,
}

impl Printed {
    /// Runs `command`, and panics with what it printed unless it succeeds.
    pub(crate) fn run(command: &mut Command) -> Self {
        let output = command.output().unwrap();
        let printed = Self {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        assert!(
            output.status.success(),
            "{}\n{}",
            printed.stdout,
            printed.stderr
        );
        printed
    }

    /// The line of the figure whose name starts with `what`.
    pub(crate) fn row(&self, what: &str) -> &str {
        let (stdout, stderr) = (&self.stdout, &self.stderr);
        stdout
            .lines()
            .find(|line| line.starts_with(what))
            .unwrap_or_else(|| panic!("no row {what:?} in\n{stdout}\n{stderr}"))
    }
}
