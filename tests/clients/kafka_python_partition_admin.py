"""The partition admin APIs as kafka-python sends them (issue 24), answered
as Kafka answers them where the operation means nothing here: leaders are
Keel's choice (ElectLeaders: ELECTION_NOT_NEEDED), partitions have no
replicas to move (a valid reassignment completes at once, none is ever in
progress, a cancellation is NO_REASSIGNMENT_IN_PROGRESS) and the one log
directory of each broker is the object store (DescribeLogDirs with each
led partition's uploaded bytes); and DescribeTopicPartitions (KIP-966),
which Kafka's own tools use to describe topics, in pages. Exits non-zero on
the first difference.

Usage: kafka_python_partition_admin.py BOOTSTRAP
"""

import sys
import time

from kafka import KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import InvalidReplicationAssignmentError, NoReassignmentInProgressError

bootstrap = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic("placed", 3, 1)])
producer = KafkaProducer(bootstrap_servers=bootstrap)
for i in range(300):
    producer.send("placed", b"x" * 100, partition=i % 3)
producer.flush()

# Uploads run every few seconds: wait until every partition has a size.
deadline = time.time() + 60
while True:
    sizes = {}
    for broker in admin.describe_log_dirs({"placed": [0, 1, 2]}):
        for log_dir in broker["log_dirs"]:
            for topic in log_dir["topics"]:
                for partition in topic["partitions"]:
                    sizes[partition["partition_index"]] = partition["partition_size"]
    if len(sizes) == 3 and all(size > 5000 for size in sizes.values()):
        break
    if time.time() > deadline:
        sys.exit(f"DescribeLogDirs never showed every partition's bytes: {sizes}")
    time.sleep(0.5)
print("ok: DescribeLogDirs shows each partition's bytes")

elected = admin.elect_leaders(0, {"placed": [0, 1, 2]}, raise_errors=False)
codes = [result.error_code for topic in elected.replica_election_results for result in topic.partition_result]
if codes != [84, 84, 84]:
    sys.exit(f"ElectLeaders: expected ELECTION_NOT_NEEDED (84) for every partition, got {elected}")
print("ok: ElectLeaders answers ELECTION_NOT_NEEDED")

brokers = sorted(b["broker_id"] for b in admin.describe_cluster()["brokers"])
answers = admin.alter_partition_reassignments({
    TopicPartition("placed", 0): brokers,
    TopicPartition("placed", 1): [brokers[0], 999],
    TopicPartition("placed", 2): None,
})
if answers[TopicPartition("placed", 0)] is not None:
    sys.exit(f"a valid reassignment: {answers}")
if answers[TopicPartition("placed", 1)] is not InvalidReplicationAssignmentError:
    sys.exit(f"a reassignment to an unknown broker: {answers}")
if answers[TopicPartition("placed", 2)] is not NoReassignmentInProgressError:
    sys.exit(f"cancelling a reassignment: {answers}")
if admin.list_partition_reassignments() != {}:
    sys.exit(f"reassignments in progress: {admin.list_partition_reassignments()}")
print("ok: partition reassignments complete at once, and their errors")

# DescribeTopicPartitions (KIP-966), as kafka-topics.sh --describe uses it:
# sorted by name, an unknown topic flagged, pages of at most the limit.
admin.create_topics([NewTopic("paged", 2, 1)])


def describe_in_pages():
    pages, cursor, seen = 0, None, []
    while True:
        answer = admin.describe_topic_partitions(["placed", "paged", "missing"], response_partition_limit=2, cursor=cursor)
        pages += 1
        for topic in answer["topics"]:
            if topic["name"] == "missing":
                if topic["error_code"] != 3:
                    sys.exit(f"an unknown topic: {topic}")
                continue
            for partition in topic["partitions"]:
                if partition["leader_id"] < 0 or partition["replica_nodes"] != [partition["leader_id"]]:
                    sys.exit(f"{topic['name']}: {partition}")
                seen.append((topic["name"], partition["partition_index"]))
        cursor = answer["next_cursor"]
        if cursor is None or pages > 10:
            return pages, seen


# CreateTopics answers once the broker that took it has the topic; the
# others learn it from the metadata watch a moment later, as in Kafka, and
# kafka-python may ask any of them. So a pass that misses "paged" is retried.
deadline = time.time() + 10
while True:
    pages, seen = describe_in_pages()
    if seen == [("paged", 0), ("paged", 1), ("placed", 0), ("placed", 1), ("placed", 2)] and pages == 3:
        break
    if ("paged", 0) in seen or time.time() > deadline:
        sys.exit(f"DescribeTopicPartitions in {pages} pages of 2: {seen}")
    time.sleep(0.2)
print("ok: DescribeTopicPartitions in pages, sorted, with leaders")
