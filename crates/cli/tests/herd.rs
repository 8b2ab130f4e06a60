//! `corral bench herd` against the real `corral serve`: every file stored
//! and checked, refusals retried after `Retry-After`, objects read back
//! from S3.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::Corral;

use corral_testkit::herd::{self, HerdConfig, Report, Verify};
use corral_testkit::s3::{self, S3Server};

fn config(corral: &Corral, users: usize, files: usize, size: u64) -> HerdConfig {
    HerdConfig {
        url: corral.url.clone(),
        users,
        files,
        size,
        deadline: Duration::from_secs(25),
        metrics_interval: Duration::from_millis(50),
        ..HerdConfig::default()
    }
}

fn run(config: &HerdConfig) -> Report {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(herd::run(config))
        .unwrap()
}

fn outcomes(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|&(k, n)| (k.to_owned(), n)).collect()
}

#[test]
fn every_file_of_a_herd_is_stored_and_checked() {
    let corral = Corral::start(&["--store", "memory://"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["bench", "herd", "--quiet", "--url", &corral.url])
        .args(["--users", "20", "--files", "3", "--size", "64KiB"])
        .args(["--deadline", "25s", "--metrics-interval", "50ms", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        corral.logs()
    );
    assert!(stdout.contains("60 stored, 60 verified"), "{stdout}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let count = |field: &str| report[field].as_u64().unwrap_or_else(|| panic!("{field}"));
    assert_eq!(count("users_finished"), 20, "{report:#}");
    assert_eq!(count("users_unfinished"), 0);
    assert_eq!(count("files_attempted"), 60);
    assert_eq!(count("files_stored"), 60);
    assert_eq!(count("files_verified"), 60);
    assert_eq!(count("files_failed_verification"), 0);
    assert_eq!(count("bytes_stored"), 60 * 64 * 1024);
    assert_eq!(report["attempt_outcomes"], serde_json::json!({"201": 20}));
    assert_eq!(report["final_outcomes"], serde_json::json!({"201": 20}));
    assert_eq!(count("attempts"), 20);
    assert_eq!(count("retries"), 0);
    assert_eq!(report["batch_latency"]["count"].as_u64(), Some(20));
    assert!(count("metrics_scrapes") > 0, "{report:#}");
    assert!(count("peak_rss_bytes") > 0, "{report:#}");
    assert!(count("peak_tasks") > 0, "{report:#}");
}

#[test]
fn refused_users_retry_after_the_wait_until_every_file_is_stored() {
    // Upload memory for 4 batches of 3 x 64 KiB at a time (the least corral
    // accepts with 64 KiB parts) and no waiting room: the rest of the herd
    // gets 429. On local disk (each write synced, one at a time) the
    // batches overlap surely; in memory they could each end before the
    // next arrives.
    let data = tempfile::tempdir().unwrap();
    let corral = Corral::start(
        &[
            "--store",
            data.path().to_str().unwrap(),
            "--concurrency",
            "fixed:1",
            "--max-queued-jobs",
            "1",
            "--multipart-threshold",
            "64KiB",
            "--part-size",
            "64KiB",
            "--upload-memory",
            "1088KiB",
            "--upload-queue",
            "0",
        ],
        &[],
    );
    let report = run(&HerdConfig {
        max_attempts: 40,
        max_wait: Duration::from_secs(2),
        ..config(&corral, 20, 3, 64 << 10)
    });
    let logs = corral.logs();
    assert_eq!(report.users_unfinished, 0, "{report}\n{logs}");
    assert_eq!(report.final_outcomes, outcomes(&[("201", 20)]), "{report}");
    assert_eq!(report.files_stored, 60, "{report}");
    assert_eq!(report.files_verified, 60, "{report}");
    assert!(!report.verification_failed(), "{report}");
    assert!(report.retries > 0, "{report}");
    assert_eq!(report.attempts, 20 + report.retries, "{report}");
    let refused = report.attempt_outcomes.get("429").copied().unwrap_or(0);
    assert!(refused > 0, "{report}");
    assert!(
        report.error_examples["429"].contains("overloaded"),
        "{report}"
    );
}

/// corral storing under `pfx/` in `bucket` of the test S3 server.
fn corral_on_moto(bucket: &str) -> Corral {
    Corral::on_moto(bucket, &[])
}

#[test]
fn a_sample_read_straight_from_s3_matches_what_was_sent() {
    let s3 = S3Server::require();
    let bucket = s3.new_bucket("herd").unwrap();
    let endpoint = s3.endpoint();
    let corral = corral_on_moto(&bucket);
    let report = run(&HerdConfig {
        verify: Some(Verify {
            endpoint,
            bucket,
            prefix: "pfx".to_owned(),
            tenant: "anonymous".to_owned(),
            region: s3::REGION.to_owned(),
            access_key_id: s3::ACCESS_KEY_ID.to_owned(),
            secret_access_key: s3::SECRET_ACCESS_KEY.to_owned(),
            sample: 10,
        }),
        ..config(&corral, 8, 3, 64 << 10)
    });
    let logs = corral.logs();
    assert_eq!(report.files_stored, 24, "{report}\n{logs}");
    assert_eq!(report.files_verified, 24, "{report}");
    let s3 = report.s3.as_ref().unwrap();
    assert_eq!(s3.sampled, 10, "{report}");
    assert_eq!(s3.verified, 10, "{report}");
    assert_eq!(s3.failed, 0, "{report}");
    assert!(!report.verification_failed(), "{report}");
}

#[test]
fn a_wrong_s3_prefix_fails_the_read_back_and_the_command() {
    let s3 = S3Server::require();
    let bucket = s3.new_bucket("herd-wrong").unwrap();
    let endpoint = s3.endpoint();
    let corral = corral_on_moto(&bucket);
    let output = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["bench", "herd", "--quiet", "--url", &corral.url])
        .args(["--users", "2", "--files", "1", "--size", "1KiB"])
        .args([
            "--verify-s3-endpoint",
            &endpoint,
            "--verify-s3-bucket",
            &bucket,
        ])
        .args(["--verify-s3-prefix", "elsewhere", "--verify-sample", "2"])
        .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_ACCESS_KEY)
        .env("AWS_REGION", s3::REGION)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("2 sampled: 0 verified, 2 failed"),
        "{stdout}"
    );
    assert!(stderr.contains("failed"), "{stderr}");
}

#[test]
fn help_documents_every_herd_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["bench", "herd", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--url",
        "--users",
        "--files",
        "--size",
        "--max-attempts",
        "--max-wait",
        "--deadline",
        "--seed",
        "--metrics-interval",
        "--front",
        "--verify-s3-endpoint",
        "--verify-s3-bucket",
        "--verify-s3-prefix",
        "--verify-s3-region",
        "--verify-sample",
        "--json",
        "--quiet",
        "[default: 500]",
        "[default: 256KiB]",
    ] {
        assert!(
            help.contains(flag),
            "bench herd --help lacks {flag}:\n{help}"
        );
    }
}
