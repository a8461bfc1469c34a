#!/usr/bin/env python3
"""The chaos suite's workload: confluent-kafka (librdkafka) clients of one
zone, each writing its history as JSON lines (one operation per line, with
the wall-clock time `t`), for the checker (`keelctl chaos check`).

  produce  an idempotent producer (acks=all) writing unique values
           "<zone>-<n>|" padded to --value-bytes, round-robin over the
           topic's partitions:
           invoke, then ok (partition, offset) / fail / unknown per value
           (fail: the value was certainly not written; unknown: it may
           have been, as after a timeout or a lost connection)
  start    commits offset 0 of every partition for the group, once,
           before its members start (see `start_group`)
  consume  a group member committing after each batch it processed:
           read (partition, offset, value), commit (ok or fail), and
           reset (partition) when the broker said its position is out
           of range
  drain    reads every partition from its start to its end as of now:
           drain (partition, offset, value), end (partition, offset), and
           drain-error for every error the consumer reports
"""

import argparse
import json
import os
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition


class History:
    def __init__(self, path):
        self.out = open(path, "a", buffering=1)

    def write(self, **event):
        event.setdefault("t", time.time())
        self.out.write(json.dumps(event, separators=(",", ":")) + "\n")


# Delivery errors after which the value may still have been written.
POSSIBLY_WRITTEN = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError.NETWORK_EXCEPTION,
}


def produce(args, history):
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": int(args.seconds * 1000 + 60000),
        "socket.timeout.ms": 3000,
        "metadata.max.age.ms": 2000,
        "topic.metadata.refresh.interval.ms": 1000,
        # librdkafka's own debug contexts (e.g. "eos,msg"), to see why a
        # producer did what it did; its log goes to producer-<zone>.log.
        **({"debug": os.environ["KEEL_CHAOS_CLIENT_DEBUG"]} if os.environ.get("KEEL_CHAOS_CLIENT_DEBUG") else {}),
    })
    pending = {}

    def delivered(error, message):
        value = message.value().decode()
        pending.pop(value, None)
        if error is None:
            history.write(f="ok", value=value, partition=message.partition(), offset=message.offset())
        else:
            outcome = "unknown" if error.code() in POSSIBLY_WRITTEN else "fail"
            history.write(f=outcome, value=value, partition=message.partition(), error=error.name())

    started = time.time()
    n = 0
    try:
        while time.time() - started < args.seconds:
            due = started + n / args.rate
            if time.time() < due:
                # A negative timeout would wait for ever.
                producer.poll(max(0.0, min(due - time.time(), 0.05)))
                continue
            # Unique and checkable ("<zone>-<n>"), padded to a realistic size.
            value = f"{args.zone}-{n}|".ljust(args.value_bytes, ".")
            partition = n % args.partitions
            history.write(f="invoke", value=value, partition=partition)
            pending[value] = partition
            while True:
                try:
                    producer.produce(args.topic, value.encode(), partition=partition, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.1)
                except KafkaException as error:
                    pending.pop(value, None)
                    history.write(f="fail", value=value, partition=partition, error=error.args[0].name())
                    break
            producer.poll(0)
            n += 1
    finally:
        producer.flush(args.flush)
        for value, partition in list(pending.items()):
            history.write(f="unknown", value=value, partition=partition)


def consume(args, history):
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "client.id": f"{args.zone}-consumer",
        "enable.auto.commit": False,
        # Every partition has a committed offset (`start_group`): a
        # position the broker calls out of range is an error to record,
        # never a silent rewind.
        "auto.offset.reset": "error",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "metadata.max.age.ms": 2000,
    })
    member = args.zone
    consumer.subscribe([args.topic],
                       on_assign=lambda c, ps: history.write(f="assign", member=member, partitions=[p.partition for p in ps]),
                       on_revoke=lambda c, ps: history.write(f="revoke", member=member, partitions=[p.partition for p in ps]))
    started = time.time()
    while time.time() - started < args.seconds:
        messages = consumer.consume(100, 0.5)
        positions = {}
        for message in messages:
            if message.error():
                if message.error().code() == KafkaError._AUTO_OFFSET_RESET:
                    history.write(f="reset", member=member, partition=message.partition(),
                                  error=message.error().str())
                continue
            history.write(f="read", member=member, partition=message.partition(), offset=message.offset(),
                          value=message.value().decode())
            positions[message.partition()] = message.offset() + 1
        if not positions:
            continue
        offsets = [TopicPartition(args.topic, p, o) for p, o in positions.items()]
        try:
            committed = consumer.commit(offsets=offsets, asynchronous=False)
            for tp in committed:
                if tp.error is None:
                    history.write(f="commit", member=member, partition=tp.partition, offset=tp.offset)
                else:
                    history.write(f="commit-fail", member=member, partition=tp.partition, offset=tp.offset,
                                  error=tp.error.name())
        except KafkaException as error:
            for tp in offsets:
                history.write(f="commit-fail", member=member, partition=tp.partition, offset=tp.offset,
                              error=error.args[0].name())
    consumer.close()


def start_group(args, history):
    """Commits offset 0 of every partition for the group before any member
    joins, so members start from a committed offset and never ask for the
    earliest one: librdkafka (2.x) restarts an earliest-offset query whose
    answer arrives after the partition was assigned again, and so rewinds a
    partition it had started at its committed offset (seen in the zone-loss
    scenario as a commit going backwards)."""
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group, "enable.auto.commit": False})
    offsets = [TopicPartition(args.topic, p, 0) for p in range(args.partitions)]
    for tp in consumer.commit(offsets=offsets, asynchronous=False):
        if tp.error is not None:
            raise SystemExit(f"start: committing offset 0 of partition {tp.partition} failed: {tp.error}")
    history.write(f="start", group=args.group, partitions=args.partitions)
    consumer.close()


def drain(args, history):
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"drain-{time.time_ns()}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        # Assigned at each partition's start: a start that moved meanwhile
        # (retention) is read from the new one, and the error reported.
        "auto.offset.reset": "earliest",
    })
    starts, ends = {}, {}
    for p in range(args.partitions):
        deadline = time.time() + args.seconds
        while True:
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=5)
                break
            except KafkaException:
                if time.time() > deadline:
                    raise
                # The partition had no leader (it was moving): ask for the
                # metadata again, which librdkafka does not do by itself
                # for a partition nothing is assigned from.
                time.sleep(0.5)
                consumer.list_topics(args.topic, timeout=5)
        starts[p], ends[p] = low, high
        history.write(f="end", partition=p, offset=high)
    consumer.assign([TopicPartition(args.topic, p, starts[p]) for p in range(args.partitions) if ends[p] > starts[p]])
    left = {p for p in range(args.partitions) if ends[p] > starts[p]}
    deadline = time.time() + args.seconds
    while left and time.time() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            if message.error().code() != KafkaError._PARTITION_EOF:
                history.write(f="drain-error", partition=message.partition(), error=message.error().name())
            elif message.offset() >= ends[message.partition()]:
                left.discard(message.partition())
            continue
        p = message.partition()
        if message.offset() < ends[p]:
            history.write(f="drain", partition=p, offset=message.offset(), value=message.value().decode())
        if message.offset() + 1 >= ends[p]:
            left.discard(p)
    if left:
        raise SystemExit(f"drain: partitions {sorted(left)} not read to their end within {args.seconds} s")
    consumer.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "produce", "consume", "drain"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--zone", default="x")
    parser.add_argument("--group", default="chaos")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--flush", type=float, default=60.0)
    parser.add_argument("--value-bytes", type=int, default=1024)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    history = History(args.out)
    {"start": start_group, "produce": produce, "consume": consume, "drain": drain}[args.command](args, history)


if __name__ == "__main__":
    main()
