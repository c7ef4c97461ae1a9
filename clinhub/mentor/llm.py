"""The mentor's LLM backend: a client for any OpenAI-compatible chat-completions server.

`OpenAICompatibleChat` POSTs to `{base_url}/chat/completions` (llama.cpp, vLLM, Ollama's /v1, LM Studio,
OpenAI itself ...) through the platform's retry and circuit breaker (`Outbound`, breaker "mentor-llm", so
its state shows in /health). Messages may carry health data and the API key is a secret: neither is ever
put into an exception message or a log line; errors name the server by host:port only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pybreaker

from clinhub.errors import ClinhubError, ConfigError
from clinhub.platform.resilience import Outbound, ServiceUnavailable, TransientHTTPError, outbound

if TYPE_CHECKING:
    from clinhub.config import Settings

log = logging.getLogger("clinhub.mentor.llm")

BREAKER_NAME = "mentor-llm"
_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


class LLMKeyRefused(ClinhubError):
    """The LLM server answered 401/403: it refused our API key (or wants one and got none)."""

    http_status = 502
    code = "security"


class LLMRequestRejected(ClinhubError):
    """The LLM server rejected the request itself (another 4xx: unknown model, context too long ...)."""

    http_status = 502
    code = "exception"


@dataclass(frozen=True)
class ChatResult:
    """One complete answer. `usage` holds the token counts the server reported (possibly none)."""

    content: str
    model: str
    finish_reason: str | None
    usage: dict = field(default_factory=dict)
    seconds: float = 0.0


def _host_port(base_url: str) -> str:
    """host:port of a URL, without user info, path or query (safe to show and log)."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return f"{host}:{port}"


def _cause(exc: BaseException | None) -> str:
    """A short, secret-free description of why one attempt failed."""
    if exc is None:
        return "no answer"
    if isinstance(exc, TransientHTTPError):
        return f"HTTP {exc.status}"
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timed out"
    if isinstance(exc, httpx.ConnectError | ConnectionError):
        return "cannot connect"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection dropped"
    return type(exc).__name__


def _usage(body: dict) -> dict:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return {}
    return {key: usage[key] for key in _USAGE_KEYS if isinstance(usage.get(key), int)}


class ChatStream:
    """The pieces of a streamed answer, in order; an iterator that closes its connection when done.

    After iteration, `model`, `finish_reason` and `usage` hold what the server reported. Use it as a
    context manager (or call `close()`) when you may stop before the end.
    """

    def __init__(self, chat: OpenAICompatibleChat, response: httpx.Response, started: float) -> None:
        self._chat = chat
        self._response = response
        self._started = started
        self.model: str = chat.model
        self.finish_reason: str | None = None
        self.usage: dict = {}
        self.seconds: float = 0.0
        self._pieces = self._read()

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # best effort, also while the interpreter shuts down
            self.close()

    def close(self) -> None:
        self._pieces.close()
        self._response.close()

    def _read(self) -> Iterator[str]:
        chat = self._chat
        try:
            content_type = self._response.headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                # a server that ignored "stream": true and answered one JSON completion
                result = chat._parse_completion(self._response.read(), self._started)
                self.model, self.finish_reason, self.usage = result.model, result.finish_reason, result.usage
                if result.content:
                    yield result.content
                return
            done = False
            for line in self._response.iter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, ": keep-alive" comments, "event:" / "id:" fields
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                piece = self._chunk(data)
                if piece:
                    yield piece
            if not done and self.finish_reason is None:
                raise chat._unavailable("the answer stream ended early")
        except httpx.HTTPError as exc:  # not retried: pieces may already be out
            raise chat._unavailable(f"the answer stream broke off ({_cause(exc)})") from None
        finally:
            self.seconds = time.monotonic() - self._started
            self._response.close()
        log.info(
            "LLM stream from %s: model=%s finish=%s %.2fs",
            chat.host,
            self.model,
            self.finish_reason,
            self.seconds,
        )

    def _chunk(self, data: str) -> str | None:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise self._chat._malformed("a stream event is not JSON") from None
        if not isinstance(chunk, dict):
            raise self._chat._malformed("a stream event is not an object")
        if "error" in chunk:
            raise self._chat._unavailable("the server reported an error in the stream")
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        self.usage = _usage(chunk) or self.usage
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise self._chat._malformed("a stream event has no choices")
        if not choices:
            return None  # e.g. the closing usage-only chunk
        choice = choices[0]
        if not isinstance(choice, dict):
            raise self._chat._malformed("a stream choice is not an object")
        if choice.get("finish_reason") is not None:
            self.finish_reason = str(choice["finish_reason"])
        delta = choice.get("delta") or {}
        content = delta.get("content") if isinstance(delta, dict) else None
        return content if isinstance(content, str) else None


class OpenAICompatibleChat:
    """Chat completions from one OpenAI-compatible server, with retries and a circuit breaker.

    `base_url` is the API root, usually ending in "/v1" (a trailing "/" does not matter). The retry and
    breaker options apply when the breaker `name` is first used in this process (breakers are
    process-wide, see `clinhub.platform.resilience.outbound`).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        *,
        name: str = BREAKER_NAME,
        attempts: int = 3,
        fail_max: int = 5,
        reset_timeout: float = 30.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 5.0,
        connect_timeout: float | None = None,
    ) -> None:
        parts = urlsplit(base_url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("the mentor LLM base URL must be an http(s) URL with a host")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.host = _host_port(base_url)
        self.model = model
        self.timeout = timeout
        self.outbound: Outbound = outbound(
            name,
            attempts=attempts,
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, connect_timeout or 10.0)),
            headers=headers,
        )

    def __enter__(self) -> OpenAICompatibleChat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAICompatibleChat(host={self.host!r}, model={self.model!r})"

    def close(self) -> None:
        self.http.close()

    @property
    def breaker_state(self) -> str:
        return self.outbound.breaker.current_state

    # --- errors -----------------------------------------------------------------------------------

    def _unavailable(self, cause: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"the LLM server at {self.host} is unavailable: {cause}",
            detail={"host": self.host, "breaker": self.breaker_state},
        )

    def _malformed(self, what: str) -> ServiceUnavailable:
        return self._unavailable(f"malformed response ({what})")

    # --- requests ---------------------------------------------------------------------------------

    def _payload(
        self, messages: list[dict], temperature: float | None, max_tokens: int | None, stream: bool
    ) -> dict:
        payload: dict[str, Any] = {"model": self.model, "messages": messages, "stream": stream}
        if temperature is not None:
            payload["temperature"] = temperature
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        return payload

    def _open(self, payload: dict, *, stream: bool) -> httpx.Response:
        """Send with retries through the breaker; the answer's status is checked, its body not yet read."""
        last: list[BaseException | None] = [None]
        tries = [0]

        def attempt() -> httpx.Response:
            tries[0] += 1
            try:
                request = self.http.build_request("POST", self.url, json=payload)
                response = self.http.send(request, stream=stream)
            except Exception as exc:
                last[0] = exc
                raise
            if response.status_code == 429 or response.status_code >= 500:
                response.close()
                last[0] = TransientHTTPError(response.status_code)
                raise last[0]
            return response

        try:
            response = self.outbound.call(attempt)
        except ServiceUnavailable:
            if tries[0] == 0:
                cause = "circuit open after repeated failures; retry later"
            else:
                cause = f"{_cause(last[0])} after {tries[0]} attempt{'s' if tries[0] > 1 else ''}"
                if self.breaker_state == pybreaker.STATE_OPEN:
                    cause += " (circuit now open)"
            log.warning("LLM server %s unavailable: %s", self.host, cause)
            raise self._unavailable(cause) from None
        except httpx.HTTPError as exc:  # a non-transient httpx failure (bad URL, decoding ...)
            raise self._unavailable(_cause(exc)) from None
        if response.status_code in (401, 403):
            response.close()
            log.warning("LLM server %s refused the API key (HTTP %s)", self.host, response.status_code)
            raise LLMKeyRefused(
                f"the LLM server at {self.host} refused the API key (HTTP {response.status_code}); "
                "check CLINHUB_MENTOR_LLM_API_KEY",
                detail={"host": self.host, "status": response.status_code},
            )
        if response.status_code >= 400:
            response.close()
            log.warning("LLM server %s rejected a request (HTTP %s)", self.host, response.status_code)
            raise LLMRequestRejected(
                f"the LLM server at {self.host} rejected the request (HTTP {response.status_code}); "
                f"check the model name ({self.model!r}) and the request size",
                detail={"host": self.host, "status": response.status_code},
            )
        return response

    def _parse_completion(self, raw: bytes, started: float) -> ChatResult:
        try:
            body = json.loads(raw)
        except ValueError:
            raise self._malformed("not JSON") from None
        if not isinstance(body, dict):
            raise self._malformed("not a JSON object")
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._malformed("no choices")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise self._malformed("no message")
        content = message.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise self._malformed("the content is not text")
        finish = choice.get("finish_reason")
        return ChatResult(
            content=content,
            model=body["model"] if isinstance(body.get("model"), str) else self.model,
            finish_reason=None if finish is None else str(finish),
            usage=_usage(body),
            seconds=time.monotonic() - started,
        )

    def complete(
        self, messages: list[dict], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> ChatResult:
        """One whole answer to `messages` (OpenAI chat format: [{"role": ..., "content": ...}, ...])."""
        started = time.monotonic()
        response = self._open(self._payload(messages, temperature, max_tokens, False), stream=False)
        try:
            result = self._parse_completion(response.content, started)
        finally:
            response.close()
        log.info(
            "LLM answer from %s: model=%s finish=%s tokens=%s %.2fs",
            self.host,
            result.model,
            result.finish_reason,
            result.usage.get("total_tokens"),
            result.seconds,
        )
        return result

    def stream(
        self, messages: list[dict], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> ChatStream:
        """The answer as it is generated, piece by piece (Server-Sent Events until "data: [DONE]").

        The request is sent (and retried) here, before this returns: refusals and an unavailable server
        raise at once. A failure after that, mid-answer, is not retried; it raises ServiceUnavailable from
        the iteration.
        """
        started = time.monotonic()
        response = self._open(self._payload(messages, temperature, max_tokens, True), stream=True)
        return ChatStream(self, response, started)


def backend_from_settings(settings: Settings) -> OpenAICompatibleChat | None:
    """The configured LLM backend, or None when `mentor_llm_base_url` is unset (templated answers)."""
    if not settings.mentor_llm_base_url:
        return None
    key = settings.mentor_llm_api_key.get_secret_value() if settings.mentor_llm_api_key else None
    return OpenAICompatibleChat(
        settings.mentor_llm_base_url,
        settings.mentor_llm_model,
        key or None,
        settings.mentor_llm_timeout_seconds,
    )


def describe(backend: OpenAICompatibleChat | None) -> dict:
    """What /mentor/v2/status shows about the backend: no credentials, no path, just host:port."""
    if backend is None:
        return {"configured": False, "base_url": None, "model": None, "breaker": None}
    return {
        "configured": True,
        "base_url": backend.host,
        "model": backend.model,
        "breaker": backend.breaker_state,
    }


__all__ = [
    "BREAKER_NAME",
    "ChatResult",
    "ChatStream",
    "LLMKeyRefused",
    "LLMRequestRejected",
    "OpenAICompatibleChat",
    "backend_from_settings",
    "describe",
]
