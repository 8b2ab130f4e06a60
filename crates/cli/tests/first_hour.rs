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

/// `GET path` with `headers`, over HTTP/1.0: the status line.
fn get_status(url: &str, path: &str, headers: &str) -> String {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("http://");
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\n{headers}\r\n");
    socket.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = socket.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn each_refused_token_is_logged_with_why_and_a_hash_prefix_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    let good = "corral_the-good-token-0123456789";
    let hash = corral_server::token_sha256(good);
    let entry = format!("[[tenant]]\nname = \"acme\"\ntoken_sha256 = [\"{hash}\"]\n");
    std::fs::write(&file, entry).unwrap();
    let auth = file.to_str().unwrap();
    let server = common::Corral::start(&["--store", "memory://", "--auth", auth], &[]);
    // A token added to the file after corral started, and so not known.
    let added = "corral_added-after-start-9876543210";
    let basic = "Authorization: Basic c2VjcmV0LXVzZXI6c2VjcmV0LXBhc3M=\r\n";
    for headers in [
        String::new(),
        basic.to_owned(),
        format!("Authorization: Bearer {added}\r\n"),
    ] {
        let status = get_status(&server.url, "/api/files", &headers);
        assert!(status.contains(" 401 "), "{status}");
    }
    let status = get_status(
        &server.url,
        "/api/files",
        &format!("Authorization: Bearer {good}\r\n"),
    );
    assert!(status.contains(" 200 "), "{status}");

    let logs = server.logs();
    let refusals: Vec<&str> = logs.lines().filter(|l| l.contains("401")).collect();
    assert_eq!(refusals.len(), 3, "{logs}");
    assert!(
        refusals.iter().all(|line| line.contains(" INFO ")),
        "{logs}"
    );
    assert!(
        refusals[0].contains(r#"why="no Authorization header""#),
        "{logs}"
    );
    assert!(
        refusals[1].contains(r#"why="not a bearer token""#),
        "{logs}"
    );
    assert!(refusals[1].contains("scheme=\"Basic\""), "{logs}");
    assert!(refusals[2].contains(r#"why="unknown token""#), "{logs}");
    // What the operator compares with the file's token_sha256.
    let prefix = &corral_server::token_sha256(added)[..8];
    assert!(
        refusals[2].contains(&format!("token_sha256={prefix}…")),
        "{logs}"
    );
    assert!(refusals[2].contains("restart corral"), "{logs}");
    for secret in [added, good, "c2VjcmV0", &corral_server::token_sha256(added)] {
        assert!(!logs.contains(secret), "{secret} in the logs: {logs}");
    }
}
