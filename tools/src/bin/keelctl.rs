//! `keelctl`: Keel's admin CLI. See `keelctl --help`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
#[allow(unsafe_code)]
async fn main() -> ExitCode {
    // Output piped into `head` ends quietly when the reader goes away.
    // SAFETY: SIG_DFL installs no handler, so no signal handler runs our code;
    // changing a disposition is safe while other threads run.
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
    let cli = keel_tools::keelctl::Cli::parse();
    match keel_tools::keelctl::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keelctl: {error:#}");
            ExitCode::FAILURE
        }
    }
}
