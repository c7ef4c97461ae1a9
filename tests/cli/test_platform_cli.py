"""`clinhub users`, `keys`, `audit` and `serve`'s refusal to start without a signing key, as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import update

from clinhub.store import create_store_engine
from clinhub.store.schema import audit_event


def run(args: list[str], cwd: Path, stdin: str | None = None, env: dict | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLINHUB_")}
    full_env.update({"CLINHUB_DATA_DIR": str(cwd / "data"), "COLUMNS": "200", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "clinhub", *args],
        cwd=cwd,
        env=full_env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_users_keys_and_audit_end_to_end(tmp_path: Path) -> None:
    assert run(["db", "upgrade"], tmp_path).returncode == 0
    added = run(
        ["users", "add", "ann", "--role", "analyst", "--password-stdin"],
        tmp_path,
        stdin="a long enough password\n",
    )
    assert added.returncode == 0, added.stderr
    bad_role = run(
        ["users", "add", "bob", "--role", "wizard", "--password-stdin"],
        tmp_path,
        stdin="a long enough password\n",
    )
    assert bad_role.returncode == 2 and "unknown role" in bad_role.stderr
    listing = run(["users", "list"], tmp_path)
    assert "ann" in listing.stdout and "analyst" in listing.stdout
    created = run(["keys", "create", "ann", "--name", "script"], tmp_path)
    assert created.returncode == 0
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("chk_")
    assert key not in run(["keys", "list"], tmp_path).stdout
    assert run(["keys", "revoke", "1"], tmp_path).returncode == 0
    assert run(["users", "disable", "ann"], tmp_path).returncode == 0
    assert run(["users", "disable", "ghost"], tmp_path).returncode == 2

    verified = run(["audit", "verify"], tmp_path)
    assert verified.returncode == 0 and "intact: 4 events" in verified.stdout
    found = json.loads(run(["audit", "search", "--format", "json"], tmp_path).stdout)
    assert [e["action"] for e in found["events"]] == [
        "user.disable",
        "apikey.revoke",
        "apikey.create",
        "user.create",
    ]
    bundle = json.loads(
        run(["audit", "search", "--format", "fhir", "--action", "user.create"], tmp_path).stdout
    )
    assert bundle["total"] == 1 and bundle["entry"][0]["resource"]["resourceType"] == "AuditEvent"

    store = create_store_engine(f"sqlite:///{tmp_path / 'data' / 'clinhub.db'}")
    with store.begin() as conn:
        conn.execute(update(audit_event).where(audit_event.c.id == 2).values(actor="mallory"))
    store.dispose()
    broken = run(["audit", "verify"], tmp_path)
    assert broken.returncode == 1 and "BROKEN at event 2" in broken.stdout


def test_serve_refuses_to_start_without_a_signing_key(tmp_path: Path) -> None:
    result = run(["serve"], tmp_path)
    assert result.returncode == 1
    assert "CLINHUB_SECRET_KEY is not set" in result.stderr and "Traceback" not in result.stderr
