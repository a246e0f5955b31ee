"""docs/metrics.md and the exporter agree: every exported family is documented with its type and labels."""
from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(fairgpu_\w+)` \| (\w+) \|([^|]*)\| (.+) \|$")


def documented() -> dict[str, tuple[str, frozenset]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        m = ROW.match(line)
        if m:
            name, kind, labels, meaning = m.groups()
            assert meaning.strip(), name
            assert name not in rows, f"{name} documented twice"
            rows[name] = (kind, frozenset(re.findall(r"`(\w+)`", labels)))
    return rows


def exported(registry) -> dict[str, tuple[str, frozenset]]:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        labels = {k for s in fam.samples for k in s.labels} - {"le"}
        out[name] = (fam.type, frozenset(labels))
    # prometheus_client's `<counter|histogram>_created` companions (documented once, in prose)
    for name in [n for n in out if n.endswith("_created")]:
        stem = name[: -len("_created")]
        if out.get(stem + "_total", out.get(stem, ("",)))[0] in ("counter", "histogram"):
            del out[name]
    return out


def test_every_exported_metric_is_documented_with_its_type_and_labels(contended_run):
    doc, live = documented(), exported(contended_run.registry)
    assert len(doc) >= 30
    assert {n: doc.get(n) for n in live} == live
    assert set(doc) == set(live), f"documented but not exported: {set(doc) - set(live)}"


def test_the_documented_reason_and_status_values_are_the_exporters():
    from scheduler.metrics.exporter import FINISHED_STATUSES, PREEMPTION_REASONS
    from scheduler.metrics.view import PENDING_REASONS

    text = DOC.read_text()
    for value in (*PENDING_REASONS, *PREEMPTION_REASONS, *FINISHED_STATUSES):
        assert f"`{value}`" in text, value
