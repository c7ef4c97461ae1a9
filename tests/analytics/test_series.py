"""Hourly and daily series from the store, the two anomaly detectors, and the patient-volume forecasts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from clinhub.analytics.anomalies import (
    compare_detectors,
    detect,
    score,
    seasonal_anomalies,
    severity,
    synthetic_hourly,
    zscore_anomalies,
)
from clinhub.analytics.forecast import (
    backtest,
    holt_winters_forecast,
    naive_trend_forecast,
    patient_volume_forecast,
)
from clinhub.analytics.series import daily_new_patients, hourly_messages
from clinhub.engine.duck import AnalyticEngine
from clinhub.errors import InvalidInput
from clinhub.hl7 import messages
from clinhub.store import create_store_engine, put_resources, upgrade
from clinhub.store.schema import hl7_message


def _hours(n: int, start: str = "2026-03-02") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="h")


def _sine(days: int = 7) -> pd.Series:
    t = np.arange(24 * days)
    return pd.Series(50 + 20 * np.sin(2 * np.pi * (t - 8) / 24), index=_hours(len(t)))


# ------------------------------------------------------------------------------- detectors
def test_flat_series_with_one_spike_flags_that_hour_high() -> None:
    series = pd.Series(10.0, index=_hours(72))
    series.iloc[30] = 40.0
    found = zscore_anomalies(series)
    assert len(found) == 1
    (spike,) = found
    assert spike["time"] == "2026-03-03T06:00:00" and spike["value"] == 40.0
    assert spike["severity"] == "high" and spike["detector"] == "zscore"
    assert spike["expected"] == pytest.approx(series.mean())
    # one spike among n equal values: z = sqrt(n - 1) with the population std
    assert spike["z"] == pytest.approx(np.sqrt(71))
    seasonal = seasonal_anomalies(series)
    assert [(f["time"], f["severity"]) for f in seasonal] == [("2026-03-03T06:00:00", "high")]


def test_thresholds_medium_and_high() -> None:
    assert severity(2.0) is None and severity(-1.5) is None
    assert severity(2.01) == "medium" and severity(-3.0) == "medium"
    assert severity(3.01) == "high" and severity(-4) == "high"
    # 100 values of +-1 and a pair +-a: mean 0, std sqrt((100 + 2a^2) / 102); a chosen so |z| = 2.5
    a = np.sqrt(625 / 89.5)
    series = pd.Series([1.0, -1.0] * 50 + [a, -a], index=_hours(102))
    found = zscore_anomalies(series)
    assert [f["severity"] for f in found] == ["medium", "medium"]
    assert [f["z"] for f in found] == pytest.approx([2.5, -2.5])
    # the same pair at |z| = 3.5 is high
    b = np.sqrt(12.25 * 100 / (102 - 2 * 12.25))
    found = zscore_anomalies(pd.Series([1.0, -1.0] * 50 + [b, -b], index=_hours(102)))
    assert [f["severity"] for f in found] == ["high", "high"]
    assert [f["z"] for f in found] == pytest.approx([3.5, -3.5])


def test_rolling_zscore_uses_the_window_before_each_point() -> None:
    values = np.tile([9.0, 11.0], 24)
    values[30] = 20.0
    series = pd.Series(values, index=_hours(48))
    found = zscore_anomalies(series, window=24)
    # 24 alternating 9/11 before the spike: mean 10, std 1 -> z = 10; the spike leaves the first window
    # points' baselines alone, and later windows holding it are wide enough to flag nothing else
    assert [(f["time"], f["z"], f["expected"]) for f in found] == [("2026-03-03T06:00:00", 10.0, 10.0)]
    with pytest.raises(InvalidInput):
        zscore_anomalies(series, window=1)


def test_clean_daily_sine_has_no_seasonal_false_positives() -> None:
    sine = _sine()
    assert seasonal_anomalies(sine) == []
    # a pure sine's peaks sit at sqrt(2) standard deviations: the plain z-score flags none either
    assert zscore_anomalies(sine) == []


def test_a_dip_to_the_daily_mean_at_peak_hour_only_the_seasonal_detector_sees() -> None:
    series = _sine()
    series.iloc[24 * 3 + 14] = 50.0  # Thursday 14:00, the daily peak (70) at the series' mean
    assert zscore_anomalies(series) == []
    found = seasonal_anomalies(series)
    assert [(f["time"], f["severity"]) for f in found] == [("2026-03-05T14:00:00", "high")]
    assert found[0]["expected"] == pytest.approx(70.0, abs=0.5) and found[0]["z"] < 0


def test_seasonal_detector_needs_two_cycles() -> None:
    with pytest.raises(InvalidInput, match="two cycles"):
        seasonal_anomalies(_sine()[:47])


def test_score_counts_hits_within_an_hour() -> None:
    series = pd.Series(0.0, index=_hours(48))
    injected = pd.DataFrame({"position": [10, 30]})
    at = lambda i: {"time": series.index[i].isoformat()}  # noqa: E731
    result = score([at(9), at(11), at(40)], series, injected)
    assert (result["true_positives"], result["false_positives"], result["detected"]) == (2, 1, 1)
    assert result["precision"] == pytest.approx(2 / 3) and result["recall"] == 0.5
    assert result["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert score([], series, injected)["f1"] == 0.0


def test_synthetic_series_has_the_injected_anomalies() -> None:
    series, injected = synthetic_hourly(weeks=4, anomalies=10, seed=3)
    assert len(series) == 4 * 168 and len(injected) == 10
    assert list(injected["kind"]).count("spike") == 5
    assert np.diff(injected["position"]).min() >= 6
    assert (series.iloc[injected["position"]].to_numpy() == injected["value"].to_numpy()).all()
    again, _ = synthetic_hourly(weeks=4, anomalies=10, seed=3)
    assert series.equals(again)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seasonal_detector_beats_the_plain_zscore_on_seasonal_data(seed: int) -> None:
    result = compare_detectors(seed=seed)
    assert result["parameters"]["seed"] == seed and result["parameters"]["hours"] == 6 * 168
    assert result["injected"] == {"spikes": 12, "dips": 12}
    found = result["detectors"]
    plain, seasonal = found["zscore"], found["seasonal"]
    # measured on seeds 0-5: F1 z-score 0.22-0.32, robust STL 0.30-0.40, non-robust STL 0.42-0.50
    assert seasonal["f1"] >= plain["f1"]
    assert found["seasonal_nonrobust"]["f1"] > plain["f1"]
    # the seasonal detector finds nearly every anomaly; the plain z-score misses most (every dip)
    assert seasonal["recall"] >= 0.9 > 0.4 > plain["recall"]
    assert seasonal["high_only"]["f1"] >= plain["high_only"]["f1"]
    assert result["best"] in ("seasonal", "seasonal_nonrobust")
    json.dumps(result)


# ------------------------------------------------------------------------------- forecasts
def _weekly(days: int = 182, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    weekly = np.array([1.3, 1.2, 1.1, 1.1, 1.0, 0.5, 0.4])
    expected = (20 + 0.08 * t) * weekly[t % 7]
    return pd.Series(
        rng.poisson(expected).astype(float), index=pd.date_range("2026-01-05", periods=days, freq="D")
    )


def test_naive_trend_formula() -> None:
    series = pd.Series(np.arange(1.0, 15.0), index=pd.date_range("2026-01-01", periods=14, freq="D"))
    # slope = (mean(8..14) - mean(1..7)) / 7 = 1; forecast(h) = 14 + h
    frame = naive_trend_forecast(series, horizon=3)
    assert list(frame["forecast"]) == [15.0, 16.0, 17.0]
    assert [d.date() for d in frame.index] == [date(2026, 1, 15), date(2026, 1, 16), date(2026, 1, 17)]
    falling = pd.Series(np.arange(14.0, 0.0, -1), index=series.index)  # slope -1 from the last value 1
    assert list(naive_trend_forecast(falling, horizon=3)["forecast"]) == [0.0, 0.0, 0.0]
    assert list(naive_trend_forecast(series[:1], horizon=2)["forecast"]) == [1.0, 1.0]
    with pytest.raises(InvalidInput):
        naive_trend_forecast(series[:0])


def test_holt_winters_horizon_dates_and_intervals() -> None:
    series = _weekly()
    frame = holt_winters_forecast(series, horizon=30)
    assert len(frame) == 30 and frame.attrs["model"] == "damped trend + weekly seasonality"
    assert frame.index[0] == series.index[-1] + pd.Timedelta(days=1)
    assert (frame.index.to_series().diff().dropna() == pd.Timedelta(days=1)).all()
    assert (frame["lower"] <= frame["forecast"]).all() and (frame["forecast"] <= frame["upper"]).all()
    assert (frame["lower"] >= 0).all() and (frame["upper"] > frame["lower"]).any()
    # the weekly shape carries over: forecast weekends below forecast weekdays
    weekend = frame.index.day_of_week >= 5
    assert frame["forecast"][weekend].max() < frame["forecast"][~weekend].min()


def test_holt_winters_falls_back_on_short_series() -> None:
    series = _weekly()
    ten = holt_winters_forecast(series[:10], horizon=5)
    assert ten.attrs["model"] == "damped trend" and len(ten) == 5
    three = holt_winters_forecast(series[:3], horizon=4)
    assert three.attrs["model"] == "mean"
    assert list(three["forecast"]) == pytest.approx([series[:3].mean()] * 4)
    assert (three["lower"] <= three["forecast"]).all() and (three["forecast"] <= three["upper"]).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_backtest_holt_winters_beats_the_naive_trend(seed: int) -> None:
    result = backtest(_weekly(seed=seed), horizon=30, folds=3)
    assert result["folds"] == 3 and [f["train_days"] for f in result["per_fold"]] == [92, 122, 152]
    # measured (seeds 0-2): MAPE naive 78-93%, Holt-Winters 19-24%
    assert result["holt_winters"]["mape"] < result["naive"]["mape"]
    assert result["holt_winters"]["mae"] < result["naive"]["mae"]
    assert result["holt_winters"]["mape"] < 35


def test_backtest_drops_folds_without_enough_history() -> None:
    result = backtest(_weekly(days=40), horizon=30, folds=3)  # 40 - 30 = 10 days to train on: too few
    assert result["folds"] == 0 and result["naive"] is None and result["per_fold"] == []
    assert backtest(_weekly(days=50), horizon=30, folds=3)["folds"] == 1
    assert backtest(_weekly(days=50), horizon=14, folds=3)["folds"] == 2  # 50-42 = 8 days is too short


# ------------------------------------------------------------------------------- the store
def _adt(control_id: str) -> str:
    return "\r".join(
        [
            f"MSH|^~\\&|EPIC|NORTH|HUB|HOSP|20260301101500||ADT^A01^ADT_A01|{control_id}|P|2.5.1",
            "EVN|A01|20260301101500",
            f"PID|1||MRN{control_id}^^^NORTH^MR||DOE^JANE||19800101|F",
        ]
    )


def _encounter(rid: str, patient: str, start: str, status: str = "finished") -> dict:
    return {
        "resourceType": "Encounter",
        "id": rid,
        "status": status,
        "class": {"code": "AMB"},
        "subject": {"reference": f"Patient/{patient}"},
        "period": {"start": start},
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[str, object]]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = create_store_engine(url)
    upgrade(engine)
    at = lambda h, m: datetime(2026, 3, 1, h, m, tzinfo=UTC)  # noqa: E731
    messages.accept(engine, [(_adt("C1"), at(10, 5)), (_adt("C2"), at(10, 40))])
    messages.accept(engine, [(_adt("C3"), at(12, 15)), (_adt("C4"), at(13, 59))])
    messages.accept(engine, [("not an HL7 message", at(12, 30))])  # refused: status error, no processed_at
    messages.process_pending(engine)
    put_resources(
        engine,
        [
            _encounter("e1", "p1", "2026-03-01T09:00:00Z"),
            _encounter("e2", "p1", "2026-02-27"),  # p1's first encounter: new on 27 February
            _encounter("e3", "p2", "2026-03-03T08:00:00+01:00"),
            _encounter("e4", "p3", "2026-03-03T23:30:00-05:00"),  # the day as written
            _encounter("e5", "p4", "2026-03-02T10:00:00Z", status="entered-in-error"),
            _encounter("e6", "p5", "2026-03-06"),
            _encounter("e7", "p6", "2026-03"),  # no day: left out
        ],
    )
    yield url, engine
    engine.dispose()


def test_hourly_messages_counts_errors_and_zero_filled_hours(store) -> None:
    url, engine = store
    with engine.connect() as conn:
        rows = conn.execute(
            select(hl7_message.c.control_id, hl7_message.c.received_at, hl7_message.c.processed_at)
        ).all()
    took = {
        r.control_id: (r.processed_at - r.received_at).total_seconds() * 1000 for r in rows if r.processed_at
    }
    with AnalyticEngine(url) as duck:
        frame = hourly_messages(duck)
        assert list(frame.columns) == ["count", "errors", "error_rate", "p95_processing_ms"]
        assert [h.hour for h in frame.index] == [10, 11, 12, 13]
        assert list(frame["count"]) == [2, 0, 2, 1]
        assert list(frame["errors"]) == [0, 0, 1, 0]
        assert list(frame["error_rate"]) == [0.0, 0.0, 0.5, 0.0]
        low, high = sorted([took["C1"], took["C2"]])
        assert frame["p95_processing_ms"].iloc[0] == pytest.approx(low + 0.95 * (high - low), abs=1)
        assert np.isnan(frame["p95_processing_ms"].iloc[1])
        assert frame["p95_processing_ms"].iloc[2] == pytest.approx(
            took["C3"], abs=1
        )  # the refused one has none

        window = hourly_messages(
            duck, since=datetime(2026, 3, 1, 8, tzinfo=UTC), until=datetime(2026, 3, 1, 13)
        )
        assert [h.hour for h in window.index] == [8, 9, 10, 11, 12]
        assert list(window["count"]) == [0, 0, 2, 0, 2]

        empty = hourly_messages(duck, since=datetime(2026, 4, 1))
        assert empty.empty and list(empty.columns) == list(frame.columns)

        found = detect(duck, "message_count")
        assert found["hours"] == 4 and found["zscore"] == [] and found["seasonal"] is None
        assert "two cycles" in found["seasonal_skipped"]
        assert detect(duck, "processing_time")["metric"] == "processing_time"
        with pytest.raises(InvalidInput):
            detect(duck, "heart_rate")


def test_daily_new_patients_counts_first_encounters(store) -> None:
    url, _ = store
    with AnalyticEngine(url) as duck:
        series = daily_new_patients(duck)
        assert series.index[0].date() == date(2026, 2, 27) and series.index[-1].date() == date(2026, 3, 6)
        expected = {"2026-02-27": 1, "2026-03-03": 2, "2026-03-06": 1}
        assert {d.date().isoformat(): int(v) for d, v in series.items() if v} == expected
        assert len(series) == 8 and series.sum() == 4

        until = daily_new_patients(duck, until=date(2026, 3, 4))
        assert [int(v) for v in until] == [1, 0, 0, 0, 2, 0]

        result = patient_volume_forecast(duck, horizon=5)
        assert json.loads(json.dumps(result)) == result
        assert [p["date"] for p in result["naive"]] == [f"2026-03-{d:02d}" for d in range(7, 12)]
        assert [p["date"] for p in result["holt_winters"]] == [p["date"] for p in result["naive"]]
        assert result["history"][0] == {"date": "2026-02-27", "value": 1}
        assert result["backtest"]["folds"] == 0  # eight days: too short to back-test


def test_patient_volume_forecast_on_an_empty_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = create_store_engine(url)
    upgrade(engine)
    engine.dispose()
    with AnalyticEngine(url) as duck:
        assert daily_new_patients(duck).empty
        result = patient_volume_forecast(duck)
        assert result["history"] == [] and result["naive"] == [] and result["backtest"] is None
