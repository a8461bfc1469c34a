//! The Raft log and vote in RocksDB.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use super::{cf, get_meta, meta_key, storage_error, sync_write, MetaKey, CF_LOGS, CF_META};
use crate::raft_types::{Entry, LogId, RaftId, StorageError, TypeConfig};

const VOTE: MetaKey<Vote<RaftId>> = meta_key("vote");
const COMMITTED: MetaKey<LogId> = meta_key("committed");
const LAST_PURGED: MetaKey<LogId> = meta_key("last_purged");

/// The Raft log storage. Cloning shares the database; clones serve as readers.
#[derive(Clone, Debug)]
pub(crate) struct LogStore {
    db: Arc<DB>,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of_key(key: &[u8]) -> u64 {
    u64::from_be_bytes(key.try_into().expect("log keys are 8 bytes"))
}

impl LogStore {
    pub(super) fn new(db: Arc<DB>) -> LogStore {
        LogStore { db }
    }

    /// Reads committed entries in `range` that are still in the log, in order.
    pub(crate) fn read_range(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&start) => start,
            Bound::Excluded(&start) => start + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        for item in
            self.db.iterator_cf(cf(&self.db, CF_LOGS), IteratorMode::From(&index_key(start), Direction::Forward))
        {
            let (key, value) = item.map_err(|e| StorageError::from(openraft::StorageIOError::read_logs(&e)))?;
            let index = index_of_key(&key);
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = serde_json::from_slice(&value)
                .map_err(|e| storage_error(ErrorSubject::LogIndex(index), ErrorVerb::Read, e))?;
            assert_eq!(entry.log_id.index, index, "log entry stored under another index");
            entries.push(entry);
        }
        Ok(entries)
    }

    /// The last purged log id, if any entry was purged.
    pub(crate) fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        get_meta(&self.db, &LAST_PURGED).map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))
    }

    fn put_meta_sync<T: serde::Serialize>(
        &self,
        key: &MetaKey<T>,
        value: &T,
        subject: ErrorSubject<RaftId>,
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        let bytes = serde_json::to_vec(value).map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, e))?;
        batch.put_cf(cf(&self.db, CF_META), key.name, bytes);
        self.db.write_opt(batch, &sync_write()).map_err(|e| storage_error(subject, ErrorVerb::Write, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_range(range)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last = self.db.iterator_cf(cf(&self.db, CF_LOGS), IteratorMode::End).next();
        let last_log_id = match last {
            Some(item) => {
                let (_, value) = item.map_err(|e| StorageError::from(openraft::StorageIOError::read_logs(&e)))?;
                let entry: Entry = serde_json::from_slice(&value)
                    .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> Result<(), StorageError> {
        self.put_meta_sync(&VOTE, vote, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftId>>, StorageError> {
        get_meta(&self.db, &VOTE).map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        match committed {
            Some(committed) => self.put_meta_sync(&COMMITTED, &committed, ErrorSubject::Store),
            None => Ok(()),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        get_meta(&self.db, &COMMITTED).map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Read, e))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry)
                .map_err(|e| storage_error(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
            batch.put_cf(cf(&self.db, CF_LOGS), index_key(entry.log_id.index), bytes);
        }
        let result = self.db.write_opt(batch, &sync_write()).map_err(std::io::Error::other);
        let failed = result.as_ref().err().map(|e| e.to_string());
        callback.log_io_completed(result);
        match failed {
            Some(e) => Err(storage_error(ErrorSubject::Logs, ErrorVerb::Write, e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncate log");
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(&self.db, CF_LOGS), index_key(log_id.index), index_key(u64::MAX));
        self.db.write_opt(batch, &sync_write()).map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purge log");
        let mut batch = WriteBatch::default();
        let bytes = serde_json::to_vec(&log_id).map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        batch.put_cf(cf(&self.db, CF_META), LAST_PURGED.name, bytes);
        batch.delete_range_cf(cf(&self.db, CF_LOGS), index_key(0), index_key(log_id.index + 1));
        self.db.write_opt(batch, &sync_write()).map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}
