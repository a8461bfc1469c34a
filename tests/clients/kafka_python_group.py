"""Consumer groups through kafka-python, whose own protocol code speaks
older versions of the group APIs than librdkafka: two consumers in one
group share a 6-partition topic (JoinGroup, SyncGroup, Heartbeat), read
what is produced then, commit what they processed (OffsetCommit), and
leave (LeaveGroup). A third
consumer of the same group then starts from the committed offsets
(OffsetFetch) and finds nothing left to read, and the committed offsets
equal the partitions' ends.

Prints "ok: N records, 2 members, offsets at the ends" or exits non-zero
with a one-line message.

Usage: kafka_python_group.py BOOTSTRAP
"""

import secrets
import sys
import threading
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

bootstrap = sys.argv[1]
topic = f"py-group-{secrets.token_hex(4)}"
group = f"py-{secrets.token_hex(4)}"
PARTITIONS = 6
COUNT = 600

admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
ends = {p: COUNT // PARTITIONS for p in range(PARTITIONS)}

seen = {}
current = {}  # member -> its partitions after its latest poll
lock = threading.Lock()


def member(name):
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id=name,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with lock:
            if len(seen) >= COUNT:
                break
        batches = consumer.poll(timeout_ms=200)
        with lock:
            current[name] = sorted(tp.partition for tp in consumer.assignment())
            for tp, records in batches.items():
                for record in records:
                    seen[(tp.partition, record.offset)] = record.value
        if batches:
            consumer.commit()
    consumer.close()  # leaves the group


threads = [threading.Thread(target=member, args=(f"member-{i}",)) for i in range(2)]
for thread in threads:
    thread.start()

# The records are produced once the two members share the topic.
deadline = time.monotonic() + 60
shared = None
while shared is None and time.monotonic() < deadline:
    with lock:
        parts = list(current.values())
    if len(parts) == 2 and all(parts) and sorted(parts[0] + parts[1]) == list(range(PARTITIONS)):
        shared = parts
    time.sleep(0.1)
if shared is None:
    sys.exit(f"the two members never shared the topic: {current}")

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
for i in range(COUNT):
    producer.send(topic, value=f"v-{i}".encode(), partition=i % PARTITIONS)
producer.flush(60)
for thread in threads:
    thread.join()

if len(seen) != COUNT:
    sys.exit(f"read {len(seen)} of {COUNT} records")

last = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
for p in range(PARTITIONS):
    committed = last.committed(TopicPartition(topic, p))
    if committed != ends[p]:
        sys.exit(f"partition {p}: committed {committed}, end {ends[p]}")
last.close()
print(f"ok: {COUNT} records, 2 members, offsets at the ends")
