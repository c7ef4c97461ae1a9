"""A client for external FHIR servers (Epic, Cerner, HAPI, another clinhub): resilient, paged, cached.

Every request goes through the platform's `Outbound` for the server (retry with jittered exponential
backoff, then a circuit breaker that opens after repeated failures and lets one probe through after its
reset timeout). On top of that this client waits as long as a 429 or 503 answer's `Retry-After` asks before
trying again, treats a GET's 500 as transient (a search read is safe to repeat), follows `next` links only
on the server's own host (a bearer token never leaves for another), and keeps GET answers in a TTL cache.

Authentication: a static bearer token, or SMART Backend Services (client-credentials grant with a JWT
assertion signed by the client's private key, RS384 or ES384; the access token is reused until shortly
before it expires).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import jwt
import orjson

from clinhub.errors import ClinhubError, InvalidInput, Unauthenticated
from clinhub.platform.cache import Cache
from clinhub.platform.resilience import Outbound, TransientHTTPError, outbound

#: answers worth another try for a GET (500 too: a read is safe to repeat)
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0
_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class ExternalFhirError(ClinhubError):
    """The external server answered with an error that retrying will not fix."""

    http_status = 502
    code = "exception"


def retry_after(response: httpx.Response) -> float:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date); 0 when absent."""
    value = response.headers.get("retry-after")
    if not value:
        return 0.0
    if value.strip().isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    from email.utils import parsedate_to_datetime

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, min(moment.timestamp() - time.time(), MAX_RETRY_AFTER))


class BearerToken:
    """A fixed bearer token (an API key, or a token obtained elsewhere)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def header(self, _client: FhirClient) -> str:
        return f"Bearer {self.token}"

    def invalidate(self) -> None:
        """A fixed token cannot be renewed."""


@dataclass
class SmartBackendAuth:
    """SMART Backend Services: a JWT assertion (signed with `private_key`, PEM) traded for a token."""

    client_id: str
    private_key: str
    token_url: str | None = None
    scope: str = "system/*.read"
    algorithm: str = "RS384"
    key_id: str | None = None

    def __post_init__(self) -> None:
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def assertion(self, audience: str) -> str:
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": audience, "iat": now, "exp": now + 300}
        claims["jti"] = str(uuid.uuid4())
        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers=headers)

    def header(self, client: FhirClient) -> str:
        with self._lock:
            if self._token is None or time.time() > self._expires:
                self._fetch(client)
            return f"Bearer {self._token}"

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _fetch(self, client: FhirClient) -> None:
        token_url = self.token_url or client.smart_token_endpoint()
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": _ASSERTION_TYPE,
            "client_assertion": self.assertion(token_url),
        }
        response = client.send("POST", token_url, data=form, authenticated=False)
        if response.status_code != 200:
            raise Unauthenticated(f"the token endpoint refused the client ({response.status_code})")
        body = response.json()
        if not isinstance(body.get("access_token"), str):
            raise Unauthenticated("the token endpoint answered no access_token")
        self._token = body["access_token"]
        # renew a little early, so a token never expires between our check and the server's
        self._expires = time.time() + max(0.0, float(body.get("expires_in", 300)) - 30)


class FhirClient:
    """GETs and searches against one FHIR server at `base_url`."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: BearerToken | SmartBackendAuth | None = None,
        timeout: float = 30.0,
        cache_ttl: float = 60.0,
        attempts: int = 5,
        fail_max: int = 5,
        reset_timeout: float = 30.0,
        backoff_initial: float = 0.2,
        name: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self._host = urlsplit(self.base_url).netloc
        self.http = httpx.Client(timeout=timeout, headers={"Accept": "application/fhir+json"})
        self.outbound: Outbound = outbound(
            name or f"fhir:{self._host}",
            attempts=attempts,
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            backoff_initial=backoff_initial,
        )
        self.cache = Cache(maxsize=1000, default_ttl=cache_ttl) if cache_ttl > 0 else None
        self.requests = 0  # sent over the wire, retries included (for summaries and tests)

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()
        if self.cache is not None:
            self.cache.close()

    def _absolute(self, url: str) -> str:
        absolute = url if "://" in url else urljoin(self.base_url + "/", url.lstrip("/"))
        if urlsplit(absolute).netloc != self._host:
            raise InvalidInput(f"refusing to follow a link to another host ({urlsplit(absolute).netloc})")
        return absolute

    def send(self, method: str, url: str, *, authenticated: bool = True, **kwargs: Any) -> httpx.Response:
        """One request with retries (honouring Retry-After) through the server's circuit breaker."""
        wait = [0.0]
        extra_headers = dict(kwargs.pop("headers", None) or {})

        def attempt() -> httpx.Response:
            if wait[0]:
                time.sleep(wait[0])  # what the server asked for, beyond the backoff already slept
                wait[0] = 0.0
            headers = dict(extra_headers)
            if authenticated and self.auth is not None:
                headers["Authorization"] = self.auth.header(self)
            self.requests += 1
            response = self.http.request(method, url, headers=headers, **kwargs)
            if response.status_code in RETRY_STATUS and (method == "GET" or response.status_code != 500):
                wait[0] = retry_after(response)
                raise TransientHTTPError(response.status_code)
            return response

        return self.outbound.call(attempt)

    def get(self, url: str, params: dict[str, str] | None = None, *, authenticated: bool = True) -> dict:
        """A GET of JSON (cached for the TTL); 401 once renews a SMART token; other errors raise."""
        target = self._absolute(url)
        key = f"{target}?{orjson.dumps(params or {}, option=orjson.OPT_SORT_KEYS).decode()}"
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        response = self.send("GET", target, params=params, authenticated=authenticated)
        if response.status_code == 401 and authenticated and self.auth is not None:
            self.auth.invalidate()
            response = self.send("GET", target, params=params)
        if response.status_code == 401:
            raise Unauthenticated(f"{self._host} refused our credentials")
        if response.status_code >= 400:
            raise ExternalFhirError(f"{self._host} answered {response.status_code} for a GET")
        body = response.json()
        if self.cache is not None:
            self.cache.set(key, body)
        return body

    def smart_token_endpoint(self) -> str:
        config = self.get(".well-known/smart-configuration", authenticated=False)
        endpoint = config.get("token_endpoint")
        if not isinstance(endpoint, str):
            raise InvalidInput("the server's smart-configuration names no token_endpoint")
        return endpoint

    def pages(self, resource_type: str, params: dict[str, str]) -> Iterator[dict]:
        """Each searchset Bundle page of a search, following `next` links."""
        bundle = self.get(resource_type, params)
        while True:
            yield bundle
            following = next(
                (link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"), None
            )
            if not following:
                return
            bundle = self.get(following)
