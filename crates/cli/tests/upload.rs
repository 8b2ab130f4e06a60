//! `corral upload`, `corral ls` and `corral get`: the real binary against a
//! real `corral serve` on 127.0.0.1, storing on the local disk, where every
//! stored object is read back and hashed independently of the client.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Corral, corral};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `corral serve` storing in a directory of the test's.
struct Server {
    corral: Corral,
    store: tempfile::TempDir,
}

impl Server {
    fn start(args: &[&str]) -> Self {
        let store = tempfile::tempdir().unwrap();
        let mut all = vec!["--store", store.path().to_str().unwrap()];
        all.extend_from_slice(args);
        let corral = Corral::start(&all, &[]);
        Self { corral, store }
    }

    fn url(&self) -> &str {
        &self.corral.url
    }

    /// The bytes stored under `key` for the anonymous tenant, read from
    /// the store's directory.
    fn stored(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.store.path().join("anonymous").join(key))
            .unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    /// `corral_http_requests_total` summed over the series whose labels
    /// contain each of `labels`.
    fn requests(&self, labels: &[&str]) -> f64 {
        let text = http_get(&format!("{}/metrics", self.url()));
        text.lines()
            .filter(|l| l.starts_with("corral_http_requests_total{"))
            .filter(|l| labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn http_get(url: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Random bytes, seeded.
fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut bytes = vec![0; len];
    rng.fill(&mut bytes);
    bytes
}

/// A tree of `small` small files (in three directories) and the large
/// files of `large` sizes; their paths and contents.
fn tree(dir: &Path, small: usize, large: &[usize]) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for i in 0..small {
        let sub = dir.join(format!("d{}", i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        files.insert(
            sub.join(format!("s{i}.bin")),
            random(100 + i * 997, i as u64),
        );
    }
    for (i, &len) in large.iter().enumerate() {
        files.insert(
            dir.join(format!("large{i}.bin")),
            random(len, 1000 + i as u64),
        );
    }
    for (path, bytes) in &files {
        std::fs::write(path, bytes).unwrap();
    }
    files
}

/// `corral upload` with `args`, `--json`, and a state directory.
fn upload(server: &str, state: &Path, args: &[&str]) -> Output {
    corral()
        .args(["upload", "--json", "--server", server, "--state"])
        .arg(state)
        .args(args)
        .output()
        .unwrap()
}

/// The JSON lines of an upload: the files by path, and the summary.
fn lines(output: &Output) -> (BTreeMap<PathBuf, Value>, Value) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut files = BTreeMap::new();
    let mut summary = Value::Null;
    for line in stdout.lines() {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{e}: {line:?} is not JSON\n{stdout}"));
        if let Some(s) = value.get("summary") {
            summary = s.clone();
        } else {
            let path = PathBuf::from(value["path"].as_str().unwrap());
            files.insert(path, value);
        }
    }
    (files, summary)
}

fn explain(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Checks each of `files` was reported stored and is stored byte for byte.
fn check_stored(
    server: &Server,
    files: &BTreeMap<PathBuf, Vec<u8>>,
    reported: &BTreeMap<PathBuf, Value>,
) {
    assert_eq!(reported.len(), files.len(), "{reported:?}");
    for (path, bytes) in files {
        let line = &reported[path];
        let key = line["key"].as_str().unwrap();
        assert_eq!(line["size"], bytes.len(), "{line}");
        assert_eq!(line["sha256"], sha256(bytes), "{line}");
        assert_eq!(sha256(&server.stored(key)), sha256(bytes), "{key}");
    }
}

#[test]
fn a_tree_uploads_every_file_checked_and_a_rerun_sends_nothing() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let files = tree(&dir.path().join("tree"), 25, &[3 << 20, (5 << 20) + 7]);
    let root = dir.path().join("tree");
    let args = [
        "--large",
        "2MiB",
        "--chunk-size",
        "1MiB",
        "--batch-files",
        "10",
        "--parallel",
        "3",
        root.to_str().unwrap(),
    ];
    let first = upload(server.url(), state.path(), &args);
    assert!(first.status.success(), "{}", explain(&first));
    let (reported, summary) = lines(&first);
    check_stored(&server, &files, &reported);
    let total: usize = files.values().map(Vec::len).sum();
    assert_eq!(summary["stored"], 27, "{summary}");
    assert_eq!(summary["bytes"], total, "{summary}");
    assert_eq!(summary["sent"], total, "{summary}");
    // 25 small files in batches of 10: three POSTs; each large file a
    // creation and PATCHes.
    assert_eq!(
        server.requests(&["route=\"/api/files\"", "method=\"POST\""]),
        3.0
    );
    assert_eq!(server.requests(&["method=\"POST\"", "/api/uploads"]), 2.0);

    let before = server.requests(&[]);
    let again = upload(server.url(), state.path(), &args);
    assert!(again.status.success(), "{}", explain(&again));
    let (reported_again, summary) = lines(&again);
    assert_eq!(summary["sent"], 0, "{summary}");
    assert_eq!(summary["already"], 27, "{summary}");
    for (path, line) in &reported_again {
        assert_eq!(line["already"], true, "{line}");
        assert_eq!(line["key"], reported[path]["key"], "{line}");
    }
    // The rerun asked the server one thing: whether it answers (a
    // listing of one file); then /metrics itself, counted after.
    let after = server.requests(&[]);
    assert_eq!(after - before, 2.0, "{before} -> {after}");
    assert_eq!(
        server.requests(&["route=\"/api/files\"", "method=\"POST\""]),
        3.0
    );
}

#[test]
fn an_interrupted_large_upload_resumes_from_the_servers_offset() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let size = 24 << 20;
    let files = tree(dir.path(), 0, &[size]);
    let path = files.keys().next().unwrap().clone();
    let args = ["--chunk-size", "2MiB", path.to_str().unwrap()];

    // Sent at 8 MiB/s, killed once the journal records a few chunks.
    let mut child = corral()
        .args([
            "upload",
            "--json",
            "--limit-rate",
            "8MiB",
            "--server",
            server.url(),
            "--state",
        ])
        .arg(state.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let journaled = loop {
        let offset = journal_offset(state.path());
        if offset >= 4 << 20 {
            break offset;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the journal recorded no progress in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        journaled < size as u64,
        "the upload finished before the kill"
    );

    let resumed = upload(server.url(), state.path(), &args);
    assert!(resumed.status.success(), "{}", explain(&resumed));
    let (reported, summary) = lines(&resumed);
    check_stored(&server, &files, &reported);
    let from = reported[&path]["resumed_from"].as_u64().unwrap();
    // The server kept at least what the journal saw, and only the rest
    // was sent again.
    assert!(
        from >= journaled && from < size as u64,
        "{from} {journaled}"
    );
    assert_eq!(summary["sent"], size as u64 - from, "{summary}");
    assert_eq!(server.requests(&["method=\"POST\"", "/api/uploads"]), 1.0);
}

/// The largest offset of a resumable upload the journal in `state` holds.
fn journal_offset(state: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(state) else {
        return 0;
    };
    entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["offset"].as_u64())
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn failures_exit_non_zero_listing_every_file_and_the_rest_is_stored() {
    let server = Server::start(&["--max-file-size", "5KiB"]);
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let files = tree(dir.path(), 12, &[]);
    let (too_large, fits): (BTreeMap<_, _>, BTreeMap<_, _>) = files
        .into_iter()
        .partition(|(_, bytes)| bytes.len() > 5 << 10);
    assert!(too_large.len() >= 2 && !fits.is_empty());
    let output = upload(server.url(), state.path(), &[dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", explain(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for path in too_large.keys() {
        let listed = format!("failed: {}: 413 Payload Too Large:", path.display());
        assert!(stderr.contains(&listed), "{listed:?} not in\n{stderr}");
    }
    assert!(
        stderr.contains(&format!(
            "corral: error: {} of 12 files failed",
            too_large.len()
        )),
        "{stderr}"
    );
    let (reported, summary) = lines(&output);
    assert_eq!(summary["failed"], too_large.len(), "{summary}");
    let stored: BTreeMap<_, _> = reported
        .into_iter()
        .filter(|(_, line)| line.get("key").is_some())
        .collect();
    check_stored(&server, &fits, &stored);
}

#[test]
fn a_wrong_token_and_bad_input_get_precise_errors() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("tokens.toml");
    let made = corral().args(["token", "alice"]).output().unwrap();
    std::fs::write(&auth, &made.stdout).unwrap();
    let server = Server::start(&["--auth", auth.to_str().unwrap()]);
    std::fs::write(dir.path().join("a.txt"), "a").unwrap();
    let file = dir.path().join("a.txt");
    let file = file.to_str().unwrap();
    let error = |args: &[&str], env: &[(&str, &str)]| {
        let output = corral()
            .args(args)
            .envs(env.iter().copied())
            .env("CORRAL_STATE_DIR", dir.path().join("state"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", explain(&output));
        assert!(output.stdout.is_empty(), "{}", explain(&output));
        String::from_utf8(output.stderr).unwrap()
    };
    let url = server.url();
    let stderr = error(
        &["upload", file, "--server", url, "--token", "corral_0"],
        &[],
    );
    assert!(
        stderr.starts_with(
            "corral: error: the server refused the token (--token, CORRAL_TOKEN): 401"
        ),
        "{stderr}"
    );
    let stderr = error(&["ls", "--server", url], &[]);
    assert!(
        stderr.starts_with("corral: error: the server wants a token (--token or CORRAL_TOKEN"),
        "{stderr}"
    );
    let stderr = error(
        &["upload", file],
        &[("CORRAL_URL", url), ("CORRAL_TOKEN", "x")],
    );
    assert!(stderr.contains("refused the token"), "{stderr}");

    let missing = dir.path().join("missing.txt");
    let stderr = error(&["upload", missing.to_str().unwrap(), "--server", url], &[]);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "corral: error: cannot read {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    // A port nothing listens on (once the listener is dropped).
    // A port nothing listens on once the listener is dropped.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let stderr = error(&["get", "k/a.txt", "--server", &closed], &[]);
    assert!(
        stderr.starts_with(&format!(
            "corral: error: cannot reach the corral server at {closed}/"
        )),
        "{stderr}"
    );
    let stderr = error(&["ls", "--server", "ftp://127.0.0.1"], &[]);
    assert!(
        stderr.contains("bad server URL \"ftp://127.0.0.1\": only http://"),
        "{stderr}"
    );
    let stderr = error(&["ls", "--server", "http://"], &[]);
    assert!(stderr.contains("bad server URL \"http://\""), "{stderr}");
}

#[test]
fn ls_and_get_round_trip_with_plain_and_json_lines() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let files = tree(&dir.path().join("in"), 5, &[]);
    let output = corral()
        .args([
            "upload",
            "--prefix",
            "docs/x",
            "--server",
            server.url(),
            "--state",
        ])
        .arg(dir.path().join("state"))
        .arg(dir.path().join("in"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", explain(&output));
    // Not a terminal: one plain line per file, key size sha256 path.
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut keys = BTreeMap::new();
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 4, "{line:?}");
        let bytes = &files[Path::new(fields[3])];
        assert!(fields[0].starts_with("docs/x/"), "{line}");
        assert_eq!(fields[1], bytes.len().to_string());
        assert_eq!(fields[2], sha256(bytes));
        keys.insert(fields[0].to_owned(), bytes.clone());
    }
    assert_eq!(keys.len(), 5, "{stdout}");

    let ls = corral()
        .args([
            "ls",
            "--json",
            "--prefix",
            "docs/",
            "--server",
            server.url(),
        ])
        .output()
        .unwrap();
    assert!(ls.status.success(), "{}", explain(&ls));
    let listed: Vec<Value> = String::from_utf8(ls.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let listed_keys: Vec<&str> = listed.iter().map(|v| v["key"].as_str().unwrap()).collect();
    assert_eq!(
        listed_keys,
        keys.keys().map(String::as_str).collect::<Vec<_>>()
    );
    for value in &listed {
        let key = value["key"].as_str().unwrap();
        assert_eq!(value["size"], keys[key].len());
        assert!(value["last_modified"].is_string(), "{value}");
    }
    let none = corral()
        .args(["ls", "--prefix", "nothing/", "--server", server.url()])
        .output()
        .unwrap();
    assert!(
        none.status.success() && none.stdout.is_empty(),
        "{}",
        explain(&none)
    );

    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let get = corral()
        .args(["get", "--json", "--server", server.url(), "-o"])
        .arg(&out)
        .args(keys.keys())
        .output()
        .unwrap();
    assert!(get.status.success(), "{}", explain(&get));
    let got = String::from_utf8(get.stdout).unwrap();
    assert_eq!(got.lines().count(), 5, "{got}");
    for line in got.lines() {
        let value: Value = serde_json::from_str(line).unwrap();
        let bytes = &keys[value["key"].as_str().unwrap()];
        assert_eq!(value["sha256"], sha256(bytes));
        assert_eq!(
            &std::fs::read(value["path"].as_str().unwrap()).unwrap(),
            bytes
        );
    }
    let first = keys.keys().next().unwrap();
    let to_stdout = corral()
        .args(["get", first, "-o", "-", "--server", server.url()])
        .output()
        .unwrap();
    assert!(to_stdout.status.success(), "{}", explain(&to_stdout));
    assert_eq!(&to_stdout.stdout, &keys[first]);
    let missing = corral()
        .args(["get", "docs/none.txt", "--server", server.url()])
        .current_dir(&out)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim_end(),
        "corral: error: no such file: docs/none.txt"
    );
}

#[test]
fn overload_is_waited_out_as_retry_after_says() {
    let server = Server::start(&[]);
    let stub = Overloaded::start(&server.corral.url, 2);
    let dir = tempfile::tempdir().unwrap();
    let files = tree(dir.path(), 3, &[]);
    let started = Instant::now();
    let output = upload(
        &stub.url,
        &dir.path().join("state"),
        &[dir.path().to_str().unwrap()],
    );
    assert!(output.status.success(), "{}", explain(&output));
    // Two refusals, each asking for a second's wait.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stub.refused(), 2);
    let (reported, _) = lines(&output);
    check_stored(&server, &files, &reported);

    // A server that stays overloaded fails the files after the retries.
    let stub = Overloaded::start(&server.corral.url, 100);
    let output = upload(
        &stub.url,
        &dir.path().join("state2"),
        &["--retries", "1", dir.path().to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1), "{}", explain(&output));
    assert_eq!(stub.refused(), 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for path in files.keys() {
        let listed = format!(
            "failed: {}: 429 Too Many Requests: come back later",
            path.display()
        );
        assert!(stderr.contains(&listed), "{listed:?} not in\n{stderr}");
    }
}

/// A front of corral that answers the first `refusals` uploads (`POST`s)
/// `429` with `Retry-After: 1`, closing their connection, and passes every
/// other request through.
struct Overloaded {
    url: String,
    refused: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl Overloaded {
    fn start(upstream: &str, refusals: usize) -> Self {
        let upstream = upstream.strip_prefix("http://").unwrap().to_owned();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let refused = Arc::new(AtomicUsize::new(0));
        let count = refused.clone();
        runtime.spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                tokio::spawn(relay(client, server, count.clone(), refusals));
            }
        });
        Self {
            url,
            refused,
            _runtime: runtime,
        }
    }

    /// Uploads refused.
    fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

/// Passes `client`'s requests to `server` one at a time (heads parsed,
/// bodies by `Content-Length`) and the answers back, until a `POST` is
/// to be refused: that one is answered `429` and the connection closed.
async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    count: Arc<AtomicUsize>,
    refusals: usize,
) {
    let (mut from_client, to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let to_client = Arc::new(tokio::sync::Mutex::new(to_client));
    let writer = to_client.clone();
    let answers = tokio::spawn(async move {
        let mut buf = vec![0; 64 * 1024];
        loop {
            match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if writer.lock().await.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut buffered = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let end = loop {
            if let Some(at) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffered.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffered[..end]).to_ascii_lowercase();
        if head.starts_with("post ") && count.fetch_add(1, Ordering::SeqCst) < refusals {
            answers.abort();
            let mut to_client = to_client.lock().await;
            let body = r#"{"error":{"code":"overloaded","message":"come back later"}}"#;
            let answer = format!(
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = to_client.write_all(answer.as_bytes()).await;
            let _ = to_client.shutdown().await;
            return;
        }
        if head.starts_with("post ") {
            count.fetch_sub(1, Ordering::SeqCst);
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut left = end + length;
        while left > 0 {
            if buffered.is_empty() {
                match from_client.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffered.extend_from_slice(&buf[..n]),
                }
            }
            let take = left.min(buffered.len());
            if to_server.write_all(&buffered[..take]).await.is_err() {
                return;
            }
            buffered.drain(..take);
            left -= take;
        }
    }
}
