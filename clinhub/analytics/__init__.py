"""Analytics: patient, message and clinical statistics, risk, anomalies and forecasts over the store.

Everything is computed by SQL in DuckDB over the view library's tables and the HL7 message facts,
which `Sources` builds once for a set of calls:

    with AnalyticEngine(settings.store_url) as engine, Sources(engine) as src:
        stats = patient_statistics(src, as_of=date(2025, 6, 20))
"""

from clinhub.analytics.clinical import abnormal_labs, clinical_insights, co_occurrences
from clinhub.analytics.messages import message_analytics
from clinhub.analytics.patients import new_patients, patient_statistics
from clinhub.analytics.risk import patient_risk, risk_distribution, risk_scores
from clinhub.analytics.sources import Sources

__all__ = [
    "Sources",
    "abnormal_labs",
    "clinical_insights",
    "co_occurrences",
    "message_analytics",
    "new_patients",
    "patient_risk",
    "patient_statistics",
    "risk_distribution",
    "risk_scores",
]
