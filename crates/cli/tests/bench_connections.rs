//! `corral bench connections`, run small: every connection held at once is
//! still served at the end, without an error. No size figure is asserted.

use std::process::Command;

mod common;
use common::Printed;

#[test]
fn bench_connections_holds_every_connection_without_an_error() {
    let out = tempfile::tempdir().unwrap();
    let printed = Printed::run(
        Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["bench", "connections", "--connections", "200"])
            .args([
                "--uploads",
                "50",
                "--upload-size",
                "1KiB",
                "--trickle",
                "2s",
            ])
            .args(["--deadline", "60s", "--out"])
            .arg(out.path()),
    );
    let row = |what: &str| printed.row(what);
    let stdout = &printed.stdout;
    for what in [
        "connections open at once",
        "errors",
        "idle connections answering 200",
        "slow uploads stored (201)",
    ] {
        assert!(row(what).ends_with("  yes"), "{}\n{stdout}", row(what));
    }
    // The memory figure was measured (a NaN would print as "no data").
    let per_idle = row("VmRSS rise per idle connection");
    assert!(!per_idle.contains("no data"), "{per_idle}");
    // Everything it made is gone.
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
