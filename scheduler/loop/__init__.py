"""The scheduling loop and its collaborators: one room for load, decide, apply.

- `coordinator`: `SchedulingLoop`, the short coordinator that runs a cycle's phases.
- `apply`: writes a decision (admissions, preemptions, ends of attempts) to the database.
- `recovery`: ends every attempt a server will no longer follow (start, takeover, drain).
- `watch`, `nodes`: the watches over running attempts and over Ray's nodes.
- `publish`: turns each committed cycle into counters and the scrape-time view.
- `collector`: the garbage collector's thresholds for a process that runs the loop.

The package imports nothing on its own: import the module you need.
"""
