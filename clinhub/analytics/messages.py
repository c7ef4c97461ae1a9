"""Message analytics over the HL7 v2 message store: volumes, processing latency, error rates, ACK codes.

Read from the message facts (`clinhub.hl7.messages.facts_sql`), never the messages' content. Times are
the store's, UTC. Latency is processed_at - received_at of the messages mapped to FHIR (status
processed or replayed), in milliseconds, with DuckDB's interpolated quantiles. A message's type is
"type^trigger" (ADT^A04); a message that did not parse has none and is counted as "unparsed".
"""

# ruff: noqa: S608
# (SQL is built from our own table names and a timestamp formatted by Python)

from __future__ import annotations

from datetime import datetime

from clinhub.analytics.sources import Sources
from clinhub.views.runner import utc_naive

PERCENTILES = (50, 90, 95, 99)
UNPARSED = "unparsed"
DONE = "('processed', 'replayed')"


def _where(since: datetime | None) -> str:
    if since is None:
        return "TRUE"
    return f"received_at >= TIMESTAMP '{utc_naive(since).isoformat(sep=' ')}'"


def message_analytics(src: Sources, *, since: datetime | None = None, top: int = 20) -> dict:
    """Totals, volumes by type (with error rates), by sender (the `top` busiest) and by hour of day,
    latency percentiles and the ACK code mix of the messages received since `since` (all by default)."""
    where = _where(since)
    facts = f"(SELECT * FROM {{messages}} WHERE {where})"
    kind = (
        f"CASE WHEN message_type IS NULL OR message_type = '' THEN '{UNPARSED}' "
        "ELSE message_type || '^' || coalesce(trigger_event, '') END"
    )
    total, processed, errors, pending = src.one(
        f"""SELECT count(*), count(*) FILTER (WHERE status IN {DONE}),
                   count(*) FILTER (WHERE status = 'error'), count(*) FILTER (WHERE status = 'received')
            FROM {facts}"""
    )
    by_type = src.records(
        f"""SELECT {kind} AS type, count(*) AS count, count(*) FILTER (WHERE status = 'error') AS errors,
                   count(*) FILTER (WHERE status = 'error') / count(*) AS error_rate
            FROM {facts} GROUP BY type ORDER BY count DESC, type"""
    )
    by_sender = src.records(
        f"""SELECT coalesce(sending_application, '') AS application,
                   coalesce(sending_facility, '') AS facility, count(*) AS count
            FROM {facts} GROUP BY application, facility ORDER BY count DESC, application, facility LIMIT ?""",
        [top],
    )
    by_hour = dict(src.rows(f"SELECT hour(received_at) AS h, count(*) FROM {facts} GROUP BY h"))
    quantiles = ", ".join(f"quantile_cont(ms, {p / 100})" for p in PERCENTILES)
    latency = src.one(
        f"""SELECT count(ms), {quantiles}, avg(ms), max(ms)
            FROM (SELECT (epoch_us(processed_at) - epoch_us(received_at)) / 1000.0 AS ms
                  FROM {facts} WHERE status IN {DONE} AND processed_at IS NOT NULL)"""
    )
    acks = src.rows(
        f"SELECT coalesce(ack_code, 'none') AS code, count(*) FROM {facts} "
        "GROUP BY code ORDER BY count(*) DESC, code"
    )
    return {
        "since": since.isoformat() if since else None,
        "total": total,
        "processed": processed,
        "errors": errors,
        "pending": pending,
        "error_rate": errors / total if total else None,
        "by_type": by_type,
        "by_sender": by_sender,
        "by_hour": [{"hour": h, "count": by_hour.get(h, 0)} for h in range(24)],
        "latency_ms": {
            "count": latency[0],
            **{f"p{p}": latency[i + 1] for i, p in enumerate(PERCENTILES)},
            "mean": latency[-2],
            "max": latency[-1],
        },
        "ack_codes": dict(acks),
    }
