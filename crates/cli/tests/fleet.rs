//! Two `corral serve` processes sharing one bucket of a real S3 server
//! (moto), with no coordinator: a resumable upload is written by one
//! instance at a time (its lease, taken by a conditional write), and one
//! killed with `kill -9` mid-upload leaves it to the other once the lease
//! expires.

mod common;

use std::time::{Duration, Instant};

use common::tus::{assert_stored, content, create, number, offset, send_slowly};
use common::{Corral, corral};
use corral_testkit::s3::S3Server;

const SIZE: usize = 12 << 20;
/// Short, so that the test waits little for a dead instance's lease; more
/// than the body timeout, as `corral serve` requires.
const LEASE: Duration = Duration::from_secs(3);
const ARGS: [&str; 8] = [
    "--multipart-threshold",
    "5MiB",
    "--part-size",
    "5MiB",
    "--upload-lease",
    "3s",
    "--body-timeout",
    "2s",
];

/// Two instances on one new bucket.
fn fleet(bucket: &str) -> (Corral, Corral) {
    let bucket = S3Server::require().new_bucket(bucket).unwrap();
    (
        Corral::on_moto(&bucket, &ARGS),
        Corral::on_moto(&bucket, &ARGS),
    )
}

/// The upload's offset, as `HEAD` through `corral` answers it.
async fn offset_at(client: &reqwest::Client, corral: &Corral, upload: &str) -> u64 {
    offset(client, &format!("{}{upload}", corral.url)).await
}

/// Sends the rest of `content` through `corral` from where it says the
/// upload is, retrying while another instance holds it (as tus clients
/// do on `423`), and checks the file it became.
async fn finish(client: &reqwest::Client, corral: &Corral, upload: &str, content: &[u8]) {
    let deadline = Instant::now() + 4 * LEASE;
    let answer = loop {
        let at = offset_at(client, corral, upload).await;
        let rest = content[at as usize..].to_vec();
        let url = format!("{}{upload}", corral.url);
        let answer = send_slowly(client.clone(), url, at, rest).await.unwrap();
        if answer.status() != 423 || Instant::now() > deadline {
            break answer;
        }
        let wait = number(&answer, "retry-after");
        assert!(wait <= LEASE.as_secs() + 1, "Retry-After {wait}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_stored(client, &corral.url, answer, content, upload).await;
}

#[test]
fn two_instances_racing_for_one_upload_one_writes_it_and_the_other_is_refused() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = fleet("fleet-race");
    let client = reqwest::Client::new();
    let content = content(SIZE, 1);
    runtime.block_on(async {
        let upload = create(&client, &a.url, SIZE).await;
        // The same bytes at the same offset, through both at once.
        let half = content[..SIZE / 2].to_vec();
        let (through_a, through_b) = tokio::join!(
            send_slowly(
                client.clone(),
                format!("{}{upload}", a.url),
                0,
                half.clone()
            ),
            send_slowly(client.clone(), format!("{}{upload}", b.url), 0, half),
        );
        let (through_a, through_b) = (through_a.unwrap(), through_b.unwrap());
        let mut statuses = [through_a.status().as_u16(), through_b.status().as_u16()];
        statuses.sort_unstable();
        assert!(
            statuses == [204, 409] || statuses == [204, 423],
            "{statuses:?}: {through_a:?} {through_b:?}"
        );
        let winner = match through_a.status() == 204 {
            true => &through_a,
            false => &through_b,
        };
        assert_eq!(number(winner, "upload-offset"), (SIZE / 2) as u64);
        // Either instance says so now, and the client finishes through
        // the one that refused it.
        assert_eq!(offset_at(&client, &a, &upload).await, (SIZE / 2) as u64);
        assert_eq!(offset_at(&client, &b, &upload).await, (SIZE / 2) as u64);
        let loser = match through_a.status() == 204 {
            true => &b,
            false => &a,
        };
        finish(&client, loser, &upload, &content).await;
    });
}

#[test]
fn an_upload_whose_instance_is_killed_goes_on_through_another_once_its_lease_expires() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (mut a, b) = fleet("fleet-kill");
    let client = reqwest::Client::new();
    let content = content(SIZE, 2);
    runtime.block_on(async {
        let upload = create(&client, &a.url, SIZE).await;
        let url = format!("{}{upload}", a.url);
        // The client gives up on a first request, and asks where to resume.
        let sending = tokio::spawn(send_slowly(client.clone(), url.clone(), 0, content.clone()));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        sending.abort();
        let seen = offset_at(&client, &a, &upload).await;
        assert!(seen > 0, "nothing was kept");
        // It resumes through the same instance, which dies mid-request,
        // holding the upload.
        let rest = content[seen as usize..].to_vec();
        let sending = tokio::spawn(send_slowly(client.clone(), url, seen, rest));
        tokio::time::sleep(Duration::from_millis(1000)).await;
        a.child.kill().unwrap();
        a.child.wait().unwrap();
        let _ = sending.await;
        // The other instance refuses it while the lease lives, says when
        // to come back, and then takes it over from the last saved state.
        let now = offset_at(&client, &b, &upload).await;
        assert!(now >= seen, "went back from {seen} to {now}");
        let at = format!("{}{upload}", b.url);
        let refused = send_slowly(client.clone(), at, now, content[now as usize..].to_vec()).await;
        let refused = refused.unwrap();
        assert_eq!(refused.status(), 423, "{:?}", refused.headers());
        let wait = number(&refused, "retry-after");
        assert!(
            (1..=LEASE.as_secs() + 1).contains(&wait),
            "Retry-After {wait}"
        );
        finish(&client, &b, &upload, &content).await;
    });
}

/// `corral upload` resuming an upload whose instance died holding it: the
/// other instance answers `423` with `Retry-After` until the lease
/// expires, and the client waits that long instead of spending its
/// retries at once.
#[test]
fn corral_upload_waits_out_the_lease_of_a_dead_instance() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (mut a, b) = fleet("fleet-client");
    let client = reqwest::Client::new();
    let content = content(SIZE, 3);
    let files = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let file = std::path::absolute(files.path().join("video.bin")).unwrap();
    std::fs::write(&file, &content).unwrap();
    let upload = runtime.block_on(async {
        let upload = create(&client, &a.url, SIZE).await;
        // A request in progress through A, which dies holding the upload.
        let url = format!("{}{upload}", a.url);
        let sending = tokio::spawn(send_slowly(client.clone(), url, 0, content.clone()));
        tokio::time::sleep(Duration::from_millis(1000)).await;
        a.child.kill().unwrap();
        a.child.wait().unwrap();
        let _ = sending.await;
        upload
    });
    let run = |paths: &[&std::path::Path]| {
        corral()
            .args(["upload", "--json", "--large", "1MiB", "--server", &b.url])
            .arg("--state")
            .arg(state.path())
            .args(paths)
            .output()
            .unwrap()
    };
    // A first run makes the journal of B; the upload begun through A is
    // then written in it, as a run through a load balancer would have.
    let small = files.path().join("small.txt");
    std::fs::write(&small, b"small").unwrap();
    assert!(run(&[&small]).status.success());
    let journals: Vec<_> = std::fs::read_dir(state.path()).unwrap().collect();
    assert_eq!(journals.len(), 1, "{journals:?}");
    let journal = journals[0].as_ref().unwrap().path();
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    let mtime_ns = modified
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let entry = serde_json::json!({
        "path": file,
        "size": SIZE,
        "mtime_ns": mtime_ns as u64,
        "upload": format!("{}{upload}", b.url),
        "offset": 0,
    });
    let mut lines = std::fs::read_to_string(&journal).unwrap();
    lines.push_str(&format!("{entry}\n"));
    std::fs::write(&journal, lines).unwrap();

    let started = Instant::now();
    let output = run(&[&file]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let key = stdout
        .lines()
        .find_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            Some(value.get("key")?.as_str()?.to_owned())
        })
        .unwrap_or_else(|| panic!("no key in {stdout}"));
    // It went on with the same upload (created with no file name, so named
    // `file`; one of the client's own would be `video.bin`), once A's
    // lease had run out.
    assert!(key.ends_with("/file"), "{stdout}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let stored = runtime.block_on(async {
        let url = format!("{}/api/files/{key}", b.url);
        client.get(url).send().await.unwrap().bytes().await.unwrap()
    });
    assert!(stored == content, "the stored file differs");
}
