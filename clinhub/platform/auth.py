"""Authentication: users with argon2 password hashes, JWT access/refresh tokens, hashed API keys.

Nothing here knows about HTTP; the API's dependencies (platform/deps.py) call these functions.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from prometheus_client import Counter
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from clinhub.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from clinhub.platform.permissions import ROLES
from clinhub.store.schema import api_key, user

FAILED_LOGINS = Counter("clinhub_auth_failed_logins_total", "Failed logins by reason", ["reason"])
RATE_LIMITED = Counter("clinhub_auth_rate_limited_total", "Login attempts refused by the rate limit")

_HASHER = PasswordHasher()


# Verifying against this when the user does not exist keeps the time the same as for a wrong password.
@functools.cache
def _dummy_hash() -> str:
    # made on first login, not at import: every CLI command imports this module
    return _HASHER.hash(secrets.token_urlsafe(16))


_KEY_PREFIX = "chk_"
_ALGORITHM = "HS256"
MIN_PASSWORD = 10


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, through a token or an API key."""

    user_id: int
    username: str
    role: str
    via: str  # "token" or "api_key"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------ users
def create_user(
    engine: Engine, username: str, password: str, role: str, *, full_name: str = "", email: str = ""
) -> int:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if (
        not username
        or len(username) > 150
        or not username.replace("_", "").replace(".", "").replace("-", "").replace("@", "").isalnum()
    ):
        raise InvalidInput("username must be 1-150 letters, digits, '.', '_', '-' or '@'")
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD} characters")
    try:
        with engine.begin() as conn:
            result = conn.execute(
                insert(user).values(
                    username=username,
                    password_hash=_HASHER.hash(password),
                    role=role,
                    full_name=full_name or None,
                    email=email or None,
                    created_at=_now(),
                )
            )
            return int(result.inserted_primary_key[0])
    except IntegrityError:
        raise Conflict(f"user {username!r} exists") from None


def list_users(engine: Engine) -> list[dict]:
    query = select(
        user.c.id,
        user.c.username,
        user.c.full_name,
        user.c.role,
        user.c.disabled,
        user.c.created_at,
        user.c.last_login_at,
    ).order_by(user.c.username)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def set_disabled(engine: Engine, username: str, disabled: bool) -> None:
    with engine.begin() as conn:
        result = conn.execute(update(user).where(user.c.username == username).values(disabled=disabled))
    if result.rowcount == 0:
        raise NotFound(f"no user {username!r}")


def set_role(engine: Engine, username: str, role: str) -> None:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    with engine.begin() as conn:
        result = conn.execute(update(user).where(user.c.username == username).values(role=role))
    if result.rowcount == 0:
        raise NotFound(f"no user {username!r}")


def _active_user(engine: Engine, username: str):
    with engine.connect() as conn:
        row = conn.execute(select(user).where(user.c.username == username)).first()
    if row is None or row.disabled:
        return None
    return row


class LoginLimiter:
    """Failed logins per user and per client address in a sliding window; over the limit, refuse."""

    def __init__(self, max_failures: int = 5, window_seconds: float = 300.0) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, username: str, client: str) -> float:
        """Seconds until another attempt is allowed (0 when allowed now)."""
        now = time.monotonic()
        with self._lock:
            waits = []
            for key in (f"user:{username}", f"ip:{client}"):
                times = self._recent(key, now)
                if len(times) >= self.max_failures:
                    waits.append(times[0] + self.window - now)
            return max(waits, default=0.0)

    def failed(self, username: str, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in (f"user:{username}", f"ip:{client}"):
                self._recent(key, now).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{username}", None)


def authenticate(engine: Engine, username: str, password: str) -> Principal:
    """Check a username and password; the error never says which of the two was wrong."""
    row = _active_user(engine, username)
    try:
        _HASHER.verify(
            row.password_hash if row is not None and row.password_hash else _dummy_hash(), password
        )
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        FAILED_LOGINS.labels("bad_credentials").inc()
        raise Unauthenticated("invalid username or password") from None
    if row is None:
        FAILED_LOGINS.labels("bad_credentials").inc()
        raise Unauthenticated("invalid username or password")
    with engine.begin() as conn:
        values = {"last_login_at": _now()}
        if _HASHER.check_needs_rehash(row.password_hash):
            values["password_hash"] = _HASHER.hash(password)
        conn.execute(update(user).where(user.c.id == row.id).values(**values))
    return Principal(row.id, row.username, row.role, "token")


# ------------------------------------------------------------------ tokens
def issue_tokens(
    principal: Principal, secret: str, *, access_minutes: int = 15, refresh_days: int = 7
) -> TokenPair:
    now = _now()

    def token(kind: str, lifetime: timedelta) -> str:
        claims = {
            "sub": principal.username,
            "role": principal.role,
            "typ": kind,
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, secret, algorithm=_ALGORITHM)

    return TokenPair(
        token("access", timedelta(minutes=access_minutes)),
        token("refresh", timedelta(days=refresh_days)),
        access_minutes * 60,
    )


def verify_token(engine: Engine, token: str, secret: str, *, kind: str = "access") -> Principal:
    """Decode a JWT, check its kind, and check its user still exists and is enabled."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[_ALGORITHM], options={"require": ["exp", "sub", "typ"]}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token expired") from None
    except jwt.PyJWTError:
        raise Unauthenticated("invalid token") from None
    if claims.get("typ") != kind:
        raise Unauthenticated(f"not an {kind} token")
    row = _active_user(engine, claims["sub"])
    if row is None:
        raise Unauthenticated("user unknown or disabled")
    # the role comes from the store, not the token, so a role change takes effect at once
    return Principal(row.id, row.username, row.role, "token")


# ------------------------------------------------------------------ API keys
def _hash_key(key: str) -> str:
    # API keys carry 256 random bits, so a fast hash is safe here (unlike passwords)
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(
    engine: Engine, username: str, name: str, *, expires_days: int | None = None
) -> tuple[int, str]:
    """Create a key for `username`; returns (id, key). The key is shown this once and never stored."""
    row = _active_user(engine, username)
    if row is None:
        raise NotFound(f"no active user {username!r}")
    prefix = secrets.token_hex(6)
    key = f"{_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    expires = _now() + timedelta(days=expires_days) if expires_days else None
    with engine.begin() as conn:
        result = conn.execute(
            insert(api_key).values(
                user_id=row.id,
                name=name,
                prefix=prefix,
                key_hash=_hash_key(key),
                created_at=_now(),
                expires_at=expires,
            )
        )
    return int(result.inserted_primary_key[0]), key


def revoke_api_key(engine: Engine, key_id: int) -> None:
    with engine.begin() as conn:
        result = conn.execute(
            update(api_key)
            .where(api_key.c.id == key_id, api_key.c.revoked_at.is_(None))
            .values(revoked_at=_now())
        )
    if result.rowcount == 0:
        raise NotFound(f"no active API key {key_id}")


def list_api_keys(engine: Engine, username: str | None = None) -> list[dict]:
    query = (
        select(
            api_key.c.id,
            user.c.username,
            api_key.c.name,
            api_key.c.prefix,
            api_key.c.created_at,
            api_key.c.expires_at,
            api_key.c.last_used_at,
            api_key.c.revoked_at,
        )
        .join(user, user.c.id == api_key.c.user_id)
        .order_by(api_key.c.id)
    )
    if username:
        query = query.where(user.c.username == username)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def is_api_key(credential: str) -> bool:
    return credential.startswith(_KEY_PREFIX)


def verify_api_key(engine: Engine, key: str) -> Principal:
    parts = key[len(_KEY_PREFIX) :].split("_", 1)
    if len(parts) != 2:
        raise Unauthenticated("invalid API key")
    query = (
        select(api_key, user.c.username, user.c.role, user.c.disabled)
        .join(user, user.c.id == api_key.c.user_id)
        .where(api_key.c.prefix == parts[0])
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None or not hmac.compare_digest(row.key_hash, _hash_key(key)):
        raise Unauthenticated("invalid API key")
    now = _now()
    expires = (
        row.expires_at.replace(tzinfo=UTC)
        if row.expires_at and row.expires_at.tzinfo is None
        else row.expires_at
    )
    if row.revoked_at is not None or row.disabled or (expires is not None and expires <= now):
        raise Unauthenticated("API key revoked or expired")
    last = row.last_used_at
    if last is None or (now - (last if last.tzinfo else last.replace(tzinfo=UTC))) > timedelta(minutes=1):
        with engine.begin() as conn:
            conn.execute(update(api_key).where(api_key.c.id == row.id).values(last_used_at=now))
    return Principal(row.user_id, row.username, row.role, "api_key")
