//! `corral bench tus`, run small: each of its four figures end to end, with
//! the real tus-js-client, @tus/server, moto and the throttling front.
//! rustus is left out: its first install compiles for minutes. No timing
//! is asserted; the checks of integrity are.

use std::process::Command;

mod common;
use common::Printed;

#[test]
fn bench_tus_runs_every_figure_and_every_file_checks_out() {
    let out = tempfile::tempdir().unwrap();
    let printed = Printed::run(
        Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["bench", "tus", "--against", "tus-node", "--rounds", "1"])
            .args(["--files", "4", "--size", "64KiB", "--concurrency", "2"])
            .args(["--resume-files", "2", "--resume-size", "1MiB"])
            .args(["--herd-clients", "4", "--herd-files", "2"])
            .args(["--herd-size", "32KiB", "--slots", "4", "--latency", "20ms"])
            .args(["--idle-uploads", "10", "--timeout", "40s", "--out"])
            .arg(out.path()),
    );
    let row = |what: &str| printed.row(what);
    let stdout = &printed.stdout;
    for what in [
        "corral: files stored and byte-identical",
        "@tus/server: files stored and byte-identical",
        "local disk: uploads complete and byte-identical",
        "local disk: uploads resumed",
        "S3: uploads complete and byte-identical",
        "S3: uploads resumed",
        "bytes in the creation: files stored, read back from S3",
        "bytes in the creation: upload states left",
        "empty creation + PATCH: files stored, read back from S3",
        "empty creation + PATCH: upload states left",
        "uploads open at offset",
    ] {
        assert!(row(what).ends_with(" yes"), "{}\n{stdout}", row(what));
    }
    assert!(row("corral / @tus/server MiB/s").contains('x'), "{stdout}");
    assert!(row("rise of VmRSS").contains("MiB"), "{stdout}");
    // Everything it started is gone, and its data with it.
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
