//! `fourm-test-node`: the `fourm` program, built by this package for its multi-process tests.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    fourm::main()
}
