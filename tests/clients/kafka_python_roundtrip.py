"""Drives a Keel cluster with kafka-python, the pure-Python client (its own
protocol code, not librdkafka): admin create and delete, idempotent acks=all
producers with every codec it supports here, an assigned consumer without a
group, and ListOffsets by timestamp.

One 12-partition topic; one producer per codec (none, gzip, snappy, lz4,
zstd; snappy, lz4 and zstd need python-snappy, lz4 and zstandard, which
scripts/setup installs) each writes its share of the records one after the
other, so partitions hold batches of every codec in turn. Records have keys
(some empty), two headers (binary bytes and an empty value), explicit,
distinct and increasing create times, and seeded random values (0 bytes to
4 KiB, some null). The consumer reads every partition from the beginning and
checks each record byte for byte, in order, at offsets 0, 1, 2, ...;
offsets_for_times must give the first record at or after the time and that
record's timestamp, and nothing for a time after every record.

Records: 20 000, or KEEL_CLIENT_RECORDS. Exits non-zero with a one-line
message on the first mismatch.

Usage: kafka_python_roundtrip.py BOOTSTRAP
"""

import bisect
import os
import random
import secrets
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.codec import has_lz4, has_snappy, has_zstd

bootstrap = sys.argv[1]
PARTITIONS = 12
count = int(os.environ.get("KEEL_CLIENT_RECORDS", "20000"))
BASE_TS = 1_700_000_000_000
STEP_TS = 3
topic = f"kafka-python-{secrets.token_hex(4)}"


def fail(message):
    sys.exit(f"kafka_python_roundtrip: {message}")


codecs = ["none", "gzip", "snappy", "lz4", "zstd"]
missing = [c for c, has in (("snappy", has_snappy), ("lz4", has_lz4), ("zstd", has_zstd)) if not has()]
if missing:
    fail(f"kafka-python lacks the {', '.join(missing)} codec packages (run scripts/setup)")

started = time.monotonic()
admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="keel-kafka-python")
# The records' timestamps are years old: without retention.ms=-1 retention
# (7 days by default) would delete them once uploaded, as Kafka would.
admin.create_topics(
    {topic: {"num_partitions": PARTITIONS, "replication_factor": 1, "configs": {"retention.ms": "-1"}}},
    wait_for_metadata=True,
)
described = admin.describe_topics([topic])
if len(described) != 1 or len(described[0]["partitions"]) != PARTITIONS:
    fail(f"describe_topics after create: {described}")

rng = random.Random(7)
records = []
for i in range(count):
    key = b"" if i % 251 == 3 else f"key-{rng.randrange(1000)}".encode() + bytes([rng.randrange(256)])
    if i % 97 == 5:
        value = None
    elif i % 13 == 0:
        value = b""
    else:
        size = rng.randint(1, 4096)
        if rng.random() < 0.5:
            value = rng.randbytes(size)
        else:
            word = rng.randbytes(rng.randint(1, 24))
            value = (word * (size // len(word) + 1))[:size]
    headers = [("bin", b"\x00\xff" + rng.randbytes(rng.randint(0, 30))), ("empty", b"")]
    records.append((key, value, headers, BASE_TS + i * STEP_TS))

# One producer per codec, each flushed before the next starts, so every
# partition holds the records in production order.
acked = []
share = (count + len(codecs) - 1) // len(codecs)
for number, codec in enumerate(codecs):
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type=None if codec == "none" else codec,
        linger_ms=5,
    )
    futures = []
    for key, value, headers, timestamp in records[number * share : (number + 1) * share]:
        futures.append(producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=timestamp))
    producer.flush(timeout=60)
    for index, future in enumerate(futures):
        try:
            metadata = future.get(timeout=30)
        except Exception as error:  # noqa: BLE001 - any failure ends the test
            fail(f"{codec}: record {number * share + index} not delivered: {error!r}")
        acked.append((metadata.partition, metadata.offset))
    producer.close(timeout=10)

expected = {p: [] for p in range(PARTITIONS)}
for index, (partition, offset) in enumerate(acked):
    if offset != len(expected[partition]):
        fail(f"record {index} acknowledged at {partition}/{offset}, expected offset {len(expected[partition])}")
    expected[partition].append(index)
produced = time.monotonic()

consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, client_id="keel-kafka-python")
partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
consumer.assign(partitions)
consumer.seek_to_beginning()
beginning = consumer.beginning_offsets(partitions, timeout_ms=30000)
end = consumer.end_offsets(partitions, timeout_ms=30000)
for tp in partitions:
    if (beginning[tp], end[tp]) != (0, len(expected[tp.partition])):
        fail(f"partition {tp.partition}: offsets ({beginning[tp]}, {end[tp]}), expected (0, {len(expected[tp.partition])})")

got = {p: 0 for p in range(PARTITIONS)}
remaining = count
deadline = time.monotonic() + 60
while remaining > 0:
    if time.monotonic() > deadline:
        fail(f"{remaining} records not consumed within 60 s")
    for tp, batch in consumer.poll(timeout_ms=500, max_records=2000).items():
        for message in batch:
            p, offset = message.partition, message.offset
            where = f"{p}/{offset}"
            if offset != got[p]:
                fail(f"{where}: expected offset {got[p]} next (offsets must be consecutive from 0)")
            if offset >= len(expected[p]):
                fail(f"{where}: beyond the {len(expected[p])} records produced to the partition")
            key, value, headers, timestamp = records[expected[p][offset]]
            if message.key != key:
                fail(f"{where}: key {message.key!r}, expected {key!r}")
            if message.value != value:
                got_len = None if message.value is None else len(message.value)
                want_len = None if value is None else len(value)
                fail(f"{where}: value differs (length {got_len}, expected {want_len})")
            if list(message.headers) != headers:
                fail(f"{where}: headers {message.headers!r}, expected {headers!r}")
            if (message.timestamp_type, message.timestamp) != (0, timestamp):
                fail(f"{where}: timestamp (type {message.timestamp_type}) {message.timestamp}, expected (CreateTime 0) {timestamp}")
            got[p] += 1
            remaining -= 1
consumed = time.monotonic()

# ListOffsets by timestamp: Kafka answers the first record at or after the
# time with that record's own timestamp, and nothing (-1) after the last.
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
    asked = {TopicPartition(topic, p): target(times[p]) for p in range(PARTITIONS) if times[p]}
    answers = consumer.offsets_for_times(dict(asked), timeout_ms=30000)
    for tp, at in asked.items():
        ts = times[tp.partition]
        position = bisect.bisect_left(ts, at)
        want = (position, ts[position]) if position < len(ts) else None
        answer = answers.get(tp)
        found = None if answer is None else (answer.offset, answer.timestamp)
        if found != want:
            fail(f"offsets_for_times ({what}) on partition {tp.partition} for time {at}: (offset, timestamp) {found}, expected {want}")
consumer.close()

# Delete the topic; it must be gone from the metadata.
admin.delete_topics([topic], timeout_ms=30000)
deadline = time.monotonic() + 15
while topic in admin.list_topics():
    if time.monotonic() > deadline:
        fail(f"topic {topic} still listed 15 s after it was deleted")
    time.sleep(0.2)
admin.close()
print(
    f"ok: {count} records with {', '.join(codecs)}; produced in {produced - started:.1f} s, "
    f"consumed in {consumed - produced:.1f} s, total {time.monotonic() - started:.1f} s"
)
