"""The `clinhub` command end to end, each run a real subprocess in a temporary directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def run(
    args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLINHUB_")}
    full_env.update({"CLINHUB_DATA_DIR": str(cwd / "data"), "COLUMNS": "200"})
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "clinhub", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_version_and_help(tmp_path: Path) -> None:
    result = run(["version"], tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("clinhub ")
    help_text = run(["--help"], tmp_path).stdout
    for command in ("demo", "synth", "db", "serve", "config", "version"):
        assert command in help_text


def test_config_json_masks_secrets(tmp_path: Path) -> None:
    result = run(
        ["config", "--json"],
        tmp_path,
        {"CLINHUB_DATABASE_URL": "postgresql://u:hunter2@db/x", "CLINHUB_SECRET_KEY": "k3y"},
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["database_url"] == "postgresql://u:***@db/x"
    assert "hunter2" not in result.stdout and "k3y" not in result.stdout


@pytest.mark.slow
def test_demo_end_to_end_then_again(tmp_path: Path) -> None:
    first = run(["demo", "--patients", "30", "--seed", "3"], tmp_path)
    assert first.returncode == 0, first.stderr
    assert "FHIR Patient" in first.stdout and "directory provider" in first.stdout
    assert (tmp_path / "data" / "clinhub.db").is_file()
    assert (tmp_path / "data" / "synth" / "hl7" / "messages.hl7").is_file()
    second = run(["demo", "--patients", "30", "--seed", "3"], tmp_path)
    assert second.returncode == 0, second.stderr
    patient_rows = [line for line in second.stdout.splitlines() if "FHIR Patient" in line]
    assert patient_rows and patient_rows == [
        line for line in first.stdout.splitlines() if "FHIR Patient" in line
    ]
    current = run(["db", "current"], tmp_path)
    assert current.returncode == 0 and "up to date" in current.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    result = run(["synth", "--patients", "5", "--out", str(tmp_path / "afile")], tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("clinhub: error: ")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unreachable_store_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = run(["db", "upgrade"], tmp_path, {"CLINHUB_DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/x"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "pw" not in result.stderr
    assert result.stderr.startswith("clinhub: error: ")


def test_usage_error_exits_2(tmp_path: Path) -> None:
    result = run(["demo", "--patients", "zero"], tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_answers_health_over_a_real_socket(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINHUB_")}
    env.update(
        {
            "CLINHUB_DATA_DIR": str(tmp_path / "data"),
            "CLINHUB_PORT": str(port),
            "CLINHUB_SECRET_KEY": "s" * 40,
        }
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "clinhub", "serve", "--migrate"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                live = httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert live.status_code == 200
        ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
        assert ready.status_code == 200, ready.text
        assert "clinhub_http_requests_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        server.terminate()
        server.wait(timeout=10)
