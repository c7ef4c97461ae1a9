"""The mentor tests' stand-in for an LLM server: a small, real OpenAI-compatible HTTP server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def answer_for(messages: list[dict]) -> str:
    """What the fake server answers: derived from the last user message, so a test can check it."""
    last = next(m["content"] for m in reversed(messages) if m.get("role") == "user")
    return f"You said: {last.upper()}"


class FakeLLM:
    """An OpenAI-compatible /v1/chat/completions that can fail, refuse, or talk nonsense on demand."""

    def __init__(self) -> None:
        self.hits = 0
        self.fail_next = 0  # answer 503 to the next N requests
        self.failing = False  # answer 503 to every request
        self.mode = "ok"  # "ok" | "unauthorized" | "forbidden" | "garbage" | "nochoices" | "notfound"
        self.stream_mode = "ok"  # "ok" | "truncate" | "badchunk"
        self.authorizations: list[str | None] = []
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.hits += 1
                outer.authorizations.append(self.headers.get("Authorization"))
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                outer.bodies.append(body)
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "no such route"}})
                if outer.failing or outer.fail_next > 0:
                    outer.fail_next = max(0, outer.fail_next - 1)
                    return self._send(503, {"error": {"message": "loading model"}})
                if outer.mode in ("unauthorized", "forbidden"):
                    status = 401 if outer.mode == "unauthorized" else 403
                    return self._send(status, {"error": {"message": "invalid api key"}})
                if outer.mode == "notfound":
                    return self._send(404, {"error": {"message": "model not found"}})
                if outer.mode == "garbage":
                    return self._send_raw(200, b"<html>oops</html>", "text/html")
                if outer.mode == "nochoices":
                    return self._send(200, {"id": "x", "object": "chat.completion", "choices": []})
                text = answer_for(body["messages"])
                if body.get("stream"):
                    return self._stream(body, text)
                words = len(text.split())
                self._send(
                    200,
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "model": body["model"] + "-served",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 7, "completion_tokens": words, "total_tokens": 7 + words},
                    },
                )

            def _stream(self, body: dict, text: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                pieces = [word + " " for word in text.split(" ")]
                pieces[-1] = pieces[-1].rstrip()
                if outer.stream_mode == "truncate":
                    pieces = pieces[:2]
                self._event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
                self.wfile.write(b": keep-alive\n\n")
                for number, piece in enumerate(pieces):
                    if outer.stream_mode == "badchunk" and number == 1:
                        self.wfile.write(b"data: {not json\n\n")
                        self.wfile.flush()
                        return
                    self._event(
                        {
                            "model": body["model"] + "-served",
                            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                        }
                    )
                if outer.stream_mode == "truncate":
                    return
                self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                self._event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _event(self, payload: dict) -> None:
                self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
                self.wfile.flush()

            def _send(self, status: int, payload: dict) -> None:
                self._send_raw(status, json.dumps(payload).encode(), "application/json")

            def _send_raw(self, status: int, raw: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    answer_for = staticmethod(answer_for)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def llm():
    server = FakeLLM()
    yield server
    server.close()


@pytest.fixture(scope="session")
def embeddings_dir(tmp_path_factory):
    """One folder for the training set's embeddings across the session: embedded once, then read."""
    return tmp_path_factory.mktemp("mentor-embeddings")


@pytest.fixture(scope="session", autouse=True)
def trained_model(embeddings_dir):
    """The process's resonance model, trained once for every mentor test (engine and API included)."""
    from clinhub.mentor import resonance

    return resonance.shared_model(embeddings_dir)
