"""MLLP over TCP (optionally TLS): the listener an EMR feed points at, and the client `clinhub hl7 send` uses.

Framing is VT (0x0B) message FS (0x1C) CR (0x0D). The server reads frames as they arrive (partial reads,
several frames in one read, frames over 1 MB), hands each to one committer that stores everything that
arrived meanwhile in one transaction (group commit), and writes each ACK only after that commit, in the
order the messages came. A sender may wait for each ACK (the usual original mode) or keep a window of
messages in flight; both get the same guarantee. Bad framing gets an AR NAK or a clean close, never a
crash; an idle connection is closed after `idle_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import ssl
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import Gauge, Histogram

from clinhub.config import Settings
from clinhub.errors import ConfigError, InvalidInput, StoreUnavailable
from clinhub.hl7 import messages
from clinhub.hl7.message import ack, nak_for_unparseable, parse, split_batch
from clinhub.hub import Hub
from clinhub.platform.logging import get_logger

log = get_logger("clinhub.mllp")

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
READ_SIZE = 256 * 1024

CONNECTIONS = Gauge("clinhub_mllp_connections", "Open MLLP connections")
QUEUE_DEPTH = Gauge("clinhub_hl7_commit_queue_depth", "Received HL7 messages waiting for their commit")
BACKLOG = Gauge("clinhub_hl7_mapping_backlog", "Stored HL7 messages not yet mapped to FHIR")
ACK_SECONDS = Histogram(
    "clinhub_hl7_ack_latency_seconds",
    "From the end of a received frame to its ACK being written",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def frame(message: str | bytes) -> bytes:
    """`message` wrapped in MLLP framing."""
    body = message.encode() if isinstance(message, str) else message
    return VT + body + FS + CR


class FrameReader:
    """Splits a byte stream into MLLP frames; bytes outside a frame are skipped and counted.

    A frame longer than `max_bytes` sets `overflow` (a one-line reason); the frames before it are
    still returned, and nothing more is read after it."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._after_frame = False  # a frame just ended: its CR may come in the next read
        self.skipped = 0
        self.overflow: str | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the frames they complete."""
        if self.overflow:
            return []
        self._buffer += data
        if self._after_frame and self._buffer[:1] == CR:
            del self._buffer[:1]
        self._after_frame = False
        frames = []
        while True:
            if not self._in_frame:
                start = self._buffer.find(VT)
                if start < 0:
                    self.skipped += len(self._buffer)
                    self._buffer.clear()
                    break
                self.skipped += start
                del self._buffer[: start + 1]
                self._in_frame = True
            end = self._buffer.find(FS)
            if (end < 0 and len(self._buffer) > self.max_bytes) or end > self.max_bytes:
                self.overflow = f"message longer than {self.max_bytes} bytes"
                self._buffer.clear()
                break
            if end < 0:
                break
            frames.append(bytes(self._buffer[:end]))
            cut = end + 1
            if self._buffer[cut : cut + 1] == CR:
                cut += 1
            elif cut == len(self._buffer):
                self._after_frame = True
            del self._buffer[:cut]
            self._in_frame = False
        return frames

    @property
    def partial(self) -> bool:
        """True when a frame has started and not ended."""
        return self._in_frame


@dataclass
class _Pending:
    data: bytes
    received_at: datetime
    started: float
    future: asyncio.Future = field(repr=False)


class Committer:
    """One writer per server: stores what arrived since its last commit in one transaction (group commit)
    in a worker thread, then resolves each message's future with its ACK."""

    def __init__(self, hub: Hub, channel: str, max_group: int = 500) -> None:
        self.hub = hub
        self.channel = channel
        self.max_group = max_group
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="hl7-committer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def submit(self, data: bytes) -> _Pending:
        future = asyncio.get_running_loop().create_future()
        item = _Pending(data, datetime.now(UTC), time.perf_counter(), future)
        self._queue.put_nowait(item)
        QUEUE_DEPTH.set(self._queue.qsize())
        return item

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = [await self._queue.get()]
            while len(group) < self.max_group and not self._queue.empty():
                group.append(self._queue.get_nowait())
            QUEUE_DEPTH.set(self._queue.qsize())
            try:
                results = await loop.run_in_executor(
                    None,
                    messages.accept,
                    self.hub.store,
                    [(p.data, p.received_at) for p in group],
                    self.channel,
                )
            except Exception as exc:
                # the store is down: nothing was committed, so nothing is acknowledged as accepted
                log.error("hl7 commit failed", error=type(exc).__name__, messages=len(group))
                for pending in group:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            for pending, result in zip(group, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)


class MLLPServer:
    """The MLLP listener. `await start()`, then `await stop()`; `port` holds the bound port."""

    def __init__(
        self,
        hub: Hub,
        host: str = "127.0.0.1",
        port: int = 2575,
        *,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float = 300.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel: str = "default",
        process: bool = True,
        process_interval: float = 0.2,
    ) -> None:
        self.hub = hub
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.idle_timeout = idle_timeout
        self.max_message_bytes = max_message_bytes
        self.committer = Committer(hub, channel)
        self.process = process
        self.process_interval = process_interval
        self._server: asyncio.Server | None = None
        self._processor: asyncio.Task | None = None
        self._mapper: multiprocessing.process.BaseProcess | None = None
        self._mapper_stop = None
        self._connections: set[asyncio.Task] = set()

    async def start(self) -> MLLPServer:
        self.committer.start()
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self.ssl_context, limit=READ_SIZE
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.process:
            # mapping is CPU-bound Python: in a process of its own it takes neither the GIL nor the event
            # loop from the listener, which only shares the store with it
            context = multiprocessing.get_context("spawn")
            self._mapper_stop = context.Event()
            self._mapper = context.Process(
                target=map_forever,
                args=(self.hub.settings, self._mapper_stop, self.process_interval),
                name="clinhub-hl7-mapper",
                daemon=True,
            )
            self._mapper.start()
        self._processor = asyncio.get_running_loop().create_task(self._watch_backlog(), name="hl7-backlog")
        log.info("mllp listening", host=self.host, port=self.port, tls=self.ssl_context is not None)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        await self.committer.stop()
        if self._processor is not None:
            self._processor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._processor
        if self._mapper is not None:
            self._mapper_stop.set()
            await asyncio.get_running_loop().run_in_executor(None, self._mapper.join, 30)
            if self._mapper.is_alive():
                self._mapper.terminate()
        log.info("mllp stopped", port=self.port)

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def _watch_backlog(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                BACKLOG.set(await loop.run_in_executor(None, messages.pending_count, self.hub.store))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("hl7 backlog unknown", error=type(exc).__name__)
            await asyncio.sleep(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        CONNECTIONS.inc()
        peer = writer.get_extra_info("peername")
        try:
            await self._connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the peer went away; whatever it was sent was acknowledged or not, never half
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must cost this connection, never the listener
            log.error("mllp connection failed", error=type(exc).__name__, peer=str(peer))
        finally:
            CONNECTIONS.dec()
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = FrameReader(self.max_message_bytes)
        acks: asyncio.Queue[_Pending | None] = asyncio.Queue()
        sender = asyncio.get_running_loop().create_task(self._send_acks(acks, writer))
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), self.idle_timeout)
                except TimeoutError:
                    break
                if not data:
                    break
                for body in frames.feed(data):
                    await acks.put(self.committer.submit(body))
                if frames.overflow:
                    await acks.put(None)  # the ACKs of the frames before it go first
                    await sender
                    writer.write(frame(nak_for_unparseable(b"", InvalidInput(frames.overflow))))
                    await writer.drain()
                    return
        finally:
            if not sender.done():
                await acks.put(None)
                with contextlib.suppress(Exception):
                    await sender

    async def _send_acks(self, acks: asyncio.Queue[_Pending | None], writer: asyncio.StreamWriter) -> None:
        while True:
            pending = await acks.get()
            if pending is None:
                return
            try:
                result = await pending.future
                reply = result.ack
            except Exception:
                # not stored: answer AE so the sender keeps the message and sends it again later
                reply = _not_stored(pending.data)
            writer.write(frame(reply.encode()))
            if acks.empty():
                await writer.drain()
            ACK_SECONDS.observe(time.perf_counter() - pending.started)


MAPPING_BATCH = 500  # messages per mapping transaction: short enough not to hold up the listener's commits


def map_forever(settings: Settings, stop: Any, interval: float = 0.2) -> None:
    """Map stored messages to FHIR until `stop` is set (the listener's mapper process runs this)."""
    with Hub(settings) as hub:
        while not stop.is_set():
            try:
                result = messages.process_pending(hub.store, MAPPING_BATCH)
            except Exception as exc:
                log.error("hl7 mapping pass failed", error=type(exc).__name__)
                stop.wait(max(interval, 1.0))
                continue
            if result.processed + result.errors == 0:
                stop.wait(interval)


def _not_stored(data: bytes) -> str:
    reason = StoreUnavailable("the message store is unavailable; send the message again later")
    try:
        return ack(parse(data), "AE", error=reason, error_code="207").encode()
    except Exception:
        return nak_for_unparseable(data, reason)


def server_ssl_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A TLS context for the listener from PEM files, or None without them."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("TLS needs both a certificate and a key file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate or key: {type(exc).__name__}") from None
    return context


# ------------------------------------------------------------------ client
@dataclass
class SendResult:
    sent: int = 0
    codes: Tally = field(default_factory=Tally)
    failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def percentile(self, share: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _ack_code(reply: bytes) -> str:
    try:
        return parse(reply).get("MSA-1") or "??"
    except Exception:
        return "??"


async def _send_over(
    host: str,
    port: int,
    batch: list[bytes],
    window: int,
    result: SendResult,
    progress: Callable[[int], None] | None,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ssl_context), timeout)
    frames = FrameReader()
    sent_at: deque[float] = deque()
    next_index = 0
    received = 0
    try:
        while received < len(batch):
            while next_index < len(batch) and len(sent_at) < window:
                writer.write(frame(batch[next_index]))
                sent_at.append(time.perf_counter())
                next_index += 1
            await writer.drain()
            data = await asyncio.wait_for(reader.read(READ_SIZE), timeout)
            if not data:
                raise ConnectionError("the server closed the connection")
            for reply in frames.feed(data):
                result.latencies.append(time.perf_counter() - sent_at.popleft())
                result.codes[_ack_code(reply)] += 1
                result.sent += 1
                received += 1
                if progress:
                    progress(1)
    except (OSError, TimeoutError, ConnectionError):
        result.failed += len(batch) - received
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def send_messages(
    host: str,
    port: int,
    bodies: list[bytes],
    *,
    concurrency: int = 1,
    window: int = 1,
    progress: Callable[[int], None] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 30.0,
) -> SendResult:
    """Send `bodies` over `concurrency` connections, each keeping up to `window` messages in flight
    (1: wait for each ACK, original mode); returns the ACK codes and latencies."""
    if concurrency < 1 or window < 1:
        raise InvalidInput("concurrency and window must be at least 1")
    result = SendResult()
    start = time.perf_counter()
    shares = [bodies[i::concurrency] for i in range(concurrency)]
    await asyncio.gather(
        *(
            _send_over(host, port, share, window, result, progress, ssl_context, timeout)
            for share in shares
            if share
        )
    )
    result.seconds = time.perf_counter() - start
    return result


def read_messages(path: Path) -> list[bytes]:
    """The messages of a file: one or many, batch-wrapped or not, with CR, LF or CRLF segment ends."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    return [text.encode() if isinstance(text, str) else text for text in split_batch(data)]
