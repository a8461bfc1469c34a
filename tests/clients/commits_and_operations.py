"""Offset commits and authorized operations as confluent-kafka (librdkafka)
sees them against a Keel cluster, each as a Kafka 4 broker behaves (issue
24). Exits non-zero with a message on the first difference:

- a commit of any offset succeeds: beyond a partition's end, and on an
  empty partition (tools seed and copy group offsets so);
- a commit's metadata string and leader epoch come back unchanged;
- `committed()` right after an asynchronous commit, on the same
  connection, sees that commit (Kafka handles a connection's requests in
  order);
- the commit on `close()` is in place when `close()` returns;
- DescribeTopics, DescribeCluster and DescribeConsumerGroups report the
  operations the caller may perform when asked (all of them: no authorizer
  is configured), not none.

Usage: commits_and_operations.py BOOTSTRAP
"""

import sys

from confluent_kafka import Consumer, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import AclOperation, AdminClient, NewTopic

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})
for future in admin.create_topics([NewTopic("ledger", num_partitions=2, replication_factor=1)]).values():
    future.result(timeout=30)


def consumer(group, **extra):
    settings = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    settings.update(extra)
    return Consumer(settings)


# Partition 0 holds 10 records; partition 1 is empty.
producer = Producer({"bootstrap.servers": bootstrap})
for i in range(10):
    producer.produce("ledger", value=b"entry-%d" % i, partition=0)
if producer.flush(30) != 0:
    sys.exit("the records were not delivered")

seeder = consumer("seeded")
wanted = [
    TopicPartition("ledger", 0, 1000, metadata="copied from the old cluster", leader_epoch=7),
    TopicPartition("ledger", 1, 42, metadata="", leader_epoch=-1),
]
for result in seeder.commit(offsets=wanted, asynchronous=False):
    if result.error is not None:
        sys.exit(f"a commit of any offset must succeed, as in Kafka: {result}")
got = {tp.partition: tp for tp in seeder.committed([TopicPartition("ledger", 0), TopicPartition("ledger", 1)], timeout=30)}
if got[0].offset != 1000 or got[1].offset != 42:
    sys.exit(f"committed offsets beyond the end and on an empty partition read back as {got}")
if got[0].metadata != "copied from the old cluster":
    sys.exit(f"the commit's metadata came back as {got[0].metadata!r}")
if got[0].leader_epoch != 7:
    sys.exit(f"the commit's leader epoch came back as {got[0].leader_epoch}")
print("ok: commits beyond the end and on an empty partition, with metadata and leader epoch")

# An asynchronous commit, then committed() at once: the same connection to
# the coordinator, so the fetch must see the commit, every time.
for n in range(1, 51):
    seeder.commit(offsets=[TopicPartition("ledger", 1, 100 + n)], asynchronous=True)
    seen = seeder.committed([TopicPartition("ledger", 1)], timeout=30)[0].offset
    if seen != 100 + n:
        sys.exit(f"committed() after an asynchronous commit of {100 + n} read {seen}")
seeder.close()
print("ok: 50 asynchronous commits each seen by the committed() right after it")

# A group member reads everything, and close() commits its position.
reader = consumer("readers", **{"enable.auto.commit": True, "auto.offset.reset": "earliest"})
reader.subscribe(["ledger"])
read = 0
while read < 10:
    message = reader.poll(10)
    if message is None:
        sys.exit(f"only {read} of 10 records read")
    if message.error() is None:
        read += 1
reader.close()
after = consumer("readers").committed([TopicPartition("ledger", 0)], timeout=30)[0].offset
if after != 10:
    sys.exit(f"the commit on close() was not in place when close() returned: committed {after}, read 10")
print("ok: the commit on close() is in place when close() returns")

# Authorized operations, when asked.
topic = admin.describe_topics(TopicCollection(["ledger"]), include_authorized_operations=True)["ledger"].result(timeout=30)
wanted_topic = {AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DELETE, AclOperation.ALTER,
                AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS}
if set(topic.authorized_operations or []) != wanted_topic:
    sys.exit(f"a topic's authorized operations: {topic.authorized_operations}")
cluster = admin.describe_cluster(include_authorized_operations=True).result(timeout=30)
wanted_cluster = {AclOperation.CREATE, AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.CLUSTER_ACTION,
                  AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS, AclOperation.IDEMPOTENT_WRITE}
if set(cluster.authorized_operations or []) != wanted_cluster:
    sys.exit(f"the cluster's authorized operations: {cluster.authorized_operations}")
group = admin.describe_consumer_groups(["readers"], include_authorized_operations=True)["readers"].result(timeout=30)
if set(group.authorized_operations or []) != {AclOperation.READ, AclOperation.DELETE, AclOperation.DESCRIBE}:
    sys.exit(f"a group's authorized operations: {group.authorized_operations}")
unasked = admin.describe_topics(TopicCollection(["ledger"]))["ledger"].result(timeout=30)
if unasked.authorized_operations:
    sys.exit(f"authorized operations reported unasked: {unasked.authorized_operations}")
print("ok: authorized operations of a topic, the cluster and a group")
