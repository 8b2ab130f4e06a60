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
    /// How long requests in progress may run on after a shutdown signal
    /// before their work is cancelled.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_file_size: 5 << 30,
            max_batch_size: 20 << 30,
            max_files: 1000,
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}
