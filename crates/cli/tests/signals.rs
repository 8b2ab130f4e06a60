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

/// Whether corral's `/metrics` shows upload memory reserved (a plain
/// HTTP/1.0 GET, so the answer ends with the connection).
fn uploads_under_way(address: &str) -> bool {
    use std::io::Read;
    let Ok(mut socket) = TcpStream::connect(address) else {
        return false;
    };
    let request = "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n";
    if socket.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut text = String::new();
    let _ = socket.read_to_string(&mut text);
    text.lines().any(|line| {
        line.strip_prefix("corral_upload_memory_reserved_bytes ")
            .is_some_and(|value| value.trim() != "0")
    })
}

/// R3: SIGTERM in the middle of a herd of multipart uploads to S3. Every
/// upload in progress completes (201); every request that arrives during
/// the drain, on a connection old or new, gets a clear 503 before its body
/// is taken; corral exits 0
/// within the grace period; S3 holds exactly the acknowledged files and no
/// open multipart upload.
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
    // Files of 6 MiB: multipart uploads of two parts.
    let first = herd(12, 6 << 20, 1);
    let started = Instant::now();
    let in_progress = std::thread::spawn(move || run(first));
    // Signal once uploads hold memory, that is, are under way.
    let address = corral.url.trim_start_matches("http://").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !uploads_under_way(&address) {
        assert!(Instant::now() < deadline, "the herd never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    let signalled = started.elapsed();
    send_sigterm(&corral);
    std::thread::sleep(Duration::from_millis(200));
    let late = run(herd(8, 64 << 10, 2));
    let early = in_progress.join().unwrap();
    let status = exit_status(&mut corral, Duration::from_secs(70));
    let logs = corral.logs();
    assert!(status.success(), "{status}: {logs}");

    // Uploads under way at the signal finished: the last answer came after
    // the signal.
    assert!(
        early.batch_latency.max_ms > signalled.as_secs_f64() * 1000.0,
        "no upload was under way at the signal ({signalled:?}): {early}"
    );
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
    // Requests of the drain were refused, each with a clear 503.
    assert_eq!(late.attempt_outcomes.get("503"), Some(&8), "{late}\n{logs}");
    assert!(
        late.error_examples["503"].contains("shutting_down"),
        "{late}"
    );
    assert_eq!(late.files_stored, 0);

    // S3 holds each stored file and its metadata document, nothing else,
    // and no multipart upload is open.
    let listing = s3
        .request("GET", &format!("/{bucket}?list-type=2"), &[], b"")
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.body).into_owned();
    let objects = listing.matches("<Key>").count() as u64;
    assert_eq!(objects, 2 * early.files_stored, "{listing}");
    let uploads = s3
        .request("GET", &format!("/{bucket}?uploads"), &[], b"")
        .unwrap();
    let uploads = String::from_utf8_lossy(&uploads.body);
    assert!(!uploads.contains("<Upload>"), "open uploads: {uploads}");
}
