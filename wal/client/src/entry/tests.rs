use proptest::prelude::*;

use super::*;

fn entry(seq: u64, batches: &[&[u8]]) -> Entry {
    let header = EntryHeader { log: LogId(7), epoch: LogEpoch(2), seq: Seq(seq), acked: Seq(seq.saturating_sub(1)) };
    let records = batches
        .iter()
        .enumerate()
        .map(|(i, batch)| Record {
            stream: StreamId(i as u64),
            base_offset: Offset(100 * i as i64),
            record_count: 3,
            batch: Bytes::copy_from_slice(batch),
        })
        .collect();
    Entry::build(header, records).unwrap()
}

#[test]
fn an_entry_decodes_to_itself() {
    let built = entry(5, &[b"abc", b"", b"defgh"]);
    assert_eq!(Entry::decode(built.bytes.clone()), Ok(built.clone()));
    assert_eq!(decode_header(&built.bytes), Ok((built.header, built.bytes.len())));
}

#[test]
fn every_flipped_bit_is_detected() {
    let built = entry(1, &[b"payload"]);
    for byte in 0..built.bytes.len() {
        for bit in 0..8 {
            let mut corrupt = built.bytes.to_vec();
            corrupt[byte] ^= 1 << bit;
            assert!(Entry::decode(Bytes::from(corrupt)).is_err(), "flip at byte {byte} bit {bit} went unnoticed");
        }
    }
}

#[test]
fn a_torn_tail_is_truncation_not_corruption() {
    let built = entry(1, &[b"payload"]);
    for cut in 0..built.bytes.len() {
        let error = decode_header(&built.bytes[..cut]).unwrap_err();
        assert!(error.is_truncation(), "cut at {cut}: {error:?}");
    }
}

#[test]
fn record_spans_agree_with_the_decoded_records() {
    let built = entry(4, &[b"one", b"", b"three"]);
    let spans = record_spans(&built.bytes).unwrap();
    let expected: Vec<_> = built.records.iter().map(|r| (r.stream, r.base_offset, r.record_count)).collect();
    assert_eq!(spans, expected);
}

#[test]
fn the_check_and_the_decoder_refuse_the_same_offsets() {
    for (base, count) in [(-1, 1), (i64::MAX - 1, 10)] {
        let header = EntryHeader { log: LogId(1), epoch: LogEpoch(1), seq: Seq(1), acked: Seq(0) };
        let record =
            Record { stream: StreamId(1), base_offset: Offset(base), record_count: count, batch: Bytes::new() };
        let bytes = Entry::build(header, vec![record]).unwrap().bytes;
        assert!(matches!(CheckedEntry::check(bytes.clone()), Err(EntryError::BadRecords { .. })), "{base}+{count}");
        assert!(matches!(Entry::decode(bytes), Err(EntryError::BadRecords { .. })), "{base}+{count}");
    }
}

#[test]
fn stream_ends_are_base_plus_count() {
    let built = entry(1, &[b"a", b"b"]);
    let ends: Vec<_> = built.stream_ends().collect();
    assert_eq!(ends, vec![(StreamId(0), Offset(3)), (StreamId(1), Offset(103))]);
}

proptest! {
    #[test]
    fn round_trip(seq in 1u64..1_000_000, batches in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..6)) {
        let batches: Vec<&[u8]> = batches.iter().map(Vec::as_slice).collect();
        let built = entry(seq, &batches);
        prop_assert_eq!(Entry::decode(built.bytes.clone()), Ok(built));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Entry::decode(Bytes::from(bytes.clone()));
        let _ = decode_header(&bytes);
    }
}

fn record_of(stream: u64, bytes: usize) -> Record {
    Record { stream: StreamId(stream), base_offset: Offset(0), record_count: 1, batch: Bytes::from(vec![0u8; bytes]) }
}

#[test]
fn records_that_do_not_fit_are_refused_not_a_panic() {
    let header = EntryHeader { log: LogId(1), epoch: LogEpoch(1), seq: Seq(1), acked: Seq(0) };
    let too_big = Entry::build(header, vec![record_of(1, BATCH_BYTES_MAX + 1)]);
    assert!(matches!(too_big, Err(EntryError::TooLarge { .. })), "{too_big:?}");
    let too_many = Entry::build(header, vec![record_of(1, BATCH_BYTES_MAX), record_of(2, BATCH_BYTES_MAX)]);
    assert!(matches!(too_many, Err(EntryError::TooLarge { .. })), "together over ENTRY_BYTES_MAX");
    assert!(Entry::build(header, vec![record_of(1, BATCH_BYTES_MAX)]).is_ok(), "the largest batch fits");
}

#[test]
fn pack_splits_records_in_order_over_entries_that_fit() {
    let header = EntryHeader { log: LogId(1), epoch: LogEpoch(1), seq: Seq(1), acked: Seq(0) };
    let sizes = [BATCH_BYTES_MAX, 10, BATCH_BYTES_MAX, BATCH_BYTES_MAX, 5];
    let records: Vec<Record> = sizes.iter().enumerate().map(|(i, size)| record_of(i as u64, *size)).collect();
    let entries = pack(records.clone());
    assert_eq!(entries.len(), 3, "{:?}", entries.iter().map(Vec::len).collect::<Vec<_>>());
    assert_eq!(entries.concat(), records, "every record once, in order");
    for records in entries {
        assert!(Entry::build(header, records).is_ok());
    }
    assert!(pack(Vec::new()).is_empty());
}
