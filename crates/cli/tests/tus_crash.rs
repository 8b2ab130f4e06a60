//! `kill -9` in the middle of resumable uploads, on local disk and on S3
//! (moto): after each restart, every upload resumes from an offset no
//! lower than the one a `HEAD` showed before the kill, and once finished
//! every file holds exactly the bytes sent.
//!
//! Each cycle: every upload is sent on from where the server says it is,
//! slowly (a client on a poor link); a `HEAD` of each (which stops the
//! request in progress, as a resuming client's does) records the offset;
//! the uploads go on; then the process is killed, mid-write.

mod common;

use std::time::Duration;

use common::Corral;
use common::tus::{assert_stored, content, create, offset, send_slowly};
use corral_testkit::s3::S3Server;

const UPLOADS: usize = 6;
const SIZE: usize = 12 << 20;
const CYCLES: usize = 3;
const SIZES: [&str; 4] = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"];

fn uploads_survive_kill_9(start: impl Fn() -> Corral) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let contents: Vec<Vec<u8>> = (0..UPLOADS as u64)
        .map(|seed| content(SIZE, seed))
        .collect();
    let mut corral = start();
    let urls: Vec<String> = runtime.block_on(async {
        let mut urls = Vec::new();
        for _ in 0..UPLOADS {
            urls.push(create(&client, &corral.url, SIZE).await);
        }
        urls
    });
    let mut seen = vec![0u64; UPLOADS];
    let mut rng = fastrand::Rng::with_seed(11);
    for cycle in 0..=CYCLES {
        let base = corral.url.clone();
        let full = |url: &str| format!("{base}{url}");
        runtime.block_on(async {
            // What the server says it has, after the restart: no less.
            for (i, url) in urls.iter().enumerate() {
                let now = offset(&client, &full(url)).await;
                assert!(
                    now >= seen[i],
                    "cycle {cycle}: upload {i} went back from {} to {now}",
                    seen[i]
                );
                seen[i] = now;
            }
            if cycle == CYCLES {
                return;
            }
            let send = |seen: &[u64]| {
                urls.iter()
                    .enumerate()
                    .map(|(i, url)| {
                        let rest = contents[i][seen[i] as usize..].to_vec();
                        tokio::spawn(send_slowly(client.clone(), full(url), seen[i], rest))
                    })
                    .collect::<Vec<_>>()
            };
            let sending = send(&seen);
            tokio::time::sleep(Duration::from_millis(rng.u64(400..900))).await;
            // The clients give up, and come back to ask where to resume.
            for task in sending {
                task.abort();
            }
            for (i, url) in urls.iter().enumerate() {
                seen[i] = offset(&client, &full(url)).await;
            }
            send(&seen);
            tokio::time::sleep(Duration::from_millis(rng.u64(100..600))).await;
        });
        if cycle < CYCLES {
            // SIGKILL: no drain, no saving, mid-write.
            corral.child.kill().unwrap();
            corral.child.wait().unwrap();
            corral = start();
        }
    }
    assert!(
        seen.iter().all(|&offset| offset > 0),
        "no bytes were ever kept: {seen:?}"
    );
    // Finished without a kill: every file whole.
    runtime.block_on(async {
        let finishing = urls.iter().enumerate().map(|(i, url)| {
            let url = format!("{}{url}", corral.url);
            let rest = contents[i][seen[i] as usize..].to_vec();
            tokio::spawn(send_slowly(client.clone(), url, seen[i], rest))
        });
        let answers = futures::future::join_all(finishing).await;
        for (i, answer) in answers.into_iter().enumerate() {
            let answer = answer.unwrap().unwrap();
            let what = format!("upload {i}");
            assert_stored(&client, &corral.url, answer, &contents[i], &what).await;
        }
    });
}

#[test]
fn on_local_disk_resumable_uploads_resume_after_kill_9_from_no_less_than_a_head_showed() {
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let (data_dir, spool_dir) = (
        data.path().to_str().unwrap().to_owned(),
        spool.path().to_str().unwrap().to_owned(),
    );
    let mut args = vec!["--store", &data_dir, "--spool-dir", &spool_dir];
    args.extend(SIZES);
    uploads_survive_kill_9(|| Corral::start(&args, &[]));
}

#[test]
fn on_s3_resumable_uploads_resume_after_kill_9_from_no_less_than_a_head_showed() {
    let bucket = S3Server::require().new_bucket("tus-crash").unwrap();
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().to_str().unwrap().to_owned();
    let mut args = vec!["--spool-dir", &spool_dir];
    args.extend(SIZES);
    uploads_survive_kill_9(|| Corral::on_moto(&bucket, &args));
}
