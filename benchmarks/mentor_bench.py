"""Benchmark (issue #10): the mentor's speed and its inference's accuracy.

Measured in one run, on this machine:
1. routing + prompt building, per message (goal: P95 under 1 ms);
2. inference (embedding + classifiers) + routing + prompt building, one message at a time (goal: P95
   under 30 ms), against the keyword baseline doing the same;
3. bulk-process of 100 messages through the engine, keys inferred (goal: under 1 s);
4. POST /mentor/v2/process over real HTTP (uvicorn on loopback), the same question again and again so
   the answer cache hits, with N client threads: requests per second and latency percentiles;
5. accuracy of tone, pace and intent on the held-out set (tests/mentor/data/heldout.jsonl), inference
   against the keyword baseline.
There is no PyPI peer for persona routing; the baseline is the original's keyword approach.

Usage: python benchmarks/mentor_bench.py [--repeat 2000] [--http-seconds 10] [--threads 4]
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "tests" / "mentor" / "data" / "heldout.jsonl"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    return ", ".join(f"P{q} {pct(values, q) * 1000:.3f} ms" for q in (50, 95, 99))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=2000, help="messages timed in parts 1 and 2")
    parser.add_argument("--http-seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=4, help="HTTP client threads")
    args = parser.parse_args()

    from clinhub.platform.logging import configure

    configure(level="WARNING")  # one line per answer would drown the figures (and slow the loop)
    from clinhub.config import Settings
    from clinhub.hub import Hub
    from clinhub.mentor.engine import Ask, Mentor
    from clinhub.mentor.personas import load_personas
    from clinhub.mentor.prompts import build_messages
    from clinhub.mentor.resonance import evaluate, keyword_key, load_examples, shared_model
    from clinhub.mentor.router import AffinityMatrix, route
    from clinhub.mentor.vocab import INTENTS, PACES, TONES, ResonanceKey

    rng = random.Random(7)
    heldout = load_examples(HELDOUT)
    texts = [e.text for e in heldout]
    matrix, personas = AffinityMatrix.load(), load_personas()
    keys = [
        ResonanceKey(rng.choice(TONES), rng.choice(PACES), rng.choice(INTENTS)) for _ in range(args.repeat)
    ]
    lines = ["## Mentor (issue #10)", "", "`python benchmarks/mentor_bench.py` " + " ".join(sys.argv[1:]), ""]

    # 1. routing + prompt building
    timings = []
    for i, key in enumerate(keys):
        text = texts[i % len(texts)]
        start = time.perf_counter()
        routing = route(key, matrix)
        build_messages(personas[routing.primary], text, key, language="en")
        timings.append(time.perf_counter() - start)
    lines.append(f"- routing + prompt building, {len(keys):,} messages: {ms(timings)} (goal P95 < 1 ms)")

    # 2. inference + routing + prompt, one message at a time; and the keyword baseline
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        model = shared_model(Path(tmp))
        lines.append(
            f"- model ready (load + train) in {time.perf_counter() - started:.1f} s ({model.method})"
        )
        for text in texts[:20]:
            model.infer(text)  # warm
        timings, baseline = [], []
        for i in range(min(args.repeat, 1000)):
            text = texts[i % len(texts)]
            start = time.perf_counter()
            key = model.infer(text).key
            routing = route(key, matrix)
            build_messages(personas[routing.primary], text, key, language="en")
            timings.append(time.perf_counter() - start)
            start = time.perf_counter()
            key = keyword_key(text)
            routing = route(key, matrix)
            build_messages(personas[routing.primary], text, key, language="en")
            baseline.append(time.perf_counter() - start)
        lines.append(
            f"- inference + routing + prompt, {len(timings):,} messages one by one: {ms(timings)}"
            " (goal P95 < 30 ms)"
        )
        lines.append(f"- the keyword baseline, same messages: {ms(baseline)}")

        # 3. bulk of 100 through the engine
        settings = Settings(
            data_dir=Path(tmp),
            database_url=f"sqlite:///{tmp}/store.db",
            secret_key="k" * 40,
            log_level="WARNING",
            _env_file=None,
        )
        with Hub(settings) as hub:
            hub.migrate()
            mentor = Mentor(hub.store, hub.cache, settings, backend=None)
            bulk_times = []
            for round_ in range(5):
                asks = [
                    Ask(text=f"{texts[(round_ * 100 + i) % len(texts)]} ({round_}-{i})", use_cache=False)
                    for i in range(100)
                ]
                start = time.perf_counter()
                results = mentor.bulk(asks)
                bulk_times.append(time.perf_counter() - start)
                assert all(r["ok"] for r in results)
            lines.append(
                f"- bulk-process of 100 (keys inferred, templated answers), 5 rounds: median "
                f"{statistics.median(bulk_times):.3f} s, worst {max(bulk_times):.3f} s (goal < 1 s)"
            )

        # 4. HTTP with cache hits
        lines.append(http_part(settings, args.http_seconds, args.threads))

        # 5. accuracy
        report = evaluate(model, heldout)
        lines += ["", f"Accuracy on the held-out set ({report['examples']} messages, {model.method}):", ""]
        lines += ["| group | method | tone | pace | intent |", "|---|---|---:|---:|---:|"]
        for group in report["model"]:
            for name in ("model", "baseline"):
                s = report[name][group]
                label = "clinhub" if name == "model" else "keyword baseline"
                lines.append(f"| {group} | {label} | {s['tone']:.1%} | {s['pace']:.1%} | {s['intent']:.1%} |")
    print("\n".join(lines))
    return 0


def http_part(settings, seconds: float, threads: int) -> str:
    import uvicorn

    from clinhub.app import create_app
    from clinhub.platform import auth
    from clinhub.store import create_store_engine

    store = create_store_engine(settings.store_url)
    auth.create_user(store, "bench", "a long enough password", "analyst")
    store.dispose()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health/live").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    token = httpx.post(
        base + "/auth/login", json={"username": "bench", "password": "a long enough password"}
    ).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    body = {"text": "How are the data quality scores this week?", "include_metadata": False}
    with httpx.Client(base_url=base, headers=headers) as warm:
        assert warm.post("/mentor/v2/process", json=body).status_code == 200
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        mine = []
        with httpx.Client(base_url=base, headers=headers) as http:
            while time.monotonic() < stop:
                start = time.perf_counter()
                response = http.post("/mentor/v2/process", json=body)
                mine.append(time.perf_counter() - start)
                assert response.status_code == 200 and response.json()["performance"]["cache_hit"]
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: client(), range(threads)))
    elapsed = time.perf_counter() - start
    server.should_exit = True
    thread.join(10)
    return (
        f"- POST /mentor/v2/process over HTTP, answer cache hits, {threads} client threads, {elapsed:.0f} s: "
        f"{len(latencies) / elapsed:,.0f} requests/s; {ms(latencies)}"
    )


if __name__ == "__main__":
    sys.exit(main())
