//! `fourm`: the command line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = fourm::Cli::parse();
    fourm::init_logging(cli.log_json);
    match fourm::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
