//! Why a batch cannot be spooled or the spool fails: [`SpoolError`], the
//! one error of the spool. Callers branch on its variants (a full spool or
//! tenant is a refusal to retry later, the rest a failure), so it sits at
//! the bottom, where every other part of the spool can return it.

use std::path::{Path, PathBuf};

/// Why a batch cannot be spooled, or the spool cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool holds its budget of bytes not yet stored.
    #[error("the spool is full ({used} of {max} bytes wait to be stored)")]
    Full {
        /// Bytes waiting now.
        used: u64,
        /// The budget.
        max: u64,
    },
    /// The tenant's batches in the spool hold its budget.
    #[error("tenant {tenant:?} has {used} of its {max} bytes waiting in the spool")]
    TenantFull {
        /// The tenant.
        tenant: String,
        /// Its bytes waiting now.
        used: u64,
        /// Its budget.
        max: u64,
    },
    /// The local disk failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the journal: another corral using the same
    /// spool directory.
    #[error("spool journal {}: in use by another process (its lock is held)", path.display())]
    InUse {
        /// The journal's file.
        path: PathBuf,
    },
    /// The journal failed.
    #[error("spool journal: {0}")]
    Journal(#[from] redb::Error),
    /// A job in the journal cannot be decoded (written by another version
    /// of corral?).
    #[error("spool journal: job {id} is unreadable: {reason}")]
    Unreadable {
        /// The job's id.
        id: String,
        /// Why.
        reason: String,
    },
}

/// Makes an I/O error on `path` a [`SpoolError::Io`].
pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}
