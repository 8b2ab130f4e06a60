//! R2: a backend that fails. The throttling front before S3 answers 20% of
//! calls with 500 or 503, drops 5% of connections mid-body and holds 2%
//! for 5 s, throttles half the deletes on top (so rollbacks meet throttles
//! of their own), and refuses one object name for good (403), while clients
//! send synchronous and asynchronous batches. Every file answered 201, and
//! every file of a 202 whose job stored it, must be in S3, whole; every
//! request or file that failed must have got a clear error and left
//! nothing behind.

mod common;

use std::time::{Duration, Instant};

use common::Corral;
use corral_testkit::front::{Faults, Front, FrontConfig};
use corral_testkit::s3::S3Server;
use reqwest::multipart::{Form, Part};
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut bytes = vec![0; len];
    rng.fill(&mut bytes);
    bytes
}

/// The name the front refuses for good.
const DENIED: &str = "denied.bin";

/// What the requests got.
#[derive(Debug, Default)]
struct Outcomes {
    /// Files answered 201: key and SHA-256 of what was sent.
    stored: Vec<(String, String)>,
    /// Jobs answered 202, with the SHA-256 of each file sent.
    jobs: Vec<(String, Vec<String>)>,
    /// Refusals and failures, by status and error code.
    failed: Vec<(u16, String)>,
}

/// Sends `batches` batches, half of them asynchronous, one at a time.
async fn client(url: String, first_seed: u64, batches: u64) -> Outcomes {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let mut outcomes = Outcomes::default();
    for seed in first_seed..first_seed + batches {
        let mut sent = vec![("small.bin", content(seed, 64 << 10))];
        if seed.is_multiple_of(3) {
            // Over the 5 MiB multipart threshold: two parts. One in two of
            // them is refused by the store.
            let name = if seed.is_multiple_of(6) {
                DENIED
            } else {
                "large.bin"
            };
            sent.push((name, content(seed << 20, (5 << 20) + 1000)));
        }
        let mut form = Form::new();
        for (name, bytes) in &sent {
            form = form.part("file", Part::bytes(bytes.clone()).file_name(*name));
        }
        let mut request = client.post(format!("{url}/api/files")).multipart(form);
        if seed % 4 < 2 {
            request = request.header("prefer", "respond-async");
        }
        // corral's own answer, whatever it is: the client is on loopback.
        let response = request.send().await.expect("corral answers every request");
        let status = response.status().as_u16();
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).expect("a JSON answer");
        match status {
            201 => {
                for ((_, bytes), file) in sent.iter().zip(body["files"].as_array().unwrap()) {
                    let key = file["key"].as_str().unwrap().to_owned();
                    outcomes.stored.push((key, sha256(bytes)));
                }
            }
            202 => {
                let job = body["job"].as_str().unwrap().to_owned();
                let hashes = sent.iter().map(|(_, bytes)| sha256(bytes)).collect();
                outcomes.jobs.push((job, hashes));
            }
            _ => {
                let code = body["error"]["code"].as_str().expect("an error code");
                outcomes.failed.push((status, code.to_owned()));
            }
        }
    }
    outcomes
}

#[test]
fn every_acknowledged_file_survives_a_failing_backend_and_failures_leave_nothing() {
    let s3 = S3Server::require();
    let bucket = s3.new_bucket("faults").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let front = runtime
        .block_on(Front::start(FrontConfig {
            faults: Faults {
                error_500: 0.10,
                error_503: 0.10,
                reset: 0.05,
                stall: 0.02,
                stall_for: Duration::from_secs(5),
                delete_503: 0.8,
                deny_path: Some(DENIED.to_owned()),
            },
            seed: 5,
            ..FrontConfig::new(s3.addr())
        }))
        .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let corral = Corral::on_s3(
        &front.endpoint(),
        &bucket,
        &[
            "--spool-dir",
            spool.path().to_str().unwrap(),
            "--multipart-threshold",
            "5MiB",
            "--part-size",
            "5MiB",
        ],
    );
    let clients: Vec<_> = (0..4)
        .map(|i| runtime.spawn(client(corral.url.clone(), 1000 * i, 12)))
        .collect();
    let mut outcomes = Outcomes::default();
    for client in clients {
        let one = runtime.block_on(client).unwrap();
        outcomes.stored.extend(one.stored);
        outcomes.jobs.extend(one.jobs);
        outcomes.failed.extend(one.failed);
    }

    // Every job answered 202 finishes, the faults notwithstanding: done,
    // or failed for the refused file alone.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut refused = Vec::new();
    for (job, hashes) in &outcomes.jobs {
        let body = loop {
            let body = runtime.block_on(async {
                let url = format!("{}/api/jobs/{job}", corral.url);
                http.get(url).send().await.unwrap().bytes().await.unwrap()
            });
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            match body["state"].as_str() {
                Some("done" | "failed") => break body,
                Some("queued" | "uploading") if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => panic!("job {job}: {body}\n{}", corral.logs()),
            }
        };
        let files = body["files"].as_array().unwrap().iter().zip(hashes);
        for (index, (file, hash)) in files.enumerate() {
            let key = file["key"].as_str().unwrap().to_owned();
            let denied = file["name"] == DENIED;
            let expected = if denied { "failed" } else { "stored" };
            assert_eq!(file["state"], expected, "{body}");
            if denied {
                assert!(file["error"].as_str().unwrap().contains("403"), "{body}");
                // Refused by the store, still kept in the spool.
                let kept = spool.path().join(job).join(index.to_string());
                let kept = std::fs::read(&kept).unwrap_or_default();
                assert_eq!(&sha256(&kept), hash, "{job}/{index} kept in the spool");
                refused.push(key);
            } else {
                outcomes.stored.push((key, hash.clone()));
            }
        }
        let failed = body["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == DENIED);
        assert_eq!(
            body["state"],
            if failed { "failed" } else { "done" },
            "{body}"
        );
    }
    let stats = front.stats();
    runtime.block_on(front.shutdown());

    // Failures were told as such: a 5xx with corral's error code. The
    // synchronous batches with the refused file all failed.
    for (status, code) in &outcomes.failed {
        assert!(
            matches!(
                (status, code.as_str()),
                (500, "storage_error") | (503, _) | (429, _)
            ),
            "{status} {code}"
        );
    }
    assert!(!outcomes.failed.is_empty(), "no batch met the refused name");
    assert!(!refused.is_empty(), "no job met the refused name");
    for key in &refused {
        let path = format!("/{bucket}/pfx/anonymous/{key}");
        assert_eq!(s3.request("HEAD", &path, &[], b"").unwrap().status, 404);
    }
    // Every acknowledged file is in S3, whole (read without the front).
    for (key, expected) in &outcomes.stored {
        let path = format!("/{bucket}/pfx/anonymous/{key}");
        let response = s3.request("GET", &path, &[], b"").unwrap();
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(&sha256(&response.body), expected, "{path}");
    }
    // Nothing else: each stored file, the metadata documents of the
    // multipart ones (a single-call object carries its metadata), and no
    // open multipart upload (failed batches were rolled back, and refused
    // uploads aborted, through the faults).
    let listing = s3
        .request("GET", &format!("/{bucket}?list-type=2"), &[], b"")
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.body).into_owned();
    let multipart = (outcomes.stored.iter())
        .filter(|(key, _)| key.ends_with("large.bin"))
        .count();
    assert_eq!(
        listing.matches("<Key>").count(),
        outcomes.stored.len() + multipart,
        "{listing}\n{}",
        corral.logs()
    );
    let uploads = s3
        .request("GET", &format!("/{bucket}?uploads"), &[], b"")
        .unwrap();
    let uploads = String::from_utf8_lossy(&uploads.body);
    assert!(
        !uploads.contains("<Upload>"),
        "open uploads: {uploads}\n{}",
        corral.logs()
    );
    let injected =
        stats.faults.error_500 + stats.faults.error_503 + stats.faults.reset + stats.faults.stall;
    assert!(injected > 0, "{stats:?}");
    // Rollbacks and aborts met throttles of their own, and went on until
    // done: the listing above is exact.
    assert!(stats.faults.delete_503 > 0, "{stats:?}");
    println!(
        "R2: {} backend calls, faults injected: {} x 500, {} x 503, {} resets, {} stalls, \
         {} refused (403), {} deletes throttled; {} files stored and verified in S3 ({} async jobs); {} synchronous \
         batches and {} async files failed cleanly, nothing left of them in S3 (the async ones \
         kept in the spool): {:?}",
        stats.received,
        stats.faults.error_500,
        stats.faults.error_503,
        stats.faults.reset,
        stats.faults.stall,
        stats.faults.denied,
        stats.faults.delete_503,
        outcomes.stored.len(),
        outcomes.jobs.len(),
        outcomes.failed.len(),
        refused.len(),
        outcomes.failed,
    );
}
