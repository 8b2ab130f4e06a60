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

#[test]
fn corral_token_appended_to_the_auth_file_is_a_working_entry() {
    let dir = tempfile::tempdir().unwrap();
    let output = corral().args(["token", "acme"]).output().unwrap();
    assert!(output.status.success());
    let file = dir.path().join("tokens.toml");
    // `corral token acme >> tokens.toml`
    std::fs::write(&file, &output.stdout).unwrap();
    // A port already taken: serving stops right after the auth file, which
    // is read first.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = corral()
        .current_dir(dir.path())
        .args(["serve", "--store", "memory://", "--listen", &address])
        .arg("--auth")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains("auth file"), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
}

#[test]
fn a_broken_auth_file_is_described_by_line_without_quoting_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    let refusal = |text: &str| {
        std::fs::write(&file, text).unwrap();
        let output = corral()
            .args(["serve", "--store", "memory://", "--auth"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8(output.stderr).unwrap()
    };
    // The old mistake: the token's line pasted into the file.
    let said = refusal("token: corral_5ec12e7\n[[tenant]]\nname = \"a\"\n");
    assert!(said.contains("line 1"), "{said}");
    assert!(
        !said.contains("corral_5ec12e7"),
        "a secret was echoed: {said}"
    );
    let said = refusal("[tenant]\nname = \"a\"\ntoken_sha256 = []\n");
    assert!(said.contains("[[tenant]]"), "{said}");
}

#[test]
fn an_unknown_log_level_is_refused_and_logs_to_a_file_have_no_colour_codes() {
    let output = corral()
        .env("CORRAL_LOG", "verbose")
        .args(["serve", "--store", "memory://", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("CORRAL_LOG"), "{stderr}");
    assert!(stderr.contains("\"verbose\" is not a level"), "{stderr}");

    let server = common::Corral::start(&["--store", "memory://"], &[("CORRAL_LOG", "info")]);
    let mut logs = server.logs();
    for _ in 0..100 {
        if logs.contains("serving") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        logs = server.logs();
    }
    assert!(logs.contains("serving"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "colour codes in a log file: {logs:?}"
    );
}

#[test]
fn switches_in_the_environment_take_what_containers_write() {
    for (value, expected) in [
        ("1", true),
        ("yes", true),
        ("on", true),
        ("0", false),
        ("no", false),
    ] {
        let output = corral()
            .env("CORRAL_S3_PATH_STYLE", value)
            .args(["serve", "--print-config"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{value}: {stderr}");
        let printed = String::from_utf8(output.stdout).unwrap();
        assert!(
            printed.contains(&format!("s3_path_style = {expected}\n")),
            "{value}: {printed}"
        );
    }
}
