//! Uppy's Tus plugin in headless Chromium, uploading to corral from a page
//! of another origin: what corral's browser users run. The testkit
//! installs Chromium (apt) and Uppy (npm); the page makes each file from a
//! seed, and every file corral stores is read back and compared by
//! SHA-256.

mod common;

use std::time::Duration;

use common::*;
use corral_server::{Auth, ServerConfig};
use corral_testkit::browser::{Browser, UppyFile, UppyReport, UppyRun};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

const ACME: &str = "corral_acme-token";

/// What `files` should become: each under its name, with its bytes.
fn expected(files: &[UppyFile]) -> Vec<(String, String)> {
    let mut expected: Vec<_> = files
        .iter()
        .map(|file| (file.name.clone(), file.sha256()))
        .collect();
    expected.sort();
    expected
}

/// Files of `sizes`, named after their size and place.
fn generated(sizes: &[u64]) -> Vec<UppyFile> {
    (sizes.iter().enumerate())
        .map(|(i, &size)| UppyFile::generated(format!("file-{i}-{size}.bin"), size, 500 + i as u32))
        .collect()
}

async fn upload(
    server: &Server,
    files: &[UppyFile],
    configure: impl FnOnce(&mut UppyRun),
) -> UppyReport {
    let mut run = UppyRun::new(server.url("/api/uploads"), files.to_vec());
    run.timeout = Duration::from_secs(120);
    configure(&mut run);
    Browser::require().uppy(&run).await.unwrap()
}

/// How Chromium reports a request the page aborted itself (a pause).
const ABORTED: &str = "net::ERR_ABORTED";

/// Every file uploaded, by Uppy's own account, and every request the page
/// made answered, but for those it aborted: none refused by CORS.
fn assert_all_uploaded(report: &UppyReport, files: &[UppyFile]) {
    assert!(!report.timed_out, "{report:#?}");
    for file in &report.files {
        assert_eq!(file.error, None, "{file:?}\n{report:#?}");
        assert!(file.upload_url.is_some(), "{file:?}");
    }
    assert_eq!(
        (report.successful, report.failed),
        (files.len(), 0),
        "{report:#?}"
    );
    let failed: Vec<_> = (report.requests.iter())
        .filter(|request| request.failure.as_deref() != Some(ABORTED))
        .filter(|request| request.failure.is_some() || request.status.is_none())
        .collect();
    assert!(failed.is_empty(), "{failed:#?}\n{:#?}", report.console);
    let cors = (report.console.iter()).find(|line| line.contains("CORS"));
    assert_eq!(cors, None, "{:#?}", report.console);
}

/// The page is of another origin than corral, and the browser asked
/// before it sent the tus requests: preflights to the upload routes,
/// answered 2xx.
fn assert_cross_origin(report: &UppyReport, server: &Server) {
    assert_ne!(report.origin, server.url(""));
    let preflights: Vec<_> = (report.requests.iter())
        .filter(|request| request.kind == "Preflight")
        .collect();
    assert!(!preflights.is_empty(), "{:#?}", report.requests);
    for preflight in preflights {
        assert_eq!(preflight.method, "OPTIONS", "{preflight:?}");
        assert!(
            preflight.url.starts_with(&server.url("/api/uploads")),
            "{preflight:?}"
        );
        let status = preflight.status.unwrap();
        assert!((200..300).contains(&status), "{preflight:?}");
    }
}

#[tokio::test]
async fn uppy_uploads_files_of_every_size_from_another_origin_byte_identical() {
    let server = Server::start().await;
    let files = generated(&[0, 1, 300 * KIB, 6 * MIB, 12 * MIB]);
    let report = upload(&server, &files, |_| {}).await;
    assert_all_uploaded(&report, &files);
    assert_cross_origin(&report, &server);
    assert_eq!(server.stored_files(None).await, expected(&files));
    // Each file is one upload, created once.
    assert_eq!(report.requests_by("POST").count(), files.len());
}

#[tokio::test]
async fn uppy_s_parallel_uploads_are_concatenated_into_whole_files() {
    let server = Server::start().await;
    let files = generated(&[300 * KIB, 6 * MIB, 12 * MIB + 3]);
    let report = upload(&server, &files, |run| run.parallel_uploads = Some(3)).await;
    assert_all_uploaded(&report, &files);
    // Three partial uploads and their concatenation per file.
    assert_eq!(
        report.requests_by("POST").count(),
        4 * files.len(),
        "{:#?}",
        report.requests
    );
    // The parts are no files of the tenant's: only the wholes are.
    assert_eq!(server.stored_files(None).await, expected(&files));
}

#[tokio::test]
async fn uppy_with_a_tenant_s_token_uploads_and_with_a_wrong_one_reports_401() {
    let auth = Auth::new(vec![tenant("acme", ACME)]).unwrap();
    let server = Server::with_auth(ServerConfig::default(), auth).await;
    let files = generated(&[1, 300 * KIB, 6 * MIB]);

    let wrong = upload(&server, &files, |run| {
        run.headers
            .insert("authorization".to_owned(), "Bearer wrong".to_owned());
    })
    .await;
    assert!(!wrong.timed_out, "{wrong:#?}");
    assert_eq!((wrong.successful, wrong.failed), (0, files.len()));
    // The page reads the 401 only if its answer carries the CORS headers:
    // without them Uppy would see a network error and no status.
    for file in &wrong.files {
        assert_eq!(file.status, Some(401), "{file:?}\n{wrong:#?}");
        assert_eq!(file.upload_url, None, "{file:?}");
        let error = file.error.as_deref().unwrap();
        assert!(error.contains("response code: 401"), "{error}");
    }
    assert_eq!(server.stored_files(Some(ACME)).await, []);

    let right = upload(&server, &files, |run| {
        run.headers
            .insert("authorization".to_owned(), format!("Bearer {ACME}"));
    })
    .await;
    assert_all_uploaded(&right, &files);
    assert_cross_origin(&right, &server);
    assert_eq!(server.stored_files(Some(ACME)).await, expected(&files));
}

#[tokio::test]
async fn an_upload_paused_mid_way_in_uppy_resumes_from_what_corral_kept() {
    let server = Server::start().await;
    let files = generated(&[12 * MIB]);
    let report = upload(&server, &files, |run| {
        run.pause_at = Some(0.4);
        // On 127.0.0.1 Chromium sends a whole 12 MiB request between two
        // of its progress events; each chunk's answer is one more.
        run.chunk_size = Some(MIB);
    })
    .await;
    assert_all_uploaded(&report, &files);
    let file = &report.files[0];
    let paused_at = file.paused_at_bytes.unwrap();
    assert!(file.resumed, "{file:?}");
    assert!(paused_at < file.size, "{file:?}");
    // The request in flight when it paused, if one was.
    let aborted = (report.requests.iter())
        .filter(|request| request.failure.as_deref() == Some(ABORTED))
        .count();
    assert!(aborted <= 1, "{:#?}", report.requests);
    // Created once; resumed from the offset a HEAD answered, part-way.
    assert_eq!(
        report.requests_by("POST").count(),
        1,
        "{:#?}",
        report.requests
    );
    let offsets: Vec<u64> = (report.requests_by("HEAD"))
        .map(|head| {
            assert_eq!(head.status, Some(200), "{head:?}");
            head.headers["upload-offset"].parse().unwrap()
        })
        .collect();
    assert!(!offsets.is_empty(), "{:#?}", report.requests);
    for offset in offsets {
        assert!(0 < offset && offset < file.size, "{offset} of {file:?}");
    }
    assert_eq!(server.stored_files(None).await, expected(&files));
}
