"""One member of a consumer group, for the consumer-group tests: a
confluent-kafka (librdkafka) consumer subscribed to TOPIC in GROUP, with
auto-commit off. It processes each batch that `consume` returns (prints its
records) and then commits, synchronously, the offset after the last record it
processed in each partition: at-least-once, so a member killed between
processing and committing leaves its uncommitted tail to be read again.

It prints one JSON line per event on standard output, flushed at once, each
with "t", the Unix time in seconds:

    {"event": "assigned", "partitions": [[topic, p], ...], "assignment": [...]}
    {"event": "revoked", ...}    {"event": "lost", ...}
        "partitions" is what the rebalance callback got (the whole assignment
        with an eager assignor, the change with a cooperative one or with the
        consumer protocol); "assignment" is the member's whole assignment
        after the event.
    {"event": "record", "topic": t, "partition": p, "offset": o, "value": v}
        value decoded as UTF-8 (null for a null value).
    {"event": "committed", "latency_ms": ms, "offsets": [[topic, p, next], ...]}
    {"event": "commit_failed", "error": name, "offsets": [...]}
    {"event": "error", "error": text}    a consumer error, reported and skipped
    {"event": "done", "records": n}      after the consumer is closed

It stops when it has processed EXPECT records (then commits exactly up to the
last one), when MAX_SECONDS have passed, or on SIGTERM; then it closes the
consumer (a dynamic member leaves the group, a static one does not) and
prints "done". It exits with status 2 if it stopped before EXPECT records
without being told to, 0 otherwise.

The consumer protocol (KIP-848) assigns on the broker: librdkafka refuses
session.timeout.ms, heartbeat.interval.ms and partition.assignment.strategy
there, so --assignment-strategy becomes group.remote.assignor and
--session-timeout-ms is refused.

Usage: group_consume.py --bootstrap B --topic T --group G
           [--group-protocol classic|consumer] [--assignment-strategy S]
           [--instance-id ID] [--session-timeout-ms MS] [--max-seconds S]
           [--expect N] [--auto-offset-reset earliest|latest]
"""

import argparse
import json
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--bootstrap", required=True)
parser.add_argument("--topic", required=True)
parser.add_argument("--group", required=True)
parser.add_argument("--group-protocol", choices=["classic", "consumer"], default="classic")
parser.add_argument("--assignment-strategy", help="range, roundrobin, cooperative-sticky; uniform or range (consumer)")
parser.add_argument("--instance-id", help="group.instance.id: a static member")
parser.add_argument("--session-timeout-ms", type=int, help="classic protocol only")
parser.add_argument("--max-seconds", type=float, default=60)
parser.add_argument("--expect", type=int, help="stop after processing this many records")
parser.add_argument("--auto-offset-reset", default="earliest")
parser.add_argument("--batch", type=int, default=500, help="most records per consume call")
args = parser.parse_args()

stopping = False


def on_sigterm(signum, frame):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, on_sigterm)


def emit(event, **fields):
    line = {"event": event, **fields, "t": time.time()}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


config = {
    "bootstrap.servers": args.bootstrap,
    "group.id": args.group,
    "group.protocol": args.group_protocol,
    "client.id": args.instance_id or "group-consume",
    "enable.auto.commit": False,
    "auto.offset.reset": args.auto_offset_reset,
    "fetch.wait.max.ms": 100,
}
if args.instance_id:
    config["group.instance.id"] = args.instance_id
if args.group_protocol == "classic":
    if args.assignment_strategy:
        config["partition.assignment.strategy"] = args.assignment_strategy
    if args.session_timeout_ms:
        config["session.timeout.ms"] = args.session_timeout_ms
        config["heartbeat.interval.ms"] = max(100, min(3000, args.session_timeout_ms // 4))
        # The rebalance timeout: a member that never rejoins holds a rebalance
        # up to this long, so keep it well inside a test's minute (librdkafka
        # wants it at least the session timeout).
        config["max.poll.interval.ms"] = max(20000, args.session_timeout_ms)
else:
    if args.session_timeout_ms:
        parser.error("the consumer protocol takes its session timeout from the broker")
    if args.assignment_strategy:
        config["group.remote.assignor"] = args.assignment_strategy

current = set()  # the whole assignment, as (topic, partition)


def listed(partitions):
    return sorted([tp.topic, tp.partition] for tp in partitions)


def on_assign(consumer, partitions):
    current.update((tp.topic, tp.partition) for tp in partitions)
    emit("assigned", partitions=listed(partitions), assignment=sorted(list(tp) for tp in current))


def on_revoke(consumer, partitions):
    current.difference_update((tp.topic, tp.partition) for tp in partitions)
    emit("revoked", partitions=listed(partitions), assignment=sorted(list(tp) for tp in current))


def on_lost(consumer, partitions):
    current.difference_update((tp.topic, tp.partition) for tp in partitions)
    emit("lost", partitions=listed(partitions), assignment=sorted(list(tp) for tp in current))


def commit(consumer, processed):
    """Commits the offset after the last processed record of each partition."""
    offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in sorted(processed.items())]
    listed_offsets = [[tp.topic, tp.partition, tp.offset] for tp in offsets]
    started = time.monotonic()
    try:
        result = consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as e:
        error = e.args[0]
        emit("commit_failed", error=error.name() if hasattr(error, "name") else str(error), offsets=listed_offsets)
        return
    latency_ms = (time.monotonic() - started) * 1000
    failed = [tp for tp in (result or []) if tp.error is not None]
    if failed:
        emit("commit_failed", error=failed[0].error.name(), offsets=listed_offsets)
    else:
        emit("committed", latency_ms=round(latency_ms, 3), offsets=listed_offsets)


consumer = Consumer(config)
consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
deadline = time.monotonic() + args.max_seconds
count = 0
while not stopping and time.monotonic() < deadline and (args.expect is None or count < args.expect):
    messages = consumer.consume(num_messages=args.batch, timeout=0.5)
    processed = {}  # (topic, partition) -> the offset after the last processed record
    for message in messages:
        if message.error():
            emit("error", error=str(message.error()))
            continue
        if args.expect is not None and count >= args.expect:
            break
        value = message.value()
        emit(
            "record",
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            value=value.decode() if value is not None else None,
        )
        count += 1
        processed[(message.topic(), message.partition())] = message.offset() + 1
    if processed:
        commit(consumer, processed)
try:
    consumer.close()
except KafkaException as e:
    emit("error", error=f"close: {e}")
emit("done", records=count)
if args.expect is not None and count < args.expect and not stopping:
    sys.exit(2)
