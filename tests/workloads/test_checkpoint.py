"""Progress reporting and checkpoint/resume of workloads (workloads.hooks, workloads.checkpoint).

A preemption is simulated the way it happens in the scheduler: the run is
aborted from inside (a hook raises), with or without a last checkpoint asked
for just before, and a new `run_workload` call with the same checkpoint_dir is
the next attempt.
"""
from __future__ import annotations

import json
import math

import pytest

from workloads import checkpoint, generations
from workloads.hooks import Progress, RateWindow, RunHooks, format_progress
from workloads.runner import RESULT_KEYS, WorkloadSpec, run_workload

FRAMEWORKS = ("pytorch", "tensorflow")


class Preempted(Exception):
    """What the tests raise from a hook to stop a run, as a cancelled task stops."""


@pytest.fixture(params=FRAMEWORKS)
def framework(request):
    if request.param == "pytorch":
        request.getfixturevalue("torch_one_thread")
    else:
        pytest.importorskip("tensorflow")
    return request.param


def conv6(framework: str, **kw) -> WorkloadSpec:
    args = {"model": "conv6", "framework": framework, "steps": 5, "warmup_steps": 1, "batch_size": 4, "device": "cpu",
            "seed": 0}
    args.update(kw)
    return WorkloadSpec(**args)


def attempt(spec, ckpt, *, every=None, request_at=None, abort_after_checkpoint=False, abort_at=None):
    """One attempt: (steps it executed, its Progress reports, its result or None if aborted)."""
    seen: list[Progress] = []

    def on_step(p: Progress):
        seen.append(p)
        if abort_at is not None and p.step == abort_at:
            raise Preempted

    def on_checkpoint(step: int):
        if abort_after_checkpoint:
            raise Preempted

    hooks = RunHooks(on_step=on_step, checkpoint_dir=str(ckpt), checkpoint_every_steps=every,
                     checkpoint_requested=(lambda: bool(seen) and seen[-1].step == request_at),
                     on_checkpoint=on_checkpoint)
    try:
        result = run_workload(spec, hooks=hooks)
    except Preempted:
        result = None
    return [p.step for p in seen], seen, result


# ------------------------------------------------------------------ (a) only the remaining steps
def test_preempted_runs_resume_and_execute_only_the_remaining_steps(framework, tmp_path, capsys):
    spec = conv6(framework, steps=5, warmup_steps=1)  # 6 steps in all
    ckpt = tmp_path / "ckpt"
    # 1: killed at step 5 without a last save; its periodic checkpoints were at 2 and 4
    steps1, _, r1 = attempt(spec, ckpt, every=2, abort_at=5)
    assert r1 is None and steps1 == [1, 2, 3, 4, 5]
    assert checkpoint.latest_step(ckpt) == 4
    # 2: resumes at 4; the server asks for a checkpoint at step 5 and cancels the task right after
    steps2, _, r2 = attempt(spec, ckpt, every=10, request_at=5, abort_after_checkpoint=True)
    assert r2 is None and steps2 == [5]
    assert checkpoint.latest_step(ckpt) == 5
    # 3: resumes at 5 and finishes
    steps3, _, r3 = attempt(spec, ckpt, every=10)
    assert steps3 == [6]
    executed = len(steps1) + len(steps2) + len(steps3)
    assert executed == 6 + (5 - 4)  # the requested steps + the steps since the last checkpoint
    assert r3["resumed_from_step"] == 5 and r3["checkpoints_saved"] == 0
    assert len(r3["losses"]) == 6 and all(math.isfinite(x) for x in r3["losses"])  # across attempts
    assert r3["samples_per_second"] is None and r3["step_time_p50_s"] is None  # the one step left was warm-up
    assert any("resumed from checkpoint at step 5 of 6" in n for n in r3["notes"])
    assert tuple(r3) == RESULT_KEYS
    json.dumps(r3)
    out = capsys.readouterr().out
    assert "resumed from checkpoint at step 4" in out and "resumed from checkpoint at step 5" in out
    assert "checkpoint saved at step 2" in out and "checkpoint saved at step 5" in out
    assert "step 6/6" in out
    # the newest two generations are kept, each whole, and nothing half-written is left
    assert all(generations.parse(p.name) for p in ckpt.iterdir())
    kept = generations.generations(ckpt)
    assert [generations.parse(p.name)[0] for p in kept] == [0, 0] and len(kept) == generations.KEEP
    files = sorted(p.name for p in kept[-1].iterdir())
    assert files == ["checkpoint.json", f"state-000000005{'.pt' if framework == 'pytorch' else '.npz'}"]


# ------------------------------------------------------------------ (b) the loss continues
def test_the_loss_continues_from_the_checkpoint_not_from_the_start(framework, tmp_path):
    """An attempt that ran on past its checkpoint at step 26 and died is the reference:
    the resumed attempt repeats steps 27..30 exactly, with the loss where it was."""
    spec = conv6(framework, steps=28, warmup_steps=2, batch_size=8)  # 30 steps
    ckpt = tmp_path / "ckpt"
    k = 26
    _, _, full = attempt(spec, ckpt, every=k)  # saves at 26 only, then runs to 30
    assert checkpoint.latest_step(ckpt) == k
    steps, seen, resumed = attempt(spec, ckpt)
    assert steps == list(range(k + 1, 31))
    ref = full["losses"]
    assert resumed["losses"][:k] == ref[:k]
    assert resumed["losses"][k:] == pytest.approx(ref[k:], rel=1e-4, abs=1e-4)
    assert [p.loss for p in seen] == resumed["losses"][k:]
    initial = sum(ref[:3]) / 3
    before = sum(ref[k - 3:k]) / 3
    after = sum(resumed["losses"][k:k + 3]) / 3
    assert initial > 2.1, ref  # chance level is ln 10 = 2.30
    assert after < initial - 0.25, ref  # it learned, and resuming kept what it learned
    assert abs(after - before) < abs(after - initial), ref  # where it was, not where it began
    assert resumed["loss_first"] == ref[0] and resumed["loss_last"] == resumed["losses"][-1]


# ------------------------------------------------------------------ (c) no checkpoint_dir: as today
def test_without_a_checkpoint_dir_a_run_is_what_it_was(tmp_path, monkeypatch, torch_one_thread):
    monkeypatch.chdir(tmp_path)
    spec = conv6("pytorch", steps=3, warmup_steps=1)
    plain = run_workload(spec)
    seen = []
    hooked = run_workload(spec, hooks=RunHooks(on_step=seen.append))
    assert plain["losses"] == hooked["losses"] and len(plain["losses"]) == 4
    assert [p.step for p in seen] == [1, 2, 3, 4]
    for r in (plain, hooked):
        assert (r["resumed_from_step"], r["checkpoints_saved"], r["checkpoint_time_s"]) == (None, 0, 0.0)
        assert r["samples_per_second"] > 0 and r["notes"] == []
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere


# ------------------------------------------------------------------ (d) progress
def test_on_step_sees_increasing_steps_and_a_sane_eta(framework, tmp_path):
    spec = conv6(framework, steps=6, warmup_steps=2)
    steps, seen, result = attempt(spec, tmp_path / "ckpt")
    assert steps == list(range(1, 9))
    assert all(p.steps == 8 for p in seen)
    for p in seen:
        assert p.samples_per_second is not None and p.samples_per_second > 0
        assert p.eta_s is not None and p.eta_s >= 0
        # the ETA is the steps left at the recent pace
        assert p.eta_s == pytest.approx((p.steps - p.step) * 4 / p.samples_per_second, rel=1e-6)
        assert math.isfinite(p.loss)
    assert seen[-1].eta_s == 0
    # after the warm-up the ETA is bounded by the time the run really took
    assert seen[2].eta_s < 10 * result["wall_time_s"]
    assert result["checkpoints_saved"] == 0  # no periodic save asked for, none requested


def test_rate_window_follows_recent_steps_and_restarts_after_warmup():
    clock = iter([0.0, 10.0, 11.0, 12.0, 12.5, 13.0]).__next__
    w = RateWindow(batch_size=8, clock=clock)  # t=0
    assert w.progress(0, 4, None) == Progress(0, 4, None, None, None)
    w.step_done()  # t=10: a slow, compiling step
    assert w.progress(1, 4, 2.0).eta_s == pytest.approx(30.0)
    w.restart()
    w.mark_start()  # t=11
    w.step_done()  # t=12
    p = w.progress(2, 4, 1.5)
    assert (p.samples_per_second, p.eta_s) == (8.0, 2.0)
    w.step_done()  # t=12.5
    assert w.progress(3, 4, None).samples_per_second == pytest.approx(8 / 0.75)
    line = format_progress(Progress(40, 200, 812.44, 12.2, 2.30123))
    assert line == "step 40/200  loss 2.301  812.4 samples/s  eta 12 s"
    assert format_progress(Progress(1, 10, None, None, None)) == "step 1/10"


def test_hooks_refuse_nonsense():
    with pytest.raises(ValueError, match="checkpoint_every_steps"):
        RunHooks(checkpoint_dir="x", checkpoint_every_steps=0)
    with pytest.raises(ValueError, match="checkpoint_every_s"):
        RunHooks(checkpoint_dir="x", checkpoint_every_s=-1)
    with pytest.raises(ValueError, match="need a checkpoint_dir"):
        RunHooks(checkpoint_every_s=60)


# ------------------------------------------------------------------ (e) CycleGAN
def test_cyclegan_resumes_all_four_networks_and_both_optimizers(tmp_path, torch_one_thread):
    """As in the loss test, the first attempt runs on past its checkpoint (step 2) and is the reference."""
    spec = WorkloadSpec(model="cyclegan", framework="pytorch", steps=3, warmup_steps=1, batch_size=1,
                        image_size=32, device="cpu")
    ckpt = tmp_path / "ckpt"
    _, _, full = attempt(spec, ckpt, every=2)
    assert full["checkpoints_saved"] == 1 and checkpoint.latest_step(ckpt) == 2
    steps, _, resumed = attempt(spec, ckpt)
    assert steps == [3, 4]
    # step 3's generator loss needs G_A, G_B, D_A, D_B as they were after step 2; step 4's
    # needs the discriminators after step 3, whose update used opt_d's restored state
    assert resumed["losses"] == pytest.approx(full["losses"], rel=1e-4, abs=1e-4)
    assert resumed["resumed_from_step"] == 2


# ------------------------------------------------------------------ the checkpoint files
class FakeSession:
    """Stands in for a framework Session: its state is a byte string."""

    has_state = True
    state_suffix = ".bin"

    def __init__(self, payload=b"weights", fail=False):
        self.payload, self.fail, self.loaded = payload, fail, None

    def save_state(self, fh):
        fh.write(self.payload[:3])
        if self.fail:
            raise OSError("disk full")
        fh.write(self.payload[3:])

    def load_state(self, path):
        self.loaded = path.read_bytes()


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path):
    spec = conv6("pytorch")
    checkpoint.save(tmp_path, spec, FakeSession(b"step-three"), 3, 6, [2.3, 2.2, 2.1], 2.1)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(tmp_path, spec, FakeSession(b"step-four", fail=True), 4, 6, [2.3] * 4, 2.0)
    assert [p.name for p in tmp_path.iterdir()] == ["gen-000000-000001"]  # no staging folder left
    newest = generations.latest(tmp_path)
    assert sorted(p.name for p in newest.iterdir()) == ["checkpoint.json", "state-000000003.bin"]
    session = FakeSession()
    meta = checkpoint.load(tmp_path, spec, session)
    assert (meta["step"], meta["losses"], session.loaded) == (3, [2.3, 2.2, 2.1], b"step-three")
    assert oct((newest / "checkpoint.json").stat().st_mode & 0o777) == "0o600"


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    checkpoint.save(tmp_path, conv6("pytorch"), FakeSession(), 3, 6, [], None)
    with pytest.raises(ValueError, match=r"another run: batch_size 4 \(this run: 8\)"):
        checkpoint.load(tmp_path, conv6("pytorch", batch_size=8), FakeSession())
    with pytest.raises(ValueError, match="framework 'pytorch'"):
        checkpoint.load(tmp_path, conv6("tensorflow"), FakeSession())
    # steps and warm-up may change between attempts
    assert checkpoint.load(tmp_path, conv6("pytorch", steps=50, warmup_steps=0), FakeSession())["step"] == 3


def test_no_or_unreadable_record(tmp_path):
    assert checkpoint.read_meta(tmp_path / "none") is None and checkpoint.latest_step(tmp_path) is None
    (tmp_path / "checkpoint.json").write_text("{half")
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint record"):
        checkpoint.read_meta(tmp_path)
    assert checkpoint.latest_step(tmp_path) is None
    checkpoint.remove(tmp_path)
    assert not tmp_path.exists()


def test_rng_state_round_trips():
    import random

    import numpy as np

    saved = json.loads(json.dumps(checkpoint.capture_rng()))
    a = (random.random(), np.random.rand())
    checkpoint.restore_rng(saved)
    assert (random.random(), np.random.rand()) == a


def test_a_corrupt_state_file_starts_over_and_says_so(tmp_path, capsys, torch_one_thread):
    spec = conv6("pytorch", steps=2, warmup_steps=1)
    ckpt = tmp_path / "ckpt"
    attempt(spec, ckpt, request_at=1, abort_after_checkpoint=True)
    (generations.latest(ckpt) / "state-000000001.pt").write_bytes(b"torn")
    steps, _, r = attempt(spec, ckpt)
    assert steps == [1, 2, 3] and r["resumed_from_step"] is None
    assert any(n.startswith("checkpoint not used, starting from step 0: cannot load") for n in r["notes"])
    assert "checkpoint not used" in capsys.readouterr().out


def test_infer_mode_checkpoints_its_step_only(tmp_path, torch_one_thread):
    spec = conv6("pytorch", mode="infer", steps=3, warmup_steps=1)
    ckpt = tmp_path / "ckpt"
    steps1, seen1, _ = attempt(spec, ckpt, request_at=2, abort_after_checkpoint=True)
    assert steps1 == [1, 2] and all(p.loss is None for p in seen1)
    assert [p.name for p in generations.latest(ckpt).iterdir()] == ["checkpoint.json"]
    steps2, _, r = attempt(spec, ckpt)
    assert steps2 == [3, 4] and r["resumed_from_step"] == 2 and r["losses"] is None


def test_timed_saves_skip_the_last_step_and_a_standing_request_saves_once(tmp_path, torch_one_thread):
    spec = conv6("pytorch", steps=3, warmup_steps=1)  # 4 steps
    timed = run_workload(spec, hooks=RunHooks(checkpoint_dir=str(tmp_path / "a"), checkpoint_every_s=1e-9))
    assert timed["checkpoints_saved"] == 3 and checkpoint.latest_step(tmp_path / "a") == 3  # not after step 4
    assert timed["checkpoint_time_s"] > 0
    saved = []
    standing = run_workload(spec, hooks=RunHooks(checkpoint_dir=str(tmp_path / "b"), checkpoint_requested=lambda: True,
                                                 on_checkpoint=saved.append))
    assert saved == [1] and standing["checkpoints_saved"] == 1
