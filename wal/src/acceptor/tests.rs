use super::*;

fn header(seq: u64, acked: u64) -> EntryHeader {
    EntryHeader { log: LogId(1), epoch: LogEpoch(1), seq: Seq(seq), acked: Seq(acked) }
}

fn appended(replica: &mut LogReplica, epoch: u64, seq: u64, acked: u64) {
    let header = header(seq, acked);
    assert_eq!(replica.check_append(LogEpoch(epoch), &header, 0, |_| None), Ok(AppendKind::New));
    replica.on_appended(LogEpoch(epoch), &header);
}

#[test]
fn appends_are_accepted_only_at_the_next_seq() {
    let mut replica = LogReplica::new(LogId(1));
    appended(&mut replica, 1, 1, 0);
    let gap = replica.check_append(LogEpoch(1), &header(3, 0), 0, |_| None);
    assert_eq!(gap, Err(ReplicaError::Gap { log: LogId(1), seq: Seq(3), last: Seq(1) }));
}

#[test]
fn a_retransmission_is_acknowledged_only_with_the_same_bytes() {
    let mut replica = LogReplica::new(LogId(1));
    appended(&mut replica, 1, 1, 0);
    assert_eq!(replica.check_append(LogEpoch(1), &header(1, 0), 42, |_| Some(42)), Ok(AppendKind::AlreadyHeld));
    assert_eq!(
        replica.check_append(LogEpoch(1), &header(1, 0), 43, |_| Some(42)),
        Err(ReplicaError::Conflict { log: LogId(1), seq: Seq(1) })
    );
}

#[test]
fn after_a_fence_the_old_writer_is_refused_and_the_recoverer_accepted() {
    let mut replica = LogReplica::new(LogId(1));
    appended(&mut replica, 1, 1, 0);
    appended(&mut replica, 1, 2, 1);
    assert_eq!(replica.fence(LogEpoch(2)), Ok(FenceReply { last_seq: Seq(2), trim_seq: Seq(0) }));
    let old = replica.check_append(LogEpoch(1), &header(3, 2), 0, |_| None);
    assert_eq!(old, Err(ReplicaError::Fenced { log: LogId(1), epoch: LogEpoch(1), fenced: LogEpoch(2) }));
    assert_eq!(replica.check_append(LogEpoch(2), &header(3, 2), 0, |_| None), Ok(AppendKind::New));
    assert!(matches!(replica.fence(LogEpoch(1)), Err(ReplicaError::StaleFence { .. })));
    assert!(replica.fence(LogEpoch(2)).is_ok(), "a fence at the current epoch is idempotent");
}

#[test]
fn an_append_at_a_newer_epoch_also_raises_the_bar() {
    let mut replica = LogReplica::new(LogId(1));
    appended(&mut replica, 3, 1, 0);
    assert!(matches!(replica.check_append(LogEpoch(2), &header(2, 0), 0, |_| None), Err(ReplicaError::Fenced { .. })));
}

#[test]
fn readers_stop_at_the_writers_acknowledged_seq_or_the_seal() {
    let mut replica = LogReplica::new(LogId(1));
    appended(&mut replica, 1, 1, 0);
    appended(&mut replica, 1, 2, 1);
    appended(&mut replica, 1, 3, 1);
    assert_eq!(replica.readable_end(None), Seq(1));
    assert_eq!(replica.readable_end(Some(Seq(2))), Seq(2));
    assert_eq!(replica.readable_end(Some(Seq(9))), Seq(3));
}

#[test]
fn trims_never_move_back() {
    let mut replica = LogReplica::new(LogId(1));
    appended(&mut replica, 1, 1, 0);
    appended(&mut replica, 1, 2, 1);
    replica.trim(Seq(2));
    replica.trim(Seq(1));
    assert_eq!((replica.trim_seq(), replica.last_seq()), (Seq(2), Seq(2)));
}

/// Issue 21: a member that lagged behind a trim answered every append
/// after the trim point with Gap, for ever, and a recovery that tried to
/// repair it retried for ever. It skips ahead to the trim point instead.
#[test]
fn a_replica_behind_a_trim_skips_ahead_and_takes_what_follows() {
    let mut replica = LogReplica::new(LogId(1));
    appended(&mut replica, 1, 1, 0);
    replica.trim(Seq(5));
    assert_eq!((replica.trim_seq(), replica.last_seq()), (Seq(5), Seq(5)));
    assert_eq!(replica.fence(LogEpoch(2)), Ok(FenceReply { last_seq: Seq(5), trim_seq: Seq(5) }));
    assert_eq!(replica.check_append(LogEpoch(2), &header(6, 5), 0, |_| None), Ok(AppendKind::New));
    assert_eq!(
        replica.check_append(LogEpoch(2), &header(3, 2), 0, |_| None),
        Ok(AppendKind::AlreadyHeld),
        "a resend of a trimmed entry is acknowledged: it is uploaded"
    );
    assert_eq!(replica.readable_end(None), Seq(5));
}

#[test]
fn an_entry_of_another_log_is_refused() {
    let replica = LogReplica::new(LogId(2));
    assert!(matches!(
        replica.check_append(LogEpoch(1), &header(1, 0), 0, |_| None),
        Err(ReplicaError::WrongLog { .. })
    ));
}
