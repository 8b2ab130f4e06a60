//! `corral ls`: the tenant's files, every page of the listing.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::api::{RetryConfig, Server};
use super::{ServerArgs, runtime};

/// `corral ls`.
#[derive(Debug, clap::Args)]
pub(crate) struct LsArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,

    /// List only keys that start with this (a plain string prefix).
    #[arg(long, default_value = "", value_name = "PREFIX")]
    pub(crate) prefix: String,
}

/// One page of `GET /api/files`.
#[derive(Deserialize)]
struct Page {
    files: Vec<Listed>,
    next_cursor: Option<String>,
}

/// A listed file, as the server says it and as `--json` prints it.
#[derive(Deserialize, Serialize)]
struct Listed {
    key: String,
    size: u64,
    last_modified: String,
}

/// Files asked for per page.
const PAGE: usize = 1000;

/// Runs `corral ls`: prints `key<TAB>size<TAB>last_modified` per file, or
/// with `--json` one object per line.
pub(crate) fn run(args: &LsArgs) -> anyhow::Result<()> {
    let server = Server::new(&args.server.server, args.server.token.clone(), RETRY)?;
    runtime()?.block_on(async {
        server.check_access().await?;
        let mut cursor: Option<String> = None;
        loop {
            let mut url = server.url("api/files")?;
            url.query_pairs_mut()
                .append_pair("limit", &PAGE.to_string());
            if !args.prefix.is_empty() {
                url.query_pairs_mut().append_pair("prefix", &args.prefix);
            }
            if let Some(cursor) = &cursor {
                url.query_pairs_mut().append_pair("cursor", cursor);
            }
            let response = server
                .send_ok(|| Ok(server.request(Method::GET, url.clone())))
                .await?;
            let page: Page = serde_json::from_slice(&response.bytes().await?)?;
            for file in &page.files {
                if args.server.json {
                    println!("{}", serde_json::to_string(file)?);
                } else {
                    println!("{}\t{}\t{}", file.key, file.size, file.last_modified);
                }
            }
            match page.next_cursor {
                Some(next) if !page.files.is_empty() => cursor = Some(next),
                _ => return Ok(()),
            }
        }
    })
}

/// The retries of `ls` and `get`: a few, waits up to 30 s.
pub(super) const RETRY: RetryConfig = RetryConfig {
    retries: 5,
    max_wait: std::time::Duration::from_secs(30),
};
