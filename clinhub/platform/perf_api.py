"""HTTP API of the perf service."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
