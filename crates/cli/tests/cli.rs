//! The `corral` binary as a user runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::corral;

fn printed_config(command: &mut Command) -> toml::Table {
    let output = command.arg("--print-config").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    toml::from_str(&String::from_utf8(output.stdout).unwrap()).unwrap()
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corral.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:7001\"\nstore = \"from-file\"\nmax_files = 7\n",
    )
    .unwrap();

    let defaults = printed_config(corral().arg("serve"));
    assert_eq!(defaults["listen"].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(defaults["store"].as_str(), Some("./corral-data"));
    assert_eq!(defaults["max_file_size"].as_str(), Some("5GiB"));
    assert_eq!(defaults["max_connections"].as_integer(), Some(16384));

    let config = printed_config(
        corral()
            .args(["serve", "--config"])
            .arg(&file)
            .env("CORRAL_STORE", "from-env")
            .env("CORRAL_MAX_FILES", "9")
            .env("CORRAL_MAX_CONNECTIONS", "64")
            .args(["--max-files", "11"]),
    );
    assert_eq!(
        config["listen"].as_str(),
        Some("127.0.0.1:7001"),
        "file over default"
    );
    assert_eq!(config["store"].as_str(), Some("from-env"), "env over file");
    assert_eq!(config["max_files"].as_integer(), Some(11), "flag over env");
    assert_eq!(config["part_size"].as_str(), Some("8MiB"), "default");
    assert_eq!(config["max_connections"].as_integer(), Some(64), "env");

    // The config file can come from the environment too.
    let config = printed_config(corral().arg("serve").env("CORRAL_CONFIG", &file));
    assert_eq!(config["max_files"].as_integer(), Some(7));
}

#[test]
fn bad_settings_fail_with_a_clear_message() {
    let output = corral()
        .args(["serve", "--print-config", "--part-size", "lots"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--part-size") && stderr.contains("lots"),
        "{stderr}"
    );

    let output = corral()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0"),
        "{stderr}"
    );
}

#[test]
fn help_documents_every_option() {
    let output = corral().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for option in [
        "--config",
        "--listen",
        "--store",
        "--concurrency",
        "--max-file-size",
        "--max-batch-size",
        "--max-files",
        "--max-connections",
        "--body-timeout",
        "--shutdown-grace",
        "--upload-memory",
        "--s3-endpoint",
        "--s3-region",
        "--s3-path-style",
        "--s3-allow-http",
        "--concurrency-min",
        "--concurrency-max",
        "--max-queued-jobs",
        "--max-queued-bytes",
        "--multipart-threshold",
        "--part-size",
        "--log-format",
        "--insecure-no-auth",
        "--auth",
        "--print-config",
        "CORRAL_LISTEN",
        "[default: 127.0.0.1:8080]",
    ] {
        assert!(help.contains(option), "serve --help lacks {option}");
    }
    let output = corral().arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("serve"), "{help}");
}

#[test]
fn serve_prints_where_it_listens_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = corral()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--spool-dir",
        ])
        .arg(dir.path().join("spool"))
        .arg("--store")
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let data = dir.path().join("data").canonicalize().unwrap();
    assert!(
        line.starts_with("corral listening on http://127.0.0.1:"),
        "{line}"
    );
    assert!(
        line.trim_end()
            .ends_with(&format!("storing in file://{}", data.display())),
        "{line}"
    );
    let address = line
        .trim_start_matches("corral listening on http://")
        .split(',')
        .next()
        .unwrap()
        .to_owned();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let health = reqwest::get(format!("http://{address}/healthz"))
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    });

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut status = None;
    for _ in 0..100 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = status.unwrap_or_else(|| {
        child.kill().unwrap();
        panic!("corral did not stop within 5 s of SIGTERM");
    });
    assert!(status.success(), "{status}");
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    for line in logs.lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON log line: {line:?}"));
        assert!(entry["level"].is_string(), "{line}");
    }
    assert!(logs.contains("shutting down"), "{logs}");
}

#[test]
fn a_token_from_corral_token_opens_a_server_started_with_its_entry() {
    let output = corral().args(["token", "acme"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    // The entry alone on stdout (`>> tokens.toml`), the token on stderr.
    let entry = String::from_utf8(output.stdout).unwrap();
    let said = String::from_utf8(output.stderr).unwrap();
    let token = said
        .lines()
        .find_map(|line| line.strip_prefix("token: "))
        .unwrap_or_else(|| panic!("no token in {said}"))
        .to_owned();
    assert!(entry.starts_with("[[tenant]]"), "{entry}");
    assert!(
        !entry.contains(&token),
        "the entry holds the hash, not the token"
    );
    let entry = &entry;

    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("tokens.toml");
    std::fs::write(&auth, entry).unwrap();
    let auth = auth.to_str().unwrap();
    // With an auth file, a non-loopback address is allowed.
    let config = printed_config(corral().args(["serve", "--auth", auth, "--listen", "0.0.0.0:0"]));
    assert_eq!(config["auth"].as_str(), Some(auth));

    let server = common::Corral::start(&["--store", "memory://", "--auth", auth], &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let list = format!("{}/api/files", server.url);
        let anonymous = client.get(&list).send().await.unwrap();
        assert_eq!(anonymous.status(), 401);
        let wrong = client
            .get(&list)
            .bearer_auth("corral_0")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        let right = client.get(&list).bearer_auth(&token).send().await.unwrap();
        assert_eq!(right.status(), 200);
    });
    drop(server);

    // Names that cannot be a tenant get no token.
    let output = corral().args(["token", "../x"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).is_empty());
    // A broken auth file stops the server before it listens, naming it.
    std::fs::write(dir.path().join("bad.toml"), "[[tenant]]\nname = \"acme\"\n").unwrap();
    let bad = dir.path().join("bad.toml");
    let output = corral()
        .args([
            "serve",
            "--store",
            "memory://",
            "--listen",
            "127.0.0.1:0",
            "--auth",
        ])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("token_sha256"),
        "{stderr}"
    );
}

/// `GET /healthz` on a new connection: whether it was answered `200`
/// within 2 s.
fn healthy(address: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut socket) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let request = "GET /healthz HTTP/1.1\r\nHost: corral\r\nConnection: close\r\n\r\n";
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = socket
        .write_all(request.as_bytes())
        .and_then(|()| socket.read_to_end(&mut answer));
    answer.starts_with(b"HTTP/1.1 200 ")
}

#[test]
fn out_of_file_descriptors_the_server_says_so_waits_and_serves_again() {
    use rustix::process::{Pid, Resource, Rlimit, prlimit};
    let data = tempfile::tempdir().unwrap();
    let store = data.path().to_str().unwrap();
    // More connections than descriptors: the limit warns at start.
    let args = ["--store", store, "--orphan-sweep", "0s"];
    let corral = common::Corral::start(
        &[&args[..], &["--max-connections", "1000000"]].concat(),
        &[],
    );
    let logs = corral.logs_with("open-files limit leaves room for fewer connections");
    assert!(
        logs.contains("open-files limit leaves room for fewer connections"),
        "{logs}"
    );
    let address = corral.url.trim_start_matches("http://").to_owned();
    assert!(healthy(&address));

    // Room for a few more descriptors only.
    let pid = corral.child.id();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let limit = Some(open + 4);
    let pid = Pid::from_raw(pid as i32).unwrap();
    let new = Rlimit {
        current: limit,
        maximum: limit,
    };
    prlimit(Some(pid), Resource::Nofile, new).unwrap();
    let held: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(&address).unwrap())
        .collect();
    let logs = corral.logs_with("out of file descriptors");
    assert!(logs.contains("out of file descriptors"), "{logs}");
    assert!(logs.contains("ulimit -n"), "{logs}");

    // The connections close: the server accepts and serves again.
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        if healthy(&address) {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served, "not served again:\n{}", corral.logs());
    let mut corral = corral;
    assert!(corral.child.try_wait().unwrap().is_none(), "corral exited");
}
