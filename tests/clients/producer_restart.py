"""An idempotent confluent-kafka producer (acks=all, default retries) keeps
producing while the test kills the only broker with SIGKILL and starts it
again. Every record must be acknowledged, and reading the topic back must
find each acknowledged value exactly once, at the offset it was acknowledged
at: nothing lost, nothing stored twice by a retry across the restart.

Prints "progress N" lines while producing; the test kills the broker after
the first one and restarts it. Exits non-zero with a one-line message on the
first mismatch.

Usage: producer_restart.py BOOTSTRAP TOPIC
"""

import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

bootstrap, topic = sys.argv[1], sys.argv[2]
count = 6000
producer = Producer({
    "bootstrap.servers": bootstrap,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 2,
    # Keep retrying through the restart; librdkafka's default is 300 s.
    "message.timeout.ms": 120000,
})
failures = []
acked = {}


def delivered(error, message):
    if error is not None:
        failures.append(error)
    else:
        acked[message.value().decode()] = (message.partition(), message.offset())


started = time.monotonic()
for i in range(count):
    while True:
        try:
            producer.produce(topic, key=f"k{i % 13}", value=f"order-{i}", on_delivery=delivered)
            break
        except BufferError:
            producer.poll(0.05)
    if i % 200 == 0:
        producer.poll(0)
        print(f"progress {i}", flush=True)
        # Spread the records over a few seconds so the restart lands mid-stream.
        time.sleep(0.05)
if producer.flush(150) != 0:
    sys.exit(f"producer could not flush: {len(producer)} records still queued")
if failures:
    sys.exit(f"{len(failures)} deliveries failed, first: {failures[0]}")
if len(acked) != count:
    sys.exit(f"{len(acked)} of {count} deliveries acknowledged")

partitions = sorted({partition for partition, _ in acked.values()})
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
seen = {}
duplicates = 0
idle = 0
while idle < 50:
    message = consumer.poll(0.2)
    if message is None:
        idle += 1
        continue
    if message.error():
        sys.exit(f"consumer error: {message.error()}")
    idle = 0
    value = message.value().decode()
    if value in seen:
        duplicates += 1
    seen[value] = (message.partition(), message.offset())
consumer.close()
if duplicates:
    sys.exit(f"{duplicates} records were stored twice")
missing = [value for value in acked if value not in seen]
if missing:
    sys.exit(f"{len(missing)} acknowledged records are missing, first: {missing[0]}")
moved = [value for value, position in acked.items() if seen[value] != position]
if moved:
    sys.exit(f"{len(moved)} records are not at their acknowledged offset, first: {moved[0]}")
print(f"ok: {count} records, each stored once, through the restart ({time.monotonic() - started:.1f} s)")
