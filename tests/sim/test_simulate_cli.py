"""`fairgpu simulate` through click's runner: JSON keyed by policy, the plot, errors, --from-db."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from click.testing import CliRunner

from scheduler.cli import main as cli

KEYS = {"jain_index", "max_share_deviation", "mean_jct_s", "makespan_s", "utilisation", "max_rho", "wait_p95_s"}
SMALL = ["--jobs", "300", "--days", "1", "--institutions", "4", "--gpus", "8", "--load", "1.2"]


def test_json_is_keyed_by_policy_with_the_metrics():
    r = CliRunner().invoke(cli, ["simulate", *SMALL, "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert set(data) == {"fifo", "static", "fair-share-no-history", "fair-share", "finish-time"}
    for m in data.values():
        assert KEYS <= set(m)
        assert "wait_p95_s" in next(iter(m["institutions"].values()))


def test_table_policy_choice_and_plot(tmp_path):
    png = tmp_path / "cmp.png"
    r = CliRunner().invoke(cli, ["simulate", *SMALL, "--policy", "fifo", "--policy", "fair-share", "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "fair-share" in r.stdout and "fifo" in r.stdout and "finish-time" not in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_trace_exits_1_with_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,account,submit_s,duration_s,slices\na,x,0,ten,1\n")
    r = CliRunner().invoke(cli, ["simulate", "--trace", str(bad)])
    assert r.exit_code == 1
    assert "bad.csv:2: duration_s is not a number" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = CliRunner().invoke(cli, ["simulate", "--policy", "nope"])
    assert r.exit_code == 2


def test_from_db_uses_the_live_tree_and_capacity(tmp_path):
    from scheduler.services.accounts import add_account
    from scheduler.services.capacity import set_node
    from scheduler.store import init_db, make_engine, session_scope

    url = f"sqlite:///{tmp_path / 'f.db'}"
    engine = make_engine(url)
    init_db(engine)
    with session_scope(engine) as s:
        set_node(s, node="gpu-1", gpus=2, slices_per_gpu=4, gpu_type="T4", at=datetime.now(timezone.utc))
    with session_scope(engine) as s:
        add_account(s, "uni-a", weight=3)
        add_account(s, "uni-b", weight=1, guaranteed=2)
    trace = tmp_path / "t.csv"
    rows = ["id,account,submit_s,duration_s,slices"]
    rows += [f"a{i},uni-a,0,100,1" for i in range(16)] + [f"b{i},uni-b,0,100,1" for i in range(16)]
    rows += ["c0,uni-c,0,100,1"]  # not in the live tree: left out, and said so
    trace.write_text("\n".join(rows) + "\n")
    r = CliRunner().invoke(cli, ["simulate", "--trace", str(trace), "--from-db", url, "--policy", "static", "--json"])
    assert r.exit_code == 0, r.output
    assert "8 slices on 1 nodes" in r.stderr and "left out 1 jobs: account not in the tree" in r.stderr
    m = json.loads(r.stdout)["static"]
    # static shares 3:1 of 8 slices: uni-a runs 6 at a time, uni-b 2, so 16 jobs of a take 3 rounds
    assert m["jobs"] == 32 and m["makespan_s"] == 800.0
