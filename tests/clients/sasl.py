#!/usr/bin/env python3
"""confluent-kafka (librdkafka) and SASL (issue 22): SCRAM credentials made
with AlterUserScramCredentials over the brokers' own PLAINTEXT listener
(as kafka-configs.sh is used), shown by DescribeUserScramCredentials (never
a key), then a producer over SASL_SSL with SCRAM-SHA-512, a consumer over
SASL_SSL with SCRAM-SHA-256, and PLAIN over SASL_PLAINTEXT checked against
the stored SCRAM keys; a wrong password, a removed credential and bad
iterations get Kafka's errors. Exits non-zero on the first difference.

Usage: sasl.py PLAINTEXT_BOOTSTRAP SASL_SSL_BOOTSTRAP SASL_PLAINTEXT_BOOTSTRAP CA
"""

import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)

plaintext, sasl_ssl, sasl_plaintext, ca = sys.argv[1:5]
USER, PASSWORD = "orders-service", "correct horse battery staple"


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}", flush=True)


def settle(futures):
    """{user: None or the KafkaError} of an alter call."""
    outcome = {}
    for user, future in futures.items():
        try:
            future.result(30)
            outcome[user] = None
        except KafkaException as error:
            outcome[user] = error.args[0]
    return outcome


admin = AdminClient({"bootstrap.servers": plaintext})
made = settle(admin.alter_user_scram_credentials([
    UserScramCredentialUpsertion(USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), PASSWORD.encode()),
    UserScramCredentialUpsertion(USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), PASSWORD.encode()),
    UserScramCredentialUpsertion("weak", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 1000), b"x"),
]))
check(made[USER] is None, f"credentials for {USER} made: {made[USER]}")
check(made["weak"] is not None and made["weak"].code() == KafkaError.UNACCEPTABLE_CREDENTIAL,
      f"1000 iterations refused with UNACCEPTABLE_CREDENTIAL: {made['weak']}")
# With a list of users, one future per user.
described = admin.describe_user_scram_credentials([USER])[USER].result(30)
infos = sorted((info.mechanism, info.iterations) for info in described.scram_credential_infos)
check(infos == sorted([(ScramMechanism.SCRAM_SHA_256, 4096), (ScramMechanism.SCRAM_SHA_512, 8192)]),
      f"described: {infos}")
try:
    admin.describe_user_scram_credentials(["nobody"])["nobody"].result(30)
    check(False, "describing a user without credentials fails")
except KafkaException as error:
    check(error.args[0].code() == KafkaError.RESOURCE_NOT_FOUND, f"an unknown user: {error.args[0]}")


def sasl(bootstrap, mechanism, password=PASSWORD, protocol="SASL_SSL"):
    config = {"bootstrap.servers": bootstrap, "security.protocol": protocol, "sasl.mechanism": mechanism,
              "sasl.username": USER, "sasl.password": password}
    if protocol == "SASL_SSL":
        config["ssl.ca.location"] = ca
    return config


topic = f"secured-{uuid.uuid4().hex[:8]}"
secure_admin = AdminClient(sasl(sasl_ssl, "SCRAM-SHA-512"))
secure_admin.create_topics([NewTopic(topic, 3)])[topic].result(30)
producer = Producer({**sasl(sasl_ssl, "SCRAM-SHA-512"), "enable.idempotence": True})
delivered = []
for i in range(200):
    producer.produce(topic, f"v{i}".encode(), on_delivery=lambda e, m: delivered.append(e))
left = producer.flush(60)
check(left == 0 and len(delivered) == 200 and all(e is None for e in delivered),
      f"200 produced over SASL_SSL with SCRAM-SHA-512 ({left} left, errors {[e for e in delivered if e][:3]})")

consumer = Consumer({**sasl(sasl_ssl, "SCRAM-SHA-256"), "group.id": "secured", "auto.offset.reset": "earliest"})
consumer.subscribe([topic])
read, deadline = set(), time.time() + 60
while len(read) < 200 and time.time() < deadline:
    message = consumer.poll(1)
    if message is not None and message.error() is None:
        read.add(message.value())
consumer.close()
check(len(read) == 200, f"200 read back over SASL_SSL with SCRAM-SHA-256 (read {len(read)})")

plain_admin = AdminClient(sasl(sasl_plaintext, "PLAIN", protocol="SASL_PLAINTEXT"))
metadata = plain_admin.list_topics(timeout=30)
check(topic in metadata.topics, "PLAIN over SASL_PLAINTEXT, checked against the stored SCRAM keys")


def refused(config):
    """The error librdkafka reports when it cannot authenticate, if any."""
    errors = []
    client = Producer({**config, "error_cb": lambda e: errors.append(e)})
    client.poll(0)
    try:
        client.list_topics(timeout=5)
    except KafkaException:
        pass
    client.poll(1)
    return errors


errors = refused(sasl(sasl_ssl, "SCRAM-SHA-512", password="wrong"))
check(any(e.code() == KafkaError._AUTHENTICATION and "invalid credentials" in e.str() for e in errors),
      f"a wrong password is refused: {errors[:1]}")
errors = refused(sasl(sasl_plaintext, "PLAIN", password="wrong", protocol="SASL_PLAINTEXT"))
check(any(e.code() == KafkaError._AUTHENTICATION for e in errors), f"a wrong PLAIN password is refused: {errors[:1]}")

removed = settle(admin.alter_user_scram_credentials([UserScramCredentialDeletion(USER, ScramMechanism.SCRAM_SHA_256)]))
check(removed[USER] is None, f"the SCRAM-SHA-256 credential removed: {removed[USER]}")
errors = refused(sasl(sasl_ssl, "SCRAM-SHA-256"))
check(any(e.code() == KafkaError._AUTHENTICATION for e in errors), f"a removed credential no longer logs in: {errors[:1]}")
again = settle(admin.alter_user_scram_credentials([UserScramCredentialDeletion(USER, ScramMechanism.SCRAM_SHA_256)]))
check(again[USER] is not None and again[USER].code() == KafkaError.RESOURCE_NOT_FOUND,
      f"removing it again: RESOURCE_NOT_FOUND ({again[USER]})")
