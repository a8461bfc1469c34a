#!/usr/bin/env python3
"""confluent-kafka (librdkafka) over an SSL listener with a client
certificate: an idempotent producer writes N values to TOPIC at a steady
rate while the test rotates the broker's certificate; every value must be
delivered without an error. Prints "producing" when it starts and the count
at the end; exits non-zero on the first delivery error.

Usage: tls_producer.py BOOTSTRAP CA CERT KEY TOPIC N
"""

import sys
import time

from confluent_kafka import Producer

bootstrap, ca, cert, key, topic, count = sys.argv[1:7]
count = int(count)
producer = Producer({
    "bootstrap.servers": bootstrap,
    "security.protocol": "SSL",
    "ssl.ca.location": ca,
    "ssl.certificate.location": cert,
    "ssl.key.location": key,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
})
errors, delivered = [], []


def report(error, message):
    if error is not None:
        errors.append(error)
    else:
        delivered.append(message.value())


print("producing", flush=True)
for i in range(count):
    producer.produce(topic, f"tls-{i}".encode(), on_delivery=report)
    producer.poll(0)
    time.sleep(0.01)
left = producer.flush(60)
if errors or left or len(delivered) != count:
    sys.exit(f"delivered {len(delivered)} of {count}, {left} left, errors: {errors[:5]}")
print(f"delivered {len(delivered)}", flush=True)
