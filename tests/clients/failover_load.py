"""Load for the failover tests: an idempotent confluent-kafka producer
(acks=all, default retries) writes unique values at a steady rate, round
robin over every partition of TOPIC, while the test kills and restarts
brokers. When CONTROL_DIR/stop appears it flushes, reads every partition
from its start to its end, and checks what DESIGN §9 promises:

- every acknowledged value is read back, at the offset it was acknowledged at
  (lost writes, inconsistent offsets);
- no value is stored twice (duplicates);
- within a partition, values appear in the order they were produced
  (reordering).

A consumer tails every partition meanwhile, through the same failures; what
it reads must agree with the final read (same value at each offset, values
in produced order per partition).

The test appends one JSON line per kill to CONTROL_DIR/kills.jsonl:
{"at": <unix seconds>, "partitions": [...]}, the partitions the killed broker
led. For each, the time from the kill to the first acknowledgement on that
partition after it is its time to writable (acknowledgements are stamped
when the delivery callback runs, polled every few milliseconds).

The result also reports the longest gap between two acknowledgements on any
one partition (max_ack_gap, seconds) and every gap over half a second
(long_gaps: [partition, from, to] in unix seconds), so a test can tell how
long a fault stopped writes.

Prints "progress N" every second, then one line "result {json}".
Usage: failover_load.py BOOTSTRAP TOPIC PARTITIONS CONTROL_DIR [RATE]
"""

import json
import os
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

bootstrap, topic, partitions, control = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rate = int(sys.argv[5]) if len(sys.argv) > 5 else 2000
producer = Producer({
    "bootstrap.servers": bootstrap,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
})
failures = []
acked = {}  # value number -> (partition, offset)
ack_times = [[] for _ in range(partitions)]  # per partition, ack times in order


def delivered(error, message):
    if error is not None:
        failures.append(str(error))
        return
    now = time.time()
    number = int(message.value().decode().split("-")[1])
    acked[number] = (message.partition(), message.offset())
    ack_times[message.partition()].append(now)


tailed = {}  # (partition, offset) -> value number, as the tailing consumer saw it
tail_errors = []
tail_reordered = 0
tailing = threading.Event()


def tail():
    global tail_reordered
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "failover-tail", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    last = {}
    while not tailing.is_set():
        message = consumer.poll(0.2)
        if message is None:
            continue
        if message.error():
            tail_errors.append(str(message.error()))
            continue
        value = message.value().decode()
        if not value.startswith("v-"):
            continue
        number = int(value.split("-")[1])
        p = message.partition()
        if last.get(p, -1) > number:
            tail_reordered += 1
        last[p] = number
        tailed[(p, message.offset())] = number
    consumer.close()


tail_thread = threading.Thread(target=tail, daemon=True)
tail_thread.start()

sent = 0
started = time.monotonic()
next_progress = started + 1
stop = os.path.join(control, "stop")
while not os.path.exists(stop):
    due = int((time.monotonic() - started) * rate)
    while sent < due:
        try:
            producer.produce(topic, partition=sent % partitions, value=f"v-{sent}", on_delivery=delivered)
            sent += 1
        except BufferError:
            break
    producer.poll(0.005)
    if time.monotonic() >= next_progress:
        print(f"progress {sent} sent {len(acked)} acked {len(failures)} failed", flush=True)
        next_progress += 1
remaining = producer.flush(120)
tailing.set()
tail_thread.join(30)

# Read everything back, from each partition's start to its end.
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "failover-check", "enable.auto.commit": False})
ends = {}
for p in range(partitions):
    # A partition may be moving (the balancer hands the restarted broker a
    # share): its end is asked again until its new leader serves it.
    for attempt in range(60):
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            break
        except KafkaException as error:
            moving = (
                KafkaError.NOT_LEADER_FOR_PARTITION,
                KafkaError.LEADER_NOT_AVAILABLE,
                KafkaError._TIMED_OUT,
                KafkaError._UNKNOWN_PARTITION,  # librdkafka's metadata has no leader for it yet
            )
            if error.args[0].code() not in moving or attempt == 59:
                raise
            time.sleep(0.5)
            # A consumer with no subscription does not refresh the metadata
            # it cached during a move by itself: ask for the topic again.
            consumer.list_topics(topic, timeout=10)
    ends[p] = high
consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
read = {}  # value number -> (partition, offset)
duplicates = 0
reordered = 0
foreign = 0  # values this producer never sent
last_in_partition = {}
done = {p for p in range(partitions) if ends[p] == 0}
deadline = time.monotonic() + 120
while len(done) < partitions and time.monotonic() < deadline:
    message = consumer.poll(0.5)
    if message is None:
        continue
    if message.error():
        print(f"consumer error: {message.error()}", flush=True)
        continue
    p, offset = message.partition(), message.offset()
    if offset + 1 >= ends[p]:
        done.add(p)
    value = message.value().decode()
    if not value.startswith("v-"):
        foreign += 1
        continue
    number = int(value.split("-")[1])
    if number in read:
        duplicates += 1
    read[number] = (p, offset)
    if last_in_partition.get(p, -1) > number:
        reordered += 1
    last_in_partition[p] = number
consumer.close()

lost = [n for n in acked if n not in read]
by_offset = {position: number for number, position in read.items()}
tail_inconsistent = sum(1 for position, number in tailed.items() if by_offset.get(position) != number)
moved = [n for n in acked if n in read and read[n] != acked[n]]
writable_after = []
never_writable = 0
kills_path = os.path.join(control, "kills.jsonl")
if os.path.exists(kills_path):
    with open(kills_path) as kills:
        for line in kills:
            kill = json.loads(line)
            for p in kill["partitions"]:
                after = [t for t in ack_times[p] if t > kill["at"]]
                if after:
                    writable_after.append(round(after[0] - kill["at"], 3))
                else:
                    never_writable += 1
max_ack_gap = 0.0
long_gaps = []
for p, times in enumerate(ack_times):
    for before, after in zip(times, times[1:]):
        max_ack_gap = max(max_ack_gap, after - before)
        if after - before > 0.5:
            long_gaps.append([p, round(before, 3), round(after, 3)])
result = {
    "sent": sent,
    "acked": len(acked),
    "failed": len(failures),
    "first_failure": failures[0] if failures else None,
    "unflushed": remaining,
    "read": len(read),
    "lost": len(lost),
    "first_lost": sorted(lost)[:5],
    "inconsistent_offsets": len(moved),
    "duplicates": duplicates,
    "reordered": reordered,
    "tail_read": len(tailed),
    "tail_inconsistent": tail_inconsistent,
    "tail_reordered": tail_reordered,
    "tail_errors": len(tail_errors),
    "first_tail_error": tail_errors[0] if tail_errors else None,
    "foreign": foreign,
    "unread_partitions": sorted(set(range(partitions)) - done),
    "writable_after": sorted(writable_after),
    "never_writable": never_writable,
    "max_ack_gap": round(max_ack_gap, 3),
    "long_gaps": long_gaps,
}
print("result " + json.dumps(result), flush=True)
