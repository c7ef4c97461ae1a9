"""Patient statistics: totals, living and deceased, sex, age bands, geography, new patients and growth.

A patient is "new" on the day of their first encounter (the earliest encounter `period.start`), not on
the day the hub stored them: a bulk load stores a whole population at once (synthetic data all on one
day), while the first encounter says when the hospital first saw the person. Patients without an
encounter count in the totals but not among new patients.

Ages are whole years at `as_of` (at death for a patient who died before it); a missing or unreadable
birth date, or one after `as_of` or after the death, is the band "unknown". A patient is deceased
when the view's `deceased_datetime` is on or before `as_of`, or `deceased_boolean` is true (no date:
then the age is at `as_of`).
"""

# ruff: noqa: S608
# (SQL is built from our own table names and dates formatted by Python)

from __future__ import annotations

from datetime import date, timedelta

from clinhub.analytics.sources import Sources, day, rate

#: (label, lowest age, highest age) of each band; None is open
AGE_BANDS = (
    ("0-17", 0, 17),
    ("18-34", 18, 34),
    ("35-49", 35, 49),
    ("50-64", 50, 64),
    ("65-79", 65, 79),
    ("80+", 80, None),
)
UNKNOWN = "unknown"
DAYS = 90
WEEKS = 26


def date_literal(value: date) -> str:
    return f"DATE '{value.isoformat()}'"


def whole_years(born: str, at: str) -> str:
    """SQL of the whole years from `born` to `at` (two DATE expressions): birthdays passed, not year
    boundaries crossed as date_diff('year') counts."""
    return (
        f"(year({at}) - year({born}) - CASE WHEN strftime({at}, '%m%d') < strftime({born}, '%m%d') "
        f"THEN 1 ELSE 0 END)"
    )


def people_sql(as_of: date) -> str:
    """SQL of one row per patient: id, gender, birth, died (DATE or NULL), deceased, age at `as_of`."""
    at = date_literal(as_of)
    # dates are read from their first ten characters: a dateTime with an offset keeps its own day
    return f"""
        SELECT id, gender, city, state, birth, died,
               (died IS NOT NULL AND died <= {at}) OR coalesce(deceased_boolean, FALSE) AS deceased,
               CASE WHEN birth IS NULL OR birth > least({at}, coalesce(died, {at})) THEN NULL
                    ELSE {whole_years("birth", f"least({at}, coalesce(died, {at}))")} END AS age
        FROM (
            SELECT id, gender, city, state, deceased_boolean,
                   TRY_CAST(birth_date AS DATE) AS birth,
                   TRY_CAST(left(CAST(deceased_datetime AS VARCHAR), 10) AS DATE) AS died
            FROM {{patients}}
        ) AS p"""


def first_seen_sql() -> str:
    """SQL of patient_id, first_seen (DATE): the day of each known patient's first encounter."""
    return """
        SELECT e.patient_id, min(TRY_CAST(left(CAST(e.period_start AS VARCHAR), 10) AS DATE)) AS first_seen
        FROM {encounters} AS e JOIN {patients} AS p ON p.id = e.patient_id
        GROUP BY e.patient_id
        HAVING first_seen IS NOT NULL"""


def _band_case() -> str:
    whens = []
    for label, low, high in AGE_BANDS:
        test = f"age >= {low}" if high is None else f"age BETWEEN {low} AND {high}"
        whens.append(f"WHEN {test} THEN '{label}'")
    return f"CASE {' '.join(whens)} ELSE '{UNKNOWN}' END"


def patient_statistics(src: Sources, *, as_of: date | None = None, top: int = 10) -> dict:
    """Totals, sex, age bands, geography (the `top` states and cities) and new patients at `as_of`."""
    as_of = day(as_of)
    people = people_sql(as_of)
    total, deceased = src.one(f"SELECT count(*), count(*) FILTER (WHERE deceased) FROM ({people})")
    genders = src.rows(
        "SELECT coalesce(gender, 'unknown') AS g, count(*) FROM {patients} "
        "GROUP BY g ORDER BY count(*) DESC, g"
    )
    bands = dict(src.rows(f"SELECT {_band_case()} AS band, count(*) FROM ({people}) GROUP BY band"))
    labels = [label for label, _, _ in AGE_BANDS] + [UNKNOWN]
    states = src.records(
        "SELECT state, count(*) AS count FROM {patients} WHERE state IS NOT NULL "
        "GROUP BY state ORDER BY count DESC, state LIMIT ?",
        [top],
    )
    cities = src.records(
        "SELECT city, state, count(*) AS count FROM {patients} WHERE city IS NOT NULL "
        "GROUP BY city, state ORDER BY count DESC, city, state LIMIT ?",
        [top],
    )
    return {
        "as_of": as_of.isoformat(),
        "total": total,
        "living": total - deceased,
        "deceased": deceased,
        "by_gender": dict(genders),
        "age_bands": [{"band": label, "count": bands.get(label, 0)} for label in labels],
        "geography": {"states": states, "cities": cities},
        "new_patients": new_patients(src, as_of=as_of),
    }


def new_patients(src: Sources, *, as_of: date | None = None) -> dict:
    """New patients (by first encounter) per day for DAYS days and per week (Monday) for WEEKS weeks up
    to `as_of`, and the growth of the last 30 days over the 30 before, in percent."""
    as_of = day(as_of)
    at = date_literal(as_of)
    first = first_seen_sql()
    per_day = src.rows(
        f"""
        SELECT CAST(d AS DATE) AS day, count(f.patient_id)
        FROM generate_series({at} - INTERVAL {DAYS - 1} DAY, {at}, INTERVAL 1 DAY) AS s(d)
        LEFT JOIN ({first}) AS f ON f.first_seen = CAST(d AS DATE)
        GROUP BY day ORDER BY day"""
    )
    this_week = as_of - timedelta(days=as_of.weekday())
    per_week = src.rows(
        f"""
        SELECT CAST(w AS DATE) AS week, count(f.patient_id)
        FROM generate_series({date_literal(this_week)} - INTERVAL {7 * (WEEKS - 1)} DAY,
                             {date_literal(this_week)}, INTERVAL 7 DAY) AS s(w)
        LEFT JOIN ({first}) AS f
               ON CAST(date_trunc('week', f.first_seen) AS DATE) = CAST(w AS DATE) AND f.first_seen <= {at}
        GROUP BY week ORDER BY week"""
    )
    last, previous = src.one(
        f"""
        SELECT count(*) FILTER (WHERE first_seen BETWEEN {at} - 29 AND {at}),
               count(*) FILTER (WHERE first_seen BETWEEN {at} - 59 AND {at} - 30)
        FROM ({first})"""
    )
    growth = rate(last - previous, previous)
    return {
        "basis": "first encounter start",
        "per_day": [{"date": d.isoformat(), "count": n} for d, n in per_day],
        "per_week": [{"week_start": w.isoformat(), "count": n} for w, n in per_week],
        "last_30_days": last,
        "previous_30_days": previous,
        "growth_rate_percent": None if growth is None else round(100 * growth, 2),
    }
