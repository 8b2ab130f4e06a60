//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Overrides;

/// corral: an upload server that stays up when everyone uploads at once.
///
/// It accepts files over HTTP and stores them in object storage (a local
/// directory by default), with one global limit on calls to the storage
/// backend.
#[derive(Debug, Parser)]
#[command(name = "corral", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the upload server.
    ///
    /// Every option can also be set by its CORRAL_* environment variable or
    /// in the TOML file given with --config (keys are the option names with
    /// '_' for '-'). A flag beats the environment, which beats the file,
    /// which beats the default.
    #[command(after_long_help = LOG_LEVEL)]
    Serve(Box<ServeArgs>),

    /// Make a bearer token for a tenant, and print it with the entry to add
    /// to the auth file (--auth). The file keeps only the token's SHA-256.
    Token(TokenArgs),

    /// Upload files and directory trees to a corral server.
    ///
    /// Small files go in batches (multipart POST /api/files, up to
    /// --batch-files files and --batch-size bytes a request); files of
    /// --large or more go resumably over tus 1.0 (/api/uploads, in chunks
    /// of --chunk-size). At most --parallel requests are in flight; 429
    /// and 503 are retried after Retry-After, up to --retries times. Every
    /// stored file's SHA-256, as the server computed it, is checked
    /// against the client's own.
    ///
    /// A journal (see --state) records each file stored and each
    /// resumable upload started, by path, size and modification time: run
    /// the same command again after an interruption or a failure, and it
    /// sends only what is not stored yet, resuming cut-off uploads from
    /// the server's offset.
    ///
    /// Prints one line per stored file on stdout (key, size, SHA-256,
    /// path, tab-separated; with --json, one JSON object per line and a
    /// last {"summary":…}), progress bars on stderr when it is a terminal,
    /// and a summary; exits non-zero if any file failed, listing them.
    #[command(after_long_help = CLIENT_EXAMPLES)]
    Upload(Box<crate::client::UploadArgs>),

    /// List the tenant's files: key, size and time, tab-separated (or
    /// JSON lines with --json), every page of the listing.
    Ls(crate::client::LsArgs),

    /// Download files by key, with progress; each file's length and
    /// SHA-256 are checked against the server's before it is kept.
    Get(crate::client::GetArgs),

    /// Measure corral: scenarios and load generators. Only in a build
    /// with the `bench` feature (`--features bench`).
    #[cfg(feature = "bench")]
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

/// The examples under `corral upload --help`.
const CLIENT_EXAMPLES: &str = "Examples:
  corral upload photos/ notes.txt --server http://127.0.0.1:8080
  CORRAL_URL=http://corral:8080 CORRAL_TOKEN=... corral upload --prefix scans/2026 scans/
  corral upload big.iso --json | jq -r .key";

/// Where `corral serve --help` says how to choose the log level.
const LOG_LEVEL: &str = "Logs: CORRAL_LOG (or RUST_LOG) sets their level: error, warn, info, \
debug, trace or off (info when unset), or MODULE=LEVEL such as corral_server=debug.";

#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// The tenant the token acts for: the root of its keys (letters,
    /// digits, '.', '-', '_').
    pub(crate) tenant: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// A TOML file of settings, such as `listen = "127.0.0.1:9000"`.
    #[arg(long, env = "CORRAL_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) overrides: Overrides,

    /// Print the settings that would be used, as TOML, and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
}
