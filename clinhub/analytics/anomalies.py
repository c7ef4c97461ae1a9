"""Anomaly detection on hourly message series: the plain z-score of PRODUCT.md and a seasonal detector.

The plain detector (PRODUCT.md): z = (x - mean) / std over the series (population std), or over a
trailing window of the `window` points before each point; |z| > 2 is `medium`, |z| > 3 `high`.

The seasonal detector: an STL decomposition (statsmodels, robust LOESS) takes out the trend and the
daily cycle; the residuals get a robust z, (r - median) / (1.4826 * MAD), with the same thresholds. A
message volume that peaks every afternoon makes the plain z-score flag every busy afternoon and miss a
dip at night; on the residuals, both stand out. `compare_detectors` measures this on synthetic series
with injected anomalies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.tsa.seasonal import STL

from clinhub.analytics.series import hourly_messages
from clinhub.engine.duck import AnalyticEngine
from clinhub.errors import InvalidInput

MEDIUM = 2.0
HIGH = 3.0
MAD_SCALE = 1.4826  # MAD * 1.4826 estimates the standard deviation of normal data
MEAN_AD_SCALE = 1.2533  # mean absolute deviation * sqrt(pi/2): the same, when the MAD is 0
METRICS = {"message_count": "count", "error_rate": "error_rate", "processing_time": "p95_processing_ms"}


def severity(z: float) -> str | None:
    """`high` for |z| > 3, `medium` for |z| > 2, otherwise None."""
    size = abs(z)
    if size > HIGH:
        return "high"
    if size > MEDIUM:
        return "medium"
    return None


def _time(moment: Any) -> str:
    return moment.isoformat() if hasattr(moment, "isoformat") else str(moment)


def _findings(
    series: pd.Series, expected: pd.Series | np.ndarray, z: pd.Series | np.ndarray, detector: str
) -> list[dict]:
    values = series.to_numpy(dtype=float)
    expected = np.asarray(expected, dtype=float)
    z = np.asarray(z, dtype=float)
    with np.errstate(invalid="ignore"):
        flagged = np.flatnonzero(np.isfinite(z) & (np.abs(z) > MEDIUM))
    return [
        {
            "time": _time(series.index[i]),
            "value": float(values[i]),
            "expected": float(expected[i]),
            "z": float(z[i]),
            "severity": severity(float(z[i])),
            "detector": detector,
        }
        for i in flagged
    ]


def _clean(series: pd.Series) -> pd.Series:
    series = pd.Series(series, dtype=float)
    return series[np.isfinite(series.to_numpy())]


def zscore_anomalies(series: pd.Series, *, window: int | None = None) -> list[dict]:
    """Points with |z| > 2, z = (x - mean) / std (population std, ddof 0).

    Without `window` the mean and std are the whole series'; with it, those of the `window` points
    before each point (the point itself left out, so a spike does not raise its own baseline; the first
    `window` points get no z). A point whose baseline has no spread (std 0) gets no z. Each finding:
    time, value, expected (the mean), z, severity, detector. NaN values are left out.
    """
    series = _clean(series)
    if series.empty:
        return []
    if window is None:
        mean = pd.Series(series.mean(), index=series.index)
        std = pd.Series(series.std(ddof=0), index=series.index)
        name = "zscore"
    else:
        if window < 2:
            raise InvalidInput("a z-score window needs at least 2 points")
        before = series.shift(1).rolling(window, min_periods=window)
        mean, std = before.mean(), before.std(ddof=0)
        name = "zscore_rolling"
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(
            std.to_numpy() > 1e-12 * max(1.0, float(series.abs().max())), (series - mean) / std, np.nan
        )
    return _findings(series, mean, z, name)


def robust_scale(values: np.ndarray) -> float:
    """1.4826 * MAD; when the MAD is 0 (over half the values equal), 1.2533 * mean absolute deviation
    from the median; never below 1e-9."""
    median = float(np.median(values))
    deviations = np.abs(values - median)
    scale = MAD_SCALE * float(np.median(deviations))
    if scale == 0.0:
        scale = MEAN_AD_SCALE * float(np.mean(deviations))
    return max(scale, 1e-9)


def seasonal_anomalies(series: pd.Series, *, period: int = 24, robust: bool = True) -> list[dict]:
    """Points whose STL residual has a robust |z| > 2 (medium) or > 3 (high).

    STL (statsmodels, `period` points per cycle, robust LOESS by default) splits the series into trend,
    seasonal and residual; z = (residual - median) / robust_scale(residuals), the scale floored at 1e-6
    of the series' mean absolute level so a series the decomposition fits exactly flags nothing. Each
    finding: time, value, expected (trend + seasonal + median residual), z, severity, detector. Missing
    values are interpolated first; a series shorter than two cycles raises InvalidInput.
    """
    series = pd.Series(series, dtype=float).interpolate(limit_direction="both")
    if len(series) < 2 * period or series.isna().any():
        raise InvalidInput(f"STL needs at least two cycles ({2 * period} values), got {len(series)}")
    fit = STL(series.to_numpy(), period=period, robust=robust).fit()
    resid = np.asarray(fit.resid, dtype=float)
    median = float(np.median(resid))
    level = float(np.mean(np.abs(series.to_numpy())))
    scale = max(robust_scale(resid), 1e-6 * max(level, 1.0))
    z = (resid - median) / scale
    expected = np.asarray(fit.trend) + np.asarray(fit.seasonal) + median
    return _findings(series, expected, z, "seasonal")


def detect(
    engine: AnalyticEngine,
    metric: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    window: int | None = None,
    period: int = 24,
) -> dict[str, Any]:
    """Both detectors over one hourly metric of the message store.

    `metric`: message_count (messages per hour), error_rate (errors / messages per hour) or
    processing_time (the hour's p95 of processed_at - received_at, ms; hours without a processed message
    are interpolated for STL and left out of the z-score). The seasonal findings are None, with the
    reason in `seasonal_skipped`, when the range holds fewer than two cycles.
    """
    if metric not in METRICS:
        raise InvalidInput(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    series = hourly_messages(engine, since=since, until=until)[METRICS[metric]]
    result: dict[str, Any] = {
        "metric": metric,
        "hours": len(series),
        "since": _time(series.index[0]) if len(series) else None,
        "until": _time(series.index[-1]) if len(series) else None,
        "thresholds": {"medium": MEDIUM, "high": HIGH},
        "zscore": zscore_anomalies(series, window=window),
        "seasonal": None,
        "seasonal_skipped": None,
    }
    try:
        result["seasonal"] = seasonal_anomalies(series, period=period)
    except InvalidInput as exc:
        result["seasonal_skipped"] = str(exc)
    return result


# ---------------------------------------------------------------------------------- comparison
def synthetic_hourly(
    *,
    weeks: int = 6,
    base: float = 40.0,
    amplitude: float = 0.6,
    weekend_level: float = 0.6,
    anomalies: int = 24,
    magnitude: float = 6.0,
    seed: int = 0,
    start: str = "2026-01-05",
) -> tuple[pd.Series, pd.DataFrame]:
    """A synthetic hourly message count with daily seasonality and injected anomalies.

    The expected count at hour t is base * (1 + amplitude * sin(2 pi (hour_of_day - 8) / 24)) (a peak
    at 14:00, a trough at 02:00), times `weekend_level` on Saturdays and Sundays; counts are Poisson
    around it. `anomalies` hours, at least 6 hours apart and away from the first and last day, get a
    spike or a dip (alternating) of `magnitude` Poisson standard deviations of that hour,
    sqrt(expected); a dip stops at 0. Returns the series and the injected anomalies (time, kind,
    expected, value).
    """
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=weeks * 7 * 24, freq="h")
    hour = index.hour.to_numpy()
    weekend = index.day_of_week.to_numpy() >= 5
    expected = (
        base * (1 + amplitude * np.sin(2 * np.pi * (hour - 8) / 24)) * np.where(weekend, weekend_level, 1.0)
    )
    values = rng.poisson(expected).astype(float)
    # candidate hours on a 6-hour grid with a random offset, so picks are at least 6 hours apart
    offset = int(rng.integers(0, 6))
    candidates = np.arange(24 + offset, len(index) - 24, 6)
    if anomalies > len(candidates):
        raise InvalidInput(f"at most {len(candidates)} anomalies fit in {weeks} weeks")
    picked = np.sort(rng.choice(candidates, size=anomalies, replace=False))
    kinds = np.where(np.arange(anomalies) % 2 == 0, "spike", "dip")
    shift = magnitude * np.sqrt(expected[picked])
    values[picked] = np.where(
        kinds == "spike", values[picked] + shift, np.maximum(values[picked] - shift, 0.0)
    )
    injected = pd.DataFrame(
        {
            "position": picked,
            "time": index[picked],
            "kind": kinds,
            "expected": expected[picked],
            "value": values[picked],
        }
    )
    return pd.Series(values, index=index, name="count"), injected


def score(findings: list[dict], series: pd.Series, injected: pd.DataFrame, *, tolerance: int = 1) -> dict:
    """Precision, recall and F1 of a detector's findings against injected anomalies.

    A flag within `tolerance` points of an injected anomaly is a true positive (every such flag; a
    flag next to two anomalies counts once) and detects that anomaly; any other flag is a false
    positive. Recall is detected anomalies / injected anomalies.
    """
    position = pd.Series(np.arange(len(series)), index=series.index.map(_time))
    flagged = position.loc[[f["time"] for f in findings]].to_numpy() if findings else np.array([], dtype=int)
    targets = injected["position"].to_numpy()
    if len(flagged) and len(targets):
        near = np.abs(flagged[:, None] - targets[None, :]) <= tolerance
    else:
        near = np.zeros((len(flagged), len(targets)), dtype=bool)
    true_positives = int(near.any(axis=1).sum())
    false_positives = len(flagged) - true_positives
    detected = int(near.any(axis=0).sum())
    precision = true_positives / len(flagged) if len(flagged) else 0.0
    recall = detected / len(targets) if len(targets) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "flags": len(flagged),
        "true_positives": true_positives,
        "false_positives": false_positives,
        "detected": detected,
        "missed": len(targets) - detected,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def compare_detectors(
    *,
    weeks: int = 6,
    base: float = 40.0,
    amplitude: float = 0.6,
    weekend_level: float = 0.6,
    anomalies: int = 24,
    magnitude: float = 6.0,
    seed: int = 0,
    window: int = 24,
    period: int = 24,
    tolerance: int = 1,
) -> dict[str, Any]:
    """The plain z-score (whole series, and over a trailing `window`) against the STL detector (robust,
    the default, and not robust) on one synthetic series (see synthetic_hourly), scored with `score`.

    Returns the parameters, what was injected (counts of spikes and dips), and per detector the flags,
    precision, recall and F1 of every flag (|z| > 2) and, under `high_only`, of the `high` flags alone
    (|z| > 3); `best` names the detector with the highest F1 over every flag.

    Measured on the defaults (6 weeks, 24 anomalies of 6 sd, seeds 0-5), F1 over every flag: z-score
    0.22-0.32, rolling z-score (24 h) 0.36-0.45, robust STL 0.30-0.40, non-robust STL 0.42-0.50. The
    |z| > 2 threshold costs every detector precision: even a perfect model flags about 4.5% of 1,008
    normal hours. Robust STL finds nearly every anomaly (recall 0.96-1.0, against 0.21-0.29 for the
    z-score) but takes the weekend's smaller daily cycle for outliers, so its false positives cluster
    at weekend peaks; the non-robust fit follows the weekend and is the most precise here.
    """
    series, injected = synthetic_hourly(
        weeks=weeks,
        base=base,
        amplitude=amplitude,
        weekend_level=weekend_level,
        anomalies=anomalies,
        magnitude=magnitude,
        seed=seed,
    )
    detectors = {
        "zscore": zscore_anomalies(series),
        "zscore_rolling": zscore_anomalies(series, window=window),
        "seasonal": seasonal_anomalies(series, period=period, robust=True),
        "seasonal_nonrobust": seasonal_anomalies(series, period=period, robust=False),
    }
    results = {}
    for name, found in detectors.items():
        high = [f for f in found if f["severity"] == "high"]
        results[name] = {
            **score(found, series, injected, tolerance=tolerance),
            "high_only": score(high, series, injected, tolerance=tolerance),
        }
    return {
        "parameters": {
            "weeks": weeks,
            "hours": len(series),
            "base": base,
            "amplitude": amplitude,
            "weekend_level": weekend_level,
            "anomalies": anomalies,
            "magnitude_sd": magnitude,
            "seed": seed,
            "window": window,
            "period": period,
            "tolerance_hours": tolerance,
        },
        "injected": {
            "spikes": int((injected["kind"] == "spike").sum()),
            "dips": int((injected["kind"] == "dip").sum()),
        },
        "detectors": results,
        "best": max(results, key=lambda name: (results[name]["f1"], name == "seasonal")),
    }
