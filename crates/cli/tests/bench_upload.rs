//! `corral bench upload`, run small: each of its three figures end to
//! end, with s3s-fs and s5cmd. No timing or size figure is asserted; the
//! checks of integrity are.

use std::process::Command;

mod common;
use common::Printed;

#[test]
fn bench_upload_runs_every_figure_and_every_file_checks_out() {
    let out = tempfile::tempdir().unwrap();
    let printed = Printed::run(
        Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["bench", "upload", "--files", "6", "--size", "64KiB"])
            .args(["--rounds", "1", "--resume-size", "24MiB"])
            .args(["--many-files", "40", "--many-size", "1KiB", "--out"])
            .arg(out.path()),
    );
    let row = |what: &str| printed.row(what);
    let stdout = &printed.stdout;
    for what in [
        "corral: files stored and byte-identical",
        "s5cmd: files stored",
        "resumed file stored and byte-identical",
        "many files stored and byte-identical",
    ] {
        assert!(row(what).ends_with(": yes"), "{}\n{stdout}", row(what));
    }
    // Each figure was measured (a NaN would print as NaN).
    for what in ["throughput:", "resume:", "memory:"] {
        assert!(!row(what).contains("NaN"), "{}", row(what));
    }
    // Everything it made is gone.
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
