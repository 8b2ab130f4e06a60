//! The `corral` command: parses arguments and runs one subcommand.

use std::process::ExitCode;

use clap::Parser;

mod auth;
mod bench;
mod cli;
mod config;
mod serve;
mod units;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(*args),
        cli::Command::Token(args) => auth::token(&args.tenant),
        cli::Command::Bench(cli::BenchCommand::Sim(args)) => bench::sim(&args),
        cli::Command::Bench(cli::BenchCommand::Herd(args)) => bench::herd::run(&args),
        cli::Command::Bench(cli::BenchCommand::Front(args)) => bench::front::run(&args),
        cli::Command::Bench(cli::BenchCommand::Compare(args)) => bench::compare::compare(&args),
        cli::Command::Bench(cli::BenchCommand::Sweep(args)) => bench::compare::sweep(&args),
        cli::Command::Bench(cli::BenchCommand::Ingest(args)) => bench::compare::ingest(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("corral: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
