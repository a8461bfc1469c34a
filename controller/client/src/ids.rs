//! Typed ids and positions, so a bare integer never crosses a module boundary.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(
    /// A broker's or WAL node's configured id (a Kafka broker id for brokers).
    NodeId(u32), ""
);
id_type!(
    /// A controller's configured id. Its Raft id changes with every incarnation.
    ControllerId(u32), "c"
);
id_type!(
    /// A node's registration epoch: the metadata version of its latest `RegisterNode`.
    /// Every registration gets a larger one, so a stale incarnation is recognisable.
    Epoch(u64), "e"
);
id_type!(
    /// The metadata version: the Raft log index of the last applied command.
    Version(u64), "v"
);
id_type!(
    /// The id of a partition's log as an offset range (DESIGN §2).
    StreamId(u64), "s"
);
id_type!(
    /// Kafka's partition leader epoch; bumped on every leader change.
    LeaderEpoch(i32), ""
);
id_type!(
    /// Kafka producer id, allocated by the controller in blocks.
    ProducerId(i64), ""
);
id_type!(
    /// A WAL log's id, assigned by the controller when the log is opened.
    LogId(u64), "log"
);
id_type!(
    /// A WAL log's epoch. The writer that opened the log writes at epoch 1; each
    /// recovery bumps it, and a WAL node that has seen epoch E refuses anything
    /// older. (Distinct from a node's registration `Epoch`.)
    LogEpoch(u64), "le"
);
id_type!(
    /// An entry's position in its WAL log: 1, 2, 3, ... with no gaps. 0 means "none".
    Seq(u64), "#"
);
id_type!(
    /// A Kafka offset within a stream (a partition's log).
    Offset(i64), "@"
);
id_type!(
    /// An object in the object store, reserved before its PUT; never reused.
    ObjectId(u64), "obj"
);

impl Seq {
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

/// The offset `records` records further on.
impl std::ops::Add<i64> for Offset {
    type Output = Offset;

    fn add(self, records: i64) -> Offset {
        Offset(self.0 + records)
    }
}

/// How many records lie between two offsets.
impl std::ops::Sub for Offset {
    type Output = i64;

    fn sub(self, earlier: Offset) -> i64 {
        self.0 - earlier.0
    }
}

/// A topic's id: a UUID, as Kafka's `topic_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TopicId(pub Uuid);

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The kind of a registered node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Broker,
    Wal,
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeKind::Broker => "broker",
            NodeKind::Wal => "wal",
        })
    }
}
