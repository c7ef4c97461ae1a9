"""Logging set-up: one format for the whole process; health data never goes into a log line."""

from __future__ import annotations

import logging

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str = "INFO") -> None:
    """Configure the root logger once (later calls only change the level)."""
    root = logging.getLogger()
    if not any(getattr(h, "_clinhub", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._clinhub = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
