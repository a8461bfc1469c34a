"""Load for the consumer-group and idempotence tests: an idempotent confluent-kafka producer
(acks=all) writes the values PREFIX-0, PREFIX-1, ... round robin over every
partition of TOPIC (value n goes to the n-th partition modulo the count), at
RATE records a second (0: as fast as it can), until COUNT records were sent
or SECONDS have passed, whichever comes first. Then it flushes and prints one
JSON line:

    {"acked": [[partition, offset, value], ...], "failed": N,
     "first_failure": str or null, "unflushed": N}

"acked" holds only the records whose delivery was acknowledged, in the order
the acknowledgements arrived. The test decides what a failure means; the
script exits non-zero only when it cannot start (no such topic).

Usage: group_produce.py --bootstrap B --topic T [--prefix P]
                        [--count N] [--seconds S] [--rate R] [--config K=V ...]
"""

import argparse
import json
import sys
import time

from confluent_kafka import Producer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--bootstrap", required=True)
parser.add_argument("--topic", required=True)
parser.add_argument("--prefix", default="v")
parser.add_argument("--count", type=int, help="records to send")
parser.add_argument("--seconds", type=float, help="stop sending after this long")
parser.add_argument("--rate", type=float, default=0, help="records a second; 0 for as fast as possible")
parser.add_argument("--config", action="append", default=[], help="a librdkafka setting K=V; repeatable")
args = parser.parse_args()
if args.count is None and args.seconds is None:
    parser.error("give --count, --seconds or both")

config = {
    "bootstrap.servers": args.bootstrap,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    # Keep retrying through a broker restart; the tests flush within a minute.
    "message.timeout.ms": 60000,
}
for setting in args.config:
    key, _, value = setting.partition("=")
    config[key] = value
producer = Producer(config)
topic = producer.list_topics(args.topic, timeout=30).topics.get(args.topic)
if topic is None or topic.error is not None:
    sys.exit(f"no metadata for {args.topic}: {topic.error if topic else 'missing'}")
partitions = sorted(topic.partitions)
if not partitions:
    sys.exit(f"{args.topic} has no partitions")

acked = []
failures = []


def delivered(error, message):
    if error is not None:
        failures.append(str(error))
        return
    acked.append([message.partition(), message.offset(), message.value().decode()])


sent = 0
started = time.monotonic()
while True:
    elapsed = time.monotonic() - started
    if args.count is not None and sent >= args.count:
        break
    if args.seconds is not None and elapsed >= args.seconds:
        break
    if args.rate > 0 and sent >= int(elapsed * args.rate) + 1:
        # Ahead of the rate: serve delivery reports while waiting.
        producer.poll(0.002)
        continue
    try:
        producer.produce(
            args.topic,
            partition=partitions[sent % len(partitions)],
            value=f"{args.prefix}-{sent}",
            on_delivery=delivered,
        )
        sent += 1
    except BufferError:
        producer.poll(0.05)
        continue
    producer.poll(0)
unflushed = producer.flush(60)
print(json.dumps({
    "acked": acked,
    "failed": len(failures),
    "first_failure": failures[0] if failures else None,
    "unflushed": unflushed,
}), flush=True)
