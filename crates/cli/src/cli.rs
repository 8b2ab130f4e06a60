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
    Serve(Box<ServeArgs>),

    /// Measure corral: scenarios and load generators.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Run the scheduler's scenarios (knee, step, throttle, fairness,
    /// cancellation) against a simulated backend in virtual time, and print
    /// every figure with its target. Takes a few seconds; no network.
    Sim(SimArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct SimArgs {
    /// Seeds to run each scenario with.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub(crate) seeds: Vec<u64>,
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
