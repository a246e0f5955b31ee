"""Declared and discovered capacity: nodes with GPUs of a type split into slices.

Invariants: a node's capacity is replaced whole; its GPUs, slices per GPU and the
number of nodes lie in their `quota.limits` ranges, and its name and GPU type are
printable text (`validate.text`); shrinking capacity below the top-level guarantees is
refused; only active nodes count.
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, select

from quota import DEFAULT_SLICES_PER_GPU, Capacity, NodeCapacity, limits
from scheduler.services import validate
from scheduler.services.errors import DomainError
from scheduler.store import Account, Node


def load_capacity(session: Session) -> Capacity:
    rows = session.exec(select(Node).where(Node.active == sa.true()).order_by(Node.name)).all()
    return capacity_from_rows((r.name, r.gpus, r.slices_per_gpu, r.gpu_type) for r in rows)


def capacity_from_rows(rows) -> Capacity:
    """Capacity from the active nodes' (name, gpus, slices_per_gpu, gpu_type) rows, by name."""
    return Capacity(tuple(NodeCapacity(name, gpus, spg, gpu_type) for name, gpus, spg, gpu_type in rows))


def total_slices(session: Session) -> int:
    return load_capacity(session).total_slices


def slices_per_gpu_for(gpu_type: str) -> int:
    return DEFAULT_SLICES_PER_GPU.get(gpu_type, 4)


def set_node(
    session: Session, *, node: str, gpus: int, slices_per_gpu: int | None, gpu_type: str, at: datetime,
    source: str = "declared", check_guarantees: bool = True,
) -> Node:
    """Declare (or, from Ray, record) a node's GPUs. A declaration that would leave less
    capacity than the institutions' guarantees is refused; what Ray has is a fact, so
    discovery passes check_guarantees=False."""
    validate.text(node, "node")
    validate.text(gpu_type, "gpu_type")
    validate.number(limits.GPUS_PER_NODE, gpus)
    spg = validate.number(limits.SLICES_PER_GPU, slices_per_gpu if slices_per_gpu is not None
                          else slices_per_gpu_for(gpu_type))
    row = session.exec(select(Node).where(Node.name == node)).first()
    if row is None:
        count = session.exec(select(sa.func.count()).select_from(Node)).one()
        validate.number(limits.NODES, count + 1, "number of nodes")
    others = sum(n.slices for n in load_capacity(session).nodes if n.name != node)
    new_total = others + gpus * spg
    guaranteed = session.exec(
        select(sa.func.coalesce(sa.func.sum(Account.guaranteed_slices), 0)).where(Account.parent_id.is_(None))
    ).one()
    if check_guarantees and guaranteed > new_total:
        raise DomainError(
            f"capacity of {new_total} slices would be below the {guaranteed} slices guaranteed to institutions"
        )
    if row is None:
        row = Node(name=node, gpus=gpus, slices_per_gpu=spg, gpu_type=gpu_type, source=source, updated_at=at)
    else:
        row.gpus, row.slices_per_gpu, row.gpu_type = gpus, spg, gpu_type
        row.active, row.source, row.updated_at = True, source, at
    session.add(row)
    session.flush()
    return row


def list_nodes(session: Session) -> list[dict]:
    rows = session.exec(select(Node).order_by(Node.name)).all()
    return [
        {"node": r.name, "gpu_type": r.gpu_type, "gpus": r.gpus, "slices_per_gpu": r.slices_per_gpu,
         "slices": r.gpus * r.slices_per_gpu, "active": r.active, "source": r.source,
         "frameworks": r.frameworks, "reason": r.reason, "ray_id": r.ray_id}
        for r in rows
    ]
