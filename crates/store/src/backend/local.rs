//! The local directory, corral's default store: `object_store`'s
//! [`LocalFileSystem`], with each object's attributes kept as extended
//! attributes of its file.
//!
//! `LocalFileSystem` refuses attributes, so every local object used to
//! need a second file, its metadata document, written and `fsync`'d after
//! it. Here a single-call object is written to a staging file beside its
//! place (`{file}#{digits}`, the name `object_store` and the orphan sweep
//! use), its attributes are set on that file (`user.corral.content-type`,
//! `user.corral.meta.{name}`), the file is `fsync`'d, renamed into place,
//! and its directory `fsync`'d. File and metadata become durable with one
//! `fsync` and visible with one rename: a crash leaves either both or
//! neither (a staging file, swept at the next start).
//!
//! Reads, lists, deletes and multipart uploads are `LocalFileSystem`'s own;
//! a read's attributes are read from the file's extended attributes after
//! it was opened. corral never rewrites an object in place (every upload
//! has a key of its own), so the two cannot come from different writes.
//!
//! Extended attributes need a file system that keeps `user.*` attributes
//! (ext4, xfs, btrfs; tmpfs since Linux 6.6). [`keeps_xattrs`] finds out
//! when the store opens; where they are not kept, the store runs on plain
//! `LocalFileSystem` with metadata documents, as before.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, CopyOptions, GetOptions, GetResult, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions,
};
use rustix::fs::XattrFlags;

/// Asks a put (in [`PutOptions::extensions`]) to skip the `fsync`s: the
/// file is still written whole and renamed into place, so a reader sees
/// all of it or none, but a crash may lose it. For what costs nothing to
/// lose: the state of a resumable upload that has received no byte (its
/// client, finding no upload, starts again). Other backends ignore it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NotDurable;

/// Where corral's attributes live among a file's extended attributes.
const PREFIX: &str = "user.corral.";
const CONTENT_TYPE: &str = "user.corral.content-type";
const METADATA: &str = "user.corral.meta.";
/// Room for a file's attribute names, and for one value.
const BUFFER: usize = 16 << 10;

/// A local directory whose objects keep their attributes.
#[derive(Debug)]
pub(crate) struct LocalStore {
    inner: Arc<LocalFileSystem>,
}

/// Held by a put in [`PutMode::Update`] from its check of the file's
/// version to its write, one lock for the files of each stripe, for every
/// local store of the process. Within this process only: a local directory
/// is one machine's, served by one corral; two processes sharing one are
/// not kept apart (the states of resumable uploads are then safe only if
/// one process writes an upload at a time). A put in [`PutMode::Create`]
/// needs no lock: its rename into place refuses an existing name
/// ([`rename_new`]).
static CONDITIONAL: [tokio::sync::Mutex<()>; 16] =
    [const { tokio::sync::Mutex::const_new(()) }; 16];

impl std::fmt::Display for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} with extended attributes", self.inner)
    }
}

impl LocalStore {
    pub(crate) fn new(inner: LocalFileSystem) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// A put in [`PutMode::Create`]: written as any put, but renamed into
    /// place only if the name is free ([`rename_new`]), so of two puts of
    /// one new file exactly one succeeds, without a lock, whatever the
    /// processes. Returns the version written.
    async fn put_new(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let durable = opts.extensions.get::<NotDurable>().is_none();
        let xattrs = to_xattrs(&opts.attributes)?;
        let path = self.inner.path_to_filesystem(location)?;
        blocking(move || {
            write_file(&path, &payload, &xattrs, durable, Replace::No)
                .map_err(|e| io_error(&path, e))
        })
        .await?;
        self.version_of(location).await
    }

    /// The version of the file at `location` as a read sees it
    /// (`LocalFileSystem`'s e-tag: inode, time, size): a stat, no read.
    async fn version_of(&self, location: &Path) -> object_store::Result<PutResult> {
        let meta = self.inner.head(location).await?;
        Ok(PutResult {
            e_tag: meta.e_tag,
            version: None,
            extensions: Default::default(),
        })
    }

    /// A put in [`PutMode::Update`], which `LocalFileSystem` does not
    /// serve: the file's current version is compared with the one expected
    /// and the file written, one such write of a file at a time in this
    /// process (see [`CONDITIONAL`]). Returns the version written.
    async fn put_conditionally(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let file = self.inner.path_to_filesystem(location)?;
        let stripe = stripe_of(&file, CONDITIONAL.len());
        let _held = CONDITIONAL[stripe].lock().await;
        let current = match self.inner.head(location).await {
            Ok(meta) => Some(meta),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let refused = |why: &str| -> Box<dyn std::error::Error + Send + Sync> {
            format!("{location}: {why}").into()
        };
        if let PutMode::Update(expected) = &opts.mode {
            let matches = current
                .is_some_and(|meta| expected.e_tag.is_some() && meta.e_tag == expected.e_tag);
            if !matches {
                return Err(object_store::Error::Precondition {
                    path: location.to_string(),
                    source: refused("changed since the version expected"),
                });
            }
        }
        opts.mode = PutMode::Overwrite;
        self.put_opts(location, payload, opts).await?;
        self.version_of(location).await
    }
}

/// The lock of `path` among `stripes`.
fn stripe_of(path: &FsPath, stripes: usize) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let hash =
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(path);
    (hash % stripes as u64) as usize
}

/// Whether the file system of `dir` keeps `user.*` extended attributes.
pub(crate) fn keeps_xattrs(dir: &FsPath) -> bool {
    // A staging name, so that a probe left by a crash here is swept.
    let path = dir.join(format!(".corral-probe#{}", fastrand::u32(..)));
    let Ok(probe) = File::options().write(true).create_new(true).open(&path) else {
        return false;
    };
    let kept = rustix::fs::fsetxattr(&probe, CONTENT_TYPE, b"probe", XattrFlags::empty()).is_ok();
    let _ = std::fs::remove_file(&path);
    kept
}

/// The extended attributes of `attributes`, by name.
fn to_xattrs(attributes: &Attributes) -> object_store::Result<Vec<(String, Vec<u8>)>> {
    attributes
        .iter()
        .map(|(attribute, value)| {
            let name = match attribute {
                Attribute::ContentType => CONTENT_TYPE.to_owned(),
                Attribute::Metadata(key) => format!("{METADATA}{key}"),
                other => {
                    return Err(object_store::Error::NotImplemented {
                        operation: format!("the attribute {other:?} on local files"),
                        implementer: "corral's local store".to_owned(),
                    });
                }
            };
            Ok((name, value.as_ref().as_bytes().to_vec()))
        })
        .collect()
}

/// corral's attributes of the file at `path`.
fn read_xattrs(path: &FsPath) -> std::io::Result<Attributes> {
    let mut names = vec![0u8; BUFFER];
    let listed = rustix::fs::listxattr(path, &mut names[..])?;
    let mut attributes = Attributes::new();
    let mut value = vec![0u8; BUFFER];
    for name in names[..listed].split(|b| *b == 0) {
        let Some(name) = std::str::from_utf8(name)
            .ok()
            .filter(|n| n.starts_with(PREFIX))
        else {
            continue;
        };
        let length = rustix::fs::getxattr(path, name, &mut value[..])?;
        let text = String::from_utf8_lossy(&value[..length]).into_owned();
        let attribute = match name.strip_prefix(METADATA) {
            Some(key) => Attribute::Metadata(key.to_owned().into()),
            None if name == CONTENT_TYPE => Attribute::ContentType,
            None => continue,
        };
        attributes.insert(attribute, AttributeValue::from(text));
    }
    Ok(attributes)
}

/// Whether a put replaces a file already at its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replace {
    Yes,
    /// `ErrorKind::AlreadyExists` instead.
    No,
}

/// Writes `payload` with `xattrs` to `path` through a staging file,
/// durably unless told (see the [module docs](self) and [`NotDurable`]).
fn write_file(
    path: &FsPath,
    payload: &PutPayload,
    xattrs: &[(String, Vec<u8>)],
    durable: bool,
    replace: Replace,
) -> std::io::Result<()> {
    let parent = path.parent().ok_or(ErrorKind::InvalidInput)?;
    let created = create_dirs(parent)?;
    let (mut file, staging) = staging_file(path)?;
    let written = (|| {
        for chunk in payload.iter() {
            file.write_all(chunk)?;
        }
        for (name, value) in xattrs {
            rustix::fs::fsetxattr(&file, name.as_str(), value, XattrFlags::empty())?;
        }
        if durable {
            file.sync_all()?;
        }
        match replace {
            Replace::Yes => std::fs::rename(&staging, path),
            Replace::No => rename_new(&staging, path),
        }
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    if !durable {
        return Ok(());
    }
    // The file's entry is durable once its directory is synced, and a
    // directory created for it once that directory's own parent is. One
    // after the other: on a journalled file system the first sync commits
    // the changes of both, and where it does not, syncing them at once on
    // a thread each was not faster (`docs/BENCHMARKS.md`).
    sync_dir(parent)?;
    created
        .iter()
        .filter_map(|dir| dir.parent())
        .try_for_each(sync_dir)
}

/// Creates `dir` and any missing ancestors; the ones it created.
fn create_dirs(dir: &FsPath) -> std::io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(candidate) = at.filter(|d| !d.exists()) {
        missing.push(candidate.to_path_buf());
        at = candidate.parent();
    }
    std::fs::create_dir_all(dir)?;
    Ok(missing)
}

/// A new staging file beside `path`, named as `object_store` names its own.
fn staging_file(path: &FsPath) -> std::io::Result<(File, PathBuf)> {
    for suffix in 1u32.. {
        let mut staging = path.as_os_str().to_owned();
        staging.push(format!("#{suffix}"));
        let staging = PathBuf::from(staging);
        match File::options().write(true).create_new(true).open(&staging) {
            Ok(file) => return Ok((file, staging)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("some suffix is free")
}

/// Renames `from` to `to` if no file is at `to`, atomically
/// (`renameat2(RENAME_NOREPLACE)`), else fails with
/// `ErrorKind::AlreadyExists`. A file system without that rename gets a
/// hard link, which refuses an existing name as atomically, and an unlink.
fn rename_new(from: &FsPath, to: &FsPath) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        renamed => renamed.map_err(std::io::Error::from),
    }
}

fn sync_dir(dir: &FsPath) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn io_error(path: &FsPath, source: std::io::Error) -> object_store::Error {
    match source.kind() {
        ErrorKind::NotFound => object_store::Error::NotFound {
            path: path.display().to_string(),
            source: source.into(),
        },
        ErrorKind::AlreadyExists => object_store::Error::AlreadyExists {
            path: path.display().to_string(),
            source: source.into(),
        },
        _ => object_store::Error::Generic {
            // As `LocalFileSystem` names itself, so that its failures are
            // classified as a local store's.
            store: "LocalFileSystem",
            source: format!("{}: {source}", path.display()).into(),
        },
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> object_store::Result<T> + Send + 'static,
) -> object_store::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: e.into(),
        })?
}

/// A multipart upload whose attributes are set when it completes.
#[derive(Debug)]
struct Multipart {
    inner: Box<dyn MultipartUpload>,
    path: PathBuf,
    xattrs: Vec<(String, Vec<u8>)>,
}

#[async_trait]
impl MultipartUpload for Multipart {
    fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let done = self.inner.complete().await?;
        let (path, xattrs) = (self.path.clone(), std::mem::take(&mut self.xattrs));
        blocking(move || {
            let file = File::open(&path).map_err(|e| io_error(&path, e))?;
            for (name, value) in &xattrs {
                rustix::fs::fsetxattr(&file, name.as_str(), value, XattrFlags::empty())
                    .map_err(|e| io_error(&path, e.into()))?;
            }
            file.sync_all().map_err(|e| io_error(&path, e))
        })
        .await?;
        Ok(done)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match opts.mode {
            PutMode::Overwrite => {}
            PutMode::Create => return self.put_new(location, payload, opts).await,
            PutMode::Update(_) => return self.put_conditionally(location, payload, opts).await,
        }
        let durable = opts.extensions.get::<NotDurable>().is_none();
        if opts.attributes.is_empty() && durable {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let xattrs = to_xattrs(&opts.attributes)?;
        let path = self.inner.path_to_filesystem(location)?;
        blocking(move || {
            write_file(&path, &payload, &xattrs, durable, Replace::Yes)
                .map_err(|e| io_error(&path, e))?;
            Ok(PutResult {
                e_tag: None,
                version: None,
                extensions: Default::default(),
            })
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        // `LocalFileSystem` takes no attributes here: they are set once
        // the file is in place. A multipart object has its metadata
        // document, which holds them too, so one lost in a crash between
        // the two costs nothing.
        let xattrs = to_xattrs(&opts.attributes)?;
        let opts = PutMultipartOptions {
            attributes: Attributes::new(),
            ..opts
        };
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        let path = self.inner.path_to_filesystem(location)?;
        Ok(Box::new(Multipart {
            inner,
            path,
            xattrs,
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let mut got = self.inner.get_opts(location, options).await?;
        let path = self.inner.path_to_filesystem(location)?;
        got.attributes =
            blocking(move || read_xattrs(&path).map_err(|e| io_error(&path, e))).await?;
        Ok(got)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_is_renamed_into_a_free_name_only() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second, name) = (
            dir.path().join("a#1"),
            dir.path().join("a#2"),
            dir.path().join("a"),
        );
        std::fs::write(&first, b"first").unwrap();
        std::fs::write(&second, b"second").unwrap();
        rename_new(&first, &name).unwrap();
        let taken = rename_new(&second, &name).unwrap_err();
        assert_eq!(taken.kind(), ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&name).unwrap(), b"first");
        assert!(second.exists() && !first.exists());
    }

    #[tokio::test]
    async fn of_two_creates_of_one_file_one_succeeds_and_a_create_returns_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let location = Path::from("x/y");
        let create = |body: &'static [u8]| {
            let options = PutOptions::from(PutMode::Create);
            store.put_opts(&location, PutPayload::from_static(body), options)
        };
        let (one, two) = tokio::join!(create(b"one"), create(b"two"));
        let (won, lost) = match one {
            Ok(put) => (put, two.unwrap_err()),
            Err(lost) => (two.unwrap(), lost),
        };
        assert!(
            matches!(lost, object_store::Error::AlreadyExists { .. }),
            "{lost}"
        );
        let meta = store.head(&location).await.unwrap();
        assert_eq!(won.e_tag, meta.e_tag);
        let staging: Vec<_> = std::fs::read_dir(dir.path().join("x")).unwrap().collect();
        assert_eq!(
            staging.len(),
            1,
            "the loser's staging file is gone: {staging:?}"
        );
    }
}
