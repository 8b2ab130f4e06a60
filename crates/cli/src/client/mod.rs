//! The command-line client of corral's HTTP API: `corral upload`,
//! `corral ls` and `corral get`.
//!
//! - [`api`]: one server (its URL and token), the requests it takes, and
//!   the one retry rule: `429` and `503` are waited out, `Retry-After`
//!   honoured, a bounded number of times; anything else is the answer.
//! - [`walk`]: the files under the paths given, as metadata only.
//! - [`journal`]: what an earlier run stored or started, so a rerun sends
//!   nothing twice and resumes what was cut off.
//! - [`body`]: a file streamed from disk into a request body, hashed on
//!   the way.
//! - [`batch`]: small files, many to a `multipart/form-data` request to
//!   `/api/files`.
//! - [`tus`]: large files over tus 1.0 at `/api/uploads`, resumable.
//! - [`progress`]: the bars on a terminal, and the lines (plain or JSON)
//!   that report each file.
//! - [`upload`], [`list`], [`get`]: the three commands.

mod api;
mod batch;
mod body;
mod get;
mod journal;
mod list;
mod progress;
mod tus;
mod upload;
mod walk;

pub(crate) use get::{GetArgs, run as get};
pub(crate) use list::{LsArgs, run as ls};
pub(crate) use upload::{UploadArgs, run as upload};

/// What every command takes: the server and the token.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServerArgs {
    /// The corral server's base URL (http only).
    #[arg(
        long,
        visible_aliases = ["to", "from"],
        env = "CORRAL_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub(crate) server: String,

    /// A bearer token for a server run with --auth (see `corral token`).
    #[arg(
        long,
        env = "CORRAL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,

    /// Print one JSON object per line instead of plain lines.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A runtime for one command.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
