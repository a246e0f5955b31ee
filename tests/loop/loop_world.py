"""A small world for the loop's rule tests: a real SQLite file, a FakeExecutor, a clock
the test moves, one declared node of 1 GPU x 4 slices and one account."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fake_executor import FakeExecutor

from scheduler.loop import SchedulingLoop
from scheduler.services.accounts import add_account
from scheduler.services.capacity import set_node
from scheduler.services.jobs import submit
from scheduler.store import Job, init_db, make_engine, session_scope

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@dataclass
class World:
    engine: object
    executor: FakeExecutor
    loop: SchedulingLoop
    now: list

    def tick(self, seconds: float) -> datetime:
        self.now[0] += timedelta(seconds=seconds)
        return self.now[0]

    def submit(self, seconds: float = 10.0, slices: int = 1, account: str = "lab") -> int:
        with session_scope(self.engine) as s:
            return submit(s, account=account, model="hold", framework=None, mode="train", slices=slices,
                          spec={"seconds": seconds}, at=self.now[0]).id

    def job(self, job_id: int) -> Job:
        with session_scope(self.engine, readonly=True) as s:
            return s.get(Job, job_id)

    def restart(self, **kw) -> SchedulingLoop:
        """A new loop on the same database, as after a server restart (Ray's tasks are gone)."""
        self.executor.attempts.clear()
        self.loop = make_loop(self.engine, self.executor, self.now, **kw)
        return self.loop


def make_loop(engine, executor, now, **kw) -> SchedulingLoop:
    loop = SchedulingLoop(engine, executor, lambda: now[0], discover=kw.pop("discover", False), **kw)
    loop.backoff_s = (0.0, 0.0)
    return loop


def make_world(tmp_path, *, accounts=(("lab", 1.0),), **kw) -> World:
    engine = make_engine(f"sqlite:///{tmp_path / 'loop.db'}")
    init_db(engine)
    now = [T0]
    with session_scope(engine) as s:
        set_node(s, node="n1", gpus=1, slices_per_gpu=4, gpu_type="T4", at=T0)
        for name, weight in accounts:
            add_account(s, name, weight=weight)
    executor = FakeExecutor(str(tmp_path / "results"))
    return World(engine, executor, make_loop(engine, executor, now, **kw), now)
