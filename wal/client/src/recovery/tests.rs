use keel_controller_client::NodeId;

use super::*;
use crate::entry::{EntryHeader, Record};

fn members() -> Vec<Member> {
    ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, zone)| Member { node: NodeId(i as u32 + 1), zone: zone.to_string(), incarnation: "i".into() })
        .collect()
}

fn entry(seq: u64, offset: i64) -> Bytes {
    let header = EntryHeader { log: LogId(9), epoch: LogEpoch(1), seq: Seq(seq), acked: Seq(seq - 1) };
    let record =
        Record { stream: StreamId(4), base_offset: Offset(offset), record_count: 2, batch: Bytes::from_static(b"x") };
    Entry::build(header, vec![record]).unwrap().bytes
}

fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Bytes> {
    range.map(|seq| entry(seq, 2 * seq as i64)).collect()
}

#[test]
fn the_longest_prefix_of_the_members_read_is_kept_and_repaired() {
    let mut recovery = Recovery::new(LogId(9), LogEpoch(2), members(), 2, Seq(2));
    assert_eq!(recovery.fences_needed(), 2);
    recovery.on_fenced(0, Seq(5));
    assert_eq!(recovery.plan(), Ok(None), "one fence is not enough");
    recovery.on_fenced(1, Seq(7));
    assert_eq!(recovery.reads_to_make(), vec![(0, Seq(3), Seq(5)), (1, Seq(3), Seq(7))]);
    recovery.on_read(0, entries(3..=5)).unwrap();
    assert_eq!(recovery.plan(), Ok(None), "one read is not enough");
    recovery.on_read(1, entries(3..=7)).unwrap();
    let plan = recovery.plan().unwrap().unwrap();
    assert_eq!(plan.sealed_seq, Seq(7));
    assert_eq!(plan.repairs, vec![(0, vec![(Seq(6), entry(6, 12)), (Seq(7), entry(7, 14))]), (1, vec![])]);
    assert_eq!(plan.stream_ends, BTreeMap::from([(StreamId(4), Offset(16))]));
}

#[test]
fn nothing_after_the_trim_point_seals_at_the_trim_point() {
    let mut recovery = Recovery::new(LogId(9), LogEpoch(2), members(), 2, Seq(4));
    recovery.on_fenced(1, Seq(4));
    recovery.on_fenced(2, Seq(4));
    recovery.on_read(1, vec![]).unwrap();
    recovery.on_read(2, vec![]).unwrap();
    let plan = recovery.plan().unwrap().unwrap();
    assert_eq!(plan.sealed_seq, Seq(4));
    assert!(plan.stream_ends.is_empty());
}

#[test]
fn different_bytes_at_one_seq_are_a_conflict() {
    let mut recovery = Recovery::new(LogId(9), LogEpoch(2), members(), 2, Seq(0));
    recovery.on_fenced(0, Seq(1));
    recovery.on_fenced(1, Seq(1));
    recovery.on_read(0, vec![entry(1, 0)]).unwrap();
    recovery.on_read(1, vec![entry(1, 50)]).unwrap();
    assert_eq!(recovery.plan(), Err(RecoveryError::Conflict { seq: Seq(1) }));
}

#[test]
fn replies_that_do_not_fit_are_refused() {
    let mut recovery = Recovery::new(LogId(9), LogEpoch(2), members(), 2, Seq(0));
    assert_eq!(recovery.on_read(0, entries(1..=1)), Err(RecoveryError::NotFenced { index: 0 }));
    recovery.on_fenced(0, Seq(3));
    let gap = vec![entry(1, 0), entry(3, 6)];
    assert!(matches!(recovery.on_read(0, gap), Err(RecoveryError::Unexpected { seq: Seq(3), expected: Seq(2), .. })));
    let garbage = vec![Bytes::from_static(b"not an entry")];
    assert!(matches!(recovery.on_read(0, garbage), Err(RecoveryError::Undecodable { .. })));
}

/// Issue 21: a member whose last seq is below the trim point was read and
/// "repaired" from the trim point on, which it refused as a gap, and the
/// recovery was retried for ever. It is fenced but neither read nor repaired.
#[test]
fn a_member_behind_the_trim_point_counts_for_the_fence_only() {
    let mut recovery = Recovery::new(LogId(9), LogEpoch(2), members(), 2, Seq(4));
    recovery.on_fenced(0, Seq(2));
    recovery.on_fenced(1, Seq(6));
    assert_eq!(recovery.reads_to_make(), vec![(1, Seq(5), Seq(6))], "nothing to read from the lagging member");
    recovery.on_read(1, entries(5..=6)).unwrap();
    assert_eq!(recovery.plan(), Ok(None), "one member that holds the tail is not an ack quorum: wait, do not repair");
    recovery.on_fenced(2, Seq(5));
    recovery.on_read(2, entries(5..=5)).unwrap();
    let plan = recovery.plan().unwrap().unwrap();
    assert_eq!(plan.sealed_seq, Seq(6));
    assert_eq!(plan.repairs, vec![(1, vec![]), (2, vec![(Seq(6), entry(6, 12))])], "no repair for the lagging member");
}
