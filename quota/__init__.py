"""fairgpu's policy core: the fairness math and the scheduling policy.

Pure and deterministic: it imports no Ray, database, metrics or ML framework, and
never reads a clock (times are passed in). `decide(snapshot) -> Decision` is the one
entry point the scheduler and the simulator both drive; `PolicyState` runs the same
cycle incrementally for callers that run many cycles (quota/state.py). `report(snapshot,
decision)` is the one owner of per-account figures (quota/report.py).

The names below are loaded on first use (PEP 562): `import quota.limits` (the CLI's
validation) runs no policy module, so a client command stays fast. `from quota import
X` and `quota.X` work as before. One name, `report`, is also a submodule's: the
package keeps the function under it (`_Package.__setattr__`), as an eager import did.
"""
import importlib
import sys
import types

# The package's public names: "name" or "name=attribute" in each submodule.
_NAMES = (
    ("capacity", "DEFAULT_SLICES_PER_GPU Capacity FreeSlices NodeCapacity Placement"),
    ("entitlement", "entitlements water_fill"),
    ("equity", "Equity cluster_equity gini jain_index jain_of_shares share_deviation usage_gini"),
    ("errors", "QuotaError"),
    ("fairshare", "ALGORITHMS CLASSIC FAIR_TREE fair_share=compute"),
    ("policy", "decide"),
    ("period", "PeriodFigures PeriodResult Span integrate_period=integrate"),
    ("report", "AccountFigures report"),
    ("state", "PolicyState"),
    ("snapshot", "FRAGMENTATION INFEASIBLE ORDERINGS PREEMPTION_KINDS PRIORITY QUOTA_CAP REASONS "
                 "RECLAIM_FAIR_SHARE RECLAIM_GUARANTEE RESOURCES Admission Decision PendingRequest PolicyConfig "
                 "Preemption RunningJob Snapshot Waiting"),
    ("tree", "AccountSpec AccountTree"),
    ("usage", "DEFAULT_HALF_LIFE_S decay_factor decayed_usage"),
)
# name -> (submodule, attribute there)
_EXPORTS = {name: (f"quota.{module}", attr or name)
            for module, names in _NAMES for name, _, attr in (item.partition("=") for item in names.split())}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'quota' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """Importing a submodule binds it on its package; a public name spelled the same
    (`quota.report`, the function) must win, so that binding is skipped."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name, ("", ""))[1] == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
