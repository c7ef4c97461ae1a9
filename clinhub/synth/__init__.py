"""A deterministic synthetic hospital: FHIR R4 NDJSON, HL7 v2.5.1 messages, a provider directory, defects."""

from clinhub.synth._common import REFERENCE_DATE
from clinhub.synth._defects import DEFECT_KINDS
from clinhub.synth._generate import OUTPUT_FILES, SynthResult, generate

__all__ = ["DEFECT_KINDS", "OUTPUT_FILES", "REFERENCE_DATE", "SynthResult", "generate"]
