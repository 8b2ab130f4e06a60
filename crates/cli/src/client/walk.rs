//! The files to upload: each path given, and every regular file under a
//! directory given, as metadata only (path, size, modification time),
//! never their bytes.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::Context as _;

/// A file to upload, as found on disk.
#[derive(Debug, Clone)]
pub(super) struct Source {
    /// Absolute, so that a journal written from one directory serves a
    /// rerun from another.
    pub(super) path: PathBuf,
    pub(super) size: u64,
    /// Nanoseconds since the epoch: with the size, what says the file is
    /// the one an earlier run sent.
    pub(super) mtime_ns: u64,
}

impl Source {
    /// The name the server is given: the file's own name.
    pub(super) fn name(&self) -> String {
        self.path
            .file_name()
            .map_or_else(|| "file".to_owned(), |n| n.to_string_lossy().into_owned())
    }
}

/// Every regular file at or under `paths`, in path order, each once.
/// Symbolic links to files are followed; links to directories are not,
/// so a link cannot make the walk loop.
///
/// # Errors
///
/// A path that does not exist or cannot be read, named.
pub(super) fn walk(paths: &[PathBuf]) -> anyhow::Result<Vec<Source>> {
    let mut found = Vec::new();
    for path in paths {
        let absolute =
            std::path::absolute(path).with_context(|| format!("cannot read {}", path.display()))?;
        let meta = std::fs::metadata(&absolute)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            walk_dir(&absolute, &mut found)?;
        } else if meta.is_file() {
            found.push(source(absolute, &meta)?);
        } else {
            anyhow::bail!("{} is not a file or a directory", path.display());
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found.dedup_by(|a, b| a.path == b.path);
    Ok(found)
}

fn walk_dir(dir: &Path, found: &mut Vec<Source>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if kind.is_dir() {
            walk_dir(&path, found)?;
        } else if kind.is_file() || kind.is_symlink() {
            // A dangling link, or one to a directory, is skipped.
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => found.push(source(path, &meta)?),
                _ => {}
            }
        }
    }
    Ok(())
}

fn source(path: PathBuf, meta: &std::fs::Metadata) -> anyhow::Result<Source> {
    let modified = meta
        .modified()
        .with_context(|| format!("cannot read the time of {}", path.display()))?;
    let mtime_ns = modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Ok(Source {
        path,
        size: meta.len(),
        mtime_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_walked_in_order_and_a_missing_path_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/two.txt"), "22").unwrap();
        std::fs::write(dir.path().join("a/one.txt"), "1").unwrap();
        std::fs::write(dir.path().join("z.txt"), "zzz").unwrap();
        let found = walk(&[dir.path().to_owned(), dir.path().join("z.txt")]).unwrap();
        let names: Vec<_> = found.iter().map(|s| (s.name(), s.size)).collect();
        assert_eq!(
            names,
            [
                ("two.txt".to_owned(), 2),
                ("one.txt".to_owned(), 1),
                ("z.txt".to_owned(), 3)
            ]
        );
        let error = walk(&[dir.path().join("missing")]).unwrap_err();
        assert!(
            format!("{error:#}").starts_with(&format!(
                "cannot read {}",
                dir.path().join("missing").display()
            )),
            "{error:#}"
        );
    }
}
