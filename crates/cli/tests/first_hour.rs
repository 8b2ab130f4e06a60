//! A newcomer's mistakes, through the real binary: each answer names the
//! cause and the fix.

use std::process::Stdio;

mod common;
use common::corral;

#[test]
fn print_config_into_a_closed_pipe_is_no_failure_and_shows_the_adaptive_range() {
    // `corral serve --print-config | head -1`: the reader goes away.
    let mut child = corral()
        .args(["serve", "--print-config"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");

    let output = corral().args(["serve", "--print-config"]).output().unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("# concurrency_min = 1 "), "{printed}");
    assert!(printed.contains("# concurrency_max = 256 "), "{printed}");
    // Still a config file that reads back.
    toml::from_str::<toml::Table>(&printed).unwrap();
    let output = corral()
        .args(["serve", "--print-config", "--concurrency-min", "2"])
        .output()
        .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("\nconcurrency_min = 2\n"), "{printed}");
}

#[test]
fn a_plain_http_s3_endpoint_is_refused_at_once_with_the_flag_to_add() {
    let dir = tempfile::tempdir().unwrap();
    let output = corral()
        .current_dir(dir.path())
        .args(["serve", "--store", "s3://bucket/x"])
        .args(["--s3-endpoint", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--s3-allow-http"), "{stderr}");
    assert_eq!(stderr.matches("plain HTTP").count(), 1, "{stderr}");
    // Refused before anything is opened or created.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
