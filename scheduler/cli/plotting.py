"""The `--plot FILE` of `report`, `simulate` and `forecast`: checked before any work.

Invariant: a plot that cannot be written is refused in one line (exit 1) before the
command reads or computes anything, so nothing is written: matplotlib missing, a folder
that does not exist (or is not a folder), or an extension matplotlib cannot write.
matplotlib is imported here only when a plot was asked for.
"""
from __future__ import annotations

from pathlib import Path

import click


def check_plot_path(path: str) -> None:
    """Raise ClickException (exit 1) unless ``path`` can take a plot."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise click.ClickException("--plot needs matplotlib: pip install 'fairgpu[plot]'") from None
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise click.ClickException(f"--plot {path}: the folder {folder} does not exist")
    kinds = FigureCanvasBase.get_supported_filetypes()
    ext = target.suffix.lower().lstrip(".")
    if ext not in kinds:
        shown = f"{target.suffix!r}" if ext else "none"
        raise click.ClickException(f"--plot {path}: unknown extension {shown} "
                                   f"(use one of {', '.join('.' + k for k in sorted(kinds))})")
