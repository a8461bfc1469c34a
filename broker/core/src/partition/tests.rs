//! The admission rules of one partition, each test named after the rule.

use keel_controller_client::ProducerId;

use super::*;

const NOW: i64 = 1_700_000_000_000;

fn rules() -> TopicRules {
    TopicRules {
        message_bytes_max: TopicRules::MESSAGE_BYTES_MAX_DEFAULT,
        stored_bytes_max: 16 << 20,
        log_append_time: false,
        timestamp_before_max_ms: i64::MAX,
        timestamp_after_max_ms: i64::MAX,
        compacted: false,
    }
}

/// A partition led for a minute (past `GAP_GRACE_MS`).
fn state(end: i64) -> PartitionState {
    PartitionState::new(LeaderEpoch(3), Offset(end), Producers::default(), LogId(1), NOW - 60_000)
}

/// A client's batch of `count` records from producer (id, epoch) at `sequence`.
fn produced(producer: (i64, i16), sequence: i32, count: usize) -> Bytes {
    let values: Vec<&[u8]> = vec![b"v"; count];
    Bytes::from(batch::build(&values, (producer.0, producer.1, sequence), NOW))
}

fn admit(state: &mut PartitionState, bytes: &Bytes) -> Admission {
    let checked = check(bytes, Writer::Client, &rules(), NOW).expect("a well-formed batch");
    state.admit(checked, Verification::NotAsked, &rules(), NOW)
}

fn offsets(admission: &Admission) -> (i64, i64) {
    match admission {
        Admission::Appended { base, last, .. } | Admission::Duplicate { base, last } => (base.0, last.0),
        Admission::Refused(refusal) => panic!("refused: {refusal:?}"),
    }
}

#[test]
fn appended_batches_get_contiguous_offsets_from_the_partitions_end() {
    let mut state = state(100);
    let first = admit(&mut state, &produced((-1, -1), -1, 3));
    let second = admit(&mut state, &produced((-1, -1), -1, 2));
    assert_eq!(offsets(&first), (100, 102));
    assert_eq!(offsets(&second), (103, 104));
    assert_eq!(state.next_offset, Offset(105));
    assert_eq!(state.high_watermark, Offset(100), "nothing is acknowledged until the WAL says so");
    let Admission::Appended { batch, append_time, .. } = second else { unreachable!() };
    assert_eq!(batch::base_offset(&batch), Offset(103), "the stored batch carries its offsets");
    assert_eq!(&batch[12..16], &3i32.to_be_bytes(), "and the leader epoch it was appended under");
    assert!(batch::check(&batch).is_ok(), "the rewritten fields lie outside the CRC");
    assert_eq!(append_time, None);
}

#[test]
fn a_retried_batch_is_answered_with_its_original_offsets_and_appends_nothing() {
    let mut state = state(0);
    let batch = produced((9, 0), 0, 3);
    assert_eq!(offsets(&admit(&mut state, &batch)), (0, 2));
    admit(&mut state, &produced((9, 0), 3, 1));
    assert_eq!(admit(&mut state, &batch), Admission::Duplicate { base: Offset(0), last: Offset(2) });
    assert_eq!(state.next_offset, Offset(4), "the duplicate took no offsets");
}

#[test]
fn a_refused_batch_assigns_no_offsets() {
    let mut state = state(10);
    admit(&mut state, &produced((9, 0), 0, 1));
    let gap = admit(&mut state, &produced((9, 0), 5, 2));
    assert_eq!(gap, Admission::Refused(Refusal::new(ResponseError::OutOfOrderSequenceNumber)));
    let old_epoch = admit(&mut state, &produced((9, -1), 1, 1));
    assert!(matches!(old_epoch, Admission::Refused(_)));
    assert_eq!(state.next_offset, Offset(11));
    assert_eq!(offsets(&admit(&mut state, &produced((9, 0), 1, 1))), (11, 11), "the next in order appends");
}

#[test]
fn a_closing_partition_refuses_every_batch_retriably() {
    let mut state = state(0);
    state.closing = true;
    let Admission::Refused(refusal) = admit(&mut state, &produced((-1, -1), -1, 1)) else {
        panic!("a closing partition takes no writes")
    };
    assert_eq!(refusal.error, ResponseError::NotLeaderOrFollower);
    assert_eq!(state.next_offset, Offset(0));
}

#[test]
fn an_older_producer_epoch_is_fenced_and_a_newer_one_starts_at_sequence_zero() {
    let mut state = state(0);
    admit(&mut state, &produced((9, 2), 0, 1));
    let fenced = admit(&mut state, &produced((9, 1), 1, 1));
    assert_eq!(fenced, Admission::Refused(Refusal::new(ResponseError::InvalidProducerEpoch)));
    let not_zero = admit(&mut state, &produced((9, 3), 4, 1));
    assert_eq!(not_zero, Admission::Refused(Refusal::new(ResponseError::OutOfOrderSequenceNumber)));
    assert_eq!(offsets(&admit(&mut state, &produced((9, 3), 0, 1))), (1, 1));
}

#[test]
fn a_transactions_first_batch_needs_its_coordinators_confirmation() {
    let mut state = state(0);
    let mut bytes = batch::build(&[b"v"], (5, 0, 0), NOW);
    bytes[21..23].copy_from_slice(&(1i16 << 4).to_be_bytes()); // transactional
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    let bytes = Bytes::from(bytes);
    let checked = || check(&bytes, Writer::Client, &rules(), NOW).unwrap();
    let refused = state.admit(checked(), Verification::NotAsked, &rules(), NOW);
    assert_eq!(refused, Admission::Refused(Refusal::new(ResponseError::InvalidTxnState)));
    let unreachable = state.admit(checked(), Verification::Unreachable, &rules(), NOW);
    assert!(matches!(unreachable, Admission::Refused(Refusal { error: ResponseError::NotEnoughReplicas, .. })));
    let token = state.producers.begin_verification(ProducerId(5), 0);
    let appended = state.admit(checked(), Verification::Confirmed(token), &rules(), NOW);
    assert_eq!(offsets(&appended), (0, 0));
    assert_eq!(state.last_stable(), Offset(0), "the open transaction holds the last stable offset");
}

#[test]
fn the_checks_refuse_what_no_partition_of_the_topic_takes() {
    let too_big = TopicRules { message_bytes_max: 70, ..rules() };
    let refused = check(&produced((-1, -1), -1, 5), Writer::Client, &too_big, NOW).unwrap_err();
    assert_eq!(refused.error, ResponseError::MessageTooLarge);
    let over_storage = TopicRules { message_bytes_max: 1 << 30, stored_bytes_max: 70, ..rules() };
    let refused = check(&produced((-1, -1), -1, 5), Writer::Client, &over_storage, NOW).unwrap_err();
    assert_eq!(refused.error, ResponseError::MessageTooLarge, "a topic cannot allow more than the cluster stores");
    assert!(refused.message.as_deref().is_some_and(|m| m.contains("largest batch this cluster stores")));

    let window = TopicRules { timestamp_before_max_ms: 1_000, timestamp_after_max_ms: 1_000, ..rules() };
    let old = check(&produced((-1, -1), -1, 1), Writer::Client, &window, NOW + 5_000).unwrap_err();
    assert_eq!(old.error, ResponseError::InvalidTimestamp);
    let future = check(&produced((-1, -1), -1, 1), Writer::Client, &window, NOW - 5_000).unwrap_err();
    assert_eq!(future.error, ResponseError::InvalidTimestamp);
    let stamped = TopicRules { log_append_time: true, ..window };
    assert!(check(&produced((-1, -1), -1, 1), Writer::Client, &stamped, NOW + 5_000).is_ok(), "LogAppendTime");

    let no_sequence = check(&produced((9, 0), -1, 1), Writer::Client, &rules(), NOW).unwrap_err();
    assert_eq!(no_sequence.error, ResponseError::InvalidRecord);

    let mut corrupt = produced((-1, -1), -1, 1).to_vec();
    *corrupt.last_mut().unwrap() ^= 1;
    let refused = check(&Bytes::from(corrupt), Writer::Client, &rules(), NOW).unwrap_err();
    assert_eq!(refused.error, ResponseError::CorruptMessage);

    let marker = batch::marker_batch(ProducerId(9), 0, Marker::Commit, 1, NOW);
    assert_eq!(check(&marker, Writer::Client, &rules(), NOW).unwrap_err().error, ResponseError::InvalidRecord);
    let checked = check(&marker, Writer::Broker, &rules(), NOW).expect("the broker writes markers");
    assert_eq!(checked.marker, Some((Marker::Commit, 1)));
}

#[test]
fn a_log_append_time_topic_stamps_the_batch_with_the_append_time() {
    let mut state = state(0);
    let stamped = TopicRules { log_append_time: true, ..rules() };
    let checked = check(&produced((-1, -1), -1, 2), Writer::Client, &stamped, NOW).unwrap();
    let Admission::Appended { batch, append_time, .. } =
        state.admit(checked, Verification::NotAsked, &stamped, NOW + 7)
    else {
        panic!("appended")
    };
    assert_eq!(append_time, Some(NOW + 7));
    assert_eq!(batch::max_timestamp(&batch), NOW + 7);
    assert!(batch::check(&batch).is_ok(), "the CRC was computed again");
}

#[test]
fn acknowledgements_move_the_high_watermark_forward_only_at_the_current_leader_epoch() {
    let mut state = state(0);
    admit(&mut state, &produced((-1, -1), -1, 4));
    assert!(!state.acknowledge(LeaderEpoch(2), Offset(3)), "an old leader epoch's entry");
    assert!(state.acknowledge(LeaderEpoch(3), Offset(1)));
    assert_eq!(state.high_watermark, Offset(2));
    assert!(!state.acknowledge(LeaderEpoch(3), Offset(0)), "never backwards");
    assert!(!state.is_settled());
    assert!(state.acknowledge(LeaderEpoch(3), Offset(3)));
    assert!(state.is_settled());
}

#[test]
fn the_log_start_follows_the_metadata_up_but_never_past_the_high_watermark() {
    let mut state = state(10);
    state.follow_start(Offset(5));
    assert_eq!(state.log_start, Offset(5));
    state.follow_start(Offset(3));
    assert_eq!(state.log_start, Offset(5), "never back");
    state.follow_start(Offset(50));
    assert_eq!(state.log_start, Offset(10), "at most the high watermark");
}

/// KIP-467: a compacted topic refuses a batch with keyless records with
/// INVALID_RECORD, naming each by its index in the batch; other topics
/// take them.
#[test]
fn a_compacted_topic_refuses_keyless_records_and_names_them() {
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let record = |offset: i64, key: Option<&'static [u8]>| Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        // One batch: the encoder starts a new one where sequences break.
        sequence: offset as i32,
        timestamp: NOW,
        key: key.map(Bytes::from_static),
        value: Some(Bytes::from_static(b"v")),
        headers: Default::default(),
        delete_horizon: false,
    };
    let records = [record(0, Some(b"a")), record(1, None), record(2, Some(b"b")), record(3, None)];
    let mut encoded = bytes::BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::Lz4 };
    RecordBatchEncoder::encode(&mut encoded, &records, &options).unwrap();
    let batch = encoded.freeze();
    let compacted = TopicRules { compacted: true, ..rules() };
    let refused = check(&batch, Writer::Client, &compacted, NOW).unwrap_err();
    assert_eq!(refused.error, ResponseError::InvalidRecord, "{refused:?}");
    let indexes: Vec<i32> = refused.record_errors.iter().map(|(index, _)| *index).collect();
    assert_eq!(indexes, [1, 3], "{refused:?}");
    assert!(check(&batch, Writer::Client, &rules(), NOW).is_ok(), "a topic that is not compacted takes them");
    assert!(check(&batch, Writer::Broker, &compacted, NOW).is_ok(), "the broker's own records are not checked");
}

/// Just after a takeover a gap is a batch refused during it, with the next
/// one pipelined behind: retriable, so the client does not renumber (and
/// duplicate) what it has not had an answer for.
#[test]
fn a_gap_just_after_a_takeover_is_retriable_and_later_out_of_sequence() {
    let mut led = state(0);
    offsets(&admit(&mut led, &produced((7, 0), 0, 2)));
    let mut taken_over =
        PartitionState::new(LeaderEpoch(4), Offset(2), led.producers.clone(), LogId(2), NOW - GAP_GRACE_MS + 1);
    let gap = admit(&mut taken_over, &produced((7, 0), 3, 1));
    match &gap {
        Admission::Refused(refusal) => assert_eq!(refusal.error, ResponseError::NotLeaderOrFollower),
        other => panic!("{other:?}"),
    }
    assert_eq!(offsets(&admit(&mut taken_over, &produced((7, 0), 2, 1))), (2, 2), "the missing batch, retried");
    assert_eq!(offsets(&admit(&mut taken_over, &produced((7, 0), 3, 1))), (3, 3), "then the next, in sequence");
    let mut long_led = PartitionState::new(LeaderEpoch(4), Offset(2), led.producers, LogId(2), NOW - GAP_GRACE_MS);
    let gap = admit(&mut long_led, &produced((7, 0), 3, 1));
    assert_eq!(gap, Admission::Refused(Refusal::new(ResponseError::OutOfOrderSequenceNumber)));
}
