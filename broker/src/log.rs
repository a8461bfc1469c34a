//! The partitions this broker leads, on its WAL log (DESIGN §3, §5).
//!
//! - `partitions.rs`: what is led now (`Leadership`, under one lock), the
//!   hot cache, high watermarks, and a reader's view of a led partition.
//! - `append.rs`: the write path: batches admitted by the core's rule, one
//!   WAL entry per request, answered once the quorum acknowledged it; the
//!   coordinators' own appends go the same way.
//! - `reads.rs`: a partition's batches from the cache, the objects or the WAL.
//! - `owner.rs` and `keeper.rs`: the log written under each registration,
//!   and the one recovery step of an orphaned log.
//! - `leaders.rs`, `drain.rs`, `early_seal.rs`, `failover.rs`: following
//!   leadership from the metadata, handing partitions over on purpose,
//!   moving to a new log when the ensemble degrades, and recovering the
//!   logs of brokers that are gone.
//! - `producer_expiry.rs`, `load_report.rs`: forgetting idle producers, and
//!   the load reports the controller's balancer reads.
//!
//! This layer sits on the cluster and storage layers; it knows nothing of
//! coordinators or of Kafka requests.

pub mod append;
pub mod drain;
pub mod early_seal;
pub mod failover;
pub mod keeper;
pub mod leaders;
pub mod load_report;
pub mod owner;
pub mod partitions;
pub mod producer_expiry;
pub mod reads;

pub use partitions::{Leadership, Partitions, ReadView};
