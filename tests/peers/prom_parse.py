"""Parses Prometheus text exposition from stdin with the official client's parser and prints
every sample as JSON: [{"family", "type", "name", "labels", "value"}]. A line the parser
rejects makes it exit non-zero with the error."""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        value = s.value
        if math.isinf(value):
            value = str(value)
        out.append({"family": family.name, "type": family.type, "name": s.name,
                    "labels": s.labels, "value": value})
print(json.dumps(out))
