"""The analytic engine: DuckDB over the store's live data and over NDJSON/Parquet files."""

from clinhub.engine.duck import STORE, AnalyticEngine

__all__ = ["STORE", "AnalyticEngine"]
