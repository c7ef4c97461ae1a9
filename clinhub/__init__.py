"""clinhub: a clinical data hub for HL7 v2, FHIR R4, SQL on FHIR views, quality, analytics and research."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clinhub")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
