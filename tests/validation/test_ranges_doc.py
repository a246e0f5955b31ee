"""The ranges quoted in docs/admin.md and docs/institutions.md are quota.limits' own:
each table row is rendered here from the Range and must appear on the page."""
from __future__ import annotations

from pathlib import Path

import pytest

from quota import limits
from scheduler.services import validate

DOCS = Path(__file__).resolve().parents[2] / "docs"

# page -> (the row's first cells, the allowed range as the page must state it)
ROWS = {
    "admin.md": [
        ("| weight | `--weight` | `weight` |", limits.WEIGHT.describe()),
        ("| guarantee | `--guaranteed` | `guaranteed` |", limits.GUARANTEED.describe()),
        ("| cap | `--max` | `max_slices` |", limits.MAX_SLICES.describe()),
        ("| pending limit | `--max-pending` | `max_pending` |", limits.MAX_PENDING.describe()),
        ("| GPUs of a node | `--gpus` | `gpus` |", limits.GPUS_PER_NODE.describe()),
        ("| slices per GPU | `--slices-per-gpu` | `slices_per_gpu` |", limits.SLICES_PER_GPU.describe()),
        ("| declared nodes | | |", limits.NODES.describe()),
        ("| usage half-life | `settings set half_life` | `half_life` |", validate.describe_duration(limits.HALF_LIFE)),
        ("| host memory per slice | `settings set host_memory_per_slice` | `host_memory_per_slice` |",
         validate.describe_size(limits.HOST_MEMORY_PER_SLICE)),
        ("| processes per attempt | `settings set max_processes` | `max_processes` |",
         limits.MAX_PROCESSES.describe()),
        ("| token lifetime | `token issue --expires` | `expires` |",
         validate.describe_duration(limits.TOKEN_LIFETIME)),
        ("| default and maximum time | `--default-time`, `--max-time` | `default_time_s`, `max_time_s` |",
         validate.describe_duration(limits.TIME_LIMIT)),
        ("| job and token ids | | path `{job_id}`, `{token}` |", limits.ID.describe()),
    ],
    "institutions.md": [
        ("| `--slices` | `slices` |", limits.JOB_SLICES.describe()),
        ("| `--count` | `count` |", limits.JOB_COUNT.describe()),
        ("| `--seconds` (hold) | `seconds` |", limits.HOLD_SECONDS.describe()),
        ("| `--steps` | `steps` |", limits.STEPS.describe()),
        ("| `--batch-size` | `batch_size` |", limits.BATCH_SIZE.describe()),
        ("| `--image-size` | `image_size` |", limits.IMAGE_SIZE.describe()),
        ("| `--time` | `time_limit_s` |", validate.describe_duration(limits.TIME_LIMIT)),
        ("| `job show`, `cancel`, `logs` | path `{job_id}` |", limits.ID.describe()),
        ("| `logs --tail` | query `tail` |", limits.LOG_TAIL.describe()),
    ],
}


@pytest.mark.parametrize("page", list(ROWS))
def test_every_documented_range_is_the_one_enforced(page):
    lines = (DOCS / page).read_text().splitlines()
    for start, allowed in ROWS[page]:
        row = [ln for ln in lines if ln.startswith(start)]
        assert len(row) == 1, f"{page}: no single row starting {start!r}"
        cell = row[0][len(start):].split("|")[0].strip()
        assert cell.startswith(allowed), f"{page}: {start} says {cell!r}, quota.limits says {allowed!r}"


def test_the_name_rule_is_documented_as_enforced():
    text = " ".join((DOCS / "admin.md").read_text().split())
    assert f"Each part is 1 to {limits.NAME_SEGMENT_MAX_LEN} lowercase letters" in text
    assert f"at most {limits.NAME_MAX_LEN} characters" in text
