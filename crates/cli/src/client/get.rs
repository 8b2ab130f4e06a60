//! `corral get`: files downloaded by key, streamed to disk with progress,
//! their length and SHA-256 checked against the server's.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use futures::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::api::{Refused, Server};
use super::list::RETRY;
use super::progress::{Format, Progress};
use super::{ServerArgs, runtime};

/// `corral get`.
#[derive(Debug, clap::Args)]
pub(crate) struct GetArgs {
    /// Keys of the files to download (as `corral ls` prints them).
    #[arg(required = true, value_name = "KEY")]
    pub(crate) keys: Vec<String>,

    #[command(flatten)]
    pub(crate) server: ServerArgs,

    /// Where to write: for one key, the file (`-` for stdout); for
    /// several, a directory. Default: the key's last segment in the
    /// working directory.
    #[arg(short, long, value_name = "PATH")]
    pub(crate) output: Option<PathBuf>,

    /// Show no progress bars (they are shown only on a terminal anyway).
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

/// The line printed per file downloaded.
#[derive(Serialize)]
struct GotLine<'a> {
    key: &'a str,
    size: u64,
    sha256: &'a str,
    path: &'a Path,
}

/// Runs `corral get`.
pub(crate) fn run(args: &GetArgs) -> anyhow::Result<()> {
    let server = Server::new(&args.server.server, args.server.token.clone(), RETRY)?;
    let several = args.keys.len() > 1;
    if several && args.output.as_deref() == Some(Path::new("-")) {
        anyhow::bail!("-o - writes one file to stdout; give one key");
    }
    runtime()?.block_on(async {
        server.check_access().await?;
        let format = if args.server.json {
            Format::Json
        } else {
            Format::Plain
        };
        let progress = Progress::new(0, args.keys.len() as u64, format, args.quiet, None);
        for key in &args.keys {
            let name = key.rsplit('/').next().filter(|n| !n.is_empty());
            let name = name.with_context(|| format!("bad key {key:?}: it names no file"))?;
            let path = match &args.output {
                Some(dir) if several => dir.join(name),
                Some(path) => path.clone(),
                None => PathBuf::from(name),
            };
            let (size, sha256) = get(&server, &progress, key, &path).await?;
            if path != Path::new("-") {
                progress.line(
                    &GotLine {
                        key,
                        size,
                        sha256: &sha256,
                        path: &path,
                    },
                    || format!("{key}\t{size}\t{sha256}\t{}", path.display()),
                );
            }
        }
        progress.finish();
        Ok(())
    })
}

/// Downloads `key` to `path` (through `path.part`, renamed once checked);
/// its size and SHA-256.
async fn get(
    server: &Server,
    progress: &Progress,
    key: &str,
    path: &Path,
) -> anyhow::Result<(u64, String)> {
    let encoded: String = key
        .split('/')
        .map(|s| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        })
        .collect::<Vec<_>>()
        .join("/");
    let url = server.url(&format!("api/files/{encoded}"))?;
    let response = server
        .send(|| Ok(server.request(Method::GET, url.clone())))
        .await?;
    if response.status() == StatusCode::NOT_FOUND {
        anyhow::bail!("no such file: {key}");
    }
    if !response.status().is_success() {
        return Err(
            anyhow::Error::new(Refused::read(response).await).context(format!("cannot get {key}"))
        );
    }
    let length = response.content_length();
    let expected = (response.headers().get("x-corral-sha256"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (bar, meter) = progress.file(key, length.unwrap_or(0));
    let to_stdout = path == Path::new("-");
    let part = path.with_extension(match path.extension() {
        Some(ext) => format!("{}.part", ext.to_string_lossy()),
        None => "part".to_owned(),
    });
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = if to_stdout {
        Box::new(tokio::io::stdout())
    } else {
        let file = tokio::fs::File::create(&part)
            .await
            .with_context(|| format!("cannot create {}", part.display()))?;
        Box::new(file)
    };
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.with_context(|| format!("{key}: the download broke off after {size} bytes"))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        meter.add(chunk.len() as u64).await;
        out.write_all(&chunk)
            .await
            .with_context(|| format!("cannot write {}", part.display()))?;
    }
    out.flush().await?;
    drop(out);
    bar.finish_and_clear();
    let sha256 = hex::encode(hasher.finalize());
    let checked = match (length, &expected) {
        (Some(length), _) if length != size => Err(format!("{size} bytes of {length}")),
        (_, Some(expected)) if *expected != sha256 => Err(format!(
            "SHA-256 {sha256}, the server's record says {expected}"
        )),
        _ => Ok(()),
    };
    if let Err(what) = checked {
        if !to_stdout {
            let _ = tokio::fs::remove_file(&part).await;
        }
        anyhow::bail!("{key}: the download does not check out: {what}");
    }
    if !to_stdout {
        tokio::fs::rename(&part, path)
            .await
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok((size, sha256))
}
