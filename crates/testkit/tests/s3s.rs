//! s3s-fs, the benchmarks' S3 server: it installs and starts by itself,
//! round-trips objects byte for byte through a real S3 client, including a
//! multipart upload, and refuses a request signed with the wrong secret.
//!
//! The first run installs s3s-fs (about 2.5 minutes of compiling), so these
//! tests are ignored by default: `cargo test -p corral-testkit --test s3s --
//! --ignored`.

mod common;

use std::time::Duration;

use corral_testkit::s3s::{self, S3sFs};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

const MIB: usize = 1024 * 1024;

fn client(server: &S3sFs, bucket: &str, secret: &str) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_bucket_name(bucket)
        .with_region(s3s::REGION)
        .with_access_key_id(s3s::ACCESS_KEY_ID)
        .with_secret_access_key(secret)
        .with_retry(RetryConfig {
            max_retries: 0,
            retry_timeout: Duration::from_secs(5),
            ..RetryConfig::default()
        })
        .build()
        .unwrap()
}

/// Bytes that differ at every offset, so a misplaced part shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add((i >> 8) as u8 ^ seed)
        })
        .collect()
}

#[tokio::test]
#[ignore = "installs s3s-fs (2.5 min); run with --ignored"]
async fn objects_round_trip_through_a_signing_client() {
    let server = S3sFs::start().unwrap();
    let bucket = server.new_bucket("Round-Trip").unwrap();
    assert_eq!(bucket, bucket.to_ascii_lowercase());
    let store = client(&server, &bucket, s3s::SECRET_ACCESS_KEY);

    let path = Path::from("dir/hello.bin");
    let bytes = pattern(100_000, 1);
    store
        .put(&path, PutPayload::from(bytes.clone()))
        .await
        .unwrap();
    let got = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), bytes.as_slice());
    assert!(server.root().join(&bucket).join("dir/hello.bin").is_file());

    let listed: Vec<_> = store
        .list(Some(&Path::from("dir")))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].location, path);
    assert_eq!(listed[0].size, bytes.len() as u64);

    store.delete(&path).await.unwrap();
    let error = store.get(&path).await.unwrap_err();
    assert!(
        matches!(error, object_store::Error::NotFound { .. }),
        "{error}"
    );

    let path = Path::from("multi/part.bin");
    let parts = [pattern(5 * MIB, 2), pattern(5 * MIB, 3), pattern(1234, 4)];
    common::put_parts(&store, &path, &parts).await;
    let got = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.len(), parts.iter().map(Vec::len).sum::<usize>());
    assert!(
        got.as_ref() == parts.concat(),
        "the multipart object differs"
    );
}

#[tokio::test]
#[ignore = "installs s3s-fs (2.5 min); run with --ignored"]
async fn a_wrong_secret_is_refused() {
    let server = S3sFs::start().unwrap();
    let bucket = server.new_bucket("wrong-secret").unwrap();
    let store = client(&server, &bucket, "not-the-secret");
    let error = store
        .put(&Path::from("k"), PutPayload::from_static(b"x"))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("SignatureDoesNotMatch"), "{message}");
    assert_eq!(
        std::fs::read_dir(server.root().join(&bucket))
            .unwrap()
            .count(),
        0
    );
}

#[test]
#[ignore = "installs s3s-fs (2.5 min); run with --ignored"]
fn dropping_the_server_stops_it_and_removes_its_data() {
    let server = S3sFs::start().unwrap();
    let (addr, root) = (server.addr(), server.root().to_path_buf());
    drop(server);
    assert!(!root.exists(), "{} is left", root.display());
    assert!(std::net::TcpStream::connect(addr).is_err());
}
