"""Analytics as the API and the CLI serve them: each result computed by the domain's SQL, kept in the
platform cache for a few minutes (key: the call and its parameters), and the dashboard and KPIs built
from the cached parts."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import orjson

from clinhub.analytics.anomalies import METRICS, detect
from clinhub.analytics.clinical import clinical_insights
from clinhub.analytics.forecast import patient_volume_forecast
from clinhub.analytics.messages import message_analytics
from clinhub.analytics.patients import patient_statistics
from clinhub.analytics.risk import patient_risk, risk_distribution
from clinhub.analytics.sources import Sources
from clinhub.engine import AnalyticEngine
from clinhub.errors import InvalidInput
from clinhub.platform.cache import Cache

TTL = 300.0  # seconds a computed result is served from the cache
PREFIX = "analytics:"


class AnalyticsService:
    def __init__(self, engine: AnalyticEngine, cache: Cache | None = None, ttl: float = TTL) -> None:
        self.engine = engine
        self.cache = cache
        self.ttl = ttl

    def _cached(self, name: str, params: dict, compute: Callable[[], Any], *, fresh: bool = False) -> Any:
        material = orjson.dumps(params, option=orjson.OPT_SORT_KEYS, default=str)
        key = f"{PREFIX}{name}:{hashlib.sha256(material).hexdigest()[:24]}"
        if self.cache is not None and not fresh:
            found = self.cache.get(key)
            if found is not None:
                return found
        value = orjson.loads(orjson.dumps(compute(), default=str))  # JSON-safe, as the cache keeps it
        if self.cache is not None:
            self.cache.set(key, value, ttl=self.ttl)
        return value

    def _with_sources(self, work: Callable[[Sources], Any]) -> Any:
        with Sources(self.engine) as src:
            return work(src)

    # ----------------------------------------------------------------------------- the results
    def patient_statistics(self, as_of: date | None = None, *, fresh: bool = False) -> dict:
        return self._cached(
            "patients",
            {"as_of": as_of},
            lambda: self._with_sources(lambda src: patient_statistics(src, as_of=as_of)),
            fresh=fresh,
        )

    def message_analytics(self, since: datetime | None = None, *, fresh: bool = False) -> dict:
        return self._cached(
            "messages",
            {"since": since},
            lambda: self._with_sources(lambda src: message_analytics(src, since=since)),
            fresh=fresh,
        )

    def clinical_insights(self, top: int = 10, min_patients: int = 5, *, fresh: bool = False) -> dict:
        if not 1 <= top <= 100 or min_patients < 1:
            raise InvalidInput("top must be 1..100 and min_patients at least 1")
        return self._cached(
            "clinical",
            {"top": top, "min_patients": min_patients},
            lambda: self._with_sources(
                lambda src: clinical_insights(src, top=top, min_patients=min_patients)
            ),
            fresh=fresh,
        )

    def risk_distribution(self, as_of: date | None = None, *, fresh: bool = False) -> dict:
        return self._cached(
            "risk",
            {"as_of": as_of},
            lambda: self._with_sources(lambda src: risk_distribution(src, as_of=as_of)),
            fresh=fresh,
        )

    def patient_risk(self, patient_id: str, as_of: date | None = None) -> dict:
        # one patient's explanation: cheap enough to compute, and not worth caching per patient
        return self._with_sources(lambda src: patient_risk(src, patient_id, as_of=as_of))

    def patient_volume_forecast(self, horizon: int = 30, *, fresh: bool = False) -> dict:
        if not 1 <= horizon <= 365:
            raise InvalidInput("horizon must be 1..365 days")
        return self._cached(
            "forecast",
            {"horizon": horizon},
            lambda: patient_volume_forecast(self.engine, horizon),
            fresh=fresh,
        )

    def anomalies(
        self, metric: str = "message_count", since: datetime | None = None, *, fresh: bool = False
    ) -> dict:
        if metric not in METRICS:
            raise InvalidInput(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        return self._cached(
            "anomalies",
            {"metric": metric, "since": since},
            lambda: detect(self.engine, metric, since=since),
            fresh=fresh,
        )

    def kpis(self, *, fresh: bool = False) -> dict:
        patients = self.patient_statistics(fresh=fresh)
        messages = self.message_analytics(fresh=fresh)
        risk = self.risk_distribution(fresh=fresh)
        return {
            "patients": patients["total"],
            "living_patients": patients["living"],
            "new_patients_last_30_days": patients["new_patients"]["last_30_days"],
            "patient_growth_percent": patients["new_patients"]["growth_rate_percent"],
            "messages": messages["total"],
            "message_error_rate": messages["error_rate"],
            "messages_pending": messages["pending"],
            "processing_p95_ms": messages["latency_ms"]["p95"],
            "high_risk_patients": risk["levels"]["high"],
            "mean_risk_score": risk["mean"],
        }

    def dashboard(self, *, fresh: bool = False) -> dict:
        """The KPIs and the parts a dashboard draws, each from the cache when it is there."""
        patients = self.patient_statistics(fresh=fresh)
        messages = self.message_analytics(fresh=fresh)
        return {
            "generated_at": datetime.now(UTC).isoformat(),
            "kpis": self.kpis(),
            "patients": {k: patients[k] for k in ("total", "by_gender", "age_bands", "new_patients")},
            "messages": {k: messages[k] for k in ("by_type", "by_hour", "ack_codes", "latency_ms")},
            "risk": self.risk_distribution(),
            "clinical": self.clinical_insights(fresh=fresh),
        }

    def invalidate(self) -> int:
        return self.cache.invalidate_pattern(PREFIX + "*") if self.cache is not None else 0
