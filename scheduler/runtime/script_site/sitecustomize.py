"""fairgpu's sitecustomize for user scripts: caps GPU memory, then chains on.

fairgpu puts this folder first on a script's PYTHONPATH; Python imports this module
at start-up (not with -S, -I or -E). It:
1. loads `fairgpu_cap` from this folder and calls `install_from_env()`: with
   FAIRGPU_MEMORY_FRACTION set, the memory cap is applied right after torch or
   tensorflow is imported (see fairgpu_cap);
2. runs the `sitecustomize` Python would have imported without us (the first one
   further along sys.path that is not a fairgpu copy), so installing ours never
   disables a distribution's or a virtual environment's.
Errors are reported on stderr the way site.py reports them; start-up goes on.
Only the standard library is imported here.
"""
import os as _os
import sys as _sys


def _load_cap(here):
    module = _sys.modules.get("fairgpu_cap")
    if module is not None:
        return module
    import importlib.util

    spec = importlib.util.spec_from_file_location("fairgpu_cap", _os.path.join(here, "fairgpu_cap.py"))
    module = importlib.util.module_from_spec(spec)
    _sys.modules["fairgpu_cap"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del _sys.modules["fairgpu_cap"]
        raise
    return module


def _is_fairgpu_site(folder):
    return _os.path.isfile(_os.path.join(folder, "fairgpu_cap.py"))


def _chain(here, cap):
    from importlib.machinery import PathFinder
    import importlib.util

    mine = _os.path.normcase(_os.path.realpath(here))
    for entry in list(_sys.path):
        folder = _os.path.normcase(_os.path.realpath(entry or _os.getcwd()))
        if folder == mine:
            continue
        spec = PathFinder.find_spec("sitecustomize", [entry])
        if spec is None or spec.loader is None:
            continue
        origin = spec.origin if spec.has_location else None
        if origin and _is_fairgpu_site(_os.path.dirname(origin)):
            continue  # another copy of this folder: its job is done already
        if cap is not None:
            cap.chained_sitecustomize = origin or repr(spec.loader)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # as site.py does for a failing sitecustomize
            _sys.stderr.write(f"Error in sitecustomize ({origin}); set PYTHONVERBOSE for traceback:\n"
                              f"{type(exc).__name__}: {exc}\n")
            if _sys.flags.verbose:
                _sys.excepthook(*_sys.exc_info())
        return


def _main():
    here = _os.path.dirname(_os.path.abspath(__file__))
    cap = None
    try:
        cap = _load_cap(here)
        cap.install_from_env()
    except Exception as exc:
        _sys.stderr.write(f"fairgpu-cap: GPU memory cap hook not installed: {type(exc).__name__}: {exc}\n")
    try:
        _chain(here, cap)
    except Exception as exc:
        _sys.stderr.write(f"fairgpu-cap: could not run the next sitecustomize: {type(exc).__name__}: {exc}\n")


_main()
del _main, _load_cap, _chain, _is_fairgpu_site
