"""HTTP API of the backup service."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
