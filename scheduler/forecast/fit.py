"""Polynomial regression with a cross-validated degree and prediction intervals (numpy only).

Model: y = sum_k b_k z^k + e, e ~ N(0, s^2), z = (x - mean(x)) / sd(x) (centred and
scaled so high degrees stay well conditioned), fitted by least squares.
- Degree: each candidate d in 1..max_degree with n >= d + 2 points is scored by the
  root mean squared error of leave-one-out predictions (n <= 30) or of 5 interleaved
  folds (n > 30); the lowest score wins, ties to the lower degree.
- Prediction interval at x0 with level L: yhat +- t_{(1+L)/2, n-p} s sqrt(1 + z0' (Z'Z)^-1 z0),
  p = d + 1 and s^2 = RSS / (n - p): the textbook OLS interval for a new observation.
- `log=True` fits log(y) and maps the fit and interval back with exp (for exponential growth).
Student's t quantile comes from its CDF via the regularised incomplete beta function
(continued fraction, Numerical Recipes 6.4) and bisection; exact to ~1e-10.
Errors a user can act on raise ForecastError with one line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


class ForecastError(ValueError):
    pass


@dataclass
class Fit:
    degree: int
    coef: list[float]  # lowest power first, in z
    mean: float
    sd: float
    sigma: float  # residual standard deviation
    n: int
    cv_rmse: dict[int, float]
    cov: list[list[float]]  # (Z'Z)^-1
    log: bool

    def predict(self, x, level: float = 0.95):
        """(yhat, lo, hi) arrays at x."""
        import numpy as np

        z = (np.asarray(x, dtype=float) - self.mean) / self.sd
        Z = np.vander(z, self.degree + 1, increasing=True)
        yhat = Z @ np.array(self.coef)
        lever = np.einsum("ij,jk,ik->i", Z, np.array(self.cov), Z)
        half = t_ppf((1 + level) / 2, self.n - self.degree - 1) * self.sigma * np.sqrt(1 + lever)
        lo, hi = yhat - half, yhat + half
        if self.log:
            return np.exp(yhat), np.exp(lo), np.exp(hi)
        return yhat, lo, hi


def _lstsq(Z, y):
    import numpy as np

    coef, *_ = np.linalg.lstsq(Z, y, rcond=None)
    return coef


def _cv_rmse(z, y, degree: int) -> float:
    import numpy as np

    n = len(z)
    folds = [np.array([i]) for i in range(n)] if n <= 30 else [np.arange(f, n, 5) for f in range(5)]
    errs = []
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        Z = np.vander(z[train], degree + 1, increasing=True)
        coef = _lstsq(Z, y[train])
        pred = np.vander(z[test], degree + 1, increasing=True) @ coef
        errs.extend((pred - y[test]).tolist())
    return float(np.sqrt(np.mean(np.square(errs))))


def fit(x, y, max_degree: int = 3, degree: int | None = None, log: bool = False, points: str = "points") -> Fit:
    """``points``: what a point is, for the errors ("days with jobs" for --from-db)."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ForecastError("x and y must be two columns of the same length")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ForecastError("the data has missing or non-numeric values")
    if log:
        if np.any(y <= 0):
            raise ForecastError("--log needs every value > 0")
        y = np.log(y)
    n = len(x)
    if degree is not None:
        if degree < 1:
            raise ForecastError(f"degree must be >= 1 (got {degree})")
        if n < degree + 2:
            raise ForecastError(f"too few {points} for degree {degree}: {n} {points}, need at least {degree + 2}")
        candidates = [degree]
    else:
        if max_degree < 1:
            raise ForecastError(f"max degree must be >= 1 (got {max_degree})")
        candidates = [d for d in range(1, max_degree + 1) if n >= d + 3]  # d + 2 after leaving one out
        if not candidates:
            raise ForecastError(f"too few {points} to choose a degree: {n} {points}, need at least 4")
    if len(np.unique(x)) < 2:
        raise ForecastError("x must take at least two different values")
    mean, sd = float(x.mean()), float(x.std()) or 1.0
    z = (x - mean) / sd
    scores = {d: _cv_rmse(z, y, d) for d in candidates} if len(candidates) > 1 else {}
    best = min(candidates, key=lambda d: (round(scores.get(d, 0.0), 12), d))
    Z = np.vander(z, best + 1, increasing=True)
    coef = _lstsq(Z, y)
    rss = float(np.sum((Z @ coef - y) ** 2))
    dof = n - best - 1
    sigma = math.sqrt(rss / dof) if dof > 0 else float("nan")
    cov = np.linalg.pinv(Z.T @ Z)
    return Fit(best, coef.tolist(), mean, sd, sigma, n, scores, cov.tolist(), log)


# -- Student's t ----------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    p = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - p if t > 0 else p


def t_ppf(q: float, df: float) -> float:
    if not 0 < q < 1:
        raise ForecastError(f"level must be between 0 and 1 (got {2 * q - 1:g})")
    if df <= 0 or not math.isfinite(df):
        return float("nan")
    if q < 0.5:
        return -t_ppf(1 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2
