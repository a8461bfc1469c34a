//! Durable controller state in one RocksDB database.
//!
//! Column families:
//! - `meta`: small typed values: the controller's identity, the Raft vote, the
//!   committed log id and the last purged log id (JSON).
//! - `logs`: Raft log entries keyed by index as 8 big-endian bytes, so keys sort
//!   numerically (JSON values).
//! - `snapshot`: the latest state machine snapshot (metadata image, JSON).
//!
//! The vote, appended entries and truncations are written with `sync`, so they
//! are on disk before openraft is told they are.

mod log;
mod state_machine;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rocksdb::{ColumnFamilyDescriptor, Options, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub(crate) use log::LogStore;
pub(crate) use state_machine::{Change, Shared, StateMachineStore};

use crate::raft_types::RaftId;

const CF_META: &str = "meta";
const CF_LOGS: &str = "logs";
const CF_SNAPSHOT: &str = "snapshot";

/// A typed key in the `meta` column family.
struct MetaKey<T> {
    name: &'static str,
    _value: std::marker::PhantomData<T>,
}

const fn meta_key<T>(name: &'static str) -> MetaKey<T> {
    MetaKey { name, _value: std::marker::PhantomData }
}

const IDENTITY: MetaKey<Identity> = meta_key("identity");

/// Who this data directory belongs to. Written once, when the directory is
/// created; a controller refuses to start on a directory of another identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) controller_id: u32,
    pub(crate) cluster_id: String,
    /// This incarnation's Raft id.
    pub(crate) raft_id: RaftId,
}

/// The open database.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    db: Arc<DB>,
}

impl Store {
    /// Opens (or creates) the database under `dir`.
    pub(crate) fn open(dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir).with_context(|| format!("create data directory {}", dir.display()))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // The controller's data is small; keep RocksDB's own memory and files modest.
        options.set_max_total_wal_size(64 << 20);
        options.set_keep_log_file_num(3);
        let families =
            [CF_META, CF_LOGS, CF_SNAPSHOT].map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, dir, families)
            .with_context(|| format!("open RocksDB in {}", dir.display()))?;
        Ok(Store { db: Arc::new(db) })
    }

    /// The identity stored in this directory, if it has one.
    pub(crate) fn identity(&self) -> anyhow::Result<Option<Identity>> {
        self.get_meta(&IDENTITY).context("read identity")
    }

    /// Records the identity of a fresh directory. Refuses a directory that
    /// already holds Raft state, which would mean an identity went missing.
    pub(crate) fn create_identity(&self, identity: &Identity) -> anyhow::Result<()> {
        let logs = self.cf(CF_LOGS);
        let holds_state = self.db.iterator_cf(logs, rocksdb::IteratorMode::Start).next().is_some()
            || self.db.get_cf(self.cf(CF_META), "vote")?.is_some();
        anyhow::ensure!(
            !holds_state,
            "the data directory holds Raft state but no identity; refusing to guess whose it is"
        );
        self.put_meta(&IDENTITY, identity).context("write identity")
    }

    pub(crate) fn log_store(&self) -> LogStore {
        LogStore::new(self.db.clone())
    }

    pub(crate) fn state_machine(&self) -> anyhow::Result<StateMachineStore> {
        StateMachineStore::open(self.db.clone())
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        cf(&self.db, name)
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &MetaKey<T>) -> anyhow::Result<Option<T>> {
        get_meta(&self.db, key)
    }

    fn put_meta<T: Serialize>(&self, key: &MetaKey<T>, value: &T) -> anyhow::Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(self.cf(CF_META), key.name, serde_json::to_vec(value)?);
        self.db.write_opt(batch, &sync_write())?;
        Ok(())
    }
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name).expect("column families are created when the database opens")
}

fn get_meta<T: DeserializeOwned>(db: &DB, key: &MetaKey<T>) -> anyhow::Result<Option<T>> {
    match db.get_cf(cf(db, CF_META), key.name)? {
        Some(bytes) => {
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("decode meta key {}", key.name))?))
        }
        None => Ok(None),
    }
}

/// Write options that fsync RocksDB's WAL before returning.
fn sync_write() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

/// Wraps any error as an openraft storage error on `subject`.
fn storage_error(
    subject: openraft::ErrorSubject<RaftId>,
    verb: openraft::ErrorVerb,
    error: impl std::fmt::Display,
) -> crate::raft_types::StorageError {
    let io = std::io::Error::other(error.to_string());
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&io)).into()
}
