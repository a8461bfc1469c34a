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
    assert_eq!(plan.source, 1, "the member that holds the whole tail");
    assert_eq!(plan.repairs, vec![(0, Seq(6)..=Seq(7)), (1, Seq(8)..=Seq(7))]);
    assert!(plan.repairs[1].1.is_empty());
    assert_eq!(plan.stream_ends, BTreeMap::from([(StreamId(4), Offset(16))]));
    assert_eq!(plan.entries, 5);
    assert!(recovery.matches(Seq(6), &entry(6, 12)), "a repair copies what was read");
    assert!(!recovery.matches(Seq(6), &entry(6, 14)), "other bytes at that seq");
    assert!(!recovery.matches(Seq(8), &entry(8, 16)), "nothing was read at 8");
    assert!(!recovery.matches(Seq(2), &entry(2, 4)), "2 is at the trim point");
}

/// Issue 21: recovery held every member's whole tail in memory. Reads come
/// in pieces and only digests are kept; pieces add up to the same plan.
#[test]
fn a_tail_read_in_pieces_gives_the_same_plan() {
    let mut whole = Recovery::new(LogId(9), LogEpoch(2), members(), 2, Seq(0));
    let mut pieces = Recovery::new(LogId(9), LogEpoch(2), members(), 2, Seq(0));
    for recovery in [&mut whole, &mut pieces] {
        recovery.on_fenced(0, Seq(9));
        recovery.on_fenced(1, Seq(6));
    }
    whole.on_read(0, entries(1..=9)).unwrap();
    whole.on_read(1, entries(1..=6)).unwrap();
    for range in [1..=4, 5..=5, 6..=9] {
        pieces.on_entries(0, entries(range)).unwrap();
    }
    pieces.on_read_complete(0);
    pieces.on_entries(1, entries(1..=3)).unwrap();
    assert_eq!(pieces.plan(), Ok(None), "member 1 is still being read");
    pieces.on_entries(1, entries(4..=6)).unwrap();
    pieces.on_read_complete(1);
    assert_eq!(pieces.plan(), whole.plan());
    assert_eq!(pieces.plan().unwrap().unwrap().repairs, vec![(0, Seq(10)..=Seq(9)), (1, Seq(7)..=Seq(9))]);
}

/// A member whose read broke off past every complete read added stream ends
/// beyond what can be sealed: the recovery starts again rather than seal
/// with them.
#[test]
fn a_read_that_broke_off_past_the_others_starts_the_recovery_again() {
    let all_fenced = || {
        let mut recovery = Recovery::new(LogId(9), LogEpoch(2), members(), 2, Seq(0));
        for member in 0..3 {
            recovery.on_fenced(member, Seq(5));
        }
        recovery
    };
    let mut recovery = all_fenced();
    recovery.on_entries(0, entries(1..=4)).unwrap();
    recovery.on_read(1, entries(1..=2)).unwrap();
    recovery.on_read(2, entries(1..=3)).unwrap();
    assert_eq!(recovery.plan(), Err(RecoveryError::BrokenOff { index: 0 }));
    let mut shorter = all_fenced();
    shorter.on_entries(0, entries(1..=2)).unwrap();
    shorter.on_read(1, entries(1..=3)).unwrap();
    shorter.on_read(2, entries(1..=3)).unwrap();
    let plan = shorter.plan().unwrap().unwrap();
    assert_eq!(plan.sealed_seq, Seq(3), "a broken-off read within the others' is harmless");
    assert_eq!(plan.stream_ends, BTreeMap::from([(StreamId(4), Offset(8))]));
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
    assert_eq!(recovery.on_read(1, vec![entry(1, 50)]), Err(RecoveryError::Conflict { seq: Seq(1) }));
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
    assert_eq!(plan.repairs, vec![(1, Seq(7)..=Seq(6)), (2, Seq(6)..=Seq(6))], "no repair for the lagging member");
}
