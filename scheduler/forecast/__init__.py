"""Capacity forecasting: polynomial regression of demand over time, degree chosen by
cross-validation, with prediction intervals (scheduler.forecast.fit), on recorded jobs,
a CSV, or the shipped GPU-memory-by-year data set (scheduler.forecast.data)."""
