//! The upload journal: what earlier runs of `corral upload` stored or
//! started, so that a rerun sends nothing twice.
//!
//! A JSON-lines file, one line appended (and flushed) per event: a file
//! stored (its key and SHA-256), or a resumable upload created (its URL).
//! A source file is known by its absolute path, size and modification
//! time; a file changed since is sent again. The last line about a file
//! wins. One journal per server, tenant (token) and prefix, so the same
//! files sent elsewhere are sent again.
//!
//! By default journals live in the user's cache directory
//! (`$XDG_CACHE_HOME/corral/upload`, else `~/.cache/corral/upload`), else
//! in `.corral-upload/` in the working directory; `--state DIR` chooses.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::walk::Source;

/// What the journal says of one source file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) path: PathBuf,
    pub(super) size: u64,
    pub(super) mtime_ns: u64,
    #[serde(flatten)]
    pub(super) state: State,
}

/// How far a file got.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub(super) enum State {
    /// Stored under `key`, with this SHA-256 (checked).
    Stored { key: String, sha256: String },
    /// A resumable upload was created at `upload` (its URL); its offset is
    /// the server's (`HEAD`), `offset` is the last one this client saw.
    Started { upload: String, offset: u64 },
}

/// The journal of one server, tenant and prefix: read at the start,
/// appended to as files are stored.
pub(super) struct Journal {
    path: PathBuf,
    file: File,
    entries: HashMap<PathBuf, Entry>,
}

impl Journal {
    /// Opens (creating) the journal in `dir` for uploads to `server` with
    /// `token` under `prefix`, and reads what it holds. A line that does
    /// not parse (a run killed mid-write) is skipped.
    ///
    /// # Errors
    ///
    /// The directory or the file cannot be created or read.
    pub(super) fn open(
        dir: &Path,
        server: &str,
        token: Option<&str>,
        prefix: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        let mut id = Sha256::new();
        // The token's own hash, so the journal's name says nothing of it.
        let token = Sha256::digest(token.unwrap_or_default());
        for part in [server.as_bytes(), &token, prefix.as_bytes()] {
            id.update((part.len() as u64).to_le_bytes());
            id.update(part);
        }
        let name = format!("upload-{}.jsonl", &hex::encode(id.finalize())[..16]);
        let path = dir.join(name);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open the journal {}", path.display()))?;
        let mut entries = HashMap::new();
        let mut torn = false;
        for line in BufReader::new(&file).split(b'\n') {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            match serde_json::from_slice::<Entry>(&line) {
                Ok(entry) => {
                    entries.insert(entry.path.clone(), entry);
                    torn = false;
                }
                Err(_) => torn = !line.is_empty(),
            }
        }
        if torn {
            // End the torn line, so the next one is whole.
            file.write_all(b"\n")
                .with_context(|| format!("cannot write the journal {}", path.display()))?;
        }
        Ok(Self {
            path,
            file,
            entries,
        })
    }

    /// The journal's file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// What the journal says of `source`, if it is the same file (same
    /// size and modification time).
    pub(super) fn get(&self, source: &Source) -> Option<&State> {
        self.entries
            .get(&source.path)
            .filter(|e| e.size == source.size && e.mtime_ns == source.mtime_ns)
            .map(|e| &e.state)
    }

    /// Records `state` for `source`, appended and flushed at once.
    ///
    /// # Errors
    ///
    /// The write failed.
    pub(super) fn record(&mut self, source: &Source, state: State) -> anyhow::Result<()> {
        let entry = Entry {
            path: source.path.clone(),
            size: source.size,
            mtime_ns: source.mtime_ns,
            state,
        };
        let mut line = serde_json::to_string(&entry)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .with_context(|| format!("cannot write the journal {}", self.path.display()))?;
        self.entries.insert(entry.path.clone(), entry);
        Ok(())
    }
}

/// Where journals go when `--state` is not given.
pub(super) fn default_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        });
    match cache {
        Some(cache) => cache.join("corral").join("upload"),
        None => PathBuf::from(".corral-upload"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(path: &str, size: u64) -> Source {
        Source {
            path: PathBuf::from(path),
            size,
            mtime_ns: 7,
        }
    }

    #[test]
    fn the_last_line_about_a_file_wins_and_a_changed_file_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), "http://a/", Some("t"), "").unwrap();
        let big = source("/x/big", 100);
        let started = State::Started {
            upload: "http://a/api/uploads/1".into(),
            offset: 0,
        };
        journal.record(&big, started).unwrap();
        let stored = State::Stored {
            key: "k".into(),
            sha256: "s".into(),
        };
        journal.record(&big, stored.clone()).unwrap();
        // A torn last line, as a killed run leaves.
        std::fs::OpenOptions::new()
            .append(true)
            .open(journal.path())
            .unwrap()
            .write_all(b"{\"path\":\"/x/sm")
            .unwrap();

        let again = Journal::open(dir.path(), "http://a/", Some("t"), "").unwrap();
        assert_eq!(again.get(&big), Some(&stored));
        assert_eq!(again.get(&source("/x/big", 101)), None);
        // A line written after the torn one reads back whole.
        let mut again = again;
        let small = source("/x/small", 1);
        again.record(&small, stored.clone()).unwrap();
        let third = Journal::open(dir.path(), "http://a/", Some("t"), "").unwrap();
        assert_eq!(third.get(&small), Some(&stored));
        assert_eq!(third.get(&big), Some(&stored));
        let other = Journal::open(dir.path(), "http://a/", Some("u"), "").unwrap();
        assert_ne!(other.path(), again.path());
        assert_eq!(other.get(&big), None);
    }
}
