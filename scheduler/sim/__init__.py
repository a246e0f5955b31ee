"""fairgpu's trace-driven simulator: the live policy (quota.PolicyState, the same code as
quota.decide) on a virtual clock.

Modules: trace (the job model, fairgpu CSV/JSON), readers (Philly, Alibaba PAI 2020),
synthetic (seeded generator), engine (the event loop), metrics, report (the policy
comparison), plot. Nothing here reads the wall clock except the engine's own timer for
the events-per-second figure, which never feeds back into the simulation.
"""
