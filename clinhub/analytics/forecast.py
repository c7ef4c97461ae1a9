"""Daily patient-volume forecasts: the naive trend baseline and Holt-Winters, with a rolling back-test.

The baseline (PRODUCT.md's naive trend): with w = min(7, n // 2) days,
    slope = (mean of the last w days - mean of the w days before them) / w
    forecast(h) = max(0, last value + slope * h),  h = 1 .. horizon
(slope 0 when fewer than 2 days are known).

Holt-Winters: statsmodels ExponentialSmoothing with an additive damped trend and additive weekly
seasonality (no seasonality when fewer than two seasons are known; a flat mean when fewer than 5 days
are), parameters by maximum likelihood. Its 80% prediction interval is the 10th-90th percentile of 500
paths simulated from the fitted model with its residuals' variance; forecasts and bounds are floored
at 0 and the interval always contains the point forecast.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.tsa.holtwinters import ExponentialSmoothing

from clinhub.analytics.series import daily_new_patients
from clinhub.engine.duck import AnalyticEngine
from clinhub.errors import InvalidInput

INTERVAL = 0.80
SIMULATIONS = 500
MIN_TRAIN_DAYS = 14  # the shortest history a back-test fold trains on


def _future(series: pd.Series, horizon: int) -> pd.DatetimeIndex:
    if horizon < 1:
        raise InvalidInput("the forecast horizon must be at least one day")
    if len(series) == 0:
        raise InvalidInput("nothing to forecast: the series is empty")
    last = pd.Timestamp(series.index[-1]).normalize()
    return pd.date_range(last + pd.Timedelta(days=1), periods=horizon, freq="D", name=series.index.name)


def naive_slope(values: np.ndarray) -> float:
    """(mean of the last w values - mean of the w before) / w, w = min(7, n // 2); 0 when n < 2."""
    w = min(7, len(values) // 2)
    if w == 0:
        return 0.0
    return float((values[-w:].mean() - values[-2 * w : -w].mean()) / w)


def naive_trend_forecast(series: pd.Series, horizon: int = 30) -> pd.DataFrame:
    """The baseline: last value + slope * h, floored at 0 (see the module's docstring); column `forecast`."""
    index = _future(series, horizon)
    values = series.to_numpy(dtype=float)
    steps = np.arange(1, horizon + 1)
    forecast = np.maximum(values[-1] + naive_slope(values) * steps, 0.0)
    return pd.DataFrame({"forecast": forecast}, index=index)


def holt_winters_forecast(
    series: pd.Series, horizon: int = 30, seasonal_periods: int = 7, *, seed: int = 0
) -> pd.DataFrame:
    """Holt-Winters (see the module's docstring): columns forecast, lower, upper (80%), and the model used
    in `frame.attrs["model"]` (`damped trend + weekly seasonality`, `damped trend` or `mean`)."""
    index = _future(series, horizon)
    values = series.to_numpy(dtype=float)
    seasonal = len(values) >= 2 * seasonal_periods
    if len(values) < 5:
        forecast = np.full(horizon, values.mean())
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        z = 1.2816  # the normal's 90th percentile: an 80% two-sided interval
        frame = pd.DataFrame(
            {"forecast": forecast, "lower": forecast - z * spread, "upper": forecast + z * spread},
            index=index,
        )
        model = "mean"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on short or flat series
            fit = ExponentialSmoothing(
                values,
                trend="add",
                damped_trend=True,
                seasonal="add" if seasonal else None,
                seasonal_periods=seasonal_periods if seasonal else None,
                initialization_method="estimated",
            ).fit()
            forecast = np.asarray(fit.forecast(horizon), dtype=float)
            paths = np.asarray(
                fit.simulate(
                    horizon,
                    repetitions=SIMULATIONS,
                    error="add",
                    anchor="end",
                    rng=np.random.default_rng(seed),
                ),
                dtype=float,
            ).reshape(horizon, SIMULATIONS)
        tail = (1 - INTERVAL) / 2
        lower, upper = np.quantile(paths, [tail, 1 - tail], axis=1)
        frame = pd.DataFrame({"forecast": forecast, "lower": lower, "upper": upper}, index=index)
        model = "damped trend + weekly seasonality" if seasonal else "damped trend"
    frame = frame.clip(lower=0.0)
    frame["lower"] = np.minimum(frame["lower"], frame["forecast"])
    frame["upper"] = np.maximum(frame["upper"], frame["forecast"])
    frame.attrs["model"] = model
    return frame


def _errors(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    """MAPE (%, over days with actual > 0; None when there are none) and MAE."""
    positive = actual > 0
    mape = (
        float(np.mean(np.abs(actual[positive] - predicted[positive]) / actual[positive]) * 100)
        if positive.any()
        else None
    )
    return {"mape": mape, "mae": float(np.mean(np.abs(actual - predicted)))}


def backtest(
    series: pd.Series, horizon: int = 30, folds: int = 3, seasonal_periods: int = 7
) -> dict[str, Any]:
    """Rolling-origin back-test of both models.

    Fold k (k = 1 .. folds) trains on all but the last (folds - k + 1) * horizon days and forecasts the
    next `horizon`; folds whose training set would be shorter than 14 days are dropped. Per model:
    MAPE (%, over days with actual > 0) and MAE, pooled over every forecast day of every fold, and the
    same per fold.
    """
    values = series.astype(float)
    usable = [k for k in range(folds, 0, -1) if len(values) - k * horizon >= MIN_TRAIN_DAYS]
    per_fold: list[dict[str, Any]] = []
    pooled: dict[str, list[np.ndarray]] = {"naive": [], "holt_winters": []}
    actuals: list[np.ndarray] = []
    for k in usable:
        cut = len(values) - k * horizon
        train, test = values.iloc[:cut], values.iloc[cut : cut + horizon].to_numpy()
        predicted = {
            "naive": naive_trend_forecast(train, horizon)["forecast"].to_numpy(),
            "holt_winters": holt_winters_forecast(train, horizon, seasonal_periods)["forecast"].to_numpy(),
        }
        actuals.append(test)
        fold: dict[str, Any] = {
            "origin": pd.Timestamp(values.index[cut - 1]).date().isoformat(),
            "train_days": cut,
        }
        for name, forecast in predicted.items():
            pooled[name].append(forecast)
            fold[name] = _errors(test, forecast)
        per_fold.append(fold)
    result: dict[str, Any] = {"horizon": horizon, "folds": len(per_fold), "per_fold": per_fold}
    for name, forecasts in pooled.items():
        result[name] = _errors(np.concatenate(actuals), np.concatenate(forecasts)) if forecasts else None
    return result


def _points(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = frame.reset_index(names="date")
    rows["date"] = rows["date"].dt.date.map(lambda d: d.isoformat())
    return rows.to_dict(orient="records")


def patient_volume_forecast(engine: AnalyticEngine, horizon: int = 30, folds: int = 3) -> dict[str, Any]:
    """New patients per day (daily_new_patients), both forecasts `horizon` days ahead and their back-test,
    as plain JSON-ready values (dates as ISO strings)."""
    series = daily_new_patients(engine)
    history = [{"date": day.date().isoformat(), "value": int(value)} for day, value in series.items()]
    result: dict[str, Any] = {
        "horizon": horizon,
        "history": history,
        "naive": [],
        "holt_winters": [],
        "holt_winters_model": None,
        "backtest": None,
        "methods": {
            "naive": "max(0, last value + slope * h), slope = (mean of the last w days - mean of the w "
            "before) / w, w = min(7, days // 2)",
            "holt_winters": "ExponentialSmoothing: additive damped trend, additive weekly seasonality; "
            "80% interval from 500 simulated paths",
            "backtest": f"rolling origin, {folds} folds of {horizon} days; MAPE over days with actual > 0",
        },
    }
    if series.empty:
        return result
    holt = holt_winters_forecast(series, horizon)
    result["naive"] = _points(naive_trend_forecast(series, horizon))
    result["holt_winters"] = _points(holt)
    result["holt_winters_model"] = holt.attrs["model"]
    result["backtest"] = backtest(series, horizon, folds)
    return result
