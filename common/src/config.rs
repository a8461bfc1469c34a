//! Loading TOML config files. Each service defines a raw struct with
//! `#[serde(default, deny_unknown_fields)]`; this module reads it and reports
//! errors with the file name and the line.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;

/// Reads and parses a TOML file into `T`. Unknown keys are errors.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read config file {}", path.display()))?;
    parse_toml(&text).with_context(|| format!("parse config file {}", path.display()))
}

/// Parses TOML text into `T`; the error names the line and column.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
}
