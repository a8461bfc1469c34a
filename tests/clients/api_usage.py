"""The Kafka APIs and versions each client script uses, read from the
brokers' request counters (keel_broker_requests_total by api and version)
before and after each script runs against one cluster (issue 24's figure).

Usage: api_usage.py BOOTSTRAP ADMIN[,ADMIN...] PROGRAM:SCRIPT...
  e.g. api_usage.py 127.0.0.1:9092 127.0.0.1:9592,127.0.0.1:9593,127.0.0.1:9594 \
       python:roundtrip.py node:kafkajs/roundtrip.js
Prints one line per script: the APIs it sent, each with the versions used.
"""

import os
import re
import subprocess
import sys
import urllib.request

bootstrap, admins, runs = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
here = os.path.dirname(os.path.abspath(__file__))
line = re.compile(r'^keel_broker_requests_total\{api="([^"]+)",version="(-?\d+)"\} (\d+)')


def counts():
    total = {}
    for admin in admins:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as answer:
            for text in answer.read().decode().splitlines():
                found = line.match(text)
                if found:
                    key = (found[1], int(found[2]))
                    total[key] = total.get(key, 0) + int(found[3])
    return total


for run in runs:
    program, script = run.split(":", 1)
    program = sys.executable if program == "python" else program
    before = counts()
    finished = subprocess.run([program, os.path.join(here, script), bootstrap], cwd=os.path.dirname(os.path.join(here, script)),
                              capture_output=True, text=True, timeout=600)
    after = counts()
    used = {}
    for (api, version), count in after.items():
        if count > before.get((api, version), 0):
            used.setdefault(api, []).append(version)
    status = "ok" if finished.returncode == 0 else f"FAILED ({finished.returncode})"
    apis = ", ".join(f"{api} v{'/'.join(map(str, sorted(versions)))}" for api, versions in sorted(used.items()))
    print(f"{script} [{status}]: {apis}")
