//! R1: `kill -9` under a load of asynchronous uploads, again and again.
//! Every batch answered `202` must end up in S3, whole, with no multipart
//! upload left open.
//!
//! 20 cycles by default; `CORRAL_CRASH_CYCLES=100 cargo test -p corral
//! --test crash -- --nocapture` for the long variant.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Corral;
use corral_testkit::s3::S3Server;
use reqwest::multipart::{Form, Part};
use sha2::{Digest, Sha256};

/// A file the server acknowledged.
#[derive(Debug)]
struct Acked {
    job: String,
    key: String,
    sha256: String,
}

/// Content no two files share, from `seed`.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut bytes = vec![0; len];
    rng.fill(&mut bytes);
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Sends asynchronous batches to `url` until `stop`; returns what was
/// answered `202`, each file checked against what was sent.
async fn load(url: String, stop: Arc<AtomicBool>, first_seed: u64) -> Vec<Acked> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut acked = Vec::new();
    let mut seed = first_seed;
    while !stop.load(Ordering::Relaxed) {
        seed += 1;
        // One small file, and every seventh batch a file large enough to
        // be a multipart upload (over the 5 MiB threshold set below).
        let mut sent = vec![("small.bin", content(seed, 64 << 10))];
        if seed.is_multiple_of(7) {
            sent.push(("large.bin", content(seed << 32, (5 << 20) + 4096)));
        }
        let mut form = Form::new();
        for (name, bytes) in &sent {
            form = form.part("file", Part::bytes(bytes.clone()).file_name(*name));
        }
        let response = client
            .post(format!("{url}/api/files"))
            .header("prefer", "respond-async")
            .multipart(form)
            .send()
            .await;
        let Ok(response) = response else {
            // Killed mid-request, or not up again yet: not acknowledged.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if response.status() != 202 {
            continue;
        }
        let Ok(body) = response.bytes().await else {
            continue;
        };
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let job = body["job"].as_str().unwrap().to_owned();
        for ((_, bytes), file) in sent.iter().zip(body["files"].as_array().unwrap()) {
            assert_eq!(file["sha256"], sha256(bytes).as_str(), "{body}");
            acked.push(Acked {
                job: job.clone(),
                key: file["key"].as_str().unwrap().to_owned(),
                sha256: sha256(bytes),
            });
        }
    }
    acked
}

#[test]
fn every_acknowledged_async_upload_survives_kill_9() {
    let cycles: u64 = std::env::var("CORRAL_CRASH_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let s3 = S3Server::require();
    let bucket = s3.new_bucket("crash").unwrap();
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().to_str().unwrap().to_owned();
    let args = [
        "--spool-dir",
        &spool_dir,
        "--multipart-threshold",
        "5MiB",
        "--part-size",
        "5MiB",
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut acked = Vec::new();
    // Kills that left acknowledged jobs unfinished: the next start says it
    // resumes them (its journal's unfinished jobs, not half-sent batches).
    let mut killed_with_jobs_pending = 0;
    let resumes = |corral: &Corral| corral.logs().contains("resuming asynchronous uploads");
    for cycle in 0..cycles {
        let mut corral = Corral::on_moto(&bucket, &args);
        killed_with_jobs_pending += u64::from(cycle > 0 && resumes(&corral));
        let stop = Arc::new(AtomicBool::new(false));
        let loaders: Vec<_> = (0..3)
            .map(|i| {
                let (url, stop) = (corral.url.clone(), Arc::clone(&stop));
                runtime.spawn(load(url, stop, (cycle * 3 + i) << 40))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.u64(300..1500)));
        // SIGKILL: no drain, no cleanup, mid-write.
        corral.child.kill().unwrap();
        corral.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for loader in loaders {
            acked.extend(runtime.block_on(loader).unwrap());
        }
    }
    assert!(!acked.is_empty(), "no batch was acknowledged");

    // One last start: every acknowledged job must finish.
    let corral = Corral::on_moto(&bucket, &args);
    killed_with_jobs_pending += u64::from(resumes(&corral));
    assert!(
        killed_with_jobs_pending > 0,
        "no kill left an acknowledged job unfinished: the test proved nothing"
    );
    let client = reqwest::Client::new();
    let mut jobs: Vec<&str> = acked.iter().map(|a| a.job.as_str()).collect();
    jobs.dedup();
    let deadline = Instant::now() + Duration::from_secs(180);
    for job in &jobs {
        loop {
            let body = runtime.block_on(async {
                let url = format!("{}/api/jobs/{job}", corral.url);
                let response = client.get(url).send().await.unwrap();
                assert_eq!(response.status(), 200, "job {job} is known");
                response.bytes().await.unwrap()
            });
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            match body["state"].as_str() {
                Some("done") => break,
                Some("queued" | "uploading") if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => panic!("job {job}: {body}\n{}", corral.logs()),
            }
        }
    }

    // Read back with another S3 client (not corral's read path).
    for file in &acked {
        let path = format!("/{bucket}/pfx/anonymous/{}", file.key);
        let response = s3.request("GET", &path, &[], b"").unwrap();
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(sha256(&response.body), file.sha256, "{path}");
    }
    let uploads = s3
        .request("GET", &format!("/{bucket}?uploads"), &[], b"")
        .unwrap();
    let listing = String::from_utf8_lossy(&uploads.body);
    assert!(!listing.contains("<Upload>"), "open uploads: {listing}");
    drop(corral);
    let left: Vec<_> = std::fs::read_dir(spool.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["journal.redb"], "the spool holds only its journal");
    println!(
        "R1: {cycles} kill -9 cycles ({killed_with_jobs_pending} left acknowledged jobs unfinished), \
         {} jobs and {} files acknowledged, all stored and verified in S3",
        jobs.len(),
        acked.len()
    );
}
