#!/usr/bin/env python3
"""Kafka transactions through confluent-kafka (librdkafka), as an
application uses them. Each subcommand prints one JSON line for the test.

  visibility  commit, abort, commit: what read_committed and
              read_uncommitted consumers see
  zombie      a second producer with the same transactional.id fences the
              first, whose open transaction is aborted
  timeout     a transaction left open past transaction.timeout.ms is
              aborted by the coordinator and the last stable offset moves on
  pipeline    consume-transform-produce with sendOffsetsToTransaction until
              every input record is processed (exactly-once)
  read        every value of a topic, read_committed or read_uncommitted
"""

import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition


def producer(bootstrap, txn_id, **extra):
    config = {
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
    }
    config.update(extra)
    return Producer(config)


def read_all(bootstrap, topic, isolation, timeout=60.0):
    """Every value of `topic` from the start up to its end for this
    isolation level (the last stable offset for read_committed)."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{time.time_ns()}",
        "enable.auto.commit": False,
        "isolation.level": isolation,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    })
    metadata = consumer.list_topics(topic, timeout=30)
    partitions = sorted(metadata.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    done = set()
    values = []
    deadline = time.time() + timeout
    while len(done) < len(partitions):
        if time.time() > deadline:
            raise SystemExit(f"reading {topic} did not reach the end of {set(partitions) - done} in {timeout} s")
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                done.add(message.partition())
                continue
            raise KafkaException(message.error())
        done.discard(message.partition())
        values.append(message.value().decode())
    consumer.close()
    return values


def send_all(p, topic, values, partitions):
    for i, value in enumerate(values):
        p.produce(topic, value.encode(), partition=i % partitions)
    p.flush(30)


def visibility(args):
    p = producer(args.bootstrap, "visibility")
    p.init_transactions(30)
    p.begin_transaction()
    send_all(p, args.topic, [f"commit1-{i}" for i in range(50)], args.partitions)
    p.commit_transaction(30)
    p.begin_transaction()
    send_all(p, args.topic, [f"abort-{i}" for i in range(50)], args.partitions)
    p.abort_transaction(30)
    p.begin_transaction()
    send_all(p, args.topic, [f"commit2-{i}" for i in range(50)], args.partitions)
    p.commit_transaction(30)
    committed = read_all(args.bootstrap, args.topic, "read_committed")
    uncommitted = read_all(args.bootstrap, args.topic, "read_uncommitted")
    print(json.dumps({"read_committed": committed, "read_uncommitted": uncommitted}))


def error_of(error):
    """The Kafka error in a KafkaException, as (name, fatal)."""
    kafka_error = error.args[0]
    return kafka_error.name(), kafka_error.fatal()


def zombie(args):
    old = producer(args.bootstrap, "zombie")
    old.init_transactions(30)
    old.begin_transaction()
    send_all(old, args.topic, [f"zombie-{i}" for i in range(20)], args.partitions)
    new = producer(args.bootstrap, "zombie")
    new.init_transactions(60)
    new.begin_transaction()
    send_all(new, args.topic, [f"successor-{i}" for i in range(20)], args.partitions)
    new.commit_transaction(30)
    outcome = {"zombie_commit": "ok", "fatal": False}
    try:
        old.produce(args.topic, b"zombie-late", partition=0)
        old.flush(10)
        old.commit_transaction(30)
    except KafkaException as error:
        name, fatal = error_of(error)
        outcome = {"zombie_commit": name, "fatal": fatal}
    outcome["read_committed"] = read_all(args.bootstrap, args.topic, "read_committed")
    print(json.dumps(outcome))


def timeout(args):
    p = producer(args.bootstrap, "forgetful", **{"transaction.timeout.ms": 3000})
    p.init_transactions(30)
    p.begin_transaction()
    send_all(p, args.topic, [f"open-{i}" for i in range(10)], args.partitions)
    # Plain records after the open transaction: read_committed consumers
    # see them only once the transaction is aborted.
    plain = Producer({"bootstrap.servers": args.bootstrap, "acks": "all"})
    send_all(plain, args.topic, [f"after-{i}" for i in range(args.partitions)], args.partitions)
    early = read_all(args.bootstrap, args.topic, "read_committed", timeout=10)
    time.sleep(args.wait)
    late = read_all(args.bootstrap, args.topic, "read_committed")
    outcome = {"before_timeout": early, "after_timeout": late, "late_commit": "ok"}
    try:
        p.commit_transaction(30)
    except KafkaException as error:
        outcome["late_commit"] = error_of(error)[0]
    print(json.dumps(outcome))


def retrying(call, errors, deadline):
    """Calls `call(timeout)` again while it fails with a retriable error (its
    outcome is unknown, as librdkafka documents for commit_transaction), each
    time with at most 30 s and never past the wall-clock `deadline`."""
    while True:
        try:
            return call(within(30, deadline))
        except KafkaException as error:
            if not error.args[0].retriable():
                raise
            errors.append("retry:" + error.args[0].name())
            print(f"retrying after {error.args[0].name()}: {error.args[0].str()}", file=sys.stderr, flush=True)
            if time.time() > deadline:
                raise SystemExit(f"still failing at the deadline: {errors[-5:]}")


def within(cap, deadline):
    """A call's timeout: at most `cap` seconds, and not past `deadline`."""
    return max(1.0, min(cap, deadline - time.time()))


def pipeline(args):
    """Reads `input`, writes `out-<value>` to `output` and commits the
    input offsets in the same transaction, until `count` input records are
    committed. A retriable failure aborts the transaction and rewinds to the
    committed offsets, as the exactly-once pattern prescribes."""
    started = reported = time.time()
    deadline = started + args.deadline
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 30000,
    })
    consumer.subscribe([args.input])
    p = producer(args.bootstrap, args.txn_id, **{"transaction.timeout.ms": 30000})
    p.init_transactions(within(60, deadline))
    processed = aborts = 0
    errors = []
    while processed < args.count:
        if time.time() - reported > 10:
            # Progress on stderr, which the test shows when it fails.
            reported = time.time()
            print(f"pipeline: {processed} processed, {aborts} aborts, last errors {errors[-3:]}", file=sys.stderr, flush=True)
        if time.time() > deadline:
            raise SystemExit(f"pipeline: only {processed} of {args.count} processed in {args.deadline} s; errors {errors[-5:]}")
        messages = consumer.consume(200, 0.5)
        messages = [m for m in messages if m.error() is None]
        if not messages:
            continue
        try:
            p.begin_transaction()
            for m in messages:
                p.produce(args.output, b"out-" + m.value(), partition=m.partition())
            positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
            group = consumer.consumer_group_metadata()
            retrying(lambda timeout: p.send_offsets_to_transaction(positions, group, timeout), errors, deadline)
            retrying(lambda timeout: p.commit_transaction(timeout), errors, deadline)
            processed += len(messages)
        except KafkaException as error:
            kafka_error = error.args[0]
            errors.append(kafka_error.name())
            if kafka_error.fatal():
                raise
            aborts += 1
            try:
                p.abort_transaction(within(60, deadline))
            except KafkaException as abort_error:
                errors.append("abort:" + abort_error.args[0].name())
                if abort_error.args[0].fatal():
                    raise
            # Rewind to what the group has committed.
            assigned = consumer.assignment()
            for tp in consumer.committed(assigned, within(60, deadline)):
                consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))
            processed = sum(tp.offset for tp in consumer.committed(assigned, within(60, deadline)) if tp.offset > 0)
    consumer.close()
    print(json.dumps({"processed": processed, "aborts": aborts, "errors": errors}))


def read(args):
    print(json.dumps({"values": read_all(args.bootstrap, args.topic, args.isolation)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["visibility", "zombie", "timeout", "pipeline", "read"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--wait", type=float, default=6.0, help="timeout: seconds to leave the transaction open")
    parser.add_argument("--input")
    parser.add_argument("--output")
    parser.add_argument("--group")
    parser.add_argument("--txn-id")
    parser.add_argument("--count", type=int)
    parser.add_argument("--deadline", type=float, default=300.0)
    parser.add_argument("--isolation", default="read_committed")
    args = parser.parse_args()
    {"visibility": visibility, "zombie": zombie, "timeout": timeout, "pipeline": pipeline, "read": read}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
