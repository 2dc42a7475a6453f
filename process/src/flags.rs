//! Flags every long-running fourm program takes.

/// `--log-json` and `--check-config`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProcessFlags {
    /// Log as JSON lines (for Kubernetes) instead of text.
    #[arg(long, env = "FOURM_LOG_JSON")]
    pub log_json: bool,
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
}
