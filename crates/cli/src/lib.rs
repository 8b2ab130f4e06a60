//! The `corral` command: argument parsing and every subcommand. The
//! binary (`src/main.rs`) only calls [`main`].

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};

mod auth;
#[cfg(feature = "bench")]
mod bench;
mod cli;
mod client;
mod config;
mod nofile;
mod serve;
mod units;

/// Parses the command line and runs its subcommand.
pub fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => explained(error, std::env::args_os().skip(1)).exit(),
    };
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(*args),
        cli::Command::Token(args) => auth::token(&args.tenant),
        cli::Command::Upload(args) => client::upload(&args),
        cli::Command::Ls(args) => client::ls(&args),
        cli::Command::Get(args) => client::get(&args),
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

/// `error` made to point at what the user wrote: a bad value that came
/// from a `CORRAL_*` variable names the variable, not a flag the user
/// never typed; a flag other servers have (`--port`) names ours.
fn explained(
    mut error: clap::Error,
    argv: impl Iterator<Item = std::ffi::OsString>,
) -> clap::Error {
    let Some(ContextValue::String(invalid)) = error.get(ContextKind::InvalidArg).cloned() else {
        return error;
    };
    // `--max-files <N>` -> `--max-files`
    let flag = invalid.split([' ', '=']).next().unwrap_or_default();
    let tip = match error.kind() {
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            let command = cli::Cli::command();
            let Some(arg) = command
                .get_subcommands()
                .flat_map(|sub| sub.get_arguments())
                .find(|arg| {
                    arg.get_long()
                        .is_some_and(|long| flag == format!("--{long}"))
                })
            else {
                return error;
            };
            let names: Vec<String> = (arg.get_long().into_iter())
                .chain(arg.get_all_aliases().unwrap_or_default())
                .map(|name| format!("--{name}"))
                .collect();
            let typed = argv.filter_map(|a| a.into_string().ok()).any(|a| {
                names
                    .iter()
                    .any(|name| a == *name || a.starts_with(&format!("{name}=")))
            });
            let Some(var) = arg.get_env().and_then(|var| var.to_str()) else {
                return error;
            };
            if typed || std::env::var_os(var).is_none() {
                return error;
            }
            error.insert(
                ContextKind::InvalidArg,
                ContextValue::String(var.to_owned()),
            );
            format!("{var} is set in the environment; it stands for {flag}")
        }
        ErrorKind::UnknownArgument
            if ["--port", "--host", "--bind", "--address", "--addr"].contains(&flag) =>
        {
            "the address and the port go together: --listen 127.0.0.1:8080 (or \
             --listen 8080, --listen 0.0.0.0:8080)"
                .to_owned()
        }
        _ => return error,
    };
    error.insert(
        ContextKind::Suggested,
        ContextValue::StyledStrs(vec![tip.into()]),
    );
    error
}

/// `error: cause: cause`, each cause once (see [`corral_store::error_chain`]).
fn message(error: &anyhow::Error) -> String {
    corral_store::error_chain(error.as_ref())
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
