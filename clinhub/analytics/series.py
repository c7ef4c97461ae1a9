"""Time series for the anomaly detectors and the forecasts, aggregated by SQL in DuckDB over the store.

Every bucket of the range is present: DuckDB's `generate_series` makes the calendar and the aggregates
are joined onto it, so an hour (or day) without data is a row of zeros, not a gap. Times are UTC without
a zone, as the store keeps them.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pandas as pd

from clinhub.engine.duck import AnalyticEngine
from clinhub.hl7.messages import facts_sql
from clinhub.views.library import get_view
from clinhub.views.runner import utc_naive, view_query

HOURLY_COLUMNS = ("count", "errors", "error_rate", "p95_processing_ms")

#: encounters that never happened do not make a patient new
_VOID_ENCOUNTERS = ("entered-in-error", "cancelled")


def _utc(engine: AnalyticEngine) -> None:
    # PostgreSQL's timestamps arrive as TIMESTAMPTZ; cast to TIMESTAMP in UTC (see views.runner.use_utc)
    engine.sql("SET TimeZone = 'UTC'")


def hourly_messages(
    engine: AnalyticEngine, *, since: datetime | None = None, until: datetime | None = None
) -> pd.DataFrame:
    """Stored HL7 messages per hour of `received_at`, from `since` (inclusive) to `until` (exclusive).

    Columns: `count` (messages received), `errors` (status `error`: refused at receipt or failed to
    map), `error_rate` (errors / count, 0 in an empty hour) and `p95_processing_ms` (95th percentile of
    processed_at - received_at over the hour's messages that have a processed_at; NaN when none has).
    The index `hour` runs over every hour from `since` (default: the first message's hour) to the hour
    before `until` (default: the last message's hour), zeros filled. No messages and no bounds: empty.
    """
    _utc(engine)
    conditions: list[str] = []
    params: list[Any] = []
    if since is not None:
        conditions.append("received_at >= ?")
        params.append(utc_naive(since))
    if until is not None:
        conditions.append("received_at < ?")
        params.append(utc_naive(until))
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    lo = "date_trunc('hour', CAST(? AS TIMESTAMP))" if since is not None else "first_hour"
    hi = (
        "date_trunc('hour', CAST(? AS TIMESTAMP) - INTERVAL 1 MICROSECOND)"
        if until is not None
        else "last_hour"
    )
    bound_params = [p for p, given in ((since, since is not None), (until, until is not None)) if given]
    query = f"""
        WITH facts AS (
            SELECT CAST(received_at AS TIMESTAMP) AS received_at,
                   CAST(processed_at AS TIMESTAMP) AS processed_at,
                   status
            FROM ({facts_sql(engine)}) AS f
        ),
        picked AS (
            SELECT date_trunc('hour', received_at) AS hour, received_at, processed_at, status
            FROM facts {where}
        ),
        per_hour AS (
            SELECT hour,
                   count(*) AS count,
                   count(*) FILTER (WHERE status = 'error') AS errors,
                   quantile_cont(date_diff('millisecond', received_at, processed_at), 0.95)
                       AS p95_processing_ms
            FROM picked
            GROUP BY hour
        ),
        bounds AS (
            SELECT {lo} AS lo, {hi} AS hi
            FROM (SELECT min(hour) AS first_hour, max(hour) AS last_hour FROM per_hour) AS seen
        ),
        hours AS (
            SELECT unnest(generate_series(lo, hi, INTERVAL 1 HOUR)) AS hour
            FROM bounds
            WHERE lo IS NOT NULL AND hi IS NOT NULL AND hi >= lo
        )
        SELECT hours.hour,
               coalesce(per_hour.count, 0) AS count,
               coalesce(per_hour.errors, 0) AS errors,
               coalesce(per_hour.errors / per_hour.count, 0.0) AS error_rate,
               CAST(per_hour.p95_processing_ms AS DOUBLE) AS p95_processing_ms
        FROM hours LEFT JOIN per_hour USING (hour)
        ORDER BY hours.hour
    """  # noqa: S608 (our own SQL; values are parameters)
    bound_values = [utc_naive(p) for p in bound_params]
    frame = engine.sql(query, params + bound_values).df()
    frame = frame.set_index("hour")
    frame.index = pd.DatetimeIndex(frame.index, name="hour")
    frame["count"] = frame["count"].astype("int64")
    frame["errors"] = frame["errors"].astype("int64")
    frame["error_rate"] = frame["error_rate"].astype("float64")
    frame["p95_processing_ms"] = frame["p95_processing_ms"].astype("float64")
    if len(frame):
        frame.index.freq = "h"
    return frame[list(HOURLY_COLUMNS)]


def daily_new_patients(engine: AnalyticEngine, *, until: date | None = None) -> pd.Series:
    """New patients per day: a patient is new on the date of their first encounter.

    Read from the library view `encounters` over the store: the date is the calendar date written in
    `period.start` (its first ten characters, the facility's own day; a start with no day, such as
    `2026-03`, is left out), encounters `entered-in-error` or `cancelled` do not count, and a patient's
    first date is the minimum over all their encounters (so a patient first seen after `until` is not
    new on any day of the series). Days run from the first such date to `until` (inclusive; default: the
    last first date), zeros filled; no encounters: an empty series.
    """
    encounters = view_query(engine, get_view("encounters"), "store")
    void = ", ".join(f"'{status}'" for status in _VOID_ENCOUNTERS)
    hi = "CAST(? AS DATE)" if until is not None else "max(day)"
    query = f"""
        WITH encounters AS ({encounters}),
        firsts AS (
            SELECT patient_id, min(TRY_CAST(left(period_start, 10) AS DATE)) AS day
            FROM encounters
            WHERE patient_id IS NOT NULL AND coalesce(status, '') NOT IN ({void})
              AND length(period_start) >= 10
            GROUP BY patient_id
        ),
        per_day AS (SELECT day, count(*) AS new_patients FROM firsts WHERE day IS NOT NULL GROUP BY day),
        bounds AS (SELECT min(day) AS lo, {hi} AS hi FROM per_day),
        days AS (
            SELECT CAST(unnest(generate_series(lo, hi, INTERVAL 1 DAY)) AS DATE) AS day
            FROM bounds
            WHERE lo IS NOT NULL AND hi >= lo
        )
        SELECT days.day, coalesce(per_day.new_patients, 0) AS new_patients
        FROM days LEFT JOIN per_day USING (day)
        ORDER BY days.day
    """  # noqa: S608 (our own SQL; values are parameters)
    frame = engine.sql(query, [until] if until is not None else None).df()
    series = pd.Series(
        frame["new_patients"].astype("int64").to_numpy(),
        index=pd.DatetimeIndex(pd.to_datetime(frame["day"]), name="day"),
        name="new_patients",
    )
    if len(series):
        series.index.freq = "D"
    return series
