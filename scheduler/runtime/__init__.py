"""What runs on the Ray side, and the files it shares with the server.

- `executor`: the loop's handle on Ray (launch, stop, ask); `discovery`: Ray's nodes as capacity.
- `tasks`: the Ray task that runs one attempt; `scripts`: an institution's own command in it.
- `sandbox`: the bubblewrap box and limits a script runs in; `script_site`: its sitecustomize.
- `gpu_watchdog`: ends an attempt that holds more GPU memory than its slices.
- `jobfiles`: each job's directory (result, start marker, progress, checkpoint, logs).
- `archive`: a working directory packed by the CLI, checked by the server, unpacked by the task.
- `ray_session`: the local Ray session a server started, recorded so a successor can end it.

The package imports nothing on its own: import the module you need.
"""
