//! R1: `kill -9` under a mixed load of synchronous and asynchronous
//! batches, again and again, on S3 (moto) and on a local directory. After
//! the last restart:
//!
//! - every file answered `201`, and every file of a batch answered `202`,
//!   is stored whole;
//! - no batch that was not acknowledged is partly visible, through corral's
//!   listing or in the store itself (each batch is sent under a prefix of
//!   its own, so what it left is easy to find);
//! - no staging file or open multipart upload is left;
//! - no object lacks its metadata document, and no document its object;
//! - every object holds bytes that were sent under its name.
//!
//! 20 cycles on each store by default; `CORRAL_CRASH_CYCLES=100 cargo test
//! -p corral --test crash -- --nocapture` for the long variant.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Corral;
use corral_testkit::s3::{self, S3Server};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use reqwest::multipart::{Form, Part};
use sha2::{Digest, Sha256};

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

/// A batch sent, and how it was answered.
#[derive(Debug)]
struct Sent {
    /// The prefix it was sent under, its own.
    prefix: String,
    /// Its files: name to SHA-256.
    files: BTreeMap<String, String>,
    /// `201`, or `202` with its job: every file must be stored.
    acked: Option<Ack>,
}

#[derive(Debug)]
enum Ack {
    Stored,
    Job(String),
}

/// Sends batches to `url` until `stop`, every other one asynchronous, each
/// under a prefix of its own; returns them with their answers.
async fn load(url: String, stop: Arc<AtomicBool>, name: String) -> Vec<Sent> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut sent = Vec::new();
    let mut seed = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seed += 1;
        let salt = fastrand::u64(..);
        // Two small files, and every seventh batch a file large enough to
        // be a multipart upload (over the 5 MiB threshold set below).
        let mut files = vec![
            ("one.bin", content(salt, 64 << 10)),
            ("two.bin", content(salt ^ 1, 16 << 10)),
        ];
        if seed.is_multiple_of(7) {
            files.push(("large.bin", content(salt ^ 2, (5 << 20) + 4096)));
        }
        let mut form = Form::new();
        for (file, bytes) in &files {
            form = form.part("file", Part::bytes(bytes.clone()).file_name(*file));
        }
        let prefix = format!("{name}-{seed}");
        let asynchronous = seed.is_multiple_of(2);
        let mut request = client
            .post(format!("{url}/api/files?prefix={prefix}"))
            .multipart(form);
        if asynchronous {
            request = request.header("prefer", "respond-async");
        }
        let mut batch = Sent {
            prefix,
            files: (files.iter())
                .map(|(file, bytes)| (file.to_string(), sha256(bytes)))
                .collect(),
            acked: None,
        };
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                response.bytes().await.ok().map(|body| (status, body))
            }
            // Killed mid-request, or not up again yet: not acknowledged.
            Err(_) => None,
        };
        match answer {
            Some((201, _)) => batch.acked = Some(Ack::Stored),
            Some((202, body)) => {
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                batch.acked = Some(Ack::Job(body["job"].as_str().unwrap().to_owned()));
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        sent.push(batch);
    }
    sent
}

/// The store as another client sees it, without corral.
enum Raw {
    S3 {
        bucket: String,
        client: Arc<dyn ObjectStore>,
    },
    Local(PathBuf),
}

/// What the store holds, by path relative to corral's root: objects and
/// their bytes' SHA-256, those that carry all their metadata in their
/// attributes, and what is left half-written.
#[derive(Debug, Default)]
struct Contents {
    objects: BTreeMap<String, String>,
    inline: BTreeSet<String>,
    strays: Vec<String>,
}

impl Raw {
    fn s3(bucket: &str) -> Self {
        let client = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(S3Server::require().endpoint())
            .with_region(s3::REGION)
            .with_access_key_id(s3::ACCESS_KEY_ID)
            .with_secret_access_key(s3::SECRET_ACCESS_KEY)
            .with_allow_http(true)
            .build()
            .unwrap();
        Self::S3 {
            bucket: bucket.to_owned(),
            client: Arc::new(client),
        }
    }

    async fn contents(&self) -> Contents {
        let mut contents = Contents::default();
        match self {
            Raw::S3 { bucket, client } => {
                let root = object_store::path::Path::from("pfx");
                let listed: Vec<_> = client.list(Some(&root)).try_collect().await.unwrap();
                for meta in listed {
                    let got = client.get(&meta.location).await.unwrap();
                    let marker = object_store::Attribute::Metadata("corralmeta".into());
                    let inline = got
                        .attributes
                        .get(&marker)
                        .is_some_and(|v| v.as_ref() == "inline");
                    let bytes = got.bytes().await.unwrap();
                    let path = meta.location.as_ref().strip_prefix("pfx/").unwrap();
                    contents.objects.insert(path.to_owned(), sha256(&bytes));
                    if inline {
                        contents.inline.insert(path.to_owned());
                    }
                }
                let uploads = S3Server::require()
                    .request("GET", &format!("/{bucket}?uploads"), &[], b"")
                    .unwrap();
                let uploads = String::from_utf8_lossy(&uploads.body).into_owned();
                contents.strays = (uploads.split("<Key>").skip(1))
                    .map(|rest| format!("multipart upload {}", rest.split('<').next().unwrap()))
                    .collect();
            }
            Raw::Local(dir) => walk(dir, dir, &mut contents),
        }
        contents.objects.remove(".corral/probe");
        contents
    }
}

fn walk(root: &Path, dir: &Path, contents: &mut Contents) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(root, &path, contents);
            continue;
        }
        let relative = path
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        if relative.contains('#') {
            contents.strays.push(format!("staging file {relative}"));
        } else {
            // Its metadata in its extended attributes (see the README).
            let mut marker = [0u8; 16];
            let inline =
                rustix::fs::getxattr(&path, "user.corral.meta.corralmeta", &mut marker[..])
                    .is_ok_and(|n| &marker[..n] == b"inline");
            if inline {
                contents.inline.insert(relative.clone());
            }
            contents
                .objects
                .insert(relative, sha256(&std::fs::read(&path).unwrap()));
        }
    }
}

/// Everything wrong with `contents` given what was `sent`; empty when the
/// promises hold.
fn problems(sent: &[Sent], contents: &Contents) -> Vec<String> {
    let mut problems = contents.strays.clone();
    let meta_root = ".corral/meta/";
    let mut by_prefix: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for (path, sha) in &contents.objects {
        if let Some(object) = path.strip_prefix(meta_root) {
            let object = object.strip_suffix(".json").unwrap_or(object);
            if !contents.objects.contains_key(object) {
                problems.push(format!("metadata without its object: {path}"));
            }
            continue;
        }
        let documented = contents
            .objects
            .contains_key(&format!("{meta_root}{path}.json"));
        if !documented && !contents.inline.contains(path) {
            problems.push(format!("object without metadata: {path}"));
        }
        // anonymous/{prefix}/{date}/{batch}/{name}
        let segments: Vec<&str> = path.split('/').collect();
        let [_, prefix, _, _, name] = segments[..] else {
            problems.push(format!("an object nobody sent: {path}"));
            continue;
        };
        by_prefix.entry(prefix).or_default().insert(name, sha);
    }
    let sent_by_prefix: BTreeMap<&str, &Sent> = sent
        .iter()
        .map(|batch| (batch.prefix.as_str(), batch))
        .collect();
    for (prefix, found) in &by_prefix {
        let Some(batch) = sent_by_prefix.get(prefix) else {
            problems.push(format!("objects under a prefix nobody sent: {prefix}"));
            continue;
        };
        for (name, sha) in found {
            if batch.files.get(*name).map(String::as_str) != Some(*sha) {
                problems.push(format!("{prefix}/{name} holds bytes that were not sent"));
            }
        }
    }
    for batch in sent {
        let found = by_prefix
            .get(batch.prefix.as_str())
            .map_or(0, BTreeMap::len);
        match (&batch.acked, found) {
            (Some(_), n) if n == batch.files.len() => {}
            (Some(ack), n) => problems.push(format!(
                "acknowledged ({ack:?}) batch {} has {n} of {} files",
                batch.prefix,
                batch.files.len()
            )),
            (None, n) if n == 0 || n == batch.files.len() => {}
            (None, n) => problems.push(format!(
                "unacknowledged batch {} is half-stored: {n} of {} files",
                batch.prefix,
                batch.files.len()
            )),
        }
    }
    problems
}

/// Runs the cycles against a corral started by `start`, whose store `raw`
/// sees.
fn crash_cycles(name: &str, raw: Raw, start: impl Fn() -> Corral) {
    let cycles: u64 = std::env::var("CORRAL_CRASH_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut sent = Vec::new();
    // Kills that left acknowledged jobs unfinished, or batches half-done:
    // the next start says it resumes or rolls them back.
    let (mut pending_jobs, mut open_batches) = (0, 0);
    let mut count = |corral: &Corral| {
        let logs = corral.logs();
        pending_jobs += u64::from(logs.contains("resuming asynchronous uploads"));
        open_batches += u64::from(logs.contains("rolling back the batches left unfinished"));
    };
    for cycle in 0..cycles {
        let mut corral = start();
        count(&corral);
        let stop = Arc::new(AtomicBool::new(false));
        let loaders: Vec<_> = (0..4)
            .map(|i| {
                let (url, stop) = (corral.url.clone(), Arc::clone(&stop));
                runtime.spawn(load(url, stop, format!("c{cycle}l{i}")))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.u64(300..1500)));
        // SIGKILL: no drain, no cleanup, mid-write.
        corral.child.kill().unwrap();
        corral.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for loader in loaders {
            sent.extend(runtime.block_on(loader).unwrap());
        }
    }

    // One last start: every acknowledged job finishes, every batch left
    // open is rolled back.
    let corral = start();
    count(&corral);
    assert!(
        pending_jobs > 0 && open_batches > 0,
        "no kill left an acknowledged job unfinished ({pending_jobs}) or a batch open \
         ({open_batches}): the test proved nothing"
    );
    let client = reqwest::Client::new();
    let jobs: BTreeSet<&str> = (sent.iter())
        .filter_map(|batch| match &batch.acked {
            Some(Ack::Job(job)) => Some(job.as_str()),
            _ => None,
        })
        .collect();
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

    // Through corral: every batch listed whole or not at all.
    for batch in &sent {
        let url = format!("{}/api/files?prefix={}/", corral.url, batch.prefix);
        let listed = runtime.block_on(async {
            let body = client.get(url).send().await.unwrap().bytes().await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            body["files"].as_array().unwrap().len()
        });
        let whole = listed == batch.files.len();
        match batch.acked {
            Some(_) => assert!(whole, "{batch:?}: {listed} listed"),
            None => assert!(whole || listed == 0, "{batch:?}: {listed} listed"),
        }
    }

    // In the store itself, once the rollbacks of the last start are done.
    let deadline = Instant::now() + Duration::from_secs(60);
    let contents = loop {
        let contents = runtime.block_on(raw.contents());
        let found = problems(&sent, &contents);
        if found.is_empty() {
            break contents;
        }
        assert!(
            Instant::now() < deadline,
            "{}\n{}",
            found.join("\n"),
            corral.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(corral);

    let acked = sent.iter().filter(|batch| batch.acked.is_some());
    let files: usize = acked.clone().map(|batch| batch.files.len()).sum();
    let whole_unacked = (sent.iter())
        .filter(|batch| batch.acked.is_none())
        .filter(|batch| {
            contents
                .objects
                .keys()
                .any(|k| k.contains(&format!("/{}/", batch.prefix)))
        })
        .count();
    println!(
        "R1 on {name}: {cycles} kill -9 cycles ({pending_jobs} left acknowledged jobs unfinished, \
         {open_batches} left batches open); {} batches sent, {} acknowledged ({} jobs) with {files} \
         files, all stored and verified; {whole_unacked} unacknowledged batches stored whole, none \
         half-stored; 0 staging files or open uploads, 0 objects without metadata",
        sent.len(),
        acked.count(),
        jobs.len(),
    );
}

const SIZES: [&str; 4] = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"];

#[test]
fn on_s3_no_acknowledged_file_is_lost_and_no_batch_half_stored_through_kill_9() {
    let bucket = S3Server::require().new_bucket("crash").unwrap();
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().to_str().unwrap().to_owned();
    let mut args = vec!["--spool-dir", &spool_dir];
    args.extend(SIZES);
    crash_cycles("S3", Raw::s3(&bucket), || Corral::on_moto(&bucket, &args));
    let left: BTreeSet<_> = std::fs::read_dir(spool.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let kept = ["batches.redb", "instance.id", "journal.redb"];
    assert_eq!(
        left,
        BTreeSet::from(kept.map(str::to_owned)),
        "the spool holds only its journals and the instance's id"
    );
}

#[test]
fn on_local_disk_no_acknowledged_file_is_lost_and_no_batch_half_stored_through_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let (data_dir, spool_dir) = (
        data.path().to_str().unwrap().to_owned(),
        spool.path().to_str().unwrap().to_owned(),
    );
    let mut args = vec!["--store", &data_dir, "--spool-dir", &spool_dir];
    args.extend(SIZES);
    let raw = Raw::Local(data.path().to_owned());
    crash_cycles("local disk", raw, || Corral::start(&args, &[]));
}
