//! The S3 tier end to end: brokers upload their WAL data as objects, commit
//! them with the WAL trim point, WAL nodes trim from the committed point, and
//! records below the uploaded end are read back from the objects, also by a
//! restarted broker with an empty cache. Once against the local-directory
//! backend, once against a real S3-compatible server (moto's).

use std::time::Duration;

use keel_proto::wal as pb;
use keel_tests::{eventually, TestCluster};
use keel_tools::launcher::metric_value;

use crate::broker_kcat::{consume_all, kcat};

/// Produces `count` keyed records to a fresh 3-partition topic "history",
/// waits until all of them are uploaded and the WAL nodes have trimmed, then
/// restarts the broker and reads everything back from the objects.
async fn upload_trim_and_read_back(test: &mut TestCluster, count: usize) {
    let bootstrap = test.cluster.bootstrap();
    let client = test.cluster.client().unwrap();
    let create =
        keel_controller_client::pb::CreateTopicRequest { name: "history".into(), partitions: 3, ..Default::default() };
    client.create_topic(create).await.unwrap();
    let input: String = (0..count).map(|i| format!("k{}:event-{i}\n", i % 17)).collect();
    kcat(&["-b", &bootstrap, "-P", "-t", "history", "-K", ":", "-X", "acks=all"], &input).await;
    let produced = consume_all(&bootstrap, "history").await;
    assert_eq!(produced.len(), count);

    // Every partition's uploaded end reaches its high watermark, and the log's trim point follows.
    let ends: Vec<i64> =
        (0..3u32).map(|p| produced.iter().filter(|(partition, _, _)| *partition == p).count() as i64).collect();
    let image = eventually(Duration::from_secs(60), "every record uploaded", || async {
        let image = client.read_image().await.ok()?;
        let uploaded: Vec<i64> = image.topics["history"].partitions.iter().map(|p| p.uploaded_end.0).collect();
        (uploaded == ends).then_some(image)
    })
    .await;
    assert!(!image.objects.is_empty());
    let log = image.wal_logs.values().next().unwrap().clone();
    assert!(log.trim_seq.0 > 0, "the trim point was committed with the objects: {log:?}");

    // Each WAL node trims its copy from the committed point.
    for wal in &test.cluster.wal_nodes {
        let addr = wal.spec.grpc;
        eventually(Duration::from_secs(30), "the WAL node trimmed", || async {
            let mut node = keel_tests::wal_client(addr).await.ok()?;
            let status = node.status(pb::StatusRequest {}).await.ok()?.into_inner();
            let held = status.logs.iter().find(|l| l.log == log.id.0)?;
            (held.trim_seq >= log.trim_seq.0).then_some(())
        })
        .await;
    }

    // A restarted broker has an empty cache and a trimmed WAL: the records come from the objects.
    test.restart_broker(0, "history").await.unwrap();
    let read_back = consume_all(&bootstrap, "history").await;
    assert_eq!(read_back, produced, "every record at its offset, read back from the objects");
    let admin = test.cluster.brokers[0].spec.admin;
    let (_, metrics) = keel_tools::launcher::http_get(admin, "/metrics").await.unwrap();
    let served = metric_value(&metrics, "keel_broker_object_read_bytes_total");
    assert!(served > 0.0, "the fetches were served from the object store:\n{metrics}");

    // Offsets continue after the uploaded ones, though the trimmed WAL no longer tells where they ended.
    let more: String = (count..count + 30).map(|i| format!("k{}:event-{i}\n", i % 17)).collect();
    kcat(&["-b", &bootstrap, "-P", "-t", "history", "-K", ":", "-X", "acks=all"], &more).await;
    let all = consume_all(&bootstrap, "history").await;
    assert_eq!(all.len(), count + 30);
    for partition in 0..3u32 {
        let offsets: Vec<i64> = all.iter().filter(|(p, _, _)| *p == partition).map(|(_, o, _)| *o).collect();
        let dense: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, dense, "partition {partition}: no offset reused or skipped");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn uploaded_history_is_trimmed_from_the_wal_and_read_back_from_a_local_directory() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    test.start_brokers(1, &["--upload-interval", "200ms"]).await.unwrap();
    upload_trim_and_read_back(&mut test, 3000).await;
    let objects = walk(&test.cluster.dir.join("objects"));
    assert!(!objects.is_empty(), "objects were written under the local directory");

    // Damage every object's first batch; a broker with a cold cache must not serve it.
    for path in &objects {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[70] ^= 0xff;
        std::fs::write(path, bytes).unwrap();
    }
    test.restart_broker(0, "history").await.unwrap();
    let connection = keel_tools::kafka::Connection::connect(&test.cluster.bootstrap()).await.unwrap();
    let fetch = keel_tools::kafka::fetch_request("history", 0, 0, 0, 1 << 20);
    let answer = connection.send(keel_tools::kafka::FETCH_VERSION, &fetch).await.unwrap();
    let (error, _, records) = keel_tools::kafka::fetch_result(&answer).unwrap();
    let storage_error = kafka_protocol::error::ResponseError::KafkaStorageError.code();
    assert_eq!((error, records.len()), (storage_error, 0), "a damaged object is never served");
    let admin = test.cluster.brokers[0].spec.admin;
    let (_, metrics) = keel_tools::launcher::http_get(admin, "/metrics").await.unwrap();
    assert!(
        metric_value(&metrics, "keel_broker_object_read_failures_total") > 0.0,
        "the damage is visible in the metrics:\n{metrics}"
    );
    let allowed = [keel_tests::PEER_UNREACHABLE, &["cold read failed", "WAL read failed", "Fetch"]].concat();
    test.assert_clean_logs(&allowed);
}

#[tokio::test(flavor = "multi_thread")]
async fn uploaded_history_is_read_back_from_an_s3_compatible_server() {
    let s3 = keel_tools::s3::S3Server::start().await.unwrap();
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    let endpoint = s3.endpoint();
    let args = keel_tools::s3::broker_args(&endpoint, s3.bucket(), &["--upload-interval", "200ms"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    test.start_brokers(1, &args).await.unwrap();
    upload_trim_and_read_back(&mut test, 2000).await;
    assert!(s3.object_count().await.unwrap() > 0, "objects were PUT to the S3 server");
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// The S3 backend against a real S3-compatible server: a multipart upload
/// (over one part), ranged reads, a read past the end, a missing key, delete.
#[tokio::test(flavor = "multi_thread")]
async fn the_s3_backend_uploads_in_parts_and_reads_ranges() {
    use keel_objects::{ObjectStore, S3Config, S3Store, StoreError};

    let s3 = keel_tools::s3::S3Server::start().await.unwrap();
    let config = S3Config {
        bucket: s3.bucket().to_owned(),
        endpoint: s3.endpoint(),
        region: "us-east-1".into(),
        path_style: true,
        access_key_id: "keel".into(),
        secret_access_key: "keel-secret".into(),
        max_attempts: 3,
    };
    let store = S3Store::connect(config).await.unwrap();
    let big: Vec<u8> = (0..keel_objects::s3::PART_BYTES + 1000).map(|i| (i % 251) as u8).collect();
    store.put("ab/big.obj", bytes::Bytes::from(big.clone())).await.unwrap();
    let pos = keel_objects::s3::PART_BYTES as u64 - 10;
    let read = store.get_range("ab/big.obj", pos, 100).await.unwrap();
    assert_eq!(&read[..], &big[pos as usize..pos as usize + 100], "a range across the part boundary");
    let past = store.get_range("ab/big.obj", big.len() as u64 - 5, 10).await;
    assert!(matches!(past, Err(StoreError::OutOfRange { .. })), "{past:?}");
    let missing = store.get_range("ab/none.obj", 0, 1).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
    store.delete("ab/big.obj").await.unwrap();
    assert_eq!(s3.object_count().await.unwrap(), 0);
}

/// retention.ms moves a partition's start offset past records older than
/// it, once they are uploaded; the objects left with nothing readable leave
/// the index and, after the delete delay, the store. Readers then start at
/// the new start offset, and new records still get the next offsets.
/// retention.bytes drops the oldest ranges beyond the size.
#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_old_history_and_its_objects() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    let args = ["--upload-interval", "200ms", "--retention-check-interval", "200ms", "--object-delete-delay", "500ms"];
    test.start_brokers(1, &args).await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let client = test.cluster.client().unwrap();
    let create = keel_controller_client::pb::CreateTopicRequest {
        name: "clicks".into(),
        partitions: 1,
        configs: [("retention.ms".to_string(), "1500".to_string())].into(),
        ..Default::default()
    };
    client.create_topic(create).await.unwrap();
    let input: String = (0..500).map(|i| format!("click-{i}\n")).collect();
    kcat(&["-b", &bootstrap, "-P", "-t", "clicks", "-X", "acks=all"], &input).await;

    eventually(Duration::from_secs(60), "retention moved the start offset and the objects went", || async {
        let image = client.read_image().await.ok()?;
        let partition = &image.topics["clicks"].partitions[0];
        let gone = image.objects.is_empty() && image.deleted_objects.is_empty();
        (partition.start_offset.0 == 500 && gone).then_some(())
    })
    .await;
    let files: Vec<_> = walk(&test.cluster.dir.join("objects"));
    assert!(files.is_empty(), "the deleted objects' files are gone: {files:?}");

    kcat(&["-b", &bootstrap, "-P", "-t", "clicks", "-X", "acks=all"], "late-click\n").await;
    let records = consume_all(&bootstrap, "clicks").await;
    assert_eq!(records, vec![(0, 500, "late-click".to_string())], "readers start at the new start offset");

    // retention.bytes: of two uploaded ranges, only the newest is kept (it alone is over 1 byte).
    let create = keel_controller_client::pb::CreateTopicRequest {
        name: "views".into(),
        partitions: 1,
        configs: [("retention.bytes".to_string(), "1".to_string())].into(),
        ..Default::default()
    };
    client.create_topic(create).await.unwrap();
    for round in 0..2 {
        let input: String = (round * 100..round * 100 + 100).map(|i| format!("view-{i}\n")).collect();
        kcat(&["-b", &bootstrap, "-P", "-t", "views", "-X", "acks=all"], &input).await;
        // Each round in its own upload, so there are two ranges.
        let produced = (round + 1) * 100;
        eventually(Duration::from_secs(30), "the round uploaded", || async {
            let image = client.read_image().await.ok()?;
            (image.topics["views"].partitions[0].uploaded_end.0 == produced as i64).then_some(())
        })
        .await;
    }
    let start = eventually(Duration::from_secs(60), "retention.bytes moved the start offset", || async {
        let image = client.read_image().await.ok()?;
        let partition = &image.topics["views"].partitions[0];
        (partition.uploaded_end.0 == 200 && partition.start_offset.0 > 0).then_some(partition.start_offset.0)
    })
    .await;
    assert!(start < 200, "the newest range stays readable (start {start})");
    let views = consume_all(&bootstrap, "views").await;
    assert_eq!(views.first().map(|(_, offset, _)| *offset), Some(start));
    assert_eq!(views.len() as i64, 200 - start);
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Object-store faults (500s, throttling, an outage) while producing: every
/// produce is still acknowledged (the WAL holds the data), uploads fail and
/// are retried, and once the store is back they catch up; a restarted broker
/// then reads every acknowledged record back from the objects.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_ride_out_object_store_errors_throttling_and_an_outage() {
    use keel_tools::s3::{Fault, FaultProxy};

    let s3 = keel_tools::s3::S3Server::start().await.unwrap();
    let proxy = FaultProxy::start(s3.addr()).await.unwrap();
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    let endpoint = proxy.endpoint();
    let args = keel_tools::s3::broker_args(&endpoint, s3.bucket(), &["--upload-interval", "100ms"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    test.start_brokers(1, &args).await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let client = test.cluster.client().unwrap();
    let create =
        keel_controller_client::pb::CreateTopicRequest { name: "ledger".into(), partitions: 3, ..Default::default() };
    client.create_topic(create).await.unwrap();

    let mut produced = 0;
    for fault in [Fault::ServerError, Fault::Throttle, Fault::Outage, Fault::None] {
        proxy.set(fault);
        let input: String = (produced..produced + 500).map(|i| format!("k{}:entry-{i}\n", i % 11)).collect();
        kcat(&["-b", &bootstrap, "-P", "-t", "ledger", "-K", ":", "-X", "acks=all"], &input).await;
        produced += 500;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let acknowledged = consume_all(&bootstrap, "ledger").await;
    assert_eq!(acknowledged.len(), produced);
    let ends: Vec<i64> = (0..3u32).map(|p| acknowledged.iter().filter(|(q, _, _)| *q == p).count() as i64).collect();
    eventually(Duration::from_secs(60), "uploads caught up", || async {
        let image = client.read_image().await.ok()?;
        let uploaded: Vec<i64> = image.topics["ledger"].partitions.iter().map(|p| p.uploaded_end.0).collect();
        (uploaded == ends).then_some(())
    })
    .await;
    let admin = test.cluster.brokers[0].spec.admin;
    let (_, metrics) = keel_tools::launcher::http_get(admin, "/metrics").await.unwrap();
    let failures = metric_value(&metrics, "keel_broker_upload_failures_total");
    assert!(failures > 0.0, "the injected faults failed some uploads:\n{metrics}");

    test.restart_broker(0, "ledger").await.unwrap();
    assert_eq!(consume_all(&bootstrap, "ledger").await, acknowledged, "nothing acknowledged was lost");
    // Failed uploads are logged as warnings by design; that is what this test provokes.
    test.assert_clean_logs(&[keel_tests::PEER_UNREACHABLE, &["upload failed, retrying"]].concat());
}

/// DESIGN §3-4 at volume: 128 MiB (KEEL_TIER_BYTES for more) over 24
/// partitions through three brokers; objects appear and the WAL nodes'
/// journals shrink back once their data is uploaded; then every broker and
/// every WAL node is killed and restarted, and reading from offset 0 gives
/// every acknowledged record, identical (a checksum of offsets and values
/// per partition).
#[tokio::test(flavor = "multi_thread")]
async fn a_large_history_survives_a_restart_of_every_broker_and_wal_node() {
    use bytes::Bytes;
    use keel_tools::kafka::{self, Connection};

    let total: usize = std::env::var("KEEL_TIER_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(128 << 20);
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    test.start_brokers(3, &["--upload-interval", "200ms"]).await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let first = Connection::connect(bootstrap.split(',').next().unwrap()).await.unwrap();
    kafka::create_topic(&first, "volume", 24).await.unwrap();
    // Every leader serves its partitions (a broker's metadata may show a new
    // topic a moment after the one that created it).
    let layout = kafka::ready_layout(&bootstrap, "volume", Duration::from_secs(60)).await.unwrap();
    let mut connections = std::collections::HashMap::new();
    for (id, addr) in &layout.brokers {
        connections.insert(*id, std::sync::Arc::new(Connection::connect(addr).await.unwrap()));
    }

    // 32 records of 1 KiB per batch, round robin over the partitions, 8 requests in flight.
    let batches = total / (32 << 10);
    let mut expected = vec![Checksum::default(); 24];
    let mut pending = std::collections::VecDeque::new();
    for n in 0..batches {
        let partition = (n % 24) as i32;
        let values: Vec<Bytes> = (0..32).map(|i| record_value(n, i)).collect();
        let batch = kafka::batch(&values, 1_000, None).unwrap();
        let connection = connections[&layout.leaders[partition as usize]].clone();
        let answer = connection
            .submit(kafka::PRODUCE_VERSION, &kafka::produce_request("volume", partition, -1, batch))
            .await
            .unwrap();
        pending.push_back((partition, values, answer));
        if pending.len() >= 8 {
            let (partition, values, answer) = pending.pop_front().unwrap();
            let (error, base) = kafka::produce_result(&answer.wait().await.unwrap()).unwrap();
            assert_eq!(error, 0);
            expected[partition as usize].add_batch(base, &values);
        }
    }
    for (partition, values, answer) in pending {
        let (error, base) = kafka::produce_result(&answer.wait().await.unwrap()).unwrap();
        assert_eq!(error, 0);
        expected[partition as usize].add_batch(base, &values);
    }

    let client = test.cluster.client().unwrap();
    eventually(Duration::from_secs(120), "everything uploaded", || async {
        let image = client.read_image().await.ok()?;
        let uploaded: Vec<i64> = image.topics["volume"].partitions.iter().map(|p| p.uploaded_end.0).collect();
        (uploaded == expected.iter().map(|c| c.next).collect::<Vec<_>>()).then_some(())
    })
    .await;
    let segment = 64u64 << 20;
    for wal in &test.cluster.wal_nodes {
        let addr = wal.spec.grpc;
        eventually(Duration::from_secs(30), "the WAL journal shrank back", || async {
            let mut node = keel_tests::wal_client(addr).await.ok()?;
            let status = node.status(pb::StatusRequest {}).await.ok()?.into_inner();
            (status.disk_bytes <= 2 * segment).then_some(())
        })
        .await;
    }

    for index in 0..3 {
        test.cluster.brokers[index].kill9();
        test.cluster.wal_nodes[index].kill9();
    }
    test.cluster.start_all_wal().unwrap();
    test.cluster.wait_for_wal_nodes(Duration::from_secs(60)).await.unwrap();
    test.cluster.start_all_brokers().unwrap();
    test.cluster.wait_for_brokers(Duration::from_secs(60)).await.unwrap();

    let layout = kafka::ready_layout(&bootstrap, "volume", Duration::from_secs(60)).await.unwrap();
    for (partition, expected) in expected.iter().enumerate() {
        let leader = Connection::connect(&layout.brokers[&layout.leaders[partition]]).await.unwrap();
        let mut read = Checksum::default();
        while read.next < expected.next {
            let request = kafka::fetch_request("volume", partition as i32, read.next, 100, 4 << 20);
            let (error, _, records) =
                kafka::fetch_result(&leader.send(kafka::FETCH_VERSION, &request).await.unwrap()).unwrap();
            assert_eq!(error, 0, "partition {partition} at {}", read.next);
            for (_, _, batch) in kafka::split_batches(&records) {
                let mut batch = Bytes::copy_from_slice(batch);
                let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch).unwrap();
                for record in set.records {
                    assert_eq!(record.offset, read.next, "partition {partition}: offsets follow one another");
                    read.add(record.offset, record.value.as_deref().unwrap_or_default());
                }
            }
        }
        assert_eq!(&read, expected, "partition {partition} reads back identical");
    }
    // Killing every WAL node makes writers and recoveries retry: expected here.
    let expected_warnings = [
        "lost a WAL member",
        "member did not confirm the fence",
        "take-over failed, retrying",
        "upload failed, retrying",
        "failover step failed, retrying",
    ];
    test.assert_clean_logs(&[keel_tests::PEER_UNREACHABLE, &expected_warnings].concat());
}

/// A value of 1 KiB that differs per batch and record.
fn record_value(batch: usize, record: usize) -> bytes::Bytes {
    let seed = (batch * 32 + record) as u64;
    let mut value = Vec::with_capacity(1024);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while value.len() < 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        value.extend_from_slice(&x.to_le_bytes());
    }
    bytes::Bytes::from(value)
}

/// A running checksum of a partition's (offset, value) sequence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Checksum {
    next: i64,
    crc: u32,
}

impl Checksum {
    fn add(&mut self, offset: i64, value: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, &offset.to_be_bytes());
        self.crc = crc32c::crc32c_append(self.crc, value);
        self.next = offset + 1;
    }

    fn add_batch(&mut self, base: i64, values: &[bytes::Bytes]) {
        assert_eq!(base, self.next, "acknowledged batches of a partition follow one another");
        for (i, value) in values.iter().enumerate() {
            self.add(base + i as i64, value);
        }
    }
}

/// Uploads leave a partition's history in many small multi-stream objects;
/// the compactor rewrites each partition's run into one per-stream object,
/// the emptied objects are deleted, and every record still reads back.
#[tokio::test(flavor = "multi_thread")]
async fn compaction_merges_small_objects_into_one_per_partition() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    let args = [
        "--upload-interval",
        "100ms",
        "--retention-check-interval",
        "300ms",
        "--object-delete-delay",
        "300ms",
        "--compaction-min-ranges",
        "2",
    ];
    test.start_brokers(1, &args).await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let client = test.cluster.client().unwrap();
    let create =
        keel_controller_client::pb::CreateTopicRequest { name: "metrics".into(), partitions: 4, ..Default::default() };
    client.create_topic(create).await.unwrap();
    let mut uploads_seen = 0;
    for burst in 0..8 {
        let input: String = (burst * 100..burst * 100 + 100).map(|i| format!("k{}:sample-{i}\n", i % 7)).collect();
        kcat(&["-b", &bootstrap, "-P", "-t", "metrics", "-K", ":", "-X", "acks=all"], &input).await;
        // Each burst in its own upload.
        let produced = (burst + 1) * 100;
        eventually(Duration::from_secs(30), "the burst uploaded", || async {
            let image = client.read_image().await.ok()?;
            let uploaded: i64 = image.topics["metrics"].partitions.iter().map(|p| p.uploaded_end.0).sum();
            (uploaded == produced as i64).then_some(())
        })
        .await;
        uploads_seen = uploads_seen.max(client.read_image().await.unwrap().last_object_id.0);
    }
    let produced = consume_all(&bootstrap, "metrics").await;
    assert_eq!(produced.len(), 800);
    assert!(uploads_seen >= 4, "the bursts were uploaded as several objects ({uploads_seen})");

    let ends: Vec<i64> = (0..4u32).map(|p| produced.iter().filter(|(q, _, _)| *q == p).count() as i64).collect();
    let image = eventually(Duration::from_secs(60), "one object per partition", || async {
        let image = client.read_image().await.ok()?;
        let uploaded: Vec<i64> = image.topics["metrics"].partitions.iter().map(|p| p.uploaded_end.0).collect();
        let single = image.objects.values().all(|object| object.ranges.len() == 1);
        let done = uploaded == ends && single && image.objects.len() == 4 && image.deleted_objects.is_empty();
        done.then_some(image)
    })
    .await;
    assert!(image.last_object_id.0 > 4, "compaction wrote new objects");
    assert_eq!(walk(&test.cluster.dir.join("objects")).len(), 4, "the replaced objects are gone from the store");

    test.restart_broker(0, "metrics").await.unwrap();
    assert_eq!(
        consume_all(&bootstrap, "metrics").await,
        produced,
        "every record reads back from the compacted objects"
    );
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// While the object store is unreachable, produce fills the WAL up to the
/// broker's backlog cap and is then refused with a retriable
/// KAFKA_STORAGE_ERROR, nothing stored; once the store is back, uploads catch
/// up by themselves and produce is accepted again.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_object_store_pushes_producers_back_at_the_wal_cap() {
    use bytes::Bytes;
    use keel_tools::kafka::{self, Connection};
    use keel_tools::s3::{Fault, FaultProxy};

    let s3 = keel_tools::s3::S3Server::start().await.unwrap();
    let proxy = FaultProxy::start(s3.addr()).await.unwrap();
    proxy.set(Fault::Outage);
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    let endpoint = proxy.endpoint();
    let args = keel_tools::s3::broker_args(
        &endpoint,
        s3.bucket(),
        &["--upload-interval", "100ms", "--wal-backlog-bytes-max", "1048576"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    test.start_brokers(1, &args).await.unwrap();
    let connection = Connection::connect(&test.cluster.bootstrap()).await.unwrap();
    kafka::create_topic(&connection, "orders", 1).await.unwrap();
    let produce = |n: usize| {
        let values: Vec<Bytes> = (0..32).map(|i| Bytes::from(format!("{n}-{i}-{}", "x".repeat(1000)))).collect();
        kafka::produce_request("orders", 0, -1, kafka::batch(&values, 1_000, None).unwrap())
    };
    let storage_error = kafka_protocol::error::ResponseError::KafkaStorageError.code();
    let mut acknowledged = 0;
    let mut refused = false;
    for n in 0..100 {
        let (error, _) =
            kafka::produce_result(&connection.send(kafka::PRODUCE_VERSION, &produce(n)).await.unwrap()).unwrap();
        if error == storage_error {
            refused = true;
            break;
        }
        assert_eq!(error, 0);
        acknowledged += 32;
    }
    assert!(refused, "produce was pushed back once the backlog passed 1 MiB");
    assert!((1024..=2048).contains(&acknowledged), "about 1 MiB was accepted first: {acknowledged} records");

    proxy.set(Fault::None);
    let accepted = eventually(Duration::from_secs(60), "produce accepted again", || async {
        let answer = connection.send(kafka::PRODUCE_VERSION, &produce(1000)).await.ok()?;
        let (error, base) = kafka::produce_result(&answer).ok()?;
        (error == 0).then_some(base)
    })
    .await;
    assert_eq!(accepted, acknowledged as i64, "nothing refused was stored");
    let allowed = [keel_tests::PEER_UNREACHABLE, &["upload failed, retrying"]].concat();
    test.assert_clean_logs(&allowed);
}

/// cleanup.policy=compact keeps the latest record of each key once
/// uploaded, at its original offset, with its compression codec; the older
/// values are gone for every reader.
#[tokio::test(flavor = "multi_thread")]
async fn a_compacted_topic_keeps_the_last_value_per_key() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    let args = ["--upload-interval", "100ms", "--retention-check-interval", "200ms", "--object-delete-delay", "200ms"];
    test.start_brokers(1, &args).await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let client = test.cluster.client().unwrap();
    let create = keel_controller_client::pb::CreateTopicRequest {
        name: "prices".into(),
        partitions: 1,
        configs: [("cleanup.policy".to_string(), "compact".to_string())].into(),
        ..Default::default()
    };
    client.create_topic(create).await.unwrap();
    for round in 0..2 {
        let input: String = (round * 25..round * 25 + 25).map(|i| format!("sku-{}:price-{i}\n", i % 5)).collect();
        let codec = if round == 0 { "compression.codec=gzip" } else { "compression.codec=zstd" };
        kcat(&["-b", &bootstrap, "-P", "-t", "prices", "-K", ":", "-X", "acks=all", "-X", codec], &input).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    eventually(Duration::from_secs(60), "the partition compacted by key", || async {
        let image = client.read_image().await.ok()?;
        let partition = &image.topics["prices"].partitions[0];
        let ranges = image.object_ranges_from(partition.stream_id, partition.start_offset);
        let done = partition.uploaded_end.0 == 50 && ranges.len() == 1 && image.objects.len() == 1;
        done.then_some(())
    })
    .await;

    test.restart_broker(0, "prices").await.unwrap();
    let records = consume_all(&bootstrap, "prices").await;
    let expected: Vec<(u32, i64, String)> = (45..50).map(|i| (0, i, format!("price-{i}"))).collect();
    assert_eq!(records, expected, "only each key's last value, at its own offset");
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// Uploads start as soon as `upload_bytes` wait, not only every `upload_interval`.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_starts_once_upload_bytes_are_waiting() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    test.start_brokers(1, &["--upload-interval", "1h", "--upload-bytes", "1048576"]).await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let client = test.cluster.client().unwrap();
    let create =
        keel_controller_client::pb::CreateTopicRequest { name: "bulk".into(), partitions: 1, ..Default::default() };
    client.create_topic(create).await.unwrap();
    let value = "v".repeat(1000);
    let input: String = (0..3000).map(|i| format!("{i}-{value}\n")).collect();
    kcat(&["-b", &bootstrap, "-P", "-t", "bulk", "-X", "acks=all"], &input).await;
    let uploaded = eventually(Duration::from_secs(30), "an upload without waiting an hour", || async {
        let image = client.read_image().await.ok()?;
        let end = image.topics["bulk"].partitions[0].uploaded_end.0;
        (end >= 1000).then_some(end)
    })
    .await;
    assert!(uploaded <= 3000, "{uploaded}");
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// Issue 21: ListOffsets by time read the whole partition from the
/// objects. It starts at the first uploaded range whose newest record is
/// recent enough; the answers are Kafka's, from objects only (the broker
/// restarted, its cache empty).
#[tokio::test(flavor = "multi_thread")]
async fn offsets_for_times_are_found_in_uploaded_history() {
    use keel_tools::kafka::{self, Connection};
    let mut test = TestCluster::start(1, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    test.start_brokers(1, &["--upload-interval", "100ms"]).await.unwrap();
    let connection = Connection::connect(&test.cluster.bootstrap()).await.unwrap();
    kafka::create_topic(&connection, "clock", 1).await.unwrap();
    let client = test.cluster.client().unwrap();
    // Ten batches of ten records, at times 1000, 2000, ... each, one upload each.
    for batch in 0..10i64 {
        let values: Vec<bytes::Bytes> = (0..10).map(|i| bytes::Bytes::from(format!("t{batch}-{i}"))).collect();
        let request = kafka::produce_request("clock", 0, -1, kafka::batch(&values, 1_000 * (batch + 1), None).unwrap());
        let answer = connection.send(kafka::PRODUCE_VERSION, &request).await.unwrap();
        assert_eq!(kafka::produce_result(&answer).unwrap(), (0, batch * 10));
        eventually(Duration::from_secs(30), "the batch uploaded", || async {
            let image = client.read_image().await.ok()?;
            (image.topics["clock"].partitions[0].uploaded_end.0 == (batch + 1) * 10).then_some(())
        })
        .await;
    }
    test.restart_broker(0, "clock").await.unwrap();
    let connection = Connection::connect(&test.cluster.bootstrap()).await.unwrap();
    for (timestamp, offset) in [(0, 0), (1_000, 0), (1_001, 10), (5_500, 50), (10_000, 90), (10_001, -1), (-3, 90)] {
        let answer = kafka::list_offset(&connection, "clock", 0, timestamp).await.unwrap();
        assert_eq!(answer, (0, offset), "the first record at or after {timestamp}");
    }
}

/// Issue 21: WAL logs stayed in the metadata and in every journal for ever.
/// A broker's log is recovered after a kill -9, sealed and uploaded; the
/// controller then forgets it, and a WAL node that was down meanwhile (and
/// so still holds its entries) trims it whole when it comes back.
#[tokio::test(flavor = "multi_thread")]
async fn a_done_wal_log_is_forgotten_and_trimmed_by_a_node_that_was_down() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    // No upload before the kill: every node holds the log's entries.
    test.start_brokers(1, &["--upload-interval", "1h", "--retention-check-interval", "200ms"]).await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let client = test.cluster.client().unwrap();
    let create =
        keel_controller_client::pb::CreateTopicRequest { name: "history".into(), partitions: 3, ..Default::default() };
    client.create_topic(create).await.unwrap();
    let input: String = (0..300).map(|i| format!("event-{i}\n")).collect();
    kcat(&["-b", &bootstrap, "-P", "-t", "history", "-X", "acks=all"], &input).await;
    let image = client.read_image().await.unwrap();
    assert_eq!(image.wal_logs.len(), 1, "the broker writes one log: {:?}", image.wal_logs);
    let log = *image.wal_logs.keys().next().unwrap();

    test.cluster.wal_nodes[2].kill9();
    test.restart_broker(0, "history").await.unwrap();
    eventually(Duration::from_secs(60), "the controller forgot the sealed, uploaded log", || async {
        let image = client.read_image().await.ok()?;
        (!image.wal_logs.contains_key(&log) && image.last_log_id > log).then_some(())
    })
    .await;
    assert_eq!(consume_all(&bootstrap, "history").await.len(), 300, "every record, read back from the objects");

    test.cluster.start_wal(2).unwrap();
    for (index, wal) in test.cluster.wal_nodes.iter().enumerate() {
        let addr = wal.spec.grpc;
        eventually(Duration::from_secs(40), "every WAL node trimmed the forgotten log whole", || async {
            let mut node = keel_tests::wal_client(addr).await.ok()?;
            let status = node.status(pb::StatusRequest {}).await.ok()?.into_inner();
            let held = status.logs.iter().find(|held| held.log == log.0);
            let trimmed = held.is_none_or(|held| held.trim_seq >= held.last_seq);
            // The node that was down holds the log (its fence, at least).
            let known = index < 2 || held.is_some_and(|held| held.last_seq > 0);
            (trimmed && known).then_some(())
        })
        .await;
    }
    let text = std::fs::read_to_string(test.cluster.dir.join("wal-3.log")).unwrap();
    assert!(text.contains("trimming a log the metadata forgot"), "the node that was down found the log forgotten");
    let expected = ["lost a WAL member", "member did not confirm the fence"];
    test.assert_clean_logs(&[keel_tests::PEER_UNREACHABLE, &expected].concat());
}
