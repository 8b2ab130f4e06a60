//! corral's storage layer.
//!
//! [`Store`] wraps an [`object_store::ObjectStore`] (local directory, S3,
//! GCS, Azure, memory) and adds what an upload server needs on top:
//! streaming writes that never hold a whole file in memory ([`Upload`]), a
//! SHA-256 computed on the way, metadata kept next to each object, sorted
//! pagination, and cleanup of anything a failed write leaves behind. Every
//! backend call passes through the process-wide [`corral_sched::Scheduler`].
//!
//! Asynchronous uploads go through a local [`Spool`] and its journal first,
//! so that they survive the process.
//!
//! Keys are validated [`Key`]s; file names sent by clients become key segments
//! only through [`sanitize_file_name`].

// The layers, from the bottom up (see `store.rs`).
mod error;
pub mod key;
mod meta;

mod backend;

mod client;

pub mod batch;
pub mod hot;
mod multipart;
mod orphan;
mod read;
pub mod resumable;
pub mod upload;

mod store;

pub mod spool;

pub use backend::{AzureOptions, GcsOptions, S3Options, is_local};
pub use batch::Intent;
pub use error::{Error, Result, error_chain, sources};
pub use hot::ByteStream;
pub use key::{Key, MAX_KEY_BYTES, MAX_SEGMENT_BYTES, sanitize_file_name};
pub use meta::ObjectInfo;
pub use object_store::GetRange;
pub use orphan::Swept;
pub use read::Reading;
pub use resumable::{Resuming, UploadRecord, UploadStatus};
pub use spool::{FileState, Job, JobFile, JobState, JobWriter, Spool, SpoolConfig, SpoolError};
pub use store::{ListPage, MAX_PARTS, Store, StoreConfig};
pub use upload::{BufferGauge, Committing, StoredObject, Upload};
