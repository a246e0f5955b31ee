"""A small world for the loop's rule tests: a real SQLite file (or the engine given), a
FakeExecutor, a clock the test moves, one declared node of 1 GPU x 4 slices and one
account. The loop publishes every cycle through the real Publisher into a registry of
its own, as `fairgpu up` wires it (`World.sample` reads a series)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fake_executor import FakeExecutor
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.loop.coordinator import SchedulingLoop
from scheduler.metrics.exporter import build_registry
from scheduler.loop.publish import Publisher
from scheduler.services.accounts import add_account
from scheduler.services.capacity import set_node
from scheduler.services.jobs import submit_array
from scheduler.store import Job, init_db, make_engine, session_scope

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@dataclass
class World:
    engine: object
    executor: FakeExecutor
    loop: SchedulingLoop | None
    now: list
    registry: object = None  # what /metrics would serve
    publisher: Publisher | None = None

    def tick(self, seconds: float) -> datetime:
        self.now[0] += timedelta(seconds=seconds)
        return self.now[0]

    def submit(self, seconds: float = 10.0, slices: int = 1, account: str = "lab", **kw) -> int:
        with session_scope(self.engine) as s:
            (job_id,) = submit_array(s, count=1, account=account, model="hold", framework=None, mode="train",
                                     slices=slices, spec={"seconds": seconds}, at=self.now[0], **kw)
            return job_id

    def sample(self, name: str, **labels) -> float:
        """The value of the one series `name` with these labels in a scrape (0 if absent)."""
        hits = [s.value for f in text_string_to_metric_families(generate_latest(self.registry).decode())
                for s in f.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(hits) <= 1, (name, labels, hits)
        return hits[0] if hits else 0.0

    def job(self, job_id: int) -> Job:
        with session_scope(self.engine, readonly=True) as s:
            return s.get(Job, job_id)

    def restart(self, **kw) -> SchedulingLoop:
        """A new loop on the same database, as after a server restart (Ray's tasks are gone)."""
        self.executor.attempts.clear()
        self.loop = make_loop(self.engine, self.executor, self.now, **{"on_cycle": self.publisher.publish, **kw})
        return self.loop


def make_loop(engine, executor, now, **kw) -> SchedulingLoop:
    loop = SchedulingLoop(engine, executor, lambda: now[0], discover=kw.pop("discover", False), **kw)
    loop.backoff_s = (0.0, 0.0)
    return loop


def break_policy(monkeypatch, fault) -> None:
    """Make the policy's cycle (`quota.PolicyState.cycle`, what the loop's decide phase
    runs) raise `fault(n)` on its n-th call (from 1), or run as usual where that is None:
    a fault inside the cycle's write transaction, on the production path."""
    import quota

    cycle, calls = quota.PolicyState.cycle, [0]

    def faulty(state, *args, **kw):
        calls[0] += 1
        error = fault(calls[0])
        if error is not None:
            raise error
        return cycle(state, *args, **kw)

    monkeypatch.setattr(quota.PolicyState, "cycle", faulty)


def make_world(tmp_path, *, accounts=(("lab", 1.0),), engine=None, **kw) -> World:
    """`accounts`: (name, weight) or (name, weight, {add_account's options})."""
    if engine is None:
        engine = make_engine(f"sqlite:///{tmp_path / 'loop.db'}")
        init_db(engine)
    now = [T0]
    with session_scope(engine) as s:
        set_node(s, node="n1", gpus=1, slices_per_gpu=4, gpu_type="T4", at=T0)
        for name, weight, *options in accounts:
            add_account(s, name, weight=weight, **(options[0] if options else {}))
    executor = FakeExecutor(str(tmp_path / "results"))
    world = World(engine, executor, None, now)
    world.registry, metrics = build_registry(lambda: world.publisher.view(), health=lambda: world.loop.health())
    world.publisher = Publisher(engine, metrics)  # not started: no refresh thread
    world.loop = make_loop(engine, executor, now, **{"on_cycle": world.publisher.publish, **kw})
    return world
