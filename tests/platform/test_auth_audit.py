"""Users, tokens, API keys and the hash-chained audit trail, on every store backend."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select, update

from clinhub.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from clinhub.platform import audit, auth
from clinhub.platform.permissions import PERMISSIONS, ROLES, allows
from clinhub.store import create_store_engine, upgrade
from clinhub.store.schema import audit_event

SECRET = "x" * 40


@pytest.fixture
def store(store_url: str):
    engine = create_store_engine(store_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def test_permission_table_is_complete_and_admin_holds_everything() -> None:
    assert all("admin" in roles for roles in PERMISSIONS.values())
    assert all(set(roles) <= set(ROLES) for roles in PERMISSIONS.values())
    assert allows("reviewer", "audit:read") and not allows("analyst", "audit:read")
    assert not allows("viewer", "health_data:read")
    with pytest.raises(KeyError):
        allows("admin", "no:such")


def test_users_passwords_and_tokens(store) -> None:
    auth.create_user(store, "ann", "correct horse battery", "analyst")
    with pytest.raises(Conflict):
        auth.create_user(store, "ann", "another long password", "viewer")
    with pytest.raises(InvalidInput):
        auth.create_user(store, "bob", "short", "viewer")
    with pytest.raises(InvalidInput):
        auth.create_user(store, "bob", "long enough password", "superuser")
    principal = auth.authenticate(store, "ann", "correct horse battery")
    assert principal.role == "analyst"
    with pytest.raises(Unauthenticated, match="invalid username or password"):
        auth.authenticate(store, "ann", "wrong password!")
    with pytest.raises(Unauthenticated, match="invalid username or password"):
        auth.authenticate(store, "nobody", "wrong password!")
    pair = auth.issue_tokens(principal, SECRET)
    assert auth.verify_token(store, pair.access_token, SECRET).username == "ann"
    assert auth.verify_token(store, pair.refresh_token, SECRET, kind="refresh").username == "ann"
    with pytest.raises(Unauthenticated):
        auth.verify_token(store, pair.refresh_token, SECRET)  # a refresh token is not an access token
    with pytest.raises(Unauthenticated):
        auth.verify_token(store, pair.access_token, "y" * 40)  # wrong key
    auth.set_role(store, "ann", "viewer")
    assert auth.verify_token(store, pair.access_token, SECRET).role == "viewer"  # role from the store
    auth.set_disabled(store, "ann", True)
    with pytest.raises(Unauthenticated):
        auth.verify_token(store, pair.access_token, SECRET)
    with pytest.raises(Unauthenticated):
        auth.authenticate(store, "ann", "correct horse battery")
    with pytest.raises(NotFound):
        auth.set_disabled(store, "ghost", True)


def test_expired_token_is_refused(store) -> None:
    auth.create_user(store, "eve", "correct horse battery", "viewer")
    principal = auth.authenticate(store, "eve", "correct horse battery")
    pair = auth.issue_tokens(principal, SECRET, access_minutes=0)
    time.sleep(1.1)
    with pytest.raises(Unauthenticated, match="expired"):
        auth.verify_token(store, pair.access_token, SECRET)


def test_api_keys_hashed_shown_once_revocable(store) -> None:
    auth.create_user(store, "feed", "correct horse battery", "integration_engineer")
    key_id, key = auth.create_api_key(store, "feed", "EMR interface")
    listed = auth.list_api_keys(store, "feed")
    assert len(listed) == 1 and key not in str(listed)  # only the prefix is kept
    assert auth.verify_api_key(store, key).role == "integration_engineer"
    with pytest.raises(Unauthenticated):
        auth.verify_api_key(store, key[:-2] + "zz")
    auth.revoke_api_key(store, key_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        auth.verify_api_key(store, key)
    with pytest.raises(NotFound):
        auth.revoke_api_key(store, key_id)


def test_login_limiter_per_user_and_ip() -> None:
    limiter = auth.LoginLimiter(max_failures=3, window_seconds=0.5)
    for _ in range(3):
        limiter.failed("ann", "10.0.0.1")
    assert limiter.retry_after("ann", "10.0.0.9") > 0  # the user is locked from any address
    assert limiter.retry_after("bob", "10.0.0.1") > 0  # and the address for any user
    assert limiter.retry_after("bob", "10.0.0.9") == 0
    time.sleep(0.6)
    assert limiter.retry_after("ann", "10.0.0.1") == 0


def test_audit_chain_verifies_and_detects_tampering(store) -> None:
    for i in range(30):
        audit.record(
            store,
            actor="ann",
            action="fhir.read",
            resource_type="Patient",
            resource_id=f"p{i}",
            client_address="127.0.0.1",
            detail={"n": i},
        )
    result = audit.verify(store)
    assert result.ok and result.checked == 30
    total, page = audit.search(store, resource_id="p7")
    assert total == 1 and page[0]["actor"] == "ann"
    target = page[0]["id"]
    with store.begin() as conn:
        conn.execute(update(audit_event).where(audit_event.c.id == target).values(actor="mallory"))
    broken = audit.verify(store)
    assert not broken.ok and broken.broken_at == target and "content" in broken.reason


def test_audit_chain_detects_a_deleted_event(store) -> None:
    for i in range(5):
        audit.record(store, actor="ann", action="fhir.read", resource_id=str(i))
    with store.begin() as conn:
        conn.execute(audit_event.delete().where(audit_event.c.resource_id == "2"))
    result = audit.verify(store)
    assert not result.ok and "link" in result.reason


def test_concurrent_writers_never_fork_the_chain(store) -> None:
    def write(worker: int) -> None:
        for i in range(10):
            audit.record(store, actor=f"w{worker}", action="fhir.read", resource_id=str(i))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = audit.verify(store)
    assert result.ok and result.checked == 40


def test_the_audit_queue_appends_in_groups_and_loses_nothing(store) -> None:
    queue = audit.AuditQueue(store)
    record_before = audit.record(store, actor="admin", action="user.create")

    def reader(n: int) -> None:
        for i in range(50):
            queue.submit(actor=f"r{n}", action="fhir.read", resource_type="Patient", resource_id=str(i))

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert queue.flush(timeout=60)
    with store.connect() as conn:
        rows = conn.execute(
            select(audit_event.c.actor, audit_event.c.prev_hash, audit_event.c.hash).order_by(
                audit_event.c.id
            )
        ).all()
    assert len(rows) == 201 and rows[0].hash == record_before
    assert sorted(r.actor for r in rows[1:]) == sorted(f"r{n}" for n in range(4) for _ in range(50))
    assert audit.verify(store).ok  # grouped appends chain like single ones
    queue.submit(actor="late", action="fhir.search")
    queue.close()  # flushes what is queued
    with pytest.raises(InvalidInput):
        queue.submit(actor="x", action="fhir.read", outcome="maybe")
    assert audit.verify(store).checked == 202
    queue.submit(actor="after-close", action="fhir.read")  # written at once rather than lost
    assert audit.verify(store).checked == 203


def test_audit_event_as_fhir(store) -> None:
    audit.record(
        store,
        actor="ann",
        action="fhir.update",
        resource_type="Patient",
        resource_id="p1",
        client_address="10.1.2.3",
        outcome="denied",
    )
    _, (event,) = audit.search(store)
    resource = audit.to_fhir(event)
    assert resource["resourceType"] == "AuditEvent"
    assert resource["action"] == "U" and resource["outcome"] == "4"
    assert resource["entity"][0]["what"]["reference"] == "Patient/p1"
    assert resource["agent"][0]["network"]["address"] == "10.1.2.3"
