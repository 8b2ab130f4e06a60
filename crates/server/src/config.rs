//! [`ServerConfig`]: the limits the HTTP layer enforces.

use std::time::Duration;

/// The limits the HTTP layer enforces on each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest file in a batch, in bytes.
    pub max_file_size: u64,
    /// Largest request body of a batch, in bytes.
    pub max_batch_size: u64,
    /// Most files in one batch.
    pub max_files: usize,
    /// How long a client may send nothing while its body is being read
    /// before it gets `408`.
    pub body_timeout: Duration,
    /// The memory all uploads in progress may buffer together. Each upload
    /// reserves what it may need (`max(multipart_threshold, part_size)`
    /// plus a chunk, or less if its `Content-Length` is smaller) before its
    /// body is read; when the reserve is spent, new uploads wait for it.
    pub upload_memory: u64,
    /// Most uploads that may wait for upload memory; beyond, `429`.
    pub upload_queue: usize,
    /// Longest an upload waits for upload memory before it gets `429`.
    /// Shorter than the time clients give a stalled upload: reqwest's
    /// default `TCP_USER_TIMEOUT` and Uppy's progress timeout are both
    /// 30 s, after which the client sees a dead connection, not a `429`.
    pub upload_wait: Duration,
    /// Largest resumable upload (`/api/uploads`), in bytes: `Tus-Max-Size`.
    pub tus_max_size: u64,
    /// Most resumable uploads a tenant may have open on this instance;
    /// beyond, a creation gets `429 tenant_busy`.
    pub max_open_uploads: usize,
    /// How long requests in progress may run on after a shutdown signal
    /// before their work is cancelled.
    pub shutdown_grace: Duration,
    /// Most connections served at once, idle keep-alive connections
    /// included; a connection beyond is answered `503
    /// too_many_connections` and closed (see [`crate::run`]).
    pub max_connections: usize,
}

/// The default of [`ServerConfig::max_connections`]: 10,000 connections
/// held at once (the figure corral is measured against) fit with room to
/// spare, and at about 13 KiB each (measured by `corral bench
/// connections`) idle connections cost at most about 210 MiB. It is well
/// below the hard open-files limit services get (524,288 under systemd),
/// to which `corral serve` raises its own soft limit.
const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_file_size: 5 << 30,
            max_batch_size: 20 << 30,
            max_files: 1000,
            tus_max_size: 5 << 30,
            max_open_uploads: 1000,
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            upload_memory: 512 << 20,
            upload_queue: 1000,
            upload_wait: Duration::from_secs(20),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}
