//! The real tus-js-client against Node's reference tus server, through
//! `corral_testkit::node`: files arrive byte for byte, cut uploads resume,
//! and what the server refuses is in the report, said clearly.

use std::net::TcpListener;
use std::time::Duration;

use corral_testkit::ScriptError;
use corral_testkit::node::{
    self, TusClient, TusFile, TusNodeServer, TusProtocol, TusReport, TusRun,
};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// A server of the test's own, and the directory it stores into.
fn server() -> (TusNodeServer, TempDir) {
    let dir = TempDir::new().unwrap();
    let server = TusNodeServer::start(dir.path()).unwrap();
    (server, dir)
}

/// `sizes`, each generated from its index as the seed.
fn generated(sizes: impl IntoIterator<Item = u64>) -> Vec<TusFile> {
    (sizes.into_iter().zip(0..))
        .map(|(size, seed)| TusFile::Generated { size, seed })
        .collect()
}

fn size_and_seed(file: &TusFile) -> (u64, u32) {
    match *file {
        TusFile::Generated { size, seed } => (size, seed),
        TusFile::Path { .. } => unreachable!("these tests generate their files"),
    }
}

/// A 127.0.0.1 URL where nothing listens: a port that was free a moment
/// ago.
fn refusing_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}/files")
}

/// Every file of `run` uploaded without error, and stored by `server`
/// exactly as generated.
fn assert_stored(server: &TusNodeServer, run: &TusRun, report: &TusReport) {
    assert_eq!(report.files.len(), run.files.len());
    assert_eq!(report.failures().count(), 0, "{report:#?}");
    assert!(!report.timed_out);
    for (i, (file, reported)) in run.files.iter().zip(&report.files).enumerate() {
        let (size, seed) = size_and_seed(file);
        let expected = node::file_sha256(size, seed);
        assert_eq!(reported.size, Some(size), "file {i}");
        assert_eq!(reported.sha256.as_deref(), Some(&*expected), "file {i}");
        let url = reported.url.as_deref().expect("every upload has a URL");
        let path = server.stored(url).expect("a URL of this server");
        let stored = std::fs::read(&path).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&stored)),
            expected,
            "file {i} ({size} B) stored at {}",
            path.display()
        );
    }
    let bytes: u64 = run.files.iter().map(|file| size_and_seed(file).0).sum();
    assert_eq!(report.totals.bytes, bytes);
    assert_eq!(report.totals.failed, 0);
}

#[tokio::test]
async fn twenty_files_of_mixed_sizes_arrive_byte_identical() {
    let (server, _dir) = server();
    let sizes = [0, 1, 100 * KIB, 3 * MIB].into_iter().cycle().take(20);
    let run = TusRun {
        concurrency: 8,
        ..TusRun::new(server.endpoint(), generated(sizes))
    };
    let report = TusClient::require().run(&run).await.unwrap();
    assert_stored(&server, &run, &report);
    assert!(report.totals.mib_per_sec.is_some_and(|rate| rate > 0.0));
    // @tus/file-store keeps each upload's metadata next to it.
    let url = report.files[7].url.as_deref().unwrap();
    let info = server.stored(url).unwrap().with_extension("json");
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(info).unwrap()).unwrap();
    assert_eq!(info["metadata"]["filename"], "file-7.bin");
    assert_eq!(info["size"], 3 * MIB);
}

#[tokio::test]
async fn prepared_files_are_made_before_the_clock_and_arrive_byte_identical() {
    let (server, _dir) = server();
    let sizes = [0, 1, 100 * KIB, 3 * MIB].into_iter().cycle().take(8);
    let run = TusRun {
        concurrency: 4,
        prepare: true,
        ..TusRun::new(server.endpoint(), generated(sizes))
    };
    let report = TusClient::require().run(&run).await.unwrap();
    assert_stored(&server, &run, &report);
}

#[tokio::test]
async fn a_prepared_file_that_cannot_be_read_is_its_own_error() {
    let (server, dir) = server();
    let missing = TusFile::Path {
        path: dir.path().join("missing.bin"),
    };
    let files = vec![missing, TusFile::Generated { size: 10, seed: 1 }];
    let run = TusRun {
        prepare: true,
        ..TusRun::new(server.endpoint(), files)
    };
    let report = TusClient::require().run(&run).await.unwrap();
    let error = report.files[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("missing.bin"), "{report:#?}");
    assert_eq!(report.files[1].error, None, "{report:#?}");
    assert_eq!(report.totals.failed, 1);
}

#[tokio::test]
async fn uploads_cut_at_40_percent_resume_from_what_the_server_kept() {
    let (server, _dir) = server();
    let sizes = [1, 100 * KIB, 3 * MIB, 3 * MIB + 1, 100 * KIB + 3, 2];
    let run = TusRun {
        concurrency: 3,
        cut_at: Some(0.4),
        ..TusRun::new(server.endpoint(), generated(sizes))
    };
    let report = TusClient::require().run(&run).await.unwrap();
    assert_stored(&server, &run, &report);
    for (size, file) in sizes.into_iter().zip(&report.files) {
        // Aborted at the first byte past 40 %, mid-request.
        let cut = (size as f64 * 0.4) as u64 + 1;
        assert_eq!(file.bytes_sent_before_cut, Some(cut), "{size} B: {file:?}");
        assert!(file.resumed, "{size} B: {file:?}");
        let offset = file.offset_at_cut.expect("a resumed upload has an offset");
        assert!(offset <= cut, "{size} B: {file:?}");
        if size >= MIB {
            // The server wrote most of what came before the abort.
            assert!(offset > 0, "{size} B: {file:?}");
        }
    }
}

#[tokio::test]
async fn an_empty_file_has_nothing_to_cut_and_is_uploaded_whole() {
    let (server, _dir) = server();
    let run = TusRun {
        cut_at: Some(0.4),
        ..TusRun::new(server.endpoint(), generated([0]))
    };
    let report = TusClient::require().run(&run).await.unwrap();
    assert_stored(&server, &run, &report);
    let file = &report.files[0];
    assert_eq!(file.bytes_sent_before_cut, None);
    assert_eq!(file.offset_at_cut, None);
    assert!(!file.resumed);
}

#[tokio::test]
async fn creation_with_upload_stores_the_files() {
    let (server, _dir) = server();
    let run = TusRun {
        upload_data_during_creation: true,
        // The POST carries the first MiB, PATCHes the rest.
        chunk_size: Some(MIB),
        concurrency: 2,
        ..TusRun::new(server.endpoint(), generated([1, 100 * KIB, 3 * MIB + 5]))
    };
    let report = TusClient::require().run(&run).await.unwrap();
    assert_stored(&server, &run, &report);
}

#[tokio::test]
async fn a_file_at_a_path_is_uploaded_as_it_is() {
    let (server, dir) = server();
    let path = dir.path().join("source.txt");
    let text = "a file from disk, not generated\n".repeat(1000);
    std::fs::write(&path, &text).unwrap();
    let run = TusRun::new(server.endpoint(), vec![TusFile::Path { path }]);
    let report = TusClient::require().run(&run).await.unwrap();
    let file = &report.files[0];
    assert_eq!(file.error, None);
    assert_eq!(file.size, Some(text.len() as u64));
    let expected = hex::encode(Sha256::digest(&text));
    assert_eq!(file.sha256.as_deref(), Some(&*expected));
    let stored = server.stored(file.url.as_deref().unwrap()).unwrap();
    assert_eq!(std::fs::read_to_string(stored).unwrap(), text);
}

#[tokio::test]
async fn the_runner_generates_the_bytes_rust_generates() {
    // The seed whose state would be 0 falls back to 1.
    let inverse = (0..5).fold(0x9E37_79B1_u32, |x, _| {
        x.wrapping_mul(2u32.wrapping_sub(0x9E37_79B1_u32.wrapping_mul(x)))
    });
    let zero_state = 0x85EB_CA6B_u32.wrapping_mul(inverse);
    assert_eq!(zero_state.wrapping_mul(0x9E37_79B1) ^ 0x85EB_CA6B, 0);
    let seeds = [0, 1, 7, 0xFFFF_FFFF, zero_state];
    let sizes = [0, 1, 2, 3, 4, 5, 1023, 65_537];
    let files: Vec<TusFile> = (seeds.iter())
        .flat_map(|&seed| sizes.map(|size| TusFile::Generated { size, seed }))
        .collect();
    // Nothing listens: the report still hashes every file.
    let run = TusRun {
        retry_delays: Some(Vec::new()),
        concurrency: 8,
        ..TusRun::new(refusing_endpoint(), files.clone())
    };
    let report = TusClient::require().run(&run).await.unwrap();
    for (file, reported) in files.iter().zip(&report.files) {
        let (size, seed) = size_and_seed(file);
        assert_eq!(
            reported.sha256.as_deref(),
            Some(&*node::file_sha256(size, seed)),
            "{size} B from seed {seed:#x}"
        );
    }
}

#[tokio::test]
async fn a_refused_connection_is_each_file_s_error_in_the_report() {
    let run = TusRun {
        retry_delays: Some(Vec::new()),
        ..TusRun::new(refusing_endpoint(), generated([10, 20]))
    };
    let report = TusClient::require().run(&run).await.unwrap();
    assert_eq!(report.totals.failed, 2);
    assert_eq!(report.totals.bytes, 0);
    for file in &report.files {
        let error = file.error.as_deref().expect("nothing listens");
        assert!(error.contains("ECONNREFUSED"), "{error}");
        assert_eq!(file.url, None);
    }
}

#[tokio::test]
async fn parallel_uploads_are_refused_by_tus_server_for_lack_of_concatenation() {
    let (server, _dir) = server();
    let run = TusRun {
        parallel_uploads: Some(3),
        retry_delays: Some(Vec::new()),
        ..TusRun::new(server.endpoint(), generated([MIB]))
    };
    let report = TusClient::require().run(&run).await.unwrap();
    let error = report.files[0].error.as_deref().expect("refused");
    // The partial uploads' POST carries Upload-Concat: partial.
    assert!(error.contains("response code: 501"), "{error}");
    assert!(error.contains("Concatenation extension"), "{error}");
    assert_eq!(report.totals.failed, 1);
}

#[tokio::test]
async fn ietf_draft_protocols_are_refused_by_tus_server_which_speaks_tus_1_only() {
    let (server, _dir) = server();
    for protocol in [TusProtocol::IetfDraft03, TusProtocol::IetfDraft05] {
        let run = TusRun {
            protocol,
            retry_delays: Some(Vec::new()),
            ..TusRun::new(server.endpoint(), generated([KIB]))
        };
        let report = TusClient::require().run(&run).await.unwrap();
        let error = report.files[0].error.as_deref().expect("refused");
        // The drafts send Upload-Draft-Interop-Version, not Tus-Resumable.
        assert!(
            error.contains("response code: 412"),
            "{protocol:?}: {error}"
        );
        assert!(
            error.contains("Tus-Resumable Required"),
            "{protocol:?}: {error}"
        );
    }
}

#[tokio::test]
async fn a_run_past_its_timeout_reports_every_file_failed() {
    let (server, _dir) = server();
    let run = TusRun {
        timeout: Duration::from_millis(1),
        ..TusRun::new(server.endpoint(), generated([3 * MIB, 3 * MIB, 3 * MIB]))
    };
    let report = TusClient::require().run(&run).await.unwrap();
    assert!(report.timed_out);
    assert_eq!(report.totals.failed, 3);
    for file in &report.files {
        let error = file.error.as_deref().expect("timed out");
        assert!(error.contains("timed out after 1 ms"), "{error}");
    }
}

#[tokio::test]
async fn a_config_the_runner_refuses_is_an_error_with_its_reason() {
    let run = TusRun {
        cut_at: Some(1.5),
        ..TusRun::new(refusing_endpoint(), generated([1]))
    };
    match TusClient::require().run(&run).await {
        Err(node::Error::Runner(ScriptError::Failed { status, stderr, .. })) => {
            assert_eq!(status.code(), Some(2));
            assert!(stderr.contains("`cutAt` is not a fraction"), "{stderr}");
        }
        other => panic!("{other:?}"),
    }
}
