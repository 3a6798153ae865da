//! The `mooring` binary.

mod cli;
mod serve;
mod token;

use clap::Parser;

/// Requests allocate and free many buffers across worker threads; with the system allocator,
/// malloc, its heap consolidation and the page faults of fresh heap took about a tenth of a
/// durable append's CPU in the profile. mimalloc cut CPU per append by 5-10% in four A/B pairs
/// (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve(args) => serve::run(*args),
        cli::Command::Token(args) => token::run(args),
    }
}
