//! # fourm-process
//!
//! What every fourm program (coordinator, worker, the `fourm` command) does the same way:
//!
//! - [`config`]: TOML configuration files with unknown keys refused, and one [`ConfigError`] that
//!   names the file or the key. Environment variables and flags are layered over the file by clap
//!   (`#[arg(long, env = "FOURM_…")]`), so the precedence file < environment < flags is written
//!   once, in each program's `Args`.
//! - [`ProcessFlags`]: the flags every long-running program takes (`--log-json`,
//!   `--check-config`).
//! - [`init_logging`]: `tracing` to stderr, human-readable or JSON lines.
//! - [`shutdown_signal`]: resolves on SIGINT or SIGTERM.

pub mod config;
mod flags;
mod logging;
mod signal;

pub use config::{ConfigError, load_toml, overlay, parse_toml};
pub use flags::ProcessFlags;
pub use logging::init_logging;
pub use signal::shutdown_signal;
