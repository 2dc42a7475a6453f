//! `fourm`: the command line.

use std::process::ExitCode;

// Training allocates and frees large buffers every step; mimalloc keeps them instead of paying
// page faults on every step as glibc does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    fourm::main()
}
