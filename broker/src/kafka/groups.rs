//! The group APIs, one file each: FindCoordinator (for groups and
//! transactional ids), the classic group protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup), KIP-848's ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe, committed offsets (OffsetCommit, TxnOffsetCommit,
//! OffsetFetch, OffsetDelete) and the admin views (DescribeGroups,
//! ListGroups, DeleteGroups). The rules and the waiting live in
//! `crate::coordinator::groups`; these files translate each version of the
//! wire messages to it and back.

pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod delete_groups;
pub mod describe_groups;
pub mod find_coordinator;
pub mod heartbeat;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod sync_group;
pub mod txn_offset_commit;
