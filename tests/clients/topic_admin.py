"""CreateTopics and CreatePartitions as confluent-kafka (librdkafka) sends
them from tools such as Terraform and MirrorMaker 2 (issue 24): a
replication factor of 3 or -1, a manual replica assignment, and
validate_only, each accepted or refused as a Kafka 4 broker does. Exits
non-zero with a message on the first difference.

Usage: topic_admin.py BOOTSTRAP
"""

import sys

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})
brokers = sorted(admin.list_topics(timeout=30).brokers)
if len(brokers) < 3:
    sys.exit(f"expected three brokers, got {brokers}")


def succeed(futures, what):
    for future in futures.values():
        try:
            future.result(timeout=30)
        except KafkaException as error:
            sys.exit(f"{what}: {error}")


def refused(futures, code, what):
    for future in futures.values():
        try:
            future.result(timeout=30)
        except KafkaException as error:
            if error.args[0].code() != code:
                sys.exit(f"{what}: expected {KafkaError(code).name()}, got {error}")
            continue
        sys.exit(f"{what}: expected {KafkaError(code).name()}, but it succeeded")


def partitions(topic):
    # All topics: asking for one by name would create it (auto-creation).
    found = admin.list_topics(timeout=30).topics.get(topic)
    return None if found is None else len(found.partitions)


succeed(admin.create_topics([NewTopic("three", num_partitions=2, replication_factor=3)]), "replication factor 3")
succeed(admin.create_topics([NewTopic("defaults", num_partitions=-1, replication_factor=-1)]), "replication factor -1")
assignment = [[brokers[0], brokers[1], brokers[2]], [brokers[1], brokers[2], brokers[0]], [brokers[2], brokers[0], brokers[1]]]
succeed(admin.create_topics([NewTopic("assigned", num_partitions=3, replica_assignment=assignment)]), "a manual assignment")
if partitions("assigned") != 3:
    sys.exit(f"a manual assignment of 3 partitions made {partitions('assigned')}")
print("ok: replication factors 3 and -1 and a manual assignment")

refused(
    admin.create_topics([NewTopic("nobody", num_partitions=1, replica_assignment=[[brokers[0], 999]])]),
    KafkaError.INVALID_REPLICA_ASSIGNMENT,
    "an assignment naming an unknown broker",
)
refused(
    admin.create_topics([NewTopic("twice", num_partitions=1, replica_assignment=[[brokers[0], brokers[0]]])]),
    KafkaError.INVALID_REPLICA_ASSIGNMENT,
    "an assignment naming a broker twice",
)
refused(
    admin.create_topics([NewTopic("uneven", num_partitions=2, replica_assignment=[[brokers[0]], [brokers[0], brokers[1]]])]),
    KafkaError.INVALID_REPLICA_ASSIGNMENT,
    "an assignment with replica lists of different lengths",
)
for name in ("nobody", "twice", "uneven"):
    if partitions(name) is not None:
        sys.exit(f"a refused creation made topic {name}")
print("ok: bad assignments refused with INVALID_REPLICA_ASSIGNMENT")

succeed(admin.create_topics([NewTopic("checked", num_partitions=4)], validate_only=True), "validate_only")
refused(
    admin.create_topics([NewTopic("checked-bad", num_partitions=1, config={"retention.ms": "soon"})], validate_only=True),
    KafkaError.INVALID_CONFIG,
    "validate_only with a bad config",
)
refused(
    admin.create_topics([NewTopic("three", num_partitions=1)], validate_only=True),
    KafkaError.TOPIC_ALREADY_EXISTS,
    "validate_only of an existing topic",
)
if partitions("checked") is not None:
    sys.exit("validate_only created the topic")
print("ok: validate_only checks and creates nothing")

succeed(admin.create_partitions([NewPartitions("assigned", 5, replica_assignment=[[brokers[0]], [brokers[1]]])]),
        "new partitions with an assignment")
if partitions("assigned") != 5:
    sys.exit(f"growing to 5 partitions made {partitions('assigned')}")
refused(
    admin.create_partitions([NewPartitions("assigned", 7, replica_assignment=[[brokers[0]]])]),
    KafkaError.INVALID_REPLICA_ASSIGNMENT,
    "fewer assignments than new partitions",
)
succeed(admin.create_partitions([NewPartitions("assigned", 9)], validate_only=True), "validate_only growth")
if partitions("assigned") != 5:
    sys.exit(f"a refused or validate-only growth changed the count to {partitions('assigned')}")
print("ok: CreatePartitions with an assignment, and its refusals")
