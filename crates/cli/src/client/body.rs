//! A range of a file as a request body: read from disk a buffer at a
//! time as the request is sent, never whole in memory, hashed and counted
//! on the way.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::progress::Meter;

/// Bytes read from disk at a time.
const BUFFER: usize = 256 * 1024;

/// Where a body's hash goes: the hasher as it was before the body, which
/// the body advances; read it once the request has succeeded.
pub(super) type Hashing = Arc<Mutex<Sha256>>;

/// The bytes `[start, start + len)` of `path` as a body, fed to `hasher`
/// and counted by `meter`. The file is opened when the body is first
/// polled, so a batch's parts hold no file open before their turn.
///
/// A file that ends early fails the body; bytes past `start + len` are
/// not sent.
pub(super) fn file_range(
    path: PathBuf,
    start: u64,
    len: u64,
    hasher: Hashing,
    meter: Meter,
) -> reqwest::Body {
    struct Reading {
        file: Option<tokio::fs::File>,
        path: PathBuf,
        start: u64,
        left: u64,
        hasher: Hashing,
        meter: Meter,
    }
    let state = Reading {
        file: None,
        path,
        start,
        left: len,
        hasher,
        meter,
    };
    let stream = futures::stream::try_unfold(state, |mut state| async move {
        if state.left == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        let file = match &mut state.file {
            Some(file) => file,
            None => {
                let mut file = tokio::fs::File::open(&state.path).await?;
                file.seek(SeekFrom::Start(state.start)).await?;
                state.file.insert(file)
            }
        };
        let want = usize::try_from(state.left)
            .unwrap_or(usize::MAX)
            .min(BUFFER);
        let mut buf = vec![0; want];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} ended {} bytes early", state.path.display(), state.left),
            ));
        }
        buf.truncate(n);
        state.left -= n as u64;
        // The lock is only ever taken by this body, one chunk at a time.
        state
            .hasher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .update(&buf);
        state.meter.add(n as u64).await;
        Ok(Some((buf, state)))
    });
    reqwest::Body::wrap_stream(stream)
}

/// `hasher` advanced over `[from, to)` of `path`, read from disk: what a
/// resumed upload needs for the bytes the server already holds.
///
/// # Errors
///
/// The file cannot be read, or ends before `to`.
pub(super) async fn hash_range(
    path: &std::path::Path,
    hasher: &mut Sha256,
    from: u64,
    to: u64,
) -> anyhow::Result<()> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    file.seek(SeekFrom::Start(from)).await?;
    let mut left = to.saturating_sub(from);
    let mut buf = vec![0; BUFFER];
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(BUFFER);
        let n = file
            .read(&mut buf[..want])
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        anyhow::ensure!(n > 0, "{} ended {left} bytes early", path.display());
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}
