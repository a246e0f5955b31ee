"""The scheduling loop and its collaborators: one room for load, decide, apply.

- `coordinator`: `SchedulingLoop`, the short coordinator that runs a cycle's phases.
- `apply`: writes a decision (admissions, preemptions, ends of attempts) to the database.
- `recovery`: ends every attempt a server will no longer follow (start, takeover, drain).
- `watch`, `nodes`: the watches over running attempts (`AttemptWatch`) and over Ray's
  nodes and refusals (`NodeWatch`): collaborators that own their state and are handed
  what they need, never the loop itself.
- `settle`, `reasons`: a phase's work (Ray's completions recorded; why jobs wait).
- `start`: `RaySide`, the start phase: stop, preempt, hand over to Ray, meter usage.
- `wakeup`, `report`: when the loop cycles; what a cycle did (`CycleReport`) and `Health`.
- `publish`: turns each committed cycle into counters and the scrape-time view.
- `collector`: the garbage collector's thresholds for a process that runs the loop.

The package imports nothing on its own: import the module you need.
"""
