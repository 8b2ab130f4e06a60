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
            eprintln!("corral: error: {}", message(&error));
            ExitCode::FAILURE
        }
    }
}

/// `error: cause: cause`, each cause once. Many errors already say their
/// source in their own message, and printing the chain as it is would
/// repeat it (`cannot open the spool: spool journal: Database already
/// open: Database already open`).
fn message(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that says its source in its own message too.
    #[derive(Debug)]
    struct Says(std::io::Error);

    impl std::fmt::Display for Says {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "spool journal: {}", self.0)
        }
    }

    impl std::error::Error for Says {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::other("Database already open");
        let error = anyhow::Error::new(Says(io)).context("cannot open the spool ./corral-spool");
        assert_eq!(
            message(&error),
            "cannot open the spool ./corral-spool: spool journal: Database already open"
        );
        let plain = anyhow::anyhow!("outer").context("top");
        assert_eq!(message(&plain), "top: outer");
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
