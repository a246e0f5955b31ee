"""`fairgpu forecast`: how much will we need in N days (or years)?

Polynomial regression over time with a cross-validated degree and prediction intervals,
fitted on recorded jobs (--from-db), a CSV (--csv with --x/--y), or by default the shipped
data set of flagship GPU memory by year. Thin over scheduler.forecast.
"""
from __future__ import annotations

import click

from scheduler.cli.common import domain_errors, emit, info, json_option


@click.command()
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Fit two columns of a CSV.")
@click.option("--x", "x_col", default="x", show_default=True, help="CSV: the time column (numbers or ISO dates).")
@click.option("--y", "y_col", default="y", show_default=True, help="CSV: the value column.")
@click.option("--from-db", "db_url", default=None, metavar="URL", help="Fit on the jobs recorded in this database.")
@click.option("--metric", type=click.Choice(["slices", "memory"]), default="slices", show_default=True,
              help="--from-db: slices kept busy per day, or the day's largest peak GPU memory (GiB).")
@click.option("--horizon", type=float, default=None,
              help="How far past the last point to forecast, in x units (default 5 years, or 30 days).")
@click.option("--degree", type=int, default=None, help="Fix the degree instead of cross-validating it.")
@click.option("--max-degree", type=int, default=3, show_default=True, help="Largest degree cross-validation tries.")
@click.option("--level", type=float, default=0.95, show_default=True, help="Prediction interval level.")
@click.option("--log", "log_y", is_flag=True, help="Fit log(y): growth by a factor, intervals multiplicative.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Write a PNG.")
@json_option
@domain_errors
def forecast(csv_path, x_col, y_col, db_url, metric, horizon, degree, max_degree, level, log_y, plot_path, as_json):
    """Forecast GPU memory or slice demand by polynomial regression, with prediction intervals."""
    import json

    from scheduler.forecast import data
    from scheduler.forecast.fit import ForecastError, fit
    from scheduler.forecast.report import (
        forecast_rows,
        horizon_points,
        plot_forecast,
        to_json,
    )

    if csv_path and db_url:
        raise click.UsageError("give --csv or --from-db, not both")
    if plot_path:
        from scheduler.cli.plotting import check_plot_path

        check_plot_path(plot_path)  # before the fit: a plot that cannot be written writes nothing
    try:
        if not 0 < level < 1:
            raise ForecastError(f"level must be between 0 and 1 (got {level:g})")
        if horizon is not None and not horizon > 0:
            raise ForecastError(f"horizon must be > 0 (got {horizon:g})")
        if csv_path:
            xs, ys, x_label, y_label = data.read_series(csv_path, x_col, y_col)
        elif db_url:
            xs, ys, x_label, y_label = _db_series(db_url, metric)
        else:
            xs, ys, x_label, y_label = data.gpu_memory_dataset()
        if horizon is None:
            horizon = 5.0 if x_label == "year" else 30.0
        f = fit(xs, ys, max_degree=max_degree, degree=degree, log=log_y,
                points="days with jobs" if db_url else "points")  # --from-db: one point a day
        rows = forecast_rows(f, horizon_points(max(xs), horizon), level)
    except ForecastError as exc:
        raise click.ClickException(str(exc)) from None
    if not (csv_path or db_url):
        info("data: flagship GPU memory by year (scheduler/forecast/gpu_memory_by_year.csv)")
    scores = ", ".join(f"{d}: {v:.3g}" for d, v in f.cv_rmse.items()) or "fixed"
    info(f"{f.n} points; degree {f.degree} (cross-validated RMSE by degree: {scores}); residual sd {f.sigma:.3g}")
    if as_json:
        click.echo(json.dumps(to_json(f, x_label, y_label, level, horizon, (xs, ys), rows), indent=2))
    else:
        emit([{x_label: r["x"], f"{y_label} predicted": r["predicted"], f"{level:.0%} lower": r["lower"],
               f"{level:.0%} upper": r["upper"]} for r in rows], False,
             [x_label, f"{y_label} predicted", f"{level:.0%} lower", f"{level:.0%} upper"],
             title=f"{y_label}: degree-{f.degree} polynomial forecast")
    if plot_path:
        plot_forecast(f, xs, ys, rows, level, x_label, y_label, plot_path)
        info(f"wrote {plot_path}")


def _db_series(url, metric):
    from scheduler.cli.common import db_session, existing_database
    from scheduler.forecast import data

    existing_database(url)
    with db_session(url) as session:  # a database that cannot be opened: one line, exit 1 (domain_errors)
        return data.job_series(session, metric)
