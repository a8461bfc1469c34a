"""IncrementalAlterConfigs' APPEND and SUBTRACT on list configs, as
confluent-kafka (librdkafka) sends them (issue 24): `cleanup.policy` is a
list, so `compact` can be appended to `delete` and `delete` subtracted
again; APPEND on a config that is not a list is INVALID_CONFIG. Exits
non-zero with a message on the first difference.

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
