"""Fixtures for the HL7 v2 tests: the shared sample corpus and a small synthetic hospital's messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinhub.synth import generate

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "hl7v2-samples"


@pytest.fixture(scope="session")
def hl7_samples() -> dict[str, bytes]:
    """File name -> raw bytes of the 139 sample messages (LF line ends, some with a UTF-8 BOM)."""
    files = sorted(SAMPLES.glob("*.hl7"))
    if not files:
        pytest.skip(f"the HL7 v2 sample corpus is not at {SAMPLES}")
    return {path.name: path.read_bytes() for path in files}


@pytest.fixture(scope="session")
def synthetic_hl7(tmp_path_factory) -> list[str]:
    """The messages of a 30-patient synthetic hospital (segments end with CR), one text each."""
    out = tmp_path_factory.mktemp("hl7-synth")
    generate(out, patients=30, seed=11)
    text = (out / "hl7" / "messages.hl7").read_bytes().decode("utf-8")
    return [message for message in text.split("\n") if message.strip()]
