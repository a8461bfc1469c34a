"""Round-trips records through a Keel cluster with confluent-kafka
(librdkafka) once per compression codec: none, gzip, snappy, lz4 and zstd.

For each codec: a 12-partition topic, an idempotent acks=all producer with
compression.type=<codec> writing keyed records with two headers (binary bytes,
and a null value), an explicit, distinct and increasing create time, and
seeded random values from 0 bytes to 4 KiB (some null, some compressible).
Then an assigned consumer (no group) reads every partition from offset 0 to
the high watermark and checks each record byte for byte (key, value, headers
in order, timestamp and its type), the order per partition, and that offsets
run 0, 1, 2, ... Last, ListOffsets by timestamp (offsets_for_times) must give
the first record at or after the time, as Kafka does (it looks inside the
batch), and -1 for a time after every record.

Records in all: 20 000 split across the codecs, or KEEL_CLIENT_RECORDS.
Exits non-zero with a one-line message on the first mismatch.

Usage: codecs.py BOOTSTRAP
"""

import bisect
import os
import random
import secrets
import sys
import time

from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = sys.argv[1]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 12
total = int(os.environ.get("KEEL_CLIENT_RECORDS", "20000"))
per_codec = max(total // len(CODECS), 1)
# Fixed create times (ms): deterministic, 3 ms apart so that "just before a
# record" is still after the one before it in the same partition.
BASE_TS = 1_700_000_000_000
# The timestamps are years old: without this, retention.ms (7 days by default)
# would delete the records once uploaded, as Kafka would.
KEEP_FOREVER = {"retention.ms": "-1"}
STEP_TS = 3
suffix = secrets.token_hex(4)
admin = AdminClient({"bootstrap.servers": bootstrap})


def fail(message):
    sys.exit(f"codecs: {message}")


def make_records(seed, count):
    """(key, value, headers, timestamp) per record, from a seeded RNG."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        key = b"" if i % 251 == 3 else f"key-{rng.randrange(1000)}".encode() + bytes([rng.randrange(256)])
        if i % 97 == 5:
            value = None  # a tombstone
        elif i % 13 == 0:
            value = b""
        else:
            size = rng.randint(1, 4096)
            if rng.random() < 0.5:
                value = rng.randbytes(size)  # incompressible
            else:
                word = rng.randbytes(rng.randint(1, 24))
                value = (word * (size // len(word) + 1))[:size]  # compressible
        binary = b"\x00\xff" + rng.randbytes(rng.randint(0, 30))
        headers = [("bin", binary), ("none", None)]
        records.append((key, value, headers, BASE_TS + i * STEP_TS))
    return records


def check_codec(codec, seed):
    topic = f"codecs-{codec}-{suffix}"
    for future in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1, config=KEEP_FOREVER)]).values():
        future.result(timeout=30)
    records = make_records(seed, per_codec)

    # Produce, remembering where each record was acknowledged.
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": codec,
            "linger.ms": 20,
            # Small batches: many per partition, so reads and time lookups
            # cross batch boundaries and land inside batches.
            "batch.num.messages": 64,
        }
    )
    failures = []
    acked = {}

    def delivered(error, message, index):
        if error is not None:
            failures.append(error)
        else:
            acked[index] = (message.partition(), message.offset())

    for index, (key, value, headers, timestamp) in enumerate(records):
        while True:
            try:
                producer.produce(
                    topic,
                    key=key,
                    value=value,
                    headers=headers,
                    timestamp=timestamp,
                    on_delivery=lambda e, m, i=index: delivered(e, m, i),
                )
                break
            except BufferError:
                producer.poll(0.1)
        if index % 500 == 0:
            producer.poll(0)
    if producer.flush(60) != 0:
        fail(f"{codec}: producer could not flush within 60 s")
    if failures:
        fail(f"{codec}: {len(failures)} deliveries failed, first: {failures[0]}")
    if len(acked) != len(records):
        fail(f"{codec}: {len(acked)} of {len(records)} deliveries acknowledged")

    # What each partition must hold, in production order (idempotence keeps it).
    expected = {p: [] for p in range(PARTITIONS)}
    for index in range(len(records)):
        partition, offset = acked[index]
        if offset != len(expected[partition]):
            fail(f"{codec}: record {index} acknowledged at {partition}/{offset}, expected offset {len(expected[partition])}")
        expected[partition].append(index)

    # Read every partition from 0 to its end.
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    )
    for p in range(PARTITIONS):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        if (low, high) != (0, len(expected[p])):
            fail(f"{codec}: partition {p} watermarks ({low}, {high}), expected (0, {len(expected[p])})")
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got = {p: 0 for p in range(PARTITIONS)}
    remaining = len(records)
    deadline = time.monotonic() + 40
    while remaining > 0:
        if time.monotonic() > deadline:
            fail(f"{codec}: {remaining} records not consumed within 40 s")
        for message in consumer.consume(num_messages=1000, timeout=0.5):
            if message.error():
                fail(f"{codec}: consumer error: {message.error()}")
            p, offset = message.partition(), message.offset()
            where = f"{codec}: {p}/{offset}"
            if offset != got[p]:
                fail(f"{where}: expected offset {got[p]} next (offsets must be consecutive from 0)")
            if offset >= len(expected[p]):
                fail(f"{where}: beyond the {len(expected[p])} records produced to the partition")
            key, value, headers, timestamp = records[expected[p][offset]]
            if message.key() != key:
                fail(f"{where}: key {message.key()!r}, expected {key!r}")
            if message.value() != value:
                got_len = None if message.value() is None else len(message.value())
                want_len = None if value is None else len(value)
                fail(f"{where}: value differs (length {got_len}, expected {want_len})")
            if message.headers() != headers:
                fail(f"{where}: headers {message.headers()!r}, expected {headers!r}")
            if message.timestamp() != (TIMESTAMP_CREATE_TIME, timestamp):
                fail(f"{where}: timestamp {message.timestamp()}, expected (CreateTime, {timestamp})")
            got[p] += 1
            remaining -= 1

    # Stop fetching: a pending long-poll fetch would hold each lookup's
    # answer back (answers on a connection come in request order).
    consumer.unassign()

    # ListOffsets by timestamp: the first record at or after the time, or -1.
    times = {p: [records[i][3] for i in expected[p]] for p in range(PARTITIONS)}
    rounds = [
        ("before every record", lambda ts: BASE_TS - 1000),
        ("the first record's time", lambda ts: ts[0]),
        ("just before a third of the way", lambda ts: ts[len(ts) // 3] - 1),
        ("a middle record's time", lambda ts: ts[len(ts) // 2]),
        ("just after a record two thirds in", lambda ts: ts[2 * len(ts) // 3] + 1),
        ("the last record's time", lambda ts: ts[-1]),
        ("after every record", lambda ts: ts[-1] + 1),
    ]
    for what, target in rounds:
        asked = {p: target(times[p]) for p in range(PARTITIONS) if times[p]}
        try:
            answers = consumer.offsets_for_times([TopicPartition(topic, p, t) for p, t in asked.items()], timeout=30)
        except KafkaException as error:
            fail(f"{codec}: offsets_for_times ({what}): {error}")
        for answer in answers:
            p = answer.partition
            position = bisect.bisect_left(times[p], asked[p])
            want = position if position < len(times[p]) else -1
            if answer.error is not None or answer.offset != want:
                fail(
                    f"{codec}: offsets_for_times ({what}) on partition {p} for time {asked[p]}: "
                    f"offset {answer.offset} (error {answer.error}), expected {want}"
                )
    consumer.close()
    for future in admin.delete_topics([topic]).values():
        future.result(timeout=30)


started = time.monotonic()
for number, codec in enumerate(CODECS):
    check_codec(codec, seed=1000 + number)
print(f"ok: {per_codec * len(CODECS)} records round-tripped with {', '.join(CODECS)} in {time.monotonic() - started:.1f} s")
