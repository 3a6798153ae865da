//! The `mooring` binary.

mod cli;
mod serve;
mod token;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve(args) => serve::run(*args),
        cli::Command::Token(args) => token::run(args),
    }
}
