//! The `corral` command: argument parsing and every subcommand. The
//! binary (`src/main.rs`) only calls [`main`].

use std::process::ExitCode;

use clap::Parser;

mod auth;
#[cfg(feature = "bench")]
mod bench;
mod cli;
mod config;
mod serve;
mod units;

/// Parses the command line and runs its subcommand.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(*args),
        cli::Command::Token(args) => auth::token(&args.tenant),
        #[cfg(feature = "bench")]
        cli::Command::Bench(command) => bench::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("corral: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Entry points for the fuzz targets in `fuzz/`: the parsers of what a user
/// or a client hands corral, outside the HTTP path. Not an API.
#[doc(hidden)]
pub mod fuzz {
    pub use crate::config::fuzz_config as config;

    /// The auth file's text, parsed and checked as `--auth` does.
    ///
    /// # Errors
    ///
    /// The message `corral serve` would print.
    pub fn auth_file(text: &str) -> Result<(), String> {
        crate::auth::parse(text)
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    }

    /// A size as flags and config files take it (`64KiB`); with the
    /// invariant that what it prints parses back to the same.
    pub fn byte_size(text: &str) -> Option<u64> {
        let size: crate::units::ByteSize = text.parse().ok()?;
        let again: crate::units::ByteSize =
            size.to_string().parse().expect("a printed size parses");
        assert_eq!(again, size, "{text:?} printed as {size}");
        Some(size.0)
    }

    /// A duration as flags and config files take it (`30s`); with the same
    /// invariant.
    pub fn span(text: &str) -> Option<std::time::Duration> {
        let span: crate::units::Span = text.parse().ok()?;
        let again: crate::units::Span =
            span.to_string().parse().expect("a printed duration parses");
        assert_eq!(again, span, "{text:?} printed as {span}");
        Some(span.0)
    }
}
