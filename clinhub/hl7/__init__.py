"""HL7 v2: parse and encode messages, build ACKs, map messages to FHIR R4 resources."""

from clinhub.hl7.message import (
    ACK_CODES,
    ERROR_CODES,
    NULL,
    Encoding,
    Message,
    ParseError,
    Segment,
    ack,
    ack_text,
    hl7_timestamp,
    nak_for_unparseable,
    parse,
    parse_batch,
    split_batch,
)
from clinhub.hl7.to_fhir import MappingError, fhir_date, fhir_datetime, fhir_instant, to_fhir

__all__ = [
    "ACK_CODES",
    "ERROR_CODES",
    "NULL",
    "Encoding",
    "MappingError",
    "Message",
    "ParseError",
    "Segment",
    "ack",
    "ack_text",
    "fhir_date",
    "fhir_datetime",
    "fhir_instant",
    "hl7_timestamp",
    "nak_for_unparseable",
    "parse",
    "parse_batch",
    "split_batch",
    "to_fhir",
]
