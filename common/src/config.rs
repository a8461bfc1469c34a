//! Loading TOML config files. Each service defines a raw struct with
//! `#[serde(default, deny_unknown_fields)]`; this module reads it and reports
//! errors with the file name and the line.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;

/// Reads and parses a TOML file into `T`. Unknown keys are errors.
/// `--check-config`: prints the effective config (its `Debug` hides
/// secrets) and exit code 0, or what is wrong and exit code 2.
pub fn check<T: std::fmt::Debug>(effective: anyhow::Result<T>) -> std::process::ExitCode {
    match effective {
        Ok(config) => {
            println!("{config:#?}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("invalid config: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

pub fn load_toml<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read config file {}", path.display()))?;
    parse_toml(&text).with_context(|| format!("parse config file {}", path.display()))
}

/// Parses TOML text into `T`; the error names the line and column, and
/// for an unknown key the closest valid one.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    toml::from_str(text).map_err(|e| {
        let message = e.to_string().trim_end().to_owned();
        match closest_key(&message) {
            Some(key) => anyhow::anyhow!("{message}\ndid you mean `{key}`?"),
            None => anyhow::anyhow!("{message}"),
        }
    })
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" message, the
/// expected key nearest to `x` (by edit distance), if any is near.
fn closest_key(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (unknown, expected) = rest.split_once('`')?;
    let candidates = expected.split('`').skip(1).step_by(2);
    let (distance, key) = candidates.map(|key| (edit_distance(unknown, key), key)).min()?;
    (distance <= unknown.len().max(3) / 2).then(|| key.to_owned())
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Example {
        advertise: Option<String>,
        data_dir: Option<String>,
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_line_and_the_closest_valid_key() {
        let error = parse_toml::<Example>("data_dir = \"/d\"\nadvertised = \"h:1\"\n").unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(error.ends_with("did you mean `advertise`?"), "{error}");
        let error = parse_toml::<Example>("zzzzzzzz = 1\n").unwrap_err().to_string();
        assert!(!error.contains("did you mean"), "nothing is close: {error}");
        assert_eq!(edit_distance("data_dri", "data_dir"), 2);
    }
}
