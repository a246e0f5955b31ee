"""Forecast output: points to predict at, rows for the table/JSON, and the plot."""
from __future__ import annotations

from pathlib import Path

from scheduler.forecast.fit import Fit


def horizon_points(last_x: float, horizon: float, step: float | None = None) -> list[float]:
    """From last_x + step to last_x + horizon; step 1 (an x unit) when that gives <= 50 points."""
    if step is None:
        step = 1.0 if horizon <= 50 else horizon / 20.0
    n = max(1, int(round(horizon / step)))
    pts = [last_x + step * (i + 1) for i in range(n)]
    pts[-1] = last_x + horizon
    return pts


def forecast_rows(f: Fit, xs: list[float], level: float) -> list[dict]:
    y, lo, hi = f.predict(xs, level)
    return [{"x": round(float(x), 6), "predicted": float(a), "lower": float(b), "upper": float(c)}
            for x, a, b, c in zip(xs, y, lo, hi)]


def to_json(f: Fit, x_label: str, y_label: str, level: float, horizon: float, data, rows) -> dict:
    return {
        "x": x_label, "y": y_label, "n": f.n, "degree": f.degree, "log": f.log,
        "cv_rmse": {str(d): v for d, v in f.cv_rmse.items()},
        "coefficients_z": f.coef, "x_mean": f.mean, "x_sd": f.sd, "residual_sd": f.sigma,
        "level": level, "horizon": horizon,
        "at_horizon": rows[-1],
        "forecast": rows,
        "data": [{"x": x, "y": y} for x, y in zip(*data)],
    }


def plot_forecast(f: Fit, xs, ys, rows, level: float, x_label: str, y_label: str, path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.linspace(min(xs), rows[-1]["x"], 200)
    y, lo, hi = f.predict(grid, level)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.fill_between(grid, lo, hi, color="tab:blue", alpha=0.18, label=f"{level:.0%} prediction interval")
    ax.plot(grid, y, color="tab:blue", label=f"degree {f.degree} fit" + (" (on log y)" if f.log else ""))
    ax.scatter(xs, ys, color="black", s=18, zorder=3, label="data")
    ax.axvline(max(xs), color="grey", lw=0.8, ls=":")
    end = rows[-1]
    ax.errorbar([end["x"]], [end["predicted"]], yerr=[[end["predicted"] - end["lower"]], [end["upper"] - end["predicted"]]],
                fmt="o", color="tab:red", capsize=4, label=f"at {end['x']:g}: {end['predicted']:.3g}")
    if f.log:
        ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or f"{y_label} forecast", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
