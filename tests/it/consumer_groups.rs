//! Consumer groups on 3 brokers: the classic protocol (JoinGroup, SyncGroup,
//! Heartbeat, OffsetCommit; eager and cooperative assignors, static members),
//! KIP-848 (ConsumerGroupHeartbeat, assignors on the broker), offsets in
//! `__consumer_offsets`, and `keelctl group`.
//!
//! Members are real confluent-kafka consumers (`clients/group_consume.py`)
//! that commit after each batch they process (at-least-once) and print one
//! JSON event per line (assigned, revoked, lost, record, committed, done);
//! records come from an idempotent producer (`clients/group_produce.py`) that
//! prints what was acknowledged. The checks read those events. Requests a
//! real client would never send are made with the raw Kafka codec.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, DeleteGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, OffsetCommitRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use keel_tests::TestCluster;
use keel_tools::kafka::{self, Connection};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::info;

const TOPIC: &str = "events";
const PARTITIONS: usize = 12;

/// Versions of the group requests sent by hand. FindCoordinator v4 batches
/// keys (`coordinator_keys`); JoinGroup v4+ makes a new member ask for its id
/// first (MEMBER_ID_REQUIRED); the others are the versions librdkafka uses.
const FIND_COORDINATOR_VERSION: i16 = 4;
const JOIN_GROUP_VERSION: i16 = 5;
const SYNC_GROUP_VERSION: i16 = 3;
const HEARTBEAT_VERSION: i16 = 3;
const OFFSET_COMMIT_VERSION: i16 = 7;
const DELETE_GROUPS_VERSION: i16 = 2;

/// How long (seconds) no member's assignment may change before a group counts as settled.
const QUIET_SECONDS: f64 = 2.0;

/// Three classic members (the eager `range` assignor, 6 s sessions) share
/// "events" while a producer writes 6000 records over 12 s; 4 s in, one
/// member is killed with SIGKILL. Its session expires and the group
/// rebalances: the two survivors are assigned again and own all 12 partitions
/// between them, resuming the killed member's partitions from its last
/// commit. Every acknowledged record is read by some member with the value it
/// was acknowledged with (nothing lost), and a record is read twice only if
/// its first reader had not committed past it before the second read: the
/// only repeats are the killed member's processed but uncommitted tail.
///
/// Prints the rebalance time (the kill to a survivor's first record from the
/// killed member's partitions) and the offset commit latency p50/p99.
#[tokio::test(flavor = "multi_thread")]
async fn three_members_share_a_topic_and_a_killed_member_loses_nothing() {
    let test = cluster_with_events().await;
    let bootstrap = test.cluster.bootstrap();
    let args = [
        "--group-protocol",
        "classic",
        "--assignment-strategy",
        "range",
        "--session-timeout-ms",
        "6000",
        "--max-seconds",
        "55",
    ];
    info!("three members join the group");
    let mut members: Vec<Member> =
        (1..=3).map(|i| Member::start(&format!("member-{i}"), &bootstrap, "sharers", &args)).collect();
    let before = settled(&members.iter().collect::<Vec<_>>(), "three members share the 12 partitions").await;

    info!("a producer writes 6000 records over 12 s");
    let producer = Producer::start(&bootstrap, "shared", &["--count", "6000", "--rate", "500"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let victim = 1;
    let orphaned = before[victim].clone();
    info!(member = %members[victim].name, ?orphaned, "kill -9 a member");
    let killed_at = unix_now();
    members[victim].kill9().await;
    assert!(!members[victim].records().is_empty(), "the killed member had read records: {}", members[victim].report());

    let survivors: Vec<&Member> = members.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, m)| m).collect();
    let after = wait_until(Duration::from_secs(40), "the two survivors own all 12 partitions", &survivors, || {
        let mut owned = Vec::new();
        for member in &survivors {
            let reassigned = member
                .events()
                .iter()
                .any(|e| e["event"] == "assigned" && e["t"].as_f64().is_some_and(|t| t > killed_at));
            let (assignment, _) = member.assignment()?;
            if !reassigned {
                return None;
            }
            owned.push(assignment);
        }
        shares_the_topic(&owned).then_some(owned)
    })
    .await;
    eprintln!("the killed member had partitions {orphaned:?}; the survivors now own {after:?}");

    let acked = producer.finish().await;
    assert_eq!(acked.len(), 6000, "every record acknowledged");
    wait_until(Duration::from_secs(40), "the members read every acknowledged record", &survivors, || {
        let read: BTreeSet<(i32, i64)> =
            members.iter().flat_map(|m| m.records()).map(|r| (r.partition, r.offset)).collect();
        acked.iter().all(|a| read.contains(&(a.partition, a.offset))).then_some(())
    })
    .await;
    let taken_over = survivors
        .iter()
        .flat_map(|m| m.records())
        .filter(|r| orphaned.contains(&r.partition) && r.t > killed_at)
        .map(|r| r.t)
        .min_by(f64::total_cmp)
        .expect("a survivor read the killed member's partitions");
    eprintln!(
        "rebalance: {:.2} s from kill -9 to a survivor's first record from the killed member's partitions (session timeout 6 s)",
        taken_over - killed_at
    );

    info!("SIGTERM the survivors: they commit, leave and exit");
    for member in &survivors {
        member.sigterm().await;
    }
    let mut logs = Vec::new();
    for (i, member) in members.into_iter().enumerate() {
        logs.push(if i == victim { member.into_events().await } else { member.finish().await });
    }
    let repeats = check_at_least_once(&logs, &acked);
    eprintln!("{repeats} records read twice, each past its first reader's last commit (the killed member's tail)");
    let mut latencies: Vec<f64> =
        logs.iter().flatten().filter(|e| e["event"] == "committed").filter_map(|e| e["latency_ms"].as_f64()).collect();
    assert!(!latencies.is_empty(), "the members committed");
    eprintln!(
        "offset commit latency over {} synchronous commits: p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        quantile(&mut latencies, 0.5),
        quantile(&mut latencies, 0.99),
    );
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// KIP-345 static membership: members with instance ids m1, m2, m3
/// (cooperative-sticky, 10 s sessions) share "events". m2 is killed with
/// SIGKILL and started again 1 s later with the same instance id, well inside
/// its session: the coordinator gives the new incarnation the old member's
/// place, so m1 and m3 see no rebalance at all (no assigned, revoked or lost
/// event, still none after the old session would have expired), the new m2
/// gets exactly m2's partitions back, and each member reads the records
/// written afterwards from its own partitions only.
///
/// m1 joins alone first, so it leads the group: a static leader that rejoins
/// with JoinGroup below v9 (librdkafka's) needs a rebalance by design, and the
/// member restarted here is not the leader.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarting_static_member_gets_its_partitions_back_without_a_rebalance() {
    let test = cluster_with_events().await;
    let bootstrap = test.cluster.bootstrap();
    let start = |id: &str| {
        let args = [
            "--group-protocol",
            "classic",
            "--assignment-strategy",
            "cooperative-sticky",
            "--instance-id",
            id,
            "--session-timeout-ms",
            "10000",
            "--max-seconds",
            "55",
        ];
        Member::start(id, &bootstrap, "statics", &args)
    };
    let m1 = start("m1");
    settled(&[&m1], "m1 owns every partition").await;
    let mut m2 = start("m2");
    let m3 = start("m3");
    let before = settled(&[&m1, &m2, &m3], "m1, m2 and m3 share the 12 partitions").await;

    info!(partitions = ?before[1], "kill -9 m2, then start it again with the same instance id");
    let killed_at = unix_now();
    m2.kill9().await;
    m2.into_events().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m2 = start("m2");
    let restarted = wait_until(Duration::from_secs(20), "the new m2 owns partitions", &[&m1, &m2, &m3], || {
        m2.assignment().map(|(assignment, _)| assignment).filter(|assignment| !assignment.is_empty())
    })
    .await;
    assert_eq!(restarted, before[1], "the new m2 got the old one's partitions back");

    info!("records written now are read by their partitions' owners");
    let members = [&m1, &m2, &m3];
    let acked = produce(&bootstrap, "static", 240).await;
    wait_until(Duration::from_secs(30), "every record is read", &members, || {
        let read: BTreeSet<String> = members.iter().flat_map(|m| m.records()).map(|r| r.value).collect();
        acked.iter().all(|a| read.contains(&a.value)).then_some(())
    })
    .await;
    // Past the old session: had the coordinator kept the old m2 and let its
    // session expire, that would have rebalanced the group by now.
    let session_over = killed_at + 12.0;
    tokio::time::sleep(Duration::from_secs_f64((session_over - unix_now()).max(0.0))).await;
    for member in [&m1, &m3] {
        let changes = member.rebalances_after(killed_at);
        assert!(changes.is_empty(), "{} saw a rebalance after m2 was killed: {changes:?}", member.name);
    }
    let changes = m2.rebalances_after(0.0);
    assert!(changes.iter().all(|e| e["event"] == "assigned"), "the new m2 lost nothing it was given: {changes:?}");
    assert_eq!(m2.assignment().map(|(assignment, _)| assignment).as_ref(), Some(&before[1]));
    for (member, owned) in members.iter().zip(&before) {
        let foreign: Vec<Record> = member.records().into_iter().filter(|r| !owned.contains(&r.partition)).collect();
        assert!(foreign.is_empty(), "{} read partitions it does not own: {foreign:?}", member.name);
    }

    for member in &members {
        member.sigterm().await;
    }
    for member in [m1, m2, m3] {
        member.finish().await;
    }
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// Committed offsets live in `__consumer_offsets`, not in a coordinator's
/// memory: a member reads 300 of 600 records, committing as it goes, and
/// leaves; the group's coordinator (FindCoordinator) is killed with SIGKILL
/// and started again; a new member of the group then starts each partition
/// exactly at its committed offset (never below it; at the earliest offset
/// where nothing was committed) and the two members read every record
/// exactly once between them.
#[tokio::test(flavor = "multi_thread")]
async fn committed_offsets_survive_the_coordinator_broker() {
    let mut test = cluster_with_events().await;
    let bootstrap = test.cluster.bootstrap();
    let group = "resumers";
    let acked = produce(&bootstrap, "kept", 600).await;
    let args = ["--group-protocol", "classic", "--expect", "300", "--max-seconds", "45"];

    info!("a member reads 300 records, commits them and leaves");
    let first = Member::start("first", &bootstrap, group, &args).finish().await;
    let first_records: Vec<Record> = first.iter().filter_map(as_record).collect();
    assert_eq!(first_records.len(), 300);
    let committed = committed_offsets(&first);
    let mut read_to: BTreeMap<i32, i64> = BTreeMap::new();
    for record in &first_records {
        let next = read_to.entry(record.partition).or_insert(0);
        *next = (*next).max(record.offset + 1);
    }
    assert_eq!(committed, read_to, "the member committed everything it read");

    let (coordinator, _) = find_coordinator(&bootstrap, group).await;
    let index = test
        .cluster
        .brokers
        .iter()
        .position(|b| b.spec.id as i32 == coordinator)
        .expect("the coordinator is one of the brokers");
    info!(coordinator, "kill -9 the group's coordinator, then start it again");
    test.restart_broker(index, TOPIC).await.unwrap();

    info!("a new member resumes from the committed offsets");
    let second = Member::start("second", &bootstrap, group, &args).finish().await;
    let second_records: Vec<Record> = second.iter().filter_map(as_record).collect();
    let mut resumed_at: BTreeMap<i32, i64> = BTreeMap::new();
    for record in &second_records {
        let start = committed.get(&record.partition).copied().unwrap_or(0);
        assert!(
            record.offset >= start,
            "{record:?} is below partition {}'s committed offset {start}",
            record.partition
        );
        resumed_at.entry(record.partition).or_insert(record.offset);
    }
    for (partition, offset) in &resumed_at {
        let start = committed.get(partition).copied().unwrap_or(0);
        assert_eq!(*offset, start, "partition {partition} resumed at its committed offset");
    }
    let mut values: Vec<&str> = first_records.iter().chain(&second_records).map(|r| r.value.as_str()).collect();
    values.sort_unstable();
    let mut expected: Vec<&str> = acked.iter().map(|a| a.value.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(values, expected, "the two members read every record exactly once between them");
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// A running group while its coordinator's broker is killed with SIGKILL
/// (and started again 3 s later): two classic members keep consuming a topic
/// a producer writes to. The coordinator's partition of `__consumer_offsets`
/// fails over like any partition, the new coordinator rebuilds the group
/// (members, generation, assignment) from it, and the members carry on
/// without a rebalance: commits fail only while no coordinator answers.
/// Every acknowledged record is read, nothing twice, and after the members
/// leave, the group's committed offsets are the partitions' ends.
///
/// Prints how long commits failed after the kill.
#[tokio::test(flavor = "multi_thread")]
async fn a_live_group_carries_on_when_its_coordinator_is_killed() {
    let args = ["--group-protocol", "classic", "--session-timeout-ms", "30000", "--max-seconds", "55"];
    live_group_survives_its_coordinator(&args).await;
}

/// The same with KIP-848 members (`group.protocol=consumer`): the group's
/// epochs and each member's assignment are in the log, so the members keep
/// their epochs and partitions on the new coordinator.
#[tokio::test(flavor = "multi_thread")]
async fn a_live_kip848_group_carries_on_when_its_coordinator_is_killed() {
    let args = ["--group-protocol", "consumer", "--assignment-strategy", "uniform", "--max-seconds", "55"];
    live_group_survives_its_coordinator(&args).await;
}

async fn live_group_survives_its_coordinator(args: &[&str]) {
    let mut test = cluster_with_events().await;
    let bootstrap = test.cluster.bootstrap();
    let group = "steadfast";
    let members: Vec<Member> =
        (1..=2).map(|i| Member::start(&format!("member-{i}"), &bootstrap, group, args)).collect();
    settled(&members.iter().collect::<Vec<_>>(), "two members share the 12 partitions").await;

    let producer = Producer::start(&bootstrap, "steady", &["--count", "4000", "--rate", "400"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (coordinator, _) = find_coordinator(&bootstrap, group).await;
    let index = test.cluster.brokers.iter().position(|b| b.spec.id as i32 == coordinator).expect("a broker");
    info!(coordinator, "kill -9 the group's coordinator");
    let killed_at = unix_now();
    test.cluster.brokers[index].kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    test.cluster.start_broker(index).unwrap();
    test.cluster.wait_for_brokers(Duration::from_secs(60)).await.unwrap();

    let acked = producer.finish().await;
    assert_eq!(acked.len(), 4000, "every record acknowledged");
    let all: Vec<&Member> = members.iter().collect();
    wait_until(Duration::from_secs(40), "the members read every acknowledged record", &all, || {
        let read: BTreeSet<(i32, i64)> =
            all.iter().flat_map(|m| m.records()).map(|r| (r.partition, r.offset)).collect();
        acked.iter().all(|a| read.contains(&(a.partition, a.offset))).then_some(())
    })
    .await;
    for member in &members {
        let rebalances = member.rebalances_after(killed_at);
        assert!(rebalances.is_empty(), "{} saw a rebalance after the kill: {rebalances:?}", member.name);
    }
    let first_commit_after = members
        .iter()
        .flat_map(|m| commits_in(&m.events()))
        .map(|(t, _, _)| t)
        .filter(|t| *t > killed_at + 0.5)
        .min_by(f64::total_cmp);
    if let Some(t) = first_commit_after {
        eprintln!(
            "coordinator kill -9: commits succeeded again {:.2} s after the kill (the broker restarts after 3 s)",
            t - killed_at
        );
    }

    for member in &members {
        member.sigterm().await;
    }
    let mut logs = Vec::new();
    for member in members {
        logs.push(member.finish().await);
    }
    assert_eq!(check_at_least_once(&logs, &acked), 0, "no record read twice: no member failed");
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for a in &acked {
        let end = ends.entry(a.partition).or_insert(0);
        *end = (*end).max(a.offset + 1);
    }
    let described = keelctl_json(&test, &["group", "describe", group, "--json"]).await;
    assert_eq!(described_offsets(&described, &ends), ends, "the committed offsets are the ends: {described}");
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// `keelctl group reset-offsets --to-datetime T` moves a group's committed
/// offsets to each partition's first record at or after T. 200 records are
/// written, then after T 200 more, and a member reads all 400 and leaves.
/// `--dry-run` prints the plan (current: the end; new: where the later
/// records start) and changes nothing; the real run applies the same plan;
/// a new member then reads exactly the later 200 records. While that member
/// is live, a reset is refused (NON_EMPTY_GROUP) and changes nothing.
/// `group list` and `group describe` show the group, its state, its member
/// and its offsets with their lag on the way.
#[tokio::test(flavor = "multi_thread")]
async fn reset_offsets_to_datetime_replays_exactly_the_records_from_that_time() {
    let test = cluster_with_events().await;
    let bootstrap = test.cluster.bootstrap();
    let group = "replayers";
    let early = produce(&bootstrap, "early", 200).await;
    // T is a whole second (the flag's precision) after every early record and
    // before every late one.
    let at = (unix_now() + 0.3).ceil();
    tokio::time::sleep(Duration::from_secs_f64((at + 0.3 - unix_now()).max(0.0))).await;
    let late = produce(&bootstrap, "late", 200).await;
    let datetime = rfc3339(at as u64);
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for record in early.iter().chain(&late) {
        let end = ends.entry(record.partition).or_insert(0);
        *end = (*end).max(record.offset + 1);
    }
    assert_eq!(ends.len(), PARTITIONS, "round robin wrote every partition");
    let mut reset_to = ends.clone();
    for record in &late {
        let start = reset_to.get_mut(&record.partition).expect("a partition with an end");
        *start = (*start).min(record.offset);
    }

    info!("a member reads all 400 records, commits them and leaves");
    let args = ["--group-protocol", "classic", "--expect", "400", "--max-seconds", "45"];
    let reader = Member::start("reader", &bootstrap, group, &args).finish().await;
    let read: BTreeSet<String> = reader.iter().filter_map(as_record).map(|r| r.value).collect();
    assert_eq!(read.len(), 400, "the reader read each record once");
    let described = keelctl_json(&test, &["group", "describe", group, "--json"]).await;
    assert_eq!(described_offsets(&described, &ends), ends, "the reader committed every partition's end");
    assert!(described["state"].as_str().is_some_and(|s| s.eq_ignore_ascii_case("empty")), "{described}");
    assert_eq!(described["members"].as_array().map(Vec::len), Some(0), "{described}");
    let listed = keelctl_json(&test, &["group", "list", "--json"]).await;
    let entry = listed
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["group"] == group)
        .unwrap_or_else(|| panic!("{group} is listed: {listed}"));
    assert_eq!(entry["protocol_type"], "consumer", "{entry}");
    assert!(entry["state"].as_str().is_some_and(|s| s.eq_ignore_ascii_case("empty")), "{entry}");

    info!(%datetime, "a dry run prints the plan and changes nothing");
    let expected_plan: BTreeMap<i32, (i64, i64)> = ends.iter().map(|(&p, &end)| (p, (end, reset_to[&p]))).collect();
    let reset = ["group", "reset-offsets", group, "--topic", TOPIC, "--to-datetime", &datetime, "--json"];
    let dry = keelctl_json(&test, &[&reset[..], &["--dry-run"][..]].concat()).await;
    assert_eq!(plan_rows(&dry), expected_plan, "the dry run's plan: {dry}");
    let described = keelctl_json(&test, &["group", "describe", group, "--json"]).await;
    assert_eq!(described_offsets(&described, &ends), ends, "a dry run changes nothing");

    info!("the reset applies the plan");
    let applied = keelctl_json(&test, &reset).await;
    assert_eq!(plan_rows(&applied), expected_plan, "the applied plan: {applied}");
    let described = keelctl_json(&test, &["group", "describe", group, "--json"]).await;
    assert_eq!(described_offsets(&described, &ends), reset_to, "the group's offsets moved to {datetime}");
    let replayable: i64 = ends.iter().map(|(p, end)| end - reset_to[p]).sum();
    let admins: Vec<_> = test.cluster.brokers.iter().map(|b| b.spec.admin).collect();
    let lag_of_group = format!("keel_broker_group_lag{{group=\"{group}\"");
    keel_tests::eventually(Duration::from_secs(30), "keel_broker_group_lag shows the records to replay", || async {
        let lag = keel_tests::metric_sum(&admins, &lag_of_group).await;
        (lag == replayable as f64).then_some(())
    })
    .await;

    info!("a new member reads exactly the records from that time on");
    let replay = Member::start("replay", &bootstrap, group, &["--group-protocol", "classic", "--max-seconds", "45"]);
    wait_until(Duration::from_secs(30), "the new member read 200 records and committed the ends", &[&replay], || {
        (replay.records().len() >= 200 && replay.committed() == ends).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut values: Vec<String> = replay.records().into_iter().map(|r| r.value).collect();
    values.sort();
    let mut expected: Vec<String> = late.iter().map(|a| a.value.clone()).collect();
    expected.sort();
    assert_eq!(values, expected, "the new member read exactly the records from {datetime} on");

    info!("while the member is live, a reset is refused");
    let described = keelctl_json(&test, &["group", "describe", group, "--json"]).await;
    let members = described["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 1, "one live member: {described}");
    let owned: BTreeSet<i64> =
        members[0]["assignment"].as_array().into_iter().flatten().filter_map(|tp| tp["partition"].as_i64()).collect();
    assert_eq!(owned.len(), PARTITIONS, "the live member owns every partition: {described}");
    let refused = keelctl(&test, &["group", "reset-offsets", group, "--topic", TOPIC, "--to-earliest"]).await;
    let said = format!("{}{}", String::from_utf8_lossy(&refused.stdout), String::from_utf8_lossy(&refused.stderr));
    assert!(!refused.status.success(), "a reset of a group with a live member is refused: {said}");
    assert!(said.contains("NON_EMPTY_GROUP") || said.contains("not empty"), "the refusal says why: {said}");
    let described = keelctl_json(&test, &["group", "describe", group, "--json"]).await;
    assert_eq!(described_offsets(&described, &ends), ends, "the refused reset changed nothing");

    replay.sigterm().await;
    replay.finish().await;
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// KIP-848: two members on the consumer protocol (`group.protocol=consumer`,
/// ConsumerGroupHeartbeat) with the broker's `uniform` assignor get disjoint
/// assignments of 6 partitions each that cover all 12, keep them, and read
/// all of 1000 records between them, each record once, each member from its
/// own partitions only. One member subscribes by name, the other by a
/// regular expression; ConsumerGroupDescribe shows the same assignment.
#[tokio::test(flavor = "multi_thread")]
async fn a_kip848_consumer_joins_and_consumes() {
    let test = cluster_with_events().await;
    let bootstrap = test.cluster.bootstrap();
    let args = ["--group-protocol", "consumer", "--assignment-strategy", "uniform", "--max-seconds", "50"];
    let a = Member::start("a", &bootstrap, "newcomers", &args);
    // b subscribes by regular expression, matched by the coordinator (KIP-848).
    let b = Member::start("b", &bootstrap, "newcomers", &[&args[..], &["--topic", "^eve.*"]].concat());
    let owned = settled(&[&a, &b], "the two members split the 12 partitions").await;
    assert_eq!((owned[0].len(), owned[1].len()), (6, 6), "the uniform assignor balances: {owned:?}");

    info!("ConsumerGroupDescribe shows the group as the members see it");
    let (_, address) = find_coordinator(&bootstrap, "newcomers").await;
    let coordinator = Connection::connect(&address).await.unwrap();
    let request = ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id("newcomers")]);
    let described = call(&coordinator, 0, &request).await;
    let group = &described.groups[0];
    assert_eq!((group.error_code, group.group_state.as_str(), group.assignor_name.as_str()), (0, "Stable", "uniform"));
    let mut described_owned: Vec<BTreeSet<i32>> = group
        .members
        .iter()
        .map(|m| m.assignment.topic_partitions.iter().flat_map(|t| t.partitions.iter().copied()).collect())
        .collect();
    described_owned.sort();
    let mut expected = owned.clone();
    expected.sort();
    assert_eq!(described_owned, expected, "the described assignment is what the members own");

    let acked = produce(&bootstrap, "kip848", 1000).await;
    wait_until(Duration::from_secs(30), "the two members read every record", &[&a, &b], || {
        let read: BTreeSet<(i32, i64)> =
            [&a, &b].iter().flat_map(|m| m.records()).map(|r| (r.partition, r.offset)).collect();
        acked.iter().all(|x| read.contains(&(x.partition, x.offset))).then_some(())
    })
    .await;
    for (member, mine) in [&a, &b].iter().zip(&owned) {
        assert_eq!(member.assignment().map(|(assignment, _)| assignment).as_ref(), Some(mine), "{} kept", member.name);
        let foreign: Vec<Record> = member.records().into_iter().filter(|r| !mine.contains(&r.partition)).collect();
        assert!(foreign.is_empty(), "{} read partitions it does not own: {foreign:?}", member.name);
    }

    a.sigterm().await;
    b.sigterm().await;
    let logs = [a.finish().await, b.finish().await];
    assert_eq!(check_at_least_once(&logs, &acked), 0, "no record read twice without a failure");
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// Requests a well-behaved client never sends get Kafka's error codes from
/// the coordinator: JoinGroup (v4+) without a member id answers
/// MEMBER_ID_REQUIRED with an id to join with; SyncGroup of a generation that
/// does not exist yet is ILLEGAL_GENERATION; a Heartbeat from a member the
/// group does not know is UNKNOWN_MEMBER_ID; an OffsetCommit from a past
/// generation is ILLEGAL_GENERATION; committing an offset past a
/// partition's end succeeds, as in Kafka; committing a partition the member
/// was not assigned is ILLEGAL_GENERATION (its view of the group is stale);
/// deleting a group with members is NON_EMPTY_GROUP; and while a new member
/// joins, the others' heartbeats answer REBALANCE_IN_PROGRESS. The well-formed requests in
/// between succeed, so each error is about the one field that is wrong.
#[tokio::test(flavor = "multi_thread")]
async fn bad_group_requests_get_kafka_errors() {
    let test = cluster_with_events().await;
    let bootstrap = test.cluster.bootstrap();
    let group = "strict";
    let (_, address) = find_coordinator(&bootstrap, group).await;
    let coordinator = Connection::connect(&address).await.unwrap();

    info!("JoinGroup without a member id: MEMBER_ID_REQUIRED, with an id to use");
    let answer = call(&coordinator, JOIN_GROUP_VERSION, &join_request(group, StrBytes::default())).await;
    assert_eq!(answer.error_code, ResponseError::MemberIdRequired.code());
    assert!(!answer.member_id.is_empty(), "MEMBER_ID_REQUIRED comes with a member id");
    let member = answer.member_id.clone();
    let answer = call(&coordinator, JOIN_GROUP_VERSION, &join_request(group, member.clone())).await;
    assert_eq!(answer.error_code, 0, "the join with the given member id succeeds");
    assert_eq!(answer.leader, member, "the only member leads");
    let generation = answer.generation_id;
    assert!(generation >= 1, "generations count from 1: {generation}");

    info!("SyncGroup of the next generation: ILLEGAL_GENERATION");
    let answer = call(&coordinator, SYNC_GROUP_VERSION, &sync_request(group, generation + 1, &member, vec![])).await;
    assert_eq!(answer.error_code, ResponseError::IllegalGeneration.code());
    let everything = SyncGroupRequestAssignment::default()
        .with_member_id(member.clone())
        .with_assignment(assignment(TOPIC, PARTITIONS as i32 - 1));
    let answer =
        call(&coordinator, SYNC_GROUP_VERSION, &sync_request(group, generation, &member, vec![everything])).await;
    assert_eq!(answer.error_code, 0, "the leader's SyncGroup of the current generation succeeds");

    info!("Heartbeat from a member the group does not know: UNKNOWN_MEMBER_ID");
    let heartbeat = |member_id: StrBytes| {
        HeartbeatRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id(generation)
            .with_member_id(member_id)
    };
    let answer = call(&coordinator, HEARTBEAT_VERSION, &heartbeat(StrBytes::from_static_str("nobody"))).await;
    assert_eq!(answer.error_code, ResponseError::UnknownMemberId.code());
    let answer = call(&coordinator, HEARTBEAT_VERSION, &heartbeat(member.clone())).await;
    assert_eq!(answer.error_code, 0, "the member's own heartbeat succeeds");

    info!("OffsetCommit from a past generation: ILLEGAL_GENERATION");
    let stale = commit_error(&coordinator, group, generation - 1, &member, 0).await;
    assert_eq!(stale, ResponseError::IllegalGeneration.code());

    info!("OffsetCommit past the end of an empty partition succeeds, as in Kafka");
    let beyond = commit_error(&coordinator, group, generation, &member, 1_000_000).await;
    assert_eq!(beyond, 0, "any offset may be committed (issue 24)");
    let at_end = commit_error(&coordinator, group, generation, &member, 0).await;
    assert_eq!(at_end, 0, "committing the end itself succeeds");

    info!("OffsetCommit for a partition the member was not assigned: ILLEGAL_GENERATION");
    let last = PARTITIONS as i32 - 1;
    let foreign = commit_partition_error(&coordinator, group, generation, &member, last, 0).await;
    assert_eq!(foreign, ResponseError::IllegalGeneration.code());

    info!("DeleteGroups of a group with a live member: NON_EMPTY_GROUP");
    let delete = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
    let answer = call(&coordinator, DELETE_GROUPS_VERSION, &delete).await;
    assert_eq!(answer.results[0].error_code, ResponseError::NonEmptyGroup.code());

    info!("a second member joins: the first one's heartbeat says REBALANCE_IN_PROGRESS");
    // Its own connection: a connection's answers come in request order, and its join waits.
    let other = Connection::connect(&address).await.unwrap();
    let newcomer = call(&other, JOIN_GROUP_VERSION, &join_request(group, StrBytes::default())).await;
    assert_eq!(newcomer.error_code, ResponseError::MemberIdRequired.code());
    let second = other.submit(JOIN_GROUP_VERSION, &join_request(group, newcomer.member_id.clone())).await.unwrap();
    // The join went out on another connection: heartbeat until the coordinator has seen it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut answer = call(&coordinator, HEARTBEAT_VERSION, &heartbeat(member.clone())).await;
    while answer.error_code == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = call(&coordinator, HEARTBEAT_VERSION, &heartbeat(member.clone())).await;
    }
    assert_eq!(answer.error_code, ResponseError::RebalanceInProgress.code());
    let rejoined = call(&coordinator, JOIN_GROUP_VERSION, &join_request(group, member.clone())).await;
    assert_eq!((rejoined.error_code, rejoined.generation_id), (0, generation + 1), "the rebalance completes");
    assert_eq!(second.wait().await.unwrap().generation_id, generation + 1);

    info!("the topic is deleted: the group's offsets of it go with it");
    let before = keelctl_json(&test, &["group", "describe", group, "--json"]).await;
    assert!(!before["offsets"].as_array().unwrap().is_empty(), "the commit at the end is there: {before}");
    test.cluster.client().unwrap().delete_topic(TOPIC).await.unwrap();
    keel_tests::eventually(Duration::from_secs(10), "the group forgot the deleted topic's offsets", || async {
        let after = keelctl_json(&test, &["group", "describe", group, "--json"]).await;
        after["offsets"].as_array().unwrap().is_empty().then_some(())
    })
    .await;
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// A whole cluster (3 controllers, and a WAL node and a broker in each of
/// zones a, b, c) with topic "events" of 12 partitions, every one served.
async fn cluster_with_events() -> TestCluster {
    let test = TestCluster::start_full().await.unwrap();
    let create = keel_controller_client::pb::CreateTopicRequest {
        name: TOPIC.into(),
        partitions: PARTITIONS as i32,
        ..Default::default()
    };
    test.cluster.client().unwrap().create_topic(create).await.unwrap();
    kafka::ready_layout(&test.cluster.bootstrap(), TOPIC, Duration::from_secs(60)).await.unwrap();
    test
}

/// `tests/clients`, where the client scripts are.
fn clients() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo")).join("clients")
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() as f64 - 1.0) * q).round() as usize]
}

/// `unix_seconds` in RFC 3339, UTC, whole seconds (`2026-11-27T10:00:00Z`),
/// by the days-to-civil conversion of Howard Hinnant's date algorithms.
fn rfc3339(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let second_of_day = unix_seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let (hour, minute, second) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// Polls `check` every 50 ms until it returns `Some`; after `timeout`, fails
/// the test with what `members` printed last.
async fn wait_until<T>(timeout: Duration, what: &str, members: &[&Member], mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            let reports: Vec<String> = members.iter().map(|m| m.report()).collect();
            panic!("timed out after {timeout:?} waiting until {what}\n{}", reports.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `members` own every partition between them, each at least
/// one and none twice, with no assignment change for `QUIET_SECONDS`; returns
/// each member's partitions.
async fn settled(members: &[&Member], what: &str) -> Vec<BTreeSet<i32>> {
    wait_until(Duration::from_secs(45), what, members, || {
        let now = unix_now();
        let mut owned = Vec::new();
        for member in members {
            let (assignment, changed) = member.assignment()?;
            if now - changed < QUIET_SECONDS {
                return None;
            }
            owned.push(assignment);
        }
        shares_the_topic(&owned).then_some(owned)
    })
    .await
}

/// Whether `owned` (one set per member) covers every partition, each once,
/// with no member left without one.
fn shares_the_topic(owned: &[BTreeSet<i32>]) -> bool {
    let total: usize = owned.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = owned.iter().flatten().copied().collect();
    owned.iter().all(|partitions| !partitions.is_empty()) && total == PARTITIONS && union.len() == PARTITIONS
}

/// One read of a record: (time, member index, value).
type Read = (f64, usize, String);

/// Checks at-least-once delivery over the members' event logs and returns how
/// many reads were repeats. Every acknowledged record was read, with the
/// value it was acknowledged with; one offset never held two values; and a
/// record read again had not been committed past by its first reader before
/// the repeat (what was committed is never handed out again).
fn check_at_least_once(logs: &[Vec<Value>], acked: &[Acked]) -> usize {
    let mut reads: BTreeMap<(i32, i64), Vec<Read>> = BTreeMap::new();
    for (member, events) in logs.iter().enumerate() {
        for record in events.iter().filter_map(as_record) {
            reads.entry((record.partition, record.offset)).or_default().push((record.t, member, record.value));
        }
    }
    for a in acked {
        let seen = reads.get(&(a.partition, a.offset)).unwrap_or_else(|| panic!("acknowledged {a:?} was never read"));
        assert!(seen.iter().all(|(_, _, value)| *value == a.value), "{a:?} was read with another value: {seen:?}");
    }
    let commits: Vec<Vec<(f64, i32, i64)>> = logs.iter().map(|events| commits_in(events)).collect();
    let mut repeats = 0;
    for (&(partition, offset), seen) in reads.iter_mut() {
        seen.sort_by(|x, y| x.0.total_cmp(&y.0));
        assert!(seen.iter().all(|read| read.2 == seen[0].2), "{partition}@{offset} held two values: {seen:?}");
        let first = seen[0].1;
        for (t, reader, _) in &seen[1..] {
            repeats += 1;
            let covered = commits[first].iter().any(|&(at, p, next)| at < *t && p == partition && next > offset);
            assert!(
                !covered,
                "{partition}@{offset} was read again by member {reader} at {t} after member {first} had committed past it"
            );
        }
    }
    repeats
}

/// Every successful commit in `events`: (time, partition, next offset).
fn commits_in(events: &[Value]) -> Vec<(f64, i32, i64)> {
    let mut commits = Vec::new();
    for event in events.iter().filter(|e| e["event"] == "committed") {
        let at = event["t"].as_f64().expect("an event time");
        for offset in event["offsets"].as_array().into_iter().flatten() {
            if let (Some(partition), Some(next)) = (offset[1].as_i64(), offset[2].as_i64()) {
                commits.push((at, partition as i32, next));
            }
        }
    }
    commits
}

/// Each partition's last successfully committed offset in `events`.
fn committed_offsets(events: &[Value]) -> BTreeMap<i32, i64> {
    commits_in(events).into_iter().map(|(_, partition, next)| (partition, next)).collect()
}

/// A record event of `group_consume.py`.
#[derive(Clone, Debug)]
struct Record {
    partition: i32,
    offset: i64,
    value: String,
    /// Unix time at which the member processed it.
    t: f64,
}

fn as_record(event: &Value) -> Option<Record> {
    if event["event"] != "record" {
        return None;
    }
    Some(Record {
        partition: event["partition"].as_i64()? as i32,
        offset: event["offset"].as_i64()?,
        value: event["value"].as_str()?.to_owned(),
        t: event["t"].as_f64()?,
    })
}

fn is_rebalance(event: &Value) -> bool {
    ["assigned", "revoked", "lost"].iter().any(|kind| event["event"] == *kind)
}

/// The partitions of a `[[topic, partition], ...]` list.
fn partitions(list: &Value) -> BTreeSet<i32> {
    list.as_array().into_iter().flatten().filter_map(|tp| tp[1].as_i64()).map(|p| p as i32).collect()
}

/// `clients/group_consume.py`: one member of a group, and the events it has printed so far.
struct Member {
    name: String,
    child: tokio::process::Child,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: tokio::task::JoinSet<()>,
}

impl Member {
    /// Starts a member of `group` reading "events", with more flags of `group_consume.py` in `args`.
    fn start(name: &str, bootstrap: &str, group: &str, args: &[&str]) -> Member {
        info!(member = name, group, ?args, "start a group member");
        let mut child = tokio::process::Command::new(keel_tools::launcher::python())
            .arg(clients().join("group_consume.py"))
            .args(["--bootstrap", bootstrap, "--topic", TOPIC, "--group", group])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start group_consume.py");
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let stderr: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut out = BufReader::new(child.stdout.take().expect("a piped stdout")).lines();
        let mut err = BufReader::new(child.stderr.take().expect("a piped stderr")).lines();
        let mut readers = tokio::task::JoinSet::new();
        readers.spawn({
            let events = events.clone();
            async move {
                while let Ok(Some(line)) = out.next_line().await {
                    let event = match serde_json::from_str::<Value>(&line) {
                        Ok(event) => event,
                        Err(_) => json!({ "event": "unparsed", "line": line }),
                    };
                    events.lock().unwrap().push(event);
                }
            }
        });
        readers.spawn({
            let stderr = stderr.clone();
            async move {
                while let Ok(Some(line)) = err.next_line().await {
                    stderr.lock().unwrap().push(line);
                }
            }
        });
        Member { name: name.to_owned(), child, events, stderr, readers }
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    fn records(&self) -> Vec<Record> {
        self.events().iter().filter_map(as_record).collect()
    }

    /// The member's whole assignment after its last assigned, revoked or lost
    /// event, and that event's time; `None` before its first.
    fn assignment(&self) -> Option<(BTreeSet<i32>, f64)> {
        let events = self.events.lock().unwrap();
        let last = events.iter().rev().find(|e| is_rebalance(e))?;
        Some((partitions(&last["assignment"]), last["t"].as_f64()?))
    }

    /// The assigned, revoked and lost events after Unix time `t`.
    fn rebalances_after(&self, t: f64) -> Vec<Value> {
        self.events().into_iter().filter(|e| is_rebalance(e) && e["t"].as_f64().is_some_and(|at| at > t)).collect()
    }

    /// Each partition's offset in the member's last successful commit of it.
    fn committed(&self) -> BTreeMap<i32, i64> {
        committed_offsets(&self.events())
    }

    /// Asks the member to stop with SIGTERM: it closes its consumer and prints "done".
    async fn sigterm(&self) {
        let pid = self.child.id().expect("the member is running").to_string();
        let status = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Kills the member with SIGKILL: no commit, no LeaveGroup.
    async fn kill9(&mut self) {
        self.child.start_kill().expect("send SIGKILL");
        self.child.wait().await.unwrap();
    }

    /// Every event of a member that exited (killed, for one), once its output is read to the end.
    async fn into_events(mut self) -> Vec<Value> {
        while let Some(reader) = self.readers.join_next().await {
            reader.unwrap();
        }
        self.events()
    }

    /// Waits (at most 60 s) for the member to exit by itself and fails the
    /// test unless it exited successfully after printing "done"; returns its events.
    async fn finish(mut self) -> Vec<Value> {
        let waited = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        let status = match waited {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("{} did not exit within 60 s\n{}", self.name, self.report()),
        };
        while let Some(reader) = self.readers.join_next().await {
            reader.unwrap();
        }
        let events = self.events();
        let done = events.last().is_some_and(|e| e["event"] == "done");
        assert!(
            status.success() && done,
            "{} exited with {status}, \"done\" printed: {done}\n{}",
            self.name,
            self.report()
        );
        events
    }

    /// The member's last 40 events and stderr lines, for failure messages.
    fn report(&self) -> String {
        let events = self.events();
        let stderr = self.stderr.lock().unwrap();
        let events: Vec<String> = events[events.len().saturating_sub(40)..].iter().map(ToString::to_string).collect();
        format!(
            "---- last events of {} ----\n{}\n---- last stderr lines of {} ----\n{}",
            self.name,
            events.join("\n"),
            self.name,
            stderr[stderr.len().saturating_sub(40)..].join("\n"),
        )
    }
}

/// A record the producer had acknowledged.
#[derive(Clone, Debug)]
struct Acked {
    partition: i32,
    offset: i64,
    value: String,
}

/// `clients/group_produce.py`, running.
struct Producer {
    child: tokio::process::Child,
}

impl Producer {
    /// Starts writing `PREFIX-n` values round robin over the partitions of "events"; `args` says how many and how fast.
    fn start(bootstrap: &str, prefix: &str, args: &[&str]) -> Producer {
        let child = tokio::process::Command::new(keel_tools::launcher::python())
            .arg(clients().join("group_produce.py"))
            .args(["--bootstrap", bootstrap, "--topic", TOPIC, "--prefix", prefix])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start group_produce.py");
        Producer { child }
    }

    /// Waits for the producer to finish and returns what was acknowledged;
    /// fails the test if any record failed.
    async fn finish(self) -> Vec<Acked> {
        let output = tokio::time::timeout(Duration::from_secs(90), self.child.wait_with_output())
            .await
            .expect("the producer finished within 90 s")
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "group_produce.py failed:\n{stdout}\n{stderr}");
        let result = stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<Value>(line).ok().filter(|v| v.get("acked").is_some()))
            .unwrap_or_else(|| panic!("group_produce.py printed no result:\n{stdout}\n{stderr}"));
        assert_eq!(result["failed"].as_u64(), Some(0), "every record delivered: {}", result["first_failure"]);
        assert_eq!(result["unflushed"].as_u64(), Some(0), "every record flushed");
        let acked = result["acked"].as_array().expect("an acked list");
        acked
            .iter()
            .map(|a| Acked {
                partition: a[0].as_i64().expect("a partition") as i32,
                offset: a[1].as_i64().expect("an offset"),
                value: a[2].as_str().expect("a value").to_owned(),
            })
            .collect()
    }
}

/// Writes `count` records as fast as the producer can; returns them once all are acknowledged.
async fn produce(bootstrap: &str, prefix: &str, count: usize) -> Vec<Acked> {
    let acked = Producer::start(bootstrap, prefix, &["--count", &count.to_string()]).finish().await;
    assert_eq!(acked.len(), count, "every record acknowledged");
    acked
}

/// Runs `keelctl --controllers <the cluster's> ARGS` and returns its output.
async fn keelctl(test: &TestCluster, args: &[&str]) -> std::process::Output {
    let run = keel_tests::keelctl(test).args(args).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(30), run).await.expect("keelctl finished within 30 s").unwrap()
}

/// The JSON that a successful `keelctl ARGS` printed.
async fn keelctl_json(test: &TestCluster, args: &[&str]) -> Value {
    let output = keelctl(test, args).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let command = args.join(" ");
    assert!(output.status.success(), "keelctl {command} failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("keelctl {command} printed no JSON ({error}): {stdout}"))
}

/// Partition -> committed offset of "events" in a `keelctl group describe
/// --json` answer (partitions without a commit left out), after checking
/// each row's end against `ends` and its lag against both.
fn described_offsets(described: &Value, ends: &BTreeMap<i32, i64>) -> BTreeMap<i32, i64> {
    let mut committed = BTreeMap::new();
    for row in described["offsets"].as_array().into_iter().flatten().filter(|row| row["topic"] == TOPIC) {
        let partition = row["partition"].as_i64().expect("a partition") as i32;
        let Some(offset) = row["committed"].as_i64().filter(|offset| *offset >= 0) else { continue };
        let end = ends.get(&partition).copied();
        assert_eq!(row["end"].as_i64(), end, "partition {partition}'s end: {described}");
        assert_eq!(row["lag"].as_i64(), end.map(|end| end - offset), "partition {partition}'s lag: {described}");
        committed.insert(partition, offset);
    }
    committed
}

/// Partition -> (current, new) of "events" in a `keelctl group reset-offsets
/// --json` plan: an array of {"topic", "partition", "current", "new"}, or an
/// object holding one.
fn plan_rows(plan: &Value) -> BTreeMap<i32, (i64, i64)> {
    let rows = match plan {
        Value::Array(rows) => rows.clone(),
        Value::Object(fields) => fields.values().find_map(|value| value.as_array().cloned()).unwrap_or_default(),
        _ => Vec::new(),
    };
    rows.iter()
        .filter(|row| row["topic"] == TOPIC)
        .map(|row| {
            let partition = row["partition"].as_i64().expect("a partition") as i32;
            (partition, (row["current"].as_i64().unwrap_or(-1), row["new"].as_i64().expect("a new offset")))
        })
        .collect()
}

/// The coordinator of `group` (broker id, Kafka address) by FindCoordinator
/// v4, asking the brokers in turn until one is available (its
/// `__consumer_offsets` partition may still be starting).
async fn find_coordinator(bootstrap: &str, group: &str) -> (i32, String) {
    let request = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![StrBytes::from_string(group.to_owned())]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut addrs = bootstrap.split(',').cycle();
    let mut last = String::new();
    loop {
        assert!(Instant::now() < deadline, "no coordinator for {group} within 30 s: {last}");
        let addr = addrs.next().expect("a bootstrap address");
        match Connection::connect(addr).await {
            Ok(connection) => {
                let answer = call(&connection, FIND_COORDINATOR_VERSION, &request).await;
                let found = answer.coordinators.first().expect("an answer for the one key");
                let address = format!("{}:{}", found.host, found.port);
                if found.error_code == 0 && coordinator_loaded(&address, group).await {
                    return (found.node_id.0, address);
                }
                last = format!("{addr}: error {} (0: {address} still loading)", found.error_code);
            }
            Err(error) => last = format!("{error:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the coordinator at `address` has loaded `group`'s partition of
/// `__consumer_offsets`: FindCoordinator names it at once, and until then
/// it answers COORDINATOR_LOAD_IN_PROGRESS (a client retries on that).
async fn coordinator_loaded(address: &str, group: &str) -> bool {
    let Ok(connection) = Connection::connect(address).await else { return false };
    let request = ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id(group)]);
    let described = call(&connection, 0, &request).await;
    described.groups[0].error_code != ResponseError::CoordinatorLoadInProgress.code()
}

/// Sends `request` and returns the answer; fails the test after 30 s without one.
async fn call<R: Request>(connection: &Connection, version: i16, request: &R) -> R::Response {
    tokio::time::timeout(Duration::from_secs(30), connection.send(version, request))
        .await
        .unwrap_or_else(|_| panic!("no answer to API key {} within 30 s", R::KEY))
        .unwrap()
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_owned()))
}

/// A consumer's JoinGroup (the `range` protocol, subscribed to "events").
fn join_request(group: &str, member_id: StrBytes) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group_id(group))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(member_id)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(subscription(TOPIC))])
}

fn sync_request(
    group: &str,
    generation: i32,
    member_id: &StrBytes,
    assignments: Vec<SyncGroupRequestAssignment>,
) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(generation)
        .with_member_id(member_id.clone())
        .with_assignments(assignments)
}

/// The error code of committing `offset` for partition 0 of "events" as `member` of `generation`.
async fn commit_error(coordinator: &Connection, group: &str, generation: i32, member: &StrBytes, offset: i64) -> i16 {
    commit_partition_error(coordinator, group, generation, member, 0, offset).await
}

async fn commit_partition_error(
    coordinator: &Connection,
    group: &str,
    generation: i32,
    member: &StrBytes,
    partition: i32,
    offset: i64,
) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(member.clone())
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)])]);
    let answer = call(coordinator, OFFSET_COMMIT_VERSION, &request).await;
    answer.topics.first().and_then(|t| t.partitions.first()).map(|p| p.error_code).expect("an answer for the partition")
}

/// A ConsumerProtocolSubscription v0 of `topic`: a JoinGroup protocol's metadata.
fn subscription(topic: &str) -> Bytes {
    let mut bytes = BytesMut::new();
    bytes.put_i16(0); // version
    bytes.put_i32(1); // topics
    put_string(&mut bytes, topic);
    bytes.put_i32(-1); // no user data
    bytes.freeze()
}

/// A ConsumerProtocolAssignment v0 of partitions 0..count of `topic`: a SyncGroup assignment.
fn assignment(topic: &str, count: i32) -> Bytes {
    let mut bytes = BytesMut::new();
    bytes.put_i16(0); // version
    bytes.put_i32(1); // topics
    put_string(&mut bytes, topic);
    bytes.put_i32(count);
    for partition in 0..count {
        bytes.put_i32(partition);
    }
    bytes.put_i32(-1); // no user data
    bytes.freeze()
}

fn put_string(bytes: &mut BytesMut, value: &str) {
    bytes.put_i16(value.len() as i16);
    bytes.put_slice(value.as_bytes());
}
