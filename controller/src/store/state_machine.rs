//! The state machine: the metadata image, applied from the Raft log, with its
//! snapshot in RocksDB.
//!
//! The image lives in memory behind `Shared`, which the gRPC services read.
//! Every applied command is also published on a broadcast channel as a
//! `Change`, already encoded, for the watch streams. Durability comes from the
//! Raft log plus the latest snapshot: on restart the image is loaded from the
//! snapshot and openraft re-applies the committed entries after it.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use keel_controller_client::{Image, Version};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, Snapshot};
use rocksdb::{WriteBatch, DB};
use tokio::sync::broadcast;

use super::{cf, storage_error, sync_write, CF_SNAPSHOT};
use crate::raft_types::{Applied, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// How many changes a slow watcher may fall behind before it gets a fresh image.
const CHANGE_BACKLOG_MAX: usize = 4096;

const SNAPSHOT_META: &str = "meta";
const SNAPSHOT_DATA: &str = "data";

/// A change published to watchers, in apply order.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    /// A command applied at `version`, as JSON.
    Delta { version: Version, command: Arc<Vec<u8>> },
    /// The image was replaced by an installed snapshot.
    Reset,
}

/// What the state machine holds.
#[derive(Debug, Default)]
pub(crate) struct SmState {
    pub(crate) last_applied: Option<LogId>,
    pub(crate) membership: StoredMembership,
    pub(crate) image: Image,
}

/// The state machine's contents, shared with the gRPC services.
#[derive(Debug)]
pub(crate) struct Shared {
    state: RwLock<SmState>,
    changes: broadcast::Sender<Change>,
}

impl Shared {
    /// Runs `read` on the current state. Keep it short: appliers wait.
    pub(crate) fn read<R>(&self, read: impl FnOnce(&SmState) -> R) -> R {
        read(&self.state.read().expect("state machine lock poisoned"))
    }

    /// Subscribes to changes and returns, atomically with the subscription,
    /// the image they start after and the index of the last applied entry.
    pub(crate) fn subscribe(&self) -> (broadcast::Receiver<Change>, Image, u64) {
        let state = self.state.read().expect("state machine lock poisoned");
        let applied_index = state.last_applied.map_or(0, |log_id| log_id.index);
        (self.changes.subscribe(), state.image.clone(), applied_index)
    }
}

/// The openraft state machine over `Shared` and the snapshot column family.
#[derive(Clone, Debug)]
pub(crate) struct StateMachineStore {
    db: Arc<DB>,
    shared: Arc<Shared>,
}

impl StateMachineStore {
    pub(super) fn open(db: Arc<DB>) -> anyhow::Result<StateMachineStore> {
        let mut state = SmState::default();
        if let Some((meta, data)) = read_snapshot(&db)? {
            state.image = serde_json::from_slice(&data)?;
            state.last_applied = meta.last_log_id;
            state.membership = meta.last_membership;
        }
        let (changes, _) = broadcast::channel(CHANGE_BACKLOG_MAX);
        Ok(StateMachineStore { db, shared: Arc::new(Shared { state: RwLock::new(state), changes }) })
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let meta_bytes = serde_json::to_vec(meta).map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_SNAPSHOT), SNAPSHOT_META, meta_bytes);
        batch.put_cf(cf(&self.db, CF_SNAPSHOT), SNAPSHOT_DATA, data);
        self.db.write_opt(batch, &sync_write()).map_err(|e| storage_error(subject, ErrorVerb::Write, e))
    }
}

fn read_snapshot(db: &DB) -> anyhow::Result<Option<(SnapshotMeta, Vec<u8>)>> {
    let meta = db.get_cf(cf(db, CF_SNAPSHOT), SNAPSHOT_META)?;
    let data = db.get_cf(cf(db, CF_SNAPSHOT), SNAPSHOT_DATA)?;
    match (meta, data) {
        (Some(meta), Some(data)) => Ok(Some((serde_json::from_slice(&meta)?, data))),
        (None, None) => Ok(None),
        _ => anyhow::bail!("snapshot is half written: meta and data must be stored together"),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, last_applied, membership) =
            self.shared.read(|state| (serde_json::to_vec(&state.image), state.last_applied, state.membership.clone()));
        let data = data.map_err(|e| storage_error(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        let snapshot_id = match last_applied {
            Some(log_id) => format!("{}-{}-{}", log_id.leader_id.term, log_id.index, data.len()),
            None => format!("empty-{}", data.len()),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        self.save_snapshot(&meta, &data)?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok(self.shared.read(|state| (state.last_applied, state.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut state = self.shared.state.write().expect("state machine lock poisoned");
        let mut replies = Vec::new();
        for entry in entries {
            let version = Version(entry.log_id.index);
            state.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Membership(membership) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    None
                }
                EntryPayload::Normal(command) => {
                    let result = state.image.apply(version, &command);
                    assert!(
                        !matches!(result, Err(keel_controller_client::MetaError::VersionNotAfter { .. })),
                        "raft applied entry {version} out of order: {result:?}"
                    );
                    let encoded = serde_json::to_vec(&command)
                        .map_err(|e| storage_error(ErrorSubject::Apply(entry.log_id), ErrorVerb::Read, e))?;
                    // No receiver is fine: nobody is watching.
                    let _ = self.shared.changes.send(Change::Delta { version, command: Arc::new(encoded) });
                    Some(result)
                }
            };
            replies.push(Applied { version, result });
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let image: Image = serde_json::from_slice(&data).map_err(|e| storage_error(subject, ErrorVerb::Read, e))?;
        self.save_snapshot(meta, &data)?;
        let mut state = self.shared.state.write().expect("state machine lock poisoned");
        state.image = image;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        let _ = self.shared.changes.send(Change::Reset);
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let snapshot =
            read_snapshot(&self.db).map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(snapshot.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
