//! `keelctl config check|default`: a config file checked by the binary that
//! will read it (`--check-config`: the same parsing, environment variables
//! and validation), and each binary's complete commented example.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(super) enum ConfigCommand {
    /// Checks a config file as the binary would read it, KEEL_* environment
    /// variables included: prints the effective config (secrets hidden), or
    /// what is wrong (file, line, the closest valid key). Exits 1 if invalid.
    Check { kind: Kind, file: PathBuf },
    /// Prints a complete, commented example config (zone a of deploy/config).
    Default { kind: Kind },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(super) enum Kind {
    Controller,
    Wal,
    Broker,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Controller => "keel-controller",
            Kind::Wal => "keel-wal",
            Kind::Broker => "keel-broker",
        }
    }
}

pub(super) fn run(command: ConfigCommand) -> anyhow::Result<()> {
    let (kind, args): (Kind, Vec<std::ffi::OsString>) = match &command {
        ConfigCommand::Check { kind, file } => (*kind, vec!["--config".into(), file.into(), "--check-config".into()]),
        ConfigCommand::Default { kind } => (*kind, vec!["--print-default-config".into()]),
    };
    let binary = crate::launcher::find_binary(kind.binary())?;
    let status = std::process::Command::new(&binary).args(&args).status()?;
    match (&command, status.code()) {
        (_, Some(0)) => Ok(()),
        (ConfigCommand::Check { file, .. }, Some(2)) => {
            anyhow::bail!("{} is not a valid {} config (see above)", file.display(), kind.binary())
        }
        _ => anyhow::bail!("{} ended with {status}", binary.display()),
    }
}
