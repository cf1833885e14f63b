#!/usr/bin/env python3
"""Scrape a Prometheus endpoint with urllib and parse it with prometheus_client's own parser.

usage: scrape_metrics.py URL [BEARER_TOKEN]

Prints one JSON object: family name -> {"type": ..., "samples": [{"name", "labels", "value"}]}.
Exits non-zero when the HTTP answer is not 200 or the text does not parse.
"""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    url = sys.argv[1]
    request = urllib.request.Request(url)
    if len(sys.argv) > 2:
        request.add_header("Authorization", f"Bearer {sys.argv[2]}")
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            print(f"HTTP {response.status}", file=sys.stderr)
            return 1
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("text/plain; version=0.0.4"):
            print(f"unexpected Content-Type {content_type!r}", file=sys.stderr)
            return 1
        text = response.read().decode("utf-8")
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = {
            "type": family.type,
            "help": family.documentation,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples
            ],
        }
    print(json.dumps(families))
    return 0


if __name__ == "__main__":
    sys.exit(main())
