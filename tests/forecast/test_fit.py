"""Polynomial forecast: the degree cross-validation picks, the intervals, Student's t, errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from scheduler.forecast.data import gpu_memory_rows
from scheduler.forecast.fit import ForecastError, fit, t_ppf


@pytest.mark.parametrize("q,df,expected", [(0.975, 1, 12.7062047), (0.975, 10, 2.2281389), (0.95, 5, 2.0150484),
                                           (0.975, 1000, 1.9623391)])
def test_student_t_quantiles(q, df, expected):
    assert t_ppf(q, df) == pytest.approx(expected, abs=1e-6)


def test_cross_validation_recovers_the_true_degree():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 10, 40)
    y2 = 3 + 0.5 * x - 0.8 * x ** 2 + rng.normal(0, 1.0, x.size)
    assert fit(x, y2, max_degree=4).degree == 2
    y1 = 2 + 3 * x + rng.normal(0, 1.0, x.size)
    assert fit(x, y1, max_degree=4).degree == 1


def test_prediction_interval_covers_new_points_at_its_level():
    """Over repeated samples, a 90% interval holds a new observation 90% of the time."""
    rng = np.random.default_rng(1)
    x = np.linspace(0, 1, 12)
    hits, widths = 0, []
    for _ in range(2000):
        f = fit(x, 1 + 2 * x + rng.normal(0, 0.3, x.size), degree=1)
        x_new = rng.uniform(0, 1)
        _, lo, hi = f.predict([x_new], 0.9)
        hits += lo[0] <= 1 + 2 * x_new + rng.normal(0, 0.3) <= hi[0]
    assert hits / 2000 == pytest.approx(0.9, abs=0.02)
    _, lo_in, hi_in = f.predict([0.5], 0.9)
    _, lo_far, hi_far = f.predict([3.0], 0.9)  # extrapolating widens the interval
    assert hi_far[0] - lo_far[0] > hi_in[0] - lo_in[0]


def test_log_fit_is_exact_on_exponential_growth():
    x = np.arange(10.0)
    f = fit(x, 2.0 ** x, degree=1, log=True)
    y, lo, hi = f.predict([12.0])
    assert y[0] == pytest.approx(4096.0, rel=1e-9) and lo[0] <= y[0] <= hi[0]


@pytest.mark.parametrize("x,y,kwargs,message", [
    ([1, 2, 3], [1, 2, 3], {"degree": 2}, "too few points for degree 2: 3 points, need at least 4"),
    ([1, 2, 3], [1, 2, 3], {}, "too few points to choose a degree"),
    ([1, 1, 1, 1, 1], [1, 2, 3, 4, 5], {}, "at least two different values"),
    ([1, 2, 3, 4], [1, 2, -3, 4], {"log": True, "degree": 1}, "--log needs every value > 0"),
    ([1, 2, 3, 4], [1, 2, math.nan, 4], {}, "missing or non-numeric"),
])
def test_bad_input_is_one_clear_error(x, y, kwargs, message):
    with pytest.raises(ForecastError, match=message):
        fit(x, y, **kwargs)


def test_shipped_dataset_has_a_source_for_every_figure():
    rows = gpu_memory_rows()
    assert len(rows) >= 10
    years = [int(r["year"]) for r in rows]
    assert years == sorted(years) and len(set(years)) == len(years)
    for r in rows:
        assert float(r["memory_gib"]) > 0 and r["gpu"] and len(r["source"]) > 20
