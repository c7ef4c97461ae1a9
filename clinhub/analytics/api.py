"""HTTP API of analytics under /analytics: statistics, insights, risk, forecast, anomalies, dashboard, KPIs
(cached a few minutes; `fresh=true` recomputes)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from clinhub.analytics.anomalies import METRICS
from clinhub.analytics.service import AnalyticsService
from clinhub.hub import Hub
from clinhub.platform.auth import Principal
from clinhub.platform.deps import get_hub, require

router = APIRouter(prefix="/analytics", tags=["analytics"])
HubDep = Annotated[Hub, Depends(get_hub)]
Reader = Annotated[Principal, Depends(require("analytics:read"))]
Fresh = Annotated[bool, Query(description="Recompute instead of serving the cached result.")]


def _service(request: Request) -> AnalyticsService:
    hub = get_hub(request)
    return AnalyticsService(hub.engine, hub.cache)


Service = Annotated[AnalyticsService, Depends(_service)]


@router.get("/patient-statistics", summary="Totals, sex, age bands, geography, new patients, growth")
def patients(service: Service, _: Reader, as_of: date | None = None, fresh: Fresh = False) -> dict:
    return service.patient_statistics(as_of, fresh=fresh)


@router.get("/message-analytics", summary="HL7 volumes, latency percentiles, error rates, ACK mix")
def messages(service: Service, _: Reader, since: datetime | None = None, fresh: Fresh = False) -> dict:
    return service.message_analytics(since, fresh=fresh)


@router.get("/clinical-insights", summary="Top diagnoses and medications, co-occurrences, abnormal labs")
def clinical(
    service: Service,
    _: Reader,
    top: int = Query(10, ge=1, le=100),
    min_patients: int = Query(5, ge=1),
    fresh: Fresh = False,
) -> dict:
    return service.clinical_insights(top, min_patients, fresh=fresh)


@router.get("/risk-distribution", summary="Risk levels and score histogram over the population")
def risk(service: Service, _: Reader, as_of: date | None = None, fresh: Fresh = False) -> dict:
    return service.risk_distribution(as_of, fresh=fresh)


@router.get("/patient-risk/{patient_id}", summary="One patient's risk score and what makes it up")
def patient_risk(patient_id: str, service: Service, _: Reader, as_of: date | None = None) -> dict:
    return service.patient_risk(patient_id, as_of)


@router.get("/forecast/patient-volume", summary="New patients per day: Holt-Winters and naive trend")
def forecast(
    service: Service, _: Reader, horizon: int = Query(30, ge=1, le=365), fresh: Fresh = False
) -> dict:
    return service.patient_volume_forecast(horizon, fresh=fresh)


@router.get("/anomalies", summary="Anomalies in hourly HL7 metrics: z-score and seasonal (STL)")
def anomalies(
    service: Service,
    _: Reader,
    metric: str = Query("message_count", description=f"one of {', '.join(METRICS)}"),
    since: datetime | None = None,
    fresh: Fresh = False,
) -> dict:
    return service.anomalies(metric, since, fresh=fresh)


@router.get("/kpis", summary="The headline figures")
def kpis(service: Service, _: Reader, fresh: Fresh = False) -> dict:
    return service.kpis(fresh=fresh)


@router.get("/dashboard", summary="KPIs and the parts a dashboard draws")
def dashboard(service: Service, _: Reader, fresh: Fresh = False) -> dict:
    return service.dashboard(fresh=fresh)
