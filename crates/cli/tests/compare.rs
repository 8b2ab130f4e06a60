//! `corral bench compare`, run small: every process it starts, every file
//! it writes. On moto, which the test suite installs anyway; s3s-fs (the
//! default) is tested by `corral-testkit`'s ignored `s3s` tests.

use std::process::Command;

#[test]
fn compare_runs_each_strategy_end_to_end_and_writes_table_json_and_plots() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "bench", "compare", "--quiet", "--users", "6", "--files", "2",
        ])
        .args(["--size", "32KiB", "--slots", "4", "--latency", "20ms"])
        .args([
            "--strategies",
            "fixed:4,adaptive",
            "--deadline",
            "60s",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("fixed:4") && stdout.contains("adaptive"),
        "{stdout}"
    );

    let runs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("compare.json")).unwrap()).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        let report = &run["report"];
        // Nothing throttles a 12-file herd into giving up: all stored, and
        // every stored file read back from S3 by SHA-256.
        assert_eq!(report["files_stored"], 12, "{run}");
        assert_eq!(report["s3"]["verified"], 12, "{run}");
        assert_eq!(report["s3"]["failed"], 0, "{run}");
        // The front served one call per file (its metadata travels in the
        // object), and the probe corral writes and removes at startup.
        assert_eq!(run["front"]["forwarded"], 12 + 2, "{run}");
        assert!(
            run["front"]["peak_concurrency"].as_u64().unwrap() <= 4,
            "{run}"
        );
        assert!(!run["timeline"].as_array().unwrap().is_empty(), "{run}");
    }
    for file in [
        "compare.txt",
        "compare-adaptive-timeline.svg",
        "compare-strategies.svg",
    ] {
        let text = std::fs::read_to_string(out.path().join(file)).unwrap();
        assert!(!text.is_empty(), "{file}");
    }
    let timeline =
        std::fs::read_to_string(out.path().join("compare-adaptive-timeline.svg")).unwrap();
    assert_eq!(
        timeline.matches("<polyline").count(),
        4,
        "limit, in flight, queued, p99"
    );
}
