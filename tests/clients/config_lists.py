"""IncrementalAlterConfigs' APPEND and SUBTRACT on list configs, as
confluent-kafka (librdkafka) sends them (issue 24): `cleanup.policy` is a
list, so `compact` can be appended to `delete` and `delete` subtracted
again; APPEND on a config that is not a list is INVALID_CONFIG. And a
compacted topic refuses a record without a key with INVALID_RECORD and the
record named in the answer's record errors (KIP-467). Exits non-zero with a
message on the first difference.

Usage: config_lists.py BOOTSTRAP
"""

import sys

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})
for future in admin.create_topics([NewTopic("listed", num_partitions=1, replication_factor=1)]).values():
    future.result(timeout=30)


def alter(key, value, op):
    entry = ConfigEntry(key, value, incremental_operation=op)
    resource = ConfigResource(ResourceType.TOPIC, "listed", incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def policy():
    resource = ConfigResource(ResourceType.TOPIC, "listed")
    for future in admin.describe_configs([resource]).values():
        return future.result(timeout=30)["cleanup.policy"].value


alter("cleanup.policy", "compact", AlterConfigOpType.APPEND)
if sorted(policy().split(",")) != ["compact", "delete"]:
    sys.exit(f"APPEND compact to the default delete gave {policy()!r}")
alter("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT)
if policy() != "compact":
    sys.exit(f"SUBTRACT delete gave {policy()!r}")
alter("cleanup.policy", "compact", AlterConfigOpType.APPEND)
if policy() != "compact":
    sys.exit(f"APPEND of an item already there gave {policy()!r}")
print("ok: APPEND and SUBTRACT on cleanup.policy")

try:
    alter("retention.ms", "1000", AlterConfigOpType.APPEND)
    sys.exit("APPEND on retention.ms succeeded")
except KafkaException as error:
    if error.args[0].code() != KafkaError.INVALID_CONFIG:
        sys.exit(f"APPEND on retention.ms: expected INVALID_CONFIG, got {error}")
print("ok: APPEND on a config that is not a list is INVALID_CONFIG")

# A compacted topic refuses a record without a key (KIP-467): INVALID_RECORD
# for the batch, the keyless record named in its record errors.
from confluent_kafka import Consumer, Producer  # noqa: E402

for future in admin.create_topics(
    [NewTopic("keyed", num_partitions=1, replication_factor=1, config={"cleanup.policy": "compact"})]
).values():
    future.result(timeout=30)
producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 200, "enable.idempotence": False, "retries": 0})
outcomes = {}
for name, key in [("first", b"a"), ("keyless", None), ("last", b"b")]:
    producer.produce("keyed", value=name.encode(), key=key, on_delivery=lambda error, message: outcomes.__setitem__(
        message.value().decode(), error))
producer.flush(30)
keyless = outcomes.get("keyless")
if keyless is None or keyless.code() != KafkaError.INVALID_RECORD:
    sys.exit(f"a keyless record on a compacted topic: {outcomes}")
producer.produce("keyed", value=b"alone", key=b"c", on_delivery=lambda error, message: outcomes.__setitem__("alone", error))
producer.flush(30)
if outcomes.get("alone") is not None:
    sys.exit(f"a keyed record after the refused batch: {outcomes['alone']}")
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "keyed-check", "auto.offset.reset": "earliest"})
consumer.subscribe(["keyed"])
read = []
deadline = __import__("time").time() + 30
while "alone" not in read and __import__("time").time() < deadline:
    message = consumer.poll(1)
    if message is not None and message.error() is None:
        read.append(message.value().decode())
consumer.close()
if "keyless" in read or "alone" not in read:
    sys.exit(f"the compacted topic holds {read}")
print("ok: a compacted topic refuses a keyless record with INVALID_RECORD")
