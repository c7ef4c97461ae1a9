"""FHIR response bodies: searchset and history Bundles, OperationOutcomes, ETags.

Search pages are built as bytes around the stored JSON text, never parsing and re-serialising the
resources: the page's cost is the query, not Python work per resource.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from urllib.parse import urlencode

import orjson

from clinhub.errors import ClinhubError
from clinhub.fhir.repository import Version
from clinhub.fhir.search import SearchRequest, SearchResult

FHIR_JSON = "application/fhir+json"


def outcome(code: str, diagnostics: str, severity: str = "error", issues: list[dict] | None = None) -> dict:
    """An OperationOutcome with the given issues, or one issue from code and diagnostics."""
    return {
        "resourceType": "OperationOutcome",
        "issue": issues or [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


def outcome_of(exc: ClinhubError) -> dict:
    return outcome(exc.code, exc.message, issues=exc.detail.get("issues"))


def etag(resource: dict) -> str:
    return f'W/"{resource.get("meta", {}).get("versionId", "")}"'


def last_modified(resource: dict) -> str | None:
    stamp = resource.get("meta", {}).get("lastUpdated")
    if not isinstance(stamp, str):
        return None
    return format_datetime(datetime.fromisoformat(stamp), usegmt=True)


def _link(relation: str, url: str) -> bytes:
    return orjson.dumps({"relation": relation, "url": url})


def searchset(result: SearchResult, request: SearchRequest, base: str) -> bytes:
    """The searchset Bundle of one page, with self/first/next/previous links."""
    url = f"{base}/{request.resource_type}"
    echo = list(request.echo)

    def page(offset: int) -> str:
        query = [*echo, ("_offset", str(offset))] if offset else echo
        return f"{url}?{urlencode(query)}" if query else url

    links = [_link("self", page(request.offset))]
    if not request.summary_count and request.count:
        links.append(_link("first", page(0)))
        if result.has_more:
            links.append(_link("next", page(request.offset + request.count)))
        if request.offset:
            links.append(_link("previous", page(max(0, request.offset - request.count))))
    parts = [b'{"resourceType":"Bundle","type":"searchset"']
    if result.total is not None:
        parts.append(b',"total":%d' % result.total)
    parts.append(b',"link":[' + b",".join(links) + b"]")
    entries = [
        b'{"fullUrl":'
        + orjson.dumps(f"{url}/{resource_id}")
        + b',"resource":'
        + text.encode()
        + b',"search":{"mode":"match"}}'
        for resource_id, text in result.matches
    ]
    entries.extend(
        b'{"fullUrl":'
        + orjson.dumps(f"{base}/{resource_type}/{resource_id}")
        + b',"resource":'
        + text.encode()
        + b',"search":{"mode":"include"}}'
        for resource_type, resource_id, text in result.included
    )
    if entries:
        parts.append(b',"entry":[' + b",".join(entries) + b"]")
    parts.append(b"}")
    return b"".join(parts)


def history_bundle(
    versions: list[Version], has_more: bool, total: int, base: str, self_url: str, count: int, offset: int
) -> bytes:
    """A history Bundle: each version with the request that made it (POST, PUT or DELETE)."""
    separator = "&" if "?" in self_url else "?"
    links = [_link("self", self_url)]
    if has_more:
        links.append(_link("next", f"{self_url}{separator}_count={count}&_offset={offset + count}"))
    entries = []
    for version in versions:
        full_url = f"{base}/{version.resource_type}/{version.id}"
        moment = version.last_updated.isoformat().replace("+00:00", "Z")
        if version.deleted:
            request = {"method": "DELETE", "url": f"{version.resource_type}/{version.id}"}
            response = {"status": "204 No Content", "lastModified": moment, "etag": f'W/"{version.version}"'}
            entries.append(orjson.dumps({"fullUrl": full_url, "request": request, "response": response}))
            continue
        method = "POST" if version.version == 1 else "PUT"
        url = version.resource_type if method == "POST" else f"{version.resource_type}/{version.id}"
        status = "201 Created" if method == "POST" else "200 OK"
        tail = orjson.dumps(
            {
                "request": {"method": method, "url": url},
                "response": {"status": status, "lastModified": moment, "etag": f'W/"{version.version}"'},
            }
        )
        entries.append(
            b'{"fullUrl":'
            + orjson.dumps(full_url)
            + b',"resource":'
            + version.text.encode()
            + b","
            + tail[1:]
        )
    body = b'{"resourceType":"Bundle","type":"history","total":%d,"link":[' % total
    body += b",".join(links) + b"]"
    if entries:
        body += b',"entry":[' + b",".join(entries) + b"]"
    return body + b"}"
