//! `corral serve` and its stop signals.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Corral;

fn send_sigterm(corral: &Corral) {
    let status = Command::new("kill")
        .args(["-TERM", &corral.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_second_signal_stops_at_once_without_waiting_for_the_drain() {
    let mut corral = Corral::start(&["--store", "memory://", "--shutdown-grace", "60s"], &[]);
    // An upload in progress: announced, half sent, never finished.
    let address = corral.url.trim_start_matches("http://").to_owned();
    let mut upload = TcpStream::connect(&address).unwrap();
    let head = "POST /api/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; \
                boundary=b\r\nContent-Length: 1000\r\n\r\n--b\r\n";
    upload.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    send_sigterm(&corral);
    // The first signal drains: the upload in progress holds the process.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        corral.child.try_wait().unwrap().is_none(),
        "exited before its grace period: {}",
        corral.logs()
    );

    send_sigterm(&corral);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = corral.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the second signal did not stop it"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1), "{}", corral.logs());
    assert!(corral.logs().contains("second signal"), "{}", corral.logs());
}

/// Waits for corral to exit, at most `within`; its exit status.
fn exit_status(corral: &mut Corral, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = corral.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "still running after {within:?}: {}",
            corral.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The upload memory corral's `/metrics` shows reserved (a plain HTTP/1.0
/// GET, so the answer ends with the connection); 0 when it cannot be read.
fn memory_reserved(address: &str) -> u64 {
    get(address, "/metrics")
        .lines()
        .find_map(|line| line.strip_prefix("corral_upload_memory_reserved_bytes "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// A plain HTTP/1.0 GET of `path`: the whole answer, or "" when the server
/// cannot be reached.
fn get(address: &str, path: &str) -> String {
    use std::io::Read;
    let Ok(mut socket) = TcpStream::connect(address) else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    if socket.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut text = String::new();
    let _ = socket.read_to_string(&mut text);
    text
}

/// Waits, at most 20 s, until `condition` holds.
fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An upload this test holds in progress: its head and half its body sent,
/// the rest sent by [`finish`](Self::finish).
struct HeldUpload {
    socket: TcpStream,
    rest: Vec<u8>,
}

impl HeldUpload {
    fn start(address: &str) -> Self {
        let mut body = b"--b\r\nContent-Disposition: form-data; name=\"file\"; \
                         filename=\"held.bin\"\r\n\r\n"
            .to_vec();
        body.extend(std::iter::repeat_n(b'h', 100_000));
        body.extend_from_slice(b"\r\n--b--\r\n");
        let head = format!(
            "POST /api/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; \
             boundary=b\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut socket = TcpStream::connect(address).unwrap();
        socket.write_all(head.as_bytes()).unwrap();
        let rest = body.split_off(body.len() / 2);
        socket.write_all(&body).unwrap();
        Self { socket, rest }
    }

    /// Sends the rest of the body; the answer.
    fn finish(mut self) -> String {
        use std::io::Read;
        self.socket.write_all(&self.rest).unwrap();
        self.socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut answer = String::new();
        let _ = self.socket.read_to_string(&mut answer);
        answer
    }
}

/// R3: SIGTERM in the middle of a herd of multipart uploads to S3. Every
/// upload in progress completes (201); every request that arrives during
/// the drain, on a connection old or new, gets a clear 503 before its body
/// is taken; corral exits 0 within the grace period; S3 holds exactly the
/// acknowledged files and no open multipart upload.
///
/// One upload is held in progress by the test across the signal, so the
/// drain lasts until the test lets it finish, however fast the herd is.
#[test]
fn sigterm_during_a_herd_lets_uploads_finish_and_refuses_new_ones_cleanly() {
    use corral_testkit::herd::{self, HerdConfig};
    use corral_testkit::s3::S3Server;

    let s3 = S3Server::require();
    let bucket = s3.new_bucket("drain").unwrap();
    let mut corral = Corral::on_moto(
        &bucket,
        &[
            "--shutdown-grace",
            "60s",
            "--multipart-threshold",
            "5MiB",
            "--part-size",
            "5MiB",
        ],
    );
    let address = corral.url.trim_start_matches("http://").to_owned();
    let herd = |users, size, seed| HerdConfig {
        url: corral.url.clone(),
        users,
        files: 1,
        size,
        // One attempt each: what a request gets is what is checked.
        max_attempts: 1,
        deadline: Duration::from_secs(90),
        seed,
        metrics_interval: Duration::from_millis(100),
        ..HerdConfig::default()
    };
    let run = |config: HerdConfig| {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(herd::run(&config))
            .unwrap()
    };

    let held = HeldUpload::start(&address);
    wait_for("the held upload to be admitted", || {
        memory_reserved(&address) > 0
    });
    let held_alone = memory_reserved(&address);
    // Files of 6 MiB: multipart uploads of two parts. Signal once some of
    // them hold memory too, that is, are under way.
    let early = herd(12, 6 << 20, 1);
    let in_progress = std::thread::spawn(move || run(early));
    wait_for("the herd to get going", || {
        memory_reserved(&address) > held_alone
    });
    send_sigterm(&corral);
    wait_for("/readyz to turn 503", || {
        get(&address, "/readyz").split(' ').nth(1) == Some("503")
    });
    // Requests of the drain are refused, each with a clear 503.
    let late = run(herd(8, 64 << 10, 2));
    let held = held.finish();
    let early = in_progress.join().unwrap();
    let status = exit_status(&mut corral, Duration::from_secs(70));
    let logs = corral.logs();
    assert!(status.success(), "{status}: {logs}");

    // The upload in progress at the signal finished.
    assert!(held.starts_with("HTTP/1.1 201"), "{held}\n{logs}");
    assert!(held.contains("held.bin"), "{held}");
    // Each request of the herd was either stored or refused with a clear
    // 503 (those whose turn came after the signal): no connection cut.
    let answered: u64 = ["201", "503"]
        .iter()
        .filter_map(|status| early.attempt_outcomes.get(*status))
        .sum();
    assert_eq!(answered, 12, "{early}\n{logs}");
    assert_eq!(
        early.attempt_outcomes.get("201").copied().unwrap_or(0),
        early.files_stored
    );
    if early.files_stored < 12 {
        assert!(
            early.error_examples["503"].contains("shutting_down"),
            "{early}"
        );
    }
    assert_eq!(late.attempt_outcomes.get("503"), Some(&8), "{late}\n{logs}");
    assert!(
        late.error_examples["503"].contains("shutting_down"),
        "{late}"
    );
    assert_eq!(late.files_stored, 0);
    // Refusals of a drain are expected: not logged as errors (each was
    // logged twice at ERROR, by the error mapping and the trace layer).
    assert!(!logs.contains("ERROR"), "{logs}");

    // S3 holds each stored file, a metadata document for each of the
    // herd's (multipart) files, and nothing else (the held one, stored in
    // one call, carries its metadata); no multipart upload is open.
    let listing = s3
        .request("GET", &format!("/{bucket}?list-type=2"), &[], b"")
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.body).into_owned();
    let objects = listing.matches("<Key>").count() as u64;
    assert_eq!(objects, 2 * early.files_stored + 1, "{listing}");
    assert!(listing.contains("held.bin"), "{listing}");
    let uploads = s3
        .request("GET", &format!("/{bucket}?uploads"), &[], b"")
        .unwrap();
    let uploads = String::from_utf8_lossy(&uploads.body);
    assert!(!uploads.contains("<Upload>"), "open uploads: {uploads}");
}

/// Every regular file under `dir`.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten() {
            let path = entry.unwrap().path();
            match path.is_dir() {
                true => dirs.push(path),
                false => found.push(path),
            }
        }
    }
    found
}

/// Regression: a slow upload still running when `--shutdown-grace` ended
/// got no answer; its connection was held 5 s more and then cut (`Broken
/// pipe`), and corral exited at grace + 5 s. Now it gets `503
/// shutting_down`, nothing of it is stored, and corral exits soon after the
/// grace. Expected refusals during the drain are not logged as errors.
#[test]
fn a_slow_upload_past_the_grace_gets_503_shutting_down_and_corral_exits_soon_after() {
    use std::io::Read;

    let store = tempfile::tempdir().unwrap();
    let store_url = store.path().to_str().unwrap();
    let grace = Duration::from_secs(2);
    let mut corral = Corral::start(&["--store", store_url, "--shutdown-grace", "2s"], &[]);
    let address = corral.url.trim_start_matches("http://").to_owned();

    // 3 MB in one file, below the multipart threshold: no backend call
    // until the body has arrived, so only the shutdown can stop it.
    let size = 3_000_000;
    let start =
        b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.bin\"\r\n\r\n";
    let end = b"\r\n--b--\r\n";
    let head = format!(
        "POST /api/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; \
         boundary=b\r\nContent-Length: {}\r\n\r\n",
        start.len() + size + end.len()
    );
    let mut socket = TcpStream::connect(&address).unwrap();
    socket.write_all(head.as_bytes()).unwrap();
    socket.write_all(start).unwrap();
    // Like `curl --limit-rate 200k`: it would take 15 s.
    let mut sender = socket.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let chunk = [b's'; 10_000];
        for _ in 0..size / chunk.len() {
            if sender.write_all(&chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = sender.write_all(end);
    });
    wait_for("the upload to be admitted", || {
        memory_reserved(&address) > 0
    });

    send_sigterm(&corral);
    let signalled = Instant::now();
    // A request of the drain is refused, as expected.
    wait_for("/readyz to turn 503", || {
        get(&address, "/readyz").split(' ').nth(1) == Some("503")
    });
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    let read = socket.read_to_string(&mut answer);
    // Like curl, which stops sending once it has its answer.
    let _ = socket.shutdown(std::net::Shutdown::Both);
    let status = exit_status(&mut corral, grace + Duration::from_secs(4));
    let exited = signalled.elapsed();
    let logs = corral.logs();
    assert!(read.is_ok(), "{read:?}, after {answer:?}\n{logs}");
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}\n{logs}");
    assert!(answer.contains(r#""code":"shutting_down""#), "{answer}");
    assert!(answer.contains("was cancelled"), "{answer}");
    let head = answer.to_ascii_lowercase();
    assert!(head.contains("\r\nretry-after: 1\r\n"), "{answer}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(status.success(), "{status}: {logs}");
    // Exited after the grace, and well before the old grace + 5 s.
    assert!(exited >= grace, "{exited:?}\n{logs}");
    assert!(
        exited < grace + Duration::from_secs(4),
        "{exited:?}\n{logs}"
    );
    sending.join().unwrap();

    // Nothing of it is stored.
    assert_eq!(files_under(store.path()), Vec::<std::path::PathBuf>::new());
    // The refusals of the drain are expected: no ERROR line.
    assert!(!logs.contains("ERROR"), "{logs}");
    assert!(logs.contains("cancelling them"), "{logs}");
}
