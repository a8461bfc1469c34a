"""Drives a Keel cluster with confluent-kafka (librdkafka): admin calls and
their errors, an idempotent acks=all producer, an oversized message, and a
consumer that reads everything back. Exits non-zero with a message on the
first thing that is not as Kafka's clients expect.

Usage: roundtrip.py BOOTSTRAP
"""

import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})


def expect_error(futures, code, what):
    for future in futures.values():
        try:
            future.result(timeout=30)
        except KafkaException as error:
            got = error.args[0].code()
            if got != code:
                sys.exit(f"{what}: expected {KafkaError(code).name()}, got {error}")
            continue
        sys.exit(f"{what}: expected {KafkaError(code).name()}, but it succeeded")


# Admin: create, refuse a duplicate and a bad name, grow partitions.
for future in admin.create_topics([NewTopic("payments", num_partitions=4, replication_factor=1)]).values():
    future.result(timeout=30)
expect_error(admin.create_topics([NewTopic("payments", num_partitions=4)]), KafkaError.TOPIC_ALREADY_EXISTS, "duplicate topic")
expect_error(admin.create_topics([NewTopic("bad name!", num_partitions=1)]), KafkaError.TOPIC_EXCEPTION, "bad topic name")
expect_error(
    admin.create_topics([NewTopic("small", num_partitions=1, config={"max.message.bytes": "nonsense"})]),
    KafkaError.INVALID_CONFIG,
    "bad topic config",
)
for future in admin.create_partitions([NewPartitions("payments", 6)]).values():
    future.result(timeout=30)
expect_error(admin.create_partitions([NewPartitions("payments", 2)]), KafkaError.INVALID_PARTITIONS, "shrinking partitions")
for future in admin.create_topics([NewTopic("tiny", num_partitions=1, config={"max.message.bytes": "2000"})]).values():
    future.result(timeout=30)

metadata = admin.list_topics(timeout=30)
partitions = len(metadata.topics["payments"].partitions)
if partitions != 6:
    sys.exit(f"payments has {partitions} partitions, expected 6")

# An idempotent producer, acks=all (the Java client's defaults).
producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
failures = []
acked = {}


def delivered(error, message):
    if error is not None:
        failures.append(error)
    else:
        acked[message.value().decode()] = (message.partition(), message.offset())


count = 20000
for i in range(count):
    producer.produce("payments", key=f"k{i % 97}", value=f"payment-{i}", on_delivery=delivered)
    if i % 1000 == 0:
        producer.poll(0)
if producer.flush(60) != 0:
    sys.exit("producer could not flush within 60 s")
if failures:
    sys.exit(f"{len(failures)} deliveries failed, first: {failures[0]}")
if len(acked) != count:
    sys.exit(f"{len(acked)} of {count} deliveries acknowledged")
positions = sorted(acked.values())
if len(set(positions)) != count:
    sys.exit("two records were acknowledged at the same partition and offset")

# A message over the topic's max.message.bytes is refused, not stored.
too_big = []
small_producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 100000})
small_producer.produce("tiny", value=b"x" * 5000, on_delivery=lambda e, m: too_big.append(e))
small_producer.flush(30)
if not too_big or too_big[0] is None or too_big[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
    sys.exit(f"oversized message: expected MSG_SIZE_TOO_LARGE, got {too_big}")

# Read every partition from the beginning (no group: assign directly).
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
consumer.assign([TopicPartition("payments", p, 0) for p in range(6)])
seen = {}
idle = 0
while len(seen) < count and idle < 100:
    message = consumer.poll(0.2)
    if message is None:
        idle += 1
        continue
    if message.error():
        sys.exit(f"consumer error: {message.error()}")
    idle = 0
    seen[message.value().decode()] = (message.partition(), message.offset())
consumer.close()
if seen != acked:
    missing = set(acked) - set(seen)
    sys.exit(f"consumed {len(seen)} records, {len(missing)} acknowledged ones missing or moved")

# Offsets by time: earliest is 0, latest is each partition's record count.
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
for p in range(6):
    low, high = consumer.get_watermark_offsets(TopicPartition("payments", p), timeout=30)
    expected = sum(1 for partition, _ in acked.values() if partition == p)
    if (low, high) != (0, expected):
        sys.exit(f"partition {p}: watermarks ({low}, {high}), expected (0, {expected})")
consumer.close()

for future in admin.delete_topics(["payments"]).values():
    future.result(timeout=30)
expect_error(admin.delete_topics(["payments"]), KafkaError.UNKNOWN_TOPIC_OR_PART, "deleting a deleted topic")
print(f"ok: {count} records produced and consumed")
