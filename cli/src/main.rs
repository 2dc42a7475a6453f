//! `fourm`: the command line.

use std::process::ExitCode;

use clap::Parser;

// Training allocates and frees large buffers every step; mimalloc keeps them instead of paying
// page faults on every step as glibc does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = fourm::Cli::parse();
    match fourm::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
