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

    /// Measure corral: scenarios and load generators. Only in a build
    /// with the `bench` feature (`--features bench`).
    #[cfg(feature = "bench")]
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

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
