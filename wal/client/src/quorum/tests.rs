use super::*;

fn members(zones: &[&str]) -> Vec<Member> {
    zones
        .iter()
        .enumerate()
        .map(|(i, zone)| Member { node: NodeId(i as u32 + 1), zone: zone.to_string(), incarnation: "i".into() })
        .collect()
}

fn writer(zones: &[&str], ack_quorum: usize) -> QuorumWriter {
    QuorumWriter::new(LogId(1), LogEpoch(1), members(zones), ack_quorum, Seq(0))
}

fn send(writer: &mut QuorumWriter, count: usize) {
    for _ in 0..count {
        writer.next_entry(vec![]).unwrap();
    }
}

#[test]
fn an_entry_is_durable_on_two_members_in_two_zones() {
    let mut writer = writer(&["a", "b", "c"], 2);
    send(&mut writer, 3);
    assert_eq!(writer.on_ack(0, Seq(3)), None, "one member is not a quorum");
    assert_eq!(writer.on_ack(1, Seq(2)), Some(Seq(2)));
    assert_eq!(writer.on_ack(2, Seq(3)), Some(Seq(3)));
    assert_eq!(writer.acked(), Seq(3));
}

#[test]
fn two_members_of_one_zone_are_not_enough() {
    let mut writer = writer(&["a", "a", "b"], 2);
    send(&mut writer, 1);
    assert_eq!(writer.on_ack(0, Seq(1)), None);
    assert_eq!(writer.on_ack(1, Seq(1)), None, "both acknowledgers are in zone a");
    assert_eq!(writer.on_ack(2, Seq(1)), Some(Seq(1)));
}

#[test]
fn acknowledgements_advance_strictly_in_seq_order() {
    let mut writer = writer(&["a", "b", "c"], 2);
    send(&mut writer, 5);
    writer.on_ack(0, Seq(5));
    assert_eq!(writer.on_ack(1, Seq(2)), Some(Seq(2)));
    assert_eq!(writer.on_ack(1, Seq(1)), None, "an older ack changes nothing");
    assert_eq!(writer.acked(), Seq(2));
}

#[test]
fn one_lost_member_degrades_two_stall() {
    let mut writer = writer(&["a", "b", "c"], 2);
    assert_eq!(writer.on_member_lost(0), Health::Degraded);
    assert_eq!(writer.on_member_lost(1), Health::Stalled);
    writer.on_member_back(0);
    assert_eq!(writer.health(), Health::Degraded);
}

#[test]
fn a_returning_member_gets_everything_it_has_not_acknowledged() {
    let mut writer = writer(&["a", "b", "c"], 2);
    send(&mut writer, 4);
    writer.on_ack(0, Seq(1));
    writer.on_ack(1, Seq(1));
    writer.on_ack(2, Seq(1));
    writer.on_member_lost(2);
    writer.on_ack(0, Seq(2));
    writer.on_ack(1, Seq(2));
    let resend: Vec<Seq> = writer.on_member_back(2).into_iter().map(|(seq, _)| seq).collect();
    assert_eq!(resend, vec![Seq(2), Seq(3), Seq(4)], "seq 2 is durable elsewhere, but member 2 may not hold it");
}

#[test]
fn entries_are_released_once_every_member_holds_them() {
    let mut writer = writer(&["a", "b", "c"], 2);
    send(&mut writer, 2);
    let one_entry = writer.unreplicated_bytes() / 2;
    writer.on_ack(0, Seq(2));
    writer.on_ack(1, Seq(2));
    assert_eq!(writer.acked(), Seq(2));
    assert_eq!(writer.unreplicated_bytes(), 2 * one_entry, "member 2 has acknowledged nothing");
    writer.on_ack(2, Seq(1));
    assert_eq!(writer.unreplicated_bytes(), one_entry);
}

#[test]
fn a_fenced_writer_acknowledges_nothing_more() {
    let mut writer = writer(&["a", "b", "c"], 2);
    send(&mut writer, 2);
    writer.on_fenced();
    assert_eq!(writer.on_ack(0, Seq(2)), None);
    assert_eq!(writer.on_ack(1, Seq(2)), None);
    assert_eq!(writer.acked(), Seq(0));
    assert_eq!(writer.next_entry(vec![]).unwrap_err(), WriterError::Fenced { log: LogId(1) });
}

#[test]
fn sealing_hands_back_the_unacknowledged_entries_unchanged() {
    let mut writer = writer(&["a", "b"], 2);
    let first = writer.next_entry(vec![]).unwrap();
    let second = writer.next_entry(vec![]).unwrap();
    writer.on_ack(0, Seq(1));
    writer.on_ack(1, Seq(1));
    let unacked = writer.seal();
    assert_eq!(unacked, vec![(Seq(2), second.bytes)]);
    assert_ne!(first.bytes, unacked[0].1);
    assert!(matches!(writer.next_entry(vec![]), Err(WriterError::Sealed { .. })));
}
