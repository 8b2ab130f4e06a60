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
