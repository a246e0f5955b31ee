"""The comparison picture: one column per policy.

Top row: each institution's share of the cluster over time (stacked; the `top` largest
institutions by jobs get their own colour, the rest are one grey band), with the contended
samples marked along the bottom edge. Bottom row: per institution, slice-time share over
entitled share in the contended window (x_i of Jain's index; 1 is exactly fair), largest
institutions on the left. matplotlib is imported here only (Agg backend, no display).
"""
from __future__ import annotations

from pathlib import Path


def plot_comparison(results: dict, path: str | Path, title: str = "", top: int = 8) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results)
    first = results[names[0]].metrics
    per = first.per_institution
    order = sorted(per, key=lambda i: (-per[i]["jobs"], i))
    shown = order[:top]
    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 7.2), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    for c, name in enumerate(names):
        m = results[name].metrics
        t = np.array(m.series_t) / 86400.0
        ax = axes[0][c]
        layers = [np.array(m.series_share[i]) for i in shown]
        rest = np.zeros_like(t)
        for inst, s in m.series_share.items():
            if inst not in shown:
                rest = rest + np.array(s)
        ax.stackplot(t, *layers, rest, colors=[colours[k % 10] for k in range(len(shown))] + ["#c8c8c8"],
                     labels=shown + ["others"], linewidth=0)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(t[0] if len(t) else 0, t[-1] if len(t) else 1)
        ax.set_title(f"{name}\nJain {m.jain_index:.3f}, util {m.utilisation:.2f}, max rho {m.max_rho:.1f}",
                     fontsize=9)
        ax.set_xlabel("day")
        if c == 0:
            ax.set_ylabel("share of the cluster's slices")
        ent = np.array(m.series_entitled.get(order[0], []))
        if len(ent) == len(t):
            ax.plot(t, ent, color="black", lw=0.8, ls="--", label=f"{order[0]} entitled")
        bx = axes[1][c]
        ratios = [m.per_institution.get(i, {}).get("share_ratio", np.nan) for i in order]
        bx.bar(range(len(order)), ratios, color=[colours[k % 10] if k < len(shown) else "#9a9a9a"
                                                 for k in range(len(order))], width=1.0)
        bx.axhline(1.0, color="black", lw=0.8)
        bx.set_ylim(0, max(2.0, np.nanmax(ratios) * 1.05 if np.isfinite(np.nanmax(ratios)) else 2.0))
        bx.set_xlabel("institutions, most jobs first")
        if c == 0:
            bx.set_ylabel("slice-time / entitled\n(contended window)")
    axes[0][0].legend(loc="upper left", fontsize=7, ncol=2, framealpha=0.8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
