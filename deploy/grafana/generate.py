#!/usr/bin/env python3
"""Rebuild deploy/grafana/dashboards/*.json from scheduler/metrics/dashboards.py.

Usage: python deploy/grafana/generate.py [OUT_DIR]   (default: next to this file)
Needs grafana-foundation-sdk==1769699379!11.6.0. Commit the result; a test checks it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scheduler.metrics.dashboards import write_all  # noqa: E402

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "dashboards"
    for path in write_all(out):
        print(path)
