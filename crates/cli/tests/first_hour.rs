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
    assert!(printed.contains("# concurrency_min = 8 "), "{printed}");
    assert!(printed.contains("# concurrency_max = 256 "), "{printed}");
    // Still a config file that reads back.
    toml::from_str::<toml::Table>(&printed).unwrap();
    let output = corral()
        .args(["serve", "--print-config", "--concurrency-min", "3"])
        .output()
        .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("\nconcurrency_min = 3\n"), "{printed}");
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
    let logs = server.logs_with("serving");
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

#[test]
fn a_second_corral_is_told_the_port_first_then_the_spool_and_the_flag_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let spool = spool.to_str().unwrap();
    let first = common::Corral::start(&["--store", "memory://", "--spool-dir", spool], &[]);
    let address = first.url.trim_start_matches("http://");
    let second = |listen: &str| {
        let output = corral()
            .args(["serve", "--store", "memory://", "--spool-dir", spool])
            .args(["--listen", listen])
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8(output.stderr).unwrap()
    };
    // Same port and spool: the port is what to fix first.
    let said = second(address);
    assert!(
        said.contains(&format!("cannot listen on {address}")),
        "{said}"
    );
    assert!(said.contains("another --listen"), "{said}");
    assert!(!said.contains("spool"), "{said}");
    // Another port, the same spool.
    let said = second("127.0.0.1:0");
    assert!(
        said.contains("another corral is using the spool directory"),
        "{said}"
    );
    assert!(said.contains("--spool-dir"), "{said}");
    assert_eq!(said.matches("in use").count(), 1, "{said}");
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    let refused = |env: &[(&str, &str)], args: &[&str]| {
        let output = corral()
            .envs(env.iter().copied())
            .args(["serve", "--print-config"])
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8(output.stderr).unwrap()
    };
    let said = refused(&[("CORRAL_MAX_FILES", "abc")], &[]);
    assert!(said.contains("'CORRAL_MAX_FILES'"), "{said}");
    assert!(!said.contains("'--max-files"), "{said}");
    // Given as a flag, the flag is named, whatever the environment says.
    for args in [&["--max-files", "abc"][..], &["--max-files=abc"]] {
        let said = refused(&[("CORRAL_MAX_FILES", "abc")], args);
        assert!(said.contains("'--max-files <N>'"), "{said}");
    }
    // Through an alias too.
    let said = refused(
        &[("CORRAL_SHUTDOWN_GRACE", "1s")],
        &["--shutdown-timeout", "x"],
    );
    assert!(said.contains("'--shutdown-grace"), "{said}");
}

#[test]
fn durations_need_a_unit_everywhere_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corral.toml");
    std::fs::write(&file, "body_timeout = 30\n").unwrap();
    for args in [
        vec!["--body-timeout", "30"],
        vec!["--config", file.to_str().unwrap()],
    ] {
        let output = corral()
            .args(["serve", "--print-config"])
            .args(&args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let said = String::from_utf8(output.stderr).unwrap();
        assert!(
            said.contains("30 has no unit") && said.contains("30s"),
            "{said}"
        );
    }
    // A bare size is bytes, and the default durations print as the help
    // and the README give them (checked by the table test below).
    let output = corral()
        .args(["serve", "--print-config", "--read-cache", "1048576"])
        .output()
        .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("read_cache = \"1MiB\""), "{printed}");
}

#[test]
fn listen_takes_a_host_name_or_a_port_and_port_points_to_it() {
    for (given, meant) in [
        ("localhost:9000", "127.0.0.1:9000"),
        ("9000", "127.0.0.1:9000"),
    ] {
        let output = corral()
            .args(["serve", "--print-config", "--listen", given])
            .output()
            .unwrap();
        let printed = String::from_utf8(output.stdout).unwrap();
        assert!(
            printed.contains(&format!("listen = \"{meant}\"")),
            "{given}: {printed}"
        );
    }
    let output = corral()
        .args(["serve", "--listen", "localhost"])
        .output()
        .unwrap();
    let said = String::from_utf8(output.stderr).unwrap();
    assert!(
        said.contains("has no port") && said.contains("HOST:PORT"),
        "{said}"
    );
    let output = corral().args(["serve", "--port", "8080"]).output().unwrap();
    let said = String::from_utf8(output.stderr).unwrap();
    assert!(said.contains("--listen 127.0.0.1:8080"), "{said}");
}

#[cfg(feature = "bench")]
#[test]
fn a_baseline_limit_is_served_with_a_warning() {
    let server =
        common::Corral::start(&["--store", "memory://", "--concurrency", "unbounded"], &[]);
    let logs = server.logs_with("baseline for benchmarks");
    assert!(
        logs.contains("WARN") && logs.contains("baseline for benchmarks"),
        "{logs}"
    );
}

#[test]
fn s3_keys_come_from_an_aws_profile_and_a_missing_one_is_named() {
    use corral_testkit::s3::{ACCESS_KEY_ID, S3Server, SECRET_ACCESS_KEY};
    let server = S3Server::require();
    let bucket = server.new_bucket("profile").unwrap();
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("credentials");
    std::fs::write(
        &file,
        format!(
            "[default]\naws_access_key_id = nobody\n\n[ci]\naws_access_key_id = \
             {ACCESS_KEY_ID}\naws_secret_access_key = {SECRET_ACCESS_KEY}\n"
        ),
    )
    .unwrap();
    let home_dir = home.path().to_str().unwrap();
    let file = file.to_str().unwrap();
    let env = |profile| {
        [
            ("HOME", home_dir),
            ("AWS_SHARED_CREDENTIALS_FILE", file),
            ("AWS_PROFILE", profile),
        ]
    };
    // Starting is the proof that the profile's keys were used: without
    // them, the check write at startup would ask the EC2 metadata service
    // and fail (as with `AWS_PROFILE=prod` below).
    let serving = common::Corral::on_s3_with(&server.endpoint(), &bucket, &[], &env("ci"));
    assert!(serving.logs_with("serving").contains("serving"));
    drop(serving);

    let output = corral()
        .env("HOME", home_dir)
        .env("AWS_SHARED_CREDENTIALS_FILE", file)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args([
            "serve",
            "--store",
            "s3://bucket/x",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("AWS_PROFILE", "prod")
        .output()
        .unwrap();
    let said = String::from_utf8(output.stderr).unwrap();
    assert!(
        said.contains("AWS_PROFILE=prod") && said.contains(file),
        "{said}"
    );
    assert!(said.contains("export-credentials --profile prod"), "{said}");
}

/// One option of `corral serve --help`: `--listen`, its variable, and
/// what its help says the default is.
#[derive(Debug)]
struct Documented {
    flag: String,
    env: Option<String>,
    default: Option<String>,
    switch: bool,
}

/// The options `corral serve --help` lists, from its text.
fn options_in_help() -> Vec<Documented> {
    let output = corral().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    let mut options: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        // Option lines are indented by 2 to 6; their text by 10.
        if (2..10).contains(&indent) && trimmed.starts_with('-') {
            options.push((trimmed.to_owned(), String::new()));
        } else if let Some((_, text)) = options.last_mut() {
            text.push(' ');
            text.push_str(trimmed);
        }
    }
    let bracket = |text: &str, open: &str| {
        let start = text.find(open)? + open.len();
        let end = start + text[start..].find(']')?;
        Some(text[start..end].trim().to_owned())
    };
    options
        .into_iter()
        .filter_map(|(head, text)| {
            let flag = head
                .split([' ', ','])
                .find(|word| word.starts_with("--"))?
                .to_owned();
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                text.matches("[default: ").count() <= 1,
                "two defaults: {head} {text}"
            );
            Some(Documented {
                switch: !head.contains('<'),
                env: bracket(&text, "[env: ").map(|env| env.trim_end_matches('=').to_owned()),
                default: bracket(&text, "[default: "),
                flag,
            })
        })
        .filter(|option| !["--help", "--version", "--print-config"].contains(&option.flag.as_str()))
        .collect()
}

#[test]
fn the_readme_configuration_table_matches_serve_help_and_print_config() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let plain = |cell: &str| cell.replace('`', "").trim().to_owned();
    // `| --listen ADDR | CORRAL_LISTEN | 127.0.0.1:8080 | ... |`
    let rows: Vec<[String; 3]> = readme
        .lines()
        .filter(|line| line.starts_with("| `--"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').collect();
            let flag = plain(cells[1]).split(' ').next().unwrap().to_owned();
            [flag, plain(cells[2]), plain(cells[3])]
        })
        .collect();
    let printed = String::from_utf8(
        corral()
            .args(["serve", "--print-config"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let help = options_in_help();
    assert!(help.len() > 30, "{help:?}");
    let mut wrong = Vec::new();
    for option in &help {
        let flag = &option.flag;
        let Some(row) = rows.iter().find(|[name, ..]| name == flag) else {
            wrong.push(format!("{flag} is not in the README's table"));
            continue;
        };
        if Some(&row[1]) != option.env.as_ref() {
            wrong.push(format!(
                "{flag}: the README says {}, --help {:?}",
                row[1], option.env
            ));
        }
        let default = match (&option.default, option.switch) {
            (Some(default), _) => plain(default),
            (None, true) => "off".to_owned(),
            (None, false) => "none".to_owned(),
        };
        if row[2] != default {
            wrong.push(format!(
                "{flag}: the README's default is {:?}, --help's {default:?}",
                row[2]
            ));
        }
        // And what it runs with: `key = "value"` of --print-config.
        let key = flag.trim_start_matches("--").replace('-', "_");
        let value = printed
            .lines()
            .map(|line| line.strip_prefix("# ").unwrap_or(line))
            .find_map(|line| line.strip_prefix(&format!("{key} = ")));
        if let (Some(value), Some(_)) = (value, &option.default) {
            let value = value.split_whitespace().next().unwrap().trim_matches('"');
            let first = default.split([',', ' ']).next().unwrap();
            if first != value {
                wrong.push(format!(
                    "{flag}: --help's default is {first}, --print-config's {value}"
                ));
            }
        }
    }
    for [flag, ..] in &rows {
        if !help.iter().any(|option| option.flag == *flag) {
            wrong.push(format!(
                "{flag} is in the README's table but not in `corral serve --help`"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
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
