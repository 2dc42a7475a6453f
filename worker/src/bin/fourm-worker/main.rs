//! `fourm-worker`: parses flags, builds the configuration, trains until the job ends.

use clap::Parser;
use fourm_worker::cli::{Args, main as train};

// Training allocates and frees large buffers every step; mimalloc keeps them instead of paying
// page faults on every step as glibc does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fourm_model::allocator::keep_freed_memory();
    let args = Args::parse();
    fourm_process::init_logging(args.process.log_json, "info");
    train(args).await
}
