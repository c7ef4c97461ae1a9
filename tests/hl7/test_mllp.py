"""The MLLP listener over a real socket: framing, partial reads, big and bad frames, idle timeout, TLS,
fuzzing, and a listener killed mid-feed losing no acknowledged message."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from clinhub.config import Settings
from clinhub.hl7 import messages, parse
from clinhub.hl7.mllp import FrameReader, MLLPServer, frame, send_messages, server_ssl_context
from clinhub.hub import Hub
from clinhub.store.schema import hl7_message

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"


def adt(control_id: str, extra: str = "") -> bytes:
    return (
        f"MSH|^~\\&|EPIC|NORTH|HUB|HOSP|20260301101500||ADT^A04^ADT_A01|{control_id}|P|2.5.1\r"
        f"PID|1||{control_id}^^^NORTH^MR||DOE^JANE||19800101|F{extra}"
    ).encode()


@dataclass
class Running:
    hub: Hub
    server: MLLPServer
    loop: asyncio.AbstractEventLoop

    @property
    def port(self) -> int:
        return self.server.port

    def stored(self) -> int:
        with self.hub.store.connect() as conn:
            return conn.execute(select(func.count()).select_from(hl7_message)).scalar_one()


def _start(hub: Hub, **options) -> tuple[Running, threading.Thread]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        holder["server"] = loop.run_until_complete(MLLPServer(hub, port=0, **options).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    return Running(hub, holder["server"], loop), thread


def _stop(running: Running, thread: threading.Thread) -> None:
    asyncio.run_coroutine_threadsafe(running.server.stop(), running.loop).result(20)
    running.loop.call_soon_threadsafe(running.loop.stop)
    thread.join(10)


@pytest.fixture
def listener(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    options = getattr(request, "param", {})
    with Hub(Settings(data_dir=tmp_path, _env_file=None)) as hub:
        hub.migrate()
        running, thread = _start(hub, process=False, **options)
        try:
            yield running
        finally:
            _stop(running, thread)


def _exchange(port: int, payload: bytes, replies: int, timeout: float = 10.0) -> list[bytes]:
    """Send raw bytes, read `replies` framed answers (fewer if the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        return _read_frames(sock, replies)


def _read_frames(sock: socket.socket, replies: int) -> list[bytes]:
    reader = FrameReader()
    got: list[bytes] = []
    while len(got) < replies:
        data = sock.recv(65536)
        if not data:
            break
        got.extend(reader.feed(data))
    return got


def _code(reply: bytes) -> str:
    return parse(reply).get("MSA-1")


def test_frame_reader_handles_partial_multiple_and_junk() -> None:
    reader = FrameReader(max_bytes=100)
    assert reader.feed(b"junk" + VT + b"MSH|a") == [] and reader.partial
    assert reader.feed(b"bc" + FS) == [b"MSH|abc"]
    assert reader.feed(CR + VT + b"one" + FS + CR + VT + b"two" + FS + CR) == [b"one", b"two"]
    assert reader.skipped == 4 and not reader.partial
    assert reader.feed(VT + b"ok" + FS + VT + b"x" * 101) == [b"ok"]
    assert reader.overflow == "message longer than 100 bytes"
    assert reader.feed(VT + b"more" + FS) == []  # nothing after an overflow


@given(st.lists(st.binary(max_size=300), max_size=20))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_frame_reader_fuzz_never_fails_otherwise(chunks: list[bytes]) -> None:
    reader = FrameReader(max_bytes=1000)
    for chunk in chunks:
        frames = reader.feed(chunk)
        assert all(FS not in f and len(f) <= 1000 for f in frames)


def test_acks_after_commit_over_a_socket_with_byte_by_byte_writes(listener: Running) -> None:
    with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as sock:
        for byte in frame(adt("B1")):
            sock.sendall(bytes([byte]))
        reply = _read_frames(sock, 1)[0]
    assert _code(reply) == "AA" and parse(reply).get("MSA-2") == "B1"
    assert listener.stored() == 1


def test_several_frames_in_one_write_get_acks_in_order(listener: Running) -> None:
    payload = b"".join(frame(adt(f"P{i}")) for i in range(50))
    replies = _exchange(listener.port, payload, 50)
    assert [parse(r).get("MSA-2") for r in replies] == [f"P{i}" for i in range(50)]
    assert {_code(r) for r in replies} == {"AA"} and listener.stored() == 50


def test_a_message_over_one_megabyte_is_stored(listener: Running) -> None:
    note = "\rNTE|1||" + "x" * (2 * 1024 * 1024)
    reply = _exchange(listener.port, frame(adt("BIG", note)), 1)
    assert _code(reply[0]) == "AA"
    found = messages.search(listener.hub.store, messages.MessageFilter(control_id="BIG"))["messages"]
    assert len(messages.get_message(listener.hub.store, found[0]["id"])["raw"]) > 2 * 1024 * 1024


@pytest.mark.parametrize("listener", [{"max_message_bytes": 10_000}], indirect=True)
def test_an_oversized_frame_gets_an_ar_and_a_close(listener: Running) -> None:
    replies = _exchange(listener.port, frame(adt("OK")) + VT + b"MSH|" + b"y" * 20_000, 3)
    assert [_code(r) for r in replies] == ["AA", "AR"]
    assert "longer than 10000 bytes" in replies[1].decode()


def test_garbage_gets_a_nak_and_the_listener_lives_on(listener: Running) -> None:
    replies = _exchange(listener.port, b"hello" + frame(b"not hl7 at all") + frame(b"MSH|^~\\&|bad"), 2)
    assert [_code(r) for r in replies] == ["AR", "AR"]
    assert _code(_exchange(listener.port, frame(adt("AFTER")), 1)[0]) == "AA"


@pytest.mark.parametrize("listener", [{"idle_timeout": 0.5}], indirect=True)
def test_an_idle_connection_is_closed(listener: Running) -> None:
    with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as sock:
        sock.sendall(VT + b"MSH|half a frame")
        start = time.monotonic()
        assert sock.recv(100) == b""  # closed by the server, not by our timeout
        assert time.monotonic() - start < 5


@given(st.binary(max_size=2000))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_frames_get_an_answer_never_a_crash(listener: Running, body: bytes) -> None:
    body = body.replace(FS, b"").replace(VT, b"")
    with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as sock:
        sock.sendall(frame(body))
        replies = _read_frames(sock, 1)
    assert len(replies) == 1 and _code(replies[0]) in ("AA", "AR")


def test_concurrent_connections_and_windows(listener: Running) -> None:
    bodies = [adt(f"W{i}") for i in range(400)]
    result = asyncio.run(send_messages("127.0.0.1", listener.port, bodies, concurrency=8, window=10))
    assert result.sent == 400 and result.codes == {"AA": 400} and result.failed == 0
    again = asyncio.run(send_messages("127.0.0.1", listener.port, bodies[:50], concurrency=2))
    assert again.codes == {"AA": 50}  # repeats are acknowledged again...
    assert listener.stored() == 400  # ...and not stored twice


def test_tls(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    import ssl

    with Hub(Settings(data_dir=tmp_path / "d", _env_file=None)) as hub:
        hub.migrate()
        running, thread = _start(hub, process=False, ssl_context=server_ssl_context(cert, key))
        try:
            client = ssl.create_default_context(cafile=str(cert))
            result = asyncio.run(send_messages("127.0.0.1", running.port, [adt("T1")], ssl_context=client))
            assert result.codes == {"AA": 1}
            plain = asyncio.run(send_messages("127.0.0.1", running.port, [adt("T2")], timeout=3))
            assert plain.failed == 1 and running.stored() == 1
        finally:
            _stop(running, thread)
    with pytest.raises(Exception, match="both a certificate and a key"):
        server_ssl_context(cert, None)


def _listen(tmp_path: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINHUB_")}
    env.update({"CLINHUB_DATA_DIR": str(tmp_path / "data"), "CLINHUB_LOG_FORMAT": "console"})
    process = subprocess.Popen(
        [sys.executable, "-m", "clinhub", "hl7", "listen", "--port", str(port), "--no-mapping"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("the listener did not start")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_killed_listener_loses_no_acknowledged_message(tmp_path: Path) -> None:
    """10,000 messages; the listener is SIGKILLed midway and restarted; every message acknowledged
    before the kill is stored, and sending everything again stores no duplicates."""
    total = 10_000
    bodies = [adt(f"K{i:05d}") for i in range(total)]
    port = _free_port()
    process = _listen(tmp_path, port)
    acked: list[str] = []

    def feed() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            reader = FrameReader()
            window = 20
            sent = 0
            try:
                while len(acked) < total:
                    while sent < total and sent - len(acked) < window:
                        sock.sendall(frame(bodies[sent]))
                        sent += 1
                    data = sock.recv(65536)
                    if not data:
                        return
                    for reply in reader.feed(data):
                        assert _code(reply) == "AA"
                        acked.append(parse(reply).get("MSA-2"))
            except OSError:
                return

    sender = threading.Thread(target=feed)
    sender.start()
    deadline = time.monotonic() + 60
    while len(acked) < total // 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    sender.join(30)
    assert 0 < len(acked) < total, "the kill should land midway"

    settings_ = Settings(data_dir=tmp_path / "data", _env_file=None)
    with Hub(settings_) as hub:
        with hub.store.connect() as conn:
            stored = set(conn.execute(select(hl7_message.c.control_id)).scalars())
        assert set(acked) <= stored  # every ACK was sent after its commit

        process = _listen(tmp_path, port)
        try:
            result = asyncio.run(send_messages("127.0.0.1", port, bodies, concurrency=4, window=20))
        finally:
            process.terminate()
            process.wait(10)
        assert result.codes == {"AA": total}
        with hub.store.connect() as conn:
            rows = conn.execute(select(func.count(), func.count(hl7_message.c.control_id.distinct()))).one()
        assert tuple(rows) == (total, total)


def test_the_listener_maps_behind_its_acks_in_a_process_of_its_own(tmp_path: Path) -> None:
    with Hub(Settings(data_dir=tmp_path, _env_file=None)) as hub:
        hub.migrate()
        running, thread = _start(hub, process=True, process_interval=0.1)
        try:
            result = asyncio.run(send_messages("127.0.0.1", running.port, [adt(f"M{i}") for i in range(5)]))
            assert result.codes == {"AA": 5}
            assert running.server._mapper is not None and running.server._mapper.is_alive()
            deadline = time.monotonic() + 60
            while messages.pending_count(hub.store) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert messages.counts(hub.store) == {"processed": 5}
        finally:
            _stop(running, thread)
        assert not running.server._mapper.is_alive()  # stopped with the listener
