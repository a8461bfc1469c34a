//! `keelctl`: Keel's admin CLI. See `keelctl --help`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = keel_tools::keelctl::Cli::parse();
    match keel_tools::keelctl::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keelctl: {error:#}");
            ExitCode::FAILURE
        }
    }
}
