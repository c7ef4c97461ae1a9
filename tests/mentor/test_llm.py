"""The mentor's LLM client against a small, real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clinhub.config import Settings
from clinhub.errors import ClinhubError, ConfigError
from clinhub.mentor.llm import (
    ChatResult,
    LLMKeyRefused,
    LLMRequestRejected,
    OpenAICompatibleChat,
    backend_from_settings,
    describe,
)
from clinhub.platform.resilience import ServiceUnavailable, breaker_states

KEY = "sk-test-" + "s3cr3t" * 4
SECRET_TEXT = "my glucose was 312 this morning"


def make_chat(base_url: str, **options) -> OpenAICompatibleChat:
    """A client with its own breaker (a unique name) and tiny waits, so tests stay fast and independent."""
    settings = {
        "name": f"mentor-llm-test-{uuid.uuid4().hex[:8]}",
        "attempts": 3,
        "backoff_initial": 0.01,
        "backoff_max": 0.02,
        "timeout": 2.0,
    }
    settings.update(options)
    return OpenAICompatibleChat(base_url, "tiny", KEY, **settings)


def ask(text: str = SECRET_TEXT) -> list[dict]:
    return [
        {"role": "system", "content": "You are a careful mentor."},
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": text},
    ]


def assert_safe(exc: BaseException) -> None:
    """No exception text (or its detail) ever carries the key or what the user wrote."""
    text = f"{exc} {exc!r} {getattr(exc, 'detail', '')}"
    assert KEY not in text and "s3cr3t" not in text
    assert SECRET_TEXT not in text and "glucose" not in text
    assert exc.__cause__ is None


def test_complete_returns_content_usage_and_model(llm) -> None:
    with make_chat(llm.base_url) as chat:
        result = chat.complete(ask("how is my sleep?"), temperature=0.2, max_tokens=64)
    assert isinstance(result, ChatResult)
    assert result.content == "You said: HOW IS MY SLEEP?"
    assert result.model == "tiny-served"
    assert result.finish_reason == "stop"
    assert result.usage == {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}
    assert 0 <= result.seconds < 2
    sent = llm.bodies[-1]
    assert sent["model"] == "tiny" and sent["stream"] is False
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 64
    assert sent["messages"] == ask("how is my sleep?")


def test_optional_parameters_are_left_out_and_trailing_slash_is_fine(llm) -> None:
    with make_chat(llm.base_url + "/") as chat:
        assert chat.complete(ask("hi")).content == "You said: HI"
    assert llm.hits == 1
    assert "temperature" not in llm.bodies[-1] and "max_tokens" not in llm.bodies[-1]


def test_stream_yields_pieces_in_order(llm) -> None:
    with make_chat(llm.base_url) as chat:
        stream = chat.stream(ask("walk more every day"), temperature=0.5)
        pieces = list(stream)
        full = chat.complete(ask("walk more every day")).content
    assert pieces == ["You ", "said: ", "WALK ", "MORE ", "EVERY ", "DAY"]
    assert "".join(pieces) == full
    assert llm.bodies[0]["stream"] is True and llm.bodies[0]["temperature"] == 0.5
    assert stream.finish_reason == "stop"
    assert stream.model == "tiny-served"
    assert stream.usage == {"prompt_tokens": 7, "completion_tokens": 3}


def test_stream_can_be_abandoned_early(llm) -> None:
    with make_chat(llm.base_url) as chat:
        with chat.stream(ask("one two three")) as stream:
            assert next(stream) == "You "
        assert chat.complete(ask("again")).content == "You said: AGAIN"


def test_stream_retries_before_the_first_piece(llm) -> None:
    llm.fail_next = 2
    with make_chat(llm.base_url) as chat:
        assert "".join(chat.stream(ask("ok"))) == "You said: OK"
    assert llm.hits == 3


def test_stream_broken_midway_is_unavailable_and_not_retried(llm) -> None:
    llm.stream_mode = "truncate"
    with make_chat(llm.base_url) as chat:
        stream = chat.stream(ask("a b c d e"))
        got = []
        with pytest.raises(ServiceUnavailable, match="ended early") as caught:
            for piece in stream:
                got.append(piece)
    assert got == ["You ", "said: "]
    assert llm.hits == 1
    assert_safe(caught.value)


def test_stream_with_a_bad_event_is_malformed(llm) -> None:
    llm.stream_mode = "badchunk"
    with make_chat(llm.base_url) as chat, pytest.raises(ServiceUnavailable, match="malformed response"):
        list(chat.stream(ask()))


def test_bearer_key_is_sent_and_never_in_errors(llm, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with make_chat(llm.base_url) as chat:
        chat.complete(ask())
        assert llm.authorizations == [f"Bearer {KEY}"]
        assert KEY not in repr(chat)
        for mode, error in [
            ("unauthorized", LLMKeyRefused),
            ("forbidden", LLMKeyRefused),
            ("garbage", ServiceUnavailable),
            ("notfound", LLMRequestRejected),
        ]:
            llm.mode = mode
            with pytest.raises(error) as caught:
                chat.complete(ask())
            assert_safe(caught.value)
        llm.mode, llm.failing = "ok", True
        with pytest.raises(ServiceUnavailable) as caught:
            chat.complete(ask())
        assert_safe(caught.value)
    assert KEY not in caplog.text and "glucose" not in caplog.text


def test_no_key_means_no_authorization_header(llm) -> None:
    chat = OpenAICompatibleChat(llm.base_url, "tiny", None, name=f"t-{uuid.uuid4().hex[:8]}")
    chat.complete(ask())
    chat.close()
    assert llm.authorizations == [None]


def test_transient_failures_are_retried(llm) -> None:
    llm.fail_next = 2
    with make_chat(llm.base_url, attempts=3) as chat:
        assert chat.complete(ask("retry")).content == "You said: RETRY"
        assert chat.breaker_state == "closed"
    assert llm.hits == 3


def test_persistent_failure_opens_the_breaker_and_then_fails_fast(llm) -> None:
    llm.failing = True
    with make_chat(llm.base_url, attempts=2, fail_max=4, reset_timeout=30) as chat:
        with pytest.raises(ServiceUnavailable, match=r"at 127\.0\.0\.1:\d+ is unavailable: HTTP 503 after 2"):
            chat.complete(ask())
        assert llm.hits == 2
        assert describe(chat)["breaker"] == "closed"
        with pytest.raises(ServiceUnavailable, match="circuit now open") as caught:
            chat.complete(ask())
        assert llm.hits == 4
        assert chat.breaker_state == "open"
        assert breaker_states()[chat.outbound.name]["state"] == "open"
        assert_safe(caught.value)
        llm.failing = False  # even a recovered server is not called while the breaker is open
        started = time.monotonic()
        for call in (chat.complete, chat.stream):
            with pytest.raises(ServiceUnavailable, match="circuit open") as caught:
                call(ask())
            assert caught.value.http_status == 503
        assert time.monotonic() - started < 0.5
        assert llm.hits == 4
        assert describe(chat)["breaker"] == "open"


def test_breaker_closes_again_after_a_good_probe(llm) -> None:
    llm.failing = True
    with make_chat(llm.base_url, attempts=1, fail_max=2, reset_timeout=0.2) as chat:
        for _ in range(2):
            with pytest.raises(ServiceUnavailable):
                chat.complete(ask())
        assert chat.breaker_state == "open"
        llm.failing = False
        time.sleep(0.25)
        assert chat.complete(ask("back")).content == "You said: BACK"
        assert chat.breaker_state == "closed"


def test_refused_key_is_its_own_error_and_not_retried(llm) -> None:
    llm.mode = "unauthorized"
    with make_chat(llm.base_url, fail_max=2) as chat:
        for _ in range(3):
            with pytest.raises(LLMKeyRefused, match="refused the API key") as caught:
                chat.complete(ask())
            assert isinstance(caught.value, ClinhubError)
            assert not isinstance(caught.value, ServiceUnavailable)
        with pytest.raises(LLMKeyRefused):
            chat.stream(ask())
        assert chat.breaker_state == "closed"  # a refusal says nothing about the server's health
    assert llm.hits == 4


@pytest.mark.parametrize("mode", ["garbage", "nochoices"])
def test_malformed_answer_is_unavailable(llm, mode: str) -> None:
    llm.mode = mode
    with make_chat(llm.base_url) as chat, pytest.raises(ServiceUnavailable, match="malformed response"):
        chat.complete(ask())
    assert llm.hits == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_is_unavailable() -> None:
    port = _free_port()
    with make_chat(f"http://127.0.0.1:{port}/v1", attempts=2, timeout=1.0) as chat:
        with pytest.raises(
            ServiceUnavailable, match=f"127.0.0.1:{port} is unavailable: cannot connect"
        ) as caught:
            chat.complete(ask())
        assert_safe(caught.value)
        with pytest.raises(ServiceUnavailable, match="cannot connect"):
            chat.stream(ask())


def test_timeout_is_unavailable() -> None:
    hold = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hold.wait(2)

        def log_message(self, *args) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        with (
            make_chat(url, attempts=1, timeout=0.2) as chat,
            pytest.raises(ServiceUnavailable, match="timed out"),
        ):
            chat.complete(ask())
    finally:
        hold.set()
        server.shutdown()
        server.server_close()


def test_backend_from_settings_and_describe(llm) -> None:
    assert backend_from_settings(Settings(_env_file=None, mentor_llm_base_url=None)) is None
    assert describe(None) == {"configured": False, "base_url": None, "model": None, "breaker": None}
    settings = Settings(
        _env_file=None,
        mentor_llm_base_url=llm.base_url,
        mentor_llm_model="qwen-small",
        mentor_llm_api_key=KEY,
        mentor_llm_timeout_seconds=5,
    )
    backend = backend_from_settings(settings)
    assert backend is not None
    try:
        assert backend.outbound.name == "mentor-llm"
        assert backend.model == "qwen-small" and backend.timeout == 5
        assert backend.complete(ask("hello")).content == "You said: HELLO"
        assert llm.authorizations[-1] == f"Bearer {KEY}"
        status = describe(backend)
        assert status["configured"] is True and status["model"] == "qwen-small"
        assert status["base_url"] == f"127.0.0.1:{llm.port}"
        assert status["breaker"] in ("closed", "open", "half-open")
    finally:
        backend.close()


def test_describe_shows_only_host_and_port() -> None:
    chat = OpenAICompatibleChat(
        "https://user:pw@llm.example.org/v1?token=abc", "m", name=f"t-{uuid.uuid4().hex[:8]}"
    )
    status = describe(chat)
    chat.close()
    assert status["base_url"] == "llm.example.org:443"
    assert "pw" not in json.dumps(status) and "abc" not in json.dumps(status)


def test_a_base_url_without_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        OpenAICompatibleChat("127.0.0.1:8080/v1", "m")
