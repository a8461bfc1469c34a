//! The node's incarnation id: random, written when its data directory is
//! created. A node whose directory was wiped gets a new one and registers as
//! a new node; it never answers for its former self (DESIGN §5).
//!
//! File `incarnation`: `keel-wal-incarnation v1 <32 hex digits> <crc32c hex>\n`,
//! written to a temporary file, fsynced, renamed, and the directory fsynced.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

const FILE: &str = "incarnation";
const PREFIX: &str = "keel-wal-incarnation v1";

/// Reads the directory's incarnation id, creating one for a fresh directory.
/// Returns the id and whether it was just created.
pub(crate) fn load_or_create(dir: &Path) -> anyhow::Result<(String, bool)> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((parse(&text).with_context(|| format!("read {}", path.display()))?, false)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let id = format!("{:032x}", rand::random::<u128>());
            let line = format!("{PREFIX} {id} {:08x}\n", crc32c::crc32c(id.as_bytes()));
            let staging = dir.join(format!("{FILE}.new"));
            let mut file = std::fs::File::create(&staging).with_context(|| format!("create {}", staging.display()))?;
            file.write_all(line.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&staging, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok((id, true))
        }
        Err(error) => Err(error).with_context(|| format!("read {}", path.display())),
    }
}

fn parse(text: &str) -> anyhow::Result<String> {
    let rest = text.strip_prefix(PREFIX).context("not an incarnation file")?;
    let mut parts = rest.split_whitespace();
    let (Some(id), Some(crc), None) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!("malformed incarnation file");
    };
    let crc = u32::from_str_radix(crc, 16).context("malformed incarnation checksum")?;
    anyhow::ensure!(id.len() == 32 && crc == crc32c::crc32c(id.as_bytes()), "incarnation file is damaged");
    Ok(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incarnation_is_created_once_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (id, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        assert_eq!(load_or_create(dir.path()).unwrap(), (id.clone(), false));
        let damaged = format!("{PREFIX} {} 00000000\n", id);
        std::fs::write(dir.path().join(FILE), damaged).unwrap();
        assert!(load_or_create(dir.path()).is_err());
    }
}
