//! Everything a Keel process needs to follow the cluster metadata held by the
//! controller quorum: the metadata model (ids, the image, commands and the
//! deterministic rules that apply them), typed errors, the gRPC client that
//! finds a working controller, and the session keeper of registered nodes.
//!
//! This crate never stores anything and never decides anything on its own:
//! the controller is the one authority; everyone else applies its deltas.

mod apply;
mod client;
mod command;
mod error;
mod ids;
mod image;
mod session;
pub mod topic_configs;
pub mod topic_rules;

pub mod follower;

pub use apply::configs_from_pairs;
pub use client::{check_controllers, ClientError, ClientOptions, MetadataClient, WatchItem, GRPC_MESSAGE_BYTES_MAX};
pub use command::{Command, Outcome, PRODUCER_ID_BLOCK_SIZE};
pub use error::MetaError;
pub use ids::{
    ControllerId, Epoch, LeaderEpoch, LogEpoch, LogId, NodeId, NodeKind, ObjectId, Offset, ProducerId, Seq, StreamId,
    TopicId, Version,
};
pub use image::{
    split_listener, DeletedObject, EnsembleMember, Image, NodeRecord, NodeState, ObjectRange, ObjectRecord, Partition,
    Reservation, ScramCredential, ScramMechanism, Topic, WalLog, WalLogState, SCRAM_ITERATIONS,
};
pub use keel_proto::controller as pb;
pub use session::{kind_from_pb, kind_to_pb, Registration, Renewal, SessionKeeper, SessionState};
