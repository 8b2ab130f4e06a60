//! `corral upload`: files and directory trees to a corral server, small
//! files in batches, large ones resumable, a bounded number of requests
//! in flight, every stored file checked, and a journal so that a rerun
//! sends nothing twice.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use futures::StreamExt as _;
use serde::Serialize;

use super::api::{RetryConfig, Server};
use super::batch::{self, Outcome};
use super::journal::{self, Journal, State};
use super::progress::{Format, Progress, human};
use super::tus::Upload;
use super::walk::{self, Source};
use super::{ServerArgs, runtime};
use crate::units::{ByteSize, Span};

/// `corral upload`.
#[derive(Debug, clap::Args)]
pub(crate) struct UploadArgs {
    /// Files and directories to upload; a directory is walked, every
    /// regular file under it sent (links to directories are not followed).
    #[arg(required = true, value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,

    #[command(flatten)]
    pub(crate) server: ServerArgs,

    /// Store the files under this key prefix (such as `scans/2026`).
    /// Applies to the batches of small files; corral's resumable uploads
    /// take no prefix, so large files are stored at the tenant's root.
    #[arg(long, default_value = "", value_name = "PREFIX")]
    pub(crate) prefix: String,

    /// Requests in flight at once: batches and resumable uploads
    /// together.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub(crate) parallel: u32,

    /// Files of this size or more are sent resumably (tus, in chunks of
    /// --chunk-size); smaller ones in batches to /api/files.
    #[arg(long, default_value = "16MiB", value_name = "SIZE")]
    pub(crate) large: ByteSize,

    /// Bytes per request of a resumable upload. The first chunk goes with
    /// the creation, so a run cut off before its answer starts that file
    /// over; after it, a request cut off loses nothing (the server keeps
    /// what arrived).
    #[arg(long, default_value = "64MiB", value_name = "SIZE")]
    pub(crate) chunk_size: ByteSize,

    /// Files in one batch at most.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub(crate) batch_files: usize,

    /// Bytes in one batch at most (a file larger goes alone).
    #[arg(long, default_value = "32MiB", value_name = "SIZE")]
    pub(crate) batch_size: ByteSize,

    /// Retries of one request after 429 or 503 (waiting as Retry-After
    /// says), 423 (an upload held by a newer request or by another
    /// instance, also waited out as Retry-After says) or a broken
    /// connection; then the files it carried fail.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub(crate) retries: u32,

    /// The longest wait before a retry, whatever Retry-After asks.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub(crate) max_wait: Span,

    /// Where the journal of stored files and open uploads is kept
    /// [default: $XDG_CACHE_HOME/corral/upload, else
    /// ~/.cache/corral/upload, else .corral-upload].
    #[arg(long, env = "CORRAL_STATE_DIR", value_name = "DIR")]
    pub(crate) state: Option<PathBuf>,

    /// Send at most this many bytes a second, all files together (such
    /// as 10MiB).
    #[arg(long, value_name = "SIZE")]
    pub(crate) limit_rate: Option<ByteSize>,

    /// Show no progress bars (they are shown only on a terminal anyway).
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

/// The line printed for a file stored.
#[derive(Serialize)]
struct StoredLine<'a> {
    key: &'a str,
    size: u64,
    sha256: &'a str,
    path: &'a std::path::Path,
    /// Stored by an earlier run: nothing was sent.
    already: bool,
    /// The offset a resumable upload was resumed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed_from: Option<u64>,
}

/// The line printed for a file that failed.
#[derive(Serialize)]
struct FailedLine<'a> {
    path: &'a std::path::Path,
    error: &'a str,
}

/// The last line, with `--json`.
#[derive(Serialize)]
struct Summary {
    files: usize,
    stored: usize,
    already: usize,
    failed: usize,
    bytes: u64,
    sent: u64,
    seconds: f64,
}

/// One request's worth of work.
enum Work {
    Batch(Vec<Source>),
    Large(Source, Option<String>),
}

/// Runs `corral upload`.
pub(crate) fn run(args: &UploadArgs) -> anyhow::Result<()> {
    let retry = RetryConfig {
        retries: args.retries,
        max_wait: args.max_wait.0,
    };
    let server = Server::new(&args.server.server, args.server.token.clone(), retry)?;
    anyhow::ensure!(args.chunk_size.0 > 0, "--chunk-size must be more than 0");
    anyhow::ensure!(args.batch_files > 0, "--batch-files must be more than 0");
    let sources = walk::walk(&args.paths)?;
    runtime()?.block_on(upload(args, server, sources))
}

async fn upload(args: &UploadArgs, server: Server, sources: Vec<Source>) -> anyhow::Result<()> {
    let started = Instant::now();
    server.check_access().await?;
    let dir = args.state.clone().unwrap_or_else(journal::default_dir);
    let journal = Journal::open(
        &dir,
        server.base().as_str(),
        args.server.token.as_deref(),
        &args.prefix,
    )?;
    let format = if args.server.json {
        Format::Json
    } else {
        Format::Plain
    };

    let files = sources.len();
    let bytes: u64 = sources.iter().map(|s| s.size).sum();
    let mut already = Vec::new();
    let mut large = Vec::new();
    let mut small = Vec::new();
    for source in sources {
        match journal.get(&source) {
            Some(State::Stored { key, sha256 }) => {
                already.push((source.clone(), key.clone(), sha256.clone()));
            }
            Some(State::Started { upload, .. }) => {
                let upload = upload.clone();
                large.push(Work::Large(source, Some(upload)));
            }
            None if source.size >= args.large.0 => large.push(Work::Large(source, None)),
            None => small.push(source),
        }
    }
    let to_send: u64 = bytes - already.iter().map(|(s, ..)| s.size).sum::<u64>();
    let progress = Progress::new(
        to_send,
        files as u64,
        format,
        args.quiet,
        args.limit_rate.map(|r| r.0),
    );
    for (source, key, sha256) in &already {
        progress.line(
            &StoredLine {
                key,
                size: source.size,
                sha256,
                path: &source.path,
                already: true,
                resumed_from: None,
            },
            || plain(key, source, sha256),
        );
    }
    let mut done = already.len();
    progress.files_done(done as u64, files as u64);

    // Large files first: they take longest, and start their bars.
    let work = large
        .into_iter()
        .chain(batches(small, args.batch_files, args.batch_size.0).map(Work::Batch));
    let journal_path = journal.path().to_owned();
    let journal = Mutex::new(journal);
    let mut results = futures::stream::iter(work)
        .map(|work| send(args, &server, &journal, &progress, work))
        .buffer_unordered(args.parallel as usize);

    let mut stored = 0;
    let mut failed = Vec::new();
    while let Some(outcomes) = results.next().await {
        for (source, outcome, resumed_from) in outcomes {
            done += 1;
            match outcome {
                Ok(ok) => {
                    stored += 1;
                    let state = State::Stored {
                        key: ok.key.clone(),
                        sha256: ok.sha256.clone(),
                    };
                    let recorded = journal
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(&source, state);
                    if let Err(error) = recorded {
                        progress.note(&format!("corral: warning: {error:#}"));
                    }
                    progress.line(
                        &StoredLine {
                            key: &ok.key,
                            size: source.size,
                            sha256: &ok.sha256,
                            path: &source.path,
                            already: false,
                            resumed_from,
                        },
                        || plain(&ok.key, &source, &ok.sha256),
                    );
                }
                Err(error) => {
                    if format == Format::Json {
                        progress.line(
                            &FailedLine {
                                path: &source.path,
                                error: &error,
                            },
                            String::new,
                        );
                    }
                    failed.push((source.path, error));
                }
            }
            progress.files_done(done as u64, files as u64);
        }
    }
    drop(results);
    progress.finish();

    let seconds = started.elapsed().as_secs_f64();
    let sent = progress.sent();
    if progress.format() == Format::Json {
        let summary = Summary {
            files,
            stored,
            already: already.len(),
            failed: failed.len(),
            bytes,
            sent,
            seconds,
        };
        println!("{}", serde_json::json!({ "summary": summary }));
    }
    eprintln!(
        "corral: {} of {files} files stored ({} already), {} sent in {seconds:.1} s, {} failed",
        stored + already.len(),
        already.len(),
        human(sent),
        failed.len()
    );
    if failed.is_empty() {
        return Ok(());
    }
    for (path, error) in &failed {
        eprintln!("failed: {}: {error}", path.display());
    }
    anyhow::bail!(
        "{} of {files} files failed (listed above); run the same command again to retry \
         them (the journal {} keeps what is stored)",
        failed.len(),
        journal_path.display()
    )
}

/// One request's work, and the outcome of each file it carried.
async fn send(
    args: &UploadArgs,
    server: &Server,
    journal: &Mutex<Journal>,
    progress: &Progress,
    work: Work,
) -> Vec<(Source, Outcome, Option<u64>)> {
    match work {
        Work::Batch(files) => {
            let outcomes = batch::send(server, &files, &args.prefix, &progress.meter()).await;
            files
                .into_iter()
                .zip(outcomes)
                .map(|(source, outcome)| (source, outcome, None))
                .collect()
        }
        Work::Large(source, started) => {
            let (bar, meter) = progress.file(&source.name(), source.size);
            let resumed = Mutex::new(None);
            let on_resume = |offset: u64| {
                bar.set_position(offset);
                *resumed.lock().unwrap_or_else(|e| e.into_inner()) = Some(offset);
            };
            let upload = Upload {
                server,
                source: &source,
                journal,
                chunk: args.chunk_size.0,
                meter,
                on_resume: &on_resume,
            };
            let outcome = upload.run(started.as_deref()).await;
            bar.finish_and_clear();
            let resumed = resumed.into_inner().unwrap_or_else(|e| e.into_inner());
            vec![(source, outcome, resumed)]
        }
    }
}

/// `files` cut into batches of at most `max_files` files and `max_bytes`
/// bytes (a file larger than that goes alone), in order.
fn batches(
    files: Vec<Source>,
    max_files: usize,
    max_bytes: u64,
) -> impl Iterator<Item = Vec<Source>> {
    let mut files = files.into_iter().peekable();
    std::iter::from_fn(move || {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(next) = files.peek() {
            let full = batch.len() >= max_files || (bytes + next.size > max_bytes);
            if full && !batch.is_empty() {
                break;
            }
            bytes += next.size;
            batch.push(files.next()?);
        }
        (!batch.is_empty()).then_some(batch)
    })
}

/// The plain line of a stored file: key, size, SHA-256 and path,
/// tab-separated.
fn plain(key: &str, source: &Source, sha256: &str) -> String {
    format!(
        "{key}\t{}\t{sha256}\t{}",
        source.size,
        source.path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_at_most_their_files_and_bytes() {
        let files: Vec<Source> = [5, 5, 5, 20, 1, 1, 1]
            .into_iter()
            .enumerate()
            .map(|(i, size)| Source {
                path: format!("/f{i}").into(),
                size,
                mtime_ns: 0,
            })
            .collect();
        let sizes: Vec<Vec<u64>> = batches(files, 3, 10)
            .map(|b| b.iter().map(|s| s.size).collect())
            .collect();
        assert_eq!(sizes, [vec![5, 5], vec![5], vec![20], vec![1, 1, 1]]);
    }
}
