"""Resilience for outbound calls: retry with exponential backoff (tenacity) inside a circuit breaker.

Every call clinhub makes to something outside itself (an external FHIR server, an LLM backend) goes
through `Outbound`: transient failures are retried a few times with jittered backoff; after `fail_max`
failed calls in a row the breaker opens and calls fail at once, until `reset_timeout` passes and one
probe call (half-open) decides whether to close it again. Breaker states are listed in /health.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pybreaker
from prometheus_client import Counter, Gauge
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from clinhub.errors import ClinhubError

log = logging.getLogger("clinhub.resilience")
T = TypeVar("T")

BREAKER_STATE = Gauge("clinhub_circuit_breaker_open", "1 while a circuit breaker is open", ["name"])
OUTBOUND_FAILURES = Counter("clinhub_outbound_failures_total", "Failed outbound calls", ["name"])
RETRIES = Counter("clinhub_outbound_retries_total", "Retried outbound calls", ["name"])

_registry: dict[str, Outbound] = {}
_registry_lock = threading.Lock()


class ServiceUnavailable(ClinhubError):
    """An outside service failed or its circuit breaker is open."""

    http_status = 503
    code = "transient"


class TransientHTTPError(Exception):
    """A response worth retrying: 429, 502, 503, 504."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


TRANSIENT_STATUS = frozenset({429, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError | TransientHTTPError | TimeoutError | ConnectionError)


class _StateListener(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, old_state, new_state) -> None:
        BREAKER_STATE.labels(cb.name).set(1 if new_state.name == pybreaker.STATE_OPEN else 0)
        log.warning("circuit breaker %s: %s -> %s", cb.name, old_state.name, new_state.name)


class Outbound:
    """Retry plus circuit breaker for one named outside service."""

    def __init__(
        self,
        name: str,
        *,
        fail_max: int = 5,
        reset_timeout: float = 30.0,
        attempts: int = 3,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        transient: Callable[[BaseException], bool] = is_transient,
    ) -> None:
        self.name = name
        self.attempts = attempts
        self.transient = transient
        self._wait = wait_exponential_jitter(
            multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial
        )
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            name=name,
            listeners=[_StateListener()],
            # a non-transient error (a 404, a validation failure) says nothing about the service's health
            exclude=[lambda exc: not transient(exc)],
        )

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `func` with retries, through the breaker; raise ServiceUnavailable when it gives up."""
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            retry=retry_if_exception(
                lambda exc: self.transient(exc) and not isinstance(exc, pybreaker.CircuitBreakerError)
            ),
            before_sleep=lambda _state: RETRIES.labels(self.name).inc(),
            reraise=True,
        )
        try:
            return retrying(self.breaker.call, func, *args, **kwargs)
        except pybreaker.CircuitBreakerError:
            raise ServiceUnavailable(f"{self.name} is unavailable (circuit open); retry later") from None
        except Exception as exc:
            if not self.transient(exc):
                raise
            OUTBOUND_FAILURES.labels(self.name).inc()
            raise ServiceUnavailable(
                f"{self.name} failed after {self.attempts} attempts ({type(exc).__name__})"
            ) from None

    def state(self) -> dict:
        return {
            "state": self.breaker.current_state,
            "failures": self.breaker.fail_counter,
            "fail_max": self.breaker.fail_max,
            "reset_timeout": self.breaker.reset_timeout,
        }


def outbound(name: str, **options: Any) -> Outbound:
    """The process-wide Outbound for `name` (created on first use with `options`)."""
    with _registry_lock:
        if name not in _registry:
            _registry[name] = Outbound(name, **options)
        return _registry[name]


def breaker_states() -> dict[str, dict]:
    with _registry_lock:
        return {name: item.state() for name, item in sorted(_registry.items())}


class ResilientHTTP:
    """An httpx client whose every request goes through an Outbound (retry + breaker)."""

    def __init__(
        self,
        name: str,
        base_url: str = "",
        *,
        timeout: float = 10.0,
        headers: dict | None = None,
        **options: Any,
    ) -> None:
        self.outbound = outbound(name, **options)
        self.client = httpx.Client(base_url=base_url, timeout=timeout, headers=headers)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        def send() -> httpx.Response:
            response = self.client.request(method, url, **kwargs)
            if response.status_code in TRANSIENT_STATUS:
                raise TransientHTTPError(response.status_code)
            return response

        return self.outbound.call(send)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self.client.close()
