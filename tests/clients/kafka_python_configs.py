"""Topic and broker configs as kafka-python sees them against a Keel cluster
(issue 24): Kafka's standard topic configs accepted at creation (test
suites, Kafka Streams, MirrorMaker 2 and Terraform set them), refused only
for an unknown name or a bad value; DescribeConfigs with every config's
type, source and synonyms; the legacy AlterConfigs API (key 33) that
kafka-python uses on request and Sarama by default; a broker's settings.
Exits non-zero with a message on the first difference.

Usage: kafka_python_configs.py BOOTSTRAP
"""

import sys

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import InvalidConfigurationError

bootstrap = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
standard = {
    "segment.bytes": "104857600",
    "segment.ms": "3600000",
    "flush.ms": "1000",
    "min.insync.replicas": "2",
    "unclean.leader.election.enable": "false",
    "min.cleanable.dirty.ratio": "0.1",
    "message.timestamp.type": "LogAppendTime",
    "cleanup.policy": "compact,delete",
    "retention.ms": "86400000",
}
admin.create_topics([NewTopic("configured", 1, 3, topic_configs=standard)])
print("ok: a topic created with Kafka's standard configs")

for name, config in [("unknown", {"no.such.config": "1"}), ("bad-value", {"retention.ms": "soon"}),
                     ("too-small", {"segment.bytes": "1000"})]:
    try:
        admin.create_topics([NewTopic(name, 1, 1, topic_configs=config)])
    except InvalidConfigurationError:
        continue
    sys.exit(f"creating a topic with {config} succeeded; expected INVALID_CONFIG")
print("ok: unknown names and bad values refused with INVALID_CONFIG")


def describe(resource_type, name):
    found = admin.describe_configs([ConfigResource(resource_type, name)], include_synonyms=True, config_filter="all")
    return found[resource_type.name.lower()][name]


configs = describe(ConfigResourceType.TOPIC, "configured")
for key, value in standard.items():
    entry = configs.get(key)
    if entry is None or entry["value"] != value or entry["config_source"] != "DYNAMIC_TOPIC_CONFIG":
        sys.exit(f"{key}: expected {value} set on the topic, got {entry}")
types = {"retention.bytes": "LONG", "segment.bytes": "INT", "cleanup.policy": "LIST", "preallocate": "BOOLEAN",
         "min.cleanable.dirty.ratio": "DOUBLE", "compression.type": "STRING"}
for key, kind in types.items():
    if configs[key]["config_type"] != kind:
        sys.exit(f"{key}: type {configs[key]['config_type']}, expected {kind}")
default = configs["retention.bytes"]
if (default["value"], default["config_source"]) != ("-1", "DEFAULT_CONFIG"):
    sys.exit(f"retention.bytes: expected Kafka's default, got {default}")
synonyms = [(s["name"], s["source"]) for s in configs["segment.bytes"]["synonyms"]]
if synonyms != [("segment.bytes", "DYNAMIC_TOPIC_CONFIG"), ("log.segment.bytes", "DEFAULT_CONFIG")]:
    sys.exit(f"segment.bytes synonyms: {synonyms}")
if len(configs) < 30:
    sys.exit(f"only {len(configs)} topic configs described: {sorted(configs)}")
print(f"ok: {len(configs)} topic configs described with their types, sources and synonyms")

result = admin.alter_configs(
    [ConfigResource(ConfigResourceType.TOPIC, "configured", configs={"retention.ms": "1000"})], incremental=False
)
if result["topic"]["configured"] != "OK":
    sys.exit(f"legacy AlterConfigs: {result}")
configs = describe(ConfigResourceType.TOPIC, "configured")
if configs["retention.ms"]["value"] != "1000":
    sys.exit(f"legacy AlterConfigs did not set retention.ms: {configs['retention.ms']}")
print("ok: the legacy AlterConfigs API")

broker = admin.describe_cluster()["brokers"][0]["broker_id"]
settings = describe(ConfigResourceType.BROKER, str(broker))
for key in ["listeners", "advertised.listeners", "broker.id", "num.partitions", "log.retention.ms", "message.max.bytes"]:
    if key not in settings:
        sys.exit(f"broker {broker}'s configs lack {key}: {sorted(settings)}")
if settings["broker.id"]["value"] != str(broker) or settings["num.partitions"]["config_type"] != "INT":
    sys.exit(f"broker {broker}: {settings['broker.id']} {settings['num.partitions']}")
print("ok: a broker's configs")
