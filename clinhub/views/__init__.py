"""SQL on FHIR v2 views: ViewDefinitions and their FHIRPath compiled to one SQL query per view."""

from clinhub.views.compiler import CompiledView, OutputColumn, compile_definition, compile_view
from clinhub.views.conformance import run_suite
from clinhub.views.dialects import DIALECTS, Dialect, DuckDB
from clinhub.views.fhirpath import FHIRPathSyntaxError, parse_fhirpath
from clinhub.views.model import ViewDefinition, parse_view
from clinhub.views.runner import FORMATS, StoreSource, run_view, stream_view, write_view

__all__ = [
    "DIALECTS",
    "FORMATS",
    "CompiledView",
    "Dialect",
    "DuckDB",
    "FHIRPathSyntaxError",
    "OutputColumn",
    "StoreSource",
    "ViewDefinition",
    "compile_definition",
    "compile_view",
    "parse_fhirpath",
    "parse_view",
    "run_suite",
    "run_view",
    "stream_view",
    "write_view",
]
